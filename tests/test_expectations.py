"""What the runner tells LoadGen to expect from a calibration: the safe direction, user values kept."""

from __future__ import annotations

import pytest

from pytest_mlperf.contract.test_request import TestRequest
from pytest_mlperf.runner.calibrate import (LOADGEN_BYTES_PER_SAMPLE, Measurement, available_memory,
                                            generated_samples, predicted_duration, query_size_problem)
from pytest_mlperf.runner.strategies.batching_setup import expectations
from pytest_mlperf.contract.protocol import RunRequest

BATCH = Measurement(batch_size=8, streams=1, samples_per_s=100.0, batch_latency_p50_s=0.08, batch_latency_p90_s=0.1,
                    batches=10)
SINGLE = Measurement(batch_size=1, streams=1, samples_per_s=40.0, batch_latency_p50_s=0.025,
                     batch_latency_p90_s=0.03, batches=10)


def request(scenario: str, margin: float = 1.5, **test: object) -> RunRequest:
    t = TestRequest(loadgen_model="resnet50", scenario=scenario, mode="performance", log_dir="x",
                    total_sample_count=64, **test)  # type: ignore[arg-type]
    return RunRequest(test=t, batch_size=8, expectation_margin=margin, server_latency_floor_factor=8.0,
                      official_server_latency_ns=15_000_000)


def test_offline_expects_more_throughput_than_measured() -> None:
    t, _ = expectations(request("Offline"), BATCH, SINGLE)
    assert t.offline_expected_qps == pytest.approx(150.0)  # more work: the run can only get longer


@pytest.mark.parametrize("scenario, field", [("SingleStream", "single_stream_expected_latency_ns"),
                                             ("MultiStream", "multi_stream_expected_latency_ns")])
def test_stream_scenarios_expect_lower_latency_than_measured(scenario: str, field: str) -> None:
    t, _ = expectations(request(scenario), BATCH, SINGLE)
    assert getattr(t, field) == int(0.08 * 1e9 / 1.5)  # more queries generated: never runs out before min duration


def test_values_the_user_set_are_kept() -> None:
    t, _ = expectations(request("Offline", offline_expected_qps=7.0), BATCH, SINGLE)
    assert t.offline_expected_qps == 7.0


def test_server_bound_relaxed_to_the_floor_and_load_is_half_the_throughput() -> None:
    t, max_wait = expectations(request("Server"), BATCH, SINGLE)
    assert t.server_target_latency_ns == int(8.0 * 0.03 * 1e9)  # 240 ms > the official 15 ms on this "CPU"
    assert t.server_target_qps == pytest.approx(50.0)
    assert max_wait == pytest.approx(0.024)


def test_server_keeps_a_fixed_target_qps_from_the_baseline() -> None:
    t, _ = expectations(request("Server", server_target_qps=12.5), BATCH, SINGLE)
    assert t.server_target_qps == 12.5


# --------------------------------------------------------------------------- predicted duration


def _t(scenario: str, mode: str = "performance", **kw: object) -> TestRequest:
    return TestRequest("resnet50", scenario, mode, "/tmp/x", 1024, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("test", "seconds", "why"), [
    (_t("Server", min_duration_ms=10_000, min_query_count=100, server_target_qps=0.26), 384.6, "100 queries at 0.26 QPS"),
    (_t("Server", min_duration_ms=10_000, min_query_count=100, server_target_qps=50.0), 10.0, "the minimum duration"),
    (_t("SingleStream", min_duration_ms=10_000, min_query_count=100, single_stream_expected_latency_ns=1_900_000_000),
     190.0, "100 queries of about 1.9e+03 ms each"),
    (_t("MultiStream", min_duration_ms=1_000, min_query_count=100, multi_stream_expected_latency_ns=50_000_000),
     5.0, "100 queries of about 50 ms each"),
    # LoadGen's one query: the minimum duration's worth with its 10% slack (not "1 samples at ... take less")
    (_t("Offline", min_duration_ms=10_000, min_query_count=1, offline_expected_qps=6.0), 11.0,
     "66 samples at 6 samples/s"),
    # the LLMs: whole passes over the loaded samples (H200 vllm: 586 planned, 768 issued over 256 loaded)
    (TestRequest("llama3_1-8b", "Offline", "performance", "/tmp/x", 256, min_duration_ms=10_000, min_query_count=1,
                 offline_expected_qps=53.28, sample_concatenate_permutation=True), 14.41,
     "768 samples at 53.3 samples/s (whole passes over the loaded samples)"),
    (_t("Offline", min_duration_ms=600_000, min_query_count=24576, offline_expected_qps=10.0), 2457.6,
     "24576 samples at 10 samples/s"),
    (_t("Offline", "accuracy", accuracy_sample_count=256, offline_expected_qps=6.0), 42.7, "256 accuracy samples"),
    (_t("Server", "accuracy", server_target_qps=2.0), 512.0, "1024 accuracy samples at 2 QPS"),
])
def test_predicted_duration(test: TestRequest, seconds: float, why: str) -> None:
    predicted = predicted_duration(test)
    assert predicted is not None
    assert predicted[0] == pytest.approx(seconds, rel=1e-3) and why in predicted[1]


def test_no_prediction_without_settings_or_expectations() -> None:
    assert predicted_duration(_t("Server", server_target_qps=2.0)) is None  # mlperf.conf's minimums
    assert predicted_duration(_t("Server", min_duration_ms=1000, min_query_count=10)) is None  # no target yet
    assert predicted_duration(_t("Offline", "accuracy")) is None


# --------------------------------------------------------------------------- what a test may ask LoadGen for


@pytest.mark.parametrize(("test", "samples"), [
    # Offline: one query of max(min_query_count, 1.1 x duration x expected QPS) (LoadGen's kSlack)
    (_t("Offline", min_duration_ms=1_500, min_query_count=1, offline_expected_qps=4e7), 66_000_000),
    (_t("Offline", min_duration_ms=1_000, min_query_count=24576, offline_expected_qps=10.0), 24576),
    # Server: a query of one sample per target interval over the duration
    (_t("Server", min_duration_ms=10_000, min_query_count=100, server_target_qps=500.0), 5000),
    (_t("Server", min_duration_ms=10_000, min_query_count=100, server_target_qps=2.0), 100),
    # SingleStream and MultiStream: queries for twice the duration
    (_t("SingleStream", min_duration_ms=1_000, min_query_count=64, single_stream_expected_latency_ns=1_000_000),
     2000),
    (_t("MultiStream", min_duration_ms=1_000, min_query_count=16, multi_stream_expected_latency_ns=10_000_000,
        multi_stream_samples_per_query=8), 1600),
    (_t("Offline", "accuracy", accuracy_sample_count=256), 256),
    (TestRequest("llama3_1-8b", "Offline", "performance", "/tmp/x", 256, min_duration_ms=10_000, min_query_count=1,
                 offline_expected_qps=0.881, sample_concatenate_permutation=True), 256),  # H200 transformers: 9 -> 256
])
def test_generated_samples_follow_loadgen(test: TestRequest, samples: int) -> None:
    planned = generated_samples(test)
    assert planned is not None and planned[0] == samples


def test_the_null_sut_at_a_huge_batch_is_refused_saying_why_and_what_to_change() -> None:
    # the case: a bare loop of batches of 100000 repeated samples predicted 40 million samples/s
    t = _t("Offline", min_duration_ms=1_500, min_query_count=1, offline_expected_qps=4e7)
    problem = query_size_problem(t, available_bytes=64 * 2**30)
    assert problem is not None
    assert "expects 4e+07 samples/s" in problem and "--mlperf-batch-size" in problem and "user-conf" in problem


def test_a_test_whose_queries_outgrow_the_memory_is_refused() -> None:
    t = _t("Server", min_duration_ms=600_000, min_query_count=100, server_target_qps=50_000.0)  # 30 million queries
    needed = 30_000_000 * LOADGEN_BYTES_PER_SAMPLE
    problem = query_size_problem(t, available_bytes=needed)  # more than half of what is available
    assert problem is not None and "30,000,000 samples" in problem and "--mlperf-duration" in problem
    assert query_size_problem(t, available_bytes=3 * needed) is None
    assert query_size_problem(t, available_bytes=None) is None  # nothing known: LoadGen decides


def test_ordinary_tests_are_not_refused() -> None:
    # an official ResNet50 Offline run of an H100 (about 19 GiB of queries) on a host with 64 GiB available
    for t in (_t("Offline", min_duration_ms=600_000, min_query_count=24576, offline_expected_qps=90_000.0),
              _t("SingleStream", min_duration_ms=1_500, min_query_count=64, single_stream_expected_latency_ns=50_000),
              _t("Offline", "accuracy", offline_expected_qps=5e7)):  # accuracy: each sample once, whatever expected
        assert query_size_problem(t, available_bytes=64 * 2**30) is None


def test_available_memory_is_the_lower_of_the_kernel_and_the_cgroup(tmp_path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemAvailable:   20000000 kB\n")
    cgroup = tmp_path / "cg"
    cgroup.mkdir()
    assert available_memory(meminfo, cgroup) == 20_000_000 * 1024
    (cgroup / "memory.max").write_text("8000000000\n")
    (cgroup / "memory.current").write_text("3000000000\n")
    assert available_memory(meminfo, cgroup) == 5_000_000_000
    (cgroup / "memory.max").write_text("max\n")
    assert available_memory(meminfo, cgroup) == 20_000_000 * 1024
    assert available_memory(tmp_path / "none", tmp_path / "none") is None


def test_one_server_target_formula_for_batching_and_generation() -> None:
    """The batch harness and the token harness ask LoadGen for the same target from the same capacity (issue 15:
    there were two formulas): a load fraction of what all the run's streams measured together."""
    from pytest_mlperf.runner.calibrate import server_expectations
    from pytest_mlperf.runner.strategies.generation_setup import generation_expectations
    from pytest_mlperf.runner.strategies.generation import GenerationMeasurement

    req = request("Server")
    batching, _ = expectations(req, BATCH, SINGLE)
    assert batching.server_target_qps == pytest.approx(req.server_load_fraction * 100.0)
    one_stream = GenerationMeasurement(**{**{f: 0 for f in GenerationMeasurement.__dataclass_fields__},
                                          "samples_per_s": 25.0, "batch_latency_p50_s": 0.04})
    generation = generation_expectations(req, one_stream, streams=4)
    assert generation.server_target_qps == pytest.approx(batching.server_target_qps)  # 4 streams of 25 = 100
    assert server_expectations(req.test, 0.5, 100.0).server_target_qps == 50.0
    kept = request("Server", server_target_qps=7.0).test
    assert server_expectations(kept, 0.5, 100.0).server_target_qps == 7.0  # a target already set stays
    assert server_expectations(request("Offline").test, 0.5, 100.0) == request("Offline").test
