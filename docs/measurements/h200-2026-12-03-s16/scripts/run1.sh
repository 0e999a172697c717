#!/usr/bin/env bash
# call 1: truths of launch-x64 and h2d_pinned-16MiB, then 5 x (A/A, 7%) gates of launch-x64
set -uo pipefail
OUT=$1; W=/tmp/w1; mkdir -p $W /tmp/gx
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv > $W/gpu.txt 2>&1
timeout 60 python3 tools/device/probe_harness.py $W/truth-launch64.json --op launch --option kernels=64 --seconds 1 --cycles 6 > $W/truth-launch64.log 2>&1; echo "truth launch64 rc=$?"; tail -12 $W/truth-launch64.log
timeout 60 python3 tools/device/probe_harness.py $W/truth-h2d16.json --op h2d_pinned --option bytes=16777216 --seconds 1 --cycles 6 > $W/truth-h2d16.log 2>&1; echo "truth h2d16 rc=$?"; tail -12 $W/truth-h2d16.log
tar czf $OUT/w1a.tgz -C /tmp w1
bash .s16/gates.sh $W/gates launch64 ${N:-5} launch --mlperf-sut-option=torch-probe.kernels=64
tar czf $OUT/w1.tgz -C /tmp w1
