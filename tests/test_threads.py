"""Lasting threads for work that completes LoadGen samples (runner/strategies/threads.py).

LoadGen 6.0 frees the logger of a thread that called it when the thread exits, while its IO thread may still use
it: SIGSEGV in `TlsLogger::SwapBuffers()`. The vllm runner died of it at its first Offline test on the H200 (one
thread per Offline query); on CPU, Offline tests whose samples are completed by threads that then exit crash the
process within three tests. Tests below: that pattern through `threads.start` in a process of its own (it must not
crash), and each harness's completing threads still alive after the harness is closed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mlperf_loadgen")

from pytest_mlperf.runner.loadgen import Responder  # noqa: E402
from pytest_mlperf.runner.strategies import threads
from pytest_mlperf.runner.backends.base import BackendInfo  # noqa: E402
from pytest_mlperf.runner.strategies.generation import GenerationConfig, GenerationHarness  # noqa: E402
from pytest_mlperf.runner.backends.null import NullBackend  # noqa: E402
from pytest_mlperf.runner.strategies.batching import BatchingHarness, ScheduleConfig  # noqa: E402
from pytest_mlperf.runner.strategies.serving import ServingHarness  # noqa: E402


def test_a_finished_target_leaves_its_thread_parked_and_reused() -> None:
    seen: list[int] = []
    first = threads.start(lambda: seen.append(threading.get_ident()), "mlperf-test-a")
    first.join(5)
    assert not first.is_alive() and first.name == "mlperf-test-a"
    second = threads.start(lambda: seen.append(threading.get_ident()), "mlperf-test-b")
    second.join(5)
    assert seen[0] == seen[1]  # the same OS thread ran both
    assert all(t.is_alive() for t in threads.started_threads())  # none of them ever ended


def test_a_target_that_raises_does_not_end_its_thread(capsys: pytest.CaptureFixture[str]) -> None:
    def boom() -> None:
        raise RuntimeError("target failed")

    worker = threads.start(boom, "mlperf-test-raise")
    worker.join(5)
    assert not worker.is_alive()
    assert all(t.is_alive() for t in threads.started_threads())
    assert "target failed" in capsys.readouterr().err


def test_concurrent_targets_get_threads_of_their_own() -> None:
    gate = threading.Barrier(3)
    workers = [threads.start(lambda: gate.wait(5), f"mlperf-test-c{n}") for n in range(2)]
    gate.wait(5)  # both targets are running at once, or this times out
    for w in workers:
        w.join(5)


SCRIPT = textwrap.dedent('''
    # Offline tests whose samples are completed, 7 at a time, by 4 workers per query that are then done: with
    # plain threads that exit this crashes LoadGen within a few tests (SIGSEGV in TlsLogger::SwapBuffers)
    import sys, numpy as np, mlperf_loadgen as lg
    from pytest_mlperf.contract.test_request import TestRequest
    from pytest_mlperf.runner.loadgen import run_test
    from pytest_mlperf.runner.strategies import threads

    answer = np.zeros(4, dtype=np.int32)
    address = answer.__array_interface__["data"][0]

    def complete(samples):
        for k in range(0, len(samples), 7):
            lg.QuerySamplesComplete([lg.QuerySampleResponse(i, address, 16) for i, _ in samples[k:k + 7]])

    class Harness:
        def issue(self, samples, responder):
            for part in range(4):
                threads.start(lambda part=part: complete(samples[part::4]), f"mlperf-test-{part}")
        def flush(self): pass
        def load(self, indices): pass
        def unload(self, indices): pass

    log = sys.argv[1]
    for k in range(int(sys.argv[2])):
        run_test(TestRequest(loadgen_model="resnet50", scenario="Offline", mode="performance", log_dir=f"{log}/{k}",
                             total_sample_count=1024, performance_sample_count=1024, min_duration_ms=50,
                             min_query_count=1, offline_expected_qps=200000.0), Harness())
    print("survived", flush=True)
''')


def test_loadgen_survives_tests_whose_completing_workers_are_done(tmp_path: Path) -> None:
    pytest.importorskip("mlperf_loadgen")
    script = tmp_path / "pattern.py"
    script.write_text(SCRIPT)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "logs"), "30"], cwd=root,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.returncode == 0, f"rc {proc.returncode} (-11: SIGSEGV in LoadGen's logger)\n{proc.stderr[-3000:]}"
    assert "survived" in proc.stdout


class Engine:
    """A serving engine whose Offline answers come at once."""

    info = BackendInfo("fake", "cpu", "none")
    concurrency = 16

    def generate_all(self, indices: list[int]) -> list[np.ndarray]:
        return [np.arange(3, dtype=np.int32) for _ in indices]


class Callers(Responder):
    """Records the threads that complete samples."""

    def __init__(self) -> None:
        self.threads: set[threading.Thread] = set()
        self.count = 0
        self.lock = threading.Lock()

    def _seen(self, n: int) -> None:
        with self.lock:
            self.threads.add(threading.current_thread())
            self.count += n

    def complete(self, ids, outputs) -> None:  # type: ignore[override]
        self._seen(len(ids))

    def complete_empty(self, ids) -> None:  # type: ignore[override]
        self._seen(len(ids))

    def complete_tokens(self, sample_id, token_ids) -> None:  # type: ignore[override]
        self._seen(1)


def _offline(harness, callers: Callers, count: int) -> None:
    try:
        harness.issue([(1000 + i, i % 16) for i in range(count)], callers)
        for _ in range(500):
            if callers.count >= count:
                break
            time.sleep(0.01)
    finally:
        harness.close()
    assert callers.count == count


@pytest.mark.parametrize("make", ["serving", "batching", "generation"])
def test_the_threads_that_complete_samples_outlive_their_harness(make: str) -> None:
    """The harnesses' own threads (the vllm Offline worker, batching streams, generation streams) are still alive
    after the harness is closed: none of them may end while LoadGen can still run in the process."""
    callers = Callers()
    if make == "serving":
        harness = ServingHarness(Engine(), lambda idx: None, "Offline")  # type: ignore[arg-type]
    elif make == "batching":
        harness = BatchingHarness(NullBackend({"delay_ms": 0}), lambda idx: None, ScheduleConfig("Offline", 7, 3, 0.0))
    else:
        harness = GenerationHarness(FakeTokens(), lambda idx: None, GenerationConfig("Offline", 4, 2))
    _offline(harness, callers, 40)
    assert callers.threads and all(t.is_alive() for t in callers.threads)
    assert threading.main_thread() not in callers.threads


class FakeTokens:
    info = BackendInfo("fake", "cpu", "none")
    streams_tokens = True

    def generate_batch(self, indices: list[int]) -> list[np.ndarray]:
        return [np.arange(3, dtype=np.int32) for _ in indices]
