"""tools/device/probe_harness.py, launch_breakdown.py, copy_states.py and gate_summary.py, run on the CPU: their rows,
measurements of this machine, so the checks are on structure and on relations that hold on any machine."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools" / "device"))
import copy_states
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
    assert set(rows) == {"raw", "bare", "minimal", "plugin", "slowed", "slowed_bare"}
    assert rows["raw"]["queries"] > 0
    assert all(r["p50_us"] > 0 and r["p90_us"] >= r["p50_us"] for r in rows.values())
    # far above any noise, in the bare loop and through LoadGen
    assert result["ratios"]["slowed_bare/bare p50_us"][0] > 1.5
    assert result["ratios"]["slowed/plugin p50_us"][0] > 1.3
    assert result["info"]["op"] == "launch" and result["info"]["kernels"] == "8"


def test_correlation_of_a_column_that_does_not_vary_is_none() -> None:
    import numpy as np

    assert launch_breakdown.correlation(np.array([1.0, 2.0, 3.0]), np.array([5.0, 5.0, 5.0])) is None
    assert launch_breakdown.correlation(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.1])) > 0.99


def _slices(p90s: list[float], buffers: int) -> list[dict[str, object]]:
    return [{"p90_us": v, "buffer": k % buffers, "nodes": [0] * buffers} for k, v in enumerate(p90s)]


def test_copy_states_finds_an_offset_that_lasts_a_process() -> None:
    import numpy as np

    rng = np.random.default_rng(1)

    def noise() -> list[float]:  # 1% slice noise around a 320 us p90
        return list(320 * np.exp(rng.normal(0, 0.01, 40)))

    steady = [[_slices(noise(), 4), _slices(noise(), 4)] for _ in range(4)]
    # the second process of one pair runs 12% slow for its whole life, as session 16's +12.5% candidate did
    offset = [[_slices(noise(), 4), _slices([v * 1.12 for v in noise()], 4)]] + steady[1:]
    calm, shifted = copy_states.summary(steady, 4), copy_states.summary(offset, 4)
    assert calm["sd_aa_estimate"] < 3 * calm["expected_sd_aa_estimate_from_slices"]
    assert shifted["sd_aa_estimate"] > 10 * shifted["expected_sd_aa_estimate_from_slices"]
    assert shifted["aa_estimates_pct"][0] == pytest.approx(12, abs=1)
    assert shifted["sd_process_mean"] > 10 * shifted["expected_sd_process_mean_from_slices"]


def test_copy_states_runs_pairs_of_workers_on_the_cpu(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "cs.json"
    sys.argv = ["copy_states.py", str(out), "--device", "cpu", "--pairs", "2", "--slices", "4", "--slice-ms", "20",
                "--buffers", "2", "--bytes", "65536", "--pattern", "random"]
    copy_states.main()
    result = json.loads(out.read_text())
    assert len(result["pairs"]) == 2
    for pair in result["pairs"]:
        assert [len(series) for series in pair["series"]] == [4, 4]
        assert all(s["p90_us"] >= s["p50_us"] > 0 and s["buffer"] in (0, 1) for w in pair["series"] for s in w)
    assert len(result["summary"]["aa_estimates_pct"]) == 2


def test_gate_summary_shows_each_arms_share_of_rounds_on_its_floor(tmp_path: Path) -> None:
    import gate_summary

    # reference: 8 rounds on a 335 us floor, 2 slow; candidate: 1 on its floor, 9 slow (the launch probe's shape)
    ref = [335e3] * 8 + [375e3] * 2
    cand = [360e3] + [405e3] * 9
    gate = {"overhead": 0.07, "ci_low": 0.05, "ci_high": 0.09, "unit": "ns", "label": "p90 latency", "rounds": 10,
            "elapsed_s": 3.0, "verdict": "FAIL", "estimator": "floor", "reference": ref, "candidate": cand}
    path = tmp_path / "g1" / "results.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"cases": [{"gate": gate}]}))
    line = gate_summary.row(path)
    assert line is not None and line.startswith("| g1 | p90 latency | 0.335 ms | FAIL | +7.00% |")
    assert line.endswith("| floor | 0.80 / 0.10 |")
