"""The overhead gate, in the pytest process: `loop` (its rounds and outcome), `stats` (the intervals: paired and
floor), `stopping` (its plan, looks and verdicts), `driver` (pytest's side of it: warm-ups, rounds, failures),
`capacity` (the Server capacity gate's rounds), `report` (gate.md and gate.png) and `simulation` (the error rates
the plan was chosen by: docs/gate-statistics.md)."""
