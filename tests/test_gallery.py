"""kfr gallery: a static page of sample users' key frames beside the non-personalised choice, their words and the
evaluation plots — loaded in headless Chromium: it renders every image, logs no console error, and untrusted text
stays text."""

from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from kfr_spark import delta_io
from kfr_spark.catalog import (
    GOLD_EVAL_METRICS,
    GOLD_INTERACTIONS,
    GOLD_USER_KEYFRAMES,
    SILVER_SHOTS,
    SILVER_TSC_TOKENS,
)
from kfr_spark.gallery import build_gallery
from kfr_spark.ledger import JobRun

pytestmark = pytest.mark.spark

DAY = datetime.date(2026, 12, 1)
HOSTILE_USER = "<script>alert('pwned')</script>"
ARTIFACTS = Path(__file__).resolve().parents[1] / ".test-artifacts"
CHROMIUM = os.environ.get("KFR_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = np.zeros((144, 256, 3), np.uint8)
    image[:] = rng.integers(0, 255, 3)
    cv2.circle(image, (int(rng.integers(40, 216)), 72), 30, (255, 255, 255), -1)
    return cv2.imencode(".jpg", image)[1].tobytes()


@pytest.fixture()
def page(spark, lake, config_for, tmp_path):
    videos = [f"v{i}" for i in range(3)]
    shots = [(v, k, k * 2.0, k * 2.0 + 2, None, None, k * 2.0 + 1, None, jpeg(10 * i + k), 256, 144, False, "t", "p",
              "r") for i, v in enumerate(videos) for k in range(4)]
    delta_io.merge_upsert(spark, lake, SILVER_SHOTS.name, spark.createDataFrame(shots, SILVER_SHOTS.schema))
    users = {"alice": "kfrci", "bob": "kfrci", "carol": "jifr", HOSTILE_USER: "jifr"}
    ranked = [(DAY, u, v, rank, (rank + len(u)) % 4, 1.0 / rank, m, "k1", "r")
              for u, m in users.items() for v in videos for rank in range(1, 5)]
    delta_io.replace_partition(spark, lake, GOLD_USER_KEYFRAMES.name,
                               spark.createDataFrame(ranked, GOLD_USER_KEYFRAMES.schema), {"run_date": DAY})
    likes = [(u, v, 2, 1, "positive", 1, None, "train", "r") for u in users for v in videos]
    delta_io.merge_upsert(spark, lake, GOLD_INTERACTIONS.name, spark.createDataFrame(likes, GOLD_INTERACTIONS.schema))
    words = {"alice": ["夕阳", "好美", "哈哈"], "bob": ["打斗", "帅", "哈哈"], "carol": ["猫", "可爱", "哈哈"],
             HOSTILE_USER: ["<b>bold</b>", "哈哈"]}
    tokens = [("bilibili", "v0", f"{u}-{i}", u, "t", words[u], [2], False, None, False, 1, 0.9, "lexicon", "r")
              for u in users for i in range(3)]
    delta_io.merge_upsert(spark, lake, SILVER_TSC_TOKENS.name, spark.createDataFrame(tokens, SILVER_TSC_TOKENS.schema))
    metrics = [("e1", "kfrci", m, k, 0.3 + 0.01 * k, 0.2, 0.4, 30, "p", "r") for m in ("ndcg", "f1") for k in (5, 10, 20)]
    metrics += [("e2", "jifr", m, k, 0.2 * k, None, None, 5, "p", "r2") for m in ("frame_hr", "random_frame_hr")
                for k in (1, 2, 3)]
    delta_io.merge_upsert(spark, lake, GOLD_EVAL_METRICS.name, spark.createDataFrame(metrics, GOLD_EVAL_METRICS.schema))
    config = config_for(lake)
    config = config.model_copy(update={"gallery": config.gallery.model_copy(
        update={"out_dir": tmp_path / "gallery", "users": 4, "videos_per_user": 2})})
    return build_gallery(spark, lake, config, None, JobRun(job="gallery", config_hash="t"))


def test_the_gallery_shows_each_sample_user_beside_the_non_personalised_choice(page):
    text = page.page.read_text(encoding="utf-8")
    assert page.users == 4 and page.videos == 3 and page.plots == 2
    assert text.count("class='user'") == 4 and text.count("for this user") == 8  # 4 users x 2 videos
    assert "first frame" in text and "most popular" in text and "夕阳" in text
    assert HOSTILE_USER not in text and "&lt;script&gt;" in text and "<b>bold</b>" not in text
    images = list((page.page.parent / "images").glob("*.jpg"))
    assert len(images) == page.images > 0


def test_the_gallery_renders_in_headless_chromium_without_errors(page):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: make setup installs Debian's chromium (or set KFR_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    problems, dialogs = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        tab.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        tab.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
        tab.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        tab.goto(page.page.as_uri(), wait_until="load")
        tab.wait_for_function("document.body.dataset.imagesOk !== undefined")
        assert tab.evaluate("document.body.dataset.imagesOk") == "yes"
        assert int(tab.evaluate("document.body.dataset.images")) >= page.images
        widths = tab.evaluate("[...document.images].map(i => i.naturalWidth)")
        assert widths and min(widths) > 0
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "gallery.png"
        tab.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert problems == [] and dialogs == []
    assert shot.stat().st_size > 10_000
