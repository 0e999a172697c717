"""The overhead gate under --mlperf-server-search through real pytest sessions (pytester) on the null SUT, whose
service time is fixed: a Server case's gate judges its capacity (host/gate/capacity.py), an A/A candidate passes, a
candidate 20% slower fails, and every search (warm-up and rounds) is in results.json."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

BENCH = """
import pytest
pytestmark = pytest.mark.mlperf(workload="null", scenarios={scenarios!r}, sut_options={options!r}, batch_size=1)

def test_null(null_sut, loadgen, baseline):
    run = loadgen.run(null_sut)
    run.assert_valid()
    baseline.assert_no_regression(run)
"""
SERVICE_MS = 5.0  # one stream, batches of one: the SUT serves at most 200 samples/s
# short runs: searches of 0.5 s confirmations and probes of at least 0.25 s, rounds of 0.2 s probes, 3 to 6 rounds
FAST = ("--mlperf-duration=0.5s", "--mlperf-gate-round=200ms", "--mlperf-gate-min-rounds=3",
        "--mlperf-gate-max-rounds=6")


def bench(pytester: pytest.Pytester, scenarios: tuple[str, ...] = ("Server",)) -> None:
    pytester.makepyfile(test_bench=BENCH.format(scenarios=list(scenarios),
                                                options={"delay_ms": 0, "per_sample_ms": SERVICE_MS}))


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *FAST, "--mlperf-server-search", *args)


def cases(pytester: pytest.Pytester) -> dict[str, dict]:
    doc = json.loads((pytester.path / "mlperf-results" / "results.json").read_text())
    return {c["key"]["scenario"]: c for c in doc["cases"]}


def slowdown(cost: str) -> str:
    return " ".join([sys.executable, "-m", "pytest_mlperf.slowdown", "--cost", cost, "--sleep", "--"])


def test_an_a_a_candidate_passes_on_capacity_and_every_search_is_kept(pytester: pytest.Pytester) -> None:
    bench(pytester, scenarios=("Server", "Offline"))
    result = run(pytester, "--mlperf-candidate-env=SOMEVAR=1", "--mlperf-max-overhead=30%")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "mlperf: null Server performance (gate warm-up search, reference): calibrating, *",
        "mlperf: null Server performance (gate warm-up search, candidate): starting the runner (candidate)",
        "mlperf: null Server performance: gate round 1 of at most 6, a capacity search per arm (at most 6 probes "
        "of * s each)",
    ])
    result.stdout.fnmatch_lines(["gate: *Server-performance*: PASS server capacity overhead *"])
    assert "not applied under the overhead gate" not in result.stdout.str()
    got = cases(pytester)
    case, offline = got["Server"], got["Offline"]
    assert not any("--mlperf-server-search" in n for n in case["notes"]), case["notes"]
    gate = case["gate"]
    assert gate["verdict"] == "PASS" and gate["candidate_recipe"] == "SOMEVAR=1"
    assert (gate["metric"], gate["label"], gate["unit"]) == ("server_capacity_qps", "server capacity", "QPS")
    assert [(m["metric"], m["higher_is_better"]) for m in gate["metrics"]] == [("server_capacity_qps", True)]
    searches = gate["searches"]
    warm_ref, warm_cand = searches["warmup"]["reference"], searches["warmup"]["candidate"]
    # warm-up: a full search per arm (confirmed at full length), the candidate's from the reference's capacity
    for warm in (warm_ref, warm_cand):
        assert warm["status"] in ("found", "budget") and warm["confirm_s"] == 0.5
        assert any(p["phase"] == "confirm" and p["verdict"] == "VALID" and p["target_qps"] == warm["capacity_qps"]
                   for p in warm["probes"])
        # no run can sustain more than the SUT's 200 samples/s (the ceiling: its calibrated throughput x 1.2)
        assert 0.5 * 1000 / SERVICE_MS <= warm["capacity_qps"] <= 1.25 * 1000 / SERVICE_MS, warm["message"]
    assert warm_cand["probes"][0]["target_qps"] == pytest.approx(warm_ref["capacity_qps"])
    assert case["server_search"]["capacity_qps"] == warm_cand["capacity_qps"]
    assert case["metrics"] == {"server_capacity_qps": warm_cand["capacity_qps"]}
    # rounds: a search per arm and round, short probes only, at most 6, every load on the reference's grid
    rounds = searches["rounds"]
    assert len(rounds) == gate["rounds"] == len(gate["reference"]) == len(gate["candidate"]) >= 3
    assert gate["reference"] == [r["reference"]["capacity_qps"] for r in rounds]
    assert gate["candidate"] == [r["candidate"]["capacity_qps"] for r in rounds]
    logs = Path(case["log_dir"])
    assert logs.name == "gate"
    for i, r in enumerate(rounds):
        for arm in ("reference", "candidate"):
            probes = r[arm]["probes"]
            assert 1 <= len(probes) <= 6 and all(p["phase"] == "bracket" for p in probes)
            assert r[arm]["capacity_qps"] == max(p["target_qps"] for p in probes if p["verdict"] == "VALID")
            for p in probes:
                k = math.log(p["target_qps"] / warm_ref["capacity_qps"]) / math.log(1 + searches["step"])
                assert k == pytest.approx(round(k), abs=1e-6)
                assert p["duration_s"] == pytest.approx(searches["probe_s"])
                assert Path(p["log_dir"]).parent == logs / f"round{i + 1:02d}-{arm}"
                assert (Path(p["log_dir"]) / "mlperf_log_detail.txt").is_file()
    # other scenarios keep their gate: Offline judges samples/s
    assert offline["gate"]["metric"] == "result_samples_per_second" and "searches" not in offline["gate"]
    assert offline["server_search"] is None


def test_a_candidate_20_percent_slower_fails_on_capacity(pytester: pytest.Pytester) -> None:
    """The cost is slept (pytest_mlperf.slowdown --sleep): on a busy machine a busy wait costs more than it says.
    20% of every call's time is four times the 5% limit."""
    bench(pytester)
    result = run(pytester, f"--mlperf-candidate-prefix={slowdown('20%')}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*overhead gate FAIL: server capacity overhead +*% (*% interval +*% to +*%), limit 5.0%, * rounds in * s: "
        "the candidate costs more than 5.0% against the reference*"])
    gate = cases(pytester)["Server"]["gate"]
    assert gate["verdict"] == "FAIL" and gate["metric"] == "server_capacity_qps"
    assert gate["ci_low"] > 0.05 and 0.1 < gate["overhead"] < 0.5
    assert len(gate["searches"]["rounds"]) == gate["rounds"]
