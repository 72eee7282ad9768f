"""Train-step time against the number of users: what made train:kfrci super-linear in `benchmarks/scale.py`.

With torch's dense Adam (`train.optimizer=dense_adam`) every step rewrites the whole user table (and, under Horovod,
allreduces its gradient), whatever rows the batch touched: steps per epoch grow with the examples and the cost of a
step with the users, so an epoch grows with their product. `adam` (the default, `kfr_spark.models.optim`) trains
to the same parameters at the cost of the rows a batch touches. This times one KFRCI step (forward, backward,
optimizer) with each, in one process and one thread, on random batches of the scale run's shape (226 key frames of
1,280 features, a 1,001-word vocabulary, 8 tokens per comment), for several user counts, and prints the fixed and
per-user parts of a step fitted by least squares, and the speed-up over dense Adam (the reference, measured in the
same run). No Spark, no Horovod: the single-process cost alone.

    .venv/bin/python benchmarks/train_step.py
    .venv/bin/python benchmarks/train_step.py --users 7000,70000 --batch 512
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def step_ms(users: int, batch: int, frames: int, features: int, vocab: int, steps: int, optimizer: str,
            warmup: int = 10) -> float:
    import torch

    from kfr_spark.models.base import make_optimizer
    from kfr_spark.models.kfr import KFRCI

    model = KFRCI(users, frames, feature_dim=features, vocab_size=vocab)
    opt = make_optimizer(model, optimizer, lr=0.005)
    gen = torch.Generator().manual_seed(0)

    def random_batch():
        tokens = torch.randint(2, vocab, (batch, 12), generator=gen)
        tokens[:, 8:] = 0
        return {"user": torch.randint(0, users, (batch,), generator=gen),
                "frame": torch.randint(0, frames, (batch,), generator=gen),
                "features": torch.randn(batch, features, generator=gen),
                "label": torch.randint(0, 2, (batch,), generator=gen).float(), "tokens": tokens}

    for i in range(warmup + steps):
        if i == warmup:
            started = time.perf_counter()
        b = random_batch()
        opt.zero_grad()
        model.loss(b).backward()
        opt.step()
    return (time.perf_counter() - started) / steps * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", default="7000,21000,70000,210000", help="user counts, comma-separated")
    parser.add_argument("--batch", type=int, default=256, help="rows per step (train.batch_size's default)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved measurements per point; the fastest counts")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    counts = [int(x) for x in args.users.split(",")]
    optimizers = ("dense_adam", "adam")
    print(f"KFRCI train step, batch {args.batch}, 1 thread, torch {torch.__version__}; ms per step, the fastest of "
          f"{args.repeats}")
    print(f"{'users':>9}  " + "  ".join(f"{o:>10}" for o in optimizers) + "  speed-up")
    points: dict[str, list[tuple[int, float]]] = {o: [] for o in optimizers}
    for users in counts:
        # Interleaved repeats, the fastest kept: on this machine the same step measured back to back varies from
        # 30 to 45 ms, more than the difference between the optimizers at a few thousand users.
        tries: dict[str, list[float]] = {o: [] for o in optimizers}
        for _ in range(args.repeats):
            for o in optimizers:
                tries[o].append(step_ms(users, args.batch, frames=226, features=1280, vocab=1001, steps=args.steps,
                                        optimizer=o))
        row = [min(tries[o]) for o in optimizers]
        for o, ms in zip(optimizers, row):
            points[o].append((users, ms))
        print(f"{users:>9,}  " + "  ".join(f"{ms:>10.1f}" for ms in row) + f"  {row[0] / row[1]:>7.2f}x", flush=True)
    if len(counts) >= 2:
        for o, pts in points.items():
            n = len(pts)
            mx, my = sum(u for u, _ in pts) / n, sum(m for _, m in pts) / n
            slope = sum((u - mx) * (m - my) for u, m in pts) / sum((u - mx) ** 2 for u, _ in pts)
            print(f"fit {o:>10}: {my - slope * mx:.1f} ms per step + {slope * 1000:.3f} ms per thousand users")
    return 0


if __name__ == "__main__":
    sys.exit(main())
