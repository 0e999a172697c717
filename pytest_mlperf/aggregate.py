"""Many GPUs, many hosts, one table: merges results JSON files (one per host, as the controller writes them) into
per-case figures: the hosts and GPUs a case ran on, the combined throughput, the mean per GPU, and the scaling
efficiency against a one-GPU run.

The records of one case are taken to be concurrent measurements on disjoint GPUs (one per xdist worker, one file per
host, all started together): only then is their sum a combined throughput. Two records on the same GPU, or on the
same host's CPU, were not side by side, and the case says so in its notes. Throughput follows MLPerf's headline per
scenario (tokens/s first for LLMs): Offline result_(tokens|samples)_per_second, Server
result_completed_(tokens_per_second|samples_per_sec). Latencies do not add up: SingleStream (p90), MultiStream (p99
per query) and Server (p99, TTFT p99 for LLMs) report the worst host instead.

An input file is decoded into msgspec Structs naming just the fields read here: msgspec checks their types and says
where one is wrong (`$.cases[0].key.scenario`), and it ignores the fields it is not told of, which newer writers add.
Everything here but load_results is pure; the `pytest-mlperf aggregate` command (cli.py) reads, merges and renders
with them, and writes the outputs with contract/files.py."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import msgspec

from . import __version__
from .contract import metrics as catalogue
from .report import format_value, reason_line, render_table
from .results_format import RESULTS_FORMAT, RESULTS_VERSION

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
_SCENARIO_ORDER = {"Offline": 0, "Server": 1, "SingleStream": 2, "MultiStream": 3}
_KEY_FIELDS = ("workload", "scenario", "mode", "backend", "precision")


class AggregateError(ValueError):
    """An input file cannot be merged; the one-line message names the file and the problem."""


@dataclass(frozen=True)
class Device:
    """A GPU of a host, or a host's CPU (uuid "" and index None): what one case held while it ran."""

    host: str
    uuid: str
    index: int | None
    name: str

    @property
    def identity(self) -> tuple[str, str]:
        """Equal for two records that ran on the same device."""
        if self.uuid:
            return self.host, self.uuid
        return self.host, "cpu" if self.index is None else f"GPU {self.index}"

    def describe(self) -> str:
        what = self.uuid or ("the CPU" if self.index is None else f"GPU {self.index}")
        return f"{what} on {self.host}"

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "index": self.index, "uuid": self.uuid, "name": self.name}


@dataclass(frozen=True)
class CaseId:
    """What makes records the same case: the test (xdist's @group suffix dropped) and its key without the system,
    which differs between hosts by design."""

    nodeid: str
    workload: str
    scenario: str
    mode: str
    backend: str
    precision: str

    def sort_key(self) -> tuple[Any, ...]:
        return (self.workload, _SCENARIO_ORDER.get(self.scenario, 9), self.scenario, self.mode, self.backend,
                self.precision, self.nodeid)

    def label(self) -> str:
        return f"{self.workload} {self.scenario} {self.mode}"


@dataclass(frozen=True)
class Measurement:
    """One record of one results file."""

    case: CaseId
    source: str  # the results file
    host: str
    nodeid: str  # as recorded
    system: str  # the record's system key, e.g. 1xNVIDIA-H100-80GB-HBM3
    devices: tuple[Device, ...]
    metrics: Mapping[str, float]
    outcome: str
    validity: str
    reason: str | None = None  # why the case failed, as its record says (a failed case may have no metrics)


@dataclass(frozen=True)
class Source:
    """One results file."""

    path: str
    host: str
    profile: str
    created: str
    measurements: tuple[Measurement, ...]


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
    measurements: tuple[Measurement, ...]
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


# --------------------------------------------------------------------------- reading


def case_nodeid(nodeid: str) -> str:
    """The nodeid without what pytest-xdist adds to it (`--dist loadgroup` appends "@group")."""
    return re.sub(r"@[^@\[\]/:]*$", "", nodeid)


def parse_gpu_list(text: str, host: str) -> tuple[Device, ...]:
    """system.gpu_system's "gpus" detail, "0:NAME:UUID; 1:NAME:UUID", as devices. Raises ValueError."""
    devices = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        index, sep, rest = part.partition(":")
        name, sep2, uuid = rest.rpartition(":")
        if not sep or not sep2 or not index.strip().isdigit():
            raise ValueError(f"GPU entry {part!r} is not INDEX:NAME:UUID")
        devices.append(Device(host, uuid.strip(), int(index), name.strip()))
    return tuple(devices)


# What aggregation reads of a results document (report.ResultsCollector.results_document); an int passes as a float.
class _Gpu(msgspec.Struct):
    index: int | None = None
    uuid: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.index is None and not self.uuid:
            raise ValueError("a GPU entry needs a \"uuid\" (string) or an \"index\" (integer)")


class _System(msgspec.Struct):
    gpus: str | None = None  # system.gpu_system's "0:NAME:UUID; 1:NAME:UUID", read where a record has no gpus list
    cpu: str | None = None

    def __post_init__(self) -> None:
        parse_gpu_list(self.gpus or "", "")  # its ValueError names the entry; msgspec adds where it is


class _Key(msgspec.Struct):
    workload: str
    scenario: str
    mode: str
    backend: str
    precision: str
    system: str = ""


class _Run(msgspec.Struct):
    validity: str = "?"
    metrics: dict[str, float | None] | None = None


class _Case(msgspec.Struct):
    nodeid: Annotated[str, msgspec.Meta(min_length=1)]
    key: _Key
    run: _Run | None = None  # null: the case failed before LoadGen gave a result
    metrics: dict[str, float | None] | None = None
    gpus: list[_Gpu] | None = None
    system: _System | None = None
    outcome: str = "?"
    reason: str | None = None  # why the case failed


class _Results(msgspec.Struct):
    host: Annotated[str, msgspec.Meta(min_length=1)]
    cases: list[_Case]
    profile: str = ""
    created: str = ""


def _devices(case: _Case, host: str) -> tuple[Device, ...]:
    """The devices a record ran on: its "gpus" list where present, else its system's "gpus" text, else the CPU."""
    if case.gpus:
        return tuple(Device(host, g.uuid or "", g.index, g.name or "") for g in case.gpus)
    system = case.system or _System()
    if system.gpus and system.gpus.strip():
        return parse_gpu_list(system.gpus, host)
    return (Device(host, "", None, system.cpu or "cpu"),)


def _measurement(case: _Case, host: str, source: str) -> Measurement:
    k, run = case.key, case.run
    metrics = {n: v for part in (run.metrics if run else None, case.metrics) for n, v in (part or {}).items()
               if v is not None}
    return Measurement(CaseId(case_nodeid(case.nodeid), k.workload, k.scenario, k.mode, k.backend, k.precision),
                       source, host, case.nodeid, k.system, _devices(case, host), metrics, case.outcome,
                       run.validity if run else "-", case.reason)


def _which_case(data: dict[str, Any], error: str) -> str:
    """" (case NODEID)" for an error inside a case record that has a nodeid, else ""."""
    at = re.search(r"`\$\.cases\[(\d+)\]", error)
    record = data["cases"][int(at.group(1))] if at else None
    nodeid = record.get("nodeid") if isinstance(record, dict) else None
    return f" (case {nodeid})" if isinstance(nodeid, str) and nodeid else ""


def parse_results(data: Any, source: str) -> Source:
    """A results document (report.ResultsCollector.results_document) read from `source`. Raises AggregateError
    naming `source`, the problem and where in the document it is."""
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
        raise AggregateError(f"{source}: not a pytest-mlperf results file (expected \"format\": \"{RESULTS_FORMAT}\"; "
                             "give the results.json a pytest-mlperf run writes)")
    if data.get("version") != RESULTS_VERSION:
        raise AggregateError(f"{source}: results format version {data.get('version')!r}, this pytest-mlperf reads "
                             f"{RESULTS_VERSION}: aggregate it with the pytest-mlperf version that wrote it")
    try:
        doc = msgspec.convert(data, _Results)
    except msgspec.ValidationError as exc:
        raise AggregateError(f"{source}: not a pytest-mlperf results document: {exc}{_which_case(data, str(exc))}"
                             ) from None
    return Source(source, doc.host, doc.profile, doc.created,
                  tuple(_measurement(c, doc.host, source) for c in doc.cases))


def load_results(path: Path) -> Source:
    """A results JSON file. Raises AggregateError with a one-line message for a missing, unreadable or malformed one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AggregateError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise AggregateError(f"{path}: is a folder; expected a results JSON file (e.g. mlperf-results/results.json)"
                             ) from None
    except UnicodeDecodeError:
        raise AggregateError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise AggregateError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AggregateError(f"{path}: not JSON (line {exc.lineno} column {exc.colno}: {exc.msg})") from None
    return parse_results(data, str(path))


# --------------------------------------------------------------------------- merging


def _throughput(scenario: str, measurements: Sequence[Measurement], n_gpus: int) -> Throughput | None:
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


def _worst_latency(scenario: str, measurements: Sequence[Measurement]) -> WorstLatency | None:
    for metric, label in LATENCY_METRICS.get(scenario, ()):
        having = [m for m in measurements if metric in m.metrics]
        if having:
            per_host: dict[str, float] = {}
            for m in having:
                per_host[m.host] = max(per_host.get(m.host, 0.0), m.metrics[metric])
            worst = max(having, key=lambda m: m.metrics[metric])
            return WorstLatency(metric, label, worst.metrics[metric], worst.host, dict(sorted(per_host.items())))
    return None


def _case_notes(measurements: Sequence[Measurement], throughput: Throughput | None) -> list[str]:
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


def merge_case(measurements: Sequence[Measurement]) -> MergedCase:
    """The records of one case, merged: combined throughput (summed), mean per GPU, worst latency."""
    case = measurements[0].case
    n_gpus = sum(len(m.devices) for m in measurements)
    throughput = _throughput(case.scenario, measurements, n_gpus)
    return MergedCase(case, tuple(measurements), throughput, _worst_latency(case.scenario, measurements),
                      notes=tuple(_case_notes(measurements, throughput)))


def group_cases(measurements: Sequence[Measurement]) -> list[MergedCase]:
    groups: dict[CaseId, list[Measurement]] = {}
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
