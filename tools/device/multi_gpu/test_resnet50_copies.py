"""Issue 5's scaling suite: N identical ResNet50 cases (N from MLPERF_COPIES, default 4), so that -n auto against
-n 1 compares like with like. Run by tools/device/multi_gpu.sh; not part of benchmarks/."""

import os

import pytest

pytestmark = pytest.mark.mlperf(workload="resnet50")


@pytest.mark.parametrize("copy", range(int(os.environ.get("MLPERF_COPIES", "4"))))
def test_resnet50_copy(resnet50_sut, loadgen, copy):
    run = loadgen.run(resnet50_sut)
    run.assert_valid()
