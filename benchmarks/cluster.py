"""Cluster mode, checked: the nightly pipeline under `spark-submit` on a real standalone cluster writes the same
tables as the same nightly in embedded local mode.

Starts a Spark standalone master and two one-core workers on loopback (`kfr_spark.standalone`), generates a small
dataset with rendered videos, runs `spark-submit jobs/nightly.py` against the master and `kfr nightly` on
`local[2]` over the same input into two lakehouses, then compares every bronze/silver/gold table row for row
(lineage columns — run ids, ingest dates — left out; floats compared to 4 decimals, since executors and local
threads may sum in different orders). Prints per-table row counts and differences, and both nightlies' times.

    .venv/bin/python benchmarks/cluster.py [--comments 20000 --videos 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import OUT, REPO

from kfr_spark import jars
from kfr_spark.catalog import TABLES, Lakehouse
from kfr_spark.standalone import StandaloneCluster

PY = REPO / ".venv" / "bin" / "python"
RUN_DATE = "2026-12-01"


def nightly_args(root: Path, synth: Path, epochs: int) -> list[str]:
    return ["--set", f"lakehouse.root={root / 'lake'}", "--set", f"export.out_dir={root / 'export'}",
            "--set", f"gallery.out_dir={root / 'gallery'}", "--set", f"ingest.input_paths=['{synth / 'danmaku'}']",
            "--set", f"nightly.video_catalogs=['{synth / 'videos.csv'}']", "--set", "train.num_proc=2",
            "--set", f"train.epochs={epochs}", "--date", RUN_DATE]


def run(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    if proc.returncode:
        sys.exit(f"{cmd[0]} failed (exit {proc.returncode}); see {log}")
    return time.perf_counter() - started


def comparable(df, spec, root: Path):
    """The table's content columns, floats rounded, paths made relative to the run's folder: what must not depend
    on where the job ran."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, DoubleType, FloatType, StringType

    cols = []
    for f in df.schema.fields:
        if f.name.endswith("_path") and isinstance(f.dataType, StringType):  # e.g. model_path, under the lakehouse
            cols.append(F.replace(F.col(f.name), F.lit(str(root))).alias(f.name))
            continue
        # eval_id is the evaluating job's run id (like run_id, it names the run, not the result)
        if f.name in spec.lineage_columns or f.name.endswith("_at") or f.name == "eval_id":
            continue
        if isinstance(f.dataType, (DoubleType, FloatType)):
            cols.append(F.round(f.name, 4).alias(f.name))
        elif isinstance(f.dataType, ArrayType) and isinstance(f.dataType.elementType, (DoubleType, FloatType)):
            cols.append(F.transform(f.name, lambda x: F.round(x, 4)).alias(f.name))
        else:
            cols.append(F.col(f.name))
    return df.select(*cols)


def compare(local_lake: Path, cluster_lake: Path) -> list[tuple[str, int, int, int]]:
    from kfr_spark.config import load_config
    from kfr_spark.session import build_session

    config = load_config(overrides=["spark.master=local[2]", f"lakehouse.root={local_lake}"])
    spark = build_session(config, app_name="kfr-cluster-compare")
    rows = []
    for spec in TABLES.values():
        if spec.layer == "ops":
            continue
        paths = [Path(Lakehouse(lake).path(spec.name)) for lake in (local_lake, cluster_lake)]
        if not all((p / "_delta_log").exists() for p in paths):
            continue
        a, b = (comparable(spark.read.format("delta").load(str(p)), spec, lake.parent)
                for p, lake in zip(paths, (local_lake, cluster_lake)))
        diff = a.exceptAll(b).count() + b.exceptAll(a).count()
        rows.append((spec.name, a.count(), b.count(), diff))
    spark.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comments", type=int, default=20000)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--compare-only", action="store_true", help="compare the lakehouses of the last run again")
    args = parser.parse_args()
    out = OUT / "cluster"
    if args.compare_only:
        return report(compare(out / "local" / "lake", out / "cluster" / "lake"))
    shutil.rmtree(out, ignore_errors=True)
    synth = out / "synth"
    kfr = str(REPO / ".venv" / "bin" / "kfr")
    run([kfr, "synth", "--out", str(synth), "--comments", str(args.comments), "--videos", str(args.videos),
         "--users", str(max(200, args.comments // 60)), "--with-video"], out.with_name("cluster-synth.log"))

    local_s = run([kfr, "nightly", "--set", "spark.master=local[2]", *nightly_args(out / "local", synth, args.epochs)],
                  out / "local-nightly.log")
    print(f"local[2] nightly: {local_s:.0f} s")

    env = {**os.environ, "PYSPARK_PYTHON": str(PY), "PYSPARK_DRIVER_PYTHON": str(PY)}
    with StandaloneCluster(out / "standalone", workers=2, cores_per_worker=1) as cluster:
        conf = [x for k, v in cluster.spark_conf().items() if k != "spark.master" for x in ("--conf", f"{k}={v}")]
        submit = [str(REPO / ".venv" / "bin" / "spark-submit"), "--master", cluster.master_url, *conf,
                  "--conf", "spark.driver.memory=4g", "--jars", ",".join(str(p) for p in jars.delta_jars()),
                  "jobs/nightly.py", *nightly_args(out / "cluster", synth, args.epochs)]
        cluster_s = run(submit, out / "cluster-nightly.log", env)
    print(f"standalone cluster nightly (spark-submit, 2 workers x 1 core): {cluster_s:.0f} s")

    return report(compare(out / "local" / "lake", out / "cluster" / "lake"))


def report(rows: list[tuple[str, int, int, int]]) -> int:
    print(f"\n{'table':<26} {'local rows':>11} {'cluster rows':>13} {'rows differing':>15}")
    for name, a, b, diff in rows:
        print(f"{name:<26} {a:>11,} {b:>13,} {diff:>15,}")
    same = all(diff == 0 and a == b for _, a, b, diff in rows)
    print(f"\n{len(rows)} tables compared, {sum(a for _, a, _, _ in rows):,} rows: "
          f"{'outputs equal' if same else 'OUTPUTS DIFFER'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
