"""Align: each comment moves back by its typing time and is pinned to the shot on screen at that moment.

`bronze.tsc` + `silver.shots` → `silver.tsc_aligned`. A viewer reacts to what they saw, then types; the time
stamp is when they pressed enter. KFRCI moves each comment back by its typing time (≈ 40 words a minute; for
Chinese we count characters, and each run of Latin letters or digits as one word), clamps it to the video, and
gives it to the shot containing that moment.

No cartesian or range joins: comments and shots are co-grouped by video, and inside each group the shot is
found by a binary search over the sorted shot starts (`numpy.searchsorted`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    DoubleType,
    IntegerType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from kfr_spark import delta_io
from kfr_spark.catalog import BRONZE_TSC, OPS_STAGE_REJECTS, SILVER_SHOTS, SILVER_TSC_ALIGNED, Lakehouse
from kfr_spark.config import AlignConfig, KfrConfig
from kfr_spark.ledger import JobRun

log = logging.getLogger(__name__)

# A CJK ideograph, kana or hangul syllable each count as one unit; so does each run of other word characters.
_TYPING_UNITS = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]|[^\W\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+")


def typing_units(text: str) -> int:
    """How many 'words' a comment took to type: CJK characters one each, other words one each."""
    return len(_TYPING_UNITS.findall(text))


def typing_delay_s(texts: pd.Series, cfg: AlignConfig) -> np.ndarray:
    units = texts.str.count(_TYPING_UNITS.pattern).to_numpy(dtype=np.float64)
    return np.minimum(units * 60.0 / cfg.typing_chars_per_minute, cfg.max_typing_delay_s)


def shot_for(moments: np.ndarray, shot_starts: np.ndarray) -> np.ndarray:
    """Index of the shot containing each moment; shots are contiguous and `shot_starts` sorted ascending.

    A moment exactly on a boundary belongs to the shot that starts there.
    """
    return np.clip(np.searchsorted(shot_starts, moments, side="right") - 1, 0, len(shot_starts) - 1)


@dataclass(frozen=True)
class AlignedVideo:
    aligned: pd.DataFrame
    rejects: pd.DataFrame  # columns: entity_key, reason, detail


def align_video(comments: pd.DataFrame, shots: pd.DataFrame, cfg: AlignConfig) -> AlignedVideo:
    """Align one video's comments (video_time_s, text, …) to its shots (shot_idx, start_s, end_s)."""
    keys = comments["source"] + "/" + comments["video_id"] + "/" + comments["comment_id"]
    if shots.empty:
        rejects = pd.DataFrame({"entity_key": keys, "reason": "unknown_video",
                                "detail": "no shots for this video in silver.shots"})
        return AlignedVideo(comments.iloc[0:0], rejects)
    shots = shots.sort_values("start_s")
    starts = shots["start_s"].to_numpy(dtype=np.float64)
    end = float(shots["end_s"].max())
    times = comments["video_time_s"].to_numpy(dtype=np.float64)
    outside = (times < 0) | (times > end + cfg.end_tolerance_s) | ~np.isfinite(times)
    rejects = pd.DataFrame({
        "entity_key": keys[outside],
        "reason": "outside_video",
        "detail": [f"time {t:.3f}s outside the video (0..{end:.3f}s)" for t in times[outside]],
    })
    kept = comments[~outside]
    delay = typing_delay_s(kept["text"], cfg)
    moment = np.clip(kept["video_time_s"].to_numpy(dtype=np.float64) - delay, starts[0], end)
    shot_idx = shots["shot_idx"].to_numpy()[shot_for(moment, starts)]
    aligned = kept.assign(typing_delay_s=delay, moment_s=moment, shot_idx=shot_idx.astype(np.int32))
    return AlignedVideo(aligned, rejects)


_ALIGN_OUT = StructType(
    [
        StructField("kind", StringType(), False),
        StructField("source", StringType(), True),
        StructField("video_id", StringType(), True),
        StructField("comment_id", StringType(), True),
        StructField("user_id", StringType(), True),
        StructField("video_time_s", DoubleType(), True),
        StructField("typing_delay_s", DoubleType(), True),
        StructField("moment_s", DoubleType(), True),
        StructField("shot_idx", IntegerType(), True),
        StructField("mode", IntegerType(), True),
        StructField("is_special", BooleanType(), True),
        StructField("text", StringType(), True),
        StructField("posted_at", TimestampType(), True),
        StructField("entity_key", StringType(), True),
        StructField("reason", StringType(), True),
        StructField("detail", StringType(), True),
    ]
)
_COMMENT_COLUMNS = ["source", "video_id", "comment_id", "user_id", "video_time_s", "mode", "is_special", "text",
                    "posted_at"]


def _align_group(cfg: AlignConfig):
    columns = [f.name for f in _ALIGN_OUT.fields]

    def align(comments: pd.DataFrame, shots: pd.DataFrame) -> pd.DataFrame:
        if comments.empty:
            return pd.DataFrame(columns=columns)
        result = align_video(comments, shots, cfg)
        aligned = result.aligned.assign(kind="comment", entity_key=None, reason=None, detail=None)
        rejects = result.rejects.assign(kind="reject")
        return pd.concat([aligned, rejects], ignore_index=True).reindex(columns=columns)

    return align


def align_comments(spark: SparkSession, lake: Lakehouse, cfg: AlignConfig, run: JobRun, full: bool = False) -> dict:
    run.read(BRONZE_TSC.name, delta_io.current_version(spark, lake, BRONZE_TSC.name))
    run.read(SILVER_SHOTS.name, delta_io.current_version(spark, lake, SILVER_SHOTS.name))
    comments = delta_io.read_table(spark, lake, BRONZE_TSC.name).select(*_COMMENT_COLUMNS)
    if not full and delta_io.table_exists(spark, lake, SILVER_TSC_ALIGNED.name):
        done = delta_io.read_table(spark, lake, SILVER_TSC_ALIGNED.name).select(*SILVER_TSC_ALIGNED.keys)
        comments = comments.join(done, list(SILVER_TSC_ALIGNED.keys), "left_anti")
    shots = delta_io.read_table(spark, lake, SILVER_SHOTS.name).select("video_id", "shot_idx", "start_s", "end_s")

    out = (
        comments.groupBy("video_id")
        .cogroup(shots.groupBy("video_id"))
        .applyInPandas(_align_group(cfg), schema=_ALIGN_OUT)
        .persist()
    )
    try:
        aligned = out.filter(F.col("kind") == "comment").withColumn("run_id", F.lit(run.run_id))
        rejects = out.filter(F.col("kind") == "reject").select(
            F.lit("align").alias("stage"), "entity_key", "reason", "detail", F.lit(run.run_id).alias("run_id")
        )
        written = delta_io.merge_upsert(spark, lake, SILVER_TSC_ALIGNED.name, aligned)
        run.wrote(SILVER_TSC_ALIGNED.name, written.version)
        rejected = delta_io.merge_upsert(spark, lake, OPS_STAGE_REJECTS.name, rejects)
        run.wrote(OPS_STAGE_REJECTS.name, rejected.version)
        counts = {r["kind"]: int(r["n"]) for r in out.groupBy("kind").agg(F.count("*").alias("n")).collect()}
        by_reason = {r["reason"]: int(r["n"]) for r in rejects.groupBy("reason").agg(F.count("*").alias("n")).collect()}
    finally:
        out.unpersist()
    run.rows_in = sum(counts.values())
    run.rows_out = written.rows_inserted + written.rows_updated
    run.rows_rejected = counts.get("reject", 0)
    run.metrics.update({f"rejected.{k}": v for k, v in by_reason.items()})
    return {"aligned": counts.get("comment", 0), "written": run.rows_out, "rejected": by_reason}


def add_arguments(parser) -> None:
    parser.add_argument("--full", action="store_true",
                        help="realign every comment (after shots changed), not only comments not aligned yet")


def run_job(args, config: KfrConfig) -> int:
    from kfr_spark.ledger import record_job_run
    from kfr_spark.session import build_session

    spark = build_session(config, "kfr-align")
    lake = Lakehouse(config.lakehouse.root)
    with record_job_run(spark, lake, "align", config, {"full": args.full}) as run:
        summary = align_comments(spark, lake, config.align, run, full=args.full)
    rejected = ", ".join(f"{k}={v}" for k, v in sorted(summary["rejected"].items())) or "none"
    print(f"align: {summary['aligned']:,} comments aligned, {summary['written']:,} rows written to "
          f"silver.tsc_aligned; rejected: {rejected} [run {run.run_id}]")
    return 0
