"""A seeded stand-in for MLPerf's ``resnet50_v1.onnx``, built with ``onnx`` + numpy only.

The graph is the real ResNet50 v1.5 in inference form (batch-norm folded into the
convolutions, so every Conv has a bias): 7x7/2 stem, 3x3/2 max-pool, bottleneck
stages of [3, 4, 6, 3] blocks with the stride on the 3x3 convolution, global
average pool, fully connected layer, softmax and arg-max. Its cost and memory
traffic match the real model; its weights are random, so its "accuracy" means
nothing.

Random weights alone make every image land in the same class, which would hide
an isolation layer that corrupts results. So the folded batch-norm parameters are
*calibrated* like a freshly trained network's running statistics: a numpy forward
pass over a few :func:`~pytest_mlperf.runner.workloads.imagenet.synthetic_images` sets
each convolution's scale and bias so that its output is zero-mean, unit-variance
per channel (the last convolution of each residual branch gets a small gain, which
keeps the 16 residual additions from blowing up), and standardises the pooled
features before the classifier, whose logits then vary from image to image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from filelock import FileLock
from onnx import TensorProto, helper, numpy_helper

from pytest_mlperf.contract.files import write_bytes_atomic

#: Bump whenever the graph, the weights or the calibration data change.
BUILDER_VERSION = 1
OPSET = 17
INPUT_NAME = "input_tensor"
ARGMAX_NAME = "ArgMax"
SOFTMAX_NAME = "softmax_tensor"
NUM_CLASSES = 1000
#: (bottleneck width, output channels, blocks, stride of the first block)
STAGES = ((64, 256, 3, 1), (128, 512, 4, 2), (256, 1024, 6, 2), (512, 2048, 3, 2))
RESIDUAL_GAIN = 0.25  # the folded "gamma" of each branch's last batch-norm
LOGIT_SCALE = 4.0  # standard deviation of the logits across images
CALIBRATION_IMAGES = 8
CACHE_ENV = "PYTEST_MLPERF_CACHE"
LOCK_TIMEOUT_S = 900.0  # another process building the same file takes seconds, not minutes
_STAT_ROWS = 8192  # activation rows (pixels x images) sampled for batch-norm statistics
_MANTISSA_BITS = 12  # calibrated scales are coarsened to this many bits (see _coarsen)


@dataclass
class _Conv:
    name: str
    weight: np.ndarray  # [out, in, k, k] float32
    bias: np.ndarray  # [out] float32
    stride: int

    @property
    def kernel(self) -> int:
        return int(self.weight.shape[-1])


@dataclass
class _Block:
    conv1: _Conv
    conv2: _Conv
    conv3: _Conv
    downsample: _Conv | None


@dataclass
class _Weights:
    stem: _Conv
    blocks: list[_Block]
    fc_weight: np.ndarray  # [num_classes, 2048]
    fc_bias: np.ndarray  # [num_classes]


# ------------------------------------------------------------------ weights


def _he_conv(
    rng: np.random.Generator, name: str, c_in: int, c_out: int, k: int, stride: int
) -> _Conv:
    fan_in = c_in * k * k
    weight = rng.standard_normal((c_out, c_in, k, k), dtype=np.float32)
    weight *= np.float32(np.sqrt(2.0 / fan_in))
    return _Conv(name, weight, np.zeros(c_out, dtype=np.float32), stride)


def _random_weights(rng: np.random.Generator, num_classes: int) -> _Weights:
    stem = _he_conv(rng, "conv1", 3, 64, 7, 2)
    blocks: list[_Block] = []
    c_in = 64
    for stage, (width, c_out, count, stride) in enumerate(STAGES, start=2):
        for index in range(count):
            prefix = f"layer{stage - 1}.{index}"
            step = stride if index == 0 else 1
            blocks.append(
                _Block(
                    conv1=_he_conv(rng, f"{prefix}.conv1", c_in, width, 1, 1),
                    conv2=_he_conv(rng, f"{prefix}.conv2", width, width, 3, step),
                    conv3=_he_conv(rng, f"{prefix}.conv3", width, c_out, 1, 1),
                    downsample=(
                        _he_conv(rng, f"{prefix}.downsample", c_in, c_out, 1, step)
                        if index == 0
                        else None
                    ),
                )
            )
            c_in = c_out
    fc_weight = rng.standard_normal((num_classes, c_in), dtype=np.float32)
    fc_weight *= np.float32(LOGIT_SCALE / np.sqrt(c_in))
    return _Weights(stem, blocks, fc_weight, np.zeros(num_classes, dtype=np.float32))


# -------------------------------------------------------------- calibration
# Activations are NHWC numpy arrays here; convolutions are im2col + GEMM.


def _conv_nhwc(x: np.ndarray, conv: _Conv) -> np.ndarray:
    k, stride = conv.kernel, conv.stride
    if k == 1:
        patches = x[:, ::stride, ::stride, :]
    else:
        pad = k // 2
        padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(1, 2))
        patches = windows[:, ::stride, ::stride]  # [n, h, w, c, k, k]
    n, h, w = patches.shape[:3]
    columns = np.ascontiguousarray(patches).reshape(n * h * w, -1)
    out = columns @ conv.weight.reshape(conv.weight.shape[0], -1).T
    out += conv.bias
    return out.reshape(n, h, w, -1)


def _max_pool_nhwc(x: np.ndarray) -> np.ndarray:
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))
    return windows[:, ::2, ::2].max(axis=(-2, -1))


def _coarsen(values: np.ndarray) -> np.ndarray:
    """Round float32 values to ``_MANTISSA_BITS`` mantissa bits.

    Calibration statistics come from BLAS, whose last bits differ between CPUs;
    rounding them makes the folded weights bit-identical across machines in all
    but rare boundary cases.
    """
    mantissa, exponent = np.frexp(values.astype(np.float64))
    scale = float(2**_MANTISSA_BITS)
    return np.ldexp(np.round(mantissa * scale) / scale, exponent).astype(np.float32)


def _calibrate_conv(x: np.ndarray, conv: _Conv, gain: float) -> np.ndarray:
    """Fold a batch-norm with the batch's own statistics into ``conv``; return its output."""
    out = _conv_nhwc(x, conv)
    flat = out.reshape(-1, out.shape[-1])
    sample = flat[:: max(1, flat.shape[0] // _STAT_ROWS)].astype(np.float64)
    mean = sample.mean(axis=0)
    std = sample.std(axis=0) + 1e-5
    scale = _coarsen(gain / std)
    shift = _coarsen(-mean * scale)
    conv.weight *= scale[:, None, None, None]
    conv.bias = conv.bias * scale + shift
    out *= scale
    out += shift
    return out


def _calibrate_block(x: np.ndarray, block: _Block) -> np.ndarray:
    h = np.maximum(_calibrate_conv(x, block.conv1, 1.0), 0.0)
    h = np.maximum(_calibrate_conv(h, block.conv2, 1.0), 0.0)
    h = _calibrate_conv(h, block.conv3, RESIDUAL_GAIN)
    shortcut = x if block.downsample is None else _calibrate_conv(x, block.downsample, 1.0)
    return np.maximum(h + shortcut, 0.0)


def _calibrate(weights: _Weights, images_nchw: np.ndarray) -> None:
    x = np.ascontiguousarray(images_nchw.transpose(0, 2, 3, 1))
    x = _max_pool_nhwc(np.maximum(_calibrate_conv(x, weights.stem, 1.0), 0.0))
    for block in weights.blocks:
        x = _calibrate_block(x, block)
    # Standardise the pooled features across images, folded into the classifier.
    features = x.mean(axis=(1, 2), dtype=np.float64)  # [n, 2048]
    spread = features.std(axis=0)
    inv_std = _coarsen(1.0 / (spread + 1e-3 * spread.mean()))
    mean = _coarsen(features.mean(axis=0))
    weights.fc_weight *= inv_std
    weights.fc_bias = _coarsen(-(weights.fc_weight.astype(np.float64) @ mean))


# -------------------------------------------------------------------- graph


class _GraphWriter:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def conv(self, x: str, conv: _Conv) -> str:
        weight, bias, out = f"{conv.name}.weight", f"{conv.name}.bias", f"{conv.name}.out"
        self.initializers += [numpy_helper.from_array(conv.weight, weight),
                              numpy_helper.from_array(conv.bias, bias)]
        pad = conv.kernel // 2
        self.nodes.append(helper.make_node(
            "Conv", [x, weight, bias], [out], name=conv.name,
            kernel_shape=[conv.kernel] * 2, strides=[conv.stride] * 2, pads=[pad] * 4,
        ))
        return out

    def op(self, op_type: str, inputs: list[str], out: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def block(self, x: str, block: _Block) -> str:
        prefix = block.conv1.name.rsplit(".", 1)[0]
        h = self.op("Relu", [self.conv(x, block.conv1)], f"{prefix}.relu1")
        h = self.op("Relu", [self.conv(h, block.conv2)], f"{prefix}.relu2")
        h = self.conv(h, block.conv3)
        shortcut = x if block.downsample is None else self.conv(x, block.downsample)
        return self.op("Relu", [self.op("Add", [h, shortcut], f"{prefix}.add")], f"{prefix}.relu3")


def _make_graph(weights: _Weights) -> onnx.GraphProto:
    writer = _GraphWriter()
    x = writer.op("Relu", [writer.conv(INPUT_NAME, weights.stem)], "relu")
    x = writer.op("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    for block in weights.blocks:
        x = writer.block(x, block)
    x = writer.op("GlobalAveragePool", [x], "avgpool")
    x = writer.op("Flatten", [x], "flatten", axis=1)
    writer.initializers += [numpy_helper.from_array(weights.fc_weight, "fc.weight"),
                            numpy_helper.from_array(weights.fc_bias, "fc.bias")]
    logits = writer.op("Gemm", [x, "fc.weight", "fc.bias"], "logits", transB=1)
    writer.op("Softmax", [logits], SOFTMAX_NAME, axis=1)
    writer.op("ArgMax", [logits], ARGMAX_NAME, axis=1, keepdims=0)
    num_classes = int(weights.fc_weight.shape[0])
    return helper.make_graph(
        writer.nodes,
        "resnet50_v1.5_standin",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [
            helper.make_tensor_value_info(ARGMAX_NAME, TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info(SOFTMAX_NAME, TensorProto.FLOAT, ["batch", num_classes]),
        ],
        writer.initializers,
    )


def build_resnet50(seed: int = 0, num_classes: int = NUM_CLASSES) -> onnx.ModelProto:
    """Build the seeded ResNet50 v1.5 stand-in (see the module docstring).

    Input ``input_tensor`` float32 ``[batch, 3, 224, 224]`` (preprocessed as MLPerf's
    ``pre_process_vgg``); outputs ``ArgMax`` int64 ``[batch]`` and ``softmax_tensor``
    float32 ``[batch, num_classes]``. The same seed gives the same weights.
    """
    # Imported here so that importing this module never pulls in the workloads package.
    from pytest_mlperf.runner.workloads.imagenet import synthetic_images

    rng = np.random.default_rng(seed)
    weights = _random_weights(rng, num_classes)
    calibration_seed = int(rng.integers(2**31))
    _calibrate(weights, synthetic_images(CALIBRATION_IMAGES, calibration_seed))
    model = helper.make_model(
        _make_graph(weights),
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="pytest-mlperf",
        doc_string="Randomly initialised ResNet50 v1.5 stand-in for MLPerf's resnet50_v1.onnx; "
        "same cost, meaningless accuracy.",
    )
    model.ir_version = 8  # readable by onnxruntime >= 1.14
    # Last field of the serialised model: a truncated file loses it (see _is_complete).
    helper.set_model_props(model, _model_props(seed, num_classes))
    return model


def _model_props(seed: int, num_classes: int) -> dict[str, str]:
    return {
        "pytest_mlperf.standin": "resnet50",
        "pytest_mlperf.builder_version": str(BUILDER_VERSION),
        "pytest_mlperf.seed": str(seed),
        "pytest_mlperf.num_classes": str(num_classes),
    }


def parameter_count(model: onnx.ModelProto) -> int:
    """Number of weights in the model's initializers."""
    return sum(int(np.prod(init.dims, dtype=np.int64)) for init in model.graph.initializer)


# -------------------------------------------------------------------- cache

# Files already verified by this process: path -> (mtime_ns, size) when verified.
_VERIFIED: dict[str, tuple[int, int]] = {}


def default_cache_dir() -> Path:
    """``$PYTEST_MLPERF_CACHE`` if set, else ``~/.cache/pytest-mlperf``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "pytest-mlperf"


def cached_model_name(seed: int = 0) -> str:
    return f"resnet50-standin-v{BUILDER_VERSION}-seed{seed}.onnx"


def ensure_resnet50(cache_dir: Path | None = None, seed: int = 0) -> Path:
    """Path of the cached stand-in for ``seed``, building it (about 100 MB) if needed.

    Safe for concurrent callers (pytest-xdist workers, several sessions): the build
    runs under a file lock beside the model and the file appears atomically. A
    cached file that is unreadable, truncated or stamped for another seed or
    builder version is rebuilt.
    """
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / cached_model_name(seed)
    if _is_complete(path, seed):
        return path
    with FileLock(f"{path}.lock", timeout=LOCK_TIMEOUT_S):
        if not _is_complete(path, seed):  # another process may have just built it
            write_bytes_atomic(path, build_resnet50(seed).SerializeToString())
    return path


def _is_complete(path: Path, seed: int) -> bool:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return False
    key, stamp = str(path), (stat.st_mtime_ns, stat.st_size)
    if _VERIFIED.get(key) == stamp:
        return True
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(str(path))
    except Exception:  # noqa: BLE001 - any unreadable file is simply rebuilt
        return False
    # The stamp is the last field written, so a truncated file has lost it.
    props = {prop.key: prop.value for prop in model.metadata_props}
    if props != _model_props(seed, NUM_CLASSES):
        return False
    _VERIFIED[key] = stamp
    return True
