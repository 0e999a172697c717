"""The serving harness (runner/strategies/serving.py), the vllm backend (runner/backends/vllm_llm.py) and the runner's setup for it
(runner/strategies/serving_setup.py), on CPU without vllm: stand-ins with the shapes of vLLM's `LLM` and `AsyncLLM` drive the real
backend code; then the benchmark's skip without vllm, and a real engine on a GPU (marked `gpu`)."""

from __future__ import annotations

import asyncio
import enum
import importlib.util
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

import numpy as np
import pytest

pytest.importorskip("mlperf_loadgen")

from pytest_mlperf.contract.test_request import TestRequest  # noqa: E402
from pytest_mlperf.runner.loadgen import run_test  # noqa: E402
from pytest_mlperf.contract.loadgen_log import read_accuracy_log, read_run  # noqa: E402
from pytest_mlperf.contract.protocol import RunRequest  # noqa: E402
from pytest_mlperf.runner.strategies.serving_setup import calibration_requests, prepare_serving  # noqa: E402
from pytest_mlperf.runner.staging import Stager  # noqa: E402
from pytest_mlperf.runner.backends import create_backend  # noqa: E402
from pytest_mlperf.runner.backends.base import OPTION_NAMES, BackendError  # noqa: E402
from pytest_mlperf.runner.strategies.serving import ServingHarness, measure_concurrent, measure_sequential  # noqa: E402
from pytest_mlperf.runner.backends.vllm_llm import (  # noqa: E402
    VllmApi,
    VllmLLM,
    VllmSettings,
    load_vllm_api,
    precision,
    settings_from_options,
    visible_gpu_count,
    vllm_missing,
)
from pytest_mlperf.runner.workloads import llama3_1_8b
from pytest_mlperf.runner.workloads.cnn_dailymail import Sample  # noqa: E402
from pytest_mlperf.contract.protocol import LoadRequest  # noqa: E402
from pytest_mlperf.contract.protocol import DataRequest  # noqa: E402

TestRequest.__test__ = False  # type: ignore[attr-defined]
BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "test_llama3_1_8b_vllm.py"
HAS_VLLM = importlib.util.find_spec("vllm") is not None


def answer(prompt: Sequence[int]) -> list[int]:
    """The stand-in model's answer: 2 to 6 tokens derived from the prompt's first id."""
    first = int(prompt[0])
    return list(range(first * 10, first * 10 + 2 + first % 5))


# --- stand-ins for vLLM's public API (the shapes runner/backends/vllm_llm.py uses) --------------------------------------


class OutputKind(enum.Enum):
    CUMULATIVE = 0
    DELTA = 1


@dataclass
class Params:  # vllm.SamplingParams
    temperature: float
    max_tokens: int
    min_tokens: int
    detokenize: bool
    output_kind: OutputKind = OutputKind.CUMULATIVE


@dataclass
class Completion:  # vllm.CompletionOutput
    token_ids: list[int]


@dataclass
class RequestOut:  # vllm.RequestOutput
    outputs: list[Completion]
    finished: bool


@dataclass
class Engine:
    """What all stand-in engines share: start-up arguments, calls, concurrency, shutdown."""

    kwargs: dict[str, Any]
    shut: bool = False
    active: int = 0
    most_active: int = 0
    requests: list[str] = field(default_factory=list)

    @property
    def vllm_config(self) -> Any:
        class Scheduler:
            max_num_seqs = 32

        class Config:
            scheduler_config = Scheduler()

        return Config()


class FakeLLM:  # vllm.LLM
    instances: list["FakeLLM"] = []

    def __init__(self, **kwargs: Any) -> None:
        self.state = Engine(kwargs)
        self.calls: list[list[list[int]]] = []
        outer = self

        class Core:
            def shutdown(self) -> None:
                outer.state.shut = True

        class LlmEngine:
            engine_core = Core()
            vllm_config = self.state.vllm_config

        self.llm_engine = LlmEngine()
        FakeLLM.instances.append(self)

    def generate(self, prompts: list[dict[str, Any]], params: Params, use_tqdm: bool = True) -> list[RequestOut]:
        assert not self.state.shut and not use_tqdm and params.temperature == 0.0 and params.min_tokens == 2
        self.calls.append([p["prompt_token_ids"] for p in prompts])
        return [RequestOut([Completion(answer(p["prompt_token_ids"]))], True) for p in prompts]


class FakeAsyncLLM:  # vllm.v1.engine.async_llm.AsyncLLM
    instances: list["FakeAsyncLLM"] = []
    step_s = 0.02
    fail_on: int | None = None  # prompt first id that raises after the first token

    def __init__(self, args: dict[str, Any], usage_context: str) -> None:
        self.state = Engine(args)
        self.usage_context = usage_context
        self.loop = asyncio.get_running_loop()  # built on the backend's loop
        FakeAsyncLLM.instances.append(self)

    @classmethod
    def from_engine_args(cls, args: dict[str, Any], usage_context: str) -> "FakeAsyncLLM":
        return cls(args, usage_context)

    @property
    def vllm_config(self) -> Any:
        return self.state.vllm_config

    async def generate(self, prompt: dict[str, Any], params: Params, request_id: str) -> AsyncIterator[RequestOut]:
        assert asyncio.get_running_loop() is self.loop and params.output_kind is OutputKind.DELTA
        ids = answer(prompt["prompt_token_ids"])
        s = self.state
        s.requests.append(request_id)
        s.active += 1
        s.most_active = max(s.most_active, s.active)
        try:
            yield RequestOut([Completion(ids[:1])], False)  # DELTA: the first token alone ...
            await asyncio.sleep(self.step_s)
            if prompt["prompt_token_ids"][0] == self.fail_on:
                raise RuntimeError(f"engine failed on prompt {prompt['prompt_token_ids'][0]}")
            yield RequestOut([Completion([])], False)  # an output without new tokens
            yield RequestOut([Completion(ids[1:])], True)  # ... then the rest
        finally:
            s.active -= 1

    def shutdown(self) -> None:
        self.state.shut = True


def fake_api() -> VllmApi:
    return VllmApi("0.0-fake", FakeLLM, FakeAsyncLLM, lambda **kw: dict(kw), Params, OutputKind, dict, "serving")


@pytest.fixture(autouse=True)
def _reset() -> None:
    FakeLLM.instances.clear()
    FakeAsyncLLM.instances.clear()
    FakeAsyncLLM.fail_on = None
    FakeAsyncLLM.step_s = 0.02


def samples(indices: Sequence[int]) -> list[Sample]:
    return [Sample(f"prompt {i}", [i + 1, 7, 7], "") for i in indices]


@pytest.fixture
def backend(tmp_path: Path) -> Any:
    (tmp_path / "config.json").write_text('{"torch_dtype": "float32"}')
    b = VllmLLM(tmp_path, "auto", {"max_new_tokens": 16}, api=fake_api(), env={"CUDA_VISIBLE_DEVICES": "GPU-a"})
    b.stage(list(range(40)), samples(range(40)))
    yield b
    b.close()


class Recorder:
    """A LoadGen Responder that records calls (thread-safe), for the harness without LoadGen."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, list[int]]] = []
        self.lock = threading.Lock()

    def first_token(self, sample_id: int, tokens: np.ndarray) -> None:
        with self.lock:
            self.calls.append(("first", sample_id, tokens.tolist()))

    def complete_tokens(self, sample_id: int, tokens: np.ndarray) -> None:
        assert tokens.dtype == np.int32
        if len(tokens) < 2:
            raise ValueError("token latencies need at least 2 tokens")
        with self.lock:
            self.calls.append(("done", sample_id, tokens.tolist()))

    def complete_empty(self, ids: Sequence[int]) -> None:
        with self.lock:
            self.calls.extend(("empty", i, []) for i in ids)

    def wait(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if sum(c[0] in ("done", "empty") for c in self.calls) >= count:
                    return
            time.sleep(0.005)
        raise AssertionError(f"only {self.calls} after {timeout} s")


# --- settings ---------------------------------------------------------------------------------------------------


def test_tensor_parallel_comes_from_the_case_gpus() -> None:
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": "GPU-a,GPU-b"}) == 2
    assert visible_gpu_count({}) is None
    assert settings_from_options({}, {"CUDA_VISIBLE_DEVICES": "GPU-a,GPU-b"}).tensor_parallel_size == 2
    assert settings_from_options({}, {}).tensor_parallel_size == 1
    assert settings_from_options({"tensor_parallel_size": 1}, {"CUDA_VISIBLE_DEVICES": "0,1"}).tensor_parallel_size == 1
    with pytest.raises(BackendError, match=r"mlperf\(gpus=4\)"):
        settings_from_options({"tensor_parallel_size": 4}, {"CUDA_VISIBLE_DEVICES": "0,1"})


def test_options_are_validated_and_become_engine_arguments(tmp_path: Path) -> None:
    s = settings_from_options({"gpu_memory_utilization": "0.5", "max_model_len": 4096, "enforce_eager": "true"}, {})
    kwargs = s.engine_kwargs(tmp_path)
    assert kwargs["model"] == str(tmp_path) and kwargs["gpu_memory_utilization"] == 0.5
    assert kwargs["max_model_len"] == 4096 and kwargs["enforce_eager"] is True
    assert kwargs["enable_prefix_caching"] is False and "max_num_seqs" not in kwargs  # None: vLLM's default
    assert "max_new_tokens" not in kwargs
    with pytest.raises(BackendError, match="unknown option"):
        settings_from_options({"batch": 3}, {})
    with pytest.raises(BackendError, match="gpu_memory_utilization"):
        settings_from_options({"gpu_memory_utilization": 1.5}, {})
    with pytest.raises(BackendError, match="max_new_tokens"):
        settings_from_options({"max_new_tokens": 1}, {})
    with pytest.raises(BackendError, match="bad value"):
        settings_from_options({"max_model_len": "long"}, {})


def test_the_option_registry_names_exactly_the_vllm_settings() -> None:
    # the plugin checks --mlperf-sut-option vllm.KEY against OPTION_NAMES without importing this backend
    assert set(OPTION_NAMES["vllm"]) == set(VllmSettings.__dataclass_fields__)


def test_precision_follows_vllm_auto_dtype(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"torch_dtype": "float32"}')
    assert precision("auto", tmp_path) == "bf16"  # vLLM runs fp32 checkpoints in bf16
    (tmp_path / "config.json").write_text('{"dtype": "float16"}')
    assert precision("auto", tmp_path) == "fp16"
    assert precision("float32", tmp_path) == "fp32"


def test_cpu_device_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="CUDA GPUs only"):
        VllmLLM(tmp_path, "cpu", {}, api=fake_api())


# --- the backend on stand-in engines -------------------------------------------------------------------------


def test_offline_generates_all_prompts_in_one_call_as_int32(backend: VllmLLM) -> None:
    backend.start("Offline")
    assert backend.engine == "offline" and backend.concurrency == 32
    out = backend.generate_all([3, 0, 3])
    assert [o.tolist() for o in out] == [answer([4]), answer([1]), answer([4])]
    assert all(o.dtype == np.int32 for o in out)
    llm = FakeLLM.instances[0]
    assert llm.calls == [[[4, 7, 7], [1, 7, 7], [4, 7, 7]]]  # one generate: vLLM schedules the batch itself
    assert llm.state.kwargs["tensor_parallel_size"] == 1 and llm.state.kwargs["disable_log_stats"] is True
    with pytest.raises(BackendError, match="not loaded"):
        backend.generate_all([99])
    with pytest.raises(BackendError, match=r"start\('Server'\)"):
        backend.submit(0, lambda _: None, lambda _: None, lambda _: None)


def test_one_engine_at_a_time_and_shutdown_frees_it(backend: VllmLLM) -> None:
    backend.start("Offline")
    backend.start("Offline")  # already up: not started again
    backend.start("Server")
    llm, engine = FakeLLM.instances[0], FakeAsyncLLM.instances[0]
    assert llm.state.shut and not engine.state.shut and backend.engine == "async"
    assert engine.usage_context == "serving"  # vLLM's serving defaults for the scheduler
    backend.start("SingleStream")  # the same async engine serves SingleStream
    assert backend.engine_starts == 2 and len(FakeAsyncLLM.instances) == 1
    thread = backend._async.thread  # type: ignore[union-attr]
    backend.close()
    assert engine.state.shut and backend.engine is None and not thread.is_alive()


def test_streaming_reports_the_first_token_once_then_all(backend: VllmLLM) -> None:
    backend.start("Server")
    events: list[tuple[str, list[int]]] = []
    done = threading.Event()
    backend.submit(2, lambda t: events.append(("first", t.tolist())),
                   lambda t: (events.append(("done", t.tolist())), done.set()),
                   lambda e: (events.append(("error", [])), done.set()))
    assert done.wait(5)
    assert events == [("first", answer([3])[:1]), ("done", answer([3]))]


def test_streaming_error_goes_to_on_error(backend: VllmLLM) -> None:
    FakeAsyncLLM.fail_on = 6
    backend.start("Server")
    errors: list[BaseException] = []
    done = threading.Event()
    backend.submit(5, lambda t: None, lambda t: done.set(), lambda e: (errors.append(e), done.set()))
    assert done.wait(5)
    assert len(errors) == 1 and "engine failed on prompt 6" in str(errors[0])


# --- the harness --------------------------------------------------------------------------------------------------


def test_server_requests_run_concurrently_in_the_engine(backend: VllmLLM) -> None:
    backend.start("Server")
    harness = ServingHarness(backend, lambda idx: None, "Server")
    responder = Recorder()
    start = time.perf_counter()
    for k in range(20):  # LoadGen issues Server queries one sample at a time
        harness.issue([(100 + k, k)], responder)  # type: ignore[arg-type]
    issued = time.perf_counter() - start
    responder.wait(20)
    elapsed = time.perf_counter() - start
    engine = FakeAsyncLLM.instances[0].state
    assert issued < 0.5 * FakeAsyncLLM.step_s * 20  # issue never waits for a request
    assert engine.most_active >= 10  # requests overlap in the engine: continuous batching, not one per stream
    assert elapsed < 10 * FakeAsyncLLM.step_s
    for k in range(20):
        mine = [c for c in responder.calls if c[1] == 100 + k]
        assert mine == [("first", 100 + k, answer([k + 1])[:1]), ("done", 100 + k, answer([k + 1]))]
    assert harness.error is None
    harness.close()


def test_offline_completes_every_sample_with_its_tokens(backend: VllmLLM) -> None:
    backend.start("Offline")
    harness = ServingHarness(backend, lambda idx: None, "Offline")
    responder = Recorder()
    harness.issue([(10 + k, k % 5) for k in range(12)], responder)  # type: ignore[arg-type]
    responder.wait(12)
    harness.close()
    assert sorted(c[1] for c in responder.calls) == list(range(10, 22))
    assert all(c[0] == "done" and c[2] == answer([(c[1] - 10) % 5 + 1]) for c in responder.calls)
    assert len(FakeLLM.instances[0].calls) == 1  # the whole query in one LLM.generate


def test_errors_complete_samples_empty_and_are_reported(backend: VllmLLM) -> None:
    FakeAsyncLLM.fail_on = 3
    backend.start("Server")
    harness = ServingHarness(backend, lambda idx: None, "Server")
    responder = Recorder()
    for k in range(4):
        harness.issue([(k, k)], responder)  # type: ignore[arg-type]
    responder.wait(4)
    assert ("empty", 2, []) in responder.calls and ("done", 2, answer([3])) not in responder.calls
    assert [c for c in responder.calls if c[1] == 1] == [("first", 1, answer([2])[:1]), ("done", 1, answer([2]))]
    assert harness.error is not None and "engine failed on prompt 3" in harness.error


def test_offline_failure_completes_the_rest_empty(backend: VllmLLM) -> None:
    harness = ServingHarness(backend, lambda idx: None, "Offline")  # no engine started: generate_all raises
    responder = Recorder()
    harness.issue([(1, 0), (2, 1)], responder)  # type: ignore[arg-type]
    responder.wait(2)
    harness.close()
    assert responder.calls == [("empty", 1, []), ("empty", 2, [])]
    assert harness.error is not None and "start('Offline')" in harness.error


class OneShotBackend:
    """An engine that delivers everything in one callback, calls first token twice, or answers one token."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def submit(self, index: int, on_first: Any, on_done: Any, on_error: Any) -> None:
        tokens = np.array([index, index + 1, index + 2], dtype=np.int32)
        if self.mode == "twice":
            on_first(tokens[:1])
            on_first(tokens[1:2])
        if self.mode == "short":
            on_first(tokens[:1])
            on_done(tokens[:1])
            return
        on_done(tokens)
        on_error(RuntimeError("late error after completion"))  # must not complete the sample again


@pytest.mark.parametrize("mode", ["merged", "twice", "short"])
def test_harness_guards_loadgen_order(mode: str) -> None:
    harness = ServingHarness(OneShotBackend(mode), lambda idx: None, "SingleStream")  # type: ignore[arg-type]
    responder = Recorder()
    harness.issue([(7, 4)], responder)  # type: ignore[arg-type]
    if mode == "short":  # fewer than 2 tokens: LoadGen's TPOT cannot use it; reported, completed empty
        assert responder.calls == [("first", 7, [4]), ("empty", 7, [])]
        assert harness.error is not None and "at least 2 tokens" in harness.error
    else:
        assert responder.calls == [("first", 7, [4]), ("done", 7, [4, 5, 6])]
        assert harness.error is None


def test_bare_loops(backend: VllmLLM) -> None:
    backend.start("Server")
    burst = measure_concurrent(backend, list(range(16)))
    assert burst.batches == 16 and burst.ttft_p50_s is not None and burst.samples_per_s > 0
    assert FakeAsyncLLM.instances[0].state.most_active >= 8
    one = measure_sequential(backend, [0, 1], 0.0, min_requests=3)
    assert one.batches == 3 and one.tokens_per_s > 0


# --- the runner's setup and a real LoadGen test ------------------------------------------------------------


class Dataset:
    total_count = 40

    def load(self, indices: Sequence[int]) -> list[Sample]:
        return samples(indices)


def run_request(tmp_path: Path, scenario: str, mode: str = "performance") -> RunRequest:
    test = TestRequest(loadgen_model="llama3_1-8b", scenario=scenario, mode=mode, log_dir=str(tmp_path / scenario),
                       total_sample_count=40, performance_sample_count=16, min_duration_ms=300, min_query_count=24,
                       accuracy_sample_count=16 if mode == "accuracy" else None)
    return RunRequest(test=test, batch_size=8, streams=1, calibrate=True, calibrate_seconds=0.1,
                      server_latency_floor_factor=None, official_server_latency_ns=None, expectation_margin=1.5)


@pytest.mark.parametrize("scenario", ["Offline", "Server", "SingleStream"])
def test_prepare_serving_starts_the_engine_before_calibrating(backend: VllmLLM, tmp_path: Path,
                                                              scenario: str) -> None:
    FakeAsyncLLM.step_s = 0.002
    test, harness, calibration, schedule = prepare_serving(run_request(tmp_path, scenario), backend,
                                                           Stager(backend, Dataset()))  # type: ignore[arg-type]
    assert backend.engine == ("offline" if scenario == "Offline" else "async")
    assert test.use_token_latencies and calibration is not None and schedule["concurrency"] == 32
    if scenario == "Offline":
        assert test.offline_expected_qps and test.offline_expected_qps > 0
    elif scenario == "Server":
        assert test.server_target_qps and test.server_target_qps > 0
    else:
        assert test.single_stream_expected_latency_ns and test.single_stream_expected_latency_ns > 0
    assert isinstance(harness, ServingHarness)
    assert calibration_requests(4) == 16 and calibration_requests(5000) == 1024


def test_engine_start_is_announced_only_when_an_engine_starts(backend: VllmLLM, tmp_path: Path) -> None:
    """On the H200 every probe of a Server search printed 'getting the serving engine up' although the engine
    was up (prepared in 0.0 s): the phase is announced only when `start` has an engine to start."""
    FakeAsyncLLM.step_s = 0.002
    heard: list[str] = []
    for scenario in ("Server", "SingleStream", "Offline"):
        prepare_serving(run_request(tmp_path, scenario), backend, Stager(backend, Dataset()),  # type: ignore[arg-type]
                        notify=lambda notice: heard.append(notice.phase.value))
    engine = "getting the serving engine up"
    assert heard.count(engine) == 2  # Server starts the async engine, SingleStream reuses it, Offline starts LLM
    assert heard[0] == engine and heard[1] != engine and heard[2] != engine


@pytest.mark.parametrize("scenario", ["Offline", "Server", "SingleStream"])
def test_loadgen_measures_the_serving_harness(backend: VllmLLM, tmp_path: Path, scenario: str) -> None:
    FakeAsyncLLM.step_s = 0.002
    test, harness, _, _ = prepare_serving(run_request(tmp_path, scenario, "accuracy"), backend,
                                          Stager(backend, Dataset()))  # type: ignore[arg-type]
    run_test(test, harness)
    harness.close()
    assert harness.error is None
    entries = read_accuracy_log(Path(test.log_dir) / "mlperf_log_accuracy.json")
    assert entries and all(np.frombuffer(e.data, "<i4").tolist() == answer([e.qsl_idx + 1]) for e in entries)
    run = read_run(test.log_dir)
    assert run.scenario == scenario


# --- the case without vllm, and the real thing -------------------------------------------------------------------


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here")
def test_backend_without_vllm_names_the_missing_package(tmp_path: Path) -> None:
    assert "pytest-mlperf[vllm]" in (vllm_missing() or "")
    with pytest.raises(BackendError, match=r"needs vllm, which is not installed: pip install 'pytest-mlperf\[vllm\]'"):
        load_vllm_api()
    req = LoadRequest(DataRequest(workload="llama3_1-8b", model_path=str(tmp_path), dataset_path=None), "vllm", "auto", {})
    with pytest.raises(BackendError, match="vllm package, which is not installed"):
        create_backend(req, llama3_1_8b)


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here")
def test_benchmark_skips_with_the_reason_without_vllm(pytester: pytest.Pytester) -> None:
    (pytester.path / "benchmarks").mkdir()
    shutil.copy(BENCHMARK, pytester.path / "benchmarks" / BENCHMARK.name)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs",
                                           "benchmarks/")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*the vllm backend needs the vllm package*pytest-mlperf?vllm?*"])


@pytest.mark.gpu
def test_real_vllm_engine_generates_and_streams(tmp_path_factory: pytest.TempPathFactory) -> None:
    if not HAS_VLLM:
        pytest.skip("needs vllm: pip install 'pytest-mlperf[vllm]'")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from pytest_mlperf.runner.standins.llama import ensure_llama_standin

    model = ensure_llama_standin(tmp_path_factory.mktemp("cache"), seed=0)
    b = VllmLLM(model, "cuda", {"max_new_tokens": 16, "gpu_memory_utilization": 0.3, "max_model_len": 1024,
                                "enforce_eager": True})
    try:
        b.stage([0, 1], [Sample("", [0, 5, 6, 7], ""), Sample("", [0, 8, 9], "")])
        b.start("Offline")
        offline = b.generate_all([0, 1])
        assert all(o.dtype == np.int32 and 2 <= len(o) <= 16 for o in offline)
        b.start("Server")
        streamed = measure_concurrent(b, [0, 1])
        assert streamed.batches == 2 and streamed.ttft_p50_s is not None
    finally:
        b.close()
