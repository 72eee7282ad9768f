"""Batch scoring (`kfr score`): for each user and candidate video, the video's key frames ranked for that user →
`gold.user_keyframes`, one partition per run date.

A router serves every user: the frame-level model (`score.frame_model`, KFRCI) for users with frame-level history,
the item-level model (`score.item_model`, JIFR) for users with item-level history only, and the video's most
popular key frame (training positives counted per frame) for users no model knows. A pair whose video is newer
than the model that would serve it goes to the popularity route too. The model used and its version (training run
key) are recorded on every row.

Models are read with the dense indices they were trained on: `gold.users` and `gold.frames` at the Delta versions
recorded in `ops.model_runs` (time travel), so a dataset rebuilt after training cannot shift a user or a frame
under a model. Scoring is vectorised per video: the (user, video) pairs are co-grouped with the video's frames, a
model (and its key frame matrix) is loaded once per Python worker, the video's users are scored against its
frames in blocks (one broadcast product or matrix product per block, `frame_block_scorer`) and ranked by one
stable sort per block. Only the kept ranks leave the worker. A rerun of the same date replaces exactly that
date's partition (`delta_io.replace_partition`), in one commit.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, IntegerType, StringType, StructField, StructType

from kfr_spark import delta_io
from kfr_spark.catalog import (
    GOLD_FRAMES,
    GOLD_INTERACTIONS,
    GOLD_ITEM_INTERACTIONS,
    GOLD_USER_KEYFRAMES,
    GOLD_USERS,
    Lakehouse,
)
from kfr_spark.config import ConfigError, KfrConfig, ScoreConfig
from kfr_spark.ledger import JobRun

log = logging.getLogger(__name__)

STAGE = "score"
POPULAR = "most_popular"
USER_BUCKETS = 16  # tasks one video's candidate users are split over

_RANKED = StructType([
    StructField("user_id", StringType(), False),
    StructField("video_id", StringType(), False),
    StructField("rank", IntegerType(), False),
    StructField("shot_idx", IntegerType(), False),
    StructField("score", DoubleType(), False),
])
_TOP_ITEMS = StructType([StructField("user_id", StringType(), False), StructField("item_idx", IntegerType(), False)])


@dataclass(frozen=True)
class ServingModel:
    """A trained model as the scorer needs it: its file, its version and the index versions it was trained on."""

    name: str
    level: str  # frame | item
    uses_images: bool
    run_key: str
    model_path: str
    features_path: str | None  # the (n_frames, F) matrix of its training run (frame-level image models)
    users_version: int
    frames_version: int


def serving_model(spark: SparkSession, lake: Lakehouse, name: str) -> ServingModel | None:
    """The model this name serves (`kfr_spark.train.selected_model_run`; None: never trained)."""
    from kfr_spark.models import MODELS
    from kfr_spark.train import selected_model_run

    row = selected_model_run(spark, lake, name)
    if row is None or not Path(row["model_path"]).is_file():
        return None
    cls = MODELS[name.lower()]
    features = Path(row["model_path"]).parent / "frame_features.npy"
    versions = row["input_versions"]
    return ServingModel(name=cls.name, level=cls.level, uses_images=cls.uses_images, run_key=row["run_key"],
                        model_path=row["model_path"],
                        features_path=str(features) if cls.level == "frame" and cls.uses_images else None,
                        users_version=int(versions[GOLD_USERS.name]), frames_version=int(versions[GOLD_FRAMES.name]))


# -- per-worker scoring (pure numpy/torch; no Spark) -----------------------------------------------------------------
_WORKER_CACHE: dict[str, object] = {}


def _loaded(model_path: str, features_path: str | None):
    """(model, block scorer) once per Python worker: the scorer has the user-independent part precomputed per
    frame (KFRCI's q*_k, JIFR's P c_k) and scores a block of users against one video's frames."""
    key = f"{model_path}|{features_path}"
    if key not in _WORKER_CACHE:
        import torch

        from kfr_spark.models import KeyFrameRecommender

        torch.set_num_threads(1)  # Spark runs one task per core already
        model = KeyFrameRecommender.load(model_path)
        features = np.load(features_path, mmap_mode="r") if features_path else None
        _WORKER_CACHE[key] = (model, model.frame_block_scorer(features))
    return _WORKER_CACHE[key]


def _no_ranks() -> pd.DataFrame:
    return pd.DataFrame({f.name: [] for f in _RANKED.fields})


def rank_block(user_ids: np.ndarray, scores: np.ndarray, shots: np.ndarray, keep: int) -> dict[str, np.ndarray]:
    """Scores (U users, K frames of one video, frames in shot order) → each user's top `keep` (0: all), best
    first; equal scores go to the earlier shot (a stable sort over columns already in shot order)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    if keep:
        order = order[:, :keep]
    n = order.shape[1]
    return {"user_id": np.repeat(user_ids, n), "rank": np.tile(np.arange(1, n + 1, dtype=np.int32), len(user_ids)),
            "shot_idx": shots[order].reshape(-1).astype(np.int32),
            "score": np.take_along_axis(scores, order, axis=1).reshape(-1).astype(np.float64)}


def rank_video(pairs: pd.DataFrame, frames: np.ndarray, shots: np.ndarray, block_fn, keep: int,
               max_scores: int) -> pd.DataFrame:
    """One video's candidate users (user_id, user_idx) ranked against its frames, `max_scores` scores per model
    call."""
    users_per_call = max(1, max_scores // max(1, len(frames)))
    user_ids, user_idx = pairs["user_id"].to_numpy(), pairs["user_idx"].to_numpy().astype(np.int64)
    parts = []
    for start in range(0, len(pairs), users_per_call):
        end = start + users_per_call
        scores = np.asarray(block_fn(user_idx[start:end], frames), dtype=np.float64)
        parts.append(rank_block(user_ids[start:end], scores, shots, keep))
    if not parts:
        return _no_ranks()
    out = pd.DataFrame({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    return out.assign(video_id=pairs["video_id"].iloc[0])[[f.name for f in _RANKED.fields]]


def _ranker(model: ServingModel, cfg: ScoreConfig):
    path, feats, keep, chunk = model.model_path, model.features_path, cfg.keep_ranks, cfg.batch_pairs

    def run(pairs: pd.DataFrame, video: pd.DataFrame) -> pd.DataFrame:
        if pairs.empty or video.empty:
            return _no_ranks()
        _, block_fn = _loaded(path, feats)
        frames = np.asarray(video["frames"].iloc[0], dtype=np.int64)
        shots = np.asarray(video["shots"].iloc[0], dtype=np.int64)
        return rank_video(pairs, frames, shots, block_fn, keep, chunk)

    return run


def _top_items(model: ServingModel, n: int):
    path = model.model_path

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        loaded, _ = _loaded(path, None)
        items = np.arange(loaded.n_items)
        for pdf in batches:
            out_users, out_items = [], []
            for user_id, user_idx, seen in zip(pdf["user_id"], pdf["user_idx"], pdf["seen"], strict=True):
                scores = loaded.score(int(user_idx), items).numpy().astype(np.float64)
                scores[np.asarray(seen, dtype=np.int64)] = -np.inf
                best = np.lexsort((items, -scores))[:n]
                best = best[np.isfinite(scores[best])]
                out_users += [user_id] * best.size
                out_items.append(best)
            yield pd.DataFrame({"user_id": out_users,
                                "item_idx": np.concatenate(out_items).astype(np.int32) if out_items else []})

    return run


# -- the Spark side ----------------------------------------------------------------------------------------------
def _users(spark: SparkSession, lake: Lakehouse, model: ServingModel | None, frame_level: bool) -> DataFrame | None:
    if model is None:
        return None
    users = delta_io.read_table(spark, lake, GOLD_USERS.name, model.users_version)
    if frame_level:
        users = users.filter(~F.col("is_cold"))
    return users.select("user_id", "user_idx")


def video_frames(spark: SparkSession, lake: Lakehouse, model: ServingModel) -> DataFrame:
    """(video_id, frames[], shots[]) in shot order, with the model's frame indices (at its training version)."""
    frames = delta_io.read_table(spark, lake, GOLD_FRAMES.name, model.frames_version)
    if model.uses_images:
        frames = frames.filter("has_features")
    ordered = F.array_sort(F.collect_list(F.struct("shot_idx", "frame_idx")))
    return (frames.groupBy("video_id").agg(ordered.alias("_f"))
            .select("video_id", F.col("_f.frame_idx").alias("frames"), F.col("_f.shot_idx").alias("shots")))


def candidate_pairs(spark: SparkSession, lake: Lakehouse, cfg: ScoreConfig, item_model: ServingModel | None
                    ) -> DataFrame:
    """(user_id, video_id) to score, distinct."""
    videos = delta_io.read_table(spark, lake, GOLD_FRAMES.name).select("video_id").distinct()
    if cfg.candidates == "table":
        if cfg.candidate_path is None:
            raise ConfigError("score.candidates = table needs score.candidate_path (a Delta or Parquet folder)")
        path = Path(cfg.candidate_path)
        if not path.exists():
            raise ConfigError(f"score.candidate_path {path} does not exist")
        fmt = "delta" if (path / "_delta_log").is_dir() else "parquet"
        table = spark.read.format(fmt).load(str(path))
        missing = {"user_id", "video_id"} - set(table.columns)
        if missing:
            raise ConfigError(f"score.candidate_path {path} lacks columns {sorted(missing)}")
        return (table.select(F.col("user_id").cast("string"), F.col("video_id").cast("string"))
                .dropna().distinct())
    users = delta_io.read_table(spark, lake, GOLD_USERS.name).select("user_id")
    if cfg.candidates == "all":
        if cfg.video_ids:
            videos = videos.filter(F.col("video_id").isin(list(cfg.video_ids)))
        return users.crossJoin(videos)
    if item_model is None:
        raise ConfigError(f"score.candidates = item_top_n needs a trained {cfg.item_model} (kfr train --model "
                          f"{cfg.item_model})")
    known = _users(spark, lake, item_model, frame_level=False)
    items = (delta_io.read_table(spark, lake, GOLD_FRAMES.name, item_model.frames_version)
             .select("video_id", "item_idx").distinct())
    seen = (delta_io.read_table(spark, lake, GOLD_ITEM_INTERACTIONS.name).join(items, "video_id")
            .groupBy("user_id").agg(F.collect_list("item_idx").alias("seen")))
    per_user = known.join(seen, "user_id", "left").withColumn(
        "seen", F.coalesce("seen", F.array().cast("array<int>")))
    top = per_user.mapInPandas(_top_items(item_model, cfg.top_n), schema=_TOP_ITEMS)
    return top.join(items, "item_idx").select("user_id", "video_id")


def popular_frames(spark: SparkSession, lake: Lakehouse, keep: int) -> DataFrame:
    """(video_id, rank, shot_idx, score): each video's key frames by how many training positives they have."""
    frames = delta_io.read_table(spark, lake, GOLD_FRAMES.name).select("video_id", "shot_idx")
    counts = (delta_io.read_table(spark, lake, GOLD_INTERACTIONS.name)
              .filter((F.col("split") == "train") & (F.col("label") == 1))
              .groupBy("video_id", "shot_idx").agg(F.count("*").cast("double").alias("score")))
    ranked = (frames.join(counts, ["video_id", "shot_idx"], "left").fillna({"score": 0.0})
              .withColumn("rank", F.row_number().over(
                  Window.partitionBy("video_id").orderBy(F.desc("score"), "shot_idx")).cast("int")))
    return ranked.filter(F.col("rank") <= keep) if keep else ranked


@dataclass(frozen=True)
class ScoreSummary:
    run_date: datetime.date
    rows: int
    pairs_by_model: dict[str, int]
    version: int


def score_users(spark: SparkSession, lake: Lakehouse, config: KfrConfig, run_date: datetime.date,
                run: JobRun) -> ScoreSummary:
    cfg = config.score
    for name in (GOLD_USERS.name, GOLD_FRAMES.name, GOLD_INTERACTIONS.name):
        if not delta_io.table_exists(spark, lake, name):
            raise ConfigError(f"kfr score needs {name}: run kfr dataset first")
        run.read(name, delta_io.current_version(spark, lake, name))
    frame_model = serving_model(spark, lake, cfg.frame_model)
    item_model = serving_model(spark, lake, cfg.item_model)
    for label, model, wanted in (("frame", frame_model, cfg.frame_model), ("item", item_model, cfg.item_model)):
        if model is None:
            log.warning("score: no trained %s model (%s): its users get the most popular key frames", label, wanted)
        else:
            log.info("score: %s-level users → %s %s", label, model.name, model.run_key)
    if frame_model is not None and frame_model.level != "frame":
        raise ConfigError(f"score.frame_model = {cfg.frame_model} is not a frame-level model")
    if item_model is not None and item_model.level != "item":
        raise ConfigError(f"score.item_model = {cfg.item_model} is not an item-level model")

    pairs = candidate_pairs(spark, lake, cfg, item_model).persist()
    try:
        remaining = pairs
        parts = []
        for model, frame_level in ((frame_model, True), (item_model, False)):
            users = _users(spark, lake, model, frame_level)
            if users is None:
                continue
            frames = video_frames(spark, lake, model)
            routed = (remaining.join(users, "user_id").join(frames.select("video_id"), "video_id", "left_semi")
                      .select("user_id", "user_idx", "video_id"))
            # Grouped by video and user bucket: a video's frames travel once per group, not once per (user,
            # video) pair, and a video every user is a candidate for is spread over USER_BUCKETS tasks.
            buckets = routed.withColumn("bucket", F.pmod(F.xxhash64("user_id"), F.lit(USER_BUCKETS)))
            replicated = frames.withColumn("bucket", F.explode(F.sequence(F.lit(0), F.lit(USER_BUCKETS - 1))))
            ranked = buckets.groupBy("video_id", "bucket").cogroup(
                replicated.groupBy("video_id", "bucket")).applyInPandas(_ranker(model, cfg), schema=_RANKED)
            parts.append(ranked.withColumn("model", F.lit(model.name))
                         .withColumn("model_version", F.lit(model.run_key)))
            remaining = remaining.join(routed.select("user_id", "video_id"), ["user_id", "video_id"], "left_anti")
        interactions_version = run.input_versions[GOLD_INTERACTIONS.name]
        popular = remaining.join(popular_frames(spark, lake, cfg.keep_ranks), "video_id").select(
            "user_id", "video_id", "rank", "shot_idx", "score", F.lit(POPULAR).alias("model"),
            F.lit(f"gold.interactions@v{interactions_version}").alias("model_version"))
        parts.append(popular)
        out = parts[0]
        for part in parts[1:]:
            out = out.unionByName(part)
        out = out.withColumn("run_date", F.lit(run_date)).withColumn("run_id", F.lit(run.run_id))
        written = delta_io.replace_partition(spark, lake, GOLD_USER_KEYFRAMES.name, out, {"run_date": run_date})
        run.wrote(GOLD_USER_KEYFRAMES.name, written.version)
        today = delta_io.read_table(spark, lake, GOLD_USER_KEYFRAMES.name).filter(F.col("run_date") == run_date)
        by_model = {r["model"]: int(r["n"]) for r in
                    today.filter(F.col("rank") == 1).groupBy("model").agg(F.count("*").alias("n")).collect()}
        rows = int(today.count())
        run.rows_in = int(pairs.count())
    finally:
        pairs.unpersist()
    run.rows_out = rows
    run.metrics.update({f"pairs_{k}": float(v) for k, v in by_model.items()})
    return ScoreSummary(run_date=run_date, rows=rows, pairs_by_model=by_model, version=written.version)


def add_arguments(parser) -> None:
    parser.add_argument("--date", type=datetime.date.fromisoformat, default=None,
                        help="run date (YYYY-MM-DD) of the partition to (re)write; default: today (UTC)")


def run_job(args, config: KfrConfig) -> int:
    from kfr_spark.ledger import record_job_run
    from kfr_spark.session import build_session

    run_date = args.date or datetime.datetime.now(datetime.UTC).date()
    spark = build_session(config, "kfr-score")
    lake = Lakehouse(config.lakehouse.root)
    with record_job_run(spark, lake, STAGE, config, {"run_date": run_date.isoformat()}) as run:
        s = score_users(spark, lake, config, run_date, run)
    print(f"score: {run_date}: {s.rows:,} ranked key frames for {sum(s.pairs_by_model.values()):,} user x video "
          f"pairs ({json.dumps(s.pairs_by_model)}) → gold.user_keyframes v{s.version} [run {run.run_id}]")
    return 0
