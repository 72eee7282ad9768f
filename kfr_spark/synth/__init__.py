"""Deterministic synthetic danmaku (TSC) data with planted, learnable user taste.

Public API::

    from kfr_spark.synth import SynthConfig, generate
    summary = generate(SynthConfig(seed=1, n_comments=100_000), Path("data/synth"), workers=2)

Layout written under ``out_dir`` (see ``generate`` and ``manifest.json``):
``danmaku/<video_id>.xml`` (Bilibili classic XML), ``videos.csv``, ``ground_truth/shots.parquet``,
``ground_truth/users.parquet``, ``ground_truth/comments.parquet`` (small runs only),
``videos/<video_id>.mp4`` (``with_video=True``), ``manifest.json`` (written last).
"""

from kfr_spark.synth.comments import compose_comment, compose_comments, generate_video_comments, video_xml
from kfr_spark.synth.config import FORMAT_VERSION, SynthConfig, SynthSummary
from kfr_spark.synth.generate import generate
from kfr_spark.synth.lexicon import CONCEPTS, Concept
from kfr_spark.synth.shots import Shot, VideoPlan, plan_catalog, plan_video
from kfr_spark.synth.users import UserTable, build_users, sample_user_activity, user_hash
from kfr_spark.synth.visual import concept_frame, render_frames, render_video, shot_look

__all__ = [
    "CONCEPTS",
    "FORMAT_VERSION",
    "Concept",
    "Shot",
    "SynthConfig",
    "SynthSummary",
    "UserTable",
    "VideoPlan",
    "build_users",
    "compose_comment",
    "compose_comments",
    "concept_frame",
    "generate",
    "generate_video_comments",
    "plan_catalog",
    "plan_video",
    "render_frames",
    "render_video",
    "sample_user_activity",
    "shot_look",
    "user_hash",
    "video_xml",
]
