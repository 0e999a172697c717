"""The overhead gate's loop, verdicts and reports, on simulated rounds (no runner): host/gate/loop.py, host/gate/report.py,
and the synthetic layer of slowdown.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pytest_mlperf.host.gate import report as gate_report
from pytest_mlperf.host.baselines.store import Metric
from pytest_mlperf.host.gate.loop import (
    GateError,
    compare_outputs_gate,
    describe,
    gate_metrics,
    run_rounds,
)
from pytest_mlperf.slowdown import SlowedBackend, nap, parse_cost, spin
from pytest_mlperf.host.gate.stopping import GatePlan, Verdict

THROUGHPUT = Metric("result_samples_per_second", 1000.0, "samples/s", True)
P90 = Metric("result_90.00_percentile_latency_ns", 2e6, "ns", False)


class Simulated:
    """Rounds with a known overhead and lognormal noise; a fake clock of `round_s` per run."""

    def __init__(self, overhead: float, cv: float, seed: int = 1, round_s: float = 1.0) -> None:
        self.overhead, self.cv = overhead, cv
        self.rng = np.random.default_rng(seed)
        self.now = 0.0
        self.round_s = round_s
        self.calls: list[tuple[str, int]] = []

    def clock(self) -> float:
        return self.now

    def measure(self, arm: str, i: int) -> dict[str, float]:
        self.calls.append((arm, i))
        self.now += self.round_s
        noise = math.exp(self.rng.normal(0, self.cv))
        cand = arm == "candidate"
        return {
            THROUGHPUT.name: 1000.0 * noise * ((1 - self.overhead) if cand else 1.0),
            P90.name: 2e6 * noise * ((1 + self.overhead) if cand else 1.0),
        }


@pytest.mark.parametrize("overhead, verdict", [(0.0, Verdict.PASS), (0.12, Verdict.FAIL)])
def test_clear_cases_decide_at_the_first_look(overhead: float, verdict: Verdict) -> None:
    sim = Simulated(overhead, cv=0.01)
    out = run_rounds(sim.measure, [THROUGHPUT, P90], GatePlan(), clock=sim.clock)
    assert out.verdict == verdict
    assert out.rounds == 12  # the plan's first look
    d = out.deciding
    assert d is not None and d.interval is not None
    assert abs(d.interval.estimate - overhead) < 0.01
    assert len(d.reference) == len(d.candidate) == 12


def test_rounds_alternate_arms_and_each_round_has_both() -> None:
    sim = Simulated(0.0, cv=0.01)
    run_rounds(sim.measure, [THROUGHPUT], GatePlan(), clock=sim.clock)
    firsts = [sim.calls[2 * i][0] for i in range(12)]
    assert all(sorted(a for a, _ in sim.calls[2 * i:2 * i + 2]) == ["candidate", "reference"] for i in range(12))
    assert firsts[0::2] != firsts[1::2] and len(set(firsts[0::2])) == 1  # ABBA: the first arm alternates


def test_at_the_limit_the_budget_runs_out_inconclusive() -> None:
    sim = Simulated(0.05, cv=0.02)
    plan = GatePlan(min_rounds=6, max_rounds=12)
    out = run_rounds(sim.measure, [THROUGHPUT], plan, clock=sim.clock)
    assert out.verdict == Verdict.INCONCLUSIVE
    assert out.rounds == 12 and out.budget == "12 rounds"
    text = describe(out)
    assert "INCONCLUSIVE" in text and "--mlperf-gate-max-rounds" in text and "limit 5.0%" in text


def test_time_budget_ends_the_gate_early() -> None:
    sim = Simulated(0.05, cv=0.02, round_s=10.0)
    out = run_rounds(sim.measure, [THROUGHPUT], GatePlan(max_seconds=150.0), clock=sim.clock)
    assert out.verdict == Verdict.INCONCLUSIVE
    assert out.rounds == 8  # 8 rounds = 16 runs of 10 s: past 150 s
    assert out.budget == "150 s"


def test_one_failing_metric_fails_the_case_and_stops() -> None:
    def measure(arm: str, i: int) -> dict[str, float]:
        cand = arm == "candidate"
        jitter = 1 + 0.001 * (i % 3)
        return {THROUGHPUT.name: 1000.0 * jitter, P90.name: 2e6 * jitter * (1.3 if cand else 1.0)}

    out = run_rounds(measure, [THROUGHPUT, P90], GatePlan())
    assert out.verdict == Verdict.FAIL
    assert out.deciding is not None and out.deciding.metric.name == P90.name
    by_name = {m.metric.name: m.verdict for m in out.metrics}
    assert by_name == {THROUGHPUT.name: Verdict.PASS, P90.name: Verdict.FAIL}


def test_a_round_missing_a_metric_is_an_error_that_names_it() -> None:
    def measure(arm: str, i: int) -> dict[str, float]:
        return {THROUGHPUT.name: 100.0} if arm == "reference" or i < 2 else {}

    with pytest.raises(GateError, match="round 3: the candidate run logged no samples/s"):
        run_rounds(measure, [THROUGHPUT], GatePlan())


def test_gate_metrics_per_scenario() -> None:
    assert [m.name for m in gate_metrics("Offline", {"result_samples_per_second": 5.0,
                                                     "result_tokens_per_second": 50.0})] == ["result_tokens_per_second"]
    server = gate_metrics("Server", {"result_99.00_percentile_latency_ns": 1e7,
                                     "result_completed_samples_per_sec": 10.0})
    assert [(m.name, m.higher_is_better) for m in server] == [("result_99.00_percentile_latency_ns", False)]
    llm = gate_metrics("Server", {"result_99.00_percentile_latency_ns": 1e9,
                                  "result_first_token_99.00_percentile_latency_ns": 1e8,
                                  "result_time_per_output_token_99.00_percentile_ns": 1e7})
    assert len(llm) == 3
    with pytest.raises(GateError, match="none of the metrics"):
        gate_metrics("MultiStream", {"result_samples_per_second": 3.0})


def test_output_comparison_gate() -> None:
    same = compare_outputs_gate({1: 3, 2: 4}, {1: 3, 2: 4}, 0.05, [])
    assert same.verdict == Verdict.PASS and "outputs equal" in describe(same)
    differ = compare_outputs_gate({1: 3, 2: 4}, {1: 3, 2: 5}, 0.05, [2])
    assert differ.verdict == Verdict.FAIL
    assert "differ from the reference's on 1 of 2 samples (first: [2])" in describe(differ)
    assert differ.to_record()["outputs"]["differing"] == 1


def test_record_carries_fractions_and_series() -> None:
    sim = Simulated(0.10, cv=0.005)
    out = run_rounds(sim.measure, [THROUGHPUT], GatePlan(), clock=sim.clock)
    rec = json.loads(json.dumps(out.to_record()))  # JSON-safe
    assert rec["verdict"] == "FAIL" and rec["metric"] == THROUGHPUT.name
    assert rec["ci_low"] < rec["overhead"] < rec["ci_high"]
    assert 0.08 < rec["overhead"] < 0.12
    assert len(rec["reference"]) == len(rec["candidate"]) == rec["rounds"]
    assert rec["max_overhead"] == 0.05 and rec["confidence"] == pytest.approx(0.99)


def _record(verdict: str, overhead: float, low: float, high: float, scenario: str = "Offline") -> dict:
    return {
        "nodeid": f"b.py::t[{scenario}]", "key": {"workload": "resnet50", "scenario": scenario, "mode": "performance"},
        "gate": {"verdict": verdict, "metric": "result_samples_per_second", "label": "samples/s",
                 "unit": "samples/s", "overhead": overhead, "ci_low": low, "ci_high": high, "rounds": 12,
                 "elapsed_s": 30.0, "max_overhead": 0.05, "confidence": 0.99, "reference": [3500.0, 3510.0],
                 "candidate": [3325.0, 3330.0], "reference_recipe": "(plain)",
                 "candidate_recipe": "gpu-proxy run --"},
    }


def test_markdown_summary_reads_alone() -> None:
    md = gate_report.markdown_summary([_record("PASS", 0.01, -0.01, 0.03),
                                       _record("FAIL", 0.07, 0.06, 0.08, "SingleStream"),
                                       {"nodeid": "x", "key": {}}])
    assert md.startswith("## Overhead gate: ❌ FAIL")
    assert "1 of 2 case(s) pass" in md
    assert "| resnet50 Offline performance | samples/s | 3,505.0 samples/s | 3,327.5 samples/s " \
           "| +1.0% [-1.0%, +3.0%] | 5.0% | ✅ PASS | 12 |" in md
    assert "candidate: `gpu-proxy run --`" in md
    assert "INCONCLUSIVE: the budget ran out first" in md
    assert gate_report.markdown_summary([{"nodeid": "x", "key": {}}]) == ""


def test_chart_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "gate.png"
    assert gate_report.write_chart([_record("PASS", 0.01, -0.01, 0.03)], path) is None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_terminal_line() -> None:
    (line,) = gate_report.terminal_lines([_record("FAIL", 0.07, 0.06, 0.08)])
    assert line == ("gate: b.py::t[Offline]: FAIL samples/s overhead +7.0% [+6.0%, +8.0%] "
                    "(limit 5.0%, 12 rounds, 30 s)")


# --- the synthetic layer ------------------------------------------------------------------------------------------


class SpinBackend:
    from pytest_mlperf.runner.backends.base import BackendInfo

    info = BackendInfo(backend="spin", device="cpu", precision="none")

    def infer(self, indices: list[int]) -> list[int]:
        spin(0.002)
        return indices


class FakeClock:
    """Time that moves only when told: a backend call of known length, waits that take exactly what they are asked
    (what a machine under load cannot promise a wall clock)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


class TimedBackend:
    from pytest_mlperf.runner.backends.base import BackendInfo

    info = BackendInfo(backend="timed", device="cpu", precision="none")

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        self.clock, self.seconds = clock, seconds

    def infer(self, indices: list[int]) -> list[int]:
        self.clock.now += self.seconds
        return indices

    def other(self) -> str:
        return "not a backend call"


@pytest.mark.parametrize("cost, per_call_s", [(0.25, 0.0), (0.07, 0.0), (0.0, 50e-6), (0.25, 50e-6)])
def test_slowed_backend_costs_what_it_says(cost: float, per_call_s: float) -> None:
    clock = FakeClock()
    inner = TimedBackend(clock, 0.002)
    slowed = SlowedBackend(inner, ratio=cost / (1 - cost), per_call_s=per_call_s, wait=clock.wait, clock=clock)
    assert slowed.info.backend == "timed"
    for _ in range(3):
        start = clock()
        assert slowed.infer([4]) == [4]
        assert clock() - start == pytest.approx(0.002 / (1 - cost) + per_call_s, rel=1e-9)
    assert slowed.other() == "not a backend call" and len(clock.waits) == 3  # only backend calls are slowed


def test_slowed_backend_describes_itself_and_waits_by_spinning_unless_told() -> None:
    inner = TimedBackend(FakeClock(), 0.0)
    assert SlowedBackend(inner, ratio=0.25 / 0.75, per_call_s=0.0).info.details["slowdown"] == \
        "ratio=0.333333 per_call_us=0"
    assert SlowedBackend(inner, ratio=0.5, per_call_s=1e-5, wait=nap).info.details["slowdown"] == \
        "ratio=0.5 per_call_us=10 wait=nap"
    spin(0.0)
    nap(0.0)
    nap(-1.0)  # a negative wait is none


def test_parse_cost() -> None:
    assert parse_cost("7%") == pytest.approx(0.07)
    assert parse_cost("0") == 0.0
    for bad in ("100%", "-1%", "x"):
        with pytest.raises(Exception, match="cost"):
            parse_cost(bad)


def test_a_gpu_plan_reads_latency_by_the_floor_and_says_so_in_the_record() -> None:
    """The H200 pattern (issue 14): each arm has stretches of slow rounds of its own; the floor reads the truth."""
    def measure(arm: str, i: int) -> dict[str, float]:
        slow = 1.12 if (arm == "candidate" and 4 <= i < 10) else 1.0
        return {THROUGHPUT.name: 1000.0 / slow, P90.name: 7e5 * slow * (1 + 0.001 * (i % 3))}

    out = run_rounds(measure, [THROUGHPUT, P90], GatePlan(estimator="floor-latency"))
    record = out.to_record()
    by_metric = {m["metric"]: m for m in record["metrics"]}
    assert by_metric[P90.name]["estimator"] == "floor"
    assert by_metric[THROUGHPUT.name]["estimator"] == "paired"
    assert abs(by_metric[P90.name]["overhead"]) < 0.005
    assert record["estimator"] in ("floor", "paired")


def _two_level(floor_share: float, overhead: float, seed: int):
    """The H200's SingleStream rounds (docs/performance.md, session 17): each arm's round p90 on a floor with 1%
    noise, or 12% above it in a slow state, with probability 1 - floor_share, independently per arm and round."""
    rng = np.random.default_rng(seed)

    def measure(arm: str, i: int) -> dict[str, float]:
        slow = 1.12 if rng.random() > floor_share else 1.0
        cost = 1 + overhead if arm == "candidate" else 1.0
        return {P90.name: 3.35e5 * slow * cost * math.exp(rng.normal(0, 0.01))}

    return measure


def test_a_gate_whose_rounds_rarely_sit_on_their_floor_says_its_estimate_may_be_off() -> None:
    """The launch probe's pattern: 15% of rounds on the floor, so the best quarter mixes in slow rounds."""
    plan = GatePlan(estimator="floor", min_rounds=60, max_rounds=60, n_looks=1)
    out = run_rounds(_two_level(0.15, 0.07, seed=4), [P90], plan)
    record = json.loads(json.dumps(out.to_record()))
    occupancy = record["floor_occupancy"]
    assert set(occupancy) == {"reference", "candidate"} and max(occupancy.values()) < 0.25
    assert record["metrics"][0]["floor_occupancy"] == occupancy
    caution = gate_report.floor_caution(record["floor_occupancy"])
    assert caution is not None and "of the reference's and" in caution and "of the candidate's rounds" in caution
    assert "slow state" in caution and "within 5% of their arm's best" in caution
    lines = gate_report.terminal_lines([{"nodeid": "b.py::t", "gate": record}])
    assert len(lines) == 2 and lines[1] == f"  {caution}"
    assert caution in describe(out)
    key = {"workload": "gpu-probe", "scenario": "SingleStream", "mode": "performance"}
    md = gate_report.markdown_summary([{"nodeid": "b.py::t", "key": key, "gate": record}])
    assert f"⚠️ gpu-probe SingleStream performance: {caution}" in md


def test_a_gate_on_its_floor_half_the_time_needs_no_caution_and_paired_gates_carry_none() -> None:
    """The copy probes' pattern on session 17's machines: 30-90% of rounds on the floor."""
    plan = GatePlan(estimator="floor", min_rounds=60, max_rounds=60, n_looks=1)
    out = run_rounds(_two_level(0.6, 0.07, seed=5), [P90], plan)
    record = out.to_record()
    assert min(record["floor_occupancy"].values()) > 0.4
    assert gate_report.floor_caution(record["floor_occupancy"]) is None
    assert "Caution" not in describe(out)
    assert abs(out.deciding.interval.estimate - 0.07) < 0.015
    paired = run_rounds(_two_level(0.6, 0.07, seed=5), [P90], GatePlan(estimator="paired")).to_record()
    assert "floor_occupancy" not in paired and paired["metrics"][0]["floor_occupancy"] is None
    assert gate_report.floor_caution(paired.get("floor_occupancy")) is None
