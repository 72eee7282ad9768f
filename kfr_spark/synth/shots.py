"""Video plans: duration, shots (with known boundaries and concepts), comment budget."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kfr_spark.synth.config import SynthConfig
from kfr_spark.synth.lexicon import CONCEPTS
from kfr_spark.synth.users import STREAM_GLOBAL, concept_prior

STREAM_VIDEO_PLAN = 1  # SeedSequence([seed, 1, video_idx]): shots of one video
STREAM_COMMENTS = 2  # SeedSequence([seed, 2, video_idx]): comments of one video
STREAM_RENDER = 3  # SeedSequence([seed, 3, video_idx]): pixels of one video

ROW_ID_BASE = 3_000_000_000  # comment row ids are ROW_ID_BASE + global comment ordinal


@dataclass(frozen=True)
class Shot:
    """One shot: frames [start_frame, end_frame). For a fade, the boundary is the fade's middle:
    the last ``fade_frames // 2`` frames of the previous shot fade to black and the first
    ``fade_frames - fade_frames // 2`` frames of this one fade in from black."""

    idx: int
    start_frame: int
    end_frame: int
    concept: int
    transition_in: str  # 'cut' | 'fade'
    fade_frames: int = 0  # 0 for a cut
    popularity: float = 1.0  # planted per-shot popularity multiplier
    look: int = -1  # the concept whose look is rendered; -1: the shot's own concept

    def __post_init__(self) -> None:
        if self.look < 0:
            object.__setattr__(self, "look", self.concept)

    @property
    def n_frames(self) -> int:
        return self.end_frame - self.start_frame


@dataclass(frozen=True)
class VideoPlan:
    video_idx: int
    video_id: str
    chatid: int
    title: str
    fps: int
    n_frames: int
    width: int
    height: int
    shots: tuple[Shot, ...]
    upload_ts: int
    n_comments: int
    row_id_start: int  # row id of this video's first comment (posting order)

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.fps

    def shot_bounds_s(self) -> tuple[np.ndarray, np.ndarray]:
        starts = np.array([s.start_frame for s in self.shots], dtype=np.float64) / self.fps
        ends = np.array([s.end_frame for s in self.shots], dtype=np.float64) / self.fps
        return starts, ends

    def concept_mix(self, n_concepts: int) -> np.ndarray:
        """Share of the video's duration showing each concept."""
        mix = np.zeros(n_concepts)
        for s in self.shots:
            mix[s.concept] += s.n_frames
        return mix / self.n_frames


def video_id_of(video_idx: int) -> str:
    return f"syn{video_idx:06d}"


@dataclass(frozen=True)
class CatalogPlan:
    """Per-video quantities that need a global view (comment budgets, ids), O(n_videos)."""

    comment_counts: np.ndarray  # int64 per video, sums to n_comments
    row_id_starts: np.ndarray  # int64
    chatids: np.ndarray  # int64, increasing
    upload_ts: np.ndarray  # int64, increasing
    prior: np.ndarray  # concept popularity


def plan_catalog(config: SynthConfig) -> CatalogPlan:
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, STREAM_GLOBAL, 1]))
    n = config.n_videos
    w = np.exp(config.video_comment_sigma * rng.standard_normal(n))
    counts = rng.multinomial(config.n_comments, w / w.sum()).astype(np.int64)
    starts = ROW_ID_BASE + np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    chatids = np.sort(rng.choice(30_000_000, size=n, replace=False).astype(np.int64) + 1_000_000)
    lo, hi = config.upload_period
    upload = np.sort(rng.integers(lo, hi + 1, size=n, dtype=np.int64))
    return CatalogPlan(counts, starts, chatids, upload, concept_prior(config))


def plan_video(config: SynthConfig, video_idx: int, catalog: CatalogPlan | None = None) -> VideoPlan:
    """The shots of one video, from its own seed stream (independent of every other video)."""
    if catalog is None:
        catalog = plan_catalog(config)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, STREAM_VIDEO_PLAN, video_idx]))
    fps = config.fps
    min_frames = int(math.ceil(config.min_shot_s * fps))
    lo, hi = config.duration_s
    n_frames = max(int(round(rng.uniform(lo, hi) * fps)), min_frames)

    # shot lengths: min + exponential excess; the remainder shorter than a shot joins the last one
    excess_mean = (config.mean_shot_s - config.min_shot_s) * fps
    k = n_frames // min_frames + 2
    lengths = min_frames + np.floor(rng.exponential(excess_mean, size=k)).astype(np.int64)
    ends = np.cumsum(lengths)
    n_shots = int(np.searchsorted(ends, n_frames, side="left")) + 1
    ends = ends[:n_shots]
    ends[-1] = n_frames
    if n_shots > 1 and ends[-1] - ends[-2] < min_frames:
        ends = np.delete(ends, n_shots - 2)
        n_shots -= 1
    starts = np.concatenate([[0], ends[:-1]])

    # concepts: a few themes per video, consecutive shots always differ
    c = config.n_concepts
    prior = catalog.prior
    n_themes = int(rng.integers(config.concepts_per_video[0], config.concepts_per_video[1] + 1))
    themes = rng.choice(c, size=n_themes, replace=False, p=prior)
    off = rng.random(n_shots) < config.off_theme_shot_p
    u = rng.random(n_shots)
    concepts: list[int] = []
    prev = -1
    for i in range(n_shots):
        pool = np.arange(c) if (off[i] or n_themes == 1) else np.sort(themes)
        pool = pool[pool != prev]
        cur = int(pool[int(u[i] * len(pool))])
        concepts.append(cur)
        prev = cur

    fade = rng.random(n_shots) < config.fade_fraction
    fade_len = rng.uniform(config.fade_s[0], config.fade_s[1], size=n_shots)
    pop = np.exp(config.shot_popularity_sigma * rng.standard_normal(n_shots))
    shots = []
    for i in range(n_shots):
        is_fade = bool(fade[i]) and i > 0
        ff = max(2, int(round(fade_len[i] * fps))) if is_fade else 0
        shots.append(Shot(
            idx=i,
            start_frame=int(starts[i]),
            end_frame=int(ends[i]),
            concept=concepts[i],
            transition_in="fade" if is_fade else "cut",
            fade_frames=ff,
            popularity=float(pop[i]),
            look=config.look_of(concepts[i]),
        ))

    names = [CONCEPTS[t].name_cn for t in themes[:2]]
    title = f"【{names[0]}】" + (f"{names[1]}" if len(names) > 1 else "") + f"混剪 第{video_idx + 1}期"
    return VideoPlan(
        video_idx=video_idx,
        video_id=video_id_of(video_idx),
        chatid=int(catalog.chatids[video_idx]),
        title=title,
        fps=fps,
        n_frames=n_frames,
        width=config.frame_size[0],
        height=config.frame_size[1],
        shots=tuple(shots),
        upload_ts=int(catalog.upload_ts[video_idx]),
        n_comments=int(catalog.comment_counts[video_idx]),
        row_id_start=int(catalog.row_id_starts[video_idx]),
    )
