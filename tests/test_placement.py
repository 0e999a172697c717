"""Placement of this process: ranks per host from xdist specs, the home GPU of a worker, the controller's check."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pytest_mlperf.host.machine.gpus import PlacementError
from pytest_mlperf.host.machine.placement import RANK_KEY, WORKERS_KEY, host_of, local_ranks, place
from pytest_mlperf.host.machine.system import GPU

GPUS = [GPU(i, f"GPU-{i}{i}{i}", "H100", "580", 81559) for i in range(4)]


def spec(id_: str, ssh: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(id=id_, ssh=ssh, socket=None)


def test_ranks_count_workers_per_host_in_spec_order() -> None:
    specs = [spec("gw0", "node-a"), spec("gw1", "node-b"), spec("gw2", "node-a"), spec("gw3")]
    assert local_ranks(specs) == {"gw0": (0, 2), "gw1": (0, 1), "gw2": (1, 2), "gw3": (0, 1)}
    assert host_of(spec("x")) == "localhost" and host_of(spec("y", "n")) == "n"


def test_a_worker_takes_the_gpu_of_its_rank_on_its_host() -> None:
    p = place(GPUS, {RANK_KEY: 2, WORKERS_KEY: 3})
    assert p.home == "GPU-222" and p.visible == tuple(g.uuid for g in GPUS)
    assert p.describe("GPU-222") == {"index": 2, "uuid": "GPU-222", "name": "H100"}


def test_a_worker_without_our_ranks_uses_its_xdist_id() -> None:
    assert place(GPUS, {"workerid": "gw1", "workercount": 2}).home == "GPU-111"


def test_too_many_workers_on_a_host() -> None:
    with pytest.raises(PlacementError, match="5 pytest-xdist workers but 4 GPU"):
        place(GPUS, {RANK_KEY: 0, WORKERS_KEY: 5})
    with pytest.raises(PlacementError, match="3 pytest-xdist workers but 2 GPU"):
        place(GPUS[:2], None, local_workers=3)  # the controller checks -n before workers start


def test_without_gpus_nothing_is_placed() -> None:
    assert place([], None, local_workers=4).home is None
    assert place([], {RANK_KEY: 1, WORKERS_KEY: 2}).home is None
    assert place(GPUS, None).home == "GPU-000"  # a session without workers measures on the first visible GPU
