"""ONNX Runtime backend for image classifiers (ResNet50): CUDA execution provider when present, CPU otherwise.

The loaded samples are staged once as one tensor on the device (an OrtValue bound through IO binding). The
model is wrapped with a `Gather` node in front, so a batch is named by its row indices: per batch only a few
int64 indices travel to the GPU and one int64 class per sample comes back. The bare-loop measurement
(runner/calibrate.py) uses this same path, so harness efficiency compares like with like.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from .base import BackendError, BackendInfo

SAMPLES = "pytest_mlperf_samples"
ROWS = "pytest_mlperf_rows"
_ARGMAX = "pytest_mlperf_argmax"


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value_info.type.tensor_type.shape.dim]


def wrap_with_gather(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str, int]:
    """Returns (wrapped model, output name, class offset). The wrapped model takes SAMPLES [n,3,224,224]
    float32 and ROWS [batch] int64 and returns one int64 class per row."""
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise BackendError(f"expected an image model with one input, found {[i.name for i in inputs]}")
    image = inputs[0]
    dims = _dims(image)
    if len(dims) != 4 or 3 not in (dims[1], dims[3]):
        raise BackendError(f"input {image.name!r} has shape {dims}; expected NCHW [N,3,H,W] or NHWC [N,H,W,3]")
    elem = image.type.tensor_type.elem_type
    nodes: list[onnx.NodeProto] = []
    current = "pytest_mlperf_gathered"
    nodes.append(helper.make_node("Gather", [SAMPLES, ROWS], [current], axis=0))
    if dims[1] != 3:  # NHWC model: our samples are NCHW
        nodes.append(helper.make_node("Transpose", [current], ["pytest_mlperf_nhwc"], perm=[0, 2, 3, 1]))
        current = "pytest_mlperf_nhwc"
    if elem != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [current], ["pytest_mlperf_cast"], to=elem))
        current = "pytest_mlperf_cast"
    nodes.append(helper.make_node("Identity", [current], [image.name]))

    output, offset, extra = _class_output(graph)
    new_nodes = nodes + list(graph.node) + extra
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.input.remove(image)
    graph.input.insert(0, helper.make_tensor_value_info(ROWS, TensorProto.INT64, ["batch"]))
    graph.input.insert(0, helper.make_tensor_value_info(SAMPLES, TensorProto.FLOAT, ["staged", 3, 224, 224]))
    keep = [o for o in graph.output if o.name == output]
    if not keep:
        keep = [helper.make_tensor_value_info(output, TensorProto.INT64, ["batch"])]
    del graph.output[:]
    graph.output.extend(keep)
    return model, output, offset


def _class_output(graph: onnx.GraphProto) -> tuple[str, int, list[onnx.NodeProto]]:
    """The int64 argmax output (adding an ArgMax over logits when the model has none) and the class offset:
    MLPerf's resnet50_v1.onnx has 1001 classes with 0 = background, so its classes are shifted by one."""
    ints = [o for o in graph.output if o.type.tensor_type.elem_type == TensorProto.INT64]
    floats = [o for o in graph.output if o.type.tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    classes = next((d for o in floats for d in _dims(o)[1:2] if isinstance(d, int)), 1000)
    offset = -1 if classes == 1001 else 0
    if ints:
        return ints[0].name, offset, []
    if not floats:
        raise BackendError("the model has neither an int64 class output nor float logits to take the argmax of")
    node = helper.make_node("ArgMax", [floats[0].name], [_ARGMAX], axis=1, keepdims=0)
    return _ARGMAX, offset, [node]


def providers_for(device: str) -> tuple[list[str], str]:
    """Execution providers for `device` ('auto', 'cuda', 'cpu') and the device they give."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise BackendError(
            "--mlperf-device=cuda, but this onnxruntime has no CUDA execution provider "
            f"(available: {available}). Install the GPU build: pip uninstall onnxruntime && "
            "pip install 'pytest-mlperf[gpu]' (onnxruntime-gpu)"
        )
    if device in ("cuda", "auto") and has_cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda"
    return ["CPUExecutionProvider"], "cpu"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class OrtClassifier:
    def __init__(self, model_path: Path, device: str, options: Mapping[str, object]) -> None:
        import onnxruntime as ort

        providers, resolved = providers_for(device)
        model, self._output, self._offset = wrap_with_gather(onnx.load(str(model_path)))
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # On CUDA the whole graph runs on the GPU: ORT's CPU thread pool (one spinning thread per core by default)
        # only competes for the cores that LoadGen's issue thread and the Python stream threads need.
        gpu = resolved == "cuda"
        threads = int(options.get("intra_op_threads", 1 if gpu else 0))  # type: ignore[call-overload]
        if threads:
            so.intra_op_num_threads = threads
        spinning = bool(options.get("allow_spinning", not gpu))
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = ort.InferenceSession(model.SerializeToString(), so, providers=providers)
        used = self.session.get_providers()
        if resolved == "cuda" and "CUDAExecutionProvider" not in used:
            if device == "cuda":
                raise BackendError(f"onnxruntime could not start its CUDA provider (session uses {used}); see its log")
            resolved = "cpu"
        self.device = resolved
        self._ort = ort
        self._staged: object | None = None
        self._rowmap = np.zeros(0, dtype=np.int64)
        self._generation = 0
        self._local = threading.local()
        self.info = BackendInfo(
            backend="onnxruntime",
            device=resolved,
            precision="fp32",
            details={
                "onnxruntime": ort.__version__,
                "providers": ",".join(used),
                "model": model_path.name,
                "model_sha256": file_sha256(model_path),
            },
        )

    def stage(self, indices: Sequence[int], samples: np.ndarray) -> None:
        data = np.ascontiguousarray(samples, dtype=np.float32)
        if data.ndim != 4 or data.shape[0] != len(indices):
            raise BackendError(f"expected {len(indices)} samples of [3,224,224], got an array of shape {data.shape}")
        where = "cuda" if self.device == "cuda" else "cpu"
        self._staged = self._ort.OrtValue.ortvalue_from_numpy(data, where, 0)
        rowmap = np.full(max(indices) + 1, -1, dtype=np.int64)
        rowmap[np.asarray(indices)] = np.arange(len(indices), dtype=np.int64)
        self._rowmap = rowmap
        self._generation += 1

    def _binding(self, batch: int) -> object:
        """One IO binding per thread and batch size: the staged samples stay bound, and the output buffer ORT
        allocated for this batch size is reused (a binding keeps its output's shape)."""
        local = self._local
        if getattr(local, "generation", None) != self._generation:
            local.bindings, local.generation = {}, self._generation
        binding = local.bindings.get(batch)
        if binding is None:
            binding = self.session.io_binding()
            binding.bind_ortvalue_input(SAMPLES, self._staged)
            binding.bind_output(self._output, "cpu")
            local.bindings[batch] = binding
        return binding

    def infer(self, indices: Sequence[int]) -> np.ndarray:
        if self._staged is None:
            raise BackendError("infer() before any samples were staged")
        rows = self._rowmap[np.asarray(indices, dtype=np.int64)]
        if (rows < 0).any():
            raise BackendError(f"samples {[i for i, r in zip(indices, rows) if r < 0][:5]} were not loaded")
        binding = self._binding(len(rows))
        binding.bind_cpu_input(ROWS, rows)  # type: ignore[attr-defined]
        self.session.run_with_iobinding(binding)  # type: ignore[arg-type]
        classes = binding.copy_outputs_to_cpu()[0]  # type: ignore[attr-defined]
        return (classes.astype(np.int64) + self._offset).astype(np.int32).reshape(-1, 1)

    def close(self) -> None:
        self._staged = None
        self._local = threading.local()
