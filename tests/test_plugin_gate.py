"""The overhead gate through real pytest sessions (pytester) against the null SUT: a candidate launched under
the synthetic layer of pytest_mlperf.slowdown, verdicts, output comparison, reports and option errors."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from pytest_mlperf.host.gate import report as gate_report

BENCH = """
import pytest
pytestmark = pytest.mark.mlperf(workload="null", scenarios={scenarios!r}, sut_options={{"delay_ms": {delay_ms}}})

def test_null(null_sut, loadgen, baseline):
    run = loadgen.run(null_sut)
    run.assert_valid()
    baseline.assert_no_regression(run)
"""

# a layer that changes results: every answer is off by one (what an isolation layer must never do)
PERTURB = """
import runpy, sys
from pytest_mlperf.runner import backends

create = backends.create_backend

class Off:
    def __init__(self, inner):
        self.inner, self.info = inner, inner.info
    def __getattr__(self, name):
        return getattr(self.inner, name)
    def infer(self, indices):
        return self.inner.infer(indices) + 1

backends.create_backend = lambda *a, **k: Off(create(*a, **k))
sys.argv = sys.argv[4:]  # perturb.py -- PYTHON -m MODULE ARGS -> MODULE ARGS
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""

FAST = ("--mlperf-gate-round=200ms", "--mlperf-gate-min-rounds=3", "--mlperf-gate-max-rounds=6")


def slowdown(cost: str, *flags: str) -> str:
    return " ".join([sys.executable, "-m", "pytest_mlperf.slowdown", "--cost", cost, *flags, "--"])


def bench(pytester: pytest.Pytester, scenarios: tuple[str, ...] = ("Offline",), delay_ms: int = 2) -> None:
    pytester.makepyfile(test_bench=BENCH.format(scenarios=list(scenarios), delay_ms=delay_ms))


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


def gates(pytester: pytest.Pytester) -> dict[str, dict]:
    doc = json.loads((pytester.path / "mlperf-results" / "results.json").read_text())
    return {f"{c['key']['scenario']}-{c['key']['mode']}": c["gate"] for c in doc["cases"]}


def test_no_cost_passes_with_the_default_limit_and_writes_the_reports(pytester: pytest.Pytester) -> None:
    bench(pytester)
    result = run(pytester, "--mlperf-gate-round=300ms", f"--mlperf-candidate-prefix={slowdown('0%')}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*null Offline performance*gate PASS*", "gate: *PASS samples/s overhead*",
                                 "gate summary (Markdown, for a PR comment): *gate.md*"])
    result.stdout.fnmatch_lines([  # what the gate is doing, as it does it (host/progress.py)
        "mlperf: null Offline performance (gate warm-up, reference): starting the runner",
        "mlperf: null Offline performance (gate warm-up, reference): calibrating, about *",
        "mlperf: null Offline performance (gate warm-up, candidate): starting the runner (candidate)",
        "mlperf: null Offline performance: gate round 1 of at most 60, about 0.6 s (two runs of 0.3 s)",
        "mlperf: null Offline performance: gate round 12 of at most 60, *",
    ])
    assert "(gate round 1, " not in result.stdout.str()  # a round's own phases need -v
    gate = gates(pytester)["Offline-performance"]
    assert gate["verdict"] == "PASS" and gate["max_overhead"] == 0.05 and gate["estimator"] == "paired"
    assert gate["ci_high"] < 0.05 and gate["rounds"] >= 12
    assert len(gate["reference"]) == len(gate["candidate"]) == gate["rounds"]
    assert gate["candidate_recipe"].endswith("pytest_mlperf.slowdown --cost 0% --")
    logs = pytester.path / "mlperf-results" / "logs" / "test_null_null-Offline-performance" / "gate"
    for run_dir in ("warmup-reference", "warmup-candidate", "round01-reference", "round01-candidate"):
        assert (logs / run_dir / "mlperf_log_detail.txt").is_file(), run_dir
    md = (pytester.path / "mlperf-results" / "gate.md").read_text()
    assert md.startswith("## Overhead gate: ✅ PASS") and "| null Offline performance | samples/s |" in md
    if _has_matplotlib():
        assert (pytester.path / "mlperf-results" / "gate.png").read_bytes()[:4] == b"\x89PNG"


def _has_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def test_a_large_cost_fails_throughput_and_latency(pytester: pytest.Pytester) -> None:
    """The measured overhead must be the injected one whatever else runs on the machine. A busy-wait cost is not:
    on busy CPUs it overshoots and holds the GIL LoadGen's callbacks need (2 ms calls under two CPU hogs per core
    measured +55% to +72% for 40%). So the cost is slept (no CPU needed, none taken from LoadGen) on 20 ms calls,
    where a wake-up late by even 2 ms moves the overhead by under 4 points."""
    bench(pytester, scenarios=("Offline", "SingleStream"), delay_ms=20)
    result = run(pytester, *FAST, f"--mlperf-candidate-prefix={slowdown('40%', '--sleep')}")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*overhead gate FAIL: samples/s overhead +*% (99% interval +*% to +*%), limit 5.0%, * rounds in * s: "
        "the candidate costs more than 5.0% against the reference",
        "*overhead gate FAIL: p90 latency overhead +*",
    ])
    got = gates(pytester)
    assert 0.30 < got["Offline-performance"]["overhead"] < 0.50  # 40% injected
    assert got["SingleStream-performance"]["ci_low"] > 0.05
    assert "## Overhead gate: ❌ FAIL" in (pytester.path / "mlperf-results" / "gate.md").read_text()


def test_accuracy_mode_compares_outputs(pytester: pytest.Pytester) -> None:
    bench(pytester)
    pytester.makepyfile(perturb=PERTURB)
    result = run(pytester, "--mlperf-mode=accuracy", f"--mlperf-candidate-prefix={slowdown('0%')}")
    result.assert_outcomes(passed=1)
    assert gates(pytester)["Offline-accuracy"]["outputs"]["differing"] == 0

    result = run(pytester, "--mlperf-mode=accuracy", f"--mlperf-candidate-prefix={sys.executable} perturb.py --")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*overhead gate FAIL: the candidate's outputs differ from the reference's on "
                                 "* of * samples (first: [[]*]); an isolation layer must not change results*"])


def test_candidate_env_alone_turns_the_gate_on_and_reaches_the_candidate(pytester: pytest.Pytester) -> None:
    bench(pytester)
    # an environment the candidate's runner must see: it would fail to start if PYTHONPATH did not reach it
    pytester.makepyfile(sitecustomize="import os\nassert os.environ.get('LAYER') == 'on'\n")
    result = run(pytester, *FAST, "--mlperf-max-overhead=30%", "--mlperf-candidate-env", "LAYER=on",
                 "--mlperf-candidate-env", f"PYTHONPATH={pytester.path}")
    result.assert_outcomes(passed=1)
    gate = gates(pytester)["Offline-performance"]
    assert gate["candidate_recipe"] == f"LAYER=on PYTHONPATH={pytester.path}"
    assert gate["max_overhead"] == 0.30


def test_ini_twins_configure_the_gate(pytester: pytest.Pytester) -> None:
    bench(pytester)
    pytester.makeini(f"[pytest]\nmlperf_candidate_prefix = {slowdown('0%')}\nmlperf_max_overhead = 25%\n"
                     "mlperf_gate_round = 200ms\nmlperf_gate_min_rounds = 3\nmlperf_gate_max_rounds = 6\n")
    run(pytester).assert_outcomes(passed=1)
    gate = gates(pytester)["Offline-performance"]
    assert gate["max_overhead"] == 0.25 and 3 <= gate["rounds"] <= 6


def test_the_estimator_option_reaches_the_gate(pytester: pytest.Pytester) -> None:
    """A CPU case reads paired rounds by default (the no-cost test above); --mlperf-gate-estimator=floor makes it
    read the arms' floors, and the record says so. The verdict is not the point: at 3-6 rounds the floor's interval
    is wide, and may leave the gate INCONCLUSIVE."""
    bench(pytester)
    result = run(pytester, *FAST, f"--mlperf-candidate-prefix={slowdown('0%')}", "--mlperf-gate-estimator=floor")
    gate = gates(pytester)["Offline-performance"]
    assert gate["estimator"] == "floor" and all(m["estimator"] == "floor" for m in gate["metrics"])
    # and each arm's share of rounds on its floor, from which the report cautions (host/gate/report.floor_caution)
    assert set(gate["floor_occupancy"]) == {"reference", "candidate"}
    assert all(0 < share <= 1 for share in gate["floor_occupancy"].values())
    caution = gate_report.floor_caution(gate["floor_occupancy"])
    if caution:  # the same words reach the terminal summary
        assert caution in result.stdout.str()


def test_a_crashing_candidate_fails_the_case_with_its_recipe(pytester: pytest.Pytester) -> None:
    bench(pytester)
    result = run(pytester, *FAST, f"--mlperf-candidate-prefix={sys.executable} -c 'raise SystemExit(7)' --")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*could not start the null runner (candidate: *)*"])


@pytest.mark.parametrize("args, message", [
    (["--mlperf-candidate-env", "NOEQUALS"], "*bad environment entry 'NOEQUALS' for the candidate recipe*"),
    (["--mlperf-candidate-env", "A=1", "--mlperf-update-baselines"],
     "*--mlperf-update-baselines records bare-metal baselines: run it without a candidate*"),
    (["--mlperf-candidate-env", "A=1", "--mlperf-gate-min-rounds=9", "--mlperf-gate-max-rounds=6"],
     "*the gate needs 3 <= --mlperf-gate-min-rounds <= --mlperf-gate-max-rounds, got 9 and 6*"),
    (["--mlperf-candidate-env", "A=1", "--mlperf-gate-max-rounds=2"],
     "*the gate needs 3 <= --mlperf-gate-min-rounds <= --mlperf-gate-max-rounds, got the default and 2*"),
    (["--mlperf-candidate-env", "A=1", "--mlperf-max-overhead=5"], "*--mlperf-max-overhead must be between*"),
    (["--mlperf-candidate-env", "A=1", "--mlperf-gate-budget=soon"], "*bad --mlperf-gate-budget 'soon'*"),
    (["--mlperf-candidate-env", "A=1", "--mlperf-gate-estimator=median"],
     "*--mlperf-gate-estimator must be one of auto, paired, floor, got 'median'*"),
])
def test_bad_gate_options_are_usage_errors(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    bench(pytester)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_without_a_candidate_there_is_no_gate(pytester: pytest.Pytester) -> None:
    bench(pytester)
    run(pytester, "--mlperf-duration=0.3s").assert_outcomes(passed=1)
    assert gates(pytester)["Offline-performance"] is None
    assert not (Path(pytester.path) / "mlperf-results" / "gate.md").exists()
