"""`host.case.case_spec`, row by row of its docstring's table: each default a run of a case resolves once its runner
has said its device (batch size and streams per device, calibration, the profiles' knobs, the timeout), so that a
default that changes fails here, naming the row."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pytest

from pytest_mlperf.host.case import CaseSpec, case_spec
from pytest_mlperf.contract.protocol import RunRequest
from pytest_mlperf.host.settings import PROFILES


@dataclass(frozen=True)
class Workload:
    """A workload whose defaults differ from every fallback, so that a row taking the wrong one shows."""

    default_batch_size: int = 48
    cuda_streams: int = 5
    server_latency_ns: int | None = 15_000_000


def spec(profile: str = "smoke", **given: Any) -> CaseSpec:
    args: dict[str, Any] = dict(device="cpu", batch_size=0, streams=0, sut_calibrates=True, run_calibrates=True,
                                min_duration_ms=1500, timeout_s=None, server_batch_wait_s=None)
    workload = given.pop("workload", Workload())
    return case_spec(PROFILES[profile], workload, **{**args, **given})


def test_batch_size_and_streams_default_per_device() -> None:
    cpu, cuda = spec(device="cpu"), spec(device="cuda")
    assert (cpu.batch_size, cpu.streams, cpu.device) == (8, 1, "cpu")
    assert (cuda.batch_size, cuda.streams, cuda.device) == (48, 5, "cuda")  # the workload's


def test_a_given_batch_size_and_stream_count_win_on_every_device() -> None:
    for device in ("cpu", "cuda"):
        given = spec(device=device, batch_size=4, streams=2)
        assert (given.batch_size, given.streams) == (4, 2), device


@pytest.mark.parametrize(("profile", "calibrates", "seconds", "floor", "margin"), [
    ("smoke", True, 0.3, 8.0, 1.5),
    ("ci", True, 1.0, None, 1.2),
    ("official", False, 1.0, None, 1.0),
])
def test_the_profiles_knobs(profile: str, calibrates: bool, seconds: float, floor: float | None,
                            margin: float) -> None:
    s = spec(profile)
    assert s.calibrate is calibrates
    assert s.calibrate_seconds == seconds
    assert s.server_latency_floor_factor == floor
    assert s.expectation_margin == margin


@pytest.mark.parametrize("profile", ["smoke", "ci", "official"])
def test_calibrates_only_where_profile_marker_and_run_all_do(profile: str) -> None:
    assert spec(profile, sut_calibrates=False).calibrate is False
    assert spec(profile, run_calibrates=False).calibrate is False
    assert spec(profile).calibrate is PROFILES[profile].calibrate


def test_the_workload_and_the_session_pass_through() -> None:
    s = spec(workload=Workload(server_latency_ns=None), server_batch_wait_s=0.002)
    assert s.official_server_latency_ns is None and s.server_batch_wait_s == 0.002
    assert spec().official_server_latency_ns == 15_000_000 and spec().server_batch_wait_s is None


@pytest.mark.parametrize(("min_duration_ms", "timeout_s"), [
    (1500, 300.0),  # smoke's 1.5 s: the floor
    (10_000, 300.0),  # ci's 10 s: 160 s, under the floor
    (100_000, 520.0),  # 4 x 100 s + 120 s
    (None, 2520.0),  # official: mlperf.conf's 600 s
])
def test_the_timeout_follows_the_tests_length(min_duration_ms: int | None, timeout_s: float) -> None:
    assert spec(min_duration_ms=min_duration_ms).timeout_s == timeout_s


def test_a_given_timeout_wins() -> None:
    assert spec(timeout_s=12.5, min_duration_ms=None).timeout_s == 12.5


def test_a_spec_is_frozen_and_each_knob_has_its_run_request_field() -> None:
    s = spec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.batch_size = 1  # type: ignore[misc]
    knobs = {f.name for f in dataclasses.fields(CaseSpec)} - {"device"}
    assert knobs <= {f.name for f in dataclasses.fields(RunRequest)}


def test_case_spec_imports_neither_pytest_nor_the_runner() -> None:
    code = "import json, sys; import pytest_mlperf.host.case; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    crossed = [m for m in modules if m in ("pytest", "_pytest") or m.startswith(("pytest_mlperf.runner",
                                                                                 "pytest_mlperf.host.settings"))]
    assert not crossed, crossed
