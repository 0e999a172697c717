"""The overhead gate on Server capacity (host/gate/capacity.py) without LoadGen: the rounds' search plan from the gate
settings, a round's search on simulated SUTs, and gate.run_rounds judging the capacities it returns."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_mlperf.host.gate.capacity import (ROUND_PROBES, ROUND_SLACK, ROUND_STEP, CapacityRounds, RoundSetup,
                                         longest_latency_s, on_grid, round_plan, round_probe_s, searches_record)
from pytest_mlperf.host.gate.loop import GateError, describe, gate_metrics, run_rounds
from pytest_mlperf.host.pool.recipe import LaunchRecipe
from pytest_mlperf.host.driver.server_search import (CAPACITY_METRIC, STATUS_BUDGET, STATUS_FOUND, STATUS_UNBRACKETABLE,
                                         Probe, ProbeResult, SearchOutcome, SearchPlan, search)
from pytest_mlperf.host.settings import GateSettings
from pytest_mlperf.host.gate.stopping import Verdict

GATE = GateSettings(candidate=LaunchRecipe(name="candidate"), min_rounds=12, max_rounds=60, budget_s=1800.0)


def setup(anchor: float = 100.0, **kw: object) -> RoundSetup:
    values: dict = dict(anchor_qps=anchor, probe_s=1.0, probe_queries=16, confirm_s=10.0, confirm_queries=64,
                        ceiling=None)
    values.update(kw)
    return RoundSetup(**values)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Arm:
    """A SUT VALID up to `capacity` QPS times a lognormal factor of `cv` per probe; each probe costs its min
    duration plus 0.1 s on a fake clock."""

    def __init__(self, capacity: float, clock: Clock, cv: float = 0.0, seed: int = 1) -> None:
        self.capacity, self.clock, self.cv = capacity, clock, cv
        self.rng = np.random.default_rng(seed)
        self.loads: list[float] = []

    def __call__(self, qps: float, phase: str, duration_s: float) -> ProbeResult:
        assert phase != "confirm", "a round's search confirms nothing"
        self.loads.append(qps)
        self.clock.now += duration_s + 0.1
        limit = self.capacity * math.exp(self.rng.normal(0, self.cv)) if self.cv else self.capacity
        return ProbeResult(qps <= limit * (1 + 1e-12), achieved_qps=min(qps, limit),
                           reasons=() if qps <= limit else ("Reduce target QPS to improve latency.",))


def test_round_loads_lie_on_one_grid_anchored_at_the_reference_capacity() -> None:
    assert on_grid(100.0, 100.0) == 100.0
    assert on_grid(102.9, 100.0) == pytest.approx(100.0 * 1.02 ** 1)
    assert on_grid(95.0, 100.0) == pytest.approx(100.0 / 1.02 ** 3)  # 100 / 1.02**2.59: the nearest is 3 steps
    assert on_grid(100.0 * 1.02 ** 7, 100.0) == pytest.approx(100.0 * 1.02 ** 7)
    assert on_grid(101.0, 100.0, step=0.5) == 100.0


def test_every_round_probe_lasts_the_round_and_at_least_five_query_latencies() -> None:
    assert round_probe_s(0.5, None, 10.0) == 0.5  # no latency logged: the gate's round length
    assert round_probe_s(0.5, 0.05, 10.0) == 0.5  # 5 x 50 ms is shorter than the round
    assert round_probe_s(0.5, 0.3, 10.0) == pytest.approx(1.5)  # an LLM's query latency: 5 times it
    assert round_probe_s(0.5, 4.0, 10.0) == 10.0  # at most the case's full length


def warmup(*probes: tuple[float, bool, float]) -> SearchOutcome:
    """A finished warm-up search of (target QPS, VALID, p99 query latency s) probes."""
    kept = [Probe("bracket", q, ProbeResult(v, achieved_qps=q, latency_p99_ns=lat * 1e9), 2.5) for q, v, lat in probes]
    plan = SearchPlan(start_qps=3700.0, budget_s=60.0, probe_s=2.5, probe_queries=16, confirm_s=10.0,
                      confirm_queries=460)
    return SearchOutcome(STATUS_FOUND, 6600.0, 6600.0, 6600.0, 6700.0, kept, 30.0, plan)


def test_an_overloaded_warm_up_probe_does_not_lengthen_the_round_probes() -> None:
    # the H200 pattern (ResNet50 stand-in, ci profile): VALID probes near 12 ms, one probe at 1.35x the capacity
    # INVALID with a queue's 0.67 s p99; its p99 made every round probe 3.3 s instead of the 1 s round
    ref = warmup((3700.0, True, 0.011), (7480.0, False, 0.35), (6600.0, True, 0.0124))
    cand = warmup((6600.0, True, 0.012), (8970.0, False, 0.67), (6700.0, True, 0.0125))
    assert longest_latency_s(ref, cand) == pytest.approx(0.0125)
    assert round_probe_s(1.0, longest_latency_s(ref, cand), 10.0) == 1.0
    # an LLM's VALID queries of ~1.1 s still set the length: five of them
    assert round_probe_s(1.0, longest_latency_s(warmup((20.0, True, 1.1), (50.0, False, 4.6))), 60.0) == \
        pytest.approx(5.5)
    assert longest_latency_s(warmup((9000.0, False, 0.7))) is None  # no VALID probe: the round length


def test_the_round_plan_comes_from_the_gate_settings() -> None:
    s = setup(probe_s=1.0)
    p = round_plan(100.0, s, GATE)
    assert (ROUND_STEP, ROUND_PROBES, ROUND_SLACK) == (0.02, 6, 2.0)
    assert p.start_qps == 100.0 and not p.confirm
    assert p.growth == pytest.approx(1.02) and p.precision == 0.02
    assert p.max_probes == 6 and p.max_halvings == 5 and p.lowest_qps == pytest.approx(100.0 / 1.02 ** 5)
    assert p.probe_s == 1.0 and p.probe_queries == 16 and p.latency_factor == 0.0
    assert p.duration_s("bracket", 3.0) == 1.0  # every probe the same length, whatever a probe's latency
    # at least the gate's budget over the rounds of its first look, half per arm: 1800 / 12 / 2 = 75 s
    assert p.budget_s == 75.0
    # a budget that small holds the round's probes twice over: 6 x 2 x max(10 s, 16 queries at the lowest load)
    tight = round_plan(100.0, setup(probe_s=10.0), GateSettings(LaunchRecipe(), min_rounds=12, budget_s=120.0))
    assert tight.budget_s == pytest.approx(2 * 6 * 10.0)
    slow = round_plan(2.0, setup(anchor=2.0, probe_s=1.0), GATE)  # 16 queries at 2 / 1.02**5 QPS: 8.8 s a probe
    assert slow.budget_s == pytest.approx(max(75.0, 2 * 6 * 16 / (2.0 / 1.02 ** 5)))
    # the start moves onto the reference's grid, and no higher than the ceiling
    assert round_plan(97.5, s, GATE).start_qps == pytest.approx(100.0 / 1.02)
    capped = round_plan(100.0, setup(ceiling=99.0), GATE)
    assert capped.start_qps == 99.0 and capped.max_qps == 99.0


def test_a_round_search_at_a_steady_capacity_costs_two_probes_and_no_confirmation() -> None:
    clock = Clock()
    s = setup()
    sut = Arm(100.0 * 1.02 ** 2 * 1.005, clock)  # just above the grid load two steps up
    up = search(sut, round_plan(100.0 * 1.02, s, GATE), clock=clock)  # one step below its capacity
    assert up.status == STATUS_FOUND and up.capacity_qps == pytest.approx(100.0 * 1.02 ** 2)
    assert [p.phase for p in up.probes] == ["bracket"] * 3 and up.capacity_probe is None
    assert "the highest load a short probe found VALID" in up.describe() and "no confirmation" in up.describe()
    steady = search(sut, round_plan(up.capacity_qps, s, GATE), clock=clock)
    assert len(steady.probes) == 2 and steady.capacity_qps == pytest.approx(up.capacity_qps)
    assert steady.upper_qps == pytest.approx(100.0 * 1.02 ** 3)
    down = search(Arm(100.0 / 1.02 * 1.005, clock), round_plan(100.0, s, GATE), clock=clock)
    assert [p.result.valid for p in down.probes] == [False, True]
    assert down.status == STATUS_FOUND and down.capacity_qps == pytest.approx(100.0 / 1.02)


def test_a_round_search_follows_at_most_ten_percent() -> None:
    clock = Clock()
    rose = search(Arm(150.0, clock), round_plan(100.0, setup(), GATE), clock=clock)
    assert len(rose.probes) == 6 and all(p.result.valid for p in rose.probes)
    assert rose.status == STATUS_BUDGET and rose.capacity_qps == pytest.approx(100.0 * 1.02 ** 5)
    assert "used its 6 probes" in rose.why and "the highest load a short probe found VALID" in rose.describe()
    fell = search(Arm(80.0, clock), round_plan(100.0, setup(), GATE), clock=clock)
    assert len(fell.probes) == 6 and not any(p.result.valid for p in fell.probes)
    assert fell.status == STATUS_UNBRACKETABLE and fell.capacity_qps is None
    assert min(p.target_qps for p in fell.probes) == pytest.approx(100.0 / 1.02 ** 5)
    assert fell.describe().startswith("no load from 100 QPS down to 90.57 QPS was VALID")


def test_a_search_without_confirmation_keeps_no_time_for_one() -> None:
    """A budget of two probes and no confirmation: a confirming plan cannot start, one that does not confirm
    brackets the capacity."""
    clock = Clock()
    base = dict(start_qps=100.0, budget_s=2.5, probe_s=1.0, probe_queries=1, confirm_s=600.0, confirm_queries=1,
                growth=1.02, precision=0.02)
    assert search(Arm(101.0, clock), SearchPlan(**base), clock=clock).probes == []
    clock.now = 0.0
    out = search(Arm(101.0, clock), SearchPlan(**base, confirm=False), clock=clock)
    assert out.status == STATUS_FOUND and out.capacity_qps == 100.0 and len(out.probes) == 2


def rounds_of(caps: dict[str, float], cv: float, clock: Clock, *,
              collapse: tuple[int, float] | None = None) -> CapacityRounds:
    """CapacityRounds whose searches run on simulated arms; `collapse` (round, factor): from that round on, the
    candidate's capacity is multiplied by the factor."""
    arms = {arm: Arm(c, clock, cv, seed=n) for n, (arm, c) in enumerate(caps.items())}

    def run(arm: str, i: int, plan: SearchPlan) -> SearchOutcome:
        if collapse is not None and arm == "candidate" and i == collapse[0]:
            arms[arm].capacity *= collapse[1]
        return search(arms[arm], plan, clock=clock)

    return CapacityRounds(setup(anchor=caps["reference"]), GATE, run, latest=dict(caps))


@pytest.mark.parametrize("cost, verdict", [(0.0, Verdict.PASS), (0.2, Verdict.FAIL)])
def test_the_gate_judges_the_capacity_of_each_round(cost: float, verdict: Verdict) -> None:
    clock = Clock()
    caps = {"reference": 200.0, "candidate": 200.0 * (1 - cost)}
    rounds = rounds_of(caps, cv=0.01, clock=clock)
    metrics = gate_metrics("Server", {CAPACITY_METRIC: caps["reference"]}, searched=True)
    out = run_rounds(rounds.measure, metrics, GATE.plan(), clock=clock)
    assert out.verdict == verdict and out.rounds == 12  # the first look decides
    (m,) = out.metrics
    assert (m.metric.name, m.metric.unit, m.metric.higher_is_better) == (CAPACITY_METRIC, "QPS", True)
    assert m.interval is not None and m.interval.low < cost + 0.03 and m.interval.high > cost - 0.03
    assert "server capacity overhead" in describe(out)
    # every round's search of each arm is kept; the capacities judged are theirs
    assert len(rounds.rounds) == out.rounds and all(set(r) == {"reference", "candidate"} for r in rounds.rounds)
    assert m.reference == [r["reference"]["capacity_qps"] for r in rounds.rounds]
    assert m.candidate == [r["candidate"]["capacity_qps"] for r in rounds.rounds]
    probes = [p for r in rounds.rounds for rec in r.values() for p in rec["probes"]]
    assert probes and all(p["phase"] == "bracket" for p in probes)
    for p in probes:  # every load of both arms on the reference's grid
        k = math.log(p["target_qps"] / caps["reference"]) / math.log(1.02)
        assert k == pytest.approx(round(k), abs=1e-6)
    # rounds after the first start where the last ended: a steady capacity costs few probes
    assert sum(len(r["reference"]["probes"]) for r in rounds.rounds[1:]) <= 3 * (out.rounds - 1)
    record = searches_record({}, rounds)
    assert record["rounds"] is rounds.rounds and record["max_probes"] == 6 and record["step"] == 0.02


def test_a_round_without_a_valid_load_fails_the_gate_naming_the_arm() -> None:
    clock = Clock()
    rounds = rounds_of({"reference": 200.0, "candidate": 200.0}, cv=0.0, clock=clock, collapse=(2, 0.5))
    with pytest.raises(GateError) as err:
        run_rounds(rounds.measure, gate_metrics("Server", {CAPACITY_METRIC: 200.0}, searched=True), GATE.plan(),
                   clock=clock)
    message = str(err.value)
    assert message.startswith("round 3: the candidate's capacity search found no VALID load: it tried (QPS) "
                              "200 INVALID, 196.1 INVALID, ")
    assert "from its last capacity 200 QPS down to 181.1 QPS in steps of 2%" in message
    assert "at most 10% from one round to the next" in message
    assert len(rounds.rounds[2]["candidate"]["probes"]) == 6  # kept, as every round's search


def test_the_searched_gate_metric_is_the_capacity() -> None:
    (m,) = gate_metrics("Server", {CAPACITY_METRIC: 123.0, "result_99.00_percentile_latency_ns": 5e6}, searched=True)
    assert (m.name, m.value, m.unit, m.higher_is_better) == (CAPACITY_METRIC, 123.0, "QPS", True)
    assert [g.name for g in gate_metrics("Server", {"result_99.00_percentile_latency_ns": 5e6})] == [
        "result_99.00_percentile_latency_ns"]  # without a search: the tail latency, as before
    with pytest.raises(GateError, match="search found none of the metrics a gate judges"):
        gate_metrics("Server", {}, searched=True)
    with pytest.raises(GateError, match="none for this scenario"):
        gate_metrics("Offline", {CAPACITY_METRIC: 1.0}, searched=True)
