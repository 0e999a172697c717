"""Unit tests of pytest_mlperf.host.gate.stats against hand-computed values (simulation tests: test_gate_simulation.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_mlperf.host.gate.stats import (
    Interval,
    floor_occupancy,
    overhead,
    paired_overhead_interval,
    percentile,
    t_quantile,
    trimmed_mean,
)
from pytest_mlperf.host.gate.stopping import (
    DEFAULT_PLAN,
    GateDecision,
    GatePlan,
    Verdict,
    decide,
    evaluate,
    look_confidence,
    looks,
    round_order,
)


# ----------------------------------------------------------------------------- percentile
@pytest.mark.parametrize(
    "values, q, expected",
    [
        ([1, 2, 3, 4], 50, 2.5),
        ([1, 2, 3, 4], 0, 1.0),
        ([1, 2, 3, 4], 100, 4.0),
        ([1, 2, 3, 4], 25, 1.75),  # h = 3 * 0.25 = 0.75 -> 1 + 0.75 * (2 - 1)
        ([4, 1, 3, 2], 90, 3.7),  # unsorted input; h = 2.7 -> 3 + 0.7 * (4 - 3)
        ([10, 20], 99, 19.9),
        ([7], 99, 7.0),
    ],
)
def test_percentile_hand_values(values, q, expected):
    assert percentile(values, q) == pytest.approx(expected)
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1, 2], 101)


# ----------------------------------------------------------------------------- overhead
def test_overhead_throughput_and_latency():
    assert overhead(100.0, 95.0, higher_is_better=True) == pytest.approx(0.05)
    assert overhead(100.0, 110.0, higher_is_better=True) == pytest.approx(-0.10)  # candidate faster
    assert overhead(2e6, 2.1e6, higher_is_better=False) == pytest.approx(0.05)  # latency ns
    assert overhead(2e6, 1.8e6, higher_is_better=False) == pytest.approx(-0.10)
    with pytest.raises(ValueError):
        overhead(0.0, 1.0, higher_is_better=True)


def test_t_quantile_matches_tables():
    assert t_quantile(0.975, 5) == pytest.approx(2.5706, abs=1e-4)
    assert t_quantile(0.995, 10) == pytest.approx(3.1693, abs=1e-4)
    assert t_quantile(0.975, 2) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-3)
    assert t_quantile(0.025, 5) == pytest.approx(-2.5706, abs=1e-4)


# ----------------------------------------------------------------------------- interval
@pytest.mark.parametrize("n", [3, 4, 12])
def test_interval_on_constant_ratio_collapses(n):
    ref = [100.0 * (1 + 0.1 * i) for i in range(n)]  # drifting reference level
    iv = paired_overhead_interval(ref, [0.96 * r for r in ref], higher_is_better=True)
    assert iv.estimate == pytest.approx(0.04) and iv.low == pytest.approx(0.04) and iv.high == pytest.approx(0.04)
    iv = paired_overhead_interval(ref, [1.03 * r for r in ref], higher_is_better=False, confidence=0.99)
    assert (iv.estimate, iv.low, iv.high) == pytest.approx((0.03, 0.03, 0.03))
    assert iv.confidence == 0.99


def test_interval_estimate_is_trimmed_mean_of_log_ratios():
    # 10 rounds: g = floor(0.2 * 10) = 2 trimmed at each end; one outlier round either way.
    ratios = [0.97, 0.98, 0.96, 0.97, 0.80, 0.97, 0.99, 0.96, 0.97, 1.20]
    ref = [1000.0] * 10
    iv = paired_overhead_interval(ref, [1000.0 * r for r in ratios], higher_is_better=True)
    middle = sorted(-math.log(r) for r in ratios)[2:8]
    assert iv.estimate == pytest.approx(1 - math.exp(-sum(middle) / 6))
    assert iv.low < iv.estimate < iv.high
    # one 20%-slow candidate run among 12 rounds: the interval stays away from 0 and from 10%
    ratios = [0.97, 0.98, 0.96, 0.97, 0.80, 0.97, 0.99, 0.96, 0.97, 0.98, 0.97, 0.96]
    iv = paired_overhead_interval([1000.0] * 12, [1000.0 * r for r in ratios], higher_is_better=True)
    assert 0.02 < iv.low < iv.estimate < iv.high < 0.07


def test_interval_deterministic_and_widens_with_confidence():
    rng = np.random.default_rng(1)
    ref = 1000 * np.exp(rng.normal(0, 0.02, 15))
    cand = 0.97 * 1000 * np.exp(rng.normal(0, 0.02, 15))
    a = paired_overhead_interval(ref, cand, higher_is_better=True, seed=7)
    assert a == paired_overhead_interval(ref, cand, higher_is_better=True, seed=7)
    wide = paired_overhead_interval(ref, cand, higher_is_better=True, seed=7, confidence=0.99)
    assert wide.low < a.low < a.estimate < a.high < wide.high
    assert wide.estimate == a.estimate
    with pytest.raises(ValueError):
        paired_overhead_interval(ref[:2], cand[:2], higher_is_better=True)
    with pytest.raises(ValueError):
        paired_overhead_interval(ref, cand[:-1], higher_is_better=True)


def test_interval_coverage_at_small_n():
    # 95% interval with 6 rounds of normal noise: the small-sample widening keeps coverage >= ~93%.
    misses = 0
    for s in range(300):
        rng = np.random.default_rng(1000 + s)
        ref = np.exp(rng.normal(0, 0.02, 6))
        cand = 0.95 * np.exp(rng.normal(0, 0.02, 6))
        iv = paired_overhead_interval(ref, cand, higher_is_better=True, n_boot=1000, seed=s)
        misses += not (iv.low <= 0.05 <= iv.high)
    assert misses / 300 <= 0.07


def test_trimmed_mean_vectorised():
    x = np.array([[1.0, 2.0, 3.0, 4.0, 100.0], [5.0, 5.0, 5.0, 5.0, 5.0]])
    assert trimmed_mean(x) == pytest.approx([3.0, 5.0])  # g = 1 for n = 5


# ----------------------------------------------------------------------------- decisions
def test_decide_three_branches():
    assert decide(Interval(0.02, 0.01, 0.04, 0.95), 0.05) is Verdict.PASS
    assert decide(Interval(0.08, 0.06, 0.10, 0.95), 0.05) is Verdict.FAIL
    assert decide(Interval(0.05, 0.03, 0.07, 0.95), 0.05) is None
    assert decide(Interval(0.04, 0.03, 0.05, 0.95), 0.05) is None  # touching the limit is not below it
    assert decide(Interval(math.nan, math.nan, math.nan, 0.95), 0.05) is None
    assert Verdict.PASS == "PASS" and str(Verdict.INCONCLUSIVE) == "INCONCLUSIVE"


def test_default_plan_looks():
    assert looks(DEFAULT_PLAN) == [12, 24, 36, 48, 60]
    assert look_confidence(DEFAULT_PLAN) == pytest.approx(0.99)
    assert looks(GatePlan(min_rounds=5, max_rounds=5, n_looks=3)) == [5]
    with pytest.raises(ValueError):
        GatePlan(min_rounds=2)


def test_evaluate_stopping_rule():
    plan = GatePlan(min_rounds=4, max_rounds=8, n_looks=2, max_seconds=100.0)
    ref = [100.0, 101.0, 99.0, 100.0, 100.5, 99.5, 100.0, 100.2]
    good = [r * 0.99 for r in ref]
    assert evaluate(plan, ref[:3], good[:3], higher_is_better=True, elapsed_s=10) is None  # before min_rounds
    d = evaluate(plan, ref[:4], good[:4], higher_is_better=True, elapsed_s=10)
    assert isinstance(d, GateDecision) and d.verdict is Verdict.PASS and d.rounds == 4
    assert d.interval.confidence == pytest.approx(0.975)
    bad = [r * 0.90 for r in ref]
    assert evaluate(plan, ref[:4], bad[:4], higher_is_better=True, elapsed_s=10).verdict is Verdict.FAIL
    # straddling the limit: keep measuring between looks, INCONCLUSIVE at max_rounds
    edge = [r * f for r, f in zip(ref, [0.93, 0.97, 0.95, 0.96, 0.94, 0.95, 0.97, 0.93])]
    assert evaluate(plan, ref[:4], edge[:4], higher_is_better=True, elapsed_s=10) is None
    assert evaluate(plan, ref[:5], edge[:5], higher_is_better=True, elapsed_s=10) is None  # not a look
    assert evaluate(plan, ref, edge, higher_is_better=True, elapsed_s=10).verdict is Verdict.INCONCLUSIVE
    # time budget spent: one last look at whatever count was reached
    assert evaluate(plan, ref[:5], edge[:5], higher_is_better=True, elapsed_s=100).verdict is Verdict.INCONCLUSIVE
    assert evaluate(plan, ref[:5], good[:5], higher_is_better=True, elapsed_s=100).verdict is Verdict.PASS
    d = evaluate(plan, ref[:2], good[:2], higher_is_better=True, elapsed_s=100)
    assert d.verdict is Verdict.INCONCLUSIVE and math.isnan(d.interval.estimate)


def test_round_order_balanced_abba():
    order = round_order(8, seed=3)
    assert len(order) == 16 and order.count("reference") == order.count("candidate") == 8
    pairs = [order[i:i + 2] for i in range(0, 16, 2)]
    assert all(sorted(p) == ["candidate", "reference"] for p in pairs)
    firsts = [p[0] for p in pairs]
    assert firsts.count("reference") == firsts.count("candidate") == 4
    assert all(a != b for a, b in zip(firsts, firsts[1:]))  # AB BA AB BA ...
    assert round_order(8, seed=3) == order
    assert {round_order(2, seed=s)[0] for s in range(20)} == {"reference", "candidate"}


# ----------------------------------------------------------------------------- the floor estimator (issue 14)
def test_floor_mean_is_the_mean_of_the_best_quarter():
    from pytest_mlperf.host.gate.stats import floor_mean
    assert floor_mean(np.array([5.0, 1.0, 4.0, 2.0, 3.0, 9.0, 8.0, 7.0])) == pytest.approx(1.5)  # 2 of 8
    assert floor_mean(np.array([3.0, 1.0, 2.0])) == pytest.approx(1.0)  # at least one


def test_the_floor_reads_through_one_arms_lasting_slow_state():
    """The H200 pattern (session 11): both arms sit on the same floor, and one of them spends a stretch of rounds
    10% slower. The trimmed mean of the paired ratios inherits the stretch; the floor does not."""
    from pytest_mlperf.host.gate.stats import floor_overhead_interval
    rng = np.random.default_rng(5)
    ref = 0.70 * np.exp(rng.normal(0, 0.003, 24))
    cand = 0.70 * np.exp(rng.normal(0, 0.003, 24))
    cand[8:15] *= 1.10  # seven rounds in a row: more than the trimmed mean's 20% drops
    paired = paired_overhead_interval(ref, cand, higher_is_better=False)
    floor = floor_overhead_interval(ref, cand, higher_is_better=False)
    assert paired.estimate > 0.015
    assert abs(floor.estimate) < 0.005
    assert floor.low < 0 < floor.high


def test_the_floor_of_a_constant_ratio_is_exact_for_either_direction():
    from pytest_mlperf.host.gate.stats import floor_overhead_interval
    ref = [100.0, 104.0, 101.0, 107.0, 99.0, 102.0]
    lat = floor_overhead_interval(ref, [v * 1.07 for v in ref], higher_is_better=False)
    assert lat.estimate == pytest.approx(0.07) and lat.low == pytest.approx(0.07) and lat.high == pytest.approx(0.07)
    thr = floor_overhead_interval(ref, [v * 0.93 for v in ref], higher_is_better=True)
    assert thr.estimate == pytest.approx(0.07)


def test_estimator_for_and_the_plan_check():
    from pytest_mlperf.host.gate.stopping import estimator_for
    plan = GatePlan(estimator="floor-latency")
    assert estimator_for(plan, higher_is_better=False) == "floor"
    assert estimator_for(plan, higher_is_better=True) == "paired"
    assert estimator_for(GatePlan(), higher_is_better=False) == "paired"
    with pytest.raises(ValueError, match="estimator must be one of paired, floor, floor-latency"):
        GatePlan(estimator="median")


def test_evaluate_uses_the_plans_estimator():
    ref = [0.70] * 9 + [0.70 * 1.15] * 3
    cand = [0.70 * 1.15] * 3 + [0.70] * 9  # each arm slow a quarter of the time, never together: no cost at the floor
    paired = evaluate(GatePlan(), ref, cand, higher_is_better=False, elapsed_s=1.0)
    floor = evaluate(GatePlan(estimator="floor"), ref, cand, higher_is_better=False, elapsed_s=1.0)
    assert paired is None or paired.verdict is not Verdict.PASS  # half the paired ratios are +-15%
    assert floor is not None and floor.verdict is Verdict.PASS and floor.interval.estimate == pytest.approx(0.0)


def test_floor_occupancy_counts_the_rounds_near_each_arms_floor():
    # 30 rounds on a floor of 335 us (1% noise), 70 in a slow state 12% above it: the copy probes' two levels
    rng = np.random.default_rng(3)
    floor = 335 * np.exp(rng.normal(0, 0.01, 30))
    slow = 375 * np.exp(rng.normal(0, 0.01, 70))
    assert floor_occupancy(np.concatenate([slow, floor]), higher_is_better=False) == pytest.approx(0.30, abs=0.02)
    # throughput's floor is its best (highest) rounds: the same shape inverted
    assert floor_occupancy(1 / np.concatenate([floor, slow]), higher_is_better=True) == pytest.approx(0.30, abs=0.02)
    # a floor visited rarely is still the anchor: the slow state does not count as floor however long it lasts
    assert floor_occupancy(np.concatenate([slow, slow, floor[:15]]), higher_is_better=False) == pytest.approx(
        15 / 155, abs=0.01)
    # a steady series is all floor, and one round 2% faster than the rest in 40 does not change that
    assert floor_occupancy([100.0] * 20, higher_is_better=False) == 1.0
    assert floor_occupancy([100.0] * 39 + [98.0], higher_is_better=False) == 1.0
    assert floor_occupancy([100.0] * 16 + [80.0] * 4, higher_is_better=False) == pytest.approx(0.20)
    # a wider band takes the slow state in
    assert floor_occupancy(np.concatenate([floor, slow]), higher_is_better=False, near=0.2) == 1.0
    with pytest.raises(ValueError):
        floor_occupancy([], higher_is_better=False)
