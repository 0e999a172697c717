"""ONNX Runtime backend for image classifiers (ResNet50): CUDA execution provider when present, CPU otherwise.

The loaded samples are staged once as one tensor on the device (an OrtValue bound through IO binding). The
model is wrapped with a `Gather` node in front, so a batch is named by its row indices: per batch only a few
int64 indices travel to the GPU and one int64 class per sample comes back. The bare-loop measurement
(runner/calibrate.py) uses this same path, so harness efficiency compares like with like.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from pytest_mlperf.runner.backends.base import BackendError, BackendInfo, check_option_names, option_int, parse_flag

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


def cuda_provider(options: Mapping[str, str], graphs: bool) -> tuple[str, dict[str, str]]:
    """The CUDA execution provider with its options: `options` (the backend's, as ORT spells them) and, for a
    graph session, `enable_cuda_graph`."""
    return "CUDAExecutionProvider", {**options, **({"enable_cuda_graph": "1"} if graphs else {})}


PREFER_NHWC_DEFAULT = True  # H200, ResNet50 fp32: Offline +19.7%, Server VALID at 85% for 60 s (docs/performance.md)


def cuda_options(options: Mapping[str, object]) -> dict[str, str]:
    """The CUDA provider options (as ORT spells them) that the backend's own options ask for: `prefer_nhwc`
    (default on) runs convolutions in cuDNN's NHWC layout, which the H200's tensor-core kernels want; `false`
    keeps ORT's own NCHW."""
    nhwc = _flag(options, "prefer_nhwc", PREFER_NHWC_DEFAULT)
    return {"prefer_nhwc": "1" if nhwc else "0"}


def cuda_reported(session: object, key: str) -> str:
    """The CUDA provider's option `key` as the session reports it ("unknown" where it does not say)."""
    try:
        options = session.get_provider_options()  # type: ignore[attr-defined]
    except AttributeError:
        return "unknown"
    return str(options.get("CUDAExecutionProvider", {}).get(key, "unknown"))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _flag(options: Mapping[str, object], key: str, default: bool) -> bool:
    value = options.get(key, default)
    try:
        return parse_flag(value)
    except ValueError:
        raise BackendError(f"sut option {key}={value!r}: expected true or false") from None


class CaptureGate:
    """Runs share the GPU; a CUDA graph capture runs alone. ONNX Runtime captures in CUDA's global mode, in which
    another thread's stream synchronisation during a capture fails ("CUDA failure 900: operation not permitted
    when stream is capturing": Offline and Server on the H200, whose stream threads warm up at the same time).
    A waiting capture holds new runs back, so busy streams cannot starve it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self._captures = 0  # captures running or waiting
        self._capturing = False

    @contextmanager
    def run(self) -> Iterator[None]:
        with self._cond:
            while self._captures:
                self._cond.wait()
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    @contextmanager
    def capture(self) -> Iterator[None]:
        with self._cond:
            self._captures += 1
            while self._running:
                self._cond.wait()
        try:
            with self._cond:  # one capture at a time too
                while self._capturing:
                    self._cond.wait()
                self._capturing = True
            yield
        finally:
            with self._cond:
                self._capturing = False
                self._captures -= 1
                self._cond.notify_all()


# runs a thread makes of a graph session before it replays: ONNX Runtime runs a session normally, then captures
CAPTURE_RUNS = 4


class _GraphSession:
    """A session for one batch size that replays a CUDA graph: its row indices and classes stay at fixed GPU
    addresses (what a captured graph reads and writes), so one run at a time (the lock).

    ONNX Runtime keeps a CUDA graph per calling thread (its CUDA provider's per-thread context): every thread that
    runs this session runs it normally, then captures its own graph. So each thread's first runs, one of which
    captures, run alone on the GPU (CaptureGate). Counting runs per session instead let a second thread capture
    while others ran: CUDA error 900 on the H200 (docs/performance.md, 2026-12-02)."""

    def __init__(self, session: object, ort: object, output: str, staged: object, batch: int,
                 gate: CaptureGate) -> None:
        self.session = session
        self.gate = gate
        self._local = threading.local()  # whether this thread has captured (not keyed by ident: idents are reused)
        self.lock = threading.Lock()
        self.rows = ort.OrtValue.ortvalue_from_numpy(np.zeros(batch, dtype=np.int64), "cuda", 0)  # type: ignore
        self.out = ort.OrtValue.ortvalue_from_shape_and_type([batch], np.int64, "cuda", 0)  # type: ignore
        self.binding = session.io_binding()  # type: ignore[attr-defined]
        self.binding.bind_ortvalue_input(SAMPLES, staged)
        self.binding.bind_ortvalue_input(ROWS, self.rows)
        self.binding.bind_ortvalue_output(output, self.out)

    def run(self, rows: np.ndarray) -> np.ndarray:
        """A thread's first call makes all the runs its capture needs, alone on the GPU, so that no capture is
        left for later calls (a test's first batches of a size, in the middle of a Server run)."""
        captured = getattr(self._local, "captured", False)
        with self.lock, (self.gate.run() if captured else self.gate.capture()):
            self.rows.update_inplace(rows)  # type: ignore[attr-defined]
            for _ in range(1 if captured else CAPTURE_RUNS):
                self.session.run_with_iobinding(self.binding)  # type: ignore[attr-defined]
            self._local.captured = True
            return self.out.numpy()  # type: ignore[attr-defined, no-any-return]


class OrtClassifier:
    """Options (a marker's `sut_options`, or `--mlperf-sut-option onnxruntime.KEY=VALUE`, which wins):
    `intra_op_threads` (0: ORT's default), `allow_spinning`; on CUDA `session_per_shape` (default true),
    `cuda_graph_max_batch` (default 0: no CUDA graphs; benchmarks/test_resnet50.py sets 8 for its SingleStream and
    MultiStream cases) and `prefer_nhwc` (default true: the CUDA provider's own `prefer_nhwc`, which runs
    convolutions in cuDNN's NHWC layout, for every session; on the H200 it raised Offline by 19.7% and let
    Server hold its bound at 85% of that for 60 s; `false` keeps ORT's NCHW). The values in effect are in the
    backend's details (results.json).

    On CUDA, a session that runs a batch of another size than its last one pays 100-190 ms for it, however often
    it has seen that size before (H200, onnxruntime-gpu 1.31.1, ResNet50; docs/performance.md): under Server load
    batches of every size follow each other and one batch in ten stalled. So each batch size gets a session of
    its own (weights are ~100 MB a copy), created when the size is first seen, which is in the warm-up. The
    staged samples are one GPU tensor that all of them read.

    Batches of up to `cuda_graph_max_batch` samples (SingleStream's 1, MultiStream's 8) replay a captured CUDA
    graph: on the H200 a batch-1 query took 0.97 ms at p50 and 0.99 ms at p90 under LoadGen instead of 1.72 / 2.24
    ms, and 1 s rounds' p90 moved by 1-10% instead of 20-50%. A graph session runs one batch at a time: Offline on 3
    streams lost 11% with graphs up to 32 and keeps plain sessions; Server on one stream of graphs up to 32, with
    NHWC convolutions, holds its 15 ms bound at 85% of Offline's throughput for 60 s (benchmarks/test_resnet50.py
    sets both; docs/performance.md).
    Graphs are off unless asked for. Graph captures and runs are kept apart by CaptureGate (CUDA error 900
    otherwise), checked on the H200 with 1 and 3 streams."""

    def __init__(self, model_path: Path, device: str, options: Mapping[str, object]) -> None:
        import onnxruntime as ort

        check_option_names("onnxruntime", options)
        providers, resolved = providers_for(device)
        model, self._output, self._offset = wrap_with_gather(onnx.load(str(model_path)))
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # On CUDA the whole graph runs on the GPU: ORT's CPU thread pool (one spinning thread per core by default)
        # only competes for the cores that LoadGen's issue thread and the Python stream threads need.
        gpu = resolved == "cuda"
        threads = option_int(options, "intra_op_threads", 1 if gpu else 0, "onnxruntime")
        if threads:
            so.intra_op_num_threads = threads
        spinning = _flag(options, "allow_spinning", not gpu)
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self._model_bytes = model.SerializeToString()
        self._session_options = so
        self._cuda_options = cuda_options(options)  # checked on the CPU too; applies to CUDA sessions only
        self._providers: list[object] = [cuda_provider(self._cuda_options, False) if p == "CUDAExecutionProvider"
                                         else p for p in providers]
        self.session = ort.InferenceSession(self._model_bytes, so, providers=self._providers)
        used = self.session.get_providers()
        if resolved == "cuda" and "CUDAExecutionProvider" not in used:
            if device == "cuda":
                raise BackendError(f"onnxruntime could not start its CUDA provider (session uses {used}); see its log")
            resolved = "cpu"
        self.device = resolved
        self._ort = ort
        per_shape = _flag(options, "session_per_shape", True)  # checked on the CPU too: a typo is said there
        graph_max = option_int(options, "cuda_graph_max_batch", 0, "onnxruntime")
        self._per_shape = resolved == "cuda" and per_shape
        self._graph_max = graph_max if resolved == "cuda" else 0
        self._sessions: dict[int, object] = {}  # batch size -> its own session (per_shape) or _GraphSession
        # the session opened above has run nothing: the first plain batch size takes it rather than a new one
        self._unclaimed: object | None = self.session if self._per_shape else None
        self._sessions_lock = threading.Lock()
        self._gate = CaptureGate()
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
                "sessions": ("one per batch size" if self._per_shape else "one") +
                            (f", CUDA graphs up to batch {self._graph_max}" if self._graph_max else ""),
                # as the session has them (0: ORT's default, one per core), so a reader sees what an option did
                "intra_op_threads": str(self.session.get_session_options().intra_op_num_threads),
                "allow_spinning": str(spinning),
                # on CUDA, as the provider reports it back (a build without NHWC kernels may not take it)
                **({"prefer_nhwc": cuda_reported(self.session, "prefer_nhwc")} if resolved == "cuda" else {}),
            },
        )

    def stage(self, indices: Sequence[int], samples: np.ndarray) -> None:
        data = np.ascontiguousarray(samples, dtype=np.float32)
        if data.ndim != 4 or data.shape[0] != len(indices):
            raise BackendError(f"expected {len(indices)} samples of [3,224,224], got an array of shape {data.shape}")
        staged = self._staged
        shape = tuple(staged.shape()) if staged is not None else ()  # type: ignore[attr-defined]
        if self.device == "cuda" and shape and shape[1:] == data.shape[1:] and shape[0] >= data.shape[0]:
            # same address: bindings and graphs hold. A smaller set (accuracy mode's last chunk) fills the first
            # rows; the rest are never named by the row map
            if shape[0] > data.shape[0]:
                data = np.concatenate([data, np.zeros((shape[0] - data.shape[0], *data.shape[1:]), np.float32)])
            staged.update_inplace(data)  # type: ignore[union-attr]
        else:
            where = "cuda" if self.device == "cuda" else "cpu"
            self._staged = self._ort.OrtValue.ortvalue_from_numpy(data, where, 0)
            self._generation += 1
            with self._sessions_lock:  # a captured graph reads the old tensor's address
                self._sessions = {b: s for b, s in self._sessions.items() if not isinstance(s, _GraphSession)}
        rowmap = np.full(max(indices) + 1, -1, dtype=np.int64)
        rowmap[np.asarray(indices)] = np.arange(len(indices), dtype=np.int64)
        self._rowmap = rowmap

    def _graphed(self, batch: int) -> bool:
        return batch <= self._graph_max

    def _session_for(self, batch: int) -> object:
        if not (self._per_shape or self._graphed(batch)):
            return self.session
        with self._sessions_lock:
            session = self._sessions.get(batch)
            if session is None:
                session = self._open(batch)
                self._sessions[batch] = session
            return session

    def _open(self, batch: int) -> object:
        if not self._graphed(batch):
            unclaimed, self._unclaimed = self._unclaimed, None
            return unclaimed or self._ort.InferenceSession(self._model_bytes, self._session_options,
                                                           providers=self._providers)
        providers = [cuda_provider(self._cuda_options, True), "CPUExecutionProvider"]
        session = self._ort.InferenceSession(self._model_bytes, self._session_options, providers=providers)
        return _GraphSession(session, self._ort, self._output, self._staged, batch, self._gate)

    def _binding(self, batch: int) -> object:
        """One IO binding per thread and batch size: the staged samples stay bound, and the output buffer ORT
        allocated for this batch size is reused (a binding keeps its output's shape)."""
        local = self._local
        if getattr(local, "generation", None) != self._generation:
            local.bindings, local.generation = {}, self._generation
        binding = local.bindings.get(batch)
        if binding is None:
            binding = self._session_for(batch).io_binding()  # type: ignore[attr-defined]
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
        if self._graphed(len(rows)):
            classes = self._session_for(len(rows)).run(rows)  # type: ignore[attr-defined]
        else:
            binding = self._binding(len(rows))
            binding.bind_cpu_input(ROWS, rows)  # type: ignore[attr-defined]
            session = self._session_for(len(rows))
            with self._gate.run() if self._graph_max else nullcontext():  # no graphs: nothing to keep apart
                session.run_with_iobinding(binding)  # type: ignore[attr-defined]
            classes = binding.copy_outputs_to_cpu()[0]  # type: ignore[attr-defined]
        return (classes.astype(np.int64) + self._offset).astype(np.int32).reshape(-1, 1)

    def close(self) -> None:
        self._staged = None
        self._sessions = {}
        self._local = threading.local()
