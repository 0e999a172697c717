"""The Server capacity search (server_search.py) without LoadGen: simulated SUTs whose capacity is known."""

from __future__ import annotations

import heapq
import math
import random
from pathlib import Path

import pytest

from pytest_mlperf.logs import read_run
from pytest_mlperf.server_search import (STATUS_BUDGET, STATUS_FOUND, STATUS_UNBRACKETABLE, STATUS_UNCONFIRMED,
                                         ProbeResult, SearchPlan, probe_verdict, search)

LOGS = Path(__file__).parent / "data" / "mlperf-logs"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def plan(start: float, **kw: object) -> SearchPlan:
    values: dict = dict(start_qps=start, budget_s=600.0, probe_s=2.0, probe_queries=16, confirm_s=10.0,
                        confirm_queries=64)
    values.update(kw)
    return SearchPlan(**values)


class ThresholdSUT:
    """VALID exactly up to `capacity` QPS (at full length up to `confirm_capacity`); each run costs its predicted
    LoadGen time plus `overhead_s` on a fake clock."""

    def __init__(self, capacity: float, clock: FakeClock, p: SearchPlan, *, confirm_capacity: float | None = None,
                 overhead_s: float = 0.5) -> None:
        self.capacity, self.confirm_capacity = capacity, confirm_capacity or capacity
        self.clock, self.plan, self.overhead_s = clock, p, overhead_s
        self.calls: list[tuple[float, str]] = []

    def __call__(self, qps: float, phase: str) -> ProbeResult:
        self.calls.append((qps, phase))
        self.clock.now += self.plan.predicted_s(qps, phase) + self.overhead_s
        limit = self.confirm_capacity if phase == "confirm" else self.capacity
        return ProbeResult(qps <= limit, achieved_qps=min(qps, limit), reasons=() if qps <= limit else ("late",))


def queue_p99_s(qps: float, seconds: float, streams: int, service_s: float, seed: int) -> float:
    """p99 latency of a Server run: Poisson arrivals at `qps` for `seconds` (as LoadGen issues them) served in
    order by `streams` servers that take `service_s` each (a backend with a fixed service time)."""
    rng = random.Random(seed)
    free = [0.0] * streams
    t, latencies = 0.0, []
    while True:
        t += rng.expovariate(qps)
        if t > seconds:
            break
        start = max(t, heapq.heappop(free))
        heapq.heappush(free, start + service_s)
        latencies.append(start + service_s - t)
    latencies.sort()
    return latencies[min(len(latencies) - 1, math.ceil(0.99 * len(latencies)) - 1)]


class QueueSUT:
    """A backend with a fixed service time and a known number of streams, under LoadGen's Poisson load: its capacity
    is streams / service time; a run is VALID when its p99 latency is within the bound."""

    def __init__(self, streams: int, service_s: float, bound_s: float, p: SearchPlan, clock: FakeClock) -> None:
        self.streams, self.service_s, self.bound_s, self.plan, self.clock = streams, service_s, bound_s, p, clock
        self.runs = 0

    @property
    def capacity(self) -> float:
        return self.streams / self.service_s

    def __call__(self, qps: float, phase: str) -> ProbeResult:
        self.runs += 1
        seconds = self.plan.predicted_s(qps, phase)
        self.clock.now += seconds + 0.3
        p99 = queue_p99_s(qps, seconds, self.streams, self.service_s, seed=self.runs)
        return ProbeResult(p99 <= self.bound_s, achieved_qps=qps, p99_ns=p99 * 1e9)


@pytest.mark.parametrize("start", [3.0, 50.0, 137.0, 900.0, 2_000.0])
def test_a_sharp_capacity_is_found_within_precision_in_few_probes(start: float) -> None:
    clock, p = FakeClock(), plan(start)
    sut = ThresholdSUT(137.0, clock, p)
    out = search(sut, p, clock=clock)
    assert out.status == STATUS_FOUND and out.passed
    assert out.capacity_qps is not None and 137.0 / (1 + p.precision) <= out.capacity_qps <= 137.0
    assert out.upper_qps is not None and out.upper_qps > 137.0
    # bracketing: the doublings or halvings to the capacity and one beyond; bisection: halving a factor of 2 down
    # to the precision; one confirmation
    bracketing = math.floor(abs(math.log2(start / 137.0))) + 2
    bisection = math.ceil(math.log2(math.log(2) / math.log(1 + p.precision)))
    assert len(out.probes) <= bracketing + bisection + 1
    assert [pr.phase for pr in out.probes][-1] == "confirm" and out.probes[-1].target_qps == out.capacity_qps
    assert sum(pr.phase == "confirm" for pr in out.probes) == 1
    assert out.elapsed_s == pytest.approx(clock.now)
    record = out.to_record()
    assert record["capacity_qps"] == out.capacity_qps and len(record["probes"]) == len(out.probes)
    assert {"phase", "target_qps", "verdict", "achieved_qps", "p99_ns", "log_dir", "seconds"} <= set(record["probes"][0])
    assert "server capacity" in out.describe()


@pytest.mark.parametrize("streams, service_ms", [(4, 1.0), (8, 4.0), (2, 0.5)])
def test_a_fixed_service_time_backend_capacity_is_found_within_5_percent(streams: int, service_ms: float) -> None:
    """Under Poisson arrivals, a backend with `streams` streams of a fixed service time serves streams / service
    QPS; with probes long enough to see an overload of a few percent grow past the bound, the search finds it."""
    clock = FakeClock()
    capacity = streams / (service_ms / 1000)
    p = plan(capacity / 2, probe_s=4000 / capacity, probe_queries=16, confirm_s=20_000 / capacity)
    bound = 0.025 * p.probe_s + service_ms / 1000  # an overload of 5% outgrows it within a probe
    sut = QueueSUT(streams, service_ms / 1000, bound, p, clock)
    out = search(sut, p, clock=clock)
    assert out.passed, out.describe()
    assert out.capacity_qps == pytest.approx(sut.capacity, rel=0.05), out.describe()
    assert len(out.probes) <= 14


def test_a_confirmation_invalid_at_full_length_steps_down() -> None:
    clock, p = FakeClock(), plan(40.0)
    sut = ThresholdSUT(100.0, clock, p, confirm_capacity=90.0)  # short probes hide a slow overload
    out = search(sut, p, clock=clock)
    confirms = [pr for pr in out.probes if pr.phase == "confirm"]
    assert len(confirms) >= 2 and not confirms[0].result.valid and confirms[-1].result.valid
    assert out.status == STATUS_FOUND and out.capacity_qps is not None and out.capacity_qps <= 90.0
    # steps down by 3%, then 6%, 12%, then bisects at full length between the VALID and the INVALID confirmation
    assert out.capacity_qps >= 90.0 / (1 + p.precision)
    assert out.capacity_probe is not None and out.capacity_probe.phase == "confirm"


def test_every_load_invalid_is_unbracketable_and_says_what_was_tried() -> None:
    clock, p = FakeClock(), plan(64.0)
    sut = ThresholdSUT(0.0, clock, p)
    out = search(sut, p, clock=clock)
    assert out.status == STATUS_UNBRACKETABLE and not out.passed and out.capacity_qps is None
    assert len(out.probes) == p.max_halvings + 1  # start, then halvings down to start / 2**4
    assert [pr.target_qps for pr in out.probes] == [64.0 / 2 ** k for k in range(p.max_halvings + 1)]
    message = out.describe()
    assert "could not bracket" in message and "down to 4 QPS" in message and "64 INVALID" in message
    assert "--mlperf-user-conf" in message and "--mlperf-batch-size" in message


@pytest.mark.parametrize("budget", [5.0, 20.0, 40.0, 80.0, 200.0])
def test_the_search_ends_within_its_budget_and_says_so(budget: float) -> None:
    clock, p = FakeClock(), plan(10.0, budget_s=budget)
    sut = ThresholdSUT(1000.0, clock, p)
    out = search(sut, p, clock=clock)
    assert clock.now <= budget
    if out.status == STATUS_FOUND:
        assert 1000.0 / (1 + p.precision) <= out.capacity_qps <= 1000.0
        return
    assert out.status in (STATUS_BUDGET, STATUS_UNCONFIRMED), out.status
    message = out.describe()
    assert "--mlperf-server-search-budget" in message
    if out.status == STATUS_BUDGET:  # confirmed at a load below the capacity: a lower bound, said as such
        assert out.capacity_qps is not None and out.capacity_qps <= 1000.0 and "at least" in message
    else:
        assert out.capacity_qps is None
        if out.best_valid_qps is not None:
            assert f"{out.best_valid_qps:.4g} QPS" in message


def test_the_first_probe_may_be_the_calibrating_run() -> None:
    clock, p = FakeClock(), plan(50.0)
    sut = ThresholdSUT(137.0, clock, p)
    clock.now = 3.0
    out = search(sut, p, first=(ProbeResult(True, 50.0), 3.0), clock=clock)
    assert sut.calls[0] == (100.0, "bracket")  # the start was not run again
    assert out.probes[0].target_qps == 50.0 and out.probes[0].seconds == 3.0
    assert out.status == STATUS_FOUND and out.elapsed_s == pytest.approx(clock.now)


def test_the_probe_count_is_bounded() -> None:
    clock, p = FakeClock(), plan(1.0, max_probes=5)
    sut = ThresholdSUT(1e9, clock, p, overhead_s=0.0)  # never INVALID
    out = search(sut, p, clock=clock)
    assert sum(pr.phase != "confirm" for pr in out.probes) == 5
    assert out.status == STATUS_BUDGET and out.upper_qps is None and "5 probes" in out.why
    assert "no INVALID load found above it" in out.describe()


def test_bad_plans_are_refused() -> None:
    with pytest.raises(ValueError, match="positive starting QPS"):
        plan(0.0)
    with pytest.raises(ValueError, match="growth"):
        plan(1.0, growth=1.0)


def test_probe_verdict_reads_the_latency_bound_from_loadgen_logs() -> None:
    (llm_invalid,) = [p for p in LOGS.iterdir() if p.name.startswith("07")]
    (resnet_valid,) = [p for p in LOGS.iterdir() if p.name.startswith("02")]
    (llm_valid,) = [p for p in LOGS.iterdir() if p.name.startswith("05")]
    bad = probe_verdict(read_run(llm_invalid))  # an LLM's bound is TTFT/TPOT
    assert not bad.valid and any("TTFT" in r for r in bad.reasons)
    assert not any("Early stopping" in r for r in bad.reasons)
    good = probe_verdict(read_run(resnet_valid))
    assert good.valid and good.achieved_qps and good.p99_ns
    llm = probe_verdict(read_run(llm_valid))
    assert llm.valid and llm.p99_ns == read_run(llm_valid).ttft_ns.p99
