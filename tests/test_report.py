"""Tests for pytest_mlperf.host.results.report: value formatting, the terminal table, the collector and the results JSON.

Records are built the way the plugin builds them: `CaseRun.to_record()` on a run read from real LoadGen logs, plus
the "baseline" comparisons list `pytest_runtest_makereport` adds."""

from __future__ import annotations

import json
import platform
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import pytest_mlperf
from pytest_mlperf.host.baselines.store import Baseline, CaseKey, Comparison, Metric, load_baseline, write_json_atomic
from pytest_mlperf.host.driver.cases import CaseRun
from pytest_mlperf.contract.loadgen_log import read_run
from pytest_mlperf.host.results.report import (
    RESULTS_FORMAT,
    ResultsCollector,
    delta_of,
    format_value,
    headline_of,
    render_table,
    sharing_note,
    table_rows,
)
from pytest_mlperf.host.settings import PROFILES, Settings

LOGS = Path(__file__).parent / "data" / "mlperf-logs"
RECORD = "mlperf_case"
BASELINE = "mlperf_baseline"


def log_dir(prefix: str) -> Path:
    (match,) = [p for p in LOGS.iterdir() if p.is_dir() and p.name.startswith(prefix)]
    return match


def make_case(prefix: str = "01", *, workload: str = "resnet50", mode: str = "performance", **fields: Any) -> CaseRun:
    run = read_run(log_dir(prefix))
    key = CaseKey(workload, run.scenario, mode, "onnxruntime", "fp32", "cpu-Test-CPU-2c")
    defaults: dict[str, Any] = dict(
        nodeid=f"benchmarks/test_{workload}.py::test_{workload}[{run.scenario}-{mode}]",
        key=key, run=run, log_dir=str(log_dir(prefix)), profile="smoke",
        tolerated=PROFILES["smoke"].tolerated, backend={"name": "onnxruntime", "device": "cpu", "details": {}},
        system={"key": key.system}, recipe="stand-in", test={"min_duration_ms": 1500},
    )
    defaults.update(fields)
    return CaseRun(**defaults)


def make_record(case: CaseRun, comparisons: list[Comparison] | None = None) -> dict[str, Any]:
    record = case.to_record()
    record["baseline"] = [
        {"metric": c.metric, "baseline": c.baseline, "measured": c.measured, "change": c.change,
         "worse_by": c.worse_by, "regressed": c.regressed, "higher_is_better": c.higher_is_better}
        for c in comparisons or []
    ]
    return json.loads(json.dumps(record))  # as it arrives from an xdist worker


def report(*props: tuple[str, Any], when: str = "call", outcome: str = "passed") -> SimpleNamespace:
    return SimpleNamespace(when=when, outcome=outcome, passed=outcome == "passed", user_properties=list(props))


def baseline_dict(path_key: CaseKey, samples_per_s: float, p99_ns: float = 2e6) -> dict[str, Any]:
    return Baseline(
        key=path_key,
        metrics={
            "result_samples_per_second": Metric("result_samples_per_second", samples_per_s, "samples/s", True),
            "result_99.00_percentile_latency_ns": Metric("result_99.00_percentile_latency_ns", p99_ns, "ns", False),
        },
        recorded_at="2025-01-01T00:00:00+00:00",
    ).to_dict()


# --------------------------------------------------------------------------- format_value / headline_of / delta_of


@pytest.mark.parametrize("value, unit, text", [
    (None, "ns", "-"),
    (None, "samples/s", "-"),
    (12_981_655.0, "ns", "12.982 ms"),
    (513_380.0, "ns", "0.513 ms"),
    (0.0, "ns", "0.000 ms"),
    (45_617.3, "samples/s", "45,617.3 samples/s"),
    (1_234_567.89, "tokens/s", "1,234,567.9 tokens/s"),
    (81.6768, "samples/s", "81.7 samples/s"),
])
def test_format_value(value: float | None, unit: str, text: str) -> None:
    assert format_value(value, unit) == text


def test_headline_of_throughput_run() -> None:
    assert headline_of(make_record(make_case("01"))) == ("result_samples_per_second", "45,617.3 samples/s")


def test_headline_of_latency_run_is_in_ms() -> None:
    assert headline_of(make_record(make_case("03"))) == ("early_stopping_latency_ss", "0.513 ms")


def test_headline_of_an_llm_singlestream_run_is_the_checkers_end_to_end_p90() -> None:
    fresh = Path(__file__).parent / "data" / "loadgen-6.0.17" / "singlestream-llm"
    record = make_record(make_case("03", workload="llama3_1-8b", run=read_run(fresh), log_dir=str(fresh)))
    assert record["run"]["token_headline"]["metric"] == "result_completed_tokens_per_second"
    assert headline_of(record) == ("result_90.00_percentile_latency_ns", "1.160 ms")


def test_headline_of_prefers_the_token_headline() -> None:
    record = make_record(make_case("05", workload="llama2-70b"))
    assert record["run"]["headline"]["metric"] == "result_completed_samples_per_sec"
    assert headline_of(record) == ("result_completed_tokens_per_second", "24,593.8 tokens/s")


def test_headline_of_without_any_headline() -> None:
    record = make_record(make_case("01"))
    record["run"]["headline"] = None
    record["run"]["token_headline"] = None
    assert headline_of(record) == ("-", "-")


def comparison_dicts(*comps: Comparison) -> list[dict[str, Any]]:
    return make_record(make_case("01"), list(comps))["baseline"]


def test_delta_of_without_baseline() -> None:
    missing = make_case("01", missing_baseline="baselines/resnet50/Offline.json")
    assert delta_of(make_record(missing)) == "no baseline"
    record = make_record(missing)
    del record["baseline"]
    assert delta_of(record) == "no baseline"


def test_delta_of_not_compared_is_a_dash() -> None:
    # neither compared nor known to be missing (e.g. the test never asked for a baseline check)
    assert delta_of(make_record(make_case("01"))) == "-"


@pytest.mark.parametrize("match, text", [(True, "outputs equal"), (False, "OUTPUTS DIFFER")])
def test_delta_of_accuracy_outputs_against_the_baseline(match: bool, text: str) -> None:
    case = make_case("01", mode="accuracy", outputs_match=match)
    # the outputs verdict wins over any metric comparison
    assert delta_of(make_record(case, [Comparison("m", "u", True, 200.0, 150.0, 0.05)])) == text


def test_delta_of_shows_the_worst_metric() -> None:
    comps = [
        Comparison("result_completed_samples_per_sec", "samples/s", True, 100.0, 103.0, 0.05),  # 3% better
        Comparison("result_99.00_percentile_latency_ns", "ns", False, 100.0, 104.0, 0.05),  # 4% worse
        Comparison("result_first_token_99.00_percentile_latency_ns", "ns", False, 100.0, 98.0, 0.05),  # better
    ]
    assert delta_of({"baseline": comparison_dicts(*comps)}) == "+4.0%"


def test_delta_of_throughput_drop_is_negative_and_regressed() -> None:
    comps = [
        Comparison("result_samples_per_second", "samples/s", True, 200.0, 150.0, 0.05),  # 25% worse
        Comparison("result_99.00_percentile_latency_ns", "ns", False, 100.0, 110.0, 0.05),  # 10% worse
    ]
    assert delta_of({"baseline": comparison_dicts(*comps)}) == "-25.0% REGRESSED"


# --------------------------------------------------------------------------- table_rows / render_table


def test_table_rows_columns_and_cells() -> None:
    server = make_case("02")
    rows = table_rows([make_record(make_case("01")), make_record(server)])
    assert rows[0] == ["case", "backend", "device", "headline", "p99", "validity", "vs baseline", "outcome"]
    offline = rows[1]
    assert offline[:3] == ["resnet50 Offline performance", "onnxruntime/fp32", "cpu"]
    assert offline[3] == "45,617.3 samples/s"
    assert offline[5] == "VALID"
    assert offline[6] == "-"  # not compared
    assert offline[7] == "?"  # the collector adds the outcome; a bare record has none
    assert rows[2][4] == "12.982 ms"  # Server p99 of 12981655 ns
    (_, row) = table_rows([make_record(make_case("01", missing_baseline="b/x.json"))])
    assert row[6] == "no baseline"


def test_cases_that_would_read_the_same_also_name_their_test() -> None:
    copies = [make_case("01", nodeid=f"tools/t.py::test_copy[resnet50-Offline-performance-{i}]") for i in range(2)]
    other = make_case("02")
    rows = table_rows([make_record(c) for c in (*copies, other)])
    assert [r[0] for r in rows[1:]] == [
        "resnet50 Offline performance (t.py::test_copy[resnet50-Offline-performance-0])",
        "resnet50 Offline performance (t.py::test_copy[resnet50-Offline-performance-1])",
        "resnet50 Server performance",  # unique: the short label
    ]


def test_table_rows_marks_an_invalid_run_accepted_by_the_profile() -> None:
    case = make_case("07", workload="llama2-70b")
    case.assert_valid()  # smoke tolerates perf_constraints and early_stopping: passes with a note
    assert case.notes
    (_, row) = table_rows([make_record(case)])
    assert row[5] == "INVALID*"
    (_, row) = table_rows([make_record(make_case("07", workload="llama2-70b"))])
    assert row[5] == "INVALID"  # without a note there is no star


def test_table_rows_accuracy_without_baseline_shows_a_dash() -> None:
    record = make_record(make_case("01", mode="accuracy"))
    record["backend"] = {}
    record["run"]["latency_ns"] = {}
    (_, row) = table_rows([record])
    assert row[2] == "?"  # no device known
    assert row[4] == "-"  # no p99
    assert row[6] == "-"
    record["baseline"] = comparison_dicts(Comparison("m", "u", True, 10.0, 11.0, 0.05))
    (_, row) = table_rows([record])
    assert row[6] == "+10.0%"


def column_starts(widths: list[int]) -> list[int]:
    starts, pos = [], 0
    for w in widths:
        starts.append(pos)
        pos += w + 2
    return starts


def test_render_table_aligns_every_column() -> None:
    case_invalid = make_case("07", workload="llama2-70b")
    case_invalid.assert_valid()
    records = [make_record(make_case(p)) for p in ("01", "02", "03", "04")]
    records.append(make_record(case_invalid, [Comparison("m", "u", True, 200.0, 150.0, 0.05)]))
    for r, outcome in zip(records, ["passed", "failed", "passed", "skipped", "passed"]):
        r["outcome"] = outcome
    rows = table_rows(records)
    lines = render_table(rows)
    assert len(lines) == len(rows) + 1
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    starts = column_starts(widths)
    # the rule under the header: dashes exactly under each column
    assert lines[1] == "  ".join("-" * w for w in widths)
    for line, row in zip([lines[0], *lines[2:]], rows):
        assert line == line.rstrip()
        for start, cell, width in zip(starts, row, widths):
            assert line[start:start + len(cell)] == cell
            if start:
                assert line[start - 2:start] == "  "  # two spaces before every column
            assert line[start + len(cell):start + width].strip() == ""  # padded, nothing else
    # every column starts at the same place on every line
    for start in starts[1:]:
        assert all(line[start - 1] == " " for line in lines if len(line) > start)


def test_render_table_header_only() -> None:
    lines = render_table([["a", "bb"]])
    assert lines == ["a  bb", "-  --"]


# --------------------------------------------------------------------------- ResultsCollector.add


def test_add_collects_records_from_call_reports_only(tmp_path: Path) -> None:
    col = ResultsCollector(tmp_path)
    rec = make_record(make_case("01"))
    col.add(report((RECORD, rec), when="setup"), RECORD, BASELINE)
    col.add(report((RECORD, rec), when="teardown"), RECORD, BASELINE)
    assert col.records == []
    col.add(report(("other", 1), (RECORD, rec), outcome="failed"), RECORD, BASELINE)
    assert len(col.records) == 1
    assert col.records[0]["outcome"] == "failed"
    assert col.records[0]["nodeid"] == rec["nodeid"]
    assert "outcome" not in rec  # the report's record is not modified
    assert col.table_lines()[2].endswith("failed")


def test_add_writes_a_baseline_only_when_the_test_passed(tmp_path: Path) -> None:
    key = make_case("01").key
    path = key.path(tmp_path / "baselines")
    col = ResultsCollector(tmp_path / "baselines")
    for outcome in ("failed", "skipped"):
        col.add(report((BASELINE, (str(path), baseline_dict(key, 1000.0))), outcome=outcome), RECORD, BASELINE)
    assert not path.exists()
    assert col.written == []
    col.add(report((BASELINE, (str(path), baseline_dict(key, 1000.0)))), RECORD, BASELINE)
    assert path.is_file()
    assert load_baseline(path).metrics["result_samples_per_second"].value == 1000.0
    assert col.written == [f"baseline recorded: {path}"]
    assert list(path.parent.iterdir()) == [path]  # no temp file left beside it
    assert not any(p for p in tmp_path.rglob("*") if p.is_file() and p != path)


def test_add_replacing_a_baseline_lists_the_changes(tmp_path: Path) -> None:
    key = make_case("01").key
    path = key.path(tmp_path)
    col = ResultsCollector(tmp_path)
    col.add(report((BASELINE, (str(path), baseline_dict(key, 1000.0, 2e6)))), RECORD, BASELINE)
    new = baseline_dict(key, 1100.0, 1.5e6)
    new["metrics"]["extra_metric"] = {"name": "extra_metric", "value": 3.0, "unit": "x", "higher_is_better": True}
    col.add(report((BASELINE, (str(path), new))), RECORD, BASELINE)
    assert col.written[1] == (
        f"baseline replaced (--mlperf-update-baselines): {path} "
        "[result_samples_per_second 1000 -> 1100, result_99.00_percentile_latency_ns 2e+06 -> 1.5e+06]"
    )
    assert load_baseline(path).metrics["result_samples_per_second"].value == 1100.0
    assert col.note_lines()[-2:] == col.written


def test_add_over_a_corrupt_baseline_records_it_afresh(tmp_path: Path) -> None:
    key = make_case("01").key
    path = key.path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("{ not json")
    col = ResultsCollector(tmp_path)
    col.add(report((BASELINE, (str(path), baseline_dict(key, 1000.0)))), RECORD, BASELINE)
    assert col.written == [f"baseline recorded: {path}"]
    assert load_baseline(path) is not None


def test_add_never_writes_a_broken_baseline(tmp_path: Path) -> None:
    key = make_case("01").key
    path = key.path(tmp_path)
    write_json_atomic(path, baseline_dict(key, 1000.0))
    before = path.read_text()
    bad = baseline_dict(key, 0.0)  # a non-positive metric
    col = ResultsCollector(tmp_path)
    col.add(report((BASELINE, (str(path), bad))), RECORD, BASELINE)
    assert path.read_text() == before
    assert col.written == []
    (problem,) = col.problems
    assert problem.startswith(f"baseline not written: {path}: metric result_samples_per_second has a non-positive")
    assert col.note_lines() == [problem]


# --------------------------------------------------------------------------- note_lines


def test_note_lines_notes_and_harness_efficiency(tmp_path: Path) -> None:
    case = make_case("07", workload="llama2-70b")
    case.assert_valid()
    offline = make_case("01", calibration={"bare": {"samples_per_s": 50_000.0}})
    col = ResultsCollector(tmp_path)
    for c in (case, offline):
        col.add(report((RECORD, make_record(c))), RECORD, BASELINE)
    lines = col.note_lines()
    assert lines[0] == f"note: {case.nodeid}: {case.notes[0]}"
    assert lines[1] == f"harness: {offline.nodeid}: LoadGen 91.2% of the bare loop (50,000.0 samples/s)"
    assert len(lines) == 2


def test_note_lines_groups_missing_baselines_under_their_common_folder(tmp_path: Path) -> None:
    base = tmp_path / "baselines"
    a = make_case("01")
    a.missing_baseline = str(a.key.path(base))
    b = make_case("05", workload="llama2-70b")
    b.missing_baseline = str(b.key.path(base))
    c = make_case("02")  # has a baseline
    col = ResultsCollector(base)
    for case in (a, b, c):
        col.add(report((RECORD, make_record(case))), RECORD, BASELINE)
    (line,) = col.note_lines()
    assert line.startswith(f"no baseline for 2 case(s) under {base}: ")
    assert "--mlperf-update-baselines" in line and "--mlperf-require-baselines" in line


def test_note_lines_say_which_systems_have_the_missing_baselines(tmp_path: Path) -> None:
    """A machine whose GPU has no baseline is told which systems have them (issue 13: H100 and H200 ship)."""
    from dataclasses import replace as dc_replace

    a = make_case("01")
    a.missing_baseline = str(a.key.path(tmp_path))
    folder = Path(a.missing_baseline).parent
    folder.mkdir(parents=True)
    for system in ("1xNVIDIA-H200", "1xNVIDIA-H100-80GB-HBM3"):
        dc_replace(a.key, system=system).path(tmp_path).write_text("{}")
    dc_replace(a.key, scenario="Server", system="2xNVIDIA-B200").path(tmp_path).write_text("{}")  # another case
    col = ResultsCollector(tmp_path)
    col.add(report((RECORD, make_record(a))), RECORD, BASELINE)
    lines = col.note_lines()
    assert lines[1] == (f"baselines of these cases exist for other systems: 1xNVIDIA_H100_80GB_HBM3, 1xNVIDIA_H200 "
                        f"(this system: {a.key.system})")


def test_note_lines_single_missing_baseline_names_its_folder(tmp_path: Path) -> None:
    a = make_case("01")
    a.missing_baseline = str(a.key.path(tmp_path))
    col = ResultsCollector(tmp_path)
    col.add(report((RECORD, make_record(a))), RECORD, BASELINE)
    (line,) = col.note_lines()
    assert line.startswith(f"no baseline for 1 case(s) under {tmp_path / 'resnet50'}: ")


def test_note_lines_and_table_empty_without_records(tmp_path: Path) -> None:
    col = ResultsCollector(tmp_path)
    assert col.note_lines() == []
    assert col.table_lines() == []


# --------------------------------------------------------------------------- results_document


def test_results_document_fields(tmp_path: Path) -> None:
    col = ResultsCollector(tmp_path)
    col.add(report((RECORD, make_record(make_case("01")))), RECORD, BASELINE)
    doc = col.results_document(Settings(profile=PROFILES["ci"]))
    assert doc["format"] == RESULTS_FORMAT == "pytest-mlperf/results"
    assert doc["version"] == 1
    assert doc["pytest_mlperf"] == pytest_mlperf.__version__
    assert doc["host"] == platform.node()
    assert doc["profile"] == "ci"
    created = datetime.fromisoformat(doc["created"])
    assert created.tzinfo is not None and created.microsecond == 0
    assert doc["cases"] == col.records
    assert doc["cases"][0]["outcome"] == "passed"
    assert doc["cases"][0]["metrics"] == {"result_samples_per_second": 45617.3}
    json.dumps(doc)  # JSON-safe as a whole


def test_sharing_note_flags_cpu_cases_on_several_workers_only() -> None:
    cpu = [{"worker": "gw0", "gpus": []}, {"worker": "gw1", "gpus": []}, {"worker": "gw0"}]
    note = sharing_note(cpu)
    assert note is not None and "2 pytest-xdist workers" in note and "gw0, gw1" in note and "without -n" in note
    assert sharing_note(cpu[:1]) is None and sharing_note([]) is None
    assert sharing_note([{"worker": "main", "gpus": []}]) is None
    on_gpus = [{"worker": f"gw{i}", "gpus": [{"uuid": f"GPU-{i}"}]} for i in range(4)]
    assert sharing_note(on_gpus) is None  # each worker on its own GPU
    assert sharing_note([*on_gpus, cpu[0]]) is None  # one CPU worker alone shares with nobody measured on the CPU


# --------------------------------------------------------------------------- failed cases (issue 10)


def test_a_case_without_a_loadgen_result_is_a_row_with_its_outcome_and_reason(tmp_path: Path) -> None:
    from pytest_mlperf.host.results.records import failure_record

    marker = SimpleNamespace(kwargs={"workload": "resnet50"})
    item = SimpleNamespace(nodeid="benchmarks/test_resnet50.py::test_resnet50[resnet50-Server-performance]",
                           get_closest_marker=lambda name: marker,
                           callspec=SimpleNamespace(params={"mlperf_scenario": "Server",
                                                            "mlperf_mode": "performance"}))
    failed = json.loads(json.dumps(failure_record(item, None, "runner was killed by SIGKILL\nlog tail")))
    col = ResultsCollector(tmp_path)
    col.add(report((RECORD, make_record(make_case("01")))), RECORD, BASELINE)
    col.add(report((RECORD, failed), outcome="failed"), RECORD, BASELINE)
    col.add(report((RECORD, failed), when="setup", outcome="failed"), RECORD, BASELINE)  # a fixture error
    lines = col.table_lines()
    assert len(lines) == 5
    assert lines[3].startswith("resnet50 Server performance")
    assert lines[3].split()[-7:] == ["onnxruntime/?", "?", "-", "-", "-", "-", "failed"]
    assert lines[4].split()[-1] == "error"
    notes = col.note_lines()
    assert f"failed: {item.nodeid}: runner was killed by SIGKILL [+1 lines]" in notes
    assert f"error: {item.nodeid}: runner was killed by SIGKILL [+1 lines]" in notes
    doc = col.results_document(Settings())
    assert [c["outcome"] for c in doc["cases"]] == ["passed", "failed", "error"]
    assert doc["cases"][1]["reason"] == "runner was killed by SIGKILL\nlog tail"


def test_the_latency_line_names_the_batch_and_the_tail_when_known() -> None:
    from pytest_mlperf.host.results.report import latency_line
    bare = {"batch_size": 8, "batch_latency_p50_s": 0.00148, "batch_latency_p99_s": 0.00155}
    assert latency_line("t::ms", 0.012, 0.035, bare) == (
        "harness: t::ms: LoadGen p50 +1.2% over the bare batch-8 p50 (1.480 ms), p99 +3.5% over its p99 (1.550 ms)")
    assert latency_line("t::ss", -0.01, None, {"batch_size": 1, "batch_latency_p50_s": 0.0007}) == (
        "harness: t::ss: LoadGen p50 -1.0% over the bare batch-1 p50 (0.700 ms)")
