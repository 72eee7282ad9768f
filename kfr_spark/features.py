"""Features: `silver.shots` key frames → `silver.frame_features` (+ `ops.stage_rejects`, `silver.feature_pca`).

Batch inference of a pretrained CNN (or the handcrafted OpenCV descriptor) over every key frame, with the pure
code of `kfr_spark.backbones` inside `mapInPandas`:

- Incremental: a key frame is processed only if the table has no vector for it from this backbone with this
  `params_hash` (weights, preprocessing, normalization) computed from the same JPEG bytes (`image_sha1`): a left
  anti join on (video_id, shot_idx, image_sha1). A rerun with nothing new loads no model and writes nothing; a
  changed key frame or config is recomputed and upserted.
- Per worker: the model is loaded once per Python worker (`backbones.cached_extractor`; Spark reuses workers)
  and only when its partition has rows. JPEG decoding and resizing of the next batches run in a thread pool
  while the current batch is in the model.
- Parallelism: `inference_tasks` partitions (default one per task slot); torch gets cores / concurrent tasks
  threads each, so `local[2]` runs 2 tasks x 1 thread, or 1 task x 2 threads with `inference_tasks: 1`. Rows
  are hash-partitioned and sorted so a batch's members do not depend on the input files' layout.
- Device: CUDA (fp16, channels-last) when torch sees a GPU and `device` is auto/cuda, else CPU. A Spark task
  that was given a GPU resource uses that GPU.
- Bad key frames (empty, corrupt, truncated, absurd sizes) become `ops.stage_rejects` rows (stage "features",
  entity_key "video_id/shot_idx", reason empty_image | corrupt_image | bad_size; the detail names the bytes'
  SHA-1, and those bytes are not tried again until they change or `--recompute`); the batch goes on.
- Optional PCA (`pca_dim`): fitted with numpy on a bounded, deterministic sample (at most `pca_sample` vectors),
  stored versioned in `silver.feature_pca`, reused by later runs (new key frames are projected onto the same
  basis) until `--refit-pca`; the projected vectors are rows of backbone "<name>+pca<k>".
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import chain

import cv2
import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType, IntegerType, StringType, StructField, StructType

from kfr_spark import backbones as bb
from kfr_spark import delta_io
from kfr_spark.catalog import (
    OPS_STAGE_REJECTS,
    SILVER_FEATURE_PCA,
    SILVER_FRAME_FEATURES,
    SILVER_SHOTS,
    Lakehouse,
)
from kfr_spark.config import ConfigError, FeaturesConfig, KfrConfig
from kfr_spark.ledger import JobRun
from kfr_spark.session import session_conf

log = logging.getLogger(__name__)

STAGE = "features"
KEY = ["video_id", "shot_idx"]

# What the inference step emits: one row per key frame, a vector or a reject.
INFER_SCHEMA = StructType(
    [
        StructField("kind", StringType(), False),  # "vector" | "reject"
        StructField("video_id", StringType(), False),
        StructField("shot_idx", IntegerType(), False),
        StructField("image_sha1", StringType(), False),
        StructField("features", ArrayType(FloatType(), False), True),
        StructField("reason", StringType(), True),
        StructField("detail", StringType(), True),
        StructField("device", StringType(), True),
    ]
)

PROJECTED_SCHEMA = StructType(
    [
        StructField("video_id", StringType(), False),
        StructField("shot_idx", IntegerType(), False),
        StructField("image_sha1", StringType(), False),
        StructField("features", ArrayType(FloatType(), False), False),
    ]
)


# ---------------------------------------------------------------------------------------------------------------
# Pure pieces (no Spark session needed)


@dataclass(frozen=True)
class InferencePlan:
    partitions: int  # inference tasks
    threads: int  # torch threads per task
    device: str  # auto | cpu | cuda
    decode_threads: int | None  # None: the extractor's default for its device
    prefetch: int
    arrow_batch: int  # rows per Arrow batch handed to Python
    local_gpus: int = 0  # GPUs of a local-mode machine: task i uses cuda:(i % local_gpus)


def plan_inference(cfg: FeaturesConfig, cores: int, task_cpus: int = 1, executor_cores: int | None = None,
                   local_gpus: int = 0) -> InferencePlan:
    """Tasks and threads. CPU: one task per slot with cores/slots torch threads each; `inference_tasks` fewer
    than the slots gives each running task more threads. A local machine with GPUs: one task per GPU (not one
    CUDA context per core), each decoding JPEGs in the cores that leaves."""
    slots = max(1, cores // max(1, task_cpus))
    if local_gpus:
        partitions = cfg.inference_tasks or local_gpus
        concurrent = min(partitions, slots)
        decode = cfg.decode_threads or max(1, min(16, cores // concurrent - 1))
        return InferencePlan(partitions, cfg.cpu_threads or 1, cfg.device, decode, cfg.prefetch_batches,
                             arrow_batch=min(cfg.batch_size or bb.CUDA_BATCH, 1024), local_gpus=local_gpus)
    partitions = cfg.inference_tasks or slots
    concurrent = min(partitions, slots)
    threads = cfg.cpu_threads or max(task_cpus, cores // concurrent)
    if executor_cores and not cfg.cpu_threads:  # a task's threads share one executor's cores
        threads = min(threads, executor_cores)
    batch = cfg.batch_size or bb.CPU_BATCH
    return InferencePlan(
        partitions=partitions,
        threads=max(1, threads),
        device=cfg.device,
        decode_threads=cfg.decode_threads,
        prefetch=cfg.prefetch_batches,
        arrow_batch=max(16, min(batch, 256)),
    )


@dataclass(frozen=True)
class PcaModel:
    backbone: str
    source_params_hash: str
    mean: np.ndarray  # (d,) float32
    components: np.ndarray  # (k, d) float32
    explained_variance_ratio: np.ndarray  # (k,) float64
    n_samples: int
    version: str

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])


def fit_pca(vectors: np.ndarray, k: int, backbone: str, source_params_hash: str) -> PcaModel:
    """PCA by eigendecomposition of the covariance (d x d), components sign-fixed so a refit on the same sample
    gives the same bytes and so the same version."""
    x = np.asarray(vectors, dtype=np.float64)
    n, d = x.shape
    if n <= k:
        raise ValueError(f"a {k}-d PCA needs more than {k} vectors, got {n}")
    if k > d:
        raise ValueError(f"pca_dim {k} exceeds the vectors' dimension {d}")
    mean = x.mean(axis=0)
    centred = x - mean
    cov = centred.T @ centred / (n - 1)
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    order = np.argsort(eigenvalues)[::-1][:k]
    components = eigenvectors[:, order].T
    signs = np.sign(components[np.arange(k), np.argmax(np.abs(components), axis=1)])
    components *= np.where(signs == 0, 1.0, signs)[:, None]
    total = float(np.clip(eigenvalues, 0, None).sum()) or 1.0
    ratio = np.clip(eigenvalues[order], 0, None) / total
    mean32, comps32 = mean.astype(np.float32), components.astype(np.float32)
    digest = hashlib.sha256()
    for part in (backbone.encode(), source_params_hash.encode(), str(k).encode(), mean32.tobytes(), comps32.tobytes()):
        digest.update(part)
    return PcaModel(backbone, source_params_hash, mean32, comps32, ratio, n, digest.hexdigest()[:16])


def project(vectors: np.ndarray, pca: PcaModel, l2: bool) -> np.ndarray:
    out = ((np.asarray(vectors, np.float32) - pca.mean) @ pca.components.T).astype(np.float32)
    return bb.l2_normalize(out) if l2 else out


def pca_label(backbone: str, k: int) -> str:
    return f"{backbone}+pca{k}"


def pca_params_hash(source_params_hash: str, pca: PcaModel, l2: bool) -> str:
    payload = f"{source_params_hash}|{pca.version}|{l2}".encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def _task_device(plan: InferencePlan) -> str:
    """The GPU Spark gave this task (resource scheduling); in local mode with several GPUs, one by partition;
    else the configured preference."""
    if plan.device == "cpu":
        return plan.device
    try:
        from pyspark import TaskContext

        context = TaskContext.get()
        if context is not None:
            gpus = context.resources().get("gpu")
            if gpus is not None and gpus.addresses:
                return f"cuda:{gpus.addresses[0]}"
            if plan.local_gpus > 1:
                return f"cuda:{context.partitionId() % plan.local_gpus}"
    except Exception:  # noqa: BLE001 - no task context (tests, plain Python): fall back to the preference
        pass
    return plan.device


def infer_partition(cfg: FeaturesConfig, plan: InferencePlan):
    """The mapInPandas function: (video_id, shot_idx, image_sha1, keyframe_jpeg) batches → INFER_SCHEMA rows."""
    columns = [f.name for f in INFER_SCHEMA.fields]

    def infer(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        limits = bb.ImageLimits.from_config(cfg)
        rows = (
            ((video_id, int(shot_idx), sha1), jpeg)
            for frame in batches
            for video_id, shot_idx, sha1, jpeg in zip(
                frame["video_id"], frame["shot_idx"], frame["image_sha1"], frame["keyframe_jpeg"]
            )
        )
        first = next(rows, None)
        if first is None:  # an empty partition loads no model
            return
        cv2.setNumThreads(1)  # parallelism comes from tasks and decode threads; OpenCV's own pool would oversubscribe
        extractor = bb.cached_extractor(cfg, device=_task_device(plan), threads=plan.threads)
        cuda = extractor.device.startswith("cuda")
        decode_threads = plan.decode_threads or (8 if cuda else 1)
        device = extractor.describe()
        for result in bb.extract_stream(extractor, chain([first], rows), limits,
                                        decode_threads=decode_threads, prefetch=plan.prefetch):
            records = [("vector", v, s, h, vector, None, None, device)
                       for (v, s, h), vector in zip(result.keys, result.vectors)]
            records += [("reject", v, s, h, None, reason, detail, device)
                        for (v, s, h), reason, detail in result.rejects]
            yield pd.DataFrame.from_records(records, columns=columns)

    return infer


def project_partition(pca: PcaModel, l2: bool):
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in batches:
            if frame.empty:
                continue
            projected = project(np.stack(frame["features"].to_numpy()), pca, l2)
            yield pd.DataFrame({
                "video_id": frame["video_id"],
                "shot_idx": frame["shot_idx"].astype("int32"),
                "image_sha1": frame["image_sha1"],
                "features": list(projected),
            })

    return run


# ---------------------------------------------------------------------------------------------------------------
# The Spark job


@dataclass
class FeaturesSummary:
    backbone: str
    params_hash: str
    processed: int = 0
    vectors: int = 0
    inserted: int = 0
    updated: int = 0
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    devices: list[str] = field(default_factory=list)
    inference_s: float = 0.0
    pca_version: str | None = None
    pca_rows: int = 0
    pca_fitted: bool = False

    @property
    def rejected(self) -> int:
        return sum(self.rejects_by_reason.values())


def _local_gpus(spark: SparkSession, cfg: FeaturesConfig) -> int:
    """GPUs torch sees on a local-mode driver (= the executor); 0 on a cluster (Spark assigns GPUs there)."""
    if cfg.device == "cpu" or not bb.backbone_spec(cfg).uses_torch or not spark.sparkContext.master.startswith("local"):
        return 0
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no usable torch on the driver: plan for CPU
        return 0


def _plan_for(spark: SparkSession, cfg: FeaturesConfig) -> InferencePlan:
    conf = spark.sparkContext.getConf()
    local = spark.sparkContext.master.startswith("local")
    executor_cores = conf.get("spark.executor.cores", None)
    return plan_inference(
        cfg,
        cores=spark.sparkContext.defaultParallelism,
        task_cpus=int(conf.get("spark.task.cpus", "1")),
        executor_cores=int(executor_cores) if executor_cores and not local else None,
        local_gpus=_local_gpus(spark, cfg),
    )


_REJECT_SHA = r"image sha1 ([0-9a-f]{40})"


def _entity_key(video_id="video_id", shot_idx="shot_idx"):
    return F.concat_ws("/", F.col(video_id), F.col(shot_idx).cast("string"))


def keyframes_to_process(spark: SparkSession, lake: Lakehouse, backbone: str, phash: str, recompute: bool) -> DataFrame:
    """Key frames whose bytes have no vector from this backbone + params yet, and were not rejected before.

    A reject's detail names the SHA-1 of the bytes it judged, so known-bad bytes are not decoded again on every
    run (they would load the model for nothing); a re-cut key frame (new bytes) is tried again, and
    `--recompute` retries everything.
    """
    keyframes = (
        delta_io.read_table(spark, lake, SILVER_SHOTS.name)
        .filter(F.col("keyframe_jpeg").isNotNull())
        .select(*KEY, F.sha1("keyframe_jpeg").alias("image_sha1"), "keyframe_jpeg")
    )
    if recompute:
        return keyframes
    done = (
        delta_io.read_table(spark, lake, SILVER_FRAME_FEATURES.name)
        .filter((F.col("backbone") == backbone) & (F.col("params_hash") == phash))
        .select(*KEY, "image_sha1")
    )
    todo = keyframes.join(done, [*KEY, "image_sha1"], "left_anti")
    if delta_io.table_exists(spark, lake, OPS_STAGE_REJECTS.name):
        rejected = (
            delta_io.read_table(spark, lake, OPS_STAGE_REJECTS.name)
            .filter(F.col("stage") == STAGE)
            .select("entity_key", F.regexp_extract("detail", _REJECT_SHA, 1).alias("image_sha1"))
        )
        todo = (
            todo.withColumn("entity_key", _entity_key())
            .join(rejected, ["entity_key", "image_sha1"], "left_anti")
            .drop("entity_key")
        )
    return todo


def extract_features(
    spark: SparkSession,
    lake: Lakehouse,
    cfg: FeaturesConfig,
    run: JobRun,
    *,
    recompute: bool = False,
    refit_pca: bool = False,
) -> FeaturesSummary:
    spec = bb.backbone_spec(cfg)
    bb.check_weights(cfg)
    phash = bb.params_hash(cfg)
    summary = FeaturesSummary(backbone=spec.name, params_hash=phash)
    run.params.update({"backbone": spec.name, "params_hash": phash})

    if not delta_io.table_exists(spark, lake, SILVER_SHOTS.name):
        raise ConfigError(f"no {SILVER_SHOTS.name} table under {lake.root}: run `kfr shots` first")
    run.read(SILVER_SHOTS.name, delta_io.current_version(spark, lake, SILVER_SHOTS.name))
    delta_io.ensure_table(spark, lake, SILVER_FRAME_FEATURES.name)
    run.read(SILVER_FRAME_FEATURES.name, delta_io.current_version(spark, lake, SILVER_FRAME_FEATURES.name))

    plan = _plan_for(spark, cfg)
    run.metrics.update({"inference_tasks": plan.partitions, "torch_threads": plan.threads})
    todo = keyframes_to_process(spark, lake, spec.name, phash, recompute)
    # Arrow batches of a few dozen JPEGs (the default of 10,000 rows would hand a worker hundreds of MB at once)
    with session_conf(spark, {"spark.sql.execution.arrow.maxRecordsPerBatch": str(plan.arrow_batch)}):
        _infer_and_write(spark, lake, cfg, spec.name, phash, plan, todo, run, summary)
        if cfg.pca_dim:
            _apply_pca(spark, lake, cfg, spec.name, phash, run, summary, recompute=recompute, refit=refit_pca)

    run.rows_in = summary.processed
    run.rows_out = summary.inserted + summary.updated + summary.pca_rows
    run.rows_rejected = summary.rejected
    run.metrics.update({f"rejected.{reason}": n for reason, n in summary.rejects_by_reason.items()})
    run.metrics["inference_s"] = round(summary.inference_s, 3)
    if summary.processed and summary.inference_s > 0:
        run.metrics["keyframes_per_s"] = round(summary.processed / summary.inference_s, 2)
    if summary.devices:
        run.params["device"] = ", ".join(summary.devices)
    return summary


def _infer_and_write(spark: SparkSession, lake: Lakehouse, cfg: FeaturesConfig, backbone: str, phash: str,
                     plan: InferencePlan, todo: DataFrame, run: JobRun, summary: FeaturesSummary) -> None:
    inferred = (
        todo.repartition(plan.partitions, *KEY)
        .sortWithinPartitions(*KEY)
        .mapInPandas(infer_partition(cfg, plan), schema=INFER_SCHEMA)
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    try:
        started = time.perf_counter()
        counts = inferred.groupBy("kind", "reason", "device").agg(F.count("*").alias("n")).collect()
        summary.inference_s = time.perf_counter() - started
        summary.vectors = sum(int(r["n"]) for r in counts if r["kind"] == "vector")
        for r in counts:
            if r["kind"] == "reject":
                summary.rejects_by_reason[r["reason"]] = summary.rejects_by_reason.get(r["reason"], 0) + int(r["n"])
        summary.devices = sorted({r["device"] for r in counts if r["device"]})
        summary.processed = summary.vectors + summary.rejected

        if summary.vectors:
            vectors = inferred.filter(F.col("kind") == "vector").select(
                *KEY,
                F.lit(backbone).alias("backbone"),
                F.size("features").alias("dim"),
                "features",
                F.lit(phash).alias("params_hash"),
                "image_sha1",
                F.lit(None).cast("string").alias("pca_version"),
                F.lit(run.run_id).alias("run_id"),
            )
            written = delta_io.merge_upsert(spark, lake, SILVER_FRAME_FEATURES.name, vectors)
            run.wrote(SILVER_FRAME_FEATURES.name, written.version)
            summary.inserted, summary.updated = written.rows_inserted, written.rows_updated
        if summary.rejected:
            rejects = inferred.filter(F.col("kind") == "reject").select(
                F.lit(STAGE).alias("stage"),
                _entity_key().alias("entity_key"),
                "reason",
                F.concat("detail", F.lit(" (image sha1 "), "image_sha1", F.lit(")")).alias("detail"),
                F.lit(run.run_id).alias("run_id"),
            )
            written = delta_io.merge_upsert(spark, lake, OPS_STAGE_REJECTS.name, rejects)
            run.wrote(OPS_STAGE_REJECTS.name, written.version)
    finally:
        inferred.unpersist()


def _current_pca(spark: SparkSession, lake: Lakehouse, backbone: str, k: int, phash: str) -> PcaModel | None:
    if not delta_io.table_exists(spark, lake, SILVER_FEATURE_PCA.name):
        return None
    rows = (
        delta_io.read_table(spark, lake, SILVER_FEATURE_PCA.name)
        .filter((F.col("backbone") == backbone) & (F.col("pca_dim") == k) & (F.col("source_params_hash") == phash))
        .orderBy(F.desc("fitted_at"), "version")
        .limit(1)
        .collect()
    )
    if not rows:
        return None
    r = rows[0]
    mean = np.asarray(r["mean"], np.float32)
    return PcaModel(
        backbone=backbone,
        source_params_hash=phash,
        mean=mean,
        components=np.asarray(r["components"], np.float32).reshape(k, mean.shape[0]),
        explained_variance_ratio=np.asarray(r["explained_variance_ratio"], np.float64),
        n_samples=int(r["n_samples"]),
        version=r["version"],
    )


def _fit_and_store_pca(spark, lake, cfg: FeaturesConfig, backbone: str, phash: str, run: JobRun) -> PcaModel | None:
    """Fit on a bounded deterministic sample (the first `pca_sample` vectors by a hash of the key)."""
    sample = (
        delta_io.read_table(spark, lake, SILVER_FRAME_FEATURES.name)
        .filter((F.col("backbone") == backbone) & (F.col("params_hash") == phash))
        .orderBy(F.xxhash64(*KEY), *KEY)
        .limit(cfg.pca_sample)
        .select("features")
        .toPandas()  # bounded by pca_sample rows
    )
    if len(sample) <= cfg.pca_dim:
        log.warning("features: %d vectors of %s, a %d-d PCA needs more; no PCA this run",
                    len(sample), backbone, cfg.pca_dim)
        return None
    pca = fit_pca(np.stack(sample["features"].to_numpy()), cfg.pca_dim, backbone, phash)
    row = {
        "backbone": backbone,
        "pca_dim": pca.dim,
        "version": pca.version,
        "source_params_hash": phash,
        "input_dim": int(pca.mean.shape[0]),
        "n_samples": pca.n_samples,
        "mean": pca.mean.tolist(),
        "components": pca.components.ravel().tolist(),
        "explained_variance_ratio": pca.explained_variance_ratio.tolist(),
        "fitted_at": datetime.now(timezone.utc).replace(tzinfo=None),
        "run_id": run.run_id,
    }
    stored = delta_io.table_exists(spark, lake, SILVER_FEATURE_PCA.name) and (
        delta_io.read_table(spark, lake, SILVER_FEATURE_PCA.name)
        .filter((F.col("backbone") == backbone) & (F.col("pca_dim") == pca.dim) & (F.col("version") == pca.version))
        .limit(1).count() > 0
    )
    if not stored:  # a refit on unchanged vectors gives the same version: nothing to write
        frame = spark.createDataFrame([row], schema=SILVER_FEATURE_PCA.schema)
        written = delta_io.merge_upsert(spark, lake, SILVER_FEATURE_PCA.name, frame)
        run.wrote(SILVER_FEATURE_PCA.name, written.version)
    return pca


def _apply_pca(spark, lake, cfg: FeaturesConfig, backbone: str, phash: str, run: JobRun, summary: FeaturesSummary,
               *, recompute: bool, refit: bool) -> None:
    k = cfg.pca_dim
    run.read(SILVER_FEATURE_PCA.name, delta_io.current_version(spark, lake, SILVER_FEATURE_PCA.name))
    pca = None if refit else _current_pca(spark, lake, backbone, k, phash)
    if pca is None:
        pca = _fit_and_store_pca(spark, lake, cfg, backbone, phash, run)
        if pca is None:
            return
        summary.pca_fitted = True
    summary.pca_version = pca.version
    run.params["pca_version"] = pca.version
    run.metrics["pca_explained_variance"] = round(float(pca.explained_variance_ratio.sum()), 6)

    label, target_hash = pca_label(backbone, k), pca_params_hash(phash, pca, cfg.l2_normalize)
    table = delta_io.read_table(spark, lake, SILVER_FRAME_FEATURES.name)
    base = table.filter((F.col("backbone") == backbone) & (F.col("params_hash") == phash)).select(
        *KEY, "image_sha1", "features")
    if not recompute:
        done = table.filter((F.col("backbone") == label) & (F.col("params_hash") == target_hash)).select(
            *KEY, "image_sha1")
        base = base.join(done, [*KEY, "image_sha1"], "left_anti")
    projected = base.mapInPandas(project_partition(pca, cfg.l2_normalize), schema=PROJECTED_SCHEMA).select(
        *KEY,
        F.lit(label).alias("backbone"),
        F.size("features").alias("dim"),
        "features",
        F.lit(target_hash).alias("params_hash"),
        "image_sha1",
        F.lit(pca.version).alias("pca_version"),
        F.lit(run.run_id).alias("run_id"),
    ).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        n = projected.count()
        if n:
            written = delta_io.merge_upsert(spark, lake, SILVER_FRAME_FEATURES.name, projected)
            run.wrote(SILVER_FRAME_FEATURES.name, written.version)
            summary.pca_rows = written.rows_inserted + written.rows_updated
    finally:
        projected.unpersist()


# ---------------------------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser) -> None:
    parser.add_argument("--recompute", action="store_true",
                        help="run every key frame through the model again (rows whose vector is unchanged stay as they are)")
    parser.add_argument("--refit-pca", action="store_true",
                        help="fit a new PCA (features.pca_dim) on the current vectors and reproject every key frame")


def run_job(args, config: KfrConfig) -> int:
    from kfr_spark.ledger import record_job_run
    from kfr_spark.session import build_session

    cfg = config.features
    bb.check_weights(cfg)  # a missing or wrong weights file is a config error (exit 2), before Spark starts
    spark = build_session(config, "kfr-features")
    lake = Lakehouse(config.lakehouse.root)
    params = {"recompute": bool(args.recompute), "refit_pca": bool(args.refit_pca)}
    with record_job_run(spark, lake, STAGE, config, params) as run:
        s = extract_features(spark, lake, cfg, run, recompute=args.recompute, refit_pca=args.refit_pca)
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(s.rejects_by_reason.items())) or "none"
    rate = f"{s.processed / s.inference_s:,.1f} key frames/s" if s.processed and s.inference_s else "nothing to do"
    pca = ""
    if s.pca_version:
        pca = f"; pca {cfg.pca_dim}-d {s.pca_version}{' (fitted)' if s.pca_fitted else ''}: {s.pca_rows:,} rows"
    print(
        f"features: {s.backbone} on {', '.join(s.devices) or '-'}: {s.processed:,} key frames → {s.vectors:,} vectors "
        f"({s.inserted:,} new, {s.updated:,} updated) in silver.frame_features, {s.rejected:,} rejects ({reasons}); "
        f"{rate}{pca} [run {run.run_id}]"
    )
    return 0
