"""The table catalog: every Delta table's name, schema, partitioning and natural key, in one place.

Tables are Delta folders under the lakehouse root, `<root>/<layer>/<table>`, addressed by their dotted name
(`bronze.tsc`). The natural key is what makes reruns exact: writers MERGE on it (or replace whole partitions),
so running a job twice on the same input leaves the table as it was.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DateType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)


@functools.cache
def arrow_schema(schema: StructType):
    """The Arrow schema of `schema`: what a mapInArrow function must yield for it. Converted once per process."""
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(schema)


@dataclass(frozen=True)
class TableSpec:
    name: str  # "layer.table"
    schema: StructType
    keys: tuple[str, ...]
    partition_by: tuple[str, ...] = ()
    description: str = ""
    # Columns that describe how a row was written (run ids, timestamps) rather than what it says; tests
    # comparing two runs' outputs ignore them.
    lineage_columns: tuple[str, ...] = field(default=())
    # The columns Delta keeps min/max statistics on for data skipping (`delta.dataSkippingStatsColumns`); empty
    # means Delta's default, the first 32. Comment tables name theirs: statistics on free text skip nothing and
    # cost a fifth of the write.
    stats_columns: tuple[str, ...] = ()

    @property
    def layer(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def short_name(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def view_name(self) -> str:
        """The temp view name a SQL user can query (`bronze_tsc`)."""
        return self.name.replace(".", "_")

    def __post_init__(self) -> None:
        columns = set(self.schema.fieldNames())
        missing = [c for c in (*self.keys, *self.partition_by, *self.stats_columns) if c not in columns]
        if missing:
            raise ValueError(f"{self.name}: key/partition/stats columns not in schema: {missing}")
        by_name = {f.name: f.dataType for f in self.schema.fields}
        unskippable = [c for c in self.stats_columns
                       if isinstance(by_name[c], (BooleanType, BinaryType, ArrayType, MapType, StructType))]
        if unskippable:  # Delta refuses these when the table is created; say so when the catalog is imported
            raise ValueError(f"{self.name}: Delta keeps no statistics on columns {unskippable}")


def _schema(*fields: tuple[str, object, bool]) -> StructType:
    return StructType([StructField(name, dtype, nullable) for name, dtype, nullable in fields])


BRONZE_TSC = TableSpec(
    name="bronze.tsc",
    description="One time-synchronized comment as ingested, HTML-unescaped but otherwise untouched.",
    schema=_schema(
        ("source", StringType(), False),
        ("video_id", StringType(), False),
        ("comment_id", StringType(), False),
        ("user_id", StringType(), True),
        ("video_time_s", DoubleType(), False),
        ("posted_at", TimestampType(), True),
        ("mode", IntegerType(), False),
        ("text", StringType(), False),
        ("font_size", IntegerType(), True),
        ("color", LongType(), True),
        ("pool", IntegerType(), True),
        ("is_special", BooleanType(), False),
        ("format", StringType(), False),
        ("source_file", StringType(), False),
        ("record_no", IntegerType(), False),
        ("ingest_run_id", StringType(), False),
        ("ingest_date", DateType(), False),
    ),
    keys=("source", "video_id", "comment_id"),
    partition_by=("ingest_date",),
    lineage_columns=("ingest_run_id", "ingest_date"),
    stats_columns=("source", "video_id", "comment_id", "user_id", "video_time_s", "posted_at", "mode"),
)

BRONZE_TSC_REJECTS = TableSpec(
    name="bronze.tsc_rejects",
    description="A comment record, or a whole file, that could not be ingested, with the reason.",
    schema=_schema(
        ("source_file", StringType(), False),
        ("record_no", IntegerType(), False),  # 0: the whole file
        ("reason", StringType(), False),
        ("detail", StringType(), True),
        ("raw", StringType(), True),  # truncated payload
        ("format", StringType(), True),
        ("ingest_run_id", StringType(), False),
        ("ingest_date", DateType(), False),
    ),
    keys=("source_file", "record_no"),
    partition_by=("ingest_date",),
    lineage_columns=("ingest_run_id", "ingest_date"),
)

BRONZE_VIDEOS = TableSpec(
    name="bronze.videos",
    description="One video of the catalog: its duration and frame rate, and its file if there is one.",
    schema=_schema(
        ("video_id", StringType(), False),
        ("title", StringType(), True),
        ("duration_s", DoubleType(), False),
        ("fps", DoubleType(), True),
        ("width", IntegerType(), True),
        ("height", IntegerType(), True),
        ("uri", StringType(), True),
        ("ingest_run_id", StringType(), False),
    ),
    keys=("video_id",),
    lineage_columns=("ingest_run_id",),
)

OPS_JOB_RUNS = TableSpec(
    name="ops.job_runs",
    description="The job-run ledger: one row per run of any job, with its inputs' and outputs' Delta versions.",
    schema=_schema(
        ("run_id", StringType(), False),
        ("job", StringType(), False),
        ("status", StringType(), False),  # running | succeeded | failed
        ("started_at", TimestampType(), False),
        ("finished_at", TimestampType(), True),
        ("duration_s", DoubleType(), True),
        ("config_hash", StringType(), False),
        ("params", StringType(), True),  # JSON of the job's arguments
        ("input_versions", MapType(StringType(), LongType()), True),
        ("output_versions", MapType(StringType(), LongType()), True),
        ("rows_in", LongType(), True),
        ("rows_out", LongType(), True),
        ("rows_rejected", LongType(), True),
        ("metrics", MapType(StringType(), DoubleType()), True),
        ("error", StringType(), True),
        ("spark_app_id", StringType(), True),
        ("kfr_version", StringType(), True),
    ),
    keys=("run_id",),
)

OPS_INGESTED_FILES = TableSpec(
    name="ops.ingested_files",
    description=(
        "One comment file ingest has read, as it was then (length, modification time): `kfr ingest --only-new` "
        "(the nightly) reads only files that are not here or have changed since."
    ),
    schema=_schema(
        ("path", StringType(), False),
        ("length", LongType(), False),
        ("modification_time", TimestampType(), False),
        ("ingest_run_id", StringType(), False),
    ),
    keys=("path",),
    lineage_columns=("ingest_run_id",),
)

OPS_NIGHTLY_STEPS = TableSpec(
    name="ops.nightly_steps",
    description=(
        "One step of one nightly: ran, skipped (and why) or failed, with the fingerprint of its inputs; a step whose "
        "fingerprint equals its last success's is skipped by the next nightly."
    ),
    schema=_schema(
        ("nightly_id", StringType(), False),
        ("step", StringType(), False),
        ("run_date", DateType(), False),
        ("status", StringType(), False),  # succeeded | skipped | failed
        ("fingerprint", StringType(), False),
        ("started_at", TimestampType(), False),
        ("finished_at", TimestampType(), False),
        ("seconds", DoubleType(), False),
        ("rows_in", LongType(), False),
        ("rows_out", LongType(), False),
        ("detail", StringType(), True),
    ),
    keys=("nightly_id", "step"),
)

OPS_MODEL_RUNS = TableSpec(
    name="ops.model_runs",
    description=(
        "One training of one model (its run key: model, settings and input versions): parameters, per-epoch "
        "history, the input Delta versions, the artifact, and the MLflow run that holds the same."
    ),
    schema=_schema(
        ("run_key", StringType(), False),
        ("model", StringType(), False),
        ("params", StringType(), False),  # JSON: shape, hyper-parameters, training settings
        ("history", StringType(), False),  # JSON list: one {epoch, train_loss, val_loss, [val_ndcg], seconds, examples} per epoch
        ("input_versions", MapType(StringType(), LongType()), False),
        ("best_epoch", IntegerType(), False),
        ("best_val_loss", DoubleType(), True),
        ("processes", IntegerType(), False),
        ("seconds", DoubleType(), False),
        ("model_path", StringType(), False),
        ("mlflow_run_id", StringType(), True),  # None when tracking is off or MLflow failed (the job logs why)
        ("trained_at", TimestampType(), False),  # when this run key was first recorded
        ("run_id", StringType(), False),  # the ops.job_runs run that recorded it
    ),
    keys=("run_key",),
    lineage_columns=("run_id", "trained_at"),
)

OPS_MODEL_SELECTION = TableSpec(
    name="ops.model_selection",
    description=(
        "The training each model name serves: the run key that the latest `kfr train` of the name resolved to, a "
        "found-finished rerun included, so going back to earlier settings serves their model again. Scoring, "
        "`kfr evaluate --model` and the nightly's fingerprints read it."
    ),
    schema=_schema(
        ("model", StringType(), False),
        ("run_key", StringType(), False),
        ("selected_at", TimestampType(), False),  # since when this run key is served
        ("run_id", StringType(), False),  # the ops.job_runs run that selected it
    ),
    keys=("model",),
    lineage_columns=("run_id", "selected_at"),
)

SILVER_SHOTS = TableSpec(
    name="silver.shots",
    description="One shot of a video with its key frame (JPEG), or a uniform slice where there is no file.",
    schema=_schema(
        ("video_id", StringType(), False),
        ("shot_idx", IntegerType(), False),
        ("start_s", DoubleType(), False),
        ("end_s", DoubleType(), False),
        ("start_frame", IntegerType(), True),
        ("end_frame", IntegerType(), True),  # exclusive; frames are decoded frames (VFR: not time * fps)
        ("keyframe_s", DoubleType(), True),
        ("keyframe_frame", IntegerType(), True),
        ("keyframe_jpeg", BinaryType(), True),
        ("keyframe_width", IntegerType(), True),
        ("keyframe_height", IntegerType(), True),
        ("is_uniform", BooleanType(), False),  # no video file: N uniform slices, no key frame
        ("detector", StringType(), False),
        ("params_hash", StringType(), False),
        ("run_id", StringType(), False),
    ),
    keys=("video_id", "shot_idx"),
    lineage_columns=("run_id",),
)

SILVER_TSC_ALIGNED = TableSpec(
    name="silver.tsc_aligned",
    description="One comment pinned to the shot on screen when its writer started typing.",
    schema=_schema(
        ("source", StringType(), False),
        ("video_id", StringType(), False),
        ("comment_id", StringType(), False),
        ("user_id", StringType(), True),
        ("video_time_s", DoubleType(), False),
        ("typing_delay_s", DoubleType(), False),
        ("moment_s", DoubleType(), False),  # video_time_s minus the typing delay, clamped to the video
        ("shot_idx", IntegerType(), False),
        ("mode", IntegerType(), False),
        ("is_special", BooleanType(), False),
        ("text", StringType(), False),
        ("posted_at", TimestampType(), True),
        ("run_id", StringType(), False),
    ),
    keys=("source", "video_id", "comment_id"),
    lineage_columns=("run_id",),
    stats_columns=("source", "video_id", "comment_id", "user_id", "moment_s", "shot_idx"),
)

SILVER_TSC_TOKENS = TableSpec(
    name="silver.tsc_tokens",
    description=(
        "One comment's normalized text, tokens (stop words out), token ids (silver.vocabulary; 1 = unknown), "
        "noise flag and sentiment polarity. Noise rows stay, flagged: noise_reason is special_mode, "
        "comment_art, encoded_payload, invalid_surrogates, empty, punctuation_only or greeting."
    ),
    schema=_schema(
        ("source", StringType(), False),
        ("video_id", StringType(), False),
        ("comment_id", StringType(), False),
        ("user_id", StringType(), True),
        ("text_norm", StringType(), True),
        ("tokens", ArrayType(StringType(), False), True),
        ("token_ids", ArrayType(IntegerType(), False), True),
        ("is_noise", BooleanType(), False),  # excluded from training, kept in the table
        ("noise_reason", StringType(), True),
        ("truncated", BooleanType(), False),
        ("polarity", IntegerType(), True),  # 1 positive or neutral, 0 negative (KFRCI's rule)
        ("sentiment_score", DoubleType(), True),
        ("sentiment_model", StringType(), True),
        ("run_id", StringType(), False),
    ),
    keys=("source", "video_id", "comment_id"),
    lineage_columns=("run_id",),
    stats_columns=("source", "video_id", "comment_id", "user_id", "polarity"),
)

SILVER_VOCABULARY = TableSpec(
    name="silver.vocabulary",
    description=(
        "One token of the training vocabulary: its id and count. Id 0 is <pad> (count 0), id 1 <unk> (count: "
        "the occurrences left out); ids 2.. go to non-noise tokens by frequency, ties by token."
    ),
    schema=_schema(
        ("token", StringType(), False),
        ("token_id", IntegerType(), False),
        ("count", LongType(), False),
        ("run_id", StringType(), False),
    ),
    keys=("token",),
    lineage_columns=("run_id",),
)

SILVER_FRAME_FEATURES = TableSpec(
    name="silver.frame_features",
    description="One key frame's visual feature vector from one backbone.",
    schema=_schema(
        ("video_id", StringType(), False),
        ("shot_idx", IntegerType(), False),
        ("backbone", StringType(), False),  # "efficientnet_lite0", "resnet50", "handcrafted", "<name>+pca<k>"
        ("dim", IntegerType(), False),
        ("features", ArrayType(FloatType(), False), False),
        ("params_hash", StringType(), False),  # weights file, preprocessing, normalization (and PCA version)
        ("image_sha1", StringType(), False),  # of the key frame JPEG the vector was computed from
        ("pca_version", StringType(), True),  # silver.feature_pca version for "+pca" rows, else null
        ("run_id", StringType(), False),
    ),
    keys=("video_id", "shot_idx", "backbone"),
    lineage_columns=("run_id",),
)

SILVER_FEATURE_PCA = TableSpec(
    name="silver.feature_pca",
    description="A PCA fitted on one backbone's frame features: y = (x - mean) @ components.T, versioned.",
    schema=_schema(
        ("backbone", StringType(), False),  # the source backbone of silver.frame_features
        ("pca_dim", IntegerType(), False),
        ("version", StringType(), False),  # content hash of backbone, source params, mean and components
        ("source_params_hash", StringType(), False),  # params_hash of the vectors it was fitted on
        ("input_dim", IntegerType(), False),
        ("n_samples", LongType(), False),
        ("mean", ArrayType(FloatType(), False), False),
        ("components", ArrayType(FloatType(), False), False),  # pca_dim x input_dim, row-major
        ("explained_variance_ratio", ArrayType(DoubleType(), False), False),
        ("fitted_at", TimestampType(), False),
        ("run_id", StringType(), False),
    ),
    keys=("backbone", "pca_dim", "version"),
    lineage_columns=("fitted_at", "run_id"),
)

GOLD_USERS = TableSpec(
    name="gold.users",
    description=(
        "One user kept for training (at least dataset.min_user_comments usable comments): a dense index for the "
        "models and whether the user is held out cold (no frame-level training data: JIFR's key frame test)."
    ),
    schema=_schema(
        ("user_id", StringType(), False),
        ("user_idx", IntegerType(), False),
        ("n_comments", LongType(), False),
        ("is_cold", BooleanType(), False),
        ("run_id", StringType(), False),
    ),
    keys=("user_id",),
    lineage_columns=("run_id",),
)

GOLD_FRAMES = TableSpec(
    name="gold.frames",
    description="One key frame the models can rank: a dense index (by video, then shot) and whether it has features.",
    schema=_schema(
        ("video_id", StringType(), False),
        ("shot_idx", IntegerType(), False),
        ("frame_idx", IntegerType(), False),
        ("item_idx", IntegerType(), False),  # the video's dense index (JIFR's items)
        ("has_features", BooleanType(), False),
        ("run_id", StringType(), False),
    ),
    keys=("video_id", "shot_idx"),
    lineage_columns=("run_id",),
)

GOLD_INTERACTIONS = TableSpec(
    name="gold.interactions",
    description=(
        "One user x key frame example: a commented frame (label 1 when its comments are positive or neutral, 0 when "
        "negative) or a sampled negative (label 0, no comment). split: train, test (30 % of each user's positives, "
        "KFRCI protocol) or cold (every commented frame of a cold user, never trained on)."
    ),
    schema=_schema(
        ("user_id", StringType(), False),
        ("video_id", StringType(), False),
        ("shot_idx", IntegerType(), False),
        ("label", IntegerType(), False),
        ("kind", StringType(), False),  # positive | negative_comment | sampled
        ("n_comments", IntegerType(), False),
        ("token_ids", ArrayType(IntegerType(), True), True),  # the user's comment words on the frame, capped
        ("split", StringType(), False),
        ("run_id", StringType(), False),
    ),
    keys=("user_id", "video_id", "shot_idx"),
    partition_by=("split",),
    lineage_columns=("run_id",),
)

GOLD_ITEM_INTERACTIONS = TableSpec(
    name="gold.item_interactions",
    description=(
        "One user x video: the user commented on the video (JIFR's item-level feedback). split: train, or test "
        "(one video per user with at least two, for item HR/NDCG against sampled unrated videos)."
    ),
    schema=_schema(
        ("user_id", StringType(), False),
        ("video_id", StringType(), False),
        ("n_comments", LongType(), False),
        ("split", StringType(), False),
        ("run_id", StringType(), False),
    ),
    keys=("user_id", "video_id"),
    lineage_columns=("run_id",),
)

GOLD_EVAL_USER_METRICS = TableSpec(
    name="gold.eval_user_metrics",
    description="One user's mean of one metric in one evaluation (the paired tests compare these user by user).",
    schema=_schema(
        ("eval_id", StringType(), False),
        ("model", StringType(), False),
        ("user_id", StringType(), False),
        ("metric", StringType(), False),
        ("k", IntegerType(), False),
        ("value", DoubleType(), False),
        ("queries", IntegerType(), False),
        ("run_id", StringType(), False),
    ),
    keys=("eval_id", "user_id", "metric", "k"),
    lineage_columns=("run_id",),
)

GOLD_EVAL_METRICS = TableSpec(
    name="gold.eval_metrics",
    description="One metric at one K of one evaluation: the mean over users with a 95 % normal interval.",
    schema=_schema(
        ("eval_id", StringType(), False),
        ("model", StringType(), False),
        ("metric", StringType(), False),
        ("k", IntegerType(), False),
        ("value", DoubleType(), False),
        ("ci_low", DoubleType(), True),
        ("ci_high", DoubleType(), True),
        ("n_users", IntegerType(), False),
        ("model_path", StringType(), False),
        ("run_id", StringType(), False),
    ),
    keys=("eval_id", "model", "metric", "k"),
    lineage_columns=("run_id",),
)

GOLD_USER_KEYFRAMES = TableSpec(
    name="gold.user_keyframes",
    description=(
        "The product: for one user and one candidate video on one run date, a key frame at a rank for that user. "
        "model says who ranked it (kfrci: frame-level history, jifr: item-level history only, most_popular: an "
        "unknown user); model_version is its training run key. A rerun of a date replaces exactly that date."
    ),
    schema=_schema(
        ("run_date", DateType(), False),
        ("user_id", StringType(), False),
        ("video_id", StringType(), False),
        ("rank", IntegerType(), False),  # 1 = the user's best key frame of the video
        ("shot_idx", IntegerType(), False),
        ("score", DoubleType(), False),
        ("model", StringType(), False),
        ("model_version", StringType(), False),
        ("run_id", StringType(), False),
    ),
    keys=("run_date", "user_id", "video_id", "rank"),
    partition_by=("run_date",),
    lineage_columns=("run_id",),
)

OPS_STAGE_REJECTS = TableSpec(
    name="ops.stage_rejects",
    description="Anything a stage after ingest could not process (a video, a key frame, a comment), with why.",
    schema=_schema(
        ("stage", StringType(), False),
        ("entity_key", StringType(), False),  # e.g. "video_id" or "video_id/shot_idx" or the comment key
        ("reason", StringType(), False),
        ("detail", StringType(), True),
        ("run_id", StringType(), False),
    ),
    keys=("stage", "entity_key"),
    lineage_columns=("run_id",),
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        BRONZE_TSC,
        BRONZE_TSC_REJECTS,
        BRONZE_VIDEOS,
        SILVER_SHOTS,
        SILVER_TSC_ALIGNED,
        SILVER_TSC_TOKENS,
        SILVER_VOCABULARY,
        SILVER_FRAME_FEATURES,
        SILVER_FEATURE_PCA,
        GOLD_USERS,
        GOLD_FRAMES,
        GOLD_INTERACTIONS,
        GOLD_ITEM_INTERACTIONS,
        GOLD_EVAL_USER_METRICS,
        GOLD_EVAL_METRICS,
        GOLD_USER_KEYFRAMES,
        OPS_JOB_RUNS,
        OPS_INGESTED_FILES,
        OPS_MODEL_RUNS,
        OPS_MODEL_SELECTION,
        OPS_NIGHTLY_STEPS,
        OPS_STAGE_REJECTS,
    )
}


def spec(name: str) -> TableSpec:
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; known: {', '.join(sorted(TABLES))}") from None


@dataclass(frozen=True)
class Lakehouse:
    """Resolves table names to their Delta folders under one root."""

    root: Path

    def path(self, name: str) -> str:
        table = spec(name)
        return str(Path(self.root) / table.layer / table.short_name)
