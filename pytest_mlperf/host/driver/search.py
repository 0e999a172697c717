"""The Server capacity search and the capacity gate, as `LoadGenDriver` drives them (`SearchDriving`, which it
inherits): which runs a search makes and how they are logged, kept and failed. The search's loop and verdicts are
host/driver/server_search.py's, the capacity gate's round plans and `measure` host/gate/capacity.py's; this module turns their probes
into LoadGen runs of the case (`LoadGenDriver.execute`), so it holds pytest's side of both, and host/driver/loadgen_driver.py the rest
of the driver."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_mlperf.contract.loadgen_results import finite_number
from pytest_mlperf.contract.test_request import TestRequest, user_conf_keys
from pytest_mlperf.host.driver.cases import CaseRun
from pytest_mlperf.host.driver.server_search import (
    CAPACITY_METRIC,
    ProbeResult,
    SearchOutcome,
    SearchPlan,
    probe_verdict,
    search,
)
from pytest_mlperf.host.driver.surface import DriverSurface
from pytest_mlperf.host.gate.capacity import (
    CapacityRounds,
    RoundSetup,
    longest_latency_s,
    round_probe_s,
    searches_record,
)
from pytest_mlperf.host.gate.loop import GateError, gate_metrics, run_rounds
from pytest_mlperf.host.progress import NORMAL, line, search_round_text

if TYPE_CHECKING:
    from pytest_mlperf.host.driver.sut_handle import SUTHandle
    from pytest_mlperf.host.pool.recipe import LaunchRecipe
    from pytest_mlperf.host.settings import GateSettings


# --mlperf-server-search: probes last at least this share of the case's min duration (at least PROBE_MIN_MS; longer
# where queries are slow: SearchPlan.duration_s), with at most PROBE_QUERIES queries asked of them; the
# confirmation runs the full length (official: mlperf.conf's 600 s)
PROBE_FRACTION = 0.25
PROBE_MIN_MS = 250
PROBE_QUERIES = 16
OFFICIAL_DURATION_MS = 600_000
# --mlperf-server-search probes no load above the calibration's bare-loop throughput times this: a Server run
# cannot complete more than the SUT does flat out, but the bare loop is short (about a second) and runs at one
# batch size, where the Server run's batching may fill batches a little better; 20% covers that and the loop's
# noise, while a load twice the throughput (a short probe can look VALID there) is never probed
SEARCH_CEILING_MARGIN = 1.2


def search_ceiling(first: CaseRun) -> float | None:
    """The highest load a search probes: the calibrating run's bare-loop throughput times the margin (None: it did
    not calibrate, no ceiling)."""
    bare = ((first.calibration or {}).get("bare") or {}).get("samples_per_s")
    return float(bare) * SEARCH_CEILING_MARGIN if bare else None


class SearchDriving(DriverSurface):
    """The search and capacity-gate runs of a `LoadGenDriver` (mixed into it): they need its `session` and its
    `execute`, `test_request`, `log_dir`, `keep` and `case_label` (host/driver/surface.py declares them)."""

    def search_run(self, sut: SUTHandle, recipe: LaunchRecipe, scenario: str, mode: str, log_suffix: str) -> CaseRun:
        """--mlperf-server-search: the case's capacity (host/driver/server_search.py). The first probe calibrates (its target is
        the calibrated estimate, its latency bound then fixed for every run); probes are short, the confirmation is
        full length. Returns the confirmation, carrying the search; a search that finds no capacity fails the case
        with what it tried, its runs kept in results.json. With --mlperf-update-baselines the search is repeated
        (from the capacity found) so that the baseline knows its noise."""
        settings = self.session.settings
        base = self.log_dir(log_suffix)
        self._refuse_searching_a_fixed_target(sut, scenario)
        full, probe = self._search_tests(sut, scenario, mode, base)
        shutil.rmtree(base, ignore_errors=True)
        outcome, case, fixed, ceiling = self._calibrated_search(sut, recipe, scenario, mode, base, full, probe)
        self.keep(case)
        for k in range(2, (settings.baseline_repeats if settings.update_baselines else 1) + 1):
            again, _ = self._search(sut, recipe, scenario, mode, base.with_name(f"{base.name}-repeat{k}"), fixed,
                                    full, outcome.capacity_qps or outcome.plan.start_qps, None, ceiling)
            if again.capacity_qps:
                case.repeats.append({CAPACITY_METRIC: again.capacity_qps})
        return case

    def _refuse_searching_a_fixed_target(self, sut: SUTHandle, scenario: str) -> None:
        """A search varies the Server target QPS, which a user.conf's target_qps would pin (LoadGen keeps it)."""
        conf = self.session.settings.user_conf
        if conf and "target_qps" in user_conf_keys(conf, sut.spec.loadgen_model, scenario):
            pytest.fail(f"--mlperf-server-search varies the Server target QPS, but --mlperf-user-conf {conf} sets "
                        f"target_qps for {sut.spec.loadgen_model} Server, which LoadGen keeps: remove that line to "
                        "search, or run without --mlperf-server-search at the user.conf's load", pytrace=False)

    def _search_tests(self, sut: SUTHandle, scenario: str, mode: str, base: Path) -> tuple[TestRequest, TestRequest]:
        """A search's full-length test (its confirmation) and its probe (a share of that length, few queries)."""
        full = self.test_request(sut, scenario, mode, base, 0)
        confirm_ms = full.min_duration_ms or OFFICIAL_DURATION_MS
        probe = replace(full, min_duration_ms=max(PROBE_MIN_MS, int(confirm_ms * PROBE_FRACTION)),
                        min_query_count=min(full.min_query_count or PROBE_QUERIES, PROBE_QUERIES))
        return full, probe

    def _calibrated_search(self, sut: SUTHandle, recipe: LaunchRecipe, scenario: str, mode: str, base: Path,
                           full: TestRequest, probe: TestRequest, *, label: str = "",
                           failing: str = "") -> tuple[SearchOutcome, CaseRun, TestRequest, float | None]:
        """A whole search whose first probe (`probe`, under `base`/search/01-bracket) calibrates: its target is the
        calibrated estimate, and its test (the latency bound) is fixed for every later run. Returns the outcome,
        the confirmation's run, that fixed test and the ceiling no probe goes above (see `_search`)."""
        first, seconds = self._timed(lambda: self.execute(sut, recipe, scenario, mode, base / "search" / "01-bracket",
                                                          fixed=probe, label=label))
        fixed = TestRequest.from_dict(first.test)
        start = finite_number(first.run.settings.get("target_qps")) or fixed.server_target_qps or 0.0
        ceiling = search_ceiling(first)
        outcome, case = self._search(sut, recipe, scenario, mode, base, fixed, full, start, (first, seconds), ceiling,
                                     label=label, failing=failing)
        return outcome, case, fixed, ceiling

    @staticmethod
    def _timed(run: Callable[[], CaseRun]) -> tuple[CaseRun, float]:
        began = time.monotonic()
        case = run()
        return case, time.monotonic() - began

    def _prober(self, sut: SUTHandle, recipe: LaunchRecipe, scenario: str, mode: str, folder: Path,
                fixed: TestRequest, full: TestRequest, runs: list[CaseRun], *, label: str = "",
                in_round: bool = False) -> Callable[[float, str, float], ProbeResult]:
        """A search's `probe(qps, phase, duration_s)`: one run of `fixed` at `qps` (the confirmation at `full`'s
        length), logged under `folder`/NN-phase and appended to `runs`."""

        def run_at(qps: float, phase: str, duration_s: float) -> ProbeResult:
            test = replace(fixed, server_target_qps=qps)
            if phase == "confirm":
                test = replace(test, min_duration_ms=full.min_duration_ms, min_query_count=full.min_query_count)
            else:  # long enough for a queue to show (SearchPlan.duration_s: a multiple of the query latency)
                test = replace(test, min_duration_ms=max(1, round(duration_s * 1000)))
            n = len(runs) + 1
            case = self.execute(sut, recipe, scenario, mode, folder / f"{n:02d}-{phase}", fixed=test,
                                calibrate=False, target_source="search", label=label, in_round=in_round)
            runs.append(case)
            return replace(probe_verdict(case.run), log_dir=case.log_dir)

        return run_at

    def _search(self, sut: SUTHandle, recipe: LaunchRecipe, scenario: str, mode: str, base: Path,
                fixed: TestRequest, full: TestRequest, start: float,
                first: tuple[CaseRun, float] | None, ceiling: float | None, *, label: str = "",
                failing: str = "") -> tuple[SearchOutcome, CaseRun]:
        """One capacity search from `start` QPS, no probe above `ceiling` QPS; its confirmation run (kept as the
        case's) and its outcome. `first` is the calibrating run and its seconds, start-up included. Fails the case,
        keeping its last run with the search, when no capacity is found (the message after `failing`, if given)."""
        settings = self.session.settings
        runs: list[CaseRun] = [first[0]] if first else []
        run_at = self._prober(sut, recipe, scenario, mode, base / "search", fixed, full, runs, label=label)
        plan = SearchPlan(
            start_qps=start, budget_s=settings.server_search_budget_s,
            probe_s=(fixed.min_duration_ms or PROBE_MIN_MS) / 1000, probe_queries=fixed.min_query_count or 1,
            confirm_s=(full.min_duration_ms or OFFICIAL_DURATION_MS) / 1000, confirm_queries=full.min_query_count or 1,
            max_qps=ceiling)
        head, startup = None, 0.0
        if first is not None:
            # the budget counts the first run's LoadGen test (the runner's loadgen_s), not its runner start, engine
            # start and calibration: one-offs, most of a 140 s first run for vLLM on a GPU (79 s of engine start)
            loadgen_s = first[0].timings.get("loadgen_s")
            counted = min(first[1], float(loadgen_s) if loadgen_s is not None else plan.predicted_s(start, "bracket"))
            head = (replace(probe_verdict(first[0].run), log_dir=first[0].log_dir), counted)
            startup = first[1] - counted
        outcome = search(run_at, plan, first=head, startup_s=startup)
        prefix = f"{failing}: " if failing else ""
        if not runs:  # the budget held not one run (a repeat's search)
            pytest.fail(f"{prefix}{outcome.describe()}\nLoadGen logs: {base / 'search'}", pytrace=False)
        at = outcome.capacity_probe
        case = next((r for r in runs if at is not None and r.log_dir == at.result.log_dir), runs[-1])
        case.search = outcome
        if outcome.passed:
            case.server_target = {"qps": outcome.capacity_qps, "source": "search",
                                  "why": "the highest load the capacity search found VALID (--mlperf-server-search)"}
            if outcome.status != "found":
                case.notes.append(outcome.describe())
            return outcome, case
        self.keep(case)
        pytest.fail(f"{prefix}{outcome.describe()}\nLoadGen logs: {base / 'search'}", pytrace=False)
        raise AssertionError  # pragma: no cover - pytest.fail raises

    def capacity_gate_run(self, sut: SUTHandle, scenario: str, mode: str, gate: GateSettings,
                          log_suffix: str) -> CaseRun:
        """The overhead gate of a Server case under --mlperf-server-search: it judges capacity (host/gate/capacity.py).
        Warm-up: the reference's full search (as search_run's), then the candidate's from the reference's
        capacity; rounds: a small search per arm from its latest capacity, short probes only. Returns the
        candidate's warm-up confirmation, carrying its search and the verdict, whose record keeps every search."""
        self._refuse_searching_a_fixed_target(sut, scenario)
        base = self.log_dir(log_suffix) / "gate"
        shutil.rmtree(base, ignore_errors=True)
        recipes = {"reference": self.session.reference, "candidate": gate.candidate}
        full, probe = self._search_tests(sut, scenario, mode, base)
        ref, cand, case, fixed, ceiling = self._capacity_warmups(sut, scenario, mode, base, recipes, full, probe)
        assert ref.capacity_qps is not None and cand.capacity_qps is not None  # a search that passed has a capacity
        setup = RoundSetup(
            anchor_qps=ref.capacity_qps,
            probe_s=round_probe_s((gate.round_ms or self.session.settings.profile.gate_round_ms) / 1000,
                                  longest_latency_s(ref, cand), cand.plan.confirm_s),
            probe_queries=fixed.min_query_count or 1, confirm_s=cand.plan.confirm_s,
            confirm_queries=cand.plan.confirm_queries, ceiling=ceiling)
        round_search = self._round_searcher(sut, scenario, mode, gate, base, recipes, fixed, full, setup)
        rounds = CapacityRounds(setup, gate, round_search,
                                latest={"reference": ref.capacity_qps, "candidate": cand.capacity_qps})
        failure: str | None = None
        try:
            metrics = gate_metrics(scenario, {CAPACITY_METRIC: ref.capacity_qps}, searched=True)
            outcome = run_rounds(rounds.measure, metrics, gate.plan())
        except GateError as exc:
            failure = f"overhead gate: {exc}\nLoadGen logs: {base}"
        if failure is not None:  # failed outside the except block: no chained traceback in the report
            pytest.fail(failure, pytrace=False)
        outcome.reference_recipe = recipes["reference"].describe()
        outcome.candidate_recipe = recipes["candidate"].describe()
        outcome.searches = searches_record({"reference": ref, "candidate": cand}, rounds)
        case.gate = outcome
        case.log_dir = str(base)
        return case

    def _capacity_warmups(self, sut: SUTHandle, scenario: str, mode: str, base: Path,
                          recipes: dict[str, LaunchRecipe], full: TestRequest, probe: TestRequest
                          ) -> tuple[SearchOutcome, SearchOutcome, CaseRun, TestRequest, float | None]:
        """The capacity gate's warm-up searches: the reference's outcome, the candidate's, the candidate's
        confirmation (the case's run), the test every later run of both arms makes and their common ceiling."""
        # the reference's first probe calibrates: its test (latency bound, lengths) is every later run's of both
        # arms, and its ceiling both arms' ceiling
        ref, _, fixed, ceiling = self._calibrated_search(
            sut, recipes["reference"], scenario, mode, base / "warmup-reference", full, probe,
            label="gate warm-up search, reference", failing="overhead gate: the reference's warm-up capacity search")
        assert ref.capacity_qps is not None  # a search that passed has a capacity
        # the candidate's first probe, at the reference's capacity, calibrates too, so that its runner warms up as
        # the reference's did (gate_run's candidate warm-up; in smoke its bound may be relaxed to 8 times its own
        # batch latency: one probe, which the confirmation at the fixed bound settles)
        cfirst, cseconds = self._timed(lambda: self.execute(
            sut, recipes["candidate"], scenario, mode, base / "warmup-candidate" / "search" / "01-bracket",
            fixed=replace(fixed, server_target_qps=ref.capacity_qps), label="gate warm-up search, candidate",
            target_source="search"))
        cand, case = self._search(sut, recipes["candidate"], scenario, mode, base / "warmup-candidate", fixed, full,
                                  ref.capacity_qps, (cfirst, cseconds), ceiling,
                                  label="gate warm-up search, candidate",
                                  failing="overhead gate: the candidate's warm-up capacity search")
        return ref, cand, case, fixed, ceiling

    def _round_searcher(self, sut: SUTHandle, scenario: str, mode: str, gate: GateSettings, base: Path,
                        recipes: dict[str, LaunchRecipe], fixed: TestRequest, full: TestRequest,
                        setup: RoundSetup) -> Callable[[str, int, SearchPlan], SearchOutcome]:
        """A capacity gate round's `search(arm, i, plan)`: a small search of `arm` in round `i`, logged under
        `base`/roundNN-arm, each round said once on the progress sink."""
        label = self.case_label(sut, scenario, mode)
        said: set[int] = set()  # rounds whose line is out

        def round_search(arm: str, i: int, plan: SearchPlan) -> SearchOutcome:
            if i not in said and self.session.progress is not None:
                said.add(i)
                self.session.progress(line(label, search_round_text(i, gate.plan().max_rounds, plan.max_probes,
                                                                    setup.probe_s)), NORMAL)
            run_at = self._prober(sut, recipes[arm], scenario, mode, base / f"round{i + 1:02d}-{arm}", fixed, full,
                                  [], label=f"gate round {i + 1}, {arm}", in_round=True)
            return search(run_at, plan)

        return round_search
