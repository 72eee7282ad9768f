"""``python -m kfr_spark.synth OUT_DIR [--seed N --videos N --users N --comments N --video ...]``"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from kfr_spark.synth.config import SynthConfig
from kfr_spark.synth.generate import generate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kfr_spark.synth", description=__doc__)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--videos", type=int, default=SynthConfig.n_videos)
    ap.add_argument("--users", type=int, default=SynthConfig.n_users)
    ap.add_argument("--comments", type=int, default=SynthConfig.n_comments)
    ap.add_argument("--concepts", type=int, default=SynthConfig.n_concepts)
    ap.add_argument("--video", action="store_true", help="also render videos/<id>.mp4")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    cfg = SynthConfig(seed=args.seed, n_videos=args.videos, n_users=args.users,
                      n_comments=args.comments, n_concepts=args.concepts, with_video=args.video)
    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 20) == 0:
            print(f"\r{done}/{total} videos", end="", file=sys.stderr, flush=True)

    s = generate(cfg, args.out_dir, workers=args.workers, progress=progress,
                 overwrite=args.overwrite)
    dt = time.perf_counter() - t0
    print(file=sys.stderr)
    print(f"{s.n_comments} comments, {s.n_videos} videos ({s.n_rendered_videos} rendered), "
          f"{s.n_active_users}/{s.n_users} active users in {dt:.1f} s -> {s.out_dir}")
    print(f"activity quantiles: {s.activity_quantiles}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
