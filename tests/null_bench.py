"""The benchmark file that pytester tests of the plugin write: one case of the null workload (no model, no data),
its scenarios, backend options and calibration as the test asks. One template, so that the plugin's, the runner
lifetime's and the progress tests run the same case."""

from __future__ import annotations

from typing import Iterable

import pytest

_SOURCE = """
import pytest
pytestmark = pytest.mark.mlperf(workload="null", scenarios={scenarios!r}, sut_options={options!r},
                                calibrate={calibrate!r})

def test_null(null_sut, loadgen, baseline):
    run = loadgen.run(null_sut)
    run.assert_valid()
{judge}"""


def null_bench_source(scenarios: Iterable[str] = ("Offline",), calibrate: bool = True, *, judge_baseline: bool = False,
                      **options: object) -> str:
    judge = "    baseline.assert_no_regression(run)\n" if judge_baseline else ""
    return _SOURCE.format(scenarios=list(scenarios), options=options, calibrate=calibrate, judge=judge)


def write_null_bench(pytester: pytest.Pytester, name: str = "test_bench", scenarios: Iterable[str] = ("Offline",),
                     calibrate: bool = True, *, judge_baseline: bool = False, **options: object) -> None:
    pytester.makepyfile(**{name: null_bench_source(scenarios, calibrate, judge_baseline=judge_baseline, **options)})
