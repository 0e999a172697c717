"""Where a GPU probe's SingleStream latency goes, in one process (run on the GPU machine; `--device cpu` anywhere).

    python3 tools/device/probe_harness.py OUT.json [--op launch] [--device cuda] [--seconds 2] [--cycles 4]
    python3 tools/device/probe_harness.py OUT.json --op launch --option kernels=64   # a sample of 64 launches
    python3 tools/device/probe_harness.py OUT.json --backend onnxruntime   # the ResNet50 stand-in, staged, batch 1

Each cycle runs, back to back and each for `--seconds`:
  raw       (torch-probe) the op on the probe's own buffers in a tight loop on the main thread, nothing around it;
  bare      the probe's infer([i]) in a loop (the calibration's bare batch-1 loop, runner/calibrate.measure);
  minimal   LoadGen SingleStream with the smallest SUT Python allows: issue -> infer -> QuerySamplesComplete;
  plugin    LoadGen SingleStream through the plugin's path (loadgen.run_test + suts.scheduling.BatchingHarness);
  slowed    the plugin's path over the probe wrapped by pytest_mlperf.slowdown at `--cost` (the gate's 7% layer);
  slowed_bare  the bare loop over the same wrapper.
Cycles repeat the five, so that a slow state of the process (docs/performance.md, session 11) shows as a cycle
that is slow in every row rather than as a difference between rows. Summary: each row's p50/p90 per cycle, and the
ratios that matter: plugin over bare (the harness's share), plugin over minimal (the plugin's Python), slowed over
plugin (the layer's true cost on LoadGen's p90, the figure the gate should estimate).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_mlperf.contract.test_request import TestRequest
from pytest_mlperf.runner.loadgen import run_test
from pytest_mlperf.contract.loadgen_log import read_run
from pytest_mlperf.runner.calibrate import measure
from pytest_mlperf.slowdown import SlowedBackend
from pytest_mlperf.runner.strategies.batching import BatchingHarness, ScheduleConfig
from pytest_mlperf.runner.backends.torch_probe import TorchProbe

SAMPLES = 1024


def _summary(log_dir: str) -> dict[str, float]:
    """A SingleStream run's p50, p90 and min latency in µs, from its logs (the plugin's own reader)."""
    metrics = read_run(log_dir).metrics

    def us(key: str) -> float:
        value = metrics.get(key)
        return float(value) / 1e3 if isinstance(value, (int, float)) else float("nan")

    return {"p50_us": us("result_50.00_percentile_latency_ns"), "p90_us": us("result_90.00_percentile_latency_ns"),
            "min_us": us("result_min_latency_ns")}


def _request(seconds: float, expected_us: float) -> TestRequest:
    return TestRequest(loadgen_model="resnet50", scenario="SingleStream", mode="performance",
                       log_dir=tempfile.mkdtemp(prefix="probe-harness-"), total_sample_count=SAMPLES,
                       performance_sample_count=SAMPLES, min_duration_ms=int(seconds * 1000), min_query_count=100,
                       single_stream_expected_latency_ns=int(expected_us * 1000))


def bare(backend: Any, seconds: float) -> dict[str, float]:
    m = measure(backend, list(range(SAMPLES)), 1, 1, seconds)
    return {"p50_us": m.batch_latency_p50_s * 1e6, "p90_us": m.batch_latency_p90_s * 1e6, "queries": m.batches}


def raw(backend: Any, seconds: float) -> dict[str, float]:
    """The op itself on the probe's own lane in a tight loop on this thread: no infer(), no thread, no LoadGen."""
    import numpy as np

    lane, op = backend._first, backend._op
    times = []
    end = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        op(lane)
        t1 = time.perf_counter()
        times.append(t1 - t0)
        if t1 >= end:
            break
    a = np.array(times) * 1e6
    return {"p50_us": float(np.percentile(a, 50)), "p90_us": float(np.percentile(a, 90)), "queries": len(a)}


def minimal(backend: Any, seconds: float, expected_us: float) -> dict[str, float]:
    import mlperf_loadgen as lg

    req = _request(seconds, expected_us)

    def issue(queries: list[Any]) -> None:
        responses = []
        for q in queries:
            out = backend.infer([q.index])
            responses.append(lg.QuerySampleResponse(q.id, out.__array_interface__["data"][0], out.nbytes))
        lg.QuerySamplesComplete(responses)

    sut = lg.ConstructSUT(issue, lambda: None)
    qsl = lg.ConstructQSL(SAMPLES, SAMPLES, lambda idx: None, lambda idx: None)
    settings = lg.TestSettings()
    settings.scenario, settings.mode = lg.TestScenario.SingleStream, lg.TestMode.PerformanceOnly
    settings.min_duration_ms, settings.min_query_count = req.min_duration_ms, req.min_query_count
    settings.single_stream_expected_latency_ns = req.single_stream_expected_latency_ns
    log = lg.LogSettings()
    log.log_output.outdir = req.log_dir
    log.log_output.copy_summary_to_stdout = False
    lg.StartTestWithLogSettings(sut, qsl, settings, log)
    lg.DestroyQSL(qsl)
    lg.DestroySUT(sut)
    return _summary(req.log_dir)


def plugin(backend: Any, seconds: float, expected_us: float) -> dict[str, float]:
    req = _request(seconds, expected_us)
    harness = BatchingHarness(backend, lambda idx: None, ScheduleConfig(scenario="SingleStream", batch_size=1))
    try:
        run_test(req, harness)
    finally:
        harness.close()
    return _summary(req.log_dir)


def _ratios(rows: list[dict[str, Any]], num: str, den: str, key: str) -> list[float]:
    by = {(r["cycle"], r["row"]): r[key] for r in rows}
    return [by[(c, num)] / by[(c, den)] for c in sorted({r["cycle"] for r in rows})]


def make_backend(name: str, op: str, device: str, options: dict[str, str]) -> Any:
    if name == "torch-probe":
        return TorchProbe(device, {"op": op, **options})
    from pytest_mlperf.runner.standins.resnet50 import ensure_resnet50
    from pytest_mlperf.runner.backends.onnxruntime import OrtClassifier
    from pytest_mlperf.runner.workloads.resnet50 import SyntheticImages

    # as benchmarks/test_resnet50.py's SingleStream case runs it (session 12's run predates this: no CUDA graphs)
    backend = OrtClassifier(ensure_resnet50(), device, {"cuda_graph_max_batch": 8} if device == "cuda" else {})
    backend.stage(list(range(SAMPLES)), SyntheticImages(SAMPLES, 0).load(list(range(SAMPLES))))
    return backend


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--backend", default="torch-probe", choices=("torch-probe", "onnxruntime"))
    ap.add_argument("--op", default="launch", help="torch-probe's op")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--cycles", type=int, default=4)
    ap.add_argument("--cost", type=float, default=0.07)
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="more torch-probe options, e.g. kernels=64 or bytes=16777216 (repeatable)")
    args = ap.parse_args(argv)
    options = dict(o.split("=", 1) for o in args.option)
    probe = make_backend(args.backend, args.op, args.device, options)
    slowed = SlowedBackend(probe, args.cost / (1 - args.cost), 0.0)
    for _ in range(2000 if args.backend == "torch-probe" else 100):  # warm: first launches load kernels, the allocator fills
        probe.infer([0])
    expected = bare(probe, 0.5)["p50_us"]
    steps: list[tuple[str, Callable[[], dict[str, float]]]] = [
        *([("raw", lambda: raw(probe, args.seconds))] if args.backend == "torch-probe" else []),
        ("bare", lambda: bare(probe, args.seconds)),
        ("minimal", lambda: minimal(probe, args.seconds, expected)),
        ("plugin", lambda: plugin(probe, args.seconds, expected)),
        ("slowed", lambda: plugin(slowed, args.seconds, expected)),
        ("slowed_bare", lambda: bare(slowed, args.seconds)),
    ]
    rows: list[dict[str, Any]] = []
    for cycle in range(args.cycles):
        for name, step in steps:
            t0 = time.perf_counter()
            row = {"cycle": cycle, "row": name, **step(), "wall_s": round(time.perf_counter() - t0, 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    ratios = {f"{num}/{den} {key}": _ratios(rows, num, den, key)
              for num, den in (("plugin", "bare"), ("plugin", "minimal"), ("minimal", "bare"), ("slowed", "plugin"),
                               ("slowed_bare", "bare"))
              for key in ("p50_us", "p90_us")}
    best = {name: {k: min(r[k] for r in rows if r["row"] == name) for k in ("p50_us", "p90_us")}
            for name, _ in steps}
    result = {"backend": args.backend, "op": args.op, "device": args.device, "info": probe.info.details, "rows": rows, "ratios": ratios,
              "best_of_cycles": best}
    Path(args.out).write_text(json.dumps(result, indent=1))
    for k, v in ratios.items():
        print(f"{k:28s} " + " ".join(f"{x:.3f}" for x in v))
    print("best of cycles:", json.dumps(best))
    probe.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
