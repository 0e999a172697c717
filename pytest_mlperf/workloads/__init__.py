"""The workloads pytest-mlperf knows, by name."""

from __future__ import annotations

from types import ModuleType

from pytest_mlperf.workloads.base import WorkloadSpec

_MODULES = {"resnet50": "resnet50", "llama3_1-8b": "llama3_1_8b", "null": "null", "gpu-probe": "gpu_probe"}


def workload_module(name: str) -> ModuleType:
    import importlib

    if name not in _MODULES:
        raise ValueError(f"unknown workload {name!r}: known workloads are {', '.join(sorted(_MODULES))}")
    return importlib.import_module(f"{__name__}.{_MODULES[name]}")


def workload_spec(name: str) -> WorkloadSpec:
    spec: WorkloadSpec = workload_module(name).SPEC
    return spec


def known_workloads() -> list[str]:
    return sorted(_MODULES)
