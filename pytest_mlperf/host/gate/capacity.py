"""The overhead gate on Server capacity: `--mlperf-server-search` under a candidate recipe (issue 13).

Baselines of a searched Server case compare its capacity; so does the gate. host/driver/search.py drives it
(`LoadGenDriver.capacity_gate_run`); this module is its planning and its `measure`, free of pytest and runners:

* warm-up: the reference runs one full capacity search (as a case without the gate: its first probe calibrates,
  short probes, a confirmation at full length), then the candidate one from the reference's capacity. They give
  each arm its starting capacity and warm both runners; the reference's first probe fixes the test (its latency
  bound) that every later run of both arms repeats but for its target QPS and length, and the reference's capacity
  anchors the rounds' load grid.
* rounds (`gate.run_rounds`, its order and statistics unchanged): each arm runs one small search (`round_plan`)
  from its latest capacity: short probes only, no confirmation, the round's capacity its highest VALID load. A
  round's value per arm is `{CAPACITY_METRIC: capacity}`, so the paired rounds, the interval and the verdict
  against --mlperf-max-overhead are the gate's own. A round that finds no VALID load for an arm fails the gate
  (GateError naming the arm and the loads it tried).

Every round load lies on one grid, the reference's warm-up capacity times (1 + ROUND_STEP)**k: the two arms'
capacities are quantised alike, so an A/A gate compares like with like instead of two grids offset by up to a step
(which would be a bias of up to a step in every round). Every round probe lasts the same for both arms
(`round_probe_s`), since a longer probe finds a lower capacity (a queue has longer to grow).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pytest_mlperf.host.driver.server_search import CAPACITY_METRIC, SearchOutcome, SearchPlan
from pytest_mlperf.host.gate.loop import GateError
from pytest_mlperf.host.settings import GateSettings

# A round's search per arm: the first probe at the arm's latest capacity, then steps of ROUND_STEP up while VALID or
# down while INVALID, ROUND_PROBES probes at most; the bracket is then one step wide, so there is no bisection.
# 2%: under half the default limit (5%), so that a step's quantisation (uniform, sd 0.6%) stays below the per-run
# noise the gate's plan was simulated for (cv 2%: docs/gate-statistics.md), and a capacity that holds still costs
# about 2 probes a round (one VALID, one INVALID a step above, or the reverse). 6 probes: a capacity may move
# 1.02**5 - 1 = 10% from one round to the next and still be followed, five times the gate's noise; moving up
# further, the round's capacity is its highest VALID load (a lower bound, the next round goes on from it); moving
# down further, no VALID load: the gate fails, naming the arm and what it tried. So a round costs at most
# 2 x 6 probes of `round_probe_s` each (the cost of the gate: about 2 to 3 probes per arm and round).
ROUND_STEP = 0.02
ROUND_PROBES = 6
# the seconds budget of a round's search per arm: its probes' predicted time twice over (a run's overrun, reading
# the logs, a queue draining), and at least its share of the gate's budget (--mlperf-gate-budget over the
# --mlperf-gate-min-rounds rounds of its first look, half per arm): the probe count is what bounds a round
ROUND_SLACK = 2.0


def on_grid(qps: float, anchor_qps: float, step: float = ROUND_STEP) -> float:
    """`qps` moved to the nearest load of the grid anchor_qps * (1 + step)**k (k a whole number)."""
    k = round(math.log(qps / anchor_qps) / math.log1p(step))
    return anchor_qps * (1 + step) ** k


def round_probe_s(round_s: float, latency_s: float | None, confirm_s: float) -> float:
    """How long every round probe of both arms lasts: the gate's round length (--mlperf-gate-round), and at least
    the search's multiple (SearchPlan.latency_factor) of the longest p99 query latency the warm-up searches saw, at
    most the case's full length (as a search's probes: an overload needs the time to grow a queue). In whole
    milliseconds, as LoadGen counts a run's min duration."""
    if not latency_s:
        return round(round_s, 3)
    return round(max(round_s, min(SearchPlan.latency_factor * latency_s, confirm_s)), 3)


@dataclass(frozen=True)
class RoundSetup:
    """What every round's search shares, fixed by the warm-up."""

    anchor_qps: float  # the reference's warm-up capacity: every round load is anchor * (1 + step)**k
    probe_s: float  # every round probe's min duration (round_probe_s)
    probe_queries: int  # a probe's min query count (the warm-up probes')
    confirm_s: float  # the case's full length (a round confirms nothing; kept for the plan's record)
    confirm_queries: int
    ceiling: float | None  # no probe above it: the reference's calibrated bare-loop throughput times a margin
    step: float = ROUND_STEP
    probes: int = ROUND_PROBES


def round_plan(start_qps: float, setup: RoundSetup, gate: GateSettings) -> SearchPlan:
    """The search of one arm in one round, from its latest capacity `start_qps` (moved onto the grid, and no higher
    than the ceiling): probes of `setup.probe_s` in steps of `setup.step`, at most `setup.probes` of them, down to
    start / (1 + step)**(probes - 1), no confirmation (module docstring)."""
    start = on_grid(start_qps, setup.anchor_qps, setup.step)
    if setup.ceiling is not None:
        start = min(start, setup.ceiling)
    lowest = start / (1 + setup.step) ** (setup.probes - 1)
    longest = max(setup.probe_s, setup.probe_queries / lowest)  # a probe's min duration, or its min queries
    budget = max(ROUND_SLACK * setup.probes * longest, gate.budget_s / (2 * gate.plan().min_rounds))
    return SearchPlan(
        start_qps=start, budget_s=budget, probe_s=setup.probe_s, probe_queries=setup.probe_queries,
        confirm_s=setup.confirm_s, confirm_queries=setup.confirm_queries, precision=setup.step,
        growth=1 + setup.step, max_halvings=setup.probes - 1, max_probes=setup.probes, max_qps=setup.ceiling,
        latency_factor=0.0,  # every probe lasts probe_s: the same for both arms, whatever one probe's latency
        confirm=False)


def longest_latency_s(*outcomes: SearchOutcome) -> float | None:
    """The longest p99 query latency a VALID probe of these searches saw, in seconds (None: none logged one).

    Only VALID probes: an overloaded probe's p99 is its queue's, which grows with the probe's own length, not the
    SUT's query latency that round probes must outlast. On the H200 one warm-up probe of the ResNet50 stand-in at
    8,970 QPS (1.35x its capacity) logged a p99 of 0.67 s, so every round probe lasted 3.3 s instead of the ci
    profile's 1 s round, and an A/A gate's 12 rounds took 200 s instead of about 60 s (docs/performance.md)."""
    found = [p.result.latency_p99_ns for o in outcomes for p in o.probes
             if p.result.valid and p.result.latency_p99_ns]
    return max(found) / 1e9 if found else None


@dataclass
class CapacityRounds:
    """The rounds of a capacity gate: `measure(arm, i)` is gate.run_rounds' callable. Each call searches `arm`'s
    capacity from its latest one with `search(arm, i, plan)` (host/driver/search.py runs the probes), keeps the search's record
    and returns the capacity; a search that finds no VALID load raises GateError."""

    setup: RoundSetup
    gate: GateSettings
    search: Callable[[str, int, SearchPlan], SearchOutcome]
    latest: dict[str, float]  # each arm's latest capacity: its warm-up search's, then its last round's
    rounds: list[dict[str, dict[str, Any]]] = field(default_factory=list)  # per round, per arm: the search record

    def plan(self, arm: str) -> SearchPlan:
        return round_plan(self.latest[arm], self.setup, self.gate)

    def measure(self, arm: str, i: int) -> dict[str, float]:
        plan = self.plan(arm)
        outcome = self.search(arm, i, plan)
        while len(self.rounds) <= i:
            self.rounds.append({})
        self.rounds[i][arm] = outcome.to_record()
        if outcome.capacity_qps is None:
            raise GateError(no_capacity(arm, i, plan, outcome, self.latest[arm]))
        self.latest[arm] = outcome.capacity_qps
        return {CAPACITY_METRIC: outcome.capacity_qps}


def no_capacity(arm: str, i: int, plan: SearchPlan, outcome: SearchOutcome, latest: float) -> str:
    """Why a round's search of `arm` failed the gate, and what it tried."""
    tried = ", ".join(f"{p.target_qps:.4g}{'' if p.result.valid else ' INVALID'}" for p in outcome.probes) or "nothing"
    reasons = sorted({r for p in outcome.probes for r in p.result.reasons})
    said = f"; LoadGen and the search said: {'; '.join(reasons)}" if reasons else ""
    return (f"round {i + 1}: the {arm}'s capacity search found no VALID load: it tried (QPS) {tried}, from its "
            f"last capacity {latest:.4g} QPS down to {plan.lowest_qps:.4g} QPS in steps of {plan.precision:.0%} "
            f"({outcome.why or 'none was VALID'}){said}. A round follows a capacity that moves by at most "
            f"{(1 + plan.precision) ** plan.max_halvings - 1:.0%} from one round to the next; run nothing else on "
            "the machine meanwhile, or lengthen the rounds (--mlperf-gate-round)")


def searches_record(warmup: dict[str, SearchOutcome], rounds: CapacityRounds) -> dict[str, Any]:
    """The gate record's `searches`: each arm's warm-up search and its search in every round, probes included."""
    return {"warmup": {arm: o.to_record() for arm, o in warmup.items()}, "rounds": rounds.rounds,
            "step": rounds.setup.step, "max_probes": rounds.setup.probes, "probe_s": rounds.setup.probe_s,
            "anchor_qps": rounds.setup.anchor_qps}
