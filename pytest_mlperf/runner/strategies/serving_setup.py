"""The runner's setup of one LoadGen test for a serving engine (a backend of contract/backends.py's kind "serving":
vLLM), like runner/strategies/generation_setup.py for one-call-at-a-time generators.

First the engine the scenario needs is started (`backend.start`), before anything is measured. Calibration is then a
bare run of the same engine calls, without LoadGen:
- Offline: one `generate_all` over as many prompts as the engine schedules together (its `concurrency`, at least
  16, at most 1024; staged prompts cycled) -> offline_expected_qps;
- Server: the same number of streamed requests submitted at once -> target QPS = load fraction x samples/s at
  saturation (the engine batches concurrent requests, so its capacity is its throughput, not one stream's rate);
- SingleStream: streamed requests one at a time -> single_stream_expected_latency_ns (p50).
The first call of each kind is a warm-up outside the clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pytest_mlperf.contract.protocol import Notice, Phase, RunRequest
from pytest_mlperf.contract.test_request import TestRequest
from pytest_mlperf.runner.calibrate import calibration_failed
from pytest_mlperf.runner.staging import Stager
from pytest_mlperf.runner.strategies.generation import GenerationMeasurement
from pytest_mlperf.runner.strategies.generation_setup import generation_expectations
from pytest_mlperf.runner.strategies.serving import (
    ServingBackend,
    ServingHarness,
    measure_all,
    measure_concurrent,
    measure_sequential,
)

MIN_CALIBRATION_REQUESTS = 16
MAX_CALIBRATION_REQUESTS = 1024


def calibration_requests(concurrency: int) -> int:
    return max(MIN_CALIBRATION_REQUESTS, min(MAX_CALIBRATION_REQUESTS, concurrency))


def calibrate_serving(backend: ServingBackend, stager: Stager, scenario: str, seconds: float) -> GenerationMeasurement:
    try:
        count = calibration_requests(backend.concurrency)
        staged = stager.some(count)
        work = [staged[k % len(staged)] for k in range(count)]
        if scenario == "Offline":
            backend.generate_all(work[:8])  # warm-up
            return measure_all(backend, work)
        measure_sequential(backend, staged, 0.0, min_requests=1)  # warm-up
        if scenario == "Server":
            return measure_concurrent(backend, work)
        return measure_sequential(backend, staged[1:] + staged[:1], seconds)
    except Exception as exc:
        raise calibration_failed(exc) from exc


def prepare_serving(req: RunRequest, backend: ServingBackend, stager: Stager,
                    notify: Callable[[Notice], None] = lambda notice: None,
                    ) -> tuple[TestRequest, ServingHarness, dict[str, Any] | None, dict[str, Any]]:
    """(test to run, harness, calibration record, schedule record) for one case on a serving engine; `notify`
    hears of the engine's start and of calibration (host/progress.py)."""
    scenario = req.test.scenario
    engine_for = getattr(backend, "engine_for", None)
    if engine_for is None or getattr(backend, "engine", None) != engine_for(scenario):  # not when it is up already
        notify(Notice(Phase.ENGINE, detail=f"for {scenario}"))
    backend.start(scenario)  # engine start-up (minutes for a large model), never inside a LoadGen test
    test = replace(req.test, use_token_latencies=True)
    calibration: dict[str, Any] | None = None
    if req.calibrate:  # also in accuracy mode: Server's schedule and SingleStream's expectations still apply
        notify(Notice(Phase.CALIBRATE))
        m = calibrate_serving(backend, stager, scenario, req.calibrate_seconds)
        # one "stream": the engine's measured samples/s already is its whole capacity
        test = generation_expectations(replace(req, test=test), m, streams=1)
        calibration = {"bare": m.to_dict()}
    harness = ServingHarness(backend, stager.stage, scenario)
    schedule = {"engine": getattr(backend, "engine", None), "concurrency": backend.concurrency,
                "token_latencies": True}
    return test, harness, calibration, schedule
