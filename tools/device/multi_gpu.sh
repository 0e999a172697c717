#!/usr/bin/env bash
# On a machine of several GPUs (nvidia-h200-x2 / -x4), from the checkout, after the carried wheels are installed and
# on PYTHONPATH: issue 5's proof in one call. The same N ResNet50 Offline cases (tools/device/multi_gpu/) run with
# -n 1 and then with -n auto, while nvidia-smi lists every compute process per GPU twice a second; then
# multi_gpu_summary.py reports the wall-time speed-up, each case's throughput against its -n 1 run, and whether NVML
# saw each case's runner on its own GPU and nowhere else.
#   bash tools/device/multi_gpu.sh OUTDIR [N_CASES] [pytest args...]
set -uo pipefail
out=${1:?output dir}; n=${2:-4}; shift; shift || true
mkdir -p "$out"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 PYTEST_MLPERF_CACHE=/tmp/pytest-mlperf-cache MLPERF_COPIES=$n
nvidia-smi --query-gpu=index,name,uuid,clocks.sm,temperature.gpu --format=csv | tee "$out/gpus.txt"
# build the stand-in once, outside both timings
python3 -c "from pytest_mlperf.runner.standins.resnet50 import ensure_resnet50 as e; print(e())" | tee -a "$out/gpus.txt"
suite() {  # suite NAME XDIST_ARGS...
  local name=$1; shift
  nvidia-smi --query-compute-apps=timestamp,pid,gpu_uuid,used_memory --format=csv,noheader -lms 500 \
    > "$out/apps-$name.csv" 2>/dev/null &
  local smi=$!
  local start; start=$(date +%s.%N)
  python3 -m pytest -p pytest_mlperf.host.plugin -p no:cacheprovider tools/device/multi_gpu -q "$@" \
    --mlperf-device=cuda --mlperf-profile=ci --mlperf-scenario=Offline \
    --mlperf-results-dir="$PWD/gpu-results/$name" > "$out/$name.txt" 2>&1
  local rc=$?
  local wall; wall=$(python3 -c "import time; print(round(time.time() - $start, 2))")
  kill "$smi" 2>/dev/null
  echo "$name: exit $rc, wall $wall s" | tee -a "$out/walls.txt"
  echo "$name $wall" >> "$out/walls"
  cp "gpu-results/$name/results.json" "$out/results-$name.json" 2>/dev/null
  tail -n 12 "$out/$name.txt"
}
suite serial -n 1 "$@"
suite auto -n auto "$@"
python3 tools/device/multi_gpu_summary.py --serial "$out/results-serial.json" --parallel "$out/results-auto.json" \
  --walls "$out/walls" --apps "$out/apps-auto.csv" | tee "$out/summary.md"
