"""Ingest through Spark: real fixtures land with their SOURCES.md counts, bad files are rejected record by
record while their good records are kept, and a second identical ingest changes no row."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from kfr_spark import delta_io
from kfr_spark.catalog import Lakehouse
from kfr_spark.ingest import ingest_files
from kfr_spark.ledger import JobRun

from conftest import fixtures_dir

pytestmark = pytest.mark.spark

BAD_CORPUS = Path(__file__).parent / "data" / "bad_tsc"

# Comments per fixture file, from fixtures/SOURCES.md. One file has a genuinely empty comment, which is
# rejected as empty_text: comments + rejects still add up to the SOURCES.md count.
SOURCES_COUNTS = {
    "BiliVista-backend__danmu.xml": 3600,
    "bilibili-DanmakuFlameMaster__Sample_res_raw_comments.xml": 1239,
    "hihkm-DanmakuFactory__example_test_danmaku01.xml": 1200,
    "jabbany-ABPlayerHTML5__comment.xml": 1139,
    "jabbany-ABPlayerHTML5__demo_assets_comment-otsukimi.xml": 1336,
    "jabbany-ABPlayerHTML5__demo_assets_comment-science.xml": 1000,
    "jabbany-ABPlayerHTML5__demo_assets_hanabi.xml": 1734,
    "jabbany-CommentCoreLibrary__test_bilibili.xml": 331,
    "jabbany-CommentCoreLibrary__test_boss.xml": 1000,
    "jabbany-CommentCoreLibrary__test_comment.xml": 1386,
    "jabbany-CommentCoreLibrary__test_rokubunnoichi.xml": 877,
    "jabbany-CommentCoreLibrary__test_scripting_av734512.xml": 3002,
    "jabbany-CommentCoreLibrary__test_test.xml": 1104,
    "np5cm1s-danmukuEverywhere__bilibili.xml": 3000,
    "xpadev-net-niconicomments__docs_sample_commentdata_0.json": 954,
    "xpadev-net-niconicomments__docs_sample_commentdata_2.json": 1250,
}
EMPTY_TEXT_IN = {"jabbany-ABPlayerHTML5__demo_assets_comment-science.xml": 1}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """One input folder: every real fixture plus the whole bad-file corpus."""
    root = tmp_path_factory.mktemp("inbox")
    danmaku = fixtures_dir() / "danmaku"
    for path in danmaku.rglob("*"):
        if path.is_file():
            shutil.copy(path, root / path.name)
    for path in BAD_CORPUS.iterdir():
        if path.name != "expected.json":
            shutil.copy(path, root / path.name)
    return root


def ingest(spark, lake, base_config, paths, **settings):
    run = JobRun(job="ingest", config_hash="test")
    cfg = base_config.ingest.model_copy(update=settings)
    summary = ingest_files(spark, lake, cfg, [str(p) for p in paths], run)
    return summary, run


def per_file(frame):
    return {Path(r["source_file"]).name: r["n"] for r in frame.groupBy("source_file").agg(F.count("*").alias("n")).collect()}


def test_fixtures_and_bad_corpus_in_one_batch(spark, lake, base_config, batch):
    # Ids from file names: the hand-made bad files share <chatid>s, and would otherwise collide as duplicates.
    summary, run = ingest(spark, lake, base_config, [batch], video_id_from="filename")
    tsc = delta_io.read_table(spark, lake, "bronze.tsc")
    rejects = delta_io.read_table(spark, lake, "bronze.tsc_rejects")
    comments = per_file(tsc)
    rejected = per_file(rejects)

    for name, count in SOURCES_COUNTS.items():
        assert comments[name] + rejected.get(name, 0) == count, name
        assert rejected.get(name, 0) == EMPTY_TEXT_IN.get(name, 0), name

    expected = json.loads((BAD_CORPUS / "expected.json").read_text(encoding="utf-8"))
    for name, want in expected.items():
        assert comments.get(name, 0) == want["comments"], name
        got = {r["reason"]: r["n"] for r in rejects.filter(F.col("source_file").endswith("/" + name))
               .groupBy("reason").agg(F.count("*").alias("n")).collect()}
        assert got == want["rejects"], name

    # every reject says why, and what the summary and ledger say matches the tables
    assert rejects.filter(F.col("reason").isNull() | (F.col("reason") == "")).count() == 0
    assert summary.comments_inserted == tsc.count() == run.rows_out
    assert summary.rejects_inserted == rejects.count() == run.rows_rejected
    assert tsc.groupBy("source", "video_id", "comment_id").count().filter("count > 1").count() == 0

    # the second identical ingest changes no row
    before_tsc = sorted(map(tuple, tsc.collect()))
    before_rejects = sorted(map(tuple, rejects.collect()))
    again, _ = ingest(spark, lake, base_config, [batch], video_id_from="filename")
    assert (again.comments_inserted, again.rejects_inserted) == (0, 0)
    assert sorted(map(tuple, delta_io.read_table(spark, lake, "bronze.tsc").collect())) == before_tsc
    assert sorted(map(tuple, delta_io.read_table(spark, lake, "bronze.tsc_rejects").collect())) == before_rejects


def test_video_ids_and_special_modes(spark, lake, base_config):
    danmaku = fixtures_dir() / "danmaku" / "bilibili"
    ingest(spark, lake, base_config, [danmaku / "bilibili-DanmakuFlameMaster__Sample_res_raw_comments.xml",
                                      danmaku / "jabbany-ABPlayerHTML5__comment.xml",
                                      danmaku / "jabbany-CommentCoreLibrary__test_rokubunnoichi.xml"])
    tsc = delta_io.read_table(spark, lake, "bronze.tsc")
    ids = {r["video_id"] for r in tsc.select("video_id").distinct().collect()}
    # <chatid> where the file has one, else the file name
    assert ids == {"8729348", "jabbany-ABPlayerHTML5__comment", "91157"}
    special = tsc.filter("is_special").groupBy("mode").count().collect()
    assert {r["mode"] for r in special} <= {7, 8} and sum(r["count"] for r in special) >= 876


def test_a_new_file_adds_only_its_new_rows_and_cross_file_duplicates_are_rejected(spark, lake, base_config, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    first = inbox / "a.xml"
    first.write_text('<i><chatid>77</chatid><d p="1.0,1,25,0,1,0,ab,1">一</d><d p="2.0,1,25,0,1,0,ab,2">二</d></i>')
    ingest(spark, lake, base_config, [first])
    second = inbox / "b.xml"  # repeats comment 2 of the same video, adds comment 3
    second.write_text('<i><chatid>77</chatid><d p="2.0,1,25,0,1,0,ab,2">二</d><d p="3.0,1,25,0,1,0,ab,3">三</d></i>')
    summary, _ = ingest(spark, lake, base_config, [inbox])
    assert summary.comments_inserted == 1
    texts = sorted(r["text"] for r in delta_io.read_table(spark, lake, "bronze.tsc").collect())
    assert texts == ["一", "三", "二"]
    # within one batch, the same key in two files: the first file wins, the second copy is a reject
    lake2 = type(lake)(tmp_path / "lake2")
    summary2, _ = ingest(spark, lake2, base_config, [first, second])
    assert summary2.comments_inserted == 3 and summary2.rejects_by_reason == {"duplicate": 1}
    dup = delta_io.read_table(spark, lake2, "bronze.tsc_rejects").collect()[0]
    assert Path(dup["source_file"]).name == "b.xml" and dup["record_no"] == 1


def test_hostile_file_names_cannot_become_video_ids(spark, lake, base_config, tmp_path):
    # No <chatid>: the name would be the id. (A name that starts with "." or "_" is a hidden or marker file,
    # which Spark's listing, and ours, skip before any id is derived.)
    hostile = tmp_path / "x..%2F..%2Fetc passwd.xml"
    hostile.write_text('<i><d p="1.0,1,25,0,1,0,ab,1">x</d></i>')
    summary, _ = ingest(spark, lake, base_config, [hostile])
    assert summary.comments_inserted == 0 and summary.rejects_by_reason == {"bad_video_id": 1}


def test_oversized_files_are_rejected_without_reading_them(spark, lake, base_config, tmp_path):
    (tmp_path / "inbox").mkdir()
    big = tmp_path / "inbox" / "big.xml"
    big.write_text('<i><chatid>5</chatid>' + '<d p="1.0,1,25,0,1,0,ab,1">x</d>' * 200 + "</i>")
    small_limit = base_config.ingest.model_copy(update={"max_file_bytes": 1000})
    run = JobRun(job="ingest", config_hash="test")
    summary = ingest_files(spark, lake, small_limit, [str(tmp_path / "inbox")], run)
    assert summary.rejects_by_reason == {"oversized_file": 1} and summary.comments_inserted == 0


def test_only_new_reads_the_files_not_ingested_as_they_are_now(spark, lake, base_config, tmp_path):
    import os

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.xml").write_text('<i><chatid>5</chatid><d p="1.0,1,25,0,1,0,ab,1">一</d></i>')
    (inbox / "empty.xml").write_bytes(b"")

    def nightly_ingest():
        run = JobRun(job="ingest", config_hash="test")
        return ingest_files(spark, lake, base_config.ingest, [str(inbox)], run, only_new=True), run

    first, _ = nightly_ingest()
    assert first.files == 2 and first.comments_inserted == 1 and first.rejects_by_reason == {"empty_file": 1}
    again, run = nightly_ingest()  # nothing new: not one file is read
    assert again.files == 0 and again.records == 0 and run.metrics["input_files"] == 0
    (inbox / "b.xml").write_text('<i><chatid>5</chatid><d p="2.0,1,25,0,1,0,ab,2">二</d></i>')
    third, _ = nightly_ingest()
    assert third.files == 1 and third.comments_inserted == 1
    # a file rewritten in place (new length and time) is read again; its known comments are not duplicated
    (inbox / "a.xml").write_text('<i><chatid>5</chatid><d p="1.0,1,25,0,1,0,ab,1">一</d>'
                                 '<d p="3.0,1,25,0,1,0,ab,3">三</d></i>')
    os.utime(inbox / "a.xml", (1e9 + 7, 1e9 + 7))
    fourth, _ = nightly_ingest()
    assert fourth.files == 1 and fourth.comments_inserted == 1 and fourth.records == 2
    assert delta_io.read_table(spark, lake, "bronze.tsc").count() == 3
    recorded = {Path(r["path"]).name for r in delta_io.read_table(spark, lake, "ops.ingested_files").collect()}
    assert recorded == {"a.xml", "b.xml", "empty.xml"}


@pytest.mark.parametrize("only_new", [False, True], ids=["full", "only_new"])
def test_a_link_that_leads_outside_the_inputs_is_refused_unread_unless_allowed(spark, base_config, tmp_path, only_new):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.xml").write_text('<i><d p="1.0,1,25,0,1,0,ab,1">secret-words</d></i>')
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.xml").write_text('<i><d p="1.0,1,25,0,1,0,ab,1">一</d></i>')
    (inbox / "alias.xml").symlink_to(inbox / "a.xml")  # stays inside the inputs: followed
    (inbox / "leak.xml").symlink_to(outside / "secret.xml")
    (inbox / "linked").symlink_to(outside, target_is_directory=True)  # a whole folder that leads out

    def run_ingest(lake_name, **settings):
        lake = Lakehouse(tmp_path / lake_name)
        cfg = base_config.ingest.model_copy(update={"video_id_from": "filename", **settings})
        summary = ingest_files(spark, lake, cfg, [str(inbox)], JobRun(job="ingest", config_hash="test"),
                               only_new=only_new)
        return summary, lake

    summary, lake = run_ingest("strict")
    tsc = delta_io.read_table(spark, lake, "bronze.tsc")
    rejects = delta_io.read_table(spark, lake, "bronze.tsc_rejects")
    assert sorted(r["video_id"] for r in tsc.collect()) == ["a", "alias"]
    assert summary.rejects_by_reason == {"link_outside_inputs": 2}
    refused = {r["source_file"].split("/inbox/")[1]: r["raw"] for r in rejects.collect()}
    assert refused == {"leak.xml": "", "linked/secret.xml": ""}  # not one byte of the targets is kept
    recorded = {r["path"].split("/inbox/")[1] for r in delta_io.read_table(spark, lake, "ops.ingested_files").collect()}
    assert recorded == {"a.xml", "alias.xml", "leak.xml", "linked/secret.xml"}  # refused once, not every night

    summary, lake = run_ingest("allowing", allow_links_outside_inputs=True)
    assert summary.rejects_by_reason == {} and summary.comments_inserted == 4
    assert {r["text"] for r in delta_io.read_table(spark, lake, "bronze.tsc").collect()} == {"一", "secret-words"}
