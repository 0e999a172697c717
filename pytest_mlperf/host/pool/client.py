"""The pytest side of a runner process: start it from a recipe, send commands with timeouts, replace it when it
crashes, hangs or fails a test. Nothing here imports LoadGen or a backend: CUDA is never initialised in pytest."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any

from pytest_mlperf.contract.lifetime import CLIENT_GRACE_S, PARENT_PID_ENV, EndedTree, end_tree
from pytest_mlperf.contract.protocol import LoadRequest, RunRequest, command, phase_of, receive, send
from pytest_mlperf.host.pool.recipe import LaunchRecipe
from pytest_mlperf.host.progress import Notice, Phase, PhaseClock, Report


class RunnerError(RuntimeError):
    """A runner failed: the message says what happened and where its logs are."""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no runner log)"
    return "\n".join(text[-lines:]) or "(runner log is empty)"


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class Runner:
    def __init__(self, recipe: LaunchRecipe, load: LoadRequest, log_path: Path, *, start_timeout: float = 900.0):
        self.recipe = recipe
        self.load_request = load
        self.log_path = log_path
        self.start_timeout = start_timeout
        self.info: dict[str, Any] = {}
        self._dir = Path(tempfile.mkdtemp(prefix="pytest-mlperf-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self.ended: EndedTree | None = None  # set once its whole process tree has been ended
        self.phases = PhaseClock()  # the phase of the command in progress (or of the last one)

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and self._conn is not None

    def start(self, report: Report | None = None) -> dict[str, Any]:
        """Launches the runner and has it load its workload; `report` hears of each phase (host/progress.py)."""
        self.phases = PhaseClock(report)
        self.phases.enter(Notice(Phase.START, detail=self.recipe.name if self.recipe.name != "reference" else ""))
        address = str(self._dir / "runner.sock")
        keyfile = self._dir / "key"
        key = secrets.token_bytes(32)
        fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # private from its first byte
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
            log.write(f"--- runner start {stamp} by pytest pid {os.getpid()}: "
                      f"{' '.join(self.recipe.argv(address, str(keyfile)))}\n".encode())
            log.flush()
            try:
                self._proc = subprocess.Popen(
                    self.recipe.argv(address, str(keyfile)),
                    env={**self.recipe.environment(), PARENT_PID_ENV: str(os.getpid())},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # its own process group: ended with it, whatever happens
                    # CPUs; SIGTERM when this process dies (lifetime.py): PR_SET_PDEATHSIG has no Popen argument, and
                    # the function only calls sched_setaffinity and prctl between fork and exec
                    preexec_fn=self.recipe.preexec(),  # noqa: PLW1509
                )
            except (OSError, subprocess.SubprocessError) as exc:  # the latter: pinning to its CPUs failed
                raise RunnerError(
                    f"could not start the {self.recipe.name} runner ({self.recipe.describe()}): {exc}"
                ) from exc
        self._conn = self._connect(address, key, time.monotonic() + 60)
        load = self.load_request
        reply = self.request(command("load", request=load.to_dict()), self.start_timeout, "loading",
                             Notice(Phase.LOAD, detail=f"{load.data.workload} on {load.backend}"), report)
        self.info = reply["info"]
        return self.info

    def _connect(self, address: str, key: bytes, deadline: float) -> Connection:
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise RunnerError(
                    f"the {self.recipe.name} runner {_describe_exit(self._proc.returncode)} before it listened; "
                    f"runner log {self.log_path}:\n{_tail(self.log_path)}"
                )
            if os.path.exists(address):
                try:
                    return Client(address, family="AF_UNIX", authkey=key)
                except (ConnectionRefusedError, FileNotFoundError):
                    pass
            if time.monotonic() > deadline:
                self.kill()
                raise RunnerError(f"the {self.recipe.name} runner did not listen within 60 s; log {self.log_path}")
            self.phases.tick()
            time.sleep(0.02)

    def request(self, message: dict[str, Any], timeout: float, doing: str, phase: Notice,
                report: Report | None = None) -> dict[str, Any]:
        """Sends a command and waits for its reply; kills the runner on timeout. Raises RunnerError on any failure.
        The command starts in `phase`; the runner's notices move it on, and `report` hears of each (host/progress.py)."""
        assert self._conn is not None and self._proc is not None
        self.phases = PhaseClock(report, deadline=time.monotonic() + timeout)
        self.phases.enter(phase)
        try:
            send(self._conn, message)
        except OSError as exc:
            self.kill()
            raise RunnerError(f"the {self.recipe.name} runner is gone ({exc}); log {self.log_path}") from exc
        try:
            reply = self._wait_reply(timeout, doing)
        except BaseException:  # Ctrl-C or SIGTERM to pytest too: the reply would never be read, end the runner
            self.kill()
            raise
        if not reply.get("ok"):
            if message.get("op") == "run" and not reply.get("runner_ok"):
                self.stop()  # the runner exits after a failed test; reap it
            raise RunnerError(
                f"{reply.get('error')}\n(while {doing} in the {self.recipe.name} runner; log {self.log_path})\n"
                f"{reply.get('traceback', '')}".rstrip()
            )
        return reply

    def _wait_reply(self, timeout: float, doing: str) -> dict[str, Any]:
        """The command's reply; the phase notices before it enter their phases."""
        assert self._conn is not None and self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._conn.poll(0.2):
                    message = receive(self._conn)
                    notice = phase_of(message)
                    if notice is None:
                        return message
                    self.phases.enter(notice)
                    continue
            except (TypeError, ValueError) as exc:  # a message that is no JSON object, or a notice of an unknown phase
                raise RunnerError(f"the {self.recipe.name} runner sent a bad message while {doing}: {exc}; "
                                  f"runner log {self.log_path}") from None
            except (EOFError, OSError):
                try:
                    code: int | None = self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:  # closed its connection but lives on: ended by the caller
                    code = None
                during = self.phases.during()
                raise RunnerError(
                    f"the {self.recipe.name} runner {_describe_exit(code)} while {doing}"
                    f"{', ' + during if during else ''}; "
                    f"runner log {self.log_path}:\n{_tail(self.log_path)}"
                ) from None
            if time.monotonic() > deadline:
                during = self.phases.during()
                raise RunnerError(
                    f"the {self.recipe.name} runner did not finish {doing} within {timeout:.0f} s and was killed"
                    f"{' while ' + during if during else ''} (a sample never completed, or the SUT is far slower "
                    f"than expected; raise --mlperf-timeout if it is just slow); runner log {self.log_path}"
                )
            self.phases.tick()

    def run(self, req: RunRequest, timeout: float, doing: str, report: Report | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request(command("run", request=req.to_dict()), timeout, doing,
                                              Notice(Phase.PREPARE), report)["result"]
        return result

    def stop(self, timeout: float = 10.0) -> None:
        if self._conn is not None and self._proc is not None and self._proc.poll() is None:
            try:
                send(self._conn, command("exit"))
                self._proc.wait(timeout=timeout)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def kill(self) -> None:
        """Ends the runner's whole process tree (SIGTERM, a short grace, SIGKILL), whether the runner is up, hung,
        crashed or exited: children it leaves behind (an engine process holding a GPU) end with it."""
        if self._proc is not None and self.ended is None:
            self.ended = end_tree(self._proc.pid, CLIENT_GRACE_S, reap=self._proc.poll)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # among ended.survivors; on a GPU the next case notes what it holds
                pass
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        shutil.rmtree(self._dir, ignore_errors=True)


class RunnerPool:
    """One live runner per (recipe, load request) in this pytest process; a failed one is dropped and the next
    request starts a fresh one."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._runners: dict[tuple[object, ...], Runner] = {}
        self._started = 0
        self._all: list[Runner] = []  # every runner this pool started, for ended_pids

    def _key(self, recipe: LaunchRecipe, load: LoadRequest) -> tuple[object, ...]:
        return (recipe.key(), json.dumps(load.to_dict(), sort_keys=True))

    def get(self, recipe: LaunchRecipe, load: LoadRequest, report: Report | None = None) -> Runner:
        """The live runner for (recipe, load), started (and its phases told to `report`) when there is none."""
        key = self._key(recipe, load)
        runner = self._runners.get(key)
        if runner is not None and runner.alive:
            return runner
        if runner is not None:  # died since its last case: its children must not outlive it
            runner.kill()
        self._started += 1
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        name = f"{worker}-{recipe.name}-{load.data.workload}-{load.backend}-{self._started}.log"
        runner = Runner(recipe, load, self.log_dir / name)
        self._runners[key] = runner
        self._all.append(runner)
        try:
            runner.start(report)
        except BaseException:
            self._runners.pop(key, None)
            runner.kill()
            raise
        return runner

    def discard(self, runner: Runner) -> None:
        runner.kill()
        self._runners = {k: r for k, r in self._runners.items() if r is not runner}

    def close(self) -> None:
        for runner in self._runners.values():
            runner.stop()
        self._runners.clear()

    def ended_pids(self) -> set[int]:
        """Every process of the trees of this pool's runners that have ended (pids this session started): one of
        them still holding a GPU is memory the next case does not get (gpus.leftover_notes)."""
        out: set[int] = set()
        for runner in self._all:
            if runner.ended is not None and runner.pid is not None:
                out |= {runner.pid, *runner.ended.pids}
        return out
