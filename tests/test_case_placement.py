"""host/machine/case_placement.py: a case's GPUs and CPUs, and the skip or failure when it cannot have them."""

from __future__ import annotations

import pytest

from pytest_mlperf.host.machine.case_placement import case_cpus, case_gpus, waiting
from pytest_mlperf.host.machine.placement import Placement

A, B, C = "GPU-a", "GPU-b", "GPU-c"


def test_a_case_without_a_visible_gpu_runs_on_none() -> None:
    assert case_gpus(Placement(), 1) == ()


def test_a_multi_gpu_case_without_a_visible_gpu_is_skipped_saying_how_many_it_needs() -> None:
    with pytest.raises(pytest.skip.Exception, match="needs 2 GPUs and none is visible"):
        case_gpus(Placement(), 2)


def test_a_case_takes_its_workers_home_gpu_and_the_next_ones() -> None:
    placement = Placement(visible=(A, B, C), home=B)
    assert case_gpus(placement, 1) == (B,)
    assert len(case_gpus(placement, 2)) == 2 and case_gpus(placement, 2)[0] == B


def test_a_case_needing_more_gpus_than_visible_is_skipped() -> None:
    with pytest.raises(pytest.skip.Exception):
        case_gpus(Placement(visible=(A,), home=A), 2)


def test_cpus_the_process_may_not_use_fail_the_case() -> None:
    assert case_cpus("none", (), ()).cpus is None
    with pytest.raises(pytest.fail.Exception):
        case_cpus("100000-100001", (), ())


def test_waiting_for_a_gpu_is_noted_and_said() -> None:
    notes: list[str] = []
    said: list[str] = []
    waiting(lambda text, level: said.append(text), "resnet50 Offline performance", notes, A, "pid 7")
    assert notes == [f"waited for GPU {A}, held by pid 7"]
    assert len(said) == 1 and "waiting for GPU GPU-a, held by pid 7" in said[0]
    waiting(None, "case", notes, A, "pid 8")
    assert len(notes) == 2
