"""Delta writes keyed on natural keys: a rerun changes no row; the ledger records every run."""

from __future__ import annotations

import pytest

from kfr_spark import delta_io
from kfr_spark.catalog import BRONZE_VIDEOS, OPS_JOB_RUNS
from kfr_spark.ledger import record_job_run

pytestmark = pytest.mark.spark


def videos(spark, rows):
    return spark.createDataFrame(
        [(vid, title, dur, 25.0, 64, 36, None, "run") for vid, title, dur in rows], schema=BRONZE_VIDEOS.schema
    )


def snapshot(spark, lake, name):
    return sorted(map(tuple, delta_io.read_table(spark, lake, name).collect()))


def test_insert_new_adds_only_unseen_keys(spark, lake):
    first = delta_io.merge_insert_new(spark, lake, "bronze.videos", videos(spark, [("a", "A", 10.0), ("b", "B", 20.0)]))
    assert first.rows_inserted == 2
    before = snapshot(spark, lake, "bronze.videos")
    again = delta_io.merge_insert_new(spark, lake, "bronze.videos", videos(spark, [("a", "changed", 99.0), ("c", "C", 5.0)]))
    assert again.rows_inserted == 1
    after = snapshot(spark, lake, "bronze.videos")
    assert [r for r in after if r[0] == "a"] == [r for r in before if r[0] == "a"]  # existing row untouched
    assert {r[0] for r in after} == {"a", "b", "c"}


def test_upsert_rerun_changes_no_row(spark, lake):
    rows = [("a", "A", 10.0), ("b", "B", 20.0)]
    delta_io.merge_upsert(spark, lake, "bronze.videos", videos(spark, rows))
    before = snapshot(spark, lake, "bronze.videos")
    rerun = delta_io.merge_upsert(spark, lake, "bronze.videos", videos(spark, rows))
    assert (rerun.rows_inserted, rerun.rows_updated) == (0, 0)
    assert snapshot(spark, lake, "bronze.videos") == before
    changed = delta_io.merge_upsert(spark, lake, "bronze.videos", videos(spark, [("a", "A2", 10.0)]))
    assert changed.rows_updated == 1


def test_schema_drift_fails_before_writing(spark, lake):
    frame = spark.createDataFrame([("a",)], "video_id string")
    with pytest.raises(ValueError, match="lacks columns"):
        delta_io.merge_insert_new(spark, lake, "bronze.videos", frame)


def test_ledger_records_success_and_failure(spark, lake, base_config):
    with record_job_run(spark, lake, "demo", base_config, {"x": 1}) as run:
        run.rows_in, run.rows_out = 10, 7
        run.wrote("bronze.videos", 3)
    with pytest.raises(RuntimeError):
        with record_job_run(spark, lake, "demo", base_config) as failing:
            raise RuntimeError("boom")
    rows = {r["run_id"]: r for r in delta_io.read_table(spark, lake, OPS_JOB_RUNS.name).collect()}
    ok, bad = rows[run.run_id], rows[failing.run_id]
    assert (ok["status"], ok["rows_in"], ok["rows_out"], ok["output_versions"]) == ("succeeded", 10, 7, {"bronze.videos": 3})
    assert ok["config_hash"] == base_config.fingerprint() and ok["duration_s"] >= 0
    assert bad["status"] == "failed" and "RuntimeError: boom" in bad["error"]
    assert len(rows) == 2  # start and end of a run are one row, not two


def test_current_version_of_missing_table_is_none(spark, lake):
    assert delta_io.current_version(spark, lake, "bronze.tsc") is None
    delta_io.ensure_table(spark, lake, "bronze.tsc")
    assert delta_io.current_version(spark, lake, "bronze.tsc") == 0
    assert delta_io.read_table(spark, lake, "bronze.tsc").schema["ingest_date"].dataType.typeName() == "date"


def test_comment_tables_keep_statistics_only_on_the_columns_they_name(spark, lake):
    import json
    from datetime import date
    from pathlib import Path

    from kfr_spark.catalog import BRONZE_TSC

    tsc = spark.createDataFrame(
        [("bilibili", "v1", "c1", "u1", 1.0, None, 1, "好看" * 50, 25, 0, 0, False, "bilibili_xml", "f.xml", 0, "r0",
          date(2026, 1, 1))],
        schema=BRONZE_TSC.schema,
    )
    delta_io.merge_insert_new(spark, lake, BRONZE_TSC.name, tsc)
    log = sorted((Path(lake.path(BRONZE_TSC.name)) / "_delta_log").glob("*.json"))
    adds = [json.loads(line)["add"] for f in log for line in f.read_text().splitlines() if '"add"' in line]
    stats = json.loads(adds[0]["stats"])
    assert set(stats["minValues"]) <= set(BRONZE_TSC.stats_columns) and "text" not in stats["minValues"]
    assert {"video_id", "user_id", "video_time_s"} <= set(stats["minValues"])
