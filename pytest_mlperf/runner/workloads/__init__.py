"""The runner's half of each workload (dataset, model files, accuracy), found by the module its contract spec names
(contract/workloads.py holds the specs, which the pytest process reads too)."""

from __future__ import annotations

import importlib
from types import ModuleType

from pytest_mlperf.contract.workloads import workload_spec


def workload_module(name: str) -> ModuleType:
    """The runner module of workload `name`; ValueError naming the known workloads for any other."""
    return importlib.import_module(f"{__name__}.{workload_spec(name).module}")
