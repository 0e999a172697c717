"""Where this pytest process measures: the GPUs it sees and its home GPU, under pytest-xdist or alone.

The controller numbers the workers of each host (`local_ranks`, from xdist's node specs) and hands each its rank
through `workerinput`; every worker then discovers its own host's GPUs and takes the rank-th one, so remote
workers (`--tx ssh=HOST//python=...`) place themselves on their host's GPUs. Runners are pinned to their case's
GPUs with CUDA_VISIBLE_DEVICES before they start (host/driver/loadgen_driver.py), and hold the per-GPU locks while they measure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_mlperf.host.machine.gpus import assign_workers, gpu_ids, worker_index
from pytest_mlperf.host.machine.system import GPU

RANK_KEY = "mlperf_local_rank"
WORKERS_KEY = "mlperf_local_workers"


@dataclass(frozen=True)
class Placement:
    visible: tuple[str, ...] = ()  # the GPUs of this host this process may use (UUIDs), in CUDA's order
    home: str | None = None  # this worker's own GPU; None without a GPU
    found: tuple[GPU, ...] = ()  # what discovery saw of them (index, name)

    def describe(self, uuid: str) -> dict[str, Any]:
        for g in self.found:
            if uuid in (g.uuid, str(g.index)):
                return {"index": g.index, "uuid": g.uuid, "name": g.name}
        return {"index": None, "uuid": uuid, "name": None}


def host_of(spec: Any) -> str:
    """The host an xdist node spec runs on: its ssh or socket address, else this host (popen)."""
    return str(getattr(spec, "ssh", None) or getattr(spec, "socket", None) or "localhost")


def local_ranks(specs: Sequence[Any]) -> dict[str, tuple[int, int]]:
    """spec id -> (rank among the workers of its host, number of workers on that host), in spec order."""
    hosts = [host_of(s) for s in specs]
    ranks: dict[str, tuple[int, int]] = {}
    seen: dict[str, int] = {}
    for spec, host in zip(specs, hosts):
        ranks[str(spec.id)] = (seen.get(host, 0), hosts.count(host))
        seen[host] = seen.get(host, 0) + 1
    return ranks


def place(found: Sequence[GPU], workerinput: Mapping[str, Any] | None, local_workers: int = 1) -> Placement:
    """This process's placement. A worker takes the GPU of its rank on its host; the controller of a session
    without workers (or with `local_workers` of them, only to check that they fit) takes the first visible GPU.
    Raises gpus.PlacementError when there are more workers on a host than GPUs."""
    visible = tuple(gpu_ids(found))
    if workerinput is None:
        if visible:
            assign_workers(visible, max(1, local_workers))
        return Placement(visible, visible[0] if visible else None, tuple(found))
    rank = workerinput.get(RANK_KEY)
    workers = workerinput.get(WORKERS_KEY)
    if rank is None or workers is None:  # a worker started without our controller hook: number it by its id
        rank, workers = worker_index(str(workerinput.get("workerid", ""))), int(workerinput.get("workercount", 1))
    home = assign_workers(visible, int(workers))[int(rank)] if visible else None
    return Placement(visible, home, tuple(found))
