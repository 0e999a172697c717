"""Regenerate the small LoadGen 6.0.17 logs in this folder.

Usage (from anywhere, with mlcommons-loadgen installed)::

    python tests/data/loadgen-6.0.17/make_logs.py

Each named run (see NAMES) gets its own sub-folder holding only
mlperf_log_detail.txt, mlperf_log_summary.txt and mlperf_log_accuracy.json
(trace disabled, trace file removed), and runs in its own process so no
LoadGen state leaks between logs.  The SUT completes every sample at once
(an Offline query after a 0.25 s pause) and answers with 4 bytes: the sample
index as a little-endian uint32.  "*-llm*" runs set use_token_latencies and
report 16 tokens per sample (FirstTokenComplete, then the full response).
Durations are tiny (0.2 s) yet the performance runs are VALID, except
"multistream-short" (min duration and early stopping not met); the point is
the log format, not the numbers.
"""

from __future__ import annotations

import array
import subprocess
import sys
import time
from pathlib import Path

import mlperf_loadgen as lg

HERE = Path(__file__).resolve().parent
TOTAL = 64  # samples in the QSL
PERF = 16  # performance sample count
REST_S = {"singlestream-llm": 0.001}  # seconds between a sample's first token and its full answer


def _respond(samples, *, n_tokens: int | None = None, rest_s: float = 0.0) -> None:
    if len(samples) > 1000:
        # Offline: one big query.  Hold it a little so the run meets its minimum
        # duration with few samples (many samples make LoadGen log thousands of
        # "CAS failed." warnings and a huge detail log).
        time.sleep(0.25)
    responses = []
    keep = []
    for s in samples:
        buf = array.array("I", [s.index])
        keep.append(buf)
        ptr, _ = buf.buffer_info()
        size = buf.itemsize * len(buf)
        if n_tokens is None:
            responses.append(lg.QuerySampleResponse(s.id, ptr, size))
        else:
            # LLM style: first token first, then the full answer with n_tokens.
            lg.FirstTokenComplete([lg.QuerySampleResponse(s.id, ptr, size)])
            time.sleep(rest_s)  # the rest of the answer: end-to-end latency well above TTFT
            responses.append(lg.QuerySampleResponse(s.id, ptr, size, n_tokens))
    lg.QuerySamplesComplete(responses)


def run(name: str, settings: lg.TestSettings, *, n_tokens: int | None = None, rest_s: float = 0.0) -> None:
    out = HERE / name
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("mlperf_log_*"):
        old.unlink()

    sut = lg.ConstructSUT(lambda qs: _respond(qs, n_tokens=n_tokens, rest_s=rest_s), lambda: None)
    qsl = lg.ConstructQSL(TOTAL, PERF, lambda idx: None, lambda idx: None)

    log = lg.LogSettings()
    log.log_output.outdir = str(out)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = False
    lg.StartTestWithLogSettings(sut, qsl, settings, log)
    lg.DestroyQSL(qsl)
    lg.DestroySUT(sut)

    trace = out / "mlperf_log_trace.json"
    if trace.exists():
        trace.unlink()


def base(scenario, mode=lg.TestMode.PerformanceOnly) -> lg.TestSettings:
    s = lg.TestSettings()
    s.scenario = scenario
    s.mode = mode
    s.min_duration_ms = 200
    s.max_duration_ms = 2000
    s.min_query_count = 200
    return s


def configure(name: str) -> tuple[lg.TestSettings, int | None]:
    """Settings for one named log; returns (settings, n_tokens or None)."""
    if name == "offline":
        s = base(lg.TestScenario.Offline)
        s.offline_expected_qps = 10_000
        return s, None
    if name == "server":
        s = base(lg.TestScenario.Server)
        s.min_query_count = 1000
        s.server_target_qps = 2000
        s.server_target_latency_ns = 10_000_000
        return s, None
    if name == "singlestream":
        s = base(lg.TestScenario.SingleStream)
        s.min_query_count = 1000
        s.single_stream_expected_latency_ns = 1_000
        return s, None
    if name == "multistream":
        s = base(lg.TestScenario.MultiStream)
        s.min_query_count = 1000
        s.multi_stream_samples_per_query = 8
        s.multi_stream_expected_latency_ns = 1_000
        return s, None
    if name == "multistream-short":  # INVALID: too few queries for early stopping
        s = base(lg.TestScenario.MultiStream)
        s.min_duration_ms = 50
        s.min_query_count = 100
        s.max_query_count = 100
        s.multi_stream_samples_per_query = 8
        s.multi_stream_expected_latency_ns = 1_000
        return s, None
    if name == "server-llm":
        s = base(lg.TestScenario.Server)
        s.min_query_count = 1000
        s.server_target_qps = 2000
        s.use_token_latencies = True
        s.ttft_latency = 2_000_000_000
        s.tpot_latency = 200_000_000
        return s, 16
    if name == "singlestream-llm":  # the rest of each answer takes 1 ms after its first token (REST_S)
        s = base(lg.TestScenario.SingleStream)
        s.min_query_count = 400
        s.single_stream_expected_latency_ns = 1_000_000
        s.use_token_latencies = True
        s.ttft_latency = 2_000_000_000
        s.tpot_latency = 200_000_000
        return s, 16
    if name == "offline-llm":
        s = base(lg.TestScenario.Offline)
        s.offline_expected_qps = 10_000
        s.use_token_latencies = True
        return s, 16
    if name == "offline-accuracy":
        return base(lg.TestScenario.Offline, lg.TestMode.AccuracyOnly), None
    if name == "offline-llm-accuracy":
        s = base(lg.TestScenario.Offline, lg.TestMode.AccuracyOnly)
        s.use_token_latencies = True
        return s, 16
    raise SystemExit(f"unknown log name {name!r}")


NAMES = (
    "offline",
    "server",
    "singlestream",
    "multistream",
    "multistream-short",
    "server-llm",
    "singlestream-llm",
    "offline-llm",
    "offline-accuracy",
    "offline-llm-accuracy",
)


def main(argv: list[str]) -> int:
    if argv:  # child: one run per process, so LoadGen state never leaks between logs
        settings, n_tokens = configure(argv[0])
        run(argv[0], settings, n_tokens=n_tokens, rest_s=REST_S.get(argv[0], 0.0))
        return 0
    for name in NAMES:
        subprocess.run([sys.executable, __file__, name], check=True, stdout=subprocess.DEVNULL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
