"""Reproduce the papers' findings on the fixed-seed benchmark dataset, through the real pipeline.

    .venv/bin/python benchmarks/reproduce.py                 # ~1M comments, 300 rendered videos (long: see --help)
    .venv/bin/python benchmarks/reproduce.py --comments 200000 --videos 80   # a quicker look

The dataset: `kfr_spark.synth` with a fixed seed, videos long enough for K = 20 to mean something (90-180 s,
~30 shots each, rendered at 10 fps), users whose taste is over visual concepts — a concept decides what a key frame
looks like *and* which words its comments use — so preferences are partly visual, partly textual; `--looks 6`
makes pairs of concepts share one look, so part of every taste shows only in the words. Every stage runs
as `kfr <stage>` against a benchmark lakehouse under the cache (stages already done are skipped on a rerun:
delete the folder to start over). Then every model is trained (`kfr train`) and evaluated (`kfr evaluate`), and the
script prints:

* KFRCI protocol (frame-level models): F1@K, NDCG@K per model with 95 % intervals;
* the same queries' ceilings, ranked by the planted exposure and taste (`oracle.py`);
* paired t-tests across users: KFRCI against every other model on NDCG@10 and F1@10, and every model that uses
  images or text against every model that uses neither — "yes" when better with p < 0.01;
* JIFR protocol: item HR/NDCG@K, key frame HR@K for cold users against a random frame's, and the ratio at K = 3;
* a figure (`benchmarks/out/<the dataset folder>.png`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import oracle  # noqa: E402
from kfr_spark.config import DatasetConfig  # noqa: E402
from kfr_spark.synth import SynthConfig  # noqa: E402

FRAME_MODELS = ("most_popular", "pmf", "bpr", "vbpr", "kfri", "kfrc", "kfrci")
ITEM_MODELS = ("jifr", "jifr_na")
USES_CONTENT = {"vbpr", "kfri", "kfrc", "kfrci"}  # images or text
USES_NEITHER = {"most_popular", "pmf", "bpr"}


def dataset(args) -> tuple[Path, Path]:
    """(synthetic data folder, lakehouse) for this size, built through the pipeline once."""
    from kfr_spark.synth import generate

    default_scope = DatasetConfig.model_fields["negative_scope"].default
    name = f"reproduce-{args.comments}-v{args.videos}-s{args.seed}" + (
        f"-t{args.video_taste:g}" if args.video_taste != 1.0 else "") + (
        f"-l{args.like_weight:g}" if args.like_weight != SynthConfig.like_weight else "") + (
        f"-k{args.looks}" if args.looks != SynthConfig.n_looks else "")
    root = common.OUT / name
    if args.negative_scope != default_scope:
        root = root.with_name(f"{name}-n{args.negative_scope}")
        seed_from_default_scope(common.OUT / name, root)
    synth, lake = root / "synth", root / "lakehouse"
    config = SynthConfig(seed=args.seed, n_videos=args.videos, n_users=args.users, n_comments=args.comments,
                         duration_s=(90.0, 180.0), fps=10, with_video=True, video_taste_strength=args.video_taste,
                         like_weight=args.like_weight, n_looks=args.looks)
    stages = [
        ("synth", lambda: generate(config, synth, workers=None)),
        ("ingest", ["ingest", "--set", f"ingest.input_paths=[{synth / 'danmaku'}]"]),
        ("videos", ["videos", str(synth / "videos.csv"), "--id-column", "chatid"]),
        ("shots", ["shots"]),
        ("align", ["align"]),
        ("tokenize", ["tokenize"]),
        ("features", ["features"]),
        ("dataset", ["dataset", "--set", f"dataset.min_user_comments={args.min_user_comments}",
                     "--set", f"dataset.negative_scope={args.negative_scope}"]),
    ]
    for stage, action in stages:
        marker = root / f".{stage}.done"
        if marker.exists():
            continue
        started = time.perf_counter()
        if callable(action):
            action()
            out = ""
        else:
            _, _, out = common.run_kfr(action, lake)
        seconds = time.perf_counter() - started
        marker.write_text(json.dumps({"seconds": seconds}))
        print(f"  {stage}: {seconds:.0f}s {out.strip().splitlines()[-1] if out.strip() else ''}", flush=True)
    return synth, lake


def seed_from_default_scope(default_root: Path, root: Path) -> None:
    """Start another negative scope's lakehouse from the default one's bronze and silver tables: everything before
    the dataset stage is the same, and it is most of the run's time. Only a new folder is seeded."""
    import shutil

    if root.exists() or not (default_root / ".features.done").exists():
        return
    root.mkdir(parents=True)
    for layer in ("bronze", "silver"):
        shutil.copytree(default_root / "lakehouse" / layer, root / "lakehouse" / layer)
    for marker in default_root.glob(".*.done"):
        if marker.name != ".dataset.done":
            shutil.copy(marker, root / marker.name)
    print(f"  seeded from {default_root.name} (bronze, silver)", flush=True)


def train_and_evaluate(lake: Path, model: str, args) -> dict:
    sets = [f"train.epochs={args.epochs}", f"train.batch_size={args.batch_size}", f"train.lr={args.lr}",
            f"train.patience={args.patience}", f"dataset.min_user_comments={args.min_user_comments}", *args.set]
    train_s, peak, out = common.run_kfr(["train", "--model", model, "--num-proc", str(args.num_proc)], lake, sets)
    summary = out.strip().splitlines()[-1]
    print(f"  {summary}", flush=True)
    # The model this training produced or found finished, by path: what `--model` also resolves to now
    # (ops.model_selection), but the path ties the printed figures to this very training.
    (model_path,) = re.findall(r" → (\S+\.pt) \[run ", summary)
    eval_s, _, out = common.run_kfr(["evaluate", model_path, "--eval-id", f"bench-{model}"], lake, sets)
    print(f"  {out.strip().splitlines()[-1]}", flush=True)
    return {"train_s": train_s, "eval_s": eval_s, "peak": peak.total_rss}


def report(lake: Path, models: list[str], timings: dict, figure: Path) -> None:
    from pyspark.sql import functions as F

    from kfr_spark import delta_io
    from kfr_spark.catalog import Lakehouse
    from kfr_spark.config import load_config
    from kfr_spark.evaluate import paired_comparison
    from kfr_spark.session import build_session

    config = load_config(overrides=[f"lakehouse.root={lake}"])
    spark = build_session(config, "kfr-bench-reproduce")
    lh = Lakehouse(lake)
    metrics = delta_io.read_table(spark, lh, "gold.eval_metrics").filter(F.col("eval_id").startswith("bench-"))
    table = {(r["model"], r["metric"], r["k"]): r for r in metrics.collect()}  # a few rows per model
    evaluated = {m for m, _, _ in table}
    models = [m for m in FRAME_MODELS + ITEM_MODELS if m in evaluated]  # this run's and earlier runs' models
    timings = {m: timings.get(m, {"train_s": float("nan")}) for m in models}
    frame_models = [m for m in FRAME_MODELS if m in models]
    print("\nKFRCI protocol: mean over users [95% interval]")
    print(f"| model | {' | '.join(f'{m}@{k}' for m in ('f1', 'ndcg') for k in (5, 10, 20))} | users | train s |")
    print("|---|" + "---|" * 8)
    for m in frame_models:
        cells = [f"{table[(m, x, k)]['value']:.4f}" for x in ("f1", "ndcg") for k in (5, 10, 20)]
        print(f"| {m} | {' | '.join(cells)} | {table[(m, 'ndcg', 10)]['n_users']} | {timings[m]['train_s']:.0f} |")

    print("\nThe same queries ranked by what the generator planted (benchmarks/oracle.py); planted = the ceiling")
    oracle.print_table(oracle.ceilings(spark, lake.parent))

    print("\nPaired t-tests across users (two-sided; 'yes' = first is better with p < 0.01)")
    print("| comparison | metric | n | mean a | mean b | t | p | better |")
    print("|---|---|---|---|---|---|---|---|")
    pairs = [("kfrci", other) for other in frame_models if other != "kfrci"] if "kfrci" in frame_models else []
    pairs += [(a, b) for a in frame_models if a in USES_CONTENT for b in frame_models if b in USES_NEITHER]
    verdicts = []
    for a, b in dict.fromkeys(pairs):
        for metric in ("ndcg", "f1"):
            c = paired_comparison(spark, lh, f"bench-{a}", f"bench-{b}", metric, 10)
            ok = c.mean_a > c.mean_b and c.p_value < 0.01
            verdicts.append(ok)
            print(f"| {a} vs {b} | {metric}@10 | {c.n_users} | {c.mean_a:.4f} | {c.mean_b:.4f} | {c.t:.2f} | "
                  f"{c.p_value:.2g} | {'yes' if ok else 'NO'} |")
    print(f"findings reproduced: {sum(verdicts)}/{len(verdicts)} comparisons")

    item_models = [m for m in ITEM_MODELS if m in models]
    if item_models:
        print("\nJIFR protocol")
        print("| model | item_hr@10 | item_ndcg@10 | frame_hr@1 | frame_hr@3 | random frame hr@3 | ratio @3 | "
              "frame_ndcg@3 | cold users |")
        print("|---|---|---|---|---|---|---|---|---|")
        for m in item_models:
            def v(metric, k, m=m):
                return table[(m, metric, k)]["value"]
            print(f"| {m} | {v('item_hr', 10):.4f} | {v('item_ndcg', 10):.4f} | {v('frame_hr', 1):.4f} | "
                  f"{v('frame_hr', 3):.4f} | {v('random_frame_hr', 3):.4f} | "
                  f"{v('frame_hr', 3) / v('random_frame_hr', 3):.2f}x | {v('frame_ndcg', 3):.4f} | "
                  f"{table[(m, 'frame_hr', 3)]['n_users']} |")
    spark.stop()
    plot(table, frame_models, item_models, figure)


def plot(table: dict, frame_models: list[str], item_models: list[str], figure: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3 if item_models else 2, figsize=(15 if item_models else 10, 4))
    for ax, metric in zip(axes, ("ndcg", "f1"), strict=False):
        for i, m in enumerate(frame_models):
            ks = [5, 10, 20]
            vals = [table[(m, metric, k)]["value"] for k in ks]
            err = [[v - table[(m, metric, k)]["ci_low"] for v, k in zip(vals, ks, strict=True)],
                   [table[(m, metric, k)]["ci_high"] - v for v, k in zip(vals, ks, strict=True)]]
            ax.errorbar([k + (i - len(frame_models) / 2) * 0.3 for k in ks], vals, yerr=err, marker="o",
                        capsize=3, label=m)
        ax.set_title(f"KFRCI protocol: {metric.upper()}@K")
        ax.set_xlabel("K")
        ax.legend(fontsize=8)
    if item_models:
        ax = axes[2]
        ks = [1, 2, 3]
        for m in item_models:
            ax.plot(ks, [table[(m, "frame_hr", k)]["value"] for k in ks], marker="o", label=m)
        ax.plot(ks, [table[(item_models[0], "random_frame_hr", k)]["value"] for k in ks], "k--", label="random frame")
        ax.set_title("JIFR: key frame HR@K, cold users")
        ax.set_xlabel("K")
        ax.legend(fontsize=8)
    fig.tight_layout()
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=110)
    print(f"\nfigure: {figure}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comments", type=int, default=1_000_000)
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=2017)
    parser.add_argument("--min-user-comments", type=int, default=40)
    parser.add_argument("--video-taste", type=float, default=1.0,
                        help="how strongly users pick videos by taste (the generator's video_taste_strength): at 1 a "
                             "video's audience shares its taste, which makes the most popular frame a strong answer")
    parser.add_argument("--like-weight", type=float, default=SynthConfig.like_weight,
                        help="the generator's like_weight: how much more often a user comments on a shot of a liked "
                             "concept than a neutral one; the personal headroom over MostPopular grows with it")
    parser.add_argument("--looks", type=int, default=SynthConfig.n_looks,
                        help="the generator's n_looks: with 6 of its 12 concepts, each look is shared by two concepts "
                             "that only their comments' words tell apart (0: one look per concept)")
    parser.add_argument("--models", default=",".join(FRAME_MODELS + ITEM_MODELS))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--num-proc", type=int, default=2, help="Horovod processes per training")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="more config for kfr train and evaluate, e.g. train.hyper.kfrci.activation=leaky_relu")
    parser.add_argument("--negative-scope", choices=("watched", "all"),
                        default=DatasetConfig.model_fields["negative_scope"].default,
                        help="dataset.negative_scope; another scope than the default gets its own lakehouse, seeded "
                             "from the default one's bronze and silver tables when those are built")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]

    started = time.perf_counter()
    print(f"benchmark dataset: {args.comments:,} comments, {args.videos} videos, {args.users} users, seed {args.seed}")
    _, lake = dataset(args)
    timings = {}
    for model in models:
        print(f"== {model}", flush=True)
        timings[model] = train_and_evaluate(lake, model, args)
    report(lake, models, timings, common.OUT / f"{lake.parent.name}.png")
    print(f"\ntotal {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
