"""A GPU backend's warmed state must survive into the LoadGen test (the H200's Server stall of 2026-12-02).

ONNX Runtime's CUDA graphs read the staged tensor at a fixed address. The runner used to warm up and calibrate on
64 staged samples; LoadGen then loaded its 1024, the staged tensor was replaced, the graphs went with it, and every
batch size's first batch inside the measured Server run rebuilt its session and graph: ~1 s of stall at the start,
which at 85% load the queue never drained (p99 922 ms, INVALID). The fake below loses its warm shapes the same way
and counts the batches that ran cold during the LoadGen test."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest

pytest.importorskip("mlperf_loadgen")

from pytest_mlperf.contract.test_request import TestRequest
from pytest_mlperf.runner.child import RunnerState
from pytest_mlperf.contract.protocol import RunRequest
from pytest_mlperf.runner.staging import Stager
from pytest_mlperf.runner.backends.base import BackendInfo
from pytest_mlperf.runner.workloads.null import NullDataset


class GraphLikeBackend:
    """Per-shape state tied to the staged tensor: a stage into a tensor too small for it (a new tensor) drops
    every warm shape; a stage that fits keeps them, as OrtClassifier.stage does on CUDA."""

    def __init__(self) -> None:
        self.info = BackendInfo(backend="fake-graphs", device="cuda", precision="fp32", details={})
        self.capacity = 0
        self.warm: set[int] = set()
        self.cold_calls: list[int] = []
        self.measuring = threading.Event()
        self.rows: dict[int, int] = {}

    def stage(self, indices: Sequence[int], samples: np.ndarray) -> None:
        if len(indices) > self.capacity:
            self.capacity = len(indices)
            self.warm.clear()
        self.rows = {int(i): k for k, i in enumerate(indices)}

    def infer(self, indices: Sequence[int]) -> np.ndarray:
        assert all(int(i) in self.rows for i in indices), "a sample that is not staged"
        if len(indices) not in self.warm:
            if self.measuring.is_set():
                self.cold_calls.append(len(indices))
            self.warm.add(len(indices))
        return np.asarray(indices, dtype=np.int32).reshape(-1, 1)

    def close(self) -> None:
        pass


class MeasuringStager(Stager):
    """Marks the start of LoadGen's test: its load of the performance set is the first stage after warm-up."""

    def __init__(self, backend: GraphLikeBackend, dataset: NullDataset) -> None:
        super().__init__(backend, dataset)
        self.warmed = False

    def stage(self, indices: Sequence[int]) -> None:
        super().stage(indices)
        if self.warmed:
            self.backend.measuring.set()


@pytest.mark.parametrize("scenario", ["Server", "Offline"])
def test_no_batch_shape_runs_cold_inside_the_loadgen_test(tmp_path, scenario: str) -> None:
    backend = GraphLikeBackend()
    dataset = NullDataset(512)
    state = RunnerState()
    state.dataset, state.backend = dataset, backend  # type: ignore[assignment]
    stager = MeasuringStager(backend, dataset)
    state.stager = stager
    original = state.batching_harness

    def harness_then_measure(config, warm_indices):  # type: ignore[no-untyped-def]
        harness = original(config, warm_indices)
        stager.warmed = True  # calibration and the stream threads' warm-up are done
        return harness

    state.batching_harness = harness_then_measure  # type: ignore[method-assign]
    test = TestRequest("resnet50", scenario, "performance", str(tmp_path / "logs"), 512,
                       min_duration_ms=300, min_query_count=64, server_target_latency_ns=200_000_000)
    state.run(RunRequest(test=test, batch_size=16, streams=2, calibrate_seconds=0.05))
    assert backend.measuring.is_set(), "LoadGen's load was not seen"
    assert backend.cold_calls == [], f"batch sizes first run inside the test: {sorted(set(backend.cold_calls))}"
    state.close()
