"""What a case is doing, said while it does it: the phases of a case (runner start, model and data load,
calibration, the LoadGen test with its predicted length, accuracy scoring, the gate's rounds), the lines pytest's
terminal reporter shows for them, and which lines each verbosity shows.

Free of pytest and of runners: the runner child sends a `Notice` when it enters a phase inside a command
(contract/protocol.py), the client enters the phases of the commands it sends and keeps a `PhaseClock`, and the
plugin writes the lines. A phase that lasts much longer than predicted is said again ("still ..."), and a runner
killed at its timeout is named with the phase it was in (`PhaseClock.during`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pytest_mlperf.contract.protocol import Notice, Phase

# verbosity a line needs: QUIET lines show with -q, NORMAL ones by default, VERBOSE ones with -v; -qq shows none
QUIET, NORMAL, VERBOSE = -1, 0, 1


@dataclass(frozen=True)
class Still:
    """A phase still going: for how long, and how long its command has left before the runner is killed."""

    elapsed_s: float
    left_s: float | None = None


def seconds(value: float) -> str:
    """A duration for a progress line: 0.3 s, 12 s, 640 s."""
    return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"


def notice_text(n: Notice) -> str:
    """The phase entered, e.g. 'running the LoadGen test, about 4 s: 64 queries of about 60 ms each'."""
    text = n.phase.value + (f" ({n.detail})" if n.detail else "")
    if n.predicted_s is not None:
        text += f", about {seconds(n.predicted_s)}" + (f": {n.why}" if n.why else "")
    return text


def much_longer(predicted_s: float | None, elapsed_s: float) -> bool:
    """Whether a phase has run much longer than predicted: twice its prediction and 5 s more."""
    return predicted_s is not None and elapsed_s >= first_check_s(predicted_s)


def first_check_s(predicted_s: float | None) -> float:
    """When a phase is first said to be still going: twice its prediction and 5 s more (a calibration on a busy
    machine takes longer, a hung one never ends); 30 s into a phase without a prediction. Then at doubling times."""
    return 2 * predicted_s + 5 if predicted_s is not None else 30.0


def still_text(n: Notice, still: Still) -> str:
    """A phase still going, e.g. 'still running the LoadGen test after 13 s, predicted about 4 s: much longer than
    predicted; killed in 287 s (the case's timeout)'."""
    text = f"still {n.phase.value}" + (f" ({n.detail})" if n.detail else "") + f" after {seconds(still.elapsed_s)}"
    if n.predicted_s is not None:
        text += f", predicted about {seconds(n.predicted_s)}"
        if much_longer(n.predicted_s, still.elapsed_s):
            text += ": much longer than predicted"
    if still.left_s is not None:
        text += f"; killed in {seconds(max(0.0, still.left_s))} (the case's timeout)"
    return text


def during_text(n: Notice, elapsed_s: float) -> str:
    """Where a command was when it failed, e.g. 'running the LoadGen test (for 8 s; predicted about 0.5 s)'."""
    predicted = f"; predicted about {seconds(n.predicted_s)}" if n.predicted_s is not None else ""
    return f"{n.phase.value} (for {seconds(elapsed_s)}{predicted})"


def line(case: str, text: str) -> str:
    """A line for the terminal: 'mlperf: resnet50 Offline performance: calibrating, about 1.3 s'."""
    return f"mlperf: {case}: {text}"


def level(phase: Phase, *, still: bool, in_round: bool) -> int:
    """The verbosity a line needs. A phase still going past its prediction and the LoadGen test (the long phase,
    with its predicted length) show with -q; the other phases by default, except preparing (short, named when a
    runner is killed in it) and the phases inside each gate round (the round's own line shows), which need -v."""
    if still:
        return QUIET
    if in_round or phase is Phase.PREPARE:
        return VERBOSE
    return QUIET if phase is Phase.LOADGEN else NORMAL


def shown(needed: int, verbosity: int) -> bool:
    """Whether a line of `needed` verbosity shows at pytest's verbosity (-qq: none)."""
    return verbosity > -2 and verbosity >= needed


def round_text(index: int, max_rounds: int, round_s: float) -> str:
    """A gate round started: 'gate round 3 of at most 60, about 1.0 s (two runs of 0.5 s)'."""
    return (f"gate round {index + 1} of at most {max_rounds}, about {seconds(2 * round_s)} "
            f"(two runs of {seconds(round_s)})")


def search_round_text(index: int, max_rounds: int, probes: int, probe_s: float) -> str:
    """A capacity gate's round started: 'gate round 3 of at most 60, a capacity search per arm (at most 6 probes of
    0.5 s each)'."""
    return (f"gate round {index + 1} of at most {max_rounds}, a capacity search per arm (at most {probes} probes "
            f"of {seconds(probe_s)} each)")


Sink = Callable[[str, int], None]  # a line and the verbosity it needs: the terminal's writer (host/plugin.py)
Report = Callable[[Notice, "Still | None"], None]  # a phase entered (None) or still going


def reporter(sink: Sink | None, case: str, *, in_round: bool = False) -> Report | None:
    """What a runner command reports its phases to: lines for `sink` naming `case`; None without a sink."""
    if sink is None:
        return None

    def report(notice: Notice, still: Still | None) -> None:
        text = notice_text(notice) if still is None else still_text(notice, still)
        sink(line(case, text), level(notice.phase, still=still is not None, in_round=in_round))

    return report


class PhaseClock:
    """The phase a runner command is in and since when. `tick` (called while waiting for the reply) reports the
    phase again when it lasts past `first_check_s`, then at doubling times; `during` names it for a failure."""

    def __init__(self, report: Report | None = None, *, deadline: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.report = report
        self.deadline = deadline  # the clock's time at which the command's runner is killed
        self.clock = clock
        self.notice: Notice | None = None
        self.since = clock()
        self._next = 0.0

    def enter(self, notice: Notice) -> None:
        self.notice, self.since = notice, self.clock()
        self._next = first_check_s(notice.predicted_s)
        if self.report is not None:
            self.report(notice, None)

    def tick(self) -> None:
        if self.notice is None:
            return
        now = self.clock()
        elapsed = now - self.since
        if elapsed < self._next:
            return
        self._next = 2 * elapsed
        if self.report is not None:
            self.report(self.notice, Still(elapsed, None if self.deadline is None else self.deadline - now))

    def during(self) -> str:
        """'<phase> (for N s; predicted about M s)', or '' before any phase."""
        return "" if self.notice is None else during_text(self.notice, self.clock() - self.since)
