"""The overhead gate's stopping rule: its plan (budget, error rates, estimator), the looks at which it may decide,
and the verdict at each look, read from host/gate/stats.py's intervals; and the ABBA order of the arms' runs. The method and
its simulation are in docs/gate-statistics.md; host/gate/loop.py runs the rounds this module judges."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from pytest_mlperf.host.gate.stats import (
    ESTIMATORS,
    MIN_INTERVAL_ROUNDS,
    Interval,
    floor_overhead_interval,
    paired_overhead_interval,
)

__all__ = ["DEFAULT_PLAN", "GateDecision", "GatePlan", "Verdict", "decide", "estimator_for", "evaluate",
           "look_confidence", "looks", "round_order"]


class Verdict(str, Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"

    def __str__(self) -> str:
        return self.value


def decide(interval: Interval, max_overhead: float) -> Verdict | None:
    """PASS if the whole interval is below ``max_overhead``, FAIL if wholly above, else None."""
    if interval.high < max_overhead:
        return Verdict.PASS
    if interval.low > max_overhead:
        return Verdict.FAIL
    return None


@dataclass(frozen=True)
class GatePlan:
    """Budget and error rates of one gate.

    A round is one reference run plus one candidate run.  Default (chosen by simulation, see
    docs/gate-statistics.md): looks at 12, 24, 36, 48 and 60 rounds, each at the Bonferroni level
    0.99.  With per-run noise cv <= 2% (plus drift and 2% outlier runs) this gives PASS >= 99% at
    a true 0% overhead, PASS >= 95% at 3% and FAIL >= 95% at 7% against a 5% limit, for both
    throughput and latency, while a true overhead exactly at the limit is passed in ~1% of gates
    (guaranteed <= 2.5%).  ``n_boot``/``seed`` fix the bootstrap so a verdict is reproducible.
    """

    min_rounds: int = 12
    max_rounds: int = 60
    max_seconds: float = 3600.0
    confidence: float = 0.95
    max_overhead: float = 0.05
    n_looks: int = 5
    n_boot: int = 2000
    seed: int = 0
    estimator: str = "paired"  # one of ESTIMATORS

    def __post_init__(self) -> None:
        if not MIN_INTERVAL_ROUNDS <= self.min_rounds <= self.max_rounds:
            raise ValueError(f"need {MIN_INTERVAL_ROUNDS} <= min_rounds <= max_rounds, got {self}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {self.estimator!r}")
        if not 0.0 < self.confidence < 1.0 or self.n_looks < 1 or self.n_boot < 100:
            raise ValueError(f"invalid plan {self}")


DEFAULT_PLAN = GatePlan()


def estimator_for(plan: GatePlan, higher_is_better: bool) -> str:
    """The estimator a metric is judged with ("paired" or "floor"): the plan's, where "floor-latency" is floor
    for latency (lower is better) and paired for throughput."""
    if plan.estimator != "floor-latency":
        return plan.estimator
    return "paired" if higher_is_better else "floor"


def looks(plan: GatePlan) -> list[int]:
    """Round counts at which a decision may be taken: ``n_looks`` evenly spaced from min to max."""
    pts = np.rint(np.linspace(plan.min_rounds, plan.max_rounds, plan.n_looks)).astype(int)
    return sorted({int(p) for p in pts})


def look_confidence(plan: GatePlan) -> float:
    """Two-sided confidence used at each look (Bonferroni over the planned looks)."""
    return 1.0 - (1.0 - plan.confidence) / len(looks(plan))


@dataclass(frozen=True)
class GateDecision:
    verdict: Verdict
    interval: Interval
    rounds: int


def _is_look(plan: GatePlan, n: int, elapsed_s: float) -> tuple[bool, bool]:
    """(take a look now, this is the last chance) after ``n`` completed rounds."""
    final = n >= plan.max_rounds or elapsed_s >= plan.max_seconds
    return (n in looks(plan) or final), final


def evaluate(
    plan: GatePlan,
    reference: Sequence[float] | np.ndarray,
    candidate: Sequence[float] | np.ndarray,
    *,
    higher_is_better: bool,
    elapsed_s: float,
) -> GateDecision | None:
    """The stopping rule, called after every completed round; None means "run another round".

    Looks only at the planned round counts, or once when the budget (rounds or seconds) is spent;
    then returns INCONCLUSIVE if the interval still straddles the limit.
    """
    n = len(reference)
    look, final = _is_look(plan, n, elapsed_s)
    if not look:
        return None
    if n < MIN_INTERVAL_ROUNDS:
        nan = float("nan")
        return GateDecision(Verdict.INCONCLUSIVE, Interval(nan, nan, nan, look_confidence(plan)), n) if final else None
    interval_of = (floor_overhead_interval if estimator_for(plan, higher_is_better) == "floor"
                   else paired_overhead_interval)
    interval = interval_of(
        reference, candidate, higher_is_better=higher_is_better,
        confidence=look_confidence(plan), n_boot=plan.n_boot, seed=plan.seed,
    )
    verdict = decide(interval, plan.max_overhead)
    if verdict is None and not final:
        return None
    return GateDecision(verdict or Verdict.INCONCLUSIVE, interval, n)


def round_order(n_pairs: int, seed: int) -> list[str]:
    """Run order for ``n_pairs`` rounds: entries ``2i`` and ``2i+1`` form round i.

    Rounds alternate reference-first and candidate-first (ABBA BAAB ...), so a linear drift biases
    consecutive rounds in opposite directions and cancels; the seed picks the first round's order.
    """
    first = int(np.random.default_rng(seed).integers(2))
    out: list[str] = []
    for i in range(n_pairs):
        pair = ["reference", "candidate"]
        out.extend(pair if (i + first) % 2 == 0 else pair[::-1])
    return out
