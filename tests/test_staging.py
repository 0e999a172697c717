"""The runner's Stager: nothing staged twice in a row, and warm-up reuses what is staged."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pytest_mlperf.runner.staging import Stager
from pytest_mlperf.runner.workloads.null import NullDataset


class Recording:
    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def stage(self, indices: Sequence[int], samples: np.ndarray) -> None:
        assert [int(x) for x in samples.ravel()] == list(indices)  # the dataset's samples for these indices
        self.calls.append(list(indices))


def test_the_same_set_is_staged_once() -> None:
    backend = Recording()
    stager = Stager(backend, NullDataset(100))
    stager.stage([5, 3, 9])
    stager.stage([5, 3, 9])
    assert backend.calls == [[5, 3, 9]]
    stager.stage([3, 5, 9])  # another order is another staging (row i answers indices[i])
    assert backend.calls[-1] == [3, 5, 9] and len(backend.calls) == 2


def test_some_reuses_what_is_staged_and_stages_only_when_too_few() -> None:
    backend = Recording()
    stager = Stager(backend, NullDataset(100))
    assert stager.some(4) == [0, 1, 2, 3]
    stager.stage(list(range(50, 60)))
    assert stager.some(8) == list(range(50, 60))  # enough staged: nothing new
    assert len(backend.calls) == 2
    assert stager.some(20) == list(range(20))  # too few: the first 20
    assert stager.some(500) == list(range(100))  # never more than the dataset has
    assert len(backend.calls) == 4


def test_a_failed_stage_is_not_remembered() -> None:
    class Failing(Recording):
        def stage(self, indices: Sequence[int], samples: np.ndarray) -> None:
            super().stage(indices, samples)
            if len(self.calls) == 1:
                raise RuntimeError("out of memory")

    backend = Failing()
    stager = Stager(backend, NullDataset(10))
    try:
        stager.stage([1, 2])
    except RuntimeError:
        pass
    stager.stage([1, 2])
    assert backend.calls == [[1, 2], [1, 2]]
