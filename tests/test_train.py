"""kfr train: Petastorm feeds the models, Horovod runs them on two processes, and a killed run resumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F

import planted_lake
from kfr_spark import delta_io
from kfr_spark.catalog import Lakehouse
from kfr_spark.config import ConfigError, DatasetConfig, TrainConfig
from kfr_spark.dataset import build_dataset
from kfr_spark.distributed import horovod_available
from kfr_spark.ledger import JobRun
from kfr_spark.models import MODELS, KeyFrameRecommender
from kfr_spark.train import (FAIL_AFTER_EPOCH_ENV, ModelShape, TrainResult, grid_points, parse_grid, run_key,
                             train_grid, train_model, validation_queries, warn_if_constant)

pytestmark = pytest.mark.spark


def planted_gold(spark, tmp_path_factory, base_config, item_taste: bool, cold_user_fraction: float):
    """The planted lake and its gold tables, built once per module: training and evaluation only add models, runs
    and metrics under keys of their own, so the tests can share it (a build takes half a minute)."""
    lake = Lakehouse(tmp_path_factory.mktemp("train") / "lakehouse")
    planted_lake.build(spark, lake, item_taste=item_taste)
    cfg = DatasetConfig(min_user_comments=5, k_neg=3, cold_user_fraction=cold_user_fraction, seed=5)
    build_dataset(spark, lake, cfg, JobRun(job="dataset", config_hash="test"))
    lakehouse = base_config.lakehouse.model_copy(update={"root": Path(lake.root)})
    return lake, base_config.model_copy(update={"lakehouse": lakehouse, "dataset": cfg})


@pytest.fixture(scope="module")
def frame_gold(spark, tmp_path_factory, base_config):
    return planted_gold(spark, tmp_path_factory, base_config, item_taste=False, cold_user_fraction=0.0)


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
def test_a_model_learns_the_planted_taste_in_one_process(spark, frame_gold, name):
    lake, config = frame_gold
    result, run = train(spark, lake, config, name, num_proc=1, epochs=12, batch_size=64, lr=0.03, patience=12,
                        hyper={name: {"dim": 8}})
    model = KeyFrameRecommender.load(result.model_path)
    assert result.epochs_run >= 2 and result.processes == 1
    assert held_out_auc(spark, lake, model) > 0.8
    assert run.input_versions["gold.interactions"] >= 1 and run.metrics["train_rows"] == result.train_rows
    if name != "vbpr":  # pointwise: every epoch records how far apart the validation scores are
        assert all(h["val_score_std"] > 0 for h in result.history) and "constant_scores" not in run.metrics


def test_validation_queries_rank_a_videos_key_frames_like_the_test(spark, frame_gold):
    """Each (user, video) with a positive that training holds out is a query over the video's key frames, less the
    user's other positives (training and test): the held-out ones are relevant, every other candidate is not."""
    from kfr_spark.train import frame_level_rows

    lake, config = frame_gold
    cfg = config.train.model_copy(update={"val_fraction": 0.3})
    queries = validation_queries(spark, lake, MODELS["kfri"], cfg).collect()
    rows = frame_level_rows(spark, lake, MODELS["kfri"], cfg, config.dataset.backbone, config.dataset.max_tokens)
    held = {(r["user"], r["frame"]) for r in rows.filter(F.col("_val") & (F.col("label") == 1)).collect()}
    users = {r["user_id"]: r["user_idx"] for r in delta_io.read_table(spark, lake, "gold.users").collect()}
    frames = {(r["video_id"], r["shot_idx"]): (r["frame_idx"], r["item_idx"])
              for r in delta_io.read_table(spark, lake, "gold.frames").collect()}
    video_of = dict(frames.values())
    positives = {(users[r["user_id"]], frames[(r["video_id"], r["shot_idx"])][0]) for r in
                 delta_io.read_table(spark, lake, "gold.interactions").filter(F.col("label") == 1).collect()}
    assert 0 < len(held) < len(positives)

    asked = {(u, video_of[f]) for u, f in held}
    expected = {(u, f, v, int((u, f) in held)) for u, v in asked for f, item in video_of.items()
                if item == v and ((u, f) in held or (u, f) not in positives)}
    got = [(q["user"], q["frame"], q["query"], q["relevant"]) for q in queries]
    assert len(got) == len(set(got)) and set(got) == expected


def test_early_stopping_keeps_the_epoch_that_ranks_the_validation_queries_best(spark, frame_gold):
    lake, config = frame_gold
    settings = {"num_proc": 1, "epochs": 5, "batch_size": 64, "lr": 0.03, "patience": 5, "hyper": {"bpr": {"dim": 8}}}
    result, run = train(spark, lake, config, "bpr", **settings)
    ndcg = [h["val_ndcg"] for h in result.history]
    assert result.monitor == "val_ndcg" and len(ndcg) == 5 and all(0 < v <= 1 for v in ndcg)
    assert result.best_epoch == int(np.argmax(ndcg)) and result.best_val_ndcg == max(ndcg)
    assert result.best_val_loss == result.history[result.best_epoch]["val_loss"]
    assert run.metrics["best_val_ndcg"] == max(ndcg)
    by_loss, _ = train(spark, lake, config, "bpr", monitor="val_loss", **settings)
    assert by_loss.monitor == "val_loss" and by_loss.best_val_ndcg is None and by_loss.run_key != result.run_key
    assert "val_ndcg" not in by_loss.history[0]
    assert by_loss.best_epoch == int(np.argmin([h["val_loss"] for h in by_loss.history]))


def test_a_grid_serves_the_point_that_ranks_the_validation_queries_best(spark, frame_gold):
    """An L2 weight of 10 flattens every score: the grid must serve the other point, and a rerun trains nothing."""
    from kfr_spark.train import selected_model_run

    lake, config = frame_gold
    config = with_train(config, num_proc=1, epochs=3, batch_size=64, lr=0.03, patience=3, hyper={"bpr": {"dim": 8}})
    run = JobRun(job="train", config_hash="test")
    best = train_grid(spark, lake, config, "bpr", run, {"reg": [10.0, 0.0]})
    assert best.model == "bpr" and run.metrics["grid_points"] == 2 and run.metrics["grid_chosen"] == 1
    assert run.metrics["grid.reg"] == 0.0
    assert selected_model_run(spark, lake, "bpr")["run_key"] == best.run_key
    runs = delta_io.read_table(spark, lake, "ops.model_runs").filter(F.col("model") == "bpr").collect()
    assert any('"reg": 10.0' in r["params"] for r in runs if r["run_key"] != best.run_key)  # trained, not served
    again = JobRun(job="train", config_hash="test")
    assert train_grid(spark, lake, config, "bpr", again, {"reg": [10.0, 0.0]}).run_key == best.run_key
    assert again.metrics["resumed_from_epoch"] == best.epochs_run  # found finished


def test_a_grid_crosses_named_values_or_lists_its_points():
    assert grid_points({"reg": [0.1, 0.2], "dim": [8]}) == [{"reg": 0.1, "dim": 8}, {"reg": 0.2, "dim": 8}]
    assert grid_points([{"reg": 0.1, "reg_visual": 0.1}]) == [{"reg": 0.1, "reg_visual": 0.1}]
    assert parse_grid(["reg=0.001,1e-2", "loss=bce"]) == {"reg": [0.001, 0.01], "loss": ["bce"]}
    for bad in ({"reg": []}, [], [{}]):
        with pytest.raises(ConfigError, match="grid"):
            grid_points(bad)
    with pytest.raises(ConfigError, match="NAME=V1,V2"):
        parse_grid(["reg"])


def test_the_run_key_follows_the_effective_hyper_parameters_not_how_they_were_spelled():
    """A default spelled out is the same training; a changed default (KFRCI's activation was relu) is a new one."""
    shape, kfrci = ModelShape("kfrci", 3, 4, 5, 7), MODELS["kfrci"]
    key = run_key(shape, TrainConfig(), kfrci.resolve_hyper({"dim": 8}), {"gold.interactions": 1})
    assert key == run_key(shape, TrainConfig(), kfrci.resolve_hyper({"dim": 8, "activation": "leaky_relu"}),
                          {"gold.interactions": 1})
    assert key != run_key(shape, TrainConfig(), kfrci.resolve_hyper({"dim": 8, "activation": "relu"}),
                          {"gold.interactions": 1})
    assert key == run_key(shape, TrainConfig(threads_per_proc=3, num_proc=1), kfrci.resolve_hyper({"dim": 8}),
                          {"gold.interactions": 1})  # where it runs is not what it is


def test_a_hyper_parameter_the_model_lacks_is_a_config_error_naming_it(spark, frame_gold):
    lake, config = frame_gold
    with pytest.raises(ConfigError, match=r"train\.hyper\.kfri: kfri has no hyper-parameter dimm"):
        train(spark, lake, config, "kfri", num_proc=1, hyper={"kfri": {"dimm": 8}})


@pytest.mark.parametrize("spread", [0.0, 0.3])
def test_a_model_that_scores_every_validation_pair_the_same_is_flagged(spread, caplog):
    history = [{"epoch": 0, "val_loss": 0.7, "val_score_std": 0.4}, {"epoch": 1, "val_loss": 0.6, "val_score_std": spread}]
    result = TrainResult(model="kfrci", run_key="k", run_dir="/nowhere", epochs_run=2, resumed_from_epoch=0,
                         best_epoch=1, best_val_loss=0.6, history=history)
    run = JobRun(job="train", config_hash="test")
    with caplog.at_level("WARNING", logger="kfr_spark.train"):
        warn_if_constant(result, run)
    assert run.metrics["val_score_std"] == spread
    assert ("constant_scores" in run.metrics) == (spread == 0.0)
    assert ("ranks nothing" in caplog.text) == (spread == 0.0)


@pytest.mark.skipif(not horovod_available(), reason="horovod is not installed")
def test_horovod_on_two_processes_matches_one_process(spark, frame_gold):
    lake, config = frame_gold
    # lr 0.01 puts the best validation epoch near epoch 8 (measured); at 0.03 it came at epoch 1 or 2, so which of
    # two close epochs won decided the held-out AUC, and on CI's machine it fell to 0.799.
    settings = dict(epochs=20, batch_size=64, lr=0.01, patience=5, hyper={"kfri": {"dim": 8}})
    solo, _ = train(spark, lake, config, "kfri", num_proc=1, **settings)
    # two processes of half the batch each take the same steps over the same rows
    duo, _ = train(spark, lake, config, "kfri", num_proc=2, **{**settings, "batch_size": 32})
    assert duo.processes == 2 and solo.processes == 1
    assert duo.run_dir != solo.run_dir  # a different run: it did not just reuse the one-process model
    auc_solo = held_out_auc(spark, lake, KeyFrameRecommender.load(solo.model_path))
    auc_duo = held_out_auc(spark, lake, KeyFrameRecommender.load(duo.model_path))
    assert auc_solo > 0.8 and auc_duo > 0.8 and abs(auc_duo - auc_solo) < 0.1
    assert abs(duo.history[-1]["train_loss"] - solo.history[-1]["train_loss"]) < 0.25 * solo.history[0]["train_loss"]


def test_a_run_killed_after_an_epoch_resumes_from_its_checkpoint(spark, frame_gold, monkeypatch):
    lake, config = frame_gold
    settings = dict(num_proc=1, epochs=4, batch_size=64, patience=4, hyper={"kfri": {"dim": 8}})
    monkeypatch.setenv(FAIL_AFTER_EPOCH_ENV, "1")
    with pytest.raises(RuntimeError, match="fault injection"):
        train(spark, lake, config, "kfri", **settings)
    monkeypatch.delenv(FAIL_AFTER_EPOCH_ENV)
    resumed, _ = train(spark, lake, config, "kfri", **settings)
    assert resumed.resumed_from_epoch == 2
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]
    again, _ = train(spark, lake, config, "kfri", **settings)  # finished: nothing left to do
    assert again.history == resumed.history and again.run_dir == resumed.run_dir
    # tracked once: one MLflow run and one ops.model_runs row for the run key, each epoch logged once
    client, experiment = mlflow_client(config)
    runs = client.search_runs([experiment], filter_string=f"tags.`kfr.run_key` = '{again.run_key}'")
    assert len(runs) == 1
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss")] == [0, 1, 2, 3]
    rows = delta_io.read_table(spark, lake, "ops.model_runs").filter(F.col("run_key") == again.run_key).collect()
    assert len(rows) == 1 and rows[0]["mlflow_run_id"] == runs[0].info.run_id


@pytest.mark.skipif(not horovod_available(), reason="horovod is not installed")
def test_a_two_process_run_resumes_with_its_optimizer_state(spark, frame_gold, monkeypatch):
    """Horovod's optimizer wrapper is a new optimizer with an empty state: the checkpoint's Adam moments and step
    count must reach it, or every resume restarts Adam (its bias correction from step 1, its moments from 0)."""
    lake, config = frame_gold
    settings = dict(num_proc=2, epochs=3, batch_size=32, patience=3, lr=0.02, hyper={"kfri": {"dim": 8}})
    monkeypatch.setenv(FAIL_AFTER_EPOCH_ENV, "1")
    with pytest.raises(RuntimeError):
        train(spark, lake, config, "kfri", **settings)
    monkeypatch.delenv(FAIL_AFTER_EPOCH_ENV)
    resumed, _ = train(spark, lake, config, "kfri", **settings)
    steps_per_epoch = resumed.history[0]["examples"] // (32 * 2)
    assert resumed.resumed_from_epoch == 2 and resumed.processes == 2
    assert resumed.resumed_at_step >= 2 * steps_per_epoch > 1


def test_a_model_name_serves_the_run_its_latest_training_resolved_to(spark, frame_gold):
    """Back to the old settings after an experiment: kfr train finds the old run finished, and from then on
    scoring, evaluate --model and the nightly use it again, not the experiment's newer model."""
    from kfr_spark.evaluate import served_model
    from kfr_spark.score import serving_model
    from kfr_spark.train import selected_model_run

    lake, config = frame_gold
    settings = dict(num_proc=1, epochs=1, batch_size=64, patience=1)
    assert selected_model_run(spark, lake, "pmf") is None
    usual, _ = train(spark, lake, config, "pmf", **settings, hyper={"pmf": {"dim": 8}})
    experiment, _ = train(spark, lake, config, "pmf", **settings, hyper={"pmf": {"dim": 4}})
    assert selected_model_run(spark, lake, "pmf")["run_key"] == experiment.run_key
    reverted, run = train(spark, lake, config, "pmf", **settings, hyper={"pmf": {"dim": 8}})
    assert reverted.run_key == usual.run_key and reverted.resumed_from_epoch == 1  # found finished, not retrained
    assert selected_model_run(spark, lake, "pmf")["run_key"] == usual.run_key
    assert serving_model(spark, lake, "pmf").run_key == usual.run_key
    assert served_model(spark, lake, "pmf") == usual.model_path.resolve()
    assert "ops.model_selection" in run.output_versions

    # the same selection again rewrites nothing
    before = delta_io.current_version(spark, lake, "ops.model_selection")
    train(spark, lake, config, "pmf", **settings, hyper={"pmf": {"dim": 8}})
    assert delta_io.current_version(spark, lake, "ops.model_selection") == before
    with pytest.raises(ConfigError, match="no trained jifr model"):
        served_model(spark, lake, "jifr")


def trained_inputs(spark, lake, trained) -> int:
    (row,) = delta_io.read_table(spark, lake, "ops.model_runs").filter(F.col("run_key") == trained.run_key).collect()
    return row["input_versions"]["gold.interactions"]


def mlflow_client(config):
    from mlflow.tracking import MlflowClient

    from kfr_spark.tracking import tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri(config))
    return client, client.get_experiment_by_name(config.tracking.experiment).experiment_id


def test_evaluation_follows_the_kfrci_protocol_and_compares_models_user_by_user(spark, frame_gold):
    from kfr_spark.evaluate import evaluate_model, paired_comparison

    lake, config = frame_gold
    trained, _ = train(spark, lake, config, "kfri", num_proc=1, epochs=6, batch_size=64, lr=0.03, patience=6,
                       hyper={"kfri": {"dim": 8}})
    run = JobRun(job="evaluate", config_hash="test")
    result = evaluate_model(spark, lake, config, trained.model_path, run, eval_id="kfri-a")
    assert set(result) == {f"{m}@{k}" for m in ("f1", "ndcg") for k in (5, 10, 20)}
    assert result["ndcg@5"] > 0.7 and 0 < result["f1@5"] <= 1
    per_user = delta_io.read_table(spark, lake, "gold.eval_user_metrics").filter(F.col("eval_id") == "kfri-a")
    test_users = (delta_io.read_table(spark, lake, "gold.interactions").filter(F.col("split") == "test")
                  .select("user_id").distinct().count())
    assert per_user.select("user_id").distinct().count() == test_users == run.rows_out
    summary = delta_io.read_table(spark, lake, "gold.eval_metrics").filter(F.col("eval_id") == "kfri-a").collect()
    assert all(r["ci_low"] <= r["value"] <= r["ci_high"] and r["n_users"] == test_users for r in summary)
    evaluate_model(spark, lake, config, trained.model_path, JobRun(job="evaluate", config_hash="t"), eval_id="kfri-b")
    same = paired_comparison(spark, lake, "kfri-a", "kfri-b", "ndcg", 10)
    assert same.n_users == test_users and same.t == 0.0 and same.p_value == 1.0

    # the training and its evaluation are one MLflow run: parameters, epochs, input versions, artifact, metrics
    client, experiment = mlflow_client(config)
    (tracked,) = client.search_runs([experiment], filter_string=f"tags.`kfr.run_key` = '{trained.run_key}'")
    assert tracked.data.params["hyper.dim"] == "8" and tracked.data.params["train.epochs"] == "6"
    assert tracked.data.tags["kfr.input.gold.interactions"] == str(trained_inputs(spark, lake, trained))
    assert tracked.data.metrics["eval.ndcg_at_5"] == pytest.approx(result["ndcg@5"])
    assert len(client.get_metric_history(tracked.info.run_id, "val_loss")) == trained.epochs_run
    assert {a.path for a in client.list_artifacts(tracked.info.run_id)} == {"model.pt", "training.json"}


def test_most_popular_counts_training_positives_and_ranks_by_them(spark, frame_gold):
    lake, config = frame_gold
    result, _ = train(spark, lake, config, "most_popular")
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


@pytest.fixture(scope="module")
def item_gold(spark, tmp_path_factory, base_config):
    """The planted lake with the taste at item level too, and a third of the users cold (no frame-level data)."""
    return planted_gold(spark, tmp_path_factory, base_config, item_taste=True, cold_user_fraction=0.3)


@pytest.mark.parametrize(("name", "procs"), [("jifr", 2), ("jifr_na", 1)])
def test_jifr_learns_from_videos_alone_and_ranks_cold_users_key_frames(spark, item_gold, name, procs):
    from kfr_spark.evaluate import evaluate_model

    lake, config = item_gold
    if procs > 1 and not horovod_available():
        pytest.skip("horovod is not installed")
    result, run = train(spark, lake, config, name, num_proc=procs, epochs=15, batch_size=32 // procs, lr=0.03,
                        patience=15, item_negatives=4, hyper={name: {"dim": 8}})
    assert result.processes == procs
    model = KeyFrameRecommender.load(result.model_path)
    assert model.level == "item" and model.n_items == planted_lake.N_VIDEOS and result.train_rows > 0
    assert "gold.item_interactions" in run.input_versions and "gold.interactions" not in run.input_versions
    # every video's frames travel inside the model: it scores items and key frames with nothing else
    assert model.item_frames.shape == (planted_lake.N_VIDEOS, planted_lake.N_SHOTS)

    metrics = evaluate_model(spark, lake, config, result.model_path, JobRun(job="evaluate", config_hash="t"),
                             eval_id=name)
    scores = delta_io.read_table(spark, lake, "gold.eval_user_metrics")
    assert {f"item_{m}@{k}" for m in ("hr", "ndcg") for k in (5, 10, 20)} <= set(metrics)
    # the held-out video against every unrated one (35): 15 of them show the user's concept, so a model that learned
    # the taste puts it in the top 10 about 10/16 of the time, chance 10/36
    assert metrics["item_hr@10"] > 1.6 * 10 / 36
    # cold users: frame-level data never trained on, yet their liked frames come first in the videos they chose
    # (a perfect ranking reaches about 0.8 here: a user comments on 80 % of the frames of the liked concept)
    assert metrics["frame_ndcg@3"] > metrics["random_frame_ndcg@3"] + 0.1
    assert metrics["frame_hr@3"] > metrics["random_frame_hr@3"]
    cold = delta_io.read_table(spark, lake, "gold.users").filter("is_cold").count()
    scored = scores.filter((F.col("eval_id") == name) & (F.col("metric") == "frame_hr")).select("user_id").distinct()
    assert 0 < cold == scored.count()


def test_item_negatives_are_unrated_videos_and_the_same_on_every_run(spark, item_gold):
    from kfr_spark.train import item_level_rows

    lake, config = item_gold
    cfg = config.train.model_copy(update={"item_negatives": 6})
    rows = item_level_rows(spark, lake, cfg)
    users = {r["user_idx"]: r["user_id"] for r in delta_io.read_table(spark, lake, "gold.users").collect()}
    items = {r["video_id"]: r["item_idx"] for r in delta_io.read_table(spark, lake, "gold.frames").collect()}
    seen: dict[str, set[int]] = {}
    for r in delta_io.read_table(spark, lake, "gold.item_interactions").collect():
        seen.setdefault(r["user_id"], set()).add(items[r["video_id"]])
    first = sorted((r["user"], r["pos"], tuple(r["neg"])) for r in rows.collect())
    train_items = sum(1 for r in delta_io.read_table(spark, lake, "gold.item_interactions").collect()
                      if r["split"] == "train")
    assert len(first) == train_items
    for user, pos, negs in first:
        assert pos in seen[users[user]] and len(negs) == 6 and not set(negs) & seen[users[user]]
    assert first == sorted((r["user"], r["pos"], tuple(r["neg"])) for r in item_level_rows(spark, lake, cfg).collect())
