#!/usr/bin/env bash
# Runs on the GPU machine once every stage of tools/device/vllm_carry.sh is in /tmp/vllmcarry: joins the split wheels,
# checks every wheel's sha256, and installs into /tmp/site (--no-index --no-deps) each wheel whose distribution the
# machine's python3 does not already have (for the "maybe there" ones: pydantic, anyio, idna, ...).
set -euo pipefail
cd /tmp/vllmcarry
for first in *.part00; do
  [ -e "$first" ] || continue
  whl=${first%.part00}
  cat "$whl".part* > "$whl" && rm -f "$whl".part*
done
sha256sum -c --quiet wheels.sha256
echo "sha256: $(wc -l < wheels.sha256) wheels OK"
todo=()
for whl in *.whl; do
  dist=${whl%%-*}
  if grep -qix "$(echo "$dist" | tr _ -)" <(tr _ - < maybe.txt) && \
     env -u PYTHONPATH python3 -c "import importlib.metadata as m, sys; m.distribution(sys.argv[1])" "$dist" 2>/dev/null; then
    echo "skip $whl: the machine has $dist $(env -u PYTHONPATH python3 -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$dist")"
    continue
  fi
  todo+=("$whl")
done
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${todo[@]}"
echo "installed into /tmp/site: ${todo[*]}"
env -u PYTHONPATH python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
PYTHONPATH=/tmp/site python3 -c "import vllm; from vllm import LLM, SamplingParams; from vllm.v1.engine.async_llm import AsyncLLM; print('vllm', vllm.__version__, 'imports OK')"
