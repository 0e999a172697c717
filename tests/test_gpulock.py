"""Tests for pytest_mlperf.host.machine.gpulock: per-GPU locks between real processes (a holder process, concurrent lockers,
a killed holder, another user), owner records, timeouts and the lock directory."""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_mlperf.host.machine import gpulock
from pytest_mlperf.host.machine.gpulock import (
    GpuLockError,
    GpuLockTimeout,
    Holder,
    acquire_gpus,
    default_lock_dir,
    describe_holder,
    ensure_lock_dir,
    lock_path,
    owner_path,
    read_holder,
)

GPU_A = "GPU-aaaaaaaa-0000-0000-0000-000000000000"
GPU_B = "GPU-bbbbbbbb-0000-0000-0000-000000000000"
GPU_C = "GPU-cccccccc-0000-0000-0000-000000000000"

# holds the given GPUs until a line arrives on stdin (or it is killed)
HOLDER = r"""
import sys
from pathlib import Path
from pytest_mlperf.host.machine.gpulock import acquire_gpus
lock_dir, owner, *uuids = sys.argv[1:]
with acquire_gpus(uuids, timeout_s=30, lock_dir=Path(lock_dir), owner=owner):
    print("held", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


@pytest.fixture
def lock_dir(tmp_path: Path) -> Path:
    return tmp_path / "locks"


@pytest.fixture
def start_holder(lock_dir: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(*uuids: str, owner: str = "tests/test_bench.py::test_case[gpu]") -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_dir), owner, *uuids], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == "held\n", f"holder did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.flush()


def is_free(uuid: str, lock_dir: Path) -> bool:
    """Asked from another process, so that this process's own locks count as taken."""
    code = ("import sys; from pathlib import Path; from pytest_mlperf.host.machine.gpulock import acquire_gpus, GpuLockTimeout\n"
            "try:\n"
            "    with acquire_gpus([sys.argv[2]], timeout_s=0, lock_dir=Path(sys.argv[1])): print('free')\n"
            "except GpuLockTimeout: print('held')\n")
    out = subprocess.run([sys.executable, "-c", code, str(lock_dir), uuid], capture_output=True, text=True,
                         timeout=60, check=True)
    return out.stdout.strip() == "free"


# --------------------------------------------------------------------------- one process


def test_acquire_holds_sorted_unique_gpus_and_records_the_owner(lock_dir: Path) -> None:
    with acquire_gpus([GPU_B, GPU_A, GPU_B], timeout_s=1, lock_dir=lock_dir, owner="t.py::test[x]") as lease:
        assert lease.uuids == (GPU_A, GPU_B)
        assert lease.waited_s == 0.0
        for uuid in (GPU_A, GPU_B):
            holder = read_holder(uuid, lock_dir)
            assert holder is not None
            assert (holder.pid, holder.host, holder.owner) == (os.getpid(), platform.node(), "t.py::test[x]")
            assert holder.since.endswith("+00:00")
            assert json.loads(owner_path(lock_dir, uuid).read_text())["gpu"] == uuid
            assert lock_path(lock_dir, uuid).exists()
        assert not is_free(GPU_A, lock_dir) and not is_free(GPU_B, lock_dir)
    assert not owner_path(lock_dir, GPU_A).exists() and not owner_path(lock_dir, GPU_B).exists()
    assert read_holder(GPU_A, lock_dir) is None
    assert is_free(GPU_A, lock_dir) and is_free(GPU_B, lock_dir)


def test_no_gpu_holds_nothing(lock_dir: Path) -> None:
    with acquire_gpus([], timeout_s=0, lock_dir=lock_dir) as lease:
        assert lease.uuids == ()
    assert list(lock_dir.iterdir()) == []


def test_an_error_in_the_body_releases_everything(lock_dir: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with acquire_gpus([GPU_A, GPU_B], timeout_s=1, lock_dir=lock_dir):
            raise RuntimeError("boom")
    assert is_free(GPU_A, lock_dir) and is_free(GPU_B, lock_dir)
    assert read_holder(GPU_A, lock_dir) is None and read_holder(GPU_B, lock_dir) is None


def test_locks_are_not_reentrant_and_the_timeout_names_this_process(lock_dir: Path) -> None:
    with acquire_gpus([GPU_A], timeout_s=1, lock_dir=lock_dir, owner="outer"):
        with pytest.raises(GpuLockTimeout, match=f"pid {os.getpid()} \\(outer\\)"):
            with acquire_gpus([GPU_A], timeout_s=0.1, lock_dir=lock_dir):
                pass


# --------------------------------------------------------------------------- between processes


def test_waits_for_a_holder_reports_it_then_gets_the_gpu(lock_dir: Path, start_holder) -> None:
    holder = start_holder(GPU_A, owner="tests/test_bench.py::test_case[gpu]")
    waits: list[tuple[str, str]] = []

    def on_wait(uuid: str, who: str) -> None:
        waits.append((uuid, who))
        release(holder)  # let it go only once we are known to wait

    with acquire_gpus([GPU_A], timeout_s=30, lock_dir=lock_dir, owner="me", on_wait=on_wait) as lease:
        assert read_holder(GPU_A, lock_dir).pid == os.getpid()  # type: ignore[union-attr]
    assert len(waits) == 1
    uuid, who = waits[0]
    assert uuid == GPU_A
    assert f"pid {holder.pid} (tests/test_bench.py::test_case[gpu]) on host {platform.node()}" in who
    assert lease.waited_s > 0
    assert holder.stdout is not None and holder.stdout.readline() == "released\n"


def test_times_out_naming_the_gpu_and_its_holder(lock_dir: Path, start_holder) -> None:
    holder = start_holder(GPU_A, owner="node-x")
    waits: list[str] = []
    started = time.monotonic()
    with pytest.raises(GpuLockTimeout) as exc:
        with acquire_gpus([GPU_A], timeout_s=0.3, lock_dir=lock_dir, on_wait=lambda u, w: waits.append(u)):
            pytest.fail("the lock was taken while its holder held it")
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 10
    message = str(exc.value)
    assert GPU_A in message and f"pid {holder.pid} (node-x)" in message and "0.3 s" in message
    assert exc.value.uuid == GPU_A and exc.value.timeout_s == 0.3
    assert isinstance(exc.value, TimeoutError)
    assert waits == [GPU_A]
    assert read_holder(GPU_A, lock_dir).pid == holder.pid  # type: ignore[union-attr]  # its record untouched


def test_a_timeout_releases_the_gpus_already_taken(lock_dir: Path, start_holder) -> None:
    start_holder(GPU_B)
    with pytest.raises(GpuLockTimeout, match=GPU_B):
        with acquire_gpus([GPU_A, GPU_B], timeout_s=0.2, lock_dir=lock_dir):
            pass
    assert is_free(GPU_A, lock_dir)
    assert read_holder(GPU_A, lock_dir) is None


def test_an_on_wait_error_releases_the_gpus_already_taken(lock_dir: Path, start_holder) -> None:
    start_holder(GPU_B)

    def refuse(uuid: str, who: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with acquire_gpus([GPU_A, GPU_B], timeout_s=5, lock_dir=lock_dir, on_wait=refuse):
            pass
    assert is_free(GPU_A, lock_dir)


def test_gpus_are_taken_in_sorted_order(lock_dir: Path, start_holder) -> None:
    """Asked for [B, A] while A is held: it waits for A holding nothing, so a case holding B and waiting for A
    cannot deadlock with it."""
    holder = start_holder(GPU_A)
    seen: list[tuple[str, bool]] = []

    def on_wait(uuid: str, who: str) -> None:
        seen.append((uuid, is_free(GPU_B, lock_dir)))
        release(holder)

    with acquire_gpus([GPU_B, GPU_A], timeout_s=30, lock_dir=lock_dir, on_wait=on_wait) as lease:
        assert lease.uuids == (GPU_A, GPU_B)
    assert seen == [(GPU_A, True)]


def test_a_killed_holder_frees_its_gpu(lock_dir: Path, start_holder) -> None:
    holder = start_holder(GPU_A, owner="crashed")
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    stale = read_holder(GPU_A, lock_dir)  # its record stays behind, the flock does not
    assert stale is not None and stale.pid == holder.pid
    assert "stale" in stale.describe()
    with acquire_gpus([GPU_A], timeout_s=5, lock_dir=lock_dir, owner="next") as lease:
        assert lease.waited_s == 0.0
        assert read_holder(GPU_A, lock_dir).owner == "next"  # type: ignore[union-attr]


EXCLUSIVE = r"""
import os, random, sys, time
from pathlib import Path
from pytest_mlperf.host.machine.gpulock import acquire_gpus
lock_dir, marks, seed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
ids = ["GPU-a", "GPU-b", "GPU-c"]
for _ in range(25):
    want = rng.sample(ids, rng.choice([1, 2]))
    with acquire_gpus(want, timeout_s=60, lock_dir=lock_dir, owner=str(seed), poll_interval_s=0.002):
        mine = []
        for u in want:
            try:
                os.close(os.open(marks / u, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                print("overlap on", u, flush=True)
                sys.exit(3)
            mine.append(marks / u)
        time.sleep(0.002)
        for m in mine:
            m.unlink()
print("ok", flush=True)
"""


def test_concurrent_processes_never_share_a_gpu_and_never_deadlock(lock_dir: Path, tmp_path: Path) -> None:
    """Four processes take random sets of one or two of three GPUs, in random order, 25 times each: a GPU is never
    held twice at once (a marker file per GPU that only one may create) and all of them finish."""
    marks = tmp_path / "marks"
    marks.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", EXCLUSIVE, str(lock_dir), str(marks), str(seed)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in range(4)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    assert all(out.strip() == "ok" for out, _ in outputs)


# --------------------------------------------------------------------------- owner records


def test_holder_descriptions() -> None:
    alive = Holder(pid=os.getpid(), host=platform.node(), user="ci", owner="t.py::x", since="2025-01-01T00:00:00+00:00")
    assert alive.describe() == (f"pid {os.getpid()} (t.py::x) on host {platform.node()}, user ci, "
                                "since 2025-01-01T00:00:00+00:00")
    elsewhere = Holder(pid=1, host="node-b", user="", owner="", since="")
    assert elsewhere.describe() == "pid 1 on host node-b"  # another host: its pid is not checked here
    assert describe_holder(None) == "an unknown holder (no owner record)"


@pytest.mark.parametrize("content", ["", "{\"pid\": 12", "[1, 2]", "\xff"])
def test_unreadable_owner_records_are_no_holder(lock_dir: Path, content: str) -> None:
    ensure_lock_dir(lock_dir)
    owner_path(lock_dir, GPU_A).write_text(content, encoding="latin-1")
    assert read_holder(GPU_A, lock_dir, attempts=1) is None


def test_an_owner_record_left_by_a_longer_one_is_fully_replaced(lock_dir: Path) -> None:
    ensure_lock_dir(lock_dir)
    owner_path(lock_dir, GPU_A).write_text(json.dumps({"pid": 1, "owner": "x" * 500}))
    with acquire_gpus([GPU_A], timeout_s=1, lock_dir=lock_dir, owner="short"):
        assert read_holder(GPU_A, lock_dir).owner == "short"  # type: ignore[union-attr]


# --------------------------------------------------------------------------- the lock directory


def test_default_lock_dir(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv(gpulock.LOCK_DIR_ENV, raising=False)
    assert default_lock_dir() == Path(tempfile.gettempdir()) / "pytest-mlperf-gpu-locks"
    monkeypatch.setenv(gpulock.LOCK_DIR_ENV, str(tmp_path / "ci-locks"))
    assert default_lock_dir() == tmp_path / "ci-locks"
    with acquire_gpus([GPU_A], timeout_s=1):
        assert lock_path(tmp_path / "ci-locks", GPU_A).exists()


def test_lock_dir_is_created_world_writable_and_sticky(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        path = ensure_lock_dir(tmp_path / "a" / "locks")
        with acquire_gpus([GPU_A], timeout_s=1, lock_dir=path):
            assert stat.S_IMODE(owner_path(path, GPU_A).stat().st_mode) == 0o666
        assert stat.S_IMODE(lock_path(path, GPU_A).stat().st_mode) == 0o666
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o1777


def test_an_existing_lock_dir_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "admin-made"
    path.mkdir(mode=0o770)
    os.chmod(path, 0o770)
    assert ensure_lock_dir(path) == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o770


def test_a_lock_dir_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "not-a-dir"
    path.write_text("")
    with pytest.raises(GpuLockError, match=f"{path}.*{gpulock.LOCK_DIR_ENV}"):
        with acquire_gpus([GPU_A], timeout_s=1, lock_dir=path):
            pass


def test_odd_gpu_ids_become_safe_file_names(lock_dir: Path) -> None:
    with acquire_gpus(["../../etc/x", "MIG-1/2"], timeout_s=1, lock_dir=lock_dir):
        names = sorted(p.name for p in lock_dir.iterdir())
    assert all("/" not in n for n in names)
    assert {p.parent for p in lock_dir.iterdir()} == {lock_dir}


# --------------------------------------------------------------------------- another user (needs root to switch)


def _other_user_holds_then_dies(lock_dir: str, conn) -> None:
    os.setgid(65534)
    os.setuid(65534)
    ctx = acquire_gpus([GPU_A], timeout_s=5, lock_dir=Path(lock_dir), owner="user-a")
    ctx.__enter__()
    conn.send("held")
    os._exit(0)  # dies holding the GPU: the kernel drops the flock, its owner record stays


def _second_user_takes_over(lock_dir: str, conn) -> None:
    os.setgid(65533)
    os.setuid(65533)
    try:
        with acquire_gpus([GPU_A], timeout_s=5, lock_dir=Path(lock_dir), owner="user-b"):
            holder = read_holder(GPU_A, Path(lock_dir))
            during = None if holder is None else holder.owner
        after = read_holder(GPU_A, Path(lock_dir), attempts=1)
        conn.send(("ok", during, None if after is None else after.owner))
    except BaseException as exc:  # report, do not hang the parent
        conn.send(("error", repr(exc), None))


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0 or sys.platform != "linux",
                    reason="switching users needs root on Linux")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")
def test_users_share_the_lock_directory() -> None:
    """User A dies holding a GPU; user B then takes it: B opens A's lock file, overwrites A's owner record (the sticky
    directory forbids replacing or deleting it) and clears it on release. filelock 4's FileLock refuses exactly this
    file (another user's, in a sticky directory that is neither's): .ci/run runs this file with filelock 3 and 4."""
    base = Path(tempfile.mkdtemp(prefix="gpulock-users-"))
    try:
        os.chmod(base, 0o755)
        locks = ensure_lock_dir(base / "locks")
        ctx = multiprocessing.get_context("fork")
        for target, expect_uid in ((_other_user_holds_then_dies, 65534), (_second_user_takes_over, 65533)):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=target, args=(str(locks), child))
            proc.start()
            assert parent.poll(30), "the other user's process did not answer"
            answer = parent.recv()
            proc.join(30)
            if target is _other_user_holds_then_dies:
                assert answer == "held"
                assert owner_path(locks, GPU_A).stat().st_uid == expect_uid
                assert lock_path(locks, GPU_A).stat().st_uid == expect_uid
            else:
                assert answer == ("ok", "user-b", None), answer
                assert owner_path(locks, GPU_A).stat().st_uid == 65534  # still A's file, now empty
    finally:
        shutil.rmtree(base)


# --------------------------------------------------------------------------- a lock without its record


def _hold_bare_lock(lock_dir: Path, uuid: str, record_after_s: float | None, release_after_s: float) -> subprocess.Popen[str]:
    """A process that takes a GPU's flock the way acquire_gpus does, but writes its owner record only after
    record_after_s (None: never) and releases after release_after_s: the moments around taking and giving up a lock."""
    script = r"""
import json, os, sys, time
from pathlib import Path
from filelock import FileLock
from pytest_mlperf.host.machine.gpulock import ensure_lock_dir, lock_path, owner_path
lock_dir, uuid, record_after, release_after = Path(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
ensure_lock_dir(lock_dir)
lock = FileLock(str(lock_path(lock_dir, uuid)))
lock.acquire()
print("held", flush=True)
started = time.monotonic()
if record_after != "none":
    time.sleep(float(record_after))
    owner_path(lock_dir, uuid).write_text(json.dumps({"pid": os.getpid(), "host": "h", "owner": "late"}))
time.sleep(max(0.0, release_after - (time.monotonic() - started)))
owner_path(lock_dir, uuid).unlink(missing_ok=True)
lock.release()
"""
    proc = subprocess.Popen([sys.executable, "-c", script, str(lock_dir), uuid,
                             "none" if record_after_s is None else str(record_after_s), str(release_after_s)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


@pytest.mark.parametrize(("record_after_s", "release_after_s", "expected"), [
    # the holder has taken the flock but not yet written its record: wait for the record rather than call it unknown
    (0.3, 1.5, "pid {pid} (late)"),
    # the holder has removed its record and is about to release: the lock comes free at once, nothing to report
    (None, 0.2, None),
    # a holder that never writes a record (another tool, an older version) is reported as unknown
    (None, 2.0, "an unknown holder (no owner record)"),
])
def test_a_busy_lock_without_a_record(lock_dir: Path, record_after_s: float | None, release_after_s: float,
                                      expected: str | None) -> None:
    holder = _hold_bare_lock(lock_dir, GPU_A, record_after_s=record_after_s, release_after_s=release_after_s)
    waits: list[str] = []
    with acquire_gpus([GPU_A], timeout_s=30, lock_dir=lock_dir, on_wait=lambda u, w: waits.append(w)):
        pass
    holder.wait(timeout=30)
    if expected is None:
        assert waits == []
    else:
        assert len(waits) == 1 and expected.format(pid=holder.pid) in waits[0], waits


def test_a_lock_file_removed_between_open_and_lock_is_locked_anew(lock_dir: Path, monkeypatch) -> None:
    """A lock taken on a file no longer at its path excludes nobody: the holder must end up locking the file there."""
    real_open = gpulock._GpuFileLock._open
    removed: list[int] = []

    def open_then_lose_the_file(self) -> int:
        fd = real_open(self)
        if not removed:
            removed.append(fd)
            os.unlink(self.path)  # what a temp-dir cleaner or a hand could do
        return fd

    monkeypatch.setattr(gpulock._GpuFileLock, "_open", open_then_lose_the_file)
    with acquire_gpus([GPU_A], timeout_s=1, lock_dir=lock_dir):
        assert removed and lock_path(lock_dir, GPU_A).exists()
        assert not is_free(GPU_A, lock_dir)
    assert is_free(GPU_A, lock_dir)
