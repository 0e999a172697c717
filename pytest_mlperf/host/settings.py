"""Session settings: options, ini keys and markers resolved once into a frozen, validated `Settings`.

Precedence is CLI > ini > marker > workload default. The parsers here raise `ValueError` with a message
meant for the user; the plugin turns them into `pytest.UsageError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from pytest_mlperf.contract import metrics as catalogue
from pytest_mlperf.host.gate.stopping import GatePlan
from pytest_mlperf.host.pool.recipe import LaunchRecipe

SCENARIOS: tuple[str, ...] = catalogue.SCENARIOS  # the contract's, one list for both processes
MODES: tuple[str, ...] = ("performance", "accuracy")
DEVICES: tuple[str, ...] = ("auto", "cuda", "cpu")
T = TypeVar("T")


@dataclass(frozen=True)
class Profile:
    """How long and how strictly a run measures. Values of None leave LoadGen's mlperf.conf value."""

    name: str
    min_duration_ms: int | None
    # per scenario: the fewest queries; smoke sets enough for LoadGen's early-stopping estimate where cheap
    min_query_count: Mapping[str, int]
    performance_sample_count: int | None
    # LoadGen INVALID reasons this profile accepts by design, e.g. smoke runs are too short for early stopping
    tolerated: frozenset[str]
    # relax the Server latency bound to at least this many times the measured batch-1 latency (CPU stand-ins)
    server_latency_floor_factor: float | None
    calibrate: bool
    # calibrated expectations err by this factor towards more work (see runner/strategies/batching_setup.expectations)
    expectation_margin: float = 1.0
    # the overhead gate: length of one round's LoadGen run (measured on an H100: docs/performance.md) ...
    gate_round_ms: int = 1000
    # ... and of a SingleStream round on a GPU (None: gate_round_ms). A round's p90 there moves up by 5-20% while
    # the host's vCPU runs slow; many short rounds let both arms' floors find its fast state (issue 14, measured
    # on the H200: docs/performance.md)
    gpu_singlestream_gate_round_ms: int | None = 100


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        min_duration_ms=1500,
        min_query_count={"Offline": 1, "Server": 64, "SingleStream": 64, "MultiStream": 16},
        performance_sample_count=64,
        tolerated=frozenset({"early_stopping", "perf_constraints"}),
        server_latency_floor_factor=8.0,
        calibrate=True,
        expectation_margin=1.5,
        gate_round_ms=500,
    ),
    "ci": Profile(
        name="ci",
        min_duration_ms=10_000,
        # Server 460: the fewest queries with which LoadGen's early stopping can pass a p99 bound (0.99**n <= 0.01,
        # when no query misses it). Fast SUTs run far more within the minimum duration anyway; an LLM at 22 QPS
        # ran 256 in 10 s on the H200 and was INVALID for TPOT early stopping alone ("would need 203 more")
        min_query_count={"Offline": 1, "Server": 460, "SingleStream": 100, "MultiStream": 100},
        performance_sample_count=None,
        tolerated=frozenset({"early_stopping"}),
        server_latency_floor_factor=None,
        calibrate=True,
        expectation_margin=1.2,
    ),
    "official": Profile(
        name="official",
        min_duration_ms=None,
        min_query_count={},
        performance_sample_count=None,
        tolerated=frozenset(),
        server_latency_floor_factor=None,
        calibrate=False,
        gate_round_ms=10_000,
        gpu_singlestream_gate_round_ms=None,
    ),
}


GATE_ESTIMATORS = ("auto", "paired", "floor")  # --mlperf-gate-estimator


def parse_gate_estimator(text: str) -> str:
    value = text.strip().lower()
    if value not in GATE_ESTIMATORS:
        raise ValueError(f"--mlperf-gate-estimator must be one of {', '.join(GATE_ESTIMATORS)}, got {text!r}: "
                         "auto (the default) judges latency by the arms' floors on a GPU and by paired rounds "
                         "on a CPU")
    return value


# A gate's rounds when neither --mlperf-gate-min-rounds nor --mlperf-gate-max-rounds says (first look, last round):
# judged by paired rounds (simulation: docs/gate-statistics.md) or by the arms' floors, the mean of each arm's best
# quarter of rounds, which needs more of them: on the H200 a SingleStream floor of 12 rounds erred by over 1.5
# points in 27% of gates, of 36 in 3% (issue 14, docs/performance.md). A slow state lasts seconds, not rounds, so
# rounds of at most SHORT_ROUND_MS need more of them: replayed on the H200's 100 ms rounds, 36 to 72 left 20% of
# 7% gates undecided, 60 to 160 3%
PAIRED_ROUNDS = (12, 60)
FLOOR_ROUNDS = (36, 72)
SHORT_FLOOR_ROUNDS = (60, 160)
SHORT_ROUND_MS = 150


@dataclass(frozen=True)
class GateSettings:
    """The overhead gate (host/gate/loop.py): a candidate launch recipe measured against the reference in rounds."""

    candidate: LaunchRecipe
    max_overhead: float = 0.05
    round_ms: int | None = None  # None: the profile's (round_ms_for)
    min_rounds: int | None = None  # None: the estimator's (plan)
    max_rounds: int | None = None
    budget_s: float = 1800.0  # per case, rounds only (warm-up runs are not counted)
    estimator: str = "auto"  # auto, paired or floor (--mlperf-gate-estimator; host/gate/stats.py)

    def plan(self, device: str = "cpu", scenario: str = "Offline", round_ms: int | None = None) -> GatePlan:
        """The gate's plan for a `scenario` case on `device` whose rounds last `round_ms` (round_ms_for):

        | field      | resolved as                                                                             |
        |------------|-----------------------------------------------------------------------------------------|
        | estimator  | --mlperf-gate-estimator; `auto`: on cuda latency by the arms' floors (one-sided noise   |
        |            | lasting seconds: docs/gate-statistics.md) and throughput by paired rounds; else paired  |
        | min_rounds | --mlperf-gate-min-rounds; else when the floor judges every gate metric of the        |
        |            | scenario (on cuda: SingleStream, MultiStream, Server at a fixed load) 60 for rounds of  |
        |            | at most 150 ms (SingleStream on cuda: 100 ms) and 36 for longer ones; else 12 (Offline, |
        |            | any scenario on a CPU); never above max_rounds                                          |
        | max_rounds | --mlperf-gate-max-rounds; else 160 (floor, short rounds), 72 (floor) or 60 (paired);    |
        |            | never below min_rounds                                                                  |
        """
        estimator = self.estimator
        if estimator == "auto":
            estimator = "floor-latency" if device == "cuda" else "paired"
        floor = estimator == "floor" or (estimator == "floor-latency" and not any(
            m.higher_is_better for m in catalogue.gate_set(scenario)))
        short = round_ms is not None and round_ms <= SHORT_ROUND_MS
        first, last = (SHORT_FLOOR_ROUNDS if short else FLOOR_ROUNDS) if floor else PAIRED_ROUNDS
        min_rounds = self.min_rounds or min(first, self.max_rounds or first)
        max_rounds = self.max_rounds or max(last, min_rounds)
        return GatePlan(min_rounds=min_rounds, max_rounds=max_rounds, max_seconds=self.budget_s,
                        max_overhead=self.max_overhead, estimator=estimator)

    def round_ms_for(self, profile: Profile, device: str, scenario: str) -> int:
        """One round's LoadGen run: --mlperf-gate-round, else for SingleStream on cuda the profile's
        `gpu_singlestream_gate_round_ms` (smoke, ci: 100 ms), else its `gate_round_ms` (smoke 500 ms, ci 1 s,
        official 10 s)."""
        if self.round_ms:
            return self.round_ms
        if device == "cuda" and scenario == "SingleStream" and profile.gpu_singlestream_gate_round_ms:
            return profile.gpu_singlestream_gate_round_ms
        return profile.gate_round_ms


@dataclass(frozen=True)
class Settings:
    scenarios: tuple[str, ...] | None = None  # None: what each benchmark declares
    modes: tuple[str, ...] = ("performance",)
    profile: Profile = PROFILES["smoke"]
    duration_ms: int | None = None
    device: str = "auto"
    results_dir: Path = Path("mlperf-results")
    baselines_dir: Path = Path("baselines")
    update_baselines: bool = False
    require_baselines: bool = False
    tolerance: float = 0.05
    user_conf: Path | None = None
    models: Mapping[str, Path] = field(default_factory=dict)
    datasets: Mapping[str, Path] = field(default_factory=dict)
    batch_size: int | None = None
    streams: int | None = None
    timeout_s: float | None = None
    reference: LaunchRecipe = field(default_factory=LaunchRecipe)  # how runners are launched (bare metal)
    gate: GateSettings | None = None  # set when a candidate recipe is given
    gpu_lock_timeout_s: float = 3600.0  # how long a case waits for its GPUs to be free of other sessions
    baseline_repeats: int = 3  # runs a performance baseline records, so that later checks know its noise
    cpu_affinity: str = "none"  # runner CPU pinning: none, auto (the GPU's local CPUs) or a CPU list (host/machine/cpus.py)
    # backend -> {option: value string} (--mlperf-sut-option BACKEND.KEY=VALUE): wins over a marker's sut_options
    sut_options: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: MappingProxyType({}))
    # backend -> {option: where it was set}: "--mlperf-sut-option" or "ini mlperf_sut_option"
    sut_option_sources: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: MappingProxyType({}))
    server_search: bool = False  # Server performance cases search their capacity (host/driver/server_search.py)
    server_search_budget_s: float = 1800.0  # per search: probes and confirmation
    server_batch_wait_s: float | None = None  # Server batchers' longest gather wait (None: a tenth of the bound)


def parse_scenarios(values: list[str] | str | None) -> tuple[str, ...] | None:
    """Accepts repeated values and comma lists, case-insensitively; returns canonical names in order."""
    if not values:
        return None
    items = [values] if isinstance(values, str) else list(values)
    by_lower = {s.lower(): s for s in SCENARIOS}
    out: list[str] = []
    for raw in items:
        for name in filter(None, (p.strip() for p in raw.split(","))):
            canonical = by_lower.get(name.lower())
            if canonical is None:
                raise ValueError(f"unknown MLPerf scenario {name!r}: choose from {', '.join(SCENARIOS)}")
            if canonical not in out:
                out.append(canonical)
    return tuple(out) or None


def parse_mode(value: str) -> tuple[str, ...]:
    v = value.strip().lower()
    if v == "both":
        return MODES
    if v in MODES:
        return (v,)
    raise ValueError(f"unknown --mlperf-mode {value!r}: choose from performance, accuracy, both")


def parse_profile(value: str) -> Profile:
    try:
        return PROFILES[value.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown --mlperf-profile {value!r}: choose from {', '.join(PROFILES)}") from None


def parse_device(value: str) -> str:
    v = value.strip().lower()
    if v not in DEVICES:
        raise ValueError(f"unknown --mlperf-device {value!r}: choose from {', '.join(DEVICES)}")
    return v


_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$")
_DURATION_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000}
DURATION_GRAMMAR = "a number with a unit: ms, s, m or h (e.g. 1500ms, 10s, 10m, 1h); a bare number is seconds"


def _duration_ms(value: str, option: str, example: str) -> float:
    """The duration grammar itself: milliseconds as written (unrounded, any sign), or ValueError naming `option`."""
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"bad {option} {value!r}: write e.g. {example} ({DURATION_GRAMMAR})")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2) or "s"]


def parse_duration_ms(value: str, *, option: str = "--mlperf-duration") -> int:
    """'1500ms', '2s', '2.5', '10m', '1h' -> milliseconds (a bare number is seconds). The one grammar of every
    duration option (--mlperf-duration, --mlperf-timeout, --mlperf-gate-round, --mlperf-gate-budget,
    --mlperf-gpu-lock-timeout, --mlperf-server-search-budget, and --mlperf-server-batch-wait: parse_wait_s)."""
    ms = _duration_ms(value, option, "2s, 1500ms or 10m")
    if ms <= 0:
        raise ValueError(f"{option} must be positive, got {value!r}: write e.g. 2s, 1500ms or 10m")
    return max(1, round(ms))  # LoadGen counts whole milliseconds; a positive duration never becomes 0


def parse_duration_s(value: str, *, option: str) -> float:
    """A duration option held in seconds (timeouts, budgets): the same grammar as parse_duration_ms."""
    return parse_duration_ms(value, option=option) / 1000


def parse_wait_s(value: str, *, option: str = "--mlperf-server-batch-wait") -> float:
    """A short wait that may be zero, to the microsecond: '0', '0.5ms', '2ms', '0.001' (seconds) -> seconds. The
    duration grammar, not rounded to whole milliseconds as LoadGen's durations are."""
    seconds = _duration_ms(value, option, "0, 0.5ms or 2ms") / 1000
    if seconds < 0 or seconds > 10:
        raise ValueError(f"{option} must be between 0 and 10 s, got {value!r}: write e.g. 0, 0.5ms or 2ms")
    return seconds


def parse_fraction(value: str, *, option: str = "--mlperf-tolerance") -> float:
    """'5%' or '0.05' -> 0.05; must lie in (0, 1)."""
    text = value.strip()
    try:
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"bad {option} {value!r}: write a percentage like 5% or a fraction like 0.05") from None
    if not 0 < number < 1:
        raise ValueError(f"{option} must be between 0% and 100% (exclusive), got {value!r}")
    return number


def parse_name_path(values: list[str] | None, *, option: str, must_exist: bool = True) -> dict[str, Path]:
    """['resnet50=/m/r.onnx'] -> {'resnet50': Path(...)}; a later entry for a name wins."""
    out: dict[str, Path] = {}
    for raw in values or []:
        name, sep, path = raw.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"bad {option} {raw!r}: write NAME=PATH, e.g. resnet50=/models/resnet50_v1.onnx")
        p = Path(path.strip()).expanduser()
        if must_exist and not p.exists():
            raise ValueError(f"{option} {name.strip()}: {p} does not exist; point it at an existing file or folder")
        out[name.strip()] = p
    return out


SUT_OPTION_FORM = "BACKEND.KEY=VALUE, e.g. vllm.max_model_len=4096 or onnxruntime.cuda_graph_max_batch=8"


def parse_sut_options(entries: Iterable[tuple[str, str]], known: Mapping[str, Iterable[str]]
                      ) -> tuple[Mapping[str, Mapping[str, str]], Mapping[str, Mapping[str, str]]]:
    """(raw, source) pairs such as ('vllm.max_model_len=4096', '--mlperf-sut-option') -> frozen mappings backend ->
    {key: value} and backend -> {key: source}; a later entry for a key wins (pass ini entries before CLI ones).
    `known` maps each backend to its option names (suts.base.OPTION_NAMES). The value stays a string: each backend
    converts and checks it. Raises ValueError naming the entry, its source, the form and what is known."""
    values: dict[str, dict[str, str]] = {}
    sources: dict[str, dict[str, str]] = {}
    backends = ", ".join(known)
    for raw, source in entries:
        target, sep, value = str(raw).partition("=")
        backend, dot, key = target.strip().partition(".")
        backend, key, value = backend.strip(), key.strip(), value.strip()
        if not sep or not dot or not backend or not key or not value:
            raise ValueError(f"bad {source} {raw!r}: write {SUT_OPTION_FORM} (backends: {backends})")
        if backend not in known:
            raise ValueError(f"{source} {raw!r}: unknown backend {backend!r}; known backends are {backends} "
                             f"(write {SUT_OPTION_FORM})")
        names = list(known[backend])
        if key not in names:
            raise ValueError(f"{source} {raw!r}: the {backend} backend has no option {key!r}; its options are "
                             f"{', '.join(names)}")
        values.setdefault(backend, {})[key] = value
        sources.setdefault(backend, {})[key] = source
    return (MappingProxyType({b: MappingProxyType(v) for b, v in values.items()}),
            MappingProxyType({b: MappingProxyType(v) for b, v in sources.items()}))


def _parse_positive(value: str, option: str, convert: type, what: str, bound: str) -> float:
    try:
        number = convert(value)
    except ValueError:
        raise ValueError(f"bad {option} {value!r}: write {what}") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{option} must be {bound}, got {value!r}")
    return number


def parse_positive_int(value: str, *, option: str) -> int:
    return int(_parse_positive(value, option, int, "a whole number", "at least 1"))


def parse_positive_float(value: str, *, option: str) -> float:
    return float(_parse_positive(value, option, float, "a number of seconds", "positive"))


def marker_value(kwargs: Mapping[str, object], name: str, nodeid: str, parse: Callable[[str, str], T]) -> T | None:
    """A value of a test's mlperf marker through an option parser, or None when the marker does not set it. A bad
    value names the marker and the test, not the command-line option of the same name (which was not given)."""
    raw = kwargs.get(name)
    if raw is None:
        return None
    try:
        return parse(str(raw), name)
    except ValueError as exc:
        raise ValueError(f"{nodeid}: @pytest.mark.mlperf({name}={raw!r}) is not valid: {exc}") from None


MARKER_PARSERS: dict[str, Callable[[str, str], object]] = {
    "tolerance": lambda v, o: parse_fraction(v, option=o),
    "timeout": lambda v, o: parse_duration_s(v, option=o),
    "batch_size": lambda v, o: parse_positive_int(v, option=o),
    "streams": lambda v, o: parse_positive_int(v, option=o),
    "gpus": lambda v, o: parse_positive_int(v, option=o),
}


def check_marker(kwargs: Mapping[str, object], nodeid: str) -> dict[str, object]:
    """Every value of a test's mlperf marker that has a parser, parsed; raises ValueError naming the test."""
    return {name: marker_value(kwargs, name, nodeid, parse) for name, parse in MARKER_PARSERS.items()
            if kwargs.get(name) is not None}
