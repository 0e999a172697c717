"""Bare-loop measurement of a backend, in the runner: warm-up, LoadGen's expectations, harness efficiency.

The loop calls `Backend.infer` on staged samples exactly as the scenario harness does, with the same batch
size and number of streams, but without LoadGen. Its throughput and latency are the ceiling that a LoadGen
run is compared with (harness efficiency), and they tell LoadGen how much work to pre-generate."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from ..loadgen import TestRequest
from ..suts.base import Backend


class CalibrationError(RuntimeError):
    """The backend failed while being measured outside LoadGen."""


@dataclass(frozen=True)
class Measurement:
    batch_size: int
    streams: int
    samples_per_s: float
    batch_latency_p50_s: float
    batch_latency_p90_s: float
    batches: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def calibration_failed(exc: BaseException) -> CalibrationError:
    return CalibrationError(f"the SUT failed during the warm-up/calibration loop: {exc!r}")


def work_expectations(t: TestRequest, samples_per_s: float, latency_p50_s: float, margin: float) -> TestRequest:
    """Offline/SingleStream/MultiStream expectations from a bare loop; values already set (user.conf) are kept.
    LoadGen pre-generates work from these: too little ends a run before its min duration (INVALID), too much only
    makes it longer, so a short, noisy calibration errs towards more work by `margin`."""
    latency_ns = max(1, int(latency_p50_s * 1e9 / margin))
    if t.scenario == "Offline" and t.offline_expected_qps is None:
        return replace(t, offline_expected_qps=samples_per_s * margin)
    if t.scenario == "SingleStream" and t.single_stream_expected_latency_ns is None:
        return replace(t, single_stream_expected_latency_ns=latency_ns)
    if t.scenario == "MultiStream" and t.multi_stream_expected_latency_ns is None:
        return replace(t, multi_stream_expected_latency_ns=latency_ns)
    return t


def _run_all(backend: Backend, batches: list[list[int]]) -> None:
    try:
        for rows in batches:
            backend.infer(rows)
    except Exception as exc:  # noqa: BLE001 - reported as the case's failure by the runner
        raise calibration_failed(exc) from exc


def warm_up(backend: Backend, indices: list[int], sizes: tuple[int, ...]) -> None:
    """Runs each batch shape twice, so that no first-run cost (kernel selection, allocation) lands in a test."""
    batches = [[indices[k % len(indices)] for k in range(size)] for size in sizes]
    _run_all(backend, [b for b in batches for _ in range(2)])


def measure(backend: Backend, indices: list[int], batch_size: int, streams: int, seconds: float) -> Measurement:
    """Runs batches of `batch_size` staged samples on `streams` threads for about `seconds` (at least 3 batches
    per stream after 1 warm-up batch each)."""
    streams = max(1, streams)
    latencies: list[list[float]] = [[] for _ in range(streams)]
    rows = [[indices[(s * batch_size + k) % len(indices)] for k in range(batch_size)] for s in range(streams)]
    _run_all(backend, rows)  # warm-up: first runs allocate, tune kernels and fill caches
    clock: list[float] = []  # [start, deadline], set once every thread has warmed itself up
    go = threading.Event()
    warmed = threading.Barrier(streams + 1)
    ends = [0.0] * streams
    errors: list[BaseException] = []

    def loop(s: int) -> None:
        try:
            backend.infer(rows[s])  # per-thread first use (e.g. CUDA handles) stays outside the clock
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(exc)
        warmed.wait()
        go.wait()
        deadline = clock[1]
        try:
            while not errors and (len(latencies[s]) < 3 or time.perf_counter() < deadline):
                t0 = time.perf_counter()
                backend.infer(rows[s])
                latencies[s].append(time.perf_counter() - t0)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(exc)
        ends[s] = time.perf_counter()

    threads = [threading.Thread(target=loop, args=(s,)) for s in range(streams)]
    for t in threads:
        t.start()
    warmed.wait()
    start = time.perf_counter()
    clock.extend([start, start + seconds])
    go.set()
    for t in threads:
        t.join()
    if errors:
        raise calibration_failed(errors[0]) from errors[0]
    elapsed = max(ends) - start
    flat = np.array([x for per in latencies for x in per])
    return Measurement(
        batch_size=batch_size,
        streams=streams,
        samples_per_s=len(flat) * batch_size / elapsed,
        batch_latency_p50_s=float(np.percentile(flat, 50)),
        batch_latency_p90_s=float(np.percentile(flat, 90)),
        batches=len(flat),
    )


def predicted_duration(t: TestRequest) -> tuple[float, str] | None:
    """About how long LoadGen will run `t`, from its settings and expectations, and why (e.g. '100 queries at 0.26
    QPS'); None where the settings leave it to mlperf.conf (no minimum set) or no expectation is known. A performance
    run lasts until both its minimum duration and its minimum query count are met; an accuracy run until every
    accuracy sample is answered."""
    count: float | None
    if t.mode == "accuracy":
        count = t.accuracy_sample_count or t.total_sample_count
        what = "accuracy samples"
    else:
        count = t.min_query_count
        what = "queries"
    floor = (t.min_duration_ms or 0) / 1000
    if t.mode == "performance" and (t.min_duration_ms is None or count is None):
        return None
    if t.scenario == "Server" and t.server_target_qps:
        seconds, how = count / t.server_target_qps, f"{count:g} {what} at {t.server_target_qps:.3g} QPS"
    elif t.scenario == "SingleStream" and t.single_stream_expected_latency_ns:
        latency = t.single_stream_expected_latency_ns / 1e9
        seconds, how = count * latency, f"{count:g} {what} of about {latency * 1000:.3g} ms each"
    elif t.scenario == "MultiStream" and t.multi_stream_expected_latency_ns:
        per_query = t.multi_stream_samples_per_query or 8
        if t.mode == "accuracy":
            count = count / per_query
        latency = t.multi_stream_expected_latency_ns / 1e9
        seconds, how = count * latency, f"{count:g} queries of about {latency * 1000:.3g} ms each"
    elif t.scenario == "Offline" and t.offline_expected_qps:
        # performance: one query of at least min_query_count samples (and of the minimum duration's worth)
        unit = "samples" if t.mode == "performance" else what
        seconds, how = count / t.offline_expected_qps, f"{count:g} {unit} at {t.offline_expected_qps:.3g} samples/s"
    else:
        return None
    if seconds < floor:
        return floor, f"the minimum duration ({how} take less)"
    return seconds, how
