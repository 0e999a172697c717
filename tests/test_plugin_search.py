"""--mlperf-server-search through real pytest sessions (pytester) on the null SUT, whose service time is fixed:
the capacity found, its fields in results.json, baselines of it, an unbracketable case, and (item 4) a Server run
INVALID on latency without a search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BENCH = """
import pytest
pytestmark = pytest.mark.mlperf(workload="null", scenarios=["Server"], sut_options={options!r}, batch_size=1)

def test_null(null_sut, loadgen, baseline):
    run = loadgen.run(null_sut)
    run.assert_valid()
    baseline.assert_no_regression(run)
"""
SERVICE_MS = 5.0  # one stream, batches of one: the SUT serves at most 200 samples/s


def bench(pytester: pytest.Pytester, per_sample_ms: float = SERVICE_MS) -> None:
    pytester.makepyfile(test_bench=BENCH.format(options={"delay_ms": 0, "per_sample_ms": per_sample_ms}))


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--mlperf-duration=1s", *args)


def cases(pytester: pytest.Pytester) -> list[dict]:
    return json.loads((pytester.path / "mlperf-results" / "results.json").read_text())["cases"]


def test_the_search_finds_the_capacity_and_keeps_every_run(pytester: pytest.Pytester) -> None:
    bench(pytester)
    result = run(pytester, "--mlperf-server-search")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*null Server performance*QPS capacity*"])
    (case,) = cases(pytester)
    search = case["server_search"]
    capacity = search["capacity_qps"]
    # no run can sustain more than the SUT's 200 samples/s; the p99 bound (8 x the batch-1 latency in smoke) is
    # met well above half of it (an M/D/1 queue waits 4.6 service times at its p99 at 75% load)
    assert 0.5 * 1000 / SERVICE_MS <= capacity <= 1.05 * 1000 / SERVICE_MS, search["message"]
    assert search["status"] == "found" and case["metrics"] == {"server_capacity_qps": capacity}
    assert case["server_target"]["qps"] == capacity and case["server_target"]["source"] == "search"
    assert "--mlperf-server-search" in case["server_target"]["why"]
    probes = search["probes"]
    # no probe above the first run's calibrated throughput (about 200 samples/s) x 1.2 (SEARCH_CEILING_MARGIN)
    assert 0.8 * 1.2 * 1000 / SERVICE_MS <= search["max_qps"] <= 1.05 * 1.2 * 1000 / SERVICE_MS
    assert all(p["target_qps"] <= search["max_qps"] * (1 + 1e-9) for p in probes)
    # the first run's runner start and calibration are recorded apart, not counted: its seconds are its LoadGen test
    assert search["startup_s"] > 0 and probes[0]["seconds"] < 0.25 + 1.0
    # probes last 5 x the longest p99 query latency seen before them (at least 250 ms, at most the confirmation)
    longest = 0.0
    for p in probes:
        if p["phase"] != "confirm":
            assert p["duration_s"] == pytest.approx(max(0.25, min(5 * longest, 1.0)), abs=1e-3)
        longest = max(longest, p["latency_p99_ns"] / 1e9)
    # the null SUT keeps up below its throughput: the keep-up rule flags none of its probes (here they complete
    # about 100% or more of the scheduled load x T / (T + p99); the rule asks 90%)
    assert not any(r.startswith("overloaded") for p in probes for r in p["reasons"]), probes
    assert 3 <= len(probes) <= 30 and search["elapsed_s"] <= search["budget_s"]
    assert probes[0]["phase"] == "bracket" and probes[0]["target_qps"] == search["start_qps"]
    for p in probes:
        assert p["verdict"] in ("VALID", "INVALID") and p["p99_ns"] > 0 and p["achieved_qps"] > 0
        assert (Path(p["log_dir"]) / "mlperf_log_detail.txt").is_file()
    assert any(p["verdict"] == "INVALID" and p["target_qps"] > capacity for p in probes)
    (confirmed,) = [p for p in probes if p["phase"] == "confirm" and p["target_qps"] == capacity]
    assert confirmed["verdict"] == "VALID" and case["log_dir"] == confirmed["log_dir"]
    assert case["run"]["settings"]["target_qps"] == pytest.approx(capacity, rel=1e-4)
    assert case["run"]["settings"]["min_duration_ms"] == 1000  # the confirmation runs at full length
    assert all(p["seconds"] < confirmed["seconds"] for p in probes if p["phase"] != "confirm" and p is not probes[0])


def test_baselines_compare_capacity_and_a_slower_sut_fails(pytester: pytest.Pytester) -> None:
    bench(pytester)
    result = run(pytester, "--mlperf-server-search", "--mlperf-update-baselines", "--mlperf-baseline-repeats=1")
    result.assert_outcomes(passed=1)
    (path,) = (pytester.path / "baselines").rglob("*.json")
    stored = json.loads(path.read_text())
    assert list(stored["metrics"]) == ["server_capacity_qps"] and stored["metrics"]["server_capacity_qps"]["higher_is_better"]
    bench(pytester, per_sample_ms=2 * SERVICE_MS)  # half the capacity
    result = run(pytester, "--mlperf-server-search", "--mlperf-require-baselines")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*regression against baseline*", "*server_capacity_qps: measured * QPS vs baseline*"])
    # a run without the search cannot be judged by a capacity baseline, and says what to do
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*server_capacity_qps: the baseline holds a Server capacity, which only "
                                 "--mlperf-server-search measures*"])


def test_an_unbracketable_search_fails_saying_what_it_tried(pytester: pytest.Pytester) -> None:
    bench(pytester)
    conf = pytester.path / "user.conf"
    conf.write_text("resnet50.Server.target_latency = 1\n")  # 1 ms: the SUT takes 5 ms for any query
    result = run(pytester, "--mlperf-server-search", f"--mlperf-user-conf={conf}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*server capacity search could not bracket the capacity: every load tried down to "
                                 "* QPS was INVALID on the latency bound*"])
    (case,) = cases(pytester)
    search = case["server_search"]
    assert case["outcome"] == "failed" and "could not bracket" in case["reason"]
    assert search["status"] == "unbracketable" and search["capacity_qps"] is None
    assert len(search["probes"]) == 5 and all(p["verdict"] == "INVALID" for p in search["probes"])
    assert case["metrics"] == {}


@pytest.mark.parametrize("gate", [[], ["--mlperf-candidate-env=SOMEVAR=1"]], ids=["alone", "under the gate"])
def test_a_user_conf_target_qps_cannot_be_searched(pytester: pytest.Pytester, gate: list[str]) -> None:
    bench(pytester)
    conf = pytester.path / "user.conf"
    conf.write_text("resnet50.Server.target_qps = 50\n")
    result = run(pytester, "--mlperf-server-search", f"--mlperf-user-conf={conf}", *gate)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*--mlperf-server-search varies the Server target QPS, but --mlperf-user-conf * sets "
                                 "target_qps*"])


def test_the_ini_twin_turns_the_search_on_and_a_bad_budget_is_a_usage_error(pytester: pytest.Pytester) -> None:
    bench(pytester)
    pytester.makeini("[pytest]\nmlperf_server_search = true\nmlperf_server_search_budget = 2m\n")
    result = run(pytester)
    result.assert_outcomes(passed=1)
    (case,) = cases(pytester)
    assert case["server_search"]["budget_s"] == 120.0 and case["server_search"]["capacity_qps"] > 0
    result = pytester.runpytest("--mlperf-server-search-budget=soon")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*bad --mlperf-server-search-budget 'soon'*"])


def test_without_a_search_a_server_run_invalid_on_latency_says_so_and_records_its_target(
        pytester: pytest.Pytester) -> None:
    bench(pytester)
    conf = pytester.path / "user.conf"
    conf.write_text("resnet50.Server.target_latency = 1\n")
    result = run(pytester, "--mlperf-profile=ci", f"--mlperf-user-conf={conf}")  # ci does not accept it
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*LoadGen judged the Server run INVALID*",
        "*the Server run missed its latency bound at * QPS (the target from calibration: half the throughput the "
        "calibration's bare loop measured*): the SUT cannot serve that load within the bound. Find the highest load "
        "it can serve with --mlperf-server-search*"])
    (case,) = cases(pytester)
    target = case["server_target"]
    assert target["source"] == "calibration" and target["qps"] == case["run"]["settings"]["target_qps"]
    result = run(pytester, f"--mlperf-user-conf={conf}")  # smoke accepts it, and notes it with the same advice
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["note: *perf_constraints_met, which the smoke profile accepts; the Server run "
                                 "missed its latency bound at * QPS*--mlperf-server-search*"])
