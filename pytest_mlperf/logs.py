"""Read MLCommons LoadGen logs into a typed :class:`Run` record.

LoadGen writes ``mlperf_log_detail.txt`` (one ``:::MLLOG {json}`` entry per line),
``mlperf_log_summary.txt`` (human text) and ``mlperf_log_accuracy.json``.  The detail
log is the source of truth (the MLPerf submission checker reads it); the summary is
only used to fill keys the detail lacks (e.g. a detail log cut short by a crash).

Headline metrics follow the submission checker: Offline ``result_samples_per_second``,
Server ``result_completed_samples_per_sec``, SingleStream ``early_stopping_latency_ss``,
MultiStream ``early_stopping_latency_ms``.  LoadGen logs an early-stopping estimate of 0
when it could not compute one; then the headline falls back to the percentile LoadGen
uses (SingleStream p90, MultiStream per-query p99) and ``Headline.metric`` names that
percentile key instead.  An LLM SingleStream run (token latencies) is the exception: there
``early_stopping_latency_ss`` is LoadGen's TTFT (or TPOT) estimate, and the checker
reports the end-to-end ``result_90.00_percentile_latency_ns`` (its benchmark overwrite for
llama3.1-8b-edge), so that is the headline and the estimate is labelled
(:func:`estimate_label`).  Note that the detail log prints floats with 6 significant
digits, so throughputs can differ from the summary's text in the last printed digits.

Lines are what MLCommons' parser reads: split at line breaks only (a raw U+2028 inside a
JSON string is part of its line), and when a key appears twice its FIRST value counts.
What the checker would refuse or miss (a malformed ``:::MLLOG`` line, bytes that are not
UTF-8, a non-finite number, a performance log without ``result_validity``) is kept in
``Run.log_problems``: such a log is cut short or damaged and must not read as fine.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .contract import metrics as catalogue

__all__ = ["AccuracyEntry", "Headline", "Latency", "LogEntry", "LogParseError", "Run",
           "estimate_label", "parse_detail", "parse_run", "parse_summary", "read_accuracy_log", "read_run",
           "DETAIL_LOG", "SUMMARY_LOG", "ACCURACY_LOG"]

DETAIL_LOG = "mlperf_log_detail.txt"
SUMMARY_LOG = "mlperf_log_summary.txt"
ACCURACY_LOG = "mlperf_log_accuracy.json"
_MLLOG = ":::MLLOG"
_SCENARIOS = catalogue.SCENARIOS


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
_PCT_FIELDS = {50.0: "p50", 90.0: "p90", 95.0: "p95", 97.0: "p97", 99.0: "p99", 99.9: "p999"}
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


# --------------------------------------------------------------------------- detail log

_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # what a file read in text mode splits at; str.splitlines splits more


def parse_detail(text: str, path: str | Path | None = None, *,
                 problems: list[str] | None = None) -> list[LogEntry]:
    """Parse the ``:::MLLOG`` lines of a detail log.

    Lines that do not start with ``:::MLLOG`` are skipped; a ``:::MLLOG`` line that is not a
    JSON object with a key (a truncated last line, malformed JSON) is skipped too, and said in
    ``problems`` when a list is given.  Raises :class:`LogParseError` when there is not a
    single MLLOG entry.
    """
    entries: list[LogEntry] = []
    first_bad: int | None = None
    for number, raw in enumerate(_LINE_BREAK.split(text), start=1):
        line = raw.strip()
        if not line.startswith(_MLLOG):
            continue
        try:
            obj = json.loads(line[len(_MLLOG):])
        except ValueError:
            obj = None
        if not isinstance(obj, dict) or not isinstance(obj.get("key"), str):
            first_bad = first_bad or number
            if problems is not None:
                problems.append(f"line {number} is not a whole MLLOG entry (a log cut short or damaged; "
                                "MLCommons' checker refuses such a log)")
            continue
        meta = obj.get("metadata")
        time_ms = obj.get("time_ms")
        entries.append(LogEntry(
            key=obj["key"], value=obj.get("value"),
            time_ms=float(time_ms) if isinstance(time_ms, (int, float)) else None,
            event_type=obj.get("event_type"), metadata=meta if isinstance(meta, dict) else {},
            line=number))
    if not entries:
        what = "file is empty" if not text.strip() else "no ':::MLLOG {json}' entries found"
        if first_bad is not None:
            what += f" (first malformed MLLOG line: {first_bad})"
        raise LogParseError(f"{what}; expected a LoadGen detail log", path, first_bad)
    return entries


def _num(v: Any) -> float | None:
    """A finite number, else None (NaN and infinities are no measurement: JSON cannot carry them either)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


_PCT_KEY = r"(\d+(?:\.\d+)?)"
# family -> (regex of its min/max/mean keys, regex of its percentile keys)
_FAMILIES = {
    "latency": (re.compile(r"result_(min|max|mean)_latency_ns"),
                re.compile(rf"result_{_PCT_KEY}_percentile_latency_ns")),
    "per_query": (re.compile(r"result_(min|max|mean)_query_latency_ns"),
                  re.compile(rf"result_{_PCT_KEY}_percentile_per_query_latency_ns")),
    "ttft": (re.compile(r"result_first_token_(min|max|mean)_latency_ns"),
             re.compile(rf"result_first_token_{_PCT_KEY}_percentile_latency_ns")),
    "tpot": (re.compile(r"result_time_to_output_token_(min|max|mean)"),
             re.compile(rf"result_time_per_output_token_{_PCT_KEY}_percentile_ns")),
}


def _latency(metrics: Mapping[str, float], family: str) -> Latency:
    stat_re, pct_re = _FAMILIES[family]
    values: dict[str, float] = {}
    for key, v in metrics.items():
        if m := stat_re.fullmatch(key):
            values[m.group(1)] = v
        elif (m := pct_re.fullmatch(key)) and (name := _PCT_FIELDS.get(float(m.group(1)))):
            values[name] = v
    return Latency(**values)


def _pct_key(pct: float, per_query: bool = False) -> str:
    return catalogue.percentile_key(pct, per_query)


def _headlines(scenario: str, metrics: Mapping[str, float], settings: Mapping[str, object],
               token_latencies: bool = False) -> tuple[Headline | None, Headline | None, Headline | None]:
    """(checker headline, summary's reported headline, token headline), by the scenario's headline rule in the
    catalogue (contract/metrics.py)."""
    def pick(keys: Iterable[str], unit: str, higher: bool) -> Headline | None:
        for k in keys:
            if metrics.get(k):  # present and non-zero (0 marks "not computed")
                return Headline(k, metrics[k], unit, higher)
        return None

    def pick_tokens() -> Headline | None:
        # LLM latency scenarios: tokens over the whole run; result_token_throughput is not tokens/s (LoadGen 6.0
        # divides by nanoseconds there)
        if not rule.tokens:
            return None
        m = catalogue.metric(rule.tokens[0])
        return pick(rule.tokens, m.unit, m.higher_is_better)

    rule = catalogue.headline_rule(scenario)
    if rule is None:
        return None, None, None
    if rule.percentile is None:
        m = catalogue.metric(rule.keys[0])
        head = reported = pick(rule.keys, m.unit, m.higher_is_better)
        return head, reported, pick_tokens()
    target = _num(settings.get("target_latency_percentile"))
    default = _pct_key(rule.percentile, rule.per_query)
    pct_keys = [_pct_key(target * 100, rule.per_query)] if target else []
    pct_keys += [default, *rule.legacy]  # legacy: old logs (no per-query keys)
    unit = catalogue.LATENCY_UNIT
    reported = pick(pct_keys, unit, False)
    if token_latencies and not rule.estimate_with_tokens:  # the estimate is TTFT's: the checker reports `default`
        head = pick([default] + pct_keys, unit, False)
    else:
        head = pick(([rule.estimate] if rule.estimate else []) + pct_keys, unit, False)
    return head, reported, pick_tokens() if token_latencies else None


_CONSTRAINTS = {  # detail key -> (Run.constraints key, summary wording)
    "result_perf_constraints_met": ("perf_constraints_met", "Performance constraints"),
    "result_min_duration_met": ("min_duration_met", "Min duration"),
    "result_min_queries_met": ("min_queries_met", "Min queries"),
    "early_stopping_met": ("early_stopping_met", "Early stopping"),
}
_ES_RESULTS = {"early_stopping_result": "", "early_stopping_ttft_result": " (TTFT)",
               "early_stopping_tpot_result": " (TPOT)"}


def _bullets(text: str) -> str:
    parts = [" ".join(p.split()) for p in text.split("*")]
    return " ".join(p for p in parts if p)


def _reasons(last: Mapping[str, Any], constraints: Mapping[str, bool]) -> tuple[str, ...]:
    reasons: list[str] = []
    text = last.get("result_invalid_reason")
    if isinstance(text, str):  # "A. B. " -> ["A.", "B."]
        reasons += [p for p in re.split(r"(?<=\.)\s+", text.strip()) if p]
    for key, words in _CONSTRAINTS.values():
        if constraints.get(key) is not False:
            continue
        details = [f"{words} not satisfied{label}: {_bullets(es)}"
                   for es_key, label in _ES_RESULTS.items() if key == "early_stopping_met"
                   and isinstance(es := last.get(es_key), str) and es.strip()
                   and "Run successful" not in es]
        reasons += details or [f"{words} not satisfied"]
    return tuple(reasons)


def parse_run(entries: Iterable[LogEntry], fallback: Mapping[str, Any] | None = None) -> Run:
    """Build a :class:`Run` from detail-log entries (the first value of a key wins, as in
    MLCommons' log parser).

    ``fallback`` maps detail keys to values (e.g. :func:`parse_summary`'s result); it only
    fills keys the entries lack.  Raises :class:`LogParseError` without a scenario.
    """
    entries = list(entries)
    last: dict[str, Any] = {}  # "last" for history: each key's first value
    for e in entries:
        last.setdefault(e.key, e.value)
    problems = [f"{k}: {v} is not a finite number" for k, v in last.items()
                if isinstance(v, float) and not math.isfinite(v)]
    for k, v in (fallback or {}).items():
        last.setdefault(k, v)
    errors = tuple(f"{e.key}: {e.value}" for e in entries if e.is_error)
    warnings = tuple(f"{e.key}: {e.value}" for e in entries if e.is_warning)

    scenario = str(last.get("effective_scenario") or last.get("requested_scenario") or "")
    scenario = scenario.replace(" ", "") if scenario.replace(" ", "") in _SCENARIOS else scenario
    if not scenario:
        raise LogParseError("no effective_scenario entry; is this a LoadGen detail log?")
    mode = str(last.get("effective_test_mode") or last.get("requested_test_mode") or "")
    metrics = {k: f for k, v in last.items()
               if k.startswith(("result_", "early_stopping_")) and (f := _num(v)) is not None}
    settings = {k[len("effective_"):]: v for k, v in last.items() if k.startswith("effective_")}
    constraints = {name: bool(last[k]) for k, (name, _) in _CONSTRAINTS.items()
                   if isinstance(last.get(k), bool)}
    if mode == "PerformanceOnly" and not any(e.key == "result_validity" for e in entries):
        taken = " (the result shown is mlperf_log_summary.txt's)" if "result_validity" in last else ""
        problems.append(f"no result_validity in the detail log: it stops before LoadGen's results{taken}")
    latency: dict[str, Any] = {f: _latency(metrics, f) for f in _FAMILIES}
    token_latencies = bool(latency["ttft"].as_dict()) or last.get("requested_use_token_latencies") is True
    head, reported, tokens = _headlines(scenario, metrics, settings, token_latencies)
    latency.update({f: None for f, lat in latency.items() if f != "latency" and not lat.as_dict()})
    qc = _num(last.get("result_query_count"))
    version = last.get("loadgen_version")
    return Run(
        scenario=scenario, mode=mode, validity=str(last.get("result_validity") or "UNKNOWN"),
        invalid_reasons=_reasons(last, constraints), constraints=constraints,
        headline=head, reported=reported, token_headline=tokens,
        latency_ns=latency["latency"],
        per_query_latency_ns=latency["per_query"], ttft_ns=latency["ttft"],
        tpot_ns=latency["tpot"],
        early_stopping={k: v for k, v in metrics.items()
                        if k.startswith("early_stopping_latency") and v},
        query_count=None if qc is None else int(qc), metrics=metrics, settings=settings,
        errors=errors, warnings=warnings,
        loadgen_version=None if version is None else str(version),
        log_problems=tuple(problems),
    )


def estimate_label(run: Run, key: str) -> str | None:
    """What an early-stopping key of ``run`` estimates, where its name would mislead: in an LLM
    SingleStream run LoadGen's ``early_stopping_latency_ss`` is the TTFT estimate (TPOT's when
    TPOT's early stopping failed first), not the end-to-end latency the checker reports."""
    if key == "early_stopping_latency_ss" and run.scenario == "SingleStream" and run.token_latencies:
        return "TTFT estimate (TPOT's when TPOT early stopping failed), not end-to-end latency"
    return None


# --------------------------------------------------------------------------- summary log

_SUMMARY_KEYS = {  # summary label (lower case, units dropped) -> detail key
    "scenario": "effective_scenario", "mode": "effective_test_mode",
    "result is": "result_validity", "sut name": "sut_name",
    "samples per second": "result_samples_per_second",
    "tokens per second": "result_tokens_per_second",
    "completed samples per second": "result_completed_samples_per_sec",
    "scheduled samples per second": "result_scheduled_samples_per_sec",
    "completed tokens per second": "result_completed_tokens_per_second",
    "qps w/ loadgen overhead": "result_qps_with_loadgen_overhead",
    "qps w/o loadgen overhead": "result_qps_without_loadgen_overhead",
    "min first token latency": "result_first_token_min_latency_ns",
    "max first token latency": "result_first_token_max_latency_ns",
    "mean first token latency": "result_first_token_mean_latency_ns",
    **{f"{s} time {w} output token": f"result_time_to_output_token_{s}"
       for s in ("min", "max", "mean") for w in ("to", "per")},
    **{f"{words.lower()} satisfied": key for key, (_, words) in _CONSTRAINTS.items()},
}
_SUMMARY_PCT = {  # percentile line kind -> detail key template
    "latency": "result_{}_percentile_latency_ns",
    "first token latency": "result_first_token_{}_percentile_latency_ns",
    "time to output token": "result_time_per_output_token_{}_percentile_ns",
}


def _scalar(text: str) -> Any:
    t = text.strip()
    if t in ("Yes", "NO", "No"):
        return t == "Yes"
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    return t


def parse_summary(text: str) -> dict[str, Any]:
    """Map the lines of mlperf_log_summary.txt to the detail-log keys they print."""
    out: dict[str, Any] = {}
    per_query = False
    in_params = False
    for raw in text.splitlines():
        line = raw.strip().lstrip("* ").strip()
        if not line:
            per_query = False
            continue
        if line == "Test Parameters Used":
            in_params = True
            continue
        if line.startswith("Per-query latency"):
            per_query = True
            continue
        if m := re.fullmatch(r"Early stopping ([\d.]+)th percentile estimate: ([\d.e+]+)", line):
            key = "early_stopping_latency_ss" if float(m.group(1)) < 99 else "early_stopping_latency_ms"
            out.setdefault(key, _scalar(m.group(2)))  # an LLM's TTFT estimate comes first: the detail's value
            continue
        label, sep, value = line.partition(":")
        if not sep or not value.strip():
            continue
        label = " ".join(label.split())
        unit = re.search(r"\((ns|ms)\)$", label)
        label = re.sub(r"\s*\((ns|ms)\)$", "", label)
        if in_params and re.fullmatch(r"[a-z0-9_]+", label):
            out[f"effective_{label}" + (f"_{unit.group(1)}" if unit else "")] = _scalar(value)
        elif m := re.fullmatch(r"([\d.]+)(th)? percentile (.+)", label):
            pct = f"{float(m.group(1)):.2f}"
            kind = m.group(3)
            if kind == "latency" and (per_query or m.group(2)) and out.get(
                    "effective_scenario") == "MultiStream":
                out[f"result_{pct}_percentile_per_query_latency_ns"] = _scalar(value)
            elif kind in _SUMMARY_PCT:
                out[_SUMMARY_PCT[kind].format(pct)] = _scalar(value)
        elif m := re.fullmatch(r"(Min|Max|Mean) latency", label):
            stat = m.group(1).lower()
            key = f"result_{stat}_query_latency_ns" if per_query else f"result_{stat}_latency_ns"
            out[key] = _scalar(value)
        elif (key := _SUMMARY_KEYS.get(label.lower())) is not None:
            out[key] = _scalar(value)
    return out


# --------------------------------------------------------------------------- files

def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise LogParseError(f"cannot read: {exc.strerror or exc}", path) from exc


def _read_utf8(path: Path, problems: list[str]) -> str:
    """The file's text; bytes that are not UTF-8 (MLCommons' parser stops at them) are replaced and said."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LogParseError(f"cannot read: {exc.strerror or exc}", path) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(f"{path.name}: byte {exc.start} is not UTF-8 (a damaged log)")
        text = data.decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_run(log_dir: str | Path) -> Run:
    """Read a LoadGen output folder: the detail log, filled in from the summary if present.
    What is wrong with the logs themselves is in the result's ``log_problems``."""
    log_dir = Path(log_dir)
    detail = log_dir / DETAIL_LOG
    if not detail.is_file():
        raise FileNotFoundError(f"{detail}: no LoadGen detail log ({DETAIL_LOG}) here")
    problems: list[str] = []
    entries = parse_detail(_read_utf8(detail, problems), detail, problems=problems)
    summary = log_dir / SUMMARY_LOG
    fallback = parse_summary(_read_text(summary)) if summary.is_file() else None
    try:
        run = parse_run(entries, fallback)
    except LogParseError as exc:
        raise LogParseError(str(exc), detail) from exc
    return replace(run, log_problems=(*problems, *run.log_problems)) if problems else run


def read_accuracy_log(path: str | Path) -> list[AccuracyEntry]:
    """Read mlperf_log_accuracy.json (``[\\n]\\n`` for a run that logged nothing)."""
    path = Path(path)
    try:
        records = json.loads(_read_text(path))
    except ValueError as exc:
        line = getattr(exc, "lineno", None)
        raise LogParseError(f"not a LoadGen accuracy log: {exc}", path, line) from exc
    if not isinstance(records, list):
        raise LogParseError("not a LoadGen accuracy log: expected a JSON list", path)
    out: list[AccuracyEntry] = []
    for i, r in enumerate(records):
        try:
            tc = r.get("token_count")
            out.append(AccuracyEntry(int(r["seq_id"]), int(r["qsl_idx"]),
                                     bytes.fromhex(r["data"]), None if tc is None else int(tc)))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise LogParseError(f"bad accuracy record #{i}: {exc!r}", path) from exc
    return out
