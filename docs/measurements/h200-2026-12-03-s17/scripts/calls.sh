# Session 17's five device calls, as run (one H200; call 2 failed: .carry/probe was not carried, its LoadGen steps
# are call 3). Calls 3-5 passed carry=[".carry/probe"] (mlcommons-loadgen 6.0.17, msgspec, install.sh).
# call 1 (torch only):
mkdir -p $OUT/cs; (nvidia-smi topo -m; lscpu | head -30; cat /proc/cmdline) > $OUT/cs/machine.txt 2>&1
timeout 280 python3 tools/device/copy_states.py $OUT/cs/h2d.json --op h2d_pinned --pairs 8 --slices 40
timeout 200 python3 tools/device/copy_states.py $OUT/cs/d2h.json --op d2h_pinned --pairs 5 --slices 40
# call 2 (a new machine), the part that ran:
timeout 60 python3 tools/device/copy_states.py $OUT/r2/cs-random.json --pairs 2 --slices 16 --pattern random
timeout 60 python3 tools/device/copy_states.py $OUT/r2/cs-ones.json --pairs 2 --slices 16
# call 3 (a new machine):
mkdir -p /tmp/carry && cp .carry/probe/* /tmp/carry/ && bash /tmp/carry/install.sh; export PYTHONPATH=$PWD:/tmp/site
timeout 90 python3 tools/device/probe_harness.py $OUT/r2/truth.json --op h2d_pinned --seconds 1 --cycles 4
GATE_TIMEOUT=70 timeout 300 bash tools/device/probe_gates.sh /tmp/g2 h2d 2 h2d_pinned
# call 4 (a new machine), after the same install:
timeout 60 python3 tools/device/probe_harness.py $OUT/r4/truth-d2h.json --op d2h_pinned --seconds 1 --cycles 4
GATE_TIMEOUT=60 timeout 250 bash tools/device/probe_gates.sh /tmp/g4 h2d 4 h2d_pinned
GATE_TIMEOUT=60 timeout 190 bash tools/device/probe_gates.sh /tmp/g4 d2h 3 d2h_pinned
# call 5 (the same machine as call 4, warm):
timeout 45 python3 tools/device/probe_harness.py $OUT/r5/truth-launch.json --op launch --seconds 1 --cycles 3
GATE_TIMEOUT=60 timeout 125 bash tools/device/probe_gates.sh /tmp/g5 launch 1 launch
