"""kfr export: every selected key frame once per width under its content hash, a pseudonymised manifest in Parquet
and JSONL, hostile ids kept out of every path, and a consumer that follows CURRENT never sees half an export."""

from __future__ import annotations

import datetime
import hashlib
import json

import cv2
import numpy as np
import pytest

from kfr_spark import delta_io
from kfr_spark.catalog import GOLD_USER_KEYFRAMES, SILVER_SHOTS
from kfr_spark.config import ConfigError
from kfr_spark.export import current_manifest, export_date, pseudonym
from kfr_spark.ledger import JobRun

pytestmark = pytest.mark.spark

DAY = datetime.date(2026, 12, 1)
HOSTILE_VIDEO = "../../../../tmp/kfr-escape"
HOSTILE_USER = "/etc/passwd\x00; rm -rf ~"


def jpeg(seed: int, width: int = 400, height: int = 224) -> bytes:
    rng = np.random.default_rng(seed)
    image = (rng.random((height, width, 3)) * 255).astype(np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


@pytest.fixture()
def scored(spark, lake, config_for, tmp_path):
    """Three videos (one with a hostile id, one with an undecodable key frame) ranked for three users."""
    videos = {"v1": 3, HOSTILE_VIDEO: 2, "broken": 1}
    shots = []
    for i, (video, n) in enumerate(videos.items()):
        for k in range(n):
            data = b"not a jpeg" if video == "broken" else jpeg(10 * i + k)
            shots.append((video, k, k * 2.0, k * 2.0 + 2, None, None, k * 2.0 + 1, None, data, 400, 224, False,
                          "test", "p", "r"))
    delta_io.merge_upsert(spark, lake, SILVER_SHOTS.name, spark.createDataFrame(shots, SILVER_SHOTS.schema))
    ranked = []
    for user in ("u1", "u2", HOSTILE_USER):
        for video, n in videos.items():
            for rank in range(1, n + 1):
                ranked.append((DAY, user, video, rank, (rank + len(user)) % n, 1.0 / rank, "kfrci", "abc", "r"))
    delta_io.replace_partition(spark, lake, GOLD_USER_KEYFRAMES.name,
                               spark.createDataFrame(ranked, GOLD_USER_KEYFRAMES.schema), {"run_date": DAY})
    config = config_for(lake)
    export = config.export.model_copy(update={"out_dir": tmp_path / "export", "widths": (320, 160),
                                              "salt": "test-salt-1234"})
    return config.model_copy(update={"export": export}), len(ranked)


def run(spark, lake, config):
    return export_date(spark, lake, config, DAY, JobRun(job="export", config_hash="t"))


def read_jsonl(folder):
    return [json.loads(line) for part in sorted(folder.glob("part-*")) for line in part.read_text().splitlines()]


def test_each_key_frame_is_written_once_per_width_under_its_content_hash(spark, lake, scored):
    config, _ = scored
    summary = run(spark, lake, config)
    out = config.export.out_dir
    files = sorted(p for p in (out / "images").rglob("*.jpg"))
    assert len(files) == 5 * 2  # five decodable key frames, two widths; the broken one has none
    for path in files:
        assert path.stem == hashlib.sha256(path.read_bytes()).hexdigest()  # the name is the content
        width = int(path.parent.parent.name.removeprefix("w"))
        assert cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR).shape[1] == width
    assert summary.images == 10 and summary.missing_images == 1
    run(spark, lake, config)  # a rerun writes no new picture
    assert sorted(p for p in (out / "images").rglob("*.jpg")) == files


def test_the_manifest_is_pseudonymised_and_the_same_in_parquet_and_jsonl(spark, lake, scored):
    import pyarrow.parquet as pq

    config, n_ranked = scored
    summary = run(spark, lake, config)
    manifest = current_manifest(config.export.out_dir, DAY)
    assert manifest == summary.manifest_dir
    rows = pq.read_table(manifest / "manifest.parquet").to_pylist()
    assert sorted(map(json.dumps, rows)) == sorted(map(json.dumps, read_jsonl(manifest / "manifest.jsonl")))
    assert len(rows) == summary.rows == n_ranked - 3  # the broken video's rank 1, for each of the three users
    keys = {r["user_key"] for r in rows}
    assert keys == {pseudonym("test-salt-1234", u) for u in ("u1", "u2", HOSTILE_USER)}
    assert not any(u in json.dumps(rows) for u in ("u1", "u2"))
    for r in rows:
        for width in (320, 160):
            assert (config.export.out_dir / r[f"image_w{width}"]).is_file()


def test_hostile_ids_never_become_paths(spark, lake, scored, tmp_path):
    config, _ = scored
    run(spark, lake, config)
    out = config.export.out_dir.resolve()
    for path in out.rglob("*"):
        assert out in path.resolve().parents
        assert "kfr-escape" not in str(path) and "passwd" not in str(path)
    assert not (tmp_path.parent / "kfr-escape").exists()


def test_a_failed_export_leaves_the_previous_one_current(spark, lake, scored, monkeypatch):
    import kfr_spark.export as export

    config, _ = scored
    first = run(spark, lake, config)

    def dies(*args, **kwargs):
        raise RuntimeError("driver preempted")

    monkeypatch.setattr(export.json, "dumps", dies)  # dies after the manifest files, before _SUCCESS and CURRENT
    with pytest.raises(RuntimeError, match="preempted"):
        run(spark, lake, config)
    monkeypatch.undo()
    assert current_manifest(config.export.out_dir, DAY) == first.manifest_dir
    assert (first.manifest_dir / "_SUCCESS.json").is_file()
    second = run(spark, lake, config)
    assert current_manifest(config.export.out_dir, DAY) == second.manifest_dir != first.manifest_dir


def test_an_export_needs_a_salt(spark, lake, scored):
    config, _ = scored
    config = config.model_copy(update={"export": config.export.model_copy(update={"salt": None})})
    with pytest.raises(ConfigError, match="salt"):
        run(spark, lake, config)
