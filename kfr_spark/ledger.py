"""The job-run ledger, `ops.job_runs`: one row per run of any job.

A run is recorded as `running` when it starts and updated to `succeeded` or `failed` when it ends, so a run
killed mid-way is visible as a row stuck at `running`. Each row carries the config hash and the Delta versions
of the tables the job read and wrote: what a nightly scheduler needs to know whether inputs changed since the
last good run, and what an engineer needs to reproduce one.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from kfr_spark import delta_io
from kfr_spark.catalog import OPS_JOB_RUNS, Lakehouse
from kfr_spark.config import KfrConfig

log = logging.getLogger(__name__)


def _kfr_version() -> str:
    try:
        return version("kfr-spark")
    except PackageNotFoundError:
        return "unknown"


@dataclass
class JobRun:
    """Collects what a run read, wrote and counted; `record_job_run` writes it to the ledger."""

    job: str
    config_hash: str
    params: dict[str, Any] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    input_versions: dict[str, int] = field(default_factory=dict)
    output_versions: dict[str, int] = field(default_factory=dict)
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    status: str = "running"
    error: str | None = None
    finished_at: datetime | None = None
    _t0: float = field(default_factory=time.perf_counter, repr=False)

    @property
    def duration_s(self) -> float:
        return time.perf_counter() - self._t0

    def read(self, table: str, version: int | None) -> None:
        if version is not None:
            self.input_versions[table] = version

    def wrote(self, table: str, version: int) -> None:
        self.output_versions[table] = version

    def _row(self, spark: SparkSession) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "job": self.job,
            "status": self.status,
            "started_at": self.started_at.replace(tzinfo=None),
            "finished_at": self.finished_at.replace(tzinfo=None) if self.finished_at else None,
            "duration_s": round(self.duration_s, 3) if self.finished_at else None,
            "config_hash": self.config_hash,
            "params": json.dumps(self.params, sort_keys=True, default=str),
            "input_versions": self.input_versions,
            "output_versions": self.output_versions,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rows_rejected": self.rows_rejected,
            "metrics": {k: float(v) for k, v in self.metrics.items()},
            "error": self.error,
            "spark_app_id": spark.sparkContext.applicationId,
            "kfr_version": _kfr_version(),
        }


def _write(spark: SparkSession, lake: Lakehouse, run: JobRun) -> None:
    frame = spark.createDataFrame([run._row(spark)], schema=OPS_JOB_RUNS.schema)
    delta_io.merge_upsert(spark, lake, OPS_JOB_RUNS.name, frame)


class record_job_run:  # noqa: N801 - used as a context manager, reads as a verb
    """`with record_job_run(spark, lake, "ingest", config, params) as run: ...`

    The body fills in `run`; the ledger row is written at start and at the end, whatever happens.
    """

    def __init__(
        self, spark: SparkSession, lake: Lakehouse, job: str, config: KfrConfig, params: dict[str, Any] | None = None
    ) -> None:
        self.spark = spark
        self.lake = lake
        self.run = JobRun(job=job, config_hash=config.fingerprint(), params=params or {})

    def __enter__(self) -> JobRun:
        _write(self.spark, self.lake, self.run)
        log.info("job %s run %s started", self.run.job, self.run.run_id)
        return self.run

    def __exit__(self, exc_type, exc, tb) -> bool:
        run = self.run
        run.finished_at = datetime.now(timezone.utc)
        if exc is None:
            run.status = "succeeded"
        else:
            run.status = "failed"
            run.error = f"{exc_type.__name__}: {exc}"[:4000]
        try:
            _write(self.spark, self.lake, run)
        except Exception:  # noqa: BLE001 - never mask the job's own error with a ledger error
            log.exception("could not record run %s in the ledger", run.run_id)
            if exc is None:
                raise
        log.info(
            "job %s run %s %s in %.1fs: rows in=%d out=%d rejected=%d",
            run.job, run.run_id, run.status, run.duration_s, run.rows_in, run.rows_out, run.rows_rejected,
        )
        return False


def print_job_runs(spark: SparkSession, lake: Lakehouse, last: int = 20) -> None:
    if not delta_io.table_exists(spark, lake, OPS_JOB_RUNS.name):
        print("no job runs recorded yet")
        return
    rows = (
        delta_io.read_table(spark, lake, OPS_JOB_RUNS.name)
        .orderBy(F.desc("started_at"))
        .limit(last)
        .collect()
    )
    print(f"  {'started (UTC)':<20} {'job':<10} {'status':<10} {'secs':>7} {'in':>11} {'out':>11} {'rejected':>9}  run")
    for r in rows:
        secs = f"{r['duration_s']:.1f}" if r["duration_s"] is not None else "-"
        print(
            f"  {r['started_at']:%Y-%m-%d %H:%M:%S}  {r['job']:<10} {r['status']:<10} {secs:>7} "
            f"{r['rows_in'] or 0:>11,} {r['rows_out'] or 0:>11,} {r['rows_rejected'] or 0:>9,}  {r['run_id'][:12]}"
        )


def add_arguments(parser) -> None:
    parser.add_argument("--last", type=int, default=20, help="how many recent runs to show")


def run_job(args, config: KfrConfig) -> int:
    from kfr_spark.session import build_session

    spark = build_session(config, "kfr-runs")
    print_job_runs(spark, Lakehouse(config.lakehouse.root), args.last)
    return 0
