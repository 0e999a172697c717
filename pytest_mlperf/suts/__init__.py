"""Backends by name. The names and their options (base.OPTION_NAMES) are cheap to import, and the plugin checks
--mlperf-sut-option against them; a backend's own module is imported only in a runner process, by create_backend
(backends may initialise CUDA)."""

from __future__ import annotations

import importlib.util
from types import ModuleType
from typing import TYPE_CHECKING

from .base import OPTION_NAMES, Backend, BackendError

if TYPE_CHECKING:  # only for the annotation: importing runner/ here at run time would make an import cycle
    from ..runner.protocol import LoadRequest

BACKENDS = tuple(OPTION_NAMES)


def create_backend(req: LoadRequest, workload: ModuleType) -> Backend:
    if req.backend == "null":
        from .null import NullBackend

        return NullBackend(req.options)
    if req.backend == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise BackendError(
                "onnxruntime is not installed: pip install 'pytest-mlperf[cpu]' (CPU) or 'pytest-mlperf[gpu]' (CUDA)"
            ) from None
        from .onnxruntime import OrtClassifier

        return OrtClassifier(workload.model_file(req.data), req.device, req.options)
    if req.backend == "transformers":
        if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
            raise BackendError(
                "torch and transformers are not installed: pip install 'pytest-mlperf[llm]' "
                "(on a GPU machine install a CUDA build of torch first)"
            )
        from .transformers_llm import TransformersLLM

        return TransformersLLM(workload.model_dir(req.data), req.device, req.options)  # type: ignore[return-value]
    if req.backend == "vllm":
        from .vllm_llm import VllmLLM, vllm_missing

        missing = vllm_missing()
        if missing:
            raise BackendError(missing)
        return VllmLLM(workload.model_dir(req.data), req.device, req.options)  # type: ignore[return-value]
    if req.backend == "torch-probe":
        if importlib.util.find_spec("torch") is None:
            raise BackendError("the torch-probe backend needs torch: pip install torch "
                               "(on a GPU machine a CUDA build: https://pytorch.org/get-started/locally/)")
        from .torch_probe import TorchProbe

        return TorchProbe(req.device, req.options)
    raise BackendError(f"unknown backend {req.backend!r}: known backends are {', '.join(BACKENDS)}")
