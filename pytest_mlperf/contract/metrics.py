"""The one catalogue of the LoadGen metrics pytest-mlperf reads: each metric's detail-log key, unit, direction and
label, and per scenario the role each plays: the checker's headline (loadgen_results.py), the regression set a baseline
compares (host/driver/cases.py), the set the overhead gate judges (host/gate/loop.py), and the throughput and worst latency that
`pytest-mlperf aggregate` merges across hosts (host/results/aggregate.py). Those modules derive their tables from here.

Latencies are in nanoseconds whatever the key's name says (LoadGen's `early_stopping_latency_ms` is ns too).
"""

from __future__ import annotations

from dataclasses import dataclass

SCENARIOS = ("Offline", "Server", "SingleStream", "MultiStream")
LATENCY_UNIT = "ns"


@dataclass(frozen=True)
class MetricDef:
    """One metric: its detail-log key, unit, direction, and its names for people (`label` in messages and gate
    reports, `short` in the aggregate table)."""

    key: str
    unit: str
    higher_is_better: bool
    label: str
    short: str


def _tp(key: str, unit: str, label: str) -> MetricDef:
    return MetricDef(key, unit, True, label, label)


def _lat(key: str, label: str, short: str) -> MetricDef:
    return MetricDef(key, LATENCY_UNIT, False, label, short)


SAMPLES_PER_SECOND = "result_samples_per_second"
TOKENS_PER_SECOND = "result_tokens_per_second"
COMPLETED_SAMPLES_PER_SEC = "result_completed_samples_per_sec"
SCHEDULED_SAMPLES_PER_SEC = "result_scheduled_samples_per_sec"
COMPLETED_TOKENS_PER_SECOND = "result_completed_tokens_per_second"
P90_LATENCY = "result_90.00_percentile_latency_ns"
P99_LATENCY = "result_99.00_percentile_latency_ns"
P99_PER_QUERY_LATENCY = "result_99.00_percentile_per_query_latency_ns"
P99_TTFT = "result_first_token_99.00_percentile_latency_ns"
P99_TPOT = "result_time_per_output_token_99.00_percentile_ns"
EARLY_STOPPING_SS = "early_stopping_latency_ss"
EARLY_STOPPING_MS = "early_stopping_latency_ms"
# not a LoadGen key: the headline and baseline metric of a Server case under --mlperf-server-search
SERVER_CAPACITY = "server_capacity_qps"

CATALOGUE: dict[str, MetricDef] = {m.key: m for m in (
    _tp(SAMPLES_PER_SECOND, "samples/s", "samples/s"),
    _tp(TOKENS_PER_SECOND, "tokens/s", "tokens/s"),
    _tp(COMPLETED_SAMPLES_PER_SEC, "samples/s", "completed samples/s"),
    _tp(SCHEDULED_SAMPLES_PER_SEC, "samples/s", "scheduled samples/s"),
    _tp(COMPLETED_TOKENS_PER_SECOND, "tokens/s", "completed tokens/s"),
    _lat(P90_LATENCY, "p90 latency", "p90"),
    _lat(P99_LATENCY, "p99 latency", "p99"),
    _lat(P99_PER_QUERY_LATENCY, "p99 latency", "p99/query"),
    _lat(P99_TTFT, "p99 TTFT", "TTFT p99"),
    _lat(P99_TPOT, "p99 TPOT", "TPOT p99"),
    _lat(EARLY_STOPPING_SS, "early-stopping latency estimate", "ES estimate"),
    _lat(EARLY_STOPPING_MS, "early-stopping per-query latency estimate", "ES estimate/query"),
    MetricDef(SERVER_CAPACITY, "QPS", True, "server capacity", "capacity"),
)}


@dataclass(frozen=True)
class HeadlineRule:
    """How a run's checker headline is picked (loadgen_results.py): the first candidate logged non-zero wins.

    Throughput scenarios (`percentile` None) try `keys`. Latency scenarios try the early-stopping `estimate`, then
    the percentile LoadGen's `target_latency_percentile` names, then the default `percentile` (per query in
    MultiStream), then `legacy` keys (old logs). Where `estimate_with_tokens` is false an LLM run skips the
    estimate (LoadGen's SingleStream estimate is then TTFT's; the checker reports the end-to-end percentile).
    `tokens` are the token headline's candidates: always in throughput scenarios, in LLM runs only otherwise."""

    keys: tuple[str, ...] = ()
    tokens: tuple[str, ...] = ()
    percentile: float | None = None
    per_query: bool = False
    estimate: str | None = None
    estimate_with_tokens: bool = True
    legacy: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScenarioRoles:
    """What each metric does in one scenario. `regression`, `gate`: every one logged non-zero is compared (one
    only, the first, where `gate_one_of`: Offline's two throughputs say the same thing for an LLM). `gate_searched`:
    what the gate judges instead under --mlperf-server-search (host/gate/capacity.py), where the scenario has it.
    `throughput`, `worst_latency`: candidates for aggregate, the first one a case has wins."""

    headline: HeadlineRule
    regression: tuple[str, ...]
    gate: tuple[str, ...]
    gate_one_of: bool = False
    gate_searched: tuple[str, ...] = ()
    throughput: tuple[str, ...] = ()
    worst_latency: tuple[str, ...] = ()


# Regression: where LoadGen's early-stopping estimate is missing (a run too short for it) the plain percentile
# still compares. Gate: the headline MLPerf's checker reports, and for latency scenarios the token latencies when
# the workload has them; throughput in Server is pinned to the target load, so there the tail latency is what an
# isolation layer moves, unless --mlperf-server-search is on: the gate then judges the capacity each arm's searches
# find (a layer that costs 5% of capacity fails), as baselines of searched cases do. Aggregate: throughput tokens/s
# first for LLMs; latencies do not add up, the worst host's.
ROLES: dict[str, ScenarioRoles] = {
    "Offline": ScenarioRoles(
        headline=HeadlineRule(keys=(SAMPLES_PER_SECOND,), tokens=(TOKENS_PER_SECOND,)),
        regression=(SAMPLES_PER_SECOND, TOKENS_PER_SECOND),
        gate=(TOKENS_PER_SECOND, SAMPLES_PER_SECOND), gate_one_of=True,
        throughput=(TOKENS_PER_SECOND, SAMPLES_PER_SECOND),
    ),
    "Server": ScenarioRoles(
        headline=HeadlineRule(keys=(COMPLETED_SAMPLES_PER_SEC, SCHEDULED_SAMPLES_PER_SEC),
                              tokens=(COMPLETED_TOKENS_PER_SECOND,)),
        regression=(COMPLETED_SAMPLES_PER_SEC, COMPLETED_TOKENS_PER_SECOND, P99_LATENCY, P99_TTFT, P99_TPOT),
        gate=(P99_LATENCY, P99_TTFT, P99_TPOT),
        gate_searched=(SERVER_CAPACITY,),
        throughput=(COMPLETED_TOKENS_PER_SECOND, COMPLETED_SAMPLES_PER_SEC),
        worst_latency=(P99_TTFT, P99_LATENCY),
    ),
    "SingleStream": ScenarioRoles(
        headline=HeadlineRule(tokens=(COMPLETED_TOKENS_PER_SECOND,), percentile=90.0, estimate=EARLY_STOPPING_SS,
                              estimate_with_tokens=False),
        regression=(EARLY_STOPPING_SS, P90_LATENCY, P99_TTFT, P99_TPOT),
        gate=(P90_LATENCY, P99_TTFT, P99_TPOT),
        worst_latency=(P90_LATENCY,),
    ),
    "MultiStream": ScenarioRoles(
        headline=HeadlineRule(tokens=(COMPLETED_TOKENS_PER_SECOND,), percentile=99.0, per_query=True,
                              estimate=EARLY_STOPPING_MS, legacy=(P99_LATENCY,)),
        regression=(EARLY_STOPPING_MS, P99_PER_QUERY_LATENCY),
        gate=(P99_PER_QUERY_LATENCY,),
        worst_latency=(P99_PER_QUERY_LATENCY,),
    ),
}


def metric(key: str) -> MetricDef:
    """The catalogue's entry for `key`; KeyError for a key it does not hold."""
    return CATALOGUE[key]


def label(key: str) -> str:
    """A short name for a key in messages and reports; the key itself when the catalogue does not hold it."""
    m = CATALOGUE.get(key)
    return m.label if m is not None else key


def roles(scenario: str) -> ScenarioRoles | None:
    """The roles of a scenario's metrics; None for a scenario LoadGen does not have."""
    return ROLES.get(scenario)


def _defs(keys: tuple[str, ...]) -> tuple[MetricDef, ...]:
    return tuple(CATALOGUE[k] for k in keys)


def regression_set(scenario: str) -> tuple[MetricDef, ...]:
    r = ROLES.get(scenario)
    return _defs(r.regression) if r else ()


def gate_set(scenario: str, searched: bool = False) -> tuple[MetricDef, ...]:
    """The metrics the overhead gate judges; `searched`: those it judges under --mlperf-server-search (Server's
    capacity; () for a scenario without a search)."""
    r = ROLES.get(scenario)
    if r is None:
        return ()
    return _defs(r.gate_searched if searched else r.gate)


def throughput_candidates(scenario: str) -> tuple[MetricDef, ...]:
    r = ROLES.get(scenario)
    return _defs(r.throughput) if r else ()


def worst_latency_candidates(scenario: str) -> tuple[MetricDef, ...]:
    r = ROLES.get(scenario)
    return _defs(r.worst_latency) if r else ()


def headline_rule(scenario: str) -> HeadlineRule | None:
    r = ROLES.get(scenario)
    return r.headline if r else None


def percentile_key(pct: float, per_query: bool = False) -> str:
    """LoadGen's detail-log key of a latency percentile, e.g. 99.0 -> result_99.00_percentile_latency_ns."""
    return f"result_{pct:.2f}_percentile_{'per_query_' if per_query else ''}latency_ns"


def used_keys() -> set[str]:
    """Every key some role of some scenario names."""
    out: set[str] = set()
    for r in ROLES.values():
        h = r.headline
        out.update(h.keys, h.tokens, h.legacy, r.regression, r.gate, r.throughput, r.worst_latency)
        if h.estimate:
            out.add(h.estimate)
        if h.percentile is not None:
            out.add(percentile_key(h.percentile, h.per_query))
    return out
