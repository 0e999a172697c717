"""A workload with no model: samples are their own indices. For testing the plugin itself (fast, exact)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pytest_mlperf.contract.protocol import DataRequest
from pytest_mlperf.runner.workloads.metrics import decode_classes, outputs_digest


class NullDataset:
    def __init__(self, total_count: int) -> None:
        self.total_count = total_count
        self.description = f"{total_count} index samples"

    def load(self, indices: Sequence[int]) -> np.ndarray:
        return np.asarray(indices, dtype=np.int32).reshape(-1, 1)

    def accuracy(self, outputs: Mapping[int, bytes]) -> dict[str, object]:
        classes = decode_classes(outputs)
        return {"samples": len(classes), "outputs_sha256": outputs_digest(outputs), "predictions": classes}


def open_dataset(req: DataRequest) -> NullDataset:
    return NullDataset(req.total_count or 1024)
