"""The system a result was measured on: the key part of a baseline, and the details recorded beside it.

GPU facts come from `nvidia-smi` (NVML underneath), queried from the pytest process without initialising
CUDA; CPU facts from /proc/cpuinfo and the platform module."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GPU:
    index: int
    uuid: str
    name: str
    driver: str
    memory_mib: int


@dataclass(frozen=True)
class SystemInfo:
    key: str
    details: dict[str, str] = field(default_factory=dict)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")


def parse_nvidia_smi(text: str) -> list[GPU]:
    """Lines of `nvidia-smi --query-gpu=index,uuid,name,driver_version,memory.total --format=csv,noheader,nounits`."""
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 5:
            continue
        try:
            gpus.append(GPU(int(parts[0]), parts[1], parts[2], parts[3], int(float(parts[4]))))
        except ValueError:
            continue
    return gpus


def visible(gpus: list[GPU], cuda_visible_devices: str | None) -> list[GPU]:
    """The GPUs CUDA_VISIBLE_DEVICES (indices or UUIDs, as CUDA reads it) leaves visible, in its order."""
    if cuda_visible_devices is None:
        return gpus
    chosen = []
    for token in filter(None, (t.strip() for t in cuda_visible_devices.split(","))):
        match = [g for g in gpus if str(g.index) == token or g.uuid == token or g.uuid.startswith(token)]
        if not match:
            break  # CUDA stops at the first invalid entry
        chosen.append(match[0])
    return chosen


def query_gpus() -> list[GPU]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,uuid,name,driver_version,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_nvidia_smi(out.stdout) if out.returncode == 0 else []


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def gpu_system(gpus: list[GPU]) -> SystemInfo:
    names = sorted({g.name for g in gpus})
    key = "+".join(f"{sum(g.name == n for g in gpus)}x{_slug(n)}" for n in names)
    return SystemInfo(key, {
        "gpus": "; ".join(f"{g.index}:{g.name}:{g.uuid}" for g in gpus),
        "driver": gpus[0].driver,
        "gpu_memory_mib": str(gpus[0].memory_mib),
        "cpu": cpu_model(),
    })


def cpu_system() -> SystemInfo:
    cores = os.cpu_count() or 1
    model = cpu_model()
    return SystemInfo(f"cpu-{_slug(model)}-{cores}c", {"cpu": model, "cores": str(cores), "machine": platform.machine()})


def describe_system(device: str, cuda_visible_devices: str | None = None) -> SystemInfo:
    """The system for a runner that ran on `device` ('cuda' or 'cpu') with these GPUs visible."""
    if device == "cuda":
        gpus = visible(query_gpus(), cuda_visible_devices if cuda_visible_devices is not None
                       else os.environ.get("CUDA_VISIBLE_DEVICES"))
        if gpus:
            return gpu_system(gpus)
    return cpu_system()
