"""pytest-mlperf: MLPerf Inference benchmarks as pytest regression tests, measured by MLCommons LoadGen."""

from __future__ import annotations

__version__ = "0.1.0"
