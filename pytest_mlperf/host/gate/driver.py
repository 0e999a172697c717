"""The overhead gate, as `LoadGenDriver` drives it (`GateDriving`, which it inherits): the two arms' warm-up runs,
then rounds of short runs in ABBA order, each a LoadGen run of the case (`LoadGenDriver.execute`). The rounds' loop
and statistics are host/gate/loop.py's and host/gate/stats.py's; this module holds pytest's side (progress lines, logs, failures), as
host/driver/search.py does for the Server search."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_mlperf.contract.test_request import TestRequest
from pytest_mlperf.host.baselines.check import _output, compare_outputs
from pytest_mlperf.host.driver.cases import CaseRun
from pytest_mlperf.host.driver.surface import DriverSurface
from pytest_mlperf.host.gate.loop import GateError, GateOutcome, compare_outputs_gate, gate_metrics, run_rounds
from pytest_mlperf.host.progress import NORMAL, line, round_text

if TYPE_CHECKING:
    from pytest_mlperf.host.driver.sut_handle import SUTHandle
    from pytest_mlperf.host.gate.stopping import GatePlan
    from pytest_mlperf.host.pool.recipe import LaunchRecipe
    from pytest_mlperf.host.settings import GateSettings


def with_measured_work(test: TestRequest, metrics: Mapping[str, object], margin: float) -> TestRequest:
    """The gate's fixed Offline test with its expected throughput raised to what the reference's warm-up measured,
    times the profile's `margin`, when that is more than the test says. Both arms run this one test. A calibration
    made while the host was busy (two CPUs shared by pytest-xdist workers) asked for too little work, and the
    candidate's warm-up, at full speed, ran out of samples before its min duration: INVALID, failing the case (seen
    in this project's CI). More expected work only makes a run longer."""
    measured = metrics.get("result_samples_per_second")
    if test.scenario != "Offline" or test.offline_expected_qps is None or not isinstance(measured, (int, float)):
        return test
    return replace(test, offline_expected_qps=max(test.offline_expected_qps, float(measured) * margin))


class GateDriving(DriverSurface):
    """The overhead gate of a `LoadGenDriver` (mixed into it): it needs the driver's `session` and its `execute`,
    `test_request`, `log_dir` and `case_label` (host/driver/surface.py declares them)."""

    def gate_run(self, sut: SUTHandle, scenario: str, mode: str, gate: GateSettings, log_suffix: str) -> CaseRun:
        """The overhead gate of this case: reference and candidate runners (alive together, measuring one at a
        time) each do a warm-up run, then rounds of short runs in ABBA order until gate.run_rounds decides.
        Returns the candidate's warm-up run, carrying the verdict; every run keeps its LoadGen logs."""
        base = self.log_dir(log_suffix) / "gate"
        shutil.rmtree(base, ignore_errors=True)
        recipes = {"reference": self.session.reference, "candidate": gate.candidate}
        profile = self.session.settings.profile
        warmup_ms = gate.round_ms or profile.gate_round_ms  # the runner has not said its device yet
        test = replace(self.test_request(sut, scenario, mode, base, 0), min_duration_ms=warmup_ms)
        # the reference calibrates; both arms then run the very same test (expectations, Server load, duration)
        ref = self.execute(sut, recipes["reference"], scenario, mode, base / "warmup-reference", fixed=test,
                           label="gate warm-up, reference")
        device = str(ref.backend.get("device", "cpu"))
        round_ms = gate.round_ms_for(profile, device, scenario)
        fixed = replace(with_measured_work(TestRequest.from_dict(ref.test), ref.run.metrics, profile.expectation_margin),
                        min_duration_ms=round_ms)
        cand = self.execute(sut, recipes["candidate"], scenario, mode, base / "warmup-candidate", fixed=fixed,
                            label="gate warm-up, candidate")
        outcome = self._judge(sut, scenario, mode, gate.plan(device, scenario, round_ms), base, recipes, ref, cand, fixed)
        outcome.reference_recipe = recipes["reference"].describe()
        outcome.candidate_recipe = recipes["candidate"].describe()
        cand.gate = outcome
        cand.log_dir = str(base)
        return cand

    def _judge(self, sut: SUTHandle, scenario: str, mode: str, plan: GatePlan, base: Path,
               recipes: dict[str, LaunchRecipe], ref: CaseRun, cand: CaseRun, fixed: TestRequest) -> GateOutcome:
        if mode == "accuracy":
            expected = {int(i): _output(c) for i, c in (ref.accuracy or {}).get("predictions", [])}
            actual = {int(i): _output(c) for i, c in (cand.accuracy or {}).get("predictions", [])}
            return compare_outputs_gate(expected, actual, plan.max_overhead, compare_outputs(expected, actual))

        said: set[int] = set()  # rounds whose line is out

        def measure(arm: str, i: int) -> dict[str, float]:
            if i not in said and self.session.progress is not None:
                said.add(i)
                round_s = (fixed.min_duration_ms or 0) / 1000
                self.session.progress(line(self.case_label(sut, scenario, mode),
                                           round_text(i, plan.max_rounds, round_s)), NORMAL)
            case = self.execute(sut, recipes[arm], scenario, mode, base / f"round{i + 1:02d}-{arm}", fixed=fixed,
                                calibrate=False, label=f"gate round {i + 1}, {arm}", in_round=True)
            return {k: float(v) for k, v in case.run.metrics.items() if isinstance(v, (int, float))}

        try:
            metrics = gate_metrics(scenario, ref.run.metrics)
            return run_rounds(measure, metrics, plan)
        except GateError as exc:
            failure = f"overhead gate: {exc}\nLoadGen logs: {base}"
        pytest.fail(failure, pytrace=False)
        raise AssertionError  # pragma: no cover - pytest.fail raises
