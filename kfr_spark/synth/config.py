"""Parameters and result types of the synthetic generator."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from kfr_spark.synth.lexicon import CONCEPTS

#: Bumped whenever the same config would produce different bytes (lexicon, sampling order, layout).
FORMAT_VERSION = 1
FORMAT_NAME = "kfr-synth"


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines a synthetic data set. Same config -> byte-identical output.

    Counts are targets: ``n_comments`` is met exactly; ``n_users`` is the population, of whom the
    ones never drawn write nothing (the long tail); video durations and shots are drawn per video.
    """

    seed: int = 0
    n_videos: int = 100
    n_users: int = 5_000
    n_comments: int = 50_000
    n_concepts: int = 12

    # --- videos and shots -------------------------------------------------------------------
    duration_s: tuple[float, float] = (20.0, 60.0)  # uniform range of a video's length
    fps: int = 25
    frame_size: tuple[int, int] = (256, 144)  # (width, height), both even (mp4v needs it)
    with_video: bool = False  # render videos/<id>.mp4 (slow part)
    min_shot_s: float = 1.5
    mean_shot_s: float = 4.0  # mean shot length (min_shot_s + exponential excess)
    fade_fraction: float = 0.2  # share of shot boundaries (after the first shot) that are fades
    fade_s: tuple[float, float] = (0.5, 1.0)  # full fade-out + fade-in length; boundary = middle
    concepts_per_video: tuple[int, int] = (2, 4)  # a video's main themes (inclusive range)
    off_theme_shot_p: float = 0.1  # chance a shot shows a concept outside the video's themes
    shot_popularity_sigma: float = 0.4  # lognormal sigma of the per-shot popularity multiplier
    # Visual identities. 0: every concept has its own look. n > 0: concept c is drawn with look c % n, so the
    # concepts that share a look differ only in their comments' words, and the part of a user's taste that
    # separates them can be learnt from text and not from pixels (the premise of KFRC/KFRCI over KFRI).
    n_looks: int = 0

    # --- users --------------------------------------------------------------------------------
    activity_alpha: float = 1.35  # Pareto tail index of user activity (smaller = heavier tail)
    n_liked: tuple[int, int] = (2, 3)  # inclusive range of liked concepts per user
    n_disliked: tuple[int, int] = (1, 2)
    concept_prior_concentration: float = 5.0  # Dirichlet concentration of concept popularity
    typing_cpm: float = 50.0  # median typing speed, characters per minute
    typing_cpm_sigma: float = 0.15  # lognormal sigma across users
    typing_jitter: float = 0.15  # lognormal sigma per comment

    # --- comments -----------------------------------------------------------------------------
    video_comment_sigma: float = 0.8  # lognormal spread of comment counts across videos
    comments_per_session: float = 3.5  # mean comments one user writes on one video (paper ~3.5)
    session_size_sigma: float = 1.5  # lognormal sigma of comments per (user, video): long tail
    like_weight: float = 6.0  # relative rate of commenting on a liked concept's shot
    dislike_weight: float = 0.4  # ... on a disliked concept's shot (neutral = 1)
    video_taste_strength: float = 1.0  # exponent of taste in choosing which videos a user watches
    # P(negative, neutral, positive) of a comment given the user's taste for the shot's concept
    sentiment_liked: tuple[float, float, float] = (0.05, 0.25, 0.70)
    sentiment_neutral: tuple[float, float, float] = (0.20, 0.45, 0.35)
    sentiment_disliked: tuple[float, float, float] = (0.70, 0.20, 0.10)
    greeting_fraction: float = 0.02  # comments that are greetings posted near the start
    greeting_window_s: float = 8.0
    # P(mode 1, 4, 5, 7)
    mode_probs: tuple[float, float, float, float] = (0.93, 0.025, 0.04, 0.005)
    upload_period: tuple[int, int] = (1_356_998_400, 1_448_928_000)  # 2013-01-01 .. 2015-12-01 UTC
    crawl_end: int = 1_449_705_600  # 2015-12-10 UTC, as in the KFRCI crawl

    # --- outputs ------------------------------------------------------------------------------
    truth_max_comments: int = 2_000_000  # above this, ground_truth/comments.parquet is not written

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"SynthConfig: {msg}")

        need(self.n_videos >= 1, "n_videos must be >= 1")
        need(self.n_users >= 1, "n_users must be >= 1")
        need(self.n_comments >= 0, "n_comments must be >= 0")
        need(2 <= self.n_concepts <= len(CONCEPTS), f"n_concepts must be in 2..{len(CONCEPTS)}")
        lo, hi = self.duration_s
        need(0 < lo <= hi, "duration_s must be (lo, hi) with 0 < lo <= hi")
        need(lo >= self.min_shot_s, "videos must be at least one shot long")
        need(self.fps >= 1, "fps must be >= 1")
        w, h = self.frame_size
        need(w >= 16 and h >= 16 and w % 2 == 0 and h % 2 == 0, "frame_size must be even, >= 16")
        need(0.0 <= self.fade_fraction <= 1.0, "fade_fraction must be in [0, 1]")
        need(0 < self.fade_s[0] <= self.fade_s[1] <= self.min_shot_s,
             "fade_s must be (lo, hi) with 0 < lo <= hi <= min_shot_s")
        need(self.mean_shot_s > self.min_shot_s > 0, "need mean_shot_s > min_shot_s > 0")
        need(0 <= self.n_looks <= self.n_concepts, "n_looks must be 0 (one per concept) or in 1..n_concepts")
        a, b = self.concepts_per_video
        need(1 <= a <= b <= self.n_concepts, "concepts_per_video must lie in 1..n_concepts")
        need(self.activity_alpha > 1.0, "activity_alpha must be > 1 (finite mean)")
        nl, nd = self.n_liked, self.n_disliked
        need(0 <= nl[0] <= nl[1] and 0 <= nd[0] <= nd[1], "n_liked / n_disliked must be ranges")
        need(nl[1] + nd[1] <= self.n_concepts, "too many liked + disliked concepts for n_concepts")
        need(self.comments_per_session >= 1.0, "comments_per_session must be >= 1")
        need(self.like_weight > 0 and self.dislike_weight > 0, "taste weights must be > 0")
        for name in ("sentiment_liked", "sentiment_neutral", "sentiment_disliked", "mode_probs"):
            p = getattr(self, name)
            need(all(x >= 0 for x in p) and math.isclose(sum(p), 1.0, abs_tol=1e-9),
                 f"{name} must be probabilities summing to 1")
        need(0.0 <= self.greeting_fraction < 1.0, "greeting_fraction must be in [0, 1)")
        need(self.typing_cpm > 0, "typing_cpm must be > 0")
        need(self.upload_period[0] <= self.upload_period[1] < self.crawl_end,
             "upload_period must end before crawl_end")

    def look_of(self, concept: int) -> int:
        """The visual identity a shot of ``concept`` is rendered with."""
        return concept % self.n_looks if self.n_looks else concept

    @property
    def writes_comment_truth(self) -> bool:
        return self.n_comments <= self.truth_max_comments


@dataclass(frozen=True)
class SynthSummary:
    """What ``generate`` wrote."""

    out_dir: Path
    n_videos: int
    n_shots: int
    n_users: int
    n_active_users: int
    n_comments: int
    n_rendered_videos: int
    comments_by_mode: dict[int, int]
    activity_quantiles: dict[str, float]  # comments per active user
    manifest_path: Path
    videos_csv: Path
    danmaku_dir: Path
    shots_path: Path
    users_path: Path
    comments_truth_path: Path | None  # None when n_comments > truth_max_comments
    video_dir: Path | None
    files: tuple[Path, ...] = field(default=(), repr=False)
