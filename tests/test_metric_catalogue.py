"""The metric catalogue (pytest_mlperf/contract/metrics.py) and the tables derived from it: each equals the literal
table its module held before the catalogue (copied here from main as the expected values), every metric a role
names has a unit and a label, and contract/ imports nothing outside the standard library."""

from __future__ import annotations

import ast
import dataclasses
import itertools
import random
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

import pytest_mlperf.contract as contract_pkg
from pytest_mlperf.host.driver import cases
from pytest_mlperf.host.driver import server_search
from pytest_mlperf.host.results import aggregate
from pytest_mlperf.host.results import report
from pytest_mlperf.host.gate import loop as gate
from pytest_mlperf.contract import metrics as catalogue
from pytest_mlperf.contract import loadgen_log, loadgen_results
from pytest_mlperf.contract.loadgen_run import Headline

OLD_REGRESSION_METRICS = {
    "Offline": (
        ("result_samples_per_second", "samples/s", True),
        ("result_tokens_per_second", "tokens/s", True),
    ),
    "Server": (
        ("result_completed_samples_per_sec", "samples/s", True),
        ("result_completed_tokens_per_second", "tokens/s", True),
        ("result_99.00_percentile_latency_ns", "ns", False),
        ("result_first_token_99.00_percentile_latency_ns", "ns", False),
        ("result_time_per_output_token_99.00_percentile_ns", "ns", False),
    ),
    "SingleStream": (
        ("early_stopping_latency_ss", "ns", False),
        ("result_90.00_percentile_latency_ns", "ns", False),
        ("result_first_token_99.00_percentile_latency_ns", "ns", False),
        ("result_time_per_output_token_99.00_percentile_ns", "ns", False),
    ),
    "MultiStream": (
        ("early_stopping_latency_ms", "ns", False),
        ("result_99.00_percentile_per_query_latency_ns", "ns", False),
    ),
}
OLD_GATE_METRICS = {
    "Offline": (("result_tokens_per_second", "tokens/s", True), ("result_samples_per_second", "samples/s", True)),
    "Server": (
        ("result_99.00_percentile_latency_ns", "ns", False),
        ("result_first_token_99.00_percentile_latency_ns", "ns", False),
        ("result_time_per_output_token_99.00_percentile_ns", "ns", False),
    ),
    "SingleStream": (
        ("result_90.00_percentile_latency_ns", "ns", False),
        ("result_first_token_99.00_percentile_latency_ns", "ns", False),
        ("result_time_per_output_token_99.00_percentile_ns", "ns", False),
    ),
    "MultiStream": (("result_99.00_percentile_per_query_latency_ns", "ns", False),),
}
OLD_GATE_ONE_OF = {"Offline"}
OLD_METRIC_LABELS = {
    "result_tokens_per_second": "tokens/s", "result_samples_per_second": "samples/s",
    "result_99.00_percentile_latency_ns": "p99 latency", "result_90.00_percentile_latency_ns": "p90 latency",
    "result_first_token_99.00_percentile_latency_ns": "p99 TTFT",
    "result_time_per_output_token_99.00_percentile_ns": "p99 TPOT",
    "result_99.00_percentile_per_query_latency_ns": "p99 latency",
}
OLD_THROUGHPUT_METRICS = {
    "Offline": (("result_tokens_per_second", "tokens/s"), ("result_samples_per_second", "samples/s")),
    "Server": (("result_completed_tokens_per_second", "tokens/s"), ("result_completed_samples_per_sec", "samples/s")),
}
OLD_LATENCY_METRICS = {
    "Server": (("result_first_token_99.00_percentile_latency_ns", "TTFT p99"),
               ("result_99.00_percentile_latency_ns", "p99")),
    "SingleStream": (("result_90.00_percentile_latency_ns", "p90"),),
    "MultiStream": (("result_99.00_percentile_per_query_latency_ns", "p99/query"),),
}


def test_regression_metrics_as_before():
    assert cases.REGRESSION_METRICS == OLD_REGRESSION_METRICS
    assert list(cases.REGRESSION_METRICS) == list(OLD_REGRESSION_METRICS)


def test_gate_metrics_as_before():
    assert gate.GATE_METRICS == OLD_GATE_METRICS
    assert list(gate.GATE_METRICS) == list(OLD_GATE_METRICS)
    assert gate._ONE_OF == OLD_GATE_ONE_OF


def test_metric_labels_as_before():
    for key, expected in OLD_METRIC_LABELS.items():
        assert gate.metric_label(key) == expected
    assert gate.metric_label("result_no_such_key") == "result_no_such_key"


def test_aggregate_tables_as_before():
    assert aggregate.THROUGHPUT_METRICS == OLD_THROUGHPUT_METRICS
    assert list(aggregate.THROUGHPUT_METRICS) == list(OLD_THROUGHPUT_METRICS)
    assert aggregate.LATENCY_METRICS == OLD_LATENCY_METRICS
    assert list(aggregate.LATENCY_METRICS) == list(OLD_LATENCY_METRICS)


def test_capacity_metric_as_before():
    assert server_search.CAPACITY_METRIC == "server_capacity_qps"
    m = catalogue.metric(server_search.CAPACITY_METRIC)
    assert (m.unit, m.higher_is_better) == ("QPS", True)
    record = {"server_search": {"capacity_qps": 12.5}, "reason": None}
    assert report.headline_of(record) == ("server_capacity_qps", "12.5 QPS capacity")


def test_scenarios_as_before():
    assert loadgen_log._SCENARIOS == ("Offline", "Server", "SingleStream", "MultiStream")
    assert catalogue.SCENARIOS == tuple(catalogue.ROLES)


def _old_pct_key(pct: float, per_query: bool = False) -> str:
    return f"result_{pct:.2f}_percentile_{'per_query_' if per_query else ''}latency_ns"


def _old_headlines(scenario: str, metrics: Mapping[str, float], settings: Mapping[str, object],
                   token_latencies: bool = False):
    """The headline choice (contract/loadgen_results.headlines) as main had it, before the catalogue."""
    def pick(keys: Iterable[str], unit: str, higher: bool):
        for k in keys:
            if metrics.get(k):
                return Headline(k, metrics[k], unit, higher)
        return None

    tokens = None
    if scenario == "Offline":
        head = reported = pick(["result_samples_per_second"], "samples/s", True)
        tokens = pick(["result_tokens_per_second"], "tokens/s", True)
    elif scenario == "Server":
        head = reported = pick(["result_completed_samples_per_sec",
                                "result_scheduled_samples_per_sec"], "samples/s", True)
        tokens = pick(["result_completed_tokens_per_second"], "tokens/s", True)
    elif scenario in ("SingleStream", "MultiStream"):
        multi = scenario == "MultiStream"
        target = loadgen_results.finite_number(settings.get("target_latency_percentile"))
        default = _old_pct_key(99.0 if multi else 90.0, multi)
        pct_keys = [_old_pct_key(target * 100, multi)] if target else []
        pct_keys += [default] + ([_old_pct_key(99.0)] if multi else [])
        reported = pick(pct_keys, "ns", False)
        es_key = "early_stopping_latency_ms" if multi else "early_stopping_latency_ss"
        if token_latencies and not multi:
            head = pick([_old_pct_key(90.0)] + pct_keys, "ns", False)
        else:
            head = pick([es_key] + pct_keys, "ns", False)
        if token_latencies:
            tokens = pick(["result_completed_tokens_per_second"], "tokens/s", True)
    else:
        head = reported = None
    return head, reported, tokens


_HEADLINE_KEYS = sorted({
    "result_samples_per_second", "result_tokens_per_second", "result_completed_samples_per_sec",
    "result_scheduled_samples_per_sec", "result_completed_tokens_per_second", "early_stopping_latency_ss",
    "early_stopping_latency_ms", _old_pct_key(90.0), _old_pct_key(99.0), _old_pct_key(95.0),
    _old_pct_key(99.0, True), _old_pct_key(90.0, True), _old_pct_key(95.0, True),
})


@pytest.mark.parametrize("scenario", [*catalogue.SCENARIOS, "Nonsense"])
def test_headlines_as_before(scenario):
    """Every subset of the headline keys (each present, absent or zero), with and without a target percentile and
    token latencies: the catalogue-driven _headlines picks what the old one picked."""
    rng = random.Random(15)
    for _ in range(3000):
        metrics = {k: rng.choice([0.0, float(rng.randint(1, 10**6))]) for k in _HEADLINE_KEYS if rng.random() < 0.6}
        for settings, tok in itertools.product(({}, {"target_latency_percentile": 0.95},
                                                {"target_latency_percentile": 0.9}), (False, True)):
            now = loadgen_results.headlines(scenario, metrics, settings, tok)
            assert now == _old_headlines(scenario, metrics, settings, tok)


def test_every_metric_a_role_uses_has_a_unit_and_label():
    used = catalogue.used_keys()
    assert used <= set(catalogue.CATALOGUE), used - set(catalogue.CATALOGUE)
    for key in used | {catalogue.SERVER_CAPACITY}:
        m = catalogue.metric(key)
        assert m.key == key
        assert m.unit and m.label and m.short
        assert isinstance(m.higher_is_better, bool)
        assert m.higher_is_better == (m.unit != catalogue.LATENCY_UNIT)


def test_lookups():
    assert catalogue.roles("Nonsense") is None and catalogue.headline_rule("Nonsense") is None
    for f in (catalogue.regression_set, catalogue.gate_set, catalogue.throughput_candidates,
              catalogue.worst_latency_candidates):
        assert f("Nonsense") == ()
    with pytest.raises(KeyError):
        catalogue.metric("result_no_such_key")
    assert catalogue.percentile_key(99.0, True) == "result_99.00_percentile_per_query_latency_ns"
    with pytest.raises(dataclasses.FrozenInstanceError):
        catalogue.metric(catalogue.P99_TTFT).unit = "ms"  # frozen


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: stays inside the package only if it does not climb out of contract/
                assert node.level == 1, f"{path.name} imports from outside contract/ (level {node.level})"
                names.add(f"pytest_mlperf.contract.{node.module}" if node.module else "pytest_mlperf.contract")
            else:
                names.add(node.module or "")
    return names


def test_contract_imports_only_the_standard_library():
    files = sorted(Path(contract_pkg.__file__).parent.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "metrics.py"}
    for f in files:
        for name in _imports(f):
            if name == "pytest_mlperf.contract" or name.startswith("pytest_mlperf.contract."):
                continue
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or top == "__future__", f"{f.name} imports {name}"
