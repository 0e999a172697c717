"""Results on the controller: records gathered from test reports, baselines written on request, the terminal
table and the results JSON. Renderers are pure functions of the records."""

from __future__ import annotations

import os
import platform
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytest_mlperf import __version__
from pytest_mlperf.contract import metrics as catalogue
from pytest_mlperf.host.baselines.store import Baseline, BaselineError, CaseKey, load_baseline, write_baseline
from pytest_mlperf.host.results.document import RESULTS_FORMAT, RESULTS_VERSION, check_document
from pytest_mlperf.host.settings import Settings

# results.json's format: host/results/document.py types it and generates its JSON Schema; where this is set, a record
# that does not match it fails the session (tests/conftest.py sets it for this project's tests)
STRICT_RESULTS_ENV = "PYTEST_MLPERF_STRICT_RESULTS"


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ns":
        return f"{value / 1e6:.3f} ms"
    return f"{value:,.1f} {unit}"


def recorded_elsewhere(missing: list[dict[str, Any]]) -> list[str]:
    """The systems that have baselines of cases this run had none for (e.g. the GPUs a shipped set was recorded
    on), so a user on another machine sees why and where they came from."""
    systems: set[str] = set()
    for r in missing:
        key = CaseKey(**{k: str(v) for k, v in r["key"].items()})
        systems.update(key.systems_recorded(Path(r["missing_baseline"]).parent))
    return sorted(systems)


def headline_of(record: dict[str, Any]) -> tuple[str, str]:
    """(metric name, formatted value) of a record's checker headline: a searched Server case's capacity; tokens
    first for an LLM's Offline and Server runs (the checker's overwrite), its latency headline for SingleStream
    and MultiStream."""
    capacity = (record.get("server_search") or {}).get("capacity_qps")
    if capacity and record.get("reason") is None:  # --mlperf-server-search: the QPS at the latency bound
        return catalogue.SERVER_CAPACITY, f"{float(capacity):,.1f} QPS capacity"
    run = record.get("run") or {}  # None: the case failed before LoadGen gave a result
    tokens = run.get("token_headline") if run.get("scenario") in ("Offline", "Server") else None
    head = tokens or run.get("headline")
    if not head:
        return "-", "-"
    return head["metric"], format_value(head["value"], head["unit"])


def accuracy_of(record: dict[str, Any]) -> str:
    """An accuracy run's figure for the table: MLPerf's metric when the data has labels (top-1, ROUGE-1), else how
    many outputs it recorded (a stand-in's accuracy is equality with its baseline's outputs)."""
    acc = record.get("accuracy") or {}
    if acc.get("top1") is not None:
        return f"top-1 {float(acc['top1']):.2%}"
    if acc.get("rouge1") is not None:
        return f"ROUGE-1 {float(acc['rouge1']):.2f}"
    return f"{acc['samples']} outputs" if acc.get("samples") is not None else "-"


def delta_of(record: dict[str, Any]) -> str:
    """The change of the headline metric against its baseline (or the gate's reference), or why there is none."""
    gate = record.get("gate")
    if gate:
        over = gate.get("overhead")
        shown = "" if over is None else f" {over * 100:+.1f}%"
        return f"gate {gate['verdict']}{shown}" if gate.get("metric") != "outputs" else f"gate {gate['verdict']} outputs"
    if record.get("outputs_match") is not None:
        return "outputs equal" if record["outputs_match"] else "OUTPUTS DIFFER"
    comps = record.get("baseline") or []
    if not comps:
        return "no baseline" if record.get("missing_baseline") else "-"
    worst = max(comps, key=lambda c: c["worse_by"])
    return f"{worst['change']:+.1%}{' REGRESSED' if worst['regressed'] else ''}"


def device_of(record: dict[str, Any]) -> str:
    """'cpu', 'cuda', or 'cuda:0' / 'cuda:2,3' with the GPU indices (UUID heads where no index is known)."""
    device = str((record.get("backend") or {}).get("device", "?"))
    gpus = record.get("gpus") or []
    if not gpus:
        return device
    return device + ":" + ",".join(str(g["index"]) if g.get("index") is not None else str(g["uuid"])[:12] for g in gpus)


def case_labels(records: list[dict[str, Any]]) -> list[str]:
    """'workload scenario mode' per record; where two records would read the same (copies of a case, one case in
    two files), each also names its test: 'resnet50 Offline performance (test_x.py::test_y[...])'."""
    shorts = [f"{r['key']['workload']} {r['key']['scenario']} {r['key']['mode']}" for r in records]
    idents = [(s, r["key"].get("backend"), r["key"].get("system")) for s, r in zip(shorts, records)]
    seen = Counter(idents)
    return [s + f" ({r['nodeid'].rsplit('/', 1)[-1]})" if seen[i] > 1 else s
            for s, i, r in zip(shorts, idents, records)]


def table_rows(records: list[dict[str, Any]]) -> list[list[str]]:
    rows = [["case", "backend", "device", "headline", "p99", "validity", "vs baseline", "outcome"]]
    for r, label in zip(records, case_labels(records)):
        key = r["key"]
        _, value = headline_of(r)
        run = r.get("run") or {}  # None: the case failed before LoadGen gave a result
        p99 = (run.get("latency_ns") or {}).get("p99")
        validity = str(run.get("validity", "-"))
        if key.get("mode") == "accuracy" and run:  # LoadGen times nothing and judges nothing in an accuracy run
            value, p99, validity = accuracy_of(r), None, "n/a"
        if r.get("notes") and validity == "INVALID":
            validity += "*"
        rows.append([
            label,
            f"{key['backend']}/{key['precision']}",
            device_of(r),
            value,
            format_value(p99, "ns"),
            validity,
            delta_of(r),
            r.get("outcome", "?"),
        ])
    return rows


def reason_line(reason: str) -> str:
    """A failure's reason on one line: its first line, saying when there is more."""
    lines = reason.strip().splitlines() or [""]
    return lines[0] + (f" [+{len(lines) - 1} lines]" if len(lines) > 1 else "")


def render_table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def sharing_note(records: list[dict[str, Any]]) -> str | None:
    """A warning when CPU cases (no GPU of their own) ran on several pytest-xdist workers at once: they shared the
    cores and measured each other. None otherwise."""
    workers = sorted({str(r.get("worker", "main")) for r in records if not r.get("gpus")})
    if len(workers) <= 1:
        return None
    return (f"warning: CPU cases ran on {len(workers)} pytest-xdist workers side by side ({', '.join(workers)}): they "
            "shared the cores, so their timings measure each other and are not comparable to a baseline; run "
            "benchmarks on the CPU without -n (with GPUs, -n auto gives each worker its own GPU)")


# LoadGen above the bare loop by more than noise: the calibration saw a slower machine than the run did
EFFICIENCY_CEILING = 1.05


def harness_line(nodeid: str, efficiency: float, bare: dict[str, Any]) -> str:
    """LoadGen's throughput as a share of the bare loop's (`bare`: the calibration's measurement). Above 100% it is
    no efficiency: the bare loop is the ceiling, so the calibration measured a slower SUT than the run did: one still
    warming up when it stopped (`settled` False: its batches were still getting faster), or a busier machine."""
    rate = float(bare["samples_per_s"])
    if efficiency <= EFFICIENCY_CEILING:
        return f"harness: {nodeid}: LoadGen {efficiency:.1%} of the bare loop ({rate:,.1f} samples/s)"
    head = f"harness: {nodeid}: no efficiency: LoadGen ran {efficiency:.2f}x the bare loop's {rate:,.1f} samples/s"
    if bare.get("settled") is False:
        first = bare.get("first_batch_s")
        return (f"{head}: the calibration's batches were still getting faster when it stopped ({bare.get('batches')} "
                "batches" + (f", the first {first:.3g} s" if first else "")
                + f", the median {bare['batch_latency_p50_s']:.3g} s), so its rate is a floor; LoadGen's figure stands")
    return (f"{head}, so the calibration was disturbed (another process on the CPU?); run on a quiet machine for this "
            "figure")


def latency_line(nodeid: str, over: float, tail: float | None, bare: dict[str, Any]) -> str:
    """SingleStream/MultiStream: LoadGen's p50 (and p99, where the calibration has the bare loop's) against the
    bare loop's at the same batch (`bare`: the calibration's measurement)."""
    batch = int(bare.get("batch_size") or 1)
    line = (f"harness: {nodeid}: LoadGen p50 {over:+.1%} over the bare batch-{batch} p50 "
            f"({bare['batch_latency_p50_s'] * 1e3:.3f} ms)")
    if tail is not None and bare.get("batch_latency_p99_s"):
        line += f", p99 {tail:+.1%} over its p99 ({bare['batch_latency_p99_s'] * 1e3:.3f} ms)"
    return line


def standin_lines(records: list[dict[str, Any]]) -> list[str]:
    """One line per workload that ran stand-ins in place of MLPerf's model or data: its figures follow the harness
    and backend, and are no MLPerf results."""
    seen: dict[str, list[str]] = {}
    for r in records:
        if r.get("stand_ins"):
            seen.setdefault(r["key"]["workload"], r["stand_ins"])
    return [f"stand-in: {workload} ran without MLPerf's files ({'; '.join(parts)}): its figures track regressions of "
            f"this harness and backend, not MLPerf results (--mlperf-model/--mlperf-dataset {workload}=PATH run the "
            "real ones)" for workload, parts in seen.items()]


@dataclass
class ResultsCollector:
    baselines_dir: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # said in the summary; the session's outcome stands

    def add(self, report: Any, record_name: str, baseline_name: str) -> None:
        """Takes the records a report carries: a call's cases, or the failure record of a case whose setup
        failed (outcome "error", as pytest counts it)."""
        if report.when != "call" and not (report.when == "setup" and report.outcome == "failed"):
            return
        outcome = "error" if report.when == "setup" else report.outcome
        for name, value in report.user_properties:
            if name == record_name:
                self.records.append({**value, "outcome": outcome})
            elif name == baseline_name and report.passed:
                self._write_baseline(*value)

    def _write_baseline(self, path_text: str, data: dict[str, Any]) -> None:
        path = Path(path_text)
        try:
            baseline = Baseline.from_dict(data, source=path_text)
        except BaselineError as exc:  # a bug on our side, never a reason to write a broken file
            self.problems.append(f"baseline not written: {exc}")
            return
        try:
            previous = load_baseline(path)
        except BaselineError:
            previous = None
        try:
            write_baseline(path, baseline)
        except OSError as exc:  # reported at the end (and fails the session), never a traceback mid-run
            self.problems.append(f"error: baseline not written: {path}: {exc.strerror or exc}")
            return
        if previous is None:
            self.written.append(f"baseline recorded: {path}")
        else:
            changes = ", ".join(
                f"{n} {previous.metrics[n].value:.6g} -> {m.value:.6g}"
                for n, m in baseline.metrics.items() if n in previous.metrics
            )
            self.written.append(f"baseline replaced (--mlperf-update-baselines): {path} [{changes}]")

    def table_lines(self) -> list[str]:
        return render_table(table_rows(self.records)) if self.records else []

    def note_lines(self) -> list[str]:
        lines = []
        for r in self.records:
            if r.get("reason"):
                lines.append(f"{r.get('outcome', 'failed')}: {r['nodeid']}: {reason_line(r['reason'])}")
            for note in r.get("notes", []):
                lines.append(f"note: {r['nodeid']}: {note}")
            eff = r.get("harness_efficiency")
            if eff:
                lines.append(harness_line(r["nodeid"], eff, r["calibration"]["bare"]))
            over = r.get("latency_overhead")
            if over is not None:
                lines.append(latency_line(r["nodeid"], over, r.get("latency_tail_overhead"), r["calibration"]["bare"]))
        lines += standin_lines(self.records)
        sharing = sharing_note(self.records)
        if sharing:
            lines.append(sharing)
        missing = [r["missing_baseline"] for r in self.records if r.get("missing_baseline")]
        if missing:
            common = Path(os.path.commonpath(missing)) if len(missing) > 1 else Path(missing[0]).parent
            lines.append(
                f"no baseline for {len(missing)} case(s) under {common}: record them on the reference system with "
                "--mlperf-update-baselines (--mlperf-require-baselines makes a missing baseline fail)"
            )
            others = recorded_elsewhere([r for r in self.records if r.get("missing_baseline")])
            if others:
                lines.append(f"baselines of these cases exist for other systems: {', '.join(others)} (this system: "
                             f"{', '.join(sorted({r['key']['system'] for r in self.records if r.get('missing_baseline')}))})")
        return [*lines, *self.written, *self.warnings, *self.problems]

    def results_document(self, settings: Settings) -> dict[str, Any]:
        """The results.json document, checked against results_format.ResultsDocument: a mismatch (a bug of ours)
        is written all the same and said as a warning; where PYTEST_MLPERF_STRICT_RESULTS is set (this project's
        own tests) it is a problem, which fails the session."""
        document = {
            "format": RESULTS_FORMAT,
            "version": RESULTS_VERSION,
            "pytest_mlperf": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(),
            "profile": settings.profile.name,
            "cases": self.records,
        }
        mismatch = check_document(document)
        if mismatch:
            text = (f"results.json does not match its schema (docs/results.schema.json), a bug of pytest-mlperf: "
                    f"{mismatch}")
            (self.problems if os.environ.get(STRICT_RESULTS_ENV) else self.warnings).append(text)
        return document
