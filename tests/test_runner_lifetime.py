"""A runner's life is bound to its pytest process's (contract/lifetime.py, host/pool/client.py, host/interrupt.py): its whole
process tree ends with it, whether it exits, crashes, hangs or is killed, and it ends when pytest ends, however
pytest ends. Real processes on Linux (/proc), real pytest sessions against the null SUT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pytest_mlperf.contract.lifetime import Proc, bind_to_parent, end_tree, is_ancestor, tree_of
from null_bench import write_null_bench

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table in /proc")

# a launch prefix whose shell writes its pid (the runner's, and its process group's) and leaves two children in
# the group before it becomes the runner: one that ends on SIGTERM, one that ignores it
PREFIX = ("sh -c 'echo $$ >> runner.pgid; sleep 97 & (trap \"\" TERM; exec sleep 98) & exec \"$@\"' sh")


def live_group(pgid: int) -> list[int]:
    """Processes of process group `pgid` that still run (zombies hold nothing and do not count)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def wait_for(condition, seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def runner_folders(tmp: Path) -> list[Path]:
    """The runners' socket and key folders (host/pool/client.py) among the temporary folders."""
    # the GPU locks and the results folders' session locks (host/outputs.py) are shared and kept by design
    return [p for p in tmp.glob("pytest-mlperf-*") if p.name not in ("pytest-mlperf-gpu-locks", "pytest-mlperf-locks")]


def groups(path: Path) -> list[int]:
    return [int(x) for x in (path / "runner.pgid").read_text().split()] if (path / "runner.pgid").exists() else []


@pytest.fixture
def cleanup_groups(pytester: pytest.Pytester):
    """Leaves no process of the test's runners behind when an assertion fails."""
    yield
    for pgid in groups(pytester.path):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def bench(pytester: pytest.Pytester, name: str = "test_bench", scenarios=("Offline",), calibrate: bool = True,
          **options: object) -> None:
    write_null_bench(pytester, name, scenarios, calibrate, **options)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--mlperf-duration=0.5s",
                                         f"--mlperf-reference-prefix={PREFIX}", *args)


# --------------------------------------------------------------------------- the process tree, pure


def test_a_tree_is_the_group_and_the_descendants_that_left_it_without_zombies() -> None:
    table = {p.pid: p for p in [
        Proc(10, 1, 10, "S"),  # the runner, leader of group 10
        Proc(11, 10, 10, "S"),  # its child
        Proc(12, 10, 12, "S"),  # a child that left with setsid
        Proc(13, 12, 12, "R"),  # and its child
        Proc(14, 1, 10, "S"),  # orphaned member of group 10
        Proc(15, 10, 10, "Z"),  # a zombie holds nothing
        Proc(20, 1, 20, "S"),  # someone else
    ]}
    assert tree_of(10, table) == {10, 11, 12, 13, 14}
    del table[10]  # the runner died: its group members remain, its children are re-parented
    table[11], table[12] = Proc(11, 1, 10, "S"), Proc(12, 1, 12, "S")
    assert tree_of(10, table) == {11, 14}


def test_only_an_ancestor_is_watched_as_the_parent() -> None:
    assert is_ancestor(os.getppid()) and is_ancestor(1)
    child = subprocess.Popen(["sleep", "91"])
    try:
        assert is_ancestor(os.getpid(), of=child.pid)
        assert not is_ancestor(child.pid)  # e.g. a pid from another pid namespace that names someone else here
    finally:
        child.kill()
        child.wait()


def test_end_tree_ends_a_group_whose_leader_is_gone_and_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    script = "(trap '' TERM; exec sleep 95) & sleep 96 & echo $! > pids; exit 0"
    leader = subprocess.Popen(["sh", "-c", script], cwd=tmp_path, start_new_session=True)
    leader.wait()  # the leader exited on its own, its children live on in its group
    try:
        assert wait_for(lambda: len(live_group(leader.pid)) == 2, 10)
        ended = end_tree(leader.pid, 0.5)
        assert live_group(leader.pid) == [] and ended.survivors == []
        assert len(ended.pids) == 2
    finally:
        try:
            os.killpg(leader.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_child_bound_to_its_parent_gets_sigterm_when_the_parent_dies(tmp_path: Path) -> None:
    # the parent starts a bound child, writes its pid and exits; the child must not outlive it
    parent = textwrap.dedent(f"""
        import os, subprocess, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from pytest_mlperf.contract.lifetime import bind_to_parent
        child = subprocess.Popen(["sleep", "94"], preexec_fn=bind_to_parent(os.getpid()), start_new_session=True)
        open("child.pid", "w").write(str(child.pid))
    """)
    subprocess.run([sys.executable, "-c", parent], cwd=tmp_path, check=True, timeout=60)
    pid = int((tmp_path / "child.pid").read_text())
    try:
        assert wait_for(lambda: live_group(pid) == [], 10)
    finally:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert callable(bind_to_parent(os.getpid()))


# --------------------------------------------------------------------------- pytest ends a runner's tree


@pytest.mark.usefixtures("cleanup_groups")
def test_a_runner_that_exits_takes_its_children_with_it(pytester: pytest.Pytester) -> None:
    bench(pytester)
    run(pytester).assert_outcomes(passed=1)
    (pgid,) = groups(pytester.path)
    assert live_group(pgid) == []  # both children, the one ignoring SIGTERM too, ended with the runner


@pytest.mark.usefixtures("cleanup_groups")
def test_a_runner_that_crashes_leaves_no_process_behind(pytester: pytest.Pytester) -> None:
    bench(pytester, scenarios=("SingleStream", "MultiStream"), calibrate=False, crash_after=3)
    result = run(pytester)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*runner was killed by SIGKILL while SingleStream performance test*"])
    pgids = groups(pytester.path)
    assert len(pgids) == 2  # the crashed runner was replaced
    assert [pid for pgid in pgids for pid in live_group(pgid)] == []


@pytest.mark.usefixtures("cleanup_groups")
def test_a_hung_runner_killed_at_its_timeout_leaves_no_process_behind(pytester: pytest.Pytester) -> None:
    bench(pytester, scenarios=("SingleStream",), calibrate=False, hang_after=0)
    result = run(pytester, "--mlperf-timeout=5")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*did not finish SingleStream performance test*within 5 s and was killed*"])
    (pgid,) = groups(pytester.path)
    assert live_group(pgid) == []


# --------------------------------------------------------------------------- a runner ends with its pytest process


def start_session(pytester: pytest.Pytester, tmp: Path, *args: str) -> subprocess.Popen[bytes]:
    """pytest in a process of its own, its temporary folders under `tmp`; returns once the hanging case's LoadGen
    test has started."""
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--mlperf-duration=0.5s",
         f"--mlperf-reference-prefix={PREFIX}", *args],
        cwd=pytester.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def hanging() -> bool:
        logs = (pytester.path / "mlperf-results" / "runners").glob("*.log")
        return any("LoadGen test: SingleStream" in log.read_text(errors="replace") for log in logs)

    assert wait_for(hanging, 120), "the hanging case never reached its LoadGen test"
    return proc


@pytest.mark.usefixtures("cleanup_groups")
def test_a_runner_ends_with_its_killed_pytest_process_and_removes_its_socket_folder(
        pytester: pytest.Pytester, tmp_path: Path) -> None:
    bench(pytester, scenarios=("SingleStream",), calibrate=False, hang_after=0)
    proc = start_session(pytester, tmp_path)
    (pgid,) = groups(pytester.path)
    assert list(tmp_path.glob("pytest-mlperf-*/runner.sock"))
    proc.kill()  # SIGKILL: pytest can clean nothing up
    proc.communicate(timeout=60)
    assert wait_for(lambda: live_group(pgid) == [], 30), f"left alive: {live_group(pgid)}"
    assert runner_folders(tmp_path) == []  # socket and key gone with the runner


@pytest.mark.usefixtures("cleanup_groups")
def test_sigterm_to_pytest_stops_like_ctrl_c_writes_results_and_prints_the_summary(
        pytester: pytest.Pytester, tmp_path: Path) -> None:
    bench(pytester, name="test_a")  # measured first, and fine
    bench(pytester, name="test_b", scenarios=("SingleStream",), calibrate=False, hang_after=0)  # its own runner, which hangs
    proc = start_session(pytester, tmp_path, "test_a.py", "test_b.py")
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    assert "received SIGTERM: stopped as on Ctrl-C" in out
    assert "MLPerf results" in out and "null Offline performance" in out, out
    doc = json.loads((pytester.path / "mlperf-results" / "results.json").read_text())
    assert [c["key"]["scenario"] for c in doc["cases"]] == ["Offline"]
    pgids = groups(pytester.path)
    assert len(pgids) == 2 and [pid for pgid in pgids for pid in live_group(pgid)] == []
    assert runner_folders(tmp_path) == []


# --------------------------------------------------------------------------- the runner's watchdog, on its own

WATCHED = """
import os, subprocess, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from pytest_mlperf.contract.lifetime import Watchdog
files = [Path("folder/runner.sock"), Path("folder/key")]
Path("folder").mkdir()
for f in files:
    f.write_text("x")
Watchdog(os.getppid(), files).install()
child = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 93"])  # in the watched process's group; ignores SIGTERM
Path("ready").write_text(str(os.getpid()))
while True:
    time.sleep(1)  # the main thread is busy (a hung SUT, LoadGen) and never looks
"""
# stands for the pytest process: starts the watched process (a group of its own, as a runner), reports how it ended
PARENT = """
import subprocess, sys
from pathlib import Path
watched = subprocess.Popen([sys.executable, "-c", sys.argv[1]], start_new_session=True)
Path("code").write_text(str(watched.wait()))
"""


@pytest.mark.parametrize("cause", ["SIGTERM", "parent gone"])
def test_the_watchdog_ends_its_tree_and_removes_its_folder(tmp_path: Path, cause: str) -> None:
    script = WATCHED.format(root=str(Path(__file__).resolve().parents[1]))
    parent = subprocess.Popen([sys.executable, "-c", PARENT, script], cwd=tmp_path, start_new_session=True)
    watched = None
    try:
        assert wait_for(lambda: (tmp_path / "ready").exists(), 60)
        watched = int((tmp_path / "ready").read_text())
        assert len(live_group(watched)) >= 2  # itself and its child
        if cause == "SIGTERM":
            os.kill(watched, signal.SIGTERM)
            parent.wait(timeout=60)
            assert (tmp_path / "code").read_text() == "143"
        else:
            parent.kill()  # SIGKILL: the watched process is not told
            parent.wait()
        assert wait_for(lambda: live_group(watched) == [], 30)  # the child ignoring SIGTERM was killed
        assert not (tmp_path / "folder").exists()
    finally:
        parent.kill()
        if watched is not None:
            try:
                os.killpg(watched, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_sigterm_handling_is_installed_only_where_no_one_else_handles_it() -> None:
    from pytest_mlperf.host.interrupt import Terminated, stop_on_sigterm

    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        restore = stop_on_sigterm()
        assert restore is not None
        with pytest.raises(Terminated, match="received SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here at once
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # a second SIGTERM ends pytest at once
        restore()
        own = signal.signal(signal.SIGTERM, lambda *a: None)
        assert stop_on_sigterm() is None  # someone else's handler is left alone
        signal.signal(signal.SIGTERM, own)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_runner_closes_its_socket_after_the_pytest_side_removed_it(tmp_path):
    """Seen on the H200: the pytest side removes the socket's folder once the runner said goodbye, while the vllm
    runner was still shutting its engine down; closing the listener then raised FileNotFoundError (a traceback at
    the end of the runner's log). The runner's close tolerates the missing file."""
    from multiprocessing.connection import Listener

    from pytest_mlperf.runner.child import close_listener

    def listener_whose_socket_is_gone(name: str) -> Listener:
        listener = Listener(str(tmp_path / name), family="AF_UNIX", authkey=b"k" * 32)
        (tmp_path / name).unlink()  # what the pytest side's cleanup does
        return listener

    with pytest.raises(FileNotFoundError):  # the pattern: a plain close fails
        listener_whose_socket_is_gone("plain.sock").close()
    close_listener(listener_whose_socket_is_gone("runner.sock"))  # no exception
