"""What a LoadGen run's result keys mean: its headline, its latency statistics, why it is INVALID.

Headline metrics follow the submission checker: Offline ``result_samples_per_second``,
Server ``result_completed_samples_per_sec``, SingleStream ``early_stopping_latency_ss``,
MultiStream ``early_stopping_latency_ms``.  LoadGen logs an early-stopping estimate of 0
when it could not compute one; then the headline falls back to the percentile LoadGen
uses (SingleStream p90, MultiStream per-query p99) and ``Headline.metric`` names that
percentile key instead.  An LLM SingleStream run (token latencies) is the exception: there
``early_stopping_latency_ss`` is LoadGen's TTFT (or TPOT) estimate, and the checker
reports the end-to-end ``result_90.00_percentile_latency_ns`` (its benchmark overwrite for
llama3.1-8b-edge), so that is the headline and the estimate is labelled
(:func:`estimate_label`).

The functions here take a run's keys as read (loadgen_log.py builds the :class:`Run` with them); the rules
per scenario are the catalogue's (contract/metrics.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pytest_mlperf.contract import metrics as catalogue
from pytest_mlperf.contract.loadgen_run import Headline, Latency, Run

__all__ = ["CONSTRAINTS", "LATENCY_FAMILIES", "estimate_label", "finite_number", "headlines", "invalid_reasons",
           "latency_stats"]


def finite_number(v: Any) -> float | None:
    """A finite number, else None (NaN and infinities are no measurement: JSON cannot carry them either)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


# --------------------------------------------------------------------------- latency statistics

_PCT_FIELDS = {50.0: "p50", 90.0: "p90", 95.0: "p95", 97.0: "p97", 99.0: "p99", 99.9: "p999"}  # -> Latency field
_PCT_KEY = r"(\d+(?:\.\d+)?)"
# family -> (regex of its min/max/mean keys, regex of its percentile keys)
LATENCY_FAMILIES = {
    "latency": (re.compile(r"result_(min|max|mean)_latency_ns"),
                re.compile(rf"result_{_PCT_KEY}_percentile_latency_ns")),
    "per_query": (re.compile(r"result_(min|max|mean)_query_latency_ns"),
                  re.compile(rf"result_{_PCT_KEY}_percentile_per_query_latency_ns")),
    "ttft": (re.compile(r"result_first_token_(min|max|mean)_latency_ns"),
             re.compile(rf"result_first_token_{_PCT_KEY}_percentile_latency_ns")),
    "tpot": (re.compile(r"result_time_to_output_token_(min|max|mean)"),
             re.compile(rf"result_time_per_output_token_{_PCT_KEY}_percentile_ns")),
}


def latency_stats(metrics: Mapping[str, float], family: str) -> Latency:
    """The statistics of one of :data:`LATENCY_FAMILIES` that ``metrics`` holds."""
    stat_re, pct_re = LATENCY_FAMILIES[family]
    values: dict[str, float] = {}
    for key, v in metrics.items():
        if m := stat_re.fullmatch(key):
            values[m.group(1)] = v
        elif (m := pct_re.fullmatch(key)) and (name := _PCT_FIELDS.get(float(m.group(1)))):
            values[name] = v
    return Latency(**values)


# --------------------------------------------------------------------------- headlines

def _pct_key(pct: float, per_query: bool = False) -> str:
    return catalogue.percentile_key(pct, per_query)


def headlines(scenario: str, metrics: Mapping[str, float], settings: Mapping[str, object],
              token_latencies: bool = False) -> tuple[Headline | None, Headline | None, Headline | None]:
    """(checker headline, summary's reported headline, token headline), by the scenario's headline rule in the
    catalogue (contract/metrics.py)."""
    def pick(keys: Iterable[str], unit: str, higher: bool) -> Headline | None:
        for k in keys:
            if metrics.get(k):  # present and non-zero (0 marks "not computed")
                return Headline(k, metrics[k], unit, higher)
        return None

    def pick_tokens(tokens: Sequence[str]) -> Headline | None:
        # LLM latency scenarios: tokens over the whole run; result_token_throughput is not tokens/s (LoadGen 6.0
        # divides by nanoseconds there)
        if not tokens:
            return None
        m = catalogue.metric(tokens[0])
        return pick(tokens, m.unit, m.higher_is_better)

    rule = catalogue.headline_rule(scenario)
    if rule is None:
        return None, None, None
    if rule.percentile is None:
        m = catalogue.metric(rule.keys[0])
        head = reported = pick(rule.keys, m.unit, m.higher_is_better)
        return head, reported, pick_tokens(rule.tokens)
    target = finite_number(settings.get("target_latency_percentile"))
    default = _pct_key(rule.percentile, rule.per_query)
    pct_keys = [_pct_key(target * 100, rule.per_query)] if target else []
    pct_keys += [default, *rule.legacy]  # legacy: old logs (no per-query keys)
    unit = catalogue.LATENCY_UNIT
    reported = pick(pct_keys, unit, False)
    if token_latencies and not rule.estimate_with_tokens:  # the estimate is TTFT's: the checker reports `default`
        head = pick([default] + pct_keys, unit, False)
    else:
        head = pick(([rule.estimate] if rule.estimate else []) + pct_keys, unit, False)
    return head, reported, pick_tokens(rule.tokens) if token_latencies else None


def estimate_label(run: Run, key: str) -> str | None:
    """What an early-stopping key of ``run`` estimates, where its name would mislead: in an LLM
    SingleStream run LoadGen's ``early_stopping_latency_ss`` is the TTFT estimate (TPOT's when
    TPOT's early stopping failed first), not the end-to-end latency the checker reports."""
    if key == "early_stopping_latency_ss" and run.scenario == "SingleStream" and run.token_latencies:
        return "TTFT estimate (TPOT's when TPOT early stopping failed), not end-to-end latency"
    return None


# --------------------------------------------------------------------------- validity

CONSTRAINTS = {  # detail key -> (Run.constraints key, summary wording)
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


def invalid_reasons(last: Mapping[str, Any], constraints: Mapping[str, bool]) -> tuple[str, ...]:
    """Why a run is INVALID, in words: LoadGen's ``result_invalid_reason`` sentences, then each constraint not
    met (an early-stopping one with LoadGen's early-stopping result text); ``last`` maps each key to its value."""
    reasons: list[str] = []
    text = last.get("result_invalid_reason")
    if isinstance(text, str):  # "A. B. " -> ["A.", "B."]
        reasons += [p for p in re.split(r"(?<=\.)\s+", text.strip()) if p]
    for key, words in CONSTRAINTS.values():
        if constraints.get(key) is not False:
            continue
        details = [f"{words} not satisfied{label}: {_bullets(es)}"
                   for es_key, label in _ES_RESULTS.items() if key == "early_stopping_met"
                   and isinstance(es := last.get(es_key), str) and es.strip()
                   and "Run successful" not in es]
        reasons += details or [f"{words} not satisfied"]
    return tuple(reasons)
