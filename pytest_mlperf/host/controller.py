"""The controller's reporter: registered only in the controller (or a run without xdist), it gathers every case's
record from the test reports, writes the results JSON, the gate's summary and chart, and prints the MLPerf table.
Runs in the pytest process. host/plugin.py registers it in `pytest_configure`."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_mlperf.contract.files import write_json_atomic, write_text_atomic
from pytest_mlperf.host.driver.loadgen_driver import BASELINE_PROPERTY, RECORD_PROPERTY, MlperfSession
from pytest_mlperf.host.gate import report as gate_report
from pytest_mlperf.host.outputs import Claim, point_latest
from pytest_mlperf.host.results.report import ResultsCollector

CLAIM_KEY = pytest.StashKey[Claim]()
SCENARIO_SKIP = "--mlperf-scenario asked for"  # in the skip reason of a benchmark that declares none of them


class ControllerReporter:
    """Registered only in the controller (or a run without xdist): gathers every case's record from the reports,
    writes requested baselines and the results JSON, and prints the table."""

    def __init__(self, config: pytest.Config, state: MlperfSession) -> None:
        self.config = config
        self.state = state
        self.collector = ResultsCollector(state.baselines_dir)
        self.chart_problem: str | None = None
        self.write_problem: str | None = None
        self.unmeasured: list[str] = []  # skip reasons of cases whose benchmark declares no asked-for scenario

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.collector.add(report, RECORD_PROPERTY, BASELINE_PROPERTY)
        if report.skipped and isinstance(report.longrepr, tuple) and SCENARIO_SKIP in str(report.longrepr[2]):
            self.unmeasured.append(str(report.longrepr[2]).removeprefix("Skipped: "))

    def unmeasured_lines(self) -> list[str]:
        """What --mlperf-scenario left unmeasured: a CI job must not go green on benchmarks it never ran."""
        if not self.unmeasured:
            return []
        lines = [f"not measured: {reason}" for reason in dict.fromkeys(self.unmeasured)]
        if not self.records:
            lines.append("error: nothing was measured: no benchmark declares the scenario(s) --mlperf-scenario asked "
                         "for, so this session fails")
        return lines

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.collector.records and not self.collector.written:
            if self.unmeasured:
                terminalreporter.write_sep("=", "MLPerf results")
                for line in self.unmeasured_lines():
                    terminalreporter.write_line(line, red=line.startswith("error"))
            return
        terminalreporter.write_sep("=", "MLPerf results")
        lines = [*self.collector.table_lines(), *self.collector.note_lines(), *gate_report.terminal_lines(self.records),
                 *self.unmeasured_lines()]
        for line in lines:
            terminalreporter.write_line(line)
        results = self.state.results_dir / "results.json"
        if self.write_problem:
            terminalreporter.write_line(f"error: {self.write_problem}", red=True)
        else:
            terminalreporter.write_line(f"results: {results}   LoadGen logs: {results.parent / 'logs'}")
        claim = self.config.stash.get(CLAIM_KEY, None)
        if claim is not None and claim.note:
            terminalreporter.write_line(f"note: {claim.note}")
        if gate_report.gated(self.records):
            chart = f"   chart: {results.parent / 'gate.png'}" if self.chart_problem is None else ""
            terminalreporter.write_line(f"gate summary (Markdown, for a PR comment): {results.parent / 'gate.md'}{chart}")
            if self.chart_problem:
                terminalreporter.write_line(self.chart_problem)

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.collector.records

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.records:
            if self.unmeasured and session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
            return
        out = self.state.results_dir
        try:
            write_json_atomic(out / "results.json", self.collector.results_document(self.state.settings))
            for stale in ("gate.md", "gate.png"):  # an earlier session's gate reports must not pass for this one's
                (out / stale).unlink(missing_ok=True)
            if gate_report.gated(self.records):
                write_text_atomic(out / "gate.md", gate_report.markdown_summary(self.records))
                self.chart_problem = gate_report.write_chart(self.records, out / "gate.png")
            claim = self.config.stash.get(CLAIM_KEY, None)
            if claim is not None:
                point_latest(claim)
        except OSError as exc:  # reported in the summary, which follows; never a traceback out of this hook
            self.write_problem = f"results not written to {out}: {exc.strerror or exc} ({exc.filename or out})"
        lost = self.write_problem or self.collector.problems
        if lost and session.exitstatus == pytest.ExitCode.OK:  # measured, but what was measured is lost: not a pass
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
