#!/usr/bin/env bash
# On the GPU machine, from the checkout, once tools/device/vllm_carry.sh's stages are installed into /tmp/site (and the
# project's other carried wheels: mlcommons-loadgen, rouge-score, nltk): the llama3_1-8b benchmark on vLLM with a
# Llama-3.1-8B-shaped stand-in (seeded random weights, bf16, built on the GPU), Offline and Server (ci profile,
# performance), then vLLM's harness efficiency (LoadGen tokens/s over a bare LLM.generate of the same prompts), then the
# transformers backend on the same model (Offline) for comparison. Every step runs under `timeout` within one budget
# (TOTAL_S, default 560 s), and everything lands in OUTDIR.
#   bash tools/device/vllm_h100.sh OUTDIR
set -uo pipefail
out=${1:?output dir}
mkdir -p "$out"
total=${TOTAL_S:-560}
t0=$SECONDS
export PYTHONPATH=$PWD:/tmp/site:${PYTHONPATH:-} PYTHONUNBUFFERED=1 PYTEST_MLPERF_CACHE=/tmp/pytest-mlperf-cache
export VLLM_WORKER_MULTIPROC_METHOD=spawn TOKENIZERS_PARALLELISM=false
# vllm 0.26.0 requires flashinfer-python, which vllm_carry.sh does not bring (a user's pip install does): without it
# the engine fails at start in its sampler (issue 12); vLLM's own switch turns that sampler off
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

step versions 60 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv; ldd --version | head -1; \
python3 -c \"import torch, transformers, vllm, mlperf_loadgen; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
torch.cuda.is_available(), '| transformers', transformers.__version__, '| vllm', vllm.__version__)\""

step build-8b 240 python3 -c "
import torch, time
from pytest_mlperf.standins.llama import ensure_llama_standin
t = time.time()
with torch.device('cuda'):  # seeded random init on the GPU: seconds instead of minutes on the CPU
    path = ensure_llama_standin(seed=0, config='8b')
print('model', path, f'{time.time() - t:.0f}s')
open('$out/model.txt', 'w').write(str(path))"
model=$(cat "$out/model.txt" 2>/dev/null || echo /tmp/pytest-mlperf-cache/llama3_1-8b-standin-8b-seed0-v1)

step vllm-bench 330 python3 -m pytest -p pytest_mlperf.plugin -p no:cacheprovider benchmarks/ -k "llama and vllm" -rs \
  --mlperf-model "llama3_1-8b=$model" --mlperf-profile=ci --mlperf-scenario=Offline,Server --mlperf-mode=performance \
  --mlperf-results-dir="$PWD/vllm-results"

step vllm-efficiency 200 python3 tools/device/vllm_efficiency.py --model "$model" --out "$out/vllm_efficiency.json" --seconds 8

step transformers-bench 170 python3 -m pytest -p pytest_mlperf.plugin -p no:cacheprovider benchmarks/ \
  -k "test_llama3_1_8b and not vllm" -rs --mlperf-model "llama3_1-8b=$model" --mlperf-device=cuda --mlperf-profile=ci \
  --mlperf-scenario=Offline --mlperf-mode=performance --mlperf-results-dir="$PWD/transformers-results"

cp vllm-results/results.json "$out/vllm-results.json" 2>/dev/null
cp transformers-results/results.json "$out/transformers-results.json" 2>/dev/null
tar czf "$out/results.tgz" vllm-results transformers-results 2>/dev/null
echo "done in $((SECONDS - t0))s"; ls -la "$out"
