"""SIGTERM to pytest (what a CI job's timeout sends, before SIGKILL) stops an MLPerf session as Ctrl-C does: the
case being measured is stopped (its runner ended, host/pool/client.py), the cases measured so far are written to
results.json and summarised, and pytest exits with status 2 (interrupted). Without this, SIGTERM ended pytest at
once, silently, with no results.

Installed only on the main thread of a process that measures (or, under pytest-xdist, of the controller), and only
where no one else handles SIGTERM; the handler gives SIGTERM its default action back at once, so a second SIGTERM
ends pytest immediately."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType


class Terminated(KeyboardInterrupt):
    """pytest received SIGTERM: handled as the KeyboardInterrupt of Ctrl-C, the message saying why."""


MESSAGE = ("received SIGTERM: stopped as on Ctrl-C (the case being measured was stopped; the cases measured "
           "before it are written and summarised)")


def stop_on_sigterm() -> Callable[[], None] | None:
    """Makes SIGTERM raise Terminated in the main thread; returns the function that takes the handler away again,
    or None where nothing was installed (not the main thread, or SIGTERM already has a handler)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated(MESSAGE)

    signal.signal(signal.SIGTERM, handler)

    def restore() -> None:
        if signal.getsignal(signal.SIGTERM) is handler:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    return restore
