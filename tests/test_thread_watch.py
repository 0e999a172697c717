"""tools/device/thread_watch.py: it watches the threads of another process while a command runs, and tells a
thread that busy-waits (as numpy's OpenBLAS pool did in the probe's process on the H200) from one that sleeps."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools" / "device"))
import thread_watch

WATCHED = """
import hashlib, sys, threading, time
def spin():  # runs without blocking and without the GIL (hashing releases it), as a spinning pool thread does
    data = bytes(32 << 20)
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        hashlib.sha256(data).digest()
def nap():  # blocks every 10 ms and hardly runs
    for _ in range(200):
        time.sleep(0.01)
threads = [threading.Thread(target=spin, name="spinner"), threading.Thread(target=nap, name="napper")]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


def test_a_busy_waiting_thread_of_the_watched_process_is_listed_as_spinning(tmp_path: Path) -> None:
    out = tmp_path / "watch.json"
    rc = thread_watch.main([str(out), "--match", "watch-me-now", "--interval", "0.25", "--",
                            sys.executable, "-c", WATCHED, "watch-me-now"])
    assert rc == 0
    summary = json.loads(out.read_text())
    (process,) = summary["processes"].values()
    # Python does not name its threads for the kernel here: the spinner is the one that ran for ~2 s
    (spinner,) = process["spinning"]  # the napper and the main thread are not
    assert spinner["run_ms"] > 1000
    assert process["intervals"] and all("threads" in i for i in process["intervals"])


def test_spinning_needs_busy_intervals_with_few_blocking_switches() -> None:
    assert thread_watch.spinning_thread({"intervals": 4, "busy": 4, "run_ms": 900.0, "voluntary_busy": 4})
    assert not thread_watch.spinning_thread({"intervals": 4, "busy": 4, "run_ms": 900.0, "voluntary_busy": 400})
    assert not thread_watch.spinning_thread({"intervals": 4, "busy": 1, "run_ms": 300.0, "voluntary_busy": 0})
    assert not thread_watch.spinning_thread({"intervals": 1, "busy": 1, "run_ms": 250.0, "voluntary_busy": 0})


def test_it_watches_the_plugins_runners_by_default(tmp_path: Path) -> None:
    # session 9 shipped `--match runner/child.py`, which no runner's command line holds: the plugin starts them as
    # `python -m pytest_mlperf.runner.child`, so the watch would have listed no process at all
    from pytest_mlperf.host.pool.recipe import LaunchRecipe

    assert thread_watch.RUNNER_MODULE in " ".join(LaunchRecipe(name="reference").argv("SOCKET", "KEY"))
    out, pid = tmp_path / "watch.json", tmp_path / "pid"
    # a process whose command line names the runner module, as a runner's does (other runners on the machine, of
    # tests running beside this one, are watched too: the test looks for this one)
    code = f"import os, time; open({str(pid)!r}, 'w').write(str(os.getpid())); time.sleep(1)"
    rc = thread_watch.main([str(out), "--interval", "0.1", "--", sys.executable, "-c", code,
                            "pytest_mlperf.runner.child"])
    summary = json.loads(out.read_text())
    assert rc == 0 and summary["match"] == "pytest_mlperf.runner.child"
    assert pid.read_text() in summary["processes"]
