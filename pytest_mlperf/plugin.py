"""pytest entry point: options and their ini twins, the `mlperf` marker, fixtures, and thin hooks.

Logic lives in settings.py (parsing), session.py (fixtures' objects), cases.py (judgement), baselines.py and
report.py. Under pytest-xdist, workers measure and attach records to their reports; the controller alone
writes results and baselines."""

from __future__ import annotations

import os
import re
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Generator

import pytest

from . import settings as S
from . import gate_report
from .contract.files import write_json_atomic, write_text_atomic
from .cpus import AFFINITY_MODES, AffinityError, allowed_cpus, case_affinity, parse_affinity
from .outputs import SESSION_DIR_KEY, Claim, OutputError, claim_outputs_of, point_latest, refuse_shared_cpu_baselines
from .report import ResultsCollector
from .gpus import PlacementError, auto_num_workers, discover
from .interrupt import stop_on_sigterm
from .placement import RANK_KEY, WORKERS_KEY, local_ranks, place
from .progress import shown
from .runner.recipe import LaunchRecipe
from .suts.base import OPTION_NAMES
from .userconf import check_user_conf
from .session import (
    BASELINE_PROPERTY,
    RECORD_PROPERTY,
    BaselineCheck,
    LoadGenDriver,
    MlperfSession,
    SUTHandle,
    make_sut,
)
from .records import report_properties
from .workloads import workload_module, workload_spec

SESSION_KEY = pytest.StashKey[MlperfSession]()
CLAIM_KEY = pytest.StashKey[Claim]()
OUTPUT_PROBLEM = pytest.StashKey[str]()  # why the results folder cannot be written (raised once a case is found)
OUTPUT_PROBLEM_KEY = "mlperf_output_problem"  # the same, in workerinput
SCENARIO_SKIP = "--mlperf-scenario asked for"  # in the skip reason of a benchmark that declares none of them

# name, help, argparse kwargs, ini type
_OPTIONS: list[tuple[str, str, dict[str, Any], str]] = [
    ("scenario", "MLPerf scenario(s) to run: Offline, Server, SingleStream, MultiStream; repeat or comma-separate "
     "(default: what each benchmark declares)", {"action": "append"}, "args"),
    ("mode", "performance, accuracy or both (default: performance)", {}, "string"),
    ("profile", "smoke (seconds, CPU/CI), ci (short GPU runs), official (mlperf.conf: 600 s) (default: smoke)", {},
     "string"),
    ("duration", "override LoadGen's min duration, e.g. 5s, 1500ms, 10m", {}, "string"),
    ("device", "auto, cuda or cpu (default: auto)", {}, "string"),
    ("results-dir", "where results JSON and per-case LoadGen logs go (default: mlperf-results)", {}, "string"),
    ("baselines-dir", "where baselines are stored (default: baselines)", {}, "string"),
    ("update-baselines", "record this run's results as the baselines (overwrites, on purpose)",
     {"action": "store_true", "default": None}, "bool"),
    ("require-baselines", "fail a case that has no stored baseline (what a CI gate sets)",
     {"action": "store_true", "default": None}, "bool"),
    ("tolerance", "how much worse than its baseline a metric may be, e.g. 5% (default: 5%)", {}, "string"),
    ("user-conf", "a LoadGen user.conf applied on top of mlperf.conf", {}, "string"),
    ("model", "a real model file for a workload: NAME=PATH (repeatable)", {"action": "append"}, "args"),
    ("dataset", "a real dataset for a workload: NAME=PATH (repeatable)", {"action": "append"}, "args"),
    ("batch-size", "batch size for Offline and Server (default: the workload's; 8 on CPU)", {}, "string"),
    ("streams", "concurrent inference streams (threads) for Offline and Server (default: 3 on CUDA, 1 on CPU)", {},
     "string"),
    ("timeout", "seconds a runner may take for one LoadGen test before it is killed", {}, "string"),
    ("sut-option", "a backend option for this run, BACKEND.KEY=VALUE, e.g. vllm.max_model_len=4096 or "
     "onnxruntime.cuda_graph_max_batch=8 (repeatable; wins over the benchmark marker's sut_options for cases on "
     "that backend; the ini's and the command line's are merged, the command line winning per key)",
     {"action": "append"}, "args"),
    # the overhead gate (gate.py): reference = the plain runner, candidate = the same runner under the layer
    ("candidate-prefix", "command line the candidate runner is launched under, e.g. 'gpu-proxy run --' "
     "(turns the overhead gate on)", {}, "string"),
    ("candidate-env", "NAME=VALUE set for the candidate runner, e.g. LD_PRELOAD=/opt/shim.so (repeatable; turns the "
     "overhead gate on)", {"action": "append"}, "args"),
    ("reference-prefix", "command line the reference (bare-metal) runner is launched under (default: none)", {},
     "string"),
    ("reference-env", "NAME=VALUE set for the reference runner (repeatable)", {"action": "append"}, "args"),
    ("max-overhead", "the gate's limit: the candidate must cost less than this against the reference (default: 5%)",
     {}, "string"),
    ("gate-round", "length of one gate round's LoadGen run, e.g. 1s (default: smoke 0.5s, ci 1s, official 10s)", {},
     "string"),
    ("gate-min-rounds", "rounds before the gate first looks at its interval (default: 12)", {}, "string"),
    ("gate-max-rounds", "most rounds per case before the gate says INCONCLUSIVE (default: 60)", {}, "string"),
    ("gate-budget", "most time one case's rounds may take before INCONCLUSIVE, e.g. 10m (default: 30m)", {},
     "string"),
    ("gate-estimator", "how the gate reads a cost from its rounds: auto (default: on a GPU latency by the arms' "
     "floors, the mean of each arm's best quarter of rounds, and throughput by paired rounds; on a CPU paired "
     "rounds), paired or floor", {}, "string"),
    ("baseline-repeats", "runs recorded per performance baseline with --mlperf-update-baselines; their spread widens "
     "the regression check by what noise alone can do (default: 3)", {}, "string"),
    ("shared-cpu-baselines", "allow --mlperf-update-baselines with several pytest-xdist workers on the CPU, whose cases "
     "share the cores (refused without it)", {"action": "store_true", "default": None}, "bool"),
    ("gpu-lock-timeout", "how long a case waits for its GPU(s) while another session measures on them, e.g. 30m "
     "(default: 1h)", {}, "string"),
    ("server-search", "Server cases find their capacity: the highest target QPS LoadGen judges VALID on the latency "
     "bound (short bracketing and bisection runs, one confirmation at full length); capacity is their headline and "
     "what baselines compare", {"action": "store_true", "default": None}, "bool"),
    ("server-search-budget", "most time one case's capacity search may take, e.g. 10m (default: 30m)", {},
     "string"),
    ("server-batch-wait", "Server: the longest a batch waits for more samples before it runs, e.g. 0 or 0.5ms "
     "(default: a tenth of the latency bound, 1.5 ms for ResNet50)", {}, "string"),
    ("cpu-affinity", "pin runners (and what they start) to CPUs: none (default), auto (the CPUs local to the case's "
     "GPUs, split between GPUs that share them) or a list such as 0-7,16", {}, "string"),
]


def pytest_addoption(parser: pytest.Parser) -> None:
    # argparse before Python 3.13 reads `--mlperf-duration -5s` as a second option and says only "expected one
    # argument"; with 3.13's rule (a dash and a digit is a value), the value reaches our parser and its message
    optparser = getattr(parser, "optparser", None)
    if optparser is not None and hasattr(optparser, "_negative_number_matcher"):
        optparser._negative_number_matcher = re.compile(r"^-\.?\d")
    group = parser.getgroup("mlperf", "MLPerf Inference benchmarks (pytest-mlperf)")
    for name, help_text, kwargs, ini_type in _OPTIONS:
        dest = "mlperf_" + name.replace("-", "_")
        # argparse %-formats help ("5%" broke `pytest --help`); ini help is printed as written
        group.addoption(f"--mlperf-{name}", dest=dest, help=help_text.replace("%", "%%"), **kwargs)
        parser.addini(dest, f"{help_text} [ini twin of --mlperf-{name}]", type=ini_type,  # type: ignore[arg-type]
                      default=None)


def _value(config: pytest.Config, name: str) -> Any:
    """CLI first, then ini; None when neither is set."""
    dest = "mlperf_" + name.replace("-", "_")
    cli = config.getoption(dest)
    if cli is not None:
        return cli
    ini = config.getini(dest)
    return ini if ini not in (None, "", []) else None


def _parsed(config: pytest.Config, name: str, parse: Callable[[Any], Any], default: Any = None) -> Any:
    """An option's value (CLI, then ini) through its parser; `default` when it is not set."""
    raw = _value(config, name)
    return default if raw is None else parse(raw)


def cpu_affinity_setting(raw: str) -> str:
    """--mlperf-cpu-affinity checked up front: an explicit list must name CPUs this process may use."""
    try:
        value = parse_affinity(raw)
        if value not in AFFINITY_MODES:
            case_affinity(value, (), (), allowed_cpus())
    except AffinityError as exc:
        raise ValueError(f"--mlperf-cpu-affinity: {exc}") from None
    return value


def sut_option_entries(config: pytest.Config) -> list[tuple[str, str]]:
    """--mlperf-sut-option's entries with where each was set: the ini's first, so that the command line's win."""
    ini = config.getini("mlperf_sut_option") or []
    cli = config.getoption("mlperf_sut_option") or []
    return [*((raw, "ini mlperf_sut_option") for raw in ini), *((raw, "--mlperf-sut-option") for raw in cli)]


def build_settings(config: pytest.Config) -> S.Settings:
    def get(name: str, parse: Callable[[Any], Any], default: Any = None) -> Any:
        return _parsed(config, name, parse, default)

    try:
        sut_options, sut_option_sources = S.parse_sut_options(sut_option_entries(config), OPTION_NAMES)
        return S.Settings(
            scenarios=get("scenario", S.parse_scenarios),
            modes=get("mode", S.parse_mode, ("performance",)),
            profile=get("profile", S.parse_profile, S.PROFILES["smoke"]),
            duration_ms=get("duration", S.parse_duration_ms),
            device=get("device", S.parse_device, "auto"),
            results_dir=get("results-dir", lambda v: Path(v).expanduser(), Path("mlperf-results")),
            baselines_dir=get("baselines-dir", lambda v: Path(v).expanduser(), Path("baselines")),
            update_baselines=bool(get("update-baselines", bool, False)),
            require_baselines=bool(get("require-baselines", bool, False)),
            tolerance=get("tolerance", S.parse_fraction),
            user_conf=get("user-conf", lambda v: check_user_conf(Path(v).expanduser())),
            models=get("model", lambda v: S.parse_name_path(v, option="--mlperf-model"), {}),
            datasets=get("dataset", lambda v: S.parse_name_path(v, option="--mlperf-dataset"), {}),
            batch_size=get("batch-size", lambda v: S.parse_positive_int(v, option="--mlperf-batch-size")),
            streams=get("streams", lambda v: S.parse_positive_int(v, option="--mlperf-streams")),
            timeout_s=get("timeout", lambda v: S.parse_duration_s(v, option="--mlperf-timeout")),
            reference=LaunchRecipe.from_strings("reference", _value(config, "reference-prefix"),
                                                _value(config, "reference-env")),
            gate=build_gate(config),
            baseline_repeats=get("baseline-repeats",
                                 lambda v: S.parse_positive_int(v, option="--mlperf-baseline-repeats"), 3),
            gpu_lock_timeout_s=get("gpu-lock-timeout",
                                   lambda v: S.parse_duration_s(v, option="--mlperf-gpu-lock-timeout"), 3600.0),
            cpu_affinity=get("cpu-affinity", cpu_affinity_setting, "none"),
            sut_options=sut_options,
            sut_option_sources=sut_option_sources,
            server_search=bool(get("server-search", bool, False)),
            server_search_budget_s=get("server-search-budget",
                                       lambda v: S.parse_duration_s(v, option="--mlperf-server-search-budget"),
                                       1800.0),
            server_batch_wait_s=get("server-batch-wait", S.parse_wait_s),
        )
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def build_gate(config: pytest.Config) -> S.GateSettings | None:
    """The overhead gate's settings when a candidate recipe is given (prefix or environment), else None. The
    gate-* options are checked either way: they may sit in an ini file for the runs that have a candidate, and a
    typo there must not wait for that run to be found."""
    prefix, env = _value(config, "candidate-prefix"), _value(config, "candidate-env")

    def get(name: str, parse: Callable[[str], Any], default: Any) -> Any:
        return _parsed(config, name, parse, default)

    gate = S.GateSettings(
        candidate=LaunchRecipe.from_strings("candidate", prefix, env) if prefix or env else LaunchRecipe(),
        max_overhead=get("max-overhead", lambda v: S.parse_fraction(v, option="--mlperf-max-overhead"), 0.05),
        round_ms=get("gate-round", lambda v: S.parse_duration_ms(v, option="--mlperf-gate-round"), None),
        min_rounds=get("gate-min-rounds", lambda v: S.parse_positive_int(v, option="--mlperf-gate-min-rounds"), 12),
        max_rounds=get("gate-max-rounds", lambda v: S.parse_positive_int(v, option="--mlperf-gate-max-rounds"), 60),
        budget_s=get("gate-budget", lambda v: S.parse_duration_s(v, option="--mlperf-gate-budget"), 1800.0),
        estimator=get("gate-estimator", S.parse_gate_estimator, "auto"),
    )
    if not 3 <= gate.min_rounds <= gate.max_rounds:
        raise ValueError(f"the gate needs 3 <= --mlperf-gate-min-rounds <= --mlperf-gate-max-rounds, got "
                         f"{gate.min_rounds} and {gate.max_rounds}")
    if not prefix and not env:
        return None
    if _value(config, "update-baselines"):
        raise ValueError("--mlperf-update-baselines records bare-metal baselines: run it without a candidate "
                         "(--mlperf-candidate-prefix/--mlperf-candidate-env)")
    return gate


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
        check_model = getattr(workload_module(name), "check_model", None)
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
    (outputs.py) and, when it will record baselines, checks their folder; a worker writes where its controller
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
    """Writes a case's phase lines (progress.py) through pytest's terminal reporter, as they happen, at the
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
    return any(_value(config, name) is not None for name, _, _, _ in _OPTIONS)


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
    plugin was registered before xdist (`-p pytest_mlperf.plugin`: 16 workers on the one-GPU H200)."""
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
    """SIGTERM stops a session that measures as Ctrl-C does (interrupt.py): results written, summary printed."""
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


class ControllerReporter:
    """Registered only in the controller (or a run without xdist): gathers every case's record from the reports,
    writes requested baselines and the results JSON, and prints the table."""

    def __init__(self, config: pytest.Config, state: MlperfSession) -> None:
        self.config = config
        self.state = state
        self.collector = ResultsCollector(state.baselines_dir)
        self.chart_problem: str | None = None
        self.write_problem: str | None = None
        self.unmeasured: list[str] = []  # skip reasons of cases whose benchmark declares no asked-for scenario

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.collector.add(report, RECORD_PROPERTY, BASELINE_PROPERTY)
        if report.skipped and isinstance(report.longrepr, tuple) and SCENARIO_SKIP in str(report.longrepr[2]):
            self.unmeasured.append(str(report.longrepr[2]).removeprefix("Skipped: "))

    def unmeasured_lines(self) -> list[str]:
        """What --mlperf-scenario left unmeasured: a CI job must not go green on benchmarks it never ran."""
        if not self.unmeasured:
            return []
        lines = [f"not measured: {reason}" for reason in dict.fromkeys(self.unmeasured)]
        if not self.records:
            lines.append("error: nothing was measured: no benchmark declares the scenario(s) --mlperf-scenario asked "
                         "for, so this session fails")
        return lines

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.collector.records and not self.collector.written:
            if self.unmeasured:
                terminalreporter.write_sep("=", "MLPerf results")
                for line in self.unmeasured_lines():
                    terminalreporter.write_line(line, red=line.startswith("error"))
            return
        terminalreporter.write_sep("=", "MLPerf results")
        lines = [*self.collector.table_lines(), *self.collector.note_lines(), *gate_report.terminal_lines(self.records),
                 *self.unmeasured_lines()]
        for line in lines:
            terminalreporter.write_line(line)
        results = self.state.results_dir / "results.json"
        if self.write_problem:
            terminalreporter.write_line(f"error: {self.write_problem}", red=True)
        else:
            terminalreporter.write_line(f"results: {results}   LoadGen logs: {results.parent / 'logs'}")
        claim = self.config.stash.get(CLAIM_KEY, None)
        if claim is not None and claim.note:
            terminalreporter.write_line(f"note: {claim.note}")
        if gate_report.gated(self.records):
            chart = f"   chart: {results.parent / 'gate.png'}" if self.chart_problem is None else ""
            terminalreporter.write_line(f"gate summary (Markdown, for a PR comment): {results.parent / 'gate.md'}{chart}")
            if self.chart_problem:
                terminalreporter.write_line(self.chart_problem)

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.collector.records

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.records:
            if self.unmeasured and session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
            return
        out = self.state.results_dir
        try:
            write_json_atomic(out / "results.json", self.collector.results_document(self.state.settings))
            for stale in ("gate.md", "gate.png"):  # an earlier session's gate reports must not pass for this one's
                (out / stale).unlink(missing_ok=True)
            if gate_report.gated(self.records):
                write_text_atomic(out / "gate.md", gate_report.markdown_summary(self.records))
                self.chart_problem = gate_report.write_chart(self.records, out / "gate.png")
            claim = self.config.stash.get(CLAIM_KEY, None)
            if claim is not None:
                point_latest(claim)
        except OSError as exc:  # reported in the summary, which follows; never a traceback out of this hook
            self.write_problem = f"results not written to {out}: {exc.strerror or exc} ({exc.filename or out})"
        if self.write_problem or self.collector.problems:
            if session.exitstatus == pytest.ExitCode.OK:  # measured, but what was measured is lost: not a pass
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
