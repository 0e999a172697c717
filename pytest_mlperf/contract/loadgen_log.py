"""Read MLCommons LoadGen logs into a typed :class:`Run` record (loadgen_run.py).

LoadGen writes ``mlperf_log_detail.txt`` (one ``:::MLLOG {json}`` entry per line),
``mlperf_log_summary.txt`` (human text) and ``mlperf_log_accuracy.json``.  The detail
log is the source of truth (the MLPerf submission checker reads it); the summary is
only used to fill keys the detail lacks (e.g. a detail log cut short by a crash).
What the keys mean (the checker's headline, latency statistics, INVALID reasons) is
loadgen_results.py's.  Note that the detail log prints floats with 6 significant
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
from dataclasses import replace
from pathlib import Path
from typing import Any

from pytest_mlperf.contract import metrics as catalogue
from pytest_mlperf.contract.loadgen_results import (
    CONSTRAINTS,
    LATENCY_FAMILIES,
    finite_number,
    headlines,
    invalid_reasons,
    latency_stats,
)
from pytest_mlperf.contract.loadgen_run import AccuracyEntry, LogEntry, LogParseError, Run

__all__ = ["ACCURACY_LOG", "DETAIL_LOG", "SUMMARY_LOG", "parse_detail", "parse_run", "parse_summary",
           "read_accuracy_log", "read_run"]

DETAIL_LOG = "mlperf_log_detail.txt"
SUMMARY_LOG = "mlperf_log_summary.txt"
ACCURACY_LOG = "mlperf_log_accuracy.json"
_MLLOG = ":::MLLOG"
_SCENARIOS = catalogue.SCENARIOS


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
               if k.startswith(("result_", "early_stopping_")) and (f := finite_number(v)) is not None}
    settings = {k[len("effective_"):]: v for k, v in last.items() if k.startswith("effective_")}
    constraints = {name: bool(last[k]) for k, (name, _) in CONSTRAINTS.items()
                   if isinstance(last.get(k), bool)}
    if mode == "PerformanceOnly" and not any(e.key == "result_validity" for e in entries):
        taken = " (the result shown is mlperf_log_summary.txt's)" if "result_validity" in last else ""
        problems.append(f"no result_validity in the detail log: it stops before LoadGen's results{taken}")
    latency: dict[str, Any] = {f: latency_stats(metrics, f) for f in LATENCY_FAMILIES}
    token_latencies = bool(latency["ttft"].as_dict()) or last.get("requested_use_token_latencies") is True
    head, reported, tokens = headlines(scenario, metrics, settings, token_latencies)
    latency.update({f: None for f, lat in latency.items() if f != "latency" and not lat.as_dict()})
    qc = finite_number(last.get("result_query_count"))
    version = last.get("loadgen_version")
    return Run(
        scenario=scenario, mode=mode, validity=str(last.get("result_validity") or "UNKNOWN"),
        invalid_reasons=invalid_reasons(last, constraints), constraints=constraints,
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
    **{f"{words.lower()} satisfied": key for key, (_, words) in CONSTRAINTS.items()},
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
        elif (summary_key := _SUMMARY_KEYS.get(label.lower())) is not None:
            out[summary_key] = _scalar(value)
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
