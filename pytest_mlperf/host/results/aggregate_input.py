"""The input of `pytest-mlperf aggregate`: a results.json (one per host, as the controller writes them) decoded into
the records host/results/aggregate.py merges: a Source (the file) of Measurements (its records), each naming its case (CaseId)
and the devices it held (Device). A file that cannot be merged raises AggregateError, one line naming the file and
the problem. Runs in the CLI (host/results/cli.py, through host/results/aggregate.py); a pytest session writes these files, never reads them.

An input file is decoded into msgspec Structs naming just the fields read here: msgspec checks their types and says
where one is wrong (`$.cases[0].key.scenario`), and it ignores the fields it is not told of, which newer writers add.
Everything here but load_results is pure."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import msgspec

from pytest_mlperf.host.results.document import RESULTS_FORMAT, RESULTS_VERSION

_SCENARIO_ORDER = {"Offline": 0, "Server": 1, "SingleStream": 2, "MultiStream": 3}


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
class HostMeasurement:
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
    measurements: tuple[HostMeasurement, ...]


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


def _measurement(case: _Case, host: str, source: str) -> HostMeasurement:
    k, run = case.key, case.run
    metrics = {n: v for part in (run.metrics if run else None, case.metrics) for n, v in (part or {}).items()
               if v is not None}
    return HostMeasurement(CaseId(case_nodeid(case.nodeid), k.workload, k.scenario, k.mode, k.backend, k.precision),
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
