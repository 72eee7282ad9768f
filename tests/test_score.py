"""kfr score: every (user, candidate video) gets its key frames ranked by the model that knows the user, and a
rerun of a date replaces exactly that date."""

from __future__ import annotations

import datetime

import numpy as np
import pytest
from pyspark.sql import functions as F

import planted_lake
from kfr_spark import delta_io
from kfr_spark.catalog import Lakehouse
from kfr_spark.config import DatasetConfig
from kfr_spark.dataset import build_dataset
from kfr_spark.ledger import JobRun
from kfr_spark.models import KeyFrameRecommender
from kfr_spark.score import rank_video, score_users
from kfr_spark.train import train_model

pytestmark = pytest.mark.spark

DAY1, DAY2 = datetime.date(2026, 11, 30), datetime.date(2026, 12, 1)
UNKNOWN = "never-seen-user"


@pytest.fixture(scope="module")
def served(spark, base_config, tmp_path_factory):
    """The planted lake (item-level taste, a third of the users cold) with a frame-level model (KFRI: quick to
    train) and JIFR trained, scoring configured to route to them."""
    lake = Lakehouse(tmp_path_factory.mktemp("score") / "lakehouse")
    planted_lake.build(spark, lake, item_taste=True)
    ds = DatasetConfig(min_user_comments=5, k_neg=3, cold_user_fraction=0.3, seed=5)
    build_dataset(spark, lake, ds, JobRun(job="dataset", config_hash="test"))
    config = base_config.model_copy(update={
        "lakehouse": base_config.lakehouse.model_copy(update={"root": lake.root}), "dataset": ds,
        "tracking": base_config.tracking.model_copy(update={"enabled": False}),
        "score": base_config.score.model_copy(update={"frame_model": "kfri", "keep_ranks": 3}),
    })
    # routing and ranking are under test, not what the models learned: two epochs are enough
    train_cfg = config.train.model_copy(update={"num_proc": 1, "epochs": 2, "batch_size": 64, "lr": 0.03,
                                                "patience": 2, "item_negatives": 4,
                                                "hyper": {"kfri": {"dim": 8}, "jifr": {"dim": 8}}})
    config = config.model_copy(update={"train": train_cfg})
    models = {name: train_model(spark, lake, config, name, JobRun(job="train", config_hash="t"))
              for name in ("kfri", "jifr")}
    return lake, config, models


def score(spark, lake, config, day, **settings):
    config = config.model_copy(update={"score": config.score.model_copy(update=settings)})
    run = JobRun(job="score", config_hash="t")
    return score_users(spark, lake, config, day, run), run


def rows_of(spark, lake, day):
    return (delta_io.read_table(spark, lake, "gold.user_keyframes").filter(F.col("run_date") == day)
            .drop("run_id").collect())


def test_every_user_and_video_gets_ranked_key_frames_from_the_model_that_knows_the_user(spark, served):
    lake, config, models = served
    summary, run = score(spark, lake, config, DAY1)
    rows = rows_of(spark, lake, DAY1)
    users = {r["user_id"]: r["is_cold"] for r in delta_io.read_table(spark, lake, "gold.users").collect()}
    pairs = {(r["user_id"], r["video_id"]) for r in rows}
    assert pairs == {(u, f"v{v}") for u in users for v in range(planted_lake.N_VIDEOS)}  # every pair, once
    by_pair: dict[tuple, list] = {}
    for r in rows:
        by_pair.setdefault((r["user_id"], r["video_id"]), []).append(r)
    for (user, _), ranked in by_pair.items():
        assert sorted(r["rank"] for r in ranked) == [1, 2, 3]  # keep_ranks, contiguous
        assert [r["score"] for r in sorted(ranked, key=lambda r: r["rank"])] == sorted(
            (r["score"] for r in ranked), reverse=True)
        assert {r["model"] for r in ranked} == {"jifr" if users[user] else "kfri"}
    versions = {r["model"]: r["model_version"] for r in rows}
    assert versions == {"kfri": models["kfri"].run_key, "jifr": models["jifr"].run_key}
    assert summary.rows == len(rows) and run.rows_in == len(pairs)

    # the scores are the model's own: re-score one warm user's video directly
    warm = next(u for u, cold in users.items() if not cold)
    model = KeyFrameRecommender.load(models["kfri"].model_path)
    user_idx = next(r["user_idx"] for r in delta_io.read_table(spark, lake, "gold.users").collect()
                    if r["user_id"] == warm)
    frames = {r["shot_idx"]: r["frame_idx"] for r in delta_io.read_table(spark, lake, "gold.frames").collect()
              if r["video_id"] == "v3"}
    feats = {r["shot_idx"]: r["features"] for r in delta_io.read_table(spark, lake, "silver.frame_features").collect()
             if r["video_id"] == "v3"}
    shots = sorted(frames)
    direct = model.score(user_idx, [frames[k] for k in shots], np.array([feats[k] for k in shots])).numpy()
    best = [shots[i] for i in np.argsort(-direct, kind="stable")[:3]]
    assert [r["shot_idx"] for r in sorted(by_pair[(warm, "v3")], key=lambda r: r["rank"])] == best


def test_unknown_users_get_the_most_popular_key_frames_and_candidates_can_come_from_a_table(spark, served, tmp_path):
    lake, config, _ = served
    known = delta_io.read_table(spark, lake, "gold.users").first()["user_id"]
    candidates = spark.createDataFrame([(UNKNOWN, "v1"), (UNKNOWN, "v2"), (known, "v1"), (known, "v1")],
                                       "user_id string, video_id string")
    candidates.write.format("delta").save(str(tmp_path / "candidates"))
    score(spark, lake, config, DAY2, candidates="table", candidate_path=tmp_path / "candidates")
    rows = rows_of(spark, lake, DAY2)
    assert {(r["user_id"], r["video_id"]) for r in rows} == {(UNKNOWN, "v1"), (UNKNOWN, "v2"), (known, "v1")}
    popular = sorted((r for r in rows if r["user_id"] == UNKNOWN and r["video_id"] == "v1"), key=lambda r: r["rank"])
    assert {r["model"] for r in popular} == {"most_popular"}
    counts = (delta_io.read_table(spark, lake, "gold.interactions")
              .filter((F.col("split") == "train") & (F.col("label") == 1) & (F.col("video_id") == "v1"))
              .groupBy("shot_idx").count().collect())
    expected = sorted(((-r["count"], r["shot_idx"]) for r in counts))[:3]
    assert [(-r["score"], r["shot_idx"]) for r in popular] == [(float(c), s) for c, s in expected]


def test_a_rerun_of_a_date_replaces_exactly_that_date(spark, served):
    lake, config, _ = served
    score(spark, lake, config, DAY1)
    first, other = rows_of(spark, lake, DAY1), rows_of(spark, lake, DAY2)
    before = delta_io.current_version(spark, lake, "gold.user_keyframes")
    score(spark, lake, config, DAY1)
    assert delta_io.current_version(spark, lake, "gold.user_keyframes") == before + 1  # one commit
    assert sorted(rows_of(spark, lake, DAY1)) == sorted(first)
    assert sorted(rows_of(spark, lake, DAY2)) == sorted(other)  # the other date is untouched


def test_item_top_n_candidates_are_the_item_models_best_unseen_videos(spark, served):
    lake, config, _ = served
    day = datetime.date(2026, 12, 2)
    score(spark, lake, config, day, candidates="item_top_n", top_n=2)
    rows = rows_of(spark, lake, day)
    seen = {(r["user_id"], r["video_id"]) for r in delta_io.read_table(spark, lake, "gold.item_interactions").collect()}
    per_user: dict[str, set] = {}
    for r in rows:
        per_user.setdefault(r["user_id"], set()).add(r["video_id"])
    assert per_user and all(len(v) == 2 for v in per_user.values())
    assert not {(u, v) for u, videos in per_user.items() for v in videos} & seen


def test_ranking_is_by_score_with_ties_to_the_earlier_shot():
    import pandas as pd

    pairs = pd.DataFrame({"user_id": ["a", "b", "c"], "user_idx": [0, 1, 2], "video_id": "v"})
    by_user = {0: [0.5, 0.9, 0.9], 1: [0.1, 0.2, 0.0], 2: [0.3, 0.3, 0.3]}
    calls = []

    def block(users, frames):
        calls.append(len(users))
        return np.array([by_user[u] for u in users])

    out = rank_video(pairs, frames=np.array([10, 11, 12]), shots=np.array([0, 1, 2]), block_fn=block, keep=2,
                     max_scores=6)
    assert list(zip(out["user_id"], out["rank"], out["shot_idx"], strict=True)) == [
        ("a", 1, 1), ("a", 2, 2), ("b", 1, 1), ("b", 2, 0), ("c", 1, 0), ("c", 2, 1)]
    assert (out["video_id"] == "v").all() and out["score"].tolist()[:2] == [0.9, 0.9]
    assert calls == [2, 1]  # at most max_scores scores per model call
