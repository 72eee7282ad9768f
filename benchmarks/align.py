"""Align benchmark: N comments → silver.tsc_aligned through the Spark job, and the same alignment in one process
with pandas + numpy.searchsorted (the same `align_video` per video) on the same data, in the same run.

The input is made by Spark itself (no parsing): `bronze.tsc` with N comments over V videos of 20-40 shots each,
comment texts of 1-20 CJK characters. Goal (issue 3): ≥ 200,000 rows/s on 2 cores at 10M.

    .venv/bin/python benchmarks/align.py --size 10000000
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUT, last_run, mib, run_kfr  # noqa: E402


def make_inputs(lakehouse: Path, n: int, videos: int) -> None:
    from pyspark.sql import functions as F

    from kfr_spark.catalog import BRONZE_TSC, SILVER_SHOTS, Lakehouse
    from kfr_spark.config import load_config
    from kfr_spark.session import build_session

    config = load_config(overrides=[f"lakehouse.root={lakehouse}"])
    spark = build_session(config, "bench-align-inputs")
    lake = Lakehouse(lakehouse)
    chars = "好看太美了哈厉害喜欢无聊讨厌前方高能泪目打卡第一来了大海蓝色"
    duration = F.lit(600.0)
    tsc = spark.range(n).select(
        F.lit("bilibili").alias("source"),
        F.format_string("v%05d", (F.col("id") % videos).cast("int")).alias("video_id"),
        F.col("id").cast("string").alias("comment_id"),
        F.format_string("%08x", F.hash("id")).alias("user_id"),
        (F.rand(1) * duration * 1.01).alias("video_time_s"),  # ~1% past the end: rejected
        F.lit(None).cast("timestamp").alias("posted_at"),
        F.lit(1).alias("mode"),
        F.expr(f"substring('{chars * 2}', 1 + cast(rand(2) * 20 as int), 1 + cast(rand(3) * 20 as int))").alias("text"),
        F.lit(25).alias("font_size"), F.lit(16777215).cast("long").alias("color"), F.lit(0).alias("pool"),
        F.lit(False).alias("is_special"), F.lit("bilibili_xml").alias("format"), F.lit("bench.xml").alias("source_file"),
        F.lit(0).alias("record_no"), F.lit("bench").alias("ingest_run_id"), F.current_date().alias("ingest_date"),
    )
    tsc.write.format("delta").mode("overwrite").partitionBy("ingest_date").save(lake.path(BRONZE_TSC.name))
    shots_per_video = 30
    shots = spark.range(videos * shots_per_video).select(
        F.format_string("v%05d", (F.col("id") / shots_per_video).cast("int")).alias("video_id"),
        (F.col("id") % shots_per_video).cast("int").alias("shot_idx"),
        ((F.col("id") % shots_per_video) * 20.0).alias("start_s"),
        ((F.col("id") % shots_per_video + 1) * 20.0).alias("end_s"),
    )
    filled = shots.select(
        *[F.col(f.name) if f.name in shots.columns else F.lit(None).cast(f.dataType).alias(f.name)
          for f in SILVER_SHOTS.schema.fields]
    ).withColumn("is_uniform", F.lit(True)).withColumn("detector", F.lit("uniform")) \
     .withColumn("params_hash", F.lit("bench")).withColumn("run_id", F.lit("bench"))
    filled.write.format("delta").mode("overwrite").save(lake.path(SILVER_SHOTS.name))
    spark.stop()


def reference(lakehouse: Path) -> tuple[int, float]:
    """One process: read the same tables with pyarrow, then `align_video` per video."""
    import pyarrow.dataset as ds

    from kfr_spark.align import align_video
    from kfr_spark.config import AlignConfig

    started = time.perf_counter()
    columns = ["source", "video_id", "comment_id", "user_id", "video_time_s", "mode", "is_special", "text", "posted_at"]
    comments = ds.dataset(str(lakehouse / "bronze" / "tsc"), format="parquet").to_table(columns=columns).to_pandas()
    shots = ds.dataset(str(lakehouse / "silver" / "shots"), format="parquet").to_table(
        columns=["video_id", "shot_idx", "start_s", "end_s"]).to_pandas()
    shots_by_video = dict(tuple(shots.groupby("video_id")))
    cfg = AlignConfig()
    rows = 0
    for video_id, group in comments.groupby("video_id", sort=False):
        rows += len(align_video(group, shots_by_video[video_id], cfg).aligned)
    return rows, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--videos", type=int, default=2000)
    args = parser.parse_args()
    lakehouse = OUT / f"lake-align-{args.size}"
    shutil.rmtree(lakehouse, ignore_errors=True)
    started = time.perf_counter()
    make_inputs(lakehouse, args.size, args.videos)
    print(f"inputs: {args.size:,} comments over {args.videos} videos in {time.perf_counter() - started:.0f}s")

    ref_rows, ref_secs = reference(lakehouse)
    print(f"reference (1 process, pandas + searchsorted): {ref_rows:,} rows in {ref_secs:.1f}s "
          f"= {ref_rows / ref_secs:,.0f} rows/s")

    wall, peak, out = run_kfr(["align"], lakehouse)
    run = last_run(lakehouse, "align")
    rate = run["rows_in"] / run["duration_s"]
    print(out.strip())
    print(f"spark job: {run['rows_in']:,} rows in {run['duration_s']:.1f}s = {rate:,.0f} rows/s "
          f"(wall {wall:.0f}s incl. JVM start); ratio vs reference {rate / (ref_rows / ref_secs):.2f}x")
    print(f"peak memory: python driver {mib(peak.driver_rss)}, JVM {mib(peak.jvm_rss)}, "
          f"python workers {mib(peak.workers_rss)}")
    shutil.rmtree(lakehouse, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
