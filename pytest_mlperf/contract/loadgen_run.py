"""The typed record of one LoadGen run (:class:`Run` and its parts) and :class:`LogParseError`.

Both processes hold these: the runner reads its LoadGen logs into a :class:`Run` (loadgen_log.py) and sends it as
``Run.to_dict()``; the pytest process rebuilds it with :meth:`Run.from_dict` and checks, records and reports it.
What each field's values mean (the headline's rule, the validity reasons) is loadgen_results.py's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["AccuracyEntry", "Headline", "Latency", "LogEntry", "LogParseError", "Run"]


class LogParseError(ValueError):
    """A LoadGen log could not be parsed; ``path`` and ``line`` locate it when known."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        where = "" if path is None else f"{path}" + ("" if line is None else f":{line}")
        super().__init__(f"{where}: {message}" if where else message)
        self.path = None if path is None else str(path)
        self.line = line


@dataclass(frozen=True)
class LogEntry:
    """One ``:::MLLOG`` line of a detail log (``line`` is its 1-based line number)."""

    key: str
    value: Any
    time_ms: float | None = None
    event_type: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    line: int | None = None

    @property
    def is_error(self) -> bool:
        return bool(self.metadata.get("is_error"))

    @property
    def is_warning(self) -> bool:
        return bool(self.metadata.get("is_warning"))


# Latency keys: "min", "max", "mean" and percentiles "p50", "p90", "p95", "p97", "p99",
# "p999" (the 99.9th percentile).
_LATENCY_FIELDS = ("min", "max", "mean", "p50", "p90", "p95", "p97", "p99", "p999")


@dataclass(frozen=True)
class Latency:
    """Latency statistics in nanoseconds; a field is None when the log lacks it."""

    min: float | None = None
    max: float | None = None
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p97: float | None = None
    p99: float | None = None
    p999: float | None = None

    def as_dict(self) -> dict[str, float]:
        """Present values only, keys ``min max mean p50 p90 p95 p97 p99 p999``."""
        return {k: v for k in _LATENCY_FIELDS if (v := getattr(self, k)) is not None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Latency:
        return cls(**{k: float(d[k]) for k in _LATENCY_FIELDS if d.get(k) is not None})


@dataclass(frozen=True)
class Headline:
    metric: str  # the detail-log key the value comes from
    value: float
    unit: str  # "samples/s", "tokens/s" or "ns"
    higher_is_better: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Headline:
        return cls(str(d["metric"]), float(d["value"]), str(d["unit"]), bool(d["higher_is_better"]))


@dataclass(frozen=True)
class Run:
    """One LoadGen run.  ``validity`` is "VALID"/"INVALID" as logged, or "UNKNOWN" when the
    log has no ``result_validity`` (LoadGen logs none in AccuracyOnly mode)."""

    scenario: str
    mode: str
    validity: str
    invalid_reasons: tuple[str, ...]
    constraints: dict[str, bool]
    headline: Headline | None
    reported: Headline | None
    token_headline: Headline | None
    latency_ns: Latency
    per_query_latency_ns: Latency | None
    ttft_ns: Latency | None
    tpot_ns: Latency | None
    early_stopping: dict[str, float]
    query_count: int | None
    metrics: dict[str, float]
    settings: dict[str, object]
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    loadgen_version: str | None
    log_problems: tuple[str, ...] = ()  # why the log reads as cut short or damaged (none: it is whole)

    @property
    def valid(self) -> bool:
        return self.validity == "VALID"

    @property
    def token_latencies(self) -> bool:
        """An LLM run: LoadGen measured first-token and per-token latencies (use_token_latencies)."""
        return self.ttft_ns is not None or self.settings.get("use_token_latencies") is True

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (Latency via ``as_dict``); :meth:`from_dict` rebuilds an equal Run."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Headline):
                v = v.to_dict()
            elif isinstance(v, Latency):
                v = v.as_dict()
            out[f.name] = list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, dict) else v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Run:
        def head(k: str) -> Headline | None:
            return None if d.get(k) is None else Headline.from_dict(d[k])

        def lat(k: str) -> Latency | None:
            return None if d.get(k) is None else Latency.from_dict(d[k])

        qc = d.get("query_count")
        return cls(
            scenario=str(d["scenario"]), mode=str(d["mode"]), validity=str(d["validity"]),
            invalid_reasons=tuple(d.get("invalid_reasons", ())),
            constraints={k: bool(v) for k, v in d.get("constraints", {}).items()},
            headline=head("headline"), reported=head("reported"),
            token_headline=head("token_headline"),
            latency_ns=Latency.from_dict(d.get("latency_ns") or {}),
            per_query_latency_ns=lat("per_query_latency_ns"), ttft_ns=lat("ttft_ns"),
            tpot_ns=lat("tpot_ns"),
            early_stopping={k: float(v) for k, v in d.get("early_stopping", {}).items()},
            query_count=None if qc is None else int(qc),
            metrics={k: float(v) for k, v in d.get("metrics", {}).items()},
            settings=dict(d.get("settings", {})), errors=tuple(d.get("errors", ())),
            warnings=tuple(d.get("warnings", ())), loadgen_version=d.get("loadgen_version"),
            log_problems=tuple(d.get("log_problems", ())),
        )


@dataclass(frozen=True)
class AccuracyEntry:
    """One record of mlperf_log_accuracy.json; ``data`` is decoded from its hex text."""

    seq_id: int
    qsl_idx: int
    data: bytes
    token_count: int | None = None
