"""The transformers backend on the tiny stand-in (CPU), and the llama3_1-8b workload's data and accuracy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from pytest_mlperf.host.baselines.check import compare_outputs  # noqa: E402
from pytest_mlperf.runner.standins.llama import ensure_llama_standin  # noqa: E402
from pytest_mlperf.runner.backends.base import BackendError  # noqa: E402
from pytest_mlperf.runner.backends.transformers_llm import MIN_NEW_TOKENS, TransformersLLM, trim_at_eos  # noqa: E402
from pytest_mlperf.contract.workloads import workload_spec  # noqa: E402
from pytest_mlperf.runner.workloads import llama3_1_8b as workload
from pytest_mlperf.contract.protocol import DataRequest  # noqa: E402
from pytest_mlperf.runner.workloads.cnn_dailymail import Sample, standin_corpus  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_llama_standin(tmp_path_factory.mktemp("cache"), seed=0)


@pytest.fixture(scope="module")
def backend(model_dir: Path) -> Any:
    threads = torch.get_num_threads()
    b = TransformersLLM(model_dir, "cpu", {"max_new_tokens": 24})
    samples = standin_corpus(6, 0)
    b.stage(range(6), samples)
    yield b
    torch.set_num_threads(threads)  # the backend sets the process's intra-op threads, as a runner would


def test_info_names_backend_precision_and_versions(backend: Any) -> None:
    info = backend.info
    assert (info.backend, info.device, info.precision) == ("transformers", "cpu", "fp32")
    assert info.details["torch"] == torch.__version__ and info.details["transformers"]
    assert info.details["threads"] == "1"  # a tiny model on CPU: one intra-op thread
    assert int(info.details["parameters"]) < 10_000_000


def test_streaming_reports_the_first_token_once_before_returning(backend: Any) -> None:
    firsts: list[list[int]] = []
    out = backend.generate_stream(0, lambda t: firsts.append(t.tolist()))
    assert out.dtype == np.int32 and MIN_NEW_TOKENS <= len(out) <= 24
    assert firsts == [[int(out[0])]]


def test_batched_left_padded_generation_equals_one_prompt_at_a_time(backend: Any) -> None:
    batched = backend.generate_batch([0, 1, 2, 3, 4, 5])
    single = [backend.generate_stream(i, lambda _: None) for i in range(6)]
    assert [b.tolist() for b in batched] == [s.tolist() for s in single]
    eos = min(backend.eos)
    for tokens in batched:  # answers end at the first EOS (kept), padding after it is dropped
        assert len(tokens) >= MIN_NEW_TOKENS
        assert eos not in tokens.tolist()[:-1]


def test_mlcommons_token_ids_are_used_as_given(backend: Any) -> None:
    backend.stage([7], [Sample(input_text="ignored", input_ids=[0, 5, 6, 7], reference="")])
    assert backend._prompts == {7: [0, 5, 6, 7]}
    with pytest.raises(BackendError, match="sample 0 was not loaded"):
        backend.generate_batch([0])
    backend.stage(range(6), standin_corpus(6, 0))


def test_unknown_option_and_missing_cuda_are_clear(model_dir: Path) -> None:
    with pytest.raises(BackendError, match="unknown option"):
        TransformersLLM(model_dir, "cpu", {"beams": 4})
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="sees no CUDA GPU"):
            TransformersLLM(model_dir, "cuda", {})


def test_trim_at_eos() -> None:
    assert trim_at_eos([5, 6, 1, 2, 2], {1}) == [5, 6, 1]
    assert trim_at_eos([5, 6, 7], {1, 9}) == [5, 6, 7]
    assert trim_at_eos([9, 1], {1, 9}) == [9]


# --- the workload ---------------------------------------------------------------------------------------------


def test_spec_is_mlperfs_llama() -> None:
    spec = workload_spec("llama3_1-8b")
    assert (spec.name, spec.loadgen_model) == ("llama3_1-8b", "llama3_1-8b")
    assert spec.scenarios == ("Offline", "Server", "SingleStream") and spec.backends == ("transformers", "vllm")
    assert spec.token_latencies and spec.server_latency_ns is None and spec.default_batch_size == 8
    assert spec.accuracy_targets["rouge1"] == pytest.approx(0.99 * 38.7792)


def test_decode_tokens_reads_int32_and_refuses_torn_responses() -> None:
    data = np.array([3, 70000, 1], dtype="<i4").tobytes()
    assert workload.decode_tokens({4: data}) == {4: [3, 70000, 1]}
    with pytest.raises(ValueError, match="int32"):
        workload.decode_tokens({4: data[:-1]})


def test_standin_dataset_and_accuracy(model_dir: Path, backend: Any) -> None:
    req = DataRequest("llama3_1-8b", str(model_dir), None, total_count=6)
    ds = workload.open_dataset(req)
    assert ds.total_count == 6 and "stand-in" in ds.description and not ds.real
    loaded = ds.load([2, 0])
    assert [s.reference for s in loaded] == [ds.samples[2].reference, ds.samples[0].reference]
    backend.stage([0, 1, 2], list(ds.load([0, 1, 2])))
    outputs = {i: t.tobytes() for i, t in zip([0, 1, 2], backend.generate_batch([0, 1, 2]))}
    acc = ds.accuracy(outputs)
    assert acc["samples"] == acc["gen_num"] == 3 and len(str(acc["outputs_sha256"])) == 64
    assert {"rouge1", "rouge2", "rougeL", "rougeLsum", "gen_len"} <= set(acc) and "gen_len_ok" not in acc
    preds = acc["predictions"]
    assert [i for i, _ in preds] == [0, 1, 2] and all(isinstance(ids, list) for _, ids in preds)
    json.dumps(acc)  # crosses the runner boundary and lands in baselines as JSON
    backend.stage(range(6), standin_corpus(6, 0))


def test_mlcommons_dataset_file_and_count(tmp_path: Path, model_dir: Path) -> None:
    records = [{"instruction": {"llama": "Summarize: {input}\nSummary: "}, "input": f"article {i}",
                "tok_input": [0, 10 + i], "output": f"summary {i}"} for i in range(5)]
    path = tmp_path / "cnn_eval.json"
    path.write_text(json.dumps(records))
    ds = workload.open_dataset(DataRequest("llama3_1-8b", str(model_dir), str(path), total_count=3))
    assert ds.total_count == 3 and ds.real and ds.samples[1].input_ids == [0, 11]
    with pytest.raises(FileNotFoundError, match="cnn_eval.json"):
        workload.open_dataset(DataRequest("llama3_1-8b", None, str(tmp_path / "missing.json")))


def test_outputs_compare_as_token_lists() -> None:
    assert compare_outputs({1: [5, 6], 2: [7, 8]}, {1: [5, 6], 2: [7, 9]}) == [2]
    assert compare_outputs({1: [5, 6]}, {1: [5, 6], 3: [1, 2]}) == [3]
