"""Training data (`kfr dataset`): aligned, tokenized, sentiment-labelled comments → the gold training tables.

* `gold.users`, `gold.frames`: dense indices for the models (users by id, key frames by video then shot; videos are
  JIFR's items), so every model and every run of the same data sees the same numbering.
* `gold.interactions` (user × key frame, KFRCI's input): every frame a user commented on, labelled by the comments'
  polarity (1 positive or neutral, 0 negative: the KFRCI rule; a frame with both counts as positive when its positive
  comments are at least as many), and for each training positive `k_neg` negatives sampled uniformly from the
  frames the user never commented on (the negatively commented frames are in the table already, labelled 0).
  30 % of each user's positives (rounded half up) are held out as `test`; a `cold_user_fraction` of users keep no frame-level
  training data at all (`cold`: JIFR's key frame test for users who never comment).
* `gold.item_interactions` (user × video, JIFR's input): the videos each user commented on; one per user (with two
  or more) held out as `test`.

Every random choice is a hash of (seed, what is chosen), never Spark's `rand()`: a rerun on the same data makes
the same choices whatever the partitioning, each table is synchronised with MERGE (insert, update, delete what is
gone), and so a rerun commits nothing. Nothing is collected to the driver but counts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from kfr_spark import delta_io
from kfr_spark.catalog import (
    GOLD_FRAMES,
    GOLD_INTERACTIONS,
    GOLD_ITEM_INTERACTIONS,
    GOLD_USERS,
    SILVER_FRAME_FEATURES,
    SILVER_SHOTS,
    SILVER_TSC_ALIGNED,
    SILVER_TSC_TOKENS,
    Lakehouse,
)
from kfr_spark.config import ConfigError, DatasetConfig, KfrConfig
from kfr_spark.ledger import JobRun

log = logging.getLogger(__name__)

STAGE = "dataset"
_COMMENT_KEY = ["source", "video_id", "comment_id"]
_UNIT = 1 << 31  # hash_unit maps a hash onto [0, 1) in steps of 2^-31


def hash_unit(seed: int, salt: str, *columns: str | Column) -> Column:
    """A reproducible uniform draw in [0, 1) from (seed, salt, columns): the same row always draws the same value."""
    h = F.xxhash64(F.lit(int(seed)), F.lit(salt), *columns)
    return F.pmod(h, F.lit(_UNIT)).cast("double") / float(_UNIT)


@dataclass(frozen=True)
class DatasetSummary:
    users: int
    cold_users: int
    frames: int
    interactions_by_split: dict[str, int]
    positives: int
    sampled_negatives: int
    item_interactions: int
    changed_rows: int


def usable_comments(spark: SparkSession, lake: Lakehouse) -> DataFrame:
    """Comments with a user, a shot and a polarity, not flagged as noise: (user_id, video_id, shot_idx, polarity,
    token_ids, video_time_s, comment_id)."""
    aligned = delta_io.read_table(spark, lake, SILVER_TSC_ALIGNED.name).select(
        *_COMMENT_KEY, "user_id", "shot_idx", "video_time_s")
    tokens = delta_io.read_table(spark, lake, SILVER_TSC_TOKENS.name).select(
        *_COMMENT_KEY, "token_ids", "polarity", "is_noise")
    return (
        aligned.join(tokens, _COMMENT_KEY)
        .filter(~F.col("is_noise") & F.col("user_id").isNotNull() & (F.col("user_id") != "")
                & F.col("polarity").isNotNull())
        .select("user_id", "video_id", "shot_idx", "polarity", "token_ids", "video_time_s", "comment_id")
    )


def build_users(comments: DataFrame, cfg: DatasetConfig) -> DataFrame:
    counts = comments.groupBy("user_id").agg(F.count("*").alias("n_comments"))
    kept = counts.filter(F.col("n_comments") >= cfg.min_user_comments)
    return kept.select(
        "user_id",
        (F.row_number().over(Window.orderBy("user_id")) - 1).cast("int").alias("user_idx"),
        "n_comments",
        (hash_unit(cfg.seed, "cold", "user_id") < cfg.cold_user_fraction).alias("is_cold"),
    )


def build_frames(spark: SparkSession, lake: Lakehouse, cfg: DatasetConfig) -> DataFrame:
    """Shots that have a key frame image (uniform slices of videos without a file have none to show)."""
    shots = (delta_io.read_table(spark, lake, SILVER_SHOTS.name)
             .filter(F.col("keyframe_jpeg").isNotNull()).select("video_id", "shot_idx"))
    with_features = shots.select("video_id", "shot_idx", F.lit(False).alias("has_features"))
    if delta_io.table_exists(spark, lake, SILVER_FRAME_FEATURES.name):
        featured = (delta_io.read_table(spark, lake, SILVER_FRAME_FEATURES.name)
                    .filter(F.col("backbone") == cfg.backbone).select("video_id", "shot_idx")
                    .withColumn("has_features", F.lit(True)))
        with_features = shots.join(featured, ["video_id", "shot_idx"], "left").fillna({"has_features": False})
    return with_features.select(
        "video_id", "shot_idx",
        (F.row_number().over(Window.orderBy("video_id", "shot_idx")) - 1).cast("int").alias("frame_idx"),
        (F.dense_rank().over(Window.orderBy("video_id")) - 1).cast("int").alias("item_idx"),
        "has_features",
    )


def commented_frames(comments: DataFrame, users: DataFrame, frames: DataFrame, cfg: DatasetConfig) -> DataFrame:
    """One row per (user, key frame) the user commented on: label, comment count, the comments' words in time
    order (capped at max_tokens), and the split."""
    words = F.struct("video_time_s", "comment_id", F.coalesce("token_ids", F.array().cast("array<int>")).alias("ids"))
    per_frame = (
        comments.join(users.select("user_id", "is_cold"), "user_id")
        .join(frames.select("video_id", "shot_idx"), ["video_id", "shot_idx"], "left_semi")
        .groupBy("user_id", "video_id", "shot_idx")
        .agg(
            F.count("*").cast("int").alias("n_comments"),
            F.sum(F.col("polarity")).alias("n_positive"),
            F.array_sort(F.collect_list(words)).alias("_words"),
            F.first("is_cold").alias("is_cold"),
        )
        .withColumn("label", (2 * F.col("n_positive") >= F.col("n_comments")).cast("int"))
        .withColumn("kind", F.when(F.col("label") == 1, "positive").otherwise("negative_comment"))
        .withColumn("token_ids", F.slice(F.flatten(F.transform("_words", lambda w: w["ids"])), 1, cfg.max_tokens))
    )
    by_user = Window.partitionBy("user_id")
    ranked = (
        per_frame
        .withColumn("_draw", hash_unit(cfg.seed, "split", "user_id", "video_id", "shot_idx"))
        .withColumn("_n_pos", F.sum("label").over(by_user))
        .withColumn("_pos_rank", F.row_number().over(by_user.orderBy(F.desc("label"), "_draw")))
    )
    n_test = F.round(F.col("_n_pos") * cfg.test_fraction)
    split = (F.when(F.col("is_cold"), "cold")
             .when((F.col("label") == 1) & (F.col("_pos_rank") <= n_test), "test")
             .otherwise("train"))
    return ranked.withColumn("split", split).select(
        "user_id", "video_id", "shot_idx", "label", "kind", "n_comments", "token_ids", "split")


def sampled_negatives(commented: DataFrame, frames: DataFrame, cfg: DatasetConfig) -> DataFrame:
    """k_neg never-commented frames per training positive, drawn by hash.

    A negative should be a frame the user saw and passed over. Scope "watched" draws it from the videos the user
    liked a frame in: ranking one video's key frames for its viewer is the task, and frames of videos the user never
    opened teach mostly which videos they open. (The KFRCI paper drew uniformly, but over 11 movies that most of its
    users had commented on, which comes to much the same.) A user who commented on nearly every frame of a short
    video is topped up from the whole catalogue. Scope "all" draws uniformly over every key frame.

    Under "watched" every frame of a video the user has a training positive in is a candidate, and each positive
    proposes 2·k_neg catalogue frames as top-ups; under "all" each positive proposes 4·k_neg catalogue frames.
    Candidates the user commented on, or proposed twice, are dropped, and each user keeps k_neg × (training
    positives) of the rest: own-video frames first, then by draw. With far more frames than any user comments on,
    a catalogue shortfall needs most proposals to collide, which does not happen in practice.
    """
    n_frames = frames.count()
    if n_frames == 0:
        return commented.limit(0).select("user_id", "video_id", "shot_idx")
    positives = commented.filter((F.col("split") == "train") & (F.col("label") == 1))

    def catalogue(n: int) -> DataFrame:
        draws = F.explode(F.sequence(F.lit(0), F.lit(n - 1))).alias("_j")
        return positives.select("user_id", "video_id", "shot_idx", draws).select(
            "user_id", F.pmod(F.xxhash64(F.lit(cfg.seed), F.lit("neg"), "user_id", "video_id", "shot_idx", "_j"),
                              F.lit(n_frames)).cast("int").alias("frame_idx"), F.lit(1).alias("_scope"))

    if cfg.negative_scope == "all":
        proposed = catalogue(4 * cfg.k_neg)
    else:
        spans = frames.groupBy("video_id").agg(F.min("frame_idx").alias("_first"), F.count("*").alias("_n"))
        own_video = (
            positives.select("user_id", "video_id").distinct().join(spans, "video_id")
            .select("user_id", F.explode(F.sequence("_first", F.col("_first") + F.col("_n") - 1)).alias("frame_idx"),
                    F.lit(0).alias("_scope")))
        proposed = own_video.unionByName(catalogue(2 * cfg.k_neg))
    proposals = (
        proposed.groupBy("user_id", "frame_idx").agg(F.min("_scope").alias("_scope"))
        .join(frames.select("frame_idx", "video_id", "shot_idx"), "frame_idx")
        .join(commented.select("user_id", "video_id", "shot_idx"), ["user_id", "video_id", "shot_idx"], "left_anti")
    )
    wanted = positives.groupBy("user_id").agg((F.count("*") * cfg.k_neg).alias("_wanted"))
    by_user = Window.partitionBy("user_id").orderBy("_scope", "_draw", "video_id", "shot_idx")
    return (
        proposals.join(wanted, "user_id")
        .withColumn("_draw", hash_unit(cfg.seed, "neg-keep", "user_id", "video_id", "shot_idx"))
        .withColumn("_rank", F.row_number().over(by_user))
        .filter(F.col("_rank") <= F.col("_wanted"))
        .select("user_id", "video_id", "shot_idx")
    )


def item_interactions(comments: DataFrame, users: DataFrame, cfg: DatasetConfig) -> DataFrame:
    per_item = (comments.join(users.select("user_id"), "user_id")
                .groupBy("user_id", "video_id").agg(F.count("*").alias("n_comments")))
    by_user = Window.partitionBy("user_id")
    ranked = (per_item
              .withColumn("_n", F.count("*").over(by_user))
              .withColumn("_rank", F.row_number().over(
                  by_user.orderBy(hash_unit(cfg.seed, "item-test", "user_id", "video_id"), "video_id"))))
    split = F.when((F.col("_n") >= 2) & (F.col("_rank") == 1), "test").otherwise("train")
    return ranked.select("user_id", "video_id", "n_comments", split.alias("split"))


def build_dataset(spark: SparkSession, lake: Lakehouse, cfg: DatasetConfig, run: JobRun) -> DatasetSummary:
    for name in (SILVER_TSC_ALIGNED.name, SILVER_TSC_TOKENS.name, SILVER_SHOTS.name):
        if not delta_io.table_exists(spark, lake, name):
            raise ConfigError(f"kfr dataset needs {name}: run the stages before it first (see kfr --help)")
    for name in (SILVER_TSC_ALIGNED.name, SILVER_TSC_TOKENS.name, SILVER_SHOTS.name, SILVER_FRAME_FEATURES.name):
        run.read(name, delta_io.current_version(spark, lake, name))

    comments = usable_comments(spark, lake).persist()
    try:
        users = build_users(comments, cfg).persist()
        frames = build_frames(spark, lake, cfg).persist()
        commented = commented_frames(comments, users, frames, cfg).persist()
        negatives = sampled_negatives(commented, frames, cfg).select(
            "user_id", "video_id", "shot_idx", F.lit(0).alias("label"), F.lit("sampled").alias("kind"),
            F.lit(0).alias("n_comments"), F.lit(None).cast("array<int>").alias("token_ids"),
            F.lit("train").alias("split"))
        interactions = commented.unionByName(negatives).withColumn("run_id", F.lit(run.run_id))
        items = item_interactions(comments, users, cfg)

        changed = 0
        for spec_, df in ((GOLD_USERS, users), (GOLD_FRAMES, frames), (GOLD_INTERACTIONS, interactions),
                          (GOLD_ITEM_INTERACTIONS, items)):
            written = delta_io.merge_sync(spark, lake, spec_.name, df.withColumn("run_id", F.lit(run.run_id)))
            run.wrote(spec_.name, written.version)
            changed += written.rows_inserted + written.rows_updated + written.rows_deleted
            log.info("dataset: %s +%d ~%d -%d", spec_.name, written.rows_inserted, written.rows_updated,
                     written.rows_deleted)

        gold = delta_io.read_table(spark, lake, GOLD_INTERACTIONS.name)
        by_split = {r["split"]: int(r["n"]) for r in gold.groupBy("split").agg(F.count("*").alias("n")).collect()}
        kinds = {r["kind"]: int(r["n"]) for r in gold.groupBy("kind").agg(F.count("*").alias("n")).collect()}
        user_counts = delta_io.read_table(spark, lake, GOLD_USERS.name).agg(
            F.count("*").alias("n"), F.sum(F.col("is_cold").cast("int")).alias("cold")).first()
        summary = DatasetSummary(
            users=int(user_counts["n"]), cold_users=int(user_counts["cold"] or 0),
            frames=int(delta_io.read_table(spark, lake, GOLD_FRAMES.name).count()),
            interactions_by_split=dict(sorted(by_split.items())),
            positives=kinds.get("positive", 0), sampled_negatives=kinds.get("sampled", 0),
            item_interactions=int(delta_io.read_table(spark, lake, GOLD_ITEM_INTERACTIONS.name).count()),
            changed_rows=changed,
        )
    finally:
        comments.unpersist()
    run.rows_in = summary.users
    run.rows_out = sum(summary.interactions_by_split.values())
    run.metrics.update({f"interactions.{k}": v for k, v in summary.interactions_by_split.items()})
    run.metrics.update({"users": summary.users, "cold_users": summary.cold_users, "frames": summary.frames,
                        "sampled_negatives": summary.sampled_negatives, "changed_rows": changed})
    return summary


def add_arguments(parser) -> None:
    parser.add_argument("--seed", type=int, help="sampling seed (default: dataset.seed)")


def run_job(args, config: KfrConfig) -> int:
    from kfr_spark.ledger import record_job_run
    from kfr_spark.session import build_session

    cfg = config.dataset if args.seed is None else config.dataset.model_copy(update={"seed": args.seed})
    spark = build_session(config, "kfr-dataset")
    lake = Lakehouse(config.lakehouse.root)
    with record_job_run(spark, lake, STAGE, config, {"seed": cfg.seed}) as run:
        s = build_dataset(spark, lake, cfg, run)
    splits = ", ".join(f"{k}={v:,}" for k, v in s.interactions_by_split.items()) or "none"
    print(f"dataset: {s.users:,} users ({s.cold_users:,} cold), {s.frames:,} key frames → gold.interactions "
          f"({splits}; {s.positives:,} positives, {s.sampled_negatives:,} sampled negatives), "
          f"{s.item_interactions:,} user x video rows; {s.changed_rows:,} rows changed [run {run.run_id}]")
    return 0
