"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pytest_mlperf.host.results.report import STRICT_RESULTS_ENV

# every results.json that a test's pytest session writes must match results_format (else that session fails)
os.environ.setdefault(STRICT_RESULTS_ENV, "1")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def resnet50_project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester project holding the repository's own ResNet50 benchmark under benchmarks/."""
    (pytester.path / "benchmarks").mkdir()
    shutil.copy(BENCHMARKS / "test_resnet50.py", pytester.path / "benchmarks" / "test_resnet50.py")
    return pytester
