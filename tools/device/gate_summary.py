"""Summarise overhead-gate runs (results JSON files) as a Markdown table: verdict, estimate, interval, rounds,
time, and the run-to-run noise of the rounds (sd of the per-round log ratio, and of each arm's log values),
which is what docs/gate-statistics.md's simulation takes as `cv`, and each arm's share of rounds on its floor
(host/gate/stats.floor_occupancy, the figure behind the reports' caution; computed here from the series, so it is
shown for gates recorded before the plugin kept it too).

    python tools/device/gate_summary.py gate-results/*/results.json
    python tools/device/gate_summary.py docs/measurements/h200-2026-12-03-s1[4-7]/*/*/results.json
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

from pytest_mlperf.host.gate.stats import floor_occupancy


def row(path: Path) -> str | None:
    for case in json.loads(path.read_text())["cases"]:
        g = case.get("gate")
        if not g or g.get("overhead") is None:
            continue
        ref, cand = g["reference"], g["candidate"]
        ratios = [math.log(c / r) for r, c in zip(ref, cand)]
        sd_ratio = statistics.stdev(ratios) if len(ratios) > 1 else float("nan")
        sd_ref = statistics.stdev([math.log(x) for x in ref]) if len(ref) > 1 else float("nan")
        med = statistics.median(ref)
        shown = f"{med:,.0f} {g['unit']}" if g["unit"] != "ns" else f"{med / 1e6:.3f} ms"
        higher = bool(g.get("higher_is_better", g["unit"] != "ns"))
        on_floor = f"{floor_occupancy(ref, higher):.2f} / {floor_occupancy(cand, higher):.2f}"
        return (f"| {path.parent.name} | {g['label']} | {shown} | {g['verdict']} | {100 * g['overhead']:+.2f}% | "
                f"[{100 * g['ci_low']:+.2f}%, {100 * g['ci_high']:+.2f}%] | {g['rounds']} | {g['elapsed_s']:.0f} | "
                f"{100 * sd_ratio:.2f}% | {100 * sd_ref:.2f}% | {g.get('estimator', 'paired')} | {on_floor} |")
    return None


def main(paths: list[str]) -> None:
    print("| run | metric | reference median | verdict | estimate | interval | rounds | rounds' time (s) "
          "| sd of round log-ratio | sd of reference runs | estimator | on the floor, reference / candidate |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for p in paths:
        line = row(Path(p))
        if line:
            print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
