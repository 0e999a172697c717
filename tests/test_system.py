"""Tests for pytest_mlperf.host.machine.system: nvidia-smi parsing, CUDA_VISIBLE_DEVICES, system keys."""

from __future__ import annotations

import gc
import os
import re
import stat
import warnings
from pathlib import Path

import pytest

from pytest_mlperf.host.machine.system import GPU, cpu_model, cpu_system, describe_system, gpu_system, parse_nvidia_smi, visible

UUIDS = [
    "GPU-5d1e7c1a-9f3b-4c2e-8a6d-0123456789ab",
    "GPU-5d1e7c1a-0000-4c2e-8a6d-0123456789ac",  # shares an 8-character prefix with the first
    "GPU-a0b1c2d3-e4f5-6789-abcd-ef0123456789",
    "GPU-ffffffff-1111-2222-3333-444444444444",
]
H100 = "NVIDIA H100 80GB HBM3"
SMI_4 = "\n".join(f"{i}, {u}, {H100}, 580.65.06, 81559" for i, u in enumerate(UUIDS)) + "\n"


def gpus(n: int = 4, name: str = H100) -> list[GPU]:
    return [GPU(i, UUIDS[i % 4] if n <= 4 else f"GPU-{i:08x}-0000", name, "580.65.06", 81559) for i in range(n)]


# --------------------------------------------------------------------------- parse_nvidia_smi


def test_parse_nvidia_smi_realistic_line() -> None:
    (g,) = parse_nvidia_smi("0, GPU-5d1e7c1a-9f3b-4c2e-8a6d-0123456789ab, NVIDIA H100 80GB HBM3, 580.65.06, 81559\n")
    assert g == GPU(0, "GPU-5d1e7c1a-9f3b-4c2e-8a6d-0123456789ab", "NVIDIA H100 80GB HBM3", "580.65.06", 81559)


def test_parse_nvidia_smi_several_gpus_in_order() -> None:
    parsed = parse_nvidia_smi(SMI_4)
    assert [g.index for g in parsed] == [0, 1, 2, 3]
    assert [g.uuid for g in parsed] == UUIDS
    assert {g.name for g in parsed} == {H100}


def test_parse_nvidia_smi_tolerates_fractional_memory_and_crlf() -> None:
    (g,) = parse_nvidia_smi("3, GPU-x, NVIDIA H200, 570.86.15, 143771.0\r\n")
    assert (g.index, g.name, g.driver, g.memory_mib) == (3, "NVIDIA H200", "570.86.15", 143771)


@pytest.mark.parametrize("junk", [
    "",
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
    "index, uuid, name, driver_version, memory.total [MiB]",  # a header line
    "0, GPU-x, NVIDIA H100, 580.65.06, [N/A]",  # memory not available
    "0, GPU-x, NVIDIA H100, 580.65.06",  # a field short
    "0, GPU-x, NVIDIA H100, 580.65.06, 81559, extra",  # a field too many
    "zero, GPU-x, NVIDIA H100, 580.65.06, 81559",
])
def test_parse_nvidia_smi_skips_junk_lines(junk: str) -> None:
    text = f"{junk}\n1, {UUIDS[1]}, {H100}, 580.65.06, 81559\n{junk}\n"
    assert [g.index for g in parse_nvidia_smi(text)] == [1]


def test_parse_nvidia_smi_nothing() -> None:
    assert parse_nvidia_smi("") == []
    assert parse_nvidia_smi("No devices were found\n") == []


# --------------------------------------------------------------------------- visible


def test_visible_none_means_all() -> None:
    all_gpus = gpus()
    assert visible(all_gpus, None) == all_gpus


def test_visible_empty_string_hides_every_gpu() -> None:
    assert visible(gpus(), "") == []


def test_visible_indices_in_the_given_order() -> None:
    g = gpus()
    assert visible(g, "2,0") == [g[2], g[0]]
    assert visible(g, " 3 , 1 ") == [g[3], g[1]]


def test_visible_full_uuids() -> None:
    g = gpus()
    assert visible(g, f"{UUIDS[3]},{UUIDS[0]}") == [g[3], g[0]]


def test_visible_uuid_prefixes() -> None:
    g = gpus()
    assert visible(g, "GPU-a0b1c2d3") == [g[2]]
    assert visible(g, "GPU-ffff,1") == [g[3], g[1]]


def test_visible_mixes_indices_and_uuids() -> None:
    g = gpus()
    assert visible(g, f"1,{UUIDS[2]}") == [g[1], g[2]]


@pytest.mark.parametrize("env, expected", [
    ("0,7,1", [0]),  # index 7 does not exist: CUDA ignores it and everything after it
    ("2,GPU-nope,0", [2]),
    ("-1,0", []),  # the usual way to hide every GPU
    ("1,,3", [1, 3]),  # empty entries are skipped
    ("abc", []),
])
def test_visible_stops_at_the_first_invalid_entry(env: str, expected: list[int]) -> None:
    g = gpus()
    assert [x.index for x in visible(g, env)] == expected


# --------------------------------------------------------------------------- gpu_system / cpu_system


def test_gpu_system_key_for_one_gpu() -> None:
    info = gpu_system(gpus(1))
    assert info.key == "1xNVIDIA-H100-80GB-HBM3"
    assert info.details["gpus"] == f"0:{H100}:{UUIDS[0]}"
    assert info.details["driver"] == "580.65.06"
    assert info.details["gpu_memory_mib"] == "81559"
    assert info.details["cpu"] == cpu_model()


def test_gpu_system_key_for_eight_identical_gpus() -> None:
    info = gpu_system(gpus(8, "NVIDIA H200"))
    assert info.key == "8xNVIDIA-H200"
    assert len(info.details["gpus"].split("; ")) == 8


def test_gpu_system_key_for_a_mixed_set_is_sorted_and_counted() -> None:
    mixed = [
        GPU(0, "GPU-a", "NVIDIA L4", "550.1", 23034),
        GPU(1, "GPU-b", "NVIDIA A100-SXM4-80GB", "550.1", 81920),
        GPU(2, "GPU-c", "NVIDIA L4", "550.1", 23034),
    ]
    info = gpu_system(mixed)
    assert info.key == "1xNVIDIA-A100-SXM4-80GB+2xNVIDIA-L4"
    # order of the visible list does not change the key
    assert gpu_system(list(reversed(mixed))).key == info.key


def test_gpu_system_key_is_a_safe_name() -> None:
    info = gpu_system([GPU(0, "GPU-a", "  NVIDIA RTX 6000 Ada (ES) / rev.2 ", "1", 1)])
    assert info.key == "1xNVIDIA-RTX-6000-Ada-ES-rev-2"
    assert re.fullmatch(r"[A-Za-z0-9+-]+", info.key)


def test_cpu_system_key_format() -> None:
    info = cpu_system()
    cores = os.cpu_count() or 1
    assert info.key.startswith("cpu-")
    assert info.key.endswith(f"-{cores}c")
    assert re.fullmatch(r"cpu-[A-Za-z0-9]+(-[A-Za-z0-9]+)*-\d+c", info.key)
    assert info.details["cores"] == str(cores)
    assert info.details["cpu"] == cpu_model()
    model_slug = re.sub(r"[^A-Za-z0-9]+", "-", cpu_model()).strip("-")
    assert info.key == f"cpu-{model_slug}-{cores}c"


def test_cpu_model_is_a_non_empty_name() -> None:
    assert cpu_model().strip()


def test_cpu_model_closes_proc_cpuinfo() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        cpu_model()
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_describe_system_cpu() -> None:
    assert describe_system("cpu") == cpu_system()
    assert describe_system("cpu", "0") == cpu_system()  # CUDA_VISIBLE_DEVICES does not matter on the CPU


# --------------------------------------------------------------------------- describe_system("cuda") with a fake nvidia-smi


@pytest.fixture
def fake_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Puts an `nvidia-smi` printing `output` (exit status `rc`) first on PATH."""

    def install(output: str, rc: int = 0) -> None:
        (tmp_path / "smi.txt").write_text(output)
        exe = tmp_path / "nvidia-smi"
        exe.write_text(f"#!/bin/sh\nwhile IFS= read -r l; do printf '%s\\n' \"$l\"; done < '{tmp_path}/smi.txt'\n"
                       f"exit {rc}\n")
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
        monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return install


def test_describe_system_cuda_counts_the_visible_gpus(fake_smi) -> None:
    fake_smi(SMI_4)
    assert describe_system("cuda").key == "4xNVIDIA-H100-80GB-HBM3"
    info = describe_system("cuda", "3,GPU-5d1e7c1a-9")
    assert info.key == "2xNVIDIA-H100-80GB-HBM3"
    assert info.details["gpus"].startswith(f"3:{H100}:{UUIDS[3]}; 0:")


def test_describe_system_cuda_reads_the_environment(fake_smi, monkeypatch) -> None:
    fake_smi(SMI_4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert describe_system("cuda").key == "1xNVIDIA-H100-80GB-HBM3"
    assert describe_system("cuda", "0,1,2").key == "3xNVIDIA-H100-80GB-HBM3"  # the argument wins


def test_describe_system_cuda_without_usable_gpus_is_the_cpu(fake_smi) -> None:
    fake_smi(SMI_4)
    assert describe_system("cuda", "-1") == cpu_system()
    fake_smi("NVIDIA-SMI has failed\n", rc=9)
    assert describe_system("cuda") == cpu_system()
