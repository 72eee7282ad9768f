"""Tokenize: `bronze.tsc` (or `silver.tsc_aligned` once it exists) → `silver.tsc_tokens` + `silver.vocabulary`.

Each comment is normalized, flagged as noise or not, tokenized with Jieba and scored for sentiment by the pure
functions of `kfr_spark.text`, inside `mapInArrow`. The driver reads the `conf/text/` resources once and ships
their contents with the task; every Python worker builds one `TextProcessor` (Jieba's dictionary loaded from
its on-disk cache) on first use and keeps it for every later batch and task (worker reuse is on).

Token ids are looked up in the JVM (`kfr_spark.jvm_udfs.TokenIdsUdf`, the vocabulary broadcast) when the kfr-udfs
jar is on the classpath, so tokens do not cross to Python a second time; else in Python (`text.token_ids_in`).

Vocabulary (`silver.vocabulary`): tokens of non-noise comments counted with a Spark aggregation; tokens seen at
least `text.vocab_min_count` times, most frequent first, ties by token (code point order), get ids 2, 3, … up
to `text.vocab_max_size` ids in all. Id 0 is padding (`<pad>`), id 1 the unknown token (`<unk>`, its count the
occurrences left out); both are rows of the table. Only the top list (bounded by vocab_max_size) reaches the
driver. The same data gives the same ids on every run.

Reruns and increments:
* default (incremental): only comments whose key is not in silver.tsc_tokens yet (left anti join) are
  processed; they are mapped with the current vocabulary (unseen tokens → 1). The vocabulary and the ids of
  rows already written do not change, so token ids stay comparable across nights. On the very first run (no
  vocabulary yet) the vocabulary is built from that run's comments.
* `--full`: every comment is reprocessed, the vocabulary is rebuilt from all of them, and rows whose tokens,
  ids, flags or scores changed are updated (MERGE upsert on the comment key; unchanged rows are not touched, so
  a rerun on the same data changes no row). Run it after changing `conf/text/` or the vocabulary settings,
  and periodically so that new words get ids; models trained on token ids must be retrained after it.
A comment that fails processing becomes an `ops.stage_rejects` row (reason `tokenize_failed`) and is retried
by the next incremental run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DoubleType,
    IntegerType,
    StringType,
    StructField,
    StructType,
)

from kfr_spark import delta_io, jvm_udfs
from kfr_spark.catalog import (
    BRONZE_TSC,
    OPS_STAGE_REJECTS,
    SILVER_TSC_ALIGNED,
    SILVER_TSC_TOKENS,
    SILVER_VOCABULARY,
    Lakehouse,
    arrow_schema,
)
from kfr_spark.config import ConfigError, KfrConfig, TextConfig
from kfr_spark.ledger import JobRun
from kfr_spark.text import (
    FIRST_TOKEN_ID,
    PAD_ID,
    PAD_TOKEN,
    UNK_ID,
    UNK_TOKEN,
    TextResources,
    load_resources,
)

log = logging.getLogger(__name__)

STAGE = "tokenize"
KEYS = list(SILVER_TSC_TOKENS.keys)
INPUT_COLUMNS = ["source", "video_id", "comment_id", "user_id", "text", "mode", "is_special", "video_time_s"]

# What the Python step emits: a silver.tsc_tokens row, or (error set) a comment that could not be processed.
PROCESSED_SCHEMA = StructType(
    [
        StructField("source", StringType(), False),
        StructField("video_id", StringType(), False),
        StructField("comment_id", StringType(), False),
        StructField("user_id", StringType(), True),
        StructField("text_norm", StringType(), True),
        StructField("tokens", ArrayType(StringType(), False), True),
        StructField("token_ids", ArrayType(IntegerType(), False), True),
        StructField("is_noise", BooleanType(), False),
        StructField("noise_reason", StringType(), True),
        StructField("truncated", BooleanType(), False),
        StructField("polarity", IntegerType(), True),
        StructField("sentiment_score", DoubleType(), True),
        StructField("error", StringType(), True),
    ]
)


@dataclass(frozen=True)
class TokenizeSummary:
    source_table: str
    full: bool
    comments: int
    written: int
    updated: int
    rejected: int
    noise_by_reason: dict[str, int]
    negative: int
    vocabulary_size: int
    vocabulary_rebuilt: bool
    metrics: dict[str, float] = field(default_factory=dict)


def sentiment_model_name(res: TextResources) -> str:
    """The method and a hash of what it was given: a changed lexicon shows up in the rows it scored."""
    import hashlib

    if res.sentiment == "snownlp":
        return "snownlp"
    payload = repr((res.sentiment, res.lexicon if res.sentiment != "naive_bayes" else (), res.sentiment_threshold,
                    res.nb_model if res.sentiment != "lexicon" else None,
                    res.nb_min_confidence if res.sentiment == "hybrid" else None))
    return f"{res.sentiment}@{hashlib.sha256(payload.encode()).hexdigest()[:8]}"


# --------------------------------------------------------------------------------------------------------------
# the Python step


OUTPUT_VALUES = ("text_norm", "tokens", "token_ids", "is_noise", "noise_reason", "truncated", "polarity",
                  "sentiment_score")


def process_partition(res: TextResources, vocabulary=None):
    """The mapInArrow function: INPUT_COLUMNS record batches → PROCESSED_SCHEMA record batches. `vocabulary` is
    a broadcast of {token: id} (token_ids filled) or None (token_ids left null for a later pass).

    Columns go in and out as Arrow arrays built from plain lists, never through pandas: pandas' object columns
    and per-value null checks cost the workers ~5 µs a comment (measured at 2M), an eighth of the work itself."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from kfr_spark.text import processor_for

        proc = processor_for(res)  # built once per Python worker, reused by every batch and task
        vocab = vocabulary.value if vocabulary is not None else None
        schema = arrow_schema(PROCESSED_SCHEMA)
        failed = (None, None, None, True, None, False, None, None)
        for batch in batches:
            texts, modes, specials, times = (batch.column(c).to_pylist()
                                             for c in ("text", "mode", "is_special", "video_time_s"))
            values, errors = [], []
            for text, mode, is_special, video_time_s in zip(texts, modes, specials, times):
                try:
                    p = proc.process(text if isinstance(text, str) else None, mode, bool(is_special), video_time_s)
                    values.append((p.text_norm, p.tokens,
                                   [vocab.get(t, UNK_ID) for t in p.tokens] if vocab is not None else None,
                                   p.is_noise, p.noise_reason, p.truncated, p.polarity, p.sentiment_score))
                    errors.append(None)
                except Exception as exc:  # noqa: BLE001 - one bad comment must not kill the batch
                    values.append(failed)
                    errors.append(f"{type(exc).__name__}: {exc}"[:500])
            columns = dict(zip(OUTPUT_VALUES, zip(*values))) if values else {k: () for k in OUTPUT_VALUES}
            arrays = []
            for f in schema:
                if f.name in ("source", "video_id", "comment_id", "user_id"):
                    arrays.append(batch.column(f.name).cast(f.type))
                elif f.name == "error":
                    arrays.append(pa.array(errors, f.type))
                else:
                    arrays.append(pa.array(columns[f.name], f.type))
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)

    return run


def token_ids_column(spark: SparkSession, vocab: dict[str, int]):
    """A pandas UDF mapping `tokens` to ids through a broadcast of the (bounded) vocabulary.

    A column UDF, not a mapInArrow over whole rows: only the tokens cross to Python and back. The whole-row pass
    saved the workers 6 CPU-s per million comments and cost the JVM 11 (measured at 1–2M)."""
    from pyspark.sql.functions import pandas_udf

    broadcast = spark.sparkContext.broadcast(vocab)

    @pandas_udf(ArrayType(IntegerType(), False))
    def to_ids(tokens: pd.Series) -> pd.Series:
        table = broadcast.value
        return pd.Series([None if t is None else [table.get(x, UNK_ID) for x in t] for t in tokens])

    return to_ids, broadcast


def tokens_rows(processed: DataFrame, model_name: str, run_id: str) -> DataFrame:
    """The silver.tsc_tokens rows of processed comments (PROCESSED_SCHEMA): failed ones left out, lineage added."""
    return processed.filter(F.col("error").isNull()).select(
        *[c for c in PROCESSED_SCHEMA.fieldNames() if c != "error"],
        F.lit(model_name).alias("sentiment_model"),
        F.lit(run_id).alias("run_id"),
    )


def ids_in_jvm(spark: SparkSession, cfg: TextConfig) -> bool:
    """Where tokens become ids: the JVM when asked (`jvm`) or when its UDF is there (`auto`), else Python."""
    if cfg.token_ids_in == "python":
        return False
    if jvm_udfs.loaded(spark):
        return True
    if cfg.token_ids_in == "jvm":
        raise ConfigError(f"text.token_ids_in: jvm, but {jvm_udfs.TOKEN_IDS_CLASS} is not on the classpath: build "
                          "it with `python -m kfr_spark.jvm_udfs build` and add the jar to spark.jars (or use auto)")
    log.info("tokenize: the kfr-udfs jar is not on the classpath: token ids are looked up in Python")
    return False


class _TokenIds:
    """The `tokens` → `token_ids` column for a vocabulary, in the JVM or as a pandas UDF; `release()` frees its
    broadcast."""

    def __init__(self, spark: SparkSession, vocab: dict[str, int], in_jvm: bool) -> None:
        self.in_jvm = in_jvm
        if in_jvm:
            self._jvm = jvm_udfs.TokenIdsUdf(spark, vocab, UNK_ID)
            self.column = self._jvm.column("tokens")
        else:
            to_ids, self._broadcast = token_ids_column(spark, vocab)
            self.column = to_ids("tokens")

    def release(self) -> None:
        if self.in_jvm:
            self._jvm.unpersist()
        else:
            self._broadcast.unpersist()


# --------------------------------------------------------------------------------------------------------------
# the job


def source_table(spark: SparkSession, lake: Lakehouse, choice: str = "auto") -> str:
    if choice == "bronze":
        return BRONZE_TSC.name
    if choice == "aligned" or (choice == "auto" and delta_io.table_exists(spark, lake, SILVER_TSC_ALIGNED.name)):
        return SILVER_TSC_ALIGNED.name
    return BRONZE_TSC.name


SPREAD_MIN_BYTES = 4 * 1024 * 1024  # below this (≈40k comments) one core is done before a shuffle would be


def _spread(spark: SparkSession, df: DataFrame, source_files) -> DataFrame:
    """Enough partitions for every core: tokenization is CPU-bound Python. A table of fewer (large) files than
    cores reads as too few partitions; then, and only for inputs worth it, shuffle to 2 × cores."""
    cores = spark.sparkContext.defaultParallelism
    files, size = source_files()
    if files < cores and size >= SPREAD_MIN_BYTES:
        return df.repartition(2 * cores, *KEYS)
    return df


def _table_files(spark: SparkSession, lake: Lakehouse, name: str) -> tuple[int, int]:
    """(files, bytes) of a Delta table's current snapshot, from its metadata."""
    from delta.tables import DeltaTable

    row = DeltaTable.forPath(spark, lake.path(name)).detail().select("numFiles", "sizeInBytes").first()
    return int(row["numFiles"] or 0), int(row["sizeInBytes"] or 0)


def read_vocabulary(spark: SparkSession, lake: Lakehouse) -> dict[str, int] | None:
    if not delta_io.table_exists(spark, lake, SILVER_VOCABULARY.name):
        return None
    rows = delta_io.read_table(spark, lake, SILVER_VOCABULARY.name).select("token", "token_id").collect()
    vocab = {r["token"]: int(r["token_id"]) for r in rows if r["token_id"] >= FIRST_TOKEN_ID}
    return vocab if rows else None


def build_vocabulary(processed: DataFrame, cfg: TextConfig) -> tuple[list[tuple[str, int, int]], float]:
    """[(token, id, count)] with <pad> and <unk> first, and the share of token occurrences left unknown.

    Counting is a Spark aggregation; only the top `vocab_max_size - 2` tokens are collected."""
    occurrences = (
        processed.filter(~F.col("is_noise") & F.col("error").isNull())
        .select(F.explode("tokens").alias("token"))
        .groupBy("token")
        .agg(F.count(F.lit(1)).alias("count"))
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    try:
        total = occurrences.agg(F.coalesce(F.sum("count"), F.lit(0)).alias("n")).first()["n"]
        top = (
            occurrences.filter(F.col("count") >= cfg.vocab_min_count)
            .orderBy(F.desc("count"), F.asc("token"))
            .limit(cfg.vocab_max_size - FIRST_TOKEN_ID)
            .collect()
        )
    finally:
        occurrences.unpersist()
    # Spark orders strings by their UTF-8 bytes, which is code point order: the same as Python's sort.
    top_sorted = sorted(((r["token"], int(r["count"])) for r in top), key=lambda tc: (-tc[1], tc[0]))
    kept = sum(c for _, c in top_sorted)
    rows = [(PAD_TOKEN, PAD_ID, 0), (UNK_TOKEN, UNK_ID, int(total) - kept)]
    rows += [(token, FIRST_TOKEN_ID + i, count) for i, (token, count) in enumerate(top_sorted)]
    return rows, (int(total) - kept) / total if total else 0.0


def write_vocabulary(spark: SparkSession, lake: Lakehouse, rows: list[tuple[str, int, int]], run_id: str):
    """Replace the vocabulary: upsert every row, delete tokens no longer in it; unchanged rows are untouched."""
    frame = spark.createDataFrame(
        [(t, i, c, run_id) for t, i, c in rows], schema=SILVER_VOCABULARY.schema
    )
    return delta_io.merge_sync(spark, lake, SILVER_VOCABULARY.name, frame).version


def _lap(run: JobRun, step: str, since: float) -> float:
    now = time.perf_counter()
    run.metrics[f"seconds.{step}"] = round(now - since, 2)
    log.info("tokenize: %s took %.1fs", step, now - since)
    return now


def tokenize_comments(spark: SparkSession, lake: Lakehouse, cfg: TextConfig, run: JobRun, full: bool = False,
                      source_choice: str = "auto") -> TokenizeSummary:
    res = load_resources(cfg)
    model_name = sentiment_model_name(res)
    run.params["text_fingerprint"] = res.fingerprint()
    run.params["sentiment_model"] = model_name
    source_name = source_table(spark, lake, source_choice)
    if not delta_io.table_exists(spark, lake, source_name):
        raise FileNotFoundError(f"{source_name} does not exist yet: run `kfr ingest` first")
    run.read(source_name, delta_io.current_version(spark, lake, source_name))
    comments = delta_io.read_table(spark, lake, source_name).select(*INPUT_COLUMNS)
    have_tokens = delta_io.table_exists(spark, lake, SILVER_TSC_TOKENS.name)
    if have_tokens:
        run.read(SILVER_TSC_TOKENS.name, delta_io.current_version(spark, lake, SILVER_TSC_TOKENS.name))
        if not full:
            done = delta_io.read_table(spark, lake, SILVER_TSC_TOKENS.name).select(*KEYS)
            comments = comments.join(done, KEYS, "left_anti")

    if have_tokens and not full and comments.isEmpty():  # the usual no-op rerun: stop before any Python
        log.info("tokenize: no new comments in %s", source_name)
        return TokenizeSummary(source_name, full, 0, 0, 0, 0, {}, 0, 0, False)

    vocab = None if full else read_vocabulary(spark, lake)
    rebuild = vocab is None
    if not rebuild:
        run.read(SILVER_VOCABULARY.name, delta_io.current_version(spark, lake, SILVER_VOCABULARY.name))
    in_jvm = ids_in_jvm(spark, cfg)
    run.params["token_ids_in"] = "jvm" if in_jvm else "python"
    # Without the JVM lookup, a known vocabulary is applied in the Python step itself (no second pass).
    vocab_bc = spark.sparkContext.broadcast(vocab) if vocab is not None and not in_jvm else None
    processed = (
        _spread(spark, comments, lambda: _table_files(spark, lake, source_name))
        .mapInArrow(process_partition(res, vocab_bc), schema=PROCESSED_SCHEMA)
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    to_unpersist = [processed]
    broadcasts = [b for b in (vocab_bc,) if b is not None]
    ids: _TokenIds | None = None
    try:
        clock = time.perf_counter()
        stats = processed.groupBy(
            F.col("error").isNotNull().alias("failed"), "noise_reason", "polarity", "truncated"
        ).agg(F.count(F.lit(1)).alias("n")).collect()
        n_comments = sum(int(r["n"]) for r in stats)
        clock = _lap(run, "process", clock)
        if n_comments == 0:
            log.info("tokenize: no new comments in %s", source_name)
            size = len(vocab) + FIRST_TOKEN_ID if vocab is not None else 0
            return TokenizeSummary(source_name, full, 0, 0, 0, 0, {}, 0, size, False)

        n_failed = sum(int(r["n"]) for r in stats if r["failed"])
        vocab_size = (len(vocab) + FIRST_TOKEN_ID) if vocab is not None else 0
        final = processed
        if rebuild:
            vocab_rows, unknown_share = build_vocabulary(processed, cfg)
            version = write_vocabulary(spark, lake, vocab_rows, run.run_id)
            run.wrote(SILVER_VOCABULARY.name, version)
            clock = _lap(run, "vocabulary", clock)
            run.metrics["vocab_unknown_share"] = round(unknown_share, 6)
            vocab_size = len(vocab_rows)
            vocab = {t: i for t, i, _ in vocab_rows if i >= FIRST_TOKEN_ID}
        if rebuild or in_jvm:
            ids = _TokenIds(spark, vocab, in_jvm)
            final = processed.withColumn("token_ids", ids.column)
            if not in_jvm and (have_tokens or n_failed):  # read twice (MERGE scans its source twice): keep it
                final = final.persist(StorageLevel.MEMORY_AND_DISK)
                to_unpersist.append(final)
        write = delta_io.merge_upsert(spark, lake, SILVER_TSC_TOKENS.name, tokens_rows(final, model_name, run.run_id))  # first run: a plain append
        run.wrote(SILVER_TSC_TOKENS.name, write.version)
        clock = _lap(run, "write", clock)

        if n_failed:
            rejects = final.filter(F.col("error").isNotNull()).select(
                F.lit(STAGE).alias("stage"),
                F.concat_ws("/", *KEYS).alias("entity_key"),
                F.lit("tokenize_failed").alias("reason"),
                F.col("error").alias("detail"),
                F.lit(run.run_id).alias("run_id"),
            )
            rejects_write = delta_io.merge_upsert(spark, lake, OPS_STAGE_REJECTS.name, rejects)
            run.wrote(OPS_STAGE_REJECTS.name, rejects_write.version)
    finally:
        for frame in to_unpersist:
            frame.unpersist()
        for b in broadcasts:
            b.unpersist()
        if ids is not None:
            ids.release()

    noise: dict[str, int] = {}
    negative = truncated = 0
    for r in stats:
        if r["failed"]:
            continue
        if r["noise_reason"]:
            noise[r["noise_reason"]] = noise.get(r["noise_reason"], 0) + int(r["n"])
        if r["polarity"] == 0 and not r["noise_reason"]:
            negative += int(r["n"])
        if r["truncated"]:
            truncated += int(r["n"])
    run.rows_in = n_comments
    run.rows_out = write.rows_inserted + write.rows_updated
    run.rows_rejected = n_failed
    run.metrics.update({f"noise.{k}": v for k, v in noise.items()})
    run.metrics.update({"negative": negative, "truncated": truncated, "vocabulary_size": vocab_size,
                        "vocabulary_rebuilt": float(rebuild)})
    return TokenizeSummary(
        source_table=source_name, full=full, comments=n_comments, written=write.rows_inserted,
        updated=write.rows_updated, rejected=n_failed, noise_by_reason=dict(sorted(noise.items())),
        negative=negative, vocabulary_size=vocab_size, vocabulary_rebuilt=rebuild, metrics=dict(run.metrics),
    )


def add_arguments(parser) -> None:
    parser.add_argument("--full", action="store_true",
                        help="reprocess every comment and rebuild the vocabulary (token ids may change)")
    parser.add_argument("--source", choices=("auto", "bronze", "aligned"), default="auto",
                        help="input table: silver.tsc_aligned when it exists (auto), or the one named")


def run_job(args, config: KfrConfig) -> int:
    from kfr_spark.ledger import record_job_run
    from kfr_spark.session import build_session

    spark = build_session(config, "kfr-tokenize")
    lake = Lakehouse(config.lakehouse.root)
    params = {"full": bool(args.full), "source": args.source, "tokenizer": config.text.tokenizer,
              "sentiment": config.text.sentiment}
    with record_job_run(spark, lake, STAGE, config, params) as run:
        summary = tokenize_comments(spark, lake, config.text, run, full=args.full, source_choice=args.source)
    noise = ", ".join(f"{k}={v:,}" for k, v in summary.noise_by_reason.items()) or "none"
    vocab = (f"vocabulary rebuilt: {summary.vocabulary_size:,} ids" if summary.vocabulary_rebuilt
             else "vocabulary unchanged")
    print(
        f"tokenize{' --full' if summary.full else ''}: {summary.comments:,} comments from {summary.source_table} → "
        f"{summary.written:,} new and {summary.updated:,} changed rows in silver.tsc_tokens; noise: {noise}; "
        f"{summary.negative:,} negative; {summary.rejected:,} rejected; {vocab} [run {run.run_id}]"
    )
    return 0
