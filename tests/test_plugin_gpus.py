"""GPU placement through real pytest sessions (pytester) on a machine without GPUs: a stand-in `nvidia-smi` on
PATH lists GPUs, so discovery, xdist placement, k-GPU cases and the per-GPU locks run for real around the null
SUT (whose runner ignores CUDA_VISIBLE_DEVICES)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("xdist")

UUIDS = [f"GPU-{c * 8}-0000-0000-0000-000000000000" for c in "abcd"]

BENCH = """
import pytest
pytestmark = pytest.mark.mlperf(workload="null", scenarios=["Offline"], sut_options={{"delay_ms": {delay}}})

@pytest.mark.parametrize("n", range({cases}))
def test_null(null_sut, loadgen, n):
    loadgen.run(null_sut).assert_valid()

@pytest.mark.mlperf(workload="null", scenarios=["Offline"], gpus=2)
def test_two(null_sut, loadgen):
    loadgen.run(null_sut).assert_valid()

@pytest.mark.mlperf(workload="null", scenarios=["Offline"], gpus=5)
def test_five(null_sut, loadgen):
    loadgen.run(null_sut).assert_valid()
"""


@pytest.fixture
def gpus(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> callable:
    """fake(n): n GPUs listed by a stand-in nvidia-smi; locks in a private directory."""

    def fake(n: int) -> None:
        bin_dir = pytester.path / "fakebin"
        bin_dir.mkdir(exist_ok=True)
        lines = "".join(f"{i}, {UUIDS[i]}, Fake GPU, 580.00, 81559\\n" for i in range(n))
        smi = bin_dir / "nvidia-smi"
        smi.write_text(f"#!/bin/sh\nprintf '{lines}'\n")
        smi.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("PYTEST_MLPERF_LOCK_DIR", str(pytester.path / "locks"))
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    return fake


def bench(pytester: pytest.Pytester, cases: int = 4, delay: int = 1) -> None:
    pytester.makepyfile(test_bench=BENCH.format(cases=cases, delay=delay))


def records(path: Path) -> dict[str, dict]:
    doc = json.loads((path / "mlperf-results" / "results.json").read_text())
    return {c["nodeid"].split("::")[-1]: c for c in doc["cases"]}


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--mlperf-duration=0.2s", *args)


@pytest.mark.parametrize("workers", [["-n", "2"], ["--tx", "2*popen", "--dist", "load"]])
def test_each_worker_measures_on_its_own_gpu(pytester: pytest.Pytester, gpus, workers: list[str]) -> None:
    gpus(2)
    bench(pytester)
    result = run(pytester, *workers, "-k", "test_null")
    result.assert_outcomes(passed=4)
    got = records(pytester.path)
    by_worker: dict[str, set[str]] = {}
    for case in got.values():
        (gpu,) = case["gpus"]
        assert gpu["start"]["time"] <= gpu["end"]["time"]
        by_worker.setdefault(case["worker"], set()).add(gpu["uuid"])
    assert len(by_worker) == 2  # both workers measured
    assert all(len(u) == 1 for u in by_worker.values())  # a worker always on its own GPU
    assert set().union(*by_worker.values()) == set(UUIDS[:2])  # and no two on the same one


def test_more_workers_than_gpus_is_a_usage_error(pytester: pytest.Pytester, gpus) -> None:
    gpus(2)
    bench(pytester)
    result = run(pytester, "-n", "3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*3 pytest-xdist workers but 2 GPU(s) visible*-n auto*"])


def test_auto_means_one_worker_per_gpu(pytester: pytest.Pytester, gpus) -> None:
    gpus(3)
    bench(pytester, cases=3)
    result = run(pytester, "-n", "auto", "-k", "test_null")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*3 workers*"])


def test_auto_counts_gpus_whatever_the_plugin_order(pytester: pytest.Pytester, gpus,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """On the H200 (16 cores, 1 GPU), `-p pytest_mlperf.host.plugin` registered the plugin before xdist's entry point,
    so xdist's own `pytest_xdist_auto_num_workers` answered first (16 CPUs) and placement refused 16 workers on
    1 GPU. The plugin's answer must win whichever is registered first."""
    gpus(1)
    bench(pytester, cases=2)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS", raising=False)
    result = run(pytester, "-p", "pytest_mlperf.host.plugin", "-p", "xdist.plugin", "-n", "auto", "-k", "test_null")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*1 worker*"])


def test_a_two_gpu_case_gets_two_gpus_and_a_case_needing_more_skips(pytester: pytest.Pytester, gpus) -> None:
    gpus(2)
    bench(pytester, cases=2)
    result = run(pytester, "-n", "2", "-rs")
    result.assert_outcomes(passed=3, skipped=1)
    result.stdout.fnmatch_lines(["*the case needs 5 GPUs (tensor parallel) but only 2*"])
    two = records(pytester.path)["test_two[null-Offline-performance]"]
    assert sorted(g["uuid"] for g in two["gpus"]) == UUIDS[:2]


def test_two_sessions_take_turns_on_one_gpu(pytester: pytest.Pytester, gpus) -> None:
    gpus(1)
    sessions = []
    for name in ("one", "two"):
        d = pytester.path / name
        d.mkdir()
        (d / "test_bench.py").write_text(BENCH.format(cases=2, delay=20))
        sessions.append((d, subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--mlperf-duration=0.5s",
             "-k", "test_null", str(d)], cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    outputs = [p.communicate(timeout=600)[0] for _, p in sessions]
    assert all(p.returncode == 0 for _, p in sessions), outputs
    spans = sorted((g["start"]["time"], g["end"]["time"], d.name)
                   for d, _ in sessions for c in records(d).values() for g in c["gpus"])
    assert len(spans) == 4
    for (_, end, _), (start, _, _) in zip(spans, spans[1:]):
        assert start >= end  # never two measurements on the GPU at once
    assert len({name for *_, name in spans}) == 2
    notes = [n for d, _ in sessions for c in records(d).values() for n in c["notes"]]
    assert any(n.startswith(f"waited for GPU {UUIDS[0]}, held by pid") for n in notes), notes
