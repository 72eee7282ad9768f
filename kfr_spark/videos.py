"""The video catalog: CSV files → `bronze.videos` (+ `ops.stage_rejects`, stage "videos").

A catalog CSV has a header with at least `video_id,title,duration_s,fps,width,height,path` (other columns,
such as the generator's `chatid` or `n_frames`, are ignored). `path` is relative to the CSV's folder (or
absolute, or a URL); an empty path means the video has no file, and `kfr shots` gives it uniform slices.
Files are read by Spark's binaryFile source and parsed on the executors by `parse_catalog`, the pure
function below, so the driver never holds the catalog. A bad row becomes a reject with a reason code
(bad_video_id, bad_duration, bad_fps, bad_size, duplicate_video_id, missing_column, unreadable_file) and the
rest lands. Writes are upserts on video_id: loading the same catalog twice changes nothing.
"""

from __future__ import annotations

import csv
import io
import math
import posixpath
from urllib.parse import unquote, urlparse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, IntegerType, StringType, StructField, StructType

from kfr_spark import delta_io
from kfr_spark.catalog import BRONZE_VIDEOS, OPS_STAGE_REJECTS, Lakehouse
from kfr_spark.config import ConfigError, KfrConfig, ShotsConfig
from kfr_spark.ingest import SAFE_ID
from kfr_spark.ledger import JobRun

STAGE = "videos"
REQUIRED_COLUMNS = ("video_id", "title", "duration_s", "fps", "width", "height", "path")
MAX_DIMENSION = 16384

PARSED_SCHEMA = StructType(
    [
        StructField("kind", StringType(), False),  # "video" | "reject"
        StructField("source_file", StringType(), False),
        StructField("line_no", IntegerType(), False),  # 0: the whole file
        StructField("video_id", StringType(), True),
        StructField("title", StringType(), True),
        StructField("duration_s", DoubleType(), True),
        StructField("fps", DoubleType(), True),
        StructField("width", IntegerType(), True),
        StructField("height", IntegerType(), True),
        StructField("uri", StringType(), True),
        StructField("reason", StringType(), True),
        StructField("detail", StringType(), True),
    ]
)


@dataclass(frozen=True)
class CatalogRow:
    line_no: int
    video_id: str
    title: str | None
    duration_s: float
    fps: float | None
    width: int | None
    height: int | None
    uri: str | None


@dataclass(frozen=True)
class CatalogReject:
    line_no: int
    reason: str
    detail: str
    video_id: str | None = None


def _local_path(source_file: str) -> str:
    """A binaryFile path (`file:/a/b.csv`) as a plain path; other schemes are kept whole."""
    parsed = urlparse(source_file)
    return unquote(parsed.path) if parsed.scheme in ("file", "") else source_file


def resolve_uri(path: str, catalog_dir: str) -> str | None:
    """The file a catalog row points at: absolute and normalised, URLs as given, empty → None."""
    path = path.strip()
    if not path:
        return None
    if "://" in path:
        return path
    if not posixpath.isabs(path):
        path = posixpath.join(catalog_dir, path)
    return posixpath.normpath(path)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_catalog_row(line_no: int, row: dict[str, str], catalog_dir: str, cfg: ShotsConfig,
                      id_column: str = "video_id") -> CatalogRow | CatalogReject:
    """One CSV row → a catalog row, or a reject naming what is wrong."""
    raw_id = (row.get(id_column) or "").strip()
    if not SAFE_ID.fullmatch(raw_id):
        return CatalogReject(line_no, "bad_video_id",
                             f"video id {raw_id[:80]!r} is empty, too long or has characters outside [A-Za-z0-9_.-]")
    duration = _number((row.get("duration_s") or "").strip())
    if duration is None or duration <= 0 or duration > cfg.max_duration_s:
        return CatalogReject(line_no, "bad_duration",
                             f"duration_s {row.get('duration_s')!r} is not a number in (0, {cfg.max_duration_s:g}]",
                             raw_id)
    fps_text = (row.get("fps") or "").strip()
    fps = None
    if fps_text:
        fps = _number(fps_text)
        if fps is None or fps <= 0 or fps > cfg.max_fps:
            return CatalogReject(line_no, "bad_fps", f"fps {fps_text!r} is not a number in (0, {cfg.max_fps:g}]", raw_id)
    size: list[int | None] = []
    for name in ("width", "height"):
        text = (row.get(name) or "").strip()
        if not text:
            size.append(None)
            continue
        value = _number(text)
        if value is None or value != int(value) or not 0 < value <= MAX_DIMENSION:
            return CatalogReject(line_no, "bad_size", f"{name} {text!r} is not a whole number in 1..{MAX_DIMENSION}",
                                 raw_id)
        size.append(int(value))
    title = (row.get("title") or "").strip() or None
    return CatalogRow(line_no, raw_id, title, duration, fps, size[0], size[1], resolve_uri(row.get("path") or "", catalog_dir))


def parse_catalog(content: bytes, source_file: str, cfg: ShotsConfig,
                  id_column: str = "video_id") -> Iterator[CatalogRow | CatalogReject]:
    """Every row of one catalog CSV (line numbers count the header as line 1)."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        yield CatalogReject(0, "unreadable_file", f"not UTF-8: {error}")
        return
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [c for c in (id_column, *REQUIRED_COLUMNS[1:]) if c not in header]
    if missing:
        yield CatalogReject(0, "missing_column", f"header lacks {', '.join(missing)} (has {', '.join(header)})")
        return
    catalog_dir = posixpath.dirname(_local_path(source_file))
    for row in reader:
        yield parse_catalog_row(reader.line_num, row, catalog_dir, cfg, id_column)


def parse_partition(cfg: ShotsConfig, id_column: str):
    def parse(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        columns = [f.name for f in PARSED_SCHEMA.fields]
        for batch in batches:
            for path, content in zip(batch["path"], batch["content"]):
                rows = []
                for item in parse_catalog(bytes(content), path, cfg, id_column):
                    if isinstance(item, CatalogRow):
                        rows.append(("video", path, item.line_no, item.video_id, item.title, item.duration_s, item.fps,
                                     item.width, item.height, item.uri, None, None))
                    else:
                        rows.append(("reject", path, item.line_no, item.video_id, None, None, None, None, None,
                                     None, item.reason, item.detail))
                if rows:
                    yield pd.DataFrame.from_records(rows, columns=columns)

    return parse


@dataclass(frozen=True)
class VideosSummary:
    files: int
    rows: int
    videos_written: int
    rejects: int
    rejects_by_reason: dict[str, int]


def load_catalog(spark: SparkSession, lake: Lakehouse, cfg: ShotsConfig, paths: list[str], run: JobRun,
                 id_column: str = "video_id") -> VideosSummary:
    files = (
        spark.read.format("binaryFile").option("recursiveFileLookup", "true").option("pathGlobFilter", "*.csv")
        .load(paths).select("path", "content")
    )
    n_files = files.count()
    parsed = files.mapInPandas(parse_partition(cfg, id_column), schema=PARSED_SCHEMA).persist()
    try:
        # A video_id listed twice: the first row (by file, then line) is kept, the others are rejects.
        order = Window.partitionBy("video_id").orderBy("source_file", "line_no")
        ranked = parsed.filter(F.col("kind") == "video").withColumn("_copy", F.row_number().over(order))
        firsts = ranked.filter(F.col("_copy") == 1).select(
            "video_id", "title", "duration_s", "fps", "width", "height", "uri",
            F.lit(run.run_id).alias("ingest_run_id"),
        )
        duplicates = ranked.filter(F.col("_copy") > 1).select(
            F.lit(STAGE).alias("stage"),
            F.concat_ws(":", "source_file", F.col("line_no").cast("string")).alias("entity_key"),
            F.lit("duplicate_video_id").alias("reason"),
            F.lit("the same video_id appears earlier in the catalog; the first row is kept").alias("detail"),
            F.lit(run.run_id).alias("run_id"),
        )
        rejects = parsed.filter(F.col("kind") == "reject").select(
            F.lit(STAGE).alias("stage"),
            F.concat_ws(":", "source_file", F.col("line_no").cast("string")).alias("entity_key"),
            "reason", "detail", F.lit(run.run_id).alias("run_id"),
        ).unionByName(duplicates).dropDuplicates(["stage", "entity_key"])

        run.read(BRONZE_VIDEOS.name, delta_io.current_version(spark, lake, BRONZE_VIDEOS.name))
        written = delta_io.merge_upsert(spark, lake, BRONZE_VIDEOS.name, firsts)
        run.wrote(BRONZE_VIDEOS.name, written.version)
        rejected = delta_io.merge_upsert(spark, lake, OPS_STAGE_REJECTS.name, rejects)
        run.wrote(OPS_STAGE_REJECTS.name, rejected.version)
        by_reason = {r["reason"]: int(r["n"]) for r in rejects.groupBy("reason").agg(F.count("*").alias("n")).collect()}
        n_rows = parsed.count()
    finally:
        parsed.unpersist()
    run.rows_in = n_rows
    run.rows_out = written.rows_inserted + written.rows_updated
    run.rows_rejected = sum(by_reason.values())
    run.metrics.update({f"rejected.{k}": v for k, v in by_reason.items()})
    return VideosSummary(n_files, n_rows, written.rows_inserted + written.rows_updated, sum(by_reason.values()),
                         dict(sorted(by_reason.items())))


def add_arguments(parser) -> None:
    parser.add_argument("paths", nargs="+", help="catalog CSV files (or folders of them)")
    parser.add_argument("--id-column", default="video_id",
                        help="the CSV column that holds the video id (e.g. chatid, to match Bilibili danmaku ids)")


def run_job(args, config: KfrConfig) -> int:
    from kfr_spark.ledger import record_job_run
    from kfr_spark.session import build_session

    paths = [p if "://" in p else str(Path(p).resolve()) for p in args.paths]
    missing = [p for p in paths if "://" not in p and not Path(p).exists()]
    if missing:
        raise ConfigError(f"catalog not found: {', '.join(missing)}")
    spark = build_session(config, "kfr-videos")
    lake = Lakehouse(config.lakehouse.root)
    with record_job_run(spark, lake, STAGE, config, {"paths": paths, "id_column": args.id_column}) as run:
        summary = load_catalog(spark, lake, config.shots, paths, run, args.id_column)
    reasons = ", ".join(f"{k}={v}" for k, v in summary.rejects_by_reason.items()) or "none"
    print(f"videos: {summary.files} catalog file(s), {summary.rows:,} rows → {summary.videos_written:,} new or changed "
          f"videos in bronze.videos, {summary.rejects:,} rejects ({reasons}) [run {run.run_id}]")
    return 0

