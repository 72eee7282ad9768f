"""The gallery (`kfr gallery`): a static HTML page that shows what the product does, for people.

For a few sample users of one run date of `gold.user_keyframes` (half served by the frame-level model, half by
the item-level one, picked by hash so the page is the same on every rebuild): per video, the user's top key
frames side by side with the non-personalised choices (the first frame, the most popular frame), the words that
set the user's comments apart (TF-IDF over users), and the evaluation plots from `gold.eval_metrics`.

Everything shown is small (a few users x a few videos) and is the only thing collected; the word weights are
Spark aggregates. Images are copied next to the page under content-hash names, so the folder can be zipped or
served as is; every text from the data is HTML-escaped (ids and comments are untrusted).
"""

from __future__ import annotations

import datetime
import hashlib
import html
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

from kfr_spark import delta_io
from kfr_spark.catalog import (
    GOLD_EVAL_METRICS,
    GOLD_INTERACTIONS,
    GOLD_USER_KEYFRAMES,
    OPS_JOB_RUNS,
    SILVER_SHOTS,
    SILVER_TSC_TOKENS,
    Lakehouse,
)
from kfr_spark.config import ConfigError, KfrConfig
from kfr_spark.ledger import JobRun

log = logging.getLogger(__name__)

STAGE = "gallery"
PAGE = "index.html"


@dataclass(frozen=True)
class GallerySummary:
    page: Path
    users: int
    videos: int
    images: int
    plots: int


def _sample_users(ranked, n: int) -> list[tuple[str, str]]:
    """(user_id, model): up to n users, spread over the models that served them, chosen by hash."""
    per_user = ranked.filter(F.col("rank") == 1).groupBy("user_id").agg(F.first("model").alias("model"))
    models = [r["model"] for r in per_user.select("model").distinct().orderBy("model").collect()]
    share = max(1, math.ceil(n / max(1, len(models))))
    by_model = Window.partitionBy("model").orderBy(F.xxhash64(F.lit("gallery"), "user_id"), "user_id")
    rows = (per_user.withColumn("_r", F.row_number().over(by_model)).filter(F.col("_r") <= share)
            .orderBy("model", "_r").collect())
    return [(r["user_id"], r["model"]) for r in rows][:n]


def _thumb(jpeg: bytes | None, out: Path, width: int) -> str | None:
    from kfr_spark.export import resized_jpegs, write_once

    if jpeg is None:
        return None
    encoded = resized_jpegs(bytes(jpeg), (width,), 85).get(width)
    if encoded is None:
        return None
    name = f"images/{hashlib.sha256(encoded).hexdigest()}.jpg"
    write_once(out, name, encoded)  # the export's writer: atomic, once per hash, kept inside the folder
    return name


def characteristic_words(spark: SparkSession, lake: Lakehouse, users: list[str], top: int) -> dict[str, list[str]]:
    """Each user's words by tf x log(users / users using the word): what sets them apart, not what everyone says."""
    if not users or not delta_io.table_exists(spark, lake, SILVER_TSC_TOKENS.name):
        return {}
    tokens = (delta_io.read_table(spark, lake, SILVER_TSC_TOKENS.name)
              .filter(~F.col("is_noise") & F.col("user_id").isNotNull())
              .select("user_id", F.explode("tokens").alias("word")).filter(F.length("word") > 1))
    n_users = tokens.select("user_id").distinct().count()
    df = tokens.groupBy("word").agg(F.countDistinct("user_id").alias("df"))
    tf = tokens.filter(F.col("user_id").isin(users)).groupBy("user_id", "word").agg(F.count("*").alias("tf"))
    weighted = tf.join(df, "word").withColumn("w", F.col("tf") * F.log(F.lit(n_users + 1) / F.col("df")))
    best = Window.partitionBy("user_id").orderBy(F.desc("w"), "word")
    rows = (weighted.withColumn("_r", F.row_number().over(best)).filter(F.col("_r") <= top)
            .orderBy("user_id", "_r").collect())
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r["user_id"], []).append(r["word"])
    return out


def evaluation_plots(spark: SparkSession, lake: Lakehouse, out: Path) -> list[tuple[str, str]]:
    """(file, caption) of the evaluation figures: the latest evaluation of each model."""
    if not delta_io.table_exists(spark, lake, GOLD_EVAL_METRICS.name):
        return []
    metrics = delta_io.read_table(spark, lake, GOLD_EVAL_METRICS.name)
    runs = metrics.select("model", "run_id").distinct()
    if delta_io.table_exists(spark, lake, OPS_JOB_RUNS.name):  # the newest evaluation of each model
        started = delta_io.read_table(spark, lake, OPS_JOB_RUNS.name).select("run_id", "started_at")
        runs = runs.join(started, "run_id", "left")
    else:
        runs = runs.withColumn("started_at", F.lit(None).cast("timestamp"))
    newest = Window.partitionBy("model").orderBy(F.desc_nulls_last("started_at"), F.desc("run_id"))
    latest = runs.withColumn("_r", F.row_number().over(newest)).filter(F.col("_r") == 1).select("model", "run_id")
    rows = metrics.join(latest, ["model", "run_id"]).collect()  # a few dozen rows
    if not rows:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    value = {(r["model"], r["metric"], r["k"]): r for r in rows}
    plots = []
    frame = sorted({m for m, metric, _ in value if metric == "ndcg"})
    if frame:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        for j, metric in enumerate(("ndcg", "f1")):
            vals = [value[(m, metric, 10)]["value"] if (m, metric, 10) in value else 0 for m in frame]
            ax.bar([i + 0.4 * j for i in range(len(frame))], vals, width=0.4, label=f"{metric.upper()}@10")
        ax.set_xticks([i + 0.2 for i in range(len(frame))], frame, rotation=20)
        ax.set_title("KFRCI protocol (held-out key frames)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "plots" / "frame_level.png", dpi=100)
        plt.close(fig)
        plots.append(("plots/frame_level.png", "Frame-level models: NDCG@10 and F1@10 over held-out videos"))
    item = sorted({m for m, metric, _ in value if metric == "frame_hr"})
    if item:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        for m in item:
            ks = [k for k in (1, 2, 3) if (m, "frame_hr", k) in value]
            ax.plot(ks, [value[(m, "frame_hr", k)]["value"] for k in ks], marker="o", label=m)
        m = item[0]
        ks = [k for k in (1, 2, 3) if (m, "random_frame_hr", k) in value]
        ax.plot(ks, [value[(m, "random_frame_hr", k)]["value"] for k in ks], "k--", label="random frame")
        ax.set_title("Key frame HR@K for users with no frame-level data")
        ax.set_xlabel("K")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "plots" / "cold_users.png", dpi=100)
        plt.close(fig)
        plots.append(("plots/cold_users.png", "JIFR: key frame hit ratio for cold users against a random frame"))
    return plots


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;background:#fafafa}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0}
section.user{background:#fff;border:1px solid #ddd;border-radius:8px;padding:1rem;margin:1.2rem 0}
.words span{display:inline-block;background:#eef;border-radius:4px;padding:.1rem .4rem;margin:.1rem}
.video{display:flex;gap:1.2rem;align-items:flex-start;margin:.8rem 0;flex-wrap:wrap}
.group{border-left:3px solid #ccd;padding-left:.6rem} .group h4{margin:.1rem 0 .3rem;font-size:.85rem;color:#555}
.frames{display:flex;gap:.4rem} figure{margin:0;text-align:center;font-size:.75rem;color:#555}
img{display:block;border-radius:4px;width:160px;height:auto;background:#ddd}
.plots img{width:480px} .vid{font-weight:600;min-width:8rem}
"""

_CHECK = """
<script>
window.addEventListener('load', () => {
  const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0);
  document.body.dataset.imagesOk = broken.length === 0 ? 'yes' : 'no';
  document.body.dataset.images = String(document.images.length);
});
</script>
"""


def build_gallery(spark: SparkSession, lake: Lakehouse, config: KfrConfig, run_date: datetime.date | None,
                  run: JobRun) -> GallerySummary:
    cfg = config.gallery
    out = Path(cfg.out_dir).resolve()
    if not delta_io.table_exists(spark, lake, GOLD_USER_KEYFRAMES.name):
        raise ConfigError("kfr gallery needs gold.user_keyframes: run kfr score first")
    ranked = delta_io.read_table(spark, lake, GOLD_USER_KEYFRAMES.name)
    run.read(GOLD_USER_KEYFRAMES.name, delta_io.current_version(spark, lake, GOLD_USER_KEYFRAMES.name))
    run_date = run_date or ranked.agg(F.max("run_date").alias("d")).first()["d"]
    if run_date is None:
        raise ConfigError("gold.user_keyframes is empty: run kfr score first")
    ranked = ranked.filter(F.col("run_date") == F.lit(run_date))
    users = _sample_users(ranked, cfg.users)
    ids = [u for u, _ in users]
    picked = (ranked.filter(F.col("user_id").isin(ids)).select("user_id", "video_id").distinct()
              .withColumn("_r", F.row_number().over(Window.partitionBy("user_id").orderBy(
                  F.xxhash64(F.lit("gallery-video"), "user_id", "video_id"), "video_id")))
              .filter(F.col("_r") <= cfg.videos_per_user).drop("_r"))
    top = (ranked.join(picked, ["user_id", "video_id"]).filter(F.col("rank") <= cfg.frames)
           .select("user_id", "video_id", "rank", "shot_idx", "score", "model").collect())
    videos = sorted({r["video_id"] for r in top})
    popular: dict[str, int] = {}
    if videos and delta_io.table_exists(spark, lake, GOLD_INTERACTIONS.name):
        counts = (delta_io.read_table(spark, lake, GOLD_INTERACTIONS.name)
                  .filter((F.col("split") == "train") & (F.col("label") == 1) & F.col("video_id").isin(videos))
                  .groupBy("video_id", "shot_idx").count()
                  .withColumn("_r", F.row_number().over(Window.partitionBy("video_id").orderBy(
                      F.desc("count"), "shot_idx"))).filter(F.col("_r") == 1).collect())
        popular = {r["video_id"]: r["shot_idx"] for r in counts}
    shots = delta_io.read_table(spark, lake, SILVER_SHOTS.name).filter(F.col("video_id").isin(videos))
    first_shot = {r["video_id"]: r["s"] for r in shots.groupBy("video_id").agg(F.min("shot_idx").alias("s")).collect()}
    wanted = {(r["video_id"], r["shot_idx"]) for r in top} | set(popular.items()) | set(first_shot.items())

    if out.exists():
        shutil.rmtree(out / "plots", ignore_errors=True)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    images: dict[tuple[str, int], str | None] = {}
    for r in shots.select("video_id", "shot_idx", "keyframe_jpeg").toLocalIterator():  # the sampled videos only
        if (r["video_id"], r["shot_idx"]) in wanted:
            images[(r["video_id"], r["shot_idx"])] = _thumb(r["keyframe_jpeg"], out, cfg.thumb_width)
    words = characteristic_words(spark, lake, ids, cfg.words)
    plots = evaluation_plots(spark, lake, out)
    page = render(run_date, users, top, popular, first_shot, images, words, plots)
    tmp = out / f".{PAGE}.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out / PAGE)
    shown = {p for p in images.values() if p}
    keep = {Path(p).name for p in shown}
    for old in (out / "images").glob("*.jpg"):  # pictures of earlier builds no page shows any more
        if old.name not in keep:
            old.unlink()
    run.rows_out = len(users)
    return GallerySummary(page=out / PAGE, users=len(users), videos=len(videos), images=len(shown), plots=len(plots))


def render(run_date, users, top, popular, first_shot, images, words, plots) -> str:
    e = html.escape

    def figure(video: str, shot: int | None, caption: str) -> str:
        path = images.get((video, shot)) if shot is not None else None
        if not path:
            return f'<figure><div style="width:160px;height:90px;background:#eee"></div>{e(caption)}</figure>'
        return f'<figure><img src="{e(path)}" alt="{e(video)} shot {shot}" loading="eager">{e(caption)}</figure>'

    body = [f"<h1>kfr-spark gallery</h1><p class='sub'>Key frames ranked per user, run date {e(str(run_date))}. "
            "Left: the user's top frames; right: what everyone would get.</p>"]
    by_user: dict[str, dict[str, list]] = {}
    for r in top:
        by_user.setdefault(r["user_id"], {}).setdefault(r["video_id"], []).append(r)
    for user, model in users:
        parts = [f"<section class='user'><h2>user {e(user)} <small>served by {e(model)}</small></h2>"]
        if words.get(user):
            parts.append("<div class='words'>comment words: " + "".join(f"<span>{e(w)}</span>" for w in words[user])
                         + "</div>")
        for video, rows in sorted(by_user.get(user, {}).items()):
            rows = sorted(rows, key=lambda r: r["rank"])
            mine = "".join(figure(video, r["shot_idx"], f"#{r['rank']} shot {r['shot_idx']}") for r in rows)
            plain = figure(video, first_shot.get(video), "first frame") + figure(
                video, popular.get(video), "most popular")
            parts.append(f"<div class='video'><div class='vid'>{e(video)}</div>"
                         f"<div class='group'><h4>for this user</h4><div class='frames'>{mine}</div></div>"
                         f"<div class='group'><h4>non-personalised</h4><div class='frames'>{plain}</div></div></div>")
        parts.append("</section>")
        body.append("".join(parts))
    if plots:
        body.append("<section class='plots'><h2>Evaluation</h2>" + "".join(
            f"<figure><img src='{e(p)}' alt='{e(c)}'>{e(c)}</figure>" for p, c in plots) + "</section>")
    else:
        body.append("<section class='plots'><h2>Evaluation</h2><p>No evaluation yet (kfr evaluate).</p></section>")
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>kfr-spark gallery</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(body)}{_CHECK}</body></html>")


def add_arguments(parser) -> None:
    parser.add_argument("--date", type=datetime.date.fromisoformat, default=None,
                        help="run date of gold.user_keyframes to show (default: the latest)")


def run_job(args, config: KfrConfig) -> int:
    from kfr_spark.ledger import record_job_run
    from kfr_spark.session import build_session

    spark = build_session(config, "kfr-gallery")
    lake = Lakehouse(config.lakehouse.root)
    with record_job_run(spark, lake, STAGE, config, {"run_date": str(args.date)}) as run:
        s = build_gallery(spark, lake, config, args.date, run)
    print(f"gallery: {s.users} users, {s.videos} videos, {s.images} images, {s.plots} plots → {s.page} "
          f"[run {run.run_id}]")
    return 0
