"""CPU lists as Linux writes them ('0-3,8'), and the CPUs this process may run on: what the pytest process and a
runner both read, since a runner is told its CPUs as such a list (host/machine/cpus.py decides which)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence


class AffinityError(ValueError):
    """A CPU list that cannot be used; the message says what to write instead."""


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """'0-3,8,10-11' -> (0, 1, 2, 3, 8, 10, 11), sorted and without repeats, as Linux writes cpusets."""
    cpus: set[int] = set()
    for part in text.replace(" ", "").split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if m is None:
            raise AffinityError(f"bad CPU list {text!r}: write CPU numbers and ranges such as 0-7,16")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise AffinityError(f"bad CPU range {part!r} in {text!r}: the first CPU must not exceed the last")
        cpus.update(range(lo, hi + 1))
    return tuple(sorted(cpus))


def format_cpu_list(cpus: Sequence[int]) -> str:
    """(0, 1, 2, 3, 8) -> '0-3,8'."""
    out: list[str] = []
    ordered = sorted(set(cpus))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(out)


def allowed_cpus() -> tuple[int, ...]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return tuple(sorted(os.sched_getaffinity(0)))
    return tuple(range(os.cpu_count() or 1))
