"""Bad input and unwritable outputs (issue 11): each gives a clear message before the first case or at the end,
never an INTERNALERROR or a raw traceback; two sessions never share a results folder."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from pytest_mlperf.host.outputs import OutputError, check_results_dir, claim_results_dir
from pytest_mlperf.host.pool.recipe import LaunchRecipe, interpreter_hint

BENCH = """
import pytest
pytestmark = pytest.mark.mlperf(workload="null", scenarios={scenarios!r}{extra})

def test_null(null_sut, loadgen, baseline):
    run = loadgen.run(null_sut)
    run.assert_valid()
    baseline.assert_no_regression(run)
"""


def bench(pytester: pytest.Pytester, scenarios=("Offline",), extra: str = "") -> None:
    pytester.makepyfile(test_bench=BENCH.format(scenarios=list(scenarios), extra=extra))


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--mlperf-duration=0.3s", *args)


def no_crash(result: pytest.RunResult) -> None:
    text = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in text and "Traceback" not in text, text


# --------------------------------------------------------------------------- output locations


def test_claim_gives_a_second_session_its_own_folder(tmp_path: Path) -> None:
    first = claim_results_dir(tmp_path / "mlperf-results")
    try:
        assert first.path == tmp_path / "mlperf-results" and first.note is None
        second = claim_results_dir(tmp_path / "mlperf-results")
        try:
            assert second.path.parent == tmp_path / "mlperf-results" / "sessions"
            assert second.path.name.endswith(f"-{os.getpid()}")
            assert second.note is not None and f"pid {os.getpid()}" in second.note and str(second.path) in second.note
        finally:
            second.release()
    finally:
        first.release()
    again = claim_results_dir(tmp_path / "mlperf-results")  # free once the first session has ended
    assert again.path == tmp_path / "mlperf-results"
    again.release()
    assert not (tmp_path / "mlperf-results").exists()  # nothing is created before a case writes


@pytest.mark.parametrize("make, words", [
    (lambda d: d.write_text("x"), "is a file, not a folder"),
    (lambda d: (d.parent / "parent").write_text("x"), "is a file, not a folder"),
    (lambda d: (d.mkdir(), (d / "logs").write_text("x")), "logs/"),
])
def test_results_dir_that_cannot_hold_files_is_refused(tmp_path: Path, make, words: str) -> None:
    target = tmp_path / "out"
    make(target)
    where = tmp_path / "parent" / "out" if (tmp_path / "parent").exists() else target
    with pytest.raises(OutputError, match="--mlperf-results-dir") as exc:
        check_results_dir(where)
    assert words in str(exc.value)


def test_results_dir_that_is_a_file_is_a_usage_error_before_any_case(pytester: pytest.Pytester) -> None:
    bench(pytester)
    (pytester.path / "mlperf-results").write_text("not a folder")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*the results folder */mlperf-results cannot be made: * is a file, not a folder*"
                                 "--mlperf-results-dir*"])
    no_crash(result)


def test_a_session_without_mlperf_cases_runs_whatever_the_results_folder_is(pytester: pytest.Pytester) -> None:
    """The plugin loads in every pytest session of its environment: only MLPerf cases need the folder."""
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    (pytester.path / "mlperf-results").write_text("not a folder")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK


def test_results_dir_that_is_a_file_fails_each_case_cleanly_under_xdist(pytester: pytest.Pytester) -> None:
    bench(pytester)
    (pytester.path / "mlperf-results").write_text("not a folder")
    result = run(pytester, "-n", "2")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*the results folder */mlperf-results cannot be made*--mlperf-results-dir*"])
    no_crash(result)


def test_baselines_dir_that_is_a_file_is_refused_when_recording(pytester: pytest.Pytester) -> None:
    bench(pytester)
    (pytester.path / "baselines").write_text("not a folder")
    result = run(pytester, "--mlperf-update-baselines")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*the baselines folder */baselines cannot be made*--mlperf-baselines-dir*"])
    no_crash(result)
    run(pytester, "--collect-only").assert_outcomes()  # without recording, the folder is only read


def test_results_that_cannot_be_written_at_the_end_are_an_error_not_a_traceback(pytester: pytest.Pytester) -> None:
    bench(pytester)
    (pytester.path / "mlperf-results" / "results.json").mkdir(parents=True)  # passes the check, fails the write
    result = run(pytester)
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*MLPerf results*", "error: results not written to */mlperf-results: *"])
    no_crash(result)


def test_baseline_that_cannot_be_written_is_an_error_at_the_end(pytester: pytest.Pytester) -> None:
    bench(pytester)
    (pytester.path / "baselines").mkdir()
    (pytester.path / "baselines" / "null").write_text("a file where the workload's folder goes")
    result = run(pytester, "--mlperf-update-baselines", "--mlperf-baseline-repeats=1")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["error: baseline not written: */baselines/null/*.json: *"])
    no_crash(result)


def test_a_second_session_writes_to_its_own_folder_and_says_so(pytester: pytest.Pytester) -> None:
    bench(pytester)
    held = claim_results_dir(pytester.path / "mlperf-results")  # another session, still running
    try:
        result = run(pytester)
    finally:
        held.release()
    result.assert_outcomes(passed=1)
    assert not (pytester.path / "mlperf-results" / "results.json").exists()  # the first session's is untouched
    (own,) = (pytester.path / "mlperf-results" / "sessions").iterdir()
    (case,) = json.loads((own / "results.json").read_text())["cases"]
    assert Path(case["log_dir"]).is_relative_to(own)
    logs = list((own / "runners").glob("*.log"))
    assert logs and "by pytest pid " in logs[0].read_text()
    assert "[runner " in logs[0].read_text()
    result.stdout.fnmatch_lines(["mlperf: */mlperf-results is in use by another pytest-mlperf session (pid *",
                                 f"results: {own}/results.json*", "note: */mlperf-results is in use*"])
    latest = pytester.path / "mlperf-results" / "latest"  # the session that finished last
    assert latest.is_symlink() and latest.resolve() == own.resolve()
    run(pytester).assert_outcomes(passed=1)  # the folder is free again: a plain session writes to it
    assert (pytester.path / "mlperf-results" / "results.json").is_file()
    assert latest.resolve() == (pytester.path / "mlperf-results").resolve()


def test_runner_log_lines_carry_pid_and_time(pytester: pytest.Pytester) -> None:
    bench(pytester)
    run(pytester).assert_outcomes(passed=1)
    (log,) = (pytester.path / "mlperf-results" / "runners").glob("*.log")
    lines = log.read_text().splitlines()
    assert lines[0].startswith("--- runner start 2") and " by pytest pid " in lines[0]
    progress = [line for line in lines if line.startswith("[runner ")]
    assert progress
    for line in progress:  # [runner PID HH:MM:SS] ...
        pid, stamp = line.split("]", 1)[0].removeprefix("[runner ").split()
        assert pid.isdigit() and len(stamp) == 8 and stamp.count(":") == 2


def test_recording_baselines_with_xdist_on_the_cpu_is_refused_unless_asked(pytester: pytest.Pytester,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    bench(pytester)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU: the workers' cases would share the cores
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--mlperf-update-baselines",
                                           "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mlperf-update-baselines with 2 pytest-xdist workers on the CPU*"
                                 "--mlperf-shared-cpu-baselines*"])
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--mlperf-update-baselines",
                                           "--mlperf-shared-cpu-baselines", "--collect-only")
    assert result.ret == pytest.ExitCode.OK


# --------------------------------------------------------------------------- options and configuration


@pytest.mark.parametrize("args, message", [
    (["--mlperf-duration", "-5s"], "--mlperf-duration must be positive, got '-5s'*"),
    (["--mlperf-timeout", "-1"], "--mlperf-timeout must be positive, got '-1'*"),
    (["--mlperf-max-overhead=abc"], "bad --mlperf-max-overhead 'abc'*"),  # no candidate: checked anyway
    (["--mlperf-gate-min-rounds=-3"], "--mlperf-gate-min-rounds must be at least 1, got '-3'"),
    (["--mlperf-gate-budget=soon"], "bad --mlperf-gate-budget 'soon'*ms, s, m or h*"),
    (["--mlperf-timeout=10x"], "bad --mlperf-timeout '10x'*"),
])
def test_bad_option_values_are_usage_errors_even_when_unused(pytester: pytest.Pytester, args: list[str],
                                                             message: str) -> None:
    bench(pytester)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


def test_every_duration_option_takes_the_documented_units(pytester: pytest.Pytester) -> None:
    bench(pytester)
    result = pytester.runpytest("--collect-only", "-q", "--mlperf-gpu-lock-timeout=1h", "--mlperf-timeout", "10s",
                                "--mlperf-gate-round=1500ms", "--mlperf-gate-budget=10m", "--mlperf-duration=2s")
    assert result.ret == pytest.ExitCode.OK


def test_a_bad_marker_value_names_the_marker_and_the_test(pytester: pytest.Pytester) -> None:
    bench(pytester, extra=', tolerance="abc"')
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_bench.py::test_null[[]null-Offline-performance]: "
                                 "@pytest.mark.mlperf(tolerance='abc') is not valid: bad tolerance 'abc': write a "
                                 "percentage like 5% or a fraction like 0.05*"])
    assert "--mlperf-tolerance" not in result.stdout.str()
    no_crash(result)


def test_user_conf_with_a_misspelled_key_is_refused_with_its_line(pytester: pytest.Pytester) -> None:
    bench(pytester)
    conf = pytester.path / "user.conf"
    conf.write_text("# mine\n*.Offline.min_duraton = 5000\n")
    result = pytester.runpytest(f"--mlperf-user-conf={conf}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*user.conf has 1 line(s) LoadGen would reject or ignore:",
                                 "*line 2: '[*].Offline.min_duraton = 5000': unknown key 'min_duraton'*did you mean "
                                 "'min_duration'*"])


def test_a_scenario_no_benchmark_declares_fails_the_session_and_says_so(pytester: pytest.Pytester) -> None:
    bench(pytester, scenarios=("Offline",))
    result = run(pytester, "--mlperf-scenario=Server")
    result.assert_outcomes(skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*MLPerf results*", "not measured: test_* (null) declares Offline; --mlperf-scenario asked "
                                 "for Server", "error: nothing was measured*"])


def test_a_scenario_some_benchmarks_lack_is_noted_but_passes(pytester: pytest.Pytester) -> None:
    bench(pytester, scenarios=("Offline",))
    pytester.makepyfile(test_other=BENCH.format(scenarios=["SingleStream"], extra=""))
    result = run(pytester, "--mlperf-scenario=SingleStream")
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["not measured: test_* (null) declares Offline; --mlperf-scenario asked for SingleStream"])


# --------------------------------------------------------------------------- what a user sees


def test_a_prefix_that_starts_another_python_gets_a_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    recipe = LaunchRecipe.from_strings("candidate", "python -m pytest_mlperf.slowdown --cost 7% --", None)
    hint = interpreter_hint(recipe, "runner log:\nModuleNotFoundError: No module named 'mlperf_loadgen'")
    assert hint is not None and str(fake) in hint and sys.executable in hint and "--mlperf-candidate-prefix" in hint
    assert interpreter_hint(recipe, "some other failure") is None
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))  # the venv's own python: nothing to hint
    same = LaunchRecipe.from_strings("candidate", f"{Path(sys.executable).name} -m pytest_mlperf.slowdown --", None)
    assert interpreter_hint(same, "No module named 'x'") is None
    assert interpreter_hint(LaunchRecipe.from_strings("candidate", "gpu-proxy run --", None), "No module named") is None


@pytest.mark.parametrize("make, words", [
    (lambda p: p.write_bytes(b""), "is an empty file (0 bytes), not an ONNX model"),
    (lambda p: p.mkdir(), "is a folder; expected an ONNX model file"),
    (lambda p: p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 102\n"), "is a Git LFS pointer"),
    (lambda p: p.write_text("<!DOCTYPE html><html>Not found</html>"), "is an HTML or XML page"),
])
def test_a_model_that_cannot_be_onnx_says_what_it_is(pytester: pytest.Pytester, make, words: str) -> None:
    bench(pytester)
    model = pytester.path / "resnet50_v1.onnx"
    make(model)
    result = pytester.runpytest("--mlperf-model", f"resnet50={model}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --mlperf-model resnet50={model} {words}*resnet50_v1.onnx*"])


def test_an_offline_run_that_runs_out_of_work_runs_again_and_says_so(pytester: pytest.Pytester) -> None:
    """Without calibration LoadGen expects mlperf.conf's QPS, far below the null SUT's: the run ends before its
    min duration ("Increase expected QPS"), as a run calibrated on a busy CPU does. The case measures again."""
    bench(pytester, extra=", calibrate=False")
    result = run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["note: *: run [23]: the first run did * samples/s where LoadGen expected the default "
                                 "and ran out of work before its min duration*"])


def test_help_lists_the_options_whatever_the_folders_are(pytester: pytest.Pytester) -> None:
    (pytester.path / "mlperf-results").write_text("not a folder")
    result = pytester.runpytest_subprocess("--help")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*--mlperf-tolerance=*", "*--mlperf-shared-cpu-baselines*"])
    assert "(default: 5%)" in result.stdout.str()


def test_a_user_conf_expectation_is_not_second_guessed(pytester: pytest.Pytester) -> None:
    bench(pytester)
    conf = pytester.path / "user.conf"
    conf.write_text("*.Offline.target_qps = 1\n")  # far too low: the run ends early, and the user said so
    result = run(pytester, f"--mlperf-user-conf={conf}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*LoadGen judged the Offline run INVALID*", "*the SUT did its work faster than "
                                 "LoadGen was told to expect*--mlperf-user-conf*"])
    assert "run 2:" not in result.stdout.str()
