"""`kfr shots`: shot boundaries and key frames from real and generated video, and the Spark job around them.

The pure detector is specified on synthetic feature arrays (flash, fade, dissolve, motion, minimum shot
length); the decoder on the real fixture clips (PySceneDetect's test resources) and on generated videos with
known boundaries; the job on a small catalog with good, missing and broken files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import fixtures_dir
from kfr_spark.config import ShotsConfig
from kfr_spark.shots import (
    N_CELLS,
    N_CHANNELS,
    FrameStats,
    ShotSegmenter,
    VideoReject,
    analyze_video,
    detect_cuts,
    params_hash,
    segment_frames,
    uniform_shots,
)

CFG = ShotsConfig()
FPS = 25.0


# --- synthetic feature arrays -------------------------------------------------------------------


def _look(rng: np.random.Generator) -> np.ndarray:
    """One shot's picture as cell features (float, 0-255): a random layout."""
    return rng.uniform(30, 220, size=(N_CELLS, N_CHANNELS))


def _stats(frames: list[np.ndarray], rng: np.random.Generator, noise: float = 0.6) -> FrameStats:
    """FrameStats from per-frame cell features, with a little coding noise."""
    thumbs, luma, bright = [], [], []
    for f in frames:
        f = np.clip(f + rng.normal(0, noise, f.shape), 0, 255).astype(np.uint8)
        thumbs.append(f.reshape(-1))
        luma.append(float(f[:, 0].mean()))
        bright.append(float(f[:, 0].max()))
    return FrameStats.from_rows(thumbs, luma, bright)


def _shot(look: np.ndarray, n: int, rng: np.random.Generator, drift: float = 0.3) -> list[np.ndarray]:
    walk = np.cumsum(rng.normal(0, drift, size=(n, *look.shape)), axis=0)
    return [look + w for w in walk]


def _frames_of(stats: FrameStats) -> list[int]:
    return [b.frame for b in detect_cuts(stats, FPS, CFG)]


def test_hard_cuts_are_found_at_their_frame():
    rng = np.random.default_rng(1)
    frames = _shot(_look(rng), 40, rng) + _shot(_look(rng), 55, rng) + _shot(_look(rng), 30, rng)
    bounds = detect_cuts(_stats(frames, rng), FPS, CFG)
    assert [(b.frame, b.kind) for b in bounds] == [(40, "cut"), (95, "cut")]
    assert bounds[0].time_s == pytest.approx(40 / FPS)


@pytest.mark.parametrize("length", [1, 2, 4])
def test_a_flash_is_not_a_cut(length):
    rng = np.random.default_rng(2)
    frames = _shot(_look(rng), 80, rng)
    for k in range(40, 40 + length):
        frames[k] = np.minimum(frames[k] + 120, 255)
    assert _frames_of(_stats(frames, rng)) == []


def _fade(look: np.ndarray, n: int, rng, out: bool) -> list[np.ndarray]:
    alphas = np.linspace(1, 0, n + 1)[1:] if out else np.linspace(0, 1, n + 1)[:-1]
    return [look * a for a in alphas]


def test_a_fade_through_black_yields_one_boundary_at_the_darkest_frame():
    rng = np.random.default_rng(3)
    a, b = _look(rng), _look(rng)
    frames = _shot(a, 40, rng) + _fade(a, 10, rng, out=True) + [a * 0] * 3 + _fade(b, 10, rng, out=False)[1:] \
        + _shot(b, 40, rng)
    darkest = 40 + 10 + 2  # the last black frame
    bounds = detect_cuts(_stats(frames, rng, noise=0.3), FPS, CFG)
    assert [(x.frame, x.kind) for x in bounds] == [(darkest, "dip")]


def test_a_fade_to_black_and_back_to_the_same_picture_is_not_a_boundary():
    rng = np.random.default_rng(4)
    a = _look(rng)
    frames = _shot(a, 40, rng) + _fade(a, 12, rng, out=True) + _fade(a, 12, rng, out=False) + _shot(a, 40, rng)
    assert _frames_of(_stats(frames, rng)) == []


def test_a_dissolve_yields_one_boundary_near_its_middle():
    rng = np.random.default_rng(5)
    a, b = _look(rng), _look(rng)
    blend = [a * (1 - t) + b * t for t in np.linspace(0, 1, 17)[1:-1]]  # 15 frames
    frames = _shot(a, 40, rng) + blend + _shot(b, 40, rng)
    bounds = detect_cuts(_stats(frames, rng), FPS, CFG)
    assert len(bounds) == 1 and bounds[0].kind == "dissolve"
    assert abs(bounds[0].frame - (40 + 7)) <= 2


def test_sustained_fast_motion_is_not_a_cut():
    """A textured picture panning fast (8 px a frame at 160 px analysis width), through the real features."""
    rng = np.random.default_rng(6)
    texture = cv2.GaussianBlur(rng.integers(0, 255, (400, 1600, 3), dtype=np.uint8), (0, 0), 3)
    frames = [texture[100:280, 16 * k:16 * k + 320] for k in range(70)]
    stats = FrameStats.from_frames(frames)
    assert detect_cuts(stats, FPS, CFG) == []


def test_the_minimum_shot_length_keeps_the_stronger_of_two_close_cuts():
    rng = np.random.default_rng(7)
    a, b = _look(rng), _look(rng)
    c = np.clip(b + rng.uniform(-40, 40, b.shape), 0, 255)  # close to b: a weaker cut
    frames = _shot(a, 40, rng) + _shot(b, 5, rng) + _shot(c, 40, rng)
    min_frames = int(round(CFG.min_shot_s * FPS))
    bounds = _frames_of(_stats(frames, rng))
    assert bounds == [40]
    edges = [0, *bounds, len(frames)]
    assert min(np.diff(edges)) >= min_frames
    # and no shot shorter than the minimum at the end of the video either
    assert _frames_of(_stats(_shot(a, 40, rng) + _shot(b, 5, rng), rng)) == []


def test_streaming_gives_exactly_the_batch_result():
    rng = np.random.default_rng(8)
    frames: list[np.ndarray] = []
    for k in range(30):
        look = _look(rng)
        kind = k % 4
        n = int(rng.integers(10, 80))
        if kind == 1 and frames:
            frames += _fade(frames[-1], 8, rng, out=True) + [look * 0] * int(rng.integers(1, 70)) \
                + _fade(look, 8, rng, out=False)
        shot = _shot(look, n, rng)
        if kind == 2:
            shot[n // 2] = np.minimum(shot[n // 2] + 100, 255)
        frames += shot
    stats = _stats(frames, rng)
    times = np.arange(len(frames)) / FPS
    stats.times = times
    batch = detect_cuts(stats, FPS, CFG)
    assert len(batch) > 20
    seg = ShotSegmenter(FPS, CFG, chunk=7)
    streamed = []
    for i in range(len(frames)):
        found, settled = seg.push(stats.thumbs[i], float(stats.luma[i]), float(stats.bright[i]), float(times[i]))
        assert all(b.frame < settled for b in found)
        streamed += found
    streamed += seg.finish()
    assert streamed == batch


def test_the_params_hash_is_stable_and_follows_the_detector_parameters():
    assert params_hash(ShotsConfig()) == params_hash(ShotsConfig())
    assert params_hash(ShotsConfig(threshold=7.0)) != params_hash(ShotsConfig())
    assert params_hash(ShotsConfig(keyframe="first")) != params_hash(ShotsConfig())
    assert params_hash(ShotsConfig(uniform_shots=5)) == params_hash(ShotsConfig())  # not a detector parameter


def test_uniform_shots_slice_the_duration():
    shots = uniform_shots(10.0, 4)
    assert [(s.start_s, s.end_s) for s in shots] == [(0.0, 2.5), (2.5, 5.0), (5.0, 7.5), (7.5, 10.0)]
    assert all(s.is_uniform and s.keyframe_jpeg is None and s.detector == "uniform" for s in shots)


# --- real fixture clips -----------------------------------------------------------------------------


def _video(name: str) -> str:
    return str(fixtures_dir() / "video" / name)


def test_goldeneye_vfr_cuts_at_the_reference_times():
    """Variable frame rate: 160 decoded frames, times from the timestamps (PySceneDetect: 3.75 s, 8.76 s)."""
    result = analyze_video(_video("goldeneye-vfr-drop3.mp4"), CFG)
    assert result.frames == 160
    frame_s = 1 / 23.976
    times = [b.time_s for b in result.boundaries]
    assert len(times) == 2
    assert times[0] == pytest.approx(3.75, abs=frame_s) and times[1] == pytest.approx(8.76, abs=frame_s)
    assert [s.start_s for s in result.shots] == [0.0, *times]


def test_testvideo_fades_through_black_give_one_boundary_each():
    """Stills joined by cuts and fades: the reference cuts (30, 180, 394) and nothing more."""
    result = analyze_video(_video("testvideo.mp4"), CFG)
    frames = [b.frame for b in result.boundaries]
    assert len(frames) == 3
    for got, ref in zip(frames, (30, 180, 394)):
        assert abs(got - ref) <= 1


def test_fades_clip_gives_no_false_cuts():
    assert analyze_video(_video("fades.mp4"), CFG).boundaries == []


# --- generated videos -------------------------------------------------------------------------------


def _write_video(path: Path, frames, fps: float = FPS) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def built_video(seed: int = 0, size=(192, 108)) -> tuple[list[np.ndarray], list[int]]:
    """Textured shots that drift slowly, joined by hard cuts and one fade through black; the true boundaries."""
    rng = np.random.default_rng(seed)
    w, h = size
    frames, bounds = [], []
    looks = []
    for k in range(5):
        layout = cv2.resize(rng.uniform(0, 1, (4, 6, 3)).astype(np.float32), (w + 20, h + 20),
                            interpolation=cv2.INTER_CUBIC)
        grain = cv2.GaussianBlur(rng.uniform(0, 1, (h + 20, w + 20, 3)).astype(np.float32), (0, 0), 1 + k)
        looks.append(np.clip(255 * (0.7 * layout + 0.3 * grain), 0, 255).astype(np.uint8))
    lengths = [37, 45, 50, 33, 40]
    for k, (look, n) in enumerate(zip(looks, lengths)):
        if k:
            bounds.append(len(frames))
        for i in range(n):
            frame = look[i // 4:i // 4 + h, i // 3:i // 3 + w].astype(np.float32)
            if k == 2 and i >= n - 8:  # fade out into shot 3
                frame *= (n - 1 - i) / 8
            if k == 3 and i < 8:  # fade in: its first frame is black (the boundary)
                frame *= i / 8
            frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames, bounds


def _f1(found: list[int], truth: list[int], tol: int = 1) -> float:
    unmatched = list(truth)
    hits = 0
    for f in found:
        match = next((t for t in unmatched if abs(t - f) <= tol), None)
        if match is not None:
            unmatched.remove(match)
            hits += 1
    if not found and not truth:
        return 1.0
    precision = hits / len(found) if found else 0.0
    recall = hits / len(truth) if truth else 0.0
    return 0.0 if hits == 0 else 2 * precision * recall / (precision + recall)


def test_built_video_boundaries_and_key_frame_bytes_are_reproducible(tmp_path):
    frames, truth = built_video()
    path = _write_video(tmp_path / "built.mp4", frames)
    first = analyze_video(str(path), CFG)
    assert _f1([b.frame for b in first.boundaries], truth) == 1.0
    again = analyze_video(str(path), CFG)
    assert [s.keyframe_jpeg for s in again.shots] == [s.keyframe_jpeg for s in first.shots]
    for s in first.shots:
        assert s.start_frame <= s.keyframe_frame < s.end_frame
        picture = cv2.imdecode(np.frombuffer(s.keyframe_jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert picture.shape == (s.keyframe_height, s.keyframe_width, 3)
        assert s.keyframe_width <= CFG.keyframe_max_width


@pytest.fixture(scope="module")
def synth_videos(tmp_path_factory):
    try:
        from kfr_spark.synth import SynthConfig, generate
    except ImportError as error:  # the generator is optional for this module
        pytest.skip(f"kfr_spark.synth not importable: {error}")
    out = tmp_path_factory.mktemp("synth")
    config = SynthConfig(seed=5, n_videos=3, n_users=30, n_comments=60, duration_s=(22.0, 28.0),
                         fade_fraction=0.3, with_video=True)
    generate(config, out, workers=1)
    return out


def test_generated_videos_cut_f1_at_least_095(synth_videos):
    import pandas as pd

    truth = pd.read_parquet(synth_videos / "ground_truth" / "shots.parquet")
    found_all, truth_all = 0, 0
    scores = []
    for video_id, shots in truth.groupby("video_id"):
        true_bounds = sorted(shots["start_frame"].tolist())[1:]
        result = analyze_video(str(synth_videos / "videos" / f"{video_id}.mp4"), CFG)
        found = [b.frame for b in result.boundaries]
        scores.append(_f1(found, true_bounds))
        found_all += len(found)
        truth_all += len(true_bounds)
    assert truth_all >= 10
    assert min(scores) >= 0.95, scores


def _one_shot_frames(n: int = 50, sharp_from: int = 30) -> list[np.ndarray]:
    """One static shot (a smooth gradient); from `sharp_from` on, a small fine checkerboard in a corner
    makes the frames sharper without changing the picture enough to be a cut."""
    ramp = np.linspace(40, 200, 192, dtype=np.float32)
    base = np.dstack([np.tile(ramp, (108, 1)), np.tile(ramp[::-1], (108, 1)), np.full((108, 192), 120.0)])
    base = base.astype(np.uint8)
    sharp = base.copy()
    board = (np.indices((16, 16)).sum(axis=0) % 2 * 255).astype(np.uint8)
    sharp[4:20, 4:20] = board[..., None]
    return [sharp.copy() if i >= sharp_from else base.copy() for i in range(n)]


@pytest.mark.parametrize("mode", ["first", "middle", "sharpest"])
def test_key_frame_modes(mode):
    frames = _one_shot_frames()
    cfg = ShotsConfig(keyframe=mode)
    result = segment_frames(((f, i / FPS) for i, f in enumerate(frames)), FPS, cfg)
    (shot,) = result.shots
    every = int(round(FPS / cfg.keyframe_samples_per_s))
    if mode == "first":
        assert shot.keyframe_frame == 0
    elif mode == "middle":
        assert abs(shot.keyframe_frame - 24) <= every // 2 + 1
    else:
        assert shot.keyframe_frame >= 30  # a sharp frame, not one of the blurred ones
    assert shot.keyframe_s == pytest.approx(shot.keyframe_frame / FPS)


def test_the_sharpest_key_frame_is_never_a_black_frame():
    frames = [np.zeros((108, 192, 3), np.uint8)] * 20 + _one_shot_frames(30, sharp_from=0)
    result = segment_frames(((f, i / FPS) for i, f in enumerate(frames)), FPS, CFG)
    assert all(s.keyframe_frame >= 20 for s in result.shots if s.end_frame > 20)


def test_bad_files_raise_rejects_with_reasons(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video\n" * 50)
    real = Path(_video("testvideo.mp4")).read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(real[: len(real) // 3])
    fast = _write_video(tmp_path / "fast.mp4", _one_shot_frames(20), fps=1000.0)
    cases = {
        str(tmp_path / "missing.mp4"): "missing_file",
        str(tmp_path / "empty.mp4"): "empty_file",
        str(tmp_path / "text.mp4"): "undecodable",
        str(tmp_path / "truncated.mp4"): "undecodable",
        str(fast): "bad_fps",
    }
    for path, reason in cases.items():
        with pytest.raises(VideoReject) as caught:
            analyze_video(path, CFG)
        assert caught.value.reason == reason, path


# --- the Spark job ----------------------------------------------------------------------------------


def _snapshot(spark, lake, name):
    from kfr_spark import delta_io
    from kfr_spark.catalog import spec

    table = spec(name)
    cols = [c for c in table.schema.fieldNames() if c not in table.lineage_columns]
    return sorted(tuple(r) for r in delta_io.read_table(spark, lake, name).select(*cols).collect())


def test_shots_job_end_to_end(spark, lake, tmp_path):
    """Good, fileless and broken videos in one batch; reruns change nothing; new parameters re-detect exactly."""
    from kfr_spark import delta_io
    from kfr_spark.ledger import JobRun
    from kfr_spark.shots_job import detect_shots
    from kfr_spark.videos import load_catalog

    folder = tmp_path / "catalog"
    (folder / "v").mkdir(parents=True)
    frames, truth = built_video(seed=1)
    _write_video(folder / "v" / "built.mp4", frames)
    shutil.copy(_video("goldeneye-vfr-drop3.mp4"), folder / "v" / "goldeneye.mp4")
    (folder / "v" / "empty.mp4").write_bytes(b"")
    (folder / "v" / "text.mp4").write_text("not a video\n" * 50)
    real = (folder / "v" / "goldeneye.mp4").read_bytes()
    (folder / "v" / "truncated.mp4").write_bytes(real[: len(real) // 2])
    _write_video(folder / "v" / "fast.mp4", _one_shot_frames(20), fps=1000.0)
    (folder / "videos.csv").write_text(
        "video_id,title,duration_s,fps,width,height,path\n"
        "built,Built,8.2,25,192,108,v/built.mp4\n"
        "golden,GoldenEye,10.0,,1280,544,v/goldeneye.mp4\n"
        "nofile,No file,12.0,25,,,\n"
        "missing,Missing,5.0,25,,,v/missing.mp4\n"
        "empty,Empty,5.0,25,,,v/empty.mp4\n"
        "text,Text,5.0,25,,,v/text.mp4\n"
        "truncated,Truncated,5.0,25,,,v/truncated.mp4\n"
        "fast,Fast,5.0,,,,v/fast.mp4\n",
        encoding="utf-8",
    )
    cfg = CFG.model_copy(update={"uniform_shots": 6})
    load_catalog(spark, lake, cfg, [str(folder / "videos.csv")], JobRun("videos", "test"))

    summary = detect_shots(spark, lake, cfg, JobRun("shots", "test"))
    assert (summary.segmented, summary.uniform, summary.skipped) == (2, 1, 0)
    assert summary.rejects_by_reason == {"bad_fps": 1, "empty_file": 1, "missing_file": 1, "undecodable": 2}
    rejects = {r["entity_key"]: r["reason"] for r in delta_io.read_table(spark, lake, "ops.stage_rejects")
               .filter("stage = 'shots'").collect()}
    assert rejects == {"missing": "missing_file", "empty": "empty_file", "text": "undecodable",
                       "truncated": "undecodable", "fast": "bad_fps"}
    shots = delta_io.read_table(spark, lake, "silver.shots")
    by_video = {}
    for r in shots.orderBy("video_id", "shot_idx").collect():
        by_video.setdefault(r["video_id"], []).append(r)
    assert set(by_video) == {"built", "golden", "nofile"}
    assert [r["start_frame"] for r in by_video["built"]][1:] == truth
    assert [round(r["start_s"], 2) for r in by_video["golden"]] == [0.0, 3.75, 8.76]
    uniform = by_video["nofile"]
    assert [r["is_uniform"] for r in uniform] == [True] * 6 and uniform[-1]["end_s"] == 12.0
    assert all(r["keyframe_jpeg"] is None and r["detector"] == "uniform" for r in uniform)
    assert all(r["keyframe_jpeg"] is not None and r["is_uniform"] is False for r in by_video["built"])

    before = _snapshot(spark, lake, "silver.shots")
    good = ["built", "golden", "nofile"]
    rerun = detect_shots(spark, lake, cfg, JobRun("shots", "test"), only=good)
    assert (rerun.segmented, rerun.uniform, rerun.skipped) == (0, 0, 3)  # up to date: nothing decoded
    forced = detect_shots(spark, lake, cfg, JobRun("shots", "test"), force=True, only=good)
    assert forced.segmented == 2 and forced.shots_written == 0 and forced.shots_deleted == 0
    assert _snapshot(spark, lake, "silver.shots") == before  # same rows, same JPEG bytes

    # New parameters: one shot per video (no change is big enough) → the extra rows go; the hash moves.
    # Meanwhile the empty file was replaced by a real video: its reject goes, its shots come.
    shutil.copy(folder / "v" / "built.mp4", folder / "v" / "empty.mp4")
    strict = cfg.model_copy(update={"min_change": 255.0})
    changed = detect_shots(spark, lake, strict, JobRun("shots", "test"), only=[*good, "empty"])
    assert changed.segmented == 3 and changed.uniform == 0 and changed.shots_deleted == 4 + 2
    rejects = {r["entity_key"] for r in delta_io.read_table(spark, lake, "ops.stage_rejects")
               .filter("stage = 'shots'").collect()}
    assert rejects == {"missing", "text", "truncated", "fast"}
    after = {r["video_id"]: r for r in delta_io.read_table(spark, lake, "silver.shots")
             .groupBy("video_id").agg({"shot_idx": "count", "params_hash": "max"}).collect()}
    assert after["built"]["count(shot_idx)"] == 1 and after["golden"]["count(shot_idx)"] == 1
    assert after["built"]["max(params_hash)"] == params_hash(strict) != params_hash(cfg)
    assert after["nofile"]["count(shot_idx)"] == 6 and after["empty"]["count(shot_idx)"] == 1
