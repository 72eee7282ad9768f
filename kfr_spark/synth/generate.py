"""Orchestration: plan, fan videos out to worker processes, stream every output to disk.

Memory is O(n_users + n_videos + the largest video's comments), never O(n_comments): each worker
builds one video's comments, writes its XML and returns only small per-video aggregates (and, for
small runs, the per-comment truth rows). Outputs are collected in video order, so the bytes do not
depend on the number of workers.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kfr_spark.synth.comments import KIND_GREETING, generate_video_comments, video_xml
from kfr_spark.synth.config import FORMAT_NAME, FORMAT_VERSION, SynthConfig, SynthSummary
from kfr_spark.synth.lexicon import CONCEPTS
from kfr_spark.synth.shots import CatalogPlan, VideoPlan, plan_catalog, plan_video
from kfr_spark.synth.users import DISLIKED, LIKED, UserTable, build_users
from kfr_spark.synth.visual import FOURCC, render_video

DANMAKU_DIR = "danmaku"
VIDEO_DIR = "videos"
TRUTH_DIR = "ground_truth"
VIDEOS_CSV = "videos.csv"
MANIFEST = "manifest.json"

_AUTO_PARALLEL_COMMENTS = 200_000  # workers=None uses all cores from this size on (or with video)
_BATCH_VIDEOS = 256  # parquet row groups hold this many videos (fixed: independent of workers)

SHOTS_SCHEMA = pa.schema([
    ("video_id", pa.string()),
    ("shot_idx", pa.int32()),
    ("start_s", pa.float64()),
    ("end_s", pa.float64()),
    ("start_frame", pa.int32()),
    ("end_frame", pa.int32()),  # exclusive
    ("concept", pa.int16()),
    ("concept_name", pa.string()),
    ("transition_in", pa.string()),  # 'cut' | 'fade'
    ("fade_s", pa.float64()),  # full fade length (0 for a cut); the boundary is its middle
    ("popularity", pa.float64()),  # planted popularity multiplier
])

COMMENTS_SCHEMA = pa.schema([
    ("video_id", pa.string()),
    ("row_id", pa.int64()),
    ("user_id", pa.int64()),
    ("shot_idx", pa.int32()),  # true shot the user reacted to
    ("moment_s", pa.float64()),  # true moment the user reacted to
    ("typing_delay_s", pa.float64()),
    ("time_s", pa.float64()),  # as written in the XML
    ("unix_ts", pa.int64()),
    ("sentiment", pa.int8()),  # -1 negative, 0 neutral, 1 positive
    ("kind", pa.string()),  # 'regular' | 'greeting'
    ("mode", pa.int8()),
    ("n_chars", pa.int32()),
    ("text", pa.string()),  # displayed text, unescaped (for mode 7: the text inside the payload)
])

USERS_SCHEMA = pa.schema([
    ("user_id", pa.int64()),
    ("user_hash", pa.string()),
    ("activity", pa.float64()),  # expected comments (planted), not the realised count
    ("liked_concepts", pa.list_(pa.int16())),
    ("disliked_concepts", pa.list_(pa.int16())),
    ("typing_cpm", pa.float32()),
    ("n_comments", pa.int64()),  # comments actually written
])

VIDEOS_COLUMNS = ("video_id", "chatid", "title", "duration_s", "fps", "width", "height", "n_shots",
                  "path", "n_frames", "n_comments")

# ---------------------------------------------------------------------------------------------
# worker side

_STATE: dict = {}


def _init_worker(config: SynthConfig, users: UserTable, catalog: CatalogPlan, out_dir: str) -> None:
    _STATE.update(config=config, users=users, catalog=catalog, out_dir=Path(out_dir))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _process_video(video_idx: int) -> dict:
    config: SynthConfig = _STATE["config"]
    users: UserTable = _STATE["users"]
    out_dir: Path = _STATE["out_dir"]
    plan = plan_video(config, video_idx, _STATE["catalog"])
    truth = config.writes_comment_truth
    com = generate_video_comments(plan, users, config, raw_text=truth)
    _write_atomic(out_dir / DANMAKU_DIR / f"{plan.video_id}.xml", video_xml(plan, com, users))
    rel_video = ""
    if config.with_video:
        rel_video = f"{VIDEO_DIR}/{plan.video_id}.mp4"
        render_video(plan, out_dir / rel_video, seed=config.seed)

    uniq, counts = np.unique(com.user_idx, return_counts=True)
    shot_concept = np.array([s.concept for s in plan.shots], dtype=np.int64)
    code = users.taste[com.user_idx, shot_concept[com.shot_idx]].astype(np.int64) + 1
    regular = com.kind != KIND_GREETING
    taste_sent = np.zeros((3, 3), dtype=np.int64)  # [disliked, neutral, liked] x [neg, neu, pos]
    np.add.at(taste_sent, (code[regular], com.sentiment[regular].astype(np.int64) + 1), 1)
    result = {
        "plan": plan,
        "path": rel_video,
        "user_idx": uniq.astype(np.int64),
        "user_counts": counts.astype(np.int64),
        "modes": np.bincount(com.mode.astype(np.int64), minlength=8),
        "taste_sent": taste_sent,
        "greetings": int((~regular).sum()),
    }
    if truth:
        vid = plan.video_id
        result["truth"] = pa.Table.from_arrays([
            pa.array([vid] * len(com), pa.string()),
            pa.array(com.row_id),
            pa.array(users.user_id[com.user_idx]),
            pa.array(com.shot_idx),
            pa.array(com.moment_s),
            pa.array(com.typing_delay_s),
            pa.array(com.time_s),
            pa.array(com.unix_ts),
            pa.array(com.sentiment),
            pa.array(np.where(regular, "regular", "greeting").tolist(), pa.string()),
            pa.array(com.mode),
            pa.array(com.n_chars),
            pa.array(com.raw_text, pa.string()),
        ], schema=COMMENTS_SCHEMA)
    return result


# ---------------------------------------------------------------------------------------------
# main side


def _shots_table(plans: list[VideoPlan]) -> pa.Table:
    cols: dict[str, list] = {f.name: [] for f in SHOTS_SCHEMA}
    for p in plans:
        for s in p.shots:
            cols["video_id"].append(p.video_id)
            cols["shot_idx"].append(s.idx)
            cols["start_s"].append(s.start_frame / p.fps)
            cols["end_s"].append(s.end_frame / p.fps)
            cols["start_frame"].append(s.start_frame)
            cols["end_frame"].append(s.end_frame)
            cols["concept"].append(s.concept)
            cols["concept_name"].append(CONCEPTS[s.concept].name)
            cols["transition_in"].append(s.transition_in)
            cols["fade_s"].append(s.fade_frames / p.fps)
            cols["popularity"].append(s.popularity)
    return pa.Table.from_pydict(cols, schema=SHOTS_SCHEMA)


def _users_table(users: UserTable, n_comments: np.ndarray) -> pa.Table:
    def lists(mask: np.ndarray) -> pa.Array:
        rows, cols = np.nonzero(mask)
        offsets = np.searchsorted(rows, np.arange(mask.shape[0] + 1)).astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(cols.astype(np.int16)))

    hashes = [f"{h:08x}" for h in users.user_hash.tolist()]
    return pa.Table.from_arrays([
        pa.array(users.user_id),
        pa.array(hashes, pa.string()),
        pa.array(users.activity),
        lists(users.taste == LIKED),
        lists(users.taste == DISLIKED),
        pa.array(users.typing_cpm),
        pa.array(n_comments),
    ], schema=USERS_SCHEMA)


def _activity_quantiles(counts: np.ndarray) -> dict[str, float]:
    active = np.sort(counts[counts > 0])[::-1]
    if len(active) == 0:
        return {}
    q = np.quantile(active, [0.1, 0.25, 0.5, 0.75, 0.9, 0.99])
    top10 = active[: max(1, int(np.ceil(0.1 * len(active))))].sum() / active.sum()
    return {
        "active_users": int(len(active)),
        "mean": round(float(active.mean()), 4),
        **{k: round(float(v), 2) for k, v in zip(("p10", "p25", "median", "p75", "p90", "p99"), q)},
        "max": int(active[0]), "min": int(active[-1]),
        "share_users_1_comment": round(float((active == 1).mean()), 4),
        "share_comments_top10pct_users": round(float(top10), 4),
        "users_ge_100_comments": int((active >= 100).sum()),
    }


def _jsonable(x):
    if isinstance(x, tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    return x


def _pool_context() -> mp.context.BaseContext:
    """fork where available (Linux): cheap, and works from ``python -c``, stdin scripts and
    notebooks; workers only run numpy / OpenCV / file writes. Elsewhere spawn."""
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def _same_run(manifest: Path, config: SynthConfig) -> bool:
    """A complete earlier run of this very config (same format): regenerating it is harmless."""
    try:
        m = json.loads(manifest.read_text("utf-8"))
    except (OSError, ValueError):
        return False
    if m.get("format_version") != FORMAT_VERSION or not isinstance(m.get("config"), dict):
        return False
    # a manifest written before a parameter existed ran with that parameter's default
    defaults = json.loads(json.dumps(_jsonable(asdict(SynthConfig()))))
    return {**defaults, **m["config"]} == json.loads(json.dumps(_jsonable(asdict(config))))


def _prepare_out_dir(out_dir: Path, config: SynthConfig, overwrite: bool) -> None:
    ours = [out_dir / DANMAKU_DIR, out_dir / VIDEO_DIR, out_dir / TRUTH_DIR, out_dir / VIDEOS_CSV,
            out_dir / MANIFEST]
    existing = [p for p in ours if p.exists()]
    if existing and not overwrite and not _same_run(out_dir / MANIFEST, config):
        raise FileExistsError(f"{out_dir} already holds generator output of another config "
                              f"({existing[0].name}); overwrite replaces it")
    for p in existing:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()
    (out_dir / DANMAKU_DIR).mkdir(parents=True)
    (out_dir / TRUTH_DIR).mkdir()
    if config.with_video:
        (out_dir / VIDEO_DIR).mkdir()


def generate(
    config: SynthConfig,
    out_dir: Path | str,
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> SynthSummary:
    """Write a complete synthetic data set for ``config`` into ``out_dir``.

    ``workers``: processes (default: all cores for runs of >= 200k comments or with video, else
    1; 1 runs in this process). The output is
    byte-identical for any worker count. ``progress(done_videos, total_videos)`` is called in this
    process after each video. ``manifest.json`` is written last: its presence marks a complete run.
    An ``out_dir`` holding a complete run of the same config is regenerated in place; one holding
    anything else from the generator raises FileExistsError unless ``overwrite`` (which deletes
    only the generator's own files and folders there).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _prepare_out_dir(out_dir, config, overwrite)
    if workers is None:  # processes only pay off on big runs
        big = config.n_comments >= _AUTO_PARALLEL_COMMENTS or config.with_video
        workers = (os.cpu_count() or 1) if big else 1
    workers = max(1, min(int(workers), config.n_videos))

    users = build_users(config)
    catalog = plan_catalog(config)
    truth = config.writes_comment_truth
    shots_path = out_dir / TRUTH_DIR / "shots.parquet"
    users_path = out_dir / TRUTH_DIR / "users.parquet"
    comments_path = out_dir / TRUTH_DIR / "comments.parquet"

    user_counts = np.zeros(users.n, dtype=np.int64)
    modes = np.zeros(8, dtype=np.int64)
    taste_sent = np.zeros((3, 3), dtype=np.int64)
    greetings = 0
    n_shots = 0
    n_rendered = 0
    csv_buf = io.StringIO()
    csv_w = csv.writer(csv_buf, lineterminator="\n")
    csv_w.writerow(VIDEOS_COLUMNS)
    shots_writer = pq.ParquetWriter(str(shots_path) + ".part", SHOTS_SCHEMA, compression="zstd")
    comments_writer = (pq.ParquetWriter(str(comments_path) + ".part", COMMENTS_SCHEMA,
                                        compression="zstd") if truth else None)
    plan_batch: list[VideoPlan] = []
    truth_batch: list[pa.Table] = []

    def flush() -> None:
        if plan_batch:
            shots_writer.write_table(_shots_table(plan_batch))
            plan_batch.clear()
        if truth_batch and comments_writer is not None:
            comments_writer.write_table(pa.concat_tables(truth_batch))
            truth_batch.clear()

    def consume(res: dict) -> None:
        nonlocal greetings, n_shots, n_rendered
        plan: VideoPlan = res["plan"]
        user_counts[res["user_idx"]] += res["user_counts"]
        modes[:] += res["modes"]
        taste_sent[:] += res["taste_sent"]
        greetings += res["greetings"]
        n_shots += len(plan.shots)
        n_rendered += bool(res["path"])
        csv_w.writerow([plan.video_id, plan.chatid, plan.title, f"{plan.duration_s:.6f}", plan.fps,
                        plan.width, plan.height, len(plan.shots), res["path"], plan.n_frames,
                        plan.n_comments])
        plan_batch.append(plan)
        if "truth" in res:
            truth_batch.append(res["truth"])
        if len(plan_batch) >= _BATCH_VIDEOS:
            flush()

    total = config.n_videos
    try:
        if workers == 1:
            _init_worker(config, users, catalog, str(out_dir))
            try:
                for i in range(total):
                    consume(_process_video(i))
                    if progress:
                        progress(i + 1, total)
            finally:
                _STATE.clear()
        else:
            ctx = _pool_context()
            chunk = max(1, min(16, total // (workers * 8)))
            with ctx.Pool(workers, initializer=_init_worker,
                          initargs=(config, users, catalog, str(out_dir))) as pool:
                for done, res in enumerate(pool.imap(_process_video, range(total), chunk), 1):
                    consume(res)
                    if progress:
                        progress(done, total)
        flush()
    finally:
        shots_writer.close()
        if comments_writer is not None:
            comments_writer.close()
    os.replace(str(shots_path) + ".part", shots_path)
    if truth:
        os.replace(str(comments_path) + ".part", comments_path)

    pq.write_table(_users_table(users, user_counts), str(users_path) + ".part", compression="zstd")
    os.replace(str(users_path) + ".part", users_path)
    _write_atomic(out_dir / VIDEOS_CSV, csv_buf.getvalue().encode("utf-8"))

    quantiles = _activity_quantiles(user_counts)
    by_mode = {m: int(modes[m]) for m in (1, 4, 5, 7)}
    n_comments = int(user_counts.sum())
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "generator": "kfr_spark.synth",
        "seed": config.seed,
        "config": _jsonable(asdict(config)),
        "counts": {
            "videos": config.n_videos,
            "shots": n_shots,
            "users": users.n,
            "active_users": quantiles.get("active_users", 0),
            "comments": n_comments,
            "greetings": greetings,
            "comments_by_mode": by_mode,
            "rendered_videos": n_rendered,
        },
        "activity": quantiles,
        "signal": {
            "rows": ["disliked", "neutral", "liked"],
            "cols": ["negative", "neutral", "positive"],
            "regular_comments_by_taste_and_sentiment": taste_sent.tolist(),
        },
        "concepts": [
            {"id": c.id, "name": c.name, "name_cn": c.name_cn, "hue": c.hue, "pattern": c.pattern,
             "angle": c.angle, "look": config.look_of(c.id), "words": list(c.words)}
            for c in CONCEPTS[: config.n_concepts]
        ],
        "files": {
            "danmaku": f"{DANMAKU_DIR}/<video_id>.xml",
            "videos_csv": VIDEOS_CSV,
            "shots": f"{TRUTH_DIR}/shots.parquet",
            "users": f"{TRUTH_DIR}/users.parquet",
            "comments_truth": f"{TRUTH_DIR}/comments.parquet" if truth else None,
            "videos": f"{VIDEO_DIR}/<video_id>.mp4" if config.with_video else None,
            "video_fourcc": FOURCC if config.with_video else None,
        },
        "notes": {
            "user_hash": "lowercase hex CRC32 of the decimal user_id, 8 digits; distinct per user",
            "comment_truth": ("written only when n_comments <= truth_max_comments"),
            "row_id": "unique, consecutive per video in posting order (= XML order)",
            "time_s": "moment + typing delay, clamped to < duration_s, 5 decimals",
        },
    }
    _write_atomic(out_dir / MANIFEST,
                  (json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True) + "\n")
                  .encode("utf-8"))

    return SynthSummary(
        out_dir=out_dir,
        n_videos=config.n_videos,
        n_shots=n_shots,
        n_users=users.n,
        n_active_users=quantiles.get("active_users", 0),
        n_comments=n_comments,
        n_rendered_videos=n_rendered,
        comments_by_mode=by_mode,
        activity_quantiles=quantiles,
        manifest_path=out_dir / MANIFEST,
        videos_csv=out_dir / VIDEOS_CSV,
        danmaku_dir=out_dir / DANMAKU_DIR,
        shots_path=shots_path,
        users_path=users_path,
        comments_truth_path=comments_path if truth else None,
        video_dir=out_dir / VIDEO_DIR if config.with_video else None,
    )


__all__ = ["generate"]
