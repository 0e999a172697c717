"""One measured case and its judgement: LoadGen's validity, accuracy, thresholds. Pure logic over the records
a runner sends back; the fixtures in host/driver/loadgen_driver.py build these and attach them to the test report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_mlperf.contract import metrics as catalogue
from pytest_mlperf.contract.loadgen_results import finite_number
from pytest_mlperf.contract.loadgen_run import Run
from pytest_mlperf.contract.test_request import TestRequest, user_conf_keys
from pytest_mlperf.host.baselines.store import CaseKey, Metric
from pytest_mlperf.host.driver.server_search import CAPACITY_METRIC, SearchOutcome
from pytest_mlperf.host.gate.loop import GateOutcome

# The metrics a regression is judged on, per scenario: (LoadGen detail-log key, unit, higher is better), derived
# from the catalogue (contract/metrics.py), which says why each is there.
REGRESSION_METRICS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    scenario: tuple((m.key, m.unit, m.higher_is_better) for m in catalogue.regression_set(scenario))
    for scenario in catalogue.SCENARIOS
}


def rerun_expected_qps(run: Run, expected: float | None, margin: float) -> float | None:
    """The expected QPS for another try of an Offline run that LoadGen judged INVALID because it ran out of work
    before its min duration ("Increase expected QPS"): what the run really did with the profile's margin, and at
    least twice what it expected (a very short run measures less than the SUT can do). A calibration of a fraction
    of a second on a busy machine can measure less than the run then does. None for any other run."""
    if run.scenario != "Offline" or run.mode != "PerformanceOnly" or run.constraints.get("min_duration_met", True):
        return None
    measured = run.metrics.get("result_samples_per_second")
    if not measured:
        return None
    return max(float(measured) * max(margin, 1.5), 2 * float(expected or 0))


SHORT_RUN_HINT = (
    "the SUT did its work faster than LoadGen was told to expect, so LoadGen ran out of samples before the min "
    "duration; the calibration may have run while the machine was busy: run on a quieter machine, or set the "
    "expectation yourself in --mlperf-user-conf (e.g. *.Offline.target_qps = N above the samples/s measured)")


def server_latency_hint(target: dict[str, Any] | None) -> str:
    """What a Server run INVALID on its latency bound says: the load it ran at, where that came from, what to do."""
    at = ""
    if target and target.get("qps"):
        at = f" at {float(target['qps']):.4g} QPS"
        if target.get("source"):
            at += f" (the target from {target['source']}: {target.get('why') or 'no detail'})"
    return (f"the Server run missed its latency bound{at}: the SUT cannot serve that load within the bound. Find the "
            "highest load it can serve with --mlperf-server-search, or set a lower *.Server.target_qps in "
            "--mlperf-user-conf")


def regression_metrics(run: Run) -> dict[str, Metric]:
    out = {}
    for key, unit, higher in REGRESSION_METRICS.get(run.scenario, ()):
        value = run.metrics.get(key)
        if value is not None and value > 0:
            out[key] = Metric(key, float(value), unit, higher)
    return out


@dataclass
class CaseRun:
    """A LoadGen run of one case, as the benchmark test sees it."""

    nodeid: str
    key: CaseKey
    run: Run
    log_dir: str
    profile: str
    tolerated: frozenset[str]
    backend: dict[str, Any]
    system: dict[str, str]
    recipe: str
    test: dict[str, Any]
    calibration: dict[str, Any] | None = None
    schedule: dict[str, Any] | None = None
    accuracy: dict[str, Any] | None = None
    accuracy_targets: dict[str, float] = field(default_factory=dict)
    real_data: bool = False
    stand_ins: list[str] = field(default_factory=list)  # what ran in place of the real model / data, in words
    notes: list[str] = field(default_factory=list)
    missing_baseline: str | None = None  # where its baseline would be, when there is none
    baseline_path: str | None = None  # the baseline it was judged against
    outputs_match: bool | None = None  # accuracy mode: every output equal to the baseline's
    gate: GateOutcome | None = None  # the overhead gate's verdict, when a candidate recipe was measured
    repeats: list[dict[str, float]] = field(default_factory=list)  # metrics of repeated runs (baseline recording)
    gpus: list[dict[str, Any]] = field(default_factory=list)  # the GPUs it ran on, with clocks/temperature at start and end
    # seconds spent per phase: runner_start_s (0 when a live runner was reused), prepare_s (calibration, harness),
    # loadgen_s (the LoadGen test), results_s (reading logs, accuracy), case_s (all of it, lock waits included)
    timings: dict[str, float] = field(default_factory=dict)
    runner_pid: int | None = None  # the process that measured (NVML lists it on the GPUs it used)
    # the backend options its runner was given: {key: {"value": ..., "from": "marker" | "--mlperf-sut-option" | ...}}
    sut_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    runner_cpus: str | None = None  # the CPUs it was allowed to run on, as it saw them (e.g. "0-7")
    # Server: the target QPS the run used and why (source: calibration, baseline, user.conf, mlperf.conf, search)
    server_target: dict[str, Any] | None = None
    search: SearchOutcome | None = None  # --mlperf-server-search: every probe, and the capacity found

    @property
    def metrics(self) -> dict[str, Metric]:
        """The metrics a baseline compares. A searched Server case compares its capacity only: its run's p99 and
        throughput are those at the capacity, which moves from run to run."""
        if self.search is not None:
            cap = self.search.capacity_qps
            m = catalogue.metric(CAPACITY_METRIC)
            return {m.key: Metric(m.key, float(cap), m.unit, m.higher_is_better)} if cap else {}
        return regression_metrics(self.run)

    @property
    def harness_efficiency(self) -> float | None:
        """Offline/Server: LoadGen samples/s over the bare loop's; None where it does not apply."""
        bare = (self.calibration or {}).get("bare", {}).get("samples_per_s")
        if not bare or self.run.scenario != "Offline" or self.run.headline is None:
            return None
        return float(self.run.headline.value / bare)

    @property
    def latency_overhead(self) -> float | None:
        """SingleStream/MultiStream: LoadGen's p50 latency (per query) over the bare loop's p50 at the same batch
        (1, or MultiStream's samples per query), minus one; None elsewhere."""
        return self._over_bare("p50", "batch_latency_p50_s")

    @property
    def latency_tail_overhead(self) -> float | None:
        """SingleStream/MultiStream: LoadGen's p99 latency (per query) over the bare loop's p99, minus one; None
        elsewhere, or where the calibration recorded no p99."""
        return self._over_bare("p99", "batch_latency_p99_s")

    def _over_bare(self, stat: str, bare_key: str) -> float | None:
        bare = (self.calibration or {}).get("bare", {}).get(bare_key)
        value = getattr(self.run.latency_ns, stat)
        if not bare or value is None or self.run.scenario not in ("SingleStream", "MultiStream"):
            return None
        return float(value / 1e9 / bare - 1.0)

    def keep_calibration_of(self, first: CaseRun) -> None:
        """A rerun measures without calibrating (session.rerun_if_short): it keeps the first run's bare-loop
        figures, which its harness efficiency is read against, instead of having none."""
        if self.calibration is None and first.calibration is not None:
            self.calibration = first.calibration

    def _fail(self, message: str) -> None:
        pytest.fail(f"{message}\nLoadGen logs: {self.log_dir}", pytrace=False)

    def assert_valid(self) -> None:
        """LoadGen's own verdict (min duration, min queries, early stopping, latency bound). A profile may accept
        reasons by design (smoke runs are too short for early stopping); those are noted, not hidden."""
        run = self.run
        if run.errors:
            self._fail(f"LoadGen logged {len(run.errors)} error(s):\n  " + "\n  ".join(run.errors))
        if run.log_problems:  # a log cut short or damaged: its figures are not LoadGen's whole record
            self._fail("LoadGen's logs of this run are damaged, so its figures cannot be trusted (MLCommons' checker "
                       "refuses such logs):\n  " + "\n  ".join(run.log_problems))
        if run.mode != "PerformanceOnly" or run.valid:
            return
        unmet = sorted(k for k, ok in run.constraints.items() if not ok)
        blocking = [k for k in unmet if k.removesuffix("_met") not in self.tolerated]
        if blocking or not unmet:
            reasons = "; ".join(run.invalid_reasons) or "no reason logged"
            hint = f"\n{SHORT_RUN_HINT}" if "min_duration_met" in blocking else ""
            if run.scenario == "Server" and "perf_constraints_met" in blocking and self.search is None:
                hint += f"\n{server_latency_hint(self.server_target)}"
            self._fail(
                f"LoadGen judged the {run.scenario} run INVALID: {reasons} (unmet: {', '.join(unmet) or 'none'}){hint}"
            )
        note = f"INVALID for LoadGen only by {', '.join(unmet)}, which the {self.profile} profile accepts"
        if run.scenario == "Server" and "perf_constraints_met" in unmet and self.search is None:
            note += f"; {server_latency_hint(self.server_target)}"
        self.notes.append(note)

    def assert_accuracy(self) -> None:
        """With a real model and real data: MLPerf's accuracy targets. With a stand-in, accuracy is equality with
        the baseline's outputs (see BaselineCheck)."""
        if self.accuracy is None:
            self._fail("assert_accuracy() needs an accuracy-mode run (--mlperf-mode=accuracy or both)")
            return
        if not self.real_data:
            return
        for metric, minimum in self.accuracy_targets.items():
            value = self.accuracy.get(metric)
            if value is None:
                self._fail(f"accuracy metric {metric} missing from the run's accuracy result")
            elif float(value) < minimum:
                self._fail(f"accuracy {metric} = {float(value):.5f} is below MLPerf's target {minimum:.5f}")

    def assert_latency(self, *, p90_ms: float | None = None, p99_ms: float | None = None) -> None:
        lat = self.run.latency_ns
        for name, limit, value in (("p90", p90_ms, lat.p90), ("p99", p99_ms, lat.p99)):
            if limit is None:
                continue
            if value is None:
                self._fail(f"the run logged no {name} latency")
            elif value / 1e6 > limit:
                self._fail(f"{name} latency {value / 1e6:.3f} ms exceeds the threshold {limit:.3f} ms")

    def assert_throughput(self, *, min_samples_per_s: float) -> None:
        value = self.run.metrics.get("result_samples_per_second") or self.run.metrics.get(
            "result_completed_samples_per_sec"
        )
        if value is None:
            self._fail(f"the {self.run.scenario} run logged no throughput")
        elif value < min_samples_per_s:
            self._fail(f"throughput {value:.6g} samples/s is below the threshold {min_samples_per_s:.6g}")

    def to_record(self) -> dict[str, Any]:
        """What the results JSON keeps of this case."""
        accuracy = None
        if self.accuracy is not None:
            accuracy = {k: v for k, v in self.accuracy.items() if k != "predictions"}
        return {
            "nodeid": self.nodeid,
            "key": self.key.__dict__,
            "recipe": self.recipe,
            "profile": self.profile,
            "log_dir": self.log_dir,
            "backend": self.backend,
            "system": self.system,
            "run": self.run.to_dict(),
            "metrics": {n: m.value for n, m in self.metrics.items()},
            "harness_efficiency": self.harness_efficiency,
            "latency_overhead": self.latency_overhead,
            "latency_tail_overhead": self.latency_tail_overhead,
            "calibration": self.calibration,
            "schedule": self.schedule,
            "test": self.test,
            "accuracy": accuracy,
            "stand_ins": list(self.stand_ins),
            "notes": list(self.notes),
            "missing_baseline": self.missing_baseline,
            "baseline_path": self.baseline_path,
            "outputs_match": self.outputs_match,
            "gate": self.gate.to_record() if self.gate is not None else None,
            "gpus": self.gpus,
            "repeats": self.repeats,
            "timings": self.timings,
            "runner_pid": self.runner_pid,
            "runner_cpus": self.runner_cpus,
            "sut_options": self.sut_options,
            "server_target": self.server_target,
            "server_search": self.search.to_record() if self.search is not None else None,
        }


TARGET_WHY = {
    "baseline": "the load its stored baseline was recorded at, so that the two compare",
    "search": "a run of the capacity search (--mlperf-server-search)",
}


def server_target_of(run: Run, test: TestRequest, calibration: dict[str, Any] | None, model: str,
                     source: str | None) -> dict[str, Any]:
    """The target QPS a Server run used (LoadGen's effective value) and why: a user.conf's target_qps wins over
    everything (LoadGen keeps it), then what the caller said (baseline, search, an earlier run), then the
    calibration's half of the bare loop's throughput, else mlperf.conf's value."""
    qps = finite_number(run.settings.get("target_qps")) or test.server_target_qps
    conf = test.user_conf
    if conf and Path(conf).is_file() and "target_qps" in user_conf_keys(Path(conf), model, "Server"):
        source, why = "user.conf", f"{conf} sets target_qps"
    elif source is not None:
        why = TARGET_WHY.get(source, source)
    elif calibration is not None:
        bare = (calibration.get("bare") or {}).get("samples_per_s")
        measured = f" ({float(bare):,.1f} samples/s)" if bare else ""
        source, why = "calibration", f"half the throughput the calibration's bare loop measured{measured}"
    else:
        source, why = "mlperf.conf", "mlperf.conf's target_qps for the model (this profile does not calibrate)"
    return {"qps": float(qps) if qps else None, "source": source, "why": why}
