"""Fault-injection trials: how many, where each one's fault lands, and the figures the suite prints.

One trial per case is what `make test` can afford. `KFR_RESILIENCE_TRIALS=N make test-resilience` repeats every case
N times, each trial with its own kill point drawn from a seeded generator (`KFR_RESILIENCE_SEED`), so a failure
names a trial that can be replayed exactly.
"""

from __future__ import annotations

import collections
import os
import random

import pytest

TRIALS = int(os.environ.get("KFR_RESILIENCE_TRIALS", "1"))
SEED = int(os.environ.get("KFR_RESILIENCE_SEED", "0"))
TRIAL_IDS = [f"trial{t}" for t in range(TRIALS)]
SUMMED = ("rows_checked", "duplicates", "lost_rows", "orphan_files_ignored", "quarantined")  # added over trials


def kill_point(case: str, trial: int) -> random.Random:
    """The generator a trial draws its fault's place from: the same case, seed and trial draw the same place."""
    return random.Random(f"{case}:{SEED}:{trial}")


class Tally:
    """Per-trial figures as they come, and per case the totals over all trials when the module ends."""

    def __init__(self) -> None:
        self.totals: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

    def trial(self, case: str, trial: int, **figures) -> None:
        shown = ", ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in figures.items())
        print(f"\nRESILIENCE {case} [trial {trial + 1}/{TRIALS}]: {shown}")
        counts = self.totals[case]
        counts["trials"] += 1
        counts.update({k: figures[k] for k in SUMMED if k in figures})

    def summary(self) -> None:
        for case, counts in self.totals.items():
            print(f"\nRESILIENCE {case} over all trials: "
                  + ", ".join(f"{k}={v:,}" for k, v in counts.items()))


@pytest.fixture(scope="module")
def tally():
    """A module's Tally; its totals print when the module's last trial is done."""
    kept = Tally()
    yield kept
    kept.summary()
