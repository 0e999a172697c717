"""Llama 3.1 8B (MLPerf llama3_1-8b) on vLLM: CNN/DailyMail summarization; tokens/s, TTFT, TPOT.

Offline runs vLLM's `LLM.generate` over every issued sample; Server and SingleStream stream requests through its
asynchronous engine, Server requests concurrently (continuous batching). Needs a CUDA GPU and
pip install 'pytest-mlperf[vllm]'; skips without them.

    pytest benchmarks/ -k "llama and vllm" --mlperf-profile=ci --mlperf-model llama3_1-8b=Meta-Llama-3.1-8B-Instruct/
    pytest benchmarks/ -k "llama and vllm" -n 2        # with @pytest.mark.mlperf(gpus=2): tensor parallel over 2 GPUs

Backend options for a run, without editing this file (`--mlperf-sut-option vllm.KEY=VALUE`, repeatable; ini
`mlperf_sut_option`; they win over the marker's `sut_options`; keys: runner/backends/vllm_llm.py). The 8B stand-in declares
131,072 tokens of context, for which vLLM sizes its KV cache; CNN/DailyMail prompts and 128 new tokens need far
fewer:

    pytest benchmarks/ -k "llama and vllm" --mlperf-sut-option vllm.max_model_len=4096 \\
        --mlperf-sut-option vllm.gpu_memory_utilization=0.8
    pytest benchmarks/ -k "llama and vllm" --mlperf-sut-option vllm.tensor_parallel_size=2   # the case takes 2 GPUs
"""

import pytest

from pytest_mlperf.runner.backends.vllm_llm import vllm_missing

_missing = vllm_missing()
if _missing:
    pytest.skip(_missing, allow_module_level=True)
pytest.importorskip("transformers", reason="the llama3_1-8b benchmark needs pip install 'pytest-mlperf[vllm]'")

pytestmark = pytest.mark.mlperf(workload="llama3_1-8b", backend="vllm")


def test_llama3_1_8b_vllm(mlperf_session, llama_sut, loadgen, baseline):
    if not mlperf_session.placement.visible:
        pytest.skip("the vllm backend needs a CUDA GPU, and none is visible")
    run = loadgen.run(llama_sut)
    run.assert_valid()  # LoadGen's own verdict: min duration, min queries, early stopping, TTFT/TPOT bounds
    if run.accuracy is not None:
        run.assert_accuracy()  # MLPerf's ROUGE targets with a real model and CNN/DailyMail
    baseline.assert_no_regression(run)  # tokens/s and TTFT/TPOT within tolerance; token ids unchanged
