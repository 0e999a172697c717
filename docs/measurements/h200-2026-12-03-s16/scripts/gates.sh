#!/usr/bin/env bash
# gates.sh DEST TAG N KFILTER [pytest args...]: N x (A/A, 7%) live gates of one probe, SingleStream, defaults.
set -uo pipefail
dest=$1; tag=$2; n=$3; k=$4; shift 4
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 PYTEST_MLPERF_CACHE=/tmp/pmc
mkdir -p "$dest"
for i in $(seq "$n"); do
  for arm in aa c7; do
    if [ $arm = aa ]; then pre="env PYTEST_MLPERF_AA=1"; else pre="python3 -m pytest_mlperf.slowdown --cost 7% --"; fi
    name=$tag-$arm-$i; rd=/tmp/gx/$name; t0=$(date +%s.%N)
    timeout "${GATE_TIMEOUT:-80}" python3 -m pytest -p pytest_mlperf.plugin -p no:cacheprovider benchmarks/test_gpu_probes.py \
      -q -k "$k" --mlperf-scenario=SingleStream --mlperf-results-dir="$rd" --mlperf-candidate-prefix="$pre" "$@" \
      > /tmp/gx/$name.log 2>&1
    rc=$?
    echo "$name rc=$rc wall=$(python3 -c "import time;print(round(time.time()-$t0,1))") $(grep -E '^gate:' /tmp/gx/$name.log | sed 's/.*: \(PASS\|FAIL\|INCONCLUSIVE\)/\1/')"
    grep -E '^harness:' /tmp/gx/$name.log | sed 's/.*: LoadGen/  harness LoadGen/'
    mkdir -p "$dest/$name"; cp /tmp/gx/$name.log "$dest/$name/pytest.log"; cp "$rd/results.json" "$rd/gate.md" "$dest/$name/" 2>/dev/null
  done
done
