"""End to end on the CPU stand-in: the repository's own ResNet50 benchmark, real LoadGen, all four scenarios."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")


@pytest.fixture
def project(resnet50_project: pytest.Pytester) -> pytest.Pytester:
    return resnet50_project


def cases(pytester: pytest.Pytester) -> dict[str, dict]:
    doc = json.loads((pytester.path / "mlperf-results" / "results.json").read_text())
    return {f"{c['key']['scenario']}-{c['key']['mode']}": c for c in doc["cases"]}


def test_all_scenarios_both_modes_then_judged_against_recorded_baselines(project: pytest.Pytester) -> None:
    args = ("-p", "no:cacheprovider", "benchmarks/", "--mlperf-mode=both", "--mlperf-duration=1s")
    result = project.runpytest_subprocess(*args, "--mlperf-update-baselines")
    result.assert_outcomes(passed=8)
    got = cases(project)
    assert set(got) == {f"{s}-{m}" for s in ("Offline", "Server", "SingleStream", "MultiStream")
                        for m in ("performance", "accuracy")}
    for name, case in got.items():
        assert case["backend"]["backend"] == "onnxruntime" and case["backend"]["device"] == "cpu"
        assert (Path(case["log_dir"]) / "mlperf_log_detail.txt").is_file(), name
        if name.endswith("performance"):
            assert case["metrics"], name  # LoadGen measured something the baseline can hold
        else:
            assert case["accuracy"]["samples"] == 64 and len(case["accuracy"]["outputs_sha256"]) == 64
    assert got["Offline-performance"]["metrics"]["result_samples_per_second"] > 0
    assert got["Server-performance"]["run"]["latency_ns"]["p99"] > 0
    assert got["SingleStream-performance"]["harness_efficiency"] is None
    assert got["Offline-performance"]["harness_efficiency"] > 0.5
    baselines = sorted((project.path / "baselines" / "resnet50").glob("*.json"))
    assert len(baselines) == 8

    # the same stand-in again: every output equals the baseline's exactly, and every performance case is judged
    # against its baseline. Whether CPU timings stay within tolerance on a shared 2-core machine is not asserted
    # here (the pass/fail rule is tested deterministically with the null SUT in test_plugin.py).
    result = project.runpytest_subprocess(*args, "--mlperf-require-baselines")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 4 and "error" not in outcomes
    for name, case in cases(project).items():
        assert case["baseline_path"], name
        if name.endswith("accuracy"):
            assert case["outputs_match"] is True and case["outcome"] == "passed", name
        else:
            assert {c["metric"] for c in case["baseline"]} == set(case["metrics"]), name
