"""The runner process: hosts one workload's data and backend, and runs LoadGen tests on command.

Started by host/pool/client.py as `python -m pytest_mlperf.runner.child ADDRESS KEYFILE` (behind the recipe's
prefix). It listens on ADDRESS, answers one command at a time and exits on `exit` or when the pytest side goes
away. After a failed test it exits with status 3 so that the parent replaces it: LoadGen keeps process-wide
state that a failed test can leave broken.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection, Listener
from pathlib import Path
from typing import Any

from pytest_mlperf.contract.backends import Kind, backend_entry
from pytest_mlperf.contract.cpu_list import allowed_cpus, format_cpu_list
from pytest_mlperf.contract.lifetime import PARENT_PID_ENV, Watchdog
from pytest_mlperf.contract.loadgen_log import read_accuracy_log, read_run
from pytest_mlperf.contract.protocol import (
    LoadRequest,
    Notice,
    Phase,
    RunRequest,
    protocol_problem,
    receive,
    send,
    send_phase,
)
from pytest_mlperf.contract.test_request import TestRequest
from pytest_mlperf.contract.workloads import workload_spec
from pytest_mlperf.runner.backends import create_backend
from pytest_mlperf.runner.backends.base import Backend
from pytest_mlperf.runner.calibrate import (
    available_memory,
    predicted_duration,
    query_size_problem,
)
from pytest_mlperf.runner.loadgen import effective_test, run_test
from pytest_mlperf.runner.staging import Stager
from pytest_mlperf.runner.strategies.batching import BatchingHarness, ScheduleConfig
from pytest_mlperf.runner.strategies.batching_setup import prepare_batching
from pytest_mlperf.runner.strategies.generation import GenerationHarness
from pytest_mlperf.runner.strategies.generation_setup import prepare_generation
from pytest_mlperf.runner.strategies.serving import ServingHarness
from pytest_mlperf.runner.strategies.serving_setup import prepare_serving
from pytest_mlperf.runner.workloads import workload_module
from pytest_mlperf.runner.workloads.base import Dataset


class FailedTest(RuntimeError):
    """A test failed in a way that leaves the process suspect; the runner exits after reporting it."""


class Refused(RuntimeError):
    """The LoadGen test, as calibrated, must not start: failed before LoadGen starts, the runner as good as before."""


class TooLong(Refused):
    """The LoadGen test, as calibrated, would outlast the parent's timeout."""


class TooBig(Refused):
    """The LoadGen test, as calibrated, would have LoadGen build more queries than the memory can hold."""


def progress(message: str) -> None:
    """A line in the runner log with its time and pid: where a slow or killed runner spent its time, and which
    runner wrote it when several share a log folder."""
    stamp = time.strftime("%H:%M:%S", time.localtime())
    print(f"[runner {os.getpid()} {stamp}] {message}", file=sys.stderr, flush=True)


def describe_test(t: TestRequest) -> str:
    """The LoadGen test in a few words, for the runner log."""
    parts = [f"{t.scenario} {t.mode}"]
    if t.min_duration_ms is not None:
        parts.append(f"min {t.min_duration_ms / 1000:g} s")
    if t.min_query_count is not None:
        parts.append(f"min {t.min_query_count} queries")
    if t.offline_expected_qps:
        parts.append(f"{t.offline_expected_qps:.6g} samples/s expected")
    if t.server_target_qps:
        parts.append(f"target {t.server_target_qps:.6g} QPS")
    if t.single_stream_expected_latency_ns:
        parts.append(f"{t.single_stream_expected_latency_ns / 1e6:.6g} ms expected per query")
    return ", ".join(parts)


class RunnerState:
    def __init__(self) -> None:
        self.dataset: Dataset | None = None
        self.backend: Backend | None = None
        self.stager: Stager | None = None
        # kept across tests: its stream threads hold per-thread GPU state (ORT's CUDA handles, per-shape set-up)
        # that a fresh harness would rebuild and warm up in every test, seconds per short test on an H100
        self.harness: BatchingHarness | None = None
        self.samples_per_query = 8
        self.token_latencies = False  # the workload is judged on TTFT/TPOT and tokens/s (LLMs)
        self.kind = Kind.BATCHING  # how its backend is served: the backend's registry entry says
        self.deadline: float | None = None  # perf_counter time at which the parent kills this run
        self.notify: Callable[[Notice], None] = lambda notice: None  # tells the parent of a phase entered

    def load(self, req: LoadRequest) -> dict[str, Any]:
        progress(f"loading {req.data.workload} on {req.backend}")
        started = time.perf_counter()
        module = workload_module(req.data.workload)
        self.dataset = module.open_dataset(req.data)
        self.backend = create_backend(req, module)
        self.kind = backend_entry(req.backend).kind
        self.stager = Stager(self.backend, self.dataset)
        spec = workload_spec(req.data.workload)
        self.samples_per_query = spec.multistream_samples_per_query
        self.token_latencies = spec.token_latencies
        load_s = time.perf_counter() - started
        progress(f"loaded in {load_s:.1f} s: {self.dataset.description}, {self.backend.info.device}")
        return {
            "load_s": load_s,
            "backend": self.backend.info.to_dict(),
            "dataset": self.dataset.description,
            "total_count": self.dataset.total_count,
            "pid": os.getpid(),
            "cpus": format_cpu_list(allowed_cpus()),
            "python": sys.version.split()[0],
        }

    def run(self, req: RunRequest) -> dict[str, Any]:
        backend, dataset, stager = self.backend, self.dataset, self.stager
        if backend is None or dataset is None or stager is None:
            raise RuntimeError("run before load")
        started = time.perf_counter()
        self.deadline = None if req.timeout_s is None else started + req.timeout_s
        if self.token_latencies:
            req = replace(req, test=replace(req.test, use_token_latencies=True))
        progress(f"preparing {req.test.scenario} {req.test.mode}" + (" (calibrating)" if req.calibrate else ""))
        calibration: dict[str, Any] | None  # the bare loop's figures (None: the run did not calibrate)
        if self.kind is Kind.SERVING:  # serving engines (vLLM): runner/strategies/serving_setup.py
            test, serving, calibration, schedule = prepare_serving(req, backend, stager,  # type: ignore[arg-type]
                                                                   self.notify)
            return self._finish(test, serving, calibration, schedule, started)
        if self.kind is Kind.GENERATION:  # LLMs: token harness, TTFT/TPOT (runner/strategies/generation_setup.py)
            if req.calibrate:  # a generation's length varies too much to predict the bare loop's
                self.notify(Notice(Phase.CALIBRATE))
            test, generation, calibration, schedule = prepare_generation(req, backend, stager)  # type: ignore[arg-type]
            return self._finish(test, generation, calibration, schedule, started)
        test, harness, calibration, schedule = prepare_batching(req, backend, stager, self.samples_per_query,
                                                                self.notify, self.batching_harness)
        return self._finish(test, harness, calibration, schedule, started)

    def batching_harness(self, config: ScheduleConfig, warm_indices: list[int]) -> BatchingHarness:
        """The harness of the last test when it was made for the same schedule (its threads already warm), else a
        new one whose threads warm themselves up on `warm_indices`."""
        assert self.backend is not None and self.dataset is not None and self.stager is not None
        if self.harness is not None and self.harness.config == config and self.harness.error is None:
            return self.harness
        if self.harness is not None:
            self.harness.close()
            self.harness = None
        self.harness = BatchingHarness(self.backend, self.stager.stage, config, warm_indices=warm_indices)
        return self.harness

    def _finish(self, test: TestRequest, harness: BatchingHarness | GenerationHarness | ServingHarness,
                calibration: dict[str, Any] | None, schedule: dict[str, Any], started: float) -> dict[str, Any]:
        """Runs the LoadGen test and reads its logs (and accuracy) into the result sent back; `started` is when
        the run's preparation (calibration, harness) began, for the timings."""
        assert self.dataset is not None
        prepared = time.perf_counter()
        effective = effective_test(test)  # with the user.conf's and mlperf.conf's values
        predicted = predicted_duration(effective)
        about = f", about {predicted[0]:.0f} s ({predicted[1]})" if predicted else ""
        progress(f"prepared in {prepared - started:.1f} s; LoadGen test: {describe_test(test)}{about}")
        try:
            too_big = query_size_problem(effective, available_memory())
            if too_big:
                raise TooBig(too_big)
            if predicted and self.deadline is not None and prepared + predicted[0] > self.deadline:
                raise TooLong(
                    f"the {test.scenario} {test.mode} test would take about {predicted[0]:.0f} s ({predicted[1]}), "
                    f"more than the {self.deadline - prepared:.0f} s left before the case's timeout: raise "
                    "--mlperf-timeout, shorten the test (--mlperf-duration, a user.conf with a lower "
                    "min_query_count), or use a faster SUT")
            self.notify(Notice(Phase.LOADGEN, *predicted) if predicted else Notice(Phase.LOADGEN))
            run_test(test, harness)
        finally:
            if harness is not self.harness:  # the batching harness stays up for the runner's next test
                harness.close()
        if harness.error:
            raise FailedTest(f"the SUT raised during the LoadGen test:\n{harness.error}")
        tested = time.perf_counter()
        progress(f"LoadGen test done in {tested - prepared:.1f} s")
        run = read_run(test.log_dir)
        result: dict[str, Any] = {"run": run.to_dict(), "test": test.to_dict(), "calibration": calibration}
        result["schedule"] = schedule
        if test.mode == "accuracy":
            entries = read_accuracy_log(Path(test.log_dir) / "mlperf_log_accuracy.json")
            self.notify(Notice(Phase.ACCURACY, detail=f"{len(entries):,} outputs"))
            accuracy = self.dataset.accuracy({e.qsl_idx: e.data for e in entries})
            preds = accuracy.get("predictions")
            if isinstance(preds, dict):  # a class per sample, or a list of token ids (LLMs)
                accuracy["predictions"] = sorted([int(k), v if isinstance(v, list) else int(v)]
                                                 for k, v in preds.items())
            result["accuracy"] = accuracy
        result["timings"] = {"prepare_s": prepared - started, "loadgen_s": tested - prepared,
                             "results_s": time.perf_counter() - tested}
        return result

    def close(self) -> None:
        if self.harness is not None:
            self.harness.close()
        if self.backend is not None:
            self.backend.close()


def notifier(conn: Connection) -> Callable[[Notice], None]:
    """Sends phase notices to the parent (zero or more before a command's reply); one that cannot be sent is
    dropped: the parent is gone, and the watchdog ends this runner."""
    def notify(notice: Notice) -> None:
        progress(f"phase: {notice.phase.value}")
        try:
            send_phase(conn, notice)
        except OSError:
            pass
    return notify


def serve(conn: Connection, gone: Callable[[], None] | None = None) -> int:
    """Answers commands until `exit`; `gone` is called when the pytest side closes the connection."""
    state = RunnerState()
    state.notify = notifier(conn)
    try:
        while True:
            try:
                message = receive(conn)
            except EOFError:
                if gone is not None:
                    gone()
                return 0  # the pytest side went away
            op = message.get("op")
            if op == "exit":
                send(conn, {"ok": True})
                return 0
            problem = protocol_problem(message)
            if problem is not None:  # another install's runner: refuse rather than misread, and end
                send(conn, {"ok": False, "error": problem, "traceback": ""})
                return 4
            try:
                if op == "load":
                    reply = {"ok": True, "info": state.load(LoadRequest.from_dict(message["request"]))}
                elif op == "run":
                    reply = {"ok": True, "result": state.run(RunRequest.from_dict(message["request"]))}
                else:
                    reply = {"ok": False, "error": f"unknown command {op!r}", "traceback": ""}
            except Refused as exc:  # refused before LoadGen started: this runner is as good as before
                send(conn, {"ok": False, "error": str(exc), "traceback": "", "runner_ok": True})
                continue
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the case
                send(conn, {"ok": False, "error": str(exc) or type(exc).__name__, "traceback": traceback.format_exc()})
                if op == "run":
                    return 3  # LoadGen state may be broken: let the parent start a fresh runner
                continue
            send(conn, reply)
    finally:
        state.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m pytest_mlperf.runner.child ADDRESS KEYFILE", file=sys.stderr)
        return 2
    address, keyfile = argv
    parent = os.environ.get(PARENT_PID_ENV)
    # ends this runner, its children and its socket folder when pytest ends, however it ends (lifetime.py)
    watchdog = Watchdog(int(parent) if parent else None, [Path(address), Path(keyfile)], log=progress).install()
    authkey = Path(keyfile).read_bytes()
    listener = Listener(address, family="AF_UNIX", authkey=authkey)
    try:
        with listener.accept() as conn:
            watchdog.watch(conn)
            code = serve(conn, gone=lambda: watchdog.end("the pytest side closed its connection"))
            watchdog.unwatch()
    finally:
        close_listener(listener)
    return code


def close_listener(listener: Listener) -> None:
    """Closes the runner's socket. The pytest side removes the socket's folder once the runner has said goodbye,
    which may be before the runner is done closing its backend (vLLM takes seconds): the socket file may be gone,
    and a missing file is not an error (on the H200 it was a traceback at the end of every vllm runner's log)."""
    try:
        listener.close()
    except FileNotFoundError:
        pass


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
