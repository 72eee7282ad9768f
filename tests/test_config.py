"""Config: YAML < environment < --set, typed values, and errors that name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfr_spark.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "kfr.yaml"
    path.write_text(text)
    return path


def test_shipped_configs_are_valid():
    local = load_config(REPO / "conf" / "local.yaml", environ={})
    cluster = load_config(REPO / "conf" / "cluster.yaml", environ={})
    assert local.spark.master == "local[*]"
    assert local.lakehouse.root == (REPO / "data" / "lakehouse").resolve()
    assert cluster.spark.delta_jars == "provided"


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    cfg = load_config(write(tmp_path, "lakehouse: {root: lake}\ningest: {input_paths: [in, /abs, 'hdfs://x/y']}"),
                      environ={})
    assert cfg.lakehouse.root == tmp_path / "lake"
    assert cfg.ingest.input_paths == (str(tmp_path / "in"), "/abs", "hdfs://x/y")


def test_relative_paths_from_flags_and_environment_resolve_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(write(tmp_path, "lakehouse: {root: lake}"), overrides=["lakehouse.root=out/lake"],
                      environ={"KFR__SCORE__CANDIDATE_PATH": "cands"})
    assert cfg.lakehouse.root == tmp_path / "out" / "lake"
    assert cfg.score.candidate_path == tmp_path / "cands"


def test_precedence_file_then_environment_then_flags(tmp_path):
    path = write(tmp_path, "spark: {shuffle_partitions: 3, master: 'local[1]'}")
    env = {"KFR__SPARK__SHUFFLE_PARTITIONS": "5", "KFR__SPARK__MASTER": "local[2]"}
    cfg = load_config(path, overrides=["spark.shuffle_partitions=7"], environ=env)
    assert cfg.spark.shuffle_partitions == 7  # flag beats env, and the value is typed
    assert cfg.spark.master == "local[2]"  # env beats file


def test_unknown_key_is_an_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"ingest\.max_txt_chars: unknown key"):
        load_config(write(tmp_path, "ingest: {max_txt_chars: 10}"), environ={})


def test_wrong_type_is_an_error_naming_key_and_value(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "ingest: {max_text_chars: lots}"), environ={})
    assert "ingest.max_text_chars" in str(info.value) and "'lots'" in str(info.value)


def test_out_of_range_and_bad_pattern_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="ingest.max_file_bytes"):
        load_config(write(tmp_path, "ingest: {max_file_bytes: 0}"), environ={})
    with pytest.raises(ConfigError, match="named group"):
        load_config(write(tmp_path, "ingest: {video_id_pattern: 'av(\\d+)'}"), environ={})


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(write(tmp_path, "{}"), overrides=["spark.master"], environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", environ={})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "spark: [unclosed"), environ={})


def test_fingerprint_changes_with_any_value(tmp_path):
    path = write(tmp_path, "{}")
    a = load_config(path, environ={}).fingerprint()
    assert a == load_config(path, environ={}).fingerprint()
    assert a != load_config(path, overrides=["ingest.max_text_chars=9"], environ={}).fingerprint()
