#!/usr/bin/env bash
# On the GPU machine, from the checkout, after the carried wheels are installed and on PYTHONPATH:
# the ResNet50 benchmark in all four scenarios on CUDA, baselines recorded, GPU tests, and a tarball of it all.
#   bash tools/device/resnet50.sh OUTDIR [pytest args...]
set -uo pipefail
out=${1:?output dir}; shift
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 PYTEST_MLPERF_CACHE=/tmp/pytest-mlperf-cache
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv | tee "$out/gpu.txt"
python3 -c "import onnxruntime as o, mlperf_loadgen; print('onnxruntime', o.__version__, o.get_available_providers())" | tee -a "$out/gpu.txt"
python3 -m pytest -p pytest_mlperf.host.plugin -p no:cacheprovider benchmarks/ -k resnet50 --mlperf-device=cuda \
    --mlperf-results-dir="$PWD/gpu-results" "$@" 2>&1 | tee "$out/bench.txt"
python3 -m pytest -p pytest_mlperf.host.plugin -p no:cacheprovider tests/test_onnxruntime_sut.py -m gpu -rs 2>&1 | tail -3 | tee "$out/gpu-tests.txt"
tar czf "$out/gpu-results.tgz" gpu-results baselines 2>/dev/null
ls -la "$out"
