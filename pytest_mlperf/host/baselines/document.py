"""What a stored baseline file holds (`baselines/WORKLOAD/SCENARIO-MODE-BACKEND-PRECISION-SYSTEM.json`), as msgspec
Structs, and the JSON Schema generated from them (`docs/baseline.schema.json`, written by
host/schemas.py and kept current by tests/test_json_schemas.py).

host/baselines/store.py reads a file with `decode` and turns a mismatch into a BaselineError naming the file, the field
(`"metrics.result_samples_per_second.value": expected float, got str`) and the fix. The checks a type cannot state
(a metric is stored under its own name, its value and samples are positive and finite) stay in host/baselines/store.py.
Unknown fields are accepted: a file written by a newer pytest-mlperf of the same format version still reads.
The twin of host/results/document.py, for the other document this project writes."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

from pytest_mlperf.host.schemas import describe

BASELINE_FORMAT = "pytest-mlperf/baseline"
BASELINE_VERSION = 1


class BaselineKey(msgspec.Struct):
    """The case a baseline belongs to; the file's name is made of it (baselines.CaseKey)."""

    workload: str
    scenario: str
    mode: str
    backend: str
    precision: str
    system: Annotated[str, describe("GPUs (or CPU) of the machine it was recorded on, e.g. 1xNVIDIA_H200")]


class BaselineMetric(msgspec.Struct):
    """One metric as recorded: the median of the repeats, and the repeats themselves."""

    name: Annotated[str, describe("LoadGen's key, the same as the key it is stored under")]
    value: Annotated[float, describe("positive; the median of `samples` when there are several")]
    unit: str
    higher_is_better: bool
    samples: Annotated[list[float],
                       describe("the repeats' values (--mlperf-baseline-repeats): its noise allowance")] = []


class BaselineDocument(msgspec.Struct):
    """A baseline file."""

    format: Literal["pytest-mlperf/baseline"]
    version: Literal[1]
    key: BaselineKey
    metrics: dict[str, BaselineMetric]
    accuracy: Annotated[dict[str, Any] | None,
                        describe("outputs digest and predictions (and scores with real data)")] = None
    settings: Annotated[dict[str, Any] | None,
                        describe("what the run used that a later run reuses or is told of: Server target QPS and "
                             "latency bound, minimum duration")] = None
    system: Annotated[dict[str, Any] | None,
                      describe("driver, framework versions, backend_* details, sut_options: said, not keyed")] = None
    recorded_at: Annotated[str, describe("ISO 8601, UTC")] = ""


class FormatError(ValueError):
    """A baseline document that does not match BaselineDocument; the message names the field."""


def decode(data: Any) -> BaselineDocument:
    """`data` (a decoded JSON object) as a BaselineDocument, or FormatError naming the field. msgspec elides a
    dict's keys from its error paths (`$.metrics[...].value`), so a bad metric is found again by its name."""
    try:
        return msgspec.convert(data, BaselineDocument)
    except msgspec.ValidationError as exc:
        text, path = _split(exc)
        if path.startswith("metrics[...]") and isinstance(data.get("metrics"), dict):
            for name, metric in data["metrics"].items():
                try:
                    msgspec.convert(metric, BaselineMetric)
                except msgspec.ValidationError as inner:
                    text, path = _split(inner)
                    raise FormatError(_said(text, f"metrics.{name}" + ("." + path if path else ""))) from None
        raise FormatError(_said(text, path)) from None


def _split(exc: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec's message and its path, without the `$.`: ("Expected `float`, got `str`", "metrics[...].value")."""
    text, _, path = str(exc).partition(" - at `")
    return text, path.rstrip("`").removeprefix("$").lstrip(".")


def _said(text: str, field: str) -> str:
    missing = re.match(r"Object missing required field `(.+)`", text)
    if missing:
        field, text = f"{field}.{missing.group(1)}".lstrip("."), "required field missing"
    else:
        text = text.replace("`", "").replace(" | ", " or ").replace("Expected", "expected")
    return f"\"{field}\": {text}" if field else text
