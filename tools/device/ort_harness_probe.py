"""Harness cost of the ONNX Runtime ResNet50 SUT, measured in one process (run on the GPU machine).

    python3 tools/device/ort_harness_probe.py OUT.json [--seconds 10]

1. whether ORT's run_with_iobinding releases the GIL (a Python counter thread's rate during inference);
2. bare-loop throughput and latency over batch sizes and streams;
3. Offline: LoadGen samples/s over the bare loop measured just before and just after (same batch, streams, duration);
4. SingleStream: LoadGen p50 over the bare batch-1 p50, bracketed the same way;
5. Server: LoadGen at a fixed fraction of the bare throughput for a few batcher settings (validity, p99).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from pytest_mlperf.contract.test_request import TestRequest
from pytest_mlperf.runner.loadgen import run_test
from pytest_mlperf.contract.loadgen_log import read_run
from pytest_mlperf.runner.calibrate import measure, warm_up
from pytest_mlperf.runner.staging import Stager
from pytest_mlperf.runner.standins.resnet50 import ensure_resnet50
from pytest_mlperf.runner.backends.onnxruntime import OrtClassifier
from pytest_mlperf.runner.strategies.batching import BatchingHarness, ScheduleConfig, shape_buckets
from pytest_mlperf.runner.workloads.resnet50 import SyntheticImages


def gil_probe(backend: OrtClassifier, rows: list[int], seconds: float = 2.0) -> dict[str, float]:
    count = [0]
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            count[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    time.sleep(seconds / 2)
    idle = count[0]
    count[0] = 0
    end = time.perf_counter() + seconds / 2
    while time.perf_counter() < end:
        backend.infer(rows)
    busy = count[0]
    stop.set()
    t.join()
    return {"spin_rate_idle": idle / (seconds / 2), "spin_rate_during_inference": busy / (seconds / 2)}


class TimedHarness(BatchingHarness):
    """Timestamps where a sample's time goes: issue callback, queue wait, gathering, batch run (inference +
    completion), and a per-batch timeline (stream, start, end, size, queue depth) to find idle gaps."""

    def __init__(self, *args, **kwargs) -> None:
        self.enqueued: dict[int, float] = {}
        self.batches: list[tuple[int, float, float]] = []
        self.timeline: list[tuple[str, float, float, int, int, float]] = []
        self.issue_at: list[float] = []
        self.issue_s: list[float] = []
        self._gathered = threading.local()
        super().__init__(*args, **kwargs)

    def issue(self, samples, responder) -> None:
        t0 = time.perf_counter()
        for i, _ in samples:
            self.enqueued[i] = t0
        super().issue(samples, responder)
        self.issue_at.append(t0)
        self.issue_s.append(time.perf_counter() - t0)

    def _gather(self, batch, size, max_wait):
        t0 = time.perf_counter()
        stop = super()._gather(batch, size, max_wait)
        self._gathered.seconds = time.perf_counter() - t0
        return stop

    def _run_batch(self, batch) -> None:
        t0 = time.perf_counter()
        depth = self._queue.qsize()
        wait = max(t0 - self.enqueued.get(i, t0) for i, _ in batch)
        super()._run_batch(batch)
        t1 = time.perf_counter()
        self.batches.append((len(batch), wait, t1 - t0))
        self.timeline.append((threading.current_thread().name, t0, t1, len(batch), depth,
                              getattr(self._gathered, "seconds", 0.0)))

    def breakdown(self) -> dict[str, float]:
        if not self.batches:
            return {}
        q = lambda xs, p: float(np.percentile(xs, p) * 1e3)  # noqa: E731
        sizes = [b[0] for b in self.batches]
        waits = [b[1] for b in self.batches]
        runs = [b[2] for b in self.batches]
        out = {"batches": len(sizes), "batch_mean": float(np.mean(sizes)), "wait_p50_ms": q(waits, 50),
               "wait_p99_ms": q(waits, 99), "run_p50_ms": q(runs, 50), "run_p99_ms": q(runs, 99),
               "issue_p50_ms": q(self.issue_s, 50), "issue_p99_ms": q(self.issue_s, 99)}
        if self.timeline:
            t0 = min(t[1] for t in self.timeline)
            t1 = max(t[2] for t in self.timeline)
            by_stream: dict[str, list] = {}
            for row in self.timeline:
                by_stream.setdefault(row[0], []).append(row)
            gaps = []
            for rows in by_stream.values():
                rows.sort(key=lambda r: r[1])
                out[f"busy_{rows[0][0]}"] = sum(r[2] - r[1] for r in rows) / (t1 - t0)
                gaps += [b[1] - a[2] for a, b in zip(rows, rows[1:])]
            out["gap_p50_ms"] = q(gaps, 50) if gaps else 0.0
            out["gap_p99_ms"] = q(gaps, 99) if gaps else 0.0
            out["gather_p50_ms"] = q([r[5] for r in self.timeline], 50)
            out["gather_p99_ms"] = q([r[5] for r in self.timeline], 99)
            out["depth_at_start_p50"] = float(np.percentile([r[4] for r in self.timeline], 50))
            inter = np.diff(sorted(self.issue_at))
            out["issue_gap_p50_ms"] = float(np.percentile(inter, 50) * 1e3) if len(inter) else 0.0
            out["issue_gap_max_ms"] = float(inter.max() * 1e3) if len(inter) else 0.0
            span = max(self.issue_at) - min(self.issue_at)
            out["issue_rate_per_s"] = len(self.issue_at) / span if span > 0 else 0.0
        return out


def loadgen_run(backend, dataset, test: TestRequest, cfg: ScheduleConfig, warm: list[int] | None = None) -> dict:
    harness = TimedHarness(backend, Stager(backend, dataset).stage, cfg, warm_indices=warm or ())
    try:
        run_test(test, harness)
    finally:
        harness.close()
    run = read_run(test.log_dir)
    return {"validity": run.validity, "reasons": list(run.invalid_reasons), "metrics": run.metrics,
            "p50_ns": run.latency_ns.p50, "p99_ns": run.latency_ns.p99, "schedule": cfg.__dict__,
            "breakdown": harness.breakdown()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="a dry run of every step with small sizes (CPU)")
    ap.add_argument("--skip-table", action="store_true", help="skip the GIL probe and the batch x streams table")
    ap.add_argument("--server-only", action="store_true", help="only the Server runs")
    args = ap.parse_args()
    sizes = ((1, 4), (1, 2)) if args.quick else ((1, 4, 8, 16, 32, 64), (1, 2, 3))
    big = 4 if args.quick else 32
    secs = args.seconds
    result: dict = {}
    backend = OrtClassifier(ensure_resnet50(), args.device, {})
    dataset = SyntheticImages(len(range(64 if args.quick else 1024)), 0)
    staged = list(range(64 if args.quick else 1024))
    backend.stage(staged, dataset.load(staged))
    result["backend"] = backend.info.to_dict()
    warm_up(backend, staged, shape_buckets(64))
    buckets = shape_buckets(big)
    if not args.skip_table:
        result["gil"] = gil_probe(backend, staged[:32])
        result["bare"] = [measure(backend, staged, bs, s, 1.5).to_dict() for bs in sizes[0] for s in sizes[1]]
    logs = Path(tempfile.mkdtemp())
    base = TestRequest(loadgen_model="resnet50", scenario="Offline", mode="performance", log_dir="",
                       total_sample_count=1024, performance_sample_count=1024, min_duration_ms=int(secs * 1000),
                       min_query_count=100)

    for streams in ([] if args.server_only else sizes[1][1:]):
        before = measure(backend, staged, big, streams, secs)
        test = replace(base, log_dir=str(logs / f"offline{streams}"), offline_expected_qps=before.samples_per_s)
        lg = loadgen_run(backend, dataset, test, ScheduleConfig("Offline", big, streams, 0.0, buckets), warm=staged)
        after = measure(backend, staged, big, streams, secs)
        bare = (before.samples_per_s + after.samples_per_s) / 2
        lg["bare_before"], lg["bare_after"] = before.samples_per_s, after.samples_per_s
        lg["efficiency"] = lg["metrics"]["result_samples_per_second"] / bare
        result[f"offline_streams{streams}"] = lg

    if not args.server_only:
        before = measure(backend, staged, 1, 1, secs / 2)
        test = replace(base, scenario="SingleStream", log_dir=str(logs / "ss"),
                       single_stream_expected_latency_ns=int(before.batch_latency_p50_s * 1e9))
        lg = loadgen_run(backend, dataset, test, ScheduleConfig("SingleStream", 1))
        after = measure(backend, staged, 1, 1, secs / 2)
        bare_p50 = (before.batch_latency_p50_s + after.batch_latency_p50_s) / 2
        lg["bare_p50_s"] = [before.batch_latency_p50_s, after.batch_latency_p50_s]
        lg["p50_overhead"] = lg["p50_ns"] / 1e9 / bare_p50 - 1
        result["singlestream"] = lg

    peak = measure(backend, staged, big, 2, 2.0).samples_per_s
    result["server"] = []
    # (load fraction, streams, max wait ms, batch, switch interval, garbage collector during the test)
    settings = ((0.5, 2, 1.5, big, 0.005, "default"),)
    spinning = OrtClassifier(ensure_resnet50(), args.device, {"intra_op_threads": 0, "allow_spinning": True})
    spinning.stage(staged, dataset.load(staged))
    warm_up(spinning, staged, buckets)
    variants = [(backend, "1 thread, no spinning"), (spinning, "ORT default threads, spinning")]
    result["server_variants"] = [name for _, name in variants]
    for (sut, variant), (fraction, streams, wait_ms, bs, switch, collector) in (
            [(v, settings[0]) for v in variants] + [(variants[0], (0.7, 2, 1.5, big, 0.005, "default"))]):
        sys.setswitchinterval(switch)
        gc.collect()
        if collector == "freeze":
            gc.freeze()
        elif collector == "disable":
            gc.disable()
        test = replace(base, scenario="Server", log_dir=str(logs / f"server{len(result['server'])}"),
                       server_target_qps=fraction * peak,
                       server_target_latency_ns=15_000_000 if args.device == "cuda" else 1_000_000_000)
        lg = loadgen_run(sut, dataset, test, ScheduleConfig("Server", bs, streams, wait_ms / 1000, buckets),
                         warm=staged)
        lg["target_qps"] = fraction * peak
        lg["switch_interval_s"] = switch
        lg["gc"] = collector
        lg["variant"] = variant
        gc.unfreeze()
        gc.enable()
        result["server"].append(lg)
        print(json.dumps({k: lg[k] for k in ("validity", "p50_ns", "p99_ns", "target_qps", "variant", "breakdown")}),
              flush=True)
    sys.setswitchinterval(0.005)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    for k in ("offline_streams2", "offline_streams3"):
        o = result.get(k)
        if o:
            print(k, o["validity"], o["metrics"]["result_samples_per_second"], o["bare_before"], o["bare_after"],
                  f"efficiency {o['efficiency']:.4f}")
    ss = result.get("singlestream")
    if ss:
        print("singlestream p50", ss["p50_ns"], "bare", ss["bare_p50_s"], f"overhead {ss['p50_overhead']:+.4f}")
    for m in result.get("bare", []):
        print(m)


if __name__ == "__main__":
    main()
