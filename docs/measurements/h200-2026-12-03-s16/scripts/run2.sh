#!/usr/bin/env bash
# call 2: 5 x (A/A, 7%) gates of h2d_pinned at 16 MiB, then 1 x (A/A, 7%) of d2h_pinned at 16 MiB
set -uo pipefail
OUT=$1; W=/tmp/w2; mkdir -p $W /tmp/gx
export GATE_TIMEOUT=70
bash .s16/gates.sh $W/gates h2d16 5 h2d_pinned --mlperf-sut-option=torch-probe.bytes=16777216
tar czf $OUT/w2.tgz -C /tmp w2
[ "${D2H:-1}" = 1 ] && bash .s16/gates.sh $W/gates d2h16 1 d2h_pinned --mlperf-sut-option=torch-probe.bytes=16777216
tar czf $OUT/w2.tgz -C /tmp w2
