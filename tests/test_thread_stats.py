"""tools/device/thread_stats.py: per-thread scheduler statistics read from /proc (a fake one, and this process's)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools" / "device"))
import thread_stats  # noqa: E402


def fake_task(root: Path, pid: int, tid: int, name: str, cpu: int, sched: tuple[int, int, int],
              switches: tuple[int, int]) -> None:
    task = root / str(pid) / "task" / str(tid)
    task.mkdir(parents=True, exist_ok=True)
    (task / "comm").write_text(name + "\n")
    rest = ["S"] + ["0"] * 35 + [str(cpu)] + ["0"] * 13  # fields 3..52: field 39 is the 37th after the name
    (task / "stat").write_text(f"{tid} ({name} (x)) " + " ".join(rest) + "\n")
    (task / "schedstat").write_text(" ".join(map(str, sched)) + "\n")
    (task / "status").write_text(f"Name:\t{name}\nvoluntary_ctxt_switches:\t{switches[0]}\n"
                                 f"nonvoluntary_ctxt_switches:\t{switches[1]}\n")


def test_a_rounds_delta_per_thread_from_a_fake_proc(tmp_path: Path) -> None:
    fake_task(tmp_path, 7, 7, "python3", 2, (1_000_000, 500_000, 10), (5, 1))
    fake_task(tmp_path, 7, 8, "mlperf-stream-0", 3, (2_000_000, 0, 4), (3, 0))
    before = thread_stats.snapshot(tmp_path, 7)
    assert before[8] == thread_stats.ThreadSample("mlperf-stream-0", 3, 2_000_000, 0, 4, 3, 0)
    assert before[7].cpu == 2  # a name holding ") " does not shift the fields
    fake_task(tmp_path, 7, 7, "python3", 5, (4_000_000, 2_500_000, 30), (25, 4))
    fake_task(tmp_path, 7, 9, "new", 1, (1, 1, 1), (1, 1))  # born in between: no delta
    d = thread_stats.delta(before, thread_stats.snapshot(tmp_path, 7))
    assert set(d) == {7}  # thread 8 did not run in between
    assert d[7] == {"name": "python3", "cpu": 5, "run_ms": 3.0, "wait_ms": 2.0, "slices": 20, "voluntary": 20,
                    "involuntary": 3, "moved": True}
    assert thread_stats.snapshot(tmp_path, 99) == {}  # no such process
    # a thread that ran all along on a core of its own, never switched out: its slices did not change, its time did
    fake_task(tmp_path, 7, 8, "spinner", 3, (900_000_000, 0, 4), (3, 0))
    assert thread_stats.delta(before, thread_stats.snapshot(tmp_path, 7))[8]["run_ms"] == 898.0


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_this_process_thread_that_worked_shows_its_cpu_time() -> None:
    before = thread_stats.snapshot()

    def spin() -> None:
        end = time.perf_counter() + 0.05
        while time.perf_counter() < end:
            pass
        time.sleep(0.2)  # alive for the second snapshot

    t = threading.Thread(target=spin, name="spinner")
    t.start()
    time.sleep(0.1)
    mid = thread_stats.snapshot()
    t.join()
    mine = [s for tid, s in mid.items() if tid not in before]
    assert any(s.run_ns >= 20_000_000 for s in mine)  # the spinner ran at least 20 of its 50 ms
