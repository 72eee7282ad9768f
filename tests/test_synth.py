"""Specification of the synthetic danmaku generator (kfr_spark.synth).

The generator plants a known, learnable signal: users comment more (and more positively) on shots
of concepts they like; comment words name the shot's concept; user activity has a long tail; the
comment time is the moment reacted to plus a typing delay. Everything is a pure function of the
config, whatever the number of worker processes.
"""

from __future__ import annotations

import dataclasses
import json
import re
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from defusedxml import ElementTree as DET

from kfr_spark.synth import (
    CONCEPTS,
    SynthConfig,
    compose_comment,
    concept_frame,
    generate,
    plan_video,
    render_frames,
    render_video,
    sample_user_activity,
    user_hash,
)
from kfr_spark.synth.lexicon import GREETINGS, NEGATIVE_WORDS, POSITIVE_WORDS

FIXTURE_XML = Path("/work/shared/fixtures/danmaku/bilibili/"
                   "bilibili-DanmakuFlameMaster__Sample_res_raw_comments.xml")

TINY = SynthConfig(seed=11, n_videos=5, n_users=300, n_comments=2_500, duration_s=(6.0, 10.0),
                   fps=12, frame_size=(64, 48), with_video=True, fade_fraction=0.4)
MEDIUM = SynthConfig(seed=5, n_videos=80, n_users=10_000, n_comments=120_000)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    runs = {}
    for name, cfg, workers in (("a1", TINY, 1), ("a1_again", TINY, 1), ("a2", TINY, 2),
                               ("b1", SynthConfig(**{**TINY.__dict__, "seed": 12}), 1)):
        out = tmp_path_factory.mktemp(name)
        generate(cfg, out, workers=workers)
        runs[name] = _files(out)
    return runs


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    out = tmp_path_factory.mktemp("medium")
    summary = generate(MEDIUM, out, workers=2)
    gt = out / "ground_truth"
    return {
        "out": out,
        "summary": summary,
        "videos": pd.read_csv(out / "videos.csv", dtype={"path": str}, keep_default_na=False),
        "shots": pd.read_parquet(gt / "shots.parquet"),
        "users": pd.read_parquet(gt / "users.parquet"),
        "comments": pd.read_parquet(gt / "comments.parquet"),
    }


# --- determinism ---------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_for_every_file(tiny_runs):
    a, again = tiny_runs["a1"], tiny_runs["a1_again"]
    assert a == again
    kinds = {Path(name).suffix for name in a}
    assert {".xml", ".parquet", ".csv", ".json", ".mp4"} <= kinds


def test_different_seed_gives_different_data(tiny_runs):
    a, b = tiny_runs["a1"], tiny_runs["b1"]
    assert a["danmaku/syn000000.xml"] != b["danmaku/syn000000.xml"]
    assert a["videos/syn000000.mp4"] != b["videos/syn000000.mp4"]
    for table in ("shots", "users", "comments"):
        name = f"ground_truth/{table}.parquet"
        assert a[name] != b[name], table


def test_worker_count_does_not_change_output(tiny_runs):
    assert tiny_runs["a1"] == tiny_runs["a2"]


def test_parquet_contents_are_equal_not_just_bytes(tmp_path):
    cfg = SynthConfig(seed=3, n_videos=3, n_users=100, n_comments=500)
    t1 = generate(cfg, tmp_path / "x", workers=1)
    t2 = generate(cfg, tmp_path / "y", workers=2)
    for attr in ("shots_path", "users_path", "comments_truth_path"):
        pd.testing.assert_frame_equal(pd.read_parquet(getattr(t1, attr)),
                                      pd.read_parquet(getattr(t2, attr)))


# --- the Bilibili XML ----------------------------------------------------------------------------


def test_xml_has_the_exact_shape_of_a_real_bilibili_file(medium):
    real = FIXTURE_XML.read_bytes()
    ours = (medium["out"] / "danmaku" / "syn000000.xml").read_bytes()
    head = b'<?xml version="1.0" encoding="UTF-8"?><i><chatserver>chat.bilibili.com</chatserver><chatid>'
    assert real.startswith(head) and ours.startswith(head)
    assert re.match(rb".*?</chatid><mission>0</mission><maxlimit>\d+</maxlimit><source>k-v</source><d p=",
                    ours)
    assert real.endswith(b"</d>\r\n</i>") and ours.endswith(b"</d>\r\n</i>")
    # every comment after the first starts on its own CRLF + 4-space line, like the real file
    assert ours.count(b"\r\n    <d p=") == ours.count(b"<d p=") - 1


def test_xml_parses_and_every_field_is_valid(medium):
    videos = medium["videos"].set_index("video_id")
    rows = []
    for xml in sorted((medium["out"] / "danmaku").glob("*.xml")):
        vid = xml.stem
        root = DET.parse(xml).getroot()
        assert root.tag == "i"
        assert root.findtext("chatserver") == "chat.bilibili.com"
        assert int(root.findtext("chatid")) == videos.loc[vid, "chatid"]
        ds = root.findall("d")
        assert len(ds) == videos.loc[vid, "n_comments"]
        for d in ds:
            p = d.get("p").split(",")
            assert len(p) == 8
            rows.append((vid, *p, d.text or ""))
    x = pd.DataFrame(rows, columns=["video_id", "time", "mode", "size", "color", "ts", "pool",
                                    "hash", "row_id", "text"])
    assert len(x) == MEDIUM.n_comments
    assert x["time"].str.fullmatch(r"\d+\.\d{5}").all()  # 5 decimals, like real files
    t = x["time"].astype(float)
    assert (t >= 0).all() and (t < x["video_id"].map(videos["duration_s"])).all()
    mode = x["mode"].astype(int)
    assert mode.isin([1, 4, 5, 7]).all()
    assert (mode == 1).mean() > 0.85 and {4, 5, 7} <= set(mode)
    assert (x["size"].astype(int) > 0).all() and x["color"].astype(int).between(0, 0xFFFFFF).all()
    assert x["ts"].astype(int).between(1_300_000_000, MEDIUM.crawl_end).all()
    assert (x["pool"] == "0").all()
    assert x["hash"].str.fullmatch(r"[0-9a-f]{8}").all()
    x["row_id"] = x["row_id"].astype(np.int64)
    assert x["row_id"].is_unique

    # each comment agrees with the ground truth: hash = crc32(user id), time, text
    m = x.merge(medium["comments"], on=["video_id", "row_id"], how="left", validate="1:1")
    assert m["user_id"].notna().all()
    assert (m["hash"] == m["user_id"].map(lambda u: f"{zlib.crc32(str(u).encode()):08x}")).all()
    assert np.allclose(t, m["time_s"], atol=1e-9)
    plain = m["mode_x"].astype(int) != 7
    assert (m.loc[plain, "text_x"] == m.loc[plain, "text_y"]).all()  # escaping round-trips
    for payload, shown in zip(m.loc[~plain, "text_x"], m.loc[~plain, "text_y"]):
        arr = json.loads(payload)  # advanced comment: a JSON array carrying the displayed text
        assert len(arr) == 14 and arr[4] == shown
    assert m["text_y"].str.contains("[&<>]").any()  # escaping was exercised


def test_user_hash_is_bilibili_crc32_and_names_one_user(medium):
    users = medium["users"]
    assert user_hash(1) == "83dcefb7"  # crc32(b"1")
    assert users["user_hash"].is_unique and users["user_id"].is_unique
    sample = users.sample(200, random_state=0)
    for uid, h in zip(sample["user_id"], sample["user_hash"]):
        assert h == f"{zlib.crc32(str(uid).encode()):08x}"


# --- catalog, shots, manifest --------------------------------------------------------------------


def test_catalog_and_shots_are_consistent(medium):
    videos, shots = medium["videos"], medium["shots"]
    assert list(videos.columns[:9]) == ["video_id", "chatid", "title", "duration_s", "fps", "width",
                                        "height", "n_shots", "path"]
    assert (videos["path"] == "").all()  # not rendered
    assert videos["duration_s"].between(*MEDIUM.duration_s).all()
    assert len(shots) == videos["n_shots"].sum()
    for vid, g in shots.groupby("video_id"):
        g = g.sort_values("shot_idx")
        v = videos.set_index("video_id").loc[vid]
        assert g["start_frame"].iloc[0] == 0 and g["end_frame"].iloc[-1] == v["n_frames"]
        assert (g["start_frame"].to_numpy()[1:] == g["end_frame"].to_numpy()[:-1]).all()
        assert ((g["end_s"] - g["start_s"]) >= MEDIUM.min_shot_s - 1e-9).all()
        assert (g["concept"].to_numpy()[1:] != g["concept"].to_numpy()[:-1]).all()
        assert g["transition_in"].iloc[0] == "cut"
    assert set(shots["transition_in"]) == {"cut", "fade"}
    fades = shots[shots["transition_in"] == "fade"]
    assert 0.1 < len(fades) / len(shots) < 0.3
    assert fades["fade_s"].between(0.5, 1.0 + 1e-9).all()


def test_manifest_records_seed_parameters_and_counts(medium):
    m = json.loads((medium["out"] / "manifest.json").read_text("utf-8"))
    assert m["format"] == "kfr-synth" and isinstance(m["format_version"], int)
    assert m["seed"] == MEDIUM.seed and m["config"]["n_comments"] == MEDIUM.n_comments
    assert m["counts"]["comments"] == MEDIUM.n_comments
    assert m["counts"]["shots"] == len(medium["shots"])
    assert sum(m["counts"]["comments_by_mode"].values()) == MEDIUM.n_comments
    assert len(m["concepts"]) == MEDIUM.n_concepts


def test_no_per_comment_truth_above_the_threshold(tmp_path):
    cfg = SynthConfig(seed=1, n_videos=3, n_users=50, n_comments=400, truth_max_comments=399)
    s = generate(cfg, tmp_path)
    assert s.comments_truth_path is None
    assert not (tmp_path / "ground_truth" / "comments.parquet").exists()
    assert json.loads(s.manifest_path.read_text())["files"]["comments_truth"] is None
    assert s.n_comments == 400  # the XML still holds every comment


def test_rerun_of_the_same_config_is_allowed_but_mixing_configs_is_not(tmp_path):
    cfg = SynthConfig(seed=1, n_videos=3, n_users=20, n_comments=50)
    generate(cfg, tmp_path)
    first = _files(tmp_path)
    generate(cfg, tmp_path)  # same config: regenerated in place, same bytes
    assert _files(tmp_path) == first
    smaller = SynthConfig(seed=1, n_videos=2, n_users=20, n_comments=50)
    with pytest.raises(FileExistsError):
        generate(smaller, tmp_path)
    generate(smaller, tmp_path, overwrite=True)  # no stale syn000002.xml is left behind
    assert sorted(p.name for p in (tmp_path / "danmaku").iterdir()) == ["syn000000.xml",
                                                                       "syn000001.xml"]


def test_progress_reports_every_video_in_order(tmp_path):
    seen: list[tuple[int, int]] = []
    generate(SynthConfig(seed=1, n_videos=4, n_users=20, n_comments=80), tmp_path, workers=2,
             progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_invalid_configs_are_rejected():
    with pytest.raises(ValueError):
        SynthConfig(n_concepts=len(CONCEPTS) + 1)
    with pytest.raises(ValueError):
        SynthConfig(frame_size=(255, 144))
    with pytest.raises(ValueError):
        SynthConfig(duration_s=(1.0, 5.0))  # shorter than one minimum shot
    with pytest.raises(ValueError, match="n_looks"):
        SynthConfig(n_concepts=6, n_looks=7)


def test_a_manifest_older_than_a_parameter_reads_as_its_default(tmp_path):
    cfg = SynthConfig(seed=1, n_videos=2, n_users=20, n_comments=40)
    s = generate(cfg, tmp_path)
    manifest = json.loads(s.manifest_path.read_text())
    del manifest["config"]["n_looks"]  # as written before n_looks existed
    s.manifest_path.write_text(json.dumps(manifest))
    generate(cfg, tmp_path)  # the same run, not "another config"
    with pytest.raises(FileExistsError):
        generate(SynthConfig(**{**cfg.__dict__, "n_looks": 6}), tmp_path)


# --- the planted signal --------------------------------------------------------------------------


def test_sample_user_activity_has_a_long_tail():
    w = sample_user_activity(100_000, 1.35, np.random.default_rng(0))
    w = np.sort(w)[::-1]
    assert w[: len(w) // 10].sum() / w.sum() > 0.5
    assert np.median(w) < 0.5 * w.mean()
    assert w.max() <= 100_000 ** (1 / 1.35) + 1e-6  # truncated: no single user dominates


def test_user_activity_follows_a_long_tail(medium):
    n = medium["users"]["n_comments"].to_numpy()
    active = np.sort(n[n > 0])[::-1]
    assert active.sum() == MEDIUM.n_comments
    top10 = active[: len(active) // 10].sum() / active.sum()
    assert top10 > 0.5  # the top 10 % of users write most comments
    assert np.median(active) <= 8 and np.median(active) < active.mean() / 2  # a handful
    assert (active == 1).mean() > 0.08  # many write a single comment
    assert active[0] > 50 * np.median(active)  # a few are very active
    assert (active >= 100).sum() >= 20  # enough heavy users for KFRCI's >= 100 filter
    q = medium["summary"].activity_quantiles
    assert q["median"] == np.median(active) and q["max"] == active[0]


@pytest.fixture(scope="module")
def taste(medium) -> pd.DataFrame:
    """Regular comments with the shot's concept and whether the commenter likes / dislikes it."""
    c = medium["comments"]
    c = c[c["kind"] == "regular"]
    shots = medium["shots"][["video_id", "shot_idx", "concept"]]
    c = c.merge(shots, on=["video_id", "shot_idx"])
    users = medium["users"].set_index("user_id")
    liked = users["liked_concepts"].reindex(c["user_id"]).to_numpy()
    disliked = users["disliked_concepts"].reindex(c["user_id"]).to_numpy()
    con = c["concept"].to_numpy()
    c = c.assign(
        liked=[k in set(l) for k, l in zip(con, liked)],
        disliked=[k in set(d) for k, d in zip(con, disliked)],
    )
    # the share of the video's screen time the user likes: what commenting "at random" would give
    sh = medium["shots"].assign(dur=lambda d: d["end_s"] - d["start_s"])
    per = sh.groupby(["video_id", "concept"])["dur"].sum()
    share = (per / per.groupby(level="video_id").transform("sum")).to_dict()
    c["liked_screen_share"] = [sum(share.get((v, k), 0.0) for k in l)
                               for v, l in zip(c["video_id"], liked)]
    c["disliked_screen_share"] = [sum(share.get((v, k), 0.0) for k in d)
                                  for v, d in zip(c["video_id"], disliked)]
    return c


def test_users_comment_more_on_liked_concepts(taste, medium):
    c = taste
    # observed share of comments on liked / disliked shots vs. the screen-time share
    assert c["liked"].mean() > 1.5 * c["liked_screen_share"].mean()
    assert c["disliked"].mean() < 0.8 * c["disliked_screen_share"].mean()


def test_comments_on_liked_concepts_are_more_positive(taste, medium):
    c = taste
    neutral = ~c["liked"] & ~c["disliked"]
    pos = {k: (c.loc[m, "sentiment"] == 1).mean() for k, m in
           (("liked", c["liked"]), ("neutral", neutral), ("disliked", c["disliked"]))}
    neg = {k: (c.loc[m, "sentiment"] == -1).mean() for k, m in
           (("liked", c["liked"]), ("neutral", neutral), ("disliked", c["disliked"]))}
    assert pos["liked"] > pos["neutral"] > pos["disliked"]
    assert neg["liked"] < neg["neutral"] < neg["disliked"]
    assert pos["liked"] > 0.6 and neg["disliked"] > 0.5
    # and the words carry it: sentiment words in the text follow the label
    has_pos = c["text"].map(lambda t: any(w in t for w in POSITIVE_WORDS))
    has_neg = c["text"].map(lambda t: any(w in t for w in NEGATIVE_WORDS))
    assert has_pos[c["liked"]].mean() > 2 * has_pos[c["disliked"]].mean()
    assert has_neg[c["disliked"]].mean() > 4 * has_neg[c["liked"]].mean()


def test_comment_words_name_the_shots_concept(taste, medium):
    c = taste
    words = [set(k.words) for k in CONCEPTS]
    own = np.mean([any(w in t for w in words[k]) for t, k in zip(c["text"], c["concept"])])
    other = np.mean([any(w in t for j, ws in enumerate(words) if j != k for w in ws)
                     for t, k in zip(c["text"], c["concept"])])
    assert own > 0.75 and other < 0.15


def test_popular_shots_get_more_comments_but_taste_dominates(taste, medium):
    c = taste
    per_shot = c.groupby(["video_id", "shot_idx"]).size().rename("n").reset_index()
    sh = medium["shots"].merge(per_shot, on=["video_id", "shot_idx"], how="left").fillna({"n": 0})
    rate = sh["n"] / (sh["end_s"] - sh["start_s"])
    assert np.corrcoef(np.log(sh["popularity"]), np.log1p(rate))[0, 1] > 0.2
    # within a video, a user's liked shots beat popular ones: liked share > 1.5x screen share above
    assert c["liked"].mean() / c["liked_screen_share"].mean() > 1.5


def test_personal_taste_beats_most_popular_which_beats_random(taste, medium):
    """Hold out 30 % of (user, video) pairs of active users; rank each held-out video's shots.

    MostPopular (comment counts of the shot in training) must be a real baseline, and a simple
    personal model (the user's training comments per concept x shot length) must beat it.
    """
    c = taste[taste["sentiment"] >= 0]
    n_user = c.groupby("user_id").size()
    c = c[c["user_id"].isin(n_user[n_user >= 50].index)]
    pairs = c[["user_id", "video_id"]].drop_duplicates()
    pairs = pairs.assign(test=np.random.default_rng(0).random(len(pairs)) < 0.3)
    c = c.merge(pairs, on=["user_id", "video_id"])
    train, test = c[~c["test"]], c[c["test"]]
    pop = train.groupby(["video_id", "shot_idx"]).size()
    pref = train.groupby(["user_id", "concept"]).size().unstack(fill_value=0) + 1
    shots = {v: g for v, g in medium["shots"].groupby("video_id")}
    hits = np.zeros(3)
    test = test[test["user_id"].isin(pref.index)]
    groups = test.groupby(["user_id", "video_id"])["shot_idx"].agg(set)
    for (uid, vid), truth in groups.items():
        s = shots[vid]
        dur = (s["end_s"] - s["start_s"]).to_numpy()
        by_pop = np.array([pop.get((vid, i), 0) for i in s["shot_idx"]]) + 1e-3 * dur
        by_user = pref.loc[uid].reindex(s["concept"]).to_numpy() * dur
        hits[0] += s["shot_idx"].iloc[by_pop.argmax()] in truth
        hits[1] += s["shot_idx"].iloc[by_user.argmax()] in truth
        hits[2] += len(truth) / len(s)
    most_popular, personal, random = hits / len(groups)
    assert len(groups) > 500
    assert most_popular > random + 0.1
    assert personal > most_popular + 0.05


def test_comment_time_is_moment_plus_typing_delay(medium):
    c = medium["comments"].merge(medium["videos"][["video_id", "duration_s"]], on="video_id")
    users = medium["users"].set_index("user_id")
    expected = np.round(np.minimum(c["moment_s"] + c["typing_delay_s"], c["duration_s"] - 1e-3), 5)
    assert np.allclose(c["time_s"], expected, atol=1e-9)
    cpm = c["n_chars"] * 60.0 / c["typing_delay_s"]
    assert cpm.median() == pytest.approx(MEDIUM.typing_cpm, rel=0.1)
    assert cpm.between(20, 120).mean() > 0.99
    assert (c["typing_delay_s"] > 0).all()
    # the moment lies inside the true shot
    sh = medium["shots"].set_index(["video_id", "shot_idx"])
    b = sh.loc[list(zip(c["video_id"], c["shot_idx"]))]
    assert ((c["moment_s"].to_numpy() >= b["start_s"].to_numpy() - 1e-9)
            & (c["moment_s"].to_numpy() < b["end_s"].to_numpy())).all()
    assert users.loc[c["user_id"].iloc[0], "typing_cpm"] > 0


def test_greetings_come_near_the_start(medium):
    c = medium["comments"]
    g = c[c["kind"] == "greeting"]
    assert 0.01 < len(g) / len(c) < 0.04
    assert (g["moment_s"] < MEDIUM.greeting_window_s).all()
    assert g["text"].isin(GREETINGS).all() and (g["sentiment"] == 0).all()


def test_comment_lengths_look_like_danmaku(medium):
    n = medium["comments"]["n_chars"]
    assert n.between(2, 15).mean() > 0.9 and n.min() >= 1 and n.max() <= 40
    assert (medium["comments"]["text"].str.len() == n).all()


def test_compose_comment_is_a_pure_function_of_its_rng():
    a = [compose_comment(0, 1, np.random.default_rng(s)) for s in range(50)]
    b = [compose_comment(0, 1, np.random.default_rng(s)) for s in range(50)]
    assert a == b and len(set(a)) > 20
    assert all(compose_comment(3, 0, np.random.default_rng(s), greeting=True) in GREETINGS
               for s in range(20))


# --- pixels ----------------------------------------------------------------------------------------


def _thumb(frame: np.ndarray, k: int = 2) -> np.ndarray:
    return cv2.resize(frame, (k, k), interpolation=cv2.INTER_AREA).astype(np.float64)


def test_concept_frames_are_told_apart_by_colour_and_layout():
    rng = np.random.default_rng(0)
    size = (96, 64)
    frames = {c: [concept_frame(c, rng, size) for _ in range(4)] for c in range(len(CONCEPTS))}
    for c, fs in frames.items():
        assert fs[0].shape == (64, 96, 3) and fs[0].dtype == np.uint8
        assert not np.array_equal(fs[0], fs[1])  # per-shot variation
    # nearest centroid of 2x2 thumbnails recovers the concept of every frame
    centroids = np.stack([np.mean([_thumb(f) for f in fs], axis=0) for fs in frames.values()])
    for c, fs in frames.items():
        for f in fs:
            assert np.abs(centroids - _thumb(f)).mean(axis=(1, 2, 3)).argmin() == c


def test_rendered_video_opens_with_the_expected_frames(tmp_path):
    cfg = SynthConfig(seed=4, n_videos=2, n_users=40, n_comments=100, duration_s=(9.0, 12.0),
                      fps=12, frame_size=(96, 64), with_video=True, fade_fraction=0.5)
    s = generate(cfg, tmp_path)
    assert s.n_rendered_videos == 2
    videos = pd.read_csv(s.videos_csv, keep_default_na=False)
    shots = pd.read_parquet(s.shots_path)
    checked_fade = False
    for _, v in videos.iterrows():
        assert v["path"] == f"videos/{v['video_id']}.mp4"
        cap = cv2.VideoCapture(str(tmp_path / v["path"]))
        assert cap.isOpened()
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == v["n_frames"]
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(cfg.fps)
        frames = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f)
        cap.release()
        assert len(frames) == v["n_frames"] and frames[0].shape == (64, 96, 3)

        vs = shots[shots["video_id"] == v["video_id"]].sort_values("shot_idx")
        within, across = [], []
        mids = []
        for _, sh in vs.iterrows():
            a, b = int(sh["start_frame"]), int(sh["end_frame"])
            inner = range(a + (b - a) // 3, b - (b - a) // 3)  # clear of any fade
            f1, f2 = frames[inner[0]], frames[inner[-1]]
            within.append(np.abs(_thumb(f1) - _thumb(f2)).mean())
            mids.append((int(sh["concept"]), _thumb(f1)))
            if sh["transition_in"] == "fade":  # the boundary (middle of the fade) is black
                assert frames[a].mean() < 12
                assert frames[a - 1].mean() < frames[a - int(sh["fade_s"] * cfg.fps) // 2 - 1].mean()
                checked_fade = True
        for i in range(len(mids)):
            for j in range(i + 1, len(mids)):
                if mids[i][0] != mids[j][0]:
                    across.append(np.abs(mids[i][1] - mids[j][1]).mean())
        assert across, "a video shows at least two concepts"
        assert np.mean(across) > 4 * np.mean(within)
        assert min(across) > max(within)
    assert checked_fade


def test_concepts_sharing_a_look_render_the_same_pixels_but_keep_their_words(tmp_path):
    """n_looks folds the concepts' visual identities: concept c is drawn as c % n_looks, so what
    tells concepts 0 and 6 apart is only in the comments."""
    cfg = SynthConfig(seed=3, n_videos=6, n_users=200, n_comments=3_000, n_looks=6)
    assert [cfg.look_of(c) for c in (0, 5, 6, 11)] == [0, 5, 0, 5]
    assert SynthConfig().look_of(11) == 11
    plans = [plan_video(cfg, i) for i in range(cfg.n_videos)]
    assert {s.look for p in plans for s in p.shots} <= set(range(6))
    assert any(s.concept != s.look for p in plans for s in p.shots)
    assert all(s.look == s.concept % 6 for p in plans for s in p.shots)

    shot = plan_video(cfg, 0).shots[0]
    twin = dataclasses.replace(shot, concept=shot.concept + 6 if shot.concept < 6 else shot.concept - 6)
    other = dataclasses.replace(shot, concept=(shot.concept + 1) % 12, look=-1)
    frames = {name: next(render_frames([s], 10, (64, 48), np.random.default_rng(1)))
              for name, s in (("shot", shot), ("twin", twin), ("other", other))}
    assert np.array_equal(frames["shot"], frames["twin"])
    assert not np.array_equal(frames["shot"], frames["other"])

    s = generate(cfg, tmp_path)
    looks = {c["id"]: c["look"] for c in json.loads(s.manifest_path.read_text())["concepts"]}
    assert looks[6] == 0 and looks[11] == 5
    truth = pd.read_parquet(s.comments_truth_path)
    shots = pd.read_parquet(s.shots_path)[["video_id", "shot_idx", "concept"]]
    words = {c.id: set(c.words) for c in CONCEPTS}
    sample = truth.merge(shots, on=["video_id", "shot_idx"]).query("kind == 'regular'").head(400)
    named = [any(w in t for w in words[int(c)]) for t, c in zip(sample["text"], sample["concept"])]
    assert np.mean(named) > 0.7  # the words still follow the concept, not the look


def test_render_video_alone_matches_generate(tmp_path):
    cfg = SynthConfig(seed=4, n_videos=1, n_users=10, n_comments=10, duration_s=(3.0, 4.0),
                      fps=10, frame_size=(32, 32), with_video=True)
    s = generate(cfg, tmp_path / "g")
    alone = render_video(plan_video(cfg, 0), tmp_path / "alone.mp4", seed=cfg.seed)
    assert alone.read_bytes() == (tmp_path / "g" / "videos" / "syn000000.mp4").read_bytes()
    assert s.video_dir == tmp_path / "g" / "videos"
