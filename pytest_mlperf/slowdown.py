"""A synthetic isolation layer with a known cost, for proving the overhead gate (CPU in CI, and the GPU machine).

Used as a candidate launch prefix, the way a real layer's launcher is (`gpu-proxy run -- ...`):

    pytest benchmarks/ --mlperf-candidate-prefix "python -m pytest_mlperf.slowdown --cost 7% --"

It starts the runner in this same process after wrapping every backend the runner creates: each backend call
(`infer`, `generate_batch`, `generate_stream`) is followed by a busy wait of `cost / (1 - cost)` times the call's
own duration, so every call takes `1 / (1 - cost)` times as long. With one inference stream that lowers
throughput by exactly `cost`; latencies grow by `cost / (1 - cost)` of the backend's share of them.
`--per-call-us N` adds a fixed N microseconds per call instead or as well (like a per-launch interposer).
A busy wait, not a sleep: a sleep's wake-up jitter (tens of microseconds) would blur small costs. `--sleep` waits
by sleeping instead, for large costs on a shared machine: a busy wait competes for the CPUs (and holds the GIL
that LoadGen's callbacks need), so on a loaded machine it costs more than it says, while a sleep's cost does not
depend on free CPUs.
"""

from __future__ import annotations

import argparse
import runpy
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

WRAPPED_CALLS = ("infer", "generate_batch", "generate_stream")


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def nap(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)


class SlowedBackend:
    """A backend whose calls cost `ratio` times their own duration plus `per_call_s` more, waited by `wait` (a busy
    wait by default) and timed by `clock`."""

    def __init__(self, inner: Any, ratio: float, per_call_s: float, *, wait: Callable[[float], None] = spin,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self._inner = inner
        self._ratio = ratio
        self._per_call_s = per_call_s
        self._wait = wait
        self._clock = clock
        info = inner.info
        how = "" if wait is spin else f" wait={getattr(wait, '__name__', 'custom')}"
        details = {**info.details, "slowdown": f"ratio={ratio:.6g} per_call_us={per_call_s * 1e6:.6g}{how}"}
        self.info = type(info)(backend=info.backend, device=info.device, precision=info.precision, details=details)

    def _slowed(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            start = self._clock()
            out = call(*args, **kwargs)
            self._wait((self._clock() - start) * self._ratio + self._per_call_s)
            return out

        return run

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        return self._slowed(attr) if name in WRAPPED_CALLS and callable(attr) else attr


def parse_cost(text: str) -> float:
    """'7%' or '0.07' -> 0.07, in [0, 1)."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad cost {text!r}: write e.g. 7% or 0.07") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"cost must be in [0%, 100%), got {text!r}")
    return value


def install(cost: float, per_call_us: float, sleep: bool = False) -> None:
    """Wraps the backends that the runner, run as __main__ after this, will create (it imports the name then)."""
    from pytest_mlperf.runner import backends as suts

    create = suts.create_backend
    ratio = cost / (1.0 - cost)

    def create_slowed(*args: Any, **kwargs: Any) -> Any:
        return SlowedBackend(create(*args, **kwargs), ratio, per_call_us / 1e6, wait=nap if sleep else spin)

    suts.create_backend = create_slowed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_mlperf.slowdown",
        description="Run a pytest-mlperf runner with a known synthetic cost on every backend call.",
        epilog="example: --mlperf-candidate-prefix 'python -m pytest_mlperf.slowdown --cost 7%% --'")
    parser.add_argument("--cost", type=parse_cost, default=0.0, help="throughput cost per call, e.g. 7%%")
    parser.add_argument("--per-call-us", type=float, default=0.0, help="fixed extra microseconds per call")
    parser.add_argument("--sleep", action="store_true",
                        help="wait by sleeping, not spinning: a cost that does not grow when the CPUs are busy "
                             "(for large costs; blurs costs under a millisecond per call)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- PYTHON -m MODULE ARGS...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if len(command) < 3 or command[1] != "-m":
        parser.error("expected the runner's command after --: PYTHON -m MODULE ARGS... "
                     "(the plugin appends it to the candidate prefix)")
    if args.per_call_us < 0:
        parser.error("--per-call-us must not be negative")
    install(args.cost, args.per_call_us, args.sleep)
    module = command[2]
    sys.argv = [module, *command[3:]]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
