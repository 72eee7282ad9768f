"""kfr nightly: the whole pipeline from raw files in one call — and the next call on the same input does no work,
a call after a new comment file processes only it, and a call after a killed training resumes that training."""

from __future__ import annotations

import datetime
import shutil

import pytest
from pyspark.sql import functions as F

from kfr_spark import delta_io
from kfr_spark.catalog import TABLES, Lakehouse
from kfr_spark.export import current_manifest
from kfr_spark.nightly import run_nightly
from kfr_spark.synth import SynthConfig, generate
from kfr_spark.train import FAIL_AFTER_EPOCH_ENV

# Slow: five nightlies and a notebook kernel take about 10 minutes on 2 cores, a third of the CI budget.
# `make test-all` runs them (and did, green, before this was marked).
pytestmark = [pytest.mark.spark, pytest.mark.slow]

DAY = datetime.date(2026, 12, 1)


@pytest.fixture(scope="module")
def world(spark, base_config, tmp_path_factory):
    """Six rendered videos with their danmaku: all but one comment file in the inbox, that one held back."""
    root = tmp_path_factory.mktemp("nightly")
    data = generate(SynthConfig(seed=5, n_videos=5, n_users=60, n_comments=2500, duration_s=(14.0, 20.0),
                                with_video=True), root / "synth")
    inbox, held = root / "inbox", root / "held"
    inbox.mkdir()
    held.mkdir()
    files = sorted(data.danmaku_dir.glob("*.xml"))
    for f in files[:-1]:
        shutil.copy(f, inbox / f.name)
    shutil.copy(files[-1], held / files[-1].name)
    lake = Lakehouse(root / "lakehouse")
    c = base_config
    config = c.model_copy(update={
        "lakehouse": c.lakehouse.model_copy(update={"root": lake.root}),
        "ingest": c.ingest.model_copy(update={"input_paths": (str(inbox),)}),
        "dataset": c.dataset.model_copy(update={"min_user_comments": 5, "cold_user_fraction": 0.2}),
        "train": c.train.model_copy(update={"num_proc": 1, "epochs": 2, "batch_size": 256, "patience": 2,
                                            "hyper": {"kfrci": {"dim": 8}, "jifr": {"dim": 8}}}),
        "tracking": c.tracking.model_copy(update={"enabled": False}),
        "export": c.export.model_copy(update={"out_dir": root / "export", "salt": "nightly-test-salt"}),
        "gallery": c.gallery.model_copy(update={"out_dir": root / "gallery", "users": 2, "videos_per_user": 1}),
        "nightly": c.nightly.model_copy(update={"video_catalogs": (str(data.videos_csv),),
                                                "video_id_column": "chatid", "models": ("kfrci", "jifr")}),
    })
    return lake, config, held


def versions(spark, lake) -> dict[str, int | None]:
    return {name: delta_io.current_version(spark, lake, name) for name in TABLES if not name.startswith("ops.")}


def stage_runs(spark, lake) -> int:
    return delta_io.read_table(spark, lake, "ops.job_runs").count()


def statuses(summary) -> dict[str, str]:
    return {o.name: o.status for o in summary.outcomes}


def test_the_nightly_runs_every_stage_then_only_what_new_input_needs(spark, world, monkeypatch):
    lake, config, held = world
    first = run_nightly(spark, lake, config, DAY)
    assert first.failed is None, first.table()
    assert set(statuses(first).values()) == {"succeeded"}
    assert [o.name for o in first.outcomes] == [
        "ingest", "videos", "shots", "align", "tokenize", "features", "dataset", "train:kfrci", "evaluate:kfrci",
        "train:jifr", "evaluate:jifr", "score", "export", "gallery"]
    served = delta_io.read_table(spark, lake, "gold.user_keyframes").filter(F.col("run_date") == DAY)
    assert {r["model"] for r in served.select("model").distinct().collect()} >= {"kfrci", "jifr"}
    assert current_manifest(config.export.out_dir, DAY) is not None
    assert (config.gallery.out_dir / "index.html").is_file()

    # the same input again: every step skipped, no table written, no stage run
    before, runs = versions(spark, lake), stage_runs(spark, lake)
    second = run_nightly(spark, lake, config, DAY)
    assert set(statuses(second).values()) == {"skipped"}, second.table()
    assert versions(spark, lake) == before and stage_runs(spark, lake) == runs

    # a new comment file: ingest reads only it; the video stages have nothing to do; training is not due
    comments_before = delta_io.read_table(spark, lake, "bronze.tsc").count()
    new_file = next(held.iterdir())
    shutil.copy(new_file, config.ingest.input_paths[0])
    third = run_nightly(spark, lake, config, DAY)
    s = statuses(third)
    assert s["ingest"] == s["align"] == s["tokenize"] == s["dataset"] == s["score"] == "succeeded", third.table()
    assert s["videos"] == s["shots"] == s["features"] == s["train:kfrci"] == s["train:jifr"] == "skipped"
    ingest_run = (delta_io.read_table(spark, lake, "ops.job_runs").filter(F.col("job") == "ingest")
                  .orderBy(F.desc("started_at")).first())
    assert ingest_run["metrics"]["input_files"] == 1
    added = delta_io.read_table(spark, lake, "bronze.tsc").count() - comments_before
    assert added == ingest_run["rows_out"] > 0
    assert next(o for o in third.outcomes if o.name == "train:kfrci").detail.startswith("retrain not due")

    # retraining due (every night), and the training process dies after its first epoch: the nightly stops there
    daily = config.model_copy(update={"nightly": config.nightly.model_copy(
        update={"retrain_every_days": 0, "models": ("kfrci",), "gallery": False})})
    monkeypatch.setenv(FAIL_AFTER_EPOCH_ENV, "0")
    fourth = run_nightly(spark, lake, daily, DAY)
    assert fourth.failed is not None and fourth.failed.name == "train:kfrci"
    assert "fault injection" in fourth.failed.detail and fourth.outcomes[-1].name == "train:kfrci"
    monkeypatch.delenv(FAIL_AFTER_EPOCH_ENV)
    # the next nightly redoes nothing that finished and resumes the training from its checkpoint
    fifth = run_nightly(spark, lake, daily, DAY)
    s = statuses(fifth)
    assert fifth.failed is None, fifth.table()
    assert all(s[step] == "skipped" for step in ("ingest", "videos", "shots", "align", "tokenize", "features",
                                                  "dataset"))
    assert s["train:kfrci"] == "succeeded"
    train_run = (delta_io.read_table(spark, lake, "ops.job_runs")
                 .filter((F.col("job") == "train") & (F.col("status") == "succeeded"))
                 .orderBy(F.desc("started_at")).collect())
    kfrci = next(r for r in train_run if "kfrci" in (r["params"] or ""))
    assert kfrci["metrics"]["resumed_from_epoch"] == 1.0


def test_the_notebook_runs_end_to_end_on_the_nightlys_lakehouse(spark, world, tmp_path, monkeypatch):
    import os
    import sys
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient

    lake, config, _ = world
    if not delta_io.table_exists(spark, lake, "gold.user_keyframes"):
        assert run_nightly(spark, lake, config, DAY).failed is None
    notebook = Path(__file__).resolve().parents[1] / "notebooks" / "explore_outputs.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    monkeypatch.setenv("KFR_LAKEHOUSE", str(lake.root))
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # the venv's kernel
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "gold.user_keyframes" in text and "ranks differ for" in text and "metric rows" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the evaluation figure
    assert any("data:image/jpeg;base64" in o.get("data", {}).get("text/html", "") for o in outputs)  # key frames
