"""Evaluation (`kfr evaluate`): a trained model against held-out data → `gold.eval_user_metrics`, `gold.eval_metrics`.

Frame-level models (KFRCI's protocol): for every (user, held-out video) — a video holding some of the user's test
positives — the model ranks all of that video's key frames except the user's training positives; the relevant
frames are the held-out positives. F1@K and NDCG@K (K = 5, 10, 20).

Item-level models (JIFR's two protocols):

* items — each user's held-out video is ranked among `evaluate.item_negatives` videos the user never commented on
  (drawn by hash; all of them when there are fewer): `item_hr`, `item_ndcg` @ 5, 10, 20;
* key frames — for users with no frame-level training data (`gold.users.is_cold`), each video they commented on is
  a query: its key frames ranked by w_a · P c_k, relevant = the frames the user liked (`split = cold`):
  `frame_hr`, `frame_ndcg` @ 1, 2, 3, next to `random_frame_hr`, `random_frame_ndcg`, a random frame's expected
  values on the same queries (closed form, `metrics.random_ranking_metrics`).

Per-query values are averaged per user, then over users (`kfr_spark.models.metrics`). Scoring runs on the
executors: queries are grouped by user in `applyInPandas`, the model is loaded once per Python worker from its
checkpoint (`weights_only=True`), and only per-user metric values come back into Spark. They are kept in
`gold.eval_user_metrics`, so two models are compared user by user — the paired t-test's sums are Spark
aggregates, never a collect of the users.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, IntegerType, StringType, StructField, StructType

from kfr_spark import delta_io
from kfr_spark.catalog import (
    GOLD_EVAL_METRICS,
    GOLD_EVAL_USER_METRICS,
    GOLD_FRAMES,
    GOLD_INTERACTIONS,
    GOLD_ITEM_INTERACTIONS,
    GOLD_USERS,
    SILVER_FRAME_FEATURES,
    Lakehouse,
)
from kfr_spark.config import ConfigError, EvaluateConfig, KfrConfig
from kfr_spark.dataset import hash_unit
from kfr_spark.ledger import JobRun

log = logging.getLogger(__name__)

STAGE = "evaluate"
KS = (5, 10, 20)
METRICS = ("f1", "ndcg")
ITEM_KS = (5, 10, 20)
FRAME_KS = (1, 2, 3)

_USER_METRICS = StructType([
    StructField("user_id", StringType(), False),
    StructField("metric", StringType(), False),
    StructField("k", IntegerType(), False),
    StructField("value", DoubleType(), False),
    StructField("queries", IntegerType(), False),
])

_MODELS: dict[str, object] = {}  # per Python worker: checkpoint path → loaded model


def _model(path: str):
    if path not in _MODELS:
        import torch

        from kfr_spark.models import KeyFrameRecommender

        torch.set_num_threads(1)
        _MODELS[path] = KeyFrameRecommender.load(path)
    return _MODELS[path]


def user_metrics(frame: pd.DataFrame, model_path: str) -> pd.DataFrame:
    """One user's candidates (rows: user_id, user_idx, video_id, frame_idx, relevant, [features]) → per-user means."""
    from kfr_spark.models.metrics import grouped_ranking_metrics

    model = _model(model_path)
    feats = np.stack(frame["features"].to_numpy()) if model.uses_images else None
    scores = model.score(int(frame["user_idx"].iloc[0]), frame["frame_idx"].to_numpy(), feats).numpy()
    _, per_query = grouped_ranking_metrics(frame["video_id"].to_numpy(), scores, frame["relevant"].to_numpy(), KS,
                                           metrics=METRICS)
    rows = _metric_rows(frame["user_id"].iloc[0], per_query)
    return pd.DataFrame(rows, columns=[f.name for f in _USER_METRICS.fields])


def _metric_rows(user: str, per_query: dict[str, np.ndarray], prefix: str = "") -> list[tuple]:
    rows = []
    for name, values in per_query.items():
        metric, k = name.split("@")
        values = values[~np.isnan(values)]
        if values.size:
            rows.append((user, prefix + metric, int(k), float(values.mean()), int(values.size)))
    return rows


def user_item_metrics(frame: pd.DataFrame, model_path: str) -> pd.DataFrame:
    """One user's item query (rows: user_id, user_idx, item_idx, relevant) → item_hr / item_ndcg @ ITEM_KS."""
    from kfr_spark.models.metrics import ranking_metrics

    model = _model(model_path)
    scores = model.score(int(frame["user_idx"].iloc[0]), frame["item_idx"].to_numpy()).numpy()
    per_query = {k: np.atleast_1d(v) for k, v in
                 ranking_metrics(scores, frame["relevant"].to_numpy(), ITEM_KS, metrics=("hr", "ndcg")).items()}
    rows = _metric_rows(frame["user_id"].iloc[0], per_query, "item_")
    return pd.DataFrame(rows, columns=[f.name for f in _USER_METRICS.fields])


def user_frame_metrics(frame: pd.DataFrame, model_path: str) -> pd.DataFrame:
    """One cold user's key frame queries (rows: user_id, user_idx, video_id, relevant, features) → frame_hr /
    frame_ndcg @ FRAME_KS, and a random frame's expected values on the same queries."""
    from kfr_spark.models.metrics import grouped_ranking_metrics, random_ranking_metrics

    model = _model(model_path)
    scores = model.score_frames(int(frame["user_idx"].iloc[0]), np.stack(frame["features"].to_numpy())).numpy()
    _, per_query = grouped_ranking_metrics(frame["video_id"].to_numpy(), scores, frame["relevant"].to_numpy(),
                                           FRAME_KS, metrics=("hr", "ndcg"))
    sizes = frame.groupby("video_id", sort=True)["relevant"].agg(["size", "sum"])
    random = random_ranking_metrics(sizes["size"].to_numpy(), sizes["sum"].to_numpy(), FRAME_KS)
    user = frame["user_id"].iloc[0]
    rows = _metric_rows(user, per_query, "frame_") + _metric_rows(user, random, "random_frame_")
    return pd.DataFrame(rows, columns=[f.name for f in _USER_METRICS.fields])


def item_candidates(spark: SparkSession, lake: Lakehouse, cfg: EvaluateConfig) -> DataFrame:
    """(user_id, user_idx, item_idx, relevant): each held-out video with up to `item_negatives` unrated ones."""
    users = delta_io.read_table(spark, lake, GOLD_USERS.name).select("user_id", "user_idx")
    items = delta_io.read_table(spark, lake, GOLD_FRAMES.name).select("video_id", "item_idx").distinct()
    seen = delta_io.read_table(spark, lake, GOLD_ITEM_INTERACTIONS.name).join(items, "video_id")
    test = seen.filter(F.col("split") == "test").select("user_id", "item_idx", F.lit(True).alias("relevant"))
    n_items = items.count()
    n = cfg.item_negatives
    queries = test.select("user_id").distinct()
    if n_items <= 2 * n:  # a small catalogue: every unrated video is a candidate, the first n by hash are kept
        pool = queries.crossJoin(items.select("item_idx"))
    else:  # 2n draws with replacement, distinct: at least n unrated ones unless the user rated most of them
        pool = (queries.select("user_id", F.explode(F.sequence(F.lit(0), F.lit(2 * n - 1))).alias("_j"))
                .select("user_id", F.pmod(F.xxhash64(F.lit(cfg.seed), F.lit("eval-item"), "user_id", "_j"),
                                          F.lit(n_items)).cast("int").alias("item_idx")).distinct())
    by_user = Window.partitionBy("user_id").orderBy("_draw", "item_idx")
    unrated = (pool.join(seen.select("user_id", "item_idx"), ["user_id", "item_idx"], "left_anti")
               .withColumn("_draw", hash_unit(cfg.seed, "eval-item-keep", "user_id", "item_idx"))
               .withColumn("_rank", F.row_number().over(by_user)).filter(F.col("_rank") <= n)
               .select("user_id", "item_idx", F.lit(False).alias("relevant")))
    return test.unionByName(unrated).join(users, "user_id").select("user_id", "user_idx", "item_idx", "relevant")


def cold_frame_candidates(spark: SparkSession, lake: Lakehouse, backbone: str) -> DataFrame:
    """(user_id, user_idx, video_id, relevant, features): every key frame with a vector of every video a cold user
    liked a frame of; relevant = the user liked it."""
    gold = delta_io.read_table(spark, lake, GOLD_INTERACTIONS.name)
    users = delta_io.read_table(spark, lake, GOLD_USERS.name).filter(F.col("is_cold")).select("user_id", "user_idx")
    liked = (gold.filter((F.col("split") == "cold") & (F.col("label") == 1))
             .select("user_id", "video_id", "shot_idx", F.lit(True).alias("relevant")))
    feats = (delta_io.read_table(spark, lake, SILVER_FRAME_FEATURES.name)
             .filter(F.col("backbone") == backbone).select("video_id", "shot_idx", "features"))
    frames = delta_io.read_table(spark, lake, GOLD_FRAMES.name).select("video_id", "shot_idx").join(
        feats, ["video_id", "shot_idx"])
    return (liked.select("user_id", "video_id").distinct().join(frames, "video_id")
            .join(liked, ["user_id", "video_id", "shot_idx"], "left").fillna({"relevant": False})
            .join(users, "user_id")
            .select("user_id", "user_idx", "video_id", "relevant", "features"))


def candidates(spark: SparkSession, lake: Lakehouse, uses_images: bool, backbone: str) -> DataFrame:
    """(user_id, user_idx, video_id, frame_idx, relevant[, features]) for every query of the KFRCI protocol."""
    gold = delta_io.read_table(spark, lake, GOLD_INTERACTIONS.name)
    users = delta_io.read_table(spark, lake, GOLD_USERS.name).filter(~F.col("is_cold")).select("user_id", "user_idx")
    frames = delta_io.read_table(spark, lake, GOLD_FRAMES.name).select("video_id", "shot_idx", "frame_idx")
    test = gold.filter(F.col("split") == "test").select("user_id", "video_id", "shot_idx", F.lit(True).alias("relevant"))
    train_pos = gold.filter((F.col("split") == "train") & (F.col("label") == 1)).select("user_id", "video_id", "shot_idx")
    queries = test.select("user_id", "video_id").distinct()
    rows = (queries.join(frames, "video_id")
            .join(train_pos, ["user_id", "video_id", "shot_idx"], "left_anti")
            .join(test, ["user_id", "video_id", "shot_idx"], "left")
            .fillna({"relevant": False})
            .join(users, "user_id"))
    if uses_images:
        feats = (delta_io.read_table(spark, lake, SILVER_FRAME_FEATURES.name)
                 .filter(F.col("backbone") == backbone).select("video_id", "shot_idx", "features"))
        rows = rows.join(feats, ["video_id", "shot_idx"])
    return rows.select("user_id", "user_idx", "video_id", "frame_idx", "relevant",
                       *(["features"] if uses_images else []))


@dataclass(frozen=True)
class PairedComparison:
    metric: str
    k: int
    n_users: int
    mean_a: float
    mean_b: float
    t: float
    p_value: float  # two-sided paired t-test


def paired_comparison(spark: SparkSession, lake: Lakehouse, run_a: str, run_b: str, metric: str, k: int) -> PairedComparison:
    """Paired t-test of two evaluation runs over the users both evaluated, from Spark aggregates of differences."""
    from kfr_spark.models.metrics import student_t_sf

    per_user = delta_io.read_table(spark, lake, GOLD_EVAL_USER_METRICS.name).filter(
        (F.col("metric") == metric) & (F.col("k") == k))
    a = per_user.filter(F.col("eval_id") == run_a).select("user_id", F.col("value").alias("a"))
    b = per_user.filter(F.col("eval_id") == run_b).select("user_id", F.col("value").alias("b"))
    s = a.join(b, "user_id").agg(
        F.count("*").alias("n"), F.avg("a").alias("ma"), F.avg("b").alias("mb"),
        F.avg(F.col("a") - F.col("b")).alias("md"), F.stddev_samp(F.col("a") - F.col("b")).alias("sd")).first()
    n = int(s["n"])
    if n < 2:
        raise ValueError(f"{n} common users: a paired test needs at least 2")
    sd = float(s["sd"] or 0.0)
    md = float(s["md"])
    t = math.inf if sd == 0 and md != 0 else (0.0 if sd == 0 else md / (sd / math.sqrt(n)))
    p = 2 * student_t_sf(abs(t), n - 1) if math.isfinite(t) else 0.0
    return PairedComparison(metric, k, n, float(s["ma"]), float(s["mb"]), t, min(1.0, p))


def evaluate_model(spark: SparkSession, lake: Lakehouse, config: KfrConfig, model_path: Path, run: JobRun,
                   eval_id: str | None = None) -> dict[str, float]:
    from kfr_spark.models import KeyFrameRecommender

    if not Path(model_path).is_file():
        raise ConfigError(f"model file not found: {model_path} (kfr train writes it)")
    model = KeyFrameRecommender.load(model_path)  # refuses anything but tensors and plain values
    inputs = [GOLD_USERS.name, GOLD_FRAMES.name, GOLD_INTERACTIONS.name]
    if model.level == "item":
        inputs += [GOLD_ITEM_INTERACTIONS.name, SILVER_FRAME_FEATURES.name]
    for name in inputs:
        run.read(name, delta_io.current_version(spark, lake, name))
    eval_id = eval_id or run.run_id
    path = str(Path(model_path).resolve())
    if model.level == "item":
        items = item_candidates(spark, lake, config.evaluate).groupBy("user_id").applyInPandas(
            lambda f: user_item_metrics(f, path), schema=_USER_METRICS)
        cold = cold_frame_candidates(spark, lake, config.dataset.backbone).groupBy("user_id").applyInPandas(
            lambda f: user_frame_metrics(f, path), schema=_USER_METRICS)
        per_user = items.unionByName(cold)
    else:
        rows = candidates(spark, lake, model.uses_images, config.dataset.backbone)
        per_user = rows.groupBy("user_id").applyInPandas(lambda f: user_metrics(f, path), schema=_USER_METRICS)
    per_user = (per_user.withColumn("eval_id", F.lit(eval_id)).withColumn("model", F.lit(model.name))
                .withColumn("run_id", F.lit(run.run_id)).persist())
    try:
        written = delta_io.merge_upsert(spark, lake, GOLD_EVAL_USER_METRICS.name, per_user)
        run.wrote(GOLD_EVAL_USER_METRICS.name, written.version)
        summary = (per_user.groupBy("metric", "k").agg(
            F.avg("value").alias("value"), F.stddev_samp("value").alias("sd"), F.count("*").alias("n_users")))
        summary = summary.select(
            F.lit(eval_id).alias("eval_id"), F.lit(model.name).alias("model"), "metric", "k", "value",
            (F.col("value") - 1.96 * F.col("sd") / F.sqrt("n_users")).alias("ci_low"),
            (F.col("value") + 1.96 * F.col("sd") / F.sqrt("n_users")).alias("ci_high"),
            F.col("n_users").cast("int").alias("n_users"), F.lit(path).alias("model_path"),
            F.lit(run.run_id).alias("run_id"))
        result = {f"{r['metric']}@{r['k']}": float(r["value"]) for r in summary.collect()}
        written = delta_io.merge_upsert(spark, lake, GOLD_EVAL_METRICS.name, summary)
        run.wrote(GOLD_EVAL_METRICS.name, written.version)
        run.rows_out = int(per_user.select("user_id").distinct().count())
    finally:
        per_user.unpersist()
    run.metrics.update(result)
    from kfr_spark import tracking

    tracking.log_evaluation(config, Path(model_path), eval_id, result)
    return result


def served_model(spark: SparkSession, lake: Lakehouse, name: str) -> Path:
    """The `model.pt` a model name serves (`kfr_spark.train.selected_model_run`): what scoring would use, so an
    evaluation by name measures the model the product ships, not the newest file on disk."""
    from kfr_spark.train import selected_model_run

    row = selected_model_run(spark, lake, name)
    if row is None:
        raise ConfigError(f"no trained {name} model in {lake.root} (run kfr train --model {name})")
    path = Path(row["model_path"])
    if not path.is_file():
        raise ConfigError(f"{name} serves run {row['run_key']}, whose model file {path} is gone "
                          f"(run kfr train --model {name} again)")
    return path


def add_arguments(parser) -> None:
    parser.add_argument("model_path", type=Path, nargs="?", help="a model.pt written by kfr train")
    parser.add_argument("--model", help="instead of a path: the model this name serves, as scoring would (e.g. kfrci)")
    parser.add_argument("--eval-id", help="name of this evaluation in gold.eval_metrics (default: the run id)")


def run_job(args, config: KfrConfig) -> int:
    from kfr_spark.ledger import record_job_run
    from kfr_spark.session import build_session

    if (args.model_path is None) == (args.model is None):
        raise ConfigError("give exactly one of: a model.pt path, --model NAME")
    spark = build_session(config, "kfr-evaluate")
    lake = Lakehouse(config.lakehouse.root)
    model_path = args.model_path or served_model(spark, lake, args.model)
    with record_job_run(spark, lake, STAGE, config, {"model_path": str(model_path)}) as run:
        result = evaluate_model(spark, lake, config, model_path, run, args.eval_id)
    figures = ", ".join(f"{k}={v:.4f}" for k, v in sorted(result.items()))
    print(f"evaluate: {model_path} over {run.rows_out:,} users: {figures} [run {run.run_id}]")
    return 0
