"""What a generated dataset leaves for personal models to find, from the generator's ground truth alone (seconds).

A `reproduce.py` run costs half an hour or more, and when no model beats MostPopular the first question is whether
the data leaves anything to learn. This script answers it for a generator config before any pipeline runs: it
generates the comments (no video), pins each comment to a shot the way `kfr align` does (its typing-time rule,
against the true shots), labels and splits them like `kfr dataset` (label 1 unless most of a user's comments on the
shot are negative; 30 % of each user's positives held out), builds the KFRCI protocol's queries (each held-out
video's key frames, less the user's training positives) and ranks them by:

* ``most_popular`` — training positives per key frame;
* ``exposure``     — the shot's length × its popularity multiplier, the best non-personal ranking;
* ``planted``      — exposure × the user's planted rate for the shot's concept: the ceiling;
* ``counted``      — log(most_popular) + log(the user's share of training positives on the shot's concept against
  everyone's): what a model that knew every key frame's concept could learn from the training data.

It prints NDCG@10 and F1@10 (per-user means) and the paired t of ``counted`` against ``most_popular``. For JIFR's
cold-user key frame test it prints the HR@3 ratio to a random frame of a ranking by the user's planted taste alone
(a frame score with no popularity term, as JIFR's is) and, with shared looks, by the taste a look can show (the mean
over the concepts drawn alike): a ceiling for any model that ranks frames by what they look like.

    .venv/bin/python benchmarks/headroom.py                                  # the benchmark dataset's settings
    .venv/bin/python benchmarks/headroom.py --synth mean_shot_s=4 --synth min_shot_s=1.5 --synth like_weight=6
    .venv/bin/python benchmarks/headroom.py --true-shots          # as if alignment were perfect

What it leaves out: shot detection (true shots are used), the sentiment model (true sentiment), greetings (dropped)
and the user and frame filters of `kfr dataset`. On the benchmark's settings before 2026-12-07 (the generator's
defaults but like_weight, 90-180 s videos) it gave planted NDCG@10 0.408 where the pipeline's `oracle.py` gave 0.405
on the same seed, and MostPopular 0.373 where the pipeline gave 0.373.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import oracle  # noqa: E402
from reproduce import BENCHMARK_SYNTH, settings_suffix, synth_overrides  # noqa: E402

from kfr_spark.config import AlignConfig  # noqa: E402
from kfr_spark.synth import SynthConfig  # noqa: E402


def pin_to_shots(comments: pd.DataFrame, shots: pd.DataFrame, cfg: AlignConfig) -> np.ndarray:
    """Each comment's shot under `kfr align`'s rule: posted time − typing delay, against the true cuts."""
    from kfr_spark.align import typing_delay_s

    moment = comments["time_s"].to_numpy() - typing_delay_s(comments["text"], cfg)
    pinned = np.empty(len(comments), dtype=np.int64)
    by_video = shots.sort_values(["video_id", "start_s"]).groupby("video_id")
    for video, rows in comments.groupby("video_id").indices.items():
        cuts = by_video.get_group(video)
        k = np.searchsorted(cuts["start_s"].to_numpy(), moment[rows], side="right") - 1
        pinned[rows] = cuts["shot_idx"].to_numpy()[np.clip(k, 0, len(cuts) - 1)]
    return pinned


def planted_rates(users: pd.DataFrame, config: SynthConfig) -> dict[int, np.ndarray]:
    """user id → rate of a label-1 comment on a shot of each concept (relative), by oracle.py's taste weights."""
    weight = oracle.taste_weights(dataclasses.asdict(config))
    rates = {}
    for user in users.itertuples():
        rate = np.full(config.n_concepts, weight[0])
        rate[list(user.liked_concepts)] = weight[1]
        rate[list(user.disliked_concepts)] = weight[-1]
        rates[user.user_id] = rate
    return rates


def per_user(queries: pd.DataFrame, score: np.ndarray, ks: tuple[int, ...], metrics: tuple[str, ...]) -> pd.DataFrame:
    from kfr_spark.models.metrics import grouped_ranking_metrics

    qid = queries["user_id"].astype(str) + "|" + queries["video_id"]
    tiebreak = np.random.default_rng(0).random(len(queries)) * 1e-9
    ids, values = grouped_ranking_metrics(qid.to_numpy(), score + tiebreak, queries["rel"].to_numpy(), ks,
                                          metrics=metrics)
    table = pd.DataFrame(values)
    table["user"] = pd.Series(ids).str.split("|").str[0]
    return table.groupby("user").mean()


def measure(config: SynthConfig, out: Path, align: AlignConfig | None) -> None:
    from kfr_spark.models.metrics import paired_t_test, random_ranking_metrics
    from kfr_spark.synth import generate

    if not (out / "manifest.json").exists():
        generate(config, out, workers=None, overwrite=True)
    truth = out / "ground_truth"
    comments = pd.read_parquet(truth / "comments.parquet",
                               columns=["video_id", "user_id", "shot_idx", "sentiment", "kind", "time_s", "text"])
    shots = pd.read_parquet(truth / "shots.parquet")
    users = pd.read_parquet(truth / "users.parquet")
    shots["exposure"] = (shots["end_s"] - shots["start_s"]) * shots["popularity"]
    pinned = comments["shot_idx"].to_numpy() if align is None else pin_to_shots(comments, shots, align)
    regular = comments["kind"] == "regular"
    on_their_shot = (pinned == comments["shot_idx"])[regular].mean()
    print(f"comments pinned to the shot they were written about: {on_their_shot:.1%}")
    comments = comments.assign(shot_idx=pinned, ok=(comments["sentiment"] >= 0).astype(int))[regular]

    frames = (comments.groupby(["user_id", "video_id", "shot_idx"])["ok"].agg(["size", "sum"]).reset_index())
    frames["label"] = (2 * frames["sum"] >= frames["size"]).astype(int)
    rng = np.random.default_rng(config.seed)
    positives = frames[frames["label"] == 1].assign(draw=lambda d: rng.random(len(d)))
    rank = positives.groupby("user_id")["draw"].rank(method="first")
    positives["test"] = rank <= np.round(positives.groupby("user_id")["label"].transform("sum") * 0.3)
    test, train = positives[positives["test"]], positives[~positives["test"]]
    key = ["user_id", "video_id", "shot_idx"]

    queries = (test[["user_id", "video_id"]].drop_duplicates()
               .merge(shots[["video_id", "shot_idx", "concept", "exposure"]], on="video_id")
               .merge(train[key].assign(seen=True), how="left", on=key))
    queries = queries[queries["seen"].isna()].drop(columns="seen")
    queries["rel"] = queries.merge(test[key].assign(rel=True), how="left", on=key)["rel"].eq(True).to_numpy()
    counts = train.groupby(["video_id", "shot_idx"]).size().rename("most_popular")
    queries = queries.merge(counts, how="left", left_on=["video_id", "shot_idx"], right_index=True)
    queries["most_popular"] = queries["most_popular"].fillna(0.0)
    rates = planted_rates(users, config)
    concept = queries["concept"].to_numpy()
    taste = np.stack([rates[u] for u in queries["user_id"]])[np.arange(len(queries)), concept]

    on_concept = train.merge(shots[["video_id", "shot_idx", "concept"]], on=["video_id", "shot_idx"])
    mine = (on_concept.groupby(["user_id", "concept"]).size().unstack(fill_value=0)
            .reindex(columns=range(config.n_concepts), fill_value=0))
    everyone = (on_concept.groupby("concept").size().reindex(range(config.n_concepts), fill_value=0) + 1.0).to_numpy()
    everyone = everyone / everyone.sum()
    share = (mine.to_numpy() + 5 * everyone) / (mine.to_numpy().sum(1, keepdims=True) + 5) / everyone
    share = pd.DataFrame(share, index=mine.index).reindex(queries["user_id"]).to_numpy()[np.arange(len(queries)),
                                                                                      concept]
    scores = {
        "most_popular": queries["most_popular"].to_numpy(),
        "exposure": queries["exposure"].to_numpy(),
        "planted": queries["exposure"].to_numpy() * taste,
        "counted": np.log(queries["most_popular"].to_numpy() + 0.5) + np.log(share),
    }
    results = {name: per_user(queries, s, (10,), ("ndcg", "f1")) for name, s in scores.items()}
    print(f"KFRCI protocol: {len(results['planted'])} users, {len(shots):,} key frames, "
          f"{len(train) / len(shots):.1f} training positives per key frame")
    print("| ranking | ndcg@10 | f1@10 |\n|---|---|---|")
    for name, table in results.items():
        print(f"| {name} | {table['ndcg@10'].mean():.4f} | {table['f1@10'].mean():.4f} |")
    for metric in ("ndcg@10", "f1@10"):
        t = paired_t_test(results["counted"][metric].to_numpy(), results["most_popular"][metric].to_numpy())
        print(f"counted vs most_popular, {metric}: t {t.statistic:.1f}")

    # JIFR's test: for users kept out of frame-level training, every key frame of each video they liked one in
    cold = pd.Series(sorted(frames["user_id"].unique())).sample(frac=0.1, random_state=config.seed)
    liked = frames[(frames["label"] == 1) & frames["user_id"].isin(cold)]
    cold_q = (liked[["user_id", "video_id"]].drop_duplicates()
              .merge(shots[["video_id", "shot_idx", "concept"]], on="video_id"))
    cold_q["rel"] = cold_q.merge(liked[key].assign(rel=True), how="left", on=key)["rel"].eq(True).to_numpy()
    cold_rates = np.stack([rates[u] for u in cold_q["user_id"]])
    looks = np.array([config.look_of(c) for c in range(config.n_concepts)])
    look_rates = np.stack([cold_rates[:, looks == look].mean(1) for look in range(looks.max() + 1)], axis=1)
    sizes = cold_q.groupby(["user_id", "video_id"])["rel"].agg(["size", "sum"])
    random = np.nanmean(random_ranking_metrics(sizes["size"].to_numpy(), sizes["sum"].to_numpy(), (3,),
                                               metrics=("hr",))["hr@3"])
    rows = np.arange(len(cold_q))
    for name, s in (("planted taste", cold_rates[rows, cold_q["concept"].to_numpy()]),
                    ("taste a look shows", look_rates[rows, looks[cold_q["concept"].to_numpy()]])):
        hr = np.nanmean(per_user(cold_q, s, (3,), ("hr",))["hr@3"])
        print(f"JIFR key frame HR@3 by {name}: {hr:.4f} = {hr / random:.2f}x a random frame's ({random:.4f}), "
              f"{cold.size} cold users")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comments", type=int, default=300_000)
    parser.add_argument("--videos", type=int, default=90)
    parser.add_argument("--users", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=2017)
    parser.add_argument("--synth", action="append", default=[], metavar="KEY=VALUE",
                        help="a SynthConfig field over the benchmark's settings (reproduce.BENCHMARK_SYNTH)")
    parser.add_argument("--typing-cpm", type=float, default=AlignConfig().typing_chars_per_minute,
                        help="align.typing_chars_per_minute")
    parser.add_argument("--true-shots", action="store_true",
                        help="keep every comment on the shot it was written about: what alignment costs")
    args = parser.parse_args()
    settings = {**BENCHMARK_SYNTH, **synth_overrides(args.synth)}
    config = SynthConfig(seed=args.seed, n_videos=args.videos, n_users=args.users, n_comments=args.comments,
                         **settings)
    out = common.OUT / f"headroom-{args.comments}-v{args.videos}-s{args.seed}{settings_suffix(settings)}"
    started = time.perf_counter()
    measure(config, out, None if args.true_shots else AlignConfig(typing_chars_per_minute=args.typing_cpm))
    print(f"\n{time.perf_counter() - started:.0f}s ({out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
