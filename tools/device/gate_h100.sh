#!/usr/bin/env bash
# On the GPU machine, from the checkout, after the carried wheels are installed and on PYTHONPATH: the overhead gate
# on the ResNet50 stand-in (ci profile, one inference stream so that a cost per call is a cost of throughput),
# the candidate launched under the synthetic layer pytest_mlperf.slowdown with each COST, both for Offline and
# SingleStream, rounds of ROUND each. Results (with every round's figures) go to OUTDIR/gate-*/results.json.
#   bash tools/device/gate_h100.sh OUTDIR ROUND COST [COST...]        e.g.  $OUT 500ms 0% 3% 7%
# GATE_SCENARIOS (default "Offline SingleStream") and GATE_ARGS (more pytest arguments, e.g.
# --mlperf-cpu-affinity=auto) adjust it.
set -uo pipefail
out=${1:?output dir}; round=${2:?round length}; shift 2
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 PYTEST_MLPERF_CACHE=/tmp/pytest-mlperf-cache
k=0
for cost in "$@"; do
  k=$((k + 1))  # a cost may be given more than once (repeats): each run keeps its own results
  for scenario in ${GATE_SCENARIOS:-Offline SingleStream}; do
    name="gate-$scenario-${cost%\%}pct-$round-$k"
    start=$(date +%s.%N)
    python3 -m pytest -p pytest_mlperf.host.plugin -p no:cacheprovider benchmarks/test_resnet50.py -q \
      --mlperf-device=cuda --mlperf-profile=ci --mlperf-scenario="$scenario" --mlperf-streams=1 \
      --mlperf-gate-round="$round" --mlperf-results-dir="$PWD/gate-results/$name" \
      --mlperf-candidate-prefix="python3 -m pytest_mlperf.slowdown --cost $cost --" ${GATE_ARGS:-} 2>&1 | grep -E "^gate:|passed|failed"
    echo "$name wall_s $(python3 -c "import time; print(round(time.time() - $start, 1))")"
    mkdir -p "$out/$name" && cp "gate-results/$name/results.json" "$out/$name/" 2>/dev/null
  done
done
python3 tools/device/gate_summary.py gate-results/*/results.json | tee "$out/summary.md"
