"""Petastorm feeding: a training run's batches are a function of its seed, shard and data, nothing else.

Two trainings of one table with one seed must see the same batches, or a rerun (or the same nightly on a cluster)
trains a different model. Petastorm left two holes here: seed 0 meant "unseeded", and without summary metadata the
row group order followed a multithreaded directory listing.
"""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from kfr_spark import feed
from kfr_spark.models.base import seeded

pytestmark = pytest.mark.spark


def first_batches(data, seed: int, rank: int = 0, shards: int = 1, n: int = 12) -> list[list[int]]:
    with data.batches(32, seed=seed, rank=rank, shards=shards) as batches, seeded(seed):
        return [next(batches)["user"].tolist() for _ in range(n)]


@pytest.fixture(scope="module")
def data(spark, tmp_path_factory):
    rows = (spark.range(3000).select(F.col("id").alias("user"), (F.col("id") % 17).alias("frame"))
            .repartition(6, "user").sortWithinPartitions("user"))
    return feed.materialize(spark, rows, tmp_path_factory.mktemp("petastorm"))


def test_one_seed_gives_the_same_batches_every_time_and_another_seed_other_batches(data):
    for seed in (0, 7):  # 0 is the config default, which Petastorm would take for "no seed"
        assert first_batches(data, seed) == first_batches(data, seed) == first_batches(data, seed)
    assert first_batches(data, 0) != first_batches(data, 7)


def test_shards_are_disjoint_and_stable(data):
    shard0, shard1 = first_batches(data, 3, rank=0, shards=2), first_batches(data, 3, rank=1, shards=2)
    assert shard0 == first_batches(data, 3, rank=0, shards=2)
    seen0, seen1 = {u for b in shard0 for u in b}, {u for b in shard1 for u in b}
    assert seen0 and seen1 and not seen0 & seen1


def test_unshuffled_reads_follow_the_files_order(data):
    with data.batches(64, shuffle=False, endless=False) as batches:
        users = [u for b in batches for u in b["user"].tolist()]
    with data.batches(64, shuffle=False, endless=False) as batches:
        again = [u for b in batches for u in b["user"].tolist()]
    assert users == again and sorted(users) == list(range(3000))
