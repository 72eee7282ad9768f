"""Pixels: each concept is a distinct colour + texture family; shots get random variation.

A shot is rendered from one larger canvas (the concept's pattern with per-shot random position,
scale, orientation and colour jitter); each frame is a crop that drifts slowly across it, plus
per-frame noise, so frames within a shot are similar but never identical, while frames of
different concepts differ in hue and texture (which an ImageNet CNN separates easily).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from kfr_spark.synth.lexicon import CONCEPTS, Concept
from kfr_spark.synth.shots import STREAM_RENDER, Shot, VideoPlan

FOURCC = "mp4v"
_NOISE_SIGMA = 4.0
_NOISE_BANK = 8


def _hsv_to_bgr(h: float, s: float, v: float) -> np.ndarray:
    px = np.array([[[int(h) % 180, int(np.clip(s, 0, 255)), int(np.clip(v, 0, 255))]]], np.uint8)
    return cv2.cvtColor(px, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


@dataclass(frozen=True)
class ShotLook:
    """Per-shot random variation of a concept's look."""

    canvas: np.ndarray  # uint8 BGR (H + 2m, W + 2m, 3)
    margin: int
    velocity: tuple[float, float]  # pixels per second (x, y)
    start: tuple[float, float]  # initial crop offset within [0, 2m]


def _pattern(concept: Concept, rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Float32 (h, w) field in [0, 1] of the concept's texture with random variation."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ref = float(min(w, h))
    theta = np.deg2rad(concept.angle + rng.uniform(-10, 10))
    ct, st = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    phase = rng.uniform(0, 2 * np.pi)
    kind = concept.pattern
    if kind in ("stripes", "waves"):
        period = ref * rng.uniform(0.12, 0.22)
        proj = xx * ct + yy * st
        if kind == "waves":
            amp = ref * rng.uniform(0.03, 0.07)
            lam = ref * rng.uniform(0.4, 0.8)
            proj = yy + amp * np.sin(2 * np.pi * xx / lam + phase)
        p = 0.5 + 0.5 * np.sin(2 * np.pi * proj / period + phase)
        return np.clip((p - 0.5) * 2.5 + 0.5, 0, 1)
    if kind == "checkers":
        period = ref * rng.uniform(0.1, 0.18)
        xr = xx * ct + yy * st + rng.uniform(0, period)
        yr = -xx * st + yy * ct + rng.uniform(0, period)
        return ((np.floor(xr / period) + np.floor(yr / period)) % 2).astype(np.float32)
    if kind == "discs":
        p = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(4, 9))):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            r = ref * rng.uniform(0.1, 0.22)
            d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
            p = np.maximum(p, np.clip((r - d) / 2.0 + 0.5, 0, 1))
        return p
    if kind == "blobs":
        cell = max(4, int(ref * rng.uniform(0.08, 0.14)))
        small = rng.random((h // cell + 3, w // cell + 3)).astype(np.float32)
        big = cv2.resize(small, ((w // cell + 3) * cell, (h // cell + 3) * cell),
                         interpolation=cv2.INTER_CUBIC)[:h, :w]
        return np.clip((big - 0.5) * 3.0 + 0.5, 0, 1)
    if kind == "dots":
        p = np.zeros((h, w), np.float32)
        n = int(w * h / 300 * rng.uniform(0.7, 1.3))
        xs, ys = rng.integers(0, w, n), rng.integers(0, h, n)
        rs = rng.integers(1, 3, n)
        for x, y, r in zip(xs.tolist(), ys.tolist(), rs.tolist()):
            cv2.circle(p, (x, y), r, 1.0, -1, lineType=cv2.LINE_AA)
        return p
    if kind == "rings":
        cx, cy = rng.uniform(0.2 * w, 0.8 * w), rng.uniform(0.2 * h, 0.8 * h)
        period = ref * rng.uniform(0.1, 0.18)
        d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        p = 0.5 + 0.5 * np.sin(2 * np.pi * d / period + phase)
        return np.clip((p - 0.5) * 2.5 + 0.5, 0, 1)
    if kind == "bars":
        p = np.zeros((h, w), np.float32)
        x = int(rng.integers(0, 6))
        while x < w:
            bw = int(ref * rng.uniform(0.06, 0.16))
            top = int(h * rng.uniform(0.15, 0.7))
            p[top:, x:x + bw] = 1.0
            # lit windows
            p[top + 3:, x + 2:x + bw - 2:4][::5] = 0.35
            x += bw + int(rng.integers(1, 5))
        return p
    if kind == "gradient":
        proj = xx * ct + yy * st
        proj = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
        band = 0.12 * np.sin(2 * np.pi * proj * rng.uniform(2, 4) + phase)
        return np.clip(proj + band, 0, 1).astype(np.float32)
    raise ValueError(f"unknown pattern {kind!r}")


def shot_look(concept: int, rng: np.random.Generator, size: tuple[int, int]) -> ShotLook:
    """Draw one shot's variation of ``concept`` for frames of ``size`` = (width, height)."""
    c = CONCEPTS[concept]
    w, h = size
    m = max(4, int(round(min(w, h) * 0.1)))
    cw, ch = w + 2 * m, h + 2 * m
    p = _pattern(c, rng, cw, ch)
    hue = c.hue + rng.uniform(-4, 4)
    sat = c.sat * rng.uniform(0.9, 1.05)
    val = c.val * rng.uniform(0.88, 1.08)
    fg = _hsv_to_bgr(hue, sat, val)
    bg = _hsv_to_bgr(hue, sat * 0.7, val * 0.3)
    if c.pattern == "dots":  # stars: bright specks on the concept's dark colour
        fg, bg = _hsv_to_bgr(hue, 40, 250), _hsv_to_bgr(hue, sat, val)
    elif c.pattern == "discs":  # plates on a light table cloth
        bg = _hsv_to_bgr(hue, sat * 0.25, min(val * 1.05, 250))
    canvas = bg[None, None, :] * (1.0 - p[..., None]) + fg[None, None, :] * p[..., None]
    speed = rng.uniform(2.0, 8.0)
    ang = rng.uniform(0, 2 * np.pi)
    return ShotLook(
        canvas=np.clip(canvas, 0, 255).astype(np.uint8),
        margin=m,
        velocity=(speed * float(np.cos(ang)), speed * float(np.sin(ang))),
        start=(float(rng.uniform(0, 2 * m)), float(rng.uniform(0, 2 * m))),
    )


def _bounce(x: float, hi: float) -> int:
    """Reflect x into [0, hi] (ping-pong motion)."""
    if hi <= 0:
        return 0
    period = 2 * hi
    x = x % period
    return int(round(period - x if x > hi else x))


def look_frame(look: ShotLook, t: float, size: tuple[int, int]) -> np.ndarray:
    """The noise-free frame of a shot ``t`` seconds into it."""
    w, h = size
    span = 2 * look.margin
    ox = _bounce(look.start[0] + look.velocity[0] * t, span)
    oy = _bounce(look.start[1] + look.velocity[1] * t, span)
    return look.canvas[oy:oy + h, ox:ox + w]


def concept_frame(concept: int, rng: np.random.Generator,
                  size: tuple[int, int] = (256, 144)) -> np.ndarray:
    """One BGR uint8 frame (height, width, 3) showing ``concept`` with random variation and noise."""
    look = shot_look(concept, rng, size)
    frame = look_frame(look, float(rng.uniform(0, 2.0)), size).astype(np.int16)
    noise = np.rint(rng.normal(0, _NOISE_SIGMA, frame.shape)).astype(np.int16)
    return np.clip(frame + noise, 0, 255).astype(np.uint8)


def render_frames(shots: tuple[Shot, ...] | list[Shot], fps: int, size: tuple[int, int],
                  rng: np.random.Generator):
    """Yield every frame (BGR uint8) of a video made of ``shots`` (contiguous, from frame 0)."""
    w, h = size
    bank = np.rint(rng.normal(0, _NOISE_SIGMA, (_NOISE_BANK, h, w, 3))).astype(np.int16)
    n = len(shots)
    looks = [shot_look(s.look, rng, size) for s in shots]
    picks = rng.integers(0, _NOISE_BANK, size=shots[-1].end_frame if n else 0)
    for i, s in enumerate(shots):
        nxt = shots[i + 1] if i + 1 < n else None
        fade_in = s.fade_frames - s.fade_frames // 2 if s.transition_in == "fade" else 0
        fade_out = (nxt.fade_frames // 2) if (nxt is not None and nxt.transition_in == "fade") else 0
        for f in range(s.start_frame, s.end_frame):
            frame = look_frame(looks[i], (f - s.start_frame) / fps, size).astype(np.int16)
            k = f - s.start_frame
            alpha = 1.0
            if k < fade_in:  # from black; the boundary frame itself is black
                alpha = k / fade_in
            back = s.end_frame - f  # 1 for the last frame of the shot
            if back <= fade_out:
                alpha = min(alpha, back / (fade_out + 1))
            if alpha < 1.0:
                frame = np.rint(frame * alpha).astype(np.int16)
            yield np.clip(frame + bank[picks[f]], 0, 255).astype(np.uint8)


def render_video(plan: VideoPlan, path: Path | str, *, seed: int = 0) -> Path:
    """Write ``plan`` as an MP4 (OpenCV VideoWriter, fourcc 'mp4v') at ``path``; returns the path.

    Pixels come from the stream SeedSequence([seed, STREAM_RENDER, video_idx]), so a video renders
    the same alone or inside ``generate``. Written to a temporary name, then renamed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".part.mp4")
    size = (plan.width, plan.height)
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*FOURCC), float(plan.fps), size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot open a {FOURCC} VideoWriter for {tmp}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, STREAM_RENDER, plan.video_idx]))
    try:
        count = 0
        for frame in render_frames(plan.shots, plan.fps, size, rng):
            writer.write(frame)
            count += 1
    finally:
        writer.release()
    if count != plan.n_frames:
        raise RuntimeError(f"rendered {count} frames, planned {plan.n_frames}")
    os.replace(tmp, path)
    return path
