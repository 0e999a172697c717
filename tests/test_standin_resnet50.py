"""Tests of the seeded ResNet50 v1.5 stand-in and its on-disk cache.

The full model (~100 MB) is built once per module, into a pytest temporary cache.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from pytest_mlperf.runner.standins import resnet50
from pytest_mlperf.runner.workloads.imagenet import synthetic_images

# conv weights + folded batch-norm biases + fc: torchvision's 25,557,032 minus the 26,560 BN gammas
EXPECTED_PARAMETERS = 25_530_472


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlperf-cache")


@pytest.fixture(scope="module")
def model_path(cache_dir: Path) -> Path:
    return resnet50.ensure_resnet50(cache_dir, seed=0)


@pytest.fixture(scope="module")
def model(model_path: Path) -> onnx.ModelProto:
    return onnx.load(str(model_path))


@pytest.fixture(scope="module")
def session(model_path: Path) -> Any:
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [dim.dim_param or dim.dim_value for dim in value_info.type.tensor_type.shape.dim]


# ------------------------------------------------------------------- graph


def test_graph_passes_checker(model_path: Path) -> None:
    onnx.checker.check_model(str(model_path), full_check=True)


def test_inputs_and_outputs(model: onnx.ModelProto) -> None:
    (graph_input,) = model.graph.input
    assert graph_input.name == resnet50.INPUT_NAME == "input_tensor"
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert _dims(graph_input) == ["batch", 3, 224, 224]
    argmax, softmax = model.graph.output
    assert (argmax.name, softmax.name) == ("ArgMax", "softmax_tensor")
    assert argmax.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert _dims(argmax) == ["batch"]
    assert softmax.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert _dims(softmax) == ["batch", 1000]
    assert [(op.domain, op.version) for op in model.opset_import] == [("", resnet50.OPSET)]


def test_resnet50_v15_architecture(model: onnx.ModelProto) -> None:
    ops = Counter(node.op_type for node in model.graph.node)
    assert ops["Conv"] == 53  # stem + 16 blocks x 3 + 4 projection shortcuts
    assert ops["Add"] == 16 and ops["Relu"] == 49 and ops["MaxPool"] == 1
    assert ops["GlobalAveragePool"] == 1 and ops["Gemm"] == 1
    assert "BatchNormalization" not in ops
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    assert all(len(node.input) == 3 for node in convs), "batch-norm folded: every Conv has a bias"
    strided = {
        node.name: onnx.helper.get_node_attr_value(node, "kernel_shape")[0]
        for node in convs
        if onnx.helper.get_node_attr_value(node, "strides") == [2, 2]
    }
    # v1.5: the stride sits on the 3x3 convolution of each stage's first block
    assert strided == {
        "conv1": 7,
        "layer2.0.conv2": 3, "layer2.0.downsample": 1,
        "layer3.0.conv2": 3, "layer3.0.downsample": 1,
        "layer4.0.conv2": 3, "layer4.0.downsample": 1,
    }


def test_parameter_count(model: onnx.ModelProto) -> None:
    count = resnet50.parameter_count(model)
    assert count == EXPECTED_PARAMETERS
    assert abs(count - 25.5e6) / 25.5e6 < 0.01


def test_same_seed_gives_identical_weights(model: onnx.ModelProto) -> None:
    rebuilt = _weights(resnet50.build_resnet50(seed=0))
    original = _weights(model)
    assert rebuilt.keys() == original.keys()
    for name, value in original.items():
        np.testing.assert_array_equal(rebuilt[name], value, err_msg=name)


def test_different_seed_gives_different_weights(model: onnx.ModelProto) -> None:
    other = resnet50.build_resnet50(seed=1)
    assert other.metadata_props != model.metadata_props
    other_weights, weights = _weights(other), _weights(model)
    for name in ("conv1.weight", "layer3.2.conv2.weight", "fc.weight", "fc.bias"):
        assert not np.array_equal(other_weights[name], weights[name]), name


# --------------------------------------------------------------- inference


def test_inference_outputs_are_consistent_and_varied(session: Any) -> None:
    images = synthetic_images(64, seed=2024)
    results = [session.run(None, {"input_tensor": images[i : i + 16]}) for i in range(0, 64, 16)]
    classes = np.concatenate([argmax for argmax, _ in results])
    probabilities = np.concatenate([softmax for _, softmax in results])
    assert classes.dtype == np.int64 and classes.shape == (64,)
    assert probabilities.dtype == np.float32 and probabilities.shape == (64, 1000)
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)
    np.testing.assert_array_equal(classes, probabilities.argmax(axis=1))
    # A stand-in that sends every image to one class could not reveal corrupted results.
    assert len(set(classes.tolist())) >= 16
    assert probabilities.max(axis=1).mean() > 0.05  # not a flat, uninformative softmax


def test_results_do_not_depend_on_batching(session: Any) -> None:
    images = synthetic_images(4, seed=7)
    batched_classes, batched_probs = session.run(None, {"input_tensor": images})
    for i in range(4):
        classes, probs = session.run(None, {"input_tensor": images[i : i + 1]})
        assert classes[0] == batched_classes[i]
        np.testing.assert_allclose(probs[0], batched_probs[i], rtol=1e-3, atol=1e-6)


# ------------------------------------------------------------------- cache


def test_cached_file_name_and_stamp(model_path: Path, model: onnx.ModelProto) -> None:
    assert model_path.name == resnet50.cached_model_name(0)
    assert f"v{resnet50.BUILDER_VERSION}" in model_path.name and "seed0" in model_path.name
    props = {prop.key: prop.value for prop in model.metadata_props}
    assert props["pytest_mlperf.seed"] == "0"
    assert props["pytest_mlperf.builder_version"] == str(resnet50.BUILDER_VERSION)


def test_second_call_reuses_cache(
    cache_dir: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_build(*args: object, **kwargs: object) -> onnx.ModelProto:
        raise AssertionError("cached model was rebuilt")

    monkeypatch.setattr(resnet50, "build_resnet50", must_not_build)
    before = model_path.stat().st_mtime_ns
    assert resnet50.ensure_resnet50(cache_dir, seed=0) == model_path
    monkeypatch.setattr(resnet50, "_VERIFIED", {})  # verify from disk, as a new process would
    assert resnet50.ensure_resnet50(cache_dir, seed=0) == model_path
    assert model_path.stat().st_mtime_ns == before


class _CountingBuilder:
    """Stands in for build_resnet50: returns an already built model and counts calls."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, seed: int = 0, num_classes: int = 1000) -> onnx.ModelProto:
        with self._lock:
            self.calls += 1
        return self.model


def _truncate(data: bytes, model: onnx.ModelProto, how: str) -> bytes:
    if how == "half":
        return data[: len(data) // 2]
    if how == "last-byte":
        return data[:-1]
    # Cut on a field boundary: drop the last metadata entry (tag + length + body), which
    # leaves a file that still parses.
    last_entry = len(model.metadata_props[-1].SerializeToString())
    cut = data[: len(data) - last_entry - 2]
    assert len(onnx.load_from_string(cut).metadata_props) == len(model.metadata_props) - 1
    return cut


@pytest.mark.parametrize("how", ["half", "last-byte", "field-boundary"])
def test_truncated_cache_file_is_rebuilt(
    tmp_path: Path, model_path: Path, model: onnx.ModelProto, how: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = model_path.read_bytes()
    target = tmp_path / model_path.name
    target.write_bytes(_truncate(data, model, how))
    builder = _CountingBuilder(model)
    monkeypatch.setattr(resnet50, "build_resnet50", builder)
    assert resnet50.ensure_resnet50(tmp_path, seed=0) == target
    assert builder.calls == 1
    assert target.read_bytes() == data
    assert not list(tmp_path.glob("*.tmp")), "temporary file left behind"


def test_concurrent_callers_build_once(
    tmp_path: Path, model: onnx.ModelProto, monkeypatch: pytest.MonkeyPatch
) -> None:
    builder = _CountingBuilder(model)
    monkeypatch.setattr(resnet50, "build_resnet50", builder)
    paths: list[Path] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            paths.append(resnet50.ensure_resnet50(tmp_path, seed=0))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert builder.calls == 1
    assert paths == [tmp_path / resnet50.cached_model_name(0)] * 4


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYTEST_MLPERF_CACHE", str(tmp_path / "cache"))
    assert resnet50.default_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("PYTEST_MLPERF_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resnet50.default_cache_dir() == tmp_path / ".cache" / "pytest-mlperf"
