"""MLPerf's resnet50 workload: ImageNet classification, top-1 accuracy.

Data: an ImageNet validation folder in the MLCommons layout (`--mlperf-dataset resnet50=DIR`) preprocessed as
MLPerf's reference does, or seeded synthetic images. Model: `--mlperf-model resnet50=PATH` (e.g. MLPerf's
resnet50_v1.onnx) or the seeded stand-in of the real architecture, built once and cached.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pytest_mlperf.contract.protocol import DataRequest
from pytest_mlperf.contract.workloads import RESNET50_MODEL_HINT, check_onnx_model
from pytest_mlperf.runner.workloads.base import require_path
from pytest_mlperf.runner.workloads.imagenet import preprocess_image, read_val_map, synthetic_images_at
from pytest_mlperf.runner.workloads.metrics import decode_classes, outputs_digest, top1

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


def model_file(req: DataRequest) -> Path:
    given = require_path(req.model_path, "--mlperf-model resnet50:", RESNET50_MODEL_HINT)
    if given is not None:
        check_onnx_model(given)
        return given
    from pytest_mlperf.runner.standins.resnet50 import ensure_resnet50

    return ensure_resnet50(seed=req.seed)
