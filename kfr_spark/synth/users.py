"""Synthetic users: long-tail activity, liked / disliked concepts, typing speed, Bilibili user hash."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from kfr_spark.synth.config import SynthConfig

# Seed stream ids (SeedSequence([seed, STREAM, ...])); never reuse one for another purpose.
STREAM_GLOBAL = 0
STREAM_USERS = 10

#: Taste codes stored per (user, concept).
LIKED, NEUTRAL, DISLIKED = 1, 0, -1

_MID_RANGE = (1, 400_000_000)  # numeric Bilibili-like user ids ("mid")


def user_hash(user_id: int) -> str:
    """Bilibili's public user hash: lowercase hex CRC32 of the decimal user id, 8 digits."""
    return f"{zlib.crc32(str(int(user_id)).encode('ascii')):08x}"


def _crc32_ids(ids: np.ndarray) -> np.ndarray:
    crc = zlib.crc32
    return np.fromiter((crc(b"%d" % i) for i in ids.tolist()), dtype=np.uint32, count=len(ids))


def sample_user_activity(n_users: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Relative activity of each user: Pareto(alpha), x_min = 1, truncated at n_users ** (1/alpha).

    A long tail: with alpha = 1.35 the top 10 % of users hold ~60 % of the comments. The cap (the
    expected maximum of n draws) keeps one unlucky draw from owning a large share of all comments;
    at the KFRCI crawl's scale (1.1 M users, 11.8 M comments) it puts the most active user near
    8 x 10^4 comments, as in the paper's Table 1 (68,236).
    """
    u = rng.random(n_users)
    return np.minimum((1.0 - u) ** (-1.0 / alpha), float(n_users) ** (1.0 / alpha))


def concept_prior(config: SynthConfig) -> np.ndarray:
    """Popularity of each concept (how often it is liked and chosen as a video theme)."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, STREAM_GLOBAL, 0]))
    return rng.dirichlet(np.full(config.n_concepts, config.concept_prior_concentration))


@dataclass(frozen=True)
class UserTable:
    """All users, index-aligned arrays (index = internal user index, not the user id)."""

    user_id: np.ndarray  # int64, distinct, CRC32-distinct
    user_hash: np.ndarray  # uint32 CRC32 of the decimal id (format with %08x)
    activity: np.ndarray  # float64: expected number of comments of the user
    cdf: np.ndarray  # float64 cumulative activity, normalised to end at 1 (for sampling)
    taste: np.ndarray  # int8 (n_users, n_concepts): LIKED / NEUTRAL / DISLIKED
    typing_cpm: np.ndarray  # float32 characters per minute

    @property
    def n(self) -> int:
        return len(self.user_id)

    def liked_lists(self) -> list[list[int]]:
        return _lists(self.taste == LIKED)

    def disliked_lists(self) -> list[list[int]]:
        return _lists(self.taste == DISLIKED)


def _lists(mask: np.ndarray) -> list[list[int]]:
    rows, cols = np.nonzero(mask)
    splits = np.searchsorted(rows, np.arange(1, mask.shape[0]))
    return [c.tolist() for c in np.split(cols.astype(np.int64), splits)]


def _distinct_hash_ids(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n distinct user ids whose CRC32 hashes are also distinct (so a hash names one user)."""
    lo, hi = _MID_RANGE
    ids = np.sort(rng.choice(hi - lo, size=n, replace=False).astype(np.int64) + lo)
    hashes = _crc32_ids(ids)
    while True:
        _, first = np.unique(hashes, return_index=True)
        dup = np.ones(n, dtype=bool)
        dup[first] = False  # every later holder of an already-seen hash gets a fresh id
        if not dup.any():
            break
        k = int(dup.sum())
        fresh = rng.integers(lo, hi, size=k * 2, dtype=np.int64)
        fresh = fresh[~np.isin(fresh, ids)]
        fresh = np.unique(fresh)[:k]  # sorted, distinct
        if len(fresh) < k:
            continue
        ids[np.nonzero(dup)[0]] = fresh
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        hashes = _crc32_ids(ids)
    return ids, hashes


def _top_k_per_row(keys: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Boolean mask of each row's k[i] largest keys."""
    order = np.argsort(-keys, axis=1, kind="stable")
    rank = np.empty_like(order)
    rows = np.arange(keys.shape[0])[:, None]
    rank[rows, order] = np.arange(keys.shape[1])[None, :]
    return rank < k[:, None]


def build_users(config: SynthConfig) -> UserTable:
    """Deterministic user population for a config (independent of videos and workers)."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, STREAM_USERS]))
    n, c = config.n_users, config.n_concepts
    ids, hashes = _distinct_hash_ids(n, rng)
    weights = sample_user_activity(n, config.activity_alpha, rng)
    total = weights.sum()
    activity = weights / total * config.n_comments
    cdf = np.cumsum(weights) / total
    cdf[-1] = 1.0

    prior = concept_prior(config)
    # liked: Gumbel-top-k by concept popularity; disliked: uniform among the rest
    n_like = rng.integers(config.n_liked[0], config.n_liked[1] + 1, size=n)
    n_dis = rng.integers(config.n_disliked[0], config.n_disliked[1] + 1, size=n)
    keys = np.log(prior)[None, :] + rng.gumbel(size=(n, c))
    liked = _top_k_per_row(keys, n_like)
    keys2 = rng.random(size=(n, c))
    keys2[liked] = -1.0
    disliked = _top_k_per_row(keys2, n_dis) & ~liked
    taste = np.zeros((n, c), dtype=np.int8)
    taste[liked] = LIKED
    taste[disliked] = DISLIKED

    cpm = config.typing_cpm * np.exp(config.typing_cpm_sigma * rng.standard_normal(n))
    return UserTable(
        user_id=ids,
        user_hash=hashes,
        activity=activity,
        cdf=cdf,
        taste=taste,
        typing_cpm=cpm.astype(np.float32),
    )
