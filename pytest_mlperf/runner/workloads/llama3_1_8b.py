"""MLPerf's llama3_1-8b workload: CNN/DailyMail summarization, greedy, at most 128 new tokens; ROUGE.

Data: MLCommons' evaluation file (`--mlperf-dataset llama3_1-8b=cnn_eval.json`, prompts already tokenized for
Llama 3.1) or the seeded stand-in corpus (tokenized by the model's tokenizer). Model: a Hugging Face folder
(`--mlperf-model llama3_1-8b=DIR`, e.g. Meta-Llama-3.1-8B-Instruct) or the seeded tiny stand-in, built once
and cached. Responses are int32 token ids; LoadGen measures tokens/s, TTFT and TPOT.

Accuracy: the generated ids are decoded with the model's tokenizer and scored with ROUGE as MLCommons'
evaluation.py does (when rouge-score is installed). MLPerf's targets (99% of the reference ROUGE, gen_len
within 10%) apply only with a real model and the real dataset; with the stand-in, accuracy means "the same
token ids as the recorded baseline" (baseline_check.BaselineCheck compares `predictions`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pytest_mlperf.contract.protocol import DataRequest
from pytest_mlperf.runner.workloads.base import require_path
from pytest_mlperf.runner.workloads.cnn_dailymail import Sample, load_mlcommons_dataset, standin_corpus
from pytest_mlperf.runner.workloads.metrics import outputs_digest
from pytest_mlperf.runner.workloads.rouge import check_rouge

# Few prompts keep CPU runs short; the smoke profile uses 64 of them per test (performance_sample_count)
STANDIN_COUNT = 256


def decode_tokens(outputs: Mapping[int, bytes]) -> dict[int, list[int]]:
    """Responses holding int32 token ids (as the LLM harness writes them) -> {QSL index: ids}."""
    decoded: dict[int, list[int]] = {}
    for idx, data in outputs.items():
        if len(data) % 4:
            raise ValueError(f"sample {idx}: {len(data)} bytes is not a whole number of int32 token ids")
        decoded[idx] = np.frombuffer(data, dtype="<i4").tolist()
    return decoded


class SummarizationDataset:
    """CNN/DailyMail prompts and reference summaries; `load` hands the harness `Sample`s to tokenize."""

    def __init__(self, samples: list[Sample], description: str, tokenizer_dir: Path | None, real: bool) -> None:
        self.samples = samples
        self.total_count = len(samples)
        self.description = description
        self.tokenizer_dir = tokenizer_dir  # decodes outputs for ROUGE; None: no ROUGE
        self.real = real  # MLCommons' file: gen_len is judged against the reference
        self._tokenizer: Any = None

    def load(self, indices: Sequence[int]) -> np.ndarray:
        out = np.empty(len(indices), dtype=object)
        for k, i in enumerate(indices):
            out[k] = self.samples[i]
        return out

    def _decoder(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.tokenizer_dir))
        return self._tokenizer

    def accuracy(self, outputs: Mapping[int, bytes]) -> dict[str, object]:
        tokens = decode_tokens(outputs)
        result: dict[str, object] = {
            "samples": len(tokens),
            "tokens": sum(len(t) for t in tokens.values()),
            "outputs_sha256": outputs_digest(outputs),
            "predictions": sorted([idx, ids] for idx, ids in tokens.items()),
        }
        if not tokens or self.tokenizer_dir is None or importlib.util.find_spec("rouge_score") is None:
            return result
        from pytest_mlperf.runner.workloads.rouge import compute_rouge_from_tokens

        order = sorted(tokens)
        scores = compute_rouge_from_tokens([tokens[i] for i in order], [self.samples[i].reference for i in order],
                                           self._decoder())
        result.update(scores)
        if self.real:  # gen_len's band, scaled to the samples scored (check_rouge scales by gen_num)
            result["gen_len_ok"] = 1.0 if check_rouge(scores)["gen_len"][0] else 0.0
        return result


def open_dataset(req: DataRequest) -> SummarizationDataset:
    path = require_path(req.dataset_path, "--mlperf-dataset llama3_1-8b:",
                        "point it at MLCommons' cnn_eval.json (language/llama3.1-8b/download_cnndm.py)")
    tokenizer_dir = model_dir(req) if importlib.util.find_spec("transformers") else None
    if path is not None:
        samples = load_mlcommons_dataset(path)
        if req.total_count:
            samples = samples[: req.total_count]
        return SummarizationDataset(samples, f"CNN/DailyMail {path} ({len(samples)} samples)", tokenizer_dir, True)
    count = req.total_count or STANDIN_COUNT
    samples = standin_corpus(count, req.seed)
    return SummarizationDataset(samples, f"{count} stand-in CNN/DailyMail articles (seed {req.seed})",
                                tokenizer_dir, False)


def model_dir(req: DataRequest) -> Path:
    given = require_path(req.model_path, "--mlperf-model llama3_1-8b:",
                         "point it at a Hugging Face model folder such as Meta-Llama-3.1-8B-Instruct")
    if given is not None:
        return given
    from pytest_mlperf.runner.standins.llama import ensure_llama_standin

    return ensure_llama_standin(seed=req.seed)
