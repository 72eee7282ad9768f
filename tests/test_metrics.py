"""Ranking metrics on hand-computed cases, and the paired significance tests against published values (R's
documented examples) and closed forms of the t distribution."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from kfr_spark.models.metrics import (betainc, grouped_ranking_metrics, mean_by_user, paired_t_test, ranking_metrics,
                                      sign_flip_test, student_t_cdf, student_t_sf, summarize, top_k,
                                      user_means_of_query_metric, wilcoxon_signed_rank)

# Cushny & Peebles' sleep data (Student 1908; R's `sleep`): extra hours of sleep under two drugs, same 10 patients
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
# Hollander & Wolfe's depression scores (R's ?wilcox.test example), 9 patients before (x) and after (y) therapy
HW_X = [1.83, 0.50, 1.62, 2.48, 1.68, 1.88, 1.55, 3.06, 1.30]
HW_Y = [0.878, 0.647, 0.598, 2.05, 1.06, 1.29, 1.06, 3.14, 1.29]


# -- ranking metrics ---------------------------------------------------------------------------------------------------
def test_metrics_of_one_ranking_by_hand():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    relevant = [True, False, True, False, False]  # hits at ranks 1 and 3, R = 2
    m = ranking_metrics(scores, relevant, ks=(1, 3, 5))
    assert m["precision@3"] == pytest.approx(2 / 3) and m["recall@3"] == pytest.approx(1.0)
    assert m["f1@3"] == pytest.approx(2 * (2 / 3) * 1.0 / (2 / 3 + 1.0))  # = 0.8
    assert m["f1@1"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert m["ndcg@1"] == 1.0 and m["hit@1"] == 1.0 and m["hr@1"] == 0.5 and m["hr@5"] == 1.0
    # the same candidates in another order: the relevant ones at ranks 2 and 5
    m = ranking_metrics([0.1, 0.9, 0.3, 0.2, 0.8], [True, False, False, False, True], ks=(1, 5))
    assert m["ndcg@5"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(6)) / (1 + 1 / math.log2(3)))
    assert m["ndcg@1"] == 0.0 and m["hit@1"] == 0.0 and m["precision@5"] == pytest.approx(0.4)


def test_k_beyond_the_candidates_and_queries_without_relevant_items():
    m = ranking_metrics([0.3, 0.2], [False, True], ks=(5,))
    assert m["precision@5"] == pytest.approx(1 / 5)  # precision keeps K in the denominator
    assert m["ndcg@5"] == pytest.approx(1 / math.log2(3)) and m["recall@5"] == 1.0
    m = ranking_metrics([0.3, 0.2], [False, False], ks=(5,))
    assert all(math.isnan(v) for v in m.values())


def test_ties_go_to_the_earlier_candidate_or_are_broken_at_random():
    assert top_k([1.0, 2.0, 2.0, 1.0], 4).tolist() == [1, 2, 0, 3]
    firsts = {int(top_k(np.zeros(4), 1, rng=np.random.default_rng(s))[0]) for s in range(40)}
    assert firsts == {0, 1, 2, 3}
    with pytest.raises(ValueError):
        ranking_metrics([np.nan, 1.0], [True, False])


def test_padded_grouped_and_single_query_forms_agree():
    rng = np.random.default_rng(0)
    sizes = [7, 3, 12, 1]
    queries = [(rng.normal(size=n), rng.random(n) < 0.4) for n in sizes]
    queries[3] = (queries[3][0], np.array([True]))
    single = [ranking_metrics(s, r, ks=(1, 5, 10)) for s, r in queries]
    S = np.zeros((4, 12))
    R = np.zeros((4, 12), bool)
    M = np.zeros((4, 12), bool)
    for i, (s, r) in enumerate(queries):
        S[i, : s.size], R[i, : s.size], M[i, : s.size] = s, r, True
    S[~M] = 100.0  # padding must not rank, whatever its score
    padded = ranking_metrics(S, R, ks=(1, 5, 10), mask=M)
    group = np.concatenate([[f"q{i}"] * n for i, n in enumerate(sizes)])
    order = rng.permutation(group.size)  # rows in any order (no tied scores here, so order inside a query is moot)
    ids, grouped = grouped_ranking_metrics(group[order], np.concatenate([q[0] for q in queries])[order],
                                           np.concatenate([q[1] for q in queries])[order], ks=(1, 5, 10))
    assert ids.tolist() == ["q0", "q1", "q2", "q3"]
    for key in single[0]:
        one = np.array([m[key] for m in single])
        np.testing.assert_allclose(padded[key], one, equal_nan=True)
        np.testing.assert_allclose(grouped[key], one, equal_nan=True)


def test_per_user_means_skip_undefined_queries():
    users, means = mean_by_user([1.0, 0.0, np.nan, 0.5, np.nan], ["b", "b", "a", "a", "c"])
    assert users.tolist() == ["a", "b", "c"] and means[:2].tolist() == [0.5, 0.5] and math.isnan(means[2])
    assert summarize({"ndcg@5": means}) == {"ndcg@5": 0.5}


def test_validation_queries_are_averaged_per_query_then_per_user_like_the_evaluation():
    """Query ids repeat across users (a video): (user, query) is the query. Rows may come in any order."""
    rows = [  # user, query, score, relevant
        (7, 1, 0.9, 0), (3, 1, 0.3, 1), (7, 1, 0.1, 1), (7, 2, 0.2, 0), (7, 1, 0.5, 0), (3, 1, 0.4, 0),
        (7, 2, 0.8, 1), (3, 5, 0.7, 0), (9, 4, 0.6, 0),
    ]
    users, queries, scores, relevant = map(np.array, zip(*rows, strict=True))
    ids, means = user_means_of_query_metric(users, queries, scores, relevant, "ndcg", 10)
    assert ids.tolist() == [3, 7, 9]
    # user 3: its one query with a relevant frame has it second; user 7: third (1/log2 4) and first, averaged
    np.testing.assert_allclose(means[:2], [1 / math.log2(3), (0.5 + 1.0) / 2])
    assert math.isnan(means[2])  # user 9's only query has nothing relevant
    empty_users, empty_means = user_means_of_query_metric([], [], [], [])
    assert empty_users.size == 0 and empty_means.size == 0


def test_metrics_do_not_import_torch():
    code = "import sys, kfr_spark.models.metrics, kfr_spark.models.sampling; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- distributions -----------------------------------------------------------------------------------------------------
def test_t_distribution_against_closed_forms_and_tables():
    for t in (-30.0, -2.5, -0.3, 0.0, 0.7, 4.0, 50.0):
        assert student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)  # Cauchy
        assert student_t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    # two-sided critical values from the t table
    assert 2 * student_t_sf(12.706205, 1) == pytest.approx(0.05, abs=1e-7)
    assert 2 * student_t_sf(2.262157, 9) == pytest.approx(0.05, abs=1e-6)
    assert 2 * student_t_sf(2.749996, 30) == pytest.approx(0.01, abs=1e-6)
    assert 2 * student_t_sf(1.959964, 1e7) == pytest.approx(0.05, abs=1e-6)  # → the normal
    assert betainc(2.0, 3.0, 0.4) == pytest.approx(0.5248, abs=1e-12)  # 1 − Σ_{j<2} C(4,j)·0.4^j·0.6^(4−j)


# -- paired tests ------------------------------------------------------------------------------------------------------
def test_paired_t_test_on_students_sleep_data():
    r = paired_t_test(SLEEP_1, SLEEP_2)  # R: t = -4.0621, df = 9, p-value = 0.002833
    assert r.statistic == pytest.approx(-4.062128, abs=1e-6) and r.df == 9
    assert r.p_value == pytest.approx(0.002833, abs=5e-7)
    assert r.mean_diff == pytest.approx(-1.58)
    assert paired_t_test(SLEEP_2, SLEEP_1).p_value == pytest.approx(r.p_value)
    assert paired_t_test(SLEEP_1, SLEEP_2, "less").p_value == pytest.approx(r.p_value / 2)
    assert paired_t_test(SLEEP_1, SLEEP_2, "greater").p_value == pytest.approx(1 - r.p_value / 2)
    assert paired_t_test([1, 2, 3], [1, 2, 3]).p_value == 1.0
    assert paired_t_test([2, 3, 4], [1, 2, 3]).p_value == 0.0


def test_wilcoxon_signed_rank_on_rs_examples():
    r = wilcoxon_signed_rank(HW_X, HW_Y, "greater")  # R: V = 40, p-value = 0.01953 (exact)
    assert r.statistic == 40 and r.p_value == pytest.approx(0.01953125)
    assert wilcoxon_signed_rank(HW_X, HW_Y).p_value == pytest.approx(2 * 0.01953125)
    # sleep data: a zero difference and ties → normal approximation with corrections; R: V = 0, p = 0.009091
    r = wilcoxon_signed_rank(SLEEP_1, SLEEP_2)
    assert r.statistic == 0 and r.n == 9 and r.p_value == pytest.approx(0.009091, abs=5e-7)
    assert wilcoxon_signed_rank(SLEEP_2, SLEEP_1).p_value == pytest.approx(r.p_value)
    # 5 positive differences: the most extreme of 2^5 equally likely sign patterns, on each side
    assert wilcoxon_signed_rank([1, 2, 3, 4, 5], [0, 0, 0, 0, 0]).p_value == pytest.approx(2 / 32)
    with pytest.raises(ValueError):
        wilcoxon_signed_rank(SLEEP_1, SLEEP_2, method="exact")


def test_sign_flip_test_exact_symmetric_and_sampled():
    r = sign_flip_test([1, 2, 3], [0, 0, 0])  # of the 8 sign patterns only ±(1, 2, 3) reach |sum| = 6
    assert r.p_value == pytest.approx(2 / 8)
    assert sign_flip_test([1, 2, 3], [0, 0, 0], "greater").p_value == pytest.approx(1 / 8)
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.3, 1, 12), rng.normal(0, 1, 12)
    assert sign_flip_test(a, b).p_value == sign_flip_test(b, a).p_value
    assert sign_flip_test(a, b, "greater").p_value == sign_flip_test(b, a, "less").p_value
    # many users: Monte Carlo, close to the t-test, and symmetric for the same seed
    a, b = rng.normal(0.25, 1, 60), rng.normal(0, 1, 60)
    mc = sign_flip_test(a, b, n_resamples=20_000, seed=1)
    assert mc.p_value == sign_flip_test(b, a, n_resamples=20_000, seed=1).p_value
    assert mc.p_value == pytest.approx(paired_t_test(a, b).p_value, abs=0.03)
    assert sign_flip_test(SLEEP_1, SLEEP_2).p_value == pytest.approx(4 / 1024)  # one zero difference: 2 × 2 patterns
