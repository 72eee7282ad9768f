"""Data-parallel training processes: Horovod, behind this one module.

`launch(fn, args, num_proc)` runs `fn(*args)` in `num_proc` processes on the Spark cluster with
`horovod.spark.run` (Gloo collectives, no MPI) and returns every rank's result; inside, `fn` calls `join()` to get
its `Collective` (rank, size, a distributed optimizer, parameter broadcast, averaging). With `num_proc=1`, or without
Horovod installed, `fn` runs here in one process and `join()` gives the trivial collective of one: the training code
is the same either way. Replacing Horovod means replacing this file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


def horovod_available() -> bool:
    try:
        import horovod.spark  # noqa: F401
        import horovod.torch  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class Collective:
    """What a training process needs from its peers."""

    rank: int
    size: int
    _hvd: Any = None

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def distributed_optimizer(self, optimizer, model):
        """Average gradients across processes before each step."""
        if self._hvd is None:
            return optimizer
        return self._hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())

    def broadcast(self, model, optimizer) -> None:
        """Start every process from rank 0's parameters and optimizer state (a fresh or a resumed model). Only the
        learned parameters travel: buffers (JIFR's item frames) are built from the same files on every rank, and
        Horovod cannot broadcast boolean tensors (item_mask)."""
        if self._hvd is not None:
            self._hvd.broadcast_parameters(list(model.named_parameters()), root_rank=0)
            self._hvd.broadcast_optimizer_state(optimizer, root_rank=0)

    def mean(self, value: float, name: str) -> float:
        """The mean of `value` over the processes (every process gets the same number)."""
        if self._hvd is None:
            return float(value)
        import torch

        return float(self._hvd.allreduce(torch.tensor([float(value)], dtype=torch.float64), name=name, op=self._hvd.Average))


_SOLO = Collective(rank=0, size=1)
_current: Collective | None = None


def join() -> Collective:
    """This process's collective: Horovod's when launched by `launch` on several processes, else the solo one."""
    global _current
    if _current is not None:
        return _current
    import os

    if os.environ.get("HOROVOD_RANK") is None or not horovod_available():
        return _SOLO
    import horovod.torch as hvd

    hvd.init()
    _current = Collective(rank=hvd.rank(), size=hvd.size(), _hvd=hvd)
    return _current


def launch(fn: Callable[..., Any], args: Sequence[Any], num_proc: int, *, start_timeout_s: int = 120) -> list[Any]:
    """Run `fn(*args)` on `num_proc` processes and return the results by rank."""
    if num_proc <= 1:
        return [fn(*args)]
    if not horovod_available():
        log.warning("horovod is not installed: training in one process instead of %d", num_proc)
        return [fn(*args)]
    import horovod.spark

    log.info("horovod: launching %d training processes on Spark", num_proc)
    try:
        return horovod.spark.run(fn, args=tuple(args), num_proc=num_proc, start_timeout=start_timeout_s,
                                 use_gloo=True, verbose=0)
    except RuntimeError as e:  # Horovod's message is the first line of a page of Spark and Gloo tracebacks
        raise TrainingProcessLost(f"{num_proc}-process training failed: {str(e).splitlines()[0]}") from e


class TrainingProcessLost(RuntimeError):
    """A training process died or raised; its peers were stopped. Checkpoints written before it are kept."""
