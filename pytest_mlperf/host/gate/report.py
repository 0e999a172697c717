"""Reports of the overhead gate, from the records' `gate` entries: terminal lines, a Markdown summary for a pull
request comment, and a PNG chart of overheads with their intervals against the limit. Pure renderers, except
`write_chart`, which needs matplotlib (the `plot` extra)."""

from __future__ import annotations

import io
import math
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_mlperf.contract.files import write_bytes_atomic
from pytest_mlperf.host.gate.stats import FLOOR_NEAR, FLOOR_SHARE
from pytest_mlperf.host.results.report import case_labels, format_value

VERDICT_MARK = {"PASS": "✅ PASS", "FAIL": "❌ FAIL", "INCONCLUSIVE": "⚠️ INCONCLUSIVE"}


def gated(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("gate")]


def pct(x: float | None, signed: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x * 100:+.1f}%" if signed else f"{x * 100:.1f}%"


def _median(values: list[float], unit: str) -> str:
    return format_value(statistics.median(values), unit) if values else "-"


def overhead_text(gate: dict[str, Any]) -> str:
    if gate.get("metric") == "outputs":
        o = gate["outputs"]
        return "outputs equal" if not o["differing"] else f"{o['differing']} of {o['samples']} outputs differ"
    return f"{pct(gate.get('overhead'))} [{pct(gate.get('ci_low'))}, {pct(gate.get('ci_high'))}]"


def floor_caution(shares: Mapping[str, float] | None) -> str | None:
    """A warning when a gate judged by the floor estimator had too few rounds on an arm's floor for its estimate to
    be the undisturbed cost: `shares` is each arm's share (a record's `gate.floor_occupancy`, or
    `MetricGate.occupancy()`); None when both had enough, or the gate was judged otherwise (no shares)."""
    if not shares:
        return None
    low = {arm: share for arm, share in shares.items() if share < FLOOR_SHARE}
    if not low:
        return None
    which = " and ".join(f"{share:.0%} of the {arm}'s" for arm, share in low.items())
    return (f"Caution: only {which} rounds sat within {FLOOR_NEAR:.0%} of their arm's best, fewer than the "
            f"{FLOOR_SHARE:.0%} the floor estimator averages, so the machine was in a slow state most of the gate and "
            "the estimate may be several points off: steady the machine (lock GPU clocks, keep other work off its "
            "CPUs) or read the figure as approximate")


def terminal_lines(records: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in gated(records):
        g = r["gate"]
        what = g.get("label", g.get("metric", "?"))
        lines.append(f"gate: {r['nodeid']}: {g['verdict']} {what} overhead {overhead_text(g)} "
                     f"(limit {pct(g['max_overhead'], signed=False)}, {g['rounds']} rounds, {g['elapsed_s']:.0f} s)")
        caution = floor_caution(g.get("floor_occupancy"))
        if caution:
            lines.append(f"  {caution}")
    return lines


def markdown_summary(records: list[dict[str, Any]]) -> str:
    """The gate's verdict for a PR comment: readable alone (verdict, overhead, how sure, what to do)."""
    rows = gated(records)
    if not rows:
        return ""
    verdicts = [r["gate"]["verdict"] for r in rows]
    overall = "FAIL" if "FAIL" in verdicts else "INCONCLUSIVE" if "INCONCLUSIVE" in verdicts else "PASS"
    limit = pct(rows[0]["gate"]["max_overhead"], signed=False)
    conf = rows[0]["gate"].get("confidence") or 0.99
    first = rows[0]["gate"]
    lines = [
        f"## Overhead gate: {VERDICT_MARK[overall]}",
        "",
        (f"{verdicts.count('PASS')} of {len(rows)} case(s) pass: the candidate costs less than {limit} against the "
         f"reference with {conf:.0%} confidence. "
         f"Failed: {verdicts.count('FAIL')}; undecided: {verdicts.count('INCONCLUSIVE')}."),
        "",
        f"- reference: `{first.get('reference_recipe') or '(plain)'}`",
        f"- candidate: `{first.get('candidate_recipe') or '(plain)'}`",
        "",
        "| case | metric | reference | candidate | overhead [interval] | limit | verdict | rounds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r, name in zip(rows, case_labels(rows)):
        g = r["gate"]
        unit = g.get("unit", "")
        lines.append(
            f"| {name} | {g.get('label', g.get('metric', ''))} | {_median(g.get('reference') or [], unit)} "
            f"| {_median(g.get('candidate') or [], unit)} | {overhead_text(g)} | {limit} "
            f"| {VERDICT_MARK.get(g['verdict'], g['verdict'])} | {g['rounds']} |")
    cautions = [(name, floor_caution(r["gate"].get("floor_occupancy"))) for r, name in zip(rows, case_labels(rows))]
    lines += [f"\n⚠️ {name}: {text}" for name, text in cautions if text]
    lines += [
        "",
        ("Overhead is the candidate's cost against the reference: `1 - candidate/reference` for throughput, "
         "`candidate/reference - 1` for latency; reference and candidate show medians over the rounds. Each round "
         f"runs both, back to back on the same GPU in alternating order; the interval is a {conf:.0%} bootstrap "
         "interval over rounds. PASS: the whole interval is below the limit; FAIL: the whole interval is above it; "
         "INCONCLUSIVE: the budget ran out first. Decide it with more rounds (`--mlperf-gate-max-rounds`, "
         "`--mlperf-gate-budget`) or a steadier GPU (locked clocks, nothing else running on it)."),
    ]
    return "\n".join(lines) + "\n"


def write_chart(records: list[dict[str, Any]], path: Path) -> str | None:
    """A PNG of each case's overhead and interval against the limit line. Returns None when written, else why
    not ("" when there is nothing to chart: accuracy gates compare outputs)."""
    rows = [r for r in gated(records) if r["gate"].get("overhead") is not None]
    if not rows:
        return ""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "chart skipped: matplotlib is not installed (pip install 'pytest-mlperf[plot]')"
    colours = {"PASS": "tab:green", "FAIL": "tab:red", "INCONCLUSIVE": "tab:orange"}
    fig, ax = plt.subplots(figsize=(9, 1.6 + 0.5 * len(rows)))
    for y, r in enumerate(rows):
        g = r["gate"]
        est = 100 * g["overhead"]
        lo = 100 * (g["ci_low"] if g["ci_low"] is not None else g["overhead"])
        hi = 100 * (g["ci_high"] if g["ci_high"] is not None else g["overhead"])
        ax.errorbar(est, y, xerr=[[est - lo], [hi - est]], fmt="o", capsize=4, color=colours.get(g["verdict"], "k"))
    limit = 100 * rows[0]["gate"]["max_overhead"]
    ax.axvline(limit, color="tab:red", linestyle="--")
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [f"{name} ({r['gate'].get('label', '')})" for r, name in zip(rows, case_labels(rows))])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    conf = rows[0]["gate"].get("confidence") or 0.99
    ax.set_title(f"overhead gate: candidate vs reference, {conf:.0%} intervals; red dashes: the {limit:.1f}% limit",
                 fontsize=10)
    ax.set_xlabel("overhead (%)")
    fig.tight_layout()
    png = io.BytesIO()
    try:
        fig.savefig(png, format="png", dpi=110)
    finally:
        plt.close(fig)
    write_bytes_atomic(path, png.getvalue())
    return None
