#!/usr/bin/env bash
# On the GPU machine, from the checkout, after the carried wheels are installed into /tmp/site (one stage of
# mlcommons-loadgen and msgspec is enough for the probes): N x (A/A, 7%) live overhead gates of one GPU probe,
# SingleStream, at the plugin's defaults. A/A: candidate prefix `env PYTEST_MLPERF_AA=1`; 7%: the synthetic layer
# pytest_mlperf.slowdown. Each gate's pytest log, results.json and gate.md go to DEST/TAG-ARM-I/.
#   bash tools/device/probe_gates.sh DEST TAG N KFILTER [pytest args...]
#   e.g. bash tools/device/probe_gates.sh $OUT/g h2d 5 h2d_pinned --mlperf-gate-min-rounds=85
# GATE_TIMEOUT (default 80 s) bounds each case. Session 16's calls ran docs/measurements/h200-2026-12-03-s16/scripts/.
set -uo pipefail
dest=$1; tag=$2; n=$3; k=$4; shift 4
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 PYTEST_MLPERF_CACHE=/tmp/pmc
mkdir -p "$dest" /tmp/gx
for i in $(seq "$n"); do
  for arm in aa c7; do
    if [ "$arm" = aa ]; then pre="env PYTEST_MLPERF_AA=1"; else pre="python3 -m pytest_mlperf.slowdown --cost 7% --"; fi
    name=$tag-$arm-$i; rd=/tmp/gx/$name; t0=$(date +%s.%N)
    timeout "${GATE_TIMEOUT:-80}" python3 -m pytest -p pytest_mlperf.host.plugin -p no:cacheprovider \
      benchmarks/test_gpu_probes.py -q -k "$k" --mlperf-scenario=SingleStream --mlperf-results-dir="$rd" \
      --mlperf-candidate-prefix="$pre" "$@" > "/tmp/gx/$name.log" 2>&1
    rc=$?
    echo "$name rc=$rc wall=$(python3 -c "import time; print(round(time.time() - $t0, 1))") $(grep -E '^gate:' "/tmp/gx/$name.log" | sed 's/.*: \(PASS\|FAIL\|INCONCLUSIVE\)/\1/')"
    grep -E '^harness:' "/tmp/gx/$name.log" | sed 's/.*: LoadGen/  harness LoadGen/'
    mkdir -p "$dest/$name"; cp "/tmp/gx/$name.log" "$dest/$name/pytest.log"
    cp "$rd/results.json" "$rd/gate.md" "$dest/$name/" 2>/dev/null
  done
done
