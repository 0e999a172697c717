"""Threads for work that calls LoadGen: they never exit while the process lives; a finished one waits for more.

mlcommons-loadgen 6.0 keeps a logger per thread that calls it (`QuerySamplesComplete`, `FirstTokenComplete`). When
such a thread exits, LoadGen hands its logger to its IO thread to destroy, while the IO thread may still hold the
same logger in its list of buffers to swap: a use after free, seen as SIGSEGV in `TlsLogger::SwapBuffers()` from
`Logger::IOThread()`. It took down the vLLM runner at its first Offline test on the H200 (one thread per Offline
query), and a CPU loop of Offline tests whose samples are completed by threads that exit crashes within three
tests (tests/test_threads.py). MLCommons' own vLLM SUT starts its workers once and keeps them.

So every harness thread that may complete samples comes from here: `start` runs a target on a parked thread (or a
new one), and when the target returns the thread parks again instead of ending. Parked threads are daemons and
cost a blocked `queue.get` each.
"""

from __future__ import annotations

import queue
import threading
import traceback
from collections.abc import Callable

_Task = tuple[Callable[[], None], str, threading.Event]


class Worker:
    """One run of a target on a lasting thread: `join` and `is_alive` as for a `threading.Thread`."""

    def __init__(self, name: str, done: threading.Event) -> None:
        self.name = name
        self._done = done

    def join(self, timeout: float | None = None) -> None:
        self._done.wait(timeout)

    def is_alive(self) -> bool:
        return not self._done.is_set()


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[_Task]] = []
        self.threads: list[threading.Thread] = []  # every thread this pool started; none ever ends

    def start(self, target: Callable[[], None], name: str) -> Worker:
        done = threading.Event()
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
            if inbox is None:
                inbox = queue.SimpleQueue()
                thread = threading.Thread(target=self._park, args=(inbox,), name=name, daemon=True)
                self.threads.append(thread)
                thread.start()
        inbox.put((target, name, done))
        return Worker(name, done)

    def _park(self, inbox: queue.SimpleQueue[_Task]) -> None:
        me = threading.current_thread()
        while True:
            target, name, done = inbox.get()
            me.name = name
            try:
                target()
            except BaseException:  # noqa: BLE001 - a target reports its own errors; this thread must not end
                traceback.print_exc()
            finally:
                me.name = f"{name} (parked)"
                with self._lock:
                    self._idle.append(inbox)
                done.set()


_POOL = _Pool()


def start(target: Callable[[], None], name: str) -> Worker:
    """Runs `target` on a thread that outlives it (see the module docstring)."""
    return _POOL.start(target, name)


def started_threads() -> list[threading.Thread]:
    """Every lasting thread started so far (for tests: all of them still alive)."""
    with _POOL._lock:
        return list(_POOL.threads)
