"""ResNet50 Server near Offline throughput (issue 13) and the SingleStream path split (issue 14); on the GPU machine.

    python3 tools/device/server_matrix.py OUTDIR [--seconds 10] [--loads 0.85,0.92] [--deadline-s 520] [--quick]

Backends compared (all stage the 1024 samples on the GPU and pad batches to power-of-two buckets):
  plain      a session per batch size, no CUDA graphs (the plugin's CUDA default for Offline and Server)
  gshared    the same with CUDA graphs for every bucket: one graph session per size shared by the streams (the
             plugin's `cuda_graph_max_batch` path; its CaptureGate has not run on a GPU before this probe)
  gpriv      one graph-replaying backend per stream (a graph session per stream and size), one CaptureGate for all
First the ceilings (bare loops), then LoadGen Offline for each, then LoadGen Server at shares of the plain
Offline figure (LoadGen's, this run) for a matrix of batch size, streams and the batcher's gather wait, with the
per-batch timeline (gpu_path_probe.Timeline) and NVML samples. Last, the SingleStream split: where a batch-1 query's
time goes between LoadGen's issue and its completion, against the bare loop and a SUT that answers at once.
Everything lands in OUTDIR/matrix.json and OUTDIR/logs-and-smi.tgz (the device tool returns few files).
A deadline keeps the whole probe inside one device call: steps that would start after it are skipped and said so.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_path_probe import NullBackend, PrivateSessions, Timeline, bare_latency, lg_run, pct  # noqa: E402

from pytest_mlperf.contract.test_request import TestRequest  # noqa: E402
from pytest_mlperf.runner.calibrate import measure  # noqa: E402
from pytest_mlperf.runner.standins.resnet50 import ensure_resnet50  # noqa: E402
from pytest_mlperf.runner.backends.onnxruntime import CAPTURE_RUNS, CaptureGate, OrtClassifier  # noqa: E402
from pytest_mlperf.runner.strategies.batching import ScheduleConfig, server_buckets, shape_buckets  # noqa: E402
from pytest_mlperf.runner.workloads.resnet50 import SyntheticImages  # noqa: E402

NOW = time.perf_counter
# (backend, batch, streams, gather wait ms, buckets: "pow2" shape_buckets, "fine" server_buckets)
VARIANTS = {
    "first": [  # the first run (2026-12-02): what the plugin did, plain and graphed streams, power-of-two shapes
        ("plain", 32, 3, 1.5, "pow2"), ("plain", 32, 2, 0.0, "pow2"), ("plain", 16, 3, 0.0, "pow2"),
        ("gshared", 32, 2, 0.0, "pow2"), ("gpriv", 32, 1, 0.0, "pow2"), ("gpriv", 32, 2, 0.0, "pow2"),
        ("gpriv", 16, 2, 0.0, "pow2"), ("gpriv", 32, 2, 1.5, "pow2"), ("gpriv", 32, 3, 0.0, "pow2"),
    ],
    "fine": [  # the second: graphs on one or two streams with Server's finer shapes
        ("gshared", 32, 1, 0.0, "fine"), ("gshared", 32, 1, 0.0, "pow2"), ("gshared", 32, 2, 0.0, "fine"),
        ("gshared", 32, 1, 1.5, "fine"), ("plain", 32, 2, 0.0, "fine"),
    ],
}


def warm(backend: Any, staged: list[int], sizes: tuple[int, ...]) -> None:
    """Each size enough times that a graph session has captured and replayed before any test."""
    for size in sizes:
        rows = [staged[k % len(staged)] for k in range(size)]
        for _ in range(CAPTURE_RUNS + 2):
            backend.infer(rows)


class SplitTimeline(Timeline):
    """SingleStream: each query's callback entry and exit, to split LoadGen's own turnaround from ours."""

    def split(self) -> dict[str, Any]:
        cb = self.callback
        inside = [b - a for a, b in cb]
        turnaround = [cb[k + 1][0] - cb[k][1] for k in range(len(cb) - 1)]
        rows = sorted(self.batches, key=lambda r: r[5])
        infer = [r[6] - r[5] for r in rows]
        respond = [r[7] - r[6] for r in rows]
        before = [r[5] - r[3] for r in rows]
        q = {"p50": 50, "p90": 90, "p99": 99}
        ms = lambda xs: {k: pct(xs, v) * 1e3 for k, v in q.items()}  # noqa: E731
        return {"queries": len(cb), "callback_ms": ms(inside), "turnaround_ms": ms(turnaround),
                "infer_ms": ms(infer), "respond_ms": ms(respond), "before_infer_ms": ms(before)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--loads", default="0.85,0.92")
    ap.add_argument("--deadline-s", type=float, default=520.0)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a dry run on CPU")
    ap.add_argument("--set", default="fine", choices=sorted(VARIANTS))
    ap.add_argument("--skip", default="", help="comma list of parts to skip: offline,server,single")
    args = ap.parse_args()
    began = NOW()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    n = 64 if args.quick else 1024
    big = 4 if args.quick else 32
    graph_max = big if args.device == "cuda" else 0
    secs = args.seconds
    result: dict[str, Any] = {"skipped": [], "errors": []}

    def save() -> None:
        result["elapsed_s"] = NOW() - began
        (out / "matrix.json").write_text(json.dumps(result, indent=1, default=str))

    def step(name: str, fn: Callable[[], Any], need_s: float) -> Any:
        if NOW() - began + need_s > args.deadline_s:
            result["skipped"].append(name)
            print("skipped (deadline)", name, flush=True)
            return None
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - recorded, the probe goes on
            import traceback
            result["errors"].append({"step": name, "error": repr(exc), "traceback": traceback.format_exc()[-3000:]})
            print("ERROR", name, repr(exc), flush=True)
            return None
        finally:
            save()

    model = ensure_resnet50()
    dataset = SyntheticImages(n, 0)
    staged = list(range(n))
    samples = dataset.load(staged)
    buckets = shape_buckets(big)
    gate = CaptureGate()

    def make(graphs: int) -> OrtClassifier:
        b = OrtClassifier(model, args.device, {"cuda_graph_max_batch": graphs})
        b._gate = gate  # one gate for every graph session in this process: captures run alone on the GPU
        b.stage(staged, samples)
        warm(b, staged, buckets)
        return b

    t0 = NOW()
    plain = make(0)
    result["setup_s"] = {"plain": NOW() - t0}
    t0 = NOW()
    gshared = make(graph_max)
    result["setup_s"]["gshared"] = NOW() - t0
    result["backend"] = {"plain": plain.info.to_dict(), "gshared": gshared.info.to_dict()}
    backends: dict[str, Any] = {"plain": plain, "gshared": gshared}
    if any(v[0] == "gpriv" for v in VARIANTS[args.set]):
        t0 = NOW()
        backends["gpriv"] = PrivateSessions([make(graph_max) for _ in range(3)])
        result["setup_s"]["gpriv3"] = NOW() - t0
    bound = 15_000_000 if args.device == "cuda" else 1_000_000_000
    base = TestRequest(loadgen_model="resnet50", scenario="Offline", mode="performance", log_dir="",
                       total_sample_count=n, performance_sample_count=n, min_duration_ms=int(secs * 1000),
                       min_query_count=100)

    # ceilings: the bare loop as the plugin calibrates it (batch 32 on each thread)
    ceil = result.setdefault("ceiling", {})
    for name, streams in (("plain", 2), ("plain", 3), ("gshared", 1), ("gshared", 2), ("gpriv", 1), ("gpriv", 2)):
        if name not in backends:
            continue
        m = step(f"ceiling-{name}-s{streams}", lambda: measure(backends[name], staged, big, streams, 3.0), 5)
        if m is not None:
            ceil[f"{name}-s{streams}"] = m.to_dict()
            print("ceiling", name, streams, round(m.samples_per_s), flush=True)

    offline = result.setdefault("offline", {})
    if "offline" not in skip:
        for name, streams in (("plain", 3), ("gshared", 3), ("gshared", 1), ("gpriv", 2)):
            if name not in backends:
                continue
            expected = (ceil.get(f"{name}-s{streams}") or ceil.get("plain-s3") or {}).get("samples_per_s", 5000.0)
            test = replace(base, offline_expected_qps=expected * 1.1)
            cfg = ScheduleConfig("Offline", big, streams, 0.0, buckets)
            r = step(f"offline-{name}-s{streams}",
                     lambda: lg_run(out, f"offline-{name}-s{streams}", backends[name], dataset, test, cfg, warm=staged),
                     secs + 8)
            if r is not None:
                offline[f"{name}-s{streams}"] = {k: r[k] for k in ("validity", "metrics", "gpu", "timeline")}
    reference = (offline.get("plain-s3", {}).get("metrics", {}).get("result_samples_per_second")
                 or ceil.get("plain-s3", {}).get("samples_per_s", 5000.0))
    result["reference_offline_samples_per_s"] = reference

    variants = VARIANTS[args.set]
    server = result.setdefault("server", [])
    if "server" not in skip:
        for load in [float(x) for x in args.loads.split(",")]:
            for name, bs, streams, wait_ms, kind in variants:
                bs = min(bs, big)
                label = f"server-{name}-b{bs}s{streams}w{wait_ms:g}-{kind}-{load:g}"
                test = replace(base, scenario="Server", server_target_qps=load * reference,
                               server_target_latency_ns=bound)
                shapes = server_buckets(bs) if kind == "fine" else shape_buckets(bs)
                cfg = ScheduleConfig("Server", bs, streams, wait_ms / 1e3, shapes)
                r = step(label, lambda: lg_run(out, label, backends[name], dataset, test, cfg, warm=staged), secs + 8)
                if r is not None:
                    server.append({"backend": name, "batch": bs, "streams": streams, "wait_ms": wait_ms, "load": load,
                                   "buckets": kind, "target_qps": load * reference, **{k: r[k] for k in
                                   ("validity", "reasons", "p50_ms", "p90_ms", "p99_ms", "metrics", "gpu", "timeline")}})

    single = result.setdefault("single", {})
    if "single" not in skip:
        def bare_threads() -> dict[str, Any]:
            got: dict[str, Any] = {}
            for name in ("plain", "gshared"):
                got[f"{name}_b1_main"] = bare_latency(backends[name], staged, 1, 2.0)
                box: dict[str, Any] = {}
                t = threading.Thread(target=lambda: box.update(bare_latency(backends[name], staged, 1, 2.0)))
                t.start()
                t.join()
                got[f"{name}_b1_thread"] = box
                got[f"{name}_b1_gap50us"] = bare_latency(backends[name], staged, 1, 1.0, 50e-6)
                got[f"{name}_b8_main"] = bare_latency(backends[name], staged, 8, 2.0)
            return got
        single.update(step("single-bare", bare_threads, 20) or {})

        def steps_of_infer() -> dict[str, Any]:
            """One graphed batch-1 query, step by step, as OrtClassifier.infer does it."""
            g = gshared._session_for(1)
            if not hasattr(g, "rows"):
                return {"skipped": "no graph session (CPU)"}
            rows = gshared._rowmap[np.asarray([3], dtype=np.int64)]
            t = {"lookup": [], "h2d": [], "run": [], "d2h": [], "post": []}
            for _ in range(3000):
                a = NOW()
                r = gshared._rowmap[np.asarray([3], dtype=np.int64)]
                b = NOW()
                g.rows.update_inplace(rows)
                c = NOW()
                g.session.run_with_iobinding(g.binding)
                d = NOW()
                out_ = g.out.numpy()
                e = NOW()
                (out_.astype(np.int64) + 0).astype(np.int32).reshape(-1, 1)
                f = NOW()
                for k, (x, y) in zip(t, ((a, b), (b, c), (c, d), (d, e), (e, f))):
                    t[k].append(y - x)
                del r
            return {k: {"p50_us": pct(v, 50) * 1e6, "p90_us": pct(v, 90) * 1e6} for k, v in t.items()}
        single["infer_steps"] = step("single-steps", steps_of_infer, 10)

        ss = replace(base, scenario="SingleStream", single_stream_expected_latency_ns=1_000_000)
        ms = replace(base, scenario="MultiStream", multi_stream_samples_per_query=8, min_query_count=662,
                     multi_stream_expected_latency_ns=2_000_000)
        for name, b in (("null", NullBackend()), ("plain", plain), ("gshared", gshared)):
            def ss_run(name: str = name, b: Any = b) -> dict[str, Any]:
                test = (replace(ss, min_duration_ms=int(min(secs, 5) * 1000), single_stream_expected_latency_ns=10_000)
                        if name == "null" else ss)
                harness_out: dict[str, Any] = {}
                r = lg_run_split(out, f"ss-{name}", b, dataset, test, harness_out)
                r["split"] = harness_out
                return r
            r = step(f"ss-{name}", ss_run, secs + 5)
            if r is not None:
                single[f"ss_{name}"] = r
        r = step("ms-gshared", lambda: lg_run(out, "ms-gshared", gshared, dataset, ms,
                                              ScheduleConfig("MultiStream", 8)), secs + 5)
        if r is not None:
            single["ms_gshared"] = {k: r[k] for k in ("validity", "p50_ms", "p90_ms", "p99_ms", "metrics")}
        single.update({f"after_{k}": v for k, v in (step("single-bare-after", lambda: {
            "gshared_b1": bare_latency(gshared, staged, 1, 2.0),
            "gshared_b8": bare_latency(gshared, staged, 8, 2.0)}, 6) or {}).items()})
    save()
    subprocess.run(["tar", "czf", str(out / "logs-and-smi.tgz"), "-C", str(out), "logs", "smi"], check=False)
    subprocess.run(["rm", "-rf", str(out / "logs"), str(out / "smi")], check=False)
    print("done in", round(NOW() - began), "s", flush=True)


def lg_run_split(out: Path, name: str, backend: Any, dataset: SyntheticImages, test: TestRequest,
                 split: dict[str, Any]) -> dict[str, Any]:
    """lg_run for SingleStream with the per-query split kept."""
    import gpu_path_probe

    original = gpu_path_probe.Timeline
    made: list[SplitTimeline] = []

    class Keep(SplitTimeline):
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            made.append(self)

    gpu_path_probe.Timeline = Keep
    try:
        r = gpu_path_probe.lg_run(out, name, backend, dataset, test, ScheduleConfig("SingleStream", 1))
    finally:
        gpu_path_probe.Timeline = original
    if made:
        split.update(made[0].split())
    return r


if __name__ == "__main__":
    main()
