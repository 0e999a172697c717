"""GPU probes: option checks, the torch-probe backend on the CPU (and CUDA behind the `gpu` marker), the gpu-probe
workload, and the shipped benchmark file and a probe case through real pytest sessions, runners and LoadGen."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import numpy as np
import pytest

from pytest_mlperf.contract.protocol import LoadRequest
from pytest_mlperf.runner.backends import create_backend
from pytest_mlperf.runner.backends.base import BackendError
from pytest_mlperf.runner.backends.torch_probe import COPY_OPS, OPS, ProbeConfig, TorchProbe, size_label
from pytest_mlperf.contract.workloads import workload_spec
from pytest_mlperf.runner.workloads import gpu_probe
from pytest_mlperf.contract.protocol import DataRequest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "test_gpu_probes.py"


@pytest.fixture
def torch() -> Iterator[ModuleType]:
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    yield torch
    torch.set_num_threads(threads)  # a CPU probe sets the process's intra-op threads, as it does in a runner


# --- options (no torch needed) -------------------------------------------------------------------------------------


def test_options_default_and_name_the_variant() -> None:
    assert ProbeConfig.from_options({"op": "launch"}) == ProbeConfig("launch", 16 << 20, 64)
    assert ProbeConfig.from_options({"op": "launch", "kernels": 32}).variant == "launch-x32"
    # copies default to 16 MiB (LoadGen's per-query cost is a few % of them), an allocation to 1 MiB
    assert ProbeConfig.from_options({"op": "h2d_pinned"}).variant == "h2d_pinned-16MiB"
    assert ProbeConfig.from_options({"op": "alloc"}).variant == "alloc-1MiB"
    assert ProbeConfig.from_options({"op": "alloc", "bytes": 4096}).variant == "alloc-4KiB"
    # --mlperf-sut-option values arrive as strings
    assert ProbeConfig.from_options({"op": "alloc", "bytes": "4096"}).variant == "alloc-4KiB"
    assert [size_label(n) for n in (1 << 30, 3 << 20, 1000)] == ["1GiB", "3MiB", "1000B"]


@pytest.mark.parametrize("options, message", [
    ({"op": "launch", "kernel": 4}, "unknown option(s) ['kernel']; known: ['bytes', 'kernels', 'op']"),
    ({}, "sut_options must name an 'op', one of launch, h2d_pinned"),
    ({"op": "memcpy"}, "unknown op 'memcpy'; choose from launch, h2d_pinned"),
    ({"op": "launch", "bytes": 64}, "option 'bytes' does not apply to op 'launch'"),
    ({"op": "d2h_pinned", "kernels": 2}, "option 'kernels' does not apply to op 'd2h_pinned'"),
    ({"op": "alloc", "bytes": 0}, "option 'bytes' must be a positive integer, got 0"),
    ({"op": "alloc", "bytes": "1MiB"}, "option 'bytes' must be a positive integer, got '1MiB'"),
    ({"op": "launch", "kernels": True}, "option 'kernels' must be a positive integer, got True"),
])
def test_bad_options_are_rejected_before_torch_is_imported(options: dict[str, Any], message: str) -> None:
    with pytest.raises(BackendError, match="^torch-probe SUT: " + re.escape(message)):
        ProbeConfig.from_options(options)


def test_missing_torch_is_a_backend_error_saying_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else find_spec(name, *a))
    req = LoadRequest(DataRequest("gpu-probe", None, None), "torch-probe", "cuda", {"op": "launch"})
    with pytest.raises(BackendError, match="torch-probe backend needs torch: pip install torch"):
        create_backend(req, gpu_probe)


# --- the backend on the CPU -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", OPS)
def test_each_op_answers_every_index_with_itself(torch: ModuleType, op: str) -> None:
    probe = TorchProbe("cpu", {"op": op})
    out = probe.infer([7, 3, 7, 1000])
    assert out.dtype == np.int32 and out.tolist() == [[7], [3], [7], [1000]]
    assert probe.infer([]).shape == (0, 1)
    info = probe.info
    assert (info.backend, info.device, info.precision) == ("torch-probe", "cpu",
                                                            ProbeConfig.from_options({"op": op}).variant)
    assert info.details["op"] == op and info.details["torch"] == torch.__version__ and info.details["gpu"]
    default = {"launch": "64", "alloc": str(1 << 20)}.get(op, str(16 << 20))
    assert info.details.get("kernels" if op == "launch" else "bytes") == default
    probe.close()


def test_launch_runs_its_kernels_once_per_index(torch: ModuleType) -> None:
    probe = TorchProbe("cpu", {"op": "launch", "kernels": 5})
    probe.infer([0, 1, 2])
    assert int(probe._first.scratch.item()) == 15  # 3 samples x 5 kernels, each adding 1


@pytest.mark.parametrize("op", COPY_OPS)
def test_copies_move_the_source_bytes_into_the_destination(torch: ModuleType, op: str) -> None:
    probe = TorchProbe("cpu", {"op": op, "bytes": 4096 + 3})
    lane = probe._first
    assert lane.src.numel() == lane.dst.numel() == 4099
    assert not torch.equal(lane.src, lane.dst)  # distinct buffers with different contents before the op
    probe.infer([0])
    assert torch.equal(lane.src, lane.dst)


def test_sequential_batches_share_one_lane_and_concurrent_ones_get_their_own(torch: ModuleType) -> None:
    probe = TorchProbe("cpu", {"op": "launch", "kernels": 1})
    inside = threading.Barrier(3)
    real = probe._launch

    def launch_and_wait(lane: Any) -> None:  # holds each thread inside infer until all three are there
        real(lane)
        inside.wait(timeout=10)

    probe._op = launch_and_wait
    threads = [threading.Thread(target=probe.infer, args=([i],)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spares = [probe._spares.get_nowait() for _ in range(2)]
    assert probe._spares.empty() and len({id(lane) for lane in [probe._first, *spares]}) == 3
    assert [int(lane.scratch.item()) for lane in [probe._first, *spares]] == [1, 1, 1]
    for lane in spares:
        probe._spares.put(lane)
    probe._op = real
    for _ in range(4):  # one thread at a time: always the first lane, never a spare
        probe.infer([0])
    assert int(probe._first.scratch.item()) == 5 and [int(lane.scratch.item()) for lane in spares] == [1, 1]


def test_cuda_without_a_cuda_torch_is_a_backend_error(torch: ModuleType) -> None:
    if torch.cuda.is_available():
        pytest.skip("torch sees a GPU here")
    with pytest.raises(BackendError, match="--mlperf-device=cuda, but torch .* sees no CUDA GPU"):
        TorchProbe("cuda", {"op": "launch"})
    assert TorchProbe("auto", {"op": "launch"}).info.device == "cpu"


@pytest.mark.gpu
@pytest.mark.parametrize("op", OPS)
def test_each_op_on_the_gpu(torch: ModuleType, op: str) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs torch with CUDA and a GPU")
    probe = TorchProbe("cuda", {"op": op})
    assert probe.infer([2, 0, 1]).tolist() == [[2], [0], [1]]
    assert probe.info.device == "cuda" and probe.info.details["gpu"] == torch.cuda.get_device_name()
    lane = probe._first
    if op == "launch":
        assert int(lane.scratch.item()) == 24
    elif op in COPY_OPS:
        assert torch.equal(lane.src.cpu(), lane.dst.cpu())
        host = lane.src if op.startswith("h2d") else lane.dst
        assert host.device.type == "cpu" and host.is_pinned() == op.endswith("pinned")


@pytest.mark.gpu
def test_alloc_goes_to_the_driver_not_torchs_allocator(torch: ModuleType) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs torch with CUDA and a GPU")
    probe = TorchProbe("cuda", {"op": "alloc", "bytes": 64 << 20})
    before = torch.cuda.memory_stats().get("allocation.all.allocated", 0)
    probe.infer(list(range(50)))
    assert torch.cuda.memory_stats().get("allocation.all.allocated", 0) == before
    too_big = TorchProbe("cuda", {"op": "alloc", "bytes": 1 << 50})  # a petabyte: only the driver can say no
    with pytest.raises(RuntimeError, match="cuMemAlloc_v2 failed: CUDA_ERROR_OUT_OF_MEMORY"):
        too_big.infer([0])


# --- the workload ---------------------------------------------------------------------------------------------------


def test_workload_is_registered_with_index_samples() -> None:
    spec = workload_spec("gpu-probe")
    assert spec.backends == ("torch-probe",) and spec.scenarios == ("SingleStream", "Offline")
    data = gpu_probe.open_dataset(DataRequest("gpu-probe", None, None))
    assert data.total_count == 1024
    assert data.load([5, 2]).tolist() == [[5], [2]]
    assert gpu_probe.open_dataset(DataRequest("gpu-probe", None, None, total_count=10)).total_count == 10
    with pytest.raises(ValueError, match="gpu-probe has no model or dataset"):
        gpu_probe.open_dataset(DataRequest("gpu-probe", "/some/model.onnx", None))


# --- through pytest, runners and LoadGen ----------------------------------------------------------------------------


def test_shipped_benchmark_ids_and_clean_skip_without_a_gpu(pytester: pytest.Pytester,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(BENCHMARK, pytester.path / "test_gpu_probes.py")
    result = pytester.runpytest("--collect-only", "-q", "-k", "launch")
    result.stdout.fnmatch_lines(["*test_gpu_probe[[]gpu-probe-SingleStream-performance-launch]",
                                 "*test_gpu_probe[[]gpu-probe-Offline-performance-launch]",
                                 "2/12 tests collected (10 deselected)*"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU visible to the pytest process (nor torch, in some venvs)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=12)
    result.stdout.re_match_lines([r"SKIPPED \[12\] .*GPU probes need (torch: pip install torch|an NVIDIA GPU)"])
    assert not (pytester.path / "mlperf-results").exists()  # no runner was started


PROBE_BENCH = """
import pytest
pytestmark = pytest.mark.mlperf(workload="gpu-probe", backend="torch-probe", scenarios=["SingleStream"],
                                sut_options={"op": "h2d_pageable", "bytes": 65536})

def test_probe(mlperf_sut, loadgen, baseline):
    run = loadgen.run(mlperf_sut)
    run.assert_valid()
    baseline.assert_no_regression(run)
"""


def test_probe_case_runs_singlestream_through_runner_and_loadgen_on_cpu(pytester: pytest.Pytester,
                                                                         torch: ModuleType) -> None:
    pytester.makepyfile(test_probe=PROBE_BENCH)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--mlperf-device=cpu", "--mlperf-duration=0.5s",
                                           "--mlperf-mode=both", "--mlperf-update-baselines")
    result.assert_outcomes(passed=2)
    cases = json.loads((pytester.path / "mlperf-results" / "results.json").read_text())["cases"]
    perf, acc = sorted(cases, key=lambda c: c["key"]["mode"], reverse=True)
    assert perf["key"]["workload"] == "gpu-probe" and perf["key"]["scenario"] == "SingleStream"
    assert perf["backend"]["backend"] == "torch-probe" and perf["backend"]["device"] == "cpu"
    assert perf["key"]["precision"] == "h2d_pageable-64KiB"  # each probe variant keeps a baseline of its own
    assert perf["backend"]["details"]["bytes"] == "65536" and perf["schedule"]["batch_size"] == 1
    assert perf["run"]["query_count"] > 100 and perf["metrics"]["result_90.00_percentile_latency_ns"] > 0
    assert (Path(perf["log_dir"]) / "mlperf_log_detail.txt").is_file()
    assert acc["accuracy"]["samples"] > 1
    paths = sorted((pytester.path / "baselines" / "gpu-probe").glob("*.json"))
    assert [p.name.split("-cpu_")[0] for p in paths] == ["SingleStream-accuracy-torch_probe-h2d_pageable_64KiB",
                                                         "SingleStream-performance-torch_probe-h2d_pageable_64KiB"]
    predictions = json.loads(paths[0].read_text())["accuracy"]["predictions"]  # what later runs must match
    assert len(predictions) == acc["accuracy"]["samples"]
    assert all(index == output for index, output in predictions)  # every sample answered with its own index
