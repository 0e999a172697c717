"""How a token-generating backend (an LLM) serves LoadGen's Offline, Server and SingleStream scenarios.

- Offline: one query of many samples, cut into batches of `batch_size` prompts; `streams` threads each run
  whole batches (`generate_batch`) and complete every sample with its token ids and count. No first-token
  report: LoadGen measures Offline in tokens per second only.
- Server: queries of one sample arrive on a Poisson schedule into a queue; `streams` threads each take one
  request and stream it (`generate_stream`): FirstTokenComplete when the first new token exists, then
  QuerySamplesComplete with all tokens, so LoadGen measures time to first token (TTFT) and time per output
  token (TPOT). A request is never batched with others here: what a Server run measures is per-request
  streaming, and continuous batching belongs to serving engines, not to a transformers `generate` loop.
- SingleStream: one sample at a time, streamed inline on LoadGen's issue thread (no thread hop).

Responses are int32 token ids. LoadGen computes TPOT as (end - first token) / (n_tokens - 1), so every answer
must hold at least 2 tokens: backends guarantee it (min_new_tokens=2), and `Responder.complete_tokens` rejects
fewer. An exception in a thread is kept, its samples are completed empty so LoadGen can end the test, and the
runner reports the traceback and fails the case (the same conventions as runner/strategies/batching.py).

`measure_generation` is the bare loop the runner calibrates with: the same calls without LoadGen.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Protocol

import numpy as np

from pytest_mlperf.runner.backends.base import BackendInfo
from pytest_mlperf.runner.loadgen import Responder
from pytest_mlperf.runner.strategies import threads


class TokenBackend(Protocol):
    """A model that generates token ids for the prompts (QSL indices) it has staged."""

    info: BackendInfo

    def stage(self, indices: Sequence[int], samples: Sequence[object]) -> None:
        """Keep these prompts ready (tokenized) for generation; replaces what was staged."""

    def generate_batch(self, indices: Sequence[int]) -> list[np.ndarray]:
        """Generates for a batch of staged prompts; item i holds the new token ids of indices[i]."""

    def generate_stream(self, index: int, on_first_token: Callable[[np.ndarray], None]) -> np.ndarray:
        """Generates for one staged prompt, calling `on_first_token` (with the first new token id) as soon as
        it exists; returns all new token ids, the first included."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class GenerationConfig:
    scenario: str  # "Offline" | "Server" | "SingleStream"
    batch_size: int = 1
    streams: int = 1


_STOP = None  # queue item that ends a stream thread


class BatchAnswerError(RuntimeError):
    """A batch failed part-way: `pending` are the sample ids not completed with tokens (the cause is chained)."""

    def __init__(self, pending: list[int]) -> None:
        super().__init__(f"{len(pending)} sample(s) left without an answer")
        self.pending = pending


def answer_batch(responder: Responder, samples: Sequence[tuple[int, int]],
                 generate: Callable[[list[int]], Sequence[np.ndarray]], name: str) -> None:
    """Generates for (sample id, QSL index) pairs in one call and completes each sample with its token ids. When
    the call or a completion fails, raises BatchAnswerError naming the samples still pending, from the cause."""
    ids = [i for i, _ in samples]
    done = 0
    try:
        outputs = generate([idx for _, idx in samples])
        if len(outputs) != len(ids):
            raise RuntimeError(f"{name} returned {len(outputs)} answers for {len(ids)} prompts")
        for sample_id, tokens in zip(ids, outputs):
            responder.complete_tokens(sample_id, tokens)
            done += 1
    except BaseException as exc:
        raise BatchAnswerError(ids[done:]) from exc


class GenerationHarness:
    """Implements `loadgen.Harness` over a `TokenBackend` for one scenario."""

    def __init__(self, backend: TokenBackend, stage: Callable[[list[int]], None], config: GenerationConfig) -> None:
        if config.scenario not in ("Offline", "Server", "SingleStream"):
            raise ValueError(f"token generation serves Offline, Server and SingleStream, not {config.scenario}")
        self.backend = backend
        self._stage = stage  # stages prompts on the backend: the runner's Stager (runner/staging.py)
        self.config = config
        self.error: str | None = None
        self._lock = threading.Lock()
        self._responder: Responder | None = None
        # Offline items are whole batches, Server items single requests
        self._queue: queue.Queue[list[tuple[int, int]] | None] = queue.Queue()
        self._threads: list[threads.Worker] = []
        if config.scenario != "SingleStream":
            for n in range(max(1, config.streams)):  # lasting threads: they complete samples (runner/strategies/threads.py)
                self._threads.append(threads.start(self._serve, f"mlperf-generate-{n}"))

    # --- LoadGen callbacks -------------------------------------------------------------------------------
    def load(self, indices: list[int]) -> None:
        self._stage(indices)

    def unload(self, indices: list[int]) -> None:
        """Staged prompts are replaced by the next `load`; nothing to free eagerly."""

    def issue(self, samples: list[tuple[int, int]], responder: Responder) -> None:
        self._responder = responder
        if self.config.scenario == "SingleStream":
            for sample in samples:
                self._stream(sample)
        elif self.config.scenario == "Server":
            for sample in samples:
                self._queue.put([sample])
        else:
            size = max(1, self.config.batch_size)
            for start in range(0, len(samples), size):
                self._queue.put(samples[start:start + size])

    def flush(self) -> None:
        """Nothing is held back: every queued request is served as soon as a stream is free."""

    # --- work ------------------------------------------------------------------------------------------------
    def _failed(self, ids: Sequence[int]) -> None:
        with self._lock:
            self.error = self.error or traceback.format_exc()
        assert self._responder is not None
        self._responder.complete_empty(ids)

    def _batch(self, batch: Sequence[tuple[int, int]]) -> None:
        assert self._responder is not None
        try:
            answer_batch(self._responder, batch, self.backend.generate_batch, "generate_batch")
        except BatchAnswerError as exc:  # reported by the runner with its traceback
            self._failed(exc.pending)

    def _stream(self, sample: tuple[int, int]) -> None:
        responder = self._responder
        assert responder is not None
        sample_id, index = sample
        try:
            tokens = self.backend.generate_stream(index, lambda first: responder.first_token(sample_id, first))
            responder.complete_tokens(sample_id, tokens)
        except BaseException:  # noqa: BLE001 - reported by the runner with its traceback
            self._failed([sample_id])

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self.config.scenario == "Server":
                self._stream(item[0])
            else:
                self._batch(item)

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(_STOP)
        for t in self._threads:
            t.join(timeout=60)
        self._threads.clear()


# --- bare loop ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationMeasurement:
    """The bare generation loop; field names match runner/calibrate.Measurement where they mean the same."""

    batch_size: int
    streams: int
    samples_per_s: float
    tokens_per_s: float
    batch_latency_p50_s: float  # a batch (Offline) or one streamed request
    batch_latency_p90_s: float
    batches: int
    ttft_p50_s: float | None = None  # streamed requests only
    # batched loop only: each stream's first batch, left out of the rate and latencies when a stream ran more
    first_batch_s: float | None = None
    # every stream's batches (or the streamed requests) had stopped getting faster (`is_settled`) when the loop
    # ended; False: it ran SETTLE_BATCHES of them still warming up, so the rate is a floor
    settled: bool | None = None

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def _summarize(batch: int, streams: int, elapsed: float, latencies: list[float], tokens: int,
               ttfts: list[float]) -> GenerationMeasurement:
    lat = np.array(latencies)
    return GenerationMeasurement(
        batch_size=batch, streams=streams, samples_per_s=len(lat) * batch / elapsed, tokens_per_s=tokens / elapsed,
        batch_latency_p50_s=float(np.percentile(lat, 50)), batch_latency_p90_s=float(np.percentile(lat, 90)),
        batches=len(lat), ttft_p50_s=float(np.percentile(ttfts, 50)) if ttfts else None,
    )


MIN_CALIBRATION_BATCHES = 2  # per stream: the first batch's one-off costs are measured, then left out
# a batch is still warming up when the next one runs in under SETTLED_RATIO of its time (over 20% faster)
SETTLED_RATIO = 0.8
# a stream whose batches are still getting faster at the deadline goes on, up to this many batches in all
SETTLE_BATCHES = 6


def settled_from(durations: Sequence[float]) -> int:
    """Where a run of batches or requests (their durations, in order) stopped warming up: the start of the longest
    tail in which none ran in under SETTLED_RATIO of the one before it (0: none was warming up).

    On the H200 the transformers backend's calibration batches took 9.1 s, then 5.7 s, where LoadGen's then took
    2.8 s: a rate from the batches after the first alone was half the real one (docs/performance.md)."""
    k = len(durations) - 1
    while k > 0 and durations[k] >= SETTLED_RATIO * durations[k - 1]:
        k -= 1
    return max(k, 0)


def is_settled(durations: Sequence[float]) -> bool:
    """Whether the latest batch ran in no less than SETTLED_RATIO of the one before it."""
    return len(durations) >= 2 and durations[-1] >= SETTLED_RATIO * durations[-2]


def goes_on(durations: Sequence[float], minimum: int, deadline: float) -> bool:
    """Whether a calibration loop that ran batches or requests of these `durations` runs another: fewer than
    `minimum` ran, or `deadline` (a perf_counter time) is not yet reached, or they are still getting faster and fewer
    than SETTLE_BATCHES ran."""
    if len(durations) < minimum or time.perf_counter() < deadline:
        return True
    return len(durations) < SETTLE_BATCHES and not is_settled(durations)


def measure_batches(backend: TokenBackend, indices: Sequence[int], batch_size: int, streams: int,
                    seconds: float) -> GenerationMeasurement:
    """`generate_batch` on `streams` threads until `seconds` pass and each ran MIN_CALIBRATION_BATCHES batches and
    settled (its latest batch no faster than SETTLED_RATIO of the one before), cycling through `indices` so each
    stream sees different prompts. A stream still getting faster goes on past `seconds`, up to SETTLE_BATCHES
    batches; then the measurement says `settled=False`.

    Rate and latencies come from each stream's batches after it warmed up (`settled_from`): on the H200 the
    transformers backend's first calibration batch (after its warm-up) took 10.9 s where LoadGen's batches then took
    2.8 s, so a one-batch calibration predicted a 3.9x too long Offline run (docs/performance.md). The first
    batches are kept apart (`first_batch_s`, the slowest of them)."""
    streams = max(1, streams)
    runs: list[list[tuple[float, float, int]]] = [[] for _ in range(streams)]  # per stream: (start, end, tokens)
    errors: list[BaseException] = []
    start = time.perf_counter()
    deadline = start + seconds

    def loop(s: int) -> None:
        k = s
        try:
            while not errors:
                rows = [indices[(k * batch_size + j) % len(indices)] for j in range(batch_size)]
                t0 = time.perf_counter()
                out = backend.generate_batch(rows)
                runs[s].append((t0, time.perf_counter(), sum(len(o) for o in out)))
                k += streams
                if not goes_on([end - begin for begin, end, _ in runs[s]], MIN_CALIBRATION_BATCHES, deadline):
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(exc)

    loops = [threading.Thread(target=loop, args=(s,)) for s in range(streams)]  # bare loop: never calls LoadGen
    for t in loops:
        t.start()
    for t in loops:
        t.join()
    if errors:
        raise errors[0]
    return summarize_batches(batch_size, runs)


def summarize_batches(batch_size: int, runs: Sequence[Sequence[tuple[float, float, int]]]) -> GenerationMeasurement:
    """The measurement of a batched loop from each stream's (start, end, tokens) batches: the rate is the sum of the
    streams' rates over their batches once warmed up (`settled_from`, and never the first; a stream that ran one
    batch counts it); latencies likewise. `settled`: every stream that ran more than one batch ended settled."""
    samples_per_s = tokens_per_s = 0.0
    latencies: list[float] = []
    firsts: list[float] = []
    settled = True
    for batches in runs:
        if not batches:
            continue
        durations = [end - begin for begin, end, _ in batches]
        firsts.append(durations[0])
        settled = settled and (len(batches) < 2 or is_settled(durations))
        # the first batch pays the one-off costs: never in the rate (but for a stream that ran only it)
        warm = batches[max(1, settled_from(durations)) if len(batches) > 1 else 0:]
        span = warm[-1][1] - warm[0][0]
        if span > 0:
            samples_per_s += len(warm) * batch_size / span
            tokens_per_s += sum(tokens for _, _, tokens in warm) / span
        latencies += [end - begin for begin, end, _ in warm]
    lat = np.array(latencies)
    return GenerationMeasurement(
        batch_size=batch_size, streams=len(runs), samples_per_s=samples_per_s, tokens_per_s=tokens_per_s,
        batch_latency_p50_s=float(np.percentile(lat, 50)), batch_latency_p90_s=float(np.percentile(lat, 90)),
        batches=sum(len(b) for b in runs), first_batch_s=max(firsts) if firsts else None, settled=settled,
    )


# one streamed request: (latency s, new tokens, time to first token s or None)
Request = Callable[[int], tuple[float, int, float | None]]


def measure_sequential_requests(request: Request, indices: Sequence[int], seconds: float,
                                min_requests: int = 3) -> GenerationMeasurement:
    """Requests one at a time, cycling through `indices`, until `seconds` pass, at least `min_requests` ran and the
    latest ran in no less than SETTLED_RATIO of the one before (up to SETTLE_BATCHES requests while they keep
    getting faster, as the batched loop does: `measure_batches`). Rate, latencies and time to first token come from
    the requests after the warm-up (`settled_from`); `settled` says whether they had stopped getting faster."""
    runs: list[tuple[float, float, int, float | None]] = []  # (start, latency, tokens, ttft)
    start = time.perf_counter()
    k = 0
    while goes_on([r[1] for r in runs], min_requests, start + seconds):
        t0 = time.perf_counter()
        latency, count, ttft = request(indices[k % len(indices)])
        runs.append((t0, latency, count, ttft))
        k += 1
    latencies = [r[1] for r in runs]
    warm = runs[settled_from(latencies):]
    elapsed = warm[-1][0] + warm[-1][1] - warm[0][0]
    m = _summarize(1, 1, elapsed, [r[1] for r in warm], sum(r[2] for r in warm),
                   [r[3] for r in warm if r[3] is not None])
    return replace(m, batches=len(runs), settled=len(runs) < 2 or is_settled(latencies))


def measure_streams(backend: TokenBackend, indices: Sequence[int], seconds: float,
                    min_requests: int = 3) -> GenerationMeasurement:
    """`generate_stream` one request at a time (SingleStream's and each Server stream's work)."""

    def request(index: int) -> tuple[float, int, float | None]:
        first: list[float] = []
        t0 = time.perf_counter()
        out = backend.generate_stream(index, lambda _: first.append(time.perf_counter()))
        return time.perf_counter() - t0, len(out), (first[0] - t0) if first else None

    return measure_sequential_requests(request, indices, seconds, min_requests)
