"""kfr train: Petastorm feeds the models, Horovod runs them on two processes, and a killed run resumes."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.sql import functions as F

import planted_lake
from kfr_spark import delta_io
from kfr_spark.config import DatasetConfig
from kfr_spark.dataset import build_dataset
from kfr_spark.distributed import horovod_available
from kfr_spark.ledger import JobRun
from kfr_spark.models import KeyFrameRecommender
from kfr_spark.train import FAIL_AFTER_EPOCH_ENV, train_model

pytestmark = pytest.mark.spark


@pytest.fixture()
def gold(spark, lake, config_for):
    planted_lake.build(spark, lake)
    cfg = DatasetConfig(min_user_comments=5, k_neg=3, cold_user_fraction=0.0, seed=5)
    build_dataset(spark, lake, cfg, JobRun(job="dataset", config_hash="test"))
    config = config_for(lake)
    return config.model_copy(update={"dataset": cfg})


def with_train(config, **settings):
    return config.model_copy(update={"train": config.train.model_copy(update=settings)})


def held_out_auc(spark, lake, model: KeyFrameRecommender) -> float:
    """Mean over test positives of P(score(positive) > score(a frame of the same video the user did not like))."""
    users = {r["user_id"]: r["user_idx"] for r in delta_io.read_table(spark, lake, "gold.users").collect()}
    frames = {(r["video_id"], r["shot_idx"]): r["frame_idx"] for r in delta_io.read_table(spark, lake, "gold.frames").collect()}
    feats = {(r["video_id"], r["shot_idx"]): r["features"] for r in
             delta_io.read_table(spark, lake, "silver.frame_features").collect()}
    test = delta_io.read_table(spark, lake, "gold.interactions").filter(F.col("split") == "test").collect()
    wins = []
    for r in test:
        liked = int(r["user_id"][1:]) % 2
        others = [(r["video_id"], k) for k in range(planted_lake.N_SHOTS)
                  if planted_lake.concept(int(r["video_id"][1:]), k) != liked]
        keys = [(r["video_id"], r["shot_idx"]), *others]
        scores = model.score(users[r["user_id"]], [frames[k] for k in keys],
                             np.array([feats[k] for k in keys]) if model.uses_images else None).numpy()
        wins.append(float(np.mean(scores[0] > scores[1:])))
    return float(np.mean(wins))


def train(spark, lake, config, name, **settings):
    run = JobRun(job="train", config_hash="test")
    return train_model(spark, lake, with_train(config, **settings), name, run), run


@pytest.mark.parametrize("name", ["kfri", "kfrci", "vbpr"])  # pointwise and pairwise rows, images and text
def test_a_model_learns_the_planted_taste_in_one_process(spark, lake, gold, name):
    result, run = train(spark, lake, gold, name, num_proc=1, epochs=12, batch_size=64, lr=0.03, patience=12,
                        hyper={name: {"dim": 8}})
    model = KeyFrameRecommender.load(result.model_path)
    assert result.epochs_run >= 2 and result.processes == 1
    assert held_out_auc(spark, lake, model) > 0.8
    assert run.input_versions["gold.interactions"] >= 1 and run.metrics["train_rows"] == result.train_rows


@pytest.mark.skipif(not horovod_available(), reason="horovod is not installed")
def test_horovod_on_two_processes_matches_one_process(spark, lake, gold):
    settings = dict(epochs=20, batch_size=64, lr=0.03, patience=20, hyper={"kfri": {"dim": 8}})
    solo, _ = train(spark, lake, gold, "kfri", num_proc=1, **settings)
    # two processes of half the batch each take the same steps over the same rows
    duo, _ = train(spark, lake, gold, "kfri", num_proc=2, **{**settings, "batch_size": 32})
    assert duo.processes == 2 and solo.processes == 1
    assert duo.run_dir != solo.run_dir  # a different run: it did not just reuse the one-process model
    auc_solo = held_out_auc(spark, lake, KeyFrameRecommender.load(solo.model_path))
    auc_duo = held_out_auc(spark, lake, KeyFrameRecommender.load(duo.model_path))
    assert auc_solo > 0.8 and auc_duo > 0.8 and abs(auc_duo - auc_solo) < 0.1
    assert abs(duo.history[-1]["train_loss"] - solo.history[-1]["train_loss"]) < 0.25 * solo.history[0]["train_loss"]


def test_a_run_killed_after_an_epoch_resumes_from_its_checkpoint(spark, lake, gold, monkeypatch):
    settings = dict(num_proc=1, epochs=4, batch_size=64, patience=4, hyper={"kfri": {"dim": 8}})
    monkeypatch.setenv(FAIL_AFTER_EPOCH_ENV, "1")
    with pytest.raises(RuntimeError, match="fault injection"):
        train(spark, lake, gold, "kfri", **settings)
    monkeypatch.delenv(FAIL_AFTER_EPOCH_ENV)
    resumed, _ = train(spark, lake, gold, "kfri", **settings)
    assert resumed.resumed_from_epoch == 2
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]
    again, _ = train(spark, lake, gold, "kfri", **settings)  # finished: nothing left to do
    assert again.history == resumed.history and again.run_dir == resumed.run_dir


def test_evaluation_follows_the_kfrci_protocol_and_compares_models_user_by_user(spark, lake, gold):
    from kfr_spark.evaluate import evaluate_model, paired_comparison

    trained, _ = train(spark, lake, gold, "kfri", num_proc=1, epochs=6, batch_size=64, lr=0.03, patience=6,
                       hyper={"kfri": {"dim": 8}})
    run = JobRun(job="evaluate", config_hash="test")
    result = evaluate_model(spark, lake, gold, trained.model_path, run, eval_id="kfri-a")
    assert set(result) == {f"{m}@{k}" for m in ("f1", "ndcg") for k in (5, 10, 20)}
    assert result["ndcg@5"] > 0.7 and 0 < result["f1@5"] <= 1
    per_user = delta_io.read_table(spark, lake, "gold.eval_user_metrics").filter(F.col("eval_id") == "kfri-a")
    test_users = (delta_io.read_table(spark, lake, "gold.interactions").filter(F.col("split") == "test")
                  .select("user_id").distinct().count())
    assert per_user.select("user_id").distinct().count() == test_users == run.rows_out
    summary = delta_io.read_table(spark, lake, "gold.eval_metrics").filter(F.col("eval_id") == "kfri-a").collect()
    assert all(r["ci_low"] <= r["value"] <= r["ci_high"] and r["n_users"] == test_users for r in summary)
    evaluate_model(spark, lake, gold, trained.model_path, JobRun(job="evaluate", config_hash="t"), eval_id="kfri-b")
    same = paired_comparison(spark, lake, "kfri-a", "kfri-b", "ndcg", 10)
    assert same.n_users == test_users and same.t == 0.0 and same.p_value == 1.0


def test_most_popular_counts_training_positives_and_ranks_by_them(spark, lake, gold):
    result, _ = train(spark, lake, gold, "most_popular")
    model = KeyFrameRecommender.load(result.model_path)
    frames = {(r["video_id"], r["shot_idx"]): r["frame_idx"] for r in delta_io.read_table(spark, lake, "gold.frames").collect()}
    positives = (delta_io.read_table(spark, lake, "gold.interactions")
                 .filter((F.col("split") == "train") & (F.col("label") == 1)).collect())
    expected = np.zeros(len(frames))
    for r in positives:
        expected[frames[(r["video_id"], r["shot_idx"])]] += 1
    assert np.array_equal(model.popularity.numpy(), expected) and result.train_rows == len(positives)
    scores = model.score(0, np.arange(len(frames))).numpy()
    assert np.array_equal(scores, expected.astype(np.float32))  # the same ranking for every user
