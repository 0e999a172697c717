"""Where the slow states of a CPU-bound GPU op live: per CPU, per process, or the whole machine (issue 14, goal 3).

    python3 tools/device/vcpu_states.py OUT.json [--slices 150] [--slice-ms 50] [--device cuda] [--only same,diff]

The launch probe's rounds move by up to 1.9x, and pure Python code in the same windows slows with them (session 12),
while the two arms of a gate, each its own process, hardly correlate (sessions 11 and 14). This separates the
candidates without LoadGen: worker processes (each with its own CUDA context, as a gate's runners have) run slices
of two yardsticks on request: pure Python (`py`: a fixed loop) and the probe's op (`launch`: 8 in-place adds on a
one-element tensor, then a synchronisation). Conditions:

  same     two workers pinned to one CPU, taking slices in turn (ABBA), as a gate's two arms take rounds
  diff     the same on two different CPUs
  none     the same unpinned
  same2    `same` again with two new processes
  conc     four workers on four CPUs, slicing at the same time

If `same` correlates and `diff` does not, the state is the CPU's (pin both arms' issuing threads to one CPU); if
`same` does not correlate either, it is the process's (more processes per arm, not pinning); if `conc` correlates,
it is the machine's (pairing in time cancels it). Per slice it keeps each yardstick's p50 and p90 per iteration.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def py_unit() -> None:
    total = 0
    for i in range(200):
        total += i * i % 7


def worker(device: str, cpu: int) -> None:
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
    import torch

    libc = ctypes.CDLL(None)

    x = torch.zeros(1, dtype=torch.int64, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def launch() -> None:
        for _ in range(8):
            x.add_(1)
        sync()

    for fn in (py_unit, launch):
        for _ in range(200):
            fn()
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        ms = float(line.split()[1])
        reply: dict[str, Any] = {"cpu": libc.sched_getcpu(), "t": time.monotonic()}
        for name, fn in (("py", py_unit), ("launch", launch)):
            times = []
            end = time.perf_counter() + ms / 2000
            while True:
                t0 = time.perf_counter()
                fn()
                t1 = time.perf_counter()
                times.append(t1 - t0)
                if t1 >= end:
                    break
            a = np.array(times) * 1e6
            reply[name] = {"p50_us": float(np.percentile(a, 50)), "p90_us": float(np.percentile(a, 90)), "n": len(a)}
        print(json.dumps(reply), flush=True)


class Worker:
    def __init__(self, device: str, cpu: int) -> None:
        self.cpu = cpu
        self.proc = subprocess.Popen([sys.executable, __file__, "-", "--worker", str(cpu), "--device", device],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        json.loads(self.read())

    def read(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker on CPU {self.cpu} ended")
        return line

    def ask(self, ms: float) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"slice {ms}\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


def in_turn(workers: list[Worker], slices: int, ms: float) -> list[list[dict[str, Any]]]:
    """ABBA: pair k runs A then B when k is even, B then A when it is odd."""
    out: list[list[dict[str, Any]]] = [[] for _ in workers]
    for k in range(slices):
        order = range(len(workers)) if k % 2 == 0 else reversed(range(len(workers)))
        for i in order:
            workers[i].ask(ms)
            out[i].append(json.loads(workers[i].read()))
    return out


def together(workers: list[Worker], slices: int, ms: float) -> list[list[dict[str, Any]]]:
    out: list[list[dict[str, Any]]] = [[] for _ in workers]
    for _ in range(slices):
        for w in workers:
            w.ask(ms)
        for i, w in enumerate(workers):
            out[i].append(json.loads(w.read()))
    return out


def summary(series: list[list[dict[str, Any]]]) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for name in ("py", "launch"):
        logs = [np.log([s[name]["p90_us"] for s in w]) for w in series]
        a, b = logs[0], logs[1]
        ac1 = float(np.corrcoef(a[:-1], a[1:])[0, 1])
        res[name] = {"sd_log": [round(float(x.std()), 4) for x in logs],
                     "sd_log_ratio": round(float((b - a).std()), 4),
                     "corr_ab": round(float(np.corrcoef(a, b)[0, 1]), 3), "ac1_a": round(ac1, 3),
                     "p90_us_quantiles_a": [round(float(np.exp(q)), 2) for q in np.quantile(a, [0, .25, .5, .75, 1])]}
    py = np.log([s["py"]["p90_us"] for s in series[0]])
    ln = np.log([s["launch"]["p90_us"] for s in series[0]])
    res["corr_py_launch_a"] = round(float(np.corrcoef(py, ln)[0, 1]), 3)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--slices", type=int, default=150)
    ap.add_argument("--slice-ms", type=float, default=50)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--only", default="same,diff,none,same2,conc")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        worker(args.device, args.worker)
        return
    cpus = sorted(os.sched_getaffinity(0))
    x, y = cpus[len(cpus) // 2], cpus[(len(cpus) // 2 + 3) % len(cpus)]
    spread = [cpus[((len(cpus) * k) // 4 + 1) % len(cpus)] for k in range(4)]
    plans = {"same": ([x, x], in_turn), "diff": ([x, y], in_turn), "none": ([-1, -1], in_turn),
             "same2": ([x, x], in_turn), "conc": (spread, together)}
    result: dict[str, Any] = {"cpus": cpus, "slice_ms": args.slice_ms, "slices": args.slices}
    for name in args.only.split(","):
        pins, run = plans[name]
        t0 = time.monotonic()
        workers = [Worker(args.device, c) for c in pins]
        try:
            series = run(workers, args.slices, args.slice_ms)
        finally:
            for w in workers:
                w.close()
        result[name] = {"pins": pins, "seconds": round(time.monotonic() - t0, 1), "summary": summary(series),
                        "series": series}
        print(name, json.dumps(result[name]["summary"]), flush=True)
        Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
