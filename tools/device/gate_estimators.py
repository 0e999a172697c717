"""Re-reads recorded overhead-gate rounds with other statistics than the gate's, to see whether one of them would
have come closer to the known cost (issue 14): the mean and median of the per-round log-ratio, its
Hodges-Lehmann estimate, and the ratio of the two arms' medians, minima and lower quartiles.

    python tools/device/gate_estimators.py docs/measurements/h200-2026-12-02-server/latency/gate-*.json
    python tools/device/gate_estimators.py --replay docs/measurements/h200-2026-12-02-s11/latency-gate/*.json

`--replay` runs the gate's own stopping rule (`stopping.evaluate`, the default plan) on each recorded series, round by
round, once with the paired estimator and once with the floor, and says where each would have stopped; a replay
that needs more rounds than were recorded is "undecided" (the run ended where the recorded gate decided).

Reads results.json files (each case's `gate`) and the gate's own JSON files (`reference`, `candidate` at the top).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np


def gates(doc: object) -> list[dict]:
    if isinstance(doc, dict) and "cases" in doc:
        return [c["gate"] for c in doc["cases"] if c.get("gate")]
    if isinstance(doc, dict) and "reference" in doc and "candidate" in doc:
        return [doc]
    return []


def row(name: str, g: dict) -> str:
    ref, cand = np.asarray(g["reference"], float), np.asarray(g["candidate"], float)
    lr = np.log(cand / ref)
    walsh = (lr[:, None] + lr[None, :]) / 2
    pct = lambda x: f"{100 * x:+.1f}%"
    cols = [math.expm1(lr.mean()), math.expm1(np.median(lr)),
            math.expm1(np.median(walsh[np.triu_indices(len(lr))])), np.median(cand) / np.median(ref) - 1,
            cand.min() / ref.min() - 1, np.quantile(cand, 0.25) / np.quantile(ref, 0.25) - 1]
    return f"| {name} | {len(lr)} | {pct(g['overhead'])} | " + " | ".join(pct(c) for c in cols) + " |"


def replay(name: str, g: dict) -> str:
    from dataclasses import replace

    from pytest_mlperf.host.gate.stopping import DEFAULT_PLAN, evaluate

    ref, cand = list(map(float, g["reference"])), list(map(float, g["candidate"]))
    higher = bool(g.get("higher_is_better", False))
    cells = []
    for estimator in ("paired", "floor"):
        plan = replace(DEFAULT_PLAN, estimator=estimator)
        found = None
        for n in range(1, len(ref) + 1):
            found = evaluate(plan, ref[:n], cand[:n], higher_is_better=higher, elapsed_s=float(n))
            if found is not None:
                break
        if found is None:
            cells.append(f"undecided after {len(ref)}")
        else:
            iv = found.interval
            cells.append(f"{found.verdict} {100 * iv.estimate:+.1f}% [{100 * iv.low:+.1f}, {100 * iv.high:+.1f}] "
                          f"at {found.rounds}")
    return f"| {name} | {g.get('verdict')} | {len(ref)} | " + " | ".join(cells) + " |"


def main(paths: list[str]) -> None:
    if paths and paths[0] == "--replay":
        print("| run | recorded verdict | recorded rounds | paired (replayed) | floor (replayed) |")
        print("|---|---|---|---|---|")
        for p in map(Path, paths[1:]):
            for g in gates(json.loads(p.read_text())):
                print(replay(f"{p.parent.name}/{p.stem}", g))
        return
    print("| run | rounds | gate's estimate | mean log-ratio | median | Hodges-Lehmann | ratio of medians | "
          "ratio of minima | ratio of lower quartiles |")
    print("|---|---|---|---|---|---|---|---|---|")
    for p in map(Path, paths):
        for g in gates(json.loads(p.read_text())):
            print(row(f"{p.parent.name}/{p.stem}", g))


if __name__ == "__main__":
    main(sys.argv[1:])
