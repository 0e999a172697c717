"""Hugging Face transformers backend for causal LMs (llama3_1-8b): greedy generation on CUDA or CPU.

- device: 'cuda' (bf16), 'cpu' (fp32) or 'auto' (CUDA when torch sees a GPU);
- Offline: `generate_batch` left-pads a batch of prompts (so every row's last prompt token lines up and the new
  tokens start at one column) and runs one batched greedy `generate`;
- Server/SingleStream: `generate_stream` runs one unpadded request with a `BaseStreamer` that receives each new
  token id from inside `generate`; the first one triggers LoadGen's FirstTokenComplete at once.

Generation follows MLPerf's reference: greedy, at most 128 new tokens, answers end after the first EOS (kept,
as the reference returns it). One difference: min_new_tokens is 2, not 1, because LoadGen computes time per
output token as (end - first token) / (n_tokens - 1) and needs n_tokens >= 2. With a trained model an EOS
first token never happens on CNN/DailyMail prompts; with the stand-in it changes a few outputs (recorded in
the baselines like any other output).

Options (`sut_options` in the benchmark's marker, or `--mlperf-sut-option transformers.KEY=VALUE`, which wins):
max_new_tokens (default 128), threads (CPU intra-op threads).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pytest_mlperf.runner.backends.base import BackendError, BackendInfo, check_option_names

MIN_NEW_TOKENS = 2  # LoadGen's TPOT divides by n_tokens - 1
SMALL_MODEL_PARAMETERS = 50_000_000  # below this, CPU generation is bound by per-op overhead, not FLOPs


def resolve_device(device: str) -> str:
    import torch

    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise BackendError(
            f"--mlperf-device=cuda, but torch {torch.__version__} sees no CUDA GPU: install a CUDA build of torch "
            "(pip install torch --index-url https://download.pytorch.org/whl/cu126) or use --mlperf-device=cpu"
        )
    return "cuda" if device in ("cuda", "auto") and has_cuda else "cpu"


def trim_at_eos(tokens: Sequence[int], eos: set[int]) -> list[int]:
    """New tokens up to and including the first EOS (batched generate pads finished rows after it)."""
    out: list[int] = []
    for t in tokens:
        out.append(int(t))
        if t in eos:
            break
    return out


class _FirstTokenStreamer:
    """A transformers streamer: `generate` puts the prompt first, then each new token as it is chosen."""

    def __init__(self, on_first_token: Callable[[np.ndarray], None]) -> None:
        self.on_first_token = on_first_token
        self.puts = 0

    def put(self, value: Any) -> None:
        self.puts += 1
        if self.puts == 2:  # the first generated token (put 1 is the prompt)
            self.on_first_token(np.asarray(value.reshape(-1)[:1].tolist(), dtype=np.int32))

    def end(self) -> None:
        """Nothing buffered: the whole answer comes back from generate()."""


def _streamer_class() -> type:
    """`_FirstTokenStreamer` as a subclass of transformers' BaseStreamer (imported lazily: torch is heavy)."""
    from transformers.generation.streamers import BaseStreamer

    return type("FirstTokenStreamer", (_FirstTokenStreamer, BaseStreamer), {})


class TransformersLLM:
    """A Hugging Face causal LM served by the token harness (registry kind "generation": runner/strategies/generation_setup.py)."""

    def __init__(self, model_dir: Path, device: str, options: Mapping[str, object]) -> None:
        try:
            import torch
            import transformers
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise BackendError("the transformers backend needs torch and transformers: pip install "
                               "'pytest-mlperf[llm]' (install a CUDA build of torch first for GPUs)") from None
        check_option_names("transformers", options)
        self.device = resolve_device(device)
        self._torch = torch
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        # `dtype` replaced `torch_dtype` in transformers 4.56; older releases only know the latter
        major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
        dtype_kw = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), **{dtype_kw: dtype})
        self.model = model.to(self.device).eval()
        parameters = sum(p.numel() for p in self.model.parameters())
        if self.device == "cpu":
            # one thread for a small model: a tiny decoder step is overhead-bound and extra threads only contend
            # (measured: 2 threads on a shared 2-core machine ran 10-50x slower and erratically)
            default = 1 if parameters < SMALL_MODEL_PARAMETERS else torch.get_num_threads()
            torch.set_num_threads(int(options.get("threads", default)))  # type: ignore[call-overload]
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos])
        pad = gen.pad_token_id if gen.pad_token_id is not None else self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else min(self.eos))
        self.generate_kwargs: dict[str, Any] = {
            "max_new_tokens": int(options.get("max_new_tokens", 128)),  # type: ignore[call-overload]
            "min_new_tokens": MIN_NEW_TOKENS,
            "do_sample": False,
            "num_beams": 1,
            "pad_token_id": self.pad_id,
            "eos_token_id": sorted(self.eos),
        }
        self._streamer = _streamer_class()
        self._prompts: dict[int, list[int]] = {}
        self.info = BackendInfo(
            backend="transformers",
            device=self.device,
            precision="bf16" if self.device == "cuda" else "fp32",
            details={
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "model": model_dir.name,
                "parameters": str(parameters),
                "threads": str(torch.get_num_threads()),
                **({"gpu": torch.cuda.get_device_name()} if self.device == "cuda" else {}),
            },
        )

    def stage(self, indices: Sequence[int], samples: Sequence[Any]) -> None:  # the dataset's records
        """Tokenizes the prompts (LoadGen's untimed load); MLCommons' file brings Llama 3.1 ids already."""
        prompts: dict[int, list[int]] = {}
        for i, sample in zip(indices, samples):
            ids = getattr(sample, "input_ids", None)
            if ids is None:
                ids = self.tokenizer(sample.input_text)["input_ids"]
            prompts[int(i)] = [int(t) for t in ids]
        self._prompts = prompts

    def _prompt(self, index: int) -> list[int]:
        try:
            return self._prompts[index]
        except KeyError:
            raise BackendError(f"sample {index} was not loaded") from None

    def prompt_length(self, index: int) -> int:
        """Tokens in a staged prompt (warm-up picks the longest: runner/strategies/generation_setup.py)."""
        return len(self._prompt(index))

    def generate_batch(self, indices: Sequence[int]) -> list[np.ndarray]:
        torch = self._torch
        prompts = [self._prompt(i) for i in indices]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):  # left padding: generation continues every row at column `width`
            ids[row, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[row, width - len(p):] = 1
        with torch.inference_mode():
            out = self.model.generate(ids.to(self.device), attention_mask=mask.to(self.device),
                                      **self.generate_kwargs)
        new = out[:, width:].cpu().tolist()
        return [np.asarray(trim_at_eos(row, self.eos), dtype=np.int32) for row in new]

    def generate_stream(self, index: int, on_first_token: Callable[[np.ndarray], None]) -> np.ndarray:
        torch = self._torch
        prompt = torch.tensor([self._prompt(index)], dtype=torch.long, device=self.device)
        streamer = self._streamer(on_first_token)
        with torch.inference_mode():
            out = self.model.generate(prompt, attention_mask=torch.ones_like(prompt), streamer=streamer,
                                      **self.generate_kwargs)
        return np.asarray(trim_at_eos(out[0, prompt.shape[1]:].cpu().tolist(), self.eos), dtype=np.int32)

    def close(self) -> None:
        self._prompts = {}
