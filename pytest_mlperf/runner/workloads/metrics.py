"""Accuracy metrics as pure functions."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np


def outputs_digest(outputs: Mapping[int, bytes]) -> str:
    """A digest of every response, in QSL-index order: equal digests mean equal results."""
    h = hashlib.sha256()
    for idx in sorted(outputs):
        data = outputs[idx]
        h.update(idx.to_bytes(8, "little"))
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def top1(predictions: Mapping[int, int], labels: Mapping[int, int]) -> float:
    """Fraction of samples whose predicted class equals the label; only indices with a label count."""
    scored = [idx for idx in predictions if idx in labels]
    if not scored:
        raise ValueError("no prediction has a label: top-1 is undefined")
    return sum(predictions[i] == labels[i] for i in scored) / len(scored)


def decode_classes(outputs: Mapping[int, bytes], dtype: str = "int32") -> dict[int, int]:
    """Responses holding one class index each (as the ResNet50 SUT writes them) -> {QSL index: class}."""
    decoded: dict[int, int] = {}
    for idx, data in outputs.items():
        values = np.frombuffer(data, dtype=dtype)
        if values.size != 1:
            raise ValueError(f"sample {idx}: expected one {dtype} class index, got {values.size} values")
        decoded[idx] = int(values[0])
    return decoded
