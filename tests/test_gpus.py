"""Tests for pytest_mlperf.host.machine.gpus: discovery through NVML (a fake pynvml here), the nvidia-smi fallback,
CUDA_VISIBLE_DEVICES, GPU state around a case, and worker / tensor-parallel placement. No GPU needed; the tests that
talk to a real NVML skip without one."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pytest_mlperf.host.machine import gpus
from pytest_mlperf.host.machine import system
from pytest_mlperf.host.machine.gpus import (
    PlacementError,
    assign_workers,
    auto_num_workers,
    clock_event_reasons,
    discover,
    gpu_ids,
    gpu_state,
    gpus_for_case,
    worker_gpu_env,
    worker_index,
)
from pytest_mlperf.host.machine.system import GPU

UUIDS = [
    "GPU-5d1e7c1a-9f3b-4c2e-8a6d-0123456789ab",
    "GPU-5d1e7c1a-0000-4c2e-8a6d-0123456789ac",
    "GPU-a0b1c2d3-e4f5-6789-abcd-ef0123456789",
    "GPU-ffffffff-1111-2222-3333-444444444444",
]
H100 = "NVIDIA H100 80GB HBM3"
MIB = 1024 * 1024


class FakeNVMLError(Exception):
    pass


class FakeNvml:
    """What host/machine/gpus.py uses of pynvml, over a list of device dicts; counts nvmlInit calls."""

    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0
    NVMLError = FakeNVMLError

    def __init__(self, devices: list[dict[str, Any]], *, init_error: bool = False, as_bytes: bool = False,
                 list_error: bool = False, old_reasons_api: bool = False):
        self.devices = devices
        self.init_error = init_error
        self.as_bytes = as_bytes
        self.list_error = list_error
        self.inits = 0
        if old_reasons_api:  # nvidia-ml-py before 12.535 only has the "throttle" name
            self.nvmlDeviceGetCurrentClocksThrottleReasons = self._reasons
        else:
            self.nvmlDeviceGetCurrentClocksEventReasons = self._reasons

    def _s(self, text: str) -> str | bytes:
        return text.encode() if self.as_bytes else text

    def _dev(self, handle: int) -> dict[str, Any]:
        return self.devices[handle]

    def _get(self, handle: int, field: str) -> Any:
        value = self._dev(handle).get(field)
        if value is None:
            raise FakeNVMLError("Not Supported")
        return value

    def nvmlInit(self) -> None:
        self.inits += 1
        if self.init_error:
            raise FakeNVMLError("Driver Not Loaded")

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        return self._s("580.65.06")

    def nvmlDeviceGetCount(self) -> int:
        if self.list_error:
            raise FakeNVMLError("GPU is lost")
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetIndex(self, handle: int) -> int:
        return handle

    def nvmlDeviceGetUUID(self, handle: int) -> str | bytes:
        return self._s(self._dev(handle)["uuid"])

    def nvmlDeviceGetName(self, handle: int) -> str | bytes:
        return self._s(self._dev(handle).get("name", H100))

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return type("Memory", (), {"total": self._dev(handle).get("memory", 81559 * MIB)})()

    def nvmlDeviceGetClockInfo(self, handle: int, clock: int) -> int:
        return self._get(handle, "sm" if clock == self.NVML_CLOCK_SM else "mem")

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self._get(handle, "temp")

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return self._get(handle, "power_mw")

    def _reasons(self, handle: int) -> int:
        return self._get(handle, "reasons")


def four_devices() -> list[dict[str, Any]]:
    return [{"uuid": u, "sm": 1980, "mem": 2619, "temp": 30 + i, "power_mw": 71234, "reasons": 0x1}
            for i, u in enumerate(UUIDS)]


@pytest.fixture(autouse=True)
def fresh_nvml():
    """NVML is initialised once per process (cached): every test starts without that cache."""
    gpus._nvml.cache_clear()
    yield
    gpus._nvml.cache_clear()


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch):
    def install(fake: FakeNvml | None) -> FakeNvml | None:
        monkeypatch.setitem(sys.modules, "pynvml", fake)  # None: `import pynvml` raises ImportError
        return fake

    return install


@pytest.fixture
def smi_gpus(monkeypatch: pytest.MonkeyPatch) -> list[GPU]:
    """What the nvidia-smi fallback would report (a different driver, to tell the two sources apart)."""
    listed = [GPU(i, u, "NVIDIA L4", "550.1", 23034) for i, u in enumerate(UUIDS[:2])]
    monkeypatch.setattr(gpus.system, "query_gpus", lambda: list(listed))
    return listed


# --------------------------------------------------------------------------- discover


def test_discover_through_nvml(nvml, smi_gpus) -> None:
    nvml(FakeNvml(four_devices()))
    found = discover({})
    assert found == [GPU(i, u, H100, "580.65.06", 81559) for i, u in enumerate(UUIDS)]


def test_discover_decodes_bytes_of_old_pynvml(nvml, smi_gpus) -> None:
    nvml(FakeNvml(four_devices(), as_bytes=True))
    found = discover({})
    assert [g.uuid for g in found] == UUIDS
    assert {g.name for g in found} == {H100} and {g.driver for g in found} == {"580.65.06"}


def test_discover_memory_is_mib_rounded_down(nvml, smi_gpus) -> None:
    nvml(FakeNvml([{"uuid": UUIDS[0], "memory": 143771 * MIB + MIB - 1}]))
    assert discover({})[0].memory_mib == 143771


@pytest.mark.parametrize("env, expected", [
    ("2,0", [2, 0]),  # CUDA's order, not NVML's
    (f"{UUIDS[3]},1", [3, 1]),
    ("GPU-a0b1c2d3", [2]),  # a UUID prefix
    ("", []),  # empty: every GPU hidden
    ("-1", []),
    ("0,9,1", [0]),  # CUDA stops at the first invalid entry
])
def test_discover_honours_cuda_visible_devices(nvml, smi_gpus, env: str, expected: list[int]) -> None:
    nvml(FakeNvml(four_devices()))
    assert [g.index for g in discover({"CUDA_VISIBLE_DEVICES": env})] == expected


def test_discover_reads_the_process_environment(nvml, smi_gpus, monkeypatch) -> None:
    nvml(FakeNvml(four_devices()))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert [g.uuid for g in discover()] == [UUIDS[3]]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert len(discover()) == 4


def test_discover_falls_back_to_nvidia_smi_without_pynvml(nvml, smi_gpus) -> None:
    nvml(None)
    assert discover({}) == smi_gpus
    assert [g.uuid for g in discover({"CUDA_VISIBLE_DEVICES": "1"})] == [UUIDS[1]]


def test_discover_falls_back_when_nvml_cannot_start_and_tries_once(nvml, smi_gpus) -> None:
    fake = nvml(FakeNvml(four_devices(), init_error=True))
    assert discover({}) == smi_gpus
    assert discover({}) == smi_gpus
    assert gpu_state(UUIDS[0])["sm_clock_mhz"] is None
    assert fake.inits == 1  # a failed init is not retried on every call


def test_discover_falls_back_when_the_listing_fails(nvml, smi_gpus) -> None:
    nvml(FakeNvml(four_devices(), list_error=True))
    assert discover({}) == smi_gpus


def test_nvml_is_initialised_once_per_process(nvml, smi_gpus) -> None:
    fake = nvml(FakeNvml(four_devices()))
    discover({})
    discover({})
    gpu_state(UUIDS[0])
    assert fake.inits == 1


def test_discover_through_a_real_nvidia_smi_fallback(nvml, tmp_path: Path, monkeypatch) -> None:
    nvml(None)
    smi = tmp_path / "nvidia-smi"
    lines = "".join(f"{i}, {u}, {H100}, 580.65.06, 81559\\n" for i, u in enumerate(UUIDS[:3]))
    smi.write_text(f"#!/bin/sh\nprintf '{lines}'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert [g.uuid for g in discover({"CUDA_VISIBLE_DEVICES": "2,0"})] == [UUIDS[2], UUIDS[0]]


def test_no_nvml_and_no_nvidia_smi_is_no_gpu(nvml, tmp_path: Path, monkeypatch) -> None:
    nvml(None)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no nvidia-smi
    assert discover({}) == []
    assert auto_num_workers(discover({})) is None


def test_real_pynvml_without_a_driver_falls_back_cleanly(smi_gpus) -> None:
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("NVML starts here (a GPU machine): see test_real_nvml_matches_nvidia_smi")
    assert discover({}) == smi_gpus
    assert gpus._nvml() is None
    assert set(gpu_state(UUIDS[0]).values()) == {UUIDS[0], None}


def _nvml_works() -> bool:
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception:
        return False
    return True


@pytest.mark.skipif(shutil.which("nvidia-smi") is None or not _nvml_works(), reason="needs NVML and nvidia-smi")
def test_real_nvml_matches_nvidia_smi() -> None:
    by_nvml = discover({})
    by_smi = system.query_gpus()
    assert by_nvml, "NVML sees no GPU"
    def ident(g: GPU) -> tuple[int, str, str, str]:
        return g.index, g.uuid, g.name, g.driver

    assert [ident(g) for g in by_nvml] == [ident(g) for g in by_smi]
    assert all(abs(a.memory_mib - b.memory_mib) <= 1 for a, b in zip(by_nvml, by_smi))
    state = gpu_state(by_nvml[0].uuid)
    assert state["index"] == by_nvml[0].index and state["name"] == by_nvml[0].name
    assert state["sm_clock_mhz"] > 0 and state["memory_clock_mhz"] > 0
    assert 0 < state["temperature_c"] < 120
    assert isinstance(state["clock_event_reasons"], list)


# Run in a fresh interpreter: discovery and state, then whether CUDA was initialised. NVML itself maps libcuda (the
# 580 drivers do) without initialising it, so the probe asks the driver: cuDeviceGetCount answers
# CUDA_ERROR_NOT_INITIALIZED (3) until someone calls cuInit.
CUDA_PROBE = """
import ctypes, sys
import pytest_mlperf.host.machine.gpus as g
g.discover(); g.gpu_state("GPU-x")
heavy = {"torch", "onnxruntime", "cupy", "pycuda", "cuda", "tensorrt", "mlperf_loadgen", "numpy", "jax"}
print(sorted({m.split(".")[0] for m in sys.modules} & heavy))
try:
    cuda = ctypes.CDLL("libcuda.so.1")
except OSError:
    print("no CUDA driver")
else:
    if sys.argv[1:] == ["--control"]:
        cuda.cuInit(0)
    n = ctypes.c_int()
    print("initialised" if cuda.cuDeviceGetCount(ctypes.byref(n)) != 3 else "not initialised")
"""


def test_discovery_never_initialises_cuda_or_imports_a_framework() -> None:
    out = subprocess.run([sys.executable, "-c", CUDA_PROBE], capture_output=True, text=True, timeout=60, check=True)
    imported, cuda = out.stdout.splitlines()[:2]
    assert imported == "[]", out.stdout + out.stderr
    assert cuda in ("no CUDA driver", "not initialised"), out.stdout + out.stderr
    if cuda == "not initialised":  # the probe can tell: after cuInit it says so
        control = subprocess.run([sys.executable, "-c", CUDA_PROBE, "--control"], capture_output=True, text=True,
                                 timeout=60, check=True)
        assert control.stdout.splitlines()[1] == "initialised"


def test_gpu_ids_prefer_uuids() -> None:
    assert gpu_ids([GPU(0, UUIDS[0], H100, "1", 1), GPU(3, "", H100, "1", 1)]) == [UUIDS[0], "3"]


# --------------------------------------------------------------------------- gpu_state


def test_gpu_state_reads_clocks_temperature_power_and_reasons(nvml, smi_gpus) -> None:
    devices = four_devices()
    devices[2].update(sm=1755, mem=2619, temp=71, power_mw=699_500, reasons=0x4 | 0x20)
    nvml(FakeNvml(devices))
    assert gpu_state(UUIDS[2]) == {
        "index": 2, "uuid": UUIDS[2], "name": H100, "sm_clock_mhz": 1755, "memory_clock_mhz": 2619,
        "temperature_c": 71, "power_w": 699.5, "clock_event_reasons": ["sw_power_cap", "sw_thermal_slowdown"],
    }


def test_gpu_state_unsupported_values_are_none(nvml, smi_gpus) -> None:
    devices = four_devices()
    devices[0].update(power_mw=None, mem=None)
    nvml(FakeNvml(devices))
    state = gpu_state(UUIDS[0])
    assert state["power_w"] is None and state["memory_clock_mhz"] is None
    assert state["sm_clock_mhz"] == 1980 and state["temperature_c"] == 30


def test_gpu_state_with_the_old_throttle_reasons_api(nvml, smi_gpus) -> None:
    devices = four_devices()
    devices[1]["reasons"] = 0x40
    nvml(FakeNvml(devices, old_reasons_api=True))
    assert gpu_state(UUIDS[1])["clock_event_reasons"] == ["hw_thermal_slowdown"]


def test_gpu_state_of_an_unknown_gpu(nvml, smi_gpus) -> None:
    nvml(FakeNvml(four_devices()))
    state = gpu_state("GPU-not-here")
    assert state["uuid"] == "GPU-not-here"
    assert [k for k, v in state.items() if v is not None] == ["uuid"]


def test_gpu_state_without_nvml(nvml, smi_gpus) -> None:
    nvml(None)
    state = gpu_state(UUIDS[0])
    assert list(state) == list(gpus.STATE_FIELDS)
    assert {k: v for k, v in state.items() if v is not None} == {"uuid": UUIDS[0]}


def test_clock_event_reasons_decodes_every_bit() -> None:
    assert clock_event_reasons(0) == []
    assert clock_event_reasons(0x1 | 0x8 | 0x100) == ["gpu_idle", "hw_slowdown", "display_clock_setting"]
    assert len(clock_event_reasons(0x1FF)) == 9


# --------------------------------------------------------------------------- placement


def test_auto_num_workers() -> None:
    assert auto_num_workers([]) is None  # xdist's own choice: the plugin is loaded in unit-test sessions too
    assert auto_num_workers(UUIDS[:1]) == 1
    assert auto_num_workers(UUIDS) == 4


def test_assign_workers_one_gpu_each_in_order() -> None:
    assert assign_workers(UUIDS, 4) == UUIDS
    assert assign_workers(UUIDS, 2) == UUIDS[:2]
    assert assign_workers(UUIDS[::-1], 1) == [UUIDS[3]]


def test_assign_workers_more_workers_than_gpus() -> None:
    with pytest.raises(PlacementError) as exc:
        assign_workers(UUIDS[:2], 3)
    message = str(exc.value)
    assert "3 pytest-xdist workers" in message and "2 GPU(s) visible" in message
    assert UUIDS[0] in message and UUIDS[1] in message
    assert "-n auto" in message and "-n 2" in message and "CUDA_VISIBLE_DEVICES" in message
    assert isinstance(exc.value, ValueError)


def test_assign_workers_without_gpus_runs_on_the_cpu() -> None:
    assert assign_workers([], 1) == [""]
    assert assign_workers([], 3) == ["", "", ""]


@pytest.mark.parametrize("n", [0, -1])
def test_assign_workers_needs_a_worker(n: int) -> None:
    with pytest.raises(PlacementError, match="at least one worker"):
        assign_workers(UUIDS, n)


def test_gpus_for_case_one_gpu_is_home() -> None:
    for home in UUIDS:
        assert gpus_for_case(home, UUIDS, 1) == (home,)


def test_gpus_for_case_takes_the_next_gpus_cyclically() -> None:
    assert gpus_for_case(UUIDS[1], UUIDS, 2) == (UUIDS[1], UUIDS[2])
    assert gpus_for_case(UUIDS[3], UUIDS, 2) == (UUIDS[3], UUIDS[0])
    assert gpus_for_case(UUIDS[2], UUIDS, 4) == (UUIDS[2], UUIDS[3], UUIDS[0], UUIDS[1])


def test_gpus_for_case_spreads_groups_evenly() -> None:
    """With every worker's home, each GPU is in exactly k groups: no GPU is everyone's second choice."""
    eight = [f"GPU-{i}" for i in range(8)]
    for k in (1, 2, 4, 8):
        groups = [gpus_for_case(home, eight, k) for home in eight]
        assert all(len(set(g)) == k for g in groups)
        assert Counter(u for g in groups for u in g) == {u: k for u in eight}


def test_gpus_for_case_needs_enough_gpus() -> None:
    with pytest.raises(PlacementError) as exc:
        gpus_for_case(UUIDS[0], UUIDS[:2], 4)
    message = str(exc.value)
    assert "needs 4 GPUs" in message and "only 2" in message and "CUDA_VISIBLE_DEVICES" in message
    with pytest.raises(PlacementError, match="none is visible"):
        gpus_for_case("", [], 1)


def test_gpus_for_case_rejects_bad_input() -> None:
    with pytest.raises(PlacementError, match="at least one GPU"):
        gpus_for_case(UUIDS[0], UUIDS, 0)
    with pytest.raises(PlacementError, match="not among the visible GPUs"):
        gpus_for_case("GPU-elsewhere", UUIDS, 2)


def test_worker_gpu_env_pins_the_runner() -> None:
    env = worker_gpu_env((UUIDS[2], UUIDS[0]))
    assert env == {"CUDA_VISIBLE_DEVICES": f"{UUIDS[2]},{UUIDS[0]}", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    everything = [GPU(i, u, H100, "1", 1) for i, u in enumerate(UUIDS)]
    # what the runner's CUDA will see, in its order
    assert [g.index for g in system.visible(everything, env["CUDA_VISIBLE_DEVICES"])] == [2, 0]
    assert worker_gpu_env(())["CUDA_VISIBLE_DEVICES"] == ""
    assert system.visible(everything, worker_gpu_env(())["CUDA_VISIBLE_DEVICES"]) == []


@pytest.mark.parametrize("worker_id, index", [("gw0", 0), ("gw7", 7), ("gw12", 12), ("master", 0), ("", 0)])
def test_worker_index(worker_id: str, index: int) -> None:
    assert worker_index(worker_id) == index


@pytest.mark.parametrize("worker_id", ["gw", "w1", "gw-1", "gw1x"])
def test_worker_index_rejects_other_ids(worker_id: str) -> None:
    with pytest.raises(PlacementError, match="worker id"):
        worker_index(worker_id)


def test_placement_end_to_end_on_four_gpus(nvml, monkeypatch) -> None:
    """discover -> workers -> a 2-GPU case on each worker -> the runner's environment."""
    nvml(FakeNvml(four_devices()))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,2,3")
    ids = gpu_ids(discover())
    homes = assign_workers(ids, auto_num_workers(ids) or 1)
    assert homes == UUIDS[1:]
    envs = [worker_gpu_env(gpus_for_case(home, ids, 2))["CUDA_VISIBLE_DEVICES"] for home in homes]
    assert envs == [f"{UUIDS[1]},{UUIDS[2]}", f"{UUIDS[2]},{UUIDS[3]}", f"{UUIDS[3]},{UUIDS[1]}"]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1,2,3"  # placement never changes the caller's environment


# --------------------------------------------------------------------------- memory of ended runners


def test_gpu_processes_read_nvml_and_drop_unknown_memory(nvml) -> None:
    fake = nvml(FakeNvml(four_devices()))
    proc = type("Proc", (), {})
    listed = []
    for pid, used in ((501, 128 * 2**30), (502, None), (503, 0xFFFFFFFFFFFFFFFF)):
        p = proc()
        p.pid, p.usedGpuMemory = pid, used
        listed.append(p)
    fake.nvmlDeviceGetHandleByUUID = lambda uuid: UUIDS.index(uuid)
    fake.nvmlDeviceGetComputeRunningProcesses = lambda handle: listed if handle == 1 else []
    assert gpus.gpu_processes(UUIDS[1]) == [(501, 128 * 2**30), (502, None), (503, None)]
    assert gpus.gpu_processes(UUIDS[0]) == []
    nvml(None)
    gpus._nvml.cache_clear()
    assert gpus.gpu_processes(UUIDS[1]) == []  # no NVML: nothing to say


def test_a_case_notes_gpu_memory_held_by_processes_of_ended_runners() -> None:
    listed = {UUIDS[0]: [(4242, int(128.7 * 2**30)), (777, 2**30)], UUIDS[1]: [(4300, None)]}
    groups = {4242: 4200, 777: 777, 4300: 4300}  # 4242: vLLM's EngineCore, in the group of ended runner 4200
    notes = gpus.leftover_notes([UUIDS[0], UUIDS[1]], {4200, 4300}, processes=lambda u: listed[u],
                                group_of=groups.get)
    assert len(notes) == 2
    assert f"GPU {UUIDS[0]} still holds 128.7 GiB of processes of ended runners (pid 4242)" in notes[0]
    assert "777" not in notes[0]  # someone else's process is not ours to report
    assert f"GPU {UUIDS[1]} still holds memory of processes of ended runners (pid 4300)" in notes[1]
    assert gpus.leftover_notes([UUIDS[0]], set(), processes=lambda u: listed[u], group_of=groups.get) == []
