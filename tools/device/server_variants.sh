#!/usr/bin/env bash
# On the GPU machine, after the carried wheels are installed (/tmp/site): 60 s Server runs of the plugin at LOAD
# (default 0.85) of the same call's Offline samples/s, one per largest batch (CUDA graphs up to it, one stream), then the latency
# gate's A/A check: SingleStream with a candidate that is the same runner with one more environment variable (no layer at all).
#   bash tools/device/server_variants.sh OUTDIR [BATCH...]      e.g.  $OUT 32 48 64
# SERVER_ARGS: more pytest arguments for the Server runs (e.g. --mlperf-server-batch-wait=0); BOTH_ARGS: for the
# Offline run and the Server runs alike, so the load stays a share of the same configuration's Offline (e.g.
# --mlperf-sut-option=onnxruntime.prefer_nhwc=true);
# AA_ARGS: more pytest arguments for the A/A gate (e.g. --mlperf-cpu-affinity=auto). Results: OUTDIR/variants.tgz.
set -uo pipefail
out=${1:?output dir}; shift
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 PYTEST_MLPERF_CACHE=${PYTEST_MLPERF_CACHE:-/tmp/pmc}
mkdir -p "$out" var
plugin=(python3 -m pytest -p pytest_mlperf.host.plugin -p no:cacheprovider benchmarks/test_resnet50.py -q --mlperf-device=cuda
        --mlperf-profile=ci)
show() { grep -E "^resnet50|^note|^harness|^gate|passed|failed" "$1" | cut -c1-300; }
timeout 90 "${plugin[@]}" -k "Offline-performance" --mlperf-results-dir="$PWD/var/off" ${BOTH_ARGS:-} > "$out/off.txt" 2>&1
echo "offline rc=$?"; show "$out/off.txt"
qps=$(python3 -c "import json; d=json.load(open('var/off/results.json')); print(round(${LOAD:-0.85}*d['cases'][0]['metrics']['result_samples_per_second'],1))")
printf '*.Server.target_qps = %s\n' "$qps" > var/server.conf
echo "Server at $qps QPS"
for b in "${@:-32}"; do
  timeout 100 "${plugin[@]}" -k "Server-performance" --mlperf-duration=60s --mlperf-user-conf=var/server.conf \
      --mlperf-batch-size="$b" --mlperf-sut-option=onnxruntime.cuda_graph_max_batch="$b" \
      --mlperf-results-dir="$PWD/var/b$b" ${BOTH_ARGS:-} ${SERVER_ARGS:-} > "$out/b$b.txt" 2>&1
  echo "batch $b rc=$?"; show "$out/b$b.txt"
done
for k in $(seq "${AA_RUNS:-2}"); do
  timeout 80 "${plugin[@]}" -k "SingleStream-performance" --mlperf-scenario=SingleStream --mlperf-streams=1 \
      --mlperf-gate-round=500ms --mlperf-candidate-env=PYTEST_MLPERF_AA=1 --mlperf-results-dir="$PWD/var/aa$k" ${AA_ARGS:-} \
      > "$out/aa$k.txt" 2>&1
  echo "A/A $k rc=$?"; show "$out/aa$k.txt"
done
tar czf "$out/variants.tgz" var
