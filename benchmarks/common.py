"""Helpers shared by the benchmarks: generated data cached by size, a process-tree memory sampler, and
running a `kfr` stage in a child process so its memory is measured apart from the benchmark's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("KFR_BENCH_DIR", REPO / "benchmarks" / "out"))


def synth_dataset(n_comments: int, *, seed: int = 11, with_video: bool = False) -> Path:
    """Generated data for a size, made once and reused by later runs (the generator is deterministic)."""
    from kfr_spark.synth import SynthConfig, generate

    out = OUT / f"synth-{n_comments}-s{seed}{'-video' if with_video else ''}"
    done = out / ".complete"
    if done.exists():
        return out
    n_videos = max(20, n_comments // 5000)
    config = SynthConfig(
        seed=seed, n_videos=n_videos, n_users=max(1000, n_comments // 50), n_comments=n_comments,
        with_video=with_video,
    )
    started = time.perf_counter()
    generate(config, out)
    done.write_text(json.dumps({"seconds": time.perf_counter() - started}))
    print(f"  generated {n_comments:,} comments in {time.perf_counter() - started:.1f}s → {out}")
    return out


@dataclass
class Peak:
    driver_rss: int = 0  # the Python driver process
    jvm_rss: int = 0  # the Spark JVM (driver and, in local mode, the executors)
    workers_rss: int = 0  # Python workers together
    total_rss: int = 0


class TreeSampler:
    """Samples the RSS of a process and its descendants every `interval` seconds; keeps the peaks."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = Peak()
        self.series: list[tuple[float, int]] = []  # (unix time, total RSS): peaks of a time window, e.g. one step
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "TreeSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                driver = jvm = workers = 0
                for proc in procs:
                    try:
                        rss = proc.memory_info().rss
                        name = proc.name()
                    except psutil.Error:
                        continue
                    if proc.pid == self.root.pid:
                        driver += rss
                    elif "java" in name:
                        jvm += rss
                    else:
                        workers += rss
                p = self.peak
                p.driver_rss, p.jvm_rss = max(p.driver_rss, driver), max(p.jvm_rss, jvm)
                p.workers_rss = max(p.workers_rss, workers)
                p.total_rss = max(p.total_rss, driver + jvm + workers)
                self.series.append((time.time(), driver + jvm + workers))
            except psutil.Error:
                pass
            self._stop.wait(self.interval)


def child_json(script: str, *args: object) -> dict:
    """Run `script` (Python source) in a fresh interpreter from the repository root; return the JSON object it
    prints last. Each measurement gets a JVM of its own, so none inherits another's warm-up, JIT or cache."""
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def tree_cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (default: this one) and its live descendants: in local mode, the
    driver, the JVM and the Python workers together."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def noop_cpu_seconds(frame) -> float:
    """Process-tree CPU seconds Spark takes to compute a DataFrame and drop it (a no-op write)."""
    cpu = tree_cpu_seconds()
    frame.write.format("noop").mode("overwrite").save()
    return tree_cpu_seconds() - cpu


def delta_append_cost(spark, rows, lake, table: str) -> dict:
    """What Spark alone spends appending `rows` to a fresh catalog table: process-tree CPU seconds with the cost of
    computing the rows taken off (write_cpu), that cost (read_cpu), and the append's wall seconds (write_wall).

    The JVM and Delta's write path are warmed first, so the figure is the write, not the start. A floor for a job
    whose output is that table: no design of the job avoids the write."""
    from kfr_spark import delta_io

    rows.write.format("noop").mode("overwrite").save()
    read_cpu = noop_cpu_seconds(rows)
    delta_io.ensure_table(spark, lake, table)  # the catalog's table: partitioning, statistics columns
    rows.limit(100_000).write.format("delta").save(str(Path(lake.root) / "_floor-warm-up"))
    cpu, wall = tree_cpu_seconds(), time.perf_counter()
    rows.write.format("delta").mode("append").save(lake.path(table))
    wall = time.perf_counter() - wall
    return {"write_cpu": tree_cpu_seconds() - cpu - read_cpu, "read_cpu": read_cpu, "write_wall": wall}


def peak_between(series: list[tuple[float, int]], start: float, end: float, slack: float = 0.5) -> int:
    """The highest sample of a TreeSampler series within [start, end] (widened by one sampling interval)."""
    return max((rss for t, rss in series if start - slack <= t <= end + slack), default=0)


def run_kfr(args: list[str], lakehouse: Path, extra_sets: list[str] = ()) -> tuple[float, Peak, str]:
    """Run `kfr <args>` against a lakehouse in a child process; return (wall seconds, peak memory, stdout)."""
    cmd = [sys.executable, "-m", "kfr_spark.cli", *args, "--set", f"lakehouse.root={lakehouse}"]
    for item in extra_sets:
        cmd += ["--set", item]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreeSampler(proc.pid) as sampler:
        out, err = proc.communicate()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-4000:]}")
    return wall, sampler.peak, out


def last_run(lakehouse: Path, job: str) -> dict:
    """The newest ledger row of a job, read with pyarrow from the Delta table's files (no Spark needed)."""
    import pyarrow.dataset as ds

    table = ds.dataset(str(lakehouse / "ops" / "job_runs"), format="parquet").to_table().to_pylist()
    rows = [r for r in table if r["job"] == job and r["status"] == "succeeded"]
    row = max(rows, key=lambda r: (r["finished_at"] or r["started_at"]))
    row["metrics"] = dict(row["metrics"] or [])  # a Delta map column reads back as (key, value) pairs
    return row


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"
