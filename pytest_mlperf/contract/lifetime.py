"""How a runner's life is bound to its pytest process's, on both sides of the process boundary.

A runner is started in a session and process group of its own (its pid is the group id). Whatever happens, the
whole tree ends together:
- pytest ends a runner (`end_tree`): SIGTERM to its group and to every descendant that left the group, a short
  grace, then SIGKILL, and it waits until none is left, whether the runner exited, crashed, hung or is still up;
- the runner ends with pytest, however pytest ends: the kernel sends it SIGTERM when pytest dies
  (`bind_to_parent`, PR_SET_PDEATHSIG set between fork and exec), and its `Watchdog` thread notices SIGTERM, the
  control socket closing and pytest's pid going away; it then removes the socket and key folder and ends its own
  tree (`end_tree(..., spare=itself)`) before it exits.

Process tables come from /proc (Linux); elsewhere only the process group is signalled. Standard library only: both
processes import this module."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

PARENT_PID_ENV = "PYTEST_MLPERF_PARENT_PID"  # the pytest process a runner belongs to (a prefix may sit between)
RUNNER_GRACE_S = 2.0  # the runner's children get this long after SIGTERM, then SIGKILL
CLIENT_GRACE_S = 5.0  # pytest gives a runner's tree this long (the runner's own grace included)
_KILL_WAIT_S = 5.0  # after SIGKILL: time for the kernel to take the processes down
_PR_SET_PDEATHSIG = 1


# --------------------------------------------------------------------------- the process table (Linux /proc)


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgrp: int
    state: str  # 'Z': a zombie, which holds no memory and no GPU; everything else counts as alive


def process_table(proc: Path = Path("/proc")) -> dict[int, Proc] | None:
    """Every process visible here, from /proc/PID/stat; None where there is no /proc."""
    if not (proc / "self" / "stat").exists():
        return None
    table: dict[int, Proc] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:  # ended while we looked
            continue
        fields = text[text.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
        table[int(entry.name)] = Proc(int(entry.name), int(fields[1]), int(fields[2]), fields[0])
    return table


def tree_of(root: int, table: dict[int, Proc]) -> set[int]:
    """The live processes of `root`'s group and every live descendant of `root` (also those that left the group
    with setsid), `root` included while it lives."""
    children: dict[int, list[int]] = {}
    for p in table.values():
        children.setdefault(p.ppid, []).append(p.pid)
    found = {p.pid for p in table.values() if p.pgrp == root}
    todo = [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            if child not in found:
                found.add(child)
                todo.append(child)
        found.add(pid)
    return {pid for pid in found if pid in table and table[pid].state != "Z"}


def process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return not Path("/proc/self/stat").exists()
    return stat[stat.rfind(")") + 2:].split()[0] != "Z"


def is_ancestor(pid: int, of: int | None = None) -> bool:
    """Whether `pid` is the parent, or a parent's parent..., of process `of` (default: this one). A pid passed
    through a layer with a pid namespace of its own (a container) names nothing here, or someone else."""
    me = os.getpid() if of is None else of
    table = process_table()
    if table is None:
        return os.getppid() == pid if of is None else False
    seen: set[int] = set()
    while me in table and me not in seen:
        seen.add(me)
        me = table[me].ppid
        if me == pid:
            return True
    return False


# --------------------------------------------------------------------------- ending a tree


@dataclass
class EndedTree:
    """What `end_tree` did: every pid it saw in the tree, and those still alive when it gave up."""

    pids: set[int] = field(default_factory=set)
    survivors: list[int] = field(default_factory=list)


def _signal(pids: Iterable[int], group: int | None, sig: int) -> None:
    if group is not None:
        try:
            os.killpg(group, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def end_tree(root: int, grace_s: float, *, reap: Callable[[], object] | None = None, spare: int | None = None,
             table: Callable[[], dict[int, Proc] | None] = process_table) -> EndedTree:
    """Ends `root`'s process group and descendants: SIGTERM, up to `grace_s` for them to go, then SIGKILL, and
    up to a few seconds more for the kernel to take them down. `reap` is called while waiting (Popen.poll: the
    leader is our child and stays a zombie until reaped). `spare` is a pid never signalled (the runner ending its
    own tree); without a process table the group is then killed, the caller with it."""
    ended = EndedTree()

    def alive() -> set[int]:
        if reap is not None:
            reap()
        t = table()
        if t is None:  # no /proc: the group is all we can see (a zombie leader counts until reaped)
            try:
                os.killpg(root, 0)
            except (ProcessLookupError, PermissionError):
                return set()
            return {root}
        now = tree_of(root, t) - {spare}
        ended.pids.update(now)
        return now

    group = None if spare is not None else root
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, _KILL_WAIT_S)):
        targets = alive()
        if not targets:
            return ended
        if spare is not None and table() is None:  # cannot spare the caller: end everything at once
            _signal((), root, signal.SIGKILL)
            return ended
        _signal(targets, group, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            targets = alive()
            if not targets:
                return ended
            if sig == signal.SIGKILL:  # processes that appeared since: no grace for them
                _signal(targets, group, sig)
            time.sleep(0.02)
    ended.survivors = sorted(alive())
    return ended


# --------------------------------------------------------------------------- bound to the parent


@functools.lru_cache(maxsize=1)
def _prctl() -> Callable[..., int] | None:
    """libc's prctl, resolved in the parent (a child between fork and exec must not load libraries)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    prctl: Callable[..., int] = libc.prctl
    return prctl


def bind_to_parent(parent_pid: int, sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A function for Popen's preexec_fn (it runs in the child between fork and exec): the kernel sends `sig` to the
    child when its parent dies, and at once if the parent is already gone. Linux only; elsewhere a no-op (the
    runner's watchdog still notices). The signal comes when the *thread* that started the child ends: start
    runners from a thread that lives as long as the session (pytest's main thread)."""
    prctl = _prctl()

    def bind() -> None:
        if prctl is None:
            return
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before the call above: no signal would come
            os.kill(os.getpid(), sig)

    return bind


class Watchdog:
    """The runner's side: a daemon thread that ends the runner and its whole tree, and removes its socket and key
    folder, when SIGTERM arrives (from pytest ending it, or from the kernel when pytest died), when the control
    connection closes, or when the pytest process is gone. Works while the main thread is stuck in LoadGen or a
    hung SUT (a signal reaches it through `signal.set_wakeup_fd`). Create and install it on the main thread."""

    def __init__(self, parent_pid: int | None, files: Iterable[Path], *, grace_s: float = RUNNER_GRACE_S,
                 log: Callable[[str], None] | None = None, exit: Callable[[int], object] = os._exit) -> None:
        # watched only where it is one of this process's ancestors (see is_ancestor)
        self.parent_pid = parent_pid if parent_pid is not None and is_ancestor(parent_pid) else None
        self.files = [Path(f) for f in files]
        self.grace_s = grace_s
        self.log = log
        self._exit = exit
        self._conn_fd: int | None = None
        self._lock = threading.Lock()
        self._ending = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        self.thread = threading.Thread(target=self._loop, name="pytest-mlperf-watchdog", daemon=True)

    def install(self) -> Watchdog:
        """Takes SIGTERM over (a handler that does nothing itself: the thread acts on it) and starts watching."""
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        os.register_at_fork(after_in_child=_forget_in_child)
        self.thread.start()
        return self

    def watch(self, conn: Connection) -> None:
        """From now on the control connection closing means the pytest side is gone."""
        self._conn_fd = conn.fileno()

    def unwatch(self) -> None:
        """The main thread is closing the connection itself (a normal exit)."""
        self._conn_fd = None

    def _loop(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        watched: int | None = None
        hangup = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)
        while True:
            fd = self._conn_fd
            if fd != watched:
                if watched is not None:
                    poller.unregister(watched)
                if fd is not None:
                    poller.register(fd, hangup)  # not POLLIN: the main thread reads the commands
                watched = fd
            for ready, events in poller.poll(500):
                if ready == self._wake_r:
                    got = os.read(self._wake_r, 64)
                    if signal.SIGTERM in got:
                        self.end("it received SIGTERM", 128 + signal.SIGTERM)
                elif ready == watched and self._conn_fd == watched and events & hangup:
                    self.end("the pytest side closed its connection")
            if self.parent_pid is not None and not process_alive(self.parent_pid):
                self.end(f"its pytest process (pid {self.parent_pid}) is gone")

    def end(self, why: str, code: int = 0) -> None:
        """Removes the socket and key folder, ends every other process of the runner's tree, then exits with
        `code`. Callable from any thread; the first call wins."""
        with self._lock:
            if self._ending:
                return
            self._ending = True
        if self.log is not None:
            self.log(f"ending the runner and its processes: {why}")
        remove_files(self.files)
        end_tree(os.getpgrp(), self.grace_s, spare=os.getpid())
        self._exit(code)


def _forget_in_child() -> None:
    """A process forked from the runner (without exec) must not inherit the watchdog's SIGTERM handling."""
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except (ValueError, OSError):  # pragma: no cover - forked from a thread other than the main one
        pass


def remove_files(files: Iterable[Path]) -> None:
    """Unlinks the runner's socket and key, then their folder if that leaves it empty."""
    folders = set()
    for f in files:
        try:
            f.unlink()
        except OSError:
            pass
        folders.add(f.parent)
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            pass
