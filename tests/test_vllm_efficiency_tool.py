"""tools/device/vllm_efficiency.py's LoadGen test stays short: on the H200 (session 9) it left min_query_count to
mlperf.conf, whose llama3_1-8b Offline minimum (13,368 samples) made one query of 13,568 samples, and the run
outlived its 330 s step before the bare pass began. Checked against LoadGen's own settings."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("mlperf_loadgen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools" / "device"))
import vllm_efficiency

from pytest_mlperf.contract.test_request import offline_samples_per_query
from pytest_mlperf.runner.loadgen import effective_test


def test_the_efficiency_query_is_what_the_duration_asks_for_in_whole_passes(tmp_path: Path) -> None:
    test = replace(vllm_efficiency.offline_test(str(tmp_path), 256, 8.0), offline_expected_qps=52.15)
    # 1.1 x 8 s x 52.15 QPS = 458 samples, rounded up to two passes over the 256 stand-in prompts
    assert offline_samples_per_query(effective_test(test)) == 512
    unset = replace(test, min_query_count=None)  # what the tool did: mlperf.conf's minimum
    assert offline_samples_per_query(effective_test(unset)) == 13_568
