"""The token harness (runner/strategies/generation.py) and the runner's LLM setup (runner/strategies/generation_setup.py) with a fake backend:
order of first token and completion, token counts, threads, failures; then through real LoadGen."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pytest

pytest.importorskip("mlperf_loadgen")

from pytest_mlperf.contract.test_request import TestRequest  # noqa: E402
from pytest_mlperf.runner.loadgen import Responder, run_test  # noqa: E402
from pytest_mlperf.contract.loadgen_log import read_accuracy_log, read_run  # noqa: E402
from pytest_mlperf.runner.calibrate import CalibrationError  # noqa: E402
from pytest_mlperf.contract.protocol import RunRequest  # noqa: E402
from pytest_mlperf.runner.staging import Stager  # noqa: E402
from pytest_mlperf.runner.strategies.generation_setup import generation_batch, prepare_generation  # noqa: E402
from pytest_mlperf.runner.backends.base import BackendInfo  # noqa: E402
from pytest_mlperf.runner.strategies.generation import (  # noqa: E402
    GenerationConfig,
    GenerationHarness,
    measure_batches,
    measure_streams,
)

TestRequest.__test__ = False  # type: ignore[attr-defined]


def answer(index: int) -> np.ndarray:
    """The fake model's answer to prompt `index`: 2 to 6 tokens, all derived from the index."""
    return np.arange(index * 10, index * 10 + 2 + index % 5, dtype=np.int32)


class FakeBackend:
    streams_tokens = True

    def __init__(self, delay_s: float = 0.0, fail_on: int | None = None, short_on: int | None = None,
                 fail_after_first: bool = False) -> None:
        self.info = BackendInfo("fake", "cpu", "none")
        self.delay_s = delay_s
        self.fail_on, self.short_on, self.fail_after_first = fail_on, short_on, fail_after_first
        self.staged: list[int] = []
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.lock = threading.Lock()

    def stage(self, indices: Sequence[int], samples: Sequence[object]) -> None:
        assert list(samples) == [f"prompt {i}" for i in indices]
        self.staged = list(indices)

    def _answer(self, index: int) -> np.ndarray:
        if index not in self.staged:
            raise KeyError(f"sample {index} was not loaded")
        if index == self.fail_on:
            raise RuntimeError(f"model failed on sample {index}")
        return answer(index)[:1] if index == self.short_on else answer(index)

    def generate_batch(self, indices: Sequence[int]) -> list[np.ndarray]:
        with self.lock:
            self.batches.append(list(indices))
            self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        return [self._answer(i) for i in indices]

    def generate_stream(self, index: int, on_first_token: Callable[[np.ndarray], None]) -> np.ndarray:
        with self.lock:
            self.threads.add(threading.current_thread().name)
        tokens = self._answer(index)
        on_first_token(tokens[:1])
        if self.fail_after_first:
            raise RuntimeError("failed after the first token")
        time.sleep(self.delay_s)
        return tokens

    def close(self) -> None:
        pass


class Prompts:
    def __init__(self, count: int) -> None:
        self.total_count = count
        self.description = f"{count} fake prompts"

    def load(self, indices: Sequence[int]) -> np.ndarray:
        return np.array([f"prompt {i}" for i in indices], dtype=object)

    def accuracy(self, outputs):  # pragma: no cover - not used here
        return {}


class RecordingResponder(Responder):
    """Records what the harness reports instead of calling LoadGen."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, list[int]]] = []
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.expected = 0

    def _add(self, kind: str, sample_id: int, tokens: Sequence[int]) -> None:
        with self.lock:
            self.events.append((kind, sample_id, [int(t) for t in tokens]))
            if sum(k != "first" for k, _, _ in self.events) == self.expected:
                self.done.set()

    def first_token(self, sample_id: int, token_ids: np.ndarray) -> None:
        self._add("first", sample_id, token_ids)

    def complete_tokens(self, sample_id: int, token_ids: np.ndarray) -> None:
        if len(token_ids) < 2:
            raise ValueError("fewer than 2 tokens")  # as the real Responder refuses them
        self._add("complete", sample_id, token_ids)

    def complete_empty(self, ids: Sequence[int]) -> None:
        for i in ids:
            self._add("empty", i, [])


def serve(scenario: str, backend: FakeBackend, samples: list[tuple[int, int]], batch: int = 1,
          streams: int = 1) -> tuple[GenerationHarness, RecordingResponder]:
    harness = GenerationHarness(backend, Stager(backend, Prompts(32)).stage, GenerationConfig(scenario, batch, streams))
    responder = RecordingResponder()
    responder.expected = len(samples)
    try:
        harness.load(sorted({idx for _, idx in samples}))
        harness.issue(samples, responder)
        assert responder.done.wait(10), responder.events
    finally:
        harness.close()
    return harness, responder


def ids_to(samples: Sequence[int]) -> list[tuple[int, int]]:
    return [(1000 + i, i) for i in samples]  # response id, QSL index


def test_offline_batches_prompts_and_completes_each_sample_with_its_tokens() -> None:
    backend = FakeBackend(delay_s=0.01)
    harness, responder = serve("Offline", backend, ids_to(range(10)), batch=4, streams=2)
    assert harness.error is None
    assert sorted(backend.batches) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert len(backend.threads) == 2 and all(t.startswith("mlperf-generate") for t in backend.threads)
    assert all(kind == "complete" for kind, _, _ in responder.events)  # Offline reports no first token
    assert {i: t for _, i, t in responder.events} == {1000 + i: answer(i).tolist() for i in range(10)}


@pytest.mark.parametrize("scenario", ["Server", "SingleStream"])
def test_streaming_reports_the_first_token_then_all_tokens(scenario: str) -> None:
    backend = FakeBackend()
    harness, responder = serve(scenario, backend, ids_to(range(6)), streams=2)
    assert harness.error is None
    for i in range(6):
        mine = [(kind, tokens) for kind, sid, tokens in responder.events if sid == 1000 + i]
        assert mine == [("first", answer(i)[:1].tolist()), ("complete", answer(i).tolist())]
        assert len(mine[1][1]) >= 2
    if scenario == "SingleStream":  # inline on the caller's (LoadGen's issue) thread
        assert backend.threads == {threading.current_thread().name}
    else:
        assert backend.threads and all(t.startswith("mlperf-generate") for t in backend.threads)


def test_a_failing_batch_is_kept_and_its_samples_completed_empty() -> None:
    backend = FakeBackend(fail_on=5)
    harness, responder = serve("Offline", backend, ids_to(range(8)), batch=4)
    assert harness.error is not None and "model failed on sample 5" in harness.error
    assert "Traceback" in harness.error
    kinds = {sid - 1000: kind for kind, sid, _ in responder.events}
    assert kinds == {**{i: "complete" for i in range(4)}, **{i: "empty" for i in range(4, 8)}}


def test_a_one_token_answer_is_an_error_not_a_silent_sample() -> None:
    harness, responder = serve("Offline", FakeBackend(short_on=2), ids_to(range(4)), batch=4)
    assert harness.error is not None and "fewer than 2 tokens" in harness.error
    kinds = {sid - 1000: kind for kind, sid, _ in responder.events}
    assert kinds == {0: "complete", 1: "complete", 2: "empty", 3: "empty"}  # each sample completed once


@pytest.mark.parametrize("scenario", ["Server", "SingleStream"])
def test_a_stream_failing_after_its_first_token_completes_empty(scenario: str) -> None:
    harness, responder = serve(scenario, FakeBackend(fail_after_first=True), ids_to([3]))
    assert harness.error is not None and "failed after the first token" in harness.error
    assert [kind for kind, _, _ in responder.events] == ["first", "empty"]


def test_unsupported_scenario_is_refused() -> None:
    with pytest.raises(ValueError, match="MultiStream"):
        backend = FakeBackend()
        GenerationHarness(backend, Stager(backend, Prompts(4)).stage, GenerationConfig("MultiStream"))


def test_bare_loops_count_samples_tokens_and_first_tokens() -> None:
    backend = FakeBackend(delay_s=0.005)
    backend.stage(range(8), [f"prompt {i}" for i in range(8)])
    m = measure_batches(backend, list(range(8)), 4, 2, 0.05)
    assert m.batches >= 2 and m.samples_per_s > 0 and m.tokens_per_s > m.samples_per_s * 1.9
    assert m.batch_size == 4 and m.streams == 2 and m.ttft_p50_s is None
    s = measure_streams(backend, list(range(8)), 0.0, min_requests=3)
    assert s.batches == 3 and s.batch_size == 1 and s.ttft_p50_s is not None
    assert s.ttft_p50_s <= s.batch_latency_p50_s


def test_batched_calibration_leaves_each_streams_first_batch_out_of_the_rate() -> None:
    """The H200's transformers calibration measured one batch at 10.9 s where LoadGen's then took 2.8 s: a rate
    from a first batch that pays one-off costs. The fake's first batch on each thread is 20x slower."""
    class FirstBatchSlow(FakeBackend):
        def __init__(self) -> None:
            super().__init__()
            self.seen: set[int] = set()

        def generate_batch(self, indices: Sequence[int]) -> list[np.ndarray]:
            me = threading.get_ident()
            time.sleep(0.01 if me in self.seen else 0.2)
            self.seen.add(me)
            return super().generate_batch(indices)

    backend = FirstBatchSlow()
    backend.stage(range(8), [f"prompt {i}" for i in range(8)])
    for streams in (1, 2):
        backend.seen.clear()
        m = measure_batches(backend, list(range(8)), 4, streams, 0.0)  # no time asked for: the minimum batches
        assert m.batches == 3 * streams  # two, and one to see the second's time hold, though the deadline had passed
        assert m.settled
        assert m.first_batch_s is not None and m.first_batch_s >= 0.2
        assert m.batch_latency_p90_s < 0.1  # the slow first batches are not in the latencies...
        assert m.samples_per_s > streams * 4 / 0.1  # ...nor in the rate (with them: under 4 / 0.21 a stream)


def test_a_streams_warm_up_ends_where_its_batches_stop_getting_faster() -> None:
    from pytest_mlperf.runner.strategies.generation import is_settled, settled_from

    assert settled_from([9.1, 5.7, 2.8, 2.8, 2.9]) == 2  # the H200's transformers calibration, had it gone on
    assert settled_from([9.1, 5.7]) == 1
    assert settled_from([3.0]) == 0 and settled_from([1.0, 1.05, 0.95]) == 0  # nothing warming up
    assert settled_from([5.0, 1.0, 1.1, 0.95]) == 1  # noise within 20% is no warm-up
    assert settled_from([5.0, 1.0, 1.3, 0.9]) == 3  # over 20% faster than the one before: still warming up
    assert not is_settled([9.1, 5.7]) and is_settled([5.7, 5.0]) and is_settled([2.8, 3.5]) and not is_settled([1.0])


class Warming(FakeBackend):
    """Each thread's batches take `durations` in turn (the last one from then on)."""

    def __init__(self, durations: Sequence[float]) -> None:
        super().__init__()
        self.durations = list(durations)
        self.calls: dict[int, int] = {}

    def generate_batch(self, indices: Sequence[int]) -> list[np.ndarray]:
        me = threading.get_ident()
        n = self.calls.get(me, 0)
        self.calls[me] = n + 1
        time.sleep(self.durations[min(n, len(self.durations) - 1)])
        return super().generate_batch(indices)


def test_batched_calibration_goes_on_until_its_batches_stop_getting_faster() -> None:
    """The H200 pattern: the transformers backend's calibration batches took 9.1 s then 5.7 s, LoadGen's then
    2.8 s; two batches (the first left out) gave half the real rate. The fake's batches halve three times."""
    backend = Warming([0.32, 0.16, 0.08, 0.04])
    backend.stage(range(8), [f"prompt {i}" for i in range(8)])
    m = measure_batches(backend, list(range(8)), 4, 1, 0.0)
    assert m.batches == 5 and m.settled  # 0.04 s twice: settled
    assert m.samples_per_s > 4 / 0.06  # from the settled batches: about 4 / 0.04 (from all but the first: 4 / 0.07)
    assert m.batch_latency_p90_s < 0.06 and m.first_batch_s is not None and m.first_batch_s >= 0.32


def test_batched_calibration_says_when_it_stopped_still_warming_up() -> None:
    from pytest_mlperf.runner.strategies.generation import SETTLE_BATCHES

    backend = Warming([0.256 / 2 ** k for k in range(SETTLE_BATCHES + 2)])  # faster by half every batch
    backend.stage(range(8), [f"prompt {i}" for i in range(8)])
    m = measure_batches(backend, list(range(8)), 4, 1, 0.0)
    assert m.batches == SETTLE_BATCHES and m.settled is False


def test_streamed_calibration_goes_on_until_its_requests_stop_getting_faster() -> None:
    """SingleStream's calibration on the H200's transformers 1B case predicted 5.77 s a query from 3 requests, the
    batched loop beside it still warming up: the streamed loop settles by the same rule."""
    from pytest_mlperf.runner.strategies.generation import SETTLE_BATCHES, measure_sequential_requests

    def requests(durations: list[float]):  # noqa: ANN202 - a Request
        seen: list[int] = []

        def request(index: int) -> tuple[float, int, float | None]:
            d = durations[min(len(seen), len(durations) - 1)]
            seen.append(index)
            time.sleep(d)
            return d, 16, d / 4
        return request

    m = measure_sequential_requests(requests([0.16, 0.08, 0.04, 0.02]), list(range(8)), 0.0, min_requests=3)
    assert m.batches == 5 and m.settled  # 0.02 s twice: settled; the three before it were warming up
    assert m.batch_latency_p90_s == pytest.approx(0.02) and m.ttft_p50_s == pytest.approx(0.005)
    assert m.samples_per_s > 1 / 0.03  # from the settled requests: about 1 / 0.02 (from all: 1 / 0.064)
    steady = measure_sequential_requests(requests([0.02]), list(range(8)), 0.0, min_requests=3)
    assert steady.batches == 3 and steady.settled  # nothing warming up: the minimum, all of them counted
    still = measure_sequential_requests(requests([0.128 / 2 ** k for k in range(8)]), list(range(8)), 0.0)
    assert still.batches == SETTLE_BATCHES and still.settled is False


def test_batch_summary_sums_the_streams_warm_rates() -> None:
    from pytest_mlperf.runner.strategies.generation import summarize_batches

    one = [(0.0, 5.0, 40), (5.0, 6.0, 40), (6.0, 7.0, 40)]  # a slow first batch, then 1 s batches of 8 samples
    m = summarize_batches(8, [one, one])
    assert m.samples_per_s == pytest.approx(2 * 8 * 2 / 2.0) and m.tokens_per_s == pytest.approx(2 * 80 / 2.0)
    assert m.first_batch_s == 5.0 and m.batch_latency_p50_s == pytest.approx(1.0) and m.batches == 6
    single = summarize_batches(8, [[(0.0, 2.0, 16)]])  # one batch: all there is
    assert single.samples_per_s == pytest.approx(4.0) and single.first_batch_s == 2.0


def run_request(tmp_path: Path, scenario: str, mode: str = "performance", **test: object) -> RunRequest:
    t = TestRequest("llama3_1-8b", scenario, mode, str(tmp_path / f"{scenario}-{mode}"), 32,
                    performance_sample_count=16, min_duration_ms=100, min_query_count=16 if scenario != "Offline" else 1,
                    accuracy_sample_count=16, **test)  # type: ignore[arg-type]
    return RunRequest(test=t, batch_size=4, streams=2, calibrate=True, calibrate_seconds=0.05)


def test_calibration_sets_what_loadgen_expects_per_scenario(tmp_path: Path) -> None:
    backend = FakeBackend(delay_s=0.01)
    expected = {"Offline": "offline_expected_qps", "Server": "server_target_qps",
                "SingleStream": "single_stream_expected_latency_ns"}
    for scenario, field in expected.items():
        req = run_request(tmp_path, scenario)
        test, harness, calibration, schedule = prepare_generation(req, backend, Stager(backend, Prompts(32)))
        harness.close()
        assert test.use_token_latencies is True
        assert getattr(test, field) and getattr(test, field) > 0, scenario
        assert calibration is not None and calibration["bare"]["samples_per_s"] > 0
        assert (schedule["batch_size"], schedule["streams"]) == generation_batch(req)
    assert generation_batch(run_request(tmp_path, "Server")) == (1, 2)
    assert generation_batch(run_request(tmp_path, "SingleStream")) == (1, 1)
    fixed = run_request(tmp_path, "Server", server_target_qps=3.0)
    test, harness, _, _ = prepare_generation(fixed, backend, Stager(backend, Prompts(32)))  # a baseline's load is kept
    harness.close()
    assert test.server_target_qps == 3.0


def test_expectations_err_towards_more_work_by_the_margin(tmp_path: Path) -> None:
    from dataclasses import replace

    from pytest_mlperf.runner.strategies.generation_setup import generation_expectations
    from pytest_mlperf.runner.strategies.generation import GenerationMeasurement

    m = GenerationMeasurement(batch_size=4, streams=1, samples_per_s=10.0, tokens_per_s=500.0,
                              batch_latency_p50_s=0.2, batch_latency_p90_s=0.3, batches=3)
    margin = 1.5
    off = generation_expectations(replace(run_request(tmp_path, "Offline"), expectation_margin=margin), m, 1)
    assert off.offline_expected_qps == pytest.approx(15.0)
    ss = generation_expectations(replace(run_request(tmp_path, "SingleStream"), expectation_margin=margin), m, 1)
    assert ss.single_stream_expected_latency_ns == int(0.2 * 1e9 / 1.5)
    srv = generation_expectations(replace(run_request(tmp_path, "Server"), expectation_margin=margin), m, 2)
    assert srv.server_target_qps == pytest.approx(0.5 * 2 * 10.0)  # a load level: no margin


def test_calibration_failure_names_the_warm_up(tmp_path: Path) -> None:
    failing = FakeBackend(fail_on=0)
    with pytest.raises(CalibrationError, match="warm-up/calibration"):
        prepare_generation(run_request(tmp_path, "Offline"), failing, Stager(failing, Prompts(32)))


@pytest.mark.parametrize("scenario", ["Offline", "Server", "SingleStream"])
def test_through_loadgen_token_metrics_and_accuracy_log(tmp_path: Path, scenario: str) -> None:
    backend = FakeBackend(delay_s=0.001)
    test, harness, _, _ = prepare_generation(run_request(tmp_path, scenario), backend, Stager(backend, Prompts(32)))
    try:
        run_test(test, harness)
    finally:
        harness.close()
    assert harness.error is None
    run = read_run(test.log_dir)
    assert not run.errors
    assert run.token_headline is not None and run.token_headline.value > 0
    if scenario == "SingleStream":  # the checker's end-to-end p90, not the TTFT estimate early_stopping_latency_ss
        assert run.headline is not None and run.headline.metric == "result_90.00_percentile_latency_ns"
    if scenario != "Offline":
        assert run.ttft_ns is not None and run.ttft_ns.p99 and run.ttft_ns.p99 > 0
        assert run.tpot_ns is not None and run.tpot_ns.p99 and run.tpot_ns.p99 > 0

    test, harness, _, _ = prepare_generation(run_request(tmp_path, scenario, "accuracy"), backend, Stager(backend, Prompts(32)))
    try:
        run_test(test, harness)
    finally:
        harness.close()
    entries = read_accuracy_log(Path(test.log_dir) / "mlperf_log_accuracy.json")
    assert len(entries) == 16
    for e in entries:  # int32 token ids, exactly the model's answer
        assert np.frombuffer(e.data, dtype="<i4").tolist() == answer(e.qsl_idx).tolist()


def test_through_loadgen_a_failure_ends_the_test_and_is_reported(tmp_path: Path) -> None:
    backend = FakeBackend(fail_after_first=True)
    test, harness, _, _ = prepare_generation(replace_calibrate(run_request(tmp_path, "Server")), backend, Stager(backend, Prompts(32)))
    try:
        run_test(test, harness)  # returns: every sample was completed (empty), LoadGen is not left hanging
    finally:
        harness.close()
    assert harness.error is not None and "failed after the first token" in harness.error


def replace_calibrate(req: RunRequest) -> RunRequest:
    from dataclasses import replace

    return replace(req, calibrate=False, test=replace(req.test, server_target_qps=200.0))


def test_baseline_check_compares_token_lists_and_shortens_them_in_messages() -> None:
    from types import SimpleNamespace

    from pytest_mlperf.host.baselines.check import BaselineCheck

    check = BaselineCheck(None, None, 0.05)  # type: ignore[arg-type]
    long = list(range(20))
    baseline = SimpleNamespace(accuracy={"predictions": [[0, [5, 6]], [1, long]]}, system={})
    same = SimpleNamespace(accuracy={"predictions": [[0, [5, 6]], [1, long]]}, outputs_match=None, backend={})
    assert check._accuracy_problems(same, baseline) == [] and same.outputs_match is True  # type: ignore[arg-type]
    other = SimpleNamespace(accuracy={"predictions": [[0, [5, 6]], [1, long[:-1]]]}, outputs_match=None, backend={})
    problems = check._accuracy_problems(other, baseline)  # type: ignore[arg-type]
    assert other.outputs_match is False and len(problems) == 1
    assert "on 1 of 2 samples" in problems[0] and "(20 tokens)" in problems[0] and "(19 tokens)" in problems[0]


class LengthBackend(FakeBackend):
    """Reports prompt lengths: prompt i has (i * 7) % 64 tokens, so the longest are not the first."""

    def prompt_length(self, index: int) -> int:
        return (index * 7) % 64


@pytest.mark.parametrize("scenario", ["Offline", "SingleStream"])
def test_warm_up_runs_on_the_longest_staged_prompts(tmp_path: Path, scenario: str) -> None:
    backend = LengthBackend()
    calls: list[list[int]] = []
    real_batch, real_stream = backend.generate_batch, backend.generate_stream
    backend.generate_batch = lambda idx: (calls.append(list(idx)), real_batch(idx))[1]  # type: ignore[method-assign]
    backend.generate_stream = lambda i, f: (calls.append([i]), real_stream(i, f))[1]  # type: ignore[method-assign]
    _, harness, _, _ = prepare_generation(run_request(tmp_path, scenario), backend, Stager(backend, Prompts(100)))
    harness.close()
    staged = list(range(64))  # calibration stages a pool of 64 prompts
    assert backend.staged == staged
    longest = sorted(staged, key=backend.prompt_length, reverse=True)
    width = 4 if scenario == "Offline" else 1
    assert calls[0] == longest[:width]  # the first call is the warm-up
    assert [backend.prompt_length(i) for i in calls[0]] == [63, 62, 61, 60][:width]


def test_warm_up_without_lengths_takes_the_first_prompts(tmp_path: Path) -> None:
    backend = FakeBackend()
    _, harness, _, _ = prepare_generation(run_request(tmp_path, "Offline"), backend, Stager(backend, Prompts(100)))
    harness.close()
    assert backend.batches[0] == [0, 1, 2, 3]
