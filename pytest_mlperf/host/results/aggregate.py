"""Many GPUs, many hosts, one table: merges results JSON files (one per host, as the controller writes them) into
per-case figures: the hosts and GPUs a case ran on, the combined throughput, the mean per GPU, and the scaling
efficiency against a one-GPU run.

The records of one case are taken to be concurrent measurements on disjoint GPUs (one per xdist worker, one file per
host, all started together): only then is their sum a combined throughput. Two records on the same GPU, or on the
same host's CPU, were not side by side, and the case says so in its notes. Throughput follows MLPerf's headline per
scenario (tokens/s first for LLMs): Offline result_(tokens|samples)_per_second, Server
result_completed_(tokens_per_second|samples_per_sec). Latencies do not add up: SingleStream (p90), MultiStream (p99
per query) and Server (p99, TTFT p99 for LLMs) report the worst host instead.

An input file is decoded by host/results/aggregate_input.py (load_results, parse_results and the records they make, named here
too). Everything here is pure; the `pytest-mlperf aggregate` command (host/results/cli.py) reads, merges and renders with them,
and writes the outputs with contract/files.py."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from pytest_mlperf import __version__
from pytest_mlperf.contract import metrics as catalogue
from pytest_mlperf.host.results.aggregate_input import (
    AggregateError,
    CaseId,
    Device,
    HostMeasurement,
    Source,
)
from pytest_mlperf.host.results.report import format_value, reason_line, render_table

AGGREGATE_FORMAT = "pytest-mlperf/aggregate"
AGGREGATE_VERSION = 1

# scenario -> (detail-log key, unit) candidates, the first one a case has wins (from contract/metrics.py)
THROUGHPUT_METRICS: dict[str, tuple[tuple[str, str], ...]] = {
    s: tuple((m.key, m.unit) for m in ms) for s in catalogue.SCENARIOS if (ms := catalogue.throughput_candidates(s))
}
# scenario -> (detail-log key, label) candidates; all in ns
LATENCY_METRICS: dict[str, tuple[tuple[str, str], ...]] = {
    s: tuple((m.key, m.short) for m in ms) for s in catalogue.SCENARIOS
    if (ms := catalogue.worst_latency_candidates(s))
}
_KEY_FIELDS = ("workload", "scenario", "mode", "backend", "precision")


@dataclass(frozen=True)
class Throughput:
    metric: str
    unit: str
    combined: float | None  # None when a record lacks the metric
    per_gpu: float | None
    per_host: dict[str, float]


@dataclass(frozen=True)
class WorstLatency:
    metric: str
    label: str
    value_ns: float
    host: str
    per_host: dict[str, float]  # the worst of each host


@dataclass(frozen=True)
class MergedCase:
    case: CaseId
    measurements: tuple[HostMeasurement, ...]
    throughput: Throughput | None
    latency: WorstLatency | None
    single_source: str | None = None
    single_value: float | None = None  # per-GPU throughput, or worst latency, of the single-GPU reference
    scaling_efficiency: float | None = None  # combined / (n_gpus x single-GPU throughput)
    latency_vs_single: float | None = None  # worst latency / single-GPU latency (1.0: no slower than alone)
    notes: tuple[str, ...] = ()

    @property
    def hosts(self) -> list[str]:
        return sorted({m.host for m in self.measurements})

    @property
    def devices(self) -> list[Device]:
        return [d for m in self.measurements for d in m.devices]

    @property
    def n_gpus(self) -> int:
        """GPUs over all records, a CPU record counting as one device."""
        return len(self.devices)

    @property
    def outcomes(self) -> dict[str, int]:
        return dict(sorted(Counter(m.outcome for m in self.measurements).items()))

    @property
    def validity(self) -> dict[str, int]:
        return dict(sorted(Counter(m.validity for m in self.measurements).items()))


@dataclass(frozen=True)
class Aggregate:
    sources: tuple[Source, ...]
    cases: tuple[MergedCase, ...]
    single: Source | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------- merging


def _throughput(scenario: str, measurements: Sequence[HostMeasurement], n_gpus: int) -> Throughput | None:
    for metric, unit in THROUGHPUT_METRICS.get(scenario, ()):
        if any(metric in m.metrics for m in measurements):
            per_host: dict[str, float] = {}
            for m in measurements:
                if metric in m.metrics:
                    per_host[m.host] = per_host.get(m.host, 0.0) + m.metrics[metric]
            complete = all(metric in m.metrics for m in measurements)
            combined = sum(m.metrics[metric] for m in measurements) if complete else None
            per_gpu = combined / n_gpus if combined is not None and n_gpus else None
            return Throughput(metric, unit, combined, per_gpu, dict(sorted(per_host.items())))
    return None


def _worst_latency(scenario: str, measurements: Sequence[HostMeasurement]) -> WorstLatency | None:
    for metric, label in LATENCY_METRICS.get(scenario, ()):
        having = [m for m in measurements if metric in m.metrics]
        if having:
            per_host: dict[str, float] = {}
            for m in having:
                per_host[m.host] = max(per_host.get(m.host, 0.0), m.metrics[metric])
            worst = max(having, key=lambda m: m.metrics[metric])
            return WorstLatency(metric, label, worst.metrics[metric], worst.host, dict(sorted(per_host.items())))
    return None


def _case_notes(measurements: Sequence[HostMeasurement], throughput: Throughput | None) -> list[str]:
    notes = [f"{m.outcome} on {m.host} ({m.source}): {reason_line(m.reason)}" for m in measurements if m.reason]
    if throughput is not None:
        for m in measurements:
            if throughput.metric not in m.metrics:
                notes.append(f"no {throughput.metric} in the record from {m.host} ({m.source}): no combined figure")
    uses = Counter(d.identity for m in measurements for d in m.devices)
    names = {d.identity: d.describe() for m in measurements for d in m.devices}
    for identity, n in uses.items():
        if n > 1:
            notes.append(f"{names[identity]} is in {n} records: they did not run side by side, so their sum is no "
                         "combined throughput")
    invalid = sorted({m.host for m in measurements if m.validity == "INVALID"})
    if invalid:
        notes.append(f"INVALID for LoadGen on {', '.join(invalid)}")
    systems = sorted({m.system for m in measurements if m.system})
    if len(systems) > 1:
        notes.append(f"different systems ({', '.join(systems)}): the per-GPU mean mixes them")
    return notes


def merge_case(measurements: Sequence[HostMeasurement]) -> MergedCase:
    """The records of one case, merged: combined throughput (summed), mean per GPU, worst latency."""
    case = measurements[0].case
    n_gpus = sum(len(m.devices) for m in measurements)
    throughput = _throughput(case.scenario, measurements, n_gpus)
    return MergedCase(case, tuple(measurements), throughput, _worst_latency(case.scenario, measurements),
                      notes=tuple(_case_notes(measurements, throughput)))


def group_cases(measurements: Sequence[HostMeasurement]) -> list[MergedCase]:
    groups: dict[CaseId, list[HostMeasurement]] = {}
    for m in measurements:
        groups.setdefault(m.case, []).append(m)
    return [merge_case(groups[c]) for c in sorted(groups, key=CaseId.sort_key)]


def with_single(merged: MergedCase, reference: MergedCase | None, single_path: str) -> MergedCase:
    """The case with its scaling against the same case of a one-GPU run (efficiency for throughput, the ratio of the
    worst latency to the single-GPU latency for latency scenarios)."""
    notes = list(merged.notes)
    changes: dict[str, Any] = {"single_source": single_path}
    if reference is None:
        notes.append(f"not in the single-GPU reference {single_path}: no scaling efficiency")
        return _replace(merged, changes, notes)
    if reference.n_gpus != 1:
        notes.append(f"the single-GPU reference ran on {reference.n_gpus} devices; its mean per device is used")
    if merged.throughput is not None:
        ref = reference.throughput
        if ref is None or ref.metric != merged.throughput.metric or not ref.per_gpu:
            notes.append(f"the single-GPU reference has no {merged.throughput.metric}: no scaling efficiency")
        else:
            changes["single_value"] = ref.per_gpu
            if merged.throughput.combined is not None and merged.n_gpus:
                changes["scaling_efficiency"] = merged.throughput.combined / (merged.n_gpus * ref.per_gpu)
    elif merged.latency is not None:
        lat = reference.latency
        if lat is None or lat.metric != merged.latency.metric or not lat.value_ns:
            notes.append(f"the single-GPU reference has no {merged.latency.metric}: no comparison")
        else:
            changes["single_value"] = lat.value_ns
            changes["latency_vs_single"] = merged.latency.value_ns / lat.value_ns
    return _replace(merged, changes, notes)


def _replace(merged: MergedCase, changes: dict[str, Any], notes: list[str]) -> MergedCase:
    return replace(merged, **changes, notes=tuple(notes))


def _with_missing(case: MergedCase, sources: Sequence[Source]) -> MergedCase:
    """Notes the files that have results but none of this case: the combined figure is short of their GPUs."""
    having = {m.source for m in case.measurements}
    missing = [f"no record from {s.host} ({s.path})" for s in sources if s.measurements and s.path not in having]
    return _replace(case, {}, [*case.notes, *missing]) if missing else case


def merge(sources: Sequence[Source], single: Source | None = None) -> Aggregate:
    """Merges the results files of one run (one per host) case by case; with `single` (a one-GPU run's results),
    adds the scaling of each case against it. Raises AggregateError when a file is given twice."""
    paths = Counter(s.path for s in sources)
    twice = [p for p, n in paths.items() if n > 1]
    if twice:
        raise AggregateError(f"{twice[0]}: given more than once (its cases would count twice)")
    merged = [_with_missing(c, sources) for c in group_cases([m for s in sources for m in s.measurements])]
    if single is not None:
        references = {c.case: c for c in group_cases(single.measurements)}
        merged = [with_single(c, references.get(c.case), single.path) for c in merged]
    return Aggregate(tuple(sources), tuple(merged), single, tuple(_warnings(sources, single)))


def _warnings(sources: Sequence[Source], single: Source | None) -> list[str]:
    out = []
    profiles = sorted({s.profile for s in sources})
    if len(profiles) > 1:
        listing = ", ".join(f"{s.host}: {s.profile}" for s in sources)
        out.append(f"the files were measured with different profiles ({listing}): their figures do not add up")
    hosts = Counter(s.host for s in sources)
    for host, n in sorted(hosts.items()):
        if n > 1:
            out.append(f"host {host} is in {n} files: runs of one host in separate sessions were not side by side "
                       "unless their GPUs differ")
    if single is not None and profiles and single.profile not in profiles:
        out.append(f"the single-GPU reference was measured with the {single.profile} profile, the run with "
                   f"{', '.join(profiles)}")
    if not any(s.measurements for s in sources):
        out.append("no cases in the given results files")
    return out


# --------------------------------------------------------------------------- rendering


def aggregate_document(agg: Aggregate) -> dict[str, Any]:
    """The --json document."""
    return {
        "format": AGGREGATE_FORMAT,
        "version": AGGREGATE_VERSION,
        "pytest_mlperf": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sources": [{"path": s.path, "host": s.host, "profile": s.profile, "created": s.created,
                     "cases": len(s.measurements)} for s in agg.sources],
        "single": None if agg.single is None else {"path": agg.single.path, "host": agg.single.host,
                                                   "profile": agg.single.profile},
        "warnings": list(agg.warnings),
        "cases": [case_dict(c) for c in agg.cases],
    }


def case_dict(c: MergedCase) -> dict[str, Any]:
    t, lat = c.throughput, c.latency
    return {
        "nodeid": c.case.nodeid, **{k: getattr(c.case, k) for k in _KEY_FIELDS},
        "hosts": c.hosts,
        "n_records": len(c.measurements),
        "n_gpus": c.n_gpus,
        "devices": [d.to_dict() for d in c.devices],
        "throughput": None if t is None else {"metric": t.metric, "unit": t.unit, "combined": t.combined,
                                              "per_gpu": t.per_gpu, "per_host": t.per_host},
        "worst_latency": None if lat is None else {"metric": lat.metric, "label": lat.label, "value_ns": lat.value_ns,
                                                   "host": lat.host, "per_host": lat.per_host},
        "single": None if c.single_source is None else {"source": c.single_source, "value": c.single_value},
        "scaling_efficiency": c.scaling_efficiency,
        "latency_vs_single": c.latency_vs_single,
        "outcomes": c.outcomes,
        "validity": c.validity,
        "records": [{"host": m.host, "source": m.source, "nodeid": m.nodeid, "system": m.system,
                     "devices": len(m.devices), "outcome": m.outcome, "validity": m.validity, "reason": m.reason,
                     **({"value": m.metrics.get(t.metric)} if t is not None else {}),
                     **({"latency_ns": m.metrics.get(lat.metric)} if lat is not None else {})}
                    for m in c.measurements],
        "notes": list(c.notes),
    }


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {what}" for what, n in counts.items())


def _hosts_cell(hosts: list[str]) -> str:
    return ", ".join(hosts) if len(hosts) <= 3 else f"{len(hosts)} hosts"


def _vs_single(c: MergedCase) -> str:
    if c.scaling_efficiency is not None:
        return f"{c.scaling_efficiency:.1%}"
    if c.latency_vs_single is not None:
        return f"x{c.latency_vs_single:.2f} latency"
    return "-"


def _gpus(c: MergedCase) -> int:
    return sum(1 for d in c.devices if d.uuid or d.index is not None)


def _gpus_cell(c: MergedCase) -> str:
    """How many GPUs a case ran on; a host's CPU (a CPU run) is named as such, never counted as a GPU."""
    gpus, cpus = _gpus(c), sum(1 for d in c.devices if not d.uuid and d.index is None)
    cpu = "" if not cpus else ("CPU" if cpus == 1 else f"{cpus} CPUs")
    return " + ".join(part for part in (str(gpus) if gpus else "", cpu) if part) or "0"


def table_rows(agg: Aggregate) -> list[list[str]]:
    rows = [["case", "backend", "hosts", "GPUs", "combined", "per GPU", "worst latency", "vs 1 GPU", "validity",
             "outcome"]]
    for c in agg.cases:
        t, lat = c.throughput, c.latency
        rows.append([
            c.case.label(),
            f"{c.case.backend}/{c.case.precision}",
            _hosts_cell(c.hosts),
            _gpus_cell(c),
            format_value(t.combined, t.unit) if t is not None else "-",
            format_value(t.per_gpu, t.unit) if t is not None and _gpus(c) else "-",
            f"{lat.label} {format_value(lat.value_ns, 'ns')} ({lat.host})" if lat is not None else "-",
            _vs_single(c),
            _counts(c.validity),
            _counts(c.outcomes),
        ])
    return rows


def note_lines(agg: Aggregate) -> list[str]:
    lines = [f"note: {c.case.nodeid} [{c.case.backend}/{c.case.precision}]: {n}" for c in agg.cases for n in c.notes]
    return [*lines, *(f"warning: {w}" for w in agg.warnings)]


def source_lines(agg: Aggregate) -> list[str]:
    lines = [f"from {s.host}: {s.path} ({s.profile or '?'} profile, {len(s.measurements)} cases)" for s in agg.sources]
    if agg.single is not None:
        lines.append(f"single-GPU reference: {agg.single.path} ({agg.single.host})")
    return lines


def terminal_lines(agg: Aggregate) -> list[str]:
    table = render_table(table_rows(agg)) if agg.cases else []
    return [*table, *([""] if table else []), *source_lines(agg), *note_lines(agg)]


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(agg: Aggregate) -> str:
    rows = table_rows(agg)
    lines = ["# pytest-mlperf aggregate", ""]
    lines += [f"- {_md_cell(line)}" for line in source_lines(agg)]
    if agg.cases:
        lines += ["", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in rows[1:]]
    notes = note_lines(agg)
    if notes:
        lines += ["", "## Notes", ""] + [f"- {_md_cell(n)}" for n in notes]
    return "\n".join(lines) + "\n"
