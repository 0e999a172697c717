"""The batching strategy's set-up for one LoadGen test: the batch size and streams a scenario runs with, the bare
loop's calibration and what LoadGen is told to expect from it, the Server batcher's longest wait, and the harness
(runner/strategies/batching.py) that serves the test. The generation and serving strategies have their own
(generation_setup.py, serving_setup.py); runner/child.py picks one by the backend's kind (contract/backends.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pytest_mlperf.contract.protocol import Notice, Phase, RunRequest
from pytest_mlperf.contract.test_request import TestRequest, loaded_sample_count
from pytest_mlperf.runner.backends.base import Backend
from pytest_mlperf.runner.calibrate import (
    Measurement,
    calibration_seconds,
    measure,
    server_expectations,
    warm_up,
    work_expectations,
)
from pytest_mlperf.runner.staging import Stager
from pytest_mlperf.runner.strategies.batching import BatchingHarness, ScheduleConfig, server_buckets, shape_buckets

HarnessFor = Callable[[ScheduleConfig, list[int]], BatchingHarness]


def scenario_batch(req: RunRequest, samples_per_query: int) -> tuple[int, int]:
    """(batch size, streams) a scenario runs with: SingleStream 1, MultiStream its samples per query."""
    scenario = req.test.scenario
    if scenario == "SingleStream":
        return 1, 1
    if scenario == "MultiStream":
        return req.test.multi_stream_samples_per_query or samples_per_query, 1
    return req.batch_size, req.streams


def server_bound_ns(req: RunRequest, t: TestRequest) -> int:
    """The Server latency bound the batcher works under: the test's, else the workload's, else 100 ms."""
    return t.server_target_latency_ns or req.official_server_latency_ns or 100_000_000


def batcher_wait_s(req: RunRequest, bound_ns: int) -> float:
    """How long a Server batch waits at most for more samples: --mlperf-server-batch-wait, else a tenth of the
    latency bound. With one stream the next batch cannot start before the running one ends, so waiting only adds
    latency once load is high: on the H200 at 85% load, one stream of graphs had p99 12.0 ms without the wait and
    13.3 ms with 1.5 ms (docs/performance.md, 2026-12-02)."""
    return req.server_batch_wait_s if req.server_batch_wait_s is not None else 0.1 * bound_ns / 1e9


def expectations(req: RunRequest, m: Measurement, single: Measurement) -> tuple[TestRequest, float]:
    """Fills what LoadGen should expect from the measured bare loop (values the user set are kept);
    returns the test and the Server batcher's longest wait."""
    t = work_expectations(req.test, m.samples_per_s, m.batch_latency_p50_s, req.expectation_margin)
    bound = server_bound_ns(req, t)
    if t.scenario == "Server":
        if req.server_latency_floor_factor:
            bound = max(bound, int(req.server_latency_floor_factor * single.batch_latency_p90_s * 1e9))
        t = replace(server_expectations(t, req.server_load_fraction, m.samples_per_s), server_target_latency_ns=bound)
    return t, batcher_wait_s(req, bound)


def prepare_batching(req: RunRequest, backend: Backend, stager: Stager, samples_per_query: int,
                     notify: Callable[[Notice], None], harness_for: HarnessFor,
                     ) -> tuple[TestRequest, BatchingHarness, dict[str, Any] | None, dict[str, Any]]:
    """(test to run, harness, calibration record, schedule record) for one case on a batching backend;
    `harness_for` makes the harness for a schedule (the runner keeps one across tests of the same schedule)."""
    batch, streams = scenario_batch(req, samples_per_query)
    test = req.test
    max_wait = 0.002
    calibration: dict[str, Any] | None = None
    staged: list[int] = []
    # GPUs pay a first-run cost per batch shape: pad Offline/Server batches to a few shapes, warmed up below
    dynamic = test.scenario in ("Offline", "Server") and backend.info.device == "cuda"
    buckets = (server_buckets(batch) if test.scenario == "Server" else shape_buckets(batch)) if dynamic else ()
    if req.calibrate:  # also in accuracy mode: LoadGen must pre-generate the right amount of work there too
        notify(Notice(Phase.CALIBRATE, calibration_seconds(req.calibrate_seconds, batch),
                      f"bare loop of batches of {batch} on {streams} stream{'s' if streams > 1 else ''}"))
        # on a GPU, warm up on as many samples as LoadGen will load: a backend's per-shape state (CUDA graphs)
        # is tied to the staged tensor, which a larger load replaces; warmed on 64 samples, the graphs went
        # with them and were rebuilt inside the H200's Server run, a stall of ~1 s (docs/performance.md)
        want = max(batch * streams, 64, loaded_sample_count(test) if backend.info.device == "cuda" else 0)
        staged = stager.some(want)
        warm_up(backend, staged, buckets or (batch,))
        m = measure(backend, staged, batch, streams, req.calibrate_seconds)
        single = m if batch == 1 else measure(backend, staged, 1, 1, min(0.3, req.calibrate_seconds))
        test, max_wait = expectations(replace(req, test=test), m, single)
        calibration = {"bare": m.to_dict(), "single": single.to_dict()}
    elif test.scenario == "Server":
        max_wait = batcher_wait_s(req, server_bound_ns(req, test))
    harness = harness_for(ScheduleConfig(test.scenario, batch, streams, max_wait, buckets),
                          staged if req.calibrate else [])
    schedule = {"batch_size": batch, "streams": streams, "max_wait_s": max_wait, "buckets": list(buckets)}
    return test, harness, calibration, schedule
