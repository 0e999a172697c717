"""The runner's side of a workload: the `Dataset` protocol its module returns and the check of a given path (what a
workload is, its `WorkloadSpec`, is the contract's: contract/workloads.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np


class Dataset(Protocol):
    total_count: int
    description: str

    def load(self, indices: Sequence[int]) -> np.ndarray:
        """Samples for these QSL indices, stacked in order."""

    def accuracy(self, outputs: Mapping[int, bytes]) -> dict[str, object]:
        """Accuracy from the accuracy log's responses (QSL index -> response bytes)."""


def require_path(path: str | None, what: str, hint: str) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} {p} does not exist: {hint}")
    return p
