"""Issue 5's verdicts from tools/device/multi_gpu.sh: the same cases run with -n 1 (serial) and -n auto (parallel).

    python tools/device/multi_gpu_summary.py --serial results-serial.json --parallel results-auto.json \
        --walls walls --apps apps-auto.csv

- speed-up: serial wall time over parallel wall time; target >= 0.9 x the number of GPUs the parallel run used;
- interference: each case's Offline throughput in the parallel run against its serial run; target within 2%;
- placement: nvidia-smi's compute processes (sampled during the parallel run) per GPU against the runner pid and
  GPU each case recorded; target: every runner seen on its own GPU and on no other, one runner per GPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

HEADLINE = "result_samples_per_second"


@dataclass(frozen=True)
class CaseChange:
    nodeid: str
    serial: float
    parallel: float
    gpus: tuple[str, ...]

    @property
    def change(self) -> float:
        return self.parallel / self.serial - 1


def read_walls(lines: Iterable[str]) -> dict[str, float]:
    """'NAME SECONDS' lines (as multi_gpu.sh writes them) -> {NAME: seconds}."""
    walls = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 2:
            walls[parts[0]] = float(parts[1])
    return walls


def read_apps(lines: Iterable[str]) -> dict[str, set[int]]:
    """nvidia-smi --query-compute-apps=timestamp,pid,gpu_uuid,used_memory csv rows -> {gpu uuid: pids seen}."""
    seen: dict[str, set[int]] = defaultdict(set)
    for row in csv.reader(lines):
        if len(row) < 3:
            continue
        try:
            pid = int(row[1].strip())
        except ValueError:
            continue  # a header or "No running processes found"
        seen[row[2].strip()].add(pid)
    return dict(seen)


def case_changes(serial: list[dict[str, Any]], parallel: list[dict[str, Any]]) -> list[CaseChange]:
    by_id = {r["nodeid"]: r for r in serial}
    out = []
    for r in parallel:
        s = by_id.get(r["nodeid"])
        if s is None or HEADLINE not in s.get("metrics", {}) or HEADLINE not in r.get("metrics", {}):
            continue
        gpus = tuple(g["uuid"] for g in r.get("gpus") or [])
        out.append(CaseChange(r["nodeid"], float(s["metrics"][HEADLINE]), float(r["metrics"][HEADLINE]), gpus))
    return sorted(out, key=lambda c: c.nodeid)


def placement_problems(parallel: list[dict[str, Any]], apps: dict[str, set[int]]) -> list[str]:
    """What NVML saw that contradicts one runner per GPU, each on the GPU its case recorded; [] when all agree."""
    problems = []
    runners_on: dict[str, set[int]] = defaultdict(set)
    for r in parallel:
        pid, gpus = r.get("runner_pid"), [g["uuid"] for g in r.get("gpus") or []]
        if pid is None or not gpus:
            problems.append(f"{r['nodeid']}: no runner pid or GPU recorded")
            continue
        for uuid in gpus:
            runners_on[uuid].add(pid)
            if pid not in apps.get(uuid, set()):
                problems.append(f"{r['nodeid']}: NVML never saw runner {pid} on its GPU {uuid}")
        elsewhere = sorted(u for u, pids in apps.items() if pid in pids and u not in gpus)
        if elsewhere:
            problems.append(f"{r['nodeid']}: runner {pid} also seen on {', '.join(elsewhere)}")
    for uuid, pids in sorted(runners_on.items()):
        if len(pids) > 1:
            problems.append(f"GPU {uuid} had {len(pids)} runners ({', '.join(map(str, sorted(pids)))})")
    return problems


def report(serial: list[dict[str, Any]], parallel: list[dict[str, Any]], walls: dict[str, float],
           apps: dict[str, set[int]] | None) -> tuple[str, bool]:
    """Markdown and whether every target is met."""
    changes = case_changes(serial, parallel)
    n_gpus = len({u for c in changes for u in c.gpus})
    speedup = walls["serial"] / walls["auto"]
    ok_speed = speedup >= 0.9 * n_gpus
    ok_cases = bool(changes) and all(abs(c.change) <= 0.02 for c in changes)
    lines = [
        f"speed-up: {walls['serial']:.1f} s with -n 1, {walls['auto']:.1f} s with -n auto on {n_gpus} GPUs: "
        f"{speedup:.2f}x (target >= {0.9 * n_gpus:.2f}x): {'met' if ok_speed else 'NOT met'}",
        "",
        "| case | -n 1 samples/s | -n auto samples/s | change | GPU (-n auto) |",
        "|---|---|---|---|---|",
        *(f"| {c.nodeid.split('::')[-1]} | {c.serial:,.1f} | {c.parallel:,.1f} | {100 * c.change:+.2f}% | "
          f"{', '.join(c.gpus)} |" for c in changes),
        "",
        f"per-case throughput within 2% of -n 1: {'met' if ok_cases else 'NOT met'}",
    ]
    ok_place = True
    if apps is not None:
        problems = placement_problems(parallel, apps)
        ok_place = not problems
        lines.append("NVML placement: " + ("every runner seen on its own GPU only" if ok_place else "; ".join(problems)))
    return "\n".join(lines), ok_speed and ok_cases and ok_place


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--serial", type=Path, required=True)
    ap.add_argument("--parallel", type=Path, required=True)
    ap.add_argument("--walls", type=Path, required=True)
    ap.add_argument("--apps", type=Path, default=None)
    args = ap.parse_args(argv)
    serial = json.loads(args.serial.read_text())["cases"]
    parallel = json.loads(args.parallel.read_text())["cases"]
    walls = read_walls(args.walls.read_text().splitlines())
    apps = read_apps(args.apps.read_text().splitlines()) if args.apps else None
    text, ok = report(serial, parallel, walls, apps)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
