"""vLLM harness efficiency: LoadGen Offline tokens/s through pytest-mlperf's serving harness versus a bare
`LLM.generate` over exactly the same prompts, on one engine. Writes JSON to --out.

    python tools/device/vllm_efficiency.py --model DIR --out eff.json [--seconds 10] [--option NAME=VALUE ...]

Method: the backend (runner/backends/vllm_llm.py) starts its Offline engine (`LLM`) once; a warm-up `generate`, then the
runner's own calibration (runner/strategies/serving_setup.py) sets LoadGen's expected QPS; one LoadGen Offline test (performance
mode) issues its samples, recorded as the harness hands them to `generate_all`; then the same list of prompts goes
through `LLM.generate` without LoadGen, timed. LoadGen tokens/s over bare tokens/s is the harness efficiency.
Needs vllm, a CUDA GPU, transformers, mlcommons-loadgen and this checkout on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pytest_mlperf.contract.test_request import TestRequest, offline_samples_per_query
from pytest_mlperf.runner.loadgen import effective_test, run_test
from pytest_mlperf.contract.loadgen_log import read_run
from pytest_mlperf.contract.lifetime import end_tree
from pytest_mlperf.contract.protocol import RunRequest
from pytest_mlperf.runner.strategies.serving_setup import calibrate_serving
from pytest_mlperf.runner.staging import Stager
from pytest_mlperf.runner.strategies.generation_setup import generation_expectations
from pytest_mlperf.runner.strategies.serving import ServingHarness
from pytest_mlperf.runner.backends.vllm_llm import VllmLLM
from pytest_mlperf.runner.workloads import llama3_1_8b
from pytest_mlperf.contract.protocol import DataRequest


class Recorder:
    """Passes calls to the backend and keeps the prompts `generate_all` got."""

    def __init__(self, backend: VllmLLM) -> None:
        self.backend = backend
        self.calls: list[list[int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def generate_all(self, indices: Sequence[int]) -> list[np.ndarray]:
        self.calls.append(list(indices))
        return self.backend.generate_all(indices)


def phase(began: float, text: str) -> None:
    """A timestamped progress line: a step that outlasts its `timeout` shows where it was."""
    print(f"[{time.perf_counter() - began:7.1f} s] {text}", flush=True)


def end_with_tree(signum: int, _frame: object) -> None:
    """On `timeout`'s SIGTERM: end vLLM's EngineCore and every other process this one started, then exit. Without
    it a timed-out run left its EngineCore holding 132 GiB of the GPU (H200, 2026-12-02, session 8)."""
    end_tree(os.getpid(), 2.0, spare=os.getpid())
    os._exit(128 + signum)


def offline_test(log_dir: str, total: int, seconds: float) -> TestRequest:
    """The LoadGen Offline test the tool runs: `min_query_count` as the ci profile has it (1), so that the query is
    max(1, 1.1 x duration x expected QPS) samples, rounded up to whole passes over the loaded prompts. Left unset,
    mlperf.conf's llama3_1-8b minimum of 13,368 samples made the query 13,568 samples, ~260 s at 52 QPS, and the
    run outlived its step (H200, session 9; tests/test_vllm_efficiency_tool.py)."""
    return TestRequest("llama3_1-8b", "Offline", "performance", log_dir, total, min_duration_ms=int(seconds * 1000),
                       min_query_count=1, use_token_latencies=True)


def parse_option(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"write NAME=VALUE, got {text!r}")
    return name, value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=10.0, help="LoadGen's min duration")
    parser.add_argument("--option", type=parse_option, action="append", default=[], help="vllm SUT option")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, end_with_tree)
    began = time.perf_counter()
    dataset = llama3_1_8b.open_dataset(DataRequest("llama3_1-8b", str(args.model), None))
    backend = VllmLLM(args.model, "cuda", dict(args.option))
    try:
        t0 = time.perf_counter()
        phase(began, "starting the Offline engine")
        backend.start("Offline")
        start_s = time.perf_counter() - t0
        phase(began, f"engine up in {start_s:.0f} s; calibrating")
        stager = Stager(backend, dataset)
        log_dir = Path(tempfile.mkdtemp(prefix="vllm-eff-"))
        test = offline_test(str(log_dir), dataset.total_count, args.seconds)
        req = RunRequest(test=test, batch_size=8, streams=1, calibrate=True, calibrate_seconds=1.0,
                         expectation_margin=1.2)
        bare_cal = calibrate_serving(backend, stager, "Offline", 1.0)
        test = generation_expectations(replace(req, test=test), bare_cal, streams=1)
        planned = offline_samples_per_query(effective_test(test))  # as LoadGen will issue it
        qps = test.offline_expected_qps or 0.0
        phase(began, f"LoadGen Offline test: {planned} samples at {qps:.1f} expected QPS, about "
                     f"{planned / qps if qps else float('nan'):.0f} s")
        recorder = Recorder(backend)
        harness = ServingHarness(recorder, stager.stage, "Offline")  # type: ignore[arg-type]
        run_test(test, harness)
        harness.close()
        if harness.error:
            raise RuntimeError(harness.error)
        run = read_run(str(log_dir))
        issued = [i for call in recorder.calls for i in call]
        phase(began, f"LoadGen done ({run.validity}); bare LLM.generate of the {len(issued)} issued prompts")
        t0 = time.perf_counter()
        outputs = backend.generate_all(issued)
        bare_s = time.perf_counter() - t0
        bare_tokens = sum(len(o) for o in outputs)
        loadgen_tps = float(run.metrics.get("result_tokens_per_second") or 0.0)
        result = {
            "engine_start_s": start_s,
            "backend": backend.info.to_dict(),
            "concurrency": backend.concurrency,
            "calibration": bare_cal.to_dict(),
            "offline_expected_qps": test.offline_expected_qps,
            "loadgen": {"validity": run.validity, "metrics": run.metrics, "samples": len(issued)},
            "bare": {"samples": len(issued), "seconds": bare_s, "tokens": bare_tokens,
                     "tokens_per_s": bare_tokens / bare_s, "samples_per_s": len(issued) / bare_s},
            "efficiency_tokens": loadgen_tps / (bare_tokens / bare_s) if bare_tokens else None,
        }
    finally:
        backend.close()
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: result[k] for k in ("engine_start_s", "concurrency", "bare", "efficiency_tokens")},
                     indent=2, default=str))
    print("LoadGen tokens/s:", result["loadgen"]["metrics"].get("result_tokens_per_second"),
          "validity:", result["loadgen"]["validity"])
    return 0


if __name__ == "__main__":  # engine processes are spawned: they re-import this file as __mp_main__
    sys.exit(main())
