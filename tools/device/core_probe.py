"""What moves a short SingleStream round's p90 (issue 14, goal 2); run on the GPU machine.

    python3 tools/device/core_probe.py OUTDIR [--rounds 24] [--round-ms 500] [--quick] [--device cuda]

The latency gate's rounds move by 15-20% in p90 while the model does not, and in A/A gates the two arms' rounds
are not correlated (each arm is its own runner process) but a level lasts a few rounds. So something per process
and lasting seconds: the CPU the issuing thread runs on, or the other arm's use of the GPU between rounds. Each
experiment is a series of rounds on the ResNet50 stand-in with CUDA graphs at batch 1 (the plugin's SingleStream
set-up), one process, recording per round: LoadGen's p50/p90, the time inside the issue callback (the model call
and the completion), LoadGen's own turnaround between callbacks, and the CPUs the callbacks ran on:

  bare        the bare batch-1 loop in rounds (no LoadGen), unpinned
  lg          LoadGen rounds, unpinned (the plugin as it runs today)
  percore     LoadGen rounds with the whole process pinned to one CPU, each CPU twice in shuffled order
  pinned      LoadGen rounds pinned to one fixed CPU
  partner     LoadGen rounds while a second process (its own CUDA context) runs the bare loop between rounds,
              as the other arm of a gate does; unpinned, then both pinned to two different CPUs
  pairs       two worker processes, each running LoadGen rounds in turn in ABBA order as a gate's two arms do,
              with the issuing thread unpinned, both on one CPU, or on two CPUs (the process's other threads kept
              off that CPU); per round the issuing thread's run-queue wait and preemptions, the other threads that
              ran, and the hypervisor's steal time
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_path_probe as gp
import thread_stats

from pytest_mlperf.contract.test_request import TestRequest
from pytest_mlperf.runner.loadgen import run_test
from pytest_mlperf.contract.loadgen_log import read_run
from pytest_mlperf.runner.calibrate import warm_up
from pytest_mlperf.runner.staging import Stager
from pytest_mlperf.runner.standins.resnet50 import ensure_resnet50
from pytest_mlperf.runner.backends.onnxruntime import OrtClassifier
from pytest_mlperf.runner.strategies.batching import ScheduleConfig
from pytest_mlperf.runner.workloads.resnet50 import SyntheticImages

NOW = time.perf_counter
_libc = ctypes.CDLL(None, use_errno=True)


def cpu_now() -> int:
    return int(_libc.sched_getcpu())


def pin_process(cpus: set[int] | None) -> None:
    """Every thread of this process onto `cpus` (None: every CPU this process may use at start)."""
    target = cpus if cpus is not None else ALL
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), target)
        except OSError:
            pass


ALL = set(os.sched_getaffinity(0))


class CpuTimeline(gp.Timeline):
    """The plugin's harness, recording each callback's start, end and CPU; `pin`: on its first callback the
    issuing thread moves to that CPU and every other thread of the process off it."""

    def __init__(self, *args: Any, pin: int = -1, **kwargs: Any) -> None:
        self.rows: list[tuple[float, float, int]] = []
        self.pin = pin
        self.tid = 0
        super().__init__(*args, **kwargs)

    def issue(self, samples: list[tuple[int, int]], responder: Any) -> None:
        if not self.tid:
            self.tid = threading.get_native_id()
            if self.pin >= 0:
                for t in os.listdir("/proc/self/task"):
                    try:
                        os.sched_setaffinity(int(t), {self.pin} if int(t) == self.tid else (ALL - {self.pin}) or ALL)
                    except OSError:
                        pass
        t0 = NOW()
        c = cpu_now()
        super().issue(samples, responder)
        self.rows.append((t0, NOW(), c))


def pct(xs: Sequence[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs), p)) if len(xs) else float("nan")


def steal() -> dict[int, int]:
    """Per-CPU steal time (the hypervisor ran something else on this vCPU's core), in jiffies."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            f = line.split()
            out[int(f[0][3:])] = int(f[8])
    return out


def lg_round(out: Path, name: str, backend: Any, dataset: Any, test: TestRequest, pin: int = -1) -> dict[str, Any]:
    test = replace(test, log_dir=str(out / "logs" / name))
    harness = CpuTimeline(backend, Stager(backend, dataset).stage, ScheduleConfig("SingleStream", 1), pin=pin)
    before, st0 = thread_stats.snapshot(), steal()
    try:
        run_test(test, harness)
    finally:
        harness.close()
    threads = thread_stats.delta(before, thread_stats.snapshot())
    st1 = steal()
    run = read_run(test.log_dir)
    rows = harness.rows
    inside = [b - a for a, b, _ in rows]
    turn = [rows[k + 1][0] - rows[k][1] for k in range(len(rows) - 1)]
    cpus: dict[int, int] = {}
    for *_, c in rows:
        cpus[c] = cpus.get(c, 0) + 1
    by_cpu = {}
    for c in cpus:
        xs = [b - a for a, b, cc in rows if cc == c]
        by_cpu[str(c)] = {"n": len(xs), "inside_p50_ms": pct(xs, 50) * 1e3, "inside_p90_ms": pct(xs, 90) * 1e3}
    return {"name": name, "validity": run.validity, "queries": len(rows),
            "p50_ms": (run.latency_ns.p50 or 0) / 1e6, "p90_ms": (run.latency_ns.p90 or 0) / 1e6,
            "inside_p50_ms": pct(inside, 50) * 1e3, "inside_p90_ms": pct(inside, 90) * 1e3,
            "turn_p50_us": pct(turn, 50) * 1e6, "turn_p90_us": pct(turn, 90) * 1e6,
            "cpus": {str(k): v for k, v in sorted(cpus.items())}, "by_cpu": by_cpu,
            "migrations": sum(1 for k in range(len(rows) - 1) if rows[k][2] != rows[k + 1][2]),
            "issuer": threads.get(harness.tid), "steal_total": sum(st1[c] - st0.get(c, 0) for c in st1),
            "steal_on": {str(c): st1[c] - st0.get(c, 0) for c in cpus},
            "others": sorted(({"tid": t, **d} for t, d in threads.items() if t != harness.tid and d["run_ms"] > 1),
                             key=lambda d: -float(d["run_ms"]))[:6]}  # type: ignore[arg-type]


def bare_round(backend: Any, rows: list[int], seconds: float) -> dict[str, Any]:
    lat, cpus = [], {}
    end = NOW() + seconds
    while NOW() < end:
        t0 = NOW()
        backend.infer(rows)
        lat.append(NOW() - t0)
        c = cpu_now()
        cpus[c] = cpus.get(c, 0) + 1
    return {"p50_ms": pct(lat, 50) * 1e3, "p90_ms": pct(lat, 90) * 1e3, "n": len(lat),
            "cpus": {str(k): v for k, v in sorted(cpus.items())}}


PARTNER = r"""
import sys, time, os
sys.path.insert(0, {root!r})
from pytest_mlperf.runner.standins.resnet50 import ensure_resnet50
from pytest_mlperf.runner.backends.onnxruntime import OrtClassifier
from pytest_mlperf.runner.workloads.resnet50 import SyntheticImages
from pytest_mlperf.runner.calibrate import warm_up
n = {n}
b = OrtClassifier(ensure_resnet50(), {device!r}, {{"cuda_graph_max_batch": 8}})
ds = SyntheticImages(n, 0); b.stage(list(range(n)), ds.load(list(range(n))))
warm_up(b, list(range(n)), (1, 8))
print("ready", flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "pin":
        os.sched_setaffinity(0, {{int(x) for x in cmd[1].split(",")}})
        print("ok", flush=True); continue
    end = time.perf_counter() + float(cmd[1])
    k = 0
    while time.perf_counter() < end:
        b.infer([k % n]); k += 1
    print("done", k, flush=True)
"""


class Partner:
    """A second process with its own CUDA context that runs the bare loop when asked, as a gate's other arm."""

    def __init__(self, n: int, device: str) -> None:
        code = PARTNER.format(root=str(Path(__file__).resolve().parents[2]), n=n, device=device)
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"partner did not start: {line!r}")

    def ask(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


def worker(out: Path, device: str, round_ms: int, n: int) -> None:
    """A gate arm: builds the backend, then runs one LoadGen round per `round NAME PIN` line on stdin."""
    backend = OrtClassifier(ensure_resnet50(), device, {"cuda_graph_max_batch": 8})
    dataset = SyntheticImages(n, 0)
    backend.stage(list(range(n)), dataset.load(list(range(n))))
    warm_up(backend, list(range(n)), (1, 8))
    test = TestRequest(loadgen_model="resnet50", scenario="SingleStream", mode="performance", log_dir="",
                       total_sample_count=n, performance_sample_count=n, min_duration_ms=round_ms,
                       min_query_count=100, single_stream_expected_latency_ns=1_000_000)
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        _, name, pin = line.split()
        print(json.dumps(lg_round(out, name, backend, dataset, test, int(pin)), default=str), flush=True)


class Arm:
    def __init__(self, out: Path, name: str, args: argparse.Namespace, n: int) -> None:
        self.name = name
        self.proc = subprocess.Popen([sys.executable, __file__, str(out / name), "--worker", "--device", args.device,
                                      "--round-ms", str(args.round_ms), *(["--quick"] if args.quick else [])],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.k = 0
        json.loads(self.readline())

    def readline(self) -> str:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"arm {self.name} ended")
            if line.startswith("{"):
                return line

    def round(self, pin: int) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.k += 1
        self.proc.stdin.write(f"round {self.name}{self.k} {pin}\n")
        self.proc.stdin.flush()
        return json.loads(self.readline())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


def pairs(out: Path, args: argparse.Namespace, n: int, result: dict[str, Any], save: Any) -> None:
    """A gate's two arms, A/A, in ABBA order, under each pinning of the issuing threads."""
    cpus = sorted(ALL)
    x, y = cpus[len(cpus) // 2], cpus[(len(cpus) // 2 + 3) % len(cpus)]
    conditions = [("none", -1, -1), ("same", x, x), ("two", x, y), ("same2", x, x), ("none2", -1, -1)]
    a, b = Arm(out, "A", args, n), Arm(out, "B", args, n)
    try:
        for cname, pa, pb in conditions:
            rows = []
            for i in range(args.rounds):
                first = (a, b) if i % 2 == 0 else (b, a)
                got = {arm.name: arm.round(pa if arm is a else pb) for arm in first}
                rows.append(got)
            ra = np.array([r["A"]["p90_ms"] for r in rows])
            rb = np.array([r["B"]["p90_ms"] for r in rows])
            x_ = np.log(rb / ra)
            summary = {"pins": [pa, pb], "A_spread": float(ra.max() / ra.min()), "B_spread": float(rb.max() / rb.min()),
                       "logratio_sd": float(x_.std(ddof=1)), "mean_logratio": float(x_.mean()),
                       "corr": float(np.corrcoef(ra, rb)[0, 1]),
                       "A": [round(v, 4) for v in ra], "B": [round(v, 4) for v in rb]}
            result.setdefault("pairs", {})[cname] = {"summary": summary, "rounds": rows}
            print("pairs", cname, json.dumps(summary), flush=True)
            save()
    finally:
        a.close()
        b.close()


def spread(rounds: list[dict[str, Any]], key: str = "p90_ms") -> dict[str, float]:
    xs = [r[key] for r in rounds]
    return {"min": min(xs), "max": max(xs), "ratio": max(xs) / min(xs), "cv": float(np.std(xs) / np.mean(xs))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--rounds", type=int, default=24)
    ap.add_argument("--round-ms", type=int, default=500)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a dry run on CPU")
    ap.add_argument("--only", default="bare,lg,percore,pinned,partner")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(","))
    n = 64 if args.quick else 1024
    if args.worker:
        return worker(out, args.device, args.round_ms, n)
    if only == {"pairs"}:
        result: dict[str, Any] = {"cpus": sorted(ALL)}
        save = lambda: (out / "core_probe.json").write_text(json.dumps(result, indent=1, default=str))
        pairs(out, args, n, result, save)
        subprocess.run(f"tar czf {out}/logs.tgz -C {out} A B && rm -rf {out}/A {out}/B", shell=True, check=False)
        return
    model = ensure_resnet50()
    dataset = SyntheticImages(n, 0)
    staged = list(range(n))
    backend = OrtClassifier(model, args.device, {"cuda_graph_max_batch": 8})
    backend.stage(staged, dataset.load(staged))
    warm_up(backend, staged, (1, 8))
    test = TestRequest(loadgen_model="resnet50", scenario="SingleStream", mode="performance", log_dir="",
                       total_sample_count=n, performance_sample_count=n, min_duration_ms=args.round_ms,
                       min_query_count=100, single_stream_expected_latency_ns=1_000_000)
    result = {"cpus": sorted(ALL), "backend": backend.info.to_dict()}
    save = lambda: (out / "core_probe.json").write_text(json.dumps(result, indent=1, default=str))
    cpus = sorted(ALL)

    def series(name: str, k: int, before: Any = None) -> list[dict[str, Any]]:
        rs = []
        for i in range(k):
            if before is not None:
                before(i)
            rs.append(lg_round(out, f"{name}{i}", backend, dataset, test))
        result[name] = {"spread": spread(rs), "inside_spread": spread(rs, "inside_p90_ms"), "rounds": rs}
        print(name, json.dumps(result[name]["spread"]), "inside", json.dumps(result[name]["inside_spread"]), flush=True)
        save()
        return rs

    if "bare" in only:
        rs = [bare_round(backend, [i % n], args.round_ms / 1e3) for i in range(args.rounds)]
        result["bare"] = {"spread": spread(rs), "rounds": rs}
        print("bare", json.dumps(result["bare"]["spread"]), flush=True)
        save()
    if "lg" in only:
        series("lg", args.rounds)
    if "percore" in only:
        order = cpus * 2
        random.Random(0).shuffle(order)
        rs = series("percore", len(order), lambda i: pin_process({order[i]}))
        pin_process(None)
        per: dict[str, list[float]] = {}
        for c, r in zip(order, rs):
            per.setdefault(str(c), []).append(r["p90_ms"])
        result["percore"]["by_cpu"] = per
        print("percore", json.dumps({c: [round(x, 3) for x in v] for c, v in sorted(per.items(), key=lambda kv: int(kv[0]))}))
        save()
    fixed = cpus[len(cpus) // 2]
    if "pinned" in only:
        pin_process({fixed})
        series("pinned", args.rounds)
        pin_process(None)
    if "partner" in only:
        partner = Partner(n, args.device)
        try:
            gap = args.round_ms / 1e3
            series("partner", args.rounds, lambda i: partner.ask(f"run {gap}"))
            other = cpus[(cpus.index(fixed) + 1) % len(cpus)]
            partner.ask(f"pin {other}")
            pin_process({fixed})
            series("partner_pinned", args.rounds, lambda i: partner.ask(f"run {gap}"))
            pin_process(None)
        finally:
            partner.close()
    save()
    subprocess.run(["tar", "czf", str(out / "logs.tgz"), "-C", str(out), "logs"], check=False)
    subprocess.run(["rm", "-rf", str(out / "logs")], check=False)


if __name__ == "__main__":
    main()
