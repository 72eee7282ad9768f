"""`kfr shots`: `bronze.videos` → `silver.shots` (+ `ops.stage_rejects`, stage "shots").

One Spark task per video (or per `shots.videos_per_task` videos): the task opens the file with OpenCV, decodes
it once and returns its shots with JPEG key frames (`kfr_spark.shots.analyze_video`). A video without a file
gets `shots.uniform_shots` uniform slices of its duration. A file that cannot be read becomes a reject row
(missing_file, empty_file, undecodable, zero_frames, truncated, bad_fps, decode_error); nothing raises out of
a task, and the rest of the batch completes.

Incremental and exact: a video is skipped when its rows in silver.shots carry the current parameters' hash
(the detector's, or the uniform fallback's with the same duration) unless `--force`. A re-detected video's
rows are upserted on (video_id, shot_idx) and its rows past the new shot count are deleted, so the table
holds exactly the latest segmentation; its old reject, if any, is removed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BinaryType,
    BooleanType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from kfr_spark import delta_io
from kfr_spark.catalog import BRONZE_VIDEOS, OPS_STAGE_REJECTS, SILVER_SHOTS, Lakehouse
from kfr_spark.config import ConfigError, KfrConfig, ShotsConfig
from kfr_spark.ledger import JobRun

log = logging.getLogger(__name__)

STAGE = "shots"

OUT_SCHEMA = StructType(
    [
        StructField("kind", StringType(), False),  # shot | reject | done (one per segmented video)
        StructField("video_id", StringType(), False),
        StructField("shot_idx", IntegerType(), True),
        StructField("start_s", DoubleType(), True),
        StructField("end_s", DoubleType(), True),
        StructField("start_frame", IntegerType(), True),
        StructField("end_frame", IntegerType(), True),
        StructField("keyframe_s", DoubleType(), True),
        StructField("keyframe_frame", IntegerType(), True),
        StructField("keyframe_jpeg", BinaryType(), True),
        StructField("keyframe_width", IntegerType(), True),
        StructField("keyframe_height", IntegerType(), True),
        StructField("is_uniform", BooleanType(), True),
        StructField("detector", StringType(), True),
        StructField("params_hash", StringType(), True),
        StructField("n_shots", IntegerType(), True),
        StructField("n_existing", IntegerType(), True),
        StructField("had_reject", BooleanType(), True),
        StructField("frames", LongType(), True),
        StructField("seconds", DoubleType(), True),
        StructField("reason", StringType(), True),
        StructField("detail", StringType(), True),
    ]
)
_COLUMNS = [f.name for f in OUT_SCHEMA.fields]

_WORKER: dict = {}


def _init_worker() -> None:
    """Once per Python worker: OpenCV's own thread pool off (Spark already runs a task per core)."""
    if not _WORKER:
        import cv2

        cv2.setNumThreads(1)
        _WORKER["ready"] = True


def _row(kind: str, video_id: str, **values) -> tuple:
    return tuple(kind if c == "kind" else video_id if c == "video_id" else values.get(c) for c in _COLUMNS)


def process_video(video_id: str, duration_s: float, fps: float | None, uri: str | None, cfg: ShotsConfig,
                  detector_hash: str, uniform_hash: str) -> list[tuple]:
    """All output rows of one catalog video; never raises."""
    from kfr_spark.shots import VideoReject, analyze_video, uniform_shots

    started = time.perf_counter()
    try:
        if uri is None:
            records = uniform_shots(duration_s, cfg.uniform_shots)
            frames, params_hash = 0, uniform_hash
        else:
            result = analyze_video(uri, cfg, catalog_fps=fps)
            records, frames, params_hash = result.shots, result.frames, detector_hash
    except VideoReject as reject:
        return [_row("reject", video_id, reason=reject.reason, detail=reject.detail[:2000])]
    except Exception as error:  # noqa: BLE001 - a bad file must not kill the batch
        log.exception("shots: %s failed", video_id)
        return [_row("reject", video_id, reason="decode_error", detail=f"{type(error).__name__}: {error}"[:2000])]
    rows = [
        _row("shot", video_id, shot_idx=r.shot_idx, start_s=r.start_s, end_s=r.end_s, start_frame=r.start_frame,
             end_frame=r.end_frame, keyframe_s=r.keyframe_s, keyframe_frame=r.keyframe_frame,
             keyframe_jpeg=r.keyframe_jpeg, keyframe_width=r.keyframe_width, keyframe_height=r.keyframe_height,
             is_uniform=r.is_uniform, detector=r.detector, params_hash=params_hash)
        for r in records
    ]
    rows.append(_row("done", video_id, n_shots=len(records), frames=frames, is_uniform=uri is None,
                     seconds=time.perf_counter() - started))
    return rows


def analyze_partition(cfg: ShotsConfig, detector_hash: str, uniform_hash: str):
    """The mapInPandas function: catalog rows → OUT_SCHEMA rows, one DataFrame per video."""

    def analyze(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        _init_worker()
        for batch in batches:
            for video_id, duration_s, fps, uri, n_existing, had_reject in zip(
                    batch["video_id"], batch["duration_s"], batch["fps"], batch["uri"], batch["n_existing"],
                    batch["had_reject"]):
                fps = None if fps is None or (isinstance(fps, float) and math.isnan(fps)) else float(fps)
                uri = None if uri is None or (isinstance(uri, float) and math.isnan(uri)) else str(uri)
                rows = process_video(str(video_id), float(duration_s), fps, uri, cfg, detector_hash, uniform_hash)
                if rows[-1][0] == "done":
                    done = dict(zip(_COLUMNS, rows[-1]), n_existing=int(n_existing), had_reject=bool(had_reject))
                    rows[-1] = tuple(done[c] for c in _COLUMNS)
                yield pd.DataFrame.from_records(rows, columns=_COLUMNS)

    return analyze


@dataclass(frozen=True)
class ShotsSummary:
    videos: int
    skipped: int
    segmented: int
    uniform: int
    shots_written: int
    shots_deleted: int
    frames: int
    decode_seconds: float
    rejects_by_reason: dict[str, int]


def _todo(spark: SparkSession, lake: Lakehouse, videos: DataFrame, detector_hash: str, uniform_hash: str,
          force: bool) -> DataFrame:
    """The catalog videos whose shots are missing or were made with other parameters (all with force), with
    how many shot rows each has now (`n_existing`) and whether it has a reject from this stage (`had_reject`):
    what tells which clean-up writes are needed at all."""
    out = videos
    if delta_io.table_exists(spark, lake, SILVER_SHOTS.name):
        existing = (
            delta_io.read_table(spark, lake, SILVER_SHOTS.name)
            .groupBy("video_id")
            .agg(F.min("params_hash").alias("h_min"), F.max("params_hash").alias("h_max"),
                 F.max("end_s").alias("max_end"), F.count("*").alias("n_existing"))
        )
        out = out.join(existing, "video_id", "left")
        if not force:
            expected = F.when(F.col("uri").isNull(), F.lit(uniform_hash)).otherwise(F.lit(detector_hash))
            current = (
                (F.col("h_min") == F.col("h_max")) & (F.col("h_min") == expected)
                & (F.col("uri").isNotNull() | (F.abs(F.col("max_end") - F.col("duration_s")) < 1e-6))
            )
            out = out.filter(F.col("h_min").isNull() | ~current)
    else:
        out = out.withColumn("n_existing", F.lit(None).cast("long"))
    if delta_io.table_exists(spark, lake, OPS_STAGE_REJECTS.name):
        had = (delta_io.read_table(spark, lake, OPS_STAGE_REJECTS.name).filter(F.col("stage") == STAGE)
               .select(F.col("entity_key").alias("video_id"), F.lit(True).alias("had_reject")))
        out = out.join(had, "video_id", "left")
    else:
        out = out.withColumn("had_reject", F.lit(None).cast("boolean"))
    return out.select(*videos.columns, F.coalesce("n_existing", F.lit(0)).cast("int").alias("n_existing"),
                      F.coalesce("had_reject", F.lit(False)).alias("had_reject"))


def _one_task_each(todo: DataFrame, n: int, per_task: int) -> DataFrame:
    """`per_task` videos per partition (the last may hold fewer), in video_id order.

    Task numbers are consecutive integers and there are as many partitions as tasks, so range partitioning
    (which samples every row of a table this small) puts each task's videos in a partition of their own.
    """
    n_tasks = max(1, math.ceil(n / per_task))
    task = ((F.row_number().over(Window.orderBy("video_id")) - 1) / per_task).cast("int")
    return todo.withColumn("_task", task).repartitionByRange(n_tasks, "_task").drop("_task")


def _delete_matching(spark: SparkSession, lake: Lakehouse, name: str, source: DataFrame, condition: str) -> int:
    """Delete the rows of `name` that match a row of `source` under `condition` (t: table, s: source)."""
    from delta.tables import DeltaTable

    delta = DeltaTable.forPath(spark, lake.path(name))
    delta.alias("t").merge(source.alias("s"), condition).whenMatchedDelete().execute()
    metrics = delta.history(1).collect()[0]["operationMetrics"] or {}
    return int(metrics.get("numTargetRowsDeleted", 0) or 0)


def detect_shots(spark: SparkSession, lake: Lakehouse, cfg: ShotsConfig, run: JobRun, *, force: bool = False,
                 only: list[str] | None = None) -> ShotsSummary:
    from kfr_spark.shots import params_hash, uniform_params_hash

    if not delta_io.table_exists(spark, lake, BRONZE_VIDEOS.name):
        raise ConfigError("bronze.videos does not exist yet: load a video catalog first (kfr videos CATALOG.csv)")
    detector_hash, uniform_hash = params_hash(cfg), uniform_params_hash(cfg)
    run.metrics["params_hash"] = int(detector_hash[:8], 16)
    run.read(BRONZE_VIDEOS.name, delta_io.current_version(spark, lake, BRONZE_VIDEOS.name))
    run.read(SILVER_SHOTS.name, delta_io.current_version(spark, lake, SILVER_SHOTS.name))
    videos = delta_io.read_table(spark, lake, BRONZE_VIDEOS.name).select("video_id", "duration_s", "fps", "uri")
    if only:
        videos = videos.filter(F.col("video_id").isin(list(only)))
    n_videos = videos.count()
    # Checkpoints, not caches: the writes below change the tables these plans read, and Delta then drops the
    # caches that depend on them; a recomputed plan would decode every video again and see other rows to do.
    todo = _todo(spark, lake, videos, detector_hash, uniform_hash, force).localCheckpoint(eager=True)
    n_todo = todo.count()
    log.info("shots: %d catalog videos, %d to segment (params %s)", n_videos, n_todo, detector_hash)
    if n_todo == 0:
        run.rows_in = n_videos
        return ShotsSummary(n_videos, n_videos, 0, 0, 0, 0, 0, 0.0, {})
    tasks = _one_task_each(todo, n_todo, cfg.videos_per_task)
    out = tasks.mapInPandas(analyze_partition(cfg, detector_hash, uniform_hash), schema=OUT_SCHEMA)
    out = out.localCheckpoint(eager=True)
    try:
        done_stats = out.filter(F.col("kind") == "done").agg(
            F.count("*").alias("videos"), F.coalesce(F.sum(F.col("is_uniform").cast("int")), F.lit(0)).alias("uniform"),
            F.coalesce(F.sum("frames"), F.lit(0)).alias("frames"),
            F.coalesce(F.sum(F.when(~F.col("is_uniform"), F.col("seconds"))), F.lit(0.0)).alias("seconds"),
            F.coalesce(F.sum((F.col("n_existing") > F.col("n_shots")).cast("int")), F.lit(0)).alias("shrunk"),
            F.coalesce(F.sum(F.col("had_reject").cast("int")), F.lit(0)).alias("cleared"),
        ).first()
        by_reason = {r["reason"]: int(r["n"]) for r in out.filter(F.col("kind") == "reject").groupBy("reason")
                     .agg(F.count("*").alias("n")).collect()}
        shots = out.filter(F.col("kind") == "shot").select(
            *[c for c in SILVER_SHOTS.schema.fieldNames() if c != "run_id"], F.lit(run.run_id).alias("run_id"))
        done = out.filter(F.col("kind") == "done")
        written = delta_io.merge_upsert(spark, lake, SILVER_SHOTS.name, shots)
        run.wrote(SILVER_SHOTS.name, written.version)
        deleted = 0
        if int(done_stats["shrunk"]):  # re-detected with fewer shots: its rows past the new count go
            deleted = _delete_matching(spark, lake, SILVER_SHOTS.name,
                                       done.filter(F.col("n_existing") > F.col("n_shots")).select("video_id", "n_shots"),
                                       "t.video_id = s.video_id AND t.shot_idx >= s.n_shots")
            run.wrote(SILVER_SHOTS.name, delta_io.current_version(spark, lake, SILVER_SHOTS.name))
        if by_reason:
            rejects = out.filter(F.col("kind") == "reject").select(
                F.lit(STAGE).alias("stage"), F.col("video_id").alias("entity_key"), "reason", "detail",
                F.lit(run.run_id).alias("run_id"))
            run.wrote(OPS_STAGE_REJECTS.name, delta_io.merge_upsert(spark, lake, OPS_STAGE_REJECTS.name, rejects).version)
        if int(done_stats["cleared"]):  # segmented now: its reject from an earlier run is stale
            stale = done.filter(F.col("had_reject")).select(F.lit(STAGE).alias("stage"),
                                                             F.col("video_id").alias("entity_key"))
            _delete_matching(spark, lake, OPS_STAGE_REJECTS.name, stale,
                             "t.stage = s.stage AND t.entity_key = s.entity_key")
            run.wrote(OPS_STAGE_REJECTS.name, delta_io.current_version(spark, lake, OPS_STAGE_REJECTS.name))
    finally:
        out.unpersist()

    n_done = int(done_stats["videos"])
    run.rows_in = n_videos
    run.rows_out = written.rows_inserted + written.rows_updated
    run.rows_rejected = sum(by_reason.values())
    frames, seconds = int(done_stats["frames"]), float(done_stats["seconds"])
    run.metrics.update({
        "videos_skipped": n_videos - n_todo, "videos_segmented": n_done - int(done_stats["uniform"]),
        "videos_uniform": int(done_stats["uniform"]), "frames_decoded": frames, "decode_seconds": seconds,
        "shots_deleted": deleted, **{f"rejected.{k}": v for k, v in by_reason.items()},
    })
    return ShotsSummary(
        videos=n_videos, skipped=n_videos - n_todo, segmented=n_done - int(done_stats["uniform"]),
        uniform=int(done_stats["uniform"]), shots_written=written.rows_inserted + written.rows_updated,
        shots_deleted=deleted, frames=frames, decode_seconds=seconds, rejects_by_reason=dict(sorted(by_reason.items())),
    )


def add_arguments(parser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="segment every video again, even those already done with the current parameters")
    parser.add_argument("--video", action="append", dest="videos", metavar="VIDEO_ID",
                        help="only this video (repeatable)")


def run_job(args, config: KfrConfig) -> int:
    from kfr_spark.ledger import record_job_run
    from kfr_spark.session import build_session

    spark = build_session(config, "kfr-shots")
    lake = Lakehouse(config.lakehouse.root)
    params = {"force": bool(args.force), "videos": args.videos or []}
    with record_job_run(spark, lake, STAGE, config, params) as run:
        summary = detect_shots(spark, lake, config.shots, run, force=args.force, only=args.videos)
    reasons = ", ".join(f"{k}={v}" for k, v in summary.rejects_by_reason.items()) or "none"
    rate = f", {summary.frames / summary.decode_seconds:,.0f} frames/s per task" if summary.decode_seconds else ""
    print(
        f"shots: {summary.videos:,} videos ({summary.skipped:,} up to date), {summary.segmented:,} segmented "
        f"({summary.frames:,} frames{rate}), {summary.uniform:,} uniform → {summary.shots_written:,} new or changed "
        f"shots, {summary.shots_deleted:,} stale deleted, rejects: {reasons} [run {run.run_id}]"
    )
    return 0
