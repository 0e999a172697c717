#!/usr/bin/env bash
# call 3: the h2d_pinned-16MiB truth again (10 cycles), 4 more x (A/A, 7%) of it, 1 more x (A/A, 7%) of d2h_pinned-16MiB
set -uo pipefail
OUT=$1; W=/tmp/w3; mkdir -p $W /tmp/gx
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 GATE_TIMEOUT=70
timeout 75 python3 tools/device/probe_harness.py $W/truth-h2d16b.json --op h2d_pinned --option bytes=16777216 --seconds 1 --cycles 10 > $W/truth-h2d16b.log 2>&1; echo "truth h2d16b rc=$?"; tail -12 $W/truth-h2d16b.log
tar czf $OUT/w3.tgz -C /tmp w3
bash .s16/gates.sh $W/gates h2d16b 4 h2d_pinned --mlperf-sut-option=torch-probe.bytes=16777216
tar czf $OUT/w3.tgz -C /tmp w3
bash .s16/gates.sh $W/gates d2h16b 1 d2h_pinned --mlperf-sut-option=torch-probe.bytes=16777216
tar czf $OUT/w3.tgz -C /tmp w3
