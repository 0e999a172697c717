"""Server capacity search: the highest target QPS that LoadGen judges VALID on its latency bound.

What every MLPerf submitter does by hand, as a loop free of pytest and runners (host/driver/loadgen_driver.py drives it for real):
short probes from a starting estimate (the calibrated target) bracket the capacity, growing or shrinking the load
by `growth` until one probe is VALID and another INVALID; a bisection (geometric) narrows the bracket to
`precision`; one confirmation run at full length at the highest VALID load makes it the capacity. A confirmation
that is INVALID (a short probe hides a slow overload) steps the load down and confirms again, a few times at most.

Three guards keep short probes honest (a first run on a GPU, vLLM serving an 8B LLM whose queries take ~1.1 s,
found 2.5 s probes VALID at twice what the SUT can complete: they ended before any queue built up):

* a ceiling (`SearchPlan.max_qps`): no probe above what the SUT can complete, the calibration's bare-loop throughput
  times a margin; a VALID probe at the ceiling ends bracketing with no INVALID upper end;
* a probe lasts at least `latency_factor` (5) times the longest p99 query latency seen so far (for an LLM the whole
  response), capped by the confirmation's length, so that an overload has time to grow a queue;
* a probe that does not keep up is INVALID even where its latency bound held: completing less than `keep_up` (90%)
  of what a SUT keeping up would complete over the run (see `keeps_up`). The confirmation is LoadGen's to judge.

`search(probe, plan)` takes a `probe(qps, phase, duration_s) -> ProbeResult` callable (`duration_s`: the run's
minimum duration), so the loop is tested with simulated SUTs. Every probe is kept (target QPS, achieved QPS, p99,
verdict, log folder, seconds). The search ends within its budget: before each probe it predicts that probe's length
(its minimum duration or minimum queries at the load, whichever is longer, plus the longest overrun seen so far) and
keeps time for the confirmation. The budget counts LoadGen's time only: the first probe's runner start, engine start
and calibration are one-offs, recorded apart (`startup_s`).

A plan with `confirm=False` (the overhead gate's rounds, host/gate/capacity.py) ends at the bisection: no confirmation at
full length, its capacity the highest load a short probe found VALID."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pytest_mlperf.contract import metrics as catalogue
from pytest_mlperf.contract.loadgen_run import Run

PHASES = ("bracket", "bisect", "confirm")
CAPACITY_METRIC = catalogue.SERVER_CAPACITY  # the case's headline and baseline metric under a search
# statuses: a capacity was found (bracket within precision), or found but the budget cut the bracket short; none
STATUS_FOUND, STATUS_BUDGET = "found", "budget"
STATUS_UNBRACKETABLE, STATUS_UNCONFIRMED = "unbracketable", "unconfirmed"
PASSING = (STATUS_FOUND, STATUS_BUDGET)


@dataclass(frozen=True)
class ProbeResult:
    """What one LoadGen run at a target QPS says."""

    valid: bool  # LoadGen met the latency bound (and the run's min duration and queries)
    achieved_qps: float | None = None  # completed samples/s LoadGen logged
    p99_ns: float | None = None  # p99 latency (TTFT's for an LLM): what the latency bound judges
    reasons: tuple[str, ...] = ()  # LoadGen's INVALID reasons (and the search's own: "overloaded: ...")
    log_dir: str = ""
    latency_p99_ns: float | None = None  # p99 query latency: for an LLM the whole response, not TTFT
    scheduled_qps: float | None = None  # the load LoadGen issued (result_scheduled_samples_per_sec)


@dataclass(frozen=True)
class Probe:
    phase: str
    target_qps: float
    result: ProbeResult
    seconds: float  # what the budget counted (the first probe: its LoadGen time, not its start-up)
    duration_s: float | None = None  # the minimum duration it ran for

    def to_record(self) -> dict[str, Any]:
        r = self.result
        return {"phase": self.phase, "target_qps": self.target_qps, "verdict": "VALID" if r.valid else "INVALID",
                "achieved_qps": r.achieved_qps, "scheduled_qps": r.scheduled_qps, "p99_ns": r.p99_ns,
                "latency_p99_ns": r.latency_p99_ns, "reasons": list(r.reasons), "log_dir": r.log_dir,
                "seconds": round(self.seconds, 3),
                "duration_s": round(self.duration_s, 3) if self.duration_s is not None else None}


@dataclass(frozen=True)
class SearchPlan:
    start_qps: float
    budget_s: float
    probe_s: float  # a probe's minimum duration
    probe_queries: int  # a probe's minimum query count
    confirm_s: float  # the confirmation's minimum duration (the profile's)
    confirm_queries: int
    precision: float = 0.03  # bisection stops once the bracket's upper end is within this of its lower end
    growth: float = 2.0  # bracketing multiplies or divides the load by this
    max_halvings: int = 4  # the lowest probe: start / growth**max_halvings (the calibrated start is half the bare loop)
    max_probes: int = 24  # bracketing and bisection probes together
    max_confirmations: int = 4  # each INVALID one steps the load down: by `precision`, then twice as far each time
    # the highest load probed (the SUT's calibrated throughput times a margin); None: no ceiling
    max_qps: float | None = None
    # a probe lasts at least this many times the longest p99 query latency L seen: at a load (1 + x) times the
    # capacity the last query of a run of T seconds waits about x T, which outgrows a bound B only once T > B / x;
    # bounds are about 2 L (an 8B LLM: TTFT 2 s, responses ~1.1 s; a p99 bound of a few service times), so 5 L shows
    # an overload of 40% (twice the capacity after 2 L); more would make most probes as long as the confirmation
    latency_factor: float = 5.0
    # a probe completing less than this share of what a SUT keeping up would complete is INVALID (`keeps_up`):
    # the rest is slack for the last query's latency exceeding the run's p99 and for LoadGen's timing
    keep_up: float = 0.9
    # False: no confirmation at full length; the search ends at the bisection and its capacity is the highest VALID
    # probe (the overhead gate's rounds: host/gate/capacity.py); no time is kept back for a confirmation
    confirm: bool = True

    def __post_init__(self) -> None:
        if not (self.start_qps > 0 and math.isfinite(self.start_qps)):
            raise ValueError(f"a capacity search needs a positive starting QPS, got {self.start_qps}")
        if not (self.growth > 1 and 0 < self.precision < 1):
            raise ValueError("a capacity search needs growth > 1 and 0 < precision < 1")
        if self.max_qps is not None and not (self.max_qps > 0 and math.isfinite(self.max_qps)):
            raise ValueError(f"a capacity search's ceiling must be a positive QPS, got {self.max_qps}")

    def duration_s(self, phase: str, latency_s: float | None = None) -> float:
        """A run's minimum duration: the confirmation's, or a probe's: at least `latency_factor` times `latency_s`
        (the longest p99 query latency seen so far), at most the confirmation's."""
        if phase == "confirm":
            return self.confirm_s
        if not latency_s:
            return self.probe_s
        return max(self.probe_s, min(self.latency_factor * latency_s, self.confirm_s))

    def predicted_s(self, qps: float, phase: str, latency_s: float | None = None) -> float:
        """How long LoadGen will run at `qps`: the minimum duration, or the minimum queries at that load if longer."""
        queries = self.confirm_queries if phase == "confirm" else self.probe_queries
        return max(self.duration_s(phase, latency_s), queries / qps)

    def keeps_up(self, qps: float, phase: str, result: ProbeResult, duration_s: float) -> str | None:
        """Why a VALID run did not keep up with its load, or None. LoadGen's completed QPS is its samples over the
        time the last one completed: a SUT keeping up completes what was issued within about one query latency L
        (its p99) of the issue time T, so achieves the issued load x T / (T + L). Below `keep_up` of that, queries
        were left behind: the run's latency bound held only because it ended before the queue showed. The issued
        load is LoadGen's scheduled QPS where logged (the target otherwise): a short run's Poisson count alone
        moves the achieved QPS by 1 / sqrt(queries), 20% for 25 queries, which the scheduled QPS shares. L being
        the run's own p99, a backlog growing evenly through the run raises L with it and passes (the probe length
        and the ceiling are what catch that one); what this catches is a run whose last completions trail far
        behind its p99: the backlog of its last moments, queries stuck behind a batch."""
        if phase == "confirm" or not result.valid or not result.achieved_qps or not result.latency_p99_ns:
            return None
        issued = result.scheduled_qps or qps
        queries = self.probe_queries
        t = max(duration_s, queries / qps)
        expected = issued * t / (t + result.latency_p99_ns / 1e9)
        if result.achieved_qps >= self.keep_up * expected:
            return None
        return (f"overloaded: completed {result.achieved_qps:.4g} of {issued:.4g} QPS (a SUT keeping up completes "
                f"about {expected:.4g} over a {t:.3g} s run with a {result.latency_p99_ns / 1e9:.3g} s p99 query "
                f"latency; below {self.keep_up:.0%} of it, queries were left behind)")

    @property
    def lowest_qps(self) -> float:
        return self.start_qps / self.growth ** self.max_halvings


@dataclass
class SearchOutcome:
    status: str
    capacity_qps: float | None  # the confirmed capacity (None when the search found none)
    best_valid_qps: float | None  # the highest load any probe found VALID (confirmed or not)
    lower_qps: float | None  # the bracket when the search ended: VALID at lower, INVALID at upper
    upper_qps: float | None
    probes: list[Probe]
    elapsed_s: float
    plan: SearchPlan
    why: str = ""  # what ended a search early (budget, probes), in words
    startup_s: float = 0.0  # the first probe's one-off runner start, engine start and calibration (not budgeted)

    @property
    def passed(self) -> bool:
        return self.status in PASSING

    @property
    def capacity_probe(self) -> Probe | None:
        """The VALID confirmation the capacity rests on."""
        found = [p for p in self.probes if p.phase == "confirm" and p.result.valid and p.target_qps == self.capacity_qps]
        return found[-1] if found and self.capacity_qps is not None else None

    def describe(self) -> str:
        """One paragraph a user can act on."""
        p = self.plan
        tried = ", ".join(f"{pr.target_qps:.4g}{'' if pr.result.valid else ' INVALID'}"
                          for pr in self.probes) or "nothing"
        spent = f"{len(self.probes)} runs in {self.elapsed_s:.0f} s of a {p.budget_s:.0f} s budget"
        if self.startup_s:
            spent += f", after {self.startup_s:.0f} s of start-up and calibration"
        if not p.confirm:
            return self._describe_unconfirmed(tried, spent)
        if self.status == STATUS_FOUND and self.upper_qps is None:  # bracketing ended at the ceiling
            return (f"server capacity {self.capacity_qps:.4g} QPS: VALID at full length at the search's ceiling "
                    f"({p.max_qps:.4g} QPS, a margin over the calibrated throughput: no SUT serves more than it "
                    f"completes) ({spent})")
        if self.status == STATUS_FOUND:
            return (f"server capacity {self.capacity_qps:.4g} QPS: VALID at full length, INVALID at "
                    f"{self.upper_qps:.4g} QPS ({spent})")
        if self.status == STATUS_BUDGET:
            upper = (f"INVALID at {self.upper_qps:.4g} QPS" if self.upper_qps is not None
                     else "no INVALID load found above it")
            return (f"server capacity at least {self.capacity_qps:.4g} QPS (VALID at full length; {upper}): the search "
                    f"stopped before its bracket was within {p.precision:.0%} because {self.why} ({spent}); raise "
                    "--mlperf-server-search-budget for a tighter figure")
        if self.status == STATUS_UNBRACKETABLE:
            first = self.probes[0].result if self.probes else None
            reasons = f" (LoadGen: {'; '.join(first.reasons)})" if first is not None and first.reasons else ""
            lowest = min((pr.target_qps for pr in self.probes), default=p.start_qps)
            return (f"server capacity search could not bracket the capacity: every load tried down to {lowest:.4g} "
                    f"QPS was INVALID on the latency bound{reasons}; tried (QPS): {tried} ({spent}). The SUT misses "
                    "the bound even almost idle: its latency for one query is above the bound. Check the bound "
                    "(target_latency in --mlperf-user-conf, the workload's), the batch size (--mlperf-batch-size; "
                    "a batch waits to fill), or the SUT itself")
        best = (f"the best VALID load found by a short probe was {self.best_valid_qps:.4g} QPS"
                if self.best_valid_qps is not None else "no probe was VALID")
        return (f"server capacity search found no capacity: {self.why}; {best}; tried (QPS): {tried} ({spent}). "
                "Raise --mlperf-server-search-budget, or shorten the runs (--mlperf-duration)")

    def _describe_unconfirmed(self, tried: str, spent: str) -> str:
        """A search without a confirmation (an overhead gate round): what it found by short probes alone."""
        p = self.plan
        if self.capacity_qps is not None:
            upper = (f"INVALID at {self.upper_qps:.4g} QPS" if self.upper_qps is not None
                     else "no INVALID load found above it")
            cut = (f"; it stopped before its bracket was within {p.precision:.0%} because {self.why}"
                   if self.status == STATUS_BUDGET else "")
            return (f"server capacity {self.capacity_qps:.4g} QPS: the highest load a short probe found VALID "
                    f"({upper}; no confirmation at full length){cut} ({spent})")
        lowest = min((pr.target_qps for pr in self.probes), default=p.start_qps)
        return (f"no load from {p.start_qps:.4g} QPS down to {lowest:.4g} QPS was VALID "
                f"({self.why or 'no VALID load'}); tried (QPS): {tried} ({spent})")

    def to_record(self) -> dict[str, Any]:
        """results.json's `server_search` entry."""
        p = self.plan
        return {
            "status": self.status, "capacity_qps": self.capacity_qps, "best_valid_qps": self.best_valid_qps,
            "lower_qps": self.lower_qps, "upper_qps": self.upper_qps, "elapsed_s": round(self.elapsed_s, 3),
            "budget_s": p.budget_s, "start_qps": p.start_qps, "precision": p.precision,
            "probe_s": p.probe_s, "confirm_s": p.confirm_s, "max_qps": p.max_qps, "startup_s": round(self.startup_s, 3),
            "why": self.why, "message": self.describe(),
            "probes": [pr.to_record() for pr in self.probes],
        }


def probe_verdict(run: Run) -> ProbeResult:
    """A Server run's verdict for the search: VALID when LoadGen met its latency bound (p99, or TTFT and TPOT for an
    LLM: `result_perf_constraints_met`) and its min duration and queries. Early stopping is not asked of a probe:
    probes are short by design, and the confirmation at full length is judged by the profile as every case is."""
    c = run.constraints
    valid = (not run.errors and c.get("perf_constraints_met") is True and c.get("min_duration_met", True) is not False
             and c.get("min_queries_met", True) is not False)
    achieved = run.metrics.get("result_completed_samples_per_sec")
    p99 = run.latency_ns.p99 if run.ttft_ns is None else run.ttft_ns.p99
    reasons = tuple(r for r in run.invalid_reasons if "Early stopping" not in r) if not valid else ()
    return ProbeResult(valid, achieved, p99, reasons, latency_p99_ns=run.latency_ns.p99,
                       scheduled_qps=run.metrics.get("result_scheduled_samples_per_sec"))


def _wide(lo: float, hi: float, precision: float) -> bool:
    """Whether the bracket [lo, hi] is wider than `precision` (a bracket one step of 1 + precision wide is not: the
    tolerance absorbs the rounding of lo * (1 + precision) / lo)."""
    return hi / lo > (1 + precision) * (1 + 1e-9)


@dataclass
class _Search:
    probe: Callable[[float, str, float], ProbeResult]
    plan: SearchPlan
    clock: Callable[[], float]
    startup_s: float = 0.0  # the first probe's one-offs, for the outcome (not budgeted)
    start: float = 0.0
    probes: list[Probe] = field(default_factory=list)
    overrun_s: float = 0.0  # the longest a run took beyond its predicted LoadGen time (a queue draining, logs)
    latency_s: float | None = None  # the longest p99 query latency seen so far: a probe lasts a multiple of it
    lo: float | None = None  # the bracket: VALID at lo, INVALID at hi
    hi: float | None = None
    why: str = ""  # what cut the search short (the budget, the probes), in words

    def elapsed(self) -> float:
        return self.clock() - self.start

    def cost(self, qps: float, phase: str) -> float:
        return self.plan.predicted_s(qps, phase, self.latency_s) + self.overrun_s

    def seen(self, qps: float, phase: str, result: ProbeResult, seconds: float, duration_s: float) -> ProbeResult:
        """Keeps a run (INVALID if it did not keep up), its overrun and its query latency."""
        why = self.plan.keeps_up(qps, phase, result, duration_s)
        if why is not None:
            result = replace(result, valid=False, reasons=(*result.reasons, why))
        self.overrun_s = max(self.overrun_s, seconds - max(duration_s, (
            self.plan.confirm_queries if phase == "confirm" else self.plan.probe_queries) / qps))
        if result.latency_p99_ns:
            self.latency_s = max(self.latency_s or 0.0, result.latency_p99_ns / 1e9)
        self.probes.append(Probe(phase, qps, result, seconds, duration_s))
        return result

    def fits(self, qps: float, phase: str, then_confirm: float | None) -> bool:
        """Whether a run at `qps` fits in the budget, keeping time for a confirmation at `then_confirm` (if the plan
        confirms)."""
        confirming = then_confirm if then_confirm and self.plan.confirm else None
        need = self.cost(qps, phase) + (self.cost(confirming, "confirm") if confirming else 0.0)
        return self.elapsed() + need <= self.plan.budget_s

    def run(self, qps: float, phase: str) -> ProbeResult:
        duration, began = self.plan.duration_s(phase, self.latency_s), self.clock()
        result = self.probe(qps, phase, duration)
        return self.seen(qps, phase, result, self.clock() - began, duration)

    def outcome(self, status: str, capacity: float | None, reason: str = "") -> SearchOutcome:
        best = max((p.target_qps for p in self.probes if p.result.valid), default=None)
        return SearchOutcome(status, capacity, best, self.lo, self.hi, list(self.probes), self.elapsed(), self.plan,
                             reason, self.startup_s)

    def bracket(self, first: tuple[ProbeResult, float] | None) -> SearchOutcome | None:
        """From the start, grows the load while VALID (no higher than the ceiling) and shrinks it while INVALID,
        until both ends are found or `why` is said. The outcome if no load down to the lowest is VALID, else None."""
        plan = self.plan
        qps = plan.start_qps
        if first is not None:  # its start-up and calibration are one-offs: only its LoadGen time is counted
            result: ProbeResult | None = self.seen(qps, "bracket", first[0], first[1], plan.probe_s)
        elif self.fits(qps, "bracket", qps):
            result = self.run(qps, "bracket")
        else:
            result, self.why = None, "the budget does not hold one probe and the confirmation"
        while result is not None:
            if result.valid:
                self.lo = qps
                if self.hi is not None or (plan.max_qps is not None and qps >= plan.max_qps * (1 - 1e-9)):
                    break  # at the ceiling: VALID there, nothing above to probe
                qps = qps * plan.growth if plan.max_qps is None else min(qps * plan.growth, plan.max_qps)
            else:
                self.hi = qps
                if self.lo is not None:
                    break
                qps /= plan.growth
                if qps < plan.lowest_qps * (1 - 1e-9):
                    return self.outcome(STATUS_UNBRACKETABLE, None, "no VALID load")
            if sum(p.phase != "confirm" for p in self.probes) >= plan.max_probes:
                self.why = f"it used its {plan.max_probes} probes"
                break
            if not self.fits(qps, "bracket", self.lo if self.lo is not None else qps):
                self.why = "the budget ran out"
                break
            result = self.run(qps, "bracket")
        return None

    def bisect(self, phase: str) -> None:
        """Narrows the bracket (geometric: capacities span orders of magnitude) to within precision by short probes
        ("bisect", while probes are left) or at full length ("confirm") while the budget holds, else says `why`."""
        while self.lo is not None and self.hi is not None and _wide(self.lo, self.hi, self.plan.precision):
            mid = math.sqrt(self.lo * self.hi)
            if phase == "bisect" and sum(p.phase != "confirm" for p in self.probes) >= self.plan.max_probes:
                self.why = f"it used its {self.plan.max_probes} probes"
                break
            if not self.fits(mid, phase, max(self.lo, mid) if phase == "bisect" else None):
                self.why = self.why or "the budget ran out"
                break
            if self.run(mid, phase).valid:
                self.lo = mid
            else:
                self.hi = mid

    def confirm(self, lo: float) -> SearchOutcome:
        """Confirms the bracket's VALID end `lo` at full length, stepping down while INVALID (a short probe hides a slow
        overload); a VALID one below an INVALID one is then bisected at full length while the budget allows."""
        step = 1 + self.plan.precision
        for _ in range(self.plan.max_confirmations):
            if not self.fits(lo, "confirm", None):
                return self.outcome(STATUS_UNCONFIRMED, None, "the budget ran out before a confirmation at full length")
            if self.run(lo, "confirm").valid:  # found unless the budget or the probes cut the bracket short
                if any(p.phase == "confirm" and not p.result.valid for p in self.probes):
                    self.bisect("confirm")
                return self.outcome(STATUS_BUDGET if self.why else STATUS_FOUND, self.lo, self.why)
            self.hi, lo, step = lo, lo / step, step * step
            self.lo = lo
        return self.outcome(STATUS_UNCONFIRMED, None, f"{self.plan.max_confirmations} confirmations at full length "
                            f"were INVALID, down to {self.hi:.4g} QPS")


def search(probe: Callable[[float, str, float], ProbeResult], plan: SearchPlan, *,
           first: tuple[ProbeResult, float] | None = None, startup_s: float = 0.0,
           clock: Callable[[], float] = time.monotonic) -> SearchOutcome:
    """Brackets, bisects and confirms the highest VALID target QPS (see the module's docstring).

    `probe(qps, phase, duration_s)` runs LoadGen at `qps` for at least `duration_s`: short for the phases "bracket"
    and "bisect", full length for "confirm". `first` is a probe already run at `plan.start_qps` for `plan.probe_s`
    (the calibrating run) and its LoadGen seconds, which the budget counts; `startup_s` is the rest of that run (runner
    and engine start, calibration): one-offs the budget does not count, recorded in the outcome."""
    s = _Search(probe, plan, clock, startup_s, clock() - (first[1] if first else 0.0))
    if (unbracketable := s.bracket(first)) is not None:
        return unbracketable
    s.bisect("bisect")
    if s.lo is None:
        return s.outcome(STATUS_UNCONFIRMED, None, s.why or "no probe was VALID")
    if not plan.confirm:  # the highest VALID probe is the capacity (found unless the budget or the probes cut it)
        return s.outcome(STATUS_BUDGET if s.why else STATUS_FOUND, s.lo, s.why)
    return s.confirm(s.lo)


def capacity_of(record: Mapping[str, Any]) -> float | None:
    """A results.json record's searched capacity, or None."""
    found = record.get("server_search") or {}
    value = found.get("capacity_qps")
    return float(value) if value else None
