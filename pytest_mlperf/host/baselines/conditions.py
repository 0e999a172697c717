"""What differs between the conditions a baseline was recorded under and this run's, said in words.

None of these is part of a baseline's key (scenario, mode, backend, precision, GPUs), so a run is judged against a
baseline recorded otherwise; each difference that can explain a verdict is said beside it, so that a user reads
"the comparison is across X" rather than a bare regression:

- backend options (`--mlperf-sut-option`, a marker's `sut_options`): a note on every such comparison;
- the run's minimum duration: a tail percentile of a 60 s run sees more of the tail than one of a 10 s run
  (H200 ResNet50 Server at the same load: p99 12.2 ms in 10 s, 14.3 ms in 60 s), so latency is compared like
  for like only at the same length;
- the backend's details (library versions, kernel layout, ...), when outputs differ: float rounding follows the
  kernels (on the H200 cuDNN's NHWC convolutions changed 3-4 of 1024 stand-in predictions against NCHW).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_mlperf.host.baselines.store import Baseline

# backend details that name the run rather than its numerics; left out of the outputs diagnosis
VOLATILE_DETAILS = frozenset({"model"})


def option_values(sut_options: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """A case's backend options as a baseline keeps them: each value as a string (the marker's 8 and the command
    line's '8' are the same option)."""
    return {k: str(v.get("value")) for k, v in sut_options.items()}


def options_differ(baseline: Baseline, sut_options: Mapping[str, Mapping[str, Any]]) -> str | None:
    """What differs between the backend options a baseline was recorded with and this run's, in words; None when
    they match or the baseline predates recording them."""
    recorded = baseline.system.get("sut_options")
    if not isinstance(recorded, dict):
        return None
    shown = _changes(recorded, option_values(sut_options), "unset", "unset")
    return f"backend options differ from the baseline's ({shown}): the comparison is across options" if shown else None


def duration_differs(baseline: Baseline, min_duration_ms: int | None) -> str | None:
    """The run's minimum duration against the one its baseline was recorded with, when they differ (None when
    they match or the baseline did not record one)."""
    recorded = baseline.settings.get("min_duration_ms")
    if not isinstance(recorded, int) or isinstance(recorded, bool) or min_duration_ms is None:
        return None
    if recorded == min_duration_ms:
        return None
    return (f"the baseline was recorded with runs of at least {_seconds(recorded)}, this run lasted at least "
            f"{_seconds(min_duration_ms)}: tail latencies of runs of other lengths do not compare like for like "
            "(a longer run's percentile sees more of the tail); run at the baseline's length or record a baseline "
            "at this one (--mlperf-update-baselines with the same --mlperf-duration)")


def details_differ(baseline: Baseline, details: Mapping[str, Any]) -> str | None:
    """The backend details (as the baseline's `system` keeps them, `backend_KEY`) that differ from this run's,
    in words: what to read when outputs differ. None when none differs."""
    recorded = {k[len("backend_"):]: str(v) for k, v in baseline.system.items()
                if k.startswith("backend_") and k[len("backend_"):] not in VOLATILE_DETAILS}
    now = {k: str(v) for k, v in details.items() if k not in VOLATILE_DETAILS}
    shown = _changes(recorded, now, "not recorded", "not reported")
    if not shown:
        return None
    return (f"the backend differs from the baseline's ({shown}): other kernels or library versions round floats "
            "differently, which can change an output; judge against a baseline recorded with this backend "
            "(--mlperf-update-baselines) or run with the baseline's settings")


def _changes(recorded: Mapping[str, Any], now: Mapping[str, Any], absent_then: str, absent_now: str) -> str:
    """The keys whose values differ between the two, in words ("key: then -> now; ..."); "" when none does."""
    changed = sorted(k for k in {*recorded, *now} if recorded.get(k) != now.get(k))
    return "; ".join(f"{k}: {recorded.get(k, absent_then)} -> {now.get(k, absent_now)}" for k in changed)


def _seconds(ms: int) -> str:
    return f"{ms / 1000:g} s"
