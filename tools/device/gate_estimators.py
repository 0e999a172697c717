"""Re-reads recorded overhead-gate rounds with other statistics than the gate's, to see whether one of them would
have come closer to the known cost (issue 14): the mean and median of the per-round log-ratio, its
Hodges-Lehmann estimate, and the ratio of the two arms' medians, minima and lower quartiles.

    python tools/device/gate_estimators.py docs/measurements/h200-2026-12-02-server/latency/gate-*.json

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


def main(paths: list[str]) -> None:
    print("| run | rounds | gate's estimate | mean log-ratio | median | Hodges-Lehmann | ratio of medians | "
          "ratio of minima | ratio of lower quartiles |")
    print("|---|---|---|---|---|---|---|---|---|")
    for p in map(Path, paths):
        for g in gates(json.loads(p.read_text())):
            print(row(f"{p.parent.name}/{p.stem}", g))


if __name__ == "__main__":
    main(sys.argv[1:])
