"""The `baseline` fixture's object: `BaselineCheck` compares a case with its stored baseline (its metrics within the
tolerance, its outputs sample by sample) and fails the test on a regression or on a baseline that cannot judge the
run, or, on --mlperf-update-baselines, keeps the case as the baseline to write. It runs in the pytest process (the
controller, or one xdist worker) and writes no file: the comparisons and the baseline to write wait in the test's
stash (`COMPARISONS_KEY`, `PENDING_BASELINE_KEY`) until host/results/records.py puts them on the report for the controller."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mlperf.host.baselines.conditions import details_differ, duration_differs, option_values, options_differ
from pytest_mlperf.host.baselines.store import (
    Baseline,
    BaselineError,
    Comparison,
    Metric,
    compare,
    key_mismatch,
    load_baseline,
    noisy_metrics,
    unusable_metrics,
)
from pytest_mlperf.host.driver.cases import CaseRun
from pytest_mlperf.host.gate.loop import describe

if TYPE_CHECKING:
    from pytest_mlperf.host.driver.loadgen_driver import MlperfSession


@dataclass
class BaselineCheck:
    """The `baseline` fixture: compares a case with its stored baseline, or records it on request."""

    session: MlperfSession
    item: pytest.Item
    tolerance: float

    def path_for(self, case: CaseRun) -> Path:
        return case.key.path(self.session.baselines_dir)

    def assert_no_regression(self, case: CaseRun, *, tolerance: float | None = None) -> None:
        if case.gate is not None:  # under the gate the reference was measured now, beside the candidate
            self.assert_gate(case)
            return
        tol = self.tolerance if tolerance is None else tolerance
        path = self.path_for(case)
        if self.session.settings.update_baselines:
            self._record(case, path, tol)
            return
        baseline = self._stored_baseline(case, path)
        if baseline is None:
            return
        comparisons = compare(baseline, case.metrics, tol)
        self.item.stash[COMPARISONS_KEY] = comparisons
        regressions = self._regressions(case, baseline, comparisons)  # first: it sets case.outputs_match
        unusable = self._unusable(case, baseline, comparisons)
        sections = []
        if regressions:
            sections.append(f"regression against baseline {path}:\n  " + "\n  ".join(regressions))
        if unusable:
            sections.append(f"baseline {path} cannot judge this run:\n  " + "\n  ".join(unusable))
        if sections:
            pytest.fail("\n".join(sections) + f"\nLoadGen logs: {case.log_dir}", pytrace=False)

    def _stored_baseline(self, case: CaseRun, path: Path) -> Baseline | None:
        """The baseline stored for `case` at `path`; None where there is none (which --mlperf-require-baselines
        fails). A corrupt one, or one naming another case, fails the case."""
        failure: str | None = None
        try:
            baseline = load_baseline(path)
        except BaselineError as exc:
            baseline, failure = None, f"corrupt baseline: {exc}"
        if failure is not None:
            pytest.fail(failure, pytrace=False)
        if baseline is None:
            message = (
                f"no baseline at {path} (record one on the reference system with --mlperf-update-baselines)"
            )
            if self.session.settings.require_baselines:
                pytest.fail(message + " (--mlperf-require-baselines is set)", pytrace=False)
            case.missing_baseline = str(path)
            return None
        case.baseline_path = str(path)
        other = key_mismatch(baseline, case.key)
        if other:
            pytest.fail(f"baseline {path} names another case: {other}. Move it to "
                        f"{baseline.key.path(self.session.baselines_dir)} or record this case's baseline with "
                        "--mlperf-update-baselines", pytrace=False)
        return baseline

    def _regressions(self, case: CaseRun, baseline: Baseline, comparisons: list[Comparison]) -> list[str]:
        """What regressed against `baseline`: metrics beyond the tolerance and outputs that differ. Conditions
        outside the case's key (as backend details are) go to the case's notes, so that a verdict across them is
        not silent; a run of another length than the baseline's is said with its regressions too."""
        differ = options_differ(baseline, case.sut_options)
        if differ:
            case.notes.append(differ)
        length = duration_differs(baseline, case.test.get("min_duration_ms"))
        if length:
            case.notes.append(length)
        regressions = [c.describe() for c in comparisons if c.regressed]
        if regressions and length:
            regressions.append(length)
        return regressions + self._accuracy_problems(case, baseline)

    def _unusable(self, case: CaseRun, baseline: Baseline, comparisons: list[Comparison]) -> list[str]:
        """Why `baseline` cannot judge this run: metrics it cannot compare, nothing compared at all, and (under
        --mlperf-require-baselines; else a note) comparisons whose noise hides the tolerance."""
        unusable = unusable_metrics(baseline, case.metrics)
        if not comparisons and case.outputs_match is None:  # neither a metric nor the outputs were compared
            unusable.insert(0, _compares_nothing(baseline, case))
        for c in comparisons:
            if not c.detects_tolerance:
                if self.session.settings.require_baselines:
                    unusable.append(c.undetectable() + " (--mlperf-require-baselines fails a comparison that "
                                                       "cannot detect the tolerance)")
                else:
                    case.notes.append(c.undetectable() + " (noise excuses at most the tolerance; "
                                                         "--mlperf-require-baselines fails such a comparison)")
        return unusable

    def assert_gate(self, case: CaseRun) -> None:
        """Fails on FAIL and INCONCLUSIVE; the message carries overhead, interval, limit and rounds."""
        outcome = case.gate
        assert outcome is not None
        if str(outcome.verdict) != "PASS":
            pytest.fail(f"{describe(outcome)}\nLoadGen logs: {case.log_dir}", pytrace=False)

    def _accuracy_problems(self, case: CaseRun, baseline: Baseline) -> list[str]:
        if case.accuracy is None or baseline.accuracy is None:
            return []
        expected = {int(i): _output(c) for i, c in baseline.accuracy.get("predictions", [])}
        actual = {int(i): _output(c) for i, c in case.accuracy.get("predictions", [])}
        if not expected:
            return []
        differ = compare_outputs(expected, actual)
        case.outputs_match = not differ
        if not differ:
            return []
        shown = ", ".join(f"#{i}: {_short(expected.get(i))} -> {_short(actual.get(i))}" for i in differ[:8])
        why = details_differ(baseline, case.backend.get("details", {}))
        return [f"outputs differ from the baseline's on {len(differ)} of {len(expected)} samples ({shown})"
                + (f"; {why}" if why else "")]

    def _record(self, case: CaseRun, path: Path, tolerance: float) -> None:
        metrics = repeated_metrics(case)
        for problem in noisy_metrics(metrics, tolerance):  # said now, not first when a later run is judged
            case.notes.append(f"baseline recorded, but {problem}")
        baseline = Baseline(
            key=case.key,
            metrics=metrics,
            accuracy=case.accuracy,
            settings=recorded_settings(case),
            system={**case.system, **{f"backend_{k}": v for k, v in case.backend.get("details", {}).items()},
                    "loadgen": case.run.loadgen_version or "", "sut_options": option_values(case.sut_options)},
            recorded_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        self.item.stash[PENDING_BASELINE_KEY] = (str(path), baseline.to_dict())


# what a baseline keeps of a run's settings; for Server's targets, LoadGen's name in its log (effective_*)
RECORDED_SETTINGS = ("server_target_qps", "server_target_latency_ns", "min_duration_ms")
SERVER_LOGGED = {"server_target_qps": "target_qps", "server_target_latency_ns": "target_latency_ns"}


def recorded_settings(case: CaseRun) -> dict[str, Any]:
    """The settings a baseline records, as LoadGen ran them: a user.conf's target_qps or target_latency is what
    the run measured, not the plugin's own request (an H200 Server baseline recorded at a user.conf's 5,616 QPS kept
    the calibration's 3,154, and the next run without the user.conf would have run at that). A value LoadGen did
    not log falls back to the request's."""
    out = {key: case.test.get(key) for key in RECORDED_SETTINGS}
    if case.key.scenario == "Server":
        for key, logged in SERVER_LOGGED.items():
            out[key] = case.run.settings.get(logged, out[key])
    return out


def _compares_nothing(baseline: Baseline, case: CaseRun) -> str:
    held = f"the metrics {', '.join(baseline.metrics)}" if baseline.metrics else "no metric"
    outputs = "outputs" if (baseline.accuracy or {}).get("predictions") else "no outputs"
    measured = (", ".join(case.metrics) or "no metric") + (" and outputs" if case.accuracy else "")
    return (f"it compares nothing with this run: it holds {held} and {outputs}, the run measured {measured}; "
            "record it again with --mlperf-update-baselines")


def repeated_metrics(case: CaseRun) -> dict[str, Metric]:
    """A case's metrics with the values of its repeats as samples, each summarised by their median."""
    out = {}
    for name, m in case.metrics.items():
        values = [m.value, *(r[name] for r in case.repeats if name in r)]
        out[name] = Metric(name, statistics.median(values), m.unit, m.higher_is_better, tuple(values))
    return out


def _output(value: Any) -> int | list[int]:
    """A recorded output: a class index, or an LLM's token ids."""
    return [int(t) for t in value] if isinstance(value, list) else int(value)


def _short(value: int | list[int] | None) -> str:
    """An output for a failure message: token lists cut to their first tokens."""
    if isinstance(value, list) and len(value) > 8:
        return f"[{', '.join(map(str, value[:8]))}, ... ({len(value)} tokens)]"
    return str(value)


COMPARISONS_KEY = pytest.StashKey[list]()
PENDING_BASELINE_KEY = pytest.StashKey[tuple]()


def compare_outputs(expected: Mapping[int, object], actual: Mapping[int, object]) -> list[int]:
    """QSL indices whose outputs differ (or are missing on either side), sorted. Outputs are classes (ints) or
    token id lists (LLMs), compared by equality."""
    return sorted(i for i in set(expected) | set(actual) if expected.get(i) != actual.get(i))
