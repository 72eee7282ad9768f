"""The command line: every stage is listed, user errors are one clear line and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kfr_spark.cli import STAGES, main

REPO = Path(__file__).resolve().parents[1]


def test_help_lists_every_stage(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in STAGES:
        assert name in out


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_has_help(stage, capsys):
    with pytest.raises(SystemExit) as info:
        main([stage, "--help"])
    assert info.value.code == 0
    assert "--config" in capsys.readouterr().out


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_has_a_spark_submit_entry_point(stage):
    job = REPO / "jobs" / f"{stage}.py"
    assert job.is_file()
    result = subprocess.run([sys.executable, str(job), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage: kfr " + stage in result.stdout


def test_config_error_is_one_clear_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest: {max_text_chars: lots}\n")
    assert main(["--config", str(bad), "ingest", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "ingest.max_text_chars" in err and "Traceback" not in err


def test_missing_input_path_is_a_usage_error(tmp_path, capsys):
    assert main(["ingest", str(tmp_path / "nowhere")]) == 2
    assert "input path not found" in capsys.readouterr().err
