"""Read MLCommons LoadGen logs into a typed :class:`Run` record: the names of the LoadGen log parser, which lives in
contract/ (standard library only, so that the pytest process and the runner import the same code): reading the
logs in ``contract/loadgen_log.py``, the run's record in ``contract/loadgen_run.py``, what its result keys mean
(headline, latency statistics, INVALID reasons) in ``contract/loadgen_results.py``.

Kept so that ``from pytest_mlperf.logs import X`` goes on working wherever it is used. Each name is the contract's
own object, so a patch meant to change what the parser calls belongs on the contract module that calls it.
"""

from __future__ import annotations

from .contract.loadgen_log import (
    ACCURACY_LOG,
    DETAIL_LOG,
    SUMMARY_LOG,
    parse_detail,
    parse_run,
    parse_summary,
    read_accuracy_log,
    read_run,
)
from .contract.loadgen_results import estimate_label
from .contract.loadgen_run import AccuracyEntry, Headline, Latency, LogEntry, LogParseError, Run

__all__ = ["ACCURACY_LOG", "DETAIL_LOG", "SUMMARY_LOG", "AccuracyEntry", "Headline", "Latency", "LogEntry",
           "LogParseError", "Run", "estimate_label", "parse_detail", "parse_run", "parse_summary", "read_accuracy_log",
           "read_run"]
