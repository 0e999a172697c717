"""Llama 3.1 8B (MLPerf llama3_1-8b): CNN/DailyMail summarization on transformers; tokens/s, TTFT, TPOT.

    pytest benchmarks/ -k llama                          # tiny stand-in model and stand-in articles, smoke profile
    pytest benchmarks/ -k llama --mlperf-device=cuda --mlperf-profile=ci --mlperf-require-baselines
    pytest benchmarks/ -k llama --mlperf-model llama3_1-8b=Meta-Llama-3.1-8B-Instruct/ \\
        --mlperf-dataset llama3_1-8b=cnn_eval.json --mlperf-mode=both
"""

import pytest

pytest.importorskip("transformers", reason="the llama3_1-8b benchmark needs pip install 'pytest-mlperf[llm]'")

pytestmark = pytest.mark.mlperf(workload="llama3_1-8b")


def test_llama3_1_8b(llama_sut, loadgen, baseline):
    run = loadgen.run(llama_sut)
    run.assert_valid()  # LoadGen's own verdict: min duration, min queries, early stopping, TTFT/TPOT bounds
    if run.accuracy is not None:
        run.assert_accuracy()  # MLPerf's ROUGE targets with a real model and CNN/DailyMail
    baseline.assert_no_regression(run)  # tokens/s and TTFT/TPOT within tolerance; token ids unchanged
