"""The locally built Llama-3.1-8B stand-in (tiny config built; 1b/8b on the meta device)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("filelock")

from pytest_mlperf.runner.standins.llama import (  # noqa: E402
    BUILDER_VERSION,
    ensure_llama_standin,
    greedy_generate,
    llama_config,
    load_llama_standin,
)
from pytest_mlperf.runner.workloads.cnn_dailymail import standin_corpus  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_llama_standin(tmp_path_factory.mktemp("cache"), seed=0)


@pytest.fixture(scope="module")
def loaded(built: Path) -> tuple[Any, Any]:
    return load_llama_standin(built)


def test_folder_name_and_contents(built: Path) -> None:
    assert built.name == f"llama3_1-8b-standin-tiny-seed0-v{BUILDER_VERSION}"
    for f in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json",
              "standin.json"):
        assert (built / f).is_file(), f
    assert not [p for p in built.parent.iterdir() if ".tmp-" in p.name]


def test_cached_build_is_reused(built: Path) -> None:
    stamp = (built / "model.safetensors").stat().st_mtime_ns
    assert ensure_llama_standin(built.parent, seed=0) == built
    assert (built / "model.safetensors").stat().st_mtime_ns == stamp


def test_cache_dir_from_env(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_MLPERF_CACHE", str(built.parent))
    assert ensure_llama_standin() == built


def test_tiny_model_shape(loaded: tuple[Any, Any]) -> None:
    model, tok = loaded
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (2, 4, 2)
    assert cfg.vocab_size == len(tok)
    assert 2000 <= len(tok) <= 4096
    assert _rope_theta(cfg) == 500000.0
    assert model.generation_config.do_sample is False
    assert model.generation_config.max_new_tokens == 128


def test_tokenizer_round_trip(loaded: tuple[Any, Any]) -> None:
    _, tok = loaded
    text = 'Mr. Smith, 42, said "the £3.5m café deal" was approved in the U.S. on Monday.\nNext line.'
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.decode(ids[1:]) == text
    assert {tok.bos_token, tok.eos_token, tok.pad_token} == {
        "<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>"}
    assert len(set([tok.bos_token_id, tok.eos_token_id, tok.pad_token_id])) == 3


def test_greedy_is_deterministic(loaded: tuple[Any, Any]) -> None:
    model, tok = loaded
    ids = tok(standin_corpus(1, seed=5)[0].input_text)["input_ids"]
    first = greedy_generate(model, [ids], max_new_tokens=24, num_threads=1)
    second = greedy_generate(model, [ids], max_new_tokens=24, num_threads=1)
    assert first == second
    assert 1 <= len(first[0]) <= 24


def test_varied_outputs_across_prompts(loaded: tuple[Any, Any]) -> None:
    model, tok = loaded
    prompts = [tok(s.input_text)["input_ids"] for s in standin_corpus(8, seed=99)]
    threads = torch.get_num_threads()
    outs = greedy_generate(model, prompts, max_new_tokens=128, num_threads=1)
    assert torch.get_num_threads() == threads
    assert len({tuple(o) for o in outs}) == 8
    assert all(len(set(o)) > 1 or len(o) == 1 for o in outs)  # not one token forever
    lengths = [len(o) for o in outs]
    assert all(1 <= n <= 128 for n in lengths)
    assert len(set(lengths)) >= 3
    stopped = [o for o in outs if len(o) < 128]
    assert stopped and all(o[-1] == tok.eos_token_id for o in stopped)
    texts = tok.batch_decode(outs, skip_special_tokens=True)
    assert len(set(texts)) == 8


def test_broken_cache_is_rebuilt_identically(built: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    copy = cache / built.name
    shutil.copytree(built, copy)
    (copy / "model.safetensors").write_bytes(b"")  # truncated download/crash mid-write
    rng_before = torch.get_rng_state()
    path = ensure_llama_standin(cache, seed=0)
    assert torch.equal(torch.get_rng_state(), rng_before)  # global RNG untouched
    assert path == copy
    assert (path / "model.safetensors").stat().st_size > 0
    from safetensors.torch import load_file

    a = load_file(str(built / "model.safetensors"))
    b = load_file(str(path / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (path / "tokenizer.json").read_text() == (built / "tokenizer.json").read_text()


def test_missing_marker_is_rebuilt(built: Path, tmp_path: Path) -> None:
    copy = tmp_path / built.name
    shutil.copytree(built, copy)
    (copy / "standin.json").unlink()
    (copy / "stale.txt").write_text("left over")
    assert ensure_llama_standin(tmp_path, seed=0) == copy
    assert (copy / "standin.json").is_file() and not (copy / "stale.txt").exists()


def _rope_theta(cfg: Any) -> float:
    rope = getattr(cfg, "rope_parameters", None)  # transformers >= 5
    if isinstance(rope, dict) and "rope_theta" in rope:
        return float(rope["rope_theta"])
    return float(cfg.rope_theta)


def _meta_params(config: str) -> tuple[int, Any]:
    from transformers import LlamaForCausalLM

    cfg = llama_config(config)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    return sum(p.numel() for p in model.parameters()), cfg


def test_1b_config_parameter_count() -> None:
    n, cfg = _meta_params("1b")
    h, inter, layers, vocab = 2048, 8192, 16, 128256
    kv = 8 * (h // 32)
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * inter + 2 * h
    assert n == vocab * h + layers * per_layer + h == 1_235_814_400  # tied embeddings
    assert cfg.tie_word_embeddings and cfg.num_key_value_heads == 8


def test_8b_config_parameter_count() -> None:
    n, cfg = _meta_params("8b")
    h, inter, layers, vocab = 4096, 14336, 32, 128256
    kv = 8 * (h // 32)
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * inter + 2 * h
    assert n == 2 * vocab * h + layers * per_layer + h == 8_030_261_248
    assert not cfg.tie_word_embeddings
    assert _rope_theta(cfg) == 500000.0 and cfg.num_key_value_heads == 8


def test_unknown_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown"):
        ensure_llama_standin(tmp_path, config="70b")
    with pytest.raises(ValueError, match="vocab"):
        llama_config("tiny")
