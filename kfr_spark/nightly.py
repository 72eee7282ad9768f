"""The nightly (`kfr nightly`): every stage in order, in one Spark session, doing only what new input needs.

Each step has a *fingerprint*: the Delta versions of the tables that trigger it, its config section, and for a
few steps something else (the comment files ingest has not read yet, the video catalogs' sizes and times, the run
date). A step whose fingerprint equals the one of its last successful run is skipped: a second nightly on the same
input does no work, and a nightly after a failed step redoes nothing that finished — it starts again at the step
that failed (a training killed mid-way resumes from its checkpoint: same run key, same checkpoint). The stages are
incremental themselves, so a step that does run processes only what is new: ingest reads only new or changed
comment files (`ops.ingested_files`), shots only new videos, align and tokenize only comments without a row,
features only key frames without a vector.

Training follows a schedule (`nightly.retrain_every_days`): a model is retrained when it never was, or when the
schedule is due and its inputs changed; in between, scoring uses the latest model through the indices it was
trained on. Every step's outcome goes to `ops.nightly_steps` (beside each stage's own row in `ops.job_runs`),
and a summary table with row counts and timings is printed at the end; progress is logged while it runs.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from kfr_spark import delta_io
from kfr_spark.catalog import (
    BRONZE_TSC,
    BRONZE_VIDEOS,
    GOLD_FRAMES,
    GOLD_INTERACTIONS,
    GOLD_ITEM_INTERACTIONS,
    GOLD_USER_KEYFRAMES,
    GOLD_USERS,
    OPS_JOB_RUNS,
    OPS_NIGHTLY_STEPS,
    SILVER_FRAME_FEATURES,
    SILVER_SHOTS,
    SILVER_TSC_ALIGNED,
    SILVER_TSC_TOKENS,
    Lakehouse,
)
from kfr_spark.config import ConfigError, KfrConfig

log = logging.getLogger(__name__)

STAGE = "nightly"


@dataclass(frozen=True)
class Step:
    """One stage run by the nightly: the `kfr` stage, its arguments, and what decides whether it must run."""

    name: str  # unique within a nightly, e.g. "train:kfrci"
    stage: str  # the kfr stage (and its ops.job_runs job name)
    argv: tuple[str, ...] = ()
    triggers: tuple[str, ...] = ()  # tables whose versions are part of the fingerprint
    config_sections: tuple[str, ...] = ()
    extra: Callable[[], object] | None = None  # anything else the fingerprint needs


@dataclass
class StepOutcome:
    name: str
    status: str  # succeeded | skipped | failed
    seconds: float = 0.0
    rows_in: int = 0
    rows_out: int = 0
    detail: str = ""


@dataclass
class NightlySummary:
    nightly_id: str
    run_date: datetime.date
    outcomes: list[StepOutcome] = field(default_factory=list)

    @property
    def failed(self) -> StepOutcome | None:
        return next((o for o in self.outcomes if o.status == "failed"), None)

    def table(self) -> str:
        lines = [f"nightly {self.nightly_id[:12]} for {self.run_date}:",
                 f"  {'step':<18} {'status':<10} {'secs':>7} {'rows in':>12} {'rows out':>12}  detail"]
        for o in self.outcomes:
            lines.append(f"  {o.name:<18} {o.status:<10} {o.seconds:>7.1f} {o.rows_in:>12,} {o.rows_out:>12,}  "
                         f"{o.detail}")
        ran = sum(o.status == "succeeded" for o in self.outcomes)
        skipped = sum(o.status == "skipped" for o in self.outcomes)
        total = sum(o.seconds for o in self.outcomes)
        state = f"FAILED at {self.failed.name}" if self.failed else "succeeded"
        lines.append(f"  {ran} ran, {skipped} skipped, {total:.1f}s: {state}")
        return "\n".join(lines)


def _files_fingerprint(paths: list[str]) -> list[tuple[str, int, int]]:
    """(path, size, mtime) of every file under local paths (the video catalogs: a handful of CSV files)."""
    out = []
    for p in paths:
        root = Path(p)
        for f in sorted([root] if root.is_file() else root.rglob("*.csv")):
            st = f.stat()
            out.append((str(f), st.st_size, st.st_mtime_ns))
    return out


def plan(spark: SparkSession, lake: Lakehouse, config: KfrConfig, run_date: datetime.date) -> list[Step]:
    cfg = config.nightly
    day = run_date.isoformat()
    steps = [Step("ingest", "ingest", ("--only-new",), (), ("ingest",),
                  extra=lambda: _new_comment_files(spark, lake, config))]
    if cfg.video_catalogs:
        catalogs = [str(Path(p)) for p in cfg.video_catalogs]
        steps.append(Step("videos", "videos", (*catalogs, "--id-column", cfg.video_id_column), (), ("shots",),
                          extra=lambda: _files_fingerprint(catalogs)))
    steps += [
        Step("shots", "shots", (), (BRONZE_VIDEOS.name,), ("shots",)),
        Step("align", "align", (), (BRONZE_TSC.name, SILVER_SHOTS.name), ("align",)),
        Step("tokenize", "tokenize", (), (SILVER_TSC_ALIGNED.name,), ("text",)),
        Step("features", "features", (), (SILVER_SHOTS.name,), ("features",)),
        Step("dataset", "dataset", (), (SILVER_TSC_ALIGNED.name, SILVER_TSC_TOKENS.name, SILVER_SHOTS.name,
                                       SILVER_FRAME_FEATURES.name), ("dataset",)),
    ]
    gold = (GOLD_USERS.name, GOLD_FRAMES.name, GOLD_INTERACTIONS.name, GOLD_ITEM_INTERACTIONS.name)
    for model in cfg.models:
        steps.append(Step(f"train:{model}", "train", ("--model", model), gold, ("train", "dataset"),
                          extra=lambda m=model: m))
        steps.append(Step(f"evaluate:{model}", "evaluate", ("--model", model, "--eval-id", f"nightly-{model}"),
                          (), ("evaluate",), extra=lambda m=model: _latest_run_key(spark, lake, m)))
    serving = (config.score.frame_model, config.score.item_model)
    steps.append(Step("score", "score", ("--date", day), gold, ("score",),
                      extra=lambda: [day, *(_latest_run_key(spark, lake, m) for m in serving)]))
    steps.append(Step("export", "export", ("--date", day), (GOLD_USER_KEYFRAMES.name,), ("export",),
                      extra=lambda: day))
    if cfg.gallery:
        steps.append(Step("gallery", "gallery", (), (GOLD_USER_KEYFRAMES.name, "gold.eval_metrics"), ("gallery",),
                          extra=lambda: day))
    return steps


def _latest_run_key(spark: SparkSession, lake: Lakehouse, model: str) -> str | None:
    """The run key of the model the evaluation or scoring would use now (the one its name serves)."""
    from kfr_spark.train import selected_model_run

    row = selected_model_run(spark, lake, model)
    return row["run_key"] if row else None


def _new_comment_files(spark: SparkSession, lake: Lakehouse, config: KfrConfig) -> object:
    from kfr_spark.ingest import new_files

    paths = [p for p in config.ingest.input_paths if "://" in p or Path(p).exists()]
    if not paths:
        raise ConfigError("nightly: ingest.input_paths is empty or missing: where do new comment files land?")
    files, fresh = new_files(spark, lake, paths, config.ingest)
    files.unpersist()
    return sorted(fresh)  # nothing new → the same fingerprint as the last successful ingest


def fingerprint(spark: SparkSession, lake: Lakehouse, config: KfrConfig, step: Step) -> str:
    sections = {s: getattr(config, s).model_dump(mode="json") for s in step.config_sections if hasattr(config, s)}
    payload = {"stage": step.stage, "argv": list(step.argv),
               "versions": {t: delta_io.current_version(spark, lake, t) for t in step.triggers},
               "config": sections, "extra": step.extra() if step.extra else None}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _last_success(spark: SparkSession, lake: Lakehouse, step: str):
    if not delta_io.table_exists(spark, lake, OPS_NIGHTLY_STEPS.name):
        return None
    return (delta_io.read_table(spark, lake, OPS_NIGHTLY_STEPS.name)
            .filter((F.col("step") == step) & (F.col("status") == "succeeded"))
            .orderBy(F.desc("finished_at")).first())


def _record(spark: SparkSession, lake: Lakehouse, nightly_id: str, run_date: datetime.date, outcome: StepOutcome,
            fp: str, started: datetime.datetime) -> None:
    from pyspark.sql import Row

    row = Row(nightly_id=nightly_id, step=outcome.name, run_date=run_date, status=outcome.status, fingerprint=fp,
              started_at=started.replace(tzinfo=None),
              finished_at=datetime.datetime.now(datetime.UTC).replace(tzinfo=None),
              seconds=float(outcome.seconds), rows_in=int(outcome.rows_in), rows_out=int(outcome.rows_out),
              detail=outcome.detail[:2000])
    delta_io.merge_upsert(spark, lake, OPS_NIGHTLY_STEPS.name,
                          spark.createDataFrame([row], schema=OPS_NIGHTLY_STEPS.schema))


def _stage_counts(spark: SparkSession, lake: Lakehouse, job: str, since: datetime.datetime) -> tuple[int, int, str]:
    """rows in/out of the stage's own ledger row for this step (the newest one started since `since`)."""
    row = (delta_io.read_table(spark, lake, OPS_JOB_RUNS.name)
           .filter((F.col("job") == job) & (F.col("started_at") >= F.lit(since.replace(tzinfo=None))))
           .orderBy(F.desc("started_at")).first())
    if row is None:
        return 0, 0, ""
    return int(row["rows_in"] or 0), int(row["rows_out"] or 0), row["run_id"]


def _schedule_allows(spark: SparkSession, lake: Lakehouse, config: KfrConfig, step: Step,
                     now: datetime.datetime) -> str | None:
    """None when a training step may run now; otherwise why not."""
    last = _last_success(spark, lake, step.name)
    if last is None:
        return None
    due = last["finished_at"] + datetime.timedelta(days=config.nightly.retrain_every_days)
    if now.replace(tzinfo=None) < due:
        return f"retrain not due until {due:%Y-%m-%d %H:%M} (nightly.retrain_every_days)"
    return None


def run_step(step: Step, config: KfrConfig) -> None:
    from kfr_spark.cli import STAGES, build_parser

    args = build_parser(wanted={step.stage}).parse_args([step.stage, *step.argv])
    rc = STAGES[step.stage].load().run_job(args, config)
    if rc:
        raise RuntimeError(f"kfr {step.stage} returned {rc}")


def run_nightly(spark: SparkSession, lake: Lakehouse, config: KfrConfig, run_date: datetime.date,
                force: tuple[str, ...] = ()) -> NightlySummary:
    summary = NightlySummary(nightly_id=uuid.uuid4().hex, run_date=run_date)
    steps = plan(spark, lake, config, run_date)
    unknown = set(force) - {s.name for s in steps} - {s.stage for s in steps}
    if unknown:
        raise ConfigError(f"--force: no such step {sorted(unknown)}; steps: {', '.join(s.name for s in steps)}")
    for i, step in enumerate(steps, 1):
        started = datetime.datetime.now(datetime.UTC)
        t0 = time.perf_counter()
        fp = fingerprint(spark, lake, config, step)
        last = _last_success(spark, lake, step.name)
        forced = step.name in force or step.stage in force
        reason = None
        if not forced and last is not None and last["fingerprint"] == fp:
            reason = "inputs unchanged since the last successful run"
        elif not forced and step.stage == "train":
            reason = _schedule_allows(spark, lake, config, step, started)
        if reason:
            outcome = StepOutcome(step.name, "skipped", time.perf_counter() - t0, detail=reason)
            log.info("nightly [%d/%d] %s: skipped (%s)", i, len(steps), step.name, reason)
            summary.outcomes.append(outcome)
            _record(spark, lake, summary.nightly_id, run_date, outcome, fp, started)
            continue
        log.info("nightly [%d/%d] %s: running", i, len(steps), step.name)
        try:
            run_step(step, config)
        except Exception as error:  # noqa: BLE001 - recorded, summarised, and the nightly stops here
            outcome = StepOutcome(step.name, "failed", time.perf_counter() - t0,
                                  detail=f"{type(error).__name__}: {error}"[:500])
            log.error("nightly [%d/%d] %s failed: %s", i, len(steps), step.name, outcome.detail)
            summary.outcomes.append(outcome)
            _record(spark, lake, summary.nightly_id, run_date, outcome, fp, started)
            break
        rows_in, rows_out, stage_run = _stage_counts(spark, lake, step.stage, started)
        # the fingerprint after the step: what it wrote itself must not make the next nightly run it again
        outcome = StepOutcome(step.name, "succeeded", time.perf_counter() - t0, rows_in, rows_out,
                              detail=f"run {stage_run[:12]}" if stage_run else "")
        log.info("nightly [%d/%d] %s: done in %.1fs (rows in %d, out %d)", i, len(steps), step.name,
                 outcome.seconds, rows_in, rows_out)
        summary.outcomes.append(outcome)
        _record(spark, lake, summary.nightly_id, run_date, outcome, fingerprint(spark, lake, config, step), started)
    return summary


def add_arguments(parser) -> None:
    parser.add_argument("--date", type=datetime.date.fromisoformat, default=None,
                        help="run date (YYYY-MM-DD) to score and export; default: today (UTC)")
    parser.add_argument("--force", action="append", default=[], metavar="STEP",
                        help="run this step (or every step of this stage, e.g. train) even if it would be skipped")


def run_job(args, config: KfrConfig) -> int:
    from kfr_spark.ledger import record_job_run
    from kfr_spark.session import build_session

    run_date = args.date or datetime.datetime.now(datetime.UTC).date()
    spark = build_session(config, "kfr-nightly")
    lake = Lakehouse(config.lakehouse.root)
    with record_job_run(spark, lake, STAGE, config, {"run_date": run_date.isoformat(), "force": args.force}) as run:
        summary = run_nightly(spark, lake, config, run_date, tuple(args.force))
        run.rows_out = sum(o.status == "succeeded" for o in summary.outcomes)
        run.metrics.update({"steps_run": float(run.rows_out),
                            "steps_skipped": float(sum(o.status == "skipped" for o in summary.outcomes))})
    print(summary.table())
    return 1 if summary.failed else 0
