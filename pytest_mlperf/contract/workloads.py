"""The workloads pytest-mlperf knows, one `WorkloadSpec` each: what both processes read of a workload without its
data or model code. The pytest process reads a spec to generate and resolve cases and checks a model path before
any runner starts (`MODEL_CHECKS`); the runner's workload module (`runner/workloads/<module>.py`, named in
`WorkloadSpec.module`) adds the dataset, the model files and the accuracy rule, and takes its spec from here.

To add a workload: one entry in `WORKLOADS` and its module under runner/workloads/ (an `open_dataset` and, for a
model file, a `model_file`). Standard library only (an import-linter contract holds `contract/` there)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from pytest_mlperf.contract.metrics import SCENARIOS


@dataclass(frozen=True)
class WorkloadSpec:
    name: str  # as in test ids and --mlperf-model NAME=PATH
    loadgen_model: str  # the model name LoadGen's mlperf.conf knows
    scenarios: tuple[str, ...]
    backends: tuple[str, ...]  # the first is the default
    server_latency_ns: int | None  # MLPerf's Server latency bound (None: token latencies instead)
    module: str  # its module under pytest_mlperf.runner.workloads (dataset, model files, accuracy)
    multistream_samples_per_query: int = 8
    default_batch_size: int = 32
    cuda_streams: int = 3  # concurrent inference streams on a GPU when not set (measured: docs/performance.md)
    accuracy_targets: Mapping[str, float] = field(default_factory=dict)  # metric -> minimum, real model + data only
    token_latencies: bool = False  # LLMs: LoadGen measures TTFT/TPOT and tokens/s (use_token_latencies)
    # what runs without --mlperf-model / --mlperf-dataset, as the report names it (None: nothing stands in)
    standin_model: str | None = None
    standin_data: str | None = None


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

#: MLPerf's llama3.1-8b (datacenter) reference accuracy: README "Accuracy Target"
#: and submission checker ``constants.py``. ROUGE must reach 99 % of these;
#: gen_len must lie within 90 %-110 % of 8167644 (13368 samples).
LLAMA3_1_8B_TARGETS: Mapping[str, float] = MappingProxyType({
    "rouge1": 38.7792,
    "rouge2": 15.9075,
    "rougeL": 24.4957,
    "rougeLsum": 35.793,
    "gen_len": 8167644,
    "gen_num": 13368,
})

RESNET50_MODEL_HINT = "point it at an ONNX file such as MLPerf's resnet50_v1.onnx"


def check_onnx_model(path: Path) -> None:
    """What a --mlperf-model resnet50=PATH is, when it cannot be an ONNX model: a folder, an empty file, a Git LFS
    pointer or a web page (a download that went wrong). Raises ValueError saying so; checked before any runner."""
    what = f"--mlperf-model resnet50={path}"
    if path.is_dir():
        raise ValueError(f"{what} is a folder; expected an ONNX model file: {RESNET50_MODEL_HINT}")
    try:
        with path.open("rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise ValueError(f"{what} cannot be read ({exc.strerror or exc}): {RESNET50_MODEL_HINT}") from None
    if not head:
        raise ValueError(f"{what} is an empty file (0 bytes), not an ONNX model (an interrupted download?): "
                         f"{RESNET50_MODEL_HINT}")
    if head.startswith(b"version https://git-lfs"):
        raise ValueError(f"{what} is a Git LFS pointer, not the model it points to: run `git lfs pull`, or "
                         f"{RESNET50_MODEL_HINT}")
    if head.lstrip()[:1] == b"<":
        raise ValueError(f"{what} is an HTML or XML page, not an ONNX model (a download that returned a web page?): "
                         f"{RESNET50_MODEL_HINT}")


WORKLOADS: Mapping[str, WorkloadSpec] = MappingProxyType({s.name: s for s in (
    WorkloadSpec(
        name="resnet50",
        loadgen_model="resnet50",
        scenarios=SCENARIOS,
        backends=("onnxruntime",),
        server_latency_ns=15_000_000,
        module="resnet50",
        multistream_samples_per_query=8,
        default_batch_size=32,
        accuracy_targets={"top1": 0.99 * 0.7646},
        standin_model="a seeded stand-in ResNet50 (the real architecture, random weights)",
        standin_data="seeded synthetic images",
    ),
    WorkloadSpec(
        name="llama3_1-8b",
        loadgen_model="llama3_1-8b",
        scenarios=("Offline", "Server", "SingleStream"),
        backends=("transformers", "vllm"),  # the first is the default; vllm: runner/backends/vllm_llm.py (CUDA only)
        server_latency_ns=None,  # LoadGen's TTFT/TPOT bounds from mlperf.conf instead
        module="llama3_1_8b",
        default_batch_size=8,
        # 99% of the reference ROUGE; gen_len's +-10% band is a range, checked as gen_len_ok (1 = inside)
        accuracy_targets={**{k: 0.99 * LLAMA3_1_8B_TARGETS[k] for k in ROUGE_TYPES}, "gen_len_ok": 1.0},
        token_latencies=True,
        cuda_streams=1,  # H100: 3 concurrent generate() calls cut LoadGen/bare from 0.57 to 0.21
        standin_model="a seeded tiny stand-in Llama (random weights)",
        standin_data="a seeded stand-in corpus",
    ),
    WorkloadSpec(
        name="null",
        loadgen_model="resnet50",  # borrows resnet50's mlperf.conf entries; the profile shortens them
        scenarios=("Offline", "SingleStream"),
        backends=("null",),
        server_latency_ns=15_000_000,
        module="null",
        multistream_samples_per_query=8,
        default_batch_size=16,
    ),
    WorkloadSpec(
        name="gpu-probe",
        loadgen_model="resnet50",  # borrows resnet50's mlperf.conf entries; the profile shortens them
        scenarios=("SingleStream", "Offline"),
        backends=("torch-probe",),
        server_latency_ns=15_000_000,  # resnet50's, should Server be asked for explicitly
        module="gpu_probe",
        default_batch_size=8,  # ops are microseconds long: small batches keep LoadGen's per-batch cost visible
        cuda_streams=1,  # one issuing thread: the plain operation rate (--mlperf-streams measures concurrency)
    ),
)})

# a model path is checked in the pytest process, before any runner, where the workload knows its form
MODEL_CHECKS: Mapping[str, Callable[[Path], None]] = MappingProxyType({"resnet50": check_onnx_model})


def workload_spec(name: str) -> WorkloadSpec:
    """The spec of workload `name`; ValueError naming the known ones for any other."""
    spec = WORKLOADS.get(name)
    if spec is None:
        raise ValueError(f"unknown workload {name!r}: known workloads are {', '.join(sorted(WORKLOADS))}")
    return spec


def known_workloads() -> list[str]:
    return sorted(WORKLOADS)
