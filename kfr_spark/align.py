"""Align: each comment moves back by its typing time and is pinned to the shot on screen at that moment.

`bronze.tsc` + `silver.shots` → `silver.tsc_aligned`. A viewer reacts to what they saw, then types; the time
stamp is when they pressed enter. KFRCI moves each comment back by its typing time (≈ 40 words a minute; for
Chinese we count characters, and each run of other letters or digits as one word), clamps it to the video, and
gives it to the shot containing that moment.

The rule is written twice, on purpose, and the tests hold the two to each other: `align_video` is the pure
statement over one video's comments (a binary search over the sorted shot starts), and `align_comments` is the
same rule as Spark SQL, so the job runs in the JVM with no Python worker and no shuffle of the comments. The shot
lookup there is a binned range join: each shot is listed under every bin of its video it overlaps (a bin is
about one average shot long), each comment joins the shots listed under its moment's bin, and the one whose
[start, next start) holds the moment is kept. Both sides are joined by equality on (video, bin), so Spark may
broadcast the small shot side, or shuffle both when it is not small — never a cartesian product.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from kfr_spark import delta_io
from kfr_spark.catalog import BRONZE_TSC, OPS_STAGE_REJECTS, SILVER_SHOTS, SILVER_TSC_ALIGNED, Lakehouse
from kfr_spark.config import AlignConfig, KfrConfig
from kfr_spark.ledger import JobRun

log = logging.getLogger(__name__)

# One typing unit: a CJK ideograph, kana or hangul syllable; or a run of other letters, digits and underscores.
# Both patterns mean the same in RE2 (pyarrow, the pure functions) and java.util.regex (the Spark job).
CJK_CHAR = "[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]"
OTHER_WORD = r"[\p{L}\p{N}_]+"  # counted after every CJK character became a space


def typing_units(text: str) -> int:
    """How many 'words' a comment took to type: CJK characters one each, other words one each."""
    return int(_typing_units(pa.array([text], pa.string()))[0].as_py())


def _typing_units(texts: pa.Array) -> pa.Array:
    cjk = pc.count_substring_regex(texts, CJK_CHAR)
    return pc.add(cjk, pc.count_substring_regex(pc.replace_substring_regex(texts, CJK_CHAR, " "), OTHER_WORD))


def typing_delay_s(texts: pd.Series, cfg: AlignConfig) -> np.ndarray:
    units = _typing_units(pa.array(texts, pa.string())).to_numpy(zero_copy_only=False).astype(np.float64)
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
    """Align one video's comments (video_time_s, text, …) to its shots (shot_idx, start_s, end_s).

    Shots that start at the same moment are ordered by index; the last of them holds the moment.
    """
    keys = comments["source"] + "/" + comments["video_id"] + "/" + comments["comment_id"]
    if shots.empty:
        rejects = pd.DataFrame({"entity_key": keys, "reason": "unknown_video",
                                "detail": "no shots for this video in silver.shots"})
        return AlignedVideo(comments.iloc[0:0], rejects)
    shots = shots.sort_values(["start_s", "shot_idx"], kind="stable")
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


# --- the same rule in Spark SQL ------------------------------------------------------------------------------

_COMMENT_COLUMNS = ["source", "video_id", "comment_id", "user_id", "video_time_s", "mode", "is_special", "text",
                    "posted_at"]


def typing_delay_column(text: Column, cfg: AlignConfig) -> Column:
    """The typing delay in Spark SQL: every unit becomes one marker character, and the markers are counted.

    One regex pass (java.util.regex, whose class intersection RE2 lacks), then plain string functions; the
    comment's own marker characters are dropped first. Never null, so no filter the optimizer infers from it
    makes Spark evaluate the regex a second time."""
    marker = "\u0001"
    ranges = CJK_CHAR[1:-1]
    one_unit = f"{CJK_CHAR}|[[\\p{{L}}\\p{{N}}_]&&[^{ranges}]]+"
    marked = F.regexp_replace(F.translate(text, marker, ""), one_unit, marker)
    units = F.length(marked) - F.length(F.replace(marked, F.lit(marker), F.lit("")))
    delay = F.least(units.cast("double") * F.lit(60.0) / F.lit(cfg.typing_chars_per_minute),
                    F.lit(float(cfg.max_typing_delay_s)))
    return F.coalesce(delay, F.lit(0.0))


def video_extents(shots: DataFrame) -> DataFrame:
    """Per video: where its first shot starts, where its last shot ends, and the bin width of the range join."""
    return shots.groupBy("video_id").agg(
        F.min("start_s").alias("first_s"),
        F.max("end_s").alias("end_s"),
        F.count("*").alias("n_shots"),
    ).withColumn("bin_s", F.greatest((F.col("end_s") - F.col("first_s")) / F.col("n_shots"), F.lit(1e-3)))


def _bin(moment: Column, bin_s: Column) -> Column:
    return F.floor(moment / bin_s)


def shot_bins(shots: DataFrame, extents: DataFrame) -> DataFrame:
    """Each shot as [start_s, next_start_s) (the last one open), listed once under every bin it overlaps.

    Bins are monotone in time (floor of time over a positive width), so a moment's bin always lists its shot.
    """
    order = Window.partitionBy("video_id").orderBy("start_s", "shot_idx")
    spans = shots.select("video_id", "shot_idx", "start_s").withColumn(
        "next_start_s", F.lead("start_s").over(order))
    return (
        spans.join(extents.select("video_id", "end_s", "bin_s"), "video_id")
        .withColumn("bin", F.explode(F.sequence(
            _bin(F.col("start_s"), F.col("bin_s")),
            _bin(F.coalesce(F.col("next_start_s"), F.greatest(F.col("end_s"), F.col("start_s"))), F.col("bin_s")),
        )))
        .select("video_id", "bin", "shot_idx", "start_s", "next_start_s")
    )


def classify(comments: DataFrame, extents: DataFrame, cfg: AlignConfig) -> DataFrame:
    """Each comment with its video's extent and `reason`: null when it can be aligned, else why it cannot.

    The extents are one row per video, small beside the comments, so they are broadcast: no comment moves."""
    t = F.col("video_time_s")  # ±infinity fall on the wrong side of 0 or of the end; NaN is said outright
    outside = F.isnan(t) | (t < 0) | (t > F.col("end_s") + F.lit(float(cfg.end_tolerance_s)))
    return comments.join(F.broadcast(extents), "video_id", "left").withColumn(
        "reason",
        F.when(F.col("end_s").isNull(), F.lit("unknown_video"))
        .when(outside, F.lit("outside_video")),
    )


def aligned_rows(classified: DataFrame, bins: DataFrame) -> DataFrame:
    moment = F.least(F.greatest(F.col("video_time_s") - F.col("typing_delay_s"), F.col("first_s")), F.col("end_s"))
    candidates = (
        classified.filter(F.col("reason").isNull())
        .withColumn("moment_s", moment)
        .withColumn("bin", _bin(F.col("moment_s"), F.col("bin_s")))
        .join(bins, ["video_id", "bin"])
    )
    holds = (F.col("start_s") <= F.col("moment_s")) & (
        F.col("next_start_s").isNull() | (F.col("moment_s") < F.col("next_start_s")))
    return candidates.filter(holds).select(
        "source", "video_id", "comment_id", "user_id", "video_time_s", "typing_delay_s", "moment_s",
        F.col("shot_idx").cast("int").alias("shot_idx"), "mode", "is_special", "text", "posted_at",
    )


def reject_rows(classified: DataFrame) -> DataFrame:
    detail = F.when(
        F.col("reason") == "unknown_video", F.lit("no shots for this video in silver.shots")
    ).otherwise(F.format_string("time %.3fs outside the video (0..%.3fs)", F.col("video_time_s"), F.col("end_s")))
    return classified.filter(F.col("reason").isNotNull()).select(
        F.concat_ws("/", "source", "video_id", "comment_id").alias("entity_key"), "reason", detail.alias("detail"))


def align_comments(spark: SparkSession, lake: Lakehouse, cfg: AlignConfig, run: JobRun, full: bool = False) -> dict:
    run.read(BRONZE_TSC.name, delta_io.current_version(spark, lake, BRONZE_TSC.name))
    run.read(SILVER_SHOTS.name, delta_io.current_version(spark, lake, SILVER_SHOTS.name))
    comments = delta_io.read_table(spark, lake, BRONZE_TSC.name).select(*_COMMENT_COLUMNS)
    comments = comments.withColumn("typing_delay_s", typing_delay_column(F.col("text"), cfg))  # before any join
    if not full and delta_io.table_exists(spark, lake, SILVER_TSC_ALIGNED.name):
        done = delta_io.read_table(spark, lake, SILVER_TSC_ALIGNED.name).select(*SILVER_TSC_ALIGNED.keys)
        comments = comments.join(done, list(SILVER_TSC_ALIGNED.keys), "left_anti")
    shots = delta_io.read_table(spark, lake, SILVER_SHOTS.name).select("video_id", "shot_idx", "start_s", "end_s")
    extents = video_extents(shots)
    classified = classify(comments, extents, cfg)

    aligned = aligned_rows(classified, shot_bins(shots, extents)).withColumn("run_id", F.lit(run.run_id))
    written = delta_io.merge_upsert(spark, lake, SILVER_TSC_ALIGNED.name, aligned)
    run.wrote(SILVER_TSC_ALIGNED.name, written.version)
    # Rejects are few: kept for the write and the counts, so the comments are scanned once more, not twice.
    rejects = reject_rows(classified).select(
        F.lit("align").alias("stage"), "entity_key", "reason", "detail", F.lit(run.run_id).alias("run_id")
    ).persist()
    try:
        rejected = delta_io.merge_upsert(spark, lake, OPS_STAGE_REJECTS.name, rejects)
        counts = {r["reason"]: int(r["n"]) for r in rejects.groupBy("reason").agg(F.count("*").alias("n")).collect()}
    finally:
        rejects.unpersist()
    run.wrote(OPS_STAGE_REJECTS.name, rejected.version)
    run.rows_in = comments.count()  # from Parquet footers when nothing is joined
    n_aligned = run.rows_in - sum(counts.values())  # every comment not rejected holds exactly one shot
    run.rows_out = written.rows_inserted + written.rows_updated
    run.rows_rejected = sum(counts.values())
    run.metrics.update({f"rejected.{k}": v for k, v in counts.items()})
    return {"aligned": n_aligned, "written": run.rows_out, "rejected": counts}


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
