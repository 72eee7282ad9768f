"""`kfr`: one command line for every stage; `jobs/<stage>.py` call the same entry points under spark-submit.

Exit codes: 0 success, 1 the job failed (its ledger row says why), 2 a usage or config error (no stack trace:
the message names what to fix).
"""

from __future__ import annotations

import argparse
import logging
import sys
import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from kfr_spark.config import ConfigError, load_config

log = logging.getLogger("kfr")


@dataclass(frozen=True)
class Stage:
    """A stage's command: its module defines `add_arguments(parser)` and `run_job(args, config) -> int`.

    Modules are imported only when their stage is asked for, so `kfr --help` stays fast.
    """

    name: str
    help: str
    module: str

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("synth", "generate a synthetic dataset: danmaku XML, video catalog, ground truth, optional MP4s",
              "kfr_spark.synth.job"),
        Stage("ingest", "comment files (Bilibili/Niconico/JSONL/CSV/Parquet) → bronze.tsc + bronze.tsc_rejects",
              "kfr_spark.ingest"),
        Stage("videos", "a video catalog CSV → bronze.videos (+ ops.stage_rejects)",
              "kfr_spark.videos"),
        Stage("shots", "bronze.videos → silver.shots: cuts, one key frame (JPEG) per shot; uniform slices without a file",
              "kfr_spark.shots_job"),
        Stage("align", "comments → silver.tsc_aligned: typing delay removed, pinned to the shot on screen",
              "kfr_spark.align"),
        Stage("tokenize", "comments → silver.tsc_tokens + silver.vocabulary: normalized, tokenized, sentiment-labelled",
              "kfr_spark.tokenize_job"),
        Stage("features", "silver.shots key frames → silver.frame_features: pretrained CNN vectors (GPU when present)",
              "kfr_spark.features"),
        Stage("dataset", "gold training tables: users, key frames, user x frame examples with sampled negatives, "
              "user x video rows; splits by hash", "kfr_spark.dataset"),
        Stage("train", "train a model (KFRCI, JIFR, baselines) fed by Petastorm, distributed with Horovod",
              "kfr_spark.train"),
        Stage("evaluate", "a trained model against held-out data (KFRCI protocol; JIFR's item and cold key frame "
              "protocols) → gold.eval_metrics", "kfr_spark.evaluate"),
        Stage("score", "rank every user's key frames per candidate video (KFRCI / JIFR / most popular router) → "
              "gold.user_keyframes", "kfr_spark.score"),
        Stage("export", "one run date of gold.user_keyframes → content-addressed poster JPEGs and a manifest for "
              "the CDN (atomic)", "kfr_spark.export"),
        Stage("gallery", "a static HTML gallery: sample users' key frames beside the non-personalised choice, their "
              "words, evaluation plots", "kfr_spark.gallery"),
        Stage("nightly", "every stage in order, incrementally: skips what did not change, resumes after a failure, "
              "retrains on schedule", "kfr_spark.nightly"),
        Stage("tables", "list the lakehouse tables with row counts, versions and rejects by reason",
              "kfr_spark.report"),
        Stage("runs", "show the job-run ledger (ops.job_runs)", "kfr_spark.ledger"),
    )
}


def build_parser(wanted: set[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the `wanted` stages' modules are imported to add their arguments."""
    wanted = set(STAGES) if wanted is None else wanted
    parser = argparse.ArgumentParser(
        prog="kfr",
        description="kfr-spark: personalized key frame recommendation as Spark jobs over Delta Lake.",
        epilog="Config precedence: conf file < KFR__SECTION__KEY env vars < --set section.key=value.",
    )
    _common(parser)
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for stage in STAGES.values():
        p = sub.add_parser(stage.name, help=stage.help, description=stage.help)
        _common(p, suppress=True)
        p.set_defaults(_stage=stage)
        if stage.name in wanted:
            stage.load().add_arguments(p)
        else:
            p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _common(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("-c", "--config", type=Path, default=default,
                        help="YAML config file (default: conf/local.yaml)")
    parser.add_argument("--set", action="append", dest="overrides", metavar="KEY=VALUE",
                        default=argparse.SUPPRESS if suppress else [],
                        help="override a config value, e.g. --set spark.master=local[2] (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="debug logging")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(wanted={a for a in argv if a in STAGES})
    args = parser.parse_args(argv)
    # Our own progress at INFO; other libraries' only from WARNING (py4j logs its routine reconnects, with a
    # traceback, on the root logger at INFO, which reads like a failure in the middle of a good run).
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.verbose:
        for ours in ("kfr", "kfr_spark"):
            logging.getLogger(ours).setLevel(logging.INFO)
    stage = STAGES[args.stage]
    try:
        config = load_config(args.config, args.overrides)
        return stage.load().run_job(args, config)
    except ConfigError as error:
        # one line whatever the message holds (a YAML excerpt, a value with a newline in it)
        print(f"kfr {stage.name}: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kfr {stage.name}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the ledger has the details; print a clear line
        log.exception("kfr %s failed", stage.name)
        print(f"kfr {stage.name}: failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
