"""tools/device/multi_gpu_summary.py: issue 5's verdicts (speed-up, interference, NVML placement) from results."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

_PATH = Path(__file__).resolve().parents[1] / "tools" / "device" / "multi_gpu_summary.py"
_spec = importlib.util.spec_from_file_location("multi_gpu_summary", _PATH)
assert _spec is not None and _spec.loader is not None
summary = importlib.util.module_from_spec(_spec)
sys.modules["multi_gpu_summary"] = summary
_spec.loader.exec_module(summary)

A, B = "GPU-aaaa", "GPU-bbbb"


def record(copy: int, value: float, gpu: str | None = None, pid: int | None = None) -> dict[str, Any]:
    return {"nodeid": f"t.py::test_resnet50_copy[{copy}-resnet50-Offline-performance]",
            "metrics": {"result_samples_per_second": value},
            "gpus": [{"uuid": gpu}] if gpu else [], "runner_pid": pid}


SERIAL = [record(i, 5000.0, A, 100) for i in range(4)]
PARALLEL = [record(0, 4990.0, A, 200), record(1, 5010.0, B, 300), record(2, 4995.0, A, 200),
            record(3, 5020.0, B, 300)]


def test_apps_csv_rows_become_pids_per_gpu() -> None:
    lines = ["2026/11/22 10:00:00.000, 200, GPU-aaaa, 1200 MiB", "2026/11/22 10:00:00.500, 300, GPU-bbbb, 900 MiB",
             "No running processes found", "timestamp, pid, gpu_uuid, used_gpu_memory [MiB]"]
    assert summary.read_apps(lines) == {A: {200}, B: {300}}
    assert summary.read_walls(["serial 100.5", "auto 52.0", ""]) == {"serial": 100.5, "auto": 52.0}


def test_all_targets_met() -> None:
    text, ok = summary.report(SERIAL, PARALLEL, {"serial": 100.0, "auto": 52.0}, {A: {200}, B: {300}})
    assert ok, text
    assert "1.92x (target >= 1.80x): met" in text and "every runner seen on its own GPU only" in text
    assert "| test_resnet50_copy[1-resnet50-Offline-performance] | 5,000.0 | 5,010.0 | +0.20% | GPU-bbbb |" in text


@pytest.mark.parametrize(("walls", "apps", "parallel", "expected"), [
    ({"serial": 100.0, "auto": 60.0}, {A: {200}, B: {300}}, PARALLEL, "1.67x (target >= 1.80x): NOT met"),
    ({"serial": 100.0, "auto": 52.0}, {A: {200}, B: {300}}, [*PARALLEL[:3], record(3, 4800.0, B, 300)],
     "within 2% of -n 1: NOT met"),
    ({"serial": 100.0, "auto": 52.0}, {A: {200, 300}, B: {300}}, PARALLEL, "runner 300 also seen on GPU-aaaa"),
    ({"serial": 100.0, "auto": 52.0}, {A: {200}}, PARALLEL, "never saw runner 300 on its GPU GPU-bbbb"),
    ({"serial": 100.0, "auto": 52.0}, {A: {200, 201}, B: {300}}, [*PARALLEL[:2], record(2, 4995.0, A, 201),
                                                                   PARALLEL[3]], "GPU GPU-aaaa had 2 runners"),
])
def test_each_missed_target_is_named(walls, apps, parallel, expected) -> None:
    text, ok = summary.report(SERIAL, parallel, walls, apps)
    assert not ok and expected in text, text
