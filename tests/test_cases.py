"""Tests for pytest_mlperf.host.driver.cases: regression metrics and the CaseRun assertions, on real LoadGen logs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from pytest_mlperf.host.baselines.store import CaseKey
from pytest_mlperf.host.driver.cases import REGRESSION_METRICS, SHORT_RUN_HINT, CaseRun, regression_metrics, rerun_expected_qps
from pytest_mlperf.contract.loadgen_log import read_run
from pytest_mlperf.contract.loadgen_run import Latency, Run
from pytest_mlperf.host.settings import PROFILES

DATA = Path(__file__).parent / "data"
LOGS = DATA / "mlperf-logs"
FRESH = DATA / "loadgen-6.0.17"
Failed = pytest.fail.Exception


def log_dir(prefix: str) -> Path:
    (match,) = [p for p in LOGS.iterdir() if p.is_dir() and p.name.startswith(prefix)]
    return match


RUNS: dict[str, Run] = {}


def run_of(prefix: str) -> Run:
    if prefix not in RUNS:
        RUNS[prefix] = read_run(log_dir(prefix))
    return RUNS[prefix]


def make_case(run: Run | str, *, profile: str = "smoke", **fields: Any) -> CaseRun:
    if isinstance(run, str):
        run = run_of(run)
    key = CaseKey("resnet50", run.scenario, "performance", "onnxruntime", "fp32", "cpu-Test-2c")
    defaults: dict[str, Any] = dict(
        nodeid="benchmarks/test_x.py::test_x", key=key, run=run, log_dir="/logs/case-1", profile=profile,
        tolerated=PROFILES[profile].tolerated, backend={"device": "cpu"}, system={"key": key.system},
        recipe="stand-in", test={},
    )
    defaults.update(fields)
    return CaseRun(**defaults)


def failure(fn, *args, **kwargs) -> str:
    with pytest.raises(Failed) as exc:
        fn(*args, **kwargs)
    assert exc.value.pytrace is False  # a user-facing message, not a traceback into the plugin
    return exc.value.msg


# --------------------------------------------------------------------------- regression_metrics


THROUGHPUT = ("samples/s", True)
NS_LOWER = ("ns", False)


@pytest.mark.parametrize("prefix, expected", [
    ("01", {"result_samples_per_second": (45617.3, *THROUGHPUT)}),
    ("02", {"result_completed_samples_per_sec": (632229.0, *THROUGHPUT),
            "result_99.00_percentile_latency_ns": (12981655.0, *NS_LOWER)}),
    ("03", {"early_stopping_latency_ss": (513395.0, *NS_LOWER),
            "result_90.00_percentile_latency_ns": (513380.0, *NS_LOWER)}),
    ("04", {"early_stopping_latency_ms": (1482812.0, *NS_LOWER),
            "result_99.00_percentile_per_query_latency_ns": (1482562.0, *NS_LOWER)}),
    ("05", {"result_completed_samples_per_sec": (81.6768, *THROUGHPUT),
            "result_completed_tokens_per_second": (24593.8, "tokens/s", True),
            "result_99.00_percentile_latency_ns": (136069232834.0, *NS_LOWER),
            "result_first_token_99.00_percentile_latency_ns": (1914647645.0, *NS_LOWER),
            "result_time_per_output_token_99.00_percentile_ns": (193380124.0, *NS_LOWER)}),
    ("06", {"result_samples_per_second": (92.1544, *THROUGHPUT),
            "result_tokens_per_second": (27803.9, "tokens/s", True)}),
])
def test_regression_metrics_per_scenario(prefix: str, expected: dict[str, tuple[float, str, bool]]) -> None:
    metrics = regression_metrics(run_of(prefix))
    assert set(metrics) == set(expected)
    for name, (value, unit, higher) in expected.items():
        m = metrics[name]
        assert m.name == name
        assert m.value == pytest.approx(value)
        assert (m.unit, m.higher_is_better) == (unit, higher)
        assert m.samples == ()


def test_regression_metrics_follow_the_table_order() -> None:
    run = run_of("05")
    table_keys = [k for k, _, _ in REGRESSION_METRICS["Server"]]
    assert list(regression_metrics(run)) == [k for k in table_keys if k in run.metrics]


def test_regression_metrics_skip_zero_estimates() -> None:
    # LoadGen logs 0 when a run was too short for its early-stopping estimate: the percentile still compares
    run = run_of("03")
    short = dataclasses.replace(run, metrics={**run.metrics, "early_stopping_latency_ss": 0.0})
    assert list(regression_metrics(short)) == ["result_90.00_percentile_latency_ns"]


def test_regression_metrics_unknown_scenario_is_empty() -> None:
    assert regression_metrics(dataclasses.replace(run_of("01"), scenario="Streaming")) == {}


def test_every_regression_metric_has_a_consistent_direction() -> None:
    for scenario, rows in REGRESSION_METRICS.items():
        for key, unit, higher in rows:
            assert higher == (unit in ("samples/s", "tokens/s")), (scenario, key)


def test_case_metrics_are_the_regression_metrics() -> None:
    case = make_case("02")
    assert case.metrics == regression_metrics(case.run)


# --------------------------------------------------------------------------- assert_valid


@pytest.mark.parametrize("prefix", ["01", "02", "03", "04", "05", "06"])
def test_assert_valid_passes_valid_runs_without_notes(prefix: str) -> None:
    case = make_case(prefix, profile="official")
    case.assert_valid()
    assert case.notes == []


def test_assert_valid_invalid_only_by_tolerated_reasons_passes_with_a_note() -> None:
    run = run_of("07")  # INVALID: perf constraints (TTFT) and early stopping
    assert run.validity == "INVALID"
    case = make_case(run, profile="smoke")
    case.assert_valid()
    (note,) = case.notes
    # a Server run over its latency bound says so and suggests the capacity search, even where it is accepted
    assert note.startswith(
        "INVALID for LoadGen only by early_stopping_met, perf_constraints_met, which the smoke profile accepts; "
        "the Server run missed its latency bound: ")
    assert "--mlperf-server-search" in note


def test_a_server_run_invalid_on_latency_names_its_target_and_suggests_the_search() -> None:
    target = {"qps": 364.0, "source": "baseline", "why": "the load its stored baseline was recorded at"}
    message = failure(make_case("07", profile="ci", server_target=target).assert_valid)
    assert ("the Server run missed its latency bound at 364 QPS (the target from baseline: the load its stored "
            "baseline was recorded at)") in message
    assert "--mlperf-server-search" in message and message.endswith("\nLoadGen logs: /logs/case-1")
    # a searched case's confirmation is judged as any run, without the advice to search
    search_case = make_case("07", profile="ci", server_target=target)
    search_case.search = object()  # type: ignore[assignment]
    assert "--mlperf-server-search" not in failure(search_case.assert_valid)


def test_assert_valid_fails_on_a_reason_the_profile_does_not_tolerate() -> None:
    case = make_case("07", profile="ci")  # ci tolerates early stopping only
    message = failure(case.assert_valid)
    assert message.startswith("LoadGen judged the Server run INVALID: TTFT constrain not met")
    assert "(unmet: early_stopping_met, perf_constraints_met)" in message
    assert message.endswith("\nLoadGen logs: /logs/case-1")
    assert case.notes == []


def test_assert_valid_official_tolerates_nothing() -> None:
    message = failure(make_case("07", profile="official").assert_valid)
    assert "INVALID" in message and "Performance constraints not satisfied" in message


def test_assert_valid_min_duration_is_never_tolerated() -> None:
    run = dataclasses.replace(run_of("08"), errors=())  # its only unmet constraint: min duration
    message = failure(make_case(run, profile="smoke").assert_valid)
    assert "LoadGen judged the MultiStream run INVALID" in message
    assert "Min duration not satisfied" in message
    assert "(unmet: min_duration_met)" in message


def test_a_run_short_of_its_min_duration_says_what_to_do() -> None:
    run = dataclasses.replace(run_of("08"), errors=())
    assert SHORT_RUN_HINT in failure(make_case(run, profile="smoke").assert_valid)
    assert SHORT_RUN_HINT not in failure(make_case("07", profile="official").assert_valid)  # not its reason


def test_rerun_expected_qps_only_for_an_offline_run_short_of_work() -> None:
    offline = dataclasses.replace(run_of("01"), constraints={"min_duration_met": False}, mode="PerformanceOnly",
                                  metrics={"result_samples_per_second": 1000.0})
    assert rerun_expected_qps(offline, 400.0, 1.5) == 1500.0  # what it did, with the margin
    assert rerun_expected_qps(offline, 900.0, 1.5) == 1800.0  # at least twice what it expected
    assert rerun_expected_qps(offline, None, 1.0) == 1500.0
    assert rerun_expected_qps(dataclasses.replace(offline, constraints={"min_duration_met": True}), 400.0, 1.5) is None
    assert rerun_expected_qps(dataclasses.replace(offline, scenario="SingleStream"), 400.0, 1.5) is None
    assert rerun_expected_qps(dataclasses.replace(offline, metrics={}), 400.0, 1.5) is None


def test_assert_valid_fails_on_logged_errors() -> None:
    case = make_case("08", profile="smoke")
    message = failure(case.assert_valid)
    assert message.startswith("LoadGen logged 1 error(s):\n  error_runtime: Ending early: Ran out of generated queries")
    assert message.endswith("LoadGen logs: /logs/case-1")


def test_assert_valid_fails_on_errors_even_in_a_valid_run() -> None:
    run = dataclasses.replace(run_of("01"), errors=("error_a: one", "error_b: two"))
    message = failure(make_case(run).assert_valid)
    assert message.startswith("LoadGen logged 2 error(s):\n  error_a: one\n  error_b: two\n")


def test_assert_valid_fails_on_a_damaged_log_even_in_a_valid_run() -> None:
    run = dataclasses.replace(run_of("01"), log_problems=("line 12 is not a whole MLLOG entry (a log cut short)",))
    assert run.valid
    message = failure(make_case(run).assert_valid)
    assert message.startswith("LoadGen's logs of this run are damaged, so its figures cannot be trusted")
    assert "line 12 is not a whole MLLOG entry" in message


def test_assert_valid_invalid_without_any_unmet_constraint_fails() -> None:
    run = dataclasses.replace(run_of("01"), validity="INVALID", invalid_reasons=())
    message = failure(make_case(run, profile="smoke").assert_valid)
    assert "INVALID: no reason logged (unmet: none)" in message


def test_assert_valid_ignores_validity_outside_performance_mode() -> None:
    run = read_run(FRESH / "offline-accuracy")
    assert run.mode == "AccuracyOnly"
    case = make_case(run, profile="official")
    case.assert_valid()
    assert case.notes == []


# --------------------------------------------------------------------------- assert_accuracy


def test_assert_accuracy_needs_an_accuracy_run() -> None:
    message = failure(make_case("01").assert_accuracy)
    assert message.startswith("assert_accuracy() needs an accuracy-mode run (--mlperf-mode=accuracy or both)")


def test_assert_accuracy_with_a_stand_in_checks_no_targets() -> None:
    case = make_case("01", accuracy={"top1": 0.001}, accuracy_targets={"top1": 0.75}, real_data=False)
    case.assert_accuracy()


def test_assert_accuracy_real_data_meeting_targets_passes() -> None:
    case = make_case("01", accuracy={"top1": 0.7646, "count": 50000}, accuracy_targets={"top1": 0.7583},
                     real_data=True)
    case.assert_accuracy()
    exact = make_case("01", accuracy={"top1": 0.75}, accuracy_targets={"top1": 0.75}, real_data=True)
    exact.assert_accuracy()  # the target is a minimum: equal passes


def test_assert_accuracy_real_data_below_target_fails() -> None:
    case = make_case("01", accuracy={"top1": 0.70}, accuracy_targets={"top1": 0.7583}, real_data=True)
    message = failure(case.assert_accuracy)
    assert message.startswith("accuracy top1 = 0.70000 is below MLPerf's target 0.75830")


def test_assert_accuracy_real_data_missing_metric_fails() -> None:
    case = make_case("05", accuracy={"rouge1": 44.4}, accuracy_targets={"rouge1": 43.9, "rougeL": 28.3},
                     real_data=True)
    message = failure(case.assert_accuracy)
    assert message.startswith("accuracy metric rougeL missing from the run's accuracy result")


def test_assert_accuracy_string_values_are_compared_as_numbers() -> None:
    make_case("01", accuracy={"top1": "0.8"}, accuracy_targets={"top1": 0.75}, real_data=True).assert_accuracy()


# --------------------------------------------------------------------------- assert_latency / assert_throughput


def test_assert_latency_within_limits() -> None:
    case = make_case("02")  # p90 12.683 ms, p99 12.982 ms
    case.assert_latency(p90_ms=13.0, p99_ms=13.0)
    case.assert_latency(p99_ms=12.981655)  # equal to the limit passes
    case.assert_latency()  # no limits: nothing to check


def test_assert_latency_p99_over_limit() -> None:
    message = failure(make_case("02").assert_latency, p90_ms=20.0, p99_ms=12.5)
    assert message.startswith("p99 latency 12.982 ms exceeds the threshold 12.500 ms")
    assert message.endswith("LoadGen logs: /logs/case-1")


def test_assert_latency_p90_checked_first() -> None:
    message = failure(make_case("02").assert_latency, p90_ms=10.0, p99_ms=10.0)
    assert message.startswith("p90 latency 12.683 ms exceeds the threshold 10.000 ms")


def test_assert_latency_missing_percentile_fails() -> None:
    run = dataclasses.replace(run_of("02"), latency_ns=Latency(p90=1.0))
    make_case(run).assert_latency(p90_ms=1.0)
    message = failure(make_case(run).assert_latency, p99_ms=1.0)
    assert message.startswith("the run logged no p99 latency")


def test_assert_throughput_offline_and_server() -> None:
    make_case("01").assert_throughput(min_samples_per_s=45_000)
    make_case("02").assert_throughput(min_samples_per_s=600_000)
    message = failure(make_case("01").assert_throughput, min_samples_per_s=50_000)
    assert message.startswith("throughput 45617.3 samples/s is below the threshold 50000")
    message = failure(make_case("03").assert_throughput, min_samples_per_s=1)
    assert message.startswith("the SingleStream run logged no throughput")


# --------------------------------------------------------------------------- harness_efficiency / to_record


def test_harness_efficiency_offline() -> None:
    case = make_case("01", calibration={"bare": {"samples_per_s": 50_000.0}})
    assert case.harness_efficiency == pytest.approx(45617.3 / 50_000.0)


@pytest.mark.parametrize("prefix, calibration", [
    ("01", None),
    ("01", {}),
    ("01", {"bare": {}}),
    ("01", {"bare": {"samples_per_s": 0}}),
    ("02", {"bare": {"samples_per_s": 1000.0}}),  # Server: not comparable with a bare loop
    ("03", {"bare": {"samples_per_s": 1000.0}}),
])
def test_harness_efficiency_does_not_apply(prefix: str, calibration) -> None:
    assert make_case(prefix, calibration=calibration).harness_efficiency is None


def test_to_record_is_json_safe_and_drops_predictions() -> None:
    case = make_case("01", accuracy={"top1": 0.76, "digest": "ab", "predictions": [[0, 1]]},
                     calibration={"bare": {"samples_per_s": 50_000.0}}, missing_baseline="b/x.json")
    case.notes.append("a note")
    record = json.loads(json.dumps(case.to_record()))
    assert record["nodeid"] == case.nodeid
    assert record["key"] == dataclasses.asdict(case.key)
    assert record["accuracy"] == {"top1": 0.76, "digest": "ab"}
    assert record["metrics"] == {"result_samples_per_second": 45617.3}
    assert record["harness_efficiency"] == pytest.approx(0.912346)
    assert record["notes"] == ["a note"]
    assert record["missing_baseline"] == "b/x.json"
    assert Run.from_dict(record["run"]) == case.run
    assert "predictions" in case.accuracy  # the case keeps them
    record["notes"].append("x")
    assert case.notes == ["a note"]


def test_a_rerun_keeps_the_first_runs_calibration() -> None:
    """An Offline run that ran out of work runs again without calibrating (session.rerun_if_short); its harness
    efficiency is still read against the first run's bare loop, not lost (seen under `pytest -n 2`)."""
    first = make_case("01", calibration={"bare": {"samples_per_s": 50_000.0}})
    rerun = make_case("01")
    assert rerun.harness_efficiency is None
    rerun.keep_calibration_of(first)
    assert rerun.harness_efficiency == pytest.approx(45617.3 / 50_000.0)
    own = make_case("01", calibration={"bare": {"samples_per_s": 40_000.0}})
    own.keep_calibration_of(first)  # a run with its own calibration keeps it
    assert own.calibration == {"bare": {"samples_per_s": 40_000.0}}


def test_latency_overheads_against_the_bare_loop_for_single_and_multi_stream() -> None:
    """Issue 14's goal 1 compares MultiStream's p99 per query with a bare batch-8 run's: the calibration records
    the bare loop's p99, and a MultiStream case reads its p50 and p99 against it."""
    for prefix in ("03", "04"):  # a SingleStream and a MultiStream submission's logs
        run = run_of(prefix)
        assert run.scenario in ("SingleStream", "MultiStream")
        bare = {"batch_latency_p50_s": run.latency_ns.p50 / 1e9 / 1.1,
                "batch_latency_p99_s": run.latency_ns.p99 / 1e9 / 1.2}
        case = make_case(prefix, calibration={"bare": bare})
        assert case.latency_overhead == pytest.approx(0.1)
        assert case.latency_tail_overhead == pytest.approx(0.2)
        assert make_case(prefix, calibration={"bare": {"batch_latency_p50_s": 1.0}}).latency_tail_overhead is None
    offline = make_case("01", calibration={"bare": {"batch_latency_p50_s": 1.0, "batch_latency_p99_s": 1.0}})
    assert offline.latency_overhead is None and offline.latency_tail_overhead is None
