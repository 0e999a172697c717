"""Tests for pytest_mlperf.host.machine.cpus: CPU lists, NVML's affinity mask, splitting a NUMA node between GPUs, and the
affinity each case gets under none / auto / an explicit list."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

from pytest_mlperf.host.machine import cpus
from pytest_mlperf.host.machine import gpus
from pytest_mlperf.contract.cpu_list import AffinityError, format_cpu_list, parse_cpu_list
from pytest_mlperf.host.machine.cpus import Affinity, case_affinity, mask_to_cpus, parse_affinity, split_shared

A, B, C, D = "GPU-a", "GPU-b", "GPU-c", "GPU-d"
NODE0, NODE1 = tuple(range(0, 8)), tuple(range(8, 16))
ALL = tuple(range(16))


@pytest.mark.parametrize(("text", "expected"), [
    ("0", (0,)), ("0-3", (0, 1, 2, 3)), ("3,1,2", (1, 2, 3)), ("0-1, 4-5,4", (0, 1, 4, 5)), ("64-65", (64, 65)),
])
def test_parse_cpu_list(text: str, expected: tuple[int, ...]) -> None:
    assert parse_cpu_list(text) == expected
    assert parse_cpu_list(format_cpu_list(expected)) == expected


@pytest.mark.parametrize("text", ["", "a", "1-", "-1", "3-1", "1;2", "0x3"])
def test_bad_cpu_lists_say_how_to_write_one(text: str) -> None:
    with pytest.raises(AffinityError, match="0-7,16|must not exceed"):
        parse_cpu_list(text)


def test_format_and_parse_affinity() -> None:
    assert format_cpu_list([8, 0, 1, 2, 3, 10, 11]) == "0-3,8,10-11"
    assert format_cpu_list([]) == ""
    assert parse_affinity(" AUTO ") == "auto" and parse_affinity("none") == "none"
    assert parse_affinity("3,0-2") == "0-3"


def test_nvml_mask_words_are_64_cpus_each() -> None:
    assert mask_to_cpus([0b1011]) == (0, 1, 3)
    assert mask_to_cpus([0, 1 << 63 | 1]) == (64, 127)
    assert mask_to_cpus([]) == ()


def test_gpus_sharing_a_node_split_it_disjointly_in_order() -> None:
    local = {A: NODE0, B: NODE0, C: NODE1, D: NODE1}
    shares = split_shared(local, [A, B, C, D])
    assert shares == {A: NODE0[:4], B: NODE0[4:], C: NODE1[:4], D: NODE1[4:]}
    assert split_shared({A: NODE0, B: NODE1}, [A, B]) == {A: NODE0, B: NODE1}  # alone on its node: all of it
    uneven = split_shared({A: (0, 1, 2), B: (0, 1, 2)}, [B, A])
    assert uneven == {B: (0, 1), A: (2,)}
    tight = split_shared({A: (5,), B: (5,), C: (5,)}, [A, B, C])
    assert tight == {A: (5,), B: (5,), C: (5,)}  # fewer CPUs than GPUs: shared, never empty


def test_none_pins_nothing() -> None:
    assert case_affinity("none", (A,), (A, B), ALL, lambda u: NODE0) == Affinity(None)


def test_an_explicit_list_is_cut_to_the_allowed_cpus() -> None:
    assert case_affinity("0-3", (), (), ALL) == Affinity((0, 1, 2, 3))
    assert case_affinity("2-5", (A,), (A,), (0, 1, 2, 3)) == Affinity((2, 3))
    with pytest.raises(AffinityError, match="leaves no CPU this process may use \\(0-3\\)"):
        case_affinity("8-9", (), (), (0, 1, 2, 3))


def test_auto_gives_each_worker_its_share_of_its_gpus_node() -> None:
    local = {A: NODE0, B: NODE0, C: NODE1, D: NODE1}.get
    visible = (A, B, C, D)
    assert case_affinity("auto", (B,), visible, ALL, local).cpus == (4, 5, 6, 7)
    assert case_affinity("auto", (C,), visible, ALL, local).cpus == (8, 9, 10, 11)
    assert case_affinity("auto", (B, C), visible, ALL, local).cpus == (4, 5, 6, 7, 8, 9, 10, 11)  # a 2-GPU case
    assert case_affinity("auto", (A,), visible, (1, 2, 3, 9), local).cpus == (1, 2, 3)  # a cpuset narrows it


def test_auto_leaves_unpinned_with_a_note_where_it_cannot_decide() -> None:
    local = {A: NODE0}.get
    cpu_case = case_affinity("auto", (), (A,), ALL, local)
    assert cpu_case.cpus is None and "CPU case" in (cpu_case.note or "")
    unknown = case_affinity("auto", (B,), (A, B), ALL, local)
    assert unknown.cpus is None and "NVML names no local CPUs for GPU GPU-b" in (unknown.note or "")
    outside = case_affinity("auto", (A,), (A,), (12, 13), local)
    assert outside.cpus is None and "outside this process's (12-13)" in (outside.note or "")


class AffinityNvml:
    """What gpu_local_cpus uses of pynvml."""

    class NVMLError(Exception):
        pass

    def __init__(self, masks: dict[str, list[int]]) -> None:
        self.masks = masks
        self.words: list[int] = []

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        if uuid not in self.masks:
            raise self.NVMLError("Not Found")
        return uuid

    def nvmlDeviceGetCpuAffinity(self, handle: str, words: int) -> list[int]:
        self.words.append(words)
        return self.masks[handle]


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch):
    gpus._nvml.cache_clear()

    def install(fake: Any) -> Any:
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        return fake

    yield install
    gpus._nvml.cache_clear()


def test_gpu_local_cpus_reads_nvml(fake_nvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 96)
    fake = fake_nvml(AffinityNvml({A: [0xFF, 0], B: [0, 0]}))
    assert cpus.gpu_local_cpus(A) == NODE0
    assert fake.words == [2]  # 96 CPUs need two 64-bit words
    assert cpus.gpu_local_cpus(B) is None  # an empty mask says nothing
    assert cpus.gpu_local_cpus(C) is None  # a GPU NVML does not know


def test_gpu_local_cpus_without_nvml(fake_nvml) -> None:
    fake_nvml(None)
    assert cpus.gpu_local_cpus(A) is None


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_recipe_pin_applies_to_the_started_process() -> None:
    import subprocess

    from pytest_mlperf.host.pool.recipe import LaunchRecipe

    cpu = min(os.sched_getaffinity(0))
    recipe = LaunchRecipe(cpus=(cpu,))
    out = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                         preexec_fn=recipe.pin, capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"[{cpu}]"
    assert f"cpus={cpu}" in recipe.describe() and recipe.key() != LaunchRecipe().key()
