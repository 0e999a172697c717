#!/usr/bin/env bash
# On the GPU machine, after the carried wheels are installed (/tmp/site): issue 13's Server measurements in one call.
#   bash tools/device/server_h200.sh OUTDIR
# 0. (MATRIX_S > 0) tools/device/server_matrix.py --set fine: bare Server variants with per-batch timelines;
# 1. the plugin: resnet50 Offline performance, ci profile (srv/off): the run's Offline samples/s;
# 2. the plugin: Server, ci profile, at LOAD of step 1's figure (a user.conf), recording the H200 Server baseline
#    into a copy of baselines/ (srv/bl; --mlperf-update-baselines, 3 repeats);
# 3. the plugin: Server for 60 s at the same load (srv/r60): the issue's goal;
# 4. the plugin: --mlperf-server-search (budget SEARCH_BUDGET) against a baselines copy without the H200 Server
#    file, which holds no capacity (srv/search).
# LOAD (default 0.85): the Server load as a share of step 1's Offline; SERVER_ARGS: more pytest arguments for every
# Server run (e.g. --mlperf-server-batch-wait=0). Everything but the matrix JSON is packed into OUTDIR/server.tgz (the device tool returns few files).
set -uo pipefail
out=${1:?output dir}
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 PYTEST_MLPERF_CACHE=${PYTEST_MLPERF_CACHE:-/tmp/pmc}
mkdir -p "$out" srv
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv > "$out/gpu.txt"
if [ "${MATRIX_S:-0}" -gt 0 ]; then
  timeout "$MATRIX_S" python3 tools/device/server_matrix.py "$out/m" --set fine --skip single \
      --loads "${LOADS:-0.85,0.92}" --deadline-s "$(( MATRIX_S - 15 ))" > "$out/matrix.txt" 2>&1
  echo "matrix rc=$?"; grep -E '^\{|ceiling|ERROR|done' "$out/matrix.txt" | cut -c1-160
fi
plugin=(python3 -m pytest -p pytest_mlperf.host.plugin -p no:cacheprovider benchmarks/test_resnet50.py -q --mlperf-device=cuda
        --mlperf-profile=ci)
show() { grep -E "^resnet50|^note|^harness|^baseline|passed|failed|capacity|search|recorded" "$1" | cut -c1-400; }
timeout 90 "${plugin[@]}" -k "Offline-performance" --mlperf-results-dir="$PWD/srv/off" > "$out/off.txt" 2>&1
echo "offline rc=$?"; show "$out/off.txt"
qps=$(python3 - <<'PY'
import json, os
d = json.load(open("srv/off/results.json"))
off = [c for c in d["cases"] if c["key"]["scenario"] == "Offline"]
print(round(float(os.environ.get("LOAD", "0.85")) * off[0]["metrics"]["result_samples_per_second"], 1) if off else "")
PY
)
[ -n "$qps" ] || { echo "no Offline figure"; exit 1; }
printf '*.Server.target_qps = %s\n' "$qps" > srv/server85.conf
echo "Server at $qps QPS (${LOAD:-0.85} of Offline)"
mkdir -p srv/bl && cp -r baselines/. srv/bl/
timeout "${BASELINE_S:-150}" "${plugin[@]}" -k "Server-performance" --mlperf-user-conf=srv/server85.conf \
    --mlperf-update-baselines --mlperf-baselines-dir="$PWD/srv/bl" --mlperf-results-dir="$PWD/srv/bl-run" \
    ${SERVER_ARGS:-} > "$out/bl.txt" 2>&1
echo "baseline rc=$?"; show "$out/bl.txt"
timeout "${LONG_S:-110}" "${plugin[@]}" -k "Server-performance" --mlperf-duration=60s --mlperf-user-conf=srv/server85.conf \
    --mlperf-baselines-dir="$PWD/srv/bl" --mlperf-results-dir="$PWD/srv/r60" ${SERVER_ARGS:-} > "$out/r60.txt" 2>&1
echo "60s at $qps rc=$?"; show "$out/r60.txt"
mkdir -p srv/nocap && cp -r baselines/. srv/nocap/ && rm -f srv/nocap/resnet50/Server-performance-*H200.json
timeout "${SEARCH_S:-170}" "${plugin[@]}" -k "Server-performance" --mlperf-server-search \
    --mlperf-server-search-budget="${SEARCH_BUDGET:-120s}" --mlperf-baselines-dir="$PWD/srv/nocap" \
    --mlperf-results-dir="$PWD/srv/search" ${SERVER_ARGS:-} > "$out/search.txt" 2>&1
echo "search rc=$?"; show "$out/search.txt"
rm -rf srv/nocap
tar czf "$out/server.tgz" srv $( [ -f "$out/m/logs-and-smi.tgz" ] && echo "$out/m/logs-and-smi.tgz") 2>/dev/null
rm -f "$out/m/logs-and-smi.tgz"
ls "$out"
