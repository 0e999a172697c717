"""vLLM backend for causal LMs (llama3_1-8b) on CUDA GPUs, served by runner/strategies/serving.py.

- Offline: `LLM.generate` over all the samples LoadGen issued (vLLM batches and schedules them itself);
- Server and SingleStream: vLLM's asynchronous engine (`AsyncLLM`) on an asyncio loop in a thread of its own; each
  request streams (`RequestOutputKind.DELTA`): the first new token is reported at once, all of them at the end.
  Server requests are submitted as LoadGen issues them, so they run concurrently (continuous batching).

One engine is up at a time (each takes `gpu_memory_utilization` of every GPU): `start(scenario)` shuts the other
kind down and starts the one the scenario needs, before calibration, so start-up (weights, profiling, compilation,
CUDA graphs) is never measured. `close` shuts it down, so the next runner gets the GPU memory back.

Generation follows the transformers backend and MLPerf's reference: greedy (temperature 0), at most 128 new
tokens, at least 2 (LoadGen's TPOT divides by n_tokens - 1), EOS kept. Prompts go in as token ids
(`TokensPrompt`): MLCommons' file brings Llama 3.1 ids, and stand-in prompts are tokenized once at staging; outputs
are not detokenized.

Options: max_new_tokens (128), gpu_memory_utilization (0.9), max_model_len (the model's), max_num_seqs (vLLM's
default), tensor_parallel_size (default: the case's GPUs, i.e. the runner's CUDA_VISIBLE_DEVICES, set from
`@pytest.mark.mlperf(gpus=k)`), enforce_eager (False: compiled model and CUDA graphs), enable_prefix_caching
(False: LoadGen repeats samples, and a cached prefix would skip their prefill), dtype ('auto': the model's, fp32
checkpoints as bf16), seed (0). A benchmark sets them in its marker (`sut_options={...}`); a user sets them for a
run with `--mlperf-sut-option vllm.KEY=VALUE` (repeatable; ini `mlperf_sut_option`), which wins over the marker,
e.g. `--mlperf-sut-option vllm.max_model_len=4096`: the 8B stand-in declares 131,072 tokens, for which vLLM sizes
its KV cache, and CNN/DailyMail prompts need far fewer. The values in effect are in the backend's details
(results.json). A tensor_parallel_size above 1 needs as many GPUs: the case's marker says how many (`gpus=k`).
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import itertools
import json
import os
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytest_mlperf.contract.backends import VLLM_INSTALL_HINT
from pytest_mlperf.runner.backends.base import BackendError, BackendInfo, check_option_names, parse_flag
from pytest_mlperf.runner.strategies import threads
from pytest_mlperf.runner.strategies.serving import ErrorCallback, TokensCallback

MIN_NEW_TOKENS = 2  # LoadGen's TPOT divides by n_tokens - 1
INSTALL_HINT = VLLM_INSTALL_HINT


def vllm_missing() -> str | None:
    """Why the vllm backend cannot run here (without importing anything), or None."""
    if importlib.util.find_spec("vllm") is None:
        return f"the vllm backend needs the vllm package, which is not installed: {INSTALL_HINT}"
    return None


@dataclass(frozen=True)
class VllmSettings:
    max_new_tokens: int = 128
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    tensor_parallel_size: int = 1
    enforce_eager: bool = False
    enable_prefix_caching: bool = False
    dtype: str = "auto"
    seed: int = 0

    def engine_kwargs(self, model_dir: Path) -> dict[str, Any]:
        """Keyword arguments of vLLM's `LLM(...)` and `AsyncEngineArgs(...)`; None values are left to vLLM."""
        kwargs = {k: v for k, v in asdict(self).items() if k != "max_new_tokens" and v is not None}
        return {"model": str(model_dir), "disable_log_stats": True, **kwargs}


def visible_gpu_count(env: Mapping[str, str]) -> int | None:
    """GPUs a runner may use: the entries of CUDA_VISIBLE_DEVICES (the recipe pins it to the case's GPUs)."""
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return len([d for d in value.split(",") if d.strip()])


def settings_from_options(options: Mapping[str, object], env: Mapping[str, str]) -> VllmSettings:
    """Validated settings; tensor_parallel_size defaults to the case's GPUs (CUDA_VISIBLE_DEVICES), else 1."""
    check_option_names("vllm", options, VllmSettings.__dataclass_fields__)
    values: dict[str, Any] = {}
    for name, value in options.items():
        default = getattr(VllmSettings, name)
        try:
            if isinstance(default, bool):
                values[name] = parse_flag(value)
            elif name in ("gpu_memory_utilization",):
                values[name] = float(value)  # type: ignore[arg-type]
            elif name == "dtype":
                values[name] = str(value)
            else:
                values[name] = None if value is None else int(value)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise BackendError(f"vllm SUT: bad value {value!r} for option {name}") from None
    if "tensor_parallel_size" not in values or values["tensor_parallel_size"] is None:
        values["tensor_parallel_size"] = visible_gpu_count(env) or 1
    s = VllmSettings(**values)
    if not 0 < s.gpu_memory_utilization <= 1:
        raise BackendError(f"vllm SUT: gpu_memory_utilization must be in (0, 1], got {s.gpu_memory_utilization}")
    if s.max_new_tokens < MIN_NEW_TOKENS:
        raise BackendError(f"vllm SUT: max_new_tokens must be at least {MIN_NEW_TOKENS} (LoadGen's TPOT)")
    if s.tensor_parallel_size < 1:
        raise BackendError(f"vllm SUT: tensor_parallel_size must be at least 1, got {s.tensor_parallel_size}")
    gpus = visible_gpu_count(env)
    if gpus is not None and s.tensor_parallel_size > gpus:
        raise BackendError(f"vllm SUT: tensor_parallel_size {s.tensor_parallel_size} needs as many GPUs, but the "
                           f"runner sees {gpus} (CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES')}); mark the "
                           f"case @pytest.mark.mlperf(gpus={s.tensor_parallel_size})")
    return s


_PRECISIONS = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "bf16", "float": "bf16"}


def precision(dtype: str, model_dir: Path) -> str:
    """The precision vLLM will run in: the dtype option, else the checkpoint's (vLLM runs fp32 ones in bf16)."""
    if dtype != "auto":
        return {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}.get(
            dtype, dtype)
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "auto"
    name = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    return _PRECISIONS.get(name, name)


@dataclass(frozen=True)
class VllmApi:
    """The parts of vLLM's public API the backend uses (tests pass stand-ins with the same shapes)."""

    version: str
    LLM: Any  # vllm.LLM
    AsyncLLM: Any  # vllm.v1.engine.async_llm.AsyncLLM
    AsyncEngineArgs: Any  # vllm.AsyncEngineArgs
    SamplingParams: Any  # vllm.SamplingParams
    RequestOutputKind: Any  # vllm.sampling_params.RequestOutputKind
    TokensPrompt: Any  # vllm.TokensPrompt
    server_context: Any  # vllm.usage.usage_lib.UsageContext.OPENAI_API_SERVER: vLLM's serving defaults


def load_vllm_api() -> VllmApi:
    """Imports vLLM; a failed import names the missing module (vllm itself, or one of its dependencies)."""
    # engine processes are spawned, not forked: the runner has threads (the engine loop's, LoadGen's)
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    try:
        import vllm
        from vllm import LLM, AsyncEngineArgs, SamplingParams, TokensPrompt
        from vllm.sampling_params import RequestOutputKind
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM
    except ImportError as exc:
        missing = exc.name or str(exc)
        if missing == "vllm":
            raise BackendError(f"the vllm backend needs vllm, which is not installed: {INSTALL_HINT}") from None
        raise BackendError(f"vllm is installed but could not be imported: module {missing!r} is missing ({exc}); "
                           f"{INSTALL_HINT}") from exc
    return VllmApi(str(vllm.__version__), LLM, AsyncLLM, AsyncEngineArgs, SamplingParams, RequestOutputKind,
                   TokensPrompt, UsageContext.OPENAI_API_SERVER)


class _AsyncEngine:
    """An `AsyncLLM` and the asyncio loop (in its own thread) that all its requests run on."""

    def __init__(self, api: VllmApi, kwargs: Mapping[str, Any]) -> None:
        self.loop = asyncio.new_event_loop()
        # a lasting thread: the loop's callbacks complete samples (runner/strategies/threads.py)
        self.thread = threads.start(self.loop.run_forever, "mlperf-vllm-loop")
        self.inflight: set[Future[None]] = set()
        self._lock = threading.Lock()

        async def make() -> Any:  # built on its loop, so its output handler runs there
            # the serving context's scheduler defaults (vllm serve's), not the bare engine's smaller ones
            return api.AsyncLLM.from_engine_args(api.AsyncEngineArgs(**kwargs), usage_context=api.server_context)

        try:
            self.engine = asyncio.run_coroutine_threadsafe(make(), self.loop).result()
        except BaseException:
            self._stop_loop()
            raise

    def run(self, coro: Any) -> None:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        with self._lock:  # kept until done: a pending task needs a strong reference
            self.inflight.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self.inflight.discard(future)

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=60)
        if not self.thread.is_alive():
            self.loop.close()

    def shutdown(self) -> None:
        with self._lock:
            pending = list(self.inflight)
        for future in pending:  # requests still running (a failed test): end them before the engine
            future.cancel()
        try:
            self.engine.shutdown()
        finally:
            self._stop_loop()


class VllmLLM:
    """A vLLM engine served by the serving harness (registry kind "serving": runner/strategies/serving_setup.py)."""

    def __init__(self, model_dir: Path, device: str, options: Mapping[str, object], *,
                 api: VllmApi | None = None, env: Mapping[str, str] | None = None) -> None:
        if device == "cpu":
            raise BackendError("the vllm backend runs on CUDA GPUs only, and --mlperf-device=cpu asks for the CPU: "
                               "use --mlperf-device=cuda or auto")
        self.settings = settings_from_options(options, os.environ if env is None else env)
        self.api = api or load_vllm_api()
        if api is None:
            import torch

            if not torch.cuda.is_available():
                raise BackendError(f"the vllm backend needs a CUDA GPU, and torch {torch.__version__} sees none")
        self.model_dir = model_dir
        self._tokenizer: Any = None
        self._prompts: dict[int, list[int]] = {}
        self._ids = itertools.count()
        self._offline: Any = None  # vllm.LLM while Offline runs
        self._async: _AsyncEngine | None = None
        self.engine_starts = 0
        s = self.settings
        sampling = {"temperature": 0.0, "max_tokens": s.max_new_tokens, "min_tokens": MIN_NEW_TOKENS,
                    "detokenize": False}
        self._final_params = self.api.SamplingParams(**sampling)
        self._stream_params = self.api.SamplingParams(**sampling, output_kind=self.api.RequestOutputKind.DELTA)
        self.info = BackendInfo(
            backend="vllm",
            device="cuda",
            precision=precision(s.dtype, model_dir),
            details={
                "vllm": self.api.version,
                "model": model_dir.name,
                "tensor_parallel_size": str(s.tensor_parallel_size),
                "gpu_memory_utilization": str(s.gpu_memory_utilization),
                "max_model_len": str(s.max_model_len or "model"),
                "max_num_seqs": str(s.max_num_seqs or "vllm default"),
                "enforce_eager": str(s.enforce_eager),
                "prefix_caching": str(s.enable_prefix_caching),
            },
        )

    # --- prompts ---------------------------------------------------------------------------------------------
    def stage(self, indices: Sequence[int], samples: Sequence[Any]) -> None:  # the dataset's records
        """Token ids of the prompts (LoadGen's untimed load); MLCommons' file brings Llama 3.1 ids already."""
        prompts: dict[int, list[int]] = {}
        for i, sample in zip(indices, samples):
            ids = getattr(sample, "input_ids", None)
            if ids is None:
                ids = self._tokenize(str(sample.input_text))
            prompts[int(i)] = [int(t) for t in ids]
        self._prompts = prompts

    def _tokenize(self, text: str) -> list[int]:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        return list(self._tokenizer(text)["input_ids"])

    def _prompt(self, index: int) -> Any:
        try:
            return self.api.TokensPrompt(prompt_token_ids=self._prompts[index])
        except KeyError:
            raise BackendError(f"sample {index} was not loaded") from None

    # --- engines ---------------------------------------------------------------------------------------------
    @property
    def engine(self) -> str | None:
        """'offline' (LLM), 'async' (AsyncLLM) or None: the engine that is up."""
        return "offline" if self._offline is not None else "async" if self._async is not None else None

    @staticmethod
    def engine_for(scenario: str) -> str:
        """The engine a scenario runs on: 'offline' (LLM) for Offline, 'async' (AsyncLLM) for the others."""
        return "offline" if scenario == "Offline" else "async"

    def start(self, scenario: str) -> None:
        want = self.engine_for(scenario)
        if self.engine == want:
            return
        self.shutdown()
        kwargs = self.settings.engine_kwargs(self.model_dir)
        if want == "offline":
            self._offline = self.api.LLM(**kwargs)
        else:
            self._async = _AsyncEngine(self.api, kwargs)
        self.engine_starts += 1

    @property
    def concurrency(self) -> int:
        engine = self._offline.llm_engine if self._offline is not None else (
            self._async.engine if self._async is not None else None)
        if engine is None:
            raise BackendError("no vLLM engine is running: call start(scenario) first")
        return int(engine.vllm_config.scheduler_config.max_num_seqs)

    def shutdown(self) -> None:
        """Ends the running engine and its processes, so that their GPU memory is free again."""
        offline, self._offline = self._offline, None
        engine, self._async = self._async, None
        if offline is not None:
            offline.llm_engine.engine_core.shutdown()  # LLM has no shutdown(): end its engine-core client
            del offline
        if engine is not None:
            engine.shutdown()
        gc.collect()

    # --- generation ------------------------------------------------------------------------------------------
    def generate_all(self, indices: Sequence[int]) -> list[np.ndarray]:
        if self._offline is None:
            raise BackendError("the Offline engine (vllm.LLM) is not running: call start('Offline') first")
        outputs = self._offline.generate([self._prompt(i) for i in indices], self._final_params, use_tqdm=False)
        return [np.asarray(list(o.outputs[0].token_ids), dtype=np.int32) for o in outputs]

    def submit(self, index: int, on_first_token: TokensCallback, on_done: TokensCallback,
               on_error: ErrorCallback) -> None:
        if self._async is None:
            raise BackendError("the streaming engine (AsyncLLM) is not running: call start('Server') first")
        self._async.run(self._stream(self._async.engine, self._prompt(index), f"mlperf-{next(self._ids)}",
                                     on_first_token, on_done, on_error))

    async def _stream(self, engine: Any, prompt: Any, request_id: str, on_first_token: TokensCallback,
                      on_done: TokensCallback, on_error: ErrorCallback) -> None:
        tokens: list[int] = []
        try:
            async for out in engine.generate(prompt, self._stream_params, request_id=request_id):
                new = out.outputs[0].token_ids  # DELTA: the tokens since the last output
                if len(new) and not tokens:
                    on_first_token(np.asarray(list(new[:1]), dtype=np.int32))
                tokens.extend(new)
        except asyncio.CancelledError:
            raise  # the engine is shutting down: LoadGen's test is over, nothing may be completed any more
        except Exception as exc:  # noqa: BLE001 - the harness reports it and completes the sample empty
            on_error(exc)
            return
        on_done(np.asarray(tokens, dtype=np.int32))

    def close(self) -> None:
        self.shutdown()
        self._prompts = {}

