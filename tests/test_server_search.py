"""The Server capacity search (host/driver/server_search.py) without LoadGen: simulated SUTs whose capacity is known."""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_mlperf.contract.loadgen_log import read_run
from pytest_mlperf.host.driver.server_search import (STATUS_BUDGET, STATUS_FOUND, STATUS_UNBRACKETABLE, STATUS_UNCONFIRMED,
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


def loadgen_s(p: SearchPlan, qps: float, phase: str, duration_s: float | None) -> float:
    """How long a simulated LoadGen test at `qps` runs: its min duration, or its min queries at the load."""
    duration = duration_s if duration_s is not None else p.duration_s(phase)
    return max(duration, (p.confirm_queries if phase == "confirm" else p.probe_queries) / qps)


class ThresholdSUT:
    """VALID exactly up to `capacity` QPS (at full length up to `confirm_capacity`); each run costs its predicted
    LoadGen time plus `overhead_s` on a fake clock."""

    def __init__(self, capacity: float, clock: FakeClock, p: SearchPlan, *, confirm_capacity: float | None = None,
                 overhead_s: float = 0.5) -> None:
        self.capacity, self.confirm_capacity = capacity, confirm_capacity or capacity
        self.clock, self.plan, self.overhead_s = clock, p, overhead_s
        self.calls: list[tuple[float, str]] = []

    def __call__(self, qps: float, phase: str, duration_s: float | None = None) -> ProbeResult:
        self.calls.append((qps, phase))
        self.clock.now += loadgen_s(self.plan, qps, phase, duration_s) + self.overhead_s
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

    def __call__(self, qps: float, phase: str, duration_s: float | None = None) -> ProbeResult:
        self.runs += 1
        seconds = loadgen_s(self.plan, qps, phase, duration_s)
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


def test_the_budget_does_not_count_the_first_runs_start_up() -> None:
    """The first probe's runner start, engine start and calibration (136 s of 140 s for vLLM on a GPU) are one-offs:
    the budget counts its LoadGen seconds only, and the record says how long the start-up took."""
    clock, p = FakeClock(), plan(50.0, budget_s=60.0)
    sut = ThresholdSUT(137.0, clock, p)
    clock.now = 140.0  # the first run: 2 s of LoadGen after 138 s of start-up
    out = search(sut, p, first=(ProbeResult(True, 50.0), 2.0), startup_s=138.0, clock=clock)
    assert out.status == STATUS_FOUND, out.describe()
    assert out.elapsed_s == pytest.approx(clock.now - 138.0) and out.elapsed_s <= p.budget_s
    assert out.probes[0].seconds == 2.0
    record = out.to_record()
    assert record["startup_s"] == 138.0 and "138 s of start-up" in record["message"]


def test_no_probe_above_the_ceiling_and_a_valid_one_there_ends_bracketing() -> None:
    """A Server run cannot complete more than the SUT's throughput: bracketing stops growing at `max_qps`, and a
    VALID probe there is confirmed with no INVALID load above it."""
    clock, p = FakeClock(), plan(30.0, max_qps=100.0)
    sut = ThresholdSUT(1e9, clock, p)  # short probes VALID at any load
    out = search(sut, p, clock=clock)
    assert [q for q, _ in sut.calls] == [30.0, 60.0, 100.0, 100.0] and sut.calls[-1][1] == "confirm"
    assert out.status == STATUS_FOUND and out.capacity_qps == 100.0 and out.upper_qps is None
    assert "ceiling" in out.describe() and out.to_record()["max_qps"] == 100.0
    # without a ceiling: today's doubling
    clock, p = FakeClock(), plan(30.0)
    sut = ThresholdSUT(200.0, clock, p)
    search(sut, p, clock=clock)
    assert sut.calls[:3] == [(30.0, "bracket"), (60.0, "bracket"), (120.0, "bracket")]


def test_probes_last_a_multiple_of_the_longest_query_latency_capped_by_the_confirmation() -> None:
    clock, p = FakeClock(), plan(10.0, probe_s=2.0, confirm_s=20.0, max_qps=80.0)
    asked: list[tuple[float, str, float]] = []
    latency = {10.0: 1.0, 20.0: 1.5, 40.0: 3.0, 80.0: 6.0}  # p99 query latency (s) per load

    def sut(qps: float, phase: str, duration_s: float) -> ProbeResult:
        asked.append((qps, phase, duration_s))
        clock.now += loadgen_s(p, qps, phase, duration_s)
        return ProbeResult(qps <= 40.0, qps, latency_p99_ns=latency.get(qps, 3.0) * 1e9, scheduled_qps=qps)

    out = search(sut, p, clock=clock)
    durations = [d for _, phase, d in asked if phase != "confirm"]
    assert durations[:4] == [2.0, 5.0, 7.5, 15.0]  # the start's probe_s, then 5 x the longest p99 so far
    assert all(d == 20.0 for d in durations[4:])  # 5 x 6 s, capped by the confirmation's 20 s
    assert [d for _, phase, d in asked if phase == "confirm"] == [20.0]
    assert p.predicted_s(20.0, "bisect", 1.5) == 7.5  # the budget predicts the same length
    assert out.probes[1].to_record()["duration_s"] == 5.0
    assert out.elapsed_s == pytest.approx(clock.now)


def test_a_probe_that_does_not_keep_up_is_invalid_but_a_confirmation_is_loadgens_to_judge() -> None:
    p = plan(10.0, probe_s=4.0)
    kept = ProbeResult(True, achieved_qps=80.0, latency_p99_ns=1e9, scheduled_qps=100.0)  # 100 x 4 / 5 = 80
    assert p.keeps_up(100.0, "bracket", kept, 4.0) is None
    behind = replace(kept, achieved_qps=60.0)  # 75% of it
    why = p.keeps_up(100.0, "bisect", behind, 4.0)
    assert why is not None and why.startswith("overloaded: completed 60 of 100 QPS")
    assert p.keeps_up(100.0, "confirm", behind, 4.0) is None
    # the issue time is the min duration, or the min queries at the load if longer: 16 / 2 QPS = 8 s
    slow = ProbeResult(True, achieved_qps=1.7, latency_p99_ns=1e9, scheduled_qps=2.0)
    assert p.keeps_up(2.0, "bracket", slow, 4.0) is None  # 2 x 8 / 9 = 1.78

    clock = FakeClock()
    p = plan(20.0, max_qps=100.0)

    def sut(qps: float, phase: str, duration_s: float) -> ProbeResult:  # latency bound always met
        clock.now += loadgen_s(p, qps, phase, duration_s)
        done = min(qps, 50.0) * duration_s / (duration_s + 0.1)
        return ProbeResult(True, done, latency_p99_ns=0.1e9, scheduled_qps=qps)

    out = search(sut, p, clock=clock)
    # found within the rule's 10% of slack: VALID up to 50 / 0.9 QPS, where a third of the load is left behind
    assert out.passed and out.capacity_qps is not None and 50.0 <= out.capacity_qps <= 50.0 / 0.9, out.describe()
    flagged = [pr for pr in out.probes if not pr.result.valid]
    assert flagged and all(pr.result.reasons[-1].startswith("overloaded") for pr in flagged)
    assert all(pr.result.valid for pr in out.probes if pr.phase == "confirm")


class LLMServingSUT:
    """The GPU run's pattern (vLLM, an 8B LLM, ci profile): queries take ~1.1 s, the SUT completes 44 a second; a
    load above that grows a backlog of (load - 44) x time; TTFT shows it only once the backlog is over ~1.2 s of
    work (the engine admits that much into its running batch), so a 2.5 s probe at twice the throughput is VALID
    (TTFT p99 ~1.3 s against a 2 s bound) while a 10 s run there is not (~8 s). Each run costs its LoadGen time (the
    backlog drains before LoadGen ends) plus 3 s of runner round trip (the GPU run: 6 to 7 s per 2.5 s probe)."""

    def __init__(self, p: SearchPlan, clock: FakeClock, throughput: float = 44.0, query_s: float = 1.1) -> None:
        self.plan, self.clock, self.throughput, self.query_s = p, clock, throughput, query_s
        self.calls: list[tuple[float, str, float]] = []

    def measure(self, qps: float, phase: str, duration_s: float) -> tuple[ProbeResult, float]:
        issue_s = loadgen_s(self.plan, qps, phase, duration_s)
        queued_s = max(0.0, qps - self.throughput) * issue_s / self.throughput  # the last query's wait
        ttft = 0.1 + max(0.0, 0.99 * queued_s - 1.2)
        done_s = max(issue_s, qps * issue_s / self.throughput) + self.query_s
        reasons = () if ttft <= 2.0 else ("TTFT",)
        return ProbeResult(not reasons, qps * issue_s / done_s, ttft * 1e9, reasons,
                           latency_p99_ns=(self.query_s + 0.99 * queued_s) * 1e9, scheduled_qps=qps), done_s

    def __call__(self, qps: float, phase: str, duration_s: float | None = None) -> ProbeResult:
        duration = duration_s if duration_s is not None else self.plan.duration_s(phase)
        self.calls.append((qps, phase, duration))
        result, seconds = self.measure(qps, phase, duration)
        self.clock.now += seconds + 3.0
        return result


@pytest.mark.parametrize("ceiling", [True, False])
def test_the_gpu_pattern_finds_a_capacity_the_sut_can_complete_within_a_budget_after_start_up(ceiling: bool) -> None:
    """Start 21.9 QPS (the calibration's half of its bare 44.3 samples/s), probes 2.5 s, confirmation 10 s, 170 s of
    budget after a 140 s first run. Before: 2.5 s probes VALID at 87.6 QPS, the start-up spent the budget, no
    capacity. Now: probes long enough to see a queue (or none above 1.2 x 44.3), a confirmed capacity."""
    clock = FakeClock()
    bare = 44.3
    p = plan(21.9, budget_s=170.0, probe_s=2.5, probe_queries=16, confirm_s=10.0, confirm_queries=64,
             max_qps=bare * 1.2 if ceiling else None)
    sut = LLMServingSUT(p, clock)
    first, loadgen = sut.measure(21.9, "bracket", 2.5)
    clock.now = 140.4  # runner start, model load, 79 s of engine start, 25 s of calibration, and its LoadGen test
    out = search(sut, p, first=(first, loadgen), startup_s=140.4 - loadgen, clock=clock)
    assert out.passed and out.capacity_qps is not None, out.describe()
    assert out.capacity_probe is not None and out.capacity_probe.phase == "confirm"
    assert out.elapsed_s <= p.budget_s and out.to_record()["startup_s"] == pytest.approx(140.4 - loadgen)
    if ceiling:  # no load above what the SUT completes, with the margin: the ceiling VALID, confirmed
        assert out.capacity_qps <= bare * 1.2 * (1 + 1e-9), out.describe()
        assert all(q <= bare * 1.2 * (1 + 1e-9) for q, _, _ in sut.calls)
    else:  # no ceiling: twice the throughput is probed, but long enough for its queue to break the TTFT bound;
        # the capacity is what a 10 s run at full length passes (here a 1.2 s admission plus 2 s of TTFT bound
        # tolerate 30% of overload for 10 s), not the 87.6 QPS a 2.5 s probe passed
        (double,) = [pr for pr in out.probes if pr.target_qps == pytest.approx(87.6)]
        assert not double.result.valid and double.result.reasons == ("TTFT",)
        assert out.capacity_qps <= bare * 1.3, out.describe()
    # probes after the first last 5 x the longest query latency seen: past the 1.1 s a query takes
    assert all(d >= 5.5 for _, phase, d in sut.calls if phase != "confirm")
