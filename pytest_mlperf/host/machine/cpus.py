"""CPU affinity for runner processes (`--mlperf-cpu-affinity`): which cores a runner, and everything it starts (an
isolation layer's proxy included), may run on.

A GPU benchmark's host side (LoadGen's threads, the harness, the driver's launch path) moves by several percent,
and a light load such as SingleStream by far more, with the core it happens to run on: a core of the GPU's own
NUMA node or not, shared with another worker or not. MLPerf submissions bind their harness with numactl for this
reason. Values:
- `none` (default): the runner inherits pytest's affinity;
- `auto`: the CPUs NVML names as local to the case's GPUs (`nvmlDeviceGetCpuAffinity`), split evenly between the
  visible GPUs that share the same local set (so two workers on one NUMA node get disjoint cores); a CPU case, or
  a GPU NVML says nothing about, is left unpinned with a note;
- a list such as `0-7,16`: exactly those CPUs, for every runner of the session.
Every choice is intersected with the CPUs this process may use (a container's or a job scheduler's cpuset); an
empty result is an error that names both sets. Reference and candidate runners of a gate get the same CPUs.

Pure but for gpu_local_cpus (NVML) and allowed_cpus (the kernel)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pytest_mlperf.contract.cpu_list import AffinityError, format_cpu_list, parse_cpu_list

AFFINITY_MODES = ("none", "auto")
_WORD_BITS = 64  # NVML returns the mask as unsigned longs


def parse_affinity(text: str) -> str:
    """The option's value, checked: 'none', 'auto' or a CPU list (returned normalised)."""
    value = text.strip().lower()
    if value in AFFINITY_MODES:
        return value
    return format_cpu_list(parse_cpu_list(value))


def mask_to_cpus(words: Sequence[int]) -> tuple[int, ...]:
    """NVML's CPU mask (word 0 holds CPUs 0-63, bit i of a word is CPU 64*word+i) as CPU numbers."""
    return tuple(w * _WORD_BITS + b for w, word in enumerate(words) for b in range(_WORD_BITS) if int(word) >> b & 1)


def gpu_local_cpus(uuid: str) -> tuple[int, ...] | None:
    """The CPUs NVML calls ideal for the GPU (its NUMA node's), or None when NVML is unavailable or silent."""
    from pytest_mlperf.host.machine.gpus import _nvml  # NVML is initialised once per process there

    nvml = _nvml()
    if nvml is None:
        return None
    words = ((os.cpu_count() or 1) + _WORD_BITS - 1) // _WORD_BITS
    try:
        handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
        cpus = mask_to_cpus(nvml.nvmlDeviceGetCpuAffinity(handle, words))
    except (nvml.NVMLError, AttributeError):
        return None
    return cpus or None


def split_shared(local: Mapping[str, tuple[int, ...]], order: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Each GPU's share of its local CPUs: GPUs (in `order`) with the same local set split it into contiguous,
    disjoint, near-equal slices; a GPU alone on its set keeps all of it. A set with fewer CPUs than GPUs gives each
    GPU one CPU, round robin (shared, but never none)."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for uuid in order:
        if uuid in local:
            groups.setdefault(local[uuid], []).append(uuid)
    out: dict[str, tuple[int, ...]] = {}
    for cpus, members in groups.items():
        n = len(members)
        if len(cpus) < n:
            for k, uuid in enumerate(members):
                out[uuid] = (cpus[k % len(cpus)],)
            continue
        size, extra = divmod(len(cpus), n)
        start = 0
        for k, uuid in enumerate(members):
            end = start + size + (1 if k < extra else 0)
            out[uuid] = cpus[start:end]
            start = end
    return out


@dataclass(frozen=True)
class Affinity:
    cpus: tuple[int, ...] | None  # None: not pinned
    note: str | None = None  # why auto left a case unpinned


def case_affinity(setting: str, case_gpus: Sequence[str], visible: Sequence[str], allowed: Sequence[int],
                  local: Callable[[str], tuple[int, ...] | None] = gpu_local_cpus) -> Affinity:
    """The CPUs a case's runners are pinned to under `setting` ('none', 'auto' or a normalised CPU list)."""
    allowed_set = set(allowed)
    if setting == "none":
        return Affinity(None)
    if setting != "auto":
        wanted = parse_cpu_list(setting)
        cpus = tuple(c for c in wanted if c in allowed_set)
        if not cpus:
            raise AffinityError(f"--mlperf-cpu-affinity={setting} leaves no CPU this process may use "
                                f"({format_cpu_list(allowed)}); choose CPUs among those")
        return Affinity(cpus)
    if not case_gpus:
        return Affinity(None, "a CPU case is not pinned by --mlperf-cpu-affinity=auto")
    found = {u: near for u in visible if (near := local(u)) is not None}
    missing = [u for u in case_gpus if u not in found]
    if missing:
        return Affinity(None, f"NVML names no local CPUs for GPU {', '.join(missing)}: runners not pinned")
    shares = split_shared(found, visible)
    chosen = sorted({c for u in case_gpus for c in shares.get(u, found[u]) if c in allowed_set})
    if not chosen:
        return Affinity(None, f"the CPUs local to GPU {', '.join(case_gpus)} are outside this process's "
                              f"({format_cpu_list(allowed)}): runners not pinned")
    return Affinity(tuple(chosen))
