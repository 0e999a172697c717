"""The only module that imports `mlperf_loadgen`: builds TestSettings, runs exactly one StartTest per call.

Pitfalls of mlcommons-loadgen 6.0.x guarded here (each verified by running it):
- `TestSettings.FromConfig(path, model, scenario, 1)` loads the embedded mlperf.conf only on the first call in a
  process; later calls silently lose its defaults. We always call `FromConfig("", model, scenario, 0)` (the
  embedded mlperf.conf) and then `FromConfig(user_conf, model, scenario, 2)` (the user's file only), and check
  the return codes (-2: missing file, -22: a line it could not parse).
- A missing log `outdir` makes StartTest fail silently and the next StartTest abort the process: the directory
  is created and checked first.
- An exception escaping `issue_queries` poisons the process (the next StartTest aborts it): SUT callbacks are
  wrapped, the error is kept, its samples are completed empty so the test can end, and the run is reported as
  failed (the runner is then replaced, see runner/child.py).
- A sample never completed hangs StartTest forever: the runner process is killed by its parent's timeout.
- An `audit.config` in the working directory silently overrides settings: we pass an audit path inside the
  case's log directory that is checked not to exist.
- `server_num_issue_query_threads > 0` hangs from Python: forced to 0.
- With token latencies every sample must report `n_tokens > 1`: `Responder.complete_tokens` rejects fewer.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import mlperf_loadgen as lg
import numpy as np

from pytest_mlperf.contract.test_request import (
    TestRequest,
    issued_query_count,
    loaded_sample_count,
    user_conf_keys,
)

_SCENARIO = {
    "Offline": lg.TestScenario.Offline,
    "Server": lg.TestScenario.Server,
    "SingleStream": lg.TestScenario.SingleStream,
    "MultiStream": lg.TestScenario.MultiStream,
}
_MODE = {"performance": lg.TestMode.PerformanceOnly, "accuracy": lg.TestMode.AccuracyOnly}


class LoadGenError(RuntimeError):
    """LoadGen could not be configured or run; the message says what to change."""


def build_test_settings(req: TestRequest) -> lg.TestSettings:
    if req.scenario not in _SCENARIO:
        raise LoadGenError(f"unknown scenario {req.scenario!r}")
    if req.mode not in _MODE:
        raise LoadGenError(f"unknown mode {req.mode!r}")
    ts = lg.TestSettings()
    rc = ts.FromConfig("", req.loadgen_model, req.scenario, 0)
    if rc != 0:
        raise LoadGenError(f"LoadGen's mlperf.conf has no settings for {req.loadgen_model}/{req.scenario} (rc {rc})")
    user_keys: set[str] = set()
    if req.user_conf:
        conf = Path(req.user_conf)
        if not conf.is_file():
            raise LoadGenError(f"--mlperf-user-conf {conf} does not exist")
        rc = ts.FromConfig(str(conf), req.loadgen_model, req.scenario, 2)
        if rc != 0:
            raise LoadGenError(
                f"LoadGen rejected user.conf {conf} (rc {rc}): lines must read MODEL.SCENARIO.key = value"
            )
        user_keys = user_conf_keys(conf, req.loadgen_model, req.scenario)
    ts.scenario = _SCENARIO[req.scenario]
    ts.mode = _MODE[req.mode]
    _apply(ts, req, user_keys)
    ts.server_num_issue_query_threads = 0
    return ts


def effective_test(req: TestRequest) -> TestRequest:
    """`req` with the values LoadGen will actually use for its length and expectations: ours, else the user.conf's,
    else mlperf.conf's (read back from the TestSettings built for it)."""
    ts = build_test_settings(req)
    accuracy = int(ts.accuracy_sample_count_override) or None
    return replace(
        req,
        min_duration_ms=int(ts.min_duration_ms),
        min_query_count=issued_query_count(req, int(ts.min_query_count), bool(ts.sample_concatenate_permutation)),
        offline_expected_qps=float(ts.offline_expected_qps),
        single_stream_expected_latency_ns=int(ts.single_stream_expected_latency_ns),
        multi_stream_expected_latency_ns=int(ts.multi_stream_expected_latency_ns),
        server_target_qps=float(ts.server_target_qps),
        multi_stream_samples_per_query=int(ts.multi_stream_samples_per_query),
        accuracy_sample_count=accuracy if accuracy is not None else req.accuracy_sample_count,
        sample_concatenate_permutation=bool(ts.sample_concatenate_permutation),
    )


def _apply(ts: lg.TestSettings, req: TestRequest, user_keys: set[str]) -> None:
    """Our values fill what the user's conf did not set; mlperf.conf keeps the rest."""

    def put(attr: str, conf_key: str, value: object) -> None:
        if value is not None and conf_key not in user_keys:
            setattr(ts, attr, value)

    put("min_duration_ms", "min_duration", req.min_duration_ms)
    put("min_query_count", "min_query_count", req.min_query_count)
    psc = req.performance_sample_count
    if psc is not None:
        psc = min(psc, req.total_sample_count)
    put("performance_sample_count_override", "performance_sample_count_override", psc)
    # mlperf.conf/user.conf spell the expectations as target_qps (Offline) and target_latency (SingleStream,
    # MultiStream); LoadGen stores them in the *_expected_* fields
    put("offline_expected_qps", "target_qps", req.offline_expected_qps)
    put("single_stream_expected_latency_ns", "target_latency", req.single_stream_expected_latency_ns)
    put("multi_stream_expected_latency_ns", "target_latency", req.multi_stream_expected_latency_ns)
    put("server_target_qps", "target_qps", req.server_target_qps)
    put("server_target_latency_ns", "target_latency", req.server_target_latency_ns)
    put("multi_stream_samples_per_query", "samples_per_query", req.multi_stream_samples_per_query)
    if req.use_token_latencies:
        ts.use_token_latencies = True
    if req.mode == "accuracy" and req.accuracy_sample_count is not None:
        ts.accuracy_sample_count_override = min(req.accuracy_sample_count, req.total_sample_count)


class Responder:
    """What a SUT calls to complete samples; keeps LoadGen's response structs out of the SUT modules."""

    def complete(self, ids: Sequence[int], outputs: np.ndarray) -> None:
        """Completes samples `ids`; row i of `outputs` is sample i's response bytes."""
        rows = np.ascontiguousarray(outputs).reshape(len(ids), -1)
        base, _ = rows.__array_interface__["data"]
        stride = rows.strides[0]
        size = rows.shape[1] * rows.itemsize
        lg.QuerySamplesComplete([lg.QuerySampleResponse(i, base + k * stride, size) for k, i in enumerate(ids)])

    def complete_empty(self, ids: Sequence[int]) -> None:
        lg.QuerySamplesComplete([lg.QuerySampleResponse(i, 0, 0) for i in ids])

    def first_token(self, sample_id: int, token_ids: np.ndarray) -> None:
        tokens = np.ascontiguousarray(token_ids, dtype=np.int32)
        ptr, _ = tokens.__array_interface__["data"]
        lg.FirstTokenComplete([lg.QuerySampleResponse(sample_id, ptr, tokens.nbytes, len(tokens))])

    def complete_tokens(self, sample_id: int, token_ids: np.ndarray) -> None:
        tokens = np.ascontiguousarray(token_ids, dtype=np.int32)
        if len(tokens) < 2:
            # LoadGen divides by n_tokens - 1 for TPOT; one token would corrupt the statistics
            raise LoadGenError(f"sample {sample_id} returned {len(tokens)} token(s); token latencies need at least 2")
        ptr, _ = tokens.__array_interface__["data"]
        lg.QuerySamplesComplete([lg.QuerySampleResponse(sample_id, ptr, tokens.nbytes, len(tokens))])


class Harness(Protocol):
    """The SUT and QSL side of one test, as LoadGen sees it."""

    def issue(self, samples: list[tuple[int, int]], responder: Responder) -> None:
        """`samples` are (response id, QSL index) pairs."""

    def flush(self) -> None: ...

    def load(self, indices: list[int]) -> None: ...

    def unload(self, indices: list[int]) -> None: ...


@dataclass
class _Outcome:
    error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_test(req: TestRequest, harness: Harness) -> None:
    """One StartTest with its own log directory. Raises LoadGenError if a SUT callback raised."""
    log_dir = Path(req.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    if not log_dir.is_dir():
        raise LoadGenError(f"could not create the LoadGen log directory {log_dir}")
    audit = log_dir / "audit.config"
    if audit.exists():
        raise LoadGenError(f"{audit} exists: remove it; an audit config would silently change the test")
    settings = build_test_settings(req)
    outcome = _Outcome()
    responder = Responder()

    def guarded(fn: Callable[[], None], on_error: Callable[[], None] = lambda: None) -> None:
        try:
            fn()
        except BaseException:  # noqa: BLE001 - anything escaping into LoadGen poisons the process
            with outcome.lock:
                outcome.error = outcome.error or traceback.format_exc()
            on_error()

    def issue(query_samples: list[lg.QuerySample]) -> None:
        pairs = [(q.id, q.index) for q in query_samples]
        if outcome.error is not None:  # after a failure, end the test as fast as LoadGen allows
            responder.complete_empty([i for i, _ in pairs])
            return
        guarded(lambda: harness.issue(pairs, responder), lambda: responder.complete_empty([i for i, _ in pairs]))

    sut = lg.ConstructSUT(issue, lambda: guarded(harness.flush))
    qsl = lg.ConstructQSL(
        req.total_sample_count,
        loaded_sample_count(req),
        lambda idx: guarded(lambda: harness.load(list(idx))),
        lambda idx: guarded(lambda: harness.unload(list(idx))),
    )
    log_settings = lg.LogSettings()
    out = lg.LogOutputSettings()
    out.outdir = str(log_dir)
    out.copy_summary_to_stdout = False
    out.copy_detail_to_stdout = False
    log_settings.log_output = out
    log_settings.enable_trace = False
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings, log_settings, str(audit))
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    if outcome.error is not None:
        raise LoadGenError(f"the SUT raised during the LoadGen test:\n{outcome.error}")
    if not (log_dir / "mlperf_log_detail.txt").is_file():
        raise LoadGenError(f"LoadGen wrote no logs into {log_dir}")
