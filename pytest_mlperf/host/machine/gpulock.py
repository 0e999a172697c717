"""Per-GPU locks shared by every process of a host: xdist workers of one session, and other pytest sessions (other CI
jobs, other users) measuring on the same GPUs. Two cases on one GPU measure each other, so a case holds the lock of
each of its GPUs for as long as it runs.

One lock file per GPU (named by its UUID) in a system-wide directory: $PYTEST_MLPERF_LOCK_DIR, else
`<tempdir>/pytest-mlperf-gpu-locks`, created world-writable with the sticky bit (like /tmp) so that jobs of other
users share it. The locks are flock(2) locks on a descriptor this module opens itself: the kernel releases them when
their holder dies, so a crashed session never leaves a GPU locked. Not `filelock.FileLock`: since filelock 4 it
refuses a lock file in a sticky directory that belongs to another user (that user could replace the file during a
hold), which is exactly the file a second user's session must open here. Nothing in this package ever removes a lock
file, and a holder checks after locking that the path still names the file it locked (else it locks anew), so a
file replaced from outside cannot give two holders one GPU. Beside each lock the holder keeps an owner record (pid, host, user, owner
text, since) so that a waiting session can say what it waits for; the record is only information, the flock alone
decides.

A case that needs several GPUs takes their locks in sorted order: every process then locks in the same order and two
overlapping cases cannot each hold one GPU the other waits for. Locks are not re-entrant: a process that asks again
for a GPU it holds waits for itself until its timeout (the message then names its own pid)."""

from __future__ import annotations

import getpass
import json
import os
import platform
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not a POSIX host: the plugin still imports, taking a GPU lock says why it cannot
    fcntl = None  # type: ignore[assignment]

LOCK_DIR_ENV = "PYTEST_MLPERF_LOCK_DIR"
LOCK_DIR_NAME = "pytest-mlperf-gpu-locks"
_SHARED_DIR_MODE = 0o1777  # everyone may create locks; only a file's owner may delete it
_SHARED_FILE_MODE = 0o666  # a lock or record another user created must still open for writing


class GpuLockError(RuntimeError):
    """The lock directory or a lock file cannot be used; the message names the path and what to do."""


class GpuLockTimeout(GpuLockError, TimeoutError):
    """A GPU stayed locked by another holder for longer than the caller's timeout."""

    def __init__(self, uuid: str, holder: str, timeout_s: float, lock_file: Path):
        super().__init__(
            f"timed out after {timeout_s:g} s waiting for GPU {uuid}, held by {holder} (lock {lock_file}); "
            "wait for that holder to finish, raise the timeout, or run on other GPUs (CUDA_VISIBLE_DEVICES)"
        )
        self.uuid = uuid
        self.holder = holder
        self.timeout_s = timeout_s


@dataclass(frozen=True)
class Holder:
    """The owner record of a held GPU, as its holder wrote it."""

    pid: int | None
    host: str
    user: str
    owner: str  # what the holder runs, e.g. the test's nodeid
    since: str  # ISO 8601, UTC

    def describe(self) -> str:
        """E.g. 'pid 4242 (tests/test_x.py::test_y) on host node-a, user ci, since 2025-01-01T10:00:00+00:00'."""
        who = f"pid {self.pid}" if self.pid is not None else "an unknown process"
        if self.owner:
            who += f" ({self.owner})"
        text = f"{who} on host {self.host or '?'}"
        if self.user:
            text += f", user {self.user}"
        if self.since:
            text += f", since {self.since}"
        if self.pid is not None and self.host == platform.node() and not _pid_running(self.pid):
            text += " (that process has ended: the record is stale, the lock has a new holder)"
        return text


@dataclass(frozen=True)
class GpuLease:
    """What acquire_gpus holds: the GPUs (sorted) and how long it waited for them."""

    uuids: tuple[str, ...]
    waited_s: float


def default_lock_dir() -> Path:
    """$PYTEST_MLPERF_LOCK_DIR, else <tempdir>/pytest-mlperf-gpu-locks: one directory per host that every session
    on it finds without being told."""
    configured = os.environ.get(LOCK_DIR_ENV)
    return Path(configured) if configured else Path(tempfile.gettempdir()) / LOCK_DIR_NAME


def ensure_lock_dir(lock_dir: Path | None = None) -> Path:
    """The lock directory, created world-writable with the sticky bit when this call creates it (a directory that
    exists keeps its mode: it may be someone else's, or set up by an administrator)."""
    path = default_lock_dir() if lock_dir is None else Path(lock_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()
        except FileExistsError:
            pass
        else:
            os.chmod(path, _SHARED_DIR_MODE)  # mkdir's mode is cut by the umask
    except OSError as exc:
        raise GpuLockError(f"cannot create the GPU lock directory {path}: {exc}; set {LOCK_DIR_ENV} to a directory "
                           "every session on this host can write") from None
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        raise GpuLockError(f"the GPU lock directory {path} is not a writable directory; make it world-writable "
                           f"(chmod 1777) or set {LOCK_DIR_ENV} to one every session on this host can write")
    return path


def _file_stem(uuid: str) -> str:
    """A GPU id as a file name (UUIDs already are one; anything else is made safe)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", uuid).strip(".") or "gpu"


def lock_path(lock_dir: Path, uuid: str) -> Path:
    return lock_dir / f"{_file_stem(uuid)}.lock"


def owner_path(lock_dir: Path, uuid: str) -> Path:
    return lock_dir / f"{_file_stem(uuid)}.owner.json"


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid without a passwd entry (containers)
        return str(os.getuid()) if hasattr(os, "getuid") else ""


def _open_flags() -> int:
    return os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0)  # never write through a link someone planted


def _write_owner(path: Path, record: dict[str, Any]) -> None:
    """Writes the record in place, not by rename: in a sticky directory a file another user created can be rewritten
    (mode 0666) but not replaced or deleted. Readers that catch it half written see no holder (read_holder)."""
    data = json.dumps(record, sort_keys=True).encode("utf-8")
    try:
        fd = os.open(path, _open_flags() | os.O_CREAT | os.O_EXCL, _SHARED_FILE_MODE)
        os.fchmod(fd, _SHARED_FILE_MODE)
    except (FileExistsError, PermissionError):  # PermissionError: fs.protected_regular refuses O_CREAT on it
        fd = os.open(path, _open_flags())
    try:
        os.write(fd, data)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def _clear_owner(path: Path) -> None:
    """Removes this holder's record before its lock is released (after, the next holder's record could go)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except PermissionError:  # another user created the file: empty it instead
        try:
            fd = os.open(path, _open_flags() | os.O_TRUNC)
            os.close(fd)
        except OSError:
            pass


def read_holder(uuid: str, lock_dir: Path | None = None, *, attempts: int = 3) -> Holder | None:
    """The owner record of a GPU, or None when there is none (free, or its holder has not written it yet). A record
    read while being written is retried a few times before giving up."""
    path = owner_path(default_lock_dir() if lock_dir is None else Path(lock_dir), uuid)
    for attempt in range(attempts):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                pid = data.get("pid")
                return Holder(
                    pid=pid if isinstance(pid, int) else None,
                    host=str(data.get("host", "")),
                    user=str(data.get("user", "")),
                    owner=str(data.get("owner", "")),
                    since=str(data.get("since", "")),
                )
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, ValueError):
            pass
        if attempt + 1 < attempts:
            time.sleep(0.02)
    return None


def describe_holder(holder: Holder | None) -> str:
    return holder.describe() if holder is not None else "an unknown holder (no owner record)"


class _GpuFileLock:
    """One GPU's lock: an exclusive flock on its lock file, opened by name by every session of the host.

    Each acquire opens its own descriptor, so two acquires in one process exclude each other too (not re-entrant).
    The file is created 0666 and never removed; one another user created is opened without O_CREAT, which the
    kernel's fs.protected_regular allows in a sticky directory."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self, timeout_s: float, poll_interval_s: float) -> bool:
        """True once the lock is taken, False when timeout_s (< 0: no limit) passes first."""
        deadline = None if timeout_s < 0 else time.monotonic() + timeout_s
        while True:
            if self._try_once():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            pause = poll_interval_s if deadline is None else min(poll_interval_s, deadline - time.monotonic())
            time.sleep(max(0.0, pause))

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def _try_once(self) -> bool:
        if fcntl is None:
            raise GpuLockError("GPU locks need flock(2), which this platform lacks; run GPU cases on a Linux host")
        try:
            fd = self._open()
        except OSError as exc:
            raise self._error(exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as exc:
            os.close(fd)
            raise self._error(exc) from None
        if not self._still_names(fd):  # removed or replaced between our open and our lock: lock the file there now
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            return self._try_once()
        self._fd = fd
        return True

    def _open(self) -> int:
        flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        while True:
            try:
                fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, _SHARED_FILE_MODE)
            except (FileExistsError, PermissionError):  # PermissionError: fs.protected_regular refuses O_CREAT
                try:
                    return os.open(self.path, flags)
                except FileNotFoundError:
                    continue  # removed in between: create it
            try:
                os.fchmod(fd, _SHARED_FILE_MODE)  # the create mode is cut by the umask
            except BaseException:
                os.close(fd)
                raise
            return fd

    def _still_names(self, fd: int) -> bool:
        try:
            on_disk = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return os.path.samestat(on_disk, os.fstat(fd))

    def _error(self, exc: OSError) -> GpuLockError:
        return GpuLockError(f"cannot use the GPU lock file {self.path}: {exc}; the lock directory must be writable by "
                            f"every session on this host, or set {LOCK_DIR_ENV}")


def _lock_or_describe(
    lock: _GpuFileLock,
    uuid: str,
    directory: Path,
    poll_interval_s: float,
    on_wait: Callable[[str, str], None] | None,
    settle_s: float = 1.0,
) -> bool:
    """Called when a GPU's lock is busy. A holder writes its record just after taking the lock and removes it just
    before releasing it, so a busy lock without a record is one being taken or given up. Within settle_s this either
    takes the lock (True: nothing to wait for) or finds the holder's record; on_wait then hears who holds the GPU
    (or that the holder is unknown, when no record appears in time) and the caller waits (False)."""
    deadline = time.monotonic() + settle_s
    holder = read_holder(uuid, directory)
    while holder is None and time.monotonic() < deadline:
        if lock.acquire(min(0.1, settle_s), poll_interval_s):
            return True
        holder = read_holder(uuid, directory)
    if on_wait is not None:
        on_wait(uuid, describe_holder(holder))
    return False


@contextmanager
def acquire_gpus(
    uuids: Iterable[str],
    *,
    timeout_s: float | None,
    lock_dir: Path | None = None,
    owner: str = "",
    on_wait: Callable[[str, str], None] | None = None,
    poll_interval_s: float = 0.05,
) -> Iterator[GpuLease]:
    """Holds the lock of every GPU in `uuids` for the body of the with-block.

    Locks are taken in sorted order and released in reverse. When a GPU is held by someone else, on_wait(uuid,
    holder description) is called once for that GPU before waiting, so the caller can say what it waits for.
    timeout_s bounds the whole wait (None: no limit); when it passes, GpuLockTimeout names the GPU, its holder and
    the timeout, and the locks already taken are released. An empty `uuids` (a CPU case) holds nothing."""
    directory = ensure_lock_dir(lock_dir)
    ordered = tuple(sorted(set(uuids)))
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    record = {"pid": os.getpid(), "host": platform.node(), "user": _user(), "owner": owner}
    waited = 0.0
    with ExitStack() as held:
        for uuid in ordered:
            path = lock_path(directory, uuid)
            lock = _GpuFileLock(path)
            if not lock.acquire(0, poll_interval_s) and not _lock_or_describe(
                lock, uuid, directory, poll_interval_s, on_wait
            ):
                started = time.monotonic()
                remaining = -1.0 if deadline is None else max(0.0, deadline - started)
                if not lock.acquire(remaining, poll_interval_s):
                    holder = describe_holder(read_holder(uuid, directory))
                    raise GpuLockTimeout(uuid, holder, float(timeout_s or 0.0), path)
                waited += time.monotonic() - started
            held.callback(lock.release)
            since = datetime.now(timezone.utc).isoformat(timespec="seconds")
            try:
                _write_owner(owner_path(directory, uuid), {**record, "gpu": uuid, "since": since})
            except OSError:
                pass  # the record only informs waiters; the lock is held all the same
            held.callback(_clear_owner, owner_path(directory, uuid))
        yield GpuLease(ordered, waited)
