"""A locally built stand-in for Llama-3.1-8B (nothing is fetched from a model hub).

* Tokenizer: byte-level BPE trained with ``tokenizers`` on the stand-in
  CNN/DailyMail corpus, wrapped as ``PreTrainedTokenizerFast`` with Llama-3 style
  special tokens; ``encode`` prepends ``<|begin_of_text|>`` like Llama's does.
* Model: ``LlamaForCausalLM`` with seeded random weights (``torch.random.fork_rng``,
  so the caller's RNG is untouched). Configs:

  ``tiny``  2 layers, hidden 192, 4 heads / 2 KV heads (GQA), vocab = tokenizer's;
            fp32, 1,991,616 parameters with the 3072-token vocab, for CPU tests.
  ``1b``    Llama-3.2-1B shape (hidden 2048, 16 layers, 32/8 heads, MLP 8192,
            vocab 128256, tied embeddings; 1,235,814,400 parameters), bf16, for GPUs.
  ``8b``    Llama-3.1-8B shape (hidden 4096, 32 layers, 32/8 heads, MLP 14336,
            vocab 128256, rope theta 500000; 8,030,261,248 parameters), bf16.

  For ``1b``/``8b`` the model vocabulary is the real 128256 (realistic lm_head
  cost) while the tokenizer knows only its ~3k BPE tokens: ids past the
  tokenizer's vocabulary decode to nothing.

Random weights make greedy decoding degenerate (one token repeated forever, or
the same output for every prompt). Two deterministic tweaks fix that:

1. ``initializer_range`` is raised (0.02 -> 0.3 for ``tiny``) so the residual
   stream is dominated by the token/context signal, not by the norm weights, and
   different prompts reach different argmax tokens;
2. the ``<|end_of_text|>`` row of ``lm_head`` is set to the mean of the other
   rows plus ``EOS_BOOST`` times a seeded direction, so its logit is competitive
   and wins at some positions of some prompts: outputs stop at varied lengths
   (1..128 new tokens) rather than always running to ``max_new_tokens``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BUILDER_VERSION",
    "CONFIGS",
    "GENERATION_KWARGS",
    "StandinConfig",
    "build_tokenizer",
    "default_cache_dir",
    "ensure_llama_standin",
    "greedy_generate",
    "llama_config",
    "load_llama_standin",
]

#: Bump when the build recipe changes: it is part of the cache folder name.
BUILDER_VERSION = 1

#: MLPerf llama3.1-8b reference generation settings (greedy, <= 128 new tokens).
GENERATION_KWARGS: dict[str, Any] = {
    "max_new_tokens": 128,
    "min_new_tokens": 1,
    "num_beams": 1,
    "do_sample": False,
}

BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>"
EOT = "<|eot_id|>"
SPECIAL_TOKENS = (BOS, EOS, PAD, EOT)
TOKENIZER_VOCAB = 3072
TOKENIZER_CORPUS = (400, 1234)  # (count, seed) of the stand-in corpus it is trained on
_MARKER = "standin.json"


@dataclass(frozen=True)
class StandinConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int | None  # None: the tokenizer's size
    tie_word_embeddings: bool
    rope_theta: float
    max_position_embeddings: int
    dtype: str
    initializer_range: float
    eos_boost: float


CONFIGS: dict[str, StandinConfig] = {
    "tiny": StandinConfig(192, 512, 2, 4, 2, None, False, 500000.0, 4096, "float32", 0.3, 1.4),
    "1b": StandinConfig(2048, 8192, 16, 32, 8, 128256, True, 500000.0, 131072, "bfloat16", 0.02, 0.0),
    "8b": StandinConfig(4096, 14336, 32, 32, 8, 128256, False, 500000.0, 131072, "bfloat16", 0.02, 0.0),
}


def default_cache_dir() -> Path:
    env = os.environ.get("PYTEST_MLPERF_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pytest-mlperf"


def _folder_name(config: str, seed: int) -> str:
    return f"llama3_1-8b-standin-{config}-seed{seed}-v{BUILDER_VERSION}"


def llama_config(config: str = "tiny", vocab_size: int | None = None) -> Any:
    """The ``transformers.LlamaConfig`` for a named stand-in config."""
    from transformers import LlamaConfig

    if config not in CONFIGS:
        raise ValueError(f"unknown Llama stand-in config {config!r}; choose from {sorted(CONFIGS)}")
    c = CONFIGS[config]
    vocab = c.vocab_size if c.vocab_size is not None else vocab_size
    if vocab is None:
        raise ValueError(f"config {config!r} takes its vocab size from the tokenizer: pass vocab_size")
    special = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads,
        max_position_embeddings=c.max_position_embeddings,
        rope_theta=c.rope_theta,  # transformers 4.x's keyword, which 5.x maps into rope_parameters
        rms_norm_eps=1e-5,
        hidden_act="silu",
        tie_word_embeddings=c.tie_word_embeddings,
        initializer_range=c.initializer_range,
        bos_token_id=special[BOS],
        eos_token_id=special[EOS],
        pad_token_id=special[PAD],
    )


def build_tokenizer(vocab_size: int = TOKENIZER_VOCAB) -> Any:
    """Train the byte-level BPE tokenizer on the stand-in corpus (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from pytest_mlperf.runner.workloads.cnn_dailymail import standin_corpus

    count, seed = TOKENIZER_CORPUS
    texts: list[str] = []
    for s in standin_corpus(count, seed):
        texts.append(s.input_text)
        texts.append(s.reference)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[EOT],
        padding_side="left",
        model_max_length=8000,
        clean_up_tokenization_spaces=False,
    )


def _build(dest: Path, config: str, seed: int) -> None:
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    cfg = llama_config(config, vocab_size=len(tokenizer))
    spec = CONFIGS[config]
    dtype = getattr(torch, spec.dtype)
    old_dtype = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_default_dtype(dtype)
        try:
            model = LlamaForCausalLM(cfg)
        finally:
            torch.set_default_dtype(old_dtype)
        if spec.eos_boost and not spec.tie_word_embeddings:
            with torch.no_grad():
                w = model.lm_head.weight
                direction = torch.randn(w.shape[1], dtype=torch.float32)
                direction = direction / direction.norm() * w[1:].norm(dim=1).mean().float()
                row = w.float().mean(dim=0) + spec.eos_boost * direction
                w[cfg.eos_token_id] = row.to(w.dtype)
    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id,
        pad_token_id=cfg.pad_token_id,
        **GENERATION_KWARGS,
    )
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    meta = {
        "builder_version": BUILDER_VERSION,
        "config": config,
        "seed": seed,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "standin_config": asdict(spec),
        "tokenizer_vocab": len(tokenizer),
    }
    # Written last: its presence marks a complete build.
    (dest / _MARKER).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def _is_complete(folder: Path, config: str, seed: int) -> bool:
    marker = folder / _MARKER
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if meta.get("builder_version") != BUILDER_VERSION or meta.get("config") != config \
            or meta.get("seed") != seed:
        return False
    if not (folder / "config.json").is_file() or not (folder / "tokenizer.json").is_file():
        return False
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError):
            return False
        return all((folder / s).is_file() for s in shards)
    weights = folder / "model.safetensors"
    return weights.is_file() and weights.stat().st_size > 0


def ensure_llama_standin(cache_dir: Path | None = None, seed: int = 0, config: str = "tiny") -> Path:
    """Build the stand-in once and return its folder (``from_pretrained``-loadable).

    The folder, ``<cache_dir>/llama3_1-8b-standin-<config>-seed<seed>-v<BUILDER_VERSION>``,
    holds the model and tokenizer (``save_pretrained``) and a ``standin.json``
    marker. ``cache_dir`` defaults to ``$PYTEST_MLPERF_CACHE``, else
    ``~/.cache/pytest-mlperf``. Safe across processes (pytest-xdist workers): a
    file lock serializes builders, a build goes to a temporary folder that is
    renamed into place, and an incomplete or stale folder is rebuilt.
    """
    from filelock import FileLock

    if config not in CONFIGS:
        raise ValueError(f"unknown Llama stand-in config {config!r}; choose from {sorted(CONFIGS)}")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    name = _folder_name(config, seed)
    dest = root / name
    if _is_complete(dest, config, seed):
        return dest
    with FileLock(str(root / f"{name}.lock")):
        if _is_complete(dest, config, seed):
            return dest
        # A folder (save_pretrained writes several files), so not contract/files.write_bytes_atomic: it is built in
        # a temporary folder beside dest and renamed into place. os.replace cannot put a folder over a non-empty
        # one, so a stale dest is removed first; the lock serializes builders, and a caller that finds no complete
        # folder in that moment waits on the lock.
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
        try:
            _build(tmp, config, seed)
            if dest.exists() or dest.is_symlink():
                if dest.is_dir() and not dest.is_symlink():
                    shutil.rmtree(dest)
                else:
                    dest.unlink()
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return dest


def load_llama_standin(path: Path) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a folder made by :func:`ensure_llama_standin`, model in eval mode."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = LlamaForCausalLM.from_pretrained(str(path))
    model.eval()
    return model, tokenizer


def greedy_generate(
    model: Any,
    input_ids: Sequence[Sequence[int]],
    max_new_tokens: int = 128,
    num_threads: int | None = None,
) -> list[list[int]]:
    """Greedy-decode each prompt (one at a time, no padding); new token ids only.

    Generation stops after ``eos`` (kept in the output, as the reference SUT
    returns it) or ``max_new_tokens``; ``min_new_tokens`` is 1 as in MLPerf.
    ``num_threads`` sets torch's intra-op threads for the call and restores them
    after: 1 is fastest for the tiny model on a small shared CPU (with 2 threads
    on a busy 2-core machine decoding was 10-50x slower and erratic).
    """
    import torch

    kwargs = dict(GENERATION_KWARGS, max_new_tokens=max_new_tokens)
    outputs: list[list[int]] = []
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        with torch.inference_mode():
            for ids in input_ids:
                prompt = torch.tensor([list(ids)], dtype=torch.long)
                out = model.generate(prompt, attention_mask=torch.ones_like(prompt), **kwargs)
                outputs.append(out[0, prompt.shape[1]:].tolist())
    finally:
        if num_threads is not None:
            torch.set_num_threads(old_threads)
    return outputs
