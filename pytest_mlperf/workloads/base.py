"""What a workload is: LoadGen model name, default scenarios and backends, its dataset and accuracy rule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from pytest_mlperf.contract.protocol import DataRequest  # noqa: F401  (crossing the process boundary: defined there)


@dataclass(frozen=True)
class WorkloadSpec:
    name: str  # as in test ids and --mlperf-model NAME=PATH
    loadgen_model: str  # the model name LoadGen's mlperf.conf knows
    scenarios: tuple[str, ...]
    backends: tuple[str, ...]  # the first is the default
    server_latency_ns: int | None  # MLPerf's Server latency bound (None: token latencies instead)
    multistream_samples_per_query: int = 8
    default_batch_size: int = 32
    cuda_streams: int = 3  # concurrent inference streams on a GPU when not set (measured: docs/performance.md)
    accuracy_targets: Mapping[str, float] = field(default_factory=dict)  # metric -> minimum, real model + data only
    token_latencies: bool = False  # LLMs: LoadGen measures TTFT/TPOT and tokens/s (use_token_latencies)
    # what runs without --mlperf-model / --mlperf-dataset, as the report names it (None: nothing stands in)
    standin_model: str | None = None
    standin_data: str | None = None


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
