"""Ingest benchmark: generated Bilibili XML → bronze.tsc, through the Spark job and through a single-process
reference (the same parser, plain Python, one process, writing Parquet), measured in the same run.

Prints, per size: comments/s of each, the ratio, and peak memory of the job's driver (Python), JVM and Python
workers. Goals (issue 2): ≥ 50,000 TSC/s on 2 cores at 10M, ≥ 1.5× the reference, driver memory flat.

It also prints the ratio's ceiling on these cores, measured in the same run: the job runs the same parser, so it
spends at least the reference's parse CPU, and it must write the rows to Delta, which costs what Spark alone
takes to write them (the reference's own rows, read from its Parquet, the read's CPU taken off). No job, however
it moved rows from Python to the JVM, can beat cores × reference seconds / (parse + write CPU-s).

    .venv/bin/python benchmarks/ingest.py                 # 1M and 10M
    .venv/bin/python benchmarks/ingest.py --sizes 200000  # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUT, REPO, last_run, mib, run_kfr, synth_dataset  # noqa: E402


def reference_ingest(danmaku_dir: Path, out_file: Path) -> tuple[int, float, float]:
    """One process: parse every file with the same parser and write one Parquet file with pyarrow.

    Returns (rows, seconds, CPU seconds of the parser calls alone)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kfr_spark.tsc_formats import parse_tsc_file

    started = time.perf_counter()
    files = sorted(p for p in danmaku_dir.rglob("*") if p.is_file())
    writer = None
    rows = 0
    parse_cpu = 0.0
    for path in files:
        content = path.read_bytes()
        cpu = time.process_time()
        parsed = parse_tsc_file(content, str(path))
        parse_cpu += time.process_time() - cpu
        if not parsed.comments:
            continue
        columns = list(zip(*parsed.comments))
        table = pa.table(
            {name: pa.array(values) for name, values in zip(parsed.comments[0]._fields, columns)}
            | {"video_id": pa.array([parsed.video_id] * len(parsed.comments), pa.string())}
        )
        if writer is None:
            writer = pq.ParquetWriter(out_file, table.schema)
        writer.write_table(table)
        rows += len(parsed.comments)
    if writer is not None:
        writer.close()
    return rows, time.perf_counter() - started, parse_cpu


WRITE_FLOOR = r'''
import json, sys
sys.path.insert(0, "benchmarks")  # run from the repository root
from common import delta_append_cost
from pyspark.sql import functions as F
from kfr_spark.catalog import BRONZE_TSC, Lakehouse
from kfr_spark.config import load_config
from kfr_spark.session import build_session

parquet, root = sys.argv[1], sys.argv[2]
spark = build_session(load_config(overrides=[f"lakehouse.root={root}"]), "bench-ingest-floor")
rows = spark.read.parquet(parquet).select(
    F.lit("bilibili").alias("source"), "video_id", "comment_id", "user_id", "video_time_s",
    F.timestamp_seconds("posted_at").alias("posted_at"), "mode", "text", "font_size", "color", "pool", "is_special",
    F.lit("bilibili_xml").alias("format"), F.concat(F.lit("/data/inbox/danmaku/"), "video_id", F.lit(".xml")).alias(
        "source_file"), (F.monotonically_increasing_id() % 1000003).cast("int").alias("record_no"),
    F.lit("bench-run").alias("ingest_run_id"), F.current_date().alias("ingest_date"))
rows = rows.select([F.col(f.name).cast(f.dataType) for f in BRONZE_TSC.schema.fields])  # the table's column types
print(json.dumps(delta_append_cost(spark, rows, Lakehouse(root), BRONZE_TSC.name)))
'''


def write_floor(reference_parquet: Path, root: Path) -> dict:
    """CPU seconds Spark takes only to write the reference's rows to bronze.tsc (their read from Parquet taken off):
    what any ingest job spends on top of parsing while its output is a Delta table."""
    shutil.rmtree(root, ignore_errors=True)
    done = subprocess.run([sys.executable, "-c", WRITE_FLOOR, str(reference_parquet), str(root)],
                          capture_output=True, text=True, check=True, cwd=REPO)
    shutil.rmtree(root, ignore_errors=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="comma-separated comment counts")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    for size in sizes:
        print(f"== {size:,} comments")
        data = synth_dataset(size)
        danmaku = data / "danmaku"

        ref_parquet = OUT / f"reference-{size}.parquet"
        ref_rows, ref_secs, parse_cpu = reference_ingest(danmaku, ref_parquet)
        ref_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(f"  reference: {ref_rows:,} rows in {ref_secs:.1f}s = {ref_rows / ref_secs:,.0f} rows/s (1 process; "
              f"parsing {parse_cpu:.1f} CPU-s of it)")
        floor = write_floor(ref_parquet, OUT / f"lake-ingest-floor-{size}")
        cores = os.cpu_count() or 1
        ceiling = cores * ref_secs / (parse_cpu + floor["write_cpu"])
        print(f"  floor: Spark writes the same rows to bronze.tsc in {floor['write_wall']:.1f}s, "
              f"{floor['write_cpu']:.1f} CPU-s (their Parquet read, {floor['read_cpu']:.1f} CPU-s, taken off); "
              f"ceiling on {cores} cores: {ceiling:.2f}x the reference")

        lakehouse = OUT / f"lake-ingest-{size}"
        shutil.rmtree(lakehouse, ignore_errors=True)
        wall, peak, _ = run_kfr(["ingest", str(danmaku)], lakehouse)
        run = last_run(lakehouse, "ingest")
        job_secs = run["duration_s"]
        rows = run["rows_out"]
        print(
            f"  spark job: {rows:,} rows in {job_secs:.1f}s = {rows / job_secs:,.0f} rows/s "
            f"(wall with JVM start {wall:.1f}s); ratio vs reference {rows / job_secs / (ref_rows / ref_secs):.2f}x"
        )
        print(
            f"  peak memory: python driver {mib(peak.driver_rss)}, JVM {mib(peak.jvm_rss)}, "
            f"python workers {mib(peak.workers_rss)}; reference process {mib(ref_peak)}"
        )
        rerun_wall, _, _ = run_kfr(["ingest", str(danmaku)], lakehouse)
        rerun = last_run(lakehouse, "ingest")
        print(f"  rerun: {rerun['rows_out']} new rows in {rerun['duration_s']:.1f}s (idempotent)")
        results.append((size, rows / job_secs, ref_rows / ref_secs, peak, ceiling))
        shutil.rmtree(lakehouse, ignore_errors=True)

    print("\nsize        spark rows/s   reference rows/s   ratio   ceiling   driver RSS   JVM RSS   workers RSS")
    for size, spark_rate, ref_rate, peak, ceiling in results:
        print(
            f"{size:>10,}  {spark_rate:>13,.0f}  {ref_rate:>17,.0f}  {spark_rate / ref_rate:>5.2f}x  {ceiling:>7.2f}x  "
            f"{mib(peak.driver_rss):>10}  {mib(peak.jvm_rss):>8}  {mib(peak.workers_rss):>11}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
