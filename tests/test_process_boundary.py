"""The two processes keep to their own modules (issue 15): the pytest process never imports LoadGen or a backend's
framework, and the runner never imports pytest or the pytest process's modules. Each side is imported in a fresh
interpreter, whose sys.modules is then read: an import that crosses the line fails here, naming the module."""

from __future__ import annotations

import json
import subprocess
import sys

# the pytest process's part of the package, and what only it may load
HOST_PACKAGE = "pytest_mlperf.host"
HOST_ONLY = ("pytest", "_pytest")
# the runner's part of the package, and what only it may load (LoadGen, the backends' frameworks)
RUNNER_PACKAGES = ("pytest_mlperf.runner", "pytest_mlperf.slowdown")
RUNNER_ONLY = ("mlperf_loadgen", "onnxruntime", "torch", "transformers", "vllm")
# the runner's entry module and the backend and workload modules it loads when a case asks for them
RUNNER_MODULES = ("pytest_mlperf.runner.child", "pytest_mlperf.runner.backends.null",
                  "pytest_mlperf.runner.backends.onnxruntime", "pytest_mlperf.runner.backends.transformers_llm",
                  "pytest_mlperf.runner.backends.vllm_llm", "pytest_mlperf.runner.backends.torch_probe",
                  "pytest_mlperf.runner.workloads.resnet50", "pytest_mlperf.runner.workloads.llama3_1_8b",
                  "pytest_mlperf.runner.workloads.gpu_probe", "pytest_mlperf.runner.workloads.null")


def within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


PROBE = """
import importlib, json, sys
loaded = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
        loaded.append(name)
    except ImportError:  # an optional framework that this environment lacks: nothing of it can be imported
        pass
print(json.dumps({"loaded": loaded, "modules": sorted(sys.modules)}))
"""


def imported_by(*modules: str) -> tuple[list[str], set[str]]:
    out = subprocess.run([sys.executable, "-c", PROBE, *modules], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return data["loaded"], set(data["modules"])


def test_the_pytest_process_imports_neither_loadgen_nor_a_backend() -> None:
    loaded, modules = imported_by("pytest_mlperf.host.plugin", "pytest_mlperf.host.results.cli")
    assert loaded == ["pytest_mlperf.host.plugin", "pytest_mlperf.host.results.cli"]
    crossed = sorted(m for m in modules if within(m, RUNNER_PACKAGES + RUNNER_ONLY))
    assert not crossed, f"the pytest process imported the runner's {crossed}"


def test_the_runner_imports_neither_pytest_nor_the_pytest_process_modules() -> None:
    loaded, modules = imported_by(*RUNNER_MODULES)
    assert "pytest_mlperf.runner.child" in loaded
    crossed = sorted(m for m in modules if within(m, (HOST_PACKAGE, *HOST_ONLY)))
    assert not crossed, f"the runner ({', '.join(loaded)}) imported the pytest process's {crossed}"
