"""The two processes keep to their own modules (issue 15): the pytest process never imports LoadGen or a backend's
framework, and the runner never imports pytest or the pytest process's modules. Each side is imported in a fresh
interpreter, whose sys.modules is then read: an import that crosses the line fails here, naming the module."""

from __future__ import annotations

import json
import subprocess
import sys

# modules of the pytest process only (the runner must not load them)
HOST_ONLY = ("pytest", "_pytest", "pytest_mlperf.plugin", "pytest_mlperf.session", "pytest_mlperf.settings",
             "pytest_mlperf.host.baselines.store", "pytest_mlperf.host.baselines.document", "pytest_mlperf.host.baselines.conditions",
             "pytest_mlperf.cases", "pytest_mlperf.host.results.report", "pytest_mlperf.host.results.records", "pytest_mlperf.host.results.document",
             "pytest_mlperf.host.gate.loop", "pytest_mlperf.host.gate.report", "pytest_mlperf.server_search",
             "pytest_mlperf.host.gate.capacity", "pytest_mlperf.host.results.aggregate", "pytest_mlperf.outputs", "pytest_mlperf.userconf",
             "pytest_mlperf.host.machine.placement", "pytest_mlperf.host.machine.gpulock", "pytest_mlperf.runner.client",
             "pytest_mlperf.runner.recipe", "pytest_mlperf.host.case", "pytest_mlperf.search_driver",
             "pytest_mlperf.options", "pytest_mlperf.host.baselines.check", "pytest_mlperf.host.results.aggregate_input",
             "pytest_mlperf.controller", "pytest_mlperf.sut_handle", "pytest_mlperf.host.gate.driver",
             "pytest_mlperf.host.machine.case_placement", "pytest_mlperf.host.gate.stopping",
             "pytest_mlperf.driver_surface")
# modules of the runner only (LoadGen, the backends and their frameworks)
RUNNER_ONLY = ("mlperf_loadgen", "pytest_mlperf.runner.loadgen", "pytest_mlperf.runner.child", "onnxruntime", "torch",
               "transformers", "vllm", "pytest_mlperf.suts.onnxruntime", "pytest_mlperf.suts.vllm_llm",
               "pytest_mlperf.suts.transformers_llm")
# the runner's entry module and the backend modules it loads when a case asks for them
RUNNER_MODULES = ("pytest_mlperf.runner.child", "pytest_mlperf.suts.null", "pytest_mlperf.suts.onnxruntime",
                  "pytest_mlperf.suts.transformers_llm", "pytest_mlperf.suts.vllm_llm", "pytest_mlperf.suts.torch_probe",
                  "pytest_mlperf.workloads.resnet50", "pytest_mlperf.workloads.llama3_1_8b")

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
    loaded, modules = imported_by("pytest_mlperf.plugin", "pytest_mlperf.cli")
    assert loaded == ["pytest_mlperf.plugin", "pytest_mlperf.cli"]
    crossed = sorted(m for m in RUNNER_ONLY if m in modules)
    assert not crossed, f"the pytest process imported the runner's {crossed}"


def test_the_runner_imports_neither_pytest_nor_the_pytest_process_modules() -> None:
    loaded, modules = imported_by(*RUNNER_MODULES)
    assert "pytest_mlperf.runner.child" in loaded
    crossed = sorted(m for m in HOST_ONLY if m in modules)
    assert not crossed, f"the runner ({', '.join(loaded)}) imported the pytest process's {crossed}"
