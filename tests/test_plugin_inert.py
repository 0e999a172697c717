"""The plugin is installed wherever pytest is: a session that does not use MLPerf must run as if it were absent (no
GPU discovery, no placement, xdist's own -n auto), and one that does is activated by an --mlperf-* option, an
mlperf ini key, a collected `mlperf` case or an MLPerf fixture. Real sessions (pytester, in subprocesses so that a
conftest can make GPU discovery raise in the controller and in every xdist worker)."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("xdist")

GPU = "GPU-aaaaaaaa-0000-0000-0000-000000000000"

# GPU discovery raises in every process of the session: calling it at all fails the session
NO_DISCOVERY = """
import pytest_mlperf.host.machine.gpus, pytest_mlperf.host.plugin

def _discovery_called(*args, **kwargs):
    raise RuntimeError("GPU discovery was called")

pytest_mlperf.host.machine.gpus.discover = _discovery_called
pytest_mlperf.host.plugin.discover = _discovery_called
"""

UNRELATED = """
import os

def test_one():
    assert 1 + 1 == 2

def test_two():
    assert os.environ.get("CUDA_VISIBLE_DEVICES") is None  # nothing pinned this process

def test_three():
    pass
"""


@pytest.fixture
def one_gpu(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU host with one GPU, listed by a stand-in nvidia-smi (what made `-n 2` a usage error before)."""
    bin_dir = pytester.path / "fakebin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\nprintf '0, {GPU}, Fake GPU, 580.00, 81559\\n'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTEST_MLPERF_LOCK_DIR", str(pytester.path / "locks"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


@pytest.mark.parametrize("workers", [[], ["-n", "2"], ["-n", "auto"]])
def test_an_unrelated_suite_runs_as_without_the_plugin(pytester: pytest.Pytester, one_gpu, workers) -> None:
    pytester.makeconftest(NO_DISCOVERY)
    pytester.makepyfile(test_unrelated=UNRELATED)
    without = run(pytester, "-p", "no:mlperf", *workers)
    without.assert_outcomes(passed=3)
    result = run(pytester, *workers)
    assert result.ret == without.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=3)
    assert "GPU discovery was called" not in result.stdout.str() + result.stderr.str()
    assert "MLPerf results" not in result.stdout.str()
    assert not (pytester.path / "mlperf-results").exists()
    if workers == ["-n", "auto"]:  # xdist's own count, not one worker per GPU
        started = [line for line in without.stdout.lines if "workers [" in line or "created:" in line]
        assert started and started == [line for line in result.stdout.lines if "workers [" in line or "created:" in line]


def test_an_mlperf_option_activates_the_session(pytester: pytest.Pytester, one_gpu) -> None:
    pytester.makeconftest(NO_DISCOVERY)
    pytester.makepyfile(test_unrelated=UNRELATED)
    result = run(pytester, "--mlperf-profile=smoke")
    assert result.ret != pytest.ExitCode.OK
    assert "GPU discovery was called" in result.stdout.str() + result.stderr.str()


def test_an_mlperf_ini_key_makes_auto_one_worker_per_gpu(pytester: pytest.Pytester, one_gpu) -> None:
    pytester.makeini("[pytest]\nmlperf_profile = smoke\n")
    pytester.makepyfile(test_unrelated=UNRELATED)
    result = run(pytester, "-n", "auto")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*1 worker [[]3 items[]]*"])


MARKED = """
import pytest
from pytest_mlperf.host.plugin import SESSION_KEY

@pytest.mark.mlperf(workload="null")
def test_marked(request):
    assert request.config.stash[SESSION_KEY].placement.home == "{gpu}"

@pytest.mark.mlperf(workload="null")
def test_marked_measures(mlperf_session):
    pass
"""

FIXTURE_ONLY = """
def test_fixture(mlperf_session):
    assert mlperf_session.placement.home == "{gpu}"
"""


@pytest.mark.parametrize("source", [MARKED, FIXTURE_ONLY], ids=["marker", "fixture"])
def test_a_collected_mlperf_case_or_fixture_activates_the_session(pytester: pytest.Pytester, one_gpu,
                                                                   source: str) -> None:
    pytester.makepyfile(test_bench=source.format(gpu=GPU), test_unrelated=UNRELATED)
    result = run(pytester)
    result.assert_outcomes(passed=5 if source is MARKED else 4)


def test_mlperf_cases_say_when_the_workers_outnumber_the_gpus(pytester: pytest.Pytester, one_gpu) -> None:
    """Found at collection in the workers, where a usage error would crash them: each MLPerf case says it, the
    unrelated tests still run."""
    pytester.makepyfile(test_bench=MARKED.format(gpu=GPU), test_unrelated=UNRELATED)
    result = run(pytester, "-n", "2")
    result.assert_outcomes(passed=3, failed=1, errors=1)
    result.stdout.fnmatch_lines(["*2 pytest-xdist workers but 1 GPU(s) visible*-n auto counts GPUs only*"])
