"""What one LoadGen run of a case is asked to do once its runner has said which device it runs on: the defaults
`LoadGenDriver.execute` resolves, gathered in one frozen `CaseSpec` built by `case_spec`, so that a case's policy
(device defaults, batch size and streams, calibration, the profile's knobs, the timeout) is read in one place.

Pure and typed: no pytest, no runner, no settings import (the profile and the workload are read through the small
protocols below), so the table in `case_spec`'s docstring can be tested value by value (tests/test_case_spec.py).
What is resolved before this point stays where it is: the option-or-marker batch size, streams and calibrate flag
(`session.make_sut`, into `SUTHandle`), the option-or-marker timeout (`plugin.loadgen`), the test request's lengths
and counts (`LoadGenDriver.test_request`), the Server target (`LoadGenDriver` from a baseline or a search) and a
gate's plan and round length (`settings.GateSettings.plan` and `round_ms_for`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

CPU_BATCH_SIZE = 8  # a batch of the bare loop and the harness on a CPU, where a workload's GPU batch is too slow
CPU_STREAMS = 1  # one inference stream on a CPU: more would only share the same cores
SMOKE_CALIBRATION_S = 0.3  # the bare loop's length in smoke (quick) ...
CALIBRATION_S = 1.0  # ... and in every other profile
DEFAULT_DURATION_MS = 600_000  # mlperf.conf's min duration, for a test that leaves LoadGen's own
MIN_TIMEOUT_S = 300.0  # a run's timeout is at least this, else 4 x its min duration + TIMEOUT_SLACK_S
TIMEOUT_SLACK_S = 120.0


class ProfileDefaults(Protocol):
    """What of a `settings.Profile` a case's run reads."""

    @property
    def name(self) -> str: ...
    @property
    def calibrate(self) -> bool: ...
    @property
    def server_latency_floor_factor(self) -> float | None: ...
    @property
    def expectation_margin(self) -> float: ...


class WorkloadDefaults(Protocol):
    """What of a `contract.workloads.WorkloadSpec` a case's run reads."""

    @property
    def default_batch_size(self) -> int: ...
    @property
    def cuda_streams(self) -> int: ...
    @property
    def server_latency_ns(self) -> int | None: ...


@dataclass(frozen=True)
class CaseSpec:
    """One run's resolved knobs: what goes into its `RunRequest` besides the test, and how long the parent waits."""

    device: str  # the runner's ("cpu" or "cuda"), as it reported it
    batch_size: int
    streams: int
    calibrate: bool  # bare-loop measurement and warm-up before the test
    calibrate_seconds: float
    server_latency_floor_factor: float | None
    official_server_latency_ns: int | None
    expectation_margin: float
    server_batch_wait_s: float | None
    timeout_s: float  # the runner refuses a test predicted to outlast it; the parent kills it after


def case_spec(profile: ProfileDefaults, workload: WorkloadDefaults, *, device: str, batch_size: int, streams: int,
              sut_calibrates: bool, run_calibrates: bool, min_duration_ms: int | None, timeout_s: float | None,
              server_batch_wait_s: float | None) -> CaseSpec:
    """A run's `CaseSpec`. Every default it resolves, and where it comes from (0 for a batch size or a stream count,
    None for a timeout: not set):

    | field                       | resolved as                                                                  |
    |-----------------------------|------------------------------------------------------------------------------|
    | batch_size                  | `batch_size` (--mlperf-batch-size, else the marker's: SUTHandle); else on    |
    |                             | cuda the workload's `default_batch_size`, on any other device 8              |
    | streams                     | `streams` (--mlperf-streams, else the marker's: SUTHandle); else on cuda the |
    |                             | workload's `cuda_streams`, on any other device 1                             |
    | calibrate                   | the profile's `calibrate` (smoke, ci: True; official: False) and the         |
    |                             | marker's (`sut_calibrates`) and the run's own (`run_calibrates`: False for   |
    |                             | the later runs of a gate, a search, a repeat or a rerun)                     |
    | calibrate_seconds           | 0.3 in the smoke profile, 1.0 in ci, official and any other                  |
    | server_latency_floor_factor | the profile's (smoke 8: CPU stand-ins; ci and official None)                 |
    | official_server_latency_ns  | the workload's `server_latency_ns`                                           |
    | expectation_margin          | the profile's (smoke 1.5, ci 1.2, official 1.0)                              |
    | server_batch_wait_s         | `server_batch_wait_s` (--mlperf-server-batch-wait; None: the runner's tenth  |
    |                             | of the latency bound)                                                        |
    | timeout_s                   | `timeout_s` (--mlperf-timeout, else the marker's: plugin.loadgen); else      |
    |                             | max(300 s, 4 x the test's min duration + 120 s), mlperf.conf's 600 s for a   |
    |                             | test that sets none (official: 2520 s)                                       |
    """
    cuda = device == "cuda"
    if timeout_s is None:
        duration_s = (min_duration_ms or DEFAULT_DURATION_MS) / 1000
        timeout_s = max(MIN_TIMEOUT_S, 4 * duration_s + TIMEOUT_SLACK_S)
    return CaseSpec(
        device=device,
        batch_size=batch_size or (workload.default_batch_size if cuda else CPU_BATCH_SIZE),
        # per workload, measured on an H100 (docs/performance.md): ResNet50 on ORT needs 3 to keep the GPU fed
        streams=streams or (workload.cuda_streams if cuda else CPU_STREAMS),
        calibrate=profile.calibrate and sut_calibrates and run_calibrates,
        calibrate_seconds=SMOKE_CALIBRATION_S if profile.name == "smoke" else CALIBRATION_S,
        server_latency_floor_factor=profile.server_latency_floor_factor,
        official_server_latency_ns=workload.server_latency_ns,
        expectation_margin=profile.expectation_margin,
        server_batch_wait_s=server_batch_wait_s,
        timeout_s=timeout_s,
    )
