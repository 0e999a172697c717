"""End to end on the CPU stand-in: the repository's own llama3_1-8b benchmark, real LoadGen, token latencies.

The benchmark's test function runs unchanged; only its marker is narrowed for CPU time (32 prompts, answers of at
most 32 tokens instead of 128): the tiny stand-in decodes a few hundred tokens/s on one thread, and Server and
SingleStream serve one request at a time, so full-length answers would take minutes. `pytest benchmarks/ -k llama`
runs the benchmark at MLPerf's settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("rouge_score")

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "test_llama3_1_8b.py"
SCENARIOS = ("Offline", "Server", "SingleStream")


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    (pytester.path / "benchmarks").mkdir()
    source = BENCHMARK.read_text()
    marker = 'pytest.mark.mlperf(workload="llama3_1-8b")'
    assert marker in source
    narrowed = 'pytest.mark.mlperf(workload="llama3_1-8b", total_count=32, sut_options={"max_new_tokens": 32})'
    (pytester.path / "benchmarks" / "test_llama3_1_8b.py").write_text(source.replace(marker, narrowed))
    return pytester


def cases(pytester: pytest.Pytester) -> dict[str, dict]:
    doc = json.loads((pytester.path / "mlperf-results" / "results.json").read_text())
    return {f"{c['key']['scenario']}-{c['key']['mode']}": c for c in doc["cases"]}


def test_three_scenarios_both_modes_then_outputs_equal_the_baseline(project: pytest.Pytester) -> None:
    args = ("-p", "no:cacheprovider", "benchmarks/", "-k", "llama", "--mlperf-duration=1s")
    result = project.runpytest_subprocess(*args, "--mlperf-mode=both", "--mlperf-update-baselines")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*llama3_1-8b Offline performance*tokens/s*"])
    got = cases(project)
    assert set(got) == {f"{s}-{m}" for s in SCENARIOS for m in ("performance", "accuracy")}
    for name, case in got.items():
        assert case["backend"]["backend"] == "transformers" and case["backend"]["device"] == "cpu", name
        assert case["backend"]["precision"] == "fp32" and case["test"]["use_token_latencies"] is True, name
        assert (Path(case["log_dir"]) / "mlperf_log_detail.txt").is_file(), name
    offline = got["Offline-performance"]
    assert offline["metrics"]["result_tokens_per_second"] > 0
    assert offline["run"]["token_headline"]["value"] > 0
    assert offline["schedule"]["batch_size"] == 8
    for scenario in ("Server", "SingleStream"):
        run = got[f"{scenario}-performance"]["run"]
        assert 0 < run["ttft_ns"]["p50"] <= run["ttft_ns"]["p99"], scenario
        assert 0 < run["tpot_ns"]["p50"] <= run["tpot_ns"]["p99"], scenario
        assert run["ttft_ns"]["p50"] < run["latency_ns"]["p50"], scenario  # the first token comes before the end
        metrics = got[f"{scenario}-performance"]["metrics"]
        assert metrics["result_first_token_99.00_percentile_latency_ns"] > 0, scenario
        assert metrics["result_time_per_output_token_99.00_percentile_ns"] > 0, scenario
    assert got["Server-performance"]["metrics"]["result_completed_tokens_per_second"] > 0
    for scenario in SCENARIOS:
        accuracy = got[f"{scenario}-accuracy"]["accuracy"]
        assert accuracy["samples"] == accuracy["gen_num"] == 32, scenario
        assert {"rouge1", "rouge2", "rougeL", "rougeLsum", "gen_len"} <= set(accuracy), scenario
        assert accuracy["tokens"] >= 2 * 32, scenario  # every answer has at least 2 tokens (LoadGen's TPOT)
    baselines = sorted((project.path / "baselines" / "llama3_1-8b").glob("*.json"))
    assert len(baselines) == 6
    recorded = json.loads(next(b for b in baselines if b.name.startswith("Offline-accuracy")).read_text())
    predictions = recorded["accuracy"]["predictions"]
    assert len(predictions) == 32 and all(isinstance(ids, list) and 2 <= len(ids) <= 32 for _, ids in predictions)

    # the same stand-in again, accuracy only: every sample's token ids equal the baseline's
    result = project.runpytest_subprocess(*args, "--mlperf-mode=accuracy", "--mlperf-require-baselines")
    result.assert_outcomes(passed=3)
    for name, case in cases(project).items():
        assert case["baseline_path"] and case["outputs_match"] is True and case["outcome"] == "passed", name
