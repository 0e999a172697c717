#!/usr/bin/env bash
# On the GPU machine, from the checkout, once tools/device/vllm_carry.sh's stages are installed into /tmp/site (they
# bring mlcommons-loadgen, rouge-score and nltk too): the llama3_1-8b benchmark on vLLM with a Llama-3.1-8B-shaped
# stand-in (seeded random weights, bf16, built on the GPU). PARTS is a comma list, run in order (fit one device call,
# under 600 s, per call; the times are the H200's):
#   bench            Offline, Server and SingleStream performance (~450 s); BENCH_MODE=both and BENCH_K to add
#                    accuracy for some, e.g. BENCH_K='llama and vllm and not (Server-accuracy or SingleStream-accuracy)'
#   offline-baseline Offline performance, 3 repeats, H200 baseline recorded into OUTDIR/baselines (~170 s)
#   server-search    Server with --mlperf-server-search: the highest VALID target QPS (TTFT/TPOT bounds) (~200 s;
#                    SEARCH_BUDGET, and SEARCH_STEP_S for the step's limit, e.g. with --mlperf-duration=60s in VLLM_OPTIONS)
#   crash            a runner SIGKILLed with its engine up: the case fails saying so, nothing is left on the GPU (~120 s)
#   efficiency       LoadGen tokens/s over a bare LLM.generate of the same prompts (tools/device/vllm_efficiency.py)
#   transformers-1b  the transformers backend on the 1B-shaped stand-in, Offline and SingleStream, for comparison
#   bash tools/device/vllm_h100.sh OUTDIR offline-baseline,server-search,crash
# Every step runs under `timeout` within one budget (TOTAL_S, default 570 s); everything lands in OUTDIR.
set -uo pipefail
out=${1:?output dir}
parts=${2:-bench}
mkdir -p "$out/work"
total=${TOTAL_S:-570}
t0=$SECONDS
export PYTHONPATH=$PWD:/tmp/site:${PYTHONPATH:-} PYTHONUNBUFFERED=1 PYTEST_MLPERF_CACHE=/tmp/pytest-mlperf-cache
export VLLM_WORKER_MULTIPROC_METHOD=spawn TOKENIZERS_PARALLELISM=false
# vllm 0.26.0 requires flashinfer-python, which vllm_carry.sh does not bring (a user's pip install does): without it
# the engine fails at start in its sampler (issue 12); vLLM's own switch turns that sampler off. The backend itself
# sets nothing: a real install runs with vLLM's defaults.
export VLLM_USE_FLASHINFER_SAMPLER=${VLLM_USE_FLASHINFER_SAMPLER:-0}

step() {  # step NAME BUDGET_S COMMAND...: runs under min(budget, what is left of the total), logs to OUTDIR/NAME.txt
  local name=$1 budget=$2; shift 2
  local left=$((total - (SECONDS - t0)))
  [ "$left" -lt "$budget" ] && budget=$left
  if [ "$budget" -le 10 ]; then echo "== $name: skipped, no time left" | tee "$out/$name.txt"; return; fi
  echo "== $name (at most ${budget}s, $((SECONDS - t0))s elapsed)"
  timeout -k 10 "$budget" "$@" > >(tee "$out/$name.txt") 2>&1
  echo "== $name: exit $? after $((SECONDS - t0))s" | tee -a "$out/$name.txt"
}

gpu_apps() { nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader; \
  nvidia-smi --query-gpu=memory.used --format=csv,noheader; }

build() {  # build CONFIG: the stand-in folder, built on the GPU (seeded random init: seconds instead of minutes)
  step "build-$1" 240 python3 -c "
import torch, time
from pytest_mlperf.runner.standins.llama import ensure_llama_standin
t = time.time()
with torch.device('cuda'):
    path = ensure_llama_standin(seed=0, config='$1')
print('model', path, f'{time.time() - t:.0f}s')
open('$out/model-$1.txt', 'w').write(str(path))"
  cat "$out/model-$1.txt" 2>/dev/null || echo "/tmp/pytest-mlperf-cache/llama3_1-8b-standin-$1-seed0-v1"
}

bench=(python3 -m pytest -p pytest_mlperf.host.plugin -p no:cacheprovider benchmarks/ -rs --mlperf-profile=ci)
# backend options for every vllm case (the stand-in declares 131,072 tokens; CNN/DailyMail needs far fewer)
vllm_opts=(${VLLM_OPTIONS-})  # e.g. VLLM_OPTIONS=--mlperf-sut-option=vllm.max_model_len=4096

step versions 60 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv; \
python3 -c \"import torch, transformers, vllm, mlperf_loadgen, rouge_score; print('torch', torch.__version__, 'cuda', \
torch.version.cuda, torch.cuda.is_available(), '| transformers', transformers.__version__, '| vllm', vllm.__version__)\""
model=$(build 8b | tail -1)

bench_part() {
  step vllm-bench 540 "${bench[@]}" -k "${BENCH_K:-llama and vllm}" --mlperf-model "llama3_1-8b=$model" "${vllm_opts[@]}" \
    --mlperf-scenario=Offline,Server,SingleStream --mlperf-mode="${BENCH_MODE:-performance}" \
    --mlperf-results-dir="$PWD/vllm-bench"
  cp -r vllm-bench "$out/work/"
}
offline_baseline_part() {
  step vllm-offline-baseline 260 "${bench[@]}" -k "llama and vllm" --mlperf-model "llama3_1-8b=$model" \
    "${vllm_opts[@]}" --mlperf-scenario=Offline --mlperf-mode=performance --mlperf-update-baselines \
    --mlperf-baselines-dir="$out/work/baselines" --mlperf-results-dir="$out/work/vllm-offline"
}
server_search_part() {
  step vllm-server-search "${SEARCH_STEP_S:-280}" "${bench[@]}" -k "llama and vllm" --mlperf-model "llama3_1-8b=$model" \
    "${vllm_opts[@]}" --mlperf-scenario=Server --mlperf-mode=performance --mlperf-server-search \
    --mlperf-server-search-budget="${SEARCH_BUDGET:-170s}" --mlperf-results-dir="$out/work/vllm-search"
}
crash_part() {  # a runner SIGKILLed while its engine is up: the case must fail saying so, nothing may hold the GPU
  step vllm-crash 200 bash -c '
"$@" &
pytest_pid=$!
for i in $(seq 180); do
  used=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
  [ "${used:-0}" -gt 60000 ] && break; sleep 1
done
echo "GPU memory used before the kill: ${used} MiB after ${i} s"
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv
runner=$(pgrep -f "python[0-9.]* -m pytest_mlperf[.]runner[.]child" | head -1)
echo "SIGKILL to runner $runner; its process group:"
ps -o pid,pgid,ppid,cmd -g "$(ps -o pgid= -p "$runner" | tr -d " ")" | cut -c1-160
kill -9 "$runner"
wait "$pytest_pid"; echo "pytest exit $?"
sleep 3
echo "after the case:"; nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv
nvidia-smi --query-gpu=memory.used --format=csv
pgrep -af "EngineCore|pytest_mlperf.runner" || echo "no runner or EngineCore process left"
' crash "${bench[@]}" -k "llama and vllm" --mlperf-model "llama3_1-8b=$model" "${vllm_opts[@]}" \
    --mlperf-scenario=Offline --mlperf-mode=performance --mlperf-results-dir="$out/work/vllm-crash"
}
efficiency_part() {
  step vllm-efficiency 330 python3 tools/device/vllm_efficiency.py --model "$model" --out "$out/work/vllm_efficiency.json" \
    --seconds 8 ${EFF_OPTIONS:---option max_model_len=4096}
}
transformers_1b_part() {
  local model_1b; model_1b=$(build 1b | tail -1)
  step transformers-1b 170 "${bench[@]}" -k "test_llama3_1_8b and not vllm" --mlperf-model "llama3_1-8b=$model_1b" \
    --mlperf-device=cuda --mlperf-scenario=Offline,SingleStream --mlperf-mode=performance \
    --mlperf-results-dir="$out/work/transformers-1b"
}

mkdir -p "$out/work"
for part in ${parts//,/ }; do
  fn="${part//-/_}_part"
  if ! declare -F "$fn" >/dev/null; then echo "unknown part $part" >&2; continue; fi
  "$fn"
  gpu_apps > "$out/work/gpu-after-$part.txt" 2>&1
done
# the device tool brings back few files: everything but the step logs travels in one archive
mv "$out"/*.txt "$out/work/" 2>/dev/null
tar czf "$out/vllm.tgz" -C "$out" work && rm -rf "$out/work"
echo "done in $((SECONDS - t0))s"; ls -la "$out"
