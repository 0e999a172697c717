"""The ``pytest-mlperf`` command.

Sub-commands are registered in :data:`SUBCOMMANDS`: each entry is a function that adds
one sub-parser to the ``argparse`` sub-parsers object and sets ``func`` (called with the
parsed namespace, returning an exit code) as its default.  ``summarize`` is the first.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_mlperf.contract.loadgen_log import DETAIL_LOG, SUMMARY_LOG, read_run
from pytest_mlperf.contract.loadgen_results import estimate_label
from pytest_mlperf.contract.loadgen_run import Latency, LogParseError, Run

EXIT_OK = 0
EXIT_LOG_PROBLEM = 1  # summarized, but the log is cut short or damaged: what it says cannot be trusted as whole
EXIT_USAGE = 2  # bad arguments or unusable input (missing folder, missing/corrupt log)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _latency_line(label: str, lat: Latency | None) -> str | None:
    if lat is None or not lat.as_dict():
        return None
    names = {"p999": "p99.9"}
    parts = [f"{names.get(k, k)} {_fmt(v)}" for k, v in lat.as_dict().items()]
    return f"{label:<24}" + "  ".join(parts)


def format_summary(run: Run, path: Path | None = None) -> str:
    """A short human-readable summary of ``run``."""
    lines: list[str] = []
    if path is not None:
        lines.append(f"LoadGen log  {path}")
    if run.loadgen_version:
        lines.append(f"LoadGen      {run.loadgen_version}")
    lines.append(f"Scenario     {run.scenario}")
    lines.append(f"Mode         {run.mode}")
    lines.append(f"Result       {run.validity}")
    lines.extend(f"  - {r}" for r in run.invalid_reasons)
    unmet = [k for k, ok in run.constraints.items() if not ok]
    if run.constraints and not unmet:
        lines.append("  all constraints met: " + ", ".join(run.constraints))
    for label, h in (("Headline", run.headline), ("Reported", run.reported),
                     ("Tokens", run.token_headline)):
        if h is None:
            continue
        better = "higher" if h.higher_is_better else "lower"
        lines.append(f"{label:<13}{_fmt(h.value)} {h.unit}  [{h.metric}, {better} is better]")
    if run.headline is None and run.reported is None:
        lines.append("Headline     (none logged)")
    if run.early_stopping:
        lines.append("Early stop   " + ", ".join(
            f"{k} {_fmt(v)}" + (f" ({estimate})" if (estimate := estimate_label(run, k)) else "")
            for k, v in run.early_stopping.items()))
    if run.query_count is not None:
        lines.append(f"Queries      {run.query_count}")
    for label, lat in (("Latency (ns)", run.latency_ns),
                       ("Per-query latency (ns)", run.per_query_latency_ns),
                       ("TTFT (ns)", run.ttft_ns), ("TPOT (ns)", run.tpot_ns)):
        if (line := _latency_line(label, lat)) is not None:
            lines.append(line)
    lines.append(f"Errors       {len(run.errors)}, warnings {len(run.warnings)}")
    lines.extend(f"  error: {e}" for e in run.errors)
    if run.log_problems:
        lines.append("Log problems (the log is cut short or damaged; do not trust the result above as whole)")
        lines.extend(f"  - {p}" for p in run.log_problems)
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null: JSON has no such numbers, and json.dumps would print invalid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def summary_json(run: Run, path: Path | None = None) -> dict[str, Any]:
    """The ``--json`` object: :meth:`Run.to_dict` plus ``path``, ``valid`` and counts."""
    out: dict[str, Any] = {"path": None if path is None else str(path)}
    out.update(run.to_dict())
    out["valid"] = run.valid
    out["error_count"] = len(run.errors)
    out["warning_count"] = len(run.warnings)
    out["estimates"] = {k: label for k in run.early_stopping if (label := estimate_label(run, k))}
    return _json_safe(out)


def _cmd_summarize(args: argparse.Namespace) -> int:
    path = Path(args.path)
    expected = f"a LoadGen output folder holding {DETAIL_LOG} (and optionally {SUMMARY_LOG})"
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        print(f"pytest-mlperf summarize: {path} {what}; expected {expected}", file=sys.stderr)
        return EXIT_USAGE
    if not (path / DETAIL_LOG).is_file():
        print(f"pytest-mlperf summarize: {path / DETAIL_LOG} not found; expected {expected}",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        run = read_run(path)
    except (LogParseError, OSError) as exc:
        print(f"pytest-mlperf summarize: cannot read LoadGen log: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(summary_json(run, path), indent=2, sort_keys=False, allow_nan=False))
    else:
        print(format_summary(run, path))
    for problem in run.log_problems:
        print(f"pytest-mlperf summarize: warning: {path / DETAIL_LOG}: {problem}", file=sys.stderr)
    return EXIT_LOG_PROBLEM if run.log_problems else EXIT_OK


def _add_summarize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summarize", help="summarize one LoadGen log folder",
                       description="Summarize a LoadGen log folder (mlperf_log_detail.txt, "
                                   "optionally mlperf_log_summary.txt).")
    p.add_argument("path", metavar="PATH", help="LoadGen output folder")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_summarize)


def _cmd_aggregate(args: argparse.Namespace) -> int:
    # imported here: aggregate renders with host/results/report.py, which pulls numpy in; summarize stays light without it
    from pytest_mlperf.contract.files import write_json_atomic, write_text_atomic
    from pytest_mlperf.host.results.aggregate import aggregate_document, merge, render_markdown, terminal_lines
    from pytest_mlperf.host.results.aggregate_input import AggregateError, load_results

    try:
        sources = [load_results(Path(p)) for p in args.files]
        single = load_results(Path(args.single)) if args.single else None
        agg = merge(sources, single)
    except AggregateError as exc:
        print(f"pytest-mlperf aggregate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print("\n".join(terminal_lines(agg)))
    for target, write in ((args.markdown, lambda p: write_text_atomic(p, render_markdown(agg))),
                          (args.json, lambda p: write_json_atomic(p, aggregate_document(agg)))):
        if target is None:
            continue
        try:
            write(Path(target))
        except OSError as exc:
            print(f"pytest-mlperf aggregate: cannot write {target}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
    return EXIT_OK


def _add_aggregate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("aggregate", help="merge results JSON files of several hosts into per-case totals",
                       description="Merge results JSON files (one per host) case by case: hosts, GPUs, combined "
                                   "throughput, mean per GPU, worst latency, and the scaling efficiency against a "
                                   "one-GPU run.")
    p.add_argument("files", metavar="FILE", nargs="+", help="results JSON (e.g. node-a/results.json)")
    p.add_argument("--single", metavar="FILE", help="results JSON of a one-GPU run: the scaling reference")
    p.add_argument("--markdown", metavar="FILE", help="also write the table as Markdown")
    p.add_argument("--json", metavar="FILE", help="also write the merged figures as JSON")
    p.set_defaults(func=_cmd_aggregate)


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_summarize, _add_aggregate]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pytest-mlperf", description="Tools for MLPerf LoadGen logs and pytest-mlperf results.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
