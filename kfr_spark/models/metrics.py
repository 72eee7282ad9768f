"""Ranking metrics and paired significance tests — numpy and the standard library only (no torch, no scipy).

A *query* is one ranking: the candidates of one (user, held-out video) in the KFRCI protocol (relevant = the
user's held-out positive key frames of that video), one user's test items mixed with sampled unrated items in
JIFR's item protocol, or the frames of one (user, recommended item) in JIFR's key frame protocol.

Ranking: candidates by descending score; ties go to the earlier candidate (column order), or are broken at random
when an `rng` is passed (use that for models that tie a lot, e.g. MostPopular on cold frames). Binary relevance.

With `hits` = relevant candidates among the top K and `R` = number of relevant candidates:

* precision@K = hits / K (K, even when fewer than K candidates exist)
* recall@K = hits / R
* F1@K = 2·P·R / (P + R) = 2·hits / (K + R)                          (KFRCI)
* NDCG@K = Σ_{r ≤ K, relevant} 1/log2(r + 1) / Σ_{r ≤ min(R, K)} 1/log2(r + 1)   (both papers)
* HR@K = hits / R — the share of the query's relevant items ranked in the top K (JIFR's hit ratio; equals the
  0/1 hit of leave-one-out protocols when R = 1); hit@K = 1 if hits > 0.

A query without relevant candidates has no defined recall/F1/NDCG/HR: every metric is NaN for it, and the
aggregation helpers skip NaN. Average per user first (`mean_by_user`), then over users — the paired tests compare
two models' per-user values over the same users.

Significance (two-sided by default): `paired_t_test` (Student t, its CDF through the regularised incomplete beta
function), `wilcoxon_signed_rank` (exact null distribution for n ≤ 50 without ties, else the normal approximation
with tie and continuity corrections, as R's wilcox.test; zero differences dropped) and `sign_flip_test` (exact
over all 2^n sign vectors for n ≤ 16, else Monte Carlo).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

METRICS = ("precision", "recall", "f1", "ndcg", "hr", "hit")
Alternative = Literal["two-sided", "greater", "less"]


# -- ranking metrics ---------------------------------------------------------------------------------------------------
def _as_2d(scores: Any, relevant: Any, mask: Any | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    s = np.asarray(scores, dtype=np.float64)
    r = np.asarray(relevant).astype(bool)
    one = s.ndim == 1
    if one:
        s, r = s[None, :], r[None, :]
    m = np.ones(s.shape, dtype=bool) if mask is None else np.asarray(mask).astype(bool).reshape(s.shape)
    if s.shape != r.shape:
        raise ValueError(f"scores {s.shape} and relevant {r.shape} differ in shape")
    if np.isnan(s[m]).any():
        raise ValueError("NaN scores")
    return s, r & m, m, one


def top_k(scores: Any, k: int, *, mask: Any | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
    """Column indices of the K best candidates per row (descending score; ties: earlier column, or random with
    `rng`); masked-out candidates rank last."""
    s = np.asarray(scores, dtype=np.float64)
    s2 = s[None, :] if s.ndim == 1 else s
    if mask is not None:
        s2 = np.where(np.asarray(mask).astype(bool).reshape(s2.shape), s2, -np.inf)
    tiebreak = rng.random(s2.shape) if rng is not None else np.broadcast_to(np.arange(s2.shape[1]), s2.shape)
    order = np.lexsort((tiebreak, -s2), axis=-1)[:, :k]
    return order[0] if s.ndim == 1 else order


def ranking_metrics(scores: Any, relevant: Any, ks: Iterable[int] = (5, 10, 20), *, mask: Any | None = None,
                    metrics: Iterable[str] = METRICS, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Per-query metrics. `scores`, `relevant` (bool), `mask` (bool: a real candidate) are (n_candidates,) for one
    query or (Q, C) padded matrices. Returns {"ndcg@5": array (Q,) (a float for one query), ...}."""
    s, r, m, one = _as_2d(scores, relevant, mask)
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError("K must be ≥ 1")
    metrics = list(metrics)
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; known: {METRICS}")
    order = top_k(s, ks[-1], mask=m, rng=rng)
    gains = np.take_along_axis(r, order, axis=1).astype(np.float64)  # (Q, Kmax), 0 past the real candidates
    n_rel = r.sum(1).astype(np.float64)
    none = n_rel == 0
    discounts = 1.0 / np.log2(np.arange(2, ks[-1] + 2))
    ideal_cum = np.cumsum(discounts)
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in ks:
            hits = gains[:, :k].sum(1)
            values = {
                "precision": hits / k,
                "recall": hits / n_rel,
                "f1": 2.0 * hits / (k + n_rel),
                "ndcg": (gains[:, :k] * discounts[: gains[:, :k].shape[1]]).sum(1)
                / ideal_cum[np.clip(np.minimum(n_rel, k).astype(int) - 1, 0, None)],
                "hr": hits / n_rel,
                "hit": (hits > 0).astype(np.float64),
            }
            for name in metrics:
                v = np.where(none, np.nan, values[name])
                out[f"{name}@{k}"] = v[0] if one else v
    return out


def grouped_ranking_metrics(group: Any, scores: Any, relevant: Any, ks: Iterable[int] = (5, 10, 20), *,
                            metrics: Iterable[str] = METRICS, rng: np.random.Generator | None = None
                            ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Long format: one row per (query, candidate) with the query id in `group`. Returns the distinct query ids and
    per-query metrics in their order (candidate order inside a query = row order, for tie-breaking)."""
    group = np.asarray(group)
    scores = np.asarray(scores, dtype=np.float64)
    relevant = np.asarray(relevant).astype(bool)
    queries, inverse, counts = np.unique(group, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    col = np.arange(order.size) - np.repeat(starts, counts)
    width = int(counts.max()) if counts.size else 0
    S = np.zeros((queries.size, width))
    R = np.zeros((queries.size, width), dtype=bool)
    M = np.zeros((queries.size, width), dtype=bool)
    rows = inverse[order]
    S[rows, col], R[rows, col], M[rows, col] = scores[order], relevant[order], True
    return queries, ranking_metrics(S, R, ks, mask=M, metrics=metrics, rng=rng)


def random_ranking_metrics(n_candidates: Any, n_relevant: Any, ks: Iterable[int] = (5, 10, 20), *,
                           metrics: Iterable[str] = ("hr", "ndcg")) -> dict[str, np.ndarray]:
    """The expected per-query metrics of a uniformly random ranking (JIFR's "random frame" baseline), in closed form:
    each position holds a relevant candidate with probability R/n, so E[hits@K] = min(K, n)·R/n, HR@K = min(K, n)/n
    and E[NDCG@K] = (R/n)·Σ_{r ≤ min(K, n)} 1/log2(r + 1) / IDCG@K. No sampling noise in the baseline."""
    n = np.atleast_1d(np.asarray(n_candidates, dtype=np.float64))
    r = np.atleast_1d(np.asarray(n_relevant, dtype=np.float64))
    ks = sorted({int(k) for k in ks})
    discounts = 1.0 / np.log2(np.arange(2, max(ks) + 2))
    ideal_cum = np.cumsum(discounts)
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in ks:
            shown = np.minimum(k, n)
            hits = shown * r / n
            values = {
                "precision": hits / k, "recall": shown / n, "hr": shown / n, "f1": 2.0 * hits / (k + r),
                "hit": 1.0 - np.array([math.comb(int(a - b), k) / math.comb(int(a), k) if a >= k else float(b == 0)
                                       for a, b in zip(n, r, strict=True)]),
                "ndcg": (r / n) * ideal_cum[np.maximum(shown.astype(int) - 1, 0)]
                / ideal_cum[np.clip(np.minimum(r, k).astype(int) - 1, 0, None)],
            }
            for name in metrics:
                out[f"{name}@{k}"] = np.where((r == 0) | (n == 0), np.nan, values[name])
    return out


def mean_by_user(values: Any, users: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-user mean of per-query values (NaN queries skipped; a user with none → NaN)."""
    values = np.asarray(values, dtype=np.float64)
    uniq, inv = np.unique(np.asarray(users), return_inverse=True)
    ok = ~np.isnan(values)
    sums = np.bincount(inv[ok], weights=values[ok], minlength=uniq.size)
    cnt = np.bincount(inv[ok], minlength=uniq.size)
    with np.errstate(invalid="ignore"):
        return uniq, np.where(cnt > 0, sums / np.maximum(cnt, 1), np.nan)


def user_means_of_query_metric(users: Any, queries: Any, scores: Any, relevant: Any, metric: str = "ndcg",
                               k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Long format, one row per (user, query, candidate) → per-user means of a per-query metric@k: the evaluation's
    averaging (per query, per user, then over users), for the validation queries that choose a model. A query
    without a relevant candidate counts for nothing; a user with none of those → NaN."""
    users = np.asarray(users, dtype=np.int64)
    queries = np.asarray(queries, dtype=np.int64)
    if users.size == 0:
        return users, np.zeros(0)
    span = int(queries.max()) + 1
    keys, per_query = grouped_ranking_metrics(users * span + queries, scores, relevant, (k,), metrics=(metric,))
    return mean_by_user(per_query[f"{metric}@{k}"], keys // span)


def summarize(per_user: Mapping[str, Any]) -> dict[str, float]:
    """Mean over users of each metric, NaN users skipped."""
    return {k: float(np.nanmean(np.asarray(v, dtype=np.float64))) if np.size(v) else float("nan")
            for k, v in per_user.items()}


# -- distributions -----------------------------------------------------------------------------------------------------
def _betacf(a: float, b: float, x: float, max_iter: int = 100_000, eps: float = 1e-15) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, max_iter + 1):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if a <= 0 or b <= 0:
        raise ValueError("a and b must be positive")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_bt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_bt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_bt) * _betacf(b, a, 1.0 - x) / b


def student_t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom."""
    if math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t > 0 else 1.0 - tail


def student_t_cdf(t: float, df: float) -> float:
    return 1.0 - student_t_sf(t, df)


def normal_sf(z: float) -> float:
    """P(Z > z) for the standard normal."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _p_from_sf(sf_right: float, sf_left: float, alternative: Alternative) -> float:
    if alternative == "greater":
        return sf_right
    if alternative == "less":
        return sf_left
    if alternative == "two-sided":
        return min(1.0, 2.0 * min(sf_right, sf_left))
    raise ValueError(f"alternative must be two-sided, greater or less, not {alternative!r}")


# -- paired tests ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TestResult:
    """A paired test of a − b. `statistic`: t (t-test), W+ = sum of the ranks of positive differences (Wilcoxon, R's
    V), the mean difference (sign-flip)."""

    __test__ = False  # not a pytest class

    method: str
    statistic: float
    p_value: float
    n: int
    mean_diff: float
    df: float | None = None


def _differences(a: Any, b: Any) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length ({a.size} and {b.size})")
    d = a - b
    if np.isnan(d).any():
        raise ValueError("NaN in the paired samples (drop users without a value in both first)")
    return d


def paired_t_test(a: Any, b: Any, alternative: Alternative = "two-sided") -> TestResult:
    """Student's paired t-test of mean(a − b) = 0. Identical samples → t = 0, p = 1; constant non-zero
    differences → t = ±inf, p = 0."""
    d = _differences(a, b)
    n = d.size
    if n < 2:
        raise ValueError("the paired t-test needs at least 2 pairs")
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    df = float(n - 1)
    if sd == 0.0:
        t = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
        if mean == 0.0:
            return TestResult("paired t-test", 0.0, 1.0, n, 0.0, df)
    else:
        t = mean / (sd / math.sqrt(n))
    p = _p_from_sf(student_t_sf(t, df), student_t_sf(-t, df), alternative)
    return TestResult("paired t-test", t, p, n, mean, df)


def _rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given their average rank."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    ranks = np.empty(x.size, dtype=np.float64)
    i = 0
    while i < x.size:
        j = i
        while j + 1 < x.size and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i:j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    return ranks


def _signed_rank_counts(n: int) -> np.ndarray:
    """counts[s] = number of subsets of {1..n} summing to s (the exact null distribution of W+ times 2^n)."""
    counts = np.zeros(n * (n + 1) // 2 + 1, dtype=np.float64)
    counts[0] = 1.0
    for k in range(1, n + 1):
        counts[k:] = counts[k:] + counts[:-k].copy()
    return counts


def wilcoxon_signed_rank(a: Any, b: Any, alternative: Alternative = "two-sided", *,
                         method: Literal["auto", "exact", "normal"] = "auto", correction: bool = True) -> TestResult:
    """Wilcoxon signed-rank test of a − b (zero differences dropped). "auto": exact for n ≤ 50 without ties."""
    d = _differences(a, b)
    mean_diff = float(d.mean()) if d.size else 0.0
    d = d[d != 0.0]
    n = d.size
    if n == 0:
        return TestResult("wilcoxon signed-rank", 0.0, 1.0, 0, mean_diff)
    ranks = _rankdata(np.abs(d))
    w_plus = float(ranks[d > 0].sum())
    ties = np.unique(np.abs(d), return_counts=True)[1]
    has_ties = bool((ties > 1).any())
    if method == "auto":
        method = "exact" if n <= 50 and not has_ties else "normal"
    if method == "exact":
        if has_ties:
            raise ValueError("the exact Wilcoxon distribution assumes no tied |differences|: use method='normal'")
        counts = _signed_rank_counts(n)
        total = 2.0**n
        w = int(round(w_plus))
        sf_right = float(counts[w:].sum() / total)  # P(W+ >= w)
        sf_left = float(counts[: w + 1].sum() / total)  # P(W+ <= w)
        p = _p_from_sf(sf_right, sf_left, alternative)
        return TestResult("wilcoxon signed-rank (exact)", w_plus, p, n, mean_diff)
    mu = n * (n + 1) / 4.0
    var = n * (n + 1) * (2 * n + 1) / 24.0 - float((ties**3 - ties).sum()) / 48.0
    sd = math.sqrt(var)
    diff = w_plus - mu
    if alternative == "two-sided":
        cc = math.copysign(0.5, diff) if (correction and diff != 0) else 0.0
        z = (diff - cc) / sd
        p = min(1.0, 2.0 * normal_sf(abs(z)))
    elif alternative == "greater":
        z = (diff - (0.5 if correction else 0.0)) / sd
        p = normal_sf(z)
    elif alternative == "less":
        z = (diff + (0.5 if correction else 0.0)) / sd
        p = 1.0 - normal_sf(z)
    else:
        raise ValueError(f"alternative must be two-sided, greater or less, not {alternative!r}")
    return TestResult("wilcoxon signed-rank (normal)", w_plus, p, n, mean_diff)


def sign_flip_test(a: Any, b: Any, alternative: Alternative = "two-sided", *, n_resamples: int = 10_000,
                   exact_max_n: int = 16, seed: int = 0) -> TestResult:
    """Paired permutation test on the mean difference: under H0 each difference's sign is a fair coin. Exact over
    all 2^n sign vectors for n ≤ `exact_max_n`, else Monte Carlo with p = (1 + #extreme) / (1 + n_resamples)."""
    d = _differences(a, b)
    n = d.size
    if n == 0:
        raise ValueError("no pairs")
    observed = float(d.sum())
    tol = 1e-9 * max(1.0, float(np.abs(d).sum()))
    if n <= exact_max_n:
        signs = 1.0 - 2.0 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)  # every sign vector, the identity first
        sums = signs @ d
        denom, extra = float(sums.size), 0.0
    else:
        rng = np.random.default_rng(seed)
        sums = np.concatenate([rng.choice((-1.0, 1.0), size=(min(n_resamples - i, 4096), n)) @ d
                               for i in range(0, n_resamples, 4096)])
        denom, extra = float(n_resamples + 1), 1.0
    right = (float((sums >= observed - tol).sum()) + extra) / denom
    left = (float((sums <= observed + tol).sum()) + extra) / denom
    if alternative == "two-sided":
        p = (float((np.abs(sums) >= abs(observed) - tol).sum()) + extra) / denom
    else:
        p = _p_from_sf(right, left, alternative)
    return TestResult("sign-flip permutation" + (" (exact)" if n <= exact_max_n else ""), observed / n,
                      min(1.0, p), n, observed / n)


def paired_tests(a: Any, b: Any, **sign_flip_kw: Any) -> dict[str, TestResult]:
    """The three tests of a − b on per-user values, for a report."""
    return {"t": paired_t_test(a, b), "wilcoxon": wilcoxon_signed_rank(a, b), "sign_flip": sign_flip_test(a, b, **sign_flip_kw)}
