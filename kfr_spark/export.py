"""CDN export (`kfr export`): one run date of `gold.user_keyframes` → poster images and a manifest.

Layout under `export.out_dir` (every path is built from hashes, dates and our own run ids — never from a user or
video id, so a hostile id cannot name a file, let alone escape the folder):

    images/w<width>/<h[:2]>/<h>.jpg          h = sha256 of the JPEG bytes: each picture is stored once, whichever
                                              users, dates or reruns select it, and its name never changes meaning
    manifests/<run_date>/<run_id>/manifest.parquet/   Spark part files (user_key, video_id, rank, image paths per
    manifests/<run_date>/<run_id>/manifest.jsonl/     width, model, model_version), the same rows in both formats
    manifests/<run_date>/<run_id>/_SUCCESS.json       counts, written last
    manifests/<run_date>/CURRENT              the run id a consumer reads, swapped in one os.replace

An export is atomic for a consumer that follows CURRENT: a run writes its images (idempotent: an existing hash is
not rewritten), then its own manifest folder, then `_SUCCESS.json`, and only then repoints CURRENT; a run that
dies half way leaves CURRENT on the previous complete export. The run before the current one is kept (a consumer
may still be reading it); older ones are removed.

User ids are pseudonymised: user_key = sha256(salt ‖ user_id), with the salt from config (`export.salt`, or the
environment variable it names). The images are written by the executors (`mapInPandas`), so on a cluster
`out_dir` must be a shared filesystem path.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, StringType, StructField, StructType

from kfr_spark import delta_io
from kfr_spark.catalog import GOLD_USER_KEYFRAMES, SILVER_SHOTS, Lakehouse
from kfr_spark.config import ConfigError, ExportConfig, KfrConfig
from kfr_spark.ledger import JobRun

log = logging.getLogger(__name__)

STAGE = "export"
CURRENT = "CURRENT"
SUCCESS = "_SUCCESS.json"

_IMAGES = StructType([
    StructField("video_id", StringType(), False),
    StructField("shot_idx", IntegerType(), False),
    StructField("width", IntegerType(), False),
    StructField("path", StringType(), True),  # relative to out_dir; None: the key frame would not decode
])


def pseudonym(salt: str, user_id: str) -> str:
    """The user key a CDN consumer sees: stable per salt, not reversible without it."""
    return hashlib.sha256(salt.encode() + b"\x00" + user_id.encode()).hexdigest()[:32]


def content_path(data: bytes, width: int) -> str:
    digest = hashlib.sha256(data).hexdigest()
    return f"images/w{int(width)}/{digest[:2]}/{digest}.jpg"


def inside(root: Path, relative: str) -> Path:
    """root / relative, refusing anything that resolves outside root (a second guard: our names are hashes)."""
    root = root.resolve()
    target = (root / relative).resolve()
    if root != target and root not in target.parents:
        raise ValueError(f"{relative!r} escapes the export folder {root}")
    return target


def resized_jpegs(jpeg: bytes, widths: tuple[int, ...], quality: int) -> dict[int, bytes]:
    """The key frame re-encoded at each width (aspect kept; never upscaled). Undecodable bytes → {}."""
    import cv2
    import numpy as np

    image = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return {}
    out = {}
    for width in widths:
        h, w = image.shape[:2]
        scaled = image if w <= width else cv2.resize(image, (width, max(1, round(h * width / w))),
                                                     interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", scaled, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            out[width] = buf.tobytes()
    return out


def write_once(root: Path, relative: str, data: bytes) -> None:
    """Write a content-addressed file under root, atomically and only if absent: a reader never sees half an
    image, a rerun rewrites nothing, and `relative` cannot lead outside root (see `inside`)."""
    target = inside(root, relative)
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def _image_writer(out_dir: str, widths: tuple[int, ...], quality: int):
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        root = Path(out_dir)
        for pdf in batches:
            rows = []
            for video_id, shot_idx, jpeg in zip(pdf["video_id"], pdf["shot_idx"], pdf["keyframe_jpeg"], strict=True):
                encoded = resized_jpegs(bytes(jpeg), widths, quality) if jpeg is not None else {}
                for width in widths:
                    if width in encoded:
                        relative = content_path(encoded[width], width)
                        write_once(root, relative, encoded[width])
                        rows.append((video_id, int(shot_idx), width, relative))
                    else:
                        rows.append((video_id, int(shot_idx), width, None))
            yield pd.DataFrame(rows, columns=[f.name for f in _IMAGES.fields])

    return run


@dataclass(frozen=True)
class ExportSummary:
    run_date: datetime.date
    rows: int
    images: int
    missing_images: int
    manifest_dir: Path


def export_date(spark: SparkSession, lake: Lakehouse, config: KfrConfig, run_date: datetime.date | None,
                run: JobRun) -> ExportSummary:
    cfg = config.export
    salt = resolve_salt(cfg)
    out_dir = Path(cfg.out_dir).resolve()
    if not delta_io.table_exists(spark, lake, GOLD_USER_KEYFRAMES.name):
        raise ConfigError("kfr export needs gold.user_keyframes: run kfr score first")
    run.read(GOLD_USER_KEYFRAMES.name, delta_io.current_version(spark, lake, GOLD_USER_KEYFRAMES.name))
    run.read(SILVER_SHOTS.name, delta_io.current_version(spark, lake, SILVER_SHOTS.name))
    ranked = delta_io.read_table(spark, lake, GOLD_USER_KEYFRAMES.name)
    if run_date is None:
        latest = ranked.agg(F.max("run_date").alias("d")).first()["d"]
        if latest is None:
            raise ConfigError("gold.user_keyframes is empty: run kfr score first")
        run_date = latest
    ranked = ranked.filter(F.col("run_date") == F.lit(run_date))
    if cfg.max_rank:
        ranked = ranked.filter(F.col("rank") <= cfg.max_rank)
    ranked = ranked.persist()
    with contextlib.ExitStack() as stack:  # whatever fails, both cached frames are released
        stack.callback(ranked.unpersist)
        if ranked.isEmpty():
            raise ConfigError(f"gold.user_keyframes has no rows for {run_date}: run kfr score --date {run_date}")
        selected = ranked.select("video_id", "shot_idx").distinct()
        shots = delta_io.read_table(spark, lake, SILVER_SHOTS.name).select("video_id", "shot_idx", "keyframe_jpeg")
        images = (selected.join(shots, ["video_id", "shot_idx"], "left")
                  .mapInPandas(_image_writer(str(out_dir), tuple(cfg.widths), cfg.jpeg_quality), schema=_IMAGES)
                  .persist())
        stack.callback(images.unpersist)
        written = images.filter(F.col("path").isNotNull()).count()
        missing = images.filter(F.col("path").isNull()).select("video_id", "shot_idx").distinct().count()
        if missing:
            log.warning("export: %d selected key frames have no decodable JPEG; their rows are left out", missing)
        paths = images.groupBy("video_id", "shot_idx").pivot("width", list(cfg.widths)).agg(F.first("path"))
        for width in cfg.widths:
            paths = paths.withColumnRenamed(str(width), f"image_w{width}")
        complete = F.lit(True)
        for width in cfg.widths:
            complete = complete & F.col(f"image_w{width}").isNotNull()
        manifest = (ranked.join(paths.filter(complete), ["video_id", "shot_idx"])
                    .select(F.sha2(F.concat(F.lit(salt), F.lit("\x00"), F.col("user_id")), 256).substr(1, 32)
                            .alias("user_key"), "video_id", "rank", *[f"image_w{w}" for w in cfg.widths],
                            "model", "model_version"))
        manifest_dir = publish(spark, manifest, out_dir, run_date, run.run_id)
        rows = int(json.loads((manifest_dir / SUCCESS).read_text())["rows"])
    run.rows_out = rows
    run.metrics.update({"images": float(written), "missing_images": float(missing)})
    return ExportSummary(run_date=run_date, rows=rows, images=written, missing_images=missing,
                         manifest_dir=manifest_dir)


def publish(spark: SparkSession, manifest: DataFrame, out_dir: Path, run_date: datetime.date, run_id: str) -> Path:
    """Write the manifest into its own run folder, mark it complete, then repoint CURRENT (one os.replace)."""
    date_dir = inside(out_dir, f"manifests/{run_date.isoformat()}")
    final = inside(out_dir, f"manifests/{run_date.isoformat()}/{run_id}")
    staging = inside(out_dir, f"manifests/{run_date.isoformat()}/.staging-{run_id}")
    shutil.rmtree(staging, ignore_errors=True)
    manifest = manifest.orderBy("user_key", "video_id", "rank").persist()
    try:
        manifest.write.parquet(str(staging / "manifest.parquet"))
        manifest.write.json(str(staging / "manifest.jsonl"))
        rows = manifest.count()
    finally:
        manifest.unpersist()
    (staging / SUCCESS).write_text(json.dumps({"run_date": run_date.isoformat(), "run_id": run_id, "rows": rows,
                                               "written_at": datetime.datetime.now(datetime.UTC).isoformat()}))
    os.replace(staging, final)
    previous = (date_dir / CURRENT).read_text().strip() if (date_dir / CURRENT).exists() else None
    pointer = date_dir / f".{CURRENT}.{run_id}.tmp"
    pointer.write_text(run_id + "\n")
    os.replace(pointer, date_dir / CURRENT)
    for old in date_dir.iterdir():  # keep the current and the previous export; a consumer may still read that
        if old.is_dir() and old.name not in {run_id, previous} and not old.name.startswith(".staging-"):
            shutil.rmtree(old, ignore_errors=True)
    return final


def current_manifest(out_dir: Path, run_date: datetime.date) -> Path | None:
    """The manifest folder a consumer should read for a date (None: never exported)."""
    pointer = Path(out_dir) / "manifests" / run_date.isoformat() / CURRENT
    if not pointer.exists():
        return None
    return inside(Path(out_dir), f"manifests/{run_date.isoformat()}/{pointer.read_text().strip()}")


def resolve_salt(cfg: ExportConfig) -> str:
    if cfg.salt_env:
        salt = os.environ.get(cfg.salt_env)
        if not salt:
            raise ConfigError(f"export.salt_env names {cfg.salt_env}, which is not set")
        return salt
    if cfg.salt is None:
        raise ConfigError("set export.salt (or export.salt_env, an environment variable holding it): user ids are "
                          "pseudonymised with it")
    return cfg.salt


def add_arguments(parser) -> None:
    parser.add_argument("--date", type=datetime.date.fromisoformat, default=None,
                        help="run date of gold.user_keyframes to export (default: the latest)")


def run_job(args, config: KfrConfig) -> int:
    from kfr_spark.ledger import record_job_run
    from kfr_spark.session import build_session

    resolve_salt(config.export)  # a missing salt is a usage error before Spark starts
    spark = build_session(config, "kfr-export")
    lake = Lakehouse(config.lakehouse.root)
    with record_job_run(spark, lake, STAGE, config, {"run_date": str(args.date)}) as run:
        s = export_date(spark, lake, config, args.date, run)
    print(f"export: {s.run_date}: {s.rows:,} manifest rows, {s.images:,} images ({s.missing_images} key frames "
          f"without a picture) → {s.manifest_dir} [run {run.run_id}]")
    return 0
