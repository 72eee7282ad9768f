"""Shot boundaries and key frames from a video file: the pure logic of `kfr shots` (no Spark here).

One pass over the decoded frames computes, per frame, a small feature vector: a 16x9 grid of the mean
Y, Cr, Cb and edge energy (|Laplacian|) of the frame at `analysis_width`, plus its mean and brightest-cell luma.
`detect_cuts(stats, fps, params)` turns those into boundaries; it is a pure function over arrays, tested
without video.

The detector, per frame change d[i] = weighted mean |feature(i) - feature(i-1)|:

* **hard cut** at i when d[i] is above an absolute floor (`min_change`), above the local median by
  `threshold` robust standard deviations (median/MAD over +-`window` frames), *isolated* (at least
  `isolation` times the mean change of its +-2 neighbours: fades, dissolves and sustained fast motion change
  every frame a little, a cut changes one frame a lot), and not a *flash* (the frame before i is not
  matched again within `flash_s`: a flash, an explosion or a passing occluder comes back, a cut does not);
* **dip to black** (fade out, black, fade in): one boundary at the last darkest frame, unless a hard cut
  already lies in the transition or the content after it is the content before it (a fade to black and
  back to the same picture is not a new shot). A black hold longer than `max_black_s` is a shot of its
  own (boundaries where it starts and where it ends). A dip touching the start or end of the video is not a
  boundary;
* **dissolve** (cross-fade): a run of elevated change, at most `max_transition_s` long, whose end points
  differ (>= `min_change`), whose path is straight (the per-frame changes add up to about the end-to-end
  change, as in a linear blend and unlike motion) and whose middle frame is a blend of its end points:
  one boundary where the blend is half way;
* **minimum shot length**: boundaries closer than `min_shot_s` keep the strongest (non-maximum suppression),
  then none closer than `min_shot_s` to the previous one or to either end of the video.

Every decision depends only on frames within a bounded distance, so `ShotSegmenter` runs the same code on a
sliding tail of the stream and gets exactly the batch result (tested); that lets `analyze_video` decode each
video once and keep only the frames it may still need (a short ring buffer and a few candidate key frames
per open shot), whatever the length of the video.

Times come from the frame timestamps (CAP_PROP_POS_MSEC), so variable frame rate videos get true times.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

# FFmpeg prints every container problem to stderr ("moov atom not found"); a rejected file says it once.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from kfr_spark.config import ShotsConfig  # noqa: E402

#: Bumped whenever the same parameters would give different shots or key frames.
DETECTOR_VERSION = 1
DETECTOR_NAME = "kfr-adaptive"
UNIFORM_NAME = "uniform"

THUMB_W, THUMB_H = 16, 9
N_CELLS = THUMB_W * THUMB_H
N_CHANNELS = 4  # Y, Cr, Cb, edge energy
# The weight of each channel in the change score (0-255 units).
_CHANNEL_WEIGHTS = np.array([1.0, 1.0, 1.0, 0.5], dtype=np.float32)
_MAD_TO_SIGMA = 1.4826
_NOISE_FLOOR = 0.5  # the smallest robust sigma: a perfectly static scene still has coding noise
_FLASH_RETURN = 0.4  # a frame within flash_s this close (relative to the jump) to the one before: a flash
_DARK_TOL = 0.6  # luma levels above the darkest that still count as "the darkest" of a dip
_RAMP_EPS = 0.2  # luma step that still continues a fade ramp
_GRADUAL_RATIO = 2.5  # change above this many times the local background (25th percentile) is elevated
_GRADUAL_FLOOR = 1.0
_STRAIGHTNESS = 0.6  # end-to-end change / summed per-frame change of a dissolve
_BLEND_RESIDUAL = 0.35  # middle frame's distance from the best blend of the end points, relative
_SHARP_MIN = 4.0  # variance of Laplacian below this: a near-uniform frame, not a key frame candidate
_MIDDLE_SAMPLES = 16


# ---------------------------------------------------------------------------------------------
# parameters


def params_hash(params: ShotsConfig) -> str:
    """A stable hash of everything that changes the detector's output (not the uniform fallback's)."""
    # Limits that only decide whether a file is rejected, and how the work is spread, change no shot.
    relevant = params.model_dump(mode="json", exclude={"uniform_shots", "max_duration_s", "videos_per_task",
                                                        "decode_threads", "max_fps", "min_decoded_fraction"})
    payload = json.dumps({"detector": DETECTOR_NAME, "version": DETECTOR_VERSION, **relevant}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def uniform_params_hash(params: ShotsConfig) -> str:
    payload = json.dumps({"detector": UNIFORM_NAME, "version": 1, "uniform_shots": params.uniform_shots},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class _Frames:
    """Parameters converted to frame counts at one frame rate."""

    window: int
    min_shot: int
    flash: int
    transition: int
    hold: int

    @property
    def reach(self) -> int:
        """How far (frames) any decision looks from the frame it is about, either way."""
        return self.hold + self.transition + self.window + self.flash + self.min_shot + 4


def _frames(fps: float, params: ShotsConfig) -> _Frames:
    return _Frames(
        window=params.window,
        min_shot=max(1, int(round(params.min_shot_s * fps))),
        flash=max(1, int(math.ceil(params.flash_s * fps))),
        transition=max(2, int(math.ceil(params.max_transition_s * fps))),
        hold=max(2, int(math.ceil(params.max_black_s * fps))),
    )


# ---------------------------------------------------------------------------------------------
# per-frame features


@dataclass
class FrameStats:
    """Per-frame features of a run of frames (the input of `detect_cuts`)."""

    thumbs: np.ndarray  # uint8 (n, N_CELLS * N_CHANNELS): Y, Cr, Cb, edge per cell, cell-major
    luma: np.ndarray  # float32 (n,): mean Y of the analysis frame
    bright: np.ndarray  # float32 (n,): Y of the brightest cell (a frame is dark when this is low)
    times: np.ndarray | None = None  # float64 (n,) seconds; default i / fps

    def __post_init__(self) -> None:
        n = len(self.luma)
        if self.thumbs.shape != (n, N_CELLS * N_CHANNELS) or len(self.bright) != n:
            raise ValueError("FrameStats arrays must have one row per frame")
        if self.times is not None and len(self.times) != n:
            raise ValueError("FrameStats.times must have one entry per frame")

    def __len__(self) -> int:
        return len(self.luma)

    @classmethod
    def from_rows(cls, thumbs: list[np.ndarray], luma: list[float], bright: list[float],
                  times: list[float] | None = None) -> "FrameStats":
        n = len(luma)
        return cls(
            thumbs=np.asarray(thumbs, dtype=np.uint8).reshape(n, N_CELLS * N_CHANNELS),
            luma=np.asarray(luma, dtype=np.float32),
            bright=np.asarray(bright, dtype=np.float32),
            times=None if times is None else np.asarray(times, dtype=np.float64),
        )

    @classmethod
    def from_frames(cls, frames: Iterable[np.ndarray], analysis_width: int = 160) -> "FrameStats":
        """Stats of BGR frames (tests and tools; the job computes them while decoding)."""
        rows = [frame_features(analysis_frame(f, analysis_width)) for f in frames]
        return cls.from_rows([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])


def resize_to_width(image: np.ndarray, width: int) -> np.ndarray:
    """Area-averaged downscale to `width` (never upscales)."""
    h, w = image.shape[:2]
    if w <= width:
        return image
    height = max(2, int(round(h * width / w)))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def analysis_size(width: int) -> tuple[int, int]:
    """The detection frame size: `width` rounded down to whole 16x9 cells (the aspect ratio is not kept)."""
    cell = max(1, width // THUMB_W)
    return cell * THUMB_W, cell * THUMB_H


def analysis_frame(bgr: np.ndarray, width: int) -> np.ndarray:
    """The detection-size frame: point-sample down to at most twice its size, then interpolate.

    The point sampling costs some aliasing that the 16x9 cell means average away; it makes the downscale
    of a 1080p frame several times cheaper.
    """
    aw, ah = analysis_size(width)
    step = max(1, min(bgr.shape[1] // aw, bgr.shape[0] // ah))
    if step > 1:
        bgr = bgr[::step, ::step]
    return cv2.resize(bgr, (aw, ah), interpolation=cv2.INTER_LINEAR)


def frame_features(analysis_bgr: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(thumb uint8 (N_CELLS*N_CHANNELS,), mean luma, brightest-cell luma) of one analysis-size BGR frame."""
    ycc = cv2.cvtColor(analysis_bgr, cv2.COLOR_BGR2YCrCb)
    edges = cv2.convertScaleAbs(cv2.Laplacian(cv2.extractChannel(ycc, 0), cv2.CV_16S, ksize=3))
    cells = cv2.resize(ycc, (THUMB_W, THUMB_H), interpolation=cv2.INTER_AREA)
    edge_cells = cv2.resize(edges, (THUMB_W, THUMB_H), interpolation=cv2.INTER_AREA)
    thumb = np.concatenate([cells, edge_cells[..., None]], axis=2).reshape(-1)
    y = cells[..., 0]
    return thumb, float(y.mean()), float(y.max())


def frame_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Weighted mean absolute difference of feature rows (broadcasts over leading axes), 0-255 units."""
    diff = np.abs(a.astype(np.float32) - b.astype(np.float32))
    diff = diff.reshape(diff.shape[:-1] + (N_CELLS, N_CHANNELS))
    return (diff.mean(axis=-2) @ _CHANNEL_WEIGHTS) / float(_CHANNEL_WEIGHTS.sum())


# ---------------------------------------------------------------------------------------------
# detection


@dataclass(frozen=True)
class Boundary:
    """The first frame of a new shot, how it was found and how strong the change is."""

    frame: int
    time_s: float
    kind: str  # cut | dip | dissolve | black_start | black_end
    strength: float


def _rolling(values: np.ndarray, half: int) -> np.ndarray:
    padded = np.pad(values, half, mode="edge")
    return np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (start, end) of each run of True."""
    if not mask.any():
        return []
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(s), int(e) - 1) for s, e in zip(edges[::2], edges[1::2])]


def _events(stats: FrameStats, base: int, final: bool, fr: _Frames, p: ShotsConfig) -> list[tuple[int, float, str]]:
    """Every boundary candidate (view index, strength, kind) of a view starting at global frame `base`.

    Candidates within `fr.reach` of the view's ends may be wrong (missing context); callers only keep
    decisions far enough inside.
    """
    th = stats.thumbs
    n = len(th)
    if n < 2:
        return []
    d = np.zeros(n, dtype=np.float32)
    d[1:] = frame_distance(th[:-1], th[1:])
    if base > 0:
        d[0] = d[1]  # unknown; only frames outside the decided range look at it
    win = _rolling(d, fr.window)
    med = np.median(win, axis=1)
    mad = np.median(np.abs(win - med[:, None]), axis=1)
    sigma = np.maximum(_MAD_TO_SIGMA * mad, _NOISE_FLOOR)
    near = _rolling(d, 2)
    neighbours = (near.sum(axis=1) - d) / 4.0
    idx = np.arange(n)
    cand = (idx >= 1) & (d >= p.min_change) & (d >= med + p.threshold * sigma) & (d >= p.isolation * neighbours)

    cuts: list[int] = []
    for i in np.flatnonzero(cand):
        later = th[i + 1:min(n, i + 1 + fr.flash)]
        if len(later) and float(frame_distance(th[i - 1][None, :], later).min()) < _FLASH_RETURN * d[i]:
            continue  # the picture before comes back: a flash starts here
        earlier = th[max(0, i - 1 - fr.flash):i - 1]
        if len(earlier) and float(frame_distance(th[i][None, :], earlier).min()) < _FLASH_RETURN * d[i]:
            continue  # the picture of just before the jump is back: a flash ends here
        cuts.append(int(i))
    events: list[tuple[int, float, str]] = [(i, float(d[i]), "cut") for i in cuts]
    cut_arr = np.array(cuts, dtype=np.int64)

    def cut_within(lo: int, hi: int) -> bool:
        return bool(((cut_arr >= lo) & (cut_arr <= hi)).any()) if len(cut_arr) else False

    luma = stats.luma
    dark = stats.bright < p.dark_luma
    for s, e in _runs(dark):
        at_start = base + s == 0
        at_end = e == n - 1
        long_hold = e - s + 1 > fr.hold
        if at_end and not final and not long_hold:
            continue  # undecided: the run may go on
        if long_hold:  # a black hold: a shot of its own
            if not at_start and s > 0 and not cut_within(s - fr.transition, s + 1):
                events.append((s, float(frame_distance(th[s - 1], th[s])), "black_start"))
            if not at_end and not cut_within(e, e + fr.transition + 1):
                events.append((e, float(frame_distance(th[e], th[e + 1])), "black_end"))
            continue
        if at_start or at_end or s == 0:
            continue
        a = s - 1  # walk back over the fade out to where it began
        while a - 1 >= 0 and s - a < fr.transition and luma[a - 1] > luma[a] + _RAMP_EPS:
            a -= 1
        b = e + 1  # and forward over the fade in
        while b + 1 < n and b - e < fr.transition and luma[b + 1] > luma[b] + _RAMP_EPS:
            b += 1
        if b + 1 >= n and not final:
            continue  # the fade in may go on
        if cut_within(a, b + 1):
            continue  # a hard cut into or out of the black is the boundary
        change = float(frame_distance(th[a], th[b]))
        if change < p.min_change:
            continue  # same picture before and after: a fade within one shot
        seg = luma[s:e + 1]
        last_darkest = s + int(np.flatnonzero(seg <= seg.min() + _DARK_TOL)[-1])
        events.append((last_darkest, change, "dip"))

    if p.detect_dissolves:
        background = np.percentile(win, 25, axis=1)
        elevated = (d >= np.maximum(_GRADUAL_FLOOR, _GRADUAL_RATIO * background)) & ~dark
        elevated[1:] &= ~dark[:-1]
        for s, e in _runs(elevated):
            if e - s + 1 < 3 or e - s + 1 > fr.transition or s < 1 or e + 1 >= n:
                continue
            a, b = s - 1, e
            if dark[max(0, a - fr.transition):min(n, b + fr.transition + 1)].any() or cut_within(a, b + 1):
                continue
            if min(luma[a], luma[b]) < 0.5 * max(luma[a], luma[b]):
                continue  # a fade through darkness, not a cross-fade
            change = float(frame_distance(th[a], th[b]))
            if change < p.min_change or change < _STRAIGHTNESS * float(d[s:e + 1].sum()):
                continue
            fa, fb = th[a].astype(np.float32), th[b].astype(np.float32)
            mid = th[(s + e) // 2].astype(np.float32)
            span = fa - fb
            alpha = float(np.clip(np.dot(mid - fb, span) / max(float(np.dot(span, span)), 1e-6), 0.0, 1.0))
            if float(frame_distance(mid, alpha * fa + (1 - alpha) * fb)) > _BLEND_RESIDUAL * change:
                continue  # not a blend of its end points: motion
            seg = th[s:e + 1]
            half = np.abs(frame_distance(seg, th[a][None, :]) - frame_distance(seg, th[b][None, :]))
            events.append((s + int(np.argmin(half)), change, "dissolve"))
    return events


def _suppress(events: list[tuple[int, float, str]], min_shot: int) -> list[tuple[int, float, str]]:
    """Non-maximum suppression: keep an event unless a stronger one (or an equal, earlier one) is near."""
    events = sorted(events)
    kept = []
    for k, (i, strength, kind) in enumerate(events):
        beaten = False
        for j in range(k - 1, -1, -1):
            if i - events[j][0] >= min_shot:
                break
            if events[j][1] >= strength:
                beaten = True
                break
        if not beaten:
            for j in range(k + 1, len(events)):
                if events[j][0] - i >= min_shot:
                    break
                if events[j][1] > strength:
                    beaten = True
                    break
        if not beaten:
            kept.append((i, strength, kind))
    return kept


def _decide(stats: FrameStats, base: int, lo: int, hi: int, prev: int, final: bool, fps: float,
            p: ShotsConfig) -> list[Boundary]:
    """The boundaries with global frame in [lo, hi), given the last accepted boundary `prev` (0: none)."""
    fr = _frames(fps, p)
    n_total = base + len(stats)
    events = _suppress(_events(stats, base, final, fr, p), fr.min_shot)
    out: list[Boundary] = []
    for i, strength, kind in events:
        g = base + i
        if g < lo or g >= hi:
            continue
        if g - prev < fr.min_shot:
            continue
        out.append(Boundary(g, _time_of(stats, i, g, fps), kind, round(strength, 4)))
        prev = g
    if final and out and n_total - out[-1].frame < fr.min_shot:
        out.pop()
    return out


def _time_of(stats: FrameStats, i: int, g: int, fps: float) -> float:
    if stats.times is not None:
        return float(stats.times[i])
    return g / fps


def detect_cuts(frame_stats: FrameStats, fps: float, params: ShotsConfig) -> list[Boundary]:
    """The shot boundaries of a whole video (each the first frame of a new shot), in order."""
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be positive, got {fps}")
    return _decide(frame_stats, 0, 1, len(frame_stats), 0, True, fps, params)


class ShotSegmenter:
    """`detect_cuts` over a stream: push frames' features, get boundaries once they are certain.

    Keeps only a tail of the stream. `push` returns (new boundaries, settled): every frame before `settled`
    belongs to a known shot. `finish` returns the rest. The result equals `detect_cuts` on the whole stream.
    """

    def __init__(self, fps: float, params: ShotsConfig, chunk: int = 64) -> None:
        if not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps, self.params = fps, params
        reach = _frames(fps, params).reach
        self.horizon = reach  # lookahead before a frame's shot is settled
        self.history = 2 * reach + 2  # frames kept before the settled position
        self.chunk = chunk
        self.settled = 0
        self.prev = 0
        self._base = 0
        self._thumbs: list[np.ndarray] = []
        self._luma: list[float] = []
        self._bright: list[float] = []
        self._times: list[float] = []
        self.n = 0

    def push(self, thumb: np.ndarray, luma: float, bright: float, time_s: float) -> tuple[list[Boundary], int]:
        self._thumbs.append(thumb)
        self._luma.append(luma)
        self._bright.append(bright)
        self._times.append(time_s)
        self.n += 1
        if self.n - self.settled < self.horizon + self.chunk:
            return [], self.settled
        hi = self.n - self.horizon
        found = self._run(hi, final=False)
        self.settled = hi
        self._trim()
        return found, self.settled

    def finish(self) -> list[Boundary]:
        found = self._run(self.n, final=True) if self.n else []
        self.settled = self.n
        return found

    def _run(self, hi: int, final: bool) -> list[Boundary]:
        stats = FrameStats.from_rows(self._thumbs, self._luma, self._bright, self._times)
        found = _decide(stats, self._base, max(1, self.settled), hi, self.prev, final, self.fps, self.params)
        if found:
            self.prev = found[-1].frame
        return found

    def _trim(self) -> None:
        drop = self.settled - self.history - self._base
        if drop > self.chunk:
            del self._thumbs[:drop], self._luma[:drop], self._bright[:drop], self._times[:drop]
            self._base += drop


# ---------------------------------------------------------------------------------------------
# key frames and shots


@dataclass(frozen=True)
class ShotRecord:
    shot_idx: int
    start_s: float
    end_s: float
    start_frame: int | None
    end_frame: int | None  # exclusive
    keyframe_s: float | None = None
    keyframe_frame: int | None = None
    keyframe_jpeg: bytes | None = None
    keyframe_width: int | None = None
    keyframe_height: int | None = None
    is_uniform: bool = False
    detector: str = DETECTOR_NAME
    boundary_kind: str = "start"


def sharpness(image_bgr: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image: higher is sharper (and more textured)."""
    grey = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def encode_jpeg(image_bgr: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality),
                                               cv2.IMWRITE_JPEG_OPTIMIZE, 0])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


@dataclass
class _OpenShot:
    """Candidate key frames of the shot being read: a few images, never the whole shot."""

    start: int
    start_s: float
    first: tuple[int, float, np.ndarray] | None = None
    best: tuple[float, int, float, np.ndarray] | None = None  # (sharpness, frame, time, image)
    samples: list[tuple[int, float, np.ndarray]] = field(default_factory=list)
    stride: int = 1
    seen: int = 0

    def add(self, frame: int, time_s: float, image: np.ndarray | None, candidate: bool) -> None:
        """Offer one frame in order; `image` is None for frames whose picture was not kept."""
        if image is None:
            return
        if self.first is None:
            self.first = (frame, time_s, image)
        if self.seen % self.stride == 0:  # evenly spaced pictures, thinned by half when there are too many
            self.samples.append((frame, time_s, image))
            if len(self.samples) > _MIDDLE_SAMPLES:
                self.samples = self.samples[::2]
                self.stride *= 2
        self.seen += 1
        if candidate:
            score = sharpness(image)
            if score >= _SHARP_MIN and (self.best is None or score > self.best[0]):
                self.best = (score, frame, time_s, image)

    def choose(self, mode: str, end: int) -> tuple[int, float, np.ndarray] | None:
        """The key frame (frame, time, picture), or None when no picture of this shot was kept."""
        if self.first is None:
            return None
        if mode == "first":
            return self.first
        if mode == "sharpest" and self.best is not None:
            return self.best[1], self.best[2], self.best[3]
        middle = self.start + (end - self.start - 1) // 2
        return min(self.samples, key=lambda s: (abs(s[0] - middle), s[0]))


@dataclass
class VideoShots:
    shots: list[ShotRecord]
    frames: int
    fps: float
    duration_s: float
    boundaries: list[Boundary]


class VideoReject(Exception):
    """A video that cannot be segmented, with a snake_case reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def local_path(uri: str) -> str:
    if uri.startswith("file://"):
        return uri[len("file://"):]
    return uri


def _sane_fps(fps: float | None, params: ShotsConfig) -> bool:
    return fps is not None and math.isfinite(fps) and 0 < fps <= params.max_fps


@dataclass(frozen=True)
class Decoded:
    """One decoded BGR frame and its timestamp (None: unknown)."""

    color: np.ndarray
    time_s: float | None


def decode(cap) -> Iterator[Decoded]:
    """Every frame of an opened capture, once, with its presentation time.

    (OpenCV can hand back the raw luma plane without the colour conversion, which would be cheaper, but the
    mode cannot be switched per frame, and key frames need colour: every frame is converted.)
    """
    while True:
        ok, frame = cap.read()
        if not ok or frame is None:
            return
        yield Decoded(frame, float(cap.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0)


def open_capture(path: str, params: ShotsConfig):
    """OpenCV's FFmpeg reader as the detector uses it (benchmarks time the same reader)."""
    return cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, int(params.decode_threads)])


def analyze_video(uri: str, params: ShotsConfig, *, catalog_fps: float | None = None) -> VideoShots:
    """Decode a video once and return its shots with key frames; raise VideoReject for a bad file."""
    path = local_path(uri)
    if "://" not in path:
        p = Path(path)
        if not p.is_file():
            raise VideoReject("missing_file", f"no file at {path}")
        if p.stat().st_size == 0:
            raise VideoReject("empty_file", f"{path} is empty")
    cap = open_capture(path, params)
    try:
        if not cap.isOpened():
            raise VideoReject("undecodable", f"cannot open {path}: not a video, or truncated before its index")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if not _sane_fps(fps, params):
            if fps > params.max_fps or not _sane_fps(catalog_fps, params):
                raise VideoReject("bad_fps", f"frame rate {fps!r} (catalog {catalog_fps!r}) outside (0, {params.max_fps}]")
            fps = float(catalog_fps)
        return segment(decode(cap), fps, params, declared=declared, name=path)
    finally:
        cap.release()


def _sample_every(fps: float, params: ShotsConfig) -> int:
    return max(1, int(round(fps / params.keyframe_samples_per_s)))


def segment_frames(frames: Iterable[tuple[np.ndarray, float | None]], fps: float, params: ShotsConfig, *,
                   declared: int = 0, name: str = "video") -> VideoShots:
    """Shots and key frames of a stream of (BGR frame, timestamp s or None) pairs (tests and tools)."""
    return segment((Decoded(f, t) for f, t in frames), fps, params, declared=declared, name=name)


def segment(frames: Iterable[Decoded], fps: float, params: ShotsConfig, *, declared: int = 0,
            name: str = "video") -> VideoShots:
    """Shots and key frames of a decoded stream, in one pass, holding a bounded number of pictures."""
    seg = ShotSegmenter(fps, params)
    sample_every = _sample_every(fps, params)
    every_frame = params.keyframe == "first"
    ring: deque[tuple[int, float, np.ndarray | None, bool]] = deque()  # frames not yet given to a shot
    shots: list[ShotRecord] = []
    boundaries: list[Boundary] = []
    pending: deque[Boundary] = deque()
    state: dict = {"open": None}

    def close(open_shot: _OpenShot, end: int, end_s: float) -> None:
        chosen = open_shot.choose(params.keyframe, end)
        if chosen is None:
            shots.append(ShotRecord(shot_idx=len(shots), start_s=open_shot.start_s, end_s=end_s,
                                    start_frame=open_shot.start, end_frame=end))
            return
        frame, time_s, image = chosen
        shots.append(ShotRecord(
            shot_idx=len(shots), start_s=open_shot.start_s, end_s=end_s, start_frame=open_shot.start,
            end_frame=end, keyframe_s=time_s, keyframe_frame=frame,
            keyframe_jpeg=encode_jpeg(image, params.jpeg_quality),
            keyframe_width=int(image.shape[1]), keyframe_height=int(image.shape[0]),
        ))

    def feed(upto: int) -> None:
        while ring and ring[0][0] < upto:
            frame, time_s, image, usable = ring.popleft()
            open_shot: _OpenShot | None = state["open"]
            if pending and pending[0].frame == frame:
                pending.popleft()
                if open_shot is not None:
                    close(open_shot, frame, time_s)
                open_shot = None
            if open_shot is None:
                open_shot = _OpenShot(start=frame, start_s=time_s)
                state["open"] = open_shot
            open_shot.add(frame, time_s, image, usable and frame % sample_every == 0)

    times_ok = True
    last_time = -math.inf
    step_times: deque[float] = deque(maxlen=33)
    n = 0
    for item in frames:
        thumb, luma, bright = frame_features(analysis_frame(item.color, params.analysis_width))
        t = item.time_s if item.time_s is not None else n / fps
        if not math.isfinite(t) or t <= last_time:
            times_ok = False  # broken timestamps: the nominal rate from here on
        if times_ok:
            last_time = t
            step_times.append(t)
        else:
            t = n / fps
        key = None
        if every_frame or n % sample_every == 0:
            key = np.ascontiguousarray(resize_to_width(item.color, params.keyframe_max_width))
        ring.append((n, t, key, bright >= params.dark_luma))
        found, settled = seg.push(thumb, luma, bright, t)
        boundaries.extend(found)
        pending.extend(found)
        feed(settled)
        n += 1
    if n == 0:
        raise VideoReject("zero_frames", f"{name}: no frame could be decoded")
    if declared > 0 and n < params.min_decoded_fraction * declared:
        raise VideoReject("truncated", f"{name}: decoded {n} of {declared} frames")
    found = seg.finish()
    boundaries.extend(found)
    pending.extend(found)
    last_t = ring[-1][1]
    feed(n)
    step = 1.0 / fps
    if len(step_times) >= 2 and times_ok:
        step = float(np.median(np.diff(np.asarray(step_times))))
    end_s = float(last_t) + step
    open_shot = state["open"]
    if open_shot is not None:
        close(open_shot, n, end_s)
    return VideoShots(shots=shots, frames=n, fps=fps, duration_s=end_s, boundaries=boundaries)


def uniform_shots(duration_s: float, count: int) -> list[ShotRecord]:
    """`count` equal slices of a video without a file (the KFRCI fallback), no key frames."""
    count = max(1, int(count))
    edges = [duration_s * k / count for k in range(count + 1)]
    edges[-1] = float(duration_s)
    return [
        ShotRecord(shot_idx=k, start_s=float(edges[k]), end_s=float(edges[k + 1]), start_frame=None,
                   end_frame=None, is_uniform=True, detector=UNIFORM_NAME)
        for k in range(count)
    ]
