"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def resnet50_project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester project holding the repository's own ResNet50 benchmark under benchmarks/."""
    (pytester.path / "benchmarks").mkdir()
    shutil.copy(BENCHMARKS / "test_resnet50.py", pytester.path / "benchmarks" / "test_resnet50.py")
    return pytester
