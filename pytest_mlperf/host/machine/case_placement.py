"""Where one case runs: its GPUs (this worker's own, plus the next ones for a k-GPU case) and the CPUs its runners
are pinned to, with the skip or failure a case gets when it cannot have them; and the note a case keeps while it
waits for a GPU another process holds. host/machine/placement.py places the process; this module places a case within it."""

from __future__ import annotations

import pytest

from pytest_mlperf.contract.cpu_list import AffinityError, allowed_cpus
from pytest_mlperf.host.machine.cpus import Affinity, case_affinity
from pytest_mlperf.host.machine.gpus import PlacementError, gpus_for_case
from pytest_mlperf.host.machine.placement import Placement
from pytest_mlperf.host.progress import NORMAL, Sink, line


def waiting(progress: Sink | None, case: str, notes: list[str], uuid: str, holder: str) -> None:
    notes.append(f"waited for GPU {uuid}, held by {holder}")
    if progress is not None:
        progress(line(case, f"waiting for GPU {uuid}, held by {holder} (--mlperf-gpu-lock-timeout)"), NORMAL)


def case_cpus(cpu_affinity: str, gpus: tuple[str, ...], visible: tuple[str, ...]) -> Affinity:
    """The CPUs this case's runners are pinned to (--mlperf-cpu-affinity); a list the process may no longer use
    fails the case."""
    try:
        return case_affinity(cpu_affinity, gpus, visible, allowed_cpus())
    except AffinityError as exc:
        message = str(exc)
    pytest.fail(message, pytrace=False)
    raise AssertionError  # pragma: no cover - pytest.fail raises


def case_gpus(placement: Placement, needed: int) -> tuple[str, ...]:
    """The GPUs a case that needs `needed` of them runs on: this worker's own, plus the next ones; () without a GPU.
    A case that needs more GPUs than are visible is skipped, saying how many it needs."""
    if not placement.visible:
        if needed > 1:
            pytest.skip(f"the case needs {needed} GPUs and none is visible")
        return ()
    try:
        return gpus_for_case(placement.home or placement.visible[0], placement.visible, needed)
    except PlacementError as exc:
        message = str(exc)
    pytest.skip(message)
    raise AssertionError  # pragma: no cover - pytest.skip raises
