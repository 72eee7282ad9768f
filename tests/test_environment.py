"""The working set imports together and a Delta-enabled session round-trips a table."""

from __future__ import annotations

import importlib

import pytest

DESIGN_LIBRARIES = ["pyspark", "delta", "petastorm", "torch", "horovod.torch", "jieba", "cv2"]


@pytest.mark.parametrize("module", DESIGN_LIBRARIES)
def test_design_library_imports(module):
    assert importlib.import_module(module) is not None


def test_versions_are_the_spark_4_0_line():
    import numpy
    import pyarrow
    import pyspark
    from importlib.metadata import version

    assert pyspark.__version__.startswith("4.0.")
    assert version("delta-spark").startswith("4.0.")
    assert version("petastorm") == "0.13.1"
    assert numpy.__version__.startswith("1.")
    assert int(pyarrow.__version__.split(".")[0]) <= 14


def test_horovod_has_torch_and_gloo():
    import horovod.torch as hvd

    assert hvd.gloo_built()


def test_jieba_fast_matches_jieba_on_a_sentence():
    import jieba
    import jieba_fast

    sentence = "前方高能预警，这个视频太好看了2333"
    assert jieba_fast.lcut(sentence) == jieba.lcut(sentence)


def test_delta_session_writes_and_time_travels(spark, tmp_path):
    path = str(tmp_path / "t")
    spark.range(3).write.format("delta").save(path)
    spark.range(5).write.format("delta").mode("overwrite").save(path)
    assert spark.read.format("delta").load(path).count() == 5
    assert spark.read.format("delta").option("versionAsOf", 0).load(path).count() == 3


def test_session_uses_cached_delta_jars_not_ivy(spark):
    jars = spark.sparkContext.getConf().get("spark.jars", "")
    assert "delta-spark_2.13" in jars
    assert spark.sparkContext.getConf().get("spark.jars.packages", "") == ""
