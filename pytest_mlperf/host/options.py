"""The mlperf command-line options and their ini twins, and the plain functions that turn them into `Settings`.

Runs in the pytest process. `OPTIONS` is the declarative table (name, help, argparse kwargs, ini type) that
`add_options` registers (host/plugin.py's `pytest_addoption` calls it); `build_settings` resolves the options, CLI
before ini, through host/settings.py's parsers, and turns their `ValueError` into `pytest.UsageError`."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_mlperf.contract.backends import OPTION_NAMES
from pytest_mlperf.contract.cpu_list import AffinityError, allowed_cpus
from pytest_mlperf.host import settings as S
from pytest_mlperf.host.machine.cpus import AFFINITY_MODES, case_affinity, parse_affinity
from pytest_mlperf.host.pool.recipe import LaunchRecipe
from pytest_mlperf.host.userconf import check_user_conf

# name, help, argparse kwargs, ini type
OPTIONS: list[tuple[str, str, dict[str, Any], str]] = [
    ("scenario", ("MLPerf scenario(s) to run: Offline, Server, SingleStream, MultiStream; repeat or comma-separate "
     "(default: what each benchmark declares)"), {"action": "append"}, "args"),
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
    ("sut-option", ("a backend option for this run, BACKEND.KEY=VALUE, e.g. vllm.max_model_len=4096 or "
     "onnxruntime.cuda_graph_max_batch=8 (repeatable; wins over the benchmark marker's sut_options for cases on "
     "that backend; the ini's and the command line's are merged, the command line winning per key)"),
     {"action": "append"}, "args"),
    # the overhead gate (host/gate/loop.py): reference = the plain runner, candidate = the same runner under the layer
    ("candidate-prefix", ("command line the candidate runner is launched under, e.g. 'gpu-proxy run --' "
     "(turns the overhead gate on)"), {}, "string"),
    ("candidate-env", ("NAME=VALUE set for the candidate runner, e.g. LD_PRELOAD=/opt/shim.so (repeatable; turns the "
     "overhead gate on)"), {"action": "append"}, "args"),
    ("reference-prefix", "command line the reference (bare-metal) runner is launched under (default: none)", {},
     "string"),
    ("reference-env", "NAME=VALUE set for the reference runner (repeatable)", {"action": "append"}, "args"),
    ("max-overhead", "the gate's limit: the candidate must cost less than this against the reference (default: 5%)",
     {}, "string"),
    ("gate-round", ("length of one gate round's LoadGen run, e.g. 1s (default: smoke 0.5s, ci 1s, official 10s; "
     "SingleStream on a GPU 100ms in smoke and ci)"), {},
     "string"),
    ("gate-min-rounds", ("rounds before the gate first looks at its interval (default: 12; 36 where the arms' floors "
     "judge: latency on a GPU; 60 for floors of rounds up to 150ms)"), {}, "string"),
    ("gate-max-rounds", "most rounds per case before the gate says INCONCLUSIVE (default: 60; floors: 72, or 160 of rounds up to 150ms)", {},
     "string"),
    ("gate-budget", "most time one case's rounds may take before INCONCLUSIVE, e.g. 10m (default: 30m)", {},
     "string"),
    ("gate-estimator", ("how the gate reads a cost from its rounds: auto (default: on a GPU latency by the arms' "
     "floors, the mean of each arm's best quarter of rounds, and throughput by paired rounds; on a CPU paired "
     "rounds), paired or floor"), {}, "string"),
    ("baseline-repeats", ("runs recorded per performance baseline with --mlperf-update-baselines; their spread widens "
     "the regression check by what noise alone can do (default: 3)"), {}, "string"),
    ("shared-cpu-baselines", ("allow --mlperf-update-baselines with several pytest-xdist workers on the CPU, whose cases "
     "share the cores (refused without it)"), {"action": "store_true", "default": None}, "bool"),
    ("gpu-lock-timeout", ("how long a case waits for its GPU(s) while another session measures on them, e.g. 30m "
     "(default: 1h)"), {}, "string"),
    ("server-search", ("Server cases find their capacity: the highest target QPS LoadGen judges VALID on the latency "
     "bound (short bracketing and bisection runs, one confirmation at full length); capacity is their headline and "
     "what baselines compare"), {"action": "store_true", "default": None}, "bool"),
    ("server-search-budget", "most time one case's capacity search may take, e.g. 10m (default: 30m)", {},
     "string"),
    ("server-batch-wait", ("Server: the longest a batch waits for more samples before it runs, e.g. 0 or 0.5ms "
     "(default: a tenth of the latency bound, 1.5 ms for ResNet50)"), {}, "string"),
    ("cpu-affinity", ("pin runners (and what they start) to CPUs: none (default), auto (the CPUs local to the case's "
     "GPUs, split between GPUs that share them) or a list such as 0-7,16"), {}, "string"),
]


def add_options(parser: pytest.Parser) -> None:
    """The mlperf group of options (`--mlperf-NAME`) and their ini twins (`mlperf_NAME`), from `OPTIONS`."""
    # argparse before Python 3.13 reads `--mlperf-duration -5s` as a second option and says only "expected one
    # argument"; with 3.13's rule (a dash and a digit is a value), the value reaches our parser and its message
    optparser = getattr(parser, "optparser", None)
    if optparser is not None and hasattr(optparser, "_negative_number_matcher"):
        optparser._negative_number_matcher = re.compile(r"^-\.?\d")
    group = parser.getgroup("mlperf", "MLPerf Inference benchmarks (pytest-mlperf)")
    for name, help_text, kwargs, ini_type in OPTIONS:
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
        min_rounds=get("gate-min-rounds", lambda v: S.parse_positive_int(v, option="--mlperf-gate-min-rounds"), None),
        max_rounds=get("gate-max-rounds", lambda v: S.parse_positive_int(v, option="--mlperf-gate-max-rounds"), None),
        budget_s=get("gate-budget", lambda v: S.parse_duration_s(v, option="--mlperf-gate-budget"), 1800.0),
        estimator=get("gate-estimator", S.parse_gate_estimator, "auto"),
    )
    lowest, highest = gate.min_rounds or gate.max_rounds or 3, gate.max_rounds or gate.min_rounds or 3
    if not 3 <= lowest <= highest:
        raise ValueError(f"the gate needs 3 <= --mlperf-gate-min-rounds <= --mlperf-gate-max-rounds, got "
                         f"{gate.min_rounds or 'the default'} and {gate.max_rounds or 'the default'}")
    if not prefix and not env:
        return None
    if _value(config, "update-baselines"):
        raise ValueError("--mlperf-update-baselines records bare-metal baselines: run it without a candidate "
                         "(--mlperf-candidate-prefix/--mlperf-candidate-env)")
    return gate
