"""`kfr tokenize` on a real Spark session: bronze.tsc → silver.tsc_tokens + silver.vocabulary.

bronze.tsc is written with `delta_io.merge_insert_new` from one real fixture file (DanmakuFlameMaster's sample,
1,239 comments, mode-7 ones included) and hand-made rows for the edge cases.
"""

from __future__ import annotations

import datetime as dt
import pandas as pd
import pyarrow as pa
import pytest
from pyspark.sql import functions as F

from kfr_spark import delta_io
from kfr_spark.catalog import BRONZE_TSC, SILVER_TSC_TOKENS, SILVER_VOCABULARY, Lakehouse
from kfr_spark.ledger import JobRun, record_job_run
from kfr_spark.text import FIRST_TOKEN_ID, PAD_ID, PAD_TOKEN, UNK_ID, UNK_TOKEN
from kfr_spark.tokenize_job import INPUT_COLUMNS, process_partition, tokenize_comments
from tests.conftest import fixtures_dir

FIXTURE = "bilibili-DanmakuFlameMaster__Sample_res_raw_comments.xml"

# (comment_id, text, mode, video_time_s, is_special) on video "edge"
EDGE_ROWS = [
    ("e1", "前排！！", 1, 2.0, False),  # greeting at the start
    ("e2", "前排！！", 1, 600.0, False),  # the same words later: not a greeting
    ("e3", "好看" * 200, 1, 50.0, False),  # longer than text.max_chars
    ("e4", "好看\ufffd\ufffd", 1, 50.0, False),  # replacement characters from a broken decoder
    ("e5", "\u200b\u200b", 1, 50.0, False),  # empty after normalization
    ("e6", "。。。？？", 1, 50.0, False),
    ("e7", '[0,0,"1-1",3.8,"字幕",0,0]', 7, 50.0, True),
    ("e8", "垃圾剧情 看不下去", 1, 60.0, False),
    ("e9", "awsl 猫猫yyds 2333333", 1, 70.0, False),
]


def bronze_rows(video_id: str, rows, source_file: str = "hand") -> list[tuple]:
    today = dt.date(2024, 1, 1)
    return [
        ("bilibili", video_id, cid, f"u{i % 7}", float(t), None, int(mode), text, 25, 16777215, 0, bool(special),
         "bilibili_xml", source_file, i + 1, "ingest-run", today)
        for i, (cid, text, mode, t, special) in enumerate(rows)
    ]


def fixture_rows() -> list[tuple]:
    from kfr_spark.tsc_formats import parse_tsc_file

    path = fixtures_dir() / "danmaku" / "bilibili" / FIXTURE
    parsed = parse_tsc_file(path.read_bytes(), path.name)
    rows = [(c.comment_id, c.text, c.mode, c.video_time_s, c.is_special) for c in parsed.comments]
    return bronze_rows(parsed.video_id or "fixture", rows, path.name)


def write_bronze(spark, lake: Lakehouse, rows: list[tuple]) -> None:
    delta_io.merge_insert_new(spark, lake, BRONZE_TSC.name, spark.createDataFrame(rows, schema=BRONZE_TSC.schema))


def run_tokenize(spark, lake, cfg, full: bool = False):
    """Through `tokenize_comments` without the ledger (the first run goes through it)."""
    run = JobRun(job="tokenize", config_hash="test")
    return tokenize_comments(spark, lake, cfg, run, full=full), run


def table(spark, lake, name) -> pd.DataFrame:
    return delta_io.read_table(spark, lake, name).toPandas()


def snapshot(spark, lake, name) -> list[tuple]:
    spec = {SILVER_TSC_TOKENS.name: SILVER_TSC_TOKENS, SILVER_VOCABULARY.name: SILVER_VOCABULARY}[name]
    columns = [c for c in spec.schema.fieldNames() if c not in spec.lineage_columns]
    rows = delta_io.read_table(spark, lake, name).select(*columns).collect()
    return sorted(tuple(r) for r in rows)


VOCAB_MAX_SIZE = 200  # below the fixture's distinct tokens, so the limit is exercised


@pytest.fixture(scope="module")
def scenario(spark, base_config, tmp_path_factory):
    """One lakehouse through a night and a rerun: bronze from the fixture file + edge rows tokenized through
    the ledger; the same run again (incremental, then --full); then new comments arrive (incremental).
    Snapshots are taken between the steps; the tests below read them."""
    lake = Lakehouse(tmp_path_factory.mktemp("tokenize") / "lakehouse")
    config = base_config.model_copy(update={
        "lakehouse": base_config.lakehouse.model_copy(update={"root": lake.root}),
        "text": base_config.text.model_copy(update={"vocab_max_size": VOCAB_MAX_SIZE}),
    })
    out = {"lake": lake, "config": config}
    write_bronze(spark, lake, fixture_rows() + bronze_rows("edge", EDGE_ROWS))
    with record_job_run(spark, lake, "tokenize", config, {"full": False}) as run:
        out["first"] = (tokenize_comments(spark, lake, config.text, run), run)
    out["tokens_1"] = table(spark, lake, SILVER_TSC_TOKENS.name)
    out["vocab_1"] = table(spark, lake, SILVER_VOCABULARY.name)
    out["snap_1"] = {name: snapshot(spark, lake, name) for name in (SILVER_TSC_TOKENS.name, SILVER_VOCABULARY.name)}
    out["versions_1"] = {name: delta_io.current_version(spark, lake, name) for name in out["snap_1"]}

    out["noop"] = run_tokenize(spark, lake, config.text)
    out["versions_noop"] = {name: delta_io.current_version(spark, lake, name) for name in out["snap_1"]}
    out["full"] = run_tokenize(spark, lake, config.text, full=True)
    out["snap_full"] = {name: snapshot(spark, lake, name) for name in out["snap_1"]}
    out["full_run_rows"] = (
        delta_io.read_table(spark, lake, SILVER_TSC_TOKENS.name).filter(F.col("run_id") == out["full"][1].run_id).count()
    )

    write_bronze(spark, lake, bronze_rows("later", [("n1", "弹幕合影2333", 1, 300.0, False),
                                                    ("n2", "火锅涮毛肚真香", 1, 301.0, False)]))
    out["increment"] = run_tokenize(spark, lake, config.text)
    out["tokens_2"] = table(spark, lake, SILVER_TSC_TOKENS.name)
    out["vocab_2"] = snapshot(spark, lake, SILVER_VOCABULARY.name)
    return out


def test_every_comment_gets_one_row_with_flags_tokens_and_polarity(spark, scenario):
    summary, run = scenario["first"]
    config = scenario["config"]
    rows = scenario["tokens_1"].set_index("comment_id")
    n_bronze = len(fixture_rows()) + len(EDGE_ROWS)
    assert len(rows) == n_bronze == summary.comments == run.rows_in == run.rows_out and summary.rejected == 0
    assert rows.index.is_unique and (rows["run_id"] == run.run_id).all()
    assert rows["sentiment_model"].str.startswith("lexicon@").all()

    expect = {"e1": "greeting", "e2": None, "e3": None, "e4": "invalid_surrogates", "e5": "empty",
              "e6": "punctuation_only", "e7": "special_mode", "e8": None, "e9": None}
    for cid, reason in expect.items():
        assert rows.loc[cid, "noise_reason"] == reason, cid
        assert rows.loc[cid, "is_noise"] == (reason is not None), cid
    assert rows.loc["e3", "truncated"] and len(rows.loc["e3", "text_norm"]) == config.text.max_chars
    assert rows.loc["e8", "polarity"] == 0 and rows.loc["e9", "polarity"] == 1
    assert list(rows.loc["e9", "tokens"]) == ["可爱", "猫猫", "神", "笑"]
    assert pd.isna(rows.loc["e7", "polarity"]) and len(rows.loc["e7", "tokens"]) == 0

    fixture = rows[rows["video_id"] != "edge"]
    assert (fixture["noise_reason"] == "special_mode").sum() == 279  # the file's mode-7 comments
    clean = fixture[~fixture["is_noise"]]
    assert len(clean) > 800 and (clean["polarity"].isin([0, 1])).all()
    assert 0.02 < (clean["polarity"] == 0).mean() < 0.3
    assert summary.noise_by_reason["special_mode"] == 280 and run.metrics["noise.special_mode"] == 280
    assert run.input_versions["bronze.tsc"] >= 0 and set(run.output_versions) == {"silver.tsc_tokens",
                                                                                  "silver.vocabulary"}


def test_token_ids_follow_the_vocabulary(scenario):
    summary, _ = scenario["first"]
    config = scenario["config"]
    vocab = scenario["vocab_1"].sort_values("token_id").reset_index(drop=True)
    assert list(vocab["token_id"]) == list(range(len(vocab))) and len(vocab) == summary.vocabulary_size
    assert len(vocab) == VOCAB_MAX_SIZE  # the fixture has more distinct tokens than the limit
    assert tuple(vocab.loc[PAD_ID, ["token", "count"]]) == (PAD_TOKEN, 0)
    assert vocab.loc[UNK_ID, "token"] == UNK_TOKEN and vocab.loc[UNK_ID, "count"] > 0
    words = vocab.iloc[FIRST_TOKEN_ID:]
    assert (words["count"] >= config.text.vocab_min_count).all()
    order = sorted(zip(words["count"], words["token"]), key=lambda ct: (-ct[0], ct[1]))
    assert list(zip(words["count"], words["token"])) == order  # by frequency, ties by token

    # The counts are the non-noise token occurrences, and every row's ids are its tokens looked up.
    rows = scenario["tokens_1"]
    clean_tokens = [t for tokens, noise in zip(rows["tokens"], rows["is_noise"]) if not noise for t in tokens]
    counted = pd.Series(clean_tokens).value_counts()
    assert all(counted[t] == c for t, c in zip(words["token"], words["count"]))
    assert vocab.loc[UNK_ID, "count"] == len(clean_tokens) - words["count"].sum()
    kept_last = words["count"].iloc[-1]
    assert (counted[~counted.index.isin(words["token"])] <= kept_last).all()  # nothing more frequent left out
    ids = dict(zip(words["token"], words["token_id"]))
    for tokens, token_ids in zip(rows["tokens"], rows["token_ids"]):
        assert list(token_ids) == [ids.get(t, UNK_ID) for t in tokens]
    assert ids["笑"] < 10  # 2333/哈哈/hhh all count for one token, among the most frequent


def test_rerun_changes_no_row(scenario):
    noop, _ = scenario["noop"]
    assert noop.comments == 0 and not noop.vocabulary_rebuilt and noop.written == 0
    assert scenario["versions_noop"] == scenario["versions_1"]  # nothing was even committed

    full, run = scenario["full"]
    assert full.comments == len(scenario["tokens_1"]) and full.vocabulary_rebuilt
    assert full.updated == 0 and full.written == 0 and run.rows_out == 0
    assert scenario["snap_full"] == scenario["snap_1"]  # same rows, same ids (lineage columns aside)
    assert scenario["full_run_rows"] == 0  # no row was rewritten with the new run id


def test_incremental_run_maps_new_comments_with_the_current_vocabulary(scenario):
    summary, run = scenario["increment"]
    assert summary.comments == 2 and summary.written == 2 and not summary.vocabulary_rebuilt
    assert scenario["vocab_2"] == scenario["snap_1"][SILVER_VOCABULARY.name]  # ids stay put between nights
    ids = {t: i for t, i, _ in scenario["vocab_2"]}
    rows = scenario["tokens_2"].set_index("comment_id")
    assert list(rows.loc["n1", "tokens"]) == ["弹幕", "合影", "笑"]
    assert list(rows.loc["n1", "token_ids"]) == [ids["弹幕"], ids["合影"], ids["笑"]]
    assert UNK_ID in set(rows.loc["n2", "token_ids"])  # words the vocabulary has not seen
    assert (rows.loc[["n1", "n2"], "run_id"] == run.run_id).all()
    earlier = rows.drop(index=["n1", "n2"])
    assert (earlier["run_id"] == scenario["first"][1].run_id).all()  # earlier rows were not reprocessed


def test_a_failing_comment_becomes_a_reject_not_a_failed_batch(monkeypatch, base_config):
    """The per-row isolation of the Python step, run without Spark (a processor that fails on one text)."""
    import kfr_spark.text as text

    real = text.processor_for(text.load_resources(base_config.text))

    class Flaky:
        def process(self, value, *args):
            if value == "boom":
                raise RuntimeError("tokenizer exploded")
            return real.process(value, *args)

    monkeypatch.setattr(text, "processor_for", lambda res: Flaky())
    rows = [("bilibili", "v", "1", None, "好看", 1, False, 3.0), ("bilibili", "v", "2", "u", "boom", 1, False, 4.0)]
    batch = pa.RecordBatch.from_pylist([dict(zip(INPUT_COLUMNS, r)) for r in rows])
    out = pa.Table.from_batches(list(process_partition(real.res, None)(iter([batch])))).to_pandas()
    assert list(out["error"].isna()) == [True, False] and "tokenizer exploded" in out["error"].iloc[1]
    assert list(out.iloc[0]["tokens"]) == ["好看"] and out.iloc[0]["polarity"] == 1
    assert out.iloc[1]["is_noise"] and out.iloc[1]["text_norm"] is None


def test_python_and_jvm_token_id_lookups_write_the_same_rows(spark, scenario, tmp_path):
    """The scenario looked ids up in the JVM (set-up builds the jar); the same comments through the Python lookup,
    on a first run (vocabulary built) and an incremental one (vocabulary read), give the very same rows."""
    if scenario["first"][1].params["token_ids_in"] != "jvm":
        pytest.skip("the kfr-udfs jar is not built here (no javac): only the Python lookup exists")
    lake = Lakehouse(tmp_path / "lakehouse")
    cfg = scenario["config"].text.model_copy(update={"token_ids_in": "python"})
    write_bronze(spark, lake, fixture_rows() + bronze_rows("edge", EDGE_ROWS))
    _, first = run_tokenize(spark, lake, cfg)
    assert first.params["token_ids_in"] == "python"
    assert snapshot(spark, lake, SILVER_TSC_TOKENS.name) == scenario["snap_1"][SILVER_TSC_TOKENS.name]

    write_bronze(spark, lake, bronze_rows("later", [("n1", "弹幕合影2333", 1, 300.0, False),
                                                    ("n2", "火锅涮毛肚真香", 1, 301.0, False)]))
    run_tokenize(spark, lake, cfg)
    later = table(spark, lake, SILVER_TSC_TOKENS.name).query("video_id == 'later'").sort_values("comment_id")
    want = scenario["tokens_2"].query("video_id == 'later'").sort_values("comment_id")
    assert [list(ids) for ids in later["token_ids"]] == [list(ids) for ids in want["token_ids"]]
    assert any(UNK_ID not in ids and len(ids) for ids in later["token_ids"])  # known words were looked up
