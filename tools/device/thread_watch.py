"""Watch the threads of other processes while a command runs (issue 14): which threads of the plugin's runner use
the CPUs during a gate's rounds, and whether any of them busy-waits.

    python3 tools/device/thread_watch.py OUT.json [--match pytest_mlperf.runner.child] [--interval 0.5] -- COMMAND...

Runs COMMAND (e.g. a pytest line) and, every `interval` seconds until it ends, samples every thread of each process
whose command line contains `--match` (thread_stats.py: CPU time, run-queue wait, context switches, last CPU).
OUT.json gets, per watched process, each interval's busiest threads and, per thread over its whole life, the
time it ran and how often it blocked. A thread that ran most of the intervals it was seen in while blocking about
once an interval is listed as spinning: in the probe's process (session 9) numpy's OpenBLAS pool of 15 threads ran
860-970 ms of each ~1.5 s round that way. The exit status is COMMAND's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import thread_stats

from pytest_mlperf.contract.files import write_json_atomic

RUNNER_MODULE = "pytest_mlperf.runner.child"  # the plugin starts its runners as `python -m` of it (recipe.py)
BUSY_SHARE = 0.5  # a thread that ran at least this share of an interval was busy in it
SPIN_SWITCHES = 2.0  # ... and one that blocked at most this often per busy interval was waiting without sleeping


def matching(match: str, proc: Path = Path("/proc"), own: int | None = None) -> list[int]:
    """The processes whose command line contains `match`, but `own` (the watcher: its own command line holds it)."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if match in cmdline:
            found.append(int(entry.name))
    return sorted(found)


class Watch:
    """The per-interval deltas and per-thread totals of the watched processes."""

    def __init__(self, interval_s: float, top: int = 12) -> None:
        self.interval_s = interval_s
        self.top = top
        self.last: dict[int, dict[int, thread_stats.ThreadSample]] = {}
        self.intervals: dict[int, list[dict[str, object]]] = {}
        self.totals: dict[int, dict[int, dict[str, float]]] = {}

    def sample(self, pids: Sequence[int], now_s: float, proc: Path = Path("/proc")) -> None:
        for pid in pids:
            snap = thread_stats.snapshot(proc, pid)
            before = self.last.get(pid)
            self.last[pid] = snap
            if before is None:
                continue
            d = thread_stats.delta(before, snap)
            busiest = sorted(d.items(), key=lambda kv: -float(kv[1]["run_ms"]))[: self.top]  # type: ignore[arg-type]
            self.intervals.setdefault(pid, []).append({"t_s": round(now_s, 3),
                                                       "threads": [{"tid": t, **v} for t, v in busiest]})
            seen = self.totals.setdefault(pid, {})
            for tid in snap:
                row = seen.setdefault(tid, {"intervals": 0, "busy": 0, "run_ms": 0.0, "voluntary_busy": 0})
                row["intervals"] += 1
                v = d.get(tid)
                if v is None:
                    continue
                row["run_ms"] += float(v["run_ms"])  # type: ignore[arg-type]
                if float(v["run_ms"]) >= BUSY_SHARE * self.interval_s * 1000:  # type: ignore[arg-type]
                    row["busy"] += 1
                    row["voluntary_busy"] += int(v["voluntary"])  # type: ignore[call-overload]

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for pid, threads in self.totals.items():
            names = {t: s.name for t, s in self.last.get(pid, {}).items()}
            spinning = sorted(t for t, r in threads.items() if spinning_thread(r))
            out[str(pid)] = {
                "spinning": [{"tid": t, "name": names.get(t), **threads[t]} for t in spinning],
                "threads": {str(t): {"name": names.get(t), **r} for t, r in sorted(threads.items())},
                "intervals": self.intervals.get(pid, []),
            }
        return out


def spinning_thread(row: dict[str, float]) -> bool:
    """Busy in most of the intervals it was seen in, blocking about once an interval or less."""
    busy = row["busy"]
    return row["intervals"] >= 2 and busy >= 0.5 * row["intervals"] and row["voluntary_busy"] <= SPIN_SWITCHES * busy


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--match", default=RUNNER_MODULE, help="part of the watched processes' command line")
    parser.add_argument("--interval", type=float, default=0.5)
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        parser.error("give the command to run after --")
    cut = argv.index("--")
    args = parser.parse_args(argv[:cut])
    command = argv[cut + 1:]
    watch = Watch(args.interval)
    began = time.monotonic()
    child = subprocess.Popen(command)
    try:
        while child.poll() is None:
            watch.sample(matching(args.match, own=os.getpid()), time.monotonic() - began)
            time.sleep(args.interval)
    finally:
        if child.poll() is None:
            child.terminate()
        rc = child.wait()
        summary = {"command": command, "match": args.match, "interval_s": args.interval,
                   "processes": watch.summary()}
        write_json_atomic(args.out, summary)
        for pid, p in summary["processes"].items():  # type: ignore[attr-defined]
            print(f"pid {pid}: {len(p['threads'])} threads, spinning: "
                  f"{[(s['tid'], s['name'], round(s['run_ms'])) for s in p['spinning']]}", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
