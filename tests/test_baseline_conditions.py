"""What differs between a baseline's recording and this run, said beside the verdict: backend options, the run's
length (a 60 s Server run on the H200 read p99 +16.7% "REGRESSED" against a 10 s baseline at the same load, with
nothing saying the runs differed in length), and the backend's details when outputs differ (cuDNN's NHWC
convolutions changed 3-4 of 1024 stand-in predictions). Pure functions, then real sessions on the null SUT."""

from __future__ import annotations

import json

import pytest

from pytest_mlperf.host.baselines.conditions import details_differ, duration_differs, option_values, options_differ
from pytest_mlperf.host.baselines.store import Baseline, CaseKey


def baseline(settings: dict | None = None, system: dict | None = None) -> Baseline:
    return Baseline(key=CaseKey("resnet50", "Server", "performance", "onnxruntime", "fp32", "1xNVIDIA_H200"),
                    metrics={}, settings=settings or {}, system=system or {})


def test_a_run_of_another_length_is_said_and_one_of_the_same_length_is_not() -> None:
    b = baseline({"min_duration_ms": 10_000})
    said = duration_differs(b, 60_000)
    assert said is not None and "at least 10 s, this run lasted at least 60 s" in said
    assert "--mlperf-duration" in said
    assert duration_differs(b, 10_000) is None
    assert duration_differs(baseline(), 60_000) is None  # recorded before the setting was kept
    assert duration_differs(baseline({"min_duration_ms": None}), 60_000) is None
    assert duration_differs(b, None) is None


def test_backend_details_that_differ_are_named_and_the_model_path_is_not() -> None:
    b = baseline(system={"backend_onnxruntime": "1.31.1", "backend_sessions": "one per batch size",
                         "backend_model": "a.onnx", "driver": "580"})
    said = details_differ(b, {"onnxruntime": "1.31.1", "sessions": "one per batch size", "prefer_nhwc": "1",
                              "model": "b.onnx"})
    assert said is not None and "(prefer_nhwc: not recorded -> 1)" in said and "--mlperf-update-baselines" in said
    assert details_differ(b, {"onnxruntime": "1.31.1", "sessions": "one per batch size", "model": "b.onnx"}) is None
    assert "onnxruntime: 1.31.1 -> 1.32.0" in (details_differ(b, {"onnxruntime": "1.32.0",
                                                                  "sessions": "one per batch size"}) or "")


def test_options_are_compared_as_strings() -> None:
    assert option_values({"cuda_graph_max_batch": {"value": 8, "from": "marker"}}) == {"cuda_graph_max_batch": "8"}
    b = baseline(system={"sut_options": {"cuda_graph_max_batch": "8"}})
    assert options_differ(b, {"cuda_graph_max_batch": {"value": "8", "from": "--mlperf-sut-option"}}) is None
    assert "cuda_graph_max_batch: 8 -> 32" in (options_differ(b, {"cuda_graph_max_batch": {"value": 32}}) or "")
    assert options_differ(baseline(), {"x": {"value": 1}}) is None


# --- through pytest, on the null SUT ---------------------------------------------------------------------------------

BENCH = """
import pytest
pytestmark = pytest.mark.mlperf(workload="null", scenarios=["Offline"], sut_options={"delay_ms": 1})

def test_null(null_sut, loadgen, baseline):
    run = loadgen.run(null_sut)
    run.assert_valid()
    baseline.assert_no_regression(run)
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


def record(pytester: pytest.Pytester) -> dict:
    (case,) = json.loads((pytester.path / "mlperf-results" / "results.json").read_text())["cases"]
    return case


def test_a_run_judged_against_a_baseline_of_another_length_says_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_bench=BENCH)
    run(pytester, "--mlperf-duration=0.3s", "--mlperf-update-baselines",
        "--mlperf-baseline-repeats=1").assert_outcomes(passed=1)
    run(pytester, "--mlperf-duration=0.3s", "--mlperf-tolerance=90%").assert_outcomes(passed=1)
    assert not [n for n in record(pytester)["notes"] if "recorded with runs of at least" in n]
    run(pytester, "--mlperf-duration=0.6s", "--mlperf-tolerance=90%").assert_outcomes(passed=1)
    assert ("the baseline was recorded with runs of at least 0.3 s, this run lasted at least 0.6 s"
            in " ".join(record(pytester)["notes"]))


def test_outputs_that_differ_name_the_backend_details_that_differ(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_bench=BENCH)
    run(pytester, "--mlperf-mode=accuracy", "--mlperf-update-baselines").assert_outcomes(passed=1)
    (path,) = sorted((pytester.path / "baselines").rglob("*.json"))
    data = json.loads(path.read_text())
    assert data["system"]["backend_delay_ms"] == "1" and data["accuracy"]["predictions"]
    # as if recorded by another backend build whose kernels rounded one output differently
    data["accuracy"]["predictions"][0][1] = [12345]
    data["system"]["backend_delay_ms"] = "2"
    path.write_text(json.dumps(data))
    result = run(pytester, "--mlperf-mode=accuracy")
    result.assert_outcomes(failed=1)
    said = ("*outputs differ from the baseline's on 1 of * samples*; "
            "the backend differs from the baseline's (delay_ms: 2 -> 1)*")
    result.stdout.fnmatch_lines([said])
