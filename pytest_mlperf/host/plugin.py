"""pytest entry point: the `mlperf` marker, fixtures, and thin hooks.

Logic lives in host/options.py (the --mlperf-* options, their ini twins, `build_settings`), host/settings.py (parsing),
host/driver/loadgen_driver.py (fixtures' objects), host/driver/cases.py (judgement), host/baselines/store.py and host/results/report.py. Under pytest-xdist, workers
measure and attach records to their reports; the controller alone writes results and baselines."""

from __future__ import annotations

import os
from collections.abc import Generator
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_mlperf.contract.workloads import MODEL_CHECKS, workload_spec
from pytest_mlperf.host import settings as S
from pytest_mlperf.host.baselines.check import BaselineCheck
from pytest_mlperf.host.controller import CLAIM_KEY, SCENARIO_SKIP, ControllerReporter
from pytest_mlperf.host.driver.loadgen_driver import LoadGenDriver, MlperfSession
from pytest_mlperf.host.driver.sut_handle import SUTHandle, make_sut
from pytest_mlperf.host.interrupt import stop_on_sigterm
from pytest_mlperf.host.machine.gpus import PlacementError, auto_num_workers, discover
from pytest_mlperf.host.machine.placement import RANK_KEY, WORKERS_KEY, local_ranks, place
from pytest_mlperf.host.options import OPTIONS, _parsed, _value, add_options, build_settings
from pytest_mlperf.host.outputs import SESSION_DIR_KEY, OutputError, claim_outputs_of, refuse_shared_cpu_baselines
from pytest_mlperf.host.progress import shown
from pytest_mlperf.host.results.records import report_properties

SESSION_KEY = pytest.StashKey[MlperfSession]()
OUTPUT_PROBLEM = pytest.StashKey[str]()  # why the results folder cannot be written (raised once a case is found)
OUTPUT_PROBLEM_KEY = "mlperf_output_problem"  # the same, in workerinput


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)  # host/options.py: the table of --mlperf-* options and their ini twins


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "mlperf(workload, scenarios=None, backend=None, batch_size=None, streams=None, sut_options=None, "
        "tolerance=None, timeout=None, calibrate=True, gpus=1): an MLPerf benchmark case measured by LoadGen",
    )
    settings = build_settings(config)
    for name in [*settings.models, *settings.datasets]:
        try:
            workload_spec(name)
        except ValueError as exc:
            raise pytest.UsageError(f"--mlperf-model/--mlperf-dataset: {exc}") from None
    for name, path in settings.models.items():  # a workload that knows its model's form checks it up front
        check_model = MODEL_CHECKS.get(name)
        try:
            if check_model is not None:
                check_model(path)
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
    state = MlperfSession(settings=settings, rootdir=Path(config.rootpath))
    config.stash[SESSION_KEY] = state
    if mlperf_requested(config):
        activate(config)
    workerinput = getattr(config, "workerinput", None)
    numprocesses = getattr(config.option, "numprocesses", None)
    workers = numprocesses if isinstance(numprocesses, int) else 0
    # placement is known here whenever it matters: recording baselines is an --mlperf-* option, which activates
    cpu_only = config.stash.get(ACTIVE_KEY, False) and not state.placement.visible
    state.settings = claim_outputs(config, settings, workerinput, workers, cpu_only=cpu_only)
    if workerinput is None:  # xdist workers measure; only the controller writes files
        state.progress = TerminalProgress(config)  # an xdist worker has no terminal: its phases are not shown
        # both stay idle in a session without MLPerf cases: the reporter has no records, placement numbers workers
        config.pluginmanager.register(ControllerReporter(config, state), "mlperf-controller")
        if config.pluginmanager.hasplugin("xdist"):
            config.pluginmanager.register(XdistPlacement(), "mlperf-xdist-placement")
            config.pluginmanager.register(WorkerResultsDir(state.settings.results_dir), "mlperf-xdist-results-dir")


def claim_outputs(config: pytest.Config, settings: S.Settings, workerinput: dict[str, Any] | None, workers: int,
                  cpu_only: bool) -> S.Settings:
    """Output locations checked before the first case: the controller claims a results folder of its own
    (host/outputs.py) and, when it will record baselines, checks their folder; a worker writes where its controller
    said. Recording baselines from CPU cases that share the cores (-n 2 without GPUs) is refused unless asked."""
    root = Path(config.rootpath)
    if getattr(config.option, "help", False) or getattr(config.option, "version", False):
        return settings  # `pytest --help` works whatever the folders are
    if workerinput is not None:
        if workerinput.get(OUTPUT_PROBLEM_KEY):
            config.stash[OUTPUT_PROBLEM] = str(workerinput[OUTPUT_PROBLEM_KEY])
        given = workerinput.get(SESSION_DIR_KEY)
        return replace(settings, results_dir=Path(given)) if given else settings
    try:
        if settings.update_baselines:
            refuse_shared_cpu_baselines(workers, cpu_only or settings.device == "cpu",
                                        bool(_parsed(config, "shared-cpu-baselines", bool, False)))
        claim = claim_outputs_of(root / settings.results_dir,
                                 root / settings.baselines_dir if settings.update_baselines else None)
    except OutputError as exc:
        if not settings.update_baselines:  # the plugin loads in every pytest session: a session without MLPerf
            config.stash[OUTPUT_PROBLEM] = str(exc)  # cases must run whatever ./mlperf-results is (see below)
            return settings
        raise pytest.UsageError(str(exc)) from None
    config.stash[CLAIM_KEY] = claim
    return replace(settings, results_dir=claim.path)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A results folder that cannot be written stops the session once it is known to hold an MLPerf case, before
    the first one runs. An xdist worker cannot stop its session this way (xdist reports an INTERNALERROR): there
    each MLPerf case fails at setup with the same message (pytest_runtest_setup). A collected MLPerf case also
    activates the session's MLPerf machinery (activate)."""
    if not any(i.get_closest_marker("mlperf") is not None for i in items):
        return
    try:
        activate(config)
    except pytest.UsageError:  # raised here, an xdist worker would crash; each case's fixtures say it instead
        pass
    problem = config.stash.get(OUTPUT_PROBLEM, None)
    if problem and not hasattr(config, "workerinput"):
        raise pytest.UsageError(problem)


def pytest_runtest_setup(item: pytest.Item) -> None:
    problem = item.config.stash.get(OUTPUT_PROBLEM, None)
    if problem and item.get_closest_marker("mlperf") is not None:
        pytest.fail(problem, pytrace=False)


def pytest_report_header(config: pytest.Config) -> list[str]:
    claim = config.stash.get(CLAIM_KEY, None)
    return [f"mlperf: {claim.note}"] if claim is not None and claim.note else []


def pytest_unconfigure(config: pytest.Config) -> None:
    claim = config.stash.get(CLAIM_KEY, None)
    if claim is not None:
        claim.release()


class TerminalProgress:
    """Writes a case's phase lines (host/progress.py) through pytest's terminal reporter, as they happen, at the
    verbosity each needs (-q fewer, -qq none); nothing without the terminal plugin (-p no:terminal). Capture is
    suspended around each line, as pytest's live logging does, so the line reaches the terminal."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def __call__(self, text: str, needed: int) -> None:
        if not shown(needed, int(self.config.getoption("verbose", 0) or 0)):
            return
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        if terminal is None:
            return
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture is not None else nullcontext():
            terminal.write_line(text)


class WorkerResultsDir:
    """Controller side: tells each xdist worker the results folder this session claimed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[SESSION_DIR_KEY] = str(self.path)
        problem = node.config.stash.get(OUTPUT_PROBLEM, None)
        if problem:
            node.workerinput[OUTPUT_PROBLEM_KEY] = problem


# --- activation: the plugin is installed everywhere pytest is, and must leave other suites alone ---------------

ACTIVE_KEY = pytest.StashKey[bool]()
ACTIVATION_ERROR_KEY = pytest.StashKey[str]()  # why this process cannot measure (said by each case that tries)


def mlperf_requested(config: pytest.Config) -> bool:
    """Whether the session asks for MLPerf before collection: an --mlperf-* option or an mlperf ini key is set.
    Only then does `-n auto` count GPUs; a session that only collects mlperf cases is activated by them."""
    return any(_value(config, name) is not None for name, _, _, _ in OPTIONS)


def activate(config: pytest.Config) -> None:
    """MLPerf's session machinery, once: GPU discovery and this process's placement (a usage error when the
    workers outnumber the GPUs). Called when the session asks for MLPerf, when an mlperf case is collected, and by
    the MLPerf fixtures; a session with none of them never discovers GPUs."""
    if config.stash.get(ACTIVE_KEY, False):
        return
    if ACTIVATION_ERROR_KEY in config.stash:
        raise pytest.UsageError(config.stash[ACTIVATION_ERROR_KEY])
    workerinput = getattr(config, "workerinput", None)
    numprocesses = getattr(config.option, "numprocesses", None)
    try:
        placement = place(discover(), workerinput, numprocesses if isinstance(numprocesses, int) else 1)
    except PlacementError as exc:
        hint = "" if mlperf_requested(config) else (
            " (-n auto counts GPUs only in a session started with an --mlperf-* option or mlperf ini key)")
        config.stash[ACTIVATION_ERROR_KEY] = f"{exc}{hint}"
        raise pytest.UsageError(config.stash[ACTIVATION_ERROR_KEY]) from None
    config.stash[SESSION_KEY].placement = placement
    config.stash[ACTIVE_KEY] = True


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` in an MLPerf session: one worker per visible GPU; without a GPU, or in another suite, xdist's own
    choice. tryfirst: the hook takes the first answer, and xdist's own (the CPU count) answers first whenever this
    plugin was registered before xdist (`-p pytest_mlperf.host.plugin`: 16 workers on the one-GPU H200)."""
    return auto_num_workers(discover()) if mlperf_requested(config) else None


class XdistPlacement:
    """Controller side of GPU placement: numbers the workers of each host, so each takes its own GPU there."""

    def __init__(self) -> None:
        self.ranks: dict[str, tuple[int, int]] = {}

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_setupnodes(self, config: pytest.Config, specs: list[Any]) -> None:
        self.ranks = local_ranks(specs)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        rank = self.ranks.get(str(node.gateway.spec.id))
        if rank is not None:
            node.workerinput[RANK_KEY], node.workerinput[WORKERS_KEY] = rank


def _marker_kwargs(node: Any) -> dict[str, Any]:
    marker = node.get_closest_marker("mlperf")
    return dict(marker.kwargs) if marker else {}


def _checked_marker(node: Any) -> dict[str, Any]:
    """The mlperf marker's values for a fixture, parsed; a bad one fails the test, naming the marker and test."""
    kwargs = _marker_kwargs(node)
    try:
        return {**kwargs, **S.check_marker(kwargs, node.nodeid)}
    except ValueError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)
    raise AssertionError  # pragma: no cover - pytest.fail raises


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = metafunc.fixturenames
    if "mlperf_scenario" not in names and "mlperf_mode" not in names:
        return
    kwargs = _marker_kwargs(metafunc.definition)
    workload = kwargs.get("workload")
    if not workload:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid} uses MLPerf fixtures but has no @pytest.mark.mlperf(workload=...)"
        )
    spec = workload_spec(str(workload))
    settings = metafunc.config.stash[SESSION_KEY].settings
    if "mlperf_scenario" in names:
        declared = tuple(kwargs.get("scenarios") or spec.scenarios)
        bad = [s for s in declared if s not in S.SCENARIOS]
        if bad:
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: unknown scenario(s) {bad} in the mlperf marker")
        chosen = [s for s in declared if s in settings.scenarios] if settings.scenarios else list(declared)
        params = [pytest.param(s, id=f"{spec.name}-{s}") for s in chosen]
        if not params:
            reason = (f"{metafunc.definition.name} ({spec.name}) declares {', '.join(declared)}; {SCENARIO_SKIP} "
                      f"{', '.join(settings.scenarios or ())}")
            params = [pytest.param(None, id=f"{spec.name}-none", marks=pytest.mark.skip(reason=reason))]
        metafunc.parametrize("mlperf_scenario", params, indirect=True)
    if "mlperf_mode" in names:
        metafunc.parametrize("mlperf_mode", [pytest.param(m, id=m) for m in settings.modes], indirect=True)


# --- fixtures -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mlperf_session(pytestconfig: pytest.Config) -> MlperfSession:
    activate(pytestconfig)  # a test using MLPerf's fixtures without the marker
    return pytestconfig.stash[SESSION_KEY]


@pytest.fixture(scope="session")
def mlperf_settings(mlperf_session: MlperfSession) -> S.Settings:
    return mlperf_session.settings


@pytest.fixture
def mlperf_scenario(request: pytest.FixtureRequest) -> str:
    """The LoadGen scenario of this case (parametrized from --mlperf-scenario or the benchmark's marker)."""
    return str(request.param)


@pytest.fixture
def mlperf_mode(request: pytest.FixtureRequest) -> str:
    """'performance' or 'accuracy' (parametrized from --mlperf-mode)."""
    return str(request.param)


@pytest.fixture
def mlperf_sut(request: pytest.FixtureRequest, mlperf_session: MlperfSession) -> SUTHandle:
    """The SUT of the workload named by the benchmark's mlperf marker."""
    kwargs = _checked_marker(request.node)
    return make_sut(mlperf_session, str(kwargs["workload"]), kwargs)


@pytest.fixture
def resnet50_sut(request: pytest.FixtureRequest, mlperf_session: MlperfSession) -> SUTHandle:
    """ResNet50 on ONNX Runtime (CUDA when available): --mlperf-model resnet50=PATH or the seeded stand-in."""
    return make_sut(mlperf_session, "resnet50", _checked_marker(request.node))


@pytest.fixture
def llama_sut(request: pytest.FixtureRequest, mlperf_session: MlperfSession) -> SUTHandle:
    """Llama 3.1 8B (MLPerf llama3_1-8b) on transformers (CUDA bf16 when available, else CPU fp32):
    --mlperf-model llama3_1-8b=DIR or the seeded tiny stand-in."""
    return make_sut(mlperf_session, "llama3_1-8b", _checked_marker(request.node))


@pytest.fixture
def null_sut(request: pytest.FixtureRequest, mlperf_session: MlperfSession) -> SUTHandle:
    """A SUT that answers each sample with its index after a delay: for testing the harness itself."""
    return make_sut(mlperf_session, "null", _checked_marker(request.node))


@pytest.fixture
def loadgen(request: pytest.FixtureRequest, mlperf_session: MlperfSession, mlperf_scenario: str,
            mlperf_mode: str) -> LoadGenDriver:
    """Runs LoadGen tests of this case: `loadgen.run(sut)` returns a CaseRun."""
    timeout = mlperf_session.settings.timeout_s or _checked_marker(request.node).get("timeout")
    return LoadGenDriver(mlperf_session, request.node, mlperf_scenario, mlperf_mode,
                         float(timeout) if timeout else None)


@pytest.fixture
def baseline(request: pytest.FixtureRequest, mlperf_session: MlperfSession) -> BaselineCheck:
    """Compares a CaseRun with its stored baseline: `baseline.assert_no_regression(run)`."""
    tolerance = mlperf_session.settings.tolerance
    if tolerance is None:
        marked = _checked_marker(request.node).get("tolerance")
        tolerance = float(marked) if marked is not None else 0.05
    return BaselineCheck(mlperf_session, request.node, tolerance)


# --- reporting ------------------------------------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    report.user_properties.extend(report_properties(item, call, report, worker))


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """SIGTERM stops a session that measures as Ctrl-C does (host/interrupt.py): results written, summary printed."""
    controller = getattr(session.config, "workerinput", None) is None
    distributed = controller and getattr(session.config.option, "dist", "no") != "no"
    if distributed or any(item.get_closest_marker("mlperf") for item in session.items):
        restore = stop_on_sigterm()
        if restore is not None:
            session.config.add_cleanup(restore)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(SESSION_KEY, None)
    if state is not None:
        state.close()  # stops this process's runners (controller or xdist worker)
