"""Ceilings of the KFRCI protocol on a generated lakehouse: each query's key frames ranked by what was planted.

Why: when no learned model beats MostPopular, the first question is whether the data leaves anything personal to
learn. The generator knows each shot's concept and exposure (its length × its popularity multiplier) and each
user's liked and disliked concepts. Ranking the very queries `kfr evaluate` builds by those bounds what a model
can reach, and splits it into the part nobody's taste explains (exposure: what MostPopular estimates) and the part
only a user's taste explains:

* ``exposure``  — length × popularity: the best non-personal ranking;
* ``taste``     — the user's rate of commenting on the shot's concept times its chance of a non-negative comment
  (what makes a label 1), the same for every shot of a concept;
* ``planted``   — their product: the generator's own rate of a positive label, the ceiling (up to the noise of
  which frames the users happened to comment on).

MostPopular can land above ``exposure``: its counts also carry the taste of the users a video draws, which is close
to a new viewer's own when users pick videos by taste (the generator's ``video_taste_strength``). The personal
headroom of a data set is ``planted`` − MostPopular; a model that needs more than that to win cannot show it there.

Usage: ``python benchmarks/oracle.py benchmarks/out/reproduce-…`` (a folder `reproduce.py` built: synth/, lakehouse/).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

SCORERS = ("exposure", "taste", "planted")
KS = (5, 10, 20)


def taste_weights(config: dict) -> dict[int, float]:
    """Taste code (-1 disliked, 0 neutral, 1 liked) → rate of a label-1 comment on such a shot, relative, from the
    generator's config as its manifest records it."""
    config = SimpleNamespace(**config)
    rate = {-1: config.dislike_weight, 0: 1.0, 1: config.like_weight}
    p_not_negative = {-1: 1 - config.sentiment_disliked[0], 0: 1 - config.sentiment_neutral[0],
                      1: 1 - config.sentiment_liked[0]}
    return {code: rate[code] * p_not_negative[code] for code in rate}


def planted_candidates(spark, root: Path, weights: dict[int, float]):
    """`kfr evaluate`'s KFRCI queries with the three planted scores of every candidate key frame."""
    from pyspark.sql import functions as F

    from kfr_spark import delta_io
    from kfr_spark.catalog import GOLD_FRAMES, SILVER_SHOTS, Lakehouse
    from kfr_spark.evaluate import candidates

    lake = Lakehouse(root / "lakehouse")
    truth = root / "synth" / "ground_truth"
    videos = (spark.read.option("header", True).csv(str(root / "synth" / "videos.csv"))
              .select(F.col("video_id").alias("synth_video"), F.col("chatid").alias("video_id")))
    truth_shots = (spark.read.parquet(str(truth / "shots.parquet"))
                   .select(F.col("video_id").alias("synth_video"), "start_s", "end_s", "concept", "popularity")
                   .join(videos, "synth_video"))
    users = spark.read.parquet(str(truth / "users.parquet")).select(
        F.col("user_hash").alias("user_id"), "liked_concepts", "disliked_concepts")
    frames = (delta_io.read_table(spark, lake, GOLD_FRAMES.name).select("video_id", "shot_idx", "frame_idx")
              .join(delta_io.read_table(spark, lake, SILVER_SHOTS.name).select("video_id", "shot_idx", "keyframe_s"),
                    ["video_id", "shot_idx"]))
    # the planted shot a detected key frame shows: the one its timestamp falls in
    frames = frames.join(F.broadcast(truth_shots), (frames.video_id == truth_shots.video_id)
                         & (frames.keyframe_s >= truth_shots.start_s) & (frames.keyframe_s < truth_shots.end_s)
                         ).select(frames.frame_idx, "concept", ((F.col("end_s") - F.col("start_s"))
                                                                * F.col("popularity")).alias("exposure"))
    code = (F.when(F.array_contains("liked_concepts", F.col("concept")), 1)
            .when(F.array_contains("disliked_concepts", F.col("concept")), -1).otherwise(0))
    taste = F.create_map(*[x for c, w in weights.items() for x in (F.lit(c), F.lit(w))])[code]
    return (candidates(spark, lake, False, "unused").join(frames, "frame_idx").join(users, "user_id")
            .select("user_id", "video_id", "relevant", "exposure", taste.alias("taste"),
                    (F.col("exposure") * taste).alias("planted")))


def user_ceilings(frame: pd.DataFrame) -> pd.DataFrame:
    """One user's candidates → the user's mean F1/NDCG@K per scorer (queries averaged, as `kfr evaluate` does)."""
    from kfr_spark.models.metrics import grouped_ranking_metrics

    rows = []
    for scorer in SCORERS:
        _, per_query = grouped_ranking_metrics(frame["video_id"].to_numpy(), frame[scorer].to_numpy(),
                                               frame["relevant"].to_numpy(), KS, metrics=("f1", "ndcg"))
        for name, values in per_query.items():
            metric, k = name.split("@")
            values = values[~np.isnan(values)]
            if values.size:
                rows.append((scorer, metric, int(k), float(values.mean())))
    return pd.DataFrame(rows, columns=["scorer", "metric", "k", "value"])


def ceilings(spark, root: Path) -> dict[tuple[str, str, int], float]:
    """(scorer, metric, k) → mean over users, from a folder `reproduce.py` built."""
    from pyspark.sql import functions as F

    from kfr_spark.synth.generate import MANIFEST

    if __name__ != "__main__":  # imported (by reproduce.py): the executors cannot import this folder's modules
        from pyspark import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    weights = taste_weights(json.loads((root / "synth" / MANIFEST).read_text())["config"])
    per_user = planted_candidates(spark, root, weights).groupBy("user_id").applyInPandas(
        user_ceilings, schema="scorer string, metric string, k int, value double")
    means = per_user.groupBy("scorer", "metric", "k").agg(F.avg("value").alias("value"))
    return {(r["scorer"], r["metric"], r["k"]): r["value"] for r in means.collect()}  # 18 rows


def print_table(table: dict[tuple[str, str, int], float]) -> None:
    print(f"| ceiling | {' | '.join(f'{m}@{k}' for m in ('f1', 'ndcg') for k in KS)} |")
    print("|---|" + "---|" * 6)
    for scorer in SCORERS:
        print(f"| {scorer} | {' | '.join(f'{table[(scorer, m, k)]:.4f}' for m in ('f1', 'ndcg') for k in KS)} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a reproduce.py dataset folder (holding synth/ and lakehouse/)")
    args = parser.parse_args()
    from kfr_spark.config import load_config
    from kfr_spark.session import build_session

    config = load_config(overrides=[f"lakehouse.root={args.folder / 'lakehouse'}"])
    spark = build_session(config, "kfr-bench-oracle")
    print(f"KFRCI protocol ceilings on {args.folder.name}: mean over users")
    print_table(ceilings(spark, args.folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
