"""The runner protocol's version (contract/protocol.py): every command carries it, and a runner of another version
refuses the command, naming both, instead of misreading it. The pattern is a candidate launched under a prefix that
runs another install of pytest-mlperf (a container, a remote host behind an API-remoting layer)."""

from __future__ import annotations

import sys

import pytest

from pytest_mlperf.contract import protocol
from pytest_mlperf.contract.protocol import PROTOCOL, PROTOCOL_VERSION, command, protocol_problem

BENCH = """
import pytest
pytestmark = pytest.mark.mlperf(workload="null", scenarios=["Offline"], sut_options={"delay_ms": 2})

def test_null(null_sut, loadgen):
    loadgen.run(null_sut).assert_valid()
"""

# a runner from an install one protocol version ahead: the module's constant changed, nothing else
OTHER_INSTALL = """
import runpy, sys
from pytest_mlperf.contract import protocol
protocol.PROTOCOL_VERSION += 1
sys.argv = sys.argv[4:]  # other_install.py -- PYTHON -m MODULE ARGS -> MODULE ARGS
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def test_every_command_carries_the_version() -> None:
    assert command("run", request={"x": 1}) == {"op": "run", PROTOCOL: PROTOCOL_VERSION, "request": {"x": 1}}
    assert protocol_problem(command("load")) is None


@pytest.mark.parametrize("theirs", [PROTOCOL_VERSION + 1, None, "1"])
def test_another_version_is_a_problem_naming_both(theirs: object) -> None:
    message = {"op": "run"} if theirs is None else {"op": "run", PROTOCOL: theirs}
    problem = protocol_problem(message)
    assert problem is not None
    assert f"speaks version {theirs!r}, this runner {protocol.PROTOCOL_VERSION}" in problem
    assert "install the same version on both sides" in problem


def test_a_runner_of_another_version_fails_the_case_saying_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_bench=BENCH, other_install=OTHER_INSTALL)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--mlperf-reference-prefix={sys.executable} other_install.py --")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*runner protocol: the pytest process speaks version {PROTOCOL_VERSION}, this "
                                 f"runner {PROTOCOL_VERSION + 1}*--mlperf-reference-prefix*"])
    assert "Traceback" not in result.stdout.str()
