"""End to end on the CPU stand-in: the repository's ResNet50 benchmark under the overhead gate, the candidate
launched under the synthetic layer (pytest_mlperf.slowdown): no cost passes, a large cost fails.

ONNX Runtime on a shared 2-core CI machine moves by far more than the 2% run-to-run the 5% limit is planned for
(docs/gate-statistics.md); a 0% cost there can take the whole budget to decide at 5%. So the no-cost case is held
to 15%, which still fails a 40% cost by a wide margin; the null SUT's test in test_plugin_gate.py holds 0% to 5%."""

from __future__ import annotations

import json
import sys

import pytest

pytest.importorskip("onnxruntime")


@pytest.fixture
def project(resnet50_project: pytest.Pytester) -> pytest.Pytester:
    return resnet50_project


def gate_of(pytester: pytest.Pytester) -> dict:
    (case,) = json.loads((pytester.path / "mlperf-results" / "results.json").read_text())["cases"]
    return case["gate"]


@pytest.mark.parametrize("cost, outcome", [("0%", "PASS"), ("40%", "FAIL")])
def test_resnet50_offline_gate_on_the_stand_in(project: pytest.Pytester, cost: str, outcome: str) -> None:
    result = project.runpytest_subprocess(
        "-p", "no:cacheprovider", "benchmarks/", "--mlperf-scenario=Offline",
        f"--mlperf-candidate-prefix={sys.executable} -m pytest_mlperf.slowdown --cost {cost} --",
        "--mlperf-max-overhead=15%",
    )
    gate = gate_of(project)
    assert gate["verdict"] == outcome, result.stdout.str()
    # the benchmark's Server and latency tests declare no Offline case: skipped, and said so ('not measured')
    result.stdout.fnmatch_lines(["not measured: test_resnet50_server (resnet50) declares Server*",
                                 "not measured: test_resnet50_latency (resnet50) declares SingleStream, MultiStream*"])
    if outcome == "PASS":
        result.assert_outcomes(passed=1, skipped=2)
        assert gate["ci_high"] < 0.15
    else:
        result.assert_outcomes(failed=1, skipped=2)
        assert gate["ci_low"] > 0.15 and 0.25 < gate["overhead"] < 0.55
        result.stdout.fnmatch_lines(["*overhead gate FAIL: samples/s overhead*"])
