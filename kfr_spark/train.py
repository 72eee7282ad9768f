"""Training (`kfr train`): gold tables → a Petastorm-fed, Horovod-distributed torch model → a checkpoint.

The Spark side builds one flat table of training rows in the model's batch conventions (dense indices from
`gold.users` / `gold.frames`, comment words padded to a fixed length), splits off a validation share by hash, and
materialises both for Petastorm (`kfr_spark.feed`). Key frame vectors travel separately, once, as an (n_frames, F)
matrix the workers look batches up in; item-level models (JIFR) also get every video's frame indices and hold
the frames themselves. Frame-level rows come from `gold.interactions`; item-level rows (user, video, sampled
unrated videos) from `gold.item_interactions`.

The torch side (`train_worker`) runs in every training process (`kfr_spark.distributed`): a fixed number of steps
per epoch on its own shard (the same count on every rank, as collective steps need), gradients averaged, the
validation loss averaged over ranks, a checkpoint written by rank 0 after every epoch, early stopping when the
validation measure has not improved for `patience` epochs. A run that finds a checkpoint of the same run key resumes
after its last finished epoch.

The validation measure (`train.monitor`) is, for frame-level models, NDCG@10 on validation queries built like the
evaluation's from the held-out training positives: a model is chosen for how it ranks a video's key frames. The
validation loss, the alternative (and item-level models' measure), prefers under-regularised models: measured on
the ~1M benchmark, it kept BPR at L2 1e-4 over 0.03, which ranks 0.04 NDCG@10 better, because a loss near ln 2
means close scores, not wrong orders. `train_grid` uses the same measure to choose among hyper-parameters.

The model artifact is `<model_dir>/<model>/<run key>/model.pt` (tensors and plain values only: loaded with
`weights_only=True`), next to `training.json` (parameters, per-epoch history, input Delta versions).
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import logging
import math
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from kfr_spark import delta_io
from kfr_spark.catalog import (
    GOLD_FRAMES,
    GOLD_INTERACTIONS,
    GOLD_ITEM_INTERACTIONS,
    GOLD_USERS,
    OPS_MODEL_RUNS,
    OPS_MODEL_SELECTION,
    SILVER_FRAME_FEATURES,
    SILVER_VOCABULARY,
    Lakehouse,
)
from kfr_spark.config import ConfigError, KfrConfig, TrainConfig
from kfr_spark.dataset import hash_unit
from kfr_spark.ledger import JobRun

log = logging.getLogger(__name__)

STAGE = "train"
CHECKPOINT = "checkpoint.pt"
MODEL_FILE = "model.pt"
META_FILE = "training.json"
FAIL_AFTER_EPOCH_ENV = "KFR_TRAIN_FAIL_AFTER_EPOCH"  # fault injection for the resume tests: die after epoch N
# Fault injection for the resilience suite: "rank:epoch:step" SIGKILLs that training process mid-epoch, as the OOM
# killer or a lost machine would: no exception, no cleanup, its peers left waiting in a collective.
KILL_MID_EPOCH_ENV = "KFR_TRAIN_KILL_MID_EPOCH"


@dataclass(frozen=True)
class ModelShape:
    """What a model is built from, beside its hyper-parameters."""

    name: str
    n_users: int
    n_items: int
    feature_dim: int | None
    vocab_size: int | None


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a training process needs; plain values, so it pickles into Horovod's processes."""

    shape: ModelShape
    hyper: dict[str, Any]
    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    patience: int
    seed: int
    steps_per_epoch: int
    val_steps: int
    run_dir: str
    threads_per_proc: int
    features_path: str | None = None  # the (n_frames, F) key frame matrix of models that use images
    item_frames_path: str | None = None  # item-level models: (n_items, max_frames) frame indices, -1 = padding
    val_queries_path: str | None = None  # (n, 4) user, frame, query, relevant: early stopping on their NDCG@10
    # Fault injection, read from the driver's environment at launch (Horovod's processes do not inherit it).
    fail_after_epoch: int | None = None
    kill_mid_epoch: tuple[int, int, int] | None = None  # (rank, epoch, step)


@dataclass
class TrainResult:
    model: str
    run_key: str
    run_dir: str
    epochs_run: int
    resumed_from_epoch: int
    best_epoch: int
    best_val_loss: float  # at the best epoch, whatever chose it
    history: list[dict[str, float]] = field(default_factory=list)
    monitor: str = "val_loss"  # what chose the best epoch: val_ndcg or val_loss
    best_val_ndcg: float | None = None  # NDCG@10 on the validation queries at the best epoch (frame-level models)
    train_rows: int = 0
    val_rows: int = 0
    seconds: float = 0.0
    processes: int = 1
    resumed_at_step: int = 0  # a resumed run: the optimizer step it went on from (0: started afresh)

    @property
    def model_path(self) -> Path:
        return Path(self.run_dir) / MODEL_FILE


# -- the Spark side ------------------------------------------------------------------------------------------------
def padded(column: str, length: int) -> F.Column:
    """A fixed-length int array: the column's first `length` ids, right-padded with 0 (text.PAD_ID)."""
    ids = F.coalesce(F.col(column), F.array().cast("array<int>"))
    return F.slice(F.concat(ids, F.array_repeat(F.lit(0), length)), 1, length)


def _features(spark: SparkSession, lake: Lakehouse, backbone: str) -> DataFrame:
    return (delta_io.read_table(spark, lake, SILVER_FRAME_FEATURES.name)
            .filter(F.col("backbone") == backbone).select("video_id", "shot_idx", "features"))


def frame_level_rows(spark: SparkSession, lake: Lakehouse, model_cls, cfg: TrainConfig, backbone: str,
                     max_tokens: int) -> DataFrame:
    """Training rows of a frame-level model, with `_val` (the validation share, by hash)."""
    users = delta_io.read_table(spark, lake, GOLD_USERS.name).filter(~F.col("is_cold")).select("user_id", "user_idx")
    frames = delta_io.read_table(spark, lake, GOLD_FRAMES.name).select("video_id", "shot_idx", "frame_idx")
    rows = (delta_io.read_table(spark, lake, GOLD_INTERACTIONS.name).filter(F.col("split") == "train")
            .join(users, "user_id").join(frames, ["video_id", "shot_idx"]).withColumn("_val", _held_out(cfg)))
    if model_cls.uses_images:  # only frames that have a vector can be trained on with images
        with_vectors = delta_io.read_table(spark, lake, GOLD_FRAMES.name).filter("has_features").select("frame_idx")
        rows = rows.join(with_vectors, "frame_idx", "left_semi")
    if model_cls.objective == "pairwise":
        return _pairs(rows)
    cols = [F.col("user_idx").alias("user"), F.col("frame_idx").alias("frame"),
            F.col("label").cast("float").alias("label")]
    if model_cls.uses_text:
        cols.append(padded("token_ids", max_tokens).alias("tokens"))
    return rows.select(*cols, "_val")


def _held_out(cfg: TrainConfig) -> F.Column:
    """Whether a frame-level training row is held out for validation: a hash of (user, key frame), so a rerun
    holds out the same rows."""
    return hash_unit(cfg.seed, "val", "user_id", "video_id", "shot_idx") < cfg.val_fraction


def validation_queries(spark: SparkSession, lake: Lakehouse, model_cls, cfg: TrainConfig) -> DataFrame:
    """Ranking queries built like the evaluation's, from the held-out training positives: for each (user, video)
    with one, every key frame of the video but the user's other positives (training and test), relevant = the
    held-out ones. (user, frame, query = item_idx, relevant): what early stopping and the grid choose on.

    The test positives are left out of the candidates, not counted as misses: a model that ranks them high is
    generalising, and choosing against it would be choosing against the test."""
    users = delta_io.read_table(spark, lake, GOLD_USERS.name).filter(~F.col("is_cold")).select("user_id", "user_idx")
    frames = delta_io.read_table(spark, lake, GOLD_FRAMES.name)
    if model_cls.uses_images:
        frames = frames.filter("has_features")
    frames = frames.select("video_id", "shot_idx", "frame_idx", "item_idx")
    positives = (delta_io.read_table(spark, lake, GOLD_INTERACTIONS.name).filter(F.col("label") == 1)
                 .join(users, "user_id").withColumn("_held", (F.col("split") == "train") & _held_out(cfg))
                 .select("user_idx", "video_id", "shot_idx", "_held"))
    held = positives.filter("_held").select("user_idx", "video_id", "shot_idx", F.lit(1).alias("relevant"))
    others = positives.filter(~F.col("_held")).select("user_idx", "video_id", "shot_idx")
    return (held.select("user_idx", "video_id").distinct().join(frames, "video_id")
            .join(others, ["user_idx", "video_id", "shot_idx"], "left_anti")
            .join(held, ["user_idx", "video_id", "shot_idx"], "left")
            .select(F.col("user_idx").alias("user"), F.col("frame_idx").alias("frame"),
                    F.col("item_idx").alias("query"), F.coalesce("relevant", F.lit(0)).alias("relevant")))


def write_validation_queries(queries: DataFrame, path: Path) -> int:
    """The validation queries as one int64 (n, 4) matrix file (user, frame, query, relevant), streamed from Spark
    like the feature matrix; every training process loads it and ranks its own users' queries. Returns n."""
    import numpy as np

    n = queries.count()
    matrix = np.lib.format.open_memmap(path, mode="w+", dtype=np.int64, shape=(n, 4))
    for i, row in enumerate(queries.select("user", "frame", "query", "relevant").toLocalIterator()):
        matrix[i] = tuple(row)
    matrix.flush()
    del matrix
    return n


def _pairs(rows: DataFrame) -> DataFrame:
    """BPR/VBPR rows (user, pos, neg): each positive paired with the non-positive frames of the same user, the
    i-th positive (by frame) with the negatives ranked k·(i−1)+1 … k·i, where k = negatives / positives."""
    from pyspark.sql import Window

    by_user = Window.partitionBy("user_idx")
    pos = (rows.filter(F.col("label") == 1)
           .withColumn("_i", F.row_number().over(by_user.orderBy("frame_idx")))
           .select("user_idx", "_i", F.col("frame_idx").alias("pos"), "_val"))
    neg = (rows.filter(F.col("label") == 0)
           .withColumn("_j", F.row_number().over(by_user.orderBy("frame_idx")))
           .withColumn("_n_neg", F.count("*").over(by_user))
           .select("user_idx", "_j", "_n_neg", F.col("frame_idx").alias("neg")))
    n_pos = pos.groupBy("user_idx").agg(F.count("*").alias("_n_pos"))
    neg = neg.join(n_pos, "user_idx").withColumn(
        "_i", F.floor((F.col("_j") - 1) / F.greatest(F.lit(1), F.floor(F.col("_n_neg") / F.col("_n_pos")))) + 1)
    return pos.join(neg, ["user_idx", "_i"]).select(F.col("user_idx").alias("user"), "pos", "neg", "_val")


def item_level_rows(spark: SparkSession, lake: Lakehouse, cfg: TrainConfig) -> DataFrame:
    """JIFR's training rows (user, pos, neg[item_negatives]) with `_val`: every training video of a user, paired
    with videos the user never commented on, drawn by hash (so a rerun draws the same). Cold users are included:
    item-level history is all JIFR learns from, and it is what serves them."""
    n = cfg.item_negatives
    users = delta_io.read_table(spark, lake, GOLD_USERS.name).select("user_id", "user_idx")
    items = delta_io.read_table(spark, lake, GOLD_FRAMES.name).select("video_id", "item_idx").distinct()
    n_items = items.count()
    seen = (delta_io.read_table(spark, lake, GOLD_ITEM_INTERACTIONS.name).join(items, "video_id")
            .select("user_id", "item_idx", "split"))
    positives = seen.filter(F.col("split") == "train").select("user_id", F.col("item_idx").alias("pos"))
    draws = (positives.select("user_id", "pos", F.explode(F.sequence(F.lit(0), F.lit(4 * n - 1))).alias("_j"))
             .withColumn("neg", F.pmod(F.xxhash64(F.lit(cfg.seed), F.lit("item-neg"), "user_id", "pos", "_j"),
                                       F.lit(max(1, n_items))).cast("int"))
             .join(seen.select("user_id", F.col("item_idx").alias("neg")), ["user_id", "neg"], "left_anti"))
    kept = (draws.groupBy("user_id", "pos")
            .agg(F.transform(F.array_sort(F.collect_list(F.struct("_j", "neg"))), lambda d: d["neg"]).alias("_negs")))
    # Fewer than n unrated videos drawn (a user who commented on nearly everything): cycle through those drawn.
    neg = F.transform(F.sequence(F.lit(0), F.lit(n - 1)),
                      lambda i: F.element_at("_negs", (i % F.size("_negs")) + 1))
    return (kept.filter(F.size("_negs") > 0).join(users, "user_id")
            .select(F.col("user_idx").alias("user"), F.col("pos").cast("int").alias("pos"), neg.alias("neg"),
                    (hash_unit(cfg.seed, "val", "user_id", "pos") < cfg.val_fraction).alias("_val")))


def write_item_frames(spark: SparkSession, lake: Lakehouse, n_items: int, path: Path) -> int:
    """Every video's key frames that have a vector, as one int64 (n_items, max_frames) matrix of frame indices
    (-1 = padding), streamed like the feature matrix. Returns max_frames."""
    import numpy as np

    per_item = (delta_io.read_table(spark, lake, GOLD_FRAMES.name).filter("has_features")
                .groupBy("item_idx").agg(F.array_sort(F.collect_list("frame_idx")).alias("frames")))
    widest = int(per_item.agg(F.max(F.size("frames")).alias("m")).first()["m"] or 0)
    if widest == 0:
        raise ConfigError("no key frame has a feature vector: run kfr features before training an item-level model")
    matrix = np.lib.format.open_memmap(path, mode="w+", dtype=np.int64, shape=(n_items, widest))
    matrix[:] = -1
    for row in per_item.toLocalIterator():
        matrix[row["item_idx"], : len(row["frames"])] = row["frames"]
    matrix.flush()
    del matrix
    return widest


def write_feature_matrix(spark: SparkSession, lake: Lakehouse, backbone: str, n_frames: int, dim: int,
                         path: Path) -> int:
    """The key frames' vectors as one float32 (n_frames, dim) matrix file, row = frame_idx (zeros where a frame has
    none). Training rows carry frame indices only: the vectors travel once, not once per example. Streamed from
    Spark partition by partition into a memory-mapped file, so the driver never holds more than a partition."""
    import numpy as np

    matrix = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_frames, dim))
    frames = delta_io.read_table(spark, lake, GOLD_FRAMES.name).select("video_id", "shot_idx", "frame_idx")
    vectors = frames.join(_features(spark, lake, backbone), ["video_id", "shot_idx"]).select("frame_idx", "features")
    n = 0
    for row in vectors.toLocalIterator():
        matrix[row["frame_idx"]] = row["features"]
        n += 1
    matrix.flush()
    del matrix
    return n


def with_features(batch: dict, table) -> dict:
    """Look the batch's key frames up in the feature matrix (pointwise `frame`; pairwise `pos` and `neg`)."""
    if "frame" in batch:
        batch["features"] = table[batch["frame"]]
    if "pos" in batch:
        batch["pos_features"], batch["neg_features"] = table[batch["pos"]], table[batch["neg"]]
    return batch


def model_shape(spark: SparkSession, lake: Lakehouse, name: str, model_cls, backbone: str) -> ModelShape:
    """The model's dimensions; its items are key frames (frame-level models) or videos (item-level: JIFR)."""
    n_users = delta_io.read_table(spark, lake, GOLD_USERS.name).count()
    frames = delta_io.read_table(spark, lake, GOLD_FRAMES.name)
    n_items = frames.select("item_idx").distinct().count() if model_cls.level == "item" else frames.count()
    feature_dim = vocab_size = None
    if model_cls.uses_images:
        first = _features(spark, lake, backbone).select(F.size("features").alias("d")).first()
        if first is None:
            raise ConfigError(f"{name} uses images: silver.frame_features has no {backbone!r} vectors (kfr features)")
        feature_dim = int(first["d"])
    if model_cls.uses_text:
        vocab_size = int(delta_io.read_table(spark, lake, SILVER_VOCABULARY.name)
                         .agg(F.max("token_id").alias("m")).first()["m"] or 1) + 1
    return ModelShape(name, int(n_users), int(n_items), feature_dim, vocab_size)


def run_key(shape: ModelShape, cfg: TrainConfig, hyper: dict[str, Any], input_versions: dict[str, int]) -> str:
    """Same model, settings and input versions → same key: a rerun resumes (or finds finished) that training."""
    payload = json.dumps({"shape": asdict(shape), "hyper": hyper, "train": cfg.model_dump(mode="json",
                          exclude={"model_dir", "cache_dir", "num_proc", "threads_per_proc", "grid"}),
                          "inputs": input_versions}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def artifact_dirs(config: KfrConfig) -> tuple[Path, Path]:
    """(model artifacts, Petastorm cache): as configured, else beside the tables under the lakehouse root."""
    base = Path(config.lakehouse.root) / "_artifacts"
    return (Path(config.train.model_dir or base / "models"), Path(config.train.cache_dir or base / "petastorm"))


# -- the torch side ------------------------------------------------------------------------------------------------
def _state_path(run_dir: str) -> Path:
    return Path(run_dir) / CHECKPOINT


def train_worker(spec: WorkerSpec, train_data, val_data) -> dict[str, Any]:
    """One training process (rank r of n): the same code in one process or under Horovod."""
    import torch

    from kfr_spark.distributed import join
    from kfr_spark.models import build_model
    from kfr_spark.models.base import as_batch, make_optimizer, seeded
    from kfr_spark.models.optim import flush, watch

    comm = join()
    torch.set_num_threads(spec.threads_per_proc)
    import numpy as np

    table = np.load(spec.features_path, mmap_mode="r") if spec.features_path else None
    s = spec.shape
    model = build_model(s.name, n_users=s.n_users, n_items=s.n_items, feature_dim=s.feature_dim,
                        vocab_size=s.vocab_size, seed=spec.seed, **spec.hyper)
    if spec.item_frames_path:  # item-level: the model holds every video's frames; batches carry indices only
        model.set_item_frames(np.asarray(table), frame_index=np.load(spec.item_frames_path))
        table = None
    # Horovod's wrapper is a new optimizer built from the param groups, with an empty state: a resumed state is
    # loaded into it, not into the optimizer it wraps (there, Adam's moments were lost on every resume).
    optimizer = comm.distributed_optimizer(make_optimizer(model, spec.optimizer, spec.lr), model)
    history: list[dict[str, float]] = []
    start_epoch, best, best_epoch, stale, finished = 0, math.inf, -1, 0, False
    state_file = _state_path(spec.run_dir)
    if state_file.exists():  # resume: every rank reads the same file; broadcast keeps them identical anyway
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = json.loads(state["history"])
        start_epoch, best, best_epoch, stale = (int(state["epoch"]) + 1, float(state["best"]),
                                                int(state["best_epoch"]), int(state["stale"]))
        finished = bool(state["finished"])
    resumed_from = start_epoch
    comm.broadcast(model, optimizer)
    watch(optimizer, model)  # the optimizer that steps catches up the rows each lookup reads
    # The optimizer's own step count (Adam's bias correction) where training goes on: a resumed run's proof that it
    # carries on with its optimizer state rather than a fresh one.
    at_step = max((int(s["step"]) for s in optimizer.state.values() if "step" in s), default=0) if start_epoch else 0
    fail_after, kill_at = spec.fail_after_epoch, spec.kill_mid_epoch

    moments = [0, 0.0, 0.0]  # n, Σ score, Σ score² of the last validation pass (pointwise models): score_spread()
    queries = None
    if spec.val_queries_path:  # this process ranks its own users' validation queries
        every = np.load(spec.val_queries_path)
        queries = every[every[:, 0] % comm.size == comm.rank]

    def validation_ndcg() -> float:
        """NDCG@10 on the validation queries, per query, per user, then over all processes' users."""
        from kfr_spark.models.metrics import user_means_of_query_metric

        total, users = 0.0, 0
        if len(queries):
            scorer, chunk = model.frame_scorer(table), 262_144
            with torch.no_grad():
                scores = np.concatenate([np.asarray(scorer(queries[a:a + chunk, 0], queries[a:a + chunk, 1]))
                                         for a in range(0, len(queries), chunk)])
            _, means = user_means_of_query_metric(queries[:, 0], queries[:, 2], scores, queries[:, 3], "ndcg", 10)
            means = means[~np.isnan(means)]
            total, users = float(means.sum()), int(means.size)
        total = comm.mean(total, name=f"ndcg.sum.{len(history)}")
        users = comm.mean(users, name=f"ndcg.users.{len(history)}")
        return total / users if users else math.nan

    def mean_loss(batches, steps: int, train: bool) -> float:
        total = 0.0
        moments[:] = [0, 0.0, 0.0]
        for step in range(steps):
            if train and kill_at == (comm.rank, len(history), step):
                os.kill(os.getpid(), signal.SIGKILL)
            raw = next(batches)
            batch = as_batch(with_features(raw, table) if table is not None else raw)
            if train:
                optimizer.zero_grad()  # Horovod's wrapper takes no arguments
                loss = model.loss(batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{s.name}: loss became {loss.item()}")
                loss.backward()
                optimizer.step()
            else:
                with torch.no_grad():
                    loss = model.loss(batch)
                    if model.objective == "pointwise":
                        scores = model.score(batch["user"], batch["frame"], batch.get("features")).double()
                        moments[0] += scores.numel()
                        moments[1] += float(scores.sum())
                        moments[2] += float(scores.square().sum())
            total += float(loss.detach())
        return comm.mean(total / max(1, steps), name=f"loss.{'train' if train else 'val'}.{len(history)}")

    def score_spread() -> float | None:
        """The standard deviation of the validation pairs' scores: 0 means every frame scores the same for every
        user (a dead ReLU tower does that) and the model ranks nothing, however its loss looks. None when the
        last pass scored nothing (no validation split, or not a pointwise model), alike on every rank."""
        n = moments[0]
        if not n:
            return None
        mean = comm.mean(moments[1] / n, name=f"score.mean.{len(history)}")
        square = comm.mean(moments[2] / n, name=f"score.square.{len(history)}")
        return math.sqrt(max(0.0, square - mean * mean))

    def checkpoint(epoch: int, done: bool) -> None:
        if comm.is_root:
            tmp = state_file.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                        "best": best, "best_epoch": best_epoch, "stale": stale, "finished": done,
                        "history": json.dumps(history)}, tmp)
            os.replace(tmp, state_file)  # a reader never sees half a checkpoint

    if finished:  # this very training ran to its end before: nothing to do
        return {"rank": comm.rank, "size": comm.size, "history": history, "resumed_from": start_epoch,
                "resumed_at_step": at_step, "best": best, "best_epoch": best_epoch}
    epoch = start_epoch - 1
    with train_data.batches(spec.batch_size, rank=comm.rank, shards=comm.size, seed=spec.seed) as train_batches, \
            val_data.batches(spec.batch_size, rank=comm.rank, shards=comm.size, shuffle=False) as val_batches:
        with seeded(spec.seed + 1000 * comm.rank + start_epoch):
            for epoch in range(start_epoch, spec.epochs):
                t0 = time.perf_counter()
                model.train()
                train_loss = mean_loss(train_batches, spec.steps_per_epoch, train=True)
                flush(optimizer)  # the epoch's deferred row updates, before validation and the checkpoint
                model.eval()
                val_loss = mean_loss(val_batches, spec.val_steps, train=False) if spec.val_steps else train_loss
                val_spread = score_spread()
                val_ndcg = validation_ndcg() if queries is not None else None
                measure = val_loss if val_ndcg is None or math.isnan(val_ndcg) else -val_ndcg  # lower is better
                if measure < best - 1e-6:
                    best, best_epoch, stale = measure, epoch, 0
                    if comm.is_root:
                        model.save(Path(spec.run_dir) / MODEL_FILE)
                else:
                    stale += 1
                history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                                "seconds": time.perf_counter() - t0,
                                "examples": spec.steps_per_epoch * spec.batch_size * comm.size,
                                **({"val_score_std": val_spread} if val_spread is not None else {}),
                                **({"val_ndcg": val_ndcg} if val_ndcg is not None else {})})
                done = stale >= spec.patience or epoch == spec.epochs - 1
                checkpoint(epoch, done)
                if fail_after is not None and epoch >= fail_after:
                    raise RuntimeError(f"fault injection: training process {comm.rank} killed after epoch {epoch}")
                if done:
                    break
    return {"rank": comm.rank, "size": comm.size, "history": history, "resumed_from": resumed_from,
            "resumed_at_step": at_step, "best": best, "best_epoch": best_epoch}


# -- the job -------------------------------------------------------------------------------------------------------
def train_model(spark: SparkSession, lake: Lakehouse, config: KfrConfig, model_name: str, run: JobRun,
                hyper: dict[str, Any] | None = None) -> TrainResult:
    from kfr_spark import distributed, feed
    from kfr_spark.models import MODELS

    cfg = config.train
    try:
        model_cls = MODELS[model_name.lower()]
    except KeyError:
        raise ConfigError(f"unknown model {model_name!r}; known: {', '.join(MODELS)}") from None
    item_level = model_cls.level == "item"
    inputs = [GOLD_USERS.name, GOLD_FRAMES.name, GOLD_ITEM_INTERACTIONS.name if item_level else GOLD_INTERACTIONS.name]
    for name in inputs:
        if not delta_io.table_exists(spark, lake, name):
            raise ConfigError(f"kfr train needs {name}: run kfr dataset first")
    if model_cls.uses_images:
        inputs.append(SILVER_FRAME_FEATURES.name)
    if model_cls.uses_text:
        inputs.append(SILVER_VOCABULARY.name)
    for name in inputs:
        run.read(name, delta_io.current_version(spark, lake, name))

    backbone = config.dataset.backbone
    try:
        hyper = model_cls.resolve_hyper({**cfg.hyper.get(model_cls.name, {}), **(hyper or {})})
    except ValueError as e:
        raise ConfigError(f"train.hyper.{model_cls.name}: {e}") from None
    shape = model_shape(spark, lake, model_cls.name, model_cls, backbone)
    key = run_key(shape, cfg, hyper, run.input_versions)
    model_dir, cache = artifact_dirs(config)
    run_dir = model_dir / model_cls.name / key
    run_dir.mkdir(parents=True, exist_ok=True)

    if model_cls.objective == "counts":
        result = _count_popularity(spark, lake, shape, run_dir, run, key)
        record_model_run(spark, lake, config, result, {"shape": asdict(shape), "hyper": hyper}, run)
        return result
    if item_level:
        rows = item_level_rows(spark, lake, cfg)
    else:
        rows = frame_level_rows(spark, lake, model_cls, cfg, backbone, config.dataset.max_tokens)
    features_path = item_frames_path = None
    if model_cls.uses_images:
        features_path = run_dir / "frame_features.npy"
        n_frames = delta_io.read_table(spark, lake, GOLD_FRAMES.name).count()
        n = write_feature_matrix(spark, lake, backbone, n_frames, shape.feature_dim, features_path)
        log.info("train: %d key frame vectors (%d-d) → %s", n, shape.feature_dim, features_path)
    if item_level:
        item_frames_path = run_dir / "item_frames.npy"
        widest = write_item_frames(spark, lake, shape.n_items, item_frames_path)
        log.info("train: %d videos, up to %d key frames each → %s", shape.n_items, widest, item_frames_path)
    queries_path = None
    if cfg.monitor == "val_ndcg" and not item_level and cfg.val_fraction > 0:
        queries_path = run_dir / "val_queries.npy"
        n = write_validation_queries(validation_queries(spark, lake, model_cls, cfg), queries_path)
        log.info("train: %d validation query candidates → %s", n, queries_path)
        if n == 0:
            queries_path = None
    if queries_path is None:
        log.info("train: %s early-stops on the validation loss", model_cls.name)
    procs = max(1, cfg.num_proc)
    # Petastorm shards by Parquet row group: every process needs some, so write at least a few files per process.
    parts = max(2 * procs, spark.sparkContext.defaultParallelism)
    # Hash-partitioned and sorted, so the files (and, with the seeded shuffle, the batches) are the same every run.
    keys = (["user", "pos"] if item_level else ["user", "pos", "neg"]) if model_cls.objective == "pairwise" \
        else ["user", "frame"]
    train_df = rows.filter(~F.col("_val")).drop("_val").repartition(parts, *keys).sortWithinPartitions(*keys)
    val_df = rows.filter(F.col("_val")).drop("_val").repartition(parts, *keys).sortWithinPartitions(*keys)
    train_data, val_data = feed.materialize(spark, train_df, cache), feed.materialize(spark, val_df, cache)
    if train_data.rows == 0:
        raise ConfigError(f"no training rows for {model_name}: is gold.interactions empty?")
    per_step = cfg.batch_size * procs
    spec = WorkerSpec(
        shape=shape, hyper=hyper, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
        optimizer=cfg.optimizer, patience=cfg.patience, seed=cfg.seed,
        steps_per_epoch=max(1, math.ceil(train_data.rows / per_step)),
        val_steps=math.ceil(val_data.rows / per_step) if val_data.rows >= per_step else 0,
        run_dir=str(run_dir), threads_per_proc=cfg.threads_per_proc or max(1, (os.cpu_count() or 2) // procs),
        features_path=str(features_path) if features_path else None,
        item_frames_path=str(item_frames_path) if item_frames_path else None,
        val_queries_path=str(queries_path) if queries_path else None,
        fail_after_epoch=int(os.environ[FAIL_AFTER_EPOCH_ENV]) if os.environ.get(FAIL_AFTER_EPOCH_ENV) else None,
        kill_mid_epoch=tuple(int(x) for x in os.environ[KILL_MID_EPOCH_ENV].split(":"))
        if os.environ.get(KILL_MID_EPOCH_ENV) else None,
    )
    log.info("train: %s on %d process(es), %d train / %d validation rows, %d steps per epoch → %s",
             model_cls.name, procs, train_data.rows, val_data.rows, spec.steps_per_epoch, run_dir)
    started = time.perf_counter()
    results = distributed.launch(train_worker, (spec, train_data, val_data), procs)
    seconds = time.perf_counter() - started
    root = next(r for r in results if r["rank"] == 0)
    chosen = next((h for h in root["history"] if h["epoch"] == root["best_epoch"]), {})
    result = TrainResult(
        model=model_cls.name, run_key=key, run_dir=str(run_dir), epochs_run=len(root["history"]),
        resumed_from_epoch=root["resumed_from"], resumed_at_step=root["resumed_at_step"],
        best_epoch=root["best_epoch"], best_val_loss=float(chosen.get("val_loss", math.nan)),
        history=root["history"], train_rows=train_data.rows, val_rows=val_data.rows, seconds=seconds,
        processes=root["size"], monitor="val_ndcg" if "val_ndcg" in chosen else "val_loss",
        best_val_ndcg=chosen.get("val_ndcg"),
    )
    (run_dir / META_FILE).write_text(json.dumps({
        "model": model_cls.name, "shape": asdict(shape), "hyper": hyper, "train": cfg.model_dump(mode="json"),
        "input_versions": run.input_versions, "history": result.history, "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss, "monitor": result.monitor, "best_val_ndcg": result.best_val_ndcg,
        "processes": result.processes, "run_id": run.run_id,
    }, indent=2, default=str))
    record_model_run(spark, lake, config, result, {"shape": asdict(shape), "hyper": hyper,
                                                   "train": cfg.model_dump(mode="json")}, run)
    warn_if_constant(result, run)
    run.rows_in = train_data.rows + val_data.rows
    run.rows_out = result.epochs_run
    run.metrics.update({"train_rows": train_data.rows, "val_rows": val_data.rows, "epochs": result.epochs_run,
                        "resumed_from_epoch": result.resumed_from_epoch, "resumed_at_step": result.resumed_at_step,
                        "best_val_loss": result.best_val_loss, "seconds": seconds, "processes": result.processes,
                        **({"best_val_ndcg": result.best_val_ndcg} if result.best_val_ndcg is not None else {}),
                        "examples_per_s": sum(h["examples"] for h in result.history) / max(seconds, 1e-9)})
    train_data.close(), val_data.close()
    return result


def grid_points(grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A grid's hyper-parameter points: the cross product of per-name values, or the points as listed."""
    if isinstance(grid, Mapping):
        names = list(grid)
        points = [dict(zip(names, values, strict=True)) for values in itertools.product(*(grid[n] for n in names))]
    else:
        points = [dict(point) for point in grid]
    if not points or any(not p for p in points):
        raise ConfigError("a training grid needs at least one value for each name, or at least one point")
    return points


def train_grid(spark: SparkSession, lake: Lakehouse, config: KfrConfig, model_name: str, run: JobRun,
               grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]) -> TrainResult:
    """Train one model at every point of a hyper-parameter grid (on top of `train.hyper`) and serve the best on the
    validation measure (`train.monitor`): each point is an ordinary training with a run key of its own, so a
    rerun of the grid finds them finished, and a grid cut short resumes where it stopped."""
    points, results = grid_points(grid), []
    for i, point in enumerate(points):
        log.info("train: %s grid point %d of %d: %s", model_name, i + 1, len(points), point)
        result = train_model(spark, lake, config, model_name, run, hyper=point)
        results.append((i, result))
        log.info("train: %s %s → validation NDCG@10 %s, loss %.4f at epoch %d", result.model, point,
                 "-" if result.best_val_ndcg is None else f"{result.best_val_ndcg:.4f}", result.best_val_loss,
                 result.best_epoch)

    def badness(ir: tuple[int, TrainResult]) -> float:
        r = ir[1]
        return -r.best_val_ndcg if r.best_val_ndcg is not None else r.best_val_loss

    chosen, best = min(results, key=badness)  # the first of equals: the grid's order breaks ties
    point = points[chosen]
    select_model_run(spark, lake, best.model, best.run_key, run)
    run.metrics.update({"grid_points": len(points), "grid_chosen": chosen})
    run.metrics.update({f"grid.{name}": float(v) for name, v in point.items()
                        if isinstance(v, int | float) and not isinstance(v, bool)})
    log.info("train: %s serves %s (run %s) of %d grid points", best.model, point, best.run_key, len(points))
    return best


CONSTANT_SCORE_STD = 1e-6


def warn_if_constant(result: TrainResult, run: JobRun) -> None:
    """Say so loudly when the kept model scores every validation pair the same: it would rank key frames in
    arbitrary order while its loss (an LM term, say) still looks like progress."""
    best = next((h for h in result.history if h["epoch"] == result.best_epoch), None)
    spread = None if best is None else best.get("val_score_std")
    if spread is None:
        return
    run.metrics["val_score_std"] = float(spread)
    if spread < CONSTANT_SCORE_STD:
        run.metrics["constant_scores"] = 1.0
        log.warning("train: %s scores every validation pair the same (score std %.2g at epoch %d): it ranks "
                    "nothing; a dead ReLU tower does this (KFRCI with activation=relu: its default, leaky_relu, "
                    "avoids it)",
                    result.model, spread, result.best_epoch)


def record_model_run(spark: SparkSession, lake: Lakehouse, config: KfrConfig, result: TrainResult,
                     params: dict[str, Any], run: JobRun) -> None:
    """The training's record in `ops.model_runs` (Delta, keyed by run key: a rerun of a finished training
    rewrites nothing) and in MLflow (`kfr_spark.tracking`)."""
    from kfr_spark import tracking

    mlflow_run = tracking.log_training(
        config, model=result.model, run_key=result.run_key, params=params, history=result.history,
        input_versions=run.input_versions, model_path=result.model_path,
        artifacts=[Path(result.run_dir) / META_FILE], finished=True, job_run_id=run.run_id)
    row = Row(run_key=result.run_key, model=result.model, params=json.dumps(params, sort_keys=True, default=str),
              history=json.dumps(result.history), input_versions={k: int(v) for k, v in run.input_versions.items()},
              best_epoch=int(result.best_epoch),
              best_val_loss=None if math.isnan(result.best_val_loss) else float(result.best_val_loss),
              processes=int(result.processes), seconds=float(sum(h["seconds"] for h in result.history)),
              model_path=str(result.model_path.resolve()), mlflow_run_id=mlflow_run,
              trained_at=datetime.datetime.now(datetime.UTC).replace(tzinfo=None), run_id=run.run_id)
    written = delta_io.merge_upsert(spark, lake, OPS_MODEL_RUNS.name,
                                    spark.createDataFrame([row], schema=OPS_MODEL_RUNS.schema))
    run.wrote(OPS_MODEL_RUNS.name, written.version)
    select_model_run(spark, lake, result.model, result.run_key, run)
    if mlflow_run:
        run.metrics["mlflow_logged"] = 1.0
        log.info("train: tracked as MLflow run %s in %s", mlflow_run, tracking.tracking_uri(config))


def select_model_run(spark: SparkSession, lake: Lakehouse, model: str, key: str, run: JobRun) -> None:
    """Make `key` the training that `model` serves (`ops.model_selection`); when it already is, no commit."""
    if delta_io.table_exists(spark, lake, OPS_MODEL_SELECTION.name):
        current = (delta_io.read_table(spark, lake, OPS_MODEL_SELECTION.name)
                   .filter(F.col("model") == model).select("run_key").first())
        if current is not None and current["run_key"] == key:
            return
    row = Row(model=model, run_key=key, selected_at=datetime.datetime.now(datetime.UTC).replace(tzinfo=None),
              run_id=run.run_id)
    written = delta_io.merge_upsert(spark, lake, OPS_MODEL_SELECTION.name,
                                    spark.createDataFrame([row], schema=OPS_MODEL_SELECTION.schema))
    run.wrote(OPS_MODEL_SELECTION.name, written.version)
    log.info("train: %s now serves run %s", model, key)


def selected_model_run(spark: SparkSession, lake: Lakehouse, name: str) -> Row | None:
    """The `ops.model_runs` row a model name serves (None: never trained): the run key its latest `kfr train`
    resolved to (`ops.model_selection`), so that after an experiment's settings are reverted, the rerun that finds
    the old training finished makes it the served one again. A lake trained before the selection table existed
    serves the run first recorded last."""
    if not delta_io.table_exists(spark, lake, OPS_MODEL_RUNS.name):
        return None
    runs = delta_io.read_table(spark, lake, OPS_MODEL_RUNS.name).filter(F.col("model") == name.lower())
    if delta_io.table_exists(spark, lake, OPS_MODEL_SELECTION.name):
        chosen = (delta_io.read_table(spark, lake, OPS_MODEL_SELECTION.name)
                  .filter(F.col("model") == name.lower()).select("run_key").first())
        if chosen is not None:
            row = runs.filter(F.col("run_key") == chosen["run_key"]).first()
            if row is not None:
                return row
    return runs.orderBy(F.desc("trained_at"), F.desc("run_key")).first()


def _count_popularity(spark: SparkSession, lake: Lakehouse, shape: ModelShape, run_dir: Path, run: JobRun,
                      key: str) -> TrainResult:
    """MostPopular has no gradient: its model is the training positives counted per key frame (a Spark
    aggregation; one count per frame comes back)."""
    import numpy as np

    from kfr_spark.models import build_model

    frames = delta_io.read_table(spark, lake, GOLD_FRAMES.name).select("video_id", "shot_idx", "frame_idx")
    counts = (delta_io.read_table(spark, lake, GOLD_INTERACTIONS.name)
              .filter((F.col("split") == "train") & (F.col("label") == 1))
              .join(frames, ["video_id", "shot_idx"]).groupBy("frame_idx").agg(F.count("*").alias("n")))
    pairs = [(r["frame_idx"], r["n"]) for r in counts.toLocalIterator()]
    idx = np.array([i for i, _ in pairs], dtype=np.int64)
    n = np.array([c for _, c in pairs], dtype=np.float64)
    model = build_model(shape.name, n_users=shape.n_users, n_items=shape.n_items).fit_counts(idx, n)
    model.save(run_dir / MODEL_FILE)
    run.rows_in = int(n.sum())
    return TrainResult(model=shape.name, run_key=key, run_dir=str(run_dir), epochs_run=0, resumed_from_epoch=0,
                       best_epoch=-1, best_val_loss=float("nan"), train_rows=int(n.sum()))


def add_arguments(parser) -> None:
    parser.add_argument("--model", default=None, help="model to train (default: train.model); see kfr_spark.models")
    parser.add_argument("--num-proc", type=int, default=None, help="training processes (default: train.num_proc)")
    parser.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2,...",
                        help="search a hyper-parameter (repeatable: the values are crossed) and serve the best on "
                        "validation NDCG@10 (default: train.grid.<model>)")


def _grid_value(text: str) -> Any:
    """A `--set` scalar, but a number where YAML 1.1 reads 1e-3 (no dot) as a string: a grid of weights means it."""
    from kfr_spark.config import _parse_scalar

    value = _parse_scalar(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def parse_grid(specs: Sequence[str]) -> dict[str, list[Any]]:
    """`--grid reg=0.001,0.01` → {"reg": [0.001, 0.01]}: each value a YAML scalar, as in `--set`."""
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        if not sep or not name.strip() or not values.strip():
            raise ConfigError(f"--grid {spec!r}: expected NAME=V1,V2,...")
        grid[name.strip()] = [_grid_value(v) for v in values.split(",")]
    return grid


def run_job(args, config: KfrConfig) -> int:
    from kfr_spark.ledger import record_job_run
    from kfr_spark.session import build_session

    if args.num_proc is not None:
        config = config.model_copy(update={"train": config.train.model_copy(update={"num_proc": args.num_proc})})
    model = args.model or config.train.model
    spark = build_session(config, f"kfr-train-{model}")
    lake = Lakehouse(config.lakehouse.root)
    grid = parse_grid(args.grid) if args.grid else config.train.grid.get(model.lower())
    with record_job_run(spark, lake, STAGE, config, {"model": model, "num_proc": config.train.num_proc,
                                                     **({"grid": grid} if grid else {})}) as run:
        r = train_grid(spark, lake, config, model, run, grid) if grid else train_model(spark, lake, config, model, run)
    resumed = (f", resumed after epoch {r.resumed_from_epoch - 1} (optimizer step {r.resumed_at_step})"
               if r.resumed_from_epoch else "")
    chosen = ""
    if grid:
        point = ", ".join(f"{k}={v}" for k, v in grid_points(grid)[int(run.metrics["grid_chosen"])].items())
        chosen = f" ({point}: best of {int(run.metrics['grid_points'])} grid points)"
    ndcg = f"validation NDCG@10 {r.best_val_ndcg:.4f}, " if r.best_val_ndcg is not None else ""
    print(f"train: {r.model}{chosen} on {r.processes} process(es): {r.train_rows:,} rows, {r.epochs_run} epochs"
          f"{resumed}, {ndcg}validation loss {r.best_val_loss:.4f} at epoch {r.best_epoch} in {r.seconds:.1f}s → "
          f"{r.model_path} [run {run.run_id}]")
    return 0
