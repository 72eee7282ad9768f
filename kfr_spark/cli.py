"""`kfr`: one command line for every stage; `jobs/<stage>.py` call the same entry points under spark-submit.

Exit codes: 0 success, 1 the job failed (its ledger row says why), 2 a usage or config error (no stack trace:
the message names what to fix).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kfr_spark.config import ConfigError, KfrConfig, load_config

log = logging.getLogger("kfr")


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, KfrConfig], int]
    needs_spark: bool = True


# ---------------------------------------------------------------- synth
def _synth_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, help="output folder (default: synth.out_dir)")
    p.add_argument("--seed", type=int)
    p.add_argument("--videos", type=int, dest="n_videos")
    p.add_argument("--users", type=int, dest="n_users")
    p.add_argument("--comments", type=int, dest="n_comments")
    p.add_argument("--with-video", action="store_true", default=None, help="also render MP4 files")
    p.add_argument("--workers", type=int, help="generator processes (default: all cores)")


def _synth_run(args: argparse.Namespace, config: KfrConfig) -> int:
    from kfr_spark.synth import SynthConfig, generate

    settings = config.synth
    out = args.out or settings.out_dir
    synth_config = SynthConfig(
        seed=args.seed if args.seed is not None else settings.seed,
        n_videos=args.n_videos or settings.n_videos,
        n_users=args.n_users or settings.n_users,
        n_comments=args.n_comments or settings.n_comments,
        with_video=args.with_video if args.with_video is not None else settings.with_video,
    )
    started = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] > 5 or done == total:
            last[0] = now
            log.info("synth: %d/%d videos", done, total)

    summary = generate(synth_config, Path(out), workers=args.workers, progress=progress)
    log.info("synth: wrote %s in %.1fs to %s", summary, time.perf_counter() - started, out)
    print(f"synthetic data in {out}: {summary}")
    return 0


# ---------------------------------------------------------------- ingest
def _ingest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", help="files or folders of comment files (default: ingest.input_paths)")


def _ingest_run(args: argparse.Namespace, config: KfrConfig) -> int:
    from kfr_spark.catalog import Lakehouse
    from kfr_spark.ingest import ingest_files
    from kfr_spark.ledger import record_job_run
    from kfr_spark.session import build_session

    paths = [str(Path(p).resolve()) if "://" not in p else p for p in args.paths] or list(config.ingest.input_paths)
    if not paths:
        raise ConfigError("no input: give paths on the command line or set ingest.input_paths")
    missing = [p for p in paths if "://" not in p and not Path(p).exists()]
    if missing:
        raise ConfigError(f"input path not found: {', '.join(missing)}")
    spark = build_session(config, "kfr-ingest")
    lake = Lakehouse(config.lakehouse.root)
    with record_job_run(spark, lake, "ingest", config, {"paths": paths}) as run:
        summary = ingest_files(spark, lake, config.ingest, paths, run)
    print(
        f"ingest: {summary.files} files, {summary.records} records → "
        f"{summary.comments_inserted} new comments in bronze.tsc, "
        f"{summary.rejects_inserted} new rejects ({_reasons(summary.rejects_by_reason)}) [run {run.run_id}]"
    )
    return 0


def _reasons(by_reason: dict[str, int]) -> str:
    return ", ".join(f"{reason}={n}" for reason, n in by_reason.items()) or "none"


# ---------------------------------------------------------------- tables / runs
def _no_args(p: argparse.ArgumentParser) -> None:
    pass


def _tables_run(args: argparse.Namespace, config: KfrConfig) -> int:
    from kfr_spark.catalog import Lakehouse
    from kfr_spark.report import print_lakehouse_summary
    from kfr_spark.session import build_session

    spark = build_session(config, "kfr-tables")
    print_lakehouse_summary(spark, Lakehouse(config.lakehouse.root))
    return 0


def _runs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--last", type=int, default=20, help="how many recent runs to show")


def _runs_run(args: argparse.Namespace, config: KfrConfig) -> int:
    from kfr_spark.catalog import Lakehouse
    from kfr_spark.report import print_job_runs
    from kfr_spark.session import build_session

    spark = build_session(config, "kfr-runs")
    print_job_runs(spark, Lakehouse(config.lakehouse.root), args.last)
    return 0


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("synth", "generate a synthetic dataset: danmaku XML, video catalog, ground truth, optional MP4s",
              _synth_args, _synth_run, needs_spark=False),
        Stage("ingest", "comment files (Bilibili/Niconico/JSONL/CSV/Parquet) → bronze.tsc + bronze.tsc_rejects",
              _ingest_args, _ingest_run),
        Stage("tables", "list the lakehouse tables with row counts, versions and rejects by reason",
              _no_args, _tables_run),
        Stage("runs", "show the job-run ledger (ops.job_runs)", _runs_args, _runs_run),
    )
}


def build_parser() -> argparse.ArgumentParser:
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
        stage.add_arguments(p)
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
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("py4j", "jieba", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stage = STAGES[args.stage]
    try:
        config = load_config(args.config, args.overrides)
        return stage.run(args, config)
    except ConfigError as error:
        print(f"kfr {stage.name}: {error}", file=sys.stderr)
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
