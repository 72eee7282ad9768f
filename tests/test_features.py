"""`kfr features` on Spark: key frames of silver.shots → silver.frame_features; bad JPEGs → ops.stage_rejects;
a rerun changes no row and loads no model; new key frames alone are processed; the PCA is stored and versioned."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest
from pyspark.sql import functions as F

from kfr_spark import backbones as bb
from kfr_spark import delta_io
from kfr_spark.catalog import OPS_JOB_RUNS, OPS_STAGE_REJECTS, SILVER_FEATURE_PCA, SILVER_FRAME_FEATURES, SILVER_SHOTS
from kfr_spark.config import FeaturesConfig
from kfr_spark.features import extract_features, fit_pca, pca_label, plan_inference, project
from kfr_spark.ledger import record_job_run

pytestmark = pytest.mark.spark


def frame_of(concept: int, rng: np.random.Generator) -> np.ndarray:
    try:
        from kfr_spark.synth.visual import concept_frame

        return concept_frame(concept, rng, (320, 180))
    except ImportError:
        hue = np.uint8(concept * 30 % 180)
        img = cv2.cvtColor(np.full((180, 320, 3), (hue, 200, 200), np.uint8), cv2.COLOR_HSV2BGR)
        return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def write_shots(spark, lake, keyframes: dict[tuple[str, int], bytes | None]) -> None:
    rows = [
        (vid, idx, float(idx), float(idx + 1), None, None, idx + 0.5, None, data,
         320 if data else None, 180 if data else None, data is None, "test", "p", "r")
        for (vid, idx), data in sorted(keyframes.items())
    ]
    delta_io.merge_upsert(spark, lake, SILVER_SHOTS.name, spark.createDataFrame(rows, schema=SILVER_SHOTS.schema))


def run_stage(spark, lake, config, **kwargs):
    with record_job_run(spark, lake, "features", config) as run:
        summary = extract_features(spark, lake, config.features, run, **kwargs)
    return summary, run


def snapshot(spark, lake, name):
    table = {SILVER_FRAME_FEATURES.name: SILVER_FRAME_FEATURES, SILVER_FEATURE_PCA.name: SILVER_FEATURE_PCA,
             OPS_STAGE_REJECTS.name: OPS_STAGE_REJECTS}[name]
    columns = [c for c in table.schema.fieldNames() if c not in table.lineage_columns]
    return sorted(map(tuple, delta_io.read_table(spark, lake, name).select(*columns).collect()))


@pytest.fixture()
def keyframes():
    rng = np.random.default_rng(5)
    frames = {("v1", i): jpeg(frame_of(i % 3, rng)) for i in range(4)}
    frames |= {("v2", i): jpeg(frame_of(i % 3, rng)) for i in range(3)}
    good = frames[("v1", 0)]
    frames[("v3", 0)] = good[: len(good) // 3]  # truncated: corrupt
    frames[("v3", 1)] = b""  # empty
    frames[("v3", 2)] = None  # a uniform slice: no key frame, not an error
    return frames


def test_vectors_land_rejects_are_recorded_and_a_rerun_changes_nothing(spark, lake, config_for, keyframes):
    base = config_for(lake)
    # one inference task with one thread: a single Python worker imports torch (the test stays quick on 2 cores)
    config = base.model_copy(update={"features": base.features.model_copy(update={"inference_tasks": 1,
                                                                                   "cpu_threads": 1})})
    write_shots(spark, lake, keyframes)

    first, run = run_stage(spark, lake, config)
    assert (first.processed, first.vectors, first.inserted) == (9, 7, 7)
    assert first.rejects_by_reason == {"corrupt_image": 1, "empty_image": 1}
    assert first.devices == ["cpu x1 threads"]

    rows = {(r["video_id"], r["shot_idx"]): r for r in delta_io.read_table(spark, lake, SILVER_FRAME_FEATURES.name).collect()}
    assert set(rows) == {("v1", 0), ("v1", 1), ("v1", 2), ("v1", 3), ("v2", 0), ("v2", 1), ("v2", 2)}
    row = rows[("v1", 1)]
    assert (row["backbone"], row["dim"], len(row["features"])) == ("efficientnet_lite0", 1280, 1280)
    assert row["params_hash"] == bb.params_hash(config.features) and row["pca_version"] is None
    # the Spark job computes exactly what the plain pipeline computes, bit for bit
    keys = sorted(rows)
    plain, _ = bb.extract_images(bb.build_extractor(config.features, device="cpu", threads=1),
                                 [keyframes[k] for k in keys])
    assert np.array_equal(np.array([rows[k]["features"] for k in keys], np.float32), plain)

    rejects = {r["entity_key"]: r for r in delta_io.read_table(spark, lake, OPS_STAGE_REJECTS.name).collect()}
    assert {k: (r["stage"], r["reason"]) for k, r in rejects.items()} == {
        "v3/0": ("features", "corrupt_image"), "v3/1": ("features", "empty_image")}
    assert hashlib.sha1(keyframes[("v3", 0)]).hexdigest() in rejects["v3/0"]["detail"]  # which bytes were judged
    ledger = delta_io.read_table(spark, lake, OPS_JOB_RUNS.name).filter(F.col("run_id") == run.run_id).first()
    assert (ledger["status"], ledger["rows_in"], ledger["rows_out"], ledger["rows_rejected"]) == ("succeeded", 9, 7, 2)
    assert ledger["input_versions"][SILVER_SHOTS.name] == delta_io.current_version(spark, lake, SILVER_SHOTS.name)

    before = {name: snapshot(spark, lake, name) for name in (SILVER_FRAME_FEATURES.name, OPS_STAGE_REJECTS.name)}
    version = delta_io.current_version(spark, lake, SILVER_FRAME_FEATURES.name)
    again, _ = run_stage(spark, lake, config)
    assert (again.processed, again.inserted, again.updated) == (0, 0, 0)  # known-bad bytes are not retried either
    assert again.devices == []  # no task had a row: no model was loaded
    assert delta_io.current_version(spark, lake, SILVER_FRAME_FEATURES.name) == version
    assert {name: snapshot(spark, lake, name) for name in before} == before

    # a new key frame, a re-cut one and a repaired one: only those three go through the model
    write_shots(spark, lake, {("v2", 3): jpeg(frame_of(1, np.random.default_rng(9))),
                              ("v1", 0): jpeg(frame_of(2, np.random.default_rng(10))),
                              ("v3", 1): jpeg(frame_of(0, np.random.default_rng(11)))})
    third, _ = run_stage(spark, lake, config)
    assert (third.vectors, third.inserted, third.updated, third.rejected) == (3, 2, 1, 0)
    after = snapshot(spark, lake, SILVER_FRAME_FEATURES.name)
    unchanged = [r for r in before[SILVER_FRAME_FEATURES.name] if (r[0], r[1]) != ("v1", 0)]
    assert all(r in after for r in unchanged) and len(after) == 9


def test_handcrafted_with_stored_pca_is_reproducible(spark, lake, config_for, keyframes):
    base = config_for(lake)
    features = base.features.model_copy(update={"backbone": "handcrafted", "pca_dim": 3, "inference_tasks": 1})
    config = base.model_copy(update={"features": features})
    write_shots(spark, lake, keyframes)

    first, run = run_stage(spark, lake, config)
    assert first.devices == ["cpu/opencv"] and first.vectors == 7 and first.pca_fitted and first.pca_rows == 7
    table = delta_io.read_table(spark, lake, SILVER_FRAME_FEATURES.name)
    reduced = table.filter(F.col("backbone") == pca_label("handcrafted", 3)).collect()
    assert len(reduced) == 7 and {r["dim"] for r in reduced} == {3} and {r["pca_version"] for r in reduced} == {first.pca_version}
    np.testing.assert_allclose([np.linalg.norm(r["features"]) for r in reduced], 1.0, rtol=1e-5)
    pca = delta_io.read_table(spark, lake, SILVER_FEATURE_PCA.name).collect()
    assert len(pca) == 1 and pca[0]["version"] == first.pca_version and pca[0]["n_samples"] == 7
    assert len(pca[0]["components"]) == 3 * bb.HANDCRAFTED_DIM
    assert run.params["pca_version"] == first.pca_version

    before = {name: snapshot(spark, lake, name) for name in (SILVER_FRAME_FEATURES.name, SILVER_FEATURE_PCA.name)}
    again, _ = run_stage(spark, lake, config)  # reuses the stored PCA
    assert (again.vectors, again.pca_fitted, again.pca_rows, again.pca_version) == (0, False, 0, first.pca_version)
    refit, _ = run_stage(spark, lake, config, refit_pca=True)  # same sample, same basis, same version
    assert (refit.pca_fitted, refit.pca_version, refit.pca_rows) == (True, first.pca_version, 0)
    assert {name: snapshot(spark, lake, name) for name in before} == before


def test_plan_gives_each_concurrent_task_its_share_of_the_cores():
    two_tasks = plan_inference(FeaturesConfig(), cores=2)
    assert (two_tasks.partitions, two_tasks.threads) == (2, 1)
    one_task = plan_inference(FeaturesConfig(inference_tasks=1), cores=2)
    assert (one_task.partitions, one_task.threads) == (1, 2)
    many = plan_inference(FeaturesConfig(inference_tasks=64), cores=16, task_cpus=2, executor_cores=4)
    assert (many.partitions, many.threads) == (64, 2)  # 8 slots of 2 cores
    gpu = plan_inference(FeaturesConfig(), cores=16, local_gpus=1)
    assert (gpu.partitions, gpu.decode_threads, gpu.arrow_batch) == (1, 15, 256)


def test_pca_is_deterministic_and_keeps_the_main_directions():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(20, 3)))[0].T  # 3 orthonormal directions in 20-d
    x = (rng.normal(size=(200, 3)) * [5.0, 3.0, 2.0]) @ basis + rng.normal(0, 0.01, (200, 20))
    pca = fit_pca(x, 3, "b", "h")
    assert pca.components.shape == (3, 20) and pca.explained_variance_ratio.sum() > 0.99
    assert np.all(np.diff(pca.explained_variance_ratio) <= 0)
    assert fit_pca(x, 3, "b", "h").version == pca.version
    assert fit_pca(x[:150], 3, "b", "h").version != pca.version
    y = project(x, pca, l2=False)
    np.testing.assert_allclose(np.linalg.norm(pca.components @ basis.T, axis=1), 1.0, atol=1e-3)  # same subspace
    np.testing.assert_allclose(y.var(axis=0), [25, 9, 4], rtol=0.3)
    with pytest.raises(ValueError, match="needs more than"):
        fit_pca(x[:3], 3, "b", "h")
