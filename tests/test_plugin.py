"""The plugin through real pytest sessions (pytester) against the null SUT: options, ids, baselines, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_mlperf.host.baselines.store import noise_allowance
from null_bench import write_null_bench


def bench(pytester: pytest.Pytester, scenarios=("Offline",), calibrate: bool = True, **options: object) -> None:
    write_null_bench(pytester, scenarios=scenarios, calibrate=calibrate, judge_baseline=True, **options)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # a subprocess: each session gets fresh LoadGen runners and a clean plugin state
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--mlperf-duration=0.5s", *args)


def failed_records(pytester: pytest.Pytester, count: int) -> list[dict]:
    """results.json's records of failed cases (`count` of them), each with its reason; those LoadGen gave no result
    (the runner failed) have no run and no metrics."""
    doc = json.loads((pytester.path / "mlperf-results" / "results.json").read_text())
    failed = [c for c in doc["cases"] if c["outcome"] == "failed"]
    assert len(failed) == count, doc["cases"]
    for record in failed:
        assert record["reason"] and record["key"]["workload"] == "null"
        assert record["run"] is not None or record["metrics"] == {}
    return failed


def baseline_files(pytester: pytest.Pytester) -> list[Path]:
    return sorted((pytester.path / "baselines").rglob("*.json"))


def test_ids_carry_workload_scenario_and_mode(pytester: pytest.Pytester) -> None:
    bench(pytester, scenarios=("Offline", "SingleStream"))
    result = pytester.runpytest("--collect-only", "-q", "--mlperf-mode=both")
    result.stdout.fnmatch_lines([
        "*test_null[[]null-Offline-performance]",
        "*test_null[[]null-Offline-accuracy]",
        "*test_null[[]null-SingleStream-performance]",
        "*test_null[[]null-SingleStream-accuracy]",
    ])


def test_scenario_option_selects_and_skips_undeclared(pytester: pytest.Pytester) -> None:
    bench(pytester, scenarios=("Offline",))
    result = pytester.runpytest("--collect-only", "-q", "--mlperf-scenario=offline,Server")
    result.stdout.fnmatch_lines(["*test_null[[]null-Offline-performance]"])
    assert "Server" not in result.stdout.str()
    result = pytester.runpytest("-q", "--mlperf-scenario=Server")
    result.assert_outcomes(skipped=1)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--mlperf-scenario=Offlien"], "unknown MLPerf scenario 'Offlien'*"),
        (["--mlperf-mode=fast"], "*unknown --mlperf-mode 'fast'*"),
        (["--mlperf-profile=nightly"], "*unknown --mlperf-profile 'nightly'*"),
        (["--mlperf-tolerance=150%"], "*--mlperf-tolerance must be between*"),
        (["--mlperf-duration=soon"], "*bad --mlperf-duration 'soon'*"),
        (["--mlperf-model", "resnet50=/nowhere/r.onnx"], "*resnet50: /nowhere/r.onnx does not exist*"),
        (["--mlperf-model", "bert=/"], "*unknown workload 'bert'*"),
        (["--mlperf-device=tpu"], "*unknown --mlperf-device 'tpu'*"),
    ],
)
def test_bad_options_are_usage_errors(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    bench(pytester)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}"])


def test_ini_twin_is_read_and_cli_wins(pytester: pytest.Pytester) -> None:
    bench(pytester, scenarios=("Offline", "SingleStream"))
    pytester.makeini("[pytest]\nmlperf_scenario = SingleStream\nmlperf_mode = both\n")
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["*null-SingleStream-performance]", "*null-SingleStream-accuracy]"])
    assert "Offline" not in result.stdout.str()
    result = pytester.runpytest("--collect-only", "-q", "--mlperf-scenario=Offline", "--mlperf-mode=accuracy")
    assert "null-Offline-accuracy" in result.stdout.str() and "SingleStream" not in result.stdout.str()


def test_missing_baseline_passes_and_says_how_to_record(pytester: pytest.Pytester) -> None:
    bench(pytester)
    result = run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "*MLPerf results*", "*null Offline performance*no baseline*",
        "no baseline for 1 case(s) under */baselines/null: record them on the reference system with "
        "--mlperf-update-baselines*",
    ])
    doc = json.loads((pytester.path / "mlperf-results" / "results.json").read_text())
    (case,) = doc["cases"]
    assert case["run"]["validity"] == "VALID" and case["metrics"]["result_samples_per_second"] > 0
    assert (Path(case["log_dir"]) / "mlperf_log_detail.txt").is_file()


def test_require_baselines_fails_without_one(pytester: pytest.Pytester) -> None:
    bench(pytester)
    result = run(pytester, "--mlperf-require-baselines")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no baseline at*--mlperf-require-baselines is set*"])


def test_record_then_pass_then_slower_sut_fails(pytester: pytest.Pytester) -> None:
    bench(pytester, scenarios=("Offline", "SingleStream"), delay_ms=4)
    result = run(pytester, "--mlperf-update-baselines", "--mlperf-mode=both")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*baseline recorded:*Offline-performance-null-none-*.json*"])
    files = baseline_files(pytester)
    assert len(files) == 4
    recorded = {f: f.read_bytes() for f in files}
    for f in files:  # a performance baseline records 3 runs (its noise), summarised by their median
        for metric in json.loads(f.read_text())["metrics"].values():
            assert len(metric["samples"]) == 3 and metric["value"] == sorted(metric["samples"])[1], f
    assert (pytester.path / "mlperf-results" / "logs" / "test_null_null-Offline-performance-repeat3").is_dir()

    result = run(pytester, "--mlperf-require-baselines", "--mlperf-tolerance=50%", "--mlperf-mode=both")
    # on a busy CPU the repeats can spread past what a 50% tolerance can detect: which cases that is follows from
    # the recorded files, and --mlperf-require-baselines fails exactly those (saying so)
    noisy = [f for f in files if any(noise_allowance(m["samples"]) > 0.5
                                     for m in json.loads(f.read_text())["metrics"].values())]
    result.assert_outcomes(passed=4 - len(noisy), failed=len(noisy))
    for f in noisy:
        result.stdout.fnmatch_lines([f"*baseline {f} cannot judge this run:*", "*cannot be told from noise*"])
    assert {f: f.read_bytes() for f in files} == recorded  # a plain run never writes baselines

    bench(pytester, scenarios=("Offline", "SingleStream"), delay_ms=16)  # 4x slower per batch
    result = run(pytester, "--mlperf-tolerance=50%", "--mlperf-mode=performance")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*regression against baseline*Offline-performance*",
        "*result_samples_per_second: measured * samples/s vs baseline * samples/s (-*%; higher is better*",
        "*regression against baseline*SingleStream-performance*",
        "*result_90.00_percentile_latency_ns: measured * ns vs baseline * ns (+*%; lower is better*",
    ])
    assert {f: f.read_bytes() for f in files} == recorded


def test_changed_outputs_fail_accuracy_against_baseline(pytester: pytest.Pytester) -> None:
    bench(pytester)
    run(pytester, "--mlperf-update-baselines", "--mlperf-mode=accuracy").assert_outcomes(passed=1)
    (path,) = baseline_files(pytester)
    data = json.loads(path.read_text())
    data["accuracy"]["predictions"][3][1] += 1000  # as if the layer had changed one result
    path.write_text(json.dumps(data))
    result = run(pytester, "--mlperf-mode=accuracy")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*outputs differ from the baseline's on 1 of * samples (#3: *"])


def test_corrupt_baseline_fails_naming_file(pytester: pytest.Pytester) -> None:
    bench(pytester)
    run(pytester, "--mlperf-update-baselines").assert_outcomes(passed=1)
    (path,) = baseline_files(pytester)
    path.write_text(path.read_text()[:40])
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*corrupt baseline: {path}: corrupt JSON at line*"])
    assert path.read_text().endswith("\n") is False  # left as the user left it


def test_update_replaces_on_purpose_and_says_so(pytester: pytest.Pytester) -> None:
    bench(pytester)
    run(pytester, "--mlperf-update-baselines").assert_outcomes(passed=1)
    result = run(pytester, "--mlperf-update-baselines")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*baseline replaced (--mlperf-update-baselines):*result_samples_per_second * -> *"])


def test_sut_exception_fails_case_and_session_goes_on(pytester: pytest.Pytester) -> None:
    # without calibration the faults land inside LoadGen's test (its issue thread)
    bench(pytester, scenarios=("Offline", "SingleStream"), calibrate=False, raise_after=2)
    result = run(pytester)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*the SUT raised during the LoadGen test*", "*RuntimeError: null SUT: raising on batch*"])
    # the failed cases stay in the table and in results.json, with their outcome and reason
    failed = failed_records(pytester, 2)
    raised = [r for r in failed if "the SUT raised during the LoadGen test" in r["reason"]]
    assert raised  # each case whose SUT raised in LoadGen's test says so (the runner is replaced in between)
    for record in raised:
        assert record["run"] is None
        assert record["key"]["backend"] == "null" and record["key"]["precision"] != "?"  # known once it started
    result.stdout.fnmatch_lines(["*null Offline performance*failed", "*null SingleStream performance*failed",
                                 "failed: *test_null[[]null-*-performance]: *"])


def test_sut_exception_during_calibration_is_reported(pytester: pytest.Pytester) -> None:
    bench(pytester, scenarios=("Offline",), raise_after=2)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the SUT failed during the warm-up/calibration loop: RuntimeError('null SUT: raising*"])


def test_crashing_runner_is_reported_and_replaced(pytester: pytest.Pytester) -> None:
    bench(pytester, scenarios=("SingleStream", "MultiStream"), calibrate=False, crash_after=3)
    result = run(pytester)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*runner was killed by SIGKILL while SingleStream performance test*runner log*"])
    assert "During handling" not in result.stdout.str()
    failed = failed_records(pytester, 2)
    assert any("was killed by SIGKILL" in r["reason"] and r["run"] is None for r in failed)
    logs = list((pytester.path / "mlperf-results" / "runners").glob("*.log"))
    assert len(logs) == 2  # one runner per case: the crashed one was replaced


def test_hanging_sut_is_killed_at_timeout(pytester: pytest.Pytester) -> None:
    bench(pytester, scenarios=("SingleStream", "Offline"), calibrate=False, hang_after=5)
    result = run(pytester, "--mlperf-timeout=8")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*did not finish SingleStream performance test*within 8 s and was killed*"])
    failed = failed_records(pytester, 2)
    assert any("within 8 s and was killed" in r["reason"] and r["run"] is None for r in failed)


def test_xdist_workers_report_to_controller_which_alone_writes(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    bench(pytester, scenarios=("Offline", "SingleStream", "Server", "MultiStream"))
    result = run(pytester, "-n", "2", "--mlperf-update-baselines", "--mlperf-shared-cpu-baselines")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["warning: CPU cases ran on 2 pytest-xdist workers side by side (gw0, gw1)*"])
    doc = json.loads((pytester.path / "mlperf-results" / "results.json").read_text())
    assert sorted(c["key"]["scenario"] for c in doc["cases"]) == ["MultiStream", "Offline", "Server", "SingleStream"]
    assert len(baseline_files(pytester)) == 4
    runner_logs = {p.name.split("-")[0] for p in (pytester.path / "mlperf-results" / "runners").glob("*.log")}
    assert runner_logs == {"gw0", "gw1"}


def test_streams_option_reaches_the_runner(pytester: pytest.Pytester) -> None:
    bench(pytester, scenarios=("Offline",))
    run(pytester, "--mlperf-streams=2").assert_outcomes(passed=1)
    doc = json.loads((pytester.path / "mlperf-results" / "results.json").read_text())
    assert doc["cases"][0]["schedule"]["streams"] == 2
    result = pytester.runpytest("--mlperf-streams=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mlperf-streams must be at least 1*"])


def test_records_say_where_the_time_went_and_the_runner_log_shows_progress(pytester: pytest.Pytester) -> None:
    bench(pytester, scenarios=("Offline", "SingleStream"))
    run(pytester).assert_outcomes(passed=2)
    doc = json.loads((pytester.path / "mlperf-results" / "results.json").read_text())
    first, second = sorted(doc["cases"], key=lambda c: c["timings"]["runner_start_s"], reverse=True)
    for case in (first, second):
        t = case["timings"]
        assert set(t) == {"runner_start_s", "prepare_s", "loadgen_s", "results_s", "case_s"}
        assert t["loadgen_s"] >= 0.5  # --mlperf-duration=0.5s
        assert t["case_s"] >= t["runner_start_s"] + t["prepare_s"] + t["loadgen_s"] + t["results_s"]
    assert first["timings"]["runner_start_s"] > 0.05 and second["timings"]["runner_start_s"] < 0.05  # reused
    assert isinstance(first["runner_pid"], int) and first["runner_pid"] == second["runner_pid"]
    (log,) = (pytester.path / "mlperf-results" / "runners").glob("*.log")
    text = log.read_text()
    assert "] loaded in " in text and "] preparing Offline performance (calibrating)" in text
    assert "LoadGen test: SingleStream performance, min 0.5 s" in text and "] LoadGen test done in " in text


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_getaffinity"), reason="needs Linux CPU affinity")
def test_cpu_affinity_pins_the_runner_and_bad_lists_are_usage_errors(pytester: pytest.Pytester) -> None:
    import os

    from pytest_mlperf.contract.cpu_list import format_cpu_list

    cpu = min(os.sched_getaffinity(0))
    bench(pytester)
    run(pytester, f"--mlperf-cpu-affinity={cpu}").assert_outcomes(passed=1)
    (case,) = json.loads((pytester.path / "mlperf-results" / "results.json").read_text())["cases"]
    assert case["runner_cpus"] == str(cpu) and f"cpus={cpu}" in case["recipe"]
    run(pytester).assert_outcomes(passed=1)  # default none: the runner inherits pytest's CPUs
    (case,) = json.loads((pytester.path / "mlperf-results" / "results.json").read_text())["cases"]
    assert case["runner_cpus"] == format_cpu_list(sorted(os.sched_getaffinity(0)))
    assert "cpus=" not in case["recipe"]
    for value, message in (("0-x", "bad CPU list"), ("100000", "leaves no CPU this process may use")):
        result = pytester.runpytest(f"--mlperf-cpu-affinity={value}")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"*--mlperf-cpu-affinity: *{message}*"])


def test_a_test_that_would_outlast_its_timeout_fails_at_once_and_keeps_the_runner(pytester: pytest.Pytester) -> None:
    bench(pytester, scenarios=("SingleStream", "Offline"), delay_ms=60)  # 64 queries of ~60 ms: about 4 s
    result = run(pytester, "--mlperf-timeout=3")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*the SingleStream performance test would take about * s (64 queries of about *"
                                 "ms each), more than the * s left before the case's timeout: raise --mlperf-timeout*"])
    assert "was killed" not in result.stdout.str()
    logs = list((pytester.path / "mlperf-results" / "runners").glob("*.log"))
    assert len(logs) == 1  # the runner was not replaced: the refused test never started LoadGen
    conf = pytester.path / "user.conf"
    conf.write_text("*.SingleStream.min_query_count = 16\n")  # what LoadGen will really run is what is predicted
    run(pytester, "--mlperf-timeout=3", f"--mlperf-user-conf={conf}", "-k", "SingleStream").assert_outcomes(passed=1)


def test_server_batch_wait_reaches_the_batcher_from_the_command_line_and_the_ini(pytester: pytest.Pytester) -> None:
    bench(pytester, scenarios=("Server",))

    def wait() -> float:
        doc = json.loads((pytester.path / "mlperf-results" / "results.json").read_text())
        return doc["cases"][0]["schedule"]["max_wait_s"]

    run(pytester).assert_outcomes(passed=1)
    default = wait()
    assert default > 0  # a tenth of the bound
    run(pytester, "--mlperf-server-batch-wait=0").assert_outcomes(passed=1)
    assert wait() == 0
    pytester.makeini("[pytest]\nmlperf_server_batch_wait = 0.25ms\n")
    run(pytester).assert_outcomes(passed=1)
    assert wait() == pytest.approx(0.00025)
    result = pytester.runpytest("--mlperf-server-batch-wait=-1ms")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mlperf-server-batch-wait must be between 0 and 10 s*"])


def test_an_absurd_batch_size_is_refused_before_loadgen_starts_and_keeps_the_runner(pytester: pytest.Pytester) -> None:
    # batches of 100000 copies of the dataset's samples: the bare loop measures tens of millions of samples/s, and
    # LoadGen would build a query of as many samples (gigabytes, minutes at full CPU) before saying anything
    bench(pytester, scenarios=("Offline", "SingleStream"))
    result = run(pytester, "--mlperf-batch-size=100000")
    result.assert_outcomes(failed=1, passed=1)  # SingleStream runs one sample at a time: unaffected
    result.stdout.fnmatch_lines(["*the Offline performance test expects * samples/s, more than LoadGen and a Python "
                                 "harness complete in one process*Use a smaller --mlperf-batch-size*"])
    logs = list((pytester.path / "mlperf-results" / "runners").glob("*.log"))
    assert len(logs) == 1  # refused before LoadGen started: the runner served the next case


def test_a_case_whose_setup_fails_is_in_the_results_as_an_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_bench="""
import pytest
pytestmark = pytest.mark.mlperf(workload="null", scenarios=["Offline"], gpus=0)

def test_null(null_sut, loadgen, baseline):
    loadgen.run(null_sut)
""")
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*null Offline performance*error", "error: *test_null[[]null-Offline-performance]: "
                                 "*@pytest.mark.mlperf(gpus=0) is not valid: gpus must be at least 1, got '0'"])
    (record,) = json.loads((pytester.path / "mlperf-results" / "results.json").read_text())["cases"]
    assert record["outcome"] == "error" and record["run"] is None
    assert record["key"] == {"workload": "null", "scenario": "Offline", "mode": "performance", "backend": "null",
                             "precision": "?", "system": "?"}


def edit_baseline(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_baseline_that_compares_nothing_fails(pytester: pytest.Pytester) -> None:
    bench(pytester)
    run(pytester, "--mlperf-update-baselines").assert_outcomes(passed=1)
    (path,) = baseline_files(pytester)
    recorded = path.read_text()

    edit_baseline(path, lambda d: d.update(metrics={}))  # empty metrics: passed before, even under require
    result = run(pytester, "--mlperf-require-baselines")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*baseline {path} cannot judge this run:*",
                                 "*it compares nothing with this run: it holds no metric and no outputs, the run "
                                 "measured result_samples_per_second*"])

    def rename(d: dict) -> None:  # a metric the run does not have
        d["metrics"] = {"result_tokens_per_second": {**d["metrics"]["result_samples_per_second"],
                                                     "name": "result_tokens_per_second"}}
    path.write_text(recorded)
    edit_baseline(path, rename)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*it compares nothing with this run*",
                                 "*result_tokens_per_second: in the baseline but this run did not measure it*"])

    path.write_text(recorded)  # a string where a bool is due was read as True
    edit_baseline(path, lambda d: d["metrics"]["result_samples_per_second"].update(higher_is_better="false"))
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f'*corrupt baseline: {path}: "metrics.result_samples_per_second.higher_is_better": '
                                 "expected bool, got str*"])

    path.write_text(recorded)  # a key naming another scenario is not this case's baseline
    edit_baseline(path, lambda d: d["key"].update(scenario="Server"))
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*baseline {path} names another case: scenario='Server' (this case: 'Offline')*"])

    path.write_text(recorded)  # as recorded it judges the run (50%: CPU repeats can spread more than 5% allows)
    run(pytester, "--mlperf-require-baselines", "--mlperf-tolerance=50%").assert_outcomes(passed=1)


def test_repeats_too_spread_to_detect_the_tolerance_are_said_at_record_time_and_fail_when_required(
        pytester: pytest.Pytester) -> None:
    bench(pytester)
    # three real runs never agree to 0.001%: at that tolerance their spread always hides a regression
    result = run(pytester, "--mlperf-update-baselines", "--mlperf-tolerance=0.001%")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["note: *test_null*: baseline recorded, but result_samples_per_second: the "
                                 "baseline's 3 repeats spread so much (noise allowance *) that a 0.0% regression "
                                 "cannot be told from noise: record the baseline again with more repeats "
                                 "(--mlperf-baseline-repeats), longer runs (--mlperf-duration) or on a quieter "
                                 "machine"])
    (path,) = baseline_files(pytester)

    def spread(d: dict) -> None:  # repeats 40% apart: a noise allowance far above a 5% tolerance
        m = d["metrics"]["result_samples_per_second"]
        m["samples"] = [m["value"] * 0.6, m["value"], m["value"] * 1.4]
    edit_baseline(path, spread)
    result = run(pytester, "--mlperf-require-baselines", "--mlperf-tolerance=50%")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*cannot judge this run:*", "*result_samples_per_second: the baseline's 3 repeats "
                                 "spread so much*(--mlperf-require-baselines fails a comparison that cannot detect "
                                 "the tolerance)*"])
    result = run(pytester, "--mlperf-tolerance=90%")  # with this tolerance the same spread is no problem
    result.assert_outcomes(passed=1)


def test_a_server_baseline_keeps_the_target_qps_loadgen_ran_and_the_next_run_repeats_it(
        pytester: pytest.Pytester) -> None:
    """A Server baseline recorded under a user.conf's target_qps holds that target, LoadGen's effective value (the
    H200's was recorded at 5,616 QPS but kept the calibration's 3,154), and a later run without the user.conf runs
    at it."""
    bench(pytester, scenarios=("Server",))
    conf = pytester.path / "user.conf"
    conf.write_text("*.Server.target_qps = 123.5\n")
    run(pytester, "--mlperf-update-baselines", "--mlperf-baseline-repeats=1",
        f"--mlperf-user-conf={conf}").assert_outcomes(passed=1)
    (path,) = baseline_files(pytester)
    assert json.loads(path.read_text())["settings"]["server_target_qps"] == pytest.approx(123.5)
    again = run(pytester, "--mlperf-tolerance=99%")
    # a 0.5 s run's p99 is noise (under pytest -n 2 it once doubled): only a latency regression may fail it
    if again.ret != 0:
        again.assert_outcomes(failed=1)
        assert "regression against baseline" in again.stdout.str()
        assert "percentile_latency_ns: measured" in again.stdout.str()
    (case,) = json.loads((pytester.path / "mlperf-results" / "results.json").read_text())["cases"]
    assert case["server_target"]["source"] == "baseline"
    assert case["run"]["settings"]["target_qps"] == pytest.approx(123.5)
