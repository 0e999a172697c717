"""GPU discovery and placement for many-GPU sessions: which GPUs this process may use, which one each pytest-xdist
worker owns, which ones a tensor-parallel case takes, and the clocks and temperature recorded around a case.

Discovery goes through NVML (the `pynvml` module of the nvidia-ml-py package, in the `gpu` extra) and falls back to
`nvidia-smi` (system.query_gpus) where NVML cannot be loaded. Neither initialises CUDA, so the pytest processes stay
free of it (docs/architecture.md, "Runner process"); NVML of recent drivers maps libcuda into the process but never
calls cuInit (tests/test_gpus.py asks the driver). GPUs are named by UUID wherever one is known: NVML and
nvidia-smi number GPUs in PCI bus order, CUDA by default "fastest first", so an index can name two different GPUs
on a machine with mixed models, while a UUID names the same GPU for NVML, nvidia-smi and CUDA.

Placement is pure: worker i owns gpu_ids[i]; a case that needs k GPUs takes its worker's GPU and the k-1 after it
in a fixed cyclic order. Placement alone does not make a GPU exclusive: the per-GPU locks (host/machine/gpulock.py) do, across
workers and across pytest sessions."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pytest_mlperf.host.machine import system
from pytest_mlperf.host.machine.system import GPU


class PlacementError(ValueError):
    """The GPUs visible cannot hold the workers or the case asked for; the message says what to change."""


# --------------------------------------------------------------------------- NVML


@functools.lru_cache(maxsize=1)
def _nvml() -> Any | None:
    """The initialised pynvml module, or None when nvidia-ml-py is missing or NVML cannot start (no driver, no GPU,
    library not found). Initialised once per process and never shut down: nvmlInit can take seconds on a machine
    without persistence mode, and gpu_state is called at the start and end of every case."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except (pynvml.NVMLError, OSError):
        return None
    return pynvml


def _text(value: str | bytes) -> str:
    """NVML strings: str from nvidia-ml-py >= 11.5, bytes from older releases."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _nvml_devices(nvml: Any) -> list[tuple[GPU, Any]]:
    """Every GPU NVML sees (CUDA_VISIBLE_DEVICES does not apply to NVML), with its handle. Raises NVMLError."""
    driver = _text(nvml.nvmlSystemGetDriverVersion())
    out = []
    for i in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        gpu = GPU(
            index=int(nvml.nvmlDeviceGetIndex(handle)),
            uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
            name=_text(nvml.nvmlDeviceGetName(handle)),
            driver=driver,
            memory_mib=int(nvml.nvmlDeviceGetMemoryInfo(handle).total) // (1024 * 1024),
        )
        out.append((gpu, handle))
    return out


def all_gpus() -> list[GPU]:
    """Every GPU of the machine in NVML (PCI bus) order, whatever CUDA_VISIBLE_DEVICES says: through NVML, else
    through nvidia-smi; [] without a driver or a GPU."""
    nvml = _nvml()
    if nvml is not None:
        try:
            return [gpu for gpu, _ in _nvml_devices(nvml)]
        except nvml.NVMLError:
            pass  # a GPU that fell off the bus fails the whole listing; nvidia-smi reports what it still can
    return system.query_gpus()


def discover(environ: Mapping[str, str] | None = None) -> list[GPU]:
    """The GPUs this process may use: all_gpus() narrowed by the CUDA_VISIBLE_DEVICES of `environ` (default: this
    process's environment) as CUDA reads it (indices or UUIDs, full or prefix, in its order; unset means all, empty
    means none). Never initialises CUDA."""
    env = os.environ if environ is None else environ
    return system.visible(all_gpus(), env.get("CUDA_VISIBLE_DEVICES"))


def gpu_ids(gpus: Sequence[GPU]) -> list[str]:
    """The stable identifiers placement works with: UUIDs, or the index where a GPU reported none."""
    return [g.uuid or str(g.index) for g in gpus]


# --------------------------------------------------------------------------- state around a case

STATE_FIELDS = ("index", "uuid", "name", "sm_clock_mhz", "memory_clock_mhz", "temperature_c", "power_w",
                "clock_event_reasons")

# NVML's clocks event (formerly "throttle") reason bits: why the clocks are below their maximum. Thermal and power
# reasons at the end of a case explain a throughput drop better than the number alone.
CLOCK_EVENT_REASONS = (
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
)


def clock_event_reasons(mask: int) -> list[str]:
    """The names of the reason bits set in an NVML clocks event mask."""
    return [name for bit, name in CLOCK_EVENT_REASONS if mask & bit]


def _query(nvml: Any, call: Callable[[], Any]) -> Any | None:
    """One NVML query, None where the board does not support it (many report no power or no memory clock)."""
    try:
        return call()
    except nvml.NVMLError:
        return None


def gpu_state(uuid: str) -> dict[str, Any]:
    """Index, UUID, name, SM and memory clocks (MHz), temperature (°C), power draw (W) and clock event reasons of one
    GPU now, to record at the start and end of a case (a hot or power-capped GPU explains a slow run). Every value but
    the UUID is None when NVML is unavailable or does not know the GPU; a value the board does not report is None."""
    state: dict[str, Any] = dict.fromkeys(STATE_FIELDS)
    state["uuid"] = uuid
    nvml = _nvml()
    if nvml is None:
        return state
    try:
        match = [(gpu, handle) for gpu, handle in _nvml_devices(nvml) if gpu.uuid == uuid]
    except nvml.NVMLError:
        return state
    if not match:
        return state
    gpu, handle = match[0]
    state["index"] = gpu.index
    state["name"] = gpu.name
    state["sm_clock_mhz"] = _query(nvml, lambda: int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)))
    state["memory_clock_mhz"] = _query(nvml, lambda: int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM)))
    state["temperature_c"] = _query(
        nvml, lambda: int(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)))
    power_mw = _query(nvml, lambda: nvml.nvmlDeviceGetPowerUsage(handle))
    state["power_w"] = None if power_mw is None else round(power_mw / 1000.0, 1)
    reasons = (getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
               or getattr(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None))
    mask = None if reasons is None else _query(nvml, lambda: reasons(handle))
    state["clock_event_reasons"] = None if mask is None else clock_event_reasons(int(mask))
    return state


# --------------------------------------------------------------------------- placement


def auto_num_workers(gpus: Sequence[object]) -> int | None:
    """`-n auto`: one worker per visible GPU. Without a GPU, None: pytest-xdist's own choice, because the plugin is
    loaded in every pytest session of the environment (unit tests too), and CPU benchmark cases that then run side
    by side are flagged in the results (report.sharing_note)."""
    return len(gpus) or None


def worker_index(worker_id: str) -> int:
    """0, 1, ... for pytest-xdist's worker ids gw0, gw1, ...; 0 for the controller of a session without workers
    ("master" or empty)."""
    if worker_id in ("", "master"):
        return 0
    m = re.fullmatch(r"gw(\d+)", worker_id)
    if m is None:
        raise PlacementError(f"unexpected pytest-xdist worker id {worker_id!r} (expected gw0, gw1, ...)")
    return int(m.group(1))


def assign_workers(gpu_ids: Sequence[str], n_workers: int) -> list[str]:
    """The home GPU of each worker: worker i gets gpu_ids[i]; GPUs past n_workers are left for tensor-parallel cases.

    Without a GPU every worker gets "" (no GPU: its runners see CUDA_VISIBLE_DEVICES="" and run on the CPU). That is
    allowed, not an error, so that CPU-only sessions (accuracy runs, functional checks) can still spread over workers;
    their timings are not comparable to a baseline, which the results table says (report.sharing_note).

    More workers than GPUs raises PlacementError: two workers on one GPU would measure each other."""
    if n_workers < 1:
        raise PlacementError(f"at least one worker is needed, got {n_workers}")
    if not gpu_ids:
        return [""] * n_workers
    if n_workers > len(gpu_ids):
        raise PlacementError(
            f"{n_workers} pytest-xdist workers but {len(gpu_ids)} GPU(s) visible ({', '.join(gpu_ids)}): each worker "
            f"needs a GPU of its own, or concurrent cases would share one and measure each other. Use -n auto (one "
            f"worker per GPU) or at most -n {len(gpu_ids)}, or make more GPUs visible with CUDA_VISIBLE_DEVICES"
        )
    return list(gpu_ids[:n_workers])


def gpus_for_case(home: str, gpu_ids: Sequence[str], k: int) -> tuple[str, ...]:
    """The GPUs of a case that needs k of them (tensor parallel), run by the worker whose home GPU is `home`: home and
    the k-1 GPUs after it in gpu_ids, wrapping around. The order is fixed so that every worker computes the same
    groups; two cases whose groups overlap take turns through the per-GPU locks."""
    if k < 1:
        raise PlacementError(f"a case needs at least one GPU, got {k}")
    if k > len(gpu_ids):
        visible = f"only {len(gpu_ids)} ({', '.join(gpu_ids)}) are" if gpu_ids else "none is"
        raise PlacementError(
            f"the case needs {k} GPUs (tensor parallel) but {visible} visible: run it on a machine with at least {k} "
            "GPUs, or make more of them visible with CUDA_VISIBLE_DEVICES"
        )
    if home not in gpu_ids:
        raise PlacementError(f"home GPU {home!r} is not among the visible GPUs ({', '.join(gpu_ids)})")
    start = list(gpu_ids).index(home)
    return tuple(gpu_ids[(start + j) % len(gpu_ids)] for j in range(k))


def worker_gpu_env(gpus: Sequence[str]) -> dict[str, str]:
    """Environment for a runner that may use exactly `gpus` (in this order: the first is CUDA device 0); () hides
    every GPU. CUDA_DEVICE_ORDER=PCI_BUS_ID makes CUDA number GPUs as NVML and nvidia-smi do, so that an index
    (where no UUID was known) names the same GPU inside the runner as here."""
    return {"CUDA_VISIBLE_DEVICES": ",".join(gpus), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


# --------------------------------------------------------------------------- memory left behind by ended runners

# NVML's "not available" for a process's GPU memory (older nvidia-ml-py returns it as is, newer as None)
_NOT_AVAILABLE = 0xFFFFFFFFFFFFFFFF


def gpu_processes(uuid: str) -> list[tuple[int, int | None]]:
    """(pid, GPU memory used in bytes, None where NVML does not say) of every compute process NVML lists on the GPU;
    [] without NVML. The pids are the host's: inside a container of its own pid namespace they name nothing here."""
    nvml = _nvml()
    if nvml is None:
        return []
    try:
        handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
        procs = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except (nvml.NVMLError, AttributeError):
        return []
    out = []
    for p in procs:
        used = getattr(p, "usedGpuMemory", None)
        out.append((int(p.pid), None if used is None or int(used) == _NOT_AVAILABLE else int(used)))
    return out


def _process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def leftover_notes(gpus: Sequence[str], ended: set[int],
                   processes: Callable[[str], list[tuple[int, int | None]]] = gpu_processes,
                   group_of: Callable[[int], int | None] = _process_group) -> list[str]:
    """A note per GPU of the case that still holds memory of processes of ended runners: pids this session
    started (`ended`: runner/client.RunnerPool.ended_pids), or members of an ended runner's process group (its
    pid is the group's id). Such memory is what made every later case on the GPU fail, so the case says so."""
    notes = []
    for uuid in gpus:
        left = [(pid, used) for pid, used in processes(uuid) if pid in ended or group_of(pid) in ended]
        if not left:
            continue
        known = [used for _, used in left if used is not None]
        amount = f"{sum(known) / 2**30:.1f} GiB" if known else "memory"
        pids = ", ".join(str(pid) for pid, _ in left)
        notes.append(f"GPU {uuid} still holds {amount} of processes of ended runners (pid {pids}): this case may "
                     "lack GPU memory and measure less; end those processes (kill -9) or wait for them to exit")
    return notes
