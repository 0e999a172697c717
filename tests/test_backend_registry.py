"""contract/backends.py: one entry per backend, and what the rest of the package reads from it."""

from __future__ import annotations

import importlib
import importlib.util

import pytest

from pytest_mlperf.contract.protocol import DataRequest, LoadRequest
from pytest_mlperf.runner.backends import BACKENDS, create_backend
from pytest_mlperf.runner.backends.base import OPTION_NAMES, BackendError
from pytest_mlperf.contract.backends import BACKENDS as REGISTRY
from pytest_mlperf.contract.backends import BackendEntry, Kind, backend_entry
from pytest_mlperf.runner.workloads import null as null_workload


def test_every_entry_names_a_class_that_exists_without_importing_it() -> None:
    for entry in REGISTRY.values():
        module_name, class_name = entry.factory.split(":")
        spec = importlib.util.find_spec(f"pytest_mlperf.runner.backends.{module_name}")
        assert spec is not None and spec.origin is not None, entry
        with open(spec.origin, encoding="utf-8") as f:
            assert f"class {class_name}" in f.read(), entry


def test_the_kinds_are_the_ones_the_runner_serves() -> None:
    kinds = {name: entry.kind for name, entry in REGISTRY.items()}
    assert kinds == {"onnxruntime": Kind.BATCHING, "null": Kind.BATCHING, "torch-probe": Kind.BATCHING,
                     "transformers": Kind.GENERATION, "vllm": Kind.SERVING}


def test_the_option_names_and_the_backend_list_come_from_the_registry() -> None:
    assert OPTION_NAMES == {name: entry.options for name, entry in REGISTRY.items()}
    assert BACKENDS == tuple(REGISTRY)


def test_an_unknown_backend_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown backend 'tensorrt': known backends are onnxruntime, transformers"):
        backend_entry("tensorrt")
    req = LoadRequest(DataRequest("null", None, None), "tensorrt", "cpu", {})
    with pytest.raises(BackendError, match="unknown backend 'tensorrt'"):
        create_backend(req, null_workload)


def test_create_backend_builds_from_the_entry_s_arguments() -> None:
    req = LoadRequest(DataRequest("null", None, None), "null", "cpu", {"delay_ms": 0})
    backend = create_backend(req, null_workload)
    assert backend.info.backend == "null" and backend.info.details["delay_ms"] == "0"


def test_a_missing_package_gives_the_entry_s_message(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else find_spec(name, *a))
    req = LoadRequest(DataRequest("resnet50", None, None), "onnxruntime", "cpu", {})
    with pytest.raises(BackendError, match=r"onnxruntime is not installed: pip install 'pytest-mlperf\[cpu\]'"):
        create_backend(req, null_workload)


@pytest.mark.parametrize("bad", [{"args": ("weights",)}, {"factory": "null.NullBackend"}, {"needs": ("torch",)}])
def test_a_malformed_entry_is_refused(bad: dict) -> None:
    fields = {"name": "x", "kind": Kind.BATCHING, "options": (), "factory": "null:NullBackend", "args": ("options",),
              **bad}
    with pytest.raises(ValueError, match="bad backend entry"):
        BackendEntry(**fields)
