"""Ingest: comment files → `bronze.tsc` (+ `bronze.tsc_rejects`).

Files are listed and read by Spark's `binaryFile` source and parsed on the executors by the pure parsers of
`kfr_spark.tsc_formats` inside `mapInArrow`; the driver never holds comments. A file is never fatal: whatever
cannot be read becomes a reject row with a reason code. Writes are insert-only MERGEs on the natural keys, so
ingesting the same files twice changes nothing and a new file adds only its new comments.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path, PurePosixPath

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from kfr_spark import delta_io
from kfr_spark.catalog import BRONZE_TSC, BRONZE_TSC_REJECTS, OPS_INGESTED_FILES, Lakehouse, arrow_schema
from kfr_spark.config import ConfigError, IngestConfig, KfrConfig
from kfr_spark.ledger import JobRun
from kfr_spark.session import session_conf
from kfr_spark.tsc_formats import RejectReason

log = logging.getLogger(__name__)

# What the parsing step emits: one row per comment or per reject, told apart by `kind`.
PARSED_SCHEMA = StructType(
    [
        StructField("kind", StringType(), False),  # "comment" | "reject"
        StructField("source_file", StringType(), False),
        StructField("record_no", IntegerType(), False),
        StructField("format", StringType(), True),
        StructField("source", StringType(), True),
        StructField("video_id", StringType(), True),
        StructField("comment_id", StringType(), True),
        StructField("user_id", StringType(), True),
        StructField("video_time_s", DoubleType(), True),
        StructField("posted_at_unix", LongType(), True),
        StructField("mode", IntegerType(), True),
        StructField("text", StringType(), True),
        StructField("font_size", IntegerType(), True),
        StructField("color", LongType(), True),
        StructField("pool", IntegerType(), True),
        StructField("is_special", BooleanType(), True),
        StructField("reason", StringType(), True),
        StructField("detail", StringType(), True),
        StructField("raw", StringType(), True),
    ]
)

_FORMAT_SOURCE = {
    "bilibili_xml": "bilibili",
    "bilibili_archive_xml": "bilibili",
    "niconico_json": "niconico",
    "niconico_xml": "niconico",
}

# How binaryFile reads the inputs: paths are taken literally (as list_files takes them), not as glob patterns,
# so a file named "a[1].xml" or "a:b.xml" is found and read; and local files skip Hadoop's checksum layer, which
# opens a ".<name>.crc" beside each file and cannot build that name for one with a ":" in it. Either used to fail
# the whole batch (Spark's own "__globPaths__" switch; nothing in an inbox has .crc files).
_READ_OPTIONS = {
    "recursiveFileLookup": "true",
    "__globPaths__": "false",
    "fs.file.impl": "org.apache.hadoop.fs.RawLocalFileSystem",
    "fs.file.impl.disable.cache": "true",
}

# Ids end up in file paths downstream (key frame images, exports): keep them to a safe alphabet.
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


@dataclass(frozen=True)
class IngestSummary:
    files: int
    records: int
    comments_inserted: int
    rejects_inserted: int
    rejects_by_reason: dict[str, int]


def video_id_for(name: str, from_metadata: str | None, cfg: IngestConfig) -> tuple[str | None, str | None]:
    """(video_id, error): the id from the file's metadata or name, checked against the safe alphabet."""
    candidate = from_metadata if (cfg.video_id_from == "metadata" and from_metadata) else None
    if candidate is None:
        stem = PurePosixPath(name).name
        for suffix in (".gz", ".xml", ".json", ".jsonl", ".csv", ".parquet"):
            stem = stem.removesuffix(suffix)
        from kfr_spark.tsc_formats import ID_CONTROL_CHARS  # the id rule the parsers apply, for file-name ids

        if ID_CONTROL_CHARS.search(stem):  # else the pattern's "." would stop at a newline and keep only a prefix
            return None, f"file name {stem[:80]!r} has control characters"
        match = re.fullmatch(cfg.video_id_pattern, stem) or re.search(cfg.video_id_pattern, stem)
        candidate = match.group("video_id") if match else None
        if not candidate:
            return None, f"file name {stem!r} does not match video_id_pattern"
    candidate = str(candidate).strip()
    if not SAFE_ID.fullmatch(candidate):
        return None, f"video id {candidate[:80]!r} has characters outside [A-Za-z0-9_.-] or is too long"
    return candidate, None


def parse_partition(cfg: IngestConfig):
    """The mapInArrow function: binaryFile batches (path, content) → PARSED_SCHEMA record batches, one per file.

    Columns are built straight from the parser's tuples (one transpose per file), never row by row through
    pandas: at tens of millions of comments the row-wise path cost more than the parsing itself.
    """

    def parse(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from kfr_spark.tsc_formats import ParseLimits, parse_tsc_file

        limits = ParseLimits(
            max_text_chars=cfg.max_text_chars,
            max_special_chars=cfg.max_special_chars,
            max_file_bytes=cfg.max_file_bytes,
            max_video_time_s=cfg.max_video_time_s,
        )
        for batch in batches:
            paths, contents = batch.column("path").to_pylist(), batch.column("content")
            for i, path in enumerate(paths):
                parsed = parse_tsc_file(contents[i].as_py(), path, limits=limits)
                yield from _file_batches(path, parsed, cfg)

    return parse


def _batch(columns: dict[str, object], n: int) -> pa.RecordBatch:
    """A PARSED_SCHEMA batch of n rows: given columns are sequences (or one value repeated), the rest null."""
    schema = arrow_schema(PARSED_SCHEMA)
    arrays = []
    for f in schema:
        value = columns.get(f.name)
        if value is None:
            arrays.append(pa.nulls(n, f.type))
        elif isinstance(value, (list, tuple)):
            arrays.append(pa.array(value, f.type))
        else:
            arrays.append(pa.array([value] * n, f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _file_batches(path: str, parsed, cfg: IngestConfig) -> Iterator[pa.RecordBatch]:
    fmt = parsed.format
    if parsed.rejects:
        r = list(zip(*parsed.rejects))
        yield _batch({"kind": "reject", "source_file": path, "record_no": r[0], "format": fmt, "reason": r[1],
                      "detail": r[2], "raw": r[3]}, len(parsed.rejects))
    if not parsed.comments:
        return
    video_id, error = video_id_for(path, parsed.video_id, cfg)
    if video_id is None:
        yield _batch({"kind": "reject", "source_file": path, "record_no": 0, "format": fmt, "reason": "bad_video_id",
                      "detail": error, "raw": ""}, 1)
        return
    n = len(parsed.comments)
    c = list(zip(*parsed.comments))  # Comment fields, column by column
    record_nos = parsed.comment_record_nos or list(range(1, n + 1))
    if len(record_nos) != n:
        raise ValueError("comment_record_nos must have one entry per comment")
    yield _batch({
        "kind": "comment", "source_file": path, "record_no": record_nos, "format": fmt,
        "source": _FORMAT_SOURCE.get(fmt, cfg.default_source), "video_id": video_id,
        "comment_id": c[0], "video_time_s": c[1], "mode": c[2], "text": c[3], "user_id": c[4],
        "posted_at_unix": c[5], "font_size": c[6], "color": c[7], "pool": c[8], "is_special": c[9],
    }, n)


def bronze_rows(comments: DataFrame, run_id: str, day: date) -> DataFrame:
    """The bronze.tsc rows of parsed comments (PARSED_SCHEMA rows of kind "comment"), stamped with the run."""
    return comments.select(
        "source", "video_id", "comment_id", "user_id", "video_time_s",
        F.timestamp_seconds("posted_at_unix").alias("posted_at"),
        "mode", "text", "font_size", "color", "pool", "is_special", "format", "source_file", "record_no",
        F.lit(run_id).alias("ingest_run_id"), F.lit(day).alias("ingest_date"),
    )


def read_settings(total_bytes: int, cfg: IngestConfig, cores: int) -> dict[str, str]:
    """Pack files into enough partitions for every core, and hand Python a few whole files per batch."""
    target = max(256 * 1024, min(cfg.target_partition_bytes, total_bytes // max(1, 3 * cores) + 1))
    return {
        "spark.sql.files.maxPartitionBytes": str(target),
        "spark.sql.files.openCostInBytes": str(64 * 1024),
        # A batch handed to Python holds whole files: keep it to a few files, not 10,000 rows of them.
        "spark.sql.execution.arrow.maxRecordsPerBatch": "16",
    }


@dataclass(frozen=True)
class Listing:
    files: int
    total_bytes: int
    unreadable: list[tuple[str, str, str]]  # (path, reason, detail): files refused before any read
    unreadable_files: list[tuple[str, int, int]] = field(default_factory=list)  # (path, length, mtime ms) of those

    @property
    def refused_links(self) -> list[str]:
        """Paths the read must skip: the scans would otherwise follow these links out of the inputs."""
        return [path for path, reason, _ in self.unreadable if reason == RejectReason.LINK_OUTSIDE_INPUTS.value]


def _local_path(uri: str) -> str | None:
    """The local file system path of a Hadoop path string (``file:/x``, ``file:///x`` or ``/x``); None elsewhere."""
    if uri.startswith("file:"):
        return "/" + uri[len("file:"):].lstrip("/")
    return None if "://" in uri else uri


def _outside(real: str, roots: list[str]) -> bool:
    return not any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def list_files(spark: SparkSession, paths: list[str], cfg: IngestConfig, roots: list[str] | None = None) -> Listing:
    """Walk the inputs with Hadoop's FileSystem (any scheme), keeping only counts and the files that cannot
    be parsed. Spark's file scans silently skip zero-length files, so they must be found here to be rejected.

    A local file whose real path is outside every root (``roots``, by default ``paths``) got there through a
    symbolic link; unless ``cfg.allow_links_outside_inputs``, it is refused here and the read skips it."""
    jvm = spark.sparkContext._jvm
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    real_roots = [os.path.realpath(local) for local in map(_local_path, roots or paths) if local is not None]
    files = total = 0
    unreadable: list[tuple[str, str, str]] = []
    unreadable_files: list[tuple[str, int, int]] = []
    for path in paths:
        jpath = jvm.org.apache.hadoop.fs.Path(path)
        fs = jpath.getFileSystem(hadoop_conf)
        if not fs.exists(jpath):
            continue
        entries = fs.listFiles(jpath, True)
        while entries.hasNext():
            status = entries.next()
            length = status.getLen()
            name = status.getPath().getName()
            if name.startswith((".", "_")):  # hidden and marker files, as Spark's own listing skips them
                continue
            files += 1
            total += length
            uri = status.getPath().toString()
            local = _local_path(uri)
            if (not cfg.allow_links_outside_inputs and local is not None
                    and _outside(os.path.realpath(local), real_roots)):
                unreadable.append((uri, RejectReason.LINK_OUTSIDE_INPUTS.value,
                                   "a symbolic link that leads outside the input paths (ingest.allow_links_outside_"
                                   "inputs reads it)"))
            elif length == 0:
                unreadable.append((uri, "empty_file", "file has no bytes"))
            elif length > cfg.max_file_bytes:
                unreadable.append((uri, "oversized_file", f"file of {length} bytes exceeds {cfg.max_file_bytes}"))
            else:
                continue
            unreadable_files.append((uri, int(length), int(status.getModificationTime())))
    return Listing(files, total, unreadable, unreadable_files)


def file_metadata(spark: SparkSession, paths: list[str], listing: Listing) -> DataFrame:
    """(path, length, modification_time) of every file under `paths`: file metadata only (binaryFile without its
    content column), plus the empty and oversized files, which Spark's scans skip but ingest rejects."""
    listed = (spark.read.format("binaryFile").options(**_READ_OPTIONS).load(paths)
              .select("path", "length", F.col("modificationTime").alias("modification_time")))
    if listing.unreadable_files:
        skipped = spark.createDataFrame(listing.unreadable_files, "path string, length long, mtime_ms long").select(
            "path", "length", F.timestamp_millis("mtime_ms").alias("modification_time"))
        listed = listed.unionByName(skipped).dropDuplicates(["path"])
    return listed


def new_files(spark: SparkSession, lake: Lakehouse, paths: list[str], cfg: IngestConfig
              ) -> tuple[DataFrame, list[str]]:
    """The files under `paths` that ops.ingested_files does not hold as they are now (new, or changed length or
    modification time): their metadata rows, and their paths. The paths of one night's new files come to the
    driver, never those of the files already ingested."""
    listed = file_metadata(spark, paths, list_files(spark, paths, cfg))
    if delta_io.table_exists(spark, lake, OPS_INGESTED_FILES.name):
        done = delta_io.read_table(spark, lake, OPS_INGESTED_FILES.name).select("path", "length", "modification_time")
        listed = listed.join(done, ["path", "length", "modification_time"], "left_anti")
    listed = listed.persist()
    return listed, [r["path"] for r in listed.select("path").toLocalIterator()]


def ingest_files(spark: SparkSession, lake: Lakehouse, cfg: IngestConfig, paths: list[str], run: JobRun,
                 only_new: bool = False) -> IngestSummary:
    """Parse every comment file under `paths` into bronze (or, `only_new`, the files not ingested as they are
    now); every file read is recorded in ops.ingested_files."""
    if only_new:
        files, fresh = new_files(spark, lake, paths, cfg)
        log.info("ingest: %d new or changed files under %s", len(fresh), _shown(paths))
        if not fresh:
            files.unpersist()
            run.metrics.update({"input_files": 0, "input_bytes": 0})
            return IngestSummary(files=0, records=0, comments_inserted=0, rejects_inserted=0, rejects_by_reason={})
        # the new files are listed again, each on its own: their links are judged against the inputs as given
        listing = list_files(spark, fresh, cfg, roots=paths)
        summary = _ingest(spark, lake, cfg, fresh, run, listing)
    else:
        listing = list_files(spark, paths, cfg)
        summary = _ingest(spark, lake, cfg, paths, run, listing)
        files = file_metadata(spark, paths, listing)
    written = delta_io.merge_upsert(spark, lake, OPS_INGESTED_FILES.name,
                                    files.withColumn("ingest_run_id", F.lit(run.run_id)))
    run.wrote(OPS_INGESTED_FILES.name, written.version)
    files.unpersist()
    return summary


def _shown(paths: list[str]) -> str:
    """Input paths for a log line: the first three (a nightly may pass thousands of new files)."""
    return ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def _ingest(spark: SparkSession, lake: Lakehouse, cfg: IngestConfig, paths: list[str], run: JobRun,
            listing: Listing) -> IngestSummary:
    n_files, total_bytes = listing.files, listing.total_bytes
    log.info("ingest: %d files, %.1f MB under %s", n_files, total_bytes / 1e6, _shown(paths))
    run.metrics["input_files"] = n_files
    run.metrics["input_bytes"] = total_bytes

    today = date.today()
    unreadable = spark.createDataFrame(
        [("reject", path, 0, *([None] * 13), reason, detail, "") for path, reason, detail in listing.unreadable],
        schema=PARSED_SCHEMA,
    )

    with session_conf(spark, read_settings(total_bytes, cfg, spark.sparkContext.defaultParallelism)):
        contents = (
            spark.read.format("binaryFile")
            .options(**_READ_OPTIONS)
            .option("ignoreMissingFiles", "true")
            .load(paths)
            .filter(F.col("length") <= cfg.max_file_bytes)
        )
        if listing.refused_links:
            contents = contents.filter(~F.col("path").isin(listing.refused_links))
        contents = contents.select("path", "content")
        parsed = contents.mapInArrow(parse_partition(cfg), schema=PARSED_SCHEMA).unionByName(unreadable)
        parsed = parsed.persist()
        counts = {row["kind"]: int(row["n"]) for row in parsed.groupBy("kind").agg(F.count("*").alias("n")).collect()}

    try:
        comments, duplicates = _split_duplicates(parsed.filter(F.col("kind") == "comment"))
        comments = bronze_rows(comments, run.run_id, today)
        rejects = parsed.filter(F.col("kind") == "reject").unionByName(duplicates)
        rejects = rejects.select(
            "source_file", "record_no", "reason", "detail", F.substring("raw", 1, 1024).alias("raw"), "format",
            F.lit(run.run_id).alias("ingest_run_id"), F.lit(today).alias("ingest_date"),
        ).dropDuplicates(list(BRONZE_TSC_REJECTS.keys))

        run.read(BRONZE_TSC.name, delta_io.current_version(spark, lake, BRONZE_TSC.name))
        tsc_write = delta_io.merge_insert_new(spark, lake, BRONZE_TSC.name, comments)
        run.wrote(BRONZE_TSC.name, tsc_write.version)
        rejects_write = delta_io.merge_insert_new(spark, lake, BRONZE_TSC_REJECTS.name, rejects)
        run.wrote(BRONZE_TSC_REJECTS.name, rejects_write.version)
        by_reason = {
            row["reason"]: int(row["n"])
            for row in rejects.groupBy("reason").agg(F.count("*").alias("n")).collect()
        }
    finally:
        parsed.unpersist()

    n_records = counts.get("comment", 0) + counts.get("reject", 0)
    run.rows_in = n_records
    run.rows_out = tsc_write.rows_inserted
    run.rows_rejected = sum(by_reason.values())
    run.metrics.update({f"rejected.{reason}": n for reason, n in by_reason.items()})
    return IngestSummary(
        files=n_files,
        records=n_records,
        comments_inserted=tsc_write.rows_inserted,
        rejects_inserted=rejects_write.rows_inserted,
        rejects_by_reason=dict(sorted(by_reason.items())),
    )


def add_arguments(parser) -> None:
    parser.add_argument("paths", nargs="*", help="files or folders of comment files (default: ingest.input_paths)")
    parser.add_argument("--only-new", action="store_true",
                        help="read only files not ingested before as they are now (ops.ingested_files)")


def run_job(args, config: KfrConfig) -> int:
    from kfr_spark.ledger import record_job_run
    from kfr_spark.session import build_session

    paths = [p if "://" in p else str(Path(p).resolve()) for p in args.paths] or list(config.ingest.input_paths)
    if not paths:
        raise ConfigError("no input: give paths on the command line or set ingest.input_paths")
    missing = [p for p in paths if "://" not in p and not Path(p).exists()]
    if missing:
        raise ConfigError(f"input path not found: {', '.join(missing)}")
    spark = build_session(config, "kfr-ingest")
    lake = Lakehouse(config.lakehouse.root)
    with record_job_run(spark, lake, "ingest", config, {"paths": paths}) as run:
        summary = ingest_files(spark, lake, config.ingest, paths, run, only_new=args.only_new)
    reasons = ", ".join(f"{reason}={n}" for reason, n in summary.rejects_by_reason.items()) or "none"
    print(
        f"ingest: {summary.files} files, {summary.records:,} records → {summary.comments_inserted:,} new comments "
        f"in bronze.tsc, {summary.rejects_inserted:,} new rejects ({reasons}) [run {run.run_id}]"
    )
    return 0


def _split_duplicates(comments: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Keep the first copy of each natural key in this batch (by file, then record); reject the others.

    The parsers already drop repeats inside one file, so a key can only repeat where two files claim the same
    video. Only those videos' comments go through the ranking window; the rest are not shuffled for it.
    """
    video = ["source", "video_id"]
    shared_videos = (
        comments.select(*video, "source_file").distinct()
        .groupBy(*video).agg(F.count("*").alias("files")).filter(F.col("files") > 1).select(*video)
    )
    contested = comments.join(F.broadcast(shared_videos), video, "left_semi")
    uncontested = comments.join(F.broadcast(shared_videos), video, "left_anti")
    order = Window.partitionBy(*BRONZE_TSC.keys).orderBy("source_file", "record_no")
    ranked = contested.withColumn("_copy", F.row_number().over(order))
    firsts = uncontested.unionByName(ranked.filter(F.col("_copy") == 1).drop("_copy"))
    repeats = ranked.filter(F.col("_copy") > 1).select(
        F.lit("reject").alias("kind"),
        "source_file",
        "record_no",
        "format",
        *[F.lit(None).cast(f.dataType).alias(f.name) for f in PARSED_SCHEMA.fields[4:16]],
        F.lit("duplicate").alias("reason"),
        F.concat(F.lit("same key as an earlier file: "), F.concat_ws("/", "source", "video_id", "comment_id")).alias("detail"),
        F.col("text").alias("raw"),
    )
    return firsts, repeats
