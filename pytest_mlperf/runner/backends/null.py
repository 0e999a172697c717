"""A backend that answers each sample with its own index after a delay, and can misbehave on request.

Options (the benchmark's marker, `sut_options={...}`, or `--mlperf-sut-option null.KEY=VALUE`):
  delay_ms: sleep per batch (default 1); per_sample_ms: extra sleep per sample (default 0);
  raise_after / crash_after / hang_after: after that many batches, raise, kill the process, or never return.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping, Sequence

import numpy as np

from pytest_mlperf.runner.backends.base import BackendInfo, check_option_names


class NullBackend:
    def __init__(self, options: Mapping[str, object]) -> None:
        check_option_names("null", options)
        self.delay_s = float(options.get("delay_ms", 1.0)) / 1000  # type: ignore[arg-type]
        self.per_sample_s = float(options.get("per_sample_ms", 0.0)) / 1000  # type: ignore[arg-type]
        self._faults = {k: int(options[k]) for k in ("raise_after", "crash_after", "hang_after") if k in options}  # type: ignore[call-overload]
        self._batches = 0
        # the delays in effect, so that a run's record shows what its options did (tests read them back)
        details = {"delay_ms": f"{self.delay_s * 1000:g}", "per_sample_ms": f"{self.per_sample_s * 1000:g}"}
        self.info = BackendInfo(backend="null", device="cpu", precision="none", details=details)

    def stage(self, indices: Sequence[int], samples: np.ndarray) -> None:
        """Nothing to stage: a sample is its index."""

    def infer(self, indices: Sequence[int]) -> np.ndarray:
        self._batches += 1
        self._misbehave()
        time.sleep(self.delay_s + self.per_sample_s * len(indices))
        return np.asarray(indices, dtype=np.int32).reshape(-1, 1)

    def _misbehave(self) -> None:
        n = self._batches
        if n > self._faults.get("raise_after", n):
            raise RuntimeError(f"null SUT: raising on batch {n} as asked (raise_after)")
        if n > self._faults.get("crash_after", n):
            os.kill(os.getpid(), signal.SIGKILL)
        if n > self._faults.get("hang_after", n):
            while True:
                time.sleep(3600)

    def close(self) -> None:
        """Nothing held."""
