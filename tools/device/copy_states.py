"""Where a copy probe's lasting offsets live: the process, its buffers, or time (issue 14, goal 3; GPU machine).

    python3 tools/device/copy_states.py OUT.json [--op h2d_pinned] [--pairs 8] [--slices 48] [--slice-ms 250]
                                        [--buffers 6] [--bytes 16777216] [--device cuda] [--pattern ones]

Session 16's live gates on the 16 MiB copies put one 7% candidate at +12.5% for its whole run (every round, every
estimator), while the others read 7-10%: an offset that lasted the candidate process's life. Rounds cannot cancel
an offset of one arm's process, so this finds where it sits, without LoadGen. Pairs of worker processes (each its
own CUDA context, as a gate's two runners) take slices in turn (ABBA); every worker holds `--buffers` pairs of
host and device buffers of `--bytes` bytes and slice k copies with buffer pair k mod B, so that per slice the
p90 of the copy's latency depends on the process, the buffer pair and the time. The summary splits the log p90's
variance into between processes (mean of a worker's slices), between buffer pairs within a process, and what is
left (slice to slice), and gives the A/A estimate each pair of processes would have given (mean log ratio) with
its spread over pairs against what slice noise alone explains. Per buffer the NUMA node of the host buffer's first
page (move_pages) and per slice the CPU are kept, for the question of what the offset follows.
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

SYS_MOVE_PAGES = 279  # x86_64


def page_node(address: int) -> int:
    """The NUMA node of the page at `address` in this process (move_pages with no target nodes); -1 if unknown."""
    libc = ctypes.CDLL(None, use_errno=True)
    pages = (ctypes.c_void_p * 1)(address & ~4095)
    status = (ctypes.c_int * 1)(-1)
    rc = libc.syscall(SYS_MOVE_PAGES, 0, 1, pages, None, status, 0)
    return int(status[0]) if rc == 0 else -1


def worker(op: str, nbytes: int, n_buffers: int, device: str, pattern: str) -> None:
    import torch

    libc = ctypes.CDLL(None)
    pinned = device == "cuda" and op.endswith("pinned")
    pairs = []
    for _ in range(n_buffers):
        host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned)
        if pattern == "random":  # as the torch-probe fills its source
            host.copy_(torch.randint(0, 256, (nbytes,), dtype=torch.uint8))
        else:
            host.fill_(1)
        gpu = torch.empty(nbytes, dtype=torch.uint8, device=device)
        src, dst = (host, gpu) if op.startswith("h2d") else (gpu, host)
        pairs.append((src, dst, page_node(host.data_ptr())))
    for src, dst, _ in pairs:
        for _ in range(20):
            dst.copy_(src)
    print(json.dumps({"ready": os.getpid(), "nodes": [p[2] for p in pairs]}), flush=True)
    for line in sys.stdin:
        _, ms, k = line.split()
        src, dst, _ = pairs[int(k) % len(pairs)]
        times = []
        end = time.perf_counter() + float(ms) / 1000
        while True:
            t0 = time.perf_counter()
            dst.copy_(src)
            t1 = time.perf_counter()
            times.append(t1 - t0)
            if t1 >= end:
                break
        a = np.array(times) * 1e6
        print(json.dumps({"cpu": libc.sched_getcpu(), "t": time.monotonic(), "buffer": int(k) % len(pairs),
                          "p50_us": float(np.percentile(a, 50)), "p90_us": float(np.percentile(a, 90)),
                          "n": len(a)}), flush=True)


class Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "-", "--worker", "--op", args.op, "--bytes", str(args.bytes),
             "--buffers", str(args.buffers), "--device", args.device, "--pattern", args.pattern],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.hello = json.loads(self.read())

    def read(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("worker ended")
        return line

    def slice(self, ms: float, k: int) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"slice {ms} {k}\n")
        self.proc.stdin.flush()
        return json.loads(self.read())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


def summary(pairs: list[list[list[dict[str, Any]]]], n_buffers: int) -> dict[str, Any]:
    """Variance components of log p90 over workers (processes), buffer pairs within a worker, and slices."""
    workers = [w for pair in pairs for w in pair]
    logs = [np.log([s["p90_us"] for s in w]) for w in workers]
    means = np.array([x.mean() for x in logs])
    buf_means = [np.array([x[[s["buffer"] == b for s in w]].mean() for b in range(n_buffers)])
                 for x, w in zip(logs, workers)]
    within_buf = np.concatenate([x - bm[[s["buffer"] for s in w]] for x, bm, w in zip(logs, buf_means, workers)])
    per_buf = np.concatenate([bm - bm.mean() for bm in buf_means])
    slices = len(logs[0])
    estimates = np.array([np.log([s["p90_us"] for s in b]).mean() - np.log([s["p90_us"] for s in a]).mean()
                          for a, b in pairs])
    ratios = [np.log([s["p90_us"] for s in b]) - np.log([s["p90_us"] for s in a]) for a, b in pairs]
    slice_sd = float(np.concatenate([r - r.mean() for r in ratios]).std(ddof=1))  # within pairs: offsets excluded
    return {
        "sd_process_mean": round(float(means.std(ddof=1)), 4),
        "sd_buffer_mean_within_process": round(float(per_buf.std(ddof=1)), 4),
        "sd_slice_within_buffer": round(float(within_buf.std(ddof=1)), 4),
        "expected_sd_process_mean_from_slices": round(float(within_buf.std(ddof=1) / np.sqrt(slices)), 4),
        "aa_estimates_pct": [round(float(np.expm1(e)) * 100, 2) for e in estimates],
        "sd_aa_estimate": round(float(estimates.std(ddof=1)), 4),
        "expected_sd_aa_estimate_from_slices": round(slice_sd / np.sqrt(slices), 4),
        "process_p90_us": [round(float(np.exp(m)), 1) for m in means],
        "nodes": [[w[0].get("nodes") for w in pair] for pair in pairs],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--op", default="h2d_pinned", choices=("h2d_pinned", "d2h_pinned", "h2d_pageable", "d2h_pageable"))
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--slices", type=int, default=48)
    ap.add_argument("--slice-ms", type=float, default=250)
    ap.add_argument("--buffers", type=int, default=6)
    ap.add_argument("--bytes", type=int, default=16 << 20)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--pattern", default="ones", choices=("ones", "random"), help="what the host buffers hold")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.op, args.bytes, args.buffers, args.device, args.pattern)
        return
    gpu_nodes = {}
    for dev in Path("/sys/bus/pci/devices").glob("*"):
        cls = (dev / "class").read_text().strip() if (dev / "class").exists() else ""
        if cls.startswith(("0x0302", "0x0300")):
            gpu_nodes[dev.name] = (dev / "numa_node").read_text().strip() if (dev / "numa_node").exists() else "?"
    result: dict[str, Any] = {"args": vars(args), "cpus": sorted(os.sched_getaffinity(0)), "gpu_numa": gpu_nodes,
                              "nodes_online": sorted(p.name for p in Path("/sys/devices/system/node").glob("node*")),
                              "pairs": []}
    all_pairs: list[list[list[dict[str, Any]]]] = []
    for p in range(args.pairs):
        t0 = time.monotonic()
        ws = [Worker(args), Worker(args)]
        series: list[list[dict[str, Any]]] = [[], []]
        try:
            for k in range(args.slices):
                for i in ((0, 1) if k % 2 == 0 else (1, 0)):
                    reply = ws[i].slice(args.slice_ms, k)
                    reply["nodes"] = ws[i].hello["nodes"]
                    series[i].append(reply)
        finally:
            for w in ws:
                w.close()
        all_pairs.append(series)
        result["pairs"].append({"seconds": round(time.monotonic() - t0, 1), "series": series})
        result["summary"] = summary(all_pairs, args.buffers) if len(all_pairs) >= 2 else None
        print(p, json.dumps(result["summary"]), flush=True)
        Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
