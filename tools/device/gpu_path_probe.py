"""Where the ResNet50 GPU path spends its time under LoadGen (issues 13 and 14); run on the GPU machine.

    python3 tools/device/gpu_path_probe.py OUTDIR [--seconds 10] [--quick] [--only server,single,rounds]

Server (issue 13): LoadGen Server at a fixed share of the bare peak, with a per-sample timeline (issue callback,
batch start, backend call start/end, completion sent) for several harness/back-end settings:
  shared   the plugin's harness as it is (2 streams on one ORT session, power-of-two buckets)
  one      1 stream
  fixed    2 streams, every batch padded to the largest bucket (one shape only)
  private  2 streams, each on its own ORT session (own CUDA stream, arena, kernel state)
SingleStream/MultiStream (issue 14): the bare batch-1/batch-8 loop against LoadGen, the time inside the issue
callback, LoadGen's own floor (a SUT that answers at once), and ORT CUDA graphs (`enable_cuda_graph`).
Rounds (issue 14): SingleStream rounds back to back (--rounds, --round-ms), to see how a round's p90 moves, each
with every thread's scheduler statistics over the round (thread_stats.py: CPU time, run-queue wait, context
switches, the CPU it last ran on), named by Python where Python knows the thread.
NVML clocks/utilisation are sampled by nvidia-smi in another process during every run (OUTDIR/smi-*.csv).
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
from typing import Any, Sequence

import numpy as np

from pytest_mlperf.contract.test_request import TestRequest
from pytest_mlperf.runner.loadgen import run_test
from pytest_mlperf.contract.loadgen_log import read_run
from pytest_mlperf.runner.calibrate import measure, warm_up
from pytest_mlperf.runner.staging import Stager
from pytest_mlperf.runner.standins.resnet50 import ensure_resnet50
from pytest_mlperf.runner.backends import onnxruntime as ortsut
from pytest_mlperf.runner.backends.onnxruntime import OrtClassifier
from pytest_mlperf.runner.strategies.batching import BatchingHarness, ScheduleConfig, pad_to_bucket, shape_buckets
from pytest_mlperf.runner.workloads.resnet50 import SyntheticImages

sys.path.insert(0, str(Path(__file__).resolve().parent))
import thread_stats  # noqa: E402

NOW = time.perf_counter


def pct(xs: Sequence[float], p: float) -> float:
    return float(np.percentile(np.asarray(xs), p)) if len(xs) else float("nan")


class PrivateSessions:
    """One backend per calling thread (a thread takes the next free one on its first call)."""

    def __init__(self, backends: list[OrtClassifier]) -> None:
        self.backends = backends
        self.info = backends[0].info
        self._local = threading.local()
        self._next = 0
        self._lock = threading.Lock()

    def stage(self, indices: Sequence[int], samples: np.ndarray) -> None:
        for b in self.backends:
            b.stage(indices, samples)

    def infer(self, indices: Sequence[int]) -> np.ndarray:
        b = getattr(self._local, "b", None)
        if b is None:
            with self._lock:
                b = self.backends[self._next % len(self.backends)]
                self._next += 1
            self._local.b = b
        return b.infer(indices)

    def close(self) -> None:
        for b in self.backends:
            b.close()


class Timeline(BatchingHarness):
    """The plugin's harness, time-stamping each sample's issue and each batch's steps."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.issued: dict[int, float] = {}
        self.batches: list[tuple[str, int, int, float, float, float, float, float]] = []
        self.callback: list[tuple[float, float]] = []
        super().__init__(*args, **kwargs)

    def issue(self, samples: list[tuple[int, int]], responder: Any) -> None:
        t0 = NOW()
        for i, _ in samples:
            self.issued[i] = t0
        super().issue(samples, responder)
        self.callback.append((t0, NOW()))

    def _run_batch(self, batch: Sequence[tuple[int, int]]) -> None:
        ids = [i for i, _ in batch]
        indices = [idx for _, idx in batch]
        if self.config.buckets:
            indices = pad_to_bucket(indices, self.config.buckets)
        t0 = NOW()
        outputs = self.backend.infer(indices)[: len(ids)]
        t1 = NOW()
        self._responder.complete(ids, outputs)
        t2 = NOW()
        first = min(self.issued.get(i, t0) for i in ids)
        last = max(self.issued.get(i, t0) for i in ids)
        self.batches.append((threading.current_thread().name, len(ids), len(indices), first, last, t0, t1, t2))

    def summary(self) -> dict[str, Any]:
        if not self.batches:
            cb = [b - a for a, b in self.callback]
            return {"callback_p50_ms": pct(cb, 50) * 1e3, "callback_p90_ms": pct(cb, 90) * 1e3,
                    "callback_p99_ms": pct(cb, 99) * 1e3}
        rows = sorted(self.batches, key=lambda r: r[5])
        infer = [r[6] - r[5] for r in rows]
        wait = [r[5] - r[3] for r in rows]
        respond = [r[7] - r[6] for r in rows]
        sample_lat = [r[7] - r[3] for r in rows]  # the oldest sample of each batch: issue -> completion sent
        slow = [r for r, d in zip(rows, infer) if d > 3 * pct(infer, 50)]
        by_size: dict[int, list[float]] = {}
        for r, d in zip(rows, infer):
            by_size.setdefault(r[2], []).append(d)
        # what precedes a slow batch: a size change on the same thread, another batch running at the same time
        prev_on_thread: dict[str, tuple] = {}
        slow_after_change = slow_concurrent = 0
        running: list[tuple[float, float]] = [(r[5], r[6]) for r in rows]
        for r in rows:
            p = prev_on_thread.get(r[0])
            is_slow = (r[6] - r[5]) > 3 * pct(infer, 50)
            if is_slow and p is not None and p[2] != r[2]:
                slow_after_change += 1
            if is_slow and any(a < r[5] < b or a < r[6] < b for a, b in running if (a, b) != (r[5], r[6])):
                slow_concurrent += 1
            prev_on_thread[r[0]] = r
        cb = [b - a for a, b in self.callback]
        gaps = np.diff([a for a, _ in self.callback]) if self.callback else np.zeros(0)
        return {
            "batches": len(rows), "batch_mean": float(np.mean([r[1] for r in rows])),
            "infer_ms": {"p50": pct(infer, 50) * 1e3, "p90": pct(infer, 90) * 1e3, "p99": pct(infer, 99) * 1e3,
                         "max": max(infer) * 1e3},
            "infer_p50_ms_by_shape": {str(k): pct(v, 50) * 1e3 for k, v in sorted(by_size.items())},
            "infer_p99_ms_by_shape": {str(k): pct(v, 99) * 1e3 for k, v in sorted(by_size.items())},
            "count_by_shape": {str(k): len(v) for k, v in sorted(by_size.items())},
            "queue_wait_ms": {"p50": pct(wait, 50) * 1e3, "p99": pct(wait, 99) * 1e3, "max": max(wait) * 1e3},
            "respond_ms": {"p50": pct(respond, 50) * 1e3, "p99": pct(respond, 99) * 1e3, "max": max(respond) * 1e3},
            "oldest_sample_ms": {"p50": pct(sample_lat, 50) * 1e3, "p99": pct(sample_lat, 99) * 1e3},
            "slow_batches": len(slow), "slow_after_shape_change": slow_after_change,
            "slow_while_another_runs": slow_concurrent,
            "callback_us": {"p50": pct(cb, 50) * 1e6, "p99": pct(cb, 99) * 1e6},
            "issue_gap_max_ms": float(gaps.max() * 1e3) if len(gaps) else 0.0,
            "slowest": [{"thread": r[0], "size": r[1], "shape": r[2], "at_s": r[5] - rows[0][5],
                         "infer_ms": (r[6] - r[5]) * 1e3} for r in sorted(rows, key=lambda r: r[5] - r[6])[:12]],
        }


class Smi:
    """nvidia-smi sampling clocks/utilisation into a CSV while a run lasts (nothing where there is none)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Smi:
        try:
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=timestamp,clocks.sm,clocks.mem,utilization.gpu,power.draw,pstate",
                 "--format=csv,noheader", "-lms", "50"], stdout=self.path.open("wb"), stderr=subprocess.DEVNULL)
        except OSError:
            self.proc = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)

    def summary(self) -> dict[str, Any]:
        clocks, utils = [], []
        for line in self.path.read_text().splitlines() if self.path.exists() else []:
            parts = [p.strip() for p in line.split(",")]
            try:
                clocks.append(float(parts[1].split()[0]))
                utils.append(float(parts[3].split()[0]))
            except (IndexError, ValueError):
                continue
        if not clocks:
            return {}
        return {"sm_mhz_min": min(clocks), "sm_mhz_p50": pct(clocks, 50), "util_p50": pct(utils, 50),
                "samples": len(clocks)}


def lg_run(out: Path, name: str, backend: Any, dataset: SyntheticImages, test: TestRequest, cfg: ScheduleConfig,
           warm: Sequence[int] = ()) -> dict[str, Any]:
    test = replace(test, log_dir=str(out / "logs" / name))
    harness = Timeline(backend, Stager(backend, dataset).stage, cfg, warm_indices=warm)
    (out / "smi").mkdir(exist_ok=True)
    smi = Smi(out / "smi" / f"{name}.csv")
    try:
        with smi:
            run_test(test, harness)
    finally:
        harness.close()
    run = read_run(test.log_dir)
    result = {"name": name, "validity": run.validity, "reasons": list(run.invalid_reasons),
              "p50_ms": (run.latency_ns.p50 or 0) / 1e6, "p90_ms": (run.latency_ns.p90 or 0) / 1e6,
              "p99_ms": (run.latency_ns.p99 or 0) / 1e6, "metrics": run.metrics, "gpu": smi.summary(),
              "timeline": harness.summary()}
    print(json.dumps({k: result[k] for k in ("name", "validity", "p50_ms", "p90_ms", "p99_ms")}), flush=True)
    return result


def bare_latency(backend: Any, staged: list[int], batch: int, seconds: float, gap_s: float = 0.0) -> dict[str, float]:
    rows = [staged[k % len(staged)] for k in range(batch)]
    for _ in range(20):
        backend.infer(rows)
    lat = []
    end = NOW() + seconds
    while NOW() < end:
        t0 = NOW()
        backend.infer(rows)
        lat.append(NOW() - t0)
        if gap_s:
            time.sleep(gap_s)
    return {"p50_ms": pct(lat, 50) * 1e3, "p90_ms": pct(lat, 90) * 1e3, "p99_ms": pct(lat, 99) * 1e3, "n": len(lat)}


class NullBackend:
    info = ortsut.BackendInfo(backend="null", device="cpu", precision="fp32")
    _answer = np.zeros((64, 1), dtype=np.int32)

    def stage(self, indices: Sequence[int], samples: np.ndarray) -> None: ...

    def infer(self, indices: Sequence[int]) -> np.ndarray:
        return self._answer[: len(indices)]

    def close(self) -> None: ...


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a dry run on CPU")
    ap.add_argument("--only", default="server2,single,rounds", help="server (the first run's variants), server2, "
                    "single, rounds")
    ap.add_argument("--load", default="0.5,0.85")
    ap.add_argument("--rounds", type=int, default=10, help="SingleStream rounds per backend (--only rounds)")
    ap.add_argument("--round-ms", type=int, default=1000, help="each round's min duration")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(","))
    n = 64 if args.quick else 1024
    big = 4 if args.quick else 32
    secs = args.seconds
    model = ensure_resnet50()
    dataset = SyntheticImages(n, 0)
    staged = list(range(n))
    samples = dataset.load(staged)
    backend = OrtClassifier(model, args.device, {"cuda_graph_max_batch": 0})  # "sessions": one per batch size
    backend.stage(staged, samples)
    buckets = shape_buckets(big)
    warm_up(backend, staged, buckets)
    result: dict[str, Any] = {"backend": backend.info.to_dict()}
    bound = 15_000_000 if args.device == "cuda" else 1_000_000_000
    base = TestRequest(loadgen_model="resnet50", scenario="Server", mode="performance", log_dir="",
                       total_sample_count=n, performance_sample_count=n, min_duration_ms=int(secs * 1000),
                       min_query_count=100, server_target_latency_ns=bound)

    def save() -> None:
        (out / "probe.json").write_text(json.dumps(result, indent=1, default=str))

    if "server" in only:  # the first run's variants, on one session per stream as the backend had then
        backend = OrtClassifier(model, args.device, {"session_per_shape": False, "cuda_graph_max_batch": 0})
        backend.stage(staged, samples)
        warm_up(backend, staged, buckets)
        peak = measure(backend, staged, big, 2, 3.0)
        result["peak"] = peak.to_dict()
        print("peak", peak.to_dict(), flush=True)
        legacy = {"session_per_shape": False, "cuda_graph_max_batch": 0}
        private = PrivateSessions([OrtClassifier(model, args.device, legacy) for _ in range(2)])
        private.stage(staged, samples)
        for b in private.backends:
            warm_up(b, staged, buckets)
        runs = []
        loads = [float(x) for x in args.load.split(",")]
        variants = [("shared", backend, 2, buckets), ("one", backend, 1, buckets), ("fixed", backend, 2, (big,)),
                    ("private", private, 2, buckets)]  # (first run: before the backend's session per batch size)
        for load in loads[:1]:
            for name, b, streams, bk in variants:
                cfg = ScheduleConfig("Server", big, streams, 0.1 * bound / 1e9, bk)
                test = replace(base, server_target_qps=load * peak.samples_per_s)
                r = lg_run(out, f"server-{name}-{load}", b, dataset, test, cfg, warm=staged)
                r.update(variant=name, load=load, target_qps=load * peak.samples_per_s)
                runs.append(r)
                result["server"] = runs
                save()
        best = min(runs, key=lambda r: r["p99_ms"])
        for load in loads[1:]:
            name = best["variant"]
            b, streams, bk = next((v[1], v[2], v[3]) for v in variants if v[0] == name)
            cfg = ScheduleConfig("Server", big, streams, 0.1 * bound / 1e9, bk)
            test = replace(base, server_target_qps=load * peak.samples_per_s)
            r = lg_run(out, f"server-{name}-{load}", b, dataset, test, cfg, warm=staged)
            r.update(variant=name, load=load, target_qps=load * peak.samples_per_s)
            runs.append(r)
            save()
        backend = OrtClassifier(model, args.device, {"cuda_graph_max_batch": 0})
        backend.stage(staged, samples)
        warm_up(backend, staged, buckets)

    if "server2" in only:  # one session per batch size (the backend's CUDA default since this probe's first run)
        peak = measure(backend, staged, big, 2, 3.0)
        result["peak"] = peak.to_dict()
        print("peak", peak.to_dict(), flush=True)
        runs = result.setdefault("server2", [])
        for load in [float(x) for x in args.load.split(",")]:
            for bs, streams in ((32, 2), (16, 2), (16, 3), (32, 3)):
                bs = min(bs, big)
                bk = shape_buckets(bs)
                cfg = ScheduleConfig("Server", bs, streams, 0.1 * bound / 1e9, bk)
                warm_up(backend, staged, bk)
                test = replace(base, server_target_qps=load * peak.samples_per_s)
                r = lg_run(out, f"server2-b{bs}s{streams}-{load}", backend, dataset, test, cfg, warm=staged)
                r.update(batch=bs, streams=streams, load=load, target_qps=load * peak.samples_per_s)
                runs.append(r)
                save()

    backends = [("sessions", backend)]
    if args.device == "cuda":
        graph = OrtClassifier(model, args.device, {"cuda_graph_max_batch": 8})
        graph.stage(staged, samples)
        backends.append(("graph", graph))
    if "single" in only:
        single: dict[str, Any] = result.setdefault("single", {})
        for name, b in backends:
            warm_up(b, staged, (1, 8))
            single[f"{name}_bare_b1"] = bare_latency(b, staged, 1, 3.0)
            single[f"{name}_bare_b8"] = bare_latency(b, staged, 8, 3.0)
            single[f"{name}_bare_b1_gap10ms"] = bare_latency(b, staged, 1, 1.0, 10e-3)
            save()
            ss = replace(base, scenario="SingleStream", server_target_latency_ns=None,
                         single_stream_expected_latency_ns=int(single[f"{name}_bare_b1"]["p50_ms"] * 1e6))
            ms = replace(base, scenario="MultiStream", server_target_latency_ns=None, multi_stream_samples_per_query=8,
                         multi_stream_expected_latency_ns=int(single[f"{name}_bare_b8"]["p50_ms"] * 1e6),
                         min_query_count=662)
            single[f"{name}_lg_ss"] = lg_run(out, f"ss-{name}", b, dataset, ss, ScheduleConfig("SingleStream", 1))
            save()
            single[f"{name}_lg_ms"] = lg_run(out, f"ms-{name}", b, dataset, ms, ScheduleConfig("MultiStream", 8))
            single[f"{name}_bare_b1_after"] = bare_latency(b, staged, 1, 3.0)
            single[f"{name}_bare_b8_after"] = bare_latency(b, staged, 8, 3.0)
            save()
        if len(backends) > 1:
            single["graph_outputs_equal"] = bool(np.array_equal(backends[1][1].infer(staged[:8]),
                                                                backend.infer(staged[:8])))

    if "rounds" in only:
        rounds = result.setdefault("rounds", [])
        ss = replace(base, scenario="SingleStream", server_target_latency_ns=None, min_duration_ms=args.round_ms,
                     min_query_count=100, single_stream_expected_latency_ns=1_500_000)
        for k in range(args.rounds):
            for name, b in backends:
                before = thread_stats.snapshot()
                r = lg_run(out, f"round{k}-{name}", b, dataset, ss, ScheduleConfig("SingleStream", 1))
                threads = thread_stats.delta(before, thread_stats.snapshot())
                named = {t.native_id: t.name for t in threading.enumerate()}
                busiest = sorted(threads.items(), key=lambda kv: -float(kv[1]["run_ms"]))[:8]  # type: ignore[arg-type]
                rounds.append({"backend": name, "p50_ms": r["p50_ms"], "p90_ms": r["p90_ms"], "gpu": r["gpu"],
                               "callback": r["timeline"],
                               "threads": [{"tid": tid, "python": named.get(tid), **d} for tid, d in busiest]})
            save()
    save()
    # what comes back from the GPU machine is limited in file count: LoadGen logs and NVML samples as one archive
    subprocess.run(["tar", "czf", str(out / "logs-and-smi.tgz"), "-C", str(out), "logs", "smi"], check=False)
    subprocess.run(["rm", "-rf", str(out / "logs"), str(out / "smi")], check=False)


if __name__ == "__main__":
    main()
