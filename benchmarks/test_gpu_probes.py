"""GPU probes: the operations that must cross a GPU isolation layer, one per sample, measured by LoadGen.
SingleStream gives each operation's latency, Offline the operation rate. What each probe is sensitive to:

  launch        kernel launch and stream synchronisation (64 launches a sample): every call the layer forwards
  h2d_pinned    host-to-device copy from page-locked memory: DMA setup and the copy path (16 MiB)
  h2d_pageable  the same from pageable memory: staging through the driver's (or the layer's) bounce buffers
  d2h_pinned    device-to-host copy into page-locked memory
  d2h_pageable  the same into pageable memory
  alloc         cuMemAlloc + cuMemFree straight from the driver (1 MiB): memory bookkeeping, quotas, address mapping

A sample is sized so that LoadGen's own cost per query (about 8 us) is a few percent of it, not a quarter
(runner/backends/torch_probe.py says why); `--mlperf-sut-option torch-probe.bytes=N` or `torch-probe.kernels=N` changes it.

    pytest benchmarks/test_gpu_probes.py                          # smoke profile, every probe
    pytest benchmarks/test_gpu_probes.py -k launch --mlperf-profile=ci --mlperf-require-baselines

They need torch and an NVIDIA GPU; the pytest process checks both without importing torch or initialising CUDA.
"""

import importlib.util
import os

import pytest

from pytest_mlperf.host.machine.system import query_gpus, visible

if importlib.util.find_spec("torch") is None:
    MISSING = "GPU probes need torch: pip install torch (a CUDA build)"
elif not visible(query_gpus(), os.environ.get("CUDA_VISIBLE_DEVICES")):
    MISSING = "GPU probes need an NVIDIA GPU: nvidia-smi lists none visible"
else:
    MISSING = ""

pytestmark = [pytest.mark.mlperf(workload="gpu-probe", backend="torch-probe"),
              pytest.mark.skipif(bool(MISSING), reason=MISSING)]


def probe(op: str) -> object:
    """One probe: its own mlperf marker (the closest one wins), so its options reach the runner."""
    return pytest.param(op, id=op, marks=pytest.mark.mlperf(workload="gpu-probe", backend="torch-probe",
                                                            sut_options={"op": op}))


@pytest.mark.parametrize("op", [probe(op) for op in
                                ("launch", "h2d_pinned", "h2d_pageable", "d2h_pinned", "d2h_pageable", "alloc")])
def test_gpu_probe(op, mlperf_sut, loadgen, baseline):
    run = loadgen.run(mlperf_sut)
    run.assert_valid()  # LoadGen's own verdict: min duration, min queries, early stopping
    baseline.assert_no_regression(run)  # per-op latency (SingleStream) or op rate (Offline) within tolerance
