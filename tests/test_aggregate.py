"""Tests for pytest_mlperf.host.results.aggregate and `pytest-mlperf aggregate`: merging results files of several hosts,
combined throughput, per-GPU mean, worst latency, scaling against a one-GPU run, bad input."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pytest_mlperf.host.results.aggregate_input import AggregateError, Device, case_nodeid, load_results, parse_gpu_list, parse_results
from pytest_mlperf.host.results.aggregate import AGGREGATE_FORMAT, case_dict, merge, render_markdown, table_rows, terminal_lines
from pytest_mlperf.host.results.aggregate import table_rows as aggregate_table_rows
from pytest_mlperf.host.baselines.store import CaseKey
from pytest_mlperf.host.driver.cases import CaseRun
from pytest_mlperf.host.results.cli import EXIT_OK, EXIT_USAGE, main
from pytest_mlperf.contract.loadgen_log import read_run
from pytest_mlperf.host.results.report import RESULTS_FORMAT, ResultsCollector, render_table
from pytest_mlperf.host.settings import PROFILES, Settings

LOGS = Path(__file__).parent / "data" / "mlperf-logs"
H100 = "NVIDIA H100 80GB HBM3"
NODE = "benchmarks/test_resnet50.py::test_resnet50[resnet50-{scenario}-{mode}]"


def gpu(index: int, host: str = "a") -> dict[str, Any]:
    return {"index": index, "uuid": f"GPU-{host}-{index}", "name": H100}


def record(scenario: str = "Offline", metrics: dict[str, float] | None = None, *, gpus: list[dict[str, Any]] | None
           = None, system_gpus: str | None = None, mode: str = "performance", workload: str = "resnet50",
           nodeid: str | None = None, validity: str = "VALID", outcome: str = "passed") -> dict[str, Any]:
    """A case record shaped as CaseRun.to_record() writes it (only the fields aggregation reads, plus a few)."""
    system: dict[str, Any] = {"key": "1xNVIDIA-H100-80GB-HBM3", "cpu": "AMD EPYC 9654"}
    if system_gpus is not None:
        system["gpus"] = system_gpus
    rec: dict[str, Any] = {
        "nodeid": nodeid or NODE.format(scenario=scenario, mode=mode),
        "key": {"workload": workload, "scenario": scenario, "mode": mode, "backend": "onnxruntime",
                "precision": "fp32", "system": system["key"]},
        "backend": {"backend": "onnxruntime", "device": "cuda", "precision": "fp32"},
        "system": system,
        "metrics": dict(metrics or {}),
        "run": {"scenario": scenario, "validity": validity, "metrics": dict(metrics or {})},
        "outcome": outcome,
    }
    if gpus is not None:
        rec["gpus"] = gpus
    return rec


def document(host: str, cases: list[dict[str, Any]], profile: str = "ci") -> dict[str, Any]:
    return {"format": RESULTS_FORMAT, "version": 1, "pytest_mlperf": "0.1.0", "created": "2025-01-01T00:00:00+00:00",
            "host": host, "profile": profile, "cases": cases}


def write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def offline(value: float, *gpus_: dict[str, Any]) -> dict[str, Any]:
    return record("Offline", {"result_samples_per_second": value}, gpus=list(gpus_))


# --------------------------------------------------------------------------- merging


def test_offline_sums_across_hosts_and_gpus() -> None:
    a = parse_results(document("node-a", [offline(1000.0, gpu(0, "a")), offline(1100.0, gpu(1, "a"))]), "a.json")
    b = parse_results(document("node-b", [offline(900.0, gpu(0, "b")), offline(1000.0, gpu(1, "b"))]), "b.json")
    (case,) = merge([a, b]).cases
    assert case.hosts == ["node-a", "node-b"]
    assert case.n_gpus == 4
    assert case.throughput is not None
    assert case.throughput.metric == "result_samples_per_second" and case.throughput.unit == "samples/s"
    assert case.throughput.combined == pytest.approx(4000.0)
    assert case.throughput.per_gpu == pytest.approx(1000.0)
    assert case.throughput.per_host == {"node-a": pytest.approx(2100.0), "node-b": pytest.approx(1900.0)}
    assert case.latency is None and case.scaling_efficiency is None
    assert case.notes == ()


def test_gpus_come_from_the_system_text_when_there_is_no_gpus_list() -> None:
    tp2 = record("Offline", {"result_samples_per_second": 3000.0},
                 system_gpus=f"0:{H100}:GPU-x-0; 1:{H100}:GPU-x-1")
    (case,) = merge([parse_results(document("node-a", [tp2]), "a.json")]).cases
    assert case.n_gpus == 2
    assert [d.uuid for d in case.devices] == ["GPU-x-0", "GPU-x-1"]
    assert case.throughput is not None and case.throughput.per_gpu == pytest.approx(1500.0)


def test_the_gpus_list_wins_over_the_system_text() -> None:
    rec = record("Offline", {"result_samples_per_second": 10.0}, gpus=[gpu(3)],
                 system_gpus=f"0:{H100}:GPU-x-0; 1:{H100}:GPU-x-1")
    (case,) = merge([parse_results(document("node-a", [rec]), "a.json")]).cases
    assert [(d.index, d.uuid) for d in case.devices] == [(3, "GPU-a-3")]


def test_a_cpu_record_counts_as_one_device() -> None:
    rec = record("Offline", {"result_samples_per_second": 25.0})
    (case,) = merge([parse_results(document("vm", [rec]), "vm.json")]).cases
    assert case.devices == [Device("vm", "", None, "AMD EPYC 9654")]
    assert case.n_gpus == 1 and case.throughput is not None and case.throughput.per_gpu == 25.0


def test_llm_offline_adds_tokens_not_samples() -> None:
    metrics = {"result_samples_per_second": 90.0, "result_tokens_per_second": 27000.0}
    a = parse_results(document("a", [record("Offline", metrics, gpus=[gpu(0, "a")], workload="llama3_1-8b")]), "a")
    b = parse_results(document("b", [record("Offline", metrics, gpus=[gpu(0, "b")], workload="llama3_1-8b")]), "b")
    (case,) = merge([a, b]).cases
    assert case.throughput is not None
    assert (case.throughput.metric, case.throughput.unit) == ("result_tokens_per_second", "tokens/s")
    assert case.throughput.combined == pytest.approx(54000.0)


def test_server_sums_throughput_and_reports_the_worst_p99() -> None:
    def server(qps: float, p99: float, g: dict[str, Any]) -> dict[str, Any]:
        return record("Server", {"result_completed_samples_per_sec": qps, "result_99.00_percentile_latency_ns": p99},
                      gpus=[g])

    a = parse_results(document("node-a", [server(500.0, 9e6, gpu(0, "a")), server(510.0, 12e6, gpu(1, "a"))]), "a")
    b = parse_results(document("node-b", [server(490.0, 14e6, gpu(0, "b"))]), "b")
    (case,) = merge([a, b]).cases
    assert case.throughput is not None and case.throughput.combined == pytest.approx(1500.0)
    assert case.throughput.metric == "result_completed_samples_per_sec"
    assert case.latency is not None
    assert (case.latency.label, case.latency.value_ns, case.latency.host) == ("p99", 14e6, "node-b")
    assert case.latency.per_host == {"node-a": 12e6, "node-b": 14e6}


def test_singlestream_has_no_sum_but_the_worst_p90() -> None:
    def ss(p90: float, g: dict[str, Any]) -> dict[str, Any]:
        return record("SingleStream", {"result_90.00_percentile_latency_ns": p90,
                                       "result_99.00_percentile_latency_ns": p90 * 2}, gpus=[g])

    a = parse_results(document("node-a", [ss(500_000.0, gpu(0, "a"))]), "a")
    b = parse_results(document("node-b", [ss(530_000.0, gpu(0, "b"))]), "b")
    (case,) = merge([a, b]).cases
    assert case.throughput is None
    assert case.latency is not None
    assert (case.latency.metric, case.latency.value_ns, case.latency.host) == (
        "result_90.00_percentile_latency_ns", 530_000.0, "node-b")


def test_multistream_reports_the_worst_per_query_p99() -> None:
    ms = record("MultiStream", {"result_99.00_percentile_per_query_latency_ns": 1.5e6}, gpus=[gpu(0)])
    (case,) = merge([parse_results(document("a", [ms]), "a")]).cases
    assert case.latency is not None and case.latency.metric == "result_99.00_percentile_per_query_latency_ns"


def test_scaling_efficiency_against_a_one_gpu_run() -> None:
    run = parse_results(document("a", [offline(950.0, gpu(i)) for i in range(4)]), "run.json")
    single = parse_results(document("a", [offline(1000.0, gpu(0))]), "single.json")
    (case,) = merge([run], single).cases
    assert case.scaling_efficiency == pytest.approx(3800.0 / 4000.0)
    assert case.single_value == 1000.0 and case.single_source == "single.json"


def test_latency_against_a_one_gpu_run() -> None:
    def ss(p90: float, g: dict[str, Any]) -> dict[str, Any]:
        return record("SingleStream", {"result_90.00_percentile_latency_ns": p90}, gpus=[g])

    run = parse_results(document("a", [ss(550.0, gpu(0)), ss(600.0, gpu(1))]), "run.json")
    single = parse_results(document("a", [ss(500.0, gpu(0))]), "single.json")
    (case,) = merge([run], single).cases
    assert case.latency_vs_single == pytest.approx(1.2)
    assert case.scaling_efficiency is None


def test_no_efficiency_when_the_single_run_lacks_the_case() -> None:
    run = parse_results(document("a", [offline(950.0, gpu(0))]), "run.json")
    single = parse_results(document("a", [record("Server", {"result_completed_samples_per_sec": 1.0}, gpus=[gpu(0)])]),
                           "single.json")
    (case,) = merge([run], single).cases
    assert case.scaling_efficiency is None
    assert any("not in the single-GPU reference single.json" in n for n in case.notes)


def test_a_single_reference_with_several_gpus_is_noted() -> None:
    run = parse_results(document("a", [offline(900.0, gpu(i)) for i in range(4)]), "run.json")
    single = parse_results(document("a", [offline(2000.0, gpu(0), gpu(1))]), "single.json")
    (case,) = merge([run], single).cases
    assert case.scaling_efficiency == pytest.approx(3600.0 / 4000.0)
    assert any("ran on 2 devices" in n for n in case.notes)


def test_xdist_group_suffixes_are_the_same_case() -> None:
    plain = "b/t.py::test_x[resnet50-Offline-performance]"
    assert case_nodeid(plain + "@gpu0") == plain
    assert case_nodeid("b/t.py::test_x@heavy") == "b/t.py::test_x"
    assert case_nodeid("b/t.py::test_x[a@b]") == "b/t.py::test_x[a@b]"  # an @ inside the parameters stays
    node = NODE.format(scenario="Offline", mode="performance")
    a = record("Offline", {"result_samples_per_second": 1.0}, gpus=[gpu(0, "a")], nodeid=node + "@gw-group")
    b = record("Offline", {"result_samples_per_second": 2.0}, gpus=[gpu(0, "b")], nodeid=node)
    (case,) = merge([parse_results(document("a", [a]), "a"), parse_results(document("b", [b]), "b")]).cases
    assert case.case.nodeid == node and case.throughput is not None and case.throughput.combined == 3.0


def test_different_tests_of_the_same_key_stay_apart() -> None:
    """A reference and a candidate test measure the same workload under different recipes."""
    ref = record("Offline", {"result_samples_per_second": 1.0}, gpus=[gpu(0)], nodeid="t.py::test_reference")
    cand = record("Offline", {"result_samples_per_second": 2.0}, gpus=[gpu(1)], nodeid="t.py::test_candidate")
    cases = merge([parse_results(document("a", [ref, cand]), "a")]).cases
    assert sorted(c.case.nodeid for c in cases) == ["t.py::test_candidate", "t.py::test_reference"]


def test_modes_and_precisions_are_different_cases() -> None:
    perf = offline(10.0, gpu(0))
    acc = record("Offline", {}, mode="accuracy", gpus=[gpu(0)], validity="UNKNOWN")
    fp16 = offline(20.0, gpu(1))
    fp16["key"]["precision"] = "fp16"
    cases = merge([parse_results(document("a", [perf, acc, fp16]), "a")]).cases
    assert len(cases) == 3
    accuracy = next(c for c in cases if c.case.mode == "accuracy")
    assert accuracy.throughput is None and accuracy.latency is None


def test_the_same_gpu_twice_is_noted() -> None:
    src = parse_results(document("node-a", [offline(10.0, gpu(0, "a")), offline(10.0, gpu(0, "a"))]), "a")
    (case,) = merge([src]).cases
    assert any("GPU-a-0 on node-a is in 2 records" in n and "side by side" in n for n in case.notes)


def test_a_case_missing_from_a_host_is_noted() -> None:
    server_a = record("Server", {"result_completed_samples_per_sec": 5.0}, gpus=[gpu(0, "a")])
    a = parse_results(document("node-a", [offline(10.0, gpu(0, "a")), server_a]), "a.json")
    b = parse_results(document("node-b", [offline(10.0, gpu(0, "b"))]), "b.json")
    server = next(c for c in merge([a, b]).cases if c.case.scenario == "Server")
    assert "no record from node-b (b.json)" in server.notes
    offline_case = next(c for c in merge([a, b]).cases if c.case.scenario == "Offline")
    assert not any("no record" in n for n in offline_case.notes)


def test_a_record_without_the_metric_gives_no_combined_figure() -> None:
    a = parse_results(document("node-a", [offline(10.0, gpu(0, "a"))]), "a.json")
    b = parse_results(document("node-b", [record("Offline", {}, gpus=[gpu(0, "b")], outcome="failed")]), "b.json")
    (case,) = merge([a, b]).cases
    assert case.throughput is not None and case.throughput.combined is None and case.throughput.per_gpu is None
    assert any("no result_samples_per_second in the record from node-b" in n for n in case.notes)
    assert case.outcomes == {"failed": 1, "passed": 1}


def test_invalid_runs_and_mixed_systems_are_noted() -> None:
    good = offline(10.0, gpu(0, "a"))
    bad = record("Offline", {"result_samples_per_second": 9.0}, gpus=[gpu(0, "b")], validity="INVALID")
    bad["key"]["system"] = "1xNVIDIA-A100-SXM4-80GB"
    (case,) = merge([parse_results(document("a", [good]), "a"), parse_results(document("b", [bad]), "b")]).cases
    assert "INVALID for LoadGen on b" in case.notes
    assert any("different systems" in n for n in case.notes)
    assert case.validity == {"INVALID": 1, "VALID": 1}


def test_warnings_for_mixed_profiles_and_repeated_hosts() -> None:
    a = parse_results(document("node-a", [offline(1.0, gpu(0))], profile="ci"), "a.json")
    b = parse_results(document("node-a", [offline(1.0, gpu(1))], profile="official"), "b.json")
    warnings = merge([a, b]).warnings
    assert any("different profiles" in w and "official" in w for w in warnings)
    assert any("host node-a is in 2 files" in w for w in warnings)


def test_the_same_file_twice_is_refused() -> None:
    a = parse_results(document("node-a", [offline(1.0, gpu(0))]), "a.json")
    with pytest.raises(AggregateError, match="a.json: given more than once"):
        merge([a, a])


def test_cases_are_sorted_by_workload_then_scenario() -> None:
    recs = [record(s, {}, gpus=[gpu(0)]) for s in ("MultiStream", "SingleStream", "Server", "Offline")]
    cases = merge([parse_results(document("a", recs), "a")]).cases
    assert [c.case.scenario for c in cases] == ["Offline", "Server", "SingleStream", "MultiStream"]


# --------------------------------------------------------------------------- real records


def real_document(host: str, uuid_prefix: str) -> dict[str, Any]:
    """A results document the way the controller writes it, from real LoadGen logs, one GPU per case."""
    collector = ResultsCollector(Path("unused"))
    for prefix, workload in (("01", "resnet50"), ("02", "resnet50"), ("03", "resnet50"), ("06", "llama3_1-8b")):
        log = next(p for p in LOGS.iterdir() if p.is_dir() and p.name.startswith(prefix))
        run = read_run(log)
        key = CaseKey(workload, run.scenario, "performance", "onnxruntime", "fp32", "1xNVIDIA-H100-80GB-HBM3")
        case = CaseRun(
            nodeid=f"benchmarks/test_{workload}.py::test_{workload}[{run.scenario}-performance]", key=key, run=run,
            log_dir=str(log), profile="ci", tolerated=PROFILES["ci"].tolerated,
            backend={"backend": "onnxruntime", "device": "cuda", "precision": "fp32", "details": {}},
            system={"key": key.system, "gpus": f"0:{H100}:{uuid_prefix}-0", "driver": "580.65.06"},
            recipe="(plain)", test={},
        )
        collector.records.append({**case.to_record(), "outcome": "passed"})
    doc = collector.results_document(Settings(profile=PROFILES["ci"]))
    return {**json.loads(json.dumps(doc)), "host": host}


def test_real_results_documents_merge() -> None:
    a = parse_results(real_document("node-a", "GPU-a"), "a.json")
    b = parse_results(real_document("node-b", "GPU-b"), "b.json")
    cases = {(c.case.workload, c.case.scenario): c for c in merge([a, b]).cases}
    offline_rn = cases[("resnet50", "Offline")]
    assert offline_rn.n_gpus == 2 and offline_rn.hosts == ["node-a", "node-b"]
    assert offline_rn.throughput is not None and offline_rn.throughput.combined == pytest.approx(2 * 45617.3)
    server = cases[("resnet50", "Server")]
    assert server.throughput is not None and server.throughput.combined == pytest.approx(2 * 632229.0)
    assert server.latency is not None and server.latency.value_ns == 12981655.0
    ss = cases[("resnet50", "SingleStream")]
    assert ss.throughput is None and ss.latency is not None and ss.latency.value_ns == 513380.0
    llm = cases[("llama3_1-8b", "Offline")]
    assert llm.throughput is not None and llm.throughput.unit == "tokens/s"
    assert llm.throughput.combined == pytest.approx(2 * 27803.9)


# --------------------------------------------------------------------------- bad input


CASE0 = " (case benchmarks/test_resnet50.py::test_resnet50[resnet50-Offline-performance])"


@pytest.mark.parametrize("data, problem", [
    ([], "not a pytest-mlperf results file (expected \"format\": \"pytest-mlperf/results\""),
    ({"format": "pytest-mlperf/baseline", "version": 1}, "not a pytest-mlperf results file"),
    ({**document("a", []), "version": 2},
     "results format version 2, this pytest-mlperf reads 1: aggregate it with the pytest-mlperf version that wrote it"),
    ({**document("a", []), "cases": {}}, "Expected `array`, got `object` - at `$.cases`"),
    ({**document("a", []), "host": None}, "Expected `str`, got `null` - at `$.host`"),
    ({**document("a", []), "host": ""}, "Expected `str` of length >= 1 - at `$.host`"),
    ({**document("a", []), "profile": 3}, "Expected `str`, got `int` - at `$.profile`"),
    (document("a", ["x"]), "Expected `object`, got `str` - at `$.cases[0]`"),
    (document("a", [{"key": {}}]), "Object missing required field `workload` - at `$.cases[0].key`"),
    (document("a", [{k: v for k, v in record().items() if k != "nodeid"}]),
     "Object missing required field `nodeid` - at `$.cases[0]`"),
    (document("a", [{**record(), "nodeid": ""}]), "Expected `str` of length >= 1 - at `$.cases[0].nodeid`"),
    (document("a", [{**record(), "key": {"workload": "resnet50"}}]),
     "Object missing required field `scenario` - at `$.cases[0].key`" + CASE0),
    (document("a", [{**record(), "key": {**record()["key"], "scenario": 1}}]),
     "Expected `str`, got `int` - at `$.cases[0].key.scenario`" + CASE0),
    (document("a", [record(), {**record(), "metrics": {"result_samples_per_second": "fast"}}]),
     "Expected `float | null`, got `str` - at `$.cases[1].metrics[...]`" + CASE0),
    (document("a", [{**record(), "metrics": {"result_samples_per_second": True}}]),
     "Expected `float | null`, got `bool` - at `$.cases[0].metrics[...]`"),
    (document("a", [{**record(), "run": {"metrics": {"x": "1"}}}]),
     "Expected `float | null`, got `str` - at `$.cases[0].run.metrics[...]`"),
    (document("a", [{**record(), "metrics": [1]}]), "Expected `object | null`, got `array` - at `$.cases[0].metrics`"),
    (document("a", [{**record(), "run": "VALID"}]), "Expected `object | null`, got `str` - at `$.cases[0].run`"),
    (document("a", [record(gpus=[{"name": H100}])]),
     "a GPU entry needs a \"uuid\" (string) or an \"index\" (integer) - at `$.cases[0].gpus[0]`"),
    (document("a", [record(gpus=[{"index": True}])]),
     "Expected `int | null`, got `bool` - at `$.cases[0].gpus[0].index`"),
    (document("a", [record(gpus=["GPU-0"])]), "Expected `object`, got `str` - at `$.cases[0].gpus[0]`"),
    (document("a", [{**record(), "gpus": "GPU-0"}]), "Expected `array | null`, got `str` - at `$.cases[0].gpus`"),
    (document("a", [record(system_gpus="GPU-0")]),
     "GPU entry 'GPU-0' is not INDEX:NAME:UUID - at `$.cases[0].system`"),
    (document("a", [{**record(), "system": "H100"}]), "Expected `object | null`, got `str` - at `$.cases[0].system`"),
])
def test_bad_documents_are_one_line_errors(data: Any, problem: str) -> None:
    with pytest.raises(AggregateError) as exc:
        parse_results(data, "node-a/results.json")
    message = str(exc.value)
    assert message.startswith("node-a/results.json: ")
    assert problem in message
    assert "\n" not in message


def test_fields_aggregation_does_not_read_are_allowed() -> None:
    """Newer writers add fields: a document, a record, its key, run, gpus and system may carry more than is read."""
    rec = record("Offline", {"result_samples_per_second": 5.0}, gpus=[{**gpu(0), "memory_mib": 81559}])
    rec = {**rec, "new_field": {"any": ["thing"]}, "key": {**rec["key"], "tier": "gold"},
           "run": {**rec["run"], "new": 1}, "system": {**rec["system"], "numa": [0, 1]}}
    (case,) = merge([parse_results({**document("a", [rec]), "added_later": True}, "a.json")]).cases
    assert case.throughput is not None and case.throughput.combined == 5.0
    assert [d.uuid for d in case.devices] == ["GPU-a-0"]


def test_load_results_errors(tmp_path: Path) -> None:
    with pytest.raises(AggregateError, match="no such file"):
        load_results(tmp_path / "missing.json")
    with pytest.raises(AggregateError, match="is a folder"):
        load_results(tmp_path)
    (tmp_path / "junk.json").write_text("{\"format\": ")
    with pytest.raises(AggregateError, match="not JSON \\(line 1 column 12"):
        load_results(tmp_path / "junk.json")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(AggregateError, match="not a UTF-8 text file"):
        load_results(tmp_path / "binary.json")


def test_parse_gpu_list() -> None:
    assert parse_gpu_list(f"0:{H100}:GPU-1; 3:NVIDIA A100-SXM4-80GB:GPU-2", "h") == (
        Device("h", "GPU-1", 0, H100), Device("h", "GPU-2", 3, "NVIDIA A100-SXM4-80GB"))
    assert parse_gpu_list("", "h") == ()


# --------------------------------------------------------------------------- rendering and the command


@pytest.fixture
def two_hosts(tmp_path: Path) -> tuple[Path, Path, Path]:
    a = write(tmp_path / "node-a" / "results.json", document("node-a", [offline(1000.0, gpu(0, "a")),
                                                                      offline(900.0, gpu(1, "a"))]))
    b = write(tmp_path / "node-b" / "results.json", document("node-b", [offline(950.0, gpu(0, "b")),
                                                                      offline(950.0, gpu(1, "b"))]))
    single = write(tmp_path / "single" / "results.json", document("node-a", [offline(1000.0, gpu(0, "a"))]))
    return a, b, single


def test_terminal_and_markdown_tables(two_hosts) -> None:
    a, b, single = two_hosts
    agg = merge([load_results(a), load_results(b)], load_results(single))
    lines = terminal_lines(agg)
    assert lines[0].split()[:4] == ["case", "backend", "hosts", "GPUs"]
    row = next(line for line in lines if line.startswith("resnet50 Offline performance"))
    assert "node-a, node-b" in row and "3,800.0 samples/s" in row and "950.0 samples/s" in row and "95.0%" in row
    assert any(line.startswith(f"single-GPU reference: {single}") for line in lines)
    md = render_markdown(agg)
    assert "| case | backend | hosts | GPUs | combined | per GPU |" in md
    assert "| resnet50 Offline performance | onnxruntime/fp32 | node-a, node-b | 4 | 3,800.0 samples/s |" in md


def test_cli_aggregate_writes_markdown_and_json(two_hosts, tmp_path: Path, capsys) -> None:
    a, b, single = two_hosts
    md, js = tmp_path / "out" / "scaling.md", tmp_path / "out" / "scaling.json"
    code = main(["aggregate", str(a), str(b), "--single", str(single), "--markdown", str(md), "--json", str(js)])
    out, err = capsys.readouterr()
    assert code == EXIT_OK and err == ""
    assert "3,800.0 samples/s" in out
    assert "95.0%" in md.read_text()
    data = json.loads(js.read_text())
    assert data["format"] == AGGREGATE_FORMAT
    assert data["sources"] == [
        {"path": str(a), "host": "node-a", "profile": "ci", "created": "2025-01-01T00:00:00+00:00", "cases": 2},
        {"path": str(b), "host": "node-b", "profile": "ci", "created": "2025-01-01T00:00:00+00:00", "cases": 2},
    ]
    (case,) = data["cases"]
    assert case["hosts"] == ["node-a", "node-b"] and case["n_gpus"] == 4
    assert case["throughput"]["combined"] == pytest.approx(3800.0)
    assert case["throughput"]["per_gpu"] == pytest.approx(950.0)
    assert case["scaling_efficiency"] == pytest.approx(0.95)
    assert [r["value"] for r in case["records"]] == [1000.0, 900.0, 950.0, 950.0]
    assert sorted(p.name for p in md.parent.iterdir()) == ["scaling.json", "scaling.md"]  # no temporary files left


@pytest.mark.parametrize("setup, problem", [
    (lambda d: [str(d / "missing.json")], "missing.json: no such file"),
    (lambda d: [str(write(d / "bad.json", {"format": "x"}))], "not a pytest-mlperf results file"),
    (lambda d: [str(write(d / "ok.json", document("a", []))), "--single", str(d / "nope.json")], "nope.json"),
])
def test_cli_aggregate_bad_input_is_a_usage_error(tmp_path: Path, capsys, setup, problem: str) -> None:
    code = main(["aggregate", *setup(tmp_path)])
    out, err = capsys.readouterr()
    assert code == EXIT_USAGE
    assert out == ""
    assert err.startswith("pytest-mlperf aggregate: ") and problem in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_aggregate_needs_files(capsys) -> None:
    assert main(["aggregate"]) == EXIT_USAGE
    assert "FILE" in capsys.readouterr().err


def test_cli_aggregate_unwritable_output(two_hosts, tmp_path: Path, capsys) -> None:
    a, _, _ = two_hosts
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = main(["aggregate", str(a), "--json", str(blocker / "out.json")])
    _, err = capsys.readouterr()
    assert code == EXIT_USAGE
    assert err.startswith(f"pytest-mlperf aggregate: cannot write {blocker / 'out.json'}") and err.count("\n") == 1


def test_cli_aggregate_of_files_without_cases(tmp_path: Path, capsys) -> None:
    empty = write(tmp_path / "empty.json", document("a", []))
    assert main(["aggregate", str(empty)]) == EXIT_OK
    assert "warning: no cases in the given results files" in capsys.readouterr().out


def test_input_documents_are_not_modified(two_hosts) -> None:
    a, _, _ = two_hosts
    before = json.loads(a.read_text())
    data = copy.deepcopy(before)
    merge([parse_results(data, str(a))])
    assert data == before


def test_a_cpu_run_is_not_reported_as_one_gpu() -> None:
    """The table of a CPU run says CPU where the GPU count goes, and gives no per-GPU figure."""
    cpu_case = record("Offline", {"result_samples_per_second": 25.0})
    agg = merge([parse_results(document("vm", [cpu_case]), "vm.json")])
    (_, row) = aggregate_table_rows(agg)
    assert row[3] == "CPU" and row[4] == "25.0 samples/s" and row[5] == "-"
    both = merge([parse_results(document("a", [cpu_case]), "a.json"), parse_results(document("b", [cpu_case]), "b")])
    assert aggregate_table_rows(both)[1][3] == "2 CPUs"
    gpu_case = offline(1000.0, gpu(0, "a"), gpu(1, "a"))
    (_, row) = aggregate_table_rows(merge([parse_results(document("a", [gpu_case]), "a.json")]))
    assert row[3] == "2" and row[5] == "500.0 samples/s"


# --------------------------------------------------------------------------- failed cases (issue 10)


def failed_record(host: str, reason: str, *, started: bool = True) -> dict[str, Any]:
    """A failure record as the plugin writes it (session.failure_record) for a case LoadGen gave no result."""
    from types import SimpleNamespace

    from pytest_mlperf.host.results.records import failure_record

    marker = SimpleNamespace(kwargs={"workload": "resnet50"})
    item = SimpleNamespace(nodeid=NODE.format(scenario="Offline", mode="performance"),
                           get_closest_marker=lambda name: marker,
                           callspec=SimpleNamespace(params={"mlperf_scenario": "Offline", "mlperf_mode": "performance"}))
    attempt = None
    if started:  # the runner had started: the key and the GPU are known
        attempt = {"key": {"workload": "resnet50", "scenario": "Offline", "mode": "performance",
                           "backend": "onnxruntime", "precision": "fp32", "system": "1xNVIDIA-H100-80GB-HBM3"},
                   "gpus": [gpu(0, host)], "backend": {"backend": "onnxruntime", "device": "cuda"}}
    return json.loads(json.dumps({**failure_record(item, attempt, reason), "outcome": "failed", "worker": "gw0"}))


def test_a_failed_case_is_counted_with_its_reason_not_dropped() -> None:
    a = parse_results(document("node-a", [offline(10.0, gpu(0, "a"))]), "a.json")
    b = parse_results(document("node-b", [failed_record("b", "the SUT raised during the LoadGen test:\nTraceback")]),
                      "b.json")
    (case,) = merge([a, b]).cases  # the same case: its failure on node-b is one of its records
    assert case.outcomes == {"failed": 1, "passed": 1} and case.validity == {"-": 1, "VALID": 1}
    assert case.throughput is not None and case.throughput.combined is None  # node-b measured nothing
    assert "failed on node-b (b.json): the SUT raised during the LoadGen test: [+1 lines]" in case.notes
    doc = case_dict(case)
    assert [r["reason"] for r in doc["records"]] == [None, "the SUT raised during the LoadGen test:\nTraceback"]


def test_a_case_that_failed_before_its_runner_started_is_its_own_row() -> None:
    source = parse_results(document("node-a", [failed_record("a", "could not start the runner", started=False)]),
                           "a.json")
    (case,) = merge([source]).cases
    assert case.case.precision == "?" and case.outcomes == {"failed": 1} and case.throughput is None
    assert render_table(table_rows(merge([source])))[2].endswith("1 failed")


def test_the_cli_aggregates_results_with_failed_cases(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write(tmp_path / "a.json", document("node-a", [offline(10.0, gpu(0, "a"))]))
    b = write(tmp_path / "b.json", document("node-b", [failed_record("b", "runner was killed by SIGKILL")]))
    js = tmp_path / "agg.json"
    assert main(["aggregate", str(a), str(b), "--json", str(js)]) == EXIT_OK
    assert "failed on node-b" in capsys.readouterr().out
    (case,) = json.loads(js.read_text())["cases"]
    assert case["outcomes"] == {"failed": 1, "passed": 1}


def test_a_run_that_is_not_an_object_or_null_is_refused() -> None:
    bad = {**record(), "run": [1]}
    with pytest.raises(AggregateError,
                       match=r"^a\.json: .*Expected `object \| null`, got `array` - at `\$\.cases\[0\]\.run`"):
        parse_results(document("node-a", [bad]), "a.json")
