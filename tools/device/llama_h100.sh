#!/usr/bin/env bash
# On the GPU machine, from the checkout, after the carried wheels are installed and on PYTHONPATH (next to torch with
# CUDA, transformers, tokenizers, rouge-score, nltk, mlcommons-loadgen): issue 4's H100 figures in one call.
#   1. harness efficiency on the 1b stand-in (LoadGen Offline vs bare generate() on the same batches, with a
#      timeline of where the LoadGen run's time went), plus TTFT/TPOT from a short Server run;
#   2. the llama3_1-8b benchmark on CUDA (performance, ci profile, Offline/Server/SingleStream) on the tiny
#      stand-in and on the 1b stand-in (through --mlperf-model, as a user's model folder).
# Each step runs under its own timeout so that one slow step leaves the others' figures; runner logs (with their
# time-stamped progress lines) are copied out.
#   bash tools/device/llama_h100.sh OUTDIR [EFFICIENCY_PROMPTS]
set -uo pipefail
out=${1:?output dir}; prompts=${2:-512}
mkdir -p "$out"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 PYTEST_MLPERF_CACHE=/tmp/pytest-mlperf-cache
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, transformers, mlperf_loadgen; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
'transformers', transformers.__version__)" | tee -a "$out/gpu.txt"
step() {  # step NAME SECONDS CMD...: runs CMD under a timeout, its output in OUTDIR/NAME.txt, its wall time printed
  local name=$1 limit=$2; shift 2
  local start; start=$(date +%s)
  timeout "$limit" "$@" > "$out/$name.txt" 2>&1
  echo "$name: exit $? after $(( $(date +%s) - start )) s" | tee -a "$out/steps.txt"
  tail -n 15 "$out/$name.txt"
}
step efficiency-1b 230 python3 tools/device/llm_efficiency.py --device cuda --config 1b --prompts "$prompts" \
  --out "$out/efficiency-1b.json"
# A streamed request of 128 tokens takes ~2 s through Hugging Face generate on a GPU (per-token overhead), so the
# ci profile's 100 Server/SingleStream queries would take minutes: 24 are enough for TTFT/TPOT percentiles here.
printf '%s\n' "llama3_1-8b.Server.min_query_count = 24" "llama3_1-8b.SingleStream.min_query_count = 24" > /tmp/llm-user.conf
bench() {  # bench NAME SECONDS [pytest args]
  local name=$1 limit=$2; shift 2
  step "bench-$name" "$limit" python3 -m pytest -p pytest_mlperf.host.plugin -p no:cacheprovider benchmarks/ -k "llama and not vllm" \
    --mlperf-device=cuda --mlperf-profile=ci --mlperf-mode=performance --mlperf-timeout=120 \
    --mlperf-user-conf=/tmp/llm-user.conf \
    --mlperf-results-dir="$PWD/gpu-results/$name" "$@"
  mkdir -p "$out/$name"
  cp "gpu-results/$name/results.json" "$out/$name/" 2>/dev/null
  cp gpu-results/"$name"/runners/*.log "$out/$name/" 2>/dev/null
}
bench tiny 160
model_1b=$(python3 -c "from pytest_mlperf.runner.standins.llama import ensure_llama_standin; print(ensure_llama_standin(config='1b'))")
bench 1b 190 --mlperf-model "llama3_1-8b=$model_1b"
ls -la "$out"
