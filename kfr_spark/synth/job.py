"""`kfr synth`: the generator behind the command line (no Spark: it writes plain files)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from kfr_spark.config import ConfigError, KfrConfig

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
    parser.add_argument("--out", type=Path, help="output folder (default: synth.out_dir)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--videos", type=int, dest="n_videos")
    parser.add_argument("--users", type=int, dest="n_users")
    parser.add_argument("--comments", type=int, dest="n_comments")
    parser.add_argument("--with-video", action="store_true", default=None, help="also render MP4 files")
    parser.add_argument("--workers", type=int, help="generator processes (default: all cores)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace earlier generator output of another config in the output folder")


def run_job(args, config: KfrConfig) -> int:
    from kfr_spark.synth import SynthConfig, generate

    settings = config.synth
    out = Path(args.out or settings.out_dir)
    synth_config = SynthConfig(
        seed=args.seed if args.seed is not None else settings.seed,
        n_videos=args.n_videos or settings.n_videos,
        n_users=args.n_users or settings.n_users,
        n_comments=args.n_comments or settings.n_comments,
        with_video=args.with_video if args.with_video is not None else settings.with_video,
    )
    started = time.perf_counter()
    last_report = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last_report[0] > 5 or done == total:
            last_report[0] = now
            log.info("synth: %d/%d videos", done, total)

    try:
        summary = generate(synth_config, out, workers=args.workers, progress=progress, overwrite=args.overwrite)
    except FileExistsError as error:  # another config's output: the user decides, nothing is deleted
        raise ConfigError(f"{error} (kfr synth --overwrite)") from None
    q = summary.activity_quantiles
    print(
        f"synth: {summary.n_comments:,} comments by {summary.n_active_users:,} users on {summary.n_videos} videos "
        f"({summary.n_shots:,} shots, {summary.n_rendered_videos} rendered); comments per user: median "
        f"{q.get('median', 0):g}, p99 {q.get('p99', 0):g}, max {q.get('max', 0):g} "
        f"in {time.perf_counter() - started:.1f}s → {out}"
    )
    return 0
