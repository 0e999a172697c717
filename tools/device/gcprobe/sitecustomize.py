"""Python's cyclic garbage collector in the processes of a device run (issue 13's tail lead), with no change to the
plugin: put this folder first on PYTHONPATH and every Python process started with it imports this module.

    PYTEST_MLPERF_GC_PROBE=off        gc.disable() in every process (the runner child included)
    PYTEST_MLPERF_GC_PROBE=log:DIR    every collection of 0.2 ms or more appended to DIR/gc-PID.txt as it ends:
                                      "generation duration_ms monotonic_s collected", after a first line with argv
"""

import gc
import os
import sys
import time

_mode = os.environ.get("PYTEST_MLPERF_GC_PROBE", "")
if _mode == "off":
    gc.disable()
elif _mode.startswith("log:"):
    _dir = _mode[4:]
    os.makedirs(_dir, exist_ok=True)
    _path = os.path.join(_dir, f"gc-{os.getpid()}.txt")
    _began = [0.0]
    _header = [False]

    def _on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            _began[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - _began[0]) * 1000
        if ms < 0.2:
            return
        with open(_path, "a") as f:
            if not _header[0]:
                f.write("# " + " ".join(sys.argv) + "\n")
                _header[0] = True
            f.write(f"{info.get('generation')} {ms:.3f} {time.monotonic():.3f} {info.get('collected')}\n")

    gc.callbacks.append(_on_gc)
