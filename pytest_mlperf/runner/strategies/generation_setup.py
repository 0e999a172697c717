"""The runner's setup of one LoadGen test for a token-generating backend (LLM workloads).

Calibration is a short bare loop of the same backend calls the harness makes, without LoadGen:
- Offline: `generate_batch` with the run's batch size and streams -> offline_expected_qps (samples/s);
- SingleStream: streamed requests one at a time -> single_stream_expected_latency_ns (p50 per request);
- Server: the same streamed loop -> target QPS = load fraction x streams x requests/s per stream (a load
  level, so the profile's expectation margin does not apply to it).
The first call of each kind is a warm-up outside the clock (allocations, kernel selection), on the longest of
the staged prompts where the backend reports lengths (an optional `prompt_length(index)`). GPU shape buckets
(runner/strategies/batching.py) are not used: prompt lengths vary per sample, so padding to a few batch sizes would not
bound the shapes a generation sees.

The Server latency bound of an LLM is LoadGen's TTFT/TPOT pair from mlperf.conf (or the user's user.conf);
`server_target_latency_ns` is left alone because LoadGen ignores it with token latencies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from pytest_mlperf.contract.protocol import RunRequest
from pytest_mlperf.contract.test_request import TestRequest
from pytest_mlperf.runner.calibrate import calibration_failed, server_expectations, work_expectations
from pytest_mlperf.runner.staging import Stager
from pytest_mlperf.runner.strategies.generation import (
    GenerationConfig,
    GenerationHarness,
    GenerationMeasurement,
    TokenBackend,
    measure_batches,
    measure_streams,
)


def generation_batch(req: RunRequest) -> tuple[int, int]:
    """(batch size, streams): SingleStream 1 x 1; Server streams requests one at a time on `streams` threads."""
    if req.test.scenario == "SingleStream":
        return 1, 1
    if req.test.scenario == "Server":
        return 1, req.streams
    return req.batch_size, req.streams


WARM_UP_POOL = 64  # prompts staged for calibration, among which warm-up takes the longest


def longest_first(backend: TokenBackend, indices: Sequence[int]) -> list[int]:
    """`indices` by prompt length, longest first, where the backend can tell (`prompt_length`); else as given."""
    length = getattr(backend, "prompt_length", None)
    return sorted(indices, key=length, reverse=True) if callable(length) else list(indices)


def calibrate_generation(backend: TokenBackend, stager: Stager, scenario: str, batch: int, streams: int,
                         seconds: float) -> GenerationMeasurement:
    """Warm-up, then the bare loop. Warm-up generates for the longest staged prompts: the first pass over a
    wider batch pays one-off costs (the allocator growing to a bigger KV cache, first kernels for new shapes)
    that would otherwise land inside the LoadGen test. Measured with tools/device/llm_efficiency.py: the first
    LoadGen pass after a warm-up on the first prompts ran at 0.85-0.96 of a bare replay, the second at ~1.0."""
    try:
        staged = stager.some(max(batch * streams, WARM_UP_POOL))
        widest = longest_first(backend, staged)
        if scenario == "Offline":
            backend.generate_batch([widest[k % len(widest)] for k in range(batch)])  # warm-up
            return measure_batches(backend, staged, batch, streams, seconds)
        backend.generate_stream(widest[0], lambda _: None)  # warm-up
        return measure_streams(backend, staged[1:] + staged[:1], seconds)
    except Exception as exc:
        raise calibration_failed(exc) from exc


def generation_expectations(req: RunRequest, m: GenerationMeasurement, streams: int) -> TestRequest:
    """What LoadGen should expect, from the bare loop; values the user (or a baseline) set are kept."""
    t = work_expectations(req.test, m.samples_per_s, m.batch_latency_p50_s, req.expectation_margin)
    return server_expectations(t, req.server_load_fraction, streams * m.samples_per_s)


def prepare_generation(req: RunRequest, backend: TokenBackend, stager: Stager
                       ) -> tuple[TestRequest, GenerationHarness, dict[str, Any] | None, dict[str, Any]]:
    """(test to run, harness, calibration record, schedule record) for one LLM case."""
    batch, streams = generation_batch(req)
    test = replace(req.test, use_token_latencies=True)
    calibration: dict[str, Any] | None = None
    if req.calibrate:  # also in accuracy mode: Server's schedule and SingleStream's expectations still apply
        m = calibrate_generation(backend, stager, test.scenario, batch, streams, req.calibrate_seconds)
        test = generation_expectations(replace(req, test=test), m, streams)
        calibration = {"bare": m.to_dict()}
    harness = GenerationHarness(backend, stager.stage, GenerationConfig(test.scenario, batch, streams))
    schedule = {"batch_size": batch, "streams": streams, "token_latencies": True}
    return test, harness, calibration, schedule
