"""The ONNX Runtime backend: graph wrapping, staging, batches; the GPU path behind the `gpu` marker."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from pytest_mlperf.runner.backends.base import BackendError
from pytest_mlperf.runner.backends.onnxruntime import OrtClassifier, providers_for, wrap_with_gather

ort = pytest.importorskip("onnxruntime")


def tiny_classifier(classes: int = 10, nhwc: bool = False, argmax: bool = True, name: str = "input") -> onnx.ModelProto:
    """A model of the resnet50 interface: mean over pixels then a fixed linear layer."""
    shape = ["N", 224, 224, 3] if nhwc else ["N", 3, 224, 224]
    axes = [1, 2] if nhwc else [2, 3]
    rng = np.random.default_rng(0)
    weight = helper.make_tensor("W", TensorProto.FLOAT, [3, classes], rng.normal(size=(3, classes)).astype(np.float32).flatten())
    nodes = [
        helper.make_node("ReduceMean", [name, "axes"], ["pooled"], keepdims=0),
        helper.make_node("MatMul", ["pooled", "W"], ["logits"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])]
    if argmax:
        nodes.append(helper.make_node("ArgMax", ["logits"], ["ArgMax:0"], axis=1, keepdims=0))
        outputs.insert(0, helper.make_tensor_value_info("ArgMax:0", TensorProto.INT64, ["N"]))
    axes_t = helper.make_tensor("axes", TensorProto.INT64, [2], axes)
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)],
                              outputs, [weight, axes_t])
    # IR 8: onnx 1.23 writes IR 14 by default, which onnxruntime-gpu 1.31 cannot read
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def expected_classes(model: onnx.ModelProto, images: np.ndarray, nhwc: bool) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = images.transpose(0, 2, 3, 1) if nhwc else images
    logits = sess.run(["logits"], {sess.get_inputs()[0].name: feed})[0]
    return logits.argmax(axis=1)


@pytest.mark.parametrize("nhwc", [False, True])
@pytest.mark.parametrize("argmax", [True, False])
def test_wrapped_model_picks_rows_and_classifies_like_the_original(tmp_path, nhwc: bool, argmax: bool) -> None:
    model = tiny_classifier(nhwc=nhwc, argmax=argmax)
    images = np.random.default_rng(1).normal(size=(6, 3, 224, 224)).astype(np.float32)
    want = expected_classes(model, images, nhwc)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    backend = OrtClassifier(path, "cpu", {})
    backend.stage([10, 11, 12, 13, 14, 15], images)  # QSL indices need not start at 0
    assert backend.infer([12, 10, 15]).ravel().tolist() == [want[2], want[0], want[5]]
    assert backend.infer([11]).ravel().tolist() == [want[1]]  # another batch size on the same thread
    assert backend.info.device == "cpu" and backend.info.details["providers"] == "CPUExecutionProvider"
    with pytest.raises(BackendError, match="were not loaded"):
        backend.infer([3])


def test_options_from_the_command_line_are_strings_and_show_in_the_details(tmp_path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(tiny_classifier(), str(path))
    backend = OrtClassifier(path, "cpu", {"intra_op_threads": "1", "allow_spinning": "false"})
    assert backend.info.details["intra_op_threads"] == "1" and backend.info.details["allow_spinning"] == "False"
    default = OrtClassifier(path, "cpu", {})
    assert default.info.details["intra_op_threads"] == "0" and default.info.details["allow_spinning"] == "True"
    # CUDA-only options are checked on the CPU too: a typo or a bad value is said wherever it is given
    with pytest.raises(BackendError, match=r"unknown option\(s\) \['cuda_graph_max_bach'\]"):
        OrtClassifier(path, "cpu", {"cuda_graph_max_bach": "8"})
    with pytest.raises(BackendError, match="cuda_graph_max_batch='eight': expected a whole number"):
        OrtClassifier(path, "cpu", {"cuda_graph_max_batch": "eight"})
    with pytest.raises(BackendError, match="session_per_shape='maybe': expected true or false"):
        OrtClassifier(path, "cpu", {"session_per_shape": "maybe"})
    with pytest.raises(BackendError, match="prefer_nhwc='yes please': expected true or false"):
        OrtClassifier(path, "cpu", {"prefer_nhwc": "yes please"})
    on_cpu = OrtClassifier(path, "cpu", {"prefer_nhwc": "true"})  # a CUDA provider option: nothing to say on CPU
    assert "prefer_nhwc" not in on_cpu.info.details


def test_cuda_sessions_prefer_nhwc_unless_told_not_to() -> None:
    from pytest_mlperf.runner.backends.onnxruntime import cuda_options

    # on by default: on the H200 it made Offline 19.7% faster and let Server hold 15 ms at 85% of that
    assert cuda_options({}) == {"prefer_nhwc": "1"}
    assert cuda_options({"prefer_nhwc": "false"}) == {"prefer_nhwc": "0"}  # from the command line: a string
    assert cuda_options({"prefer_nhwc": False, "cuda_graph_max_batch": 8}) == {"prefer_nhwc": "0"}
    with pytest.raises(BackendError, match="prefer_nhwc='nope': expected true or false"):
        cuda_options({"prefer_nhwc": "nope"})


def test_cuda_provider_options_reach_plain_and_graph_sessions() -> None:
    from pytest_mlperf.runner.backends.onnxruntime import cuda_provider, cuda_reported

    assert cuda_provider({}, False) == ("CUDAExecutionProvider", {})
    assert cuda_provider({"prefer_nhwc": "1"}, False) == ("CUDAExecutionProvider", {"prefer_nhwc": "1"})
    assert cuda_provider({"prefer_nhwc": "1"}, True) == ("CUDAExecutionProvider",
                                                         {"prefer_nhwc": "1", "enable_cuda_graph": "1"})

    class Reports:
        def get_provider_options(self) -> dict[str, dict[str, str]]:
            return {"CUDAExecutionProvider": {"prefer_nhwc": "1"}}

    assert cuda_reported(Reports(), "prefer_nhwc") == "1"
    assert cuda_reported(Reports(), "enable_cuda_graph") == "unknown"
    assert cuda_reported(object(), "prefer_nhwc") == "unknown"


def test_mlperf_1001_class_models_are_shifted_to_imagenet_labels(tmp_path) -> None:
    model = tiny_classifier(classes=1001)
    _, _, offset = wrap_with_gather(onnx.load_from_string(model.SerializeToString()))
    assert offset == -1
    _, _, offset = wrap_with_gather(tiny_classifier(classes=1000))
    assert offset == 0


def test_models_that_are_not_image_classifiers_are_refused() -> None:
    bad = tiny_classifier()
    bad.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 5
    with pytest.raises(BackendError, match=r"expected NCHW \[N,3,H,W\] or NHWC"):
        wrap_with_gather(bad)


def test_cuda_without_gpu_build_says_what_to_install() -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(BackendError, match=r"pip install 'pytest-mlperf\[gpu\]'"):
        providers_for("cuda")
    assert providers_for("auto") == (["CPUExecutionProvider"], "cpu")


@pytest.mark.gpu
def test_cuda_provider_runs_staged_batches_on_the_gpu(tmp_path) -> None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu and a GPU")
    model = tiny_classifier()
    images = np.random.default_rng(2).normal(size=(4, 3, 224, 224)).astype(np.float32)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    backend = OrtClassifier(path, "cuda", {})
    assert backend.info.device == "cuda"
    backend.stage([0, 1, 2, 3], images)
    assert backend.infer([0, 1, 2, 3]).ravel().tolist() == expected_classes(model, images, False).tolist()


def test_shape_buckets_and_padding() -> None:
    from pytest_mlperf.runner.strategies.batching import pad_to_bucket, shape_buckets

    assert shape_buckets(32) == (1, 2, 4, 8, 16, 32)
    assert shape_buckets(24) == (1, 2, 4, 8, 16, 24)
    assert shape_buckets(1) == (1,)
    assert pad_to_bucket([7, 9, 11], (1, 2, 4, 8)) == [7, 9, 11, 11]
    assert pad_to_bucket([5], (1, 2, 4)) == [5]
    assert pad_to_bucket(list(range(9)), (1, 2, 4, 8)) == list(range(9))  # larger than every bucket: as is


def test_server_buckets_step_finely_above_eight() -> None:
    """Server's shapes: a batch padded to the next power of two runs as long as that batch, and on the H200 that kept
    every Server batch at 32; finer steps above 8 let a batch's time follow its samples."""
    from pytest_mlperf.runner.strategies.batching import server_buckets

    assert server_buckets(32) == (1, 2, 4, 8, 12, 16, 20, 24, 28, 32)
    assert server_buckets(64) == (1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64)  # steps of 64 // 8
    assert server_buckets(30) == (1, 2, 4, 8, 12, 16, 20, 24, 28, 30)  # the largest batch is always a shape
    assert server_buckets(8) == (1, 2, 4, 8) and server_buckets(1) == (1,)
    for batch in range(1, 130):
        sizes = server_buckets(batch)
        assert sizes[-1] == batch and list(sizes) == sorted(set(sizes)) and len(sizes) <= 20  # each a session to warm


def test_padded_batches_answer_only_their_own_samples() -> None:
    from pytest_mlperf.runner.loadgen import Responder
    from pytest_mlperf.runner.backends.null import NullBackend
    from pytest_mlperf.runner.strategies.batching import BatchingHarness, ScheduleConfig
    from pytest_mlperf.runner.staging import Stager
    from pytest_mlperf.runner.workloads.null import NullDataset

    class Recorder(Responder):
        def __init__(self) -> None:
            self.calls: list[tuple[list[int], list[int]]] = []

        def complete(self, ids, outputs) -> None:  # type: ignore[override]
            self.calls.append((list(ids), outputs.ravel().tolist()))

    backend = NullBackend({"delay_ms": 0})
    seen: list[int] = []
    infer = backend.infer
    backend.infer = lambda idx: (seen.append(len(idx)), infer(idx))[1]  # type: ignore[method-assign]
    harness = BatchingHarness(backend, Stager(backend, NullDataset(64)).stage,
                              ScheduleConfig("Offline", 8, 1, 0.0, (1, 2, 4, 8)))
    recorder = Recorder()
    try:
        harness.issue([(100 + i, i) for i in range(11)], recorder)  # one batch of 8 and a remainder of 3
        for _ in range(200):
            if sum(len(ids) for ids, _ in recorder.calls) == 11:
                break
            import time

            time.sleep(0.01)
    finally:
        harness.close()
    assert sorted(seen) == [4, 8]  # the remainder of 3 ran as a warmed shape of 4
    answered = {i: out for ids, outs in recorder.calls for i, out in zip(ids, outs)}
    assert answered == {100 + i: i for i in range(11)}


def test_sut_option_flags_accept_booleans_and_refuse_other_words() -> None:
    from pytest_mlperf.runner.backends.onnxruntime import _flag

    assert _flag({"session_per_shape": "true"}, "session_per_shape", False) is True
    assert _flag({"session_per_shape": "0"}, "session_per_shape", True) is False
    assert _flag({}, "session_per_shape", True) is True
    with pytest.raises(BackendError, match="session_per_shape='maybe': expected true or false"):
        _flag({"session_per_shape": "maybe"}, "session_per_shape", False)


@pytest.mark.gpu
@pytest.mark.parametrize("options", [{}, {"session_per_shape": False}, {"cuda_graph_max_batch": 0},
                                     {"cuda_graph_max_batch": 4}, {"prefer_nhwc": True},
                                     {"prefer_nhwc": True, "cuda_graph_max_batch": 4}])
def test_cuda_sessions_answer_every_batch_size_alike(tmp_path, options) -> None:
    """One session per batch size (the default on CUDA: a session that changes batch size stalls 100+ ms) and
    CUDA-graph sessions give the classes the plain shared session gives, before and after a restage."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu and a GPU")
    model = tiny_classifier()
    images = np.random.default_rng(3).normal(size=(8, 3, 224, 224)).astype(np.float32)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    want = expected_classes(model, images, False).tolist()
    backend = OrtClassifier(path, "cuda", options)
    backend.stage(list(range(8)), images)
    for rows in ([3], [1, 2], [7, 6, 5, 4], [0, 1, 2, 3, 4, 5, 6, 7], [3]):
        assert backend.infer(rows).ravel().tolist() == [want[r] for r in rows]
    backend.stage(list(range(8)), images[::-1].copy())  # same shape: updated in place
    assert backend.infer([0]).ravel().tolist() == [want[7]]


def test_a_graph_capture_waits_for_running_batches_and_holds_new_ones_back() -> None:
    """The pattern of the H200's CUDA error 900: a capture while another thread's run synchronises its stream.
    The gate lets a capture start only when no run is on the GPU, and no run start while a capture waits or runs."""
    import threading

    from pytest_mlperf.runner.backends.onnxruntime import CaptureGate

    gate = CaptureGate()
    events: list[str] = []
    a_running, release_a = threading.Event(), threading.Event()

    def until(condition) -> None:
        for _ in range(5000):
            if condition():
                return
            threading.Event().wait(0.001)
        raise AssertionError("timed out")

    def run_a() -> None:
        with gate.run():
            events.append("a start")
            a_running.set()
            release_a.wait(10)
            events.append("a end")

    def capture() -> None:
        with gate.capture():
            events.append("capture")

    def run_b() -> None:
        with gate.run():
            events.append("b")

    first = threading.Thread(target=run_a)
    first.start()
    a_running.wait(10)
    cap = threading.Thread(target=capture)
    cap.start()
    until(lambda: gate._captures == 1)  # the capture is waiting for a
    late = threading.Thread(target=run_b)
    late.start()  # b arrives while the capture waits
    assert events == ["a start"]  # neither the capture nor b got past a
    release_a.set()
    for t in (first, cap, late):
        t.join(10)
    assert events == ["a start", "a end", "capture", "b"]
