"""The JVM UDFs (`kfr_spark/jvm/*.java`): built by set-up, loaded by every session, equal to the Python path."""

from __future__ import annotations

import shutil

import pytest

from kfr_spark import jvm_udfs
from kfr_spark.config import ConfigError, TextConfig
from kfr_spark.tokenize_job import ids_in_jvm

needs_javac = pytest.mark.skipif(shutil.which("javac") is None,
                                 reason="no JDK compiler here: the JVM UDFs are optional and the jobs use Python")


@needs_javac
def test_set_up_built_the_jar_and_the_session_loads_it(spark):
    assert jvm_udfs.built_jar() is not None, "run `make setup`: it builds the jar when javac is present"
    assert jvm_udfs.loaded(spark)
    assert not jvm_udfs.loaded(spark, "kfr.spark.NoSuchUdf")


@needs_javac
def test_token_ids_map_known_unknown_empty_null_and_non_ascii_tokens(spark):
    vocab = {"哈哈": 2, "awsl": 3, "2333": 4, "😂": 5, "前方高能": 6, "": 7}
    frame = spark.createDataFrame([(["哈哈", "awsl", "没见过"],), ([],), (None,), (["😂", "前方高能", "哈哈", ""],)],
                                  "tokens array<string>")
    udf = jvm_udfs.TokenIdsUdf(spark, vocab, unknown_id=1)
    try:
        got = [row[0] for row in frame.select(udf.column("tokens")).collect()]
    finally:
        udf.unpersist()
    assert got == [[2, 3, 1], [], None, [5, 6, 2, 7]]


@needs_javac
def test_an_empty_vocabulary_maps_every_token_to_unknown(spark):
    udf = jvm_udfs.TokenIdsUdf(spark, {}, unknown_id=1)
    try:
        got = spark.createDataFrame([(["a", "b"],)], "tokens array<string>").select(udf.column()).first()[0]
    finally:
        udf.unpersist()
    assert got == [1, 1]


def test_a_token_holding_nul_is_refused_before_anything_reaches_the_jvm():
    with pytest.raises(ValueError, match="NUL"):
        jvm_udfs.TokenIdsUdf(None, {"a\0b": 2}, unknown_id=1)


def test_where_ids_are_looked_up_follows_the_config_and_the_classpath(spark, monkeypatch):
    monkeypatch.setattr(jvm_udfs, "loaded", lambda session, name=jvm_udfs.TOKEN_IDS_CLASS: False)
    assert ids_in_jvm(spark, TextConfig(token_ids_in="auto")) is False
    assert ids_in_jvm(spark, TextConfig(token_ids_in="python")) is False
    with pytest.raises(ConfigError, match="token_ids_in: jvm"):
        ids_in_jvm(spark, TextConfig(token_ids_in="jvm"))
    monkeypatch.setattr(jvm_udfs, "loaded", lambda session, name=jvm_udfs.TOKEN_IDS_CLASS: True)
    assert ids_in_jvm(spark, TextConfig(token_ids_in="auto")) is True
    assert ids_in_jvm(spark, TextConfig(token_ids_in="python")) is False
