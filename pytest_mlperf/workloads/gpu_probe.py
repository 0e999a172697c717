"""GPU probes: no model; each sample is one operation of the probe its backend was set up for (suts/torch_probe.py).

SingleStream issues one sample at a time, so LoadGen's latencies are per-operation latencies; Offline hands over
batches, so its samples/s is the operation rate. Samples are their own indices (as in the null workload), so
accuracy mode checks that every operation was answered, and by the right sample.
"""

from __future__ import annotations

from pytest_mlperf.workloads.base import DataRequest, WorkloadSpec
from pytest_mlperf.workloads.null import NullDataset

SPEC = WorkloadSpec(
    name="gpu-probe",
    loadgen_model="resnet50",  # borrows resnet50's mlperf.conf entries; the profile shortens them
    scenarios=("SingleStream", "Offline"),
    backends=("torch-probe",),
    server_latency_ns=15_000_000,  # resnet50's, should Server be asked for explicitly
    default_batch_size=8,  # ops are microseconds long: small batches keep LoadGen's per-batch cost visible
    cuda_streams=1,  # one issuing thread: the plain operation rate (--mlperf-streams measures concurrency)
)


def open_dataset(req: DataRequest) -> NullDataset:
    if req.model_path or req.dataset_path:
        raise ValueError("gpu-probe has no model or dataset: drop --mlperf-model/--mlperf-dataset gpu-probe=...")
    return NullDataset(req.total_count or 1024)
