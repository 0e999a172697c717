#!/usr/bin/env bash
# On the GPU machine, after the carried wheels are installed (/tmp/site): issue 14's latency measurements and the
# H200 baselines of the cases whose set-up changed, in one call.
#   bash tools/device/latency_h200.sh OUTDIR [REPEATS]
# 1. the plugin: SingleStream/MultiStream performance (graphs), Offline with graphs on 3 streams (CaptureGate);
# 2. H200 baselines for Server (one stream of CUDA graphs since 2026-12-02), performance and accuracy;
# 3. the overhead gate on SingleStream, true costs 0% and 7%, REPEATS times each (tools/device/gate_h100.sh).
# Everything is packed into OUTDIR/latency.tgz (the device tool returns few files).
set -uo pipefail
out=${1:?output dir}; repeats=${2:-5}
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 PYTEST_MLPERF_CACHE=${PYTEST_MLPERF_CACHE:-/tmp/pmc}
mkdir -p "$out" lat
plugin=(python3 -m pytest -p pytest_mlperf.host.plugin -p no:cacheprovider benchmarks/test_resnet50.py -q --mlperf-device=cuda 
        --mlperf-profile=ci)
timeout 100 "${plugin[@]}" -k "performance and (SingleStream or MultiStream or Offline)" \
    --mlperf-sut-option=onnxruntime.cuda_graph_max_batch=32 --mlperf-results-dir="$PWD/lat/r1" > "$out/r1.txt" 2>&1
echo "latency rc=$?"; grep -E "^resnet50|^note|^harness|passed|failed" "$out/r1.txt" | cut -c1-300
if [ "${BASELINE_S:-120}" -gt 0 ]; then
  mkdir -p lat/bl && cp -r baselines/. lat/bl/
  timeout "${BASELINE_S:-120}" "${plugin[@]}" -k "Server" --mlperf-update-baselines --mlperf-mode=both \
      --mlperf-baselines-dir="$PWD/lat/bl" --mlperf-results-dir="$PWD/lat/bl-run" > "$out/bl.txt" 2>&1
  echo "baselines rc=$?"; grep -E "^resnet50|^note|passed|failed|recorded" "$out/bl.txt" | cut -c1-300
fi
costs=(); for _ in $(seq "$repeats"); do costs+=(0% 7%); done
start=$(date +%s)
GATE_SCENARIOS=SingleStream timeout "${GATE_S:-320}" bash tools/device/gate_h100.sh "$PWD/lat/gate" 500ms "${costs[@]}" \
    > "$out/gate.txt" 2>&1
echo "gate rc=$? in $(( $(date +%s) - start )) s"; grep -E "^gate|wall_s" "$out/gate.txt" | cut -c1-300
python3 tools/device/gate_summary.py gate-results/*/results.json > "$out/gate-summary.md" 2>&1
cp -r gate-results lat/ 2>/dev/null
tar czf "$out/latency.tgz" lat
ls "$out"
