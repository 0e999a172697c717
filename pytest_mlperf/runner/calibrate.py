"""Bare-loop measurement of a backend, in the runner: warm-up, LoadGen's expectations, harness efficiency.

The loop calls `Backend.infer` on staged samples exactly as the scenario harness does, with the same batch
size and number of streams, but without LoadGen. Its throughput and latency are the ceiling that a LoadGen
run is compared with (harness efficiency), and they tell LoadGen how much work to pre-generate."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from pytest_mlperf.contract.test_request import TestRequest, offline_samples_per_query
from pytest_mlperf.runner.backends.base import Backend


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
    batch_latency_p99_s: float | None = None  # what MultiStream's p99 per query is compared with (issue 14)

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


def server_expectations(t: TestRequest, load_fraction: float, capacity_samples_per_s: float) -> TestRequest:
    """The Server target LoadGen is asked to sustain, one formula for every strategy: `load_fraction` of the
    capacity the bare loop measured with the run's streams together (a batch backend's loop runs them all; a
    generator's loop runs one stream, and its caller multiplies by the streams). A target already set (user.conf,
    a baseline, the benchmark) is kept."""
    if t.scenario != "Server" or t.server_target_qps is not None:
        return t
    return replace(t, server_target_qps=load_fraction * capacity_samples_per_s)


def _run_all(backend: Backend, batches: list[list[int]]) -> None:
    try:
        for rows in batches:
            backend.infer(rows)
    except Exception as exc:
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
        batch_latency_p99_s=float(np.percentile(flat, 99)),
    )


def calibration_seconds(seconds: float, batch_size: int) -> float:
    """About how long the runner's calibration takes (warm-up aside): the bare loop's `seconds`, and where batches
    are not single samples, the batch-1 loop that follows it (at most 0.3 s)."""
    return seconds + (min(0.3, seconds) if batch_size != 1 else 0.0)


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
    if count is None or (t.mode == "performance" and t.min_duration_ms is None):
        return None  # (an accuracy test always has a count: its samples)
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
    elif t.scenario == "Offline" and t.offline_expected_qps and t.mode == "performance":
        # one query of at least min_query_count samples, and of the minimum duration's worth (whole passes where
        # LoadGen concatenates): LoadGen runs until that query is answered, however long it takes
        samples = offline_samples_per_query(t)
        passes = " (whole passes over the loaded samples)" if t.sample_concatenate_permutation else ""
        return (max(floor, samples / t.offline_expected_qps),
                f"{samples:g} samples at {t.offline_expected_qps:.3g} samples/s{passes}")
    elif t.scenario == "Offline" and t.offline_expected_qps:
        seconds, how = count / t.offline_expected_qps, f"{count:g} {what} at {t.offline_expected_qps:.3g} samples/s"
    else:
        return None
    if seconds < floor:
        return floor, f"the minimum duration ({how} take less)"
    return seconds, how


# What LoadGen and the harness hold per generated sample: measured with mlcommons-loadgen 6.x and the null SUT on
# CPU (Offline 0.11-4.4 million samples, Server 30-200 thousand: 310-330 bytes each, the runner's peak RSS). LoadGen
# builds every query of a test before the first is issued, so this much memory is taken before anything runs.
LOADGEN_BYTES_PER_SAMPLE = 320
MEMORY_SHARE = 0.5  # a test may ask LoadGen for at most this share of the memory available to the runner
# The most samples/s a test may expect: LoadGen and a Python harness in one process issued and completed 0.35-0.39
# million samples/s on the null SUT (2 shared CPU cores); an H100 runner of ResNet50 does about 0.1 million. An
# expectation 25 times that comes from a bare loop that measured something else (batches of one repeated sample).
MAX_EXPECTED_SAMPLES_PER_S = 10_000_000


def generated_samples(t: TestRequest) -> tuple[int, str] | None:
    """How many samples LoadGen will generate for `t` (with the values it will use: loadgen.effective_test), and
    how that follows from its settings; None where an expectation is missing. LoadGen (loadgen.cc, GenerateQueries
    and TestSettingsInternal) makes Offline one query of max(min_query_count, 1.1 x duration x expected QPS)
    samples; Server queries of one sample until the schedule passes the duration; SingleStream and MultiStream
    queries until twice the duration at the expected latency; every one at least min_query_count queries. An
    accuracy run issues each accuracy sample once."""
    if t.mode == "accuracy":
        count = t.accuracy_sample_count or t.total_sample_count
        return count, f"{count:,} accuracy samples"
    duration = (t.min_duration_ms or 0) / 1000
    queries = t.min_query_count or 0
    if t.scenario == "Offline" and t.offline_expected_qps:
        how = f"one query of 1.1 x {duration:g} s x {t.offline_expected_qps:.3g} samples/s expected"
        return offline_samples_per_query(t), how + (", in whole passes over the loaded samples"
                                                    if t.sample_concatenate_permutation else "")
    if t.scenario == "Server" and t.server_target_qps:
        n = max(queries, int(duration * t.server_target_qps))
        return n, f"{duration:g} s of queries at {t.server_target_qps:.3g} QPS"
    latency_ns = (t.single_stream_expected_latency_ns if t.scenario == "SingleStream"
                  else t.multi_stream_expected_latency_ns if t.scenario == "MultiStream" else None)
    if not latency_ns:
        return None
    per_query = (t.multi_stream_samples_per_query or 8) if t.scenario == "MultiStream" else 1
    n = max(queries, int(2 * duration * 1e9 / latency_ns))
    how = f"queries for 2 x {duration:g} s at {latency_ns / 1e6:.3g} ms expected each"
    return n * per_query, how + (f", {per_query} samples each" if per_query > 1 else "")


def expected_samples_per_s(t: TestRequest) -> float | None:
    """The rate a performance test tells LoadGen to expect, in samples/s; None in accuracy mode or unknown."""
    if t.mode != "performance":
        return None
    if t.scenario == "Offline":
        return t.offline_expected_qps or None
    if t.scenario == "Server":
        return t.server_target_qps or None
    if t.scenario == "SingleStream" and t.single_stream_expected_latency_ns:
        return 1e9 / t.single_stream_expected_latency_ns
    if t.scenario == "MultiStream" and t.multi_stream_expected_latency_ns:
        return (t.multi_stream_samples_per_query or 8) * 1e9 / t.multi_stream_expected_latency_ns
    return None


def query_size_problem(t: TestRequest, available_bytes: int | None) -> str | None:
    """Why LoadGen must not start `t`: it expects more samples/s than a LoadGen process can complete, or the
    queries it would build take more than MEMORY_SHARE of the memory available (LoadGen would spend minutes
    building them at full CPU, silent, and then run out); None when `t` fits or nothing is known. The message says
    what to change."""
    rate = expected_samples_per_s(t)
    if rate is not None and rate > MAX_EXPECTED_SAMPLES_PER_S:
        return (f"the {t.scenario} {t.mode} test expects {rate:.3g} samples/s, more than LoadGen and a Python "
                f"harness complete in one process (at most about {MAX_EXPECTED_SAMPLES_PER_S:.0e}): the calibrated "
                "bare loop measured something else (a batch size far beyond the dataset's samples, e.g. "
                "--mlperf-batch-size). Use a smaller --mlperf-batch-size, or set the expectation in a "
                "--mlperf-user-conf (target_qps, target_latency)")
    planned = generated_samples(t)
    if planned is None or available_bytes is None:
        return None
    samples, how = planned
    needed = samples * LOADGEN_BYTES_PER_SAMPLE
    if needed <= MEMORY_SHARE * available_bytes:
        return None
    return (f"the {t.scenario} {t.mode} test would have LoadGen build {samples:,} samples ({how}), about "
            f"{needed / 2**30:.1f} GiB before the first query, more than {MEMORY_SHARE:.0%} of the "
            f"{available_bytes / 2**30:.1f} GiB available: an expectation far above what the SUT can do (a "
            "calibration at a batch size far beyond the dataset, e.g. --mlperf-batch-size) or a very long test. "
            "Use a smaller --mlperf-batch-size or a shorter --mlperf-duration, or set the expectation in a "
            "--mlperf-user-conf (target_qps, target_latency)")


def available_memory(meminfo: Path = Path("/proc/meminfo"), cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes of memory this process can still take: the kernel's MemAvailable, lowered to what the cgroup's
    memory.max leaves (a container's or a job's limit); None where neither is known."""
    found: list[int] = []
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            found.append(max(0, int(limit) - int((cgroup / "memory.current").read_text())))
    except (OSError, ValueError):
        pass
    return min(found) if found else None
