"""Where a session writes, checked before its first case, and claimed so that two sessions never share a folder.

A results folder holds one session's files at a time: the session that finds it free takes it (a lock held until
it ends, released by the OS however it ends); a second session started meanwhile in the same checkout writes to a
folder of its own, `<results-dir>/sessions/<date>-<time>-<pid>/`, and says so, instead of overwriting the first
one's `results.json`, LoadGen logs and runner logs. Only the controller claims; xdist workers get the chosen folder
through `workerinput`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from pytest_mlperf.contract.files import write_json_atomic

SESSION_DIR_KEY = "mlperf_session_results_dir"  # workerinput: the results folder the controller claimed


class OutputError(ValueError):
    """An output location that cannot be written; the message says which, why, and which option moves it."""


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or ".")


def check_writable_dir(path: Path, what: str, option: str) -> None:
    """That `path` is a folder this process can write to, or can be created where it is: checked without creating
    anything (a session with no MLPerf case must leave no folder behind). Raises OutputError saying what to do."""
    existing = _nearest_existing(path)
    if not existing.is_dir():
        where = "" if existing == path else f" (where {path} would be made)"
        raise OutputError(f"the {what} {path} cannot be made: {existing} is a file, not a folder{where}; remove it or "
                          f"choose another folder with {option}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to the {what} {path} ({existing} is not writable for this user): make it "
                          f"writable or choose another folder with {option}")


def check_results_dir(path: Path) -> None:
    """The results folder and the folders a session creates in it (logs/, runners/)."""
    check_writable_dir(path, "results folder", "--mlperf-results-dir")
    for sub in ("logs", "runners"):
        check_writable_dir(path / sub, f"results folder's {sub}/", "--mlperf-results-dir")


def _lock_path(results_dir: Path) -> Path:
    """The lock of a results folder lives in the temporary folder, not in the results folder, which a session
    creates only once it measures something."""
    digest = hashlib.sha256(str(results_dir.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "pytest-mlperf-locks" / f"results-{digest}.lock"


@dataclass
class Claim:
    """The results folder this session writes to, and the lock that keeps it its own until the session ends (the
    OS releases it however the process ends)."""

    path: Path
    lock: FileLock | None
    note: str | None = None  # set when another session held the folder asked for
    asked: Path | None = None  # the folder asked for (where `latest` lives); None: `path` itself

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def _holder(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.with_suffix(".json").read_text())
        started = time.strftime("%H:%M:%S", time.localtime(float(info["started"])))
        return f"pid {int(info['pid'])}, started {started}: {str(info.get('command', ''))[:120]}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _take(results_dir: Path) -> FileLock | None:
    path = _lock_path(results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    holder = {"pid": os.getpid(), "started": time.time(), "command": " ".join(sys.argv), "results": str(results_dir)}
    write_json_atomic(path.with_suffix(".json"), holder)  # a session reading it never sees half a file
    return lock


def claim_results_dir(asked: Path, now: float | None = None) -> Claim:
    """Checks `asked` and takes it; when another live session holds it, takes a folder of this session's own
    under `asked/sessions/` and notes why. Raises OutputError when the folder cannot be written."""
    check_results_dir(asked)
    lock = _take(asked)
    if lock is not None:
        return Claim(asked, lock)
    holder = _holder(_lock_path(asked))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    own = asked / "sessions" / f"{stamp}-{os.getpid()}"
    check_results_dir(own)
    note = (f"{asked} is in use by another pytest-mlperf session ({holder}); this session writes to {own} "
            "(--mlperf-results-dir gives a session a folder of its choosing)")
    return Claim(own, _take(own), note, asked)


def claim_outputs_of(results_dir: Path, baselines_dir: Path | None) -> Claim:
    """A session's output locations, checked and claimed before its first case: its results folder (see
    claim_results_dir) and, when it records baselines, their folder."""
    claim = claim_results_dir(results_dir)
    if baselines_dir is not None:
        try:
            check_writable_dir(baselines_dir, "baselines folder", "--mlperf-baselines-dir")
        except OutputError:
            claim.release()
            raise
    return claim


def refuse_shared_cpu_baselines(workers: int, on_cpu: bool, allowed: bool) -> None:
    """Baselines recorded by CPU cases on several xdist workers at once would keep timings of cases that shared
    the cores (the summary warns of it after the fact): refused before any case unless asked for."""
    if workers > 1 and on_cpu and not allowed:
        raise OutputError(
            f"--mlperf-update-baselines with {workers} pytest-xdist workers on the CPU: the workers' cases share the "
            "cores and measure each other, so the baselines would record contaminated timings. Record baselines "
            "without -n, or add --mlperf-shared-cpu-baselines to record them anyway")


def point_latest(claim: Claim) -> Path:
    """`<results-dir>/latest`, a link to the folder of the session that finished last (the results folder itself,
    or one under sessions/), replaced atomically. Returns the link."""
    top = claim.asked or claim.path
    link = top / "latest"
    target = os.path.relpath(claim.path, top)
    # A symlink, not a file's content, so not contract/files.write_bytes_atomic: the new link is made under a
    # temporary name and renamed over the old one (os.replace swaps links atomically, as it does files).
    tmp = top / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp, target_is_directory=True)
    os.replace(tmp, link)
    return link
