"""Statistics of the overhead gate: paired rounds and the floor, robust bootstrap intervals (the group-sequential
stopping rule that reads them is host/gate/stopping.py's).

Method (details and simulation evidence in ``docs/gate-statistics.md``; the simulation itself is
research code in :mod:`pytest_mlperf.host.gate.simulation`, which the plugin does not import):

* Each round ``i`` measures the reference and the candidate back to back (ABBA order, see
  :func:`round_order`).  The per-round *log cost ratio* ``x_i`` (``log(ref/cand)`` for throughput,
  ``log(cand/ref)`` for latency) cancels drift shared by both arms; ABBA cancels its linear part.
* The estimate is the 20%-trimmed mean of ``x`` (robust to outlier rounds, ~94% efficient under
  normal noise), mapped back to an overhead fraction (monotone, so intervals map too).
* The interval is a percentile bootstrap over rounds of that trimmed mean (the recommended bootstrap
  for trimmed means; BCa's jackknife acceleration is unstable at n < 10 and adds nothing for a
  near-symmetric statistic).  Plain percentile intervals are too narrow for small n, so the
  deviations from the estimate are widened by Hesterberg's small-sample factor
  ``sqrt(n/(n-1)) * t_{df}/z`` (df = n - 2g - 1, Yuen's trimmed-mean df), applied as a scale
  rather than as more extreme quantiles so that 2000 resamples suffice at per-look levels near 99%.
* On a GPU the plugin judges latency metrics (``estimator="floor-latency"``) with the *floor* estimator instead: the ratio of
  the arms' floors, each the mean of its best quarter of rounds, with the same bootstrap over whole rounds and the
  same widening.  On the H200 a SingleStream round's p90 sits on a floor and moves only upwards, by 5-20%, in
  slow states of one runner process that last several rounds (docs/performance.md, session 11); they are
  independent between the arms, so pairing does not cancel them and a trimmed mean inherits them.
* Looks happen only at ``looks(plan)`` (``n_looks`` planned round counts, plus at most one early
  look when the time budget runs out, replacing the next planned one); each look uses the
  Bonferroni level ``1 - (1 - confidence)/n_looks``, so the chance of any wrong one-sided
  decision over the whole sequence stays below ``(1 - confidence)/2`` whatever the look times.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

TRIM = 0.2  # fraction trimmed from each end of the per-round log ratios
MIN_INTERVAL_ROUNDS = 3
# The estimators a gate can judge with (docs/gate-statistics.md, "The floor estimator"): "paired", the trimmed mean
# of the per-round log ratios; "floor", the ratio of the two arms' floors (the mean of each arm's best quarter of
# rounds); "floor-latency", floor for latency metrics and paired for throughput (the plugin's choice on a GPU).
ESTIMATORS = ("paired", "floor", "floor-latency")
FLOOR_SHARE = 0.25
# a round counts as on its arm's floor when it is within this fraction of it (floor_occupancy): a floor round's own
# noise is 1-2% on the H200, a slow state 10-40% above it (docs/performance.md, session 17)
FLOOR_NEAR = 0.05


def floor_df(n: int) -> int:
    """Degrees of freedom of the floor interval's widening: one arm's best-share count less one (k - 1 kept both
    error rates within 2.5% at a true 5% in the simulations; 2k - 2 let 4% through under lasting slow states)."""
    return max(1, math.ceil(FLOOR_SHARE * n)) - 1

__all__ = [
    "ESTIMATORS", "FLOOR_NEAR", "FLOOR_SHARE", "MIN_INTERVAL_ROUNDS", "Interval", "floor_mean", "floor_occupancy",
    "floor_overhead_interval", "overhead",
    "paired_overhead_interval", "percentile", "t_quantile", "trimmed_mean",
]


# ----------------------------------------------------------------------------- basic functions
def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (q in [0, 100]) with linear interpolation between order statistics.

    Same as ``numpy.percentile(values, q)`` (Hyndman-Fan type 7): with sorted ``v`` of length n,
    ``h = (n - 1) * q / 100`` and the result is ``v[floor(h)] + (h - floor(h)) * (v[floor(h)+1] -
    v[floor(h)])``.  So q=0 is the minimum, q=100 the maximum, q=50 the usual median.
    """
    v = sorted(float(x) for x in values)
    if not v:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= q <= 100.0 or math.isnan(q):
        raise ValueError(f"q must be in [0, 100], got {q}")
    h = (len(v) - 1) * q / 100.0
    lo = math.floor(h)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (h - lo) * (v[hi] - v[lo])


def overhead(reference: float, candidate: float, higher_is_better: bool) -> float:
    """Relative cost of the candidate: ``1 - cand/ref`` (throughput) or ``cand/ref - 1`` (latency).

    Positive means the candidate is worse; 0.05 means 5% overhead.
    """
    if not (reference > 0 and candidate > 0):
        raise ValueError(f"measurements must be positive, got {reference!r}, {candidate!r}")
    return 1.0 - candidate / reference if higher_is_better else candidate / reference - 1.0


def _paired_arm_costs(reference: Sequence[float] | np.ndarray, candidate: Sequence[float] | np.ndarray,
                      higher_is_better: bool) -> tuple[np.ndarray, np.ndarray]:
    """Both arms' oriented log values (:func:`_arm_costs`), checked to be 1-D and paired."""
    r = np.asarray(reference, dtype=float)
    c = np.asarray(candidate, dtype=float)
    if r.shape != c.shape or r.ndim != 1:
        raise ValueError(f"reference and candidate must be 1-D and paired, got {r.shape} and {c.shape}")
    return _arm_costs(r, higher_is_better), _arm_costs(c, higher_is_better)


def _log_costs(reference: Sequence[float] | np.ndarray, candidate: Sequence[float] | np.ndarray,
               higher_is_better: bool) -> np.ndarray:
    """The per-round log cost ratios: ``log(ref/cand)`` for throughput, ``log(cand/ref)`` for latency."""
    yr, yc = _paired_arm_costs(reference, candidate, higher_is_better)
    return yc - yr


def _to_overhead(log_cost: np.ndarray | float, higher_is_better: bool) -> np.ndarray | float:
    """Map a log cost ratio to an overhead fraction (monotone increasing)."""
    return -np.expm1(-log_cost) if higher_is_better else np.expm1(log_cost)


def trimmed_mean(x: np.ndarray, trim: float = TRIM) -> np.ndarray:
    """Mean of the middle values along the last axis, dropping ``floor(trim*n)`` at each end."""
    n = x.shape[-1]
    g = math.floor(trim * n)
    s = np.sort(x, axis=-1)
    return s[..., g:n - g].mean(axis=-1)


def floor_mean(y: np.ndarray, share: float = FLOOR_SHARE) -> np.ndarray:
    """Mean of the lowest ``ceil(share*n)`` values along the last axis: an arm's floor, in cost units."""
    n = y.shape[-1]
    k = max(1, math.ceil(share * n))
    return np.sort(y, axis=-1)[..., :k].mean(axis=-1)


def floor_occupancy(values: Sequence[float] | np.ndarray, higher_is_better: bool, near: float = FLOOR_NEAR) -> float:
    """The share of an arm's rounds on its floor: within `near` (0.05: 5%) of the mean of its best tenth of rounds
    (at least one), worse side included.

    The floor estimator reads each arm at its best `FLOOR_SHARE` of rounds, so it measures the undisturbed state
    only when at least that share of rounds is in it; below that, the best quarter reaches into raised rounds. The
    anchor is the best tenth rather than the floor itself, which would sink into a slow state visited most of the
    time, and rather than the best round, which one fast outlier would set. On the H200 the 64-launch probe's gates,
    whose estimates were up to 14 points off, had 0.06-0.12 in their lower arm; session 17's copy gates, all within
    1.5 points, 0.25-0.70; session 16's +12.5% outlier 0.22 (docs/performance.md, session 17)."""
    y = np.sort(_arm_costs(values, higher_is_better))
    if y.ndim != 1 or y.size == 0:
        raise ValueError("floor_occupancy needs a 1-D series of at least one round")
    best = y[: max(1, math.ceil(y.size / 10))].mean()
    return float(np.mean(y <= best + math.log1p(near)))


def _arm_costs(values: Sequence[float] | np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Each run's log value, oriented so that lower is better (the floor is then the best runs)."""
    v = np.asarray(values, dtype=float)
    if v.ndim < 1 or not np.all(v > 0):
        raise ValueError("measurements must be positive and finite")
    return -np.log(v) if higher_is_better else np.log(v)


def _t_cdf(t: float, df: int) -> float:
    """Student-t CDF for integer df (exact finite series, Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(abs(t) / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2 == 1:
        term, acc = math.cos(theta), 0.0
        if df > 1:
            acc = term
            for k in range(3, df - 1, 2):  # coefficients 2/3, (2*4)/(3*5), ...
                term *= c2 * (k - 1) / k
                acc += term
        a = 2.0 / math.pi * (theta + s * acc)
    else:
        term, acc = 1.0, 1.0
        for k in range(2, df - 1, 2):  # coefficients 1/2, (1*3)/(2*4), ...
            term *= c2 * (k - 1) / k
            acc += term
        a = s * acc
    return 0.5 + 0.5 * a if t >= 0 else 0.5 - 0.5 * a


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t with integer ``df`` >= 1 (bisection on the exact CDF)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if _t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# ----------------------------------------------------------------------------- interval
@dataclass(frozen=True)
class Interval:
    """A point estimate of the overhead fraction with a two-sided ``confidence`` interval."""

    estimate: float
    low: float
    high: float
    confidence: float


def _small_sample_factor(n: int, confidence: float, df: int | None = None) -> float:
    """``sqrt(n/(n-1)) * t_df/z``; df defaults to Yuen's trimmed-mean df ``n - 2g - 1``."""
    g = math.floor(TRIM * n)
    df = max(n - 2 * g - 1, 1) if df is None else max(df, 1)
    p = 0.5 + confidence / 2.0
    return math.sqrt(n / (n - 1)) * t_quantile(p, df) / NormalDist().inv_cdf(p)


def _bootstrap(stat: Callable[[slice, np.ndarray | None], np.ndarray], n_rows: int, n: int, confidence: float,
               n_boot: int, seed: int, df: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A statistic's estimate and widened percentile-bootstrap bounds per row, in log-cost units.

    `stat(rows, idx)` computes the statistic of those rows, on the rounds themselves (`idx` None) or on the
    resamples `idx` (n_boot, n) of whole rounds. The resample indices depend only on (n, n_boot, seed), so every
    row (and a single call with the same n) sees identical resamples: batch and one-at-a-time results are equal.
    The deviations are widened by `_small_sample_factor(n, confidence, df)`."""
    if n < MIN_INTERVAL_ROUNDS:
        raise ValueError(f"need at least {MIN_INTERVAL_ROUNDS} rounds, got {n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    est = stat(slice(None), None)
    alpha = 1.0 - confidence
    q_lo = np.empty(n_rows)
    q_hi = np.empty(n_rows)
    chunk = max(1, 4_000_000 // (n_boot * n))  # bound memory of the (rows, n_boot, n) gather
    for start in range(0, n_rows, chunk):
        q = np.quantile(stat(slice(start, start + chunk), idx), [alpha / 2.0, 1.0 - alpha / 2.0], axis=-1)
        q_lo[start:start + chunk], q_hi[start:start + chunk] = q[0], q[1]
    k = _small_sample_factor(n, confidence, df)
    return est, est - k * np.maximum(est - q_lo, 0.0), est + k * np.maximum(q_hi - est, 0.0)


def _resampled(values: np.ndarray, rows: slice, idx: np.ndarray | None) -> np.ndarray:
    return values[rows] if idx is None else values[rows][:, idx]


def _batch_interval(x: np.ndarray, confidence: float, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trimmed-mean estimate and widened percentile-bootstrap bounds, in log-cost units, per row of ``x``."""
    n_rows, n = x.shape
    return _bootstrap(lambda rows, idx: trimmed_mean(_resampled(x, rows, idx)), n_rows, n, confidence, n_boot, seed)


def paired_overhead_interval(
    reference: Sequence[float] | np.ndarray,
    candidate: Sequence[float] | np.ndarray,
    *,
    higher_is_better: bool,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> Interval:
    """Overhead of ``candidate`` against ``reference`` from paired rounds (``reference[i]`` and
    ``candidate[i]`` measured adjacent in time), with a bootstrap interval over rounds.

    Estimate: 20%-trimmed mean of per-round log cost ratios, as an overhead fraction.  Interval:
    percentile bootstrap of that trimmed mean with ``n_boot`` resamples of whole rounds, deviations
    widened by ``sqrt(n/(n-1)) * t_{n-2g-1}/z`` for small n.  Needs >= 3 rounds; deterministic for
    a seed; a constant ratio gives a zero-width interval at that ratio.
    """
    x = _log_costs(reference, candidate, higher_is_better)
    return _as_interval(_batch_interval(x[None, :], confidence, n_boot, seed), higher_is_better, confidence)


def _as_interval(bounds: tuple[np.ndarray, np.ndarray, np.ndarray], higher_is_better: bool,
                 confidence: float) -> Interval:
    """The first row of a batch estimate and its bounds, in log-cost units, as an overhead-fraction Interval."""
    est, low, high = bounds
    return Interval(
        estimate=float(_to_overhead(est[0], higher_is_better)),
        low=float(_to_overhead(low[0], higher_is_better)),
        high=float(_to_overhead(high[0], higher_is_better)),
        confidence=confidence,
    )


def _batch_floor_interval(yr: np.ndarray, yc: np.ndarray, confidence: float, n_boot: int,
                          seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Floor estimate ``floor(yc) - floor(yr)`` and widened percentile-bootstrap bounds, in log-cost units, per
    row of the (rows, n) oriented log values; whole rounds are resampled (both arms' runs of a round together),
    widened with ``floor_df(n)``."""
    n_rows, n = yr.shape
    if yc.shape != yr.shape:
        raise ValueError(f"reference and candidate must be paired, got {yr.shape} and {yc.shape}")

    def stat(rows: slice, idx: np.ndarray | None) -> np.ndarray:
        return floor_mean(_resampled(yc, rows, idx)) - floor_mean(_resampled(yr, rows, idx))

    return _bootstrap(stat, n_rows, n, confidence, n_boot, seed, df=floor_df(n))


def floor_overhead_interval(
    reference: Sequence[float] | np.ndarray,
    candidate: Sequence[float] | np.ndarray,
    *,
    higher_is_better: bool,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> Interval:
    """Overhead of ``candidate`` against ``reference`` from the arms' floors: the mean of each arm's best
    ``FLOOR_SHARE`` of rounds (lowest latencies, highest throughputs), compared on the log scale.

    For noise that only ever makes a run worse (another process on the CPU, a slow state of the host lasting
    seconds in one arm), the floor is where both arms are undisturbed, so their ratio is the layer's cost;
    the interval is the bootstrap over whole rounds of that ratio, widened as the paired one is."""
    yr, yc = _paired_arm_costs(reference, candidate, higher_is_better)
    return _as_interval(_batch_floor_interval(yr[None, :], yc[None, :], confidence, n_boot, seed), higher_is_better,
                        confidence)
