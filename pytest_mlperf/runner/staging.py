"""What a runner's backend has staged, shared by the tests of that runner.

LoadGen asks every test for the same performance sample set (its seeds are fixed), and warm-up and calibration
need only some staged samples. Loading and staging again what is already on the device costs each test about a
second for ResNet50's 1024 samples (docs/performance.md), which would dominate the overhead gate's short rounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytest_mlperf.runner.workloads.base import Dataset


class Stager:
    def __init__(self, backend: Any, dataset: Dataset) -> None:
        self.backend = backend
        self.dataset = dataset
        self.staged: tuple[int, ...] = ()

    def stage(self, indices: Sequence[int]) -> None:
        """Makes exactly these samples the staged ones (the Backend contract: a stage replaces the last)."""
        key = tuple(int(i) for i in indices)
        if key == self.staged:
            return
        self.staged = ()  # a failed stage leaves nothing known to be staged
        self.backend.stage(list(key), self.dataset.load(list(key)))
        self.staged = key

    def some(self, count: int) -> list[int]:
        """At least `count` staged indices (fewer if the dataset is smaller), staging only if needed."""
        want = min(count, self.dataset.total_count)
        if len(self.staged) >= want:
            return list(self.staged)
        indices = list(range(want))
        self.stage(indices)
        return indices
