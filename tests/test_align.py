"""Alignment: typing delay removed, clamped to the video, pinned to the shot on screen; reruns exact."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kfr_spark import delta_io
from kfr_spark.align import align_comments, align_video, shot_for, typing_units
from kfr_spark.catalog import BRONZE_TSC, SILVER_SHOTS
from kfr_spark.config import AlignConfig
from kfr_spark.ledger import JobRun

CFG = AlignConfig(typing_chars_per_minute=60.0, max_typing_delay_s=30.0, end_tolerance_s=1.0)  # 1 s a unit


def comments(*rows):
    return pd.DataFrame(
        [("bilibili", "v1", f"c{i}", "u", t, 1, False, text, None) for i, (t, text) in enumerate(rows)],
        columns=["source", "video_id", "comment_id", "user_id", "video_time_s", "mode", "is_special", "text",
                 "posted_at"],
    )


SHOTS = pd.DataFrame({"shot_idx": [0, 1, 2], "start_s": [0.0, 10.0, 20.0], "end_s": [10.0, 20.0, 30.0]})


def test_typing_units_count_cjk_characters_and_latin_words():
    assert typing_units("哈哈哈") == 3
    assert typing_units("awsl 太美了") == 4
    assert typing_units("2333") == 1
    assert typing_units("！！！") == 0


def test_shot_boundary_belongs_to_the_shot_that_starts_there():
    starts = np.array([0.0, 10.0, 20.0])
    assert shot_for(np.array([0.0, 9.999, 10.0, 19.5, 20.0, 29.0]), starts).tolist() == [0, 0, 1, 1, 2, 2]


def test_typing_delay_moves_a_comment_into_the_previous_shot():
    # "好看好看" takes 4 s to type at 60 units/min: written at 12 s, reacting to 8 s, which is shot 0.
    out = align_video(comments((12.0, "好看好看"), (15.0, "好")), SHOTS, CFG).aligned
    assert out["typing_delay_s"].tolist() == [4.0, 1.0]
    assert out["moment_s"].tolist() == [8.0, 14.0]
    assert out["shot_idx"].tolist() == [0, 1]


def test_moments_are_clamped_to_the_video_and_delay_is_capped():
    long_text = "字" * 100  # 100 s of typing, capped at 30 s
    out = align_video(comments((2.0, "好看好看"), (25.0, long_text), (30.5, "好")), SHOTS, CFG).aligned
    assert out["moment_s"].tolist() == [0.0, 0.0, 29.5]  # 2-4 clamps to 0; 25-30 clamps to 0
    assert out["typing_delay_s"].tolist()[1] == 30.0
    assert out["shot_idx"].tolist() == [0, 0, 2]


def test_comments_outside_the_video_or_on_unknown_videos_are_rejected():
    result = align_video(comments((5.0, "好"), (31.5, "晚了"), (-1.0, "早了"), (float("nan"), "坏")), SHOTS, CFG)
    assert result.aligned["comment_id"].tolist() == ["c0"]
    assert result.rejects["reason"].tolist() == ["outside_video"] * 3
    unknown = align_video(comments((5.0, "好")), SHOTS.iloc[0:0], CFG)
    assert unknown.aligned.empty and unknown.rejects["reason"].tolist() == ["unknown_video"]
    assert unknown.rejects["entity_key"].tolist() == ["bilibili/v1/c0"]


@pytest.mark.spark
def test_spark_alignment_is_exact_and_a_rerun_changes_no_row(spark, lake, base_config):
    from datetime import date

    tsc = spark.createDataFrame(
        [
            ("bilibili", vid, cid, "u1", t, None, 1, text, 25, 0xFFFFFF, 0, False, "bilibili_xml", "f.xml", i,
             "r0", date(2026, 1, 1))
            for i, (vid, cid, t, text) in enumerate(
                [("v1", "a", 12.0, "好看好看"), ("v1", "b", 25.0, "好"), ("v1", "c", 99.0, "晚"), ("v2", "d", 1.0, "无")]
            )
        ],
        schema=BRONZE_TSC.schema,
    )
    delta_io.merge_insert_new(spark, lake, BRONZE_TSC.name, tsc)
    shots = spark.createDataFrame(
        [("v1", int(i), float(s), float(e), None, None, None, None, None, None, None, True, "uniform", "h", "r0")
         for i, s, e in SHOTS.itertuples(index=False)],
        schema=SILVER_SHOTS.schema,
    )
    delta_io.merge_upsert(spark, lake, SILVER_SHOTS.name, shots)

    run = JobRun(job="align", config_hash="x")
    summary = align_comments(spark, lake, CFG, run)
    assert summary["aligned"] == 2 and summary["rejected"] == {"outside_video": 1, "unknown_video": 1}
    table = delta_io.read_table(spark, lake, "silver.tsc_aligned")
    got = {r["comment_id"]: (r["moment_s"], r["shot_idx"]) for r in table.collect()}
    assert got == {"a": (8.0, 0), "b": (24.0, 2)}

    before = sorted(tuple(r) for r in table.drop("run_id").collect())
    version = delta_io.current_version(spark, lake, "silver.tsc_aligned")
    again = align_comments(spark, lake, CFG, JobRun(job="align", config_hash="x"), full=True)
    assert again["written"] == 0
    assert sorted(tuple(r) for r in delta_io.read_table(spark, lake, "silver.tsc_aligned").drop("run_id").collect()) == before
    assert delta_io.current_version(spark, lake, "silver.tsc_aligned") >= version


def test_typing_units_treat_emoji_marks_and_kana_like_the_reference_regex():
    # ❤️ is a symbol plus a variation selector (no unit); ー and ・ sit in the kana block (a unit each).
    assert typing_units("❤️前方高能") == 4
    assert typing_units("カッコいいー") == 6
    assert typing_units("abc_def 12.5") == 3
    assert typing_units("") == 0


def _random_case(rng: np.random.Generator, texts: list[str]):
    """Videos with irregular shots (some starting together, one of 1000 uniform shots), and comments anywhere:
    before the start, past the end, NaN, on boundaries, on a video without shots."""
    shot_rows, comment_rows = [], []
    for v in range(6):
        vid = f"v{v}"
        if v == 0:
            starts = np.arange(1000) * 0.6
        else:
            starts = np.sort(np.round(rng.uniform(0, 300, rng.integers(1, 40)), 1))
            starts[0] = rng.choice([0.0, 2.5])
        ends = np.append(starts[1:], starts[-1] + rng.uniform(0, 20))
        shot_rows += [(vid, i, float(s), float(e)) for i, (s, e) in enumerate(zip(starts, ends))]
        edge = list(starts[rng.integers(0, len(starts), 5)]) + [float(ends[-1]), float(ends[-1]) + 0.99]
        times = list(rng.uniform(-5, ends[-1] + 5, 60)) + [float("nan"), float("inf"), float("-inf")]
        comment_rows += [(vid, float(t), texts[rng.integers(0, len(texts))]) for t in times]
        comment_rows += [(vid, float(t), "！！") for t in edge]  # no typing delay: exactly on a boundary
    comment_rows += [("v_no_shots", 3.0, "好")]
    comments_df = pd.DataFrame(
        [("bilibili", vid, f"c{i}", "u", t, 1, False, text, None) for i, (vid, t, text) in enumerate(comment_rows)],
        columns=["source", "video_id", "comment_id", "user_id", "video_time_s", "mode", "is_special", "text",
                 "posted_at"],
    )
    shots_df = pd.DataFrame(shot_rows, columns=["video_id", "shot_idx", "start_s", "end_s"])
    return comments_df, shots_df


@pytest.mark.spark
def test_spark_job_agrees_with_the_pure_rule_on_irregular_shots_and_real_comment_texts(spark, lake):
    from datetime import date

    real_texts = pd.read_csv("tests/data/sentiment_eval.tsv", sep="\t", quoting=3)["text"].astype(str).tolist()
    comments_df, shots_df = _random_case(np.random.default_rng(7), real_texts + ["❤️😂", "ＡＢＣ１２３", "ok 666"])
    cfg = AlignConfig(typing_chars_per_minute=40.0, max_typing_delay_s=30.0, end_tolerance_s=1.0)

    expected, expected_rejects = {}, {}
    for vid, group in comments_df.groupby("video_id"):
        result = align_video(group, shots_df[shots_df["video_id"] == vid], cfg)
        for r in result.aligned.itertuples():
            expected[r.comment_id] = (r.typing_delay_s, r.moment_s, r.shot_idx)
        expected_rejects.update(dict(zip(result.rejects["entity_key"], result.rejects["reason"])))

    tsc = spark.createDataFrame(
        [(r.source, r.video_id, r.comment_id, "u", r.video_time_s, None, 1, r.text, 25, 0, 0, False, "bilibili_xml",
          "f.xml", i, "r0", date(2026, 1, 1)) for i, r in enumerate(comments_df.itertuples())],
        schema=BRONZE_TSC.schema,
    )
    delta_io.merge_insert_new(spark, lake, BRONZE_TSC.name, tsc)
    shots = spark.createDataFrame(
        [(r.video_id, int(r.shot_idx), r.start_s, r.end_s, None, None, None, None, None, None, None, True, "uniform",
          "h", "r0") for r in shots_df.itertuples()],
        schema=SILVER_SHOTS.schema,
    )
    delta_io.merge_upsert(spark, lake, SILVER_SHOTS.name, shots)

    summary = align_comments(spark, lake, cfg, JobRun(job="align", config_hash="x"))
    got = {r["comment_id"]: (r["typing_delay_s"], r["moment_s"], r["shot_idx"])
           for r in delta_io.read_table(spark, lake, "silver.tsc_aligned").collect()}
    rejects = {r["entity_key"]: r["reason"] for r in delta_io.read_table(spark, lake, "ops.stage_rejects").collect()}
    assert len(expected) > 350 and set(expected_rejects.values()) == {"outside_video", "unknown_video"}
    assert got == expected
    assert rejects == expected_rejects
    assert summary["aligned"] == len(expected) and sum(summary["rejected"].values()) == len(expected_rejects)
