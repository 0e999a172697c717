"""MLPerf's resnet50 workload: ImageNet classification, top-1 accuracy.

Data: an ImageNet validation folder in the MLCommons layout (`--mlperf-dataset resnet50=DIR`) preprocessed as
MLPerf's reference does, or seeded synthetic images. Model: `--mlperf-model resnet50=PATH` (e.g. MLPerf's
resnet50_v1.onnx) or the seeded stand-in of the real architecture, built once and cached.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pytest_mlperf.contract.metrics import SCENARIOS
from pytest_mlperf.metrics import decode_classes, outputs_digest, top1
from pytest_mlperf.workloads.base import DataRequest, WorkloadSpec, require_path
from pytest_mlperf.workloads.imagenet import preprocess_image, read_val_map, synthetic_images_at

SPEC = WorkloadSpec(
    name="resnet50",
    loadgen_model="resnet50",
    scenarios=SCENARIOS,
    backends=("onnxruntime",),
    server_latency_ns=15_000_000,
    multistream_samples_per_query=8,
    default_batch_size=32,
    accuracy_targets={"top1": 0.99 * 0.7646},
    standin_model="a seeded stand-in ResNet50 (the real architecture, random weights)",
    standin_data="seeded synthetic images",
)
SYNTHETIC_COUNT = 1024  # MLPerf's performance_sample_count for resnet50


def _accuracy(outputs: Mapping[int, bytes], labels: Mapping[int, int] | None) -> dict[str, object]:
    classes = decode_classes(outputs)
    result: dict[str, object] = {
        "samples": len(classes),
        "outputs_sha256": outputs_digest(outputs),
        "predictions": classes,
    }
    if labels is not None and classes:
        result["top1"] = top1(classes, labels)
    return result


class SyntheticImages:
    """Seeded images shaped and distributed like preprocessed ImageNet; no labels, so accuracy means
    'the same outputs as the baseline recorded'."""

    def __init__(self, count: int, seed: int) -> None:
        self.total_count = count
        self.seed = seed
        self.description = f"{count} synthetic images (seed {seed})"

    def load(self, indices: Sequence[int]) -> np.ndarray:
        return synthetic_images_at(indices, self.seed)

    def accuracy(self, outputs: Mapping[int, bytes]) -> dict[str, object]:
        return _accuracy(outputs, None)


class ImageNetFolder:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.entries = read_val_map(directory)
        self.total_count = len(self.entries)
        self.labels = {i: label for i, (_, label) in enumerate(self.entries)}
        self.description = f"ImageNet {directory} ({self.total_count} images)"

    def load(self, indices: Sequence[int]) -> np.ndarray:
        return np.stack([preprocess_image(self.directory / self.entries[i][0]) for i in indices])

    def accuracy(self, outputs: Mapping[int, bytes]) -> dict[str, object]:
        return _accuracy(outputs, self.labels)


def open_dataset(req: DataRequest) -> SyntheticImages | ImageNetFolder:
    folder = require_path(
        req.dataset_path, "--mlperf-dataset resnet50:", "point it at an ImageNet folder holding val_map.txt"
    )
    if folder is not None:
        return ImageNetFolder(folder)
    return SyntheticImages(req.total_count or SYNTHETIC_COUNT, req.seed)


MODEL_HINT = "point it at an ONNX file such as MLPerf's resnet50_v1.onnx"


def check_model(path: Path) -> None:
    """What a --mlperf-model resnet50=PATH is, when it cannot be an ONNX model: a folder, an empty file, a Git LFS
    pointer or a web page (a download that went wrong). Raises ValueError saying so; checked before any runner."""
    what = f"--mlperf-model resnet50={path}"
    if path.is_dir():
        raise ValueError(f"{what} is a folder; expected an ONNX model file: {MODEL_HINT}")
    try:
        with path.open("rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise ValueError(f"{what} cannot be read ({exc.strerror or exc}): {MODEL_HINT}") from None
    if not head:
        raise ValueError(f"{what} is an empty file (0 bytes), not an ONNX model (an interrupted download?): "
                         f"{MODEL_HINT}")
    if head.startswith(b"version https://git-lfs"):
        raise ValueError(f"{what} is a Git LFS pointer, not the model it points to: run `git lfs pull`, or "
                         f"{MODEL_HINT}")
    if head.lstrip()[:1] == b"<":
        raise ValueError(f"{what} is an HTML or XML page, not an ONNX model (a download that returned a web page?): "
                         f"{MODEL_HINT}")


def model_file(req: DataRequest) -> Path:
    given = require_path(req.model_path, "--mlperf-model resnet50:", MODEL_HINT)
    if given is not None:
        check_model(given)
        return given
    from pytest_mlperf.standins.resnet50 import ensure_resnet50

    return ensure_resnet50(seed=req.seed)
