"""tools/device/probe_harness.py and launch_breakdown.py, run on the CPU: their rows, ratios and windows are real
measurements of this machine, so the checks are on structure and on relations that hold on any machine."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools" / "device"))
import launch_breakdown
import probe_harness


def test_last_cpu_reads_this_threads_cpu() -> None:
    import os

    assert launch_breakdown.last_cpu() in os.sched_getaffinity(0)


def test_launch_breakdown_windows_and_their_parts(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "lb.json"
    assert launch_breakdown.main([str(out), "--device", "cpu", "--seconds", "0.6", "--window", "0.2",
                                  "--kernels", "2"]) == 0
    result = json.loads(out.read_text())
    assert result["kernels"] == 2 and len(result["windows"]) >= 2
    for w in result["windows"]:
        assert w["ops"] > 0
        # an op is its launches plus its synchronisation, so its p50 is at least its launches' p50
        assert w["op_p50_us"] >= w["launch_p50_us"] > 0
        assert w["yard_p50_us"] > 0 and 0 < w["cpu_share"] <= 1.1
    assert set(result["max_over_min"]) == {"op_p90_us", "launch_p90_us", "sync_p90_us", "yard_p50_us", "cpu_share"}


def test_probe_harness_rows_ratios_and_the_layers_cost(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("mlperf_loadgen")
    out = tmp_path / "ph.json"
    # an 80% layer makes each call five times as long. The bare loop's time per call is the op plus the loop's own
    # Python, which the layer does not slow: on a 2-core CI machine the op was a quarter to a third of it, so a 50%
    # layer (each call doubled) read only 1.17-1.36 at p50 there; at 80% the same share reads about 2
    assert probe_harness.main([str(out), "--device", "cpu", "--seconds", "0.3", "--cycles", "1", "--cost", "0.8",
                               "--option", "kernels=8"]) == 0
    result = json.loads(out.read_text())
    rows = {r["row"]: r for r in result["rows"]}
    assert set(rows) == {"bare", "minimal", "plugin", "slowed", "slowed_bare"}
    assert all(r["p50_us"] > 0 and r["p90_us"] >= r["p50_us"] for r in rows.values())
    # far above any noise, in the bare loop and through LoadGen
    assert result["ratios"]["slowed_bare/bare p50_us"][0] > 1.5
    assert result["ratios"]["slowed/plugin p50_us"][0] > 1.3
    assert result["info"]["op"] == "launch" and result["info"]["kernels"] == "8"


def test_correlation_of_a_column_that_does_not_vary_is_none() -> None:
    import numpy as np

    assert launch_breakdown.correlation(np.array([1.0, 2.0, 3.0]), np.array([5.0, 5.0, 5.0])) is None
    assert launch_breakdown.correlation(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.1])) > 0.99
