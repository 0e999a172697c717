"""A LoadGen user.conf checked on the pytest side, before any runner or LoadGen sees it.

LoadGen 6's own reader (`TestSettings::FromConfig`) returns -22 for the whole file without saying which line is
wrong, and it silently ignores what it does not know: a misspelled key (`min_duraton`), a line without spaces
around `=` (`a.b.c=5` is read as a key with no value), a fraction for a whole-number key (`min_duration = 1e3` is
1 ms) or a negative count (read as 2**64 - 3). Each of these is reported here with its line number.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from pytest_mlperf.host.settings import SCENARIOS

# The keys FromConfig reads (mlcommons-loadgen 6.x, test_settings_internal.cc, and the embedded mlperf.conf):
# True where LoadGen reads the value as a whole number (strtoull), False where it reads a float (strtod).
KNOWN_KEYS: dict[str, bool] = {
    "mode": True,
    "min_duration": True,
    "max_duration": True,
    "min_query_count": True,
    "max_query_count": True,
    "target_duration": True,
    "qsl_rng_seed": True,
    "sample_index_rng_seed": True,
    "schedule_rng_seed": True,
    "accuracy_log_rng_seed": True,
    "accuracy_log_probability": False,
    "accuracy_log_sampling_target": True,
    "accuracy_sample_count_override": True,
    "test05": True,
    "test05_qsl_rng_seed": True,
    "test05_sample_index_rng_seed": True,
    "test05_schedule_rng_seed": True,
    "print_timestamps": True,
    "performance_issue_unique": True,
    "performance_issue_same": True,
    "performance_issue_same_index": True,
    "performance_sample_count_override": True,
    "sample_concatenate_permutation": True,
    "target_latency": True,
    "target_latency_percentile": False,
    "target_qps": False,
    "samples_per_query": True,
    "max_async_queries": True,
    "coalesce_queries": True,
    "ttft_latency": True,
    "tpot_latency": True,
    "use_token_latencies": True,
    "infer_token_latencies": True,
    "token_latency_scaling_factor": True,
}

_KEY = re.compile(r"^(\S+)\.([^.\s]+)\.([^.\s]+)$")  # a model name may hold dots: wan-2.2-t2v-a14b
_WHOLE = re.compile(r"^(0[xX][0-9a-fA-F]+|\d+)$")
_NUMBER = re.compile(r"^[+]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_FORM = "lines read MODEL.SCENARIO.key = value (spaces around '='; MODEL and SCENARIO may be '*')"


def line_problem(line: str) -> str | None:
    """What LoadGen would reject or silently ignore on one line of a user.conf; None for a good line."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    tokens = text.split()
    if len(tokens) == 1 and "=" in text:
        return f"write spaces around '=' ({text.replace('=', ' = ', 1)}): LoadGen ignores '{text}' without a word"
    if len(tokens) != 3 or tokens[1] != "=":
        if len(tokens) > 3 and tokens[1] == "=" and tokens[3].startswith("#"):
            return "put the comment on a line of its own: LoadGen 6 rejects the whole file for a comment after a value"
        return f"not a setting: {_FORM}"
    key, _, value = tokens
    m = _KEY.match(key)
    if not m:
        return f"{key!r} is not MODEL.SCENARIO.key: {_FORM}"
    scenario, name = m.group(2), m.group(3)
    if scenario != "*" and scenario not in SCENARIOS:
        return f"unknown scenario {scenario!r} in {key!r}: use one of {', '.join(SCENARIOS)} or '*'"
    if name not in KNOWN_KEYS:
        close = difflib.get_close_matches(name, KNOWN_KEYS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key {name!r}, which LoadGen would ignore: {hint}known keys: {', '.join(sorted(KNOWN_KEYS))}"
    whole = KNOWN_KEYS[name]
    if whole and not _WHOLE.match(value):
        return f"{name} takes a whole number, got {value!r} (LoadGen would read the digits before any '.' or 'e')"
    if not whole and not _NUMBER.match(value):
        return f"{name} takes a non-negative number, got {value!r}"
    return None


def check_user_conf(path: Path) -> Path:
    """Returns `path` when every line of the file is a setting LoadGen reads as written; raises ValueError listing
    each bad line (number, text, what is wrong) otherwise."""
    option = "--mlperf-user-conf"
    if not path.exists():
        raise ValueError(f"{option} {path} does not exist; point it at a LoadGen user.conf file")
    if not path.is_file():
        raise ValueError(f"{option} {path} is a folder; point it at a LoadGen user.conf file")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{option} {path} cannot be read as text: {exc}") from None
    problems = [f"  line {n}: {line.strip()!r}: {problem}"
                for n, line in enumerate(lines, 1) if (problem := line_problem(line)) is not None]
    if problems:
        raise ValueError(f"{option} {path} has {len(problems)} line(s) LoadGen would reject or ignore:\n"
                         + "\n".join(problems))
    return path
