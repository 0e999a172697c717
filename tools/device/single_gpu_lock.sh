#!/usr/bin/env bash
# On the one-GPU kind (nvidia-h200), from the checkout, with mlcommons-loadgen on PYTHONPATH (.carry/small): what
# issue 16 can show without a second GPU. (1) `-n auto` starts exactly one xdist worker for the one GPU and its case
# runs there; (2) two pytest sessions started together on that GPU take turns: the per-GPU lock makes the second
# wait, and their measurements do not overlap (the GPU lock's wait lines and results.json's times). The GPU probes
# (torch, on the machine) stand in for a workload, so nothing large has to travel.
#   bash tools/device/single_gpu_lock.sh OUTDIR
set -uo pipefail
out=${1:?output dir}
mkdir -p "$out"
export PYTHONPATH=$PWD:/tmp/site:${PYTHONPATH:-} PYTHONUNBUFFERED=1 PYTEST_MLPERF_CACHE=/tmp/pytest-mlperf-cache
probe=(python3 -m pytest -p pytest_mlperf.host.plugin -p no:cacheprovider benchmarks/test_gpu_probes.py -k launch
       --mlperf-device=cuda --mlperf-profile=smoke -rs)
nvidia-smi --query-gpu=index,name,uuid --format=csv | tee "$out/gpus.txt"
timeout 60 "${probe[@]}" -n auto --mlperf-results-dir="$PWD/lock-results/auto" > "$out/auto.txt" 2>&1
echo "auto: exit $?" | tee -a "$out/gpus.txt"
grep -E "created:|workers|passed|failed|cuda" "$out/auto.txt" | head -8
for s in a b; do
  timeout 80 "${probe[@]}" -v --mlperf-results-dir="$PWD/lock-results/$s" > "$out/session-$s.txt" 2>&1 &
done
wait
python3 - "$PWD/lock-results" <<'PY' | tee "$out/overlap.txt"
import json, pathlib, sys
root = pathlib.Path(sys.argv[1])
for name in ("auto", "a", "b"):
    f = root / name / "results.json"
    if not f.exists():
        print(name, "no results.json"); continue
    for c in json.loads(f.read_text())["cases"]:
        g = c.get("gpus") or [{}]
        print(name, c["nodeid"].split("::")[-1], c["outcome"], "gpu", g[0].get("uuid"),
              "start", (g[0].get("start") or {}).get("time"), "end", (g[0].get("end") or {}).get("time"))
PY
grep -h -i -E "wait|lock|held" "$out"/session-*.txt | head -10
tar czf "$out/lock.tgz" -C "$out" . 2>/dev/null; ls "$out"
