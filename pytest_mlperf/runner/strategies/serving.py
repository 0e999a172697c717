"""How a serving engine with continuous batching (vLLM) serves LoadGen's Offline, Server and SingleStream scenarios.

runner/strategies/generation.py serves a model that generates one call at a time (a transformers `generate` loop): Server
requests there are streamed one per stream thread. A serving engine schedules requests itself, adding new ones
to the running batch at every step, so the harness must hand each request over as soon as LoadGen issues it and
never wait for it:

- Offline: LoadGen's one query of many samples goes whole to `generate_all` (vLLM's `LLM.generate`, which batches
  and schedules them itself), on one worker thread so LoadGen's issue thread returns at once; every sample is
  completed with its int32 token ids and their count;
- Server and SingleStream: every sample is `submit`ted to the engine at once (non-blocking); the engine calls back
  `on_first_token` with the first new token (LoadGen's FirstTokenComplete, for TTFT) and `on_done` with all new
  tokens (QuerySamplesComplete with `n_tokens`, for TPOT), from its own thread. Server requests therefore run
  concurrently in the engine; SingleStream has one in flight because LoadGen issues the next after completion.

An error completes its samples empty so LoadGen can end the test, and its traceback fails the case (the
conventions of runner/strategies/batching.py and runner/strategies/generation.py). Engine start-up is not the harness's: the runner
calls `start(scenario)` before calibration (runner/strategies/serving_setup.py), outside LoadGen's measurement.

`measure_all`, `measure_concurrent` and `measure_sequential` are the bare loops the runner calibrates with: the same
engine calls without LoadGen.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from pytest_mlperf.runner.backends.base import BackendInfo
from pytest_mlperf.runner.loadgen import Responder
from pytest_mlperf.runner.strategies import threads
from pytest_mlperf.runner.strategies.generation import (
    BatchAnswerError,
    GenerationMeasurement,
    answer_batch,
    measure_sequential_requests,
)

TokensCallback = Callable[[np.ndarray], None]
ErrorCallback = Callable[[BaseException], None]


class ServingBackend(Protocol):
    """A serving engine over prompts (QSL indices) it has staged."""

    info: BackendInfo

    def stage(self, indices: Sequence[int], samples: Sequence[object]) -> None:
        """Keep these prompts ready (tokenized) for generation; replaces what was staged."""

    def start(self, scenario: str) -> None:
        """Starts (or keeps) the engine this scenario runs on; returns once it can serve. Not measured."""

    @property
    def concurrency(self) -> int:
        """How many requests the running engine schedules together at most (vLLM's max_num_seqs)."""

    def generate_all(self, indices: Sequence[int]) -> list[np.ndarray]:
        """Generates for all these prompts at once, the engine scheduling them; item i answers indices[i]."""

    def submit(self, index: int, on_first_token: TokensCallback, on_done: TokensCallback,
               on_error: ErrorCallback) -> None:
        """Starts one streamed request and returns at once. The engine later calls `on_first_token` once (with the
        first new token id), then `on_done` (all new token ids, the first included), or `on_error` instead."""

    def close(self) -> None: ...


def error_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


class ServingHarness:
    """Implements `loadgen.Harness` over a `ServingBackend` for one scenario."""

    def __init__(self, backend: ServingBackend, stage: Callable[[list[int]], None], scenario: str) -> None:
        if scenario not in ("Offline", "Server", "SingleStream"):
            raise ValueError(f"a serving engine serves Offline, Server and SingleStream, not {scenario}")
        self.backend = backend
        self._stage = stage  # the runner's Stager (runner/staging.py)
        self.scenario = scenario
        self.error: str | None = None
        self._lock = threading.Lock()
        self._responder: Responder | None = None
        self._workers: list[threads.Worker] = []

    # --- LoadGen callbacks -------------------------------------------------------------------------------
    def load(self, indices: list[int]) -> None:
        self._stage(indices)

    def unload(self, indices: list[int]) -> None:
        """Staged prompts are replaced by the next `load`; nothing to free eagerly."""

    def issue(self, samples: list[tuple[int, int]], responder: Responder) -> None:
        self._responder = responder
        if self.scenario == "Offline":
            # a lasting thread, not one per query: a thread that completes samples and exits crashes LoadGen
            # (runner/strategies/threads.py); this was the SIGSEGV of the vllm runner's first Offline test on the H200
            work = list(samples)
            self._workers.append(threads.start(lambda: self._offline(work), "mlperf-serve-offline"))
            return
        for sample_id, index in samples:
            try:
                self._submit(sample_id, index)
            except BaseException as exc:  # noqa: BLE001 - reported by the runner with its traceback
                self._failed([sample_id], exc)

    def flush(self) -> None:
        """Nothing is held back: every request is with the engine as soon as it is issued."""

    # --- completions -----------------------------------------------------------------------------------------
    def _failed(self, ids: Sequence[int], exc: BaseException) -> None:
        with self._lock:
            self.error = self.error or error_text(exc)
        assert self._responder is not None
        self._responder.complete_empty(ids)

    def _submit(self, sample_id: int, index: int) -> None:
        responder = self._responder
        assert responder is not None
        state = {"first": False, "ended": False}  # the engine calls back from one thread per request

        def on_first_token(first: np.ndarray) -> None:
            if not state["first"] and not state["ended"]:
                state["first"] = True
                responder.first_token(sample_id, first[:1])

        def on_done(tokens: np.ndarray) -> None:
            if state["ended"]:
                return
            try:
                on_first_token(tokens)  # an engine may deliver first and last token in one output
                state["ended"] = True
                responder.complete_tokens(sample_id, tokens)
            except BaseException as exc:  # noqa: BLE001 - e.g. fewer than 2 tokens: reported, sample completed
                self._failed([sample_id], exc)

        def on_error(exc: BaseException) -> None:
            if not state["ended"]:
                state["ended"] = True
                self._failed([sample_id], exc)

        self.backend.submit(index, on_first_token, on_done, on_error)

    def _offline(self, samples: list[tuple[int, int]]) -> None:
        assert self._responder is not None
        try:
            answer_batch(self._responder, samples, self.backend.generate_all, "generate_all")
        except BatchAnswerError as exc:  # reported by the runner with its traceback
            self._failed(exc.pending, exc.__cause__ or exc)

    def close(self) -> None:
        """Waits for the Offline worker; the engine stays up for the runner's next test (backend.close ends it)."""
        for worker in self._workers:
            worker.join(timeout=60)
        self._workers.clear()


# --- bare loops -------------------------------------------------------------------------------------------------


def _measurement(count: int, elapsed: float, latencies: list[float], tokens: int,
                 ttfts: list[float]) -> GenerationMeasurement:
    lat = np.array(latencies)
    return GenerationMeasurement(
        batch_size=count, streams=1, samples_per_s=len(lat) / elapsed, tokens_per_s=tokens / elapsed,
        batch_latency_p50_s=float(np.percentile(lat, 50)), batch_latency_p90_s=float(np.percentile(lat, 90)),
        batches=len(lat), ttft_p50_s=float(np.percentile(ttfts, 50)) if ttfts else None,
    )


def measure_all(backend: ServingBackend, indices: Sequence[int]) -> GenerationMeasurement:
    """One `generate_all` over `indices` (Offline's work). Latencies are the whole call's, per sample."""
    start = time.perf_counter()
    outputs = backend.generate_all(list(indices))
    elapsed = time.perf_counter() - start
    return _measurement(len(indices), elapsed, [elapsed] * len(outputs), sum(len(o) for o in outputs), [])


class _Pending:
    """Completion of submitted requests, for the bare loops."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.tokens = 0
        self.latencies: list[float] = []
        self.ttfts: list[float] = []
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.finished = threading.Event()
        if count == 0:
            self.finished.set()

    def submit(self, backend: ServingBackend, index: int) -> None:
        t0 = time.perf_counter()
        first: list[float] = []

        def on_first(_: np.ndarray) -> None:
            first.append(time.perf_counter())

        def on_done(tokens: np.ndarray) -> None:
            self._end(time.perf_counter() - t0, [f - t0 for f in first[:1]], len(tokens), None)

        def on_error(exc: BaseException) -> None:
            self._end(time.perf_counter() - t0, [], 0, exc)

        backend.submit(index, on_first, on_done, on_error)

    def _end(self, latency: float, ttft: list[float], tokens: int, exc: BaseException | None) -> None:
        with self.lock:
            self.latencies.append(latency)
            self.ttfts.extend(ttft)
            self.tokens += tokens
            if exc is not None:
                self.errors.append(exc)
            self.left -= 1
            if self.left == 0:
                self.finished.set()

    def wait(self, timeout_s: float) -> None:
        if not self.finished.wait(timeout_s):
            raise TimeoutError(f"{self.left} request(s) did not finish within {timeout_s:.0f} s")
        if self.errors:
            raise self.errors[0]


def measure_concurrent(backend: ServingBackend, indices: Sequence[int],
                       timeout_s: float = 600.0) -> GenerationMeasurement:
    """Submits all `indices` at once and waits for them (a Server burst): the engine's streamed throughput."""
    pending = _Pending(len(indices))
    start = time.perf_counter()
    for index in indices:
        pending.submit(backend, index)
    pending.wait(timeout_s)
    return _measurement(len(indices), time.perf_counter() - start, pending.latencies, pending.tokens,
                        pending.ttfts)


def measure_sequential(backend: ServingBackend, indices: Sequence[int], seconds: float, min_requests: int = 3,
                       timeout_s: float = 600.0) -> GenerationMeasurement:
    """One streamed request at a time until `seconds` pass (SingleStream's work)."""

    def request(index: int) -> tuple[float, int, float | None]:
        pending = _Pending(1)
        pending.submit(backend, index)
        pending.wait(timeout_s)
        return pending.latencies[0], pending.tokens, pending.ttfts[0] if pending.ttfts else None

    return measure_sequential_requests(request, indices, seconds, min_requests)
