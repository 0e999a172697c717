"""--mlperf-sut-option BACKEND.KEY=VALUE (and its ini twin): parsed up front, merged over a marker's sut_options for
cases on that backend, and visible in results.json. Real sessions against the null SUT, whose backend details say
the delays its runner was given, and the ONNX Runtime CPU stand-in end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_mlperf.host.pool.client import RunnerPool
from pytest_mlperf.host.pool.recipe import LaunchRecipe
from pytest_mlperf.host.driver.loadgen_driver import MlperfSession
from pytest_mlperf.host.driver.sut_handle import make_sut
from pytest_mlperf.host.settings import Settings, parse_sut_options
from pytest_mlperf.runner.backends.base import OPTION_NAMES

BENCH = """
import pytest
pytestmark = pytest.mark.mlperf(workload="null", scenarios=["Offline"], sut_options={options!r})

def test_null(null_sut, loadgen, baseline):
    run = loadgen.run(null_sut)
    run.assert_valid()
    baseline.assert_no_regression(run)
"""


def bench(pytester: pytest.Pytester, **options: object) -> None:
    pytester.makepyfile(test_bench=BENCH.format(options=options))


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--mlperf-duration=0.5s", *args)


def records(pytester: pytest.Pytester) -> list[dict]:
    return json.loads((pytester.path / "mlperf-results" / "results.json").read_text())["cases"]


def session_with(*entries: str) -> MlperfSession:
    values, sources = parse_sut_options([(e, "--mlperf-sut-option") for e in entries], OPTION_NAMES)
    return MlperfSession(settings=Settings(sut_options=values, sut_option_sources=sources), rootdir=Path("."))


# --- make_sut: what reaches the load request ---------------------------------------------------------------------


def test_command_line_wins_over_the_marker_for_its_backend_only() -> None:
    session = session_with("null.delay_ms=7", "onnxruntime.cuda_graph_max_batch=0")
    sut = make_sut(session, "null", {"sut_options": {"delay_ms": 1, "per_sample_ms": 2}})
    assert sut.load.options == {"delay_ms": "7", "per_sample_ms": 2}
    assert sut.options_record() == {
        "delay_ms": {"value": "7", "from": "--mlperf-sut-option, over the marker's 1"},
        "per_sample_ms": {"value": 2, "from": "marker"}}
    resnet = make_sut(session, "resnet50", {"sut_options": {"cuda_graph_max_batch": 8}})
    assert resnet.load.options == {"cuda_graph_max_batch": "0"}
    untouched = make_sut(session_with("onnxruntime.intra_op_threads=1"), "null", {"sut_options": {"delay_ms": 1}})
    assert untouched.load.options == {"delay_ms": 1} and untouched.options_record()["delay_ms"]["from"] == "marker"


def test_different_options_are_different_runners() -> None:
    # the pool keys a runner by its whole load request: a case must never reuse a runner loaded with other options
    pool = RunnerPool(Path("unused"))
    recipe = LaunchRecipe()
    marker = {"sut_options": {"delay_ms": 1}}
    plain = make_sut(session_with(), "null", marker).load
    changed = make_sut(session_with("null.delay_ms=2"), "null", marker).load
    same = make_sut(session_with("null.delay_ms=2"), "null", marker).load
    assert pool._key(recipe, plain) != pool._key(recipe, changed)
    assert pool._key(recipe, changed) == pool._key(recipe, same)


def test_tensor_parallel_size_for_a_run_sets_the_case_gpus() -> None:
    marker = {"backend": "vllm", "gpus": 1}
    assert make_sut(session_with("vllm.tensor_parallel_size=2"), "llama3_1-8b", marker).gpus == 2
    assert make_sut(session_with(), "llama3_1-8b", {**marker, "gpus": 4}).gpus == 4
    # a value that is not a GPU count is left to the backend, which refuses it naming the option
    assert make_sut(session_with("vllm.tensor_parallel_size=two"), "llama3_1-8b", marker).gpus == 1
    assert make_sut(session_with("vllm.tensor_parallel_size=2"), "llama3_1-8b", {}).gpus == 1  # transformers


# --- real sessions ------------------------------------------------------------------------------------------------


def test_command_line_option_reaches_the_runner_over_the_marker(pytester: pytest.Pytester) -> None:
    bench(pytester, delay_ms=1)
    result = run(pytester, "--mlperf-sut-option", "null.delay_ms=3", "--mlperf-sut-option", "null.per_sample_ms=0.5")
    result.assert_outcomes(passed=1)
    (record,) = records(pytester)
    assert record["backend"]["details"] == {"delay_ms": "3", "per_sample_ms": "0.5"}  # as the runner's backend has them
    assert record["sut_options"] == {
        "delay_ms": {"value": "3", "from": "--mlperf-sut-option, over the marker's 1"},
        "per_sample_ms": {"value": "0.5", "from": "--mlperf-sut-option"}}
    assert "sut option delay_ms='3' from --mlperf-sut-option, over the marker's 1" in record["notes"]
    result = run(pytester)  # without it, the marker's value
    (record,) = records(pytester)
    assert record["backend"]["details"]["delay_ms"] == "1"
    assert record["sut_options"] == {"delay_ms": {"value": 1, "from": "marker"}}


def test_ini_twin_is_merged_with_the_command_line_which_wins_per_key(pytester: pytest.Pytester) -> None:
    bench(pytester)
    pytester.makeini("[pytest]\nmlperf_sut_option =\n    null.delay_ms=2\n    null.per_sample_ms=0.25\n")
    run(pytester).assert_outcomes(passed=1)
    (record,) = records(pytester)
    assert record["backend"]["details"] == {"delay_ms": "2", "per_sample_ms": "0.25"}
    assert record["sut_options"]["delay_ms"]["from"] == "ini mlperf_sut_option"
    run(pytester, "--mlperf-sut-option=null.delay_ms=4").assert_outcomes(passed=1)
    (record,) = records(pytester)
    assert record["backend"]["details"] == {"delay_ms": "4", "per_sample_ms": "0.25"}
    assert record["sut_options"]["delay_ms"] == {"value": "4", "from": "--mlperf-sut-option"}


def test_options_of_another_backend_leave_the_case_alone(pytester: pytest.Pytester) -> None:
    bench(pytester, delay_ms=2)
    run(pytester, "--mlperf-sut-option", "vllm.max_model_len=4096").assert_outcomes(passed=1)
    (record,) = records(pytester)
    assert record["backend"]["details"]["delay_ms"] == "2"
    assert record["sut_options"] == {"delay_ms": {"value": 2, "from": "marker"}}


@pytest.mark.parametrize("entry, message", [
    ("delay_ms=5", ("*bad --mlperf-sut-option 'delay_ms=5': write BACKEND.KEY=VALUE*(backends: onnxruntime, "
                    "transformers, vllm, null, torch-probe)")),
    ("null.delay_ms", "*bad --mlperf-sut-option 'null.delay_ms': write BACKEND.KEY=VALUE*"),
    ("nul.delay_ms=5", "*unknown backend 'nul'; known backends are onnxruntime, transformers, vllm, null, torch-probe*"),
    ("vllm.max_model_length=4096", "*the vllm backend has no option 'max_model_length'; its options are *max_model_len*"),
])
def test_malformed_entries_are_usage_errors(pytester: pytest.Pytester, entry: str, message: str) -> None:
    bench(pytester)
    result = pytester.runpytest("--mlperf-sut-option", entry)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_malformed_ini_entry_names_the_ini_key(pytester: pytest.Pytester) -> None:
    bench(pytester)
    pytester.makeini("[pytest]\nmlperf_sut_option = null:delay_ms=5\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*bad ini mlperf_sut_option 'null:delay_ms=5': write BACKEND.KEY=VALUE*"])


def test_a_value_the_backend_refuses_fails_the_case_naming_the_option_and_its_source(pytester: pytest.Pytester) -> None:
    bench(pytester, per_sample_ms=0)
    result = run(pytester, "--mlperf-sut-option", "null.delay_ms=slow")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*could not start the null runner*",
                                 "*null options given: per_sample_ms=0 (marker), delay_ms='slow' (--mlperf-sut-option)*"])
    (record,) = records(pytester)
    assert record["outcome"] == "failed" and record["sut_options"]["delay_ms"]["value"] == "slow"


def test_a_baseline_recorded_with_other_options_says_so(pytester: pytest.Pytester) -> None:
    bench(pytester, delay_ms=2)
    run(pytester, "--mlperf-update-baselines", "--mlperf-baseline-repeats=1").assert_outcomes(passed=1)
    (path,) = sorted((pytester.path / "baselines").rglob("*.json"))
    assert json.loads(path.read_text())["system"]["sut_options"] == {"delay_ms": "2"}
    run(pytester, "--mlperf-tolerance=90%").assert_outcomes(passed=1)
    (record,) = records(pytester)
    assert not [n for n in record["notes"] if "backend options differ" in n]  # the marker's 2 is the same option
    run(pytester, "--mlperf-tolerance=90%", "--mlperf-sut-option", "null.delay_ms=2.5").assert_outcomes(passed=1)
    (record,) = records(pytester)
    assert "backend options differ from the baseline's (delay_ms: 2 -> 2.5): the comparison is across options" \
        in record["notes"]


# --- end to end on the ONNX Runtime CPU stand-in --------------------------------------------------------------------


def test_onnxruntime_option_reaches_the_session_on_the_cpu_stand_in(resnet50_project: pytest.Pytester) -> None:
    pytest.importorskip("onnxruntime")
    result = resnet50_project.runpytest_subprocess(
        "-p", "no:cacheprovider", "benchmarks/", "-k", "latency", "--mlperf-scenario=SingleStream",
        "--mlperf-duration=0.5s", "--mlperf-sut-option", "onnxruntime.intra_op_threads=1",
        "--mlperf-sut-option", "onnxruntime.cuda_graph_max_batch=0")
    result.assert_outcomes(passed=1)
    (record,) = records(resnet50_project)
    assert record["backend"]["backend"] == "onnxruntime" and record["backend"]["device"] == "cpu"
    assert record["backend"]["details"]["intra_op_threads"] == "1"  # read back from the runner's ORT session
    assert record["sut_options"] == {
        "cuda_graph_max_batch": {"value": "0", "from": "--mlperf-sut-option, over the marker's 8"},
        "intra_op_threads": {"value": "1", "from": "--mlperf-sut-option"}}
