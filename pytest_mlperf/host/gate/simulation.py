"""Research code behind ``docs/gate-statistics.md``: Monte-Carlo simulation of the overhead gate.

Simulates paired reference/candidate measurements under a noise model (per-run lognormal noise,
shared linear drift and random walk, outlier runs), runs the gate's stopping rule of
:mod:`pytest_mlperf.host.gate.stats` on them and tabulates its error rates.  ``python -m
pytest_mlperf.host.gate.simulation`` prints the simulation table of that document; the simulation
tests in ``tests/test_gate_simulation.py`` use :func:`error_rates` and :func:`simulate_gate`.

Not imported by the plugin: the run-time statistics live in ``host/gate/stats.py`` and ``host/gate/stopping.py`` only
(``tests/test_gate_simulation.py`` checks that no other module of the package imports this one).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pytest_mlperf.host.gate.stats import (
    MIN_INTERVAL_ROUNDS,
    _arm_costs,
    _batch_floor_interval,
    _batch_interval,
    _log_costs,
    _to_overhead,
)
from pytest_mlperf.host.gate.stopping import (
    DEFAULT_PLAN,
    GateDecision,
    GatePlan,
    _is_look,
    estimator_for,
    evaluate,
    look_confidence,
    looks,
    round_order,
)

__all__ = ["error_rates", "simulate_gate"]


# ----------------------------------------------------------------------------- simulation
def _slow_states(rng: np.random.Generator, is_cand: np.ndarray, enter: float, mean_runs: float) -> np.ndarray:
    """Per run, how much slower a slow state of its arm makes it: each arm on its own enters a state with
    probability ``enter`` per run of its own, stays a geometric number of its runs (mean ``mean_runs``), and is
    5-20% slower throughout (one level per state), as a SingleStream runner on the H200 is (session 11)."""
    out = np.zeros(is_cand.size)
    for arm in (False, True):
        runs = np.flatnonzero(is_cand == arm)
        left, level = 0, 0.0
        for i in runs:
            if left == 0 and rng.random() < enter:
                left, level = int(rng.geometric(1.0 / mean_runs)), float(rng.uniform(0.05, 0.20))
            if left > 0:
                out[i], left = level, left - 1
    return out


def _simulate_runs(
    rng: np.random.Generator, true_overhead: float, n_rounds: int, *, cv: float, drift_per_round: float,
    walk_sd: float, outlier_rate: float, higher_is_better: bool, slow_enter: float = 0.0, slow_runs: float = 4.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Paired measurements under the noise model: multiplicative lognormal noise (sd ``cv``) per
    run, shared drift (linear ``drift_per_round`` plus a random walk with step sd ``walk_sd`` per
    run), outlier runs (probability ``outlier_rate``) 10-20% slow, and each arm's own lasting slow states
    (``slow_enter``, ``slow_runs``: :func:`_slow_states`)."""
    order = round_order(n_rounds, int(rng.integers(2**31)))
    m = 2 * n_rounds
    t = np.arange(m)
    log_level = drift_per_round * t / 2.0 + np.cumsum(rng.normal(0.0, walk_sd, m)) + rng.normal(0.0, cv, m)
    slow = np.where(rng.random(m) < outlier_rate, rng.uniform(0.10, 0.20, m), 0.0)
    is_cand = np.array([o == "candidate" for o in order])
    if slow_enter > 0:
        slow = np.maximum(slow, _slow_states(rng, is_cand, slow_enter, slow_runs))
    if higher_is_better:
        value = 1000.0 * np.exp(log_level) * (1.0 - slow) * np.where(is_cand, 1.0 - true_overhead, 1.0)
    else:
        value = 1e7 * np.exp(log_level) * (1.0 + slow) * np.where(is_cand, 1.0 + true_overhead, 1.0)
    return value[~is_cand], value[is_cand]  # one of each per round, in round order


def simulate_gate(
    true_overhead: float, *, cv: float, drift_per_round: float, outlier_rate: float,
    plan: GatePlan = DEFAULT_PLAN, seed: int, higher_is_better: bool = True,
    walk_sd: float = 0.0, round_seconds: float = 20.0, slow_enter: float = 0.0, slow_runs: float = 4.0,
) -> GateDecision:
    """Run the gate loop (``evaluate`` after every round) on simulated measurements."""
    rng = np.random.default_rng(seed)
    ref, cand = _simulate_runs(rng, true_overhead, plan.max_rounds, cv=cv, drift_per_round=drift_per_round,
                               walk_sd=walk_sd, outlier_rate=outlier_rate, higher_is_better=higher_is_better,
                               slow_enter=slow_enter, slow_runs=slow_runs)
    for n in range(1, plan.max_rounds + 1):
        d = evaluate(plan, ref[:n], cand[:n], higher_is_better=higher_is_better, elapsed_s=n * round_seconds)
        if d is not None:
            return d
    raise AssertionError("evaluate must decide by max_rounds")  # pragma: no cover


def error_rates(
    true_overhead: float, repeats: int, *, cv: float, drift_per_round: float = 0.0, outlier_rate: float = 0.0,
    plan: GatePlan = DEFAULT_PLAN, seed: int = 0, higher_is_better: bool = True,
    walk_sd: float = 0.0, round_seconds: float = 20.0, slow_enter: float = 0.0, slow_runs: float = 4.0,
) -> dict[str, float]:
    """Outcome rates over ``repeats`` simulated gates, identical to calling :func:`simulate_gate`
    with seeds ``seed .. seed+repeats-1`` (but vectorised across repeats).

    Keys: ``PASS``/``FAIL``/``INCONCLUSIVE`` (fractions), ``mean_rounds``, ``mean_abs_error`` and
    ``p95_abs_error`` (|estimate - truth| in overhead fraction), ``within_1pp`` (fraction of
    estimates within one percentage point of the truth).
    """
    runs = [_simulate_runs(np.random.default_rng(seed + i), true_overhead, plan.max_rounds, cv=cv,
                           drift_per_round=drift_per_round, walk_sd=walk_sd, outlier_rate=outlier_rate,
                           higher_is_better=higher_is_better, slow_enter=slow_enter, slow_runs=slow_runs)
            for i in range(repeats)]
    x = np.stack([_log_costs(r, c, higher_is_better) for r, c in runs])
    floor = estimator_for(plan, higher_is_better) == "floor"
    yr = np.stack([_arm_costs(r, higher_is_better) for r, _ in runs])
    yc = np.stack([_arm_costs(c, higher_is_better) for _, c in runs])
    verdict = np.full(repeats, "", dtype=object)
    rounds = np.zeros(repeats, dtype=int)
    est = np.full(repeats, np.nan)
    conf = look_confidence(plan)
    for n in range(1, plan.max_rounds + 1):
        look, final = _is_look(plan, n, n * round_seconds)
        active = np.flatnonzero(verdict == "")
        if not look or active.size == 0:
            continue
        if n < MIN_INTERVAL_ROUNDS:
            if final:
                verdict[active], rounds[active] = "INCONCLUSIVE", n
                break
            continue
        if floor:
            e, lo, hi = _batch_floor_interval(yr[active, :n], yc[active, :n], conf, plan.n_boot, plan.seed)
        else:
            e, lo, hi = _batch_interval(x[active, :n], conf, plan.n_boot, plan.seed)
        ov_lo = _to_overhead(lo, higher_is_better)
        ov_hi = _to_overhead(hi, higher_is_better)
        v = np.where(ov_hi < plan.max_overhead, "PASS", np.where(ov_lo > plan.max_overhead, "FAIL", ""))
        if final:
            v = np.where(v == "", "INCONCLUSIVE", v)
        done = v != ""
        verdict[active[done]] = v[done]
        rounds[active[done]] = n
        est[active[done]] = _to_overhead(e[done], higher_is_better)
        if final:
            break
    err = np.abs(est - true_overhead)
    return {
        "PASS": float(np.mean(verdict == "PASS")),
        "FAIL": float(np.mean(verdict == "FAIL")),
        "INCONCLUSIVE": float(np.mean(verdict == "INCONCLUSIVE")),
        "mean_rounds": float(rounds.mean()),
        "mean_abs_error": float(err.mean()),
        "p95_abs_error": float(np.percentile(err, 95)),
        "within_1pp": float(np.mean(err <= 0.01)),
    }


def _main(argv: Sequence[str] | None = None) -> None:
    """Print the simulation table of docs/gate-statistics.md: ``python -m pytest_mlperf.host.gate.simulation``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m pytest_mlperf.host.gate.simulation", description=_main.__doc__)
    ap.add_argument("--repeats", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=20_000)
    ap.add_argument("--floor", action="store_true", help="the floor estimator's table instead (latency, 1 s rounds, "
                    "the standard noise and lasting slow states, each estimator)")
    args = ap.parse_args(argv)
    if args.floor:
        return _floor_table(args.repeats, args.seed)
    plan = DEFAULT_PLAN
    noise = {"drift_per_round": 0.002, "walk_sd": 0.002, "outlier_rate": 0.02}
    print(f"plan: {plan}\nlooks: {looks(plan)} at confidence {look_confidence(plan):.4f}; noise: {noise}; "
          f"{args.repeats} repeats, seeds {args.seed}..{args.seed + args.repeats - 1}\n")
    print("| metric | cv | true overhead | PASS | FAIL | INCONCLUSIVE | mean rounds | mean abs err (pp) | p95 abs err (pp) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for hib, cvs in ((True, (0.005, 0.01, 0.02, 0.03)), (False, (0.01, 0.02))):
        for cv in cvs:
            for ov in (0.0, 0.03, 0.05, 0.07):
                r = error_rates(ov, args.repeats, cv=cv, plan=plan, seed=args.seed, higher_is_better=hib, **noise)
                print(f"| {'throughput' if hib else 'latency'} | {cv:.1%} | {ov:.0%} | {r['PASS']:.3f} | {r['FAIL']:.3f} "
                      f"| {r['INCONCLUSIVE']:.3f} | {r['mean_rounds']:.1f} | {100 * r['mean_abs_error']:.2f} "
                      f"| {100 * r['p95_abs_error']:.2f} |", flush=True)


# lasting slow states of one arm at a time, as on the H200 (session 11), plus 2% outlier runs and no drift
SLOW_STATES = {"drift_per_round": 0.0, "walk_sd": 0.0, "outlier_rate": 0.02, "slow_enter": 0.08, "slow_runs": 4.0}


def _floor_table(repeats: int, seed: int) -> None:
    """The floor estimator's table in docs/gate-statistics.md: ``python -m pytest_mlperf.host.gate.simulation --floor``."""
    from dataclasses import replace

    standard = {"drift_per_round": 0.002, "walk_sd": 0.002, "outlier_rate": 0.02}
    print("| noise | cv | truth | estimator | PASS | FAIL | INCONCLUSIVE | rounds | mean err pp | p95 err pp |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, noise in (("standard", standard), ("slow states", SLOW_STATES)):
        for cv in (0.005, 0.02):
            for truth in (0.0, 0.03, 0.05, 0.07):
                for estimator in ("paired", "floor"):
                    r = error_rates(truth, repeats, cv=cv, plan=replace(DEFAULT_PLAN, estimator=estimator), seed=seed,
                                    higher_is_better=False, round_seconds=1.0, **noise)  # type: ignore[arg-type]
                    print(f"| {label} | {cv:.1%} | {truth:.0%} | {estimator} | {r['PASS']:.3f} | {r['FAIL']:.3f} | "
                          f"{r['INCONCLUSIVE']:.3f} | {r['mean_rounds']:.1f} | {100 * r['mean_abs_error']:.2f} | "
                          f"{100 * r['p95_abs_error']:.2f} |", flush=True)


if __name__ == "__main__":
    _main()
