"""Per-thread scheduler statistics of this process from /proc (Linux), for the latency probes (issue 14).

A 1 s SingleStream round's p90 moves by 10-20% between rounds while the model does not; one lead is where and how
promptly the threads on the query's path run. For each thread, `snapshot()` reads its name (`comm`), the CPU it
last ran on (`stat` field 39), its time on a CPU and waiting on a run queue with its number of time slices
(`schedstat`), and its voluntary and involuntary context switches (`status`). `delta(before, after)` is what
happened in between, per thread, for threads alive at both ends.

    before = snapshot(); run(); per_thread = delta(before, snapshot())
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ThreadSample:
    name: str
    cpu: int | None  # the CPU it last ran on
    run_ns: int  # time on a CPU
    wait_ns: int  # time runnable, waiting on a run queue
    slices: int  # time slices run
    voluntary: int  # context switches it asked for (blocking)
    involuntary: int  # context switches forced on it (preempted)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _cpu_from_stat(text: str) -> int | None:
    """Field 39 (`processor`) of /proc/.../stat; the name (field 2) may hold spaces and parentheses."""
    tail = text.rpartition(")")[2].split()
    try:
        return int(tail[36])  # fields 3.. follow the name: field 39 is the 37th of them
    except (IndexError, ValueError):
        return None


def _switches(text: str) -> tuple[int, int]:
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
            values[key] = int(value.strip() or 0)
    return values.get("voluntary_ctxt_switches", 0), values.get("nonvoluntary_ctxt_switches", 0)


def sample_thread(task: Path) -> ThreadSample | None:
    """One thread's sample from its /proc/PID/task/TID folder; None when it has gone."""
    sched = _read(task / "schedstat").split()
    if len(sched) < 3:
        return None
    voluntary, involuntary = _switches(_read(task / "status"))
    return ThreadSample(name=_read(task / "comm").strip(), cpu=_cpu_from_stat(_read(task / "stat")),
                        run_ns=int(sched[0]), wait_ns=int(sched[1]), slices=int(sched[2]),
                        voluntary=voluntary, involuntary=involuntary)


def snapshot(proc: Path = Path("/proc"), pid: int | None = None) -> dict[int, ThreadSample]:
    """Every thread of process `pid` (this one by default), by thread id; empty where /proc has no such folder."""
    tasks = proc / str(pid or os.getpid()) / "task"
    samples: dict[int, ThreadSample] = {}
    try:
        entries = list(tasks.iterdir())
    except OSError:
        return samples
    for task in entries:
        s = sample_thread(task)
        if s is not None and task.name.isdigit():
            samples[int(task.name)] = s
    return samples


def delta(before: dict[int, ThreadSample], after: dict[int, ThreadSample]) -> dict[int, dict[str, object]]:
    """Per thread alive at both ends: its name, the CPU it last ran on (after), and the differences, in ms and
    counts; threads that did not run in between are left out."""
    out: dict[int, dict[str, object]] = {}
    for tid, b in after.items():
        a = before.get(tid)
        # by time on a CPU, not by slices: a thread that ran the whole interval without being switched out (a
        # spinning pool thread on a core of its own) has as many slices as before
        if a is None or (b.run_ns == a.run_ns and b.slices == a.slices):
            continue
        out[tid] = {"name": b.name, "cpu": b.cpu, "run_ms": (b.run_ns - a.run_ns) / 1e6,
                    "wait_ms": (b.wait_ns - a.wait_ns) / 1e6, "slices": b.slices - a.slices,
                    "voluntary": b.voluntary - a.voluntary, "involuntary": b.involuntary - a.involuntary,
                    "moved": a.cpu != b.cpu}
    return out
