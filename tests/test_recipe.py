"""Tests for pytest_mlperf.host.pool.recipe: how a runner process is launched (prefix, environment, GPU pinning)."""

from __future__ import annotations

import sys

import pytest

from pytest_mlperf.host.pool.recipe import LaunchRecipe


def test_from_strings_splits_the_prefix_and_reads_env_pairs() -> None:
    r = LaunchRecipe.from_strings("candidate", "gpu-proxy run --mode 'a b' --", ["LD_PRELOAD=/opt/x.so", "A=1=2"])
    assert r.prefix == ("gpu-proxy", "run", "--mode", "a b", "--")
    assert dict(r.env) == {"LD_PRELOAD": "/opt/x.so", "A": "1=2"}
    assert r.argv("ADDR", "KEY") == ["gpu-proxy", "run", "--mode", "a b", "--", sys.executable, "-m",
                                     "pytest_mlperf.runner.child", "ADDR", "KEY"]


@pytest.mark.parametrize("entry", ["NOVALUE", "=x"])
def test_bad_env_entries_say_how_to_write_them(entry: str) -> None:
    with pytest.raises(ValueError, match="write NAME=VALUE"):
        LaunchRecipe.from_strings("candidate", None, [entry])


def test_pinned_gpus_set_visible_devices_in_pci_order_and_keep_the_rest() -> None:
    r = LaunchRecipe(env={"X": "1"}, gpus=("GPU-b", "GPU-a"))
    env = r.environment({"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0,1,2,3"})
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-b,GPU-a"  # the case's GPUs, its first is CUDA device 0
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # an index means the same GPU as in nvidia-smi
    assert env["PATH"] == "/bin" and env["X"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert "CUDA_VISIBLE_DEVICES=GPU-b,GPU-a" in r.describe()


def test_no_pinning_inherits_and_an_empty_set_hides_every_gpu() -> None:
    assert LaunchRecipe().environment({"CUDA_VISIBLE_DEVICES": "3"})["CUDA_VISIBLE_DEVICES"] == "3"
    assert LaunchRecipe(gpus=()).environment({"CUDA_VISIBLE_DEVICES": "3"})["CUDA_VISIBLE_DEVICES"] == ""
    assert LaunchRecipe().describe() == "(plain)"


def test_recipes_differing_in_anything_have_different_keys() -> None:
    base = LaunchRecipe()
    others = [LaunchRecipe(name="candidate"), LaunchRecipe(prefix=("x",)), LaunchRecipe(env={"A": "1"}),
              LaunchRecipe(gpus=("GPU-a",)), LaunchRecipe(gpus=())]
    assert len({base.key(), *(o.key() for o in others)}) == 1 + len(others)
