"""The overhead gate: the same runner launched bare (reference) and under an isolation layer (candidate),
measured in interleaved rounds on the same GPU until the statistics of host/gate/stats.py and host/gate/stopping.py decide.

This module is the loop and the verdict, free of pytest and of runners: `run_rounds` takes a `measure(arm, i)`
callable, so the loop is tested with simulated measurements and driven for real by host/gate/driver.py: one short LoadGen
run per arm and round, or under --mlperf-server-search one small capacity search per arm and round
(host/gate/capacity.py), whose capacity is the metric judged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_mlperf.contract import metrics as catalogue
from pytest_mlperf.host.baselines.store import Metric
from pytest_mlperf.host.gate.report import floor_caution
from pytest_mlperf.host.gate.stats import Interval, floor_occupancy
from pytest_mlperf.host.gate.stopping import GatePlan, Verdict, estimator_for, evaluate, look_confidence, round_order

ARMS = ("reference", "candidate")

# The metrics a gate judges per scenario (LoadGen detail-log key, unit, higher is better), derived from the
# catalogue (contract/metrics.py): the headline MLPerf's checker reports, and for latency scenarios the token
# latencies when the workload has them.
GATE_METRICS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    scenario: tuple((m.key, m.unit, m.higher_is_better) for m in catalogue.gate_set(scenario))
    for scenario in catalogue.SCENARIOS
}
# under --mlperf-server-search (host/gate/capacity.py): Server's capacity, each round's searches' (not a LoadGen key)
SEARCHED_GATE_METRICS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    scenario: tuple((m.key, m.unit, m.higher_is_better) for m in catalogue.gate_set(scenario, searched=True))
    for scenario in catalogue.SCENARIOS if catalogue.gate_set(scenario, searched=True)
}
# the scenarios whose gate judges the first of its metrics logged only (Offline: tokens/s is an LLM's headline)
_ONE_OF = {s for s, r in catalogue.ROLES.items() if r.gate_one_of}


class GateError(RuntimeError):
    """A round could not be measured or judged (a metric missing from a run)."""


def gate_metrics(scenario: str, values: Mapping[str, float], *, searched: bool = False) -> list[Metric]:
    """The metrics a gate of this scenario judges, among those the (reference) run logged; `searched`: the gate
    under --mlperf-server-search, whose `values` are the reference's search (its capacity)."""
    table = (SEARCHED_GATE_METRICS if searched else GATE_METRICS).get(scenario, ())
    found = [Metric(key, float(values[key]), unit, higher) for key, unit, higher in table
             if values.get(key) is not None and float(values[key]) > 0]
    if scenario in _ONE_OF:
        found = found[:1]
    if not found:
        what = "search found" if searched else "run logged"
        raise GateError(f"the {scenario} {what} none of the metrics a gate judges "
                        f"({', '.join(k for k, _, _ in table) or 'none for this scenario'})")
    return found


def metric_label(key: str) -> str:
    """A short name for a LoadGen key in messages and reports (the catalogue's label; the key when it has none)."""
    return catalogue.label(key)


@dataclass
class MetricGate:
    """One metric's paired series and, once reached, its verdict."""

    metric: Metric  # as the reference warm-up logged it (name, unit, direction)
    reference: list[float] = field(default_factory=list)
    candidate: list[float] = field(default_factory=list)
    verdict: Verdict | None = None
    interval: Interval | None = None
    estimator: str = "paired"  # how its interval is read from the rounds (stopping.estimator_for)

    def occupancy(self) -> dict[str, float] | None:
        """Under the floor estimator, each arm's share of rounds on its floor (stats.floor_occupancy); else None."""
        if self.estimator != "floor" or not self.reference:
            return None
        higher = self.metric.higher_is_better
        return {"reference": round(floor_occupancy(self.reference, higher), 3),
                "candidate": round(floor_occupancy(self.candidate, higher), 3)}

    def to_dict(self) -> dict[str, Any]:
        iv = self.interval
        return {
            "metric": self.metric.name, "label": metric_label(self.metric.name), "unit": self.metric.unit,
            "higher_is_better": self.metric.higher_is_better,
            "verdict": str(self.verdict) if self.verdict else None,
            "overhead": _num(iv.estimate) if iv else None, "ci_low": _num(iv.low) if iv else None,
            "ci_high": _num(iv.high) if iv else None, "estimator": self.estimator,
            "floor_occupancy": self.occupancy(),
            "reference": list(self.reference), "candidate": list(self.candidate),
        }


def _num(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


@dataclass
class GateOutcome:
    """A case's verdict: the deciding metric's overhead and interval, every metric's series, the cost."""

    verdict: Verdict
    metrics: list[MetricGate]
    rounds: int
    max_overhead: float
    confidence: float
    elapsed_s: float
    order: list[str]
    reference_recipe: str = ""
    candidate_recipe: str = ""
    budget: str = ""  # what ended an INCONCLUSIVE gate (rounds or seconds), for the advice
    outputs: dict[str, Any] | None = None  # accuracy mode: output comparison instead of rounds
    # a capacity gate (host/gate/capacity.py): each arm's searches, {"warmup": {arm: search}, "rounds": [{arm: search}]}
    searches: dict[str, Any] | None = None

    @property
    def deciding(self) -> MetricGate | None:
        """The metric the verdict rests on: a failing one, else an undecided one, else the one nearest the limit."""
        if not self.metrics:
            return None
        for pick in (Verdict.FAIL, Verdict.INCONCLUSIVE):
            chosen = [m for m in self.metrics if m.verdict == pick]
            if chosen:
                return max(chosen, key=lambda m: _high(m))
        return max(self.metrics, key=lambda m: _high(m))

    def to_record(self) -> dict[str, Any]:
        """The results JSON's `gate` entry (fractions: 0.05 is 5%)."""
        d = self.deciding
        doc: dict[str, Any] = {
            "verdict": str(self.verdict), "max_overhead": self.max_overhead, "confidence": self.confidence,
            "rounds": self.rounds, "elapsed_s": round(self.elapsed_s, 3), "order": self.order,
            "reference_recipe": self.reference_recipe, "candidate_recipe": self.candidate_recipe,
        }
        if d is not None:
            head = d.to_dict()
            doc.update(metric=head["metric"], label=head["label"], unit=head["unit"], overhead=head["overhead"],
                       ci_low=head["ci_low"], ci_high=head["ci_high"], reference=head["reference"],
                       candidate=head["candidate"], estimator=head["estimator"])
            if head["floor_occupancy"] is not None:
                doc["floor_occupancy"] = head["floor_occupancy"]
            doc["metrics"] = [m.to_dict() for m in self.metrics]
        if self.outputs is not None:
            doc.update(metric="outputs", label="outputs", outputs=self.outputs)
        if self.budget:
            doc["budget"] = self.budget
        if self.searches is not None:
            doc["searches"] = self.searches
        return doc


def _high(m: MetricGate) -> float:
    return m.interval.high if m.interval is not None and not math.isnan(m.interval.high) else math.inf


def _combine(verdicts: Sequence[Verdict | None], final: bool) -> Verdict | None:
    if Verdict.FAIL in verdicts:
        return Verdict.FAIL
    if all(v == Verdict.PASS for v in verdicts):
        return Verdict.PASS
    return Verdict.INCONCLUSIVE if final else None


def run_rounds(
    measure: Callable[[str, int], Mapping[str, float]],
    metrics: Sequence[Metric],
    plan: GatePlan,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> GateOutcome:
    """Measures rounds (one reference run and one candidate run each, in ABBA order) until every metric is
    decided, one fails, or the plan's budget (rounds, seconds) is spent.

    `measure(arm, round_index)` runs one short LoadGen test of `arm` ("reference" or "candidate") and returns its
    logged metrics. A metric is decided at the plan's looks (stopping.evaluate) and stays decided."""
    gates = [MetricGate(m, estimator=estimator_for(plan, m.higher_is_better)) for m in metrics]
    order = round_order(plan.max_rounds, plan.seed)
    start = clock()
    for i in range(plan.max_rounds):
        values: dict[str, Mapping[str, float]] = {}
        for arm in order[2 * i: 2 * i + 2]:
            values[arm] = measure(arm, i)
        for g in gates:
            for arm, series in (("reference", g.reference), ("candidate", g.candidate)):
                value = values[arm].get(g.metric.name)
                if value is None or not float(value) > 0:
                    raise GateError(f"round {i + 1}: the {arm} run logged no {metric_label(g.metric.name)}")
                series.append(float(value))
        elapsed = clock() - start
        final = False
        for g in gates:
            if g.verdict in (Verdict.PASS, Verdict.FAIL):
                continue
            decision = evaluate(plan, g.reference, g.candidate, higher_is_better=g.metric.higher_is_better,
                                elapsed_s=elapsed)
            if decision is not None:
                g.verdict, g.interval = decision.verdict, decision.interval
                final = final or decision.verdict == Verdict.INCONCLUSIVE
        verdict = _combine([g.verdict for g in gates], final)
        if verdict is not None:
            budget = ""
            if verdict == Verdict.INCONCLUSIVE:
                budget = (f"{plan.max_rounds} rounds" if i + 1 >= plan.max_rounds
                          else f"{plan.max_seconds:.0f} s")
            return GateOutcome(verdict, gates, i + 1, plan.max_overhead, look_confidence(plan), elapsed,
                               order[: 2 * (i + 1)], budget=budget)
    raise AssertionError("stopping.evaluate decides by max_rounds")  # pragma: no cover


def compare_outputs_gate(reference: Mapping[int, Any], candidate: Mapping[int, Any], max_overhead: float,
                         differing: Sequence[int]) -> GateOutcome:
    """Accuracy mode: an isolation layer must not change results; any differing output fails the gate."""
    shown = [int(i) for i in differing[:20]]
    outputs = {"samples": len(reference), "differing": len(differing), "first_differing": shown,
               "candidate_samples": len(candidate)}
    verdict = Verdict.PASS if not differing and len(candidate) == len(reference) else Verdict.FAIL
    return GateOutcome(verdict, [], 1, max_overhead, 1.0, 0.0, list(ARMS), outputs=outputs)


def _pct(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x * 100:+.1f}%"


def describe(outcome: GateOutcome) -> str:
    """One paragraph a user can act on: verdict, overhead, interval, limit, rounds, and what to do."""
    limit = f"{outcome.max_overhead * 100:.1f}%"
    if outcome.outputs is not None:
        o = outcome.outputs
        if outcome.verdict == Verdict.PASS:
            return f"overhead gate PASS: the candidate's {o['samples']} outputs equal the reference's"
        return (f"overhead gate FAIL: the candidate's outputs differ from the reference's on {o['differing']} of "
                f"{o['samples']} samples (first: {o['first_differing']}); an isolation layer must not change results")
    d = outcome.deciding
    assert d is not None
    iv = d.interval
    conf = f"{outcome.confidence:.0%}"
    where = (f"{metric_label(d.metric.name)} overhead {_pct(iv.estimate if iv else None)} "
             f"({conf} interval {_pct(iv.low if iv else None)} to {_pct(iv.high if iv else None)})")
    head = f"overhead gate {outcome.verdict}: {where}, limit {limit}, {outcome.rounds} rounds in {outcome.elapsed_s:.0f} s"
    caution = floor_caution(d.occupancy())
    tail = f". {caution}" if caution else ""
    if outcome.verdict == Verdict.PASS:
        return head + tail
    if outcome.verdict == Verdict.FAIL:
        return head + f": the candidate costs more than {limit} against the reference" + tail
    return (head + f": the interval straddles the limit when the budget ({outcome.budget}) ran out. To decide it, "
            "give the gate more budget (--mlperf-gate-max-rounds, --mlperf-gate-budget) or longer rounds "
            "(--mlperf-gate-round), or steady the GPU (lock its clocks, nothing else running on it)" + tail)
