"""Negative sampling and batching for the models — numpy only (torch is imported by `iterate_batches` alone).

Everything takes an explicit `numpy.random.Generator`, so a run is a function of its seed.

* `PairSet`: a set of (user, item) pairs as sorted int64 keys; vectorised membership.
* `sample_negatives(users, n_items, n_neg, exclude, rng)`: for each user, `n_neg` items drawn uniformly from the
  items that user has no pair with in `exclude` (with replacement; vectorised rejection sampling).
  KFRCI's O-: exclude the user's positives only, so negatives come uniformly from the negatively commented frames
  and the never-commented frames together. BPR / JIFR: exclude the user's observed items.
  `candidates` restricts the draw to a subset of item ids (e.g. the frames of the videos a user watched).
* `pointwise_examples` (PMF, KFRI, KFRC, KFRCI) and `pairwise_examples` (BPR, VBPR, JIFR) build one epoch's rows.
* `pad_sequences` right-pads token lists with 0; `iterate_batches` slices arrays into batch dicts of tensors.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np


class PairSet:
    """(user, item) pairs, for membership tests. Keys are user * n_items + item."""

    def __init__(self, users: Any, items: Any, n_items: int) -> None:
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        items = np.asarray(items, dtype=np.int64).reshape(-1)
        if users.shape != items.shape:
            raise ValueError("users and items differ in length")
        if items.size and (items.min() < 0 or items.max() >= n_items):
            raise IndexError(f"item index outside [0, {n_items})")
        self.n_items = int(n_items)
        self.keys = np.unique(users * self.n_items + items)
        u = self.keys // self.n_items
        self._users, self._counts = np.unique(u, return_counts=True)

    def __len__(self) -> int:
        return int(self.keys.size)

    def contains(self, users: Any, items: Any) -> np.ndarray:
        keys = np.asarray(users, dtype=np.int64) * self.n_items + np.asarray(items, dtype=np.int64)
        if self.keys.size == 0:
            return np.zeros(keys.shape, dtype=bool)
        pos = np.searchsorted(self.keys, keys)
        return self.keys[np.minimum(pos, self.keys.size - 1)] == keys

    def count(self, users: Any) -> np.ndarray:
        """Number of pairs of each user."""
        users = np.asarray(users, dtype=np.int64)
        out = np.zeros(users.shape, dtype=np.int64)
        if self._users.size == 0:
            return out
        pos = np.minimum(np.searchsorted(self._users, users), self._users.size - 1)
        found = self._users[pos] == users
        out[found] = self._counts[pos[found]]
        return out


def sample_negatives(users: Any, n_items: int, n_neg: int, exclude: PairSet | None, rng: np.random.Generator, *,
                     candidates: Any | None = None, max_rounds: int = 1000) -> np.ndarray:
    """(len(users), n_neg) int64 item ids, uniform over the items outside `exclude` for each user."""
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    pool = None if candidates is None else np.unique(np.asarray(candidates, dtype=np.int64))
    size = n_items if pool is None else pool.size
    if size == 0:
        raise ValueError("no candidate items to sample from")
    if exclude is not None:
        if pool is None:
            full = exclude.count(users) >= n_items
        else:
            full = np.zeros(users.shape, dtype=bool)
            for u in np.unique(users):  # only with candidates: how many of the pool each user has
                full[users == u] = exclude.contains(np.full(pool.size, u), pool).all()
        if full.any():
            raise ValueError(f"user {int(users[full][0])} has every candidate item: nothing to sample")
    out = rng.integers(0, size, size=(users.size, n_neg))
    if pool is not None:
        out = pool[out]
    if exclude is None or len(exclude) == 0:
        return out
    u2 = np.repeat(users[:, None], n_neg, axis=1)
    bad = exclude.contains(u2, out)
    for _ in range(max_rounds):
        if not bad.any():
            return out
        redraw = rng.integers(0, size, size=int(bad.sum()))
        out[bad] = redraw if pool is None else pool[redraw]
        bad[bad] = exclude.contains(u2[bad], out[bad])
    raise RuntimeError("negative sampling did not converge (users with almost every item positive?)")


def pointwise_examples(pos_users: Any, pos_items: Any, n_items: int, k_neg: int, rng: np.random.Generator, *,
                       exclude: PairSet | None = None) -> dict[str, np.ndarray]:
    """O+ ∪ O-: the positives (label 1) and `k_neg` sampled negatives per positive (label 0).
    `exclude` defaults to the positives themselves. Columns: user, frame, label, and `source` = the index of the
    positive each row was generated from (a positive: its own index), to attach per-row data afterwards."""
    pos_users = np.asarray(pos_users, dtype=np.int64).reshape(-1)
    pos_items = np.asarray(pos_items, dtype=np.int64).reshape(-1)
    exclude = PairSet(pos_users, pos_items, n_items) if exclude is None else exclude
    neg = sample_negatives(pos_users, n_items, k_neg, exclude, rng)
    n = pos_users.size
    return {
        "user": np.concatenate([pos_users, np.repeat(pos_users, k_neg)]),
        "frame": np.concatenate([pos_items, neg.reshape(-1)]),
        "label": np.concatenate([np.ones(n, np.float32), np.zeros(n * k_neg, np.float32)]),
        "source": np.concatenate([np.arange(n), np.repeat(np.arange(n), k_neg)]),
    }


def pairwise_examples(users: Any, pos: Any, n_items: int, n_neg: int, rng: np.random.Generator, *,
                      exclude: PairSet | None = None) -> dict[str, np.ndarray]:
    """One row per observed (user, pos) with `n_neg` negatives: neg is (B,) for n_neg = 1, else (B, n_neg)."""
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    pos = np.asarray(pos, dtype=np.int64).reshape(-1)
    exclude = PairSet(users, pos, n_items) if exclude is None else exclude
    neg = sample_negatives(users, n_items, n_neg, exclude, rng)
    return {"user": users, "pos": pos, "neg": neg[:, 0] if n_neg == 1 else neg}


def pad_sequences(seqs: Sequence[Sequence[int]], max_len: int | None = None, pad: int = 0) -> np.ndarray:
    """Right-pad (and truncate to `max_len`) token id lists into an int64 matrix; empty lists → all-pad rows."""
    longest = max((len(s) for s in seqs), default=0)
    width = longest if max_len is None else min(longest, max_len)
    out = np.full((len(seqs), max(width, 1)), pad, dtype=np.int64)
    for i, s in enumerate(seqs):
        s = list(s)[:width]
        out[i, : len(s)] = s
    return out


def iterate_batches(arrays: Mapping[str, np.ndarray], batch_size: int, *, rng: np.random.Generator | None = None,
                    drop_last: bool = False) -> Iterator[dict[str, Any]]:
    """Slices equally long arrays into batch dicts of tensors (shuffled when `rng` is given)."""
    from kfr_spark.models.base import as_batch

    n = {len(v) for v in arrays.values()}
    if len(n) != 1:
        raise ValueError(f"arrays differ in length: { {k: len(v) for k, v in arrays.items()} }")
    n = n.pop()
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        if drop_last and idx.size < batch_size:
            break
        yield as_batch({k: np.asarray(v)[idx] for k, v in arrays.items()})
