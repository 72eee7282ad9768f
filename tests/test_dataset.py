"""kfr dataset: the gold training tables follow the KFRCI protocol, are reproducible by seed, and rerun exactly."""

from __future__ import annotations

import math

import pytest
from pyspark.sql import functions as F

import planted_lake
from kfr_spark import delta_io
from kfr_spark.config import DatasetConfig
from kfr_spark.dataset import build_dataset
from kfr_spark.ledger import JobRun

pytestmark = pytest.mark.spark

CFG = DatasetConfig(min_user_comments=5, k_neg=3, test_fraction=0.3, cold_user_fraction=0.2, seed=11)


def run_dataset(spark, lake, cfg=CFG):
    run = JobRun(job="dataset", config_hash="test")
    return build_dataset(spark, lake, cfg, run), run


def build_planted(spark, tmp_path_factory):
    from kfr_spark.catalog import Lakehouse

    lake = Lakehouse(tmp_path_factory.mktemp("dataset") / "lakehouse")
    planted_lake.build(spark, lake)
    summary, run = run_dataset(spark, lake)
    return lake, summary, run


@pytest.fixture(scope="module")
def planted(spark, tmp_path_factory):
    """One dataset run over the planted lake, shared by the tests that only read it (a build takes half a minute);
    a test that writes to the lake takes `own_planted`."""
    return build_planted(spark, tmp_path_factory)


@pytest.fixture()
def own_planted(spark, tmp_path_factory):
    return build_planted(spark, tmp_path_factory)


def table(spark, lake, name):
    return delta_io.read_table(spark, lake, name)


def test_commented_frames_are_labelled_by_polarity_and_light_users_are_dropped(spark, planted):
    lake, summary, _ = planted
    users = {r["user_id"] for r in table(spark, lake, "gold.users").collect()}
    assert users == {f"u{u:02d}" for u in range(planted_lake.N_USERS)}  # light* users and noise left out
    rows = table(spark, lake, "gold.interactions").filter(F.col("kind") != "sampled").collect()
    for r in rows:
        liked = int(r["user_id"][1:]) % 2
        assert r["label"] == int(planted_lake.concept(int(r["video_id"][1:]), r["shot_idx"]) == liked)
        assert r["kind"] == ("positive" if r["label"] else "negative_comment")
        assert r["token_ids"] == [2 + liked, 6] if r["label"] else r["token_ids"] == [4, 6]
    assert summary.positives == sum(r["label"] for r in rows)


def test_each_training_positive_gets_k_negatives_the_user_never_commented(spark, planted):
    lake, summary, _ = planted
    gold = table(spark, lake, "gold.interactions")
    commented = {(r["user_id"], r["video_id"], r["shot_idx"]) for r in gold.filter(F.col("kind") != "sampled").collect()}
    sampled = gold.filter(F.col("kind") == "sampled").collect()
    assert all((r["user_id"], r["video_id"], r["shot_idx"]) not in commented for r in sampled)
    assert all(r["label"] == 0 and r["split"] == "train" for r in sampled)
    train_pos = gold.filter((F.col("split") == "train") & (F.col("label") == 1)).groupBy("user_id").count()
    neg = gold.filter(F.col("kind") == "sampled").groupBy("user_id").count()
    wanted = {r["user_id"]: r["count"] * CFG.k_neg for r in train_pos.collect()}
    got = {r["user_id"]: r["count"] for r in neg.collect()}
    assert got == wanted
    assert summary.sampled_negatives == sum(wanted.values())


def _negatives_by_user(spark, lake):
    gold = table(spark, lake, "gold.interactions")
    commented, videos, sampled = {}, {}, {}
    for r in gold.collect():
        key = (r["video_id"], r["shot_idx"])
        if r["kind"] == "sampled":
            sampled.setdefault(r["user_id"], set()).add(key)
        else:
            commented.setdefault(r["user_id"], set()).add(key)
            if r["split"] == "train" and r["label"] == 1:  # a video proposes negatives through its positives
                videos.setdefault(r["user_id"], set()).add(r["video_id"])
    passed_over = {u: {(v, k) for v in videos.get(u, ()) for k in range(planted_lake.N_SHOTS)} - commented[u]
                   for u in commented}
    return sampled, videos, passed_over


def test_negatives_are_the_frames_a_user_passed_over_in_their_own_videos_before_any_other(spark, planted):
    lake, _, _ = planted
    sampled, videos, passed_over = _negatives_by_user(spark, lake)
    topped_up = 0
    for user, negatives in sampled.items():
        if len(negatives) >= len(passed_over[user]):  # every frame passed over is taken, then other videos'
            assert passed_over[user] <= negatives
            topped_up += any(v not in videos[user] for v, _ in negatives)
        else:  # the quota is spent inside the user's own videos
            assert negatives <= passed_over[user]
    assert topped_up > 0  # these short videos leave some users fewer passed-over frames than k_neg x positives


def test_scope_all_draws_negatives_over_the_whole_catalogue(spark, lake):
    planted_lake.build(spark, lake)
    run_dataset(spark, lake, CFG.model_copy(update={"negative_scope": "all"}))
    sampled, videos, _ = _negatives_by_user(spark, lake)
    own = sum(v in videos.get(u, ()) for u, negatives in sampled.items() for v, _ in negatives)
    total = sum(len(negatives) for negatives in sampled.values())
    # a user comments on 5 of 40 videos: a uniform draw lands in them about one time in eight
    assert 0 < own / total < 0.3


def test_thirty_percent_of_each_users_positives_are_held_out_and_cold_users_never_train(spark, planted):
    lake, summary, _ = planted
    gold = table(spark, lake, "gold.interactions")
    cold = {r["user_id"] for r in table(spark, lake, "gold.users").filter("is_cold").collect()}
    assert 0 < len(cold) < planted_lake.N_USERS and summary.cold_users == len(cold)
    per_user = gold.filter(F.col("label") == 1).groupBy("user_id").agg(
        F.count("*").alias("pos"), F.sum((F.col("split") == "test").cast("int")).alias("test"),
        F.collect_set("split").alias("splits")).collect()
    for r in per_user:
        if r["user_id"] in cold:
            assert r["splits"] == ["cold"]
        else:
            assert r["test"] == math.floor(r["pos"] * CFG.test_fraction + 0.5)  # half up: 15 positives → 5
    assert gold.filter(F.col("user_id").isin(list(cold)) & (F.col("split") != "cold")).count() == 0


def test_item_level_rows_hold_out_one_video_per_user(spark, planted):
    lake, _, _ = planted
    items = table(spark, lake, "gold.item_interactions")
    per_user = items.groupBy("user_id").agg(F.count("*").alias("n"),
                                            F.sum((F.col("split") == "test").cast("int")).alias("test")).collect()
    assert len(per_user) == planted_lake.N_USERS
    assert all(r["n"] == 5 and r["test"] == 1 for r in per_user)


def test_frames_and_users_get_dense_stable_indices(spark, planted):
    lake, _, _ = planted
    frames = table(spark, lake, "gold.frames").orderBy("frame_idx").collect()
    assert [r["frame_idx"] for r in frames] == list(range(planted_lake.N_VIDEOS * planted_lake.N_SHOTS))
    assert [(r["video_id"], r["shot_idx"]) for r in frames] == sorted((r["video_id"], r["shot_idx"]) for r in frames)
    assert all(r["has_features"] for r in frames)
    assert sorted(r["user_idx"] for r in table(spark, lake, "gold.users").collect()) == list(range(planted_lake.N_USERS))


def test_rerun_commits_nothing_and_another_seed_samples_differently(spark, own_planted):
    lake, _, first = own_planted
    snapshot = {name: sorted(map(tuple, table(spark, lake, name).drop("run_id").collect()))
                for name in first.output_versions}
    summary, _ = run_dataset(spark, lake)
    assert summary.changed_rows == 0
    # (Delta still commits a MERGE that deletes nothing when it has a not-matched-by-source clause: rows, not
    # versions, are what a rerun leaves alone.)
    assert {name: sorted(map(tuple, table(spark, lake, name).drop("run_id").collect())) for name in snapshot} == snapshot
    before = {(r["user_id"], r["video_id"], r["shot_idx"]) for r in
              table(spark, lake, "gold.interactions").filter(F.col("kind") == "sampled").collect()}
    reseeded, _ = run_dataset(spark, lake, CFG.model_copy(update={"seed": 12}))
    after = {(r["user_id"], r["video_id"], r["shot_idx"]) for r in
             table(spark, lake, "gold.interactions").filter(F.col("kind") == "sampled").collect()}
    assert reseeded.changed_rows > 0 and before != after
