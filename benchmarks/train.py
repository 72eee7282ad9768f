"""Training throughput: examples/s in one process and with Horovod on 2 processes, Petastorm's rows/s, and the
time to train every model on the benchmark dataset.

    .venv/bin/python benchmarks/train.py                       # on the newest benchmarks/reproduce.py lakehouse
    .venv/bin/python benchmarks/train.py --lake PATH --model kfri --epochs 3

Three layouts, processes × torch threads each: 1 × half the cores, 1 × all cores, 2 × half the cores. 2 processes
over 1 of the same threads is Horovod's scaling (ideal 2x when each process has cores of its own; on one small
machine its Petastorm readers and Spark share them); 2 processes over 1 using every core is what Horovod costs here.
Each training is a real `kfr train` in a child process with its own empty model folder (no checkpoint is reused)
and a fixed number of epochs (no early stopping), so one and two processes do the same work: the same rows, the
same global batch (two processes take half the batch each). Examples/s is examples of all epochs over the epochs' own
seconds (the run's training.json); "launch + epochs" adds starting the processes and their Petastorm readers.
Petastorm is timed in this process: materialising the training rows as Parquet, then one pass of one reader over
them. The time to train the benchmark dataset is what `benchmarks/reproduce.py` recorded per model in
`ops.model_runs`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def newest_lakehouse() -> Path:
    found = sorted(common.OUT.glob("reproduce-*/lakehouse/gold"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit("no benchmark lakehouse: run benchmarks/reproduce.py first, or pass --lake")
    return found[-1].parent


def train_once(lake: Path, model: str, procs: int, threads: int, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="kfr-bench-train-") as tmp:
        sets = [f"train.model_dir={tmp}/models", f"train.cache_dir={tmp}/petastorm", f"train.epochs={args.epochs}",
                f"train.threads_per_proc={threads}",
                f"train.patience={args.epochs + 1}", f"train.batch_size={args.batch_size // procs}",
                "tracking.enabled=false", f"dataset.min_user_comments={args.min_user_comments}"]
        wall, peak, _ = common.run_kfr(["train", "--model", model, "--num-proc", str(procs)], lake, sets)
        (meta,) = Path(tmp, "models").glob("*/*/training.json")
        history = json.loads(meta.read_text())["history"]
    m = common.last_run(lake, "train")["metrics"]
    epoch_s = sum(h["seconds"] for h in history)
    return {"wall": wall, "examples_per_s": sum(h["examples"] for h in history) / epoch_s, "epoch_s": epoch_s,
            "seconds": m["seconds"], "rows": m["train_rows"], "peak": peak.total_rss}


def petastorm_rate(lake: Path, model: str, args) -> tuple[int, float, float]:
    from pyspark.sql import functions as F

    from kfr_spark import feed
    from kfr_spark.catalog import Lakehouse
    from kfr_spark.config import load_config
    from kfr_spark.models import MODELS
    from kfr_spark.session import build_session
    from kfr_spark.train import frame_level_rows

    config = load_config(overrides=[f"lakehouse.root={lake}"])
    spark = build_session(config, "kfr-bench-petastorm")
    rows = frame_level_rows(spark, Lakehouse(lake), MODELS[model], config.train, config.dataset.backbone,
                            config.dataset.max_tokens).filter(~F.col("_val")).drop("_val")
    with tempfile.TemporaryDirectory(prefix="kfr-bench-petastorm-") as tmp:
        t0 = time.perf_counter()
        data = feed.materialize(spark, rows.repartition(4), Path(tmp))
        materialise_s = time.perf_counter() - t0
        t0, n = time.perf_counter(), 0
        with data.batches(args.batch_size, endless=False, shuffle=False) as batches:
            for batch in batches:
                n += len(next(iter(batch.values())))
        read_s = time.perf_counter() - t0
        data.close()
    spark.stop()
    return n, materialise_s, read_s


def benchmark_training_times(lake: Path) -> list[tuple[str, float, int]]:
    import pyarrow.dataset as ds

    path = lake / "ops" / "model_runs"
    if not path.exists():
        return []
    rows = ds.dataset(str(path), format="parquet").to_table().to_pylist()
    mine = str((lake / "_artifacts").resolve())  # this script's trainings write to temporary folders: not these
    return sorted((r["model"], r["seconds"], r["processes"]) for r in rows if r["model_path"].startswith(mine))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", type=Path, default=None)
    parser.add_argument("--model", default="kfrci")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024, help="global batch (split over the processes)")
    parser.add_argument("--min-user-comments", type=int, default=40)
    args = parser.parse_args()
    lake = args.lake or newest_lakehouse()
    print(f"lakehouse {lake}; {args.model}, {args.epochs} epochs, global batch {args.batch_size}")

    cores = os.cpu_count() or 2
    half = max(1, cores // 2)
    layouts = list(dict.fromkeys([(1, half), (1, cores), (2, half)]))  # (processes, torch threads each)
    results = {layout: train_once(lake, args.model, *layout, args) for layout in layouts}
    print("\n| processes × threads | training rows | examples/s | epochs s | launch + epochs s | kfr train wall s "
          "| peak memory |")
    print("|---|---|---|---|---|---|---|")
    for (procs, threads), r in results.items():
        print(f"| {procs} × {threads} | {r['rows']:,.0f} | {r['examples_per_s']:,.0f} | {r['epoch_s']:.1f} | "
              f"{r['seconds']:.1f} | {r['wall']:.0f} | {common.mib(r['peak'])} |")
    duo, solo = results[(2, half)]["examples_per_s"], results[(1, half)]["examples_per_s"]
    print(f"Horovod, 2 processes over 1 process of the same threads each: {duo / solo:.2f}x "
          f"(ideal 2x; here both processes' Petastorm readers and Spark share {cores} cores)")
    print(f"Horovod, 2 processes over 1 process using all {cores} cores: "
          f"{duo / results[(1, cores)]['examples_per_s']:.2f}x (this machine)")

    n, materialise_s, read_s = petastorm_rate(lake, args.model, args)
    print(f"\nPetastorm: {n:,} rows materialised in {materialise_s:.1f}s ({n / materialise_s:,.0f} rows/s), "
          f"read back by one reader in {read_s:.1f}s ({n / read_s:,.0f} rows/s)")

    times = benchmark_training_times(lake)
    if times:
        print("\nTraining the benchmark dataset (benchmarks/reproduce.py, from ops.model_runs):")
        for model, seconds, procs in times:
            print(f"  {model:<13} {seconds:7.1f}s on {procs} process(es)")
        print(f"  total         {sum(s for _, s, _ in times):7.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
