"""What moves the launch probe's latency from one half-second to the next (run on the GPU machine).

    python3 tools/device/launch_breakdown.py OUT.json [--seconds 30] [--window 0.5] [--kernels 8]

One thread loops over: the probe's op split in two, the `kernels` launches (torch add_ on a one-element tensor,
CPU-side work: Python, the dispatcher, cudaLaunchKernel) and the stream synchronisation (waiting for the GPU); and,
every 16 ops, a fixed piece of pure Python (a calibrated CPU yardstick that touches no GPU). Per window it records
the p50/p90 of the op, of its two parts and of the yardstick, the thread's CPU time over wall time, and the CPU the
thread last ran on. If the yardstick slows in the same windows as the launches, the slow states are the CPU's (the
vCPU's speed), not the GPU's or the driver's; if the synchronisation moves alone, it is the GPU side.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from thread_stats import _cpu_from_stat  # a sibling in tools/device: scripts here import each other


def last_cpu() -> int | None:
    """The CPU this thread last ran on: field 39 of /proc/thread-self/stat, read as thread_stats.py reads it."""
    return _cpu_from_stat(Path("/proc/thread-self/stat").read_text())


def correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson's r, or None where a column does not vary (a CPU-only run's synchronisation, say)."""
    if len(a) < 2 or float(np.std(a)) == 0 or float(np.std(b)) == 0:
        return None
    return round(float(np.corrcoef(a, b)[0, 1]), 3)


def yardstick() -> None:
    total = 0
    for i in range(400):
        total += i * i
    if total < 0:
        raise AssertionError


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--window", type=float, default=0.5)
    ap.add_argument("--kernels", type=int, default=8)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args(argv)
    import torch

    x = torch.zeros(1, dtype=torch.int64, device=args.device)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    for _ in range(2000):
        x.add_(1)
    sync()
    clock = time.perf_counter
    windows = []
    end = clock() + args.seconds
    while clock() < end:
        w_end = clock() + args.window
        ops, launches, syncs, yards = [], [], [], []
        cpu0, wall0 = time.thread_time(), clock()
        n = 0
        while clock() < w_end:
            t0 = clock()
            for _ in range(args.kernels):
                x.add_(1)
            t1 = clock()
            sync()
            t2 = clock()
            ops.append(t2 - t0)
            launches.append(t1 - t0)
            syncs.append(t2 - t1)
            n += 1
            if n % 16 == 0:
                y0 = clock()
                yardstick()
                yards.append(clock() - y0)
        cpu_share = (time.thread_time() - cpu0) / (clock() - wall0)

        def q(xs: list[float], p: float) -> float:
            return round(float(np.percentile(xs, p)) * 1e6, 2)

        windows.append({"ops": len(ops), "op_p50_us": q(ops, 50), "op_p90_us": q(ops, 90),
                        "launch_p50_us": q(launches, 50), "launch_p90_us": q(launches, 90),
                        "sync_p50_us": q(syncs, 50), "sync_p90_us": q(syncs, 90),
                        "yard_p50_us": q(yards, 50), "yard_p90_us": q(yards, 90),
                        "cpu_share": round(cpu_share, 3), "cpu": last_cpu()})
    keys = ("op_p90_us", "launch_p90_us", "sync_p90_us", "yard_p50_us", "cpu_share")
    cols = {k: np.array([w[k] for w in windows]) for k in keys}
    corr = {f"op_p90 vs {k}": correlation(cols["op_p90_us"], cols[k]) for k in keys[1:]}
    spread = {k: round(float(cols[k].max() / cols[k].min()), 3) for k in keys}
    result = {"kernels": args.kernels, "window_s": args.window, "windows": windows, "correlation": corr,
              "max_over_min": spread, "cpus_seen": sorted({w["cpu"] for w in windows if w["cpu"] is not None})}
    Path(args.out).write_text(json.dumps(result, indent=1))
    for w in windows:
        print(json.dumps(w))
    print("correlation:", json.dumps(corr))
    print("max/min over windows:", json.dumps(spread), "cpus:", result["cpus_seen"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
