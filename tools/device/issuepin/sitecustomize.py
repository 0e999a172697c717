"""Pins LoadGen's issuing thread to one CPU in every runner process, with no change to the plugin (issue 14, goal 3):
put this folder first on PYTHONPATH, and set PYTEST_MLPERF_ISSUE_CPU=N
(and PYTEST_MLPERF_ISSUE_CPU_LOG=DIR for a line per pinned thread).

The vCPUs of the GPU machine have slow states of their own, per CPU (tools/device/vcpu_states.py): two processes
that take turns on one CPU see the same state, on two CPUs they do not. A gate's two arms are two processes, so
their issuing threads on one CPU should see the same state. Pinning the whole runner to that CPU (session 15) made
LoadGen's other threads share it and slowed the op by a third; this pins only the thread that calls the SUT's
issue callback (which serves SingleStream inline), and keeps the threads LoadGen starts for a test off that CPU.
The session-15 figures were taken with a version that checked the thread's mask by a system call on every query
(the same cost in both arms); this one pins once per thread and test.
"""

import importlib.abc
import importlib.machinery
import os
import sys
import threading

_cpu = os.environ.get("PYTEST_MLPERF_ISSUE_CPU", "")
_log = os.environ.get("PYTEST_MLPERF_ISSUE_CPU_LOG", "")  # a folder: one line per pinned thread


def _patch(lg) -> None:
    cpu = int(_cpu)
    construct, start = lg.ConstructSUT, lg.StartTestWithLogSettings
    rest = [set()]
    tests = [0]  # StartTest calls so far: each one restores its caller's mask, so the issuing thread pins again
    done = threading.local()

    def construct_sut(issue, flush):
        def pinned_issue(samples):
            if getattr(done, "test", None) != tests[0]:  # once per thread and test: no system call per query
                done.test = tests[0]
                os.sched_setaffinity(0, {cpu})  # pid 0: the calling thread only
                if _log:
                    with open(os.path.join(_log, f"issuepin-{os.getpid()}.txt"), "a") as f:
                        f.write(f"pinned thread {threading.get_native_id()} to CPU {cpu}; the others: {sorted(rest[0])}\n")
            issue(samples)

        return construct(pinned_issue, flush)

    def start_test(*args):
        mine = os.sched_getaffinity(0)
        tests[0] += 1
        rest[0] = (mine - {cpu}) or mine
        os.sched_setaffinity(0, rest[0])  # threads started by StartTest inherit this thread's mask
        try:
            return start(*args)
        finally:
            os.sched_setaffinity(0, mine)

    lg.ConstructSUT, lg.StartTestWithLogSettings = construct_sut, start_test


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "mlperf_loadgen":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module):
            original(module)
            _patch(module)

        loader.exec_module = exec_module
        return spec


if _cpu:
    sys.meta_path.insert(0, _Finder())
