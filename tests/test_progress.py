"""A user always knows what a case is doing (host/progress.py): the phase lines, which verbosity shows which, the clock
that says a phase is still going, and real pytest sessions against the null SUT that show them as they happen."""

from __future__ import annotations

import json

import pytest

from pytest_mlperf.host.progress import (NORMAL, QUIET, VERBOSE, Notice, Phase, PhaseClock, Still, first_check_s, level,
                                    line, notice_text, reporter, round_text, search_round_text, shown, still_text)
from pytest_mlperf.runner.calibrate import calibration_seconds
from null_bench import write_null_bench

# --------------------------------------------------------------------------- pure


def test_a_notice_says_its_phase_what_it_works_on_and_its_predicted_length() -> None:
    assert notice_text(Notice(Phase.LOAD, detail="resnet50 on onnxruntime")) == (
        "loading the model and data (resnet50 on onnxruntime)")
    assert notice_text(Notice(Phase.LOADGEN, 4.2, "64 queries of about 66 ms each")) == (
        "running the LoadGen test, about 4.2 s: 64 queries of about 66 ms each")
    assert notice_text(Notice(Phase.CALIBRATE, 12.4)) == "calibrating, about 12 s"
    assert line("resnet50 Offline performance", "calibrating") == "mlperf: resnet50 Offline performance: calibrating"


def test_a_notice_crosses_the_protocol_and_an_unknown_phase_is_refused() -> None:
    notice = Notice(Phase.LOADGEN, 0.5, "the minimum duration", "x")
    assert Notice.from_dict(json.loads(json.dumps(notice.to_dict()))) == notice
    assert Notice.from_dict({"phase": "LOAD"}) == Notice(Phase.LOAD)
    with pytest.raises(ValueError, match="unknown phase 'NAPPING'"):
        Notice.from_dict({"phase": "NAPPING"})


def test_still_going_says_when_it_is_much_longer_than_predicted_and_when_it_is_killed() -> None:
    notice = Notice(Phase.LOADGEN, 4.0)
    assert first_check_s(4.0) == 13.0 and first_check_s(None) == 30.0
    assert still_text(notice, Still(13.0, 287.0)) == (
        "still running the LoadGen test after 13 s, predicted about 4.0 s: much longer than predicted; "
        "killed in 287 s (the case's timeout)")
    assert "much longer" not in still_text(notice, Still(12.0))
    assert still_text(Notice(Phase.LOAD, detail="null on null"), Still(30.0)) == (
        "still loading the model and data (null on null) after 30 s")


@pytest.mark.parametrize("verbosity, expected", [
    (-2, set()),
    (-1, {"loadgen", "still"}),
    (0, {"loadgen", "still", "load", "calibrate", "round line"}),
    (1, {"loadgen", "still", "load", "calibrate", "round line", "prepare", "in round"}),
])
def test_each_verbosity_shows_its_lines(verbosity: int, expected: set[str]) -> None:
    lines = {
        "loadgen": level(Phase.LOADGEN, still=False, in_round=False),
        "still": level(Phase.CALIBRATE, still=True, in_round=True),
        "load": level(Phase.LOAD, still=False, in_round=False),
        "calibrate": level(Phase.CALIBRATE, still=False, in_round=False),
        "round line": NORMAL,
        "prepare": level(Phase.PREPARE, still=False, in_round=False),
        "in round": level(Phase.LOADGEN, still=False, in_round=True),
    }
    assert {name for name, needed in lines.items() if shown(needed, verbosity)} == expected
    assert (QUIET, NORMAL, VERBOSE) == (-1, 0, 1)


def test_the_phase_clock_reports_entries_then_a_phase_still_going_at_doubling_times() -> None:
    now = [100.0]
    heard: list[tuple[Notice, Still | None]] = []
    clock = PhaseClock(lambda n, s: heard.append((n, s)), deadline=400.0, clock=lambda: now[0])
    assert clock.during() == ""
    clock.enter(Notice(Phase.LOADGEN, 4.0))
    assert heard == [(Notice(Phase.LOADGEN, 4.0), None)]
    now[0] = 112.9
    clock.tick()
    assert len(heard) == 1  # within twice its prediction and 5 s
    now[0] = 113.0
    clock.tick()
    clock.tick()
    assert heard[1] == (Notice(Phase.LOADGEN, 4.0), Still(13.0, 287.0)) and len(heard) == 2
    now[0] = 125.0
    clock.tick()
    assert len(heard) == 2  # next at 26 s
    now[0] = 126.0
    clock.tick()
    assert heard[2][1] == Still(26.0, 274.0)
    assert clock.during() == "running the LoadGen test (for 26 s; predicted about 4.0 s)"
    clock.enter(Notice(Phase.ACCURACY))  # a new phase starts its own clock
    now[0] = 155.0
    clock.tick()
    assert heard[3] == (Notice(Phase.ACCURACY), None) and len(heard) == 4
    assert clock.during() == "scoring accuracy (for 29 s)"
    now[0] = 156.0
    clock.tick()
    assert heard[4] == (Notice(Phase.ACCURACY), Still(30.0, 244.0))


def test_a_reporter_names_the_case_and_gives_each_line_its_verbosity() -> None:
    lines: list[tuple[str, int]] = []
    assert reporter(None, "x") is None
    report = reporter(lambda text, needed: lines.append((text, needed)), "null Offline performance (repeat 2 of 3)")
    assert report is not None
    report(Notice(Phase.CALIBRATE, 0.6), None)
    report(Notice(Phase.CALIBRATE, 0.6), Still(9.0))
    assert lines == [("mlperf: null Offline performance (repeat 2 of 3): calibrating, about 0.6 s", NORMAL),
                     ("mlperf: null Offline performance (repeat 2 of 3): still calibrating after 9.0 s, predicted "
                      "about 0.6 s: much longer than predicted", QUIET)]
    in_round = reporter(lambda text, needed: lines.append((text, needed)), "c", in_round=True)
    assert in_round is not None
    in_round(Notice(Phase.LOADGEN, 0.2), None)
    assert lines[-1] == ("mlperf: c: running the LoadGen test, about 0.2 s", VERBOSE)


def test_round_and_calibration_lengths() -> None:
    assert round_text(2, 60, 0.5) == "gate round 3 of at most 60, about 1.0 s (two runs of 0.5 s)"
    assert search_round_text(2, 60, 6, 0.5) == ("gate round 3 of at most 60, a capacity search per arm (at most 6 "
                                                "probes of 0.5 s each)")
    assert calibration_seconds(0.3, 8) == pytest.approx(0.6) and calibration_seconds(1.0, 1) == 1.0
    assert calibration_seconds(1.0, 32) == pytest.approx(1.3)


# --------------------------------------------------------------------------- real sessions on the null SUT



def bench(pytester: pytest.Pytester, scenarios=("Offline",), calibrate: bool = True, **options: object) -> None:
    write_null_bench(pytester, scenarios=scenarios, calibrate=calibrate, judge_baseline=False, **options)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--mlperf-duration=0.5s", *args)


def phase_lines(result: pytest.RunResult) -> list[str]:
    return [x for x in result.stdout.lines if x.startswith("mlperf: null ")]


def test_each_phase_of_a_case_is_a_line_as_it_happens(pytester: pytest.Pytester) -> None:
    bench(pytester, scenarios=("Offline", "SingleStream"))
    result = run(pytester, "--mlperf-mode=both", "-k", "Offline or SingleStream-performance")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([
        "test_bench.py ",
        "mlperf: null Offline performance: starting the runner",
        "mlperf: null Offline performance: loading the model and data (null on null)",
        "mlperf: null Offline performance: calibrating, about 0.6 s: bare loop of batches of 8 on 1 stream",
        "mlperf: null Offline performance: running the LoadGen test, about 0.5 s: * samples at * samples/s",
        ".",
        "mlperf: null Offline accuracy: calibrating, *",
        "mlperf: null Offline accuracy: running the LoadGen test, about * s: *accuracy samples*",
        "mlperf: null Offline accuracy: scoring accuracy (* outputs)",
        "mlperf: null SingleStream performance: calibrating, about 0.3 s: bare loop of batches of 1 on 1 stream",
        "mlperf: null SingleStream performance: running the LoadGen test, about * s: *queries of about * ms each*",
        "*MLPerf results*",
    ])
    lines = phase_lines(result)
    # one runner serves all three cases: it starts and loads once; preparing shows only with -v
    assert sum("starting the runner" in x for x in lines) == 1 and sum("loading" in x for x in lines) == 1
    assert not any("preparing the test" in x or "still " in x for x in lines)
    assert "Captured" not in result.stdout.str()  # written past pytest's capture, not into a case's output


def test_q_shows_only_the_loadgen_test_qq_and_no_terminal_none(pytester: pytest.Pytester) -> None:
    bench(pytester)
    quiet = run(pytester, "-q")
    quiet.assert_outcomes(passed=1)
    assert phase_lines(quiet) == [x for x in phase_lines(quiet) if "running the LoadGen test, about" in x]
    assert len(phase_lines(quiet)) == 1
    verbose = run(pytester, "-v")
    assert "mlperf: null Offline performance: preparing the test" in phase_lines(verbose)
    quieter = run(pytester, "-qq")
    assert quieter.ret == 0  # -qq prints no outcome line
    assert phase_lines(quieter) == []
    silent = run(pytester, "-p", "no:terminal")
    assert silent.ret == 0 and "mlperf:" not in silent.stdout.str()
    doc = json.loads((pytester.path / "mlperf-results" / "results.json").read_text())
    assert [c["outcome"] for c in doc["cases"]] == ["passed"]


def test_under_xdist_phases_are_in_failures_only(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    bench(pytester, scenarios=("Offline",), crash_after=2)  # killed in its bare loop, before LoadGen
    result = run(pytester, "-n", "1")
    result.assert_outcomes(failed=1)
    assert "mlperf: null" not in result.stdout.str()  # a worker has no terminal
    result.stdout.fnmatch_lines(["*runner was killed by SIGKILL while Offline performance test*, calibrating "
                                 "(for * s; predicted about 0.6 s); runner log*"])


def test_a_hung_phase_is_said_and_the_timeout_names_it(pytester: pytest.Pytester) -> None:
    bench(pytester, scenarios=("SingleStream",), calibrate=False, hang_after=0)
    result = run(pytester, "--mlperf-timeout=12")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "mlperf: null SingleStream performance: running the LoadGen test, about 0.6 s: 64 queries of about 10 ms *",
        "mlperf: null SingleStream performance: still running the LoadGen test after * s, predicted about 0.6 s: "
        "much longer than predicted; killed in * s (the case's timeout)",
        "*did not finish SingleStream performance test*within 12 s and was killed while running the LoadGen test "
        "(for 1? s; predicted about 0.6 s)*",
    ])
    doc = json.loads((pytester.path / "mlperf-results" / "results.json").read_text())
    assert "was killed while running the LoadGen test (for" in doc["cases"][0]["reason"]


def test_a_runner_that_crashes_is_named_with_its_phase(pytester: pytest.Pytester) -> None:
    bench(pytester, scenarios=("Offline",), crash_after=2)  # killed in its bare loop, before LoadGen
    result = run(pytester, "-q")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*runner was killed by SIGKILL while Offline performance test*, calibrating "
                                 "(for * s; predicted about 0.6 s); runner log*"])
