"""Per-process session state and the objects the fixtures hand to benchmark tests.

`MlperfSession` lives in `config.stash`; it owns the runner pool of this process (the controller, or one xdist
worker). Results and baselines to write travel to the controller on the test report (`user_properties`), and
only the controller writes files. The overhead gate is `LoadGenDriver`'s through host/gate/driver.py, the Server search
and the capacity gate through host/driver/search.py; what a case hosts is host/driver/sut_handle.py's `SUTHandle`, where it runs
host/machine/case_placement.py's, and what one run of it is asked to do once its runner is up, host/case.py resolves."""

from __future__ import annotations

import re
import shutil
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from pytest_mlperf.contract.loadgen_run import Run
from pytest_mlperf.contract.protocol import RunRequest
from pytest_mlperf.contract.test_request import TestRequest, user_conf_keys
from pytest_mlperf.host.baselines.store import BaselineError, CaseKey, key_mismatch, load_baseline
from pytest_mlperf.host.case import CaseSpec, case_spec
from pytest_mlperf.host.driver.cases import CaseRun, rerun_expected_qps, server_target_of
from pytest_mlperf.host.driver.search import SearchDriving
from pytest_mlperf.host.driver.sut_handle import SUTHandle, stand_ins
from pytest_mlperf.host.gate.driver import GateDriving
from pytest_mlperf.host.machine.case_placement import case_cpus, case_gpus, waiting
from pytest_mlperf.host.machine.gpulock import GpuLockTimeout, acquire_gpus
from pytest_mlperf.host.machine.gpus import gpu_state, leftover_notes
from pytest_mlperf.host.machine.placement import Placement
from pytest_mlperf.host.machine.system import SystemInfo, describe_system
from pytest_mlperf.host.pool.client import Runner, RunnerError, RunnerPool
from pytest_mlperf.host.pool.recipe import LaunchRecipe, interpreter_hint
from pytest_mlperf.host.progress import Report, Sink, reporter
from pytest_mlperf.host.settings import Settings

RECORD_PROPERTY = "mlperf_case"  # user_properties name of a case's record (to the controller)
BASELINE_PROPERTY = "mlperf_baseline"  # user_properties name of a baseline to write (on --mlperf-update-baselines)


def safe_name(nodeid: str) -> str:
    """A test id as one directory name."""
    name = nodeid.split("::", 1)[-1] if "::" in nodeid else nodeid
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name).strip("_")[:150] or "case"


@dataclass
class MlperfSession:
    settings: Settings
    rootdir: Path
    placement: Placement = field(default_factory=Placement)
    pool: RunnerPool | None = None
    progress: Sink | None = None  # where the phases of each case are said (the terminal, without xdist: host/plugin.py)
    _systems: dict[tuple[str, str | None], SystemInfo] = field(default_factory=dict)

    @property
    def reference(self) -> LaunchRecipe:
        return self.settings.reference

    @property
    def results_dir(self) -> Path:
        d = self.settings.results_dir
        return d if d.is_absolute() else self.rootdir / d

    @property
    def baselines_dir(self) -> Path:
        d = self.settings.baselines_dir
        return d if d.is_absolute() else self.rootdir / d

    def system(self, device: str, cuda_visible_devices: str | None) -> SystemInfo:
        """The system of a runner; asked once per GPU set (nvidia-smi takes a while without persistence mode,
        and the gate asks for every round)."""
        key = (device, cuda_visible_devices)
        if key not in self._systems:
            self._systems[key] = describe_system(device, cuda_visible_devices)
        return self._systems[key]

    def runners(self) -> RunnerPool:
        if self.pool is None:
            self.pool = RunnerPool(self.results_dir / "runners")
        return self.pool

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


@dataclass(frozen=True)
class PlannedRun:
    """One run of a case, planned (`LoadGenDriver.execute`'s first step): its runner up, its request built."""

    recipe: LaunchRecipe  # pinned to the case's GPUs and CPUs
    gpus: tuple[str, ...]
    notes: list[str]  # the case's notes so far; measuring adds to them
    pool: RunnerPool
    runner: Runner
    report: Report | None
    case_name: str  # the case in progress lines, with which run of it
    began: float  # time.perf_counter() at the start, for the case's timings
    runner_start_s: float
    backend: dict[str, Any]
    system: SystemInfo
    key: CaseKey
    spec: CaseSpec
    request: RunRequest
    target_source: str | None  # why a Server test has its target QPS (None: the calibration or mlperf.conf)


@dataclass
class LoadGenDriver(SearchDriving, GateDriving):
    """The `loadgen` fixture: runs one LoadGen test of this case in the SUT's runner."""

    session: MlperfSession
    item: pytest.Item
    scenario: str
    mode: str
    timeout_s: float | None
    recipe: LaunchRecipe | None = None

    def log_dir(self, suffix: str = "") -> Path:
        return self.session.results_dir / "logs" / (safe_name(self.item.nodeid) + suffix)

    def test_request(self, sut: SUTHandle, scenario: str, mode: str, log_dir: Path, total: int) -> TestRequest:
        s = self.session.settings
        p = s.profile
        return TestRequest(
            loadgen_model=sut.spec.loadgen_model,
            scenario=scenario,
            mode=mode,
            log_dir=str(log_dir),
            total_sample_count=total,
            performance_sample_count=p.performance_sample_count,
            min_duration_ms=s.duration_ms or p.min_duration_ms,
            min_query_count=p.min_query_count.get(scenario),
            user_conf=str(s.user_conf) if s.user_conf else None,
            server_target_qps=None,
            multi_stream_samples_per_query=sut.spec.multistream_samples_per_query if p.name != "official" else None,
            accuracy_sample_count=p.performance_sample_count if p.name == "smoke" else None,
        )

    def baseline_target_qps(self, key: CaseKey) -> float | None:
        """A Server case runs at the load its baseline was recorded at, so that the two are comparable
        (a corrupt baseline is reported by the baseline check, not here)."""
        if self.session.settings.update_baselines:
            return None
        try:
            baseline = load_baseline(key.path(self.session.baselines_dir))
        except BaselineError:
            return None
        if baseline is None or key_mismatch(baseline, key):  # another case's file is judged (and failed) later
            return None
        qps = baseline.settings.get("server_target_qps")
        return float(qps) if qps else None

    def run(self, sut: SUTHandle, scenario: str | None = None, mode: str | None = None,
            *, server_target_qps: float | None = None, log_suffix: str = "") -> CaseRun:
        """One LoadGen test of this case; under the overhead gate, the gate's rounds (see `gate_run`)."""
        scenario = scenario or self.scenario
        mode = mode or self.mode
        gate = self.session.settings.gate
        settings = self.session.settings
        recipe = self.recipe or self.session.reference
        # open until the run's CaseRun is kept: a case that fails before has a failure record (failure_record)
        self.item.stash[ATTEMPT_KEY] = {
            "key": {"workload": sut.workload, "scenario": scenario, "mode": mode, "backend": sut.load.backend,
                    "precision": "?", "system": "?"},
            "recipe": recipe.describe(), "log_dir": str(self.log_dir(log_suffix)),
            "profile": settings.profile.name, "sut_options": sut.options_record(),
        }
        searched = settings.server_search and scenario == "Server" and mode == "performance"
        if gate is not None and self.recipe is None:
            if searched:  # the gate judges capacity: a search per arm per round (host/gate/capacity.py)
                case = self.capacity_gate_run(sut, scenario, mode, gate, log_suffix)
            else:
                case = self.gate_run(sut, scenario, mode, gate, log_suffix)
            self.keep(case)
            return case
        if searched:
            return self.search_run(sut, recipe, scenario, mode, log_suffix)
        case = self.execute(sut, recipe, scenario, mode, self.log_dir(log_suffix),
                            server_target_qps=server_target_qps)
        case = self.rerun_if_short(sut, recipe, scenario, mode, log_suffix, case)
        self.keep(case)  # a repeat that fails leaves this run in the results, with the failure's reason
        if settings.update_baselines and mode == "performance":  # a baseline records its own noise
            fixed = TestRequest.from_dict(case.test)
            for k in range(2, settings.baseline_repeats + 1):
                again = self.execute(sut, recipe, scenario, mode, self.log_dir(f"{log_suffix}-repeat{k}"),
                                     fixed=fixed, calibrate=False, label=f"repeat {k} of {settings.baseline_repeats}")
                case.repeats.append({n: m.value for n, m in again.metrics.items()})
        return case

    def rerun_if_short(self, sut: SUTHandle, recipe: LaunchRecipe, scenario: str, mode: str, log_suffix: str,
                       case: CaseRun, tries: int = 2) -> CaseRun:
        """An Offline run that ran out of work before its min duration (its expectation too low: a busy machine
        during calibration) runs again, expecting what it really did, at most `tries` more times; the case says so."""
        conf = case.test.get("user_conf")
        if conf and "target_qps" in user_conf_keys(Path(conf), sut.spec.loadgen_model, scenario):
            return case  # the user's own expectation, which LoadGen keeps: the failure says to raise it
        first = case
        for k in range(1, tries + 1):
            expected = case.test.get("offline_expected_qps")
            qps = rerun_expected_qps(case.run, expected, self.session.settings.profile.expectation_margin)
            if qps is None:
                return case
            fixed = replace(TestRequest.from_dict(case.test), offline_expected_qps=qps)
            case = self.execute(sut, recipe, scenario, mode, self.log_dir(log_suffix), fixed=fixed, calibrate=False,
                                label=f"run {k + 1}, expecting {qps:,.1f} samples/s")
            case.keep_calibration_of(first)
            told = first.test.get("offline_expected_qps")
            case.notes.append(
                f"run {k + 1}: the first run did {first.run.metrics.get('result_samples_per_second', 0.0):,.1f} "
                f"samples/s where LoadGen expected {f'{told:,.1f}' if told else 'the default'} and ran out of work "
                f"before its min duration (a busy machine while calibrating?); this run expected {qps:,.1f}")
        return case

    def keep(self, case: CaseRun) -> None:
        self.item.stash.setdefault(CASES_KEY, []).append(case)
        if ATTEMPT_KEY in self.item.stash:
            del self.item.stash[ATTEMPT_KEY]

    def _attempt(self, **known: Any) -> None:
        """What is known of the case being attempted, for its failure record should it fail."""
        attempt = self.item.stash.get(ATTEMPT_KEY, None)
        if attempt is not None:
            attempt.update(known)

    def execute(self, sut: SUTHandle, recipe: LaunchRecipe, scenario: str, mode: str, log_dir: Path, *,
                server_target_qps: float | None = None, fixed: TestRequest | None = None,
                calibrate: bool = True, label: str = "", in_round: bool = False,
                target_source: str | None = None) -> CaseRun:
        """Runs one LoadGen test in the runner of `recipe`. `fixed` is a test request whose expectations (and
        duration) are kept, so that runs of a gate do identical work; `calibrate=False` skips the bare-loop
        measurement and warm-up (a runner's harness stays warm across its tests). Its phases are said on the
        session's progress sink, naming the case and `label` (which run of it); those of a gate round only with -v.
        Three steps: plan (runner up, request built), measure (the LoadGen test, its GPUs locked), judge (the
        run's record)."""
        plan = self._plan_run(sut, recipe, scenario, mode, log_dir, server_target_qps=server_target_qps, fixed=fixed,
                              calibrate=calibrate, label=label, in_round=in_round, target_source=target_source)
        result, gpu_records = self._measure_run(plan, scenario, mode, log_dir)
        return self._judge_run(sut, plan, scenario, log_dir, result, gpu_records)

    def _plan_run(self, sut: SUTHandle, recipe: LaunchRecipe, scenario: str, mode: str, log_dir: Path, *,
                  server_target_qps: float | None, fixed: TestRequest | None, calibrate: bool, label: str,
                  in_round: bool, target_source: str | None) -> PlannedRun:
        """A run's plan: its recipe pinned, its runner started (or reused), its case key, test and request."""
        recipe, gpus, notes = self._pinned(sut, recipe)
        pool = self.session.runners()
        case_name = self.case_label(sut, scenario, mode, label)
        report = reporter(self.session.progress, case_name, in_round=in_round)
        began = time.perf_counter()
        runner = self._start_runner(pool, recipe, sut, report)
        runner_start_s = time.perf_counter() - began
        device = str(runner.info["backend"]["device"])
        backend = runner.info["backend"]
        system = self.session.system(device, ",".join(gpus) if gpus else recipe.env.get("CUDA_VISIBLE_DEVICES"))
        key = CaseKey(sut.workload, scenario, mode, backend["backend"], backend["precision"], system.key)
        self._attempt(key=dict(key.__dict__), backend=dict(backend), system={"key": system.key, **system.details},
                      gpus=[self.session.placement.describe(u) for u in gpus], runner_pid=runner.info.get("pid"))
        shutil.rmtree(log_dir, ignore_errors=True)  # logs of an earlier session must not mix with this run's
        test, target_source = self._test_for(sut, scenario, mode, log_dir, runner.info, key, fixed,
                                             server_target_qps, target_source)
        settings = self.session.settings
        spec = case_spec(settings.profile, sut.spec, device=device, batch_size=sut.batch_size, streams=sut.streams,
                         sut_calibrates=sut.calibrate, run_calibrates=calibrate,
                         min_duration_ms=test.min_duration_ms, timeout_s=self.timeout_s,
                         server_batch_wait_s=settings.server_batch_wait_s)
        request = RunRequest(
            test=test, batch_size=spec.batch_size, streams=spec.streams, calibrate=spec.calibrate,
            calibrate_seconds=spec.calibrate_seconds, server_latency_floor_factor=spec.server_latency_floor_factor,
            official_server_latency_ns=spec.official_server_latency_ns, expectation_margin=spec.expectation_margin,
            server_batch_wait_s=spec.server_batch_wait_s,
            timeout_s=spec.timeout_s,  # the runner refuses a test predicted to outlast it
        )
        return PlannedRun(recipe=recipe, gpus=gpus, notes=notes, pool=pool, runner=runner, report=report,
                          case_name=case_name, began=began, runner_start_s=runner_start_s, backend=backend,
                          system=system, key=key, spec=spec, request=request, target_source=target_source)

    def _pinned(self, sut: SUTHandle, recipe: LaunchRecipe) -> tuple[LaunchRecipe, tuple[str, ...], list[str]]:
        """`recipe` pinned to the case's GPUs and CPUs, those GPUs, and the notes the pinning and the backend
        options leave."""
        gpus = case_gpus(self.session.placement, sut.gpus)
        if gpus:  # pinned before the runner starts; a runner per GPU set (the pool is keyed by recipe)
            recipe = replace(recipe, gpus=gpus)
        notes: list[str] = []
        affinity = case_cpus(self.session.settings.cpu_affinity, gpus, self.session.placement.visible)
        if affinity.cpus is not None:  # the same CPUs for reference and candidate (host/machine/cpus.py)
            recipe = replace(recipe, cpus=affinity.cpus)
        if affinity.note:
            notes.append(affinity.note)
        notes.extend(f"sut option {k}={sut.load.options[k]!r} from {src}" for k, src in sut.option_sources.items()
                     if "over the marker" in src)  # the run deviates from what its benchmark declares
        return recipe, gpus, notes

    def _start_runner(self, pool: RunnerPool, recipe: LaunchRecipe, sut: SUTHandle, report: Report | None) -> Runner:
        """The runner of `recipe` hosting `sut` (started, or a live one reused); one that cannot start fails the
        case."""
        try:
            runner = pool.get(recipe, sut.load, report)
        except (RunnerError, OSError) as exc:  # OSError: its log could not be written
            failure = f"could not start the {sut.workload} runner ({recipe.name}: {recipe.describe()}): {exc}"
            if sut.load.options:  # a bad value is the backend's to refuse: say where each option was set
                failure += f"\n{sut.load.backend} options given: {sut.options_described()}"
            hint = interpreter_hint(recipe, str(exc))
            failure += f"\n{hint}" if hint else ""
        else:
            return runner
        pytest.fail(failure, pytrace=False)  # outside the except block: no chained traceback in the report
        raise AssertionError  # pragma: no cover - pytest.fail raises

    def _test_for(self, sut: SUTHandle, scenario: str, mode: str, log_dir: Path, runner_info: dict[str, Any],
                  key: CaseKey, fixed: TestRequest | None, server_target_qps: float | None,
                  target_source: str | None) -> tuple[TestRequest, str | None]:
        """The test a run makes, and why its Server target is what it is: `fixed` (a gate's or a search's) with this
        run's log folder, else the case's own test at the target the caller gave or the baseline's."""
        if fixed is not None:
            total = fixed.total_sample_count or int(runner_info["total_count"])
            return replace(fixed, log_dir=str(log_dir), total_sample_count=total), target_source
        test = self.test_request(sut, scenario, mode, log_dir, int(runner_info["total_count"]))
        if server_target_qps is not None:
            target_source = target_source or "the benchmark (loadgen.run(server_target_qps=...))"
        elif scenario == "Server":
            server_target_qps = self.baseline_target_qps(key)
            target_source = "baseline" if server_target_qps is not None else target_source
        if server_target_qps is not None:
            test = replace(test, server_target_qps=server_target_qps)
        return test, target_source

    def _measure_run(self, plan: PlannedRun, scenario: str, mode: str,
                     log_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The run's LoadGen test, its GPUs locked against other sessions: the runner's result and the GPUs' state
        before and after. A lock not had in time, or a runner that fails, fails the case."""
        doing = f"{scenario} {mode} test {self.item.nodeid} ({plan.recipe.name})"
        gpus, notes, runner = plan.gpus, plan.notes, plan.runner
        failure: str | None = None
        try:
            with acquire_gpus(gpus, timeout_s=self.session.settings.gpu_lock_timeout_s,
                              owner=f"{self.item.nodeid} ({plan.recipe.name})",
                              on_wait=lambda uuid, holder: waiting(self.session.progress, plan.case_name, notes, uuid, holder)):
                for note in leftover_notes(gpus, plan.pool.ended_pids()) if gpus else ():
                    notes.append(note)  # in the results table's notes, and as a pytest warning
                    warnings.warn(pytest.PytestWarning(note), stacklevel=1)
                start = {u: {**gpu_state(u), "time": time.time()} for u in gpus}
                result = runner.run(plan.request, plan.spec.timeout_s, doing, plan.report)
                gpu_records = [{**self.session.placement.describe(u), "start": start[u],
                                "end": {**gpu_state(u), "time": time.time()}} for u in gpus]
        except GpuLockTimeout as exc:
            failure = f"{exc} (--mlperf-gpu-lock-timeout)"
        except RunnerError as exc:
            if not runner.alive:  # a test refused before it started (too long) leaves its runner up for the next
                plan.pool.discard(runner)
            failure = f"{exc}\nLoadGen logs: {log_dir}"
        if failure is not None:
            pytest.fail(failure, pytrace=False)
        return result, gpu_records

    def _judge_run(self, sut: SUTHandle, plan: PlannedRun, scenario: str, log_dir: Path, result: dict[str, Any],
                   gpu_records: list[dict[str, Any]]) -> CaseRun:
        """The run's record: its parsed LoadGen result, the Server target it ran at and why, and where it ran."""
        run = Run.from_dict(result["run"])
        test, target_source = plan.request.test, plan.target_source
        server_target = None
        if scenario == "Server":
            given = test.server_target_qps is not None and target_source is None
            server_target = server_target_of(run, test, result.get("calibration"), sut.spec.loadgen_model,
                                             target_source or ("an earlier run of this case" if given else None))
        profile, system, runner = self.session.settings.profile, plan.system, plan.runner
        return CaseRun(
            nodeid=self.item.nodeid, key=plan.key, run=run, log_dir=str(log_dir),
            profile=profile.name, tolerated=profile.tolerated, backend=plan.backend,
            system={"key": system.key, **system.details}, recipe=plan.recipe.describe(), test=result["test"],
            calibration=result.get("calibration"), schedule=result.get("schedule"), accuracy=result.get("accuracy"),
            accuracy_targets=dict(sut.spec.accuracy_targets),
            real_data=sut.load.data.model_path is not None and sut.load.data.dataset_path is not None,
            stand_ins=stand_ins(sut),
            notes=plan.notes, gpus=gpu_records,
            timings={"runner_start_s": plan.runner_start_s, **result.get("timings", {}),
                     "case_s": time.perf_counter() - plan.began},
            runner_pid=runner.info.get("pid"), runner_cpus=runner.info.get("cpus"), server_target=server_target,
            sut_options=sut.options_record(),
        )

    def case_label(self, sut: SUTHandle, scenario: str, mode: str, label: str = "") -> str:
        """The case in a progress line: 'resnet50 Offline performance', and which run of it."""
        return f"{sut.workload} {scenario} {mode}" + (f" ({label})" if label else "")


CASES_KEY = pytest.StashKey[list]()
ATTEMPT_KEY = pytest.StashKey[dict]()  # the case LoadGenDriver.run is measuring, until its CaseRun is kept
