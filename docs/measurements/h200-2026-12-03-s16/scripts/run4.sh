#!/usr/bin/env bash
set -uo pipefail
OUT=$1; W=/tmp/w4; mkdir -p $W /tmp/gx
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1 GATE_TIMEOUT=62
timeout 50 python3 tools/device/probe_harness.py $W/truth-d2h16.json --op d2h_pinned --option bytes=16777216 --seconds 1 --cycles 7 > $W/truth-d2h16.log 2>&1; echo "truth d2h16 rc=$?"; tail -12 $W/truth-d2h16.log
tar czf $OUT/w4.tgz -C /tmp w4
bash .s16/gates.sh $W/gates h2d16c 2 h2d_pinned --mlperf-sut-option=torch-probe.bytes=16777216
tar czf $OUT/w4.tgz -C /tmp w4
