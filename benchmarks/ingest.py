"""Ingest benchmark: generated Bilibili XML → bronze.tsc, through the Spark job and through a single-process
reference (the same parser, plain Python, one process, writing Parquet), measured in the same run.

Prints, per size: comments/s of each, the ratio, and peak memory of the job's driver (Python), JVM and Python
workers. Goals (issue 2): ≥ 50,000 TSC/s on 2 cores at 10M, ≥ 1.5× the reference, driver memory flat.

    .venv/bin/python benchmarks/ingest.py                 # 1M and 10M
    .venv/bin/python benchmarks/ingest.py --sizes 200000  # quick look
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUT, last_run, mib, run_kfr, synth_dataset  # noqa: E402


def reference_ingest(danmaku_dir: Path, out_file: Path) -> tuple[int, float]:
    """One process: parse every file with the same parser and write one Parquet file with pyarrow."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kfr_spark.tsc_formats import parse_tsc_file

    started = time.perf_counter()
    files = sorted(p for p in danmaku_dir.rglob("*") if p.is_file())
    writer = None
    rows = 0
    for path in files:
        parsed = parse_tsc_file(path.read_bytes(), str(path))
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
    return rows, time.perf_counter() - started


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

        ref_rows, ref_secs = reference_ingest(danmaku, OUT / f"reference-{size}.parquet")
        ref_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(f"  reference: {ref_rows:,} rows in {ref_secs:.1f}s = {ref_rows / ref_secs:,.0f} rows/s (1 process)")

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
        results.append((size, rows / job_secs, ref_rows / ref_secs, peak))
        shutil.rmtree(lakehouse, ignore_errors=True)

    print("\nsize        spark rows/s   reference rows/s   ratio   driver RSS   JVM RSS   workers RSS")
    for size, spark_rate, ref_rate, peak in results:
        print(
            f"{size:>10,}  {spark_rate:>13,.0f}  {ref_rate:>17,.0f}  {spark_rate / ref_rate:>5.2f}x  "
            f"{mib(peak.driver_rss):>10}  {mib(peak.jvm_rss):>8}  {mib(peak.workers_rss):>11}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
