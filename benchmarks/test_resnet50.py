"""ResNet50 (MLPerf resnet50): ImageNet classification on ONNX Runtime, every scenario.

    pytest benchmarks/ -k resnet50                       # stand-in model and synthetic images, smoke profile
    pytest benchmarks/ --mlperf-scenario=Offline --mlperf-profile=ci --mlperf-require-baselines
    pytest benchmarks/ --mlperf-model resnet50=resnet50_v1.onnx --mlperf-dataset resnet50=imagenet/ --mlperf-mode=both
"""

import pytest

pytestmark = pytest.mark.mlperf(workload="resnet50")


def test_resnet50(resnet50_sut, loadgen, baseline):
    run = loadgen.run(resnet50_sut)
    run.assert_valid()  # LoadGen's own verdict: min duration, min queries, early stopping, latency bound
    if run.accuracy is not None:
        run.assert_accuracy()  # MLPerf's top-1 target with a real model and ImageNet
    baseline.assert_no_regression(run)  # headline and tail latency within tolerance; outputs unchanged
