"""What a test report carries to the controller: a record per case, failed cases included (a SUT exception, a
timeout, a runner crash, a fixture error: `run` null, the outcome and the reason), and a baseline to write.

The plugin's makereport hook calls `report_properties`; report.ResultsCollector reads what it returns."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_mlperf.contract.workloads import workload_spec
from pytest_mlperf.host.baselines.check import COMPARISONS_KEY, PENDING_BASELINE_KEY
from pytest_mlperf.host.driver.loadgen_driver import ATTEMPT_KEY, BASELINE_PROPERTY, CASES_KEY, RECORD_PROPERTY

REASON_LIMIT = 4000  # characters of a failure's message kept in its record (the terminal shows it whole)


def failure_reason(call: pytest.CallInfo[None]) -> str:
    """A failed phase's message without its traceback: pytest.fail's text, else the exception's last line."""
    excinfo = call.excinfo
    if excinfo is None:
        return "failed"
    if isinstance(excinfo.value, pytest.fail.Exception):
        text = str(excinfo.value.msg or "failed")
    else:
        text = excinfo.exconly()
    return text if len(text) <= REASON_LIMIT else text[:REASON_LIMIT] + " [...]"


def failure_record(item: pytest.Item, attempt: dict[str, Any] | None, reason: str) -> dict[str, Any]:
    """The record of a case that failed before LoadGen gave it a result (a SUT exception, a timeout, a runner
    crash, a fixture error): what is known of the case, no run, and the reason."""
    marker = item.get_closest_marker("mlperf")
    kwargs = dict(marker.kwargs) if marker else {}
    params = dict(getattr(getattr(item, "callspec", None), "params", {}))
    workload = str(kwargs.get("workload") or "?")
    try:
        backend = str(kwargs.get("backend") or workload_spec(workload).backends[0])
    except ValueError:
        backend = "?"
    known = attempt or {}
    key = known.get("key") or {"workload": workload, "scenario": str(params.get("mlperf_scenario") or "?"),
                               "mode": str(params.get("mlperf_mode") or "?"), "backend": backend,
                               "precision": "?", "system": "?"}
    return {
        "nodeid": item.nodeid, "key": key, "recipe": known.get("recipe"), "profile": known.get("profile"),
        "log_dir": known.get("log_dir"), "backend": known.get("backend") or {"backend": key["backend"]},
        "system": known.get("system") or {}, "run": None, "metrics": {}, "harness_efficiency": None,
        "latency_overhead": None, "latency_tail_overhead": None, "calibration": None, "schedule": None, "test": None, "accuracy": None,
        "notes": [], "missing_baseline": None, "baseline_path": None, "outputs_match": None, "gate": None,
        "gpus": known.get("gpus") or [], "repeats": [], "timings": {}, "runner_pid": known.get("runner_pid"),
        "runner_cpus": None, "sut_options": known.get("sut_options") or {}, "server_target": None,
        "server_search": None, "reason": reason,
    }


def report_properties(item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport,
                      worker: str) -> list[tuple[str, Any]]:
    """The (name, value) pairs a test report carries to the controller: a record per case (failed ones too, with
    their reason) and a baseline to write."""
    if report.when not in ("setup", "call"):
        return []
    reason = failure_reason(call) if report.failed else None
    out: list[tuple[str, Any]] = []
    cases = item.stash.get(CASES_KEY, []) if report.when == "call" else []
    comparisons = item.stash.get(COMPARISONS_KEY, [])
    for case in cases:
        record = {**case.to_record(), "worker": worker, "baseline": [c.to_record() for c in comparisons]}
        if reason is not None:
            record["reason"] = reason
        out.append((RECORD_PROPERTY, record))
    attempt = item.stash.get(ATTEMPT_KEY, None)
    is_case = "loadgen" in getattr(item, "fixturenames", ())
    if reason is not None and is_case and (attempt is not None or not cases):
        out.append((RECORD_PROPERTY, {**failure_record(item, attempt, reason), "worker": worker}))
    pending = item.stash.get(PENDING_BASELINE_KEY, None) if report.when == "call" else None
    if pending is not None:
        out.append((BASELINE_PROPERTY, pending))
    return out
