"""How a batch backend serves each LoadGen scenario.

- SingleStream and MultiStream: one query at a time; served inline on LoadGen's issue thread (no thread hop,
  which is most of the harness's own latency).
- Offline: one query of many samples, cut into batches; `streams` threads run batches concurrently (a GPU is
  better fed by 2-3 streams than by one).
- Server: queries of one sample arrive on a Poisson schedule; `streams` batcher threads each take the first
  waiting sample and gather more until the batch is full or `max_wait_s` has passed (dynamic batching under the
  latency bound).

On a GPU every new batch shape can cost a first run far longer than a batch (ONNX Runtime's CUDA provider
searches convolution algorithms per shape): with `buckets`, a batch is padded to the smallest bucket that holds
it (repeating its last sample; the padded outputs are dropped), and calibration warms every bucket first.
Without this, Server batches of every size from 1 to the maximum stall the first seconds of a run and the
queue never recovers.

An exception in a worker thread is kept, its samples are completed empty so LoadGen can end the test, and the
runner reports the traceback and fails the case (nothing is turned silently into an empty answer).
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pytest_mlperf.runner.backends.base import Backend
from pytest_mlperf.runner.loadgen import Responder
from pytest_mlperf.runner.strategies import threads


@dataclass(frozen=True)
class ScheduleConfig:
    scenario: str
    batch_size: int
    streams: int = 1
    max_wait_s: float = 0.002
    buckets: tuple[int, ...] = ()  # batch shapes the backend sees (padded up to); empty: no padding


def shape_buckets(batch_size: int) -> tuple[int, ...]:
    """Powers of two below `batch_size`, and `batch_size` itself: at most log2(batch)+1 shapes to warm up."""
    sizes = {batch_size}
    b = 1
    while b < batch_size:
        sizes.add(b)
        b *= 2
    return tuple(sorted(sizes))


def server_buckets(batch_size: int) -> tuple[int, ...]:
    """Server's shapes: powers of two up to 8, then steps of a power of two (4, or the largest at most
    `batch_size // 8`) up to `batch_size` (32: 1, 2, 4, 8, 12, .., 32). A Server batch takes what has queued
    while the last one ran, and a batch padded up to the next power of two runs as long as that larger batch:
    on the H200 at 85% load a batch of 17-32 samples ran as 32 (5.2 ms with CUDA graphs), in which time the
    next ~29 samples queued, so every batch stayed that long. With finer shapes the time of a batch follows
    its samples and the cycle settles shorter (docs/performance.md, 2026-12-02). Offline runs full batches and
    keeps `shape_buckets`."""
    sizes = set(shape_buckets(min(batch_size, 8)))
    step = 4
    while step * 2 <= batch_size // 8:
        step *= 2
    sizes.update(range(8 + step - 8 % step, batch_size, step))
    sizes.add(batch_size)
    return tuple(sorted(sizes))


def pad_to_bucket(indices: list[int], buckets: Sequence[int]) -> list[int]:
    """`indices` padded with its last element up to the smallest bucket that holds it (unchanged if none does)."""
    n = len(indices)
    target = next((b for b in buckets if b >= n), n)
    return indices + [indices[-1]] * (target - n)


class BatchingHarness:
    """Implements `loadgen.Harness` over a `Backend` for one scenario."""

    def __init__(self, backend: Backend, stage: Callable[[list[int]], None], config: ScheduleConfig,
                 warm_indices: Sequence[int] = ()) -> None:
        self.backend = backend
        self._stage = stage  # stages samples on the backend: the runner's Stager (runner/staging.py)
        self.config = config
        self.error: str | None = None
        self._lock = threading.Lock()
        # items are runs of samples: a whole batch (Offline) or one sample (Server); None stops a stream
        self._queue: queue.Queue[list[tuple[int, int]] | None] = queue.Queue()
        self._threads: list[threads.Worker] = []
        if config.scenario in ("Server", "Offline"):
            self._start_streams(warm_indices)

    def _start_streams(self, warm_indices: Sequence[int]) -> None:
        """Starts the stream threads; each first runs every bucket on itself (GPU runtimes keep per-thread state,
        e.g. ONNX Runtime's CUDA handles, whose creation would otherwise land in the test) and then serves."""
        streams = max(1, self.config.streams)
        ready = threading.Barrier(streams + 1)
        warm = list(warm_indices)
        for n in range(streams):  # lasting threads: they complete samples (runner/strategies/threads.py says why)
            self._threads.append(threads.start(lambda: self._serve(ready, warm), f"mlperf-stream-{n}"))
        ready.wait()
        if self.error is not None:
            self.close()
            raise RuntimeError(f"a stream failed its warm-up:\n{self.error}")

    # --- LoadGen callbacks -------------------------------------------------------------------------------
    def load(self, indices: list[int]) -> None:
        self._stage(indices)

    def unload(self, indices: list[int]) -> None:
        """Staged samples are replaced by the next `load`; nothing to free eagerly."""

    def issue(self, samples: list[tuple[int, int]], responder: Responder) -> None:
        self._responder = responder
        if self.config.scenario in ("SingleStream", "MultiStream"):
            self._run_batch(samples)
        else:
            size = self.config.batch_size
            for start in range(0, len(samples), size):  # Offline: whole batches, not one put per sample
                self._queue.put(samples[start:start + size])

    def flush(self) -> None:
        """Nothing is held back between issues: batchers never wait longer than max_wait_s."""

    # --- work ------------------------------------------------------------------------------------------------
    def _run_batch(self, batch: Sequence[tuple[int, int]]) -> None:
        ids = [i for i, _ in batch]
        indices = [idx for _, idx in batch]
        if self.config.buckets:
            indices = pad_to_bucket(indices, self.config.buckets)
        try:
            outputs = self.backend.infer(indices)[: len(ids)]
        except BaseException:  # noqa: BLE001 - reported by the runner with its traceback
            with self._lock:
                self.error = self.error or traceback.format_exc()
            self._responder.complete_empty(ids)
            return
        self._responder.complete(ids, outputs)

    def _warm(self, indices: list[int]) -> None:
        try:
            for size in self.config.buckets or (self.config.batch_size,):
                rows = [indices[k % len(indices)] for k in range(size)]
                self.backend.infer(rows)
        except BaseException:  # noqa: BLE001 - reported by the constructor
            with self._lock:
                self.error = self.error or traceback.format_exc()

    def _serve(self, ready: threading.Barrier, warm_indices: list[int]) -> None:
        if warm_indices:
            self._warm(warm_indices)
        ready.wait()
        if self.error is not None:
            return
        cfg = self.config
        # Offline fills batches from a queue that already holds the whole query: no waiting needed
        max_wait = cfg.max_wait_s if cfg.scenario == "Server" else 0.0
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = list(first)
            stop = self._gather(batch, cfg.batch_size, max_wait)
            self._run_batch(batch)
            if stop:
                return

    def _gather(self, batch: list[tuple[int, int]], size: int, max_wait: float) -> bool:
        """Adds waiting samples to `batch` until full or max_wait passes; True when told to stop."""
        deadline = time.perf_counter() + max_wait
        while len(batch) < size:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    return False
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    return False
            if item is None:
                return True
            batch.extend(item)
        return False

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout=10)
        self._threads.clear()
