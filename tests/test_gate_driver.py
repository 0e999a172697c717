"""GateDriving against a fake LoadGenDriver whose runs report a device: the round length and the plan a gate runs
with follow the device the reference's runner reported (issue 14: on a GPU, SingleStream rounds of 100 ms and the
floor's 60 to 160 rounds), while the reference's warm-up, run before any runner has said its device, keeps the
profile's round."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_mlperf.contract.test_request import TestRequest
from pytest_mlperf.host.gate.driver import GateDriving
from pytest_mlperf.host.pool.recipe import LaunchRecipe
from pytest_mlperf.host.settings import PROFILES, GateSettings

P90 = "result_90.00_percentile_latency_ns"


class FakeDriver(GateDriving):
    """Every run reports `device` and a p90 of 1 ms (the candidate's 10% more), and records its test."""

    def __init__(self, tmp_path: Path, device: str, profile: str = "ci") -> None:
        self.tmp_path = tmp_path
        self.device = device
        self.session = SimpleNamespace(settings=SimpleNamespace(profile=PROFILES[profile]), progress=None,
                                       reference=LaunchRecipe())
        self.runs: list[tuple[str, TestRequest]] = []

    def log_dir(self, suffix: str = "") -> Path:
        return self.tmp_path / f"logs{suffix}"

    def test_request(self, sut: Any, scenario: str, mode: str, log_dir: Path, total: int) -> TestRequest:
        return TestRequest(loadgen_model="resnet50", scenario=scenario, mode=mode, log_dir=str(log_dir),
                           total_sample_count=64, min_duration_ms=10_000)

    def case_label(self, sut: Any, scenario: str, mode: str, label: str = "") -> str:
        return label

    def execute(self, sut: Any, recipe: LaunchRecipe, scenario: str, mode: str, log_dir: Path, *,
                fixed: TestRequest | None = None, label: str = "", **_: Any) -> Any:
        assert fixed is not None
        test = replace(fixed, log_dir=str(log_dir), single_stream_expected_latency_ns=1_000_000)
        self.runs.append((label, test))
        p90 = 1_100_000.0 if recipe.name == "candidate" else 1_000_000.0
        return SimpleNamespace(backend={"device": self.device}, test=asdict(test), accuracy=None,
                               run=SimpleNamespace(metrics={P90: p90}))


@pytest.mark.parametrize(("device", "round_ms", "rounds"), [("cuda", 100, 60), ("cpu", 1000, 12)])
def test_the_rounds_follow_the_device_the_reference_reported(tmp_path: Path, device: str, round_ms: int,
                                                             rounds: int) -> None:
    driver = FakeDriver(tmp_path, device)
    gate = GateSettings(candidate=LaunchRecipe(name="candidate"))
    case = driver.gate_run(SimpleNamespace(), "SingleStream", "performance", gate, "")
    durations = {label: test.min_duration_ms for label, test in driver.runs}
    assert durations.pop("gate warm-up, reference") == 1000  # the ci profile's round: no device known yet
    assert set(durations.values()) == {round_ms}  # the candidate's warm-up and every round
    assert case.gate.verdict == "FAIL"  # a steady +10%, decided at the first look
    assert len(driver.runs) == 2 + 2 * rounds


def test_the_round_option_wins_on_a_gpu(tmp_path: Path) -> None:
    driver = FakeDriver(tmp_path, "cuda")
    gate = GateSettings(candidate=LaunchRecipe(name="candidate"), round_ms=700, min_rounds=3, max_rounds=6)
    driver.gate_run(SimpleNamespace(), "SingleStream", "performance", gate, "")
    assert {test.min_duration_ms for _, test in driver.runs} == {700}
    assert len(driver.runs) == 2 + 2 * 3


class BusyCalibration(FakeDriver):
    """The reference calibrated while the host was busy: its test expects 20 samples/s, its warm-up then did 40."""

    def execute(self, sut: Any, recipe: LaunchRecipe, scenario: str, mode: str, log_dir: Path, *,
                fixed: TestRequest | None = None, label: str = "", **_: Any) -> Any:
        assert fixed is not None
        test = replace(fixed, log_dir=str(log_dir), offline_expected_qps=fixed.offline_expected_qps or 20.0)
        self.runs.append((label, test))
        rate = 36.0 if recipe.name == "candidate" else 40.0
        return SimpleNamespace(backend={"device": self.device}, test=asdict(test), accuracy=None,
                               run=SimpleNamespace(metrics={"result_samples_per_second": rate}))


def test_an_offline_gate_asks_for_the_work_its_reference_warm_up_measured(tmp_path: Path) -> None:
    """Both arms run the reference's calibrated test; one calibrated on a busy host would run out of samples before
    the min duration at full speed (a candidate's warm-up INVALID under pytest-xdist on two CPUs)."""
    driver = BusyCalibration(tmp_path, "cpu")
    gate = GateSettings(candidate=LaunchRecipe(name="candidate"), min_rounds=3, max_rounds=3)
    driver.gate_run(SimpleNamespace(), "Offline", "performance", gate, "")
    expected = {label: test.offline_expected_qps for label, test in driver.runs}
    assert expected.pop("gate warm-up, reference") == 20.0
    assert set(expected.values()) == {40.0 * PROFILES["ci"].expectation_margin}  # the candidate's warm-up and rounds


def test_measured_work_only_ever_raises_an_offline_expectation() -> None:
    from pytest_mlperf.host.gate.driver import with_measured_work
    test = TestRequest(loadgen_model="resnet50", scenario="Offline", mode="performance", log_dir="x",
                       total_sample_count=64, offline_expected_qps=100.0)
    assert with_measured_work(test, {"result_samples_per_second": 50.0}, 1.5) == test  # never less work
    assert with_measured_work(test, {}, 1.5) == test
    assert with_measured_work(test, {"result_samples_per_second": 80.0}, 1.5).offline_expected_qps == 120.0
    single = replace(test, scenario="SingleStream", offline_expected_qps=None)
    assert with_measured_work(single, {"result_samples_per_second": 80.0}, 1.5) == single
