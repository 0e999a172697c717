"""Backends by name: `create_backend` builds the one a runner's load request names, from its entry in
contract/backends.py (standard library only, so the plugin checks --mlperf-sut-option against it). A backend's own module is
imported only here, in a runner process (backends may initialise CUDA)."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from types import ModuleType
from typing import Any

from pytest_mlperf.contract.backends import BACKENDS as REGISTRY
from pytest_mlperf.contract.backends import backend_entry
from pytest_mlperf.contract.protocol import LoadRequest
from pytest_mlperf.runner.backends.base import Backend, BackendError

BACKENDS = tuple(REGISTRY)


def create_backend(req: LoadRequest, workload: ModuleType) -> Backend:
    """The backend `req` names, built from what its registry entry says (its model file or directory from
    `workload`, the device, the options); BackendError when it is unknown or what it needs is not installed."""
    try:
        entry = backend_entry(req.backend)
    except ValueError as exc:
        raise BackendError(str(exc)) from None
    if any(importlib.util.find_spec(name) is None for name in entry.needs):
        raise BackendError(entry.missing)
    module_name, class_name = entry.factory.split(":")
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except ImportError as exc:  # installed, but it (or a library under it) does not import
        raise BackendError(f"{entry.missing or f'the {entry.name} backend does not import'} ({exc})") from exc
    supply: dict[str, Callable[[], Any]] = {
        "model_file": lambda: workload.model_file(req.data),
        "model_dir": lambda: workload.model_dir(req.data),
        "device": lambda: req.device,
        "options": lambda: req.options,
    }
    backend: Backend = getattr(module, class_name)(*(supply[arg]() for arg in entry.args))
    return backend
