"""GPU probes: no model; each sample is one operation of the probe its backend was set up for (runner/backends/torch_probe.py).

SingleStream issues one sample at a time, so LoadGen's latencies are per-operation latencies; Offline hands over
batches, so its samples/s is the operation rate. Samples are their own indices (as in the null workload), so
accuracy mode checks that every operation was answered, and by the right sample.
"""

from __future__ import annotations

from pytest_mlperf.contract.protocol import DataRequest
from pytest_mlperf.runner.workloads.null import NullDataset


def open_dataset(req: DataRequest) -> NullDataset:
    if req.model_path or req.dataset_path:
        raise ValueError("gpu-probe has no model or dataset: drop --mlperf-model/--mlperf-dataset gpu-probe=...")
    return NullDataset(req.total_count or 1024)
