"""The backends pytest-mlperf knows, one `BackendEntry` each: its name, its kind (which runner strategy serves it:
runner/child.py), the options it accepts, where its class lives and what it is built from, the modules it needs and
what to tell a user who lacks them. To add a backend, add its module under runner/backends/ and one entry here.

Standard library only: the plugin checks --mlperf-sut-option against `OPTION_NAMES` in the pytest process, before a
runner starts; `suts.create_backend` imports a backend's module only in a runner (backends may initialise CUDA).
Each backend also rejects any option not listed here itself (base.check_option_names), so the two cannot drift."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType


class Kind(str, Enum):
    """How the runner serves a backend's LoadGen queries."""

    BATCHING = "batching"  # batches of staged samples in, one output each out (runner/strategies/batching.py)
    GENERATION = "generation"  # token streams, one request at a time or in batches (runner/strategies/generation_setup.py)
    SERVING = "serving"  # an engine that takes concurrent requests and streams tokens (runner/strategies/serving_setup.py)

    def __str__(self) -> str:
        return self.value


# what a backend's class is built from, in order: the workload's model file or model directory, the runner's
# device, the backend's options (create_backend supplies each by name)
BUILD_ARGS = ("model_file", "model_dir", "device", "options")
VLLM_INSTALL_HINT = ("pip install 'pytest-mlperf[vllm]' on a Linux machine with a CUDA GPU (vllm has no CPU "
                     "wheel)")


@dataclass(frozen=True)
class BackendEntry:
    name: str
    kind: Kind
    options: tuple[str, ...]  # the option names it accepts (a marker's sut_options, --mlperf-sut-option)
    factory: str  # "module:Class", the module relative to pytest_mlperf.runner.backends
    args: tuple[str, ...]  # what its class is built from, each one of BUILD_ARGS
    needs: tuple[str, ...] = ()  # top-level modules it imports
    missing: str = ""  # the error when one of them is not installed

    def __post_init__(self) -> None:
        unknown = set(self.args) - set(BUILD_ARGS)
        if unknown or ":" not in self.factory or (self.needs and not self.missing):
            raise ValueError(f"bad backend entry {self}")


BACKENDS: MappingProxyType[str, BackendEntry] = MappingProxyType({e.name: e for e in (
    BackendEntry("onnxruntime", Kind.BATCHING,
                 ("intra_op_threads", "allow_spinning", "session_per_shape", "cuda_graph_max_batch", "prefer_nhwc"),
                 "onnxruntime:OrtClassifier", ("model_file", "device", "options"), ("onnxruntime",),
                 "onnxruntime is not installed: pip install 'pytest-mlperf[cpu]' (CPU) or 'pytest-mlperf[gpu]' "
                 "(CUDA)"),
    BackendEntry("transformers", Kind.GENERATION, ("max_new_tokens", "threads"),
                 "transformers_llm:TransformersLLM", ("model_dir", "device", "options"), ("torch", "transformers"),
                 "torch and transformers are not installed: pip install 'pytest-mlperf[llm]' (on a GPU machine "
                 "install a CUDA build of torch first)"),
    BackendEntry("vllm", Kind.SERVING,
                 ("max_new_tokens", "gpu_memory_utilization", "max_model_len", "max_num_seqs", "tensor_parallel_size",
                  "enforce_eager", "enable_prefix_caching", "dtype", "seed"),
                 "vllm_llm:VllmLLM", ("model_dir", "device", "options"), ("vllm",),
                 f"the vllm backend needs the vllm package, which is not installed: {VLLM_INSTALL_HINT}"),
    BackendEntry("null", Kind.BATCHING, ("delay_ms", "per_sample_ms", "raise_after", "crash_after", "hang_after"),
                 "null:NullBackend", ("options",)),
    BackendEntry("torch-probe", Kind.BATCHING, ("op", "bytes", "kernels"), "torch_probe:TorchProbe",
                 ("device", "options"), ("torch",),
                 "the torch-probe backend needs torch: pip install torch (on a GPU machine a CUDA build: "
                 "https://pytorch.org/get-started/locally/)"),
)})
OPTION_NAMES: MappingProxyType[str, tuple[str, ...]] = MappingProxyType({n: e.options for n, e in BACKENDS.items()})


def whole_number(value: object) -> int | None:
    """An option's whole number: an int (not a bool), or its digits as a string (command-line and ini values are
    strings); None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def backend_entry(name: str) -> BackendEntry:
    """The entry of backend `name`; ValueError naming the known ones for any other."""
    entry = BACKENDS.get(name)
    if entry is None:
        raise ValueError(f"unknown backend {name!r}: known backends are {', '.join(BACKENDS)}")
    return entry
