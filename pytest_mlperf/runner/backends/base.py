"""The contract every backend keeps, so scenario scheduling and the runner stay backend-agnostic."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from pytest_mlperf.contract import backends as registry
from pytest_mlperf.contract.backends import whole_number


@dataclass(frozen=True)
class BackendInfo:
    backend: str  # "onnxruntime", "null", ...
    device: str  # "cuda" | "cpu"
    precision: str  # "fp32", "fp16", ...
    details: dict[str, str] = field(default_factory=dict)  # provider, versions, model hash, GPU name

    def to_dict(self) -> dict[str, object]:
        return {"backend": self.backend, "device": self.device, "precision": self.precision, "details": self.details}


class Backend(Protocol):
    """A model that answers batches of QSL indices whose samples it has staged (on its device)."""

    info: BackendInfo

    def stage(self, indices: Sequence[int], samples: np.ndarray) -> None:
        """Keep these samples ready for `infer` (on the GPU for CUDA backends); replaces what was staged."""

    def infer(self, indices: Sequence[int]) -> np.ndarray:
        """Synchronous inference on staged samples; row i is the response of indices[i]."""

    def close(self) -> None: ...


def parse_flag(value: object) -> bool:
    """A backend option's boolean: a bool, 0/1, or the words true/false/1/0 (any case); ValueError otherwise."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false", "1", "0"):
        raise ValueError(value)
    return text in ("true", "1")


# The options each backend accepts, by backend name (registry.py, one entry per backend). Values from the command
# line or ini arrive as strings: every backend converts what it is given.
OPTION_NAMES = registry.OPTION_NAMES


def check_option_names(backend: str, options: Collection[str], known: Collection[str] | None = None) -> None:
    """Raises BackendError on an option `backend` does not know (its known options are OPTION_NAMES[backend])."""
    names = OPTION_NAMES[backend] if known is None else known
    unknown = set(options) - set(names)
    if unknown:
        raise BackendError(f"{backend} SUT: unknown option(s) {sorted(unknown)}; known: {sorted(names)}")


def option_int(options: Mapping[str, object], key: str, default: int, backend: str) -> int:
    """A backend option's whole number (an int, or its digits as a string from the command line)."""
    value = options.get(key, default)
    number = whole_number(value)
    if number is None:
        raise BackendError(f"{backend} SUT: option {key}={value!r}: expected a whole number")
    return number


class BackendError(RuntimeError):
    """A backend could not be created; the message says what to install or point to."""
