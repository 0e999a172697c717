"""The baseline file format (host/baselines/document.py): its schema names the metric record, every baseline this project
ships decodes and loads, and a newer writer's extra field does not stop a read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_mlperf.host.baselines import document as baseline_format
from pytest_mlperf.host.baselines.store import load_baseline
from pytest_mlperf.host.schemas import schema_text

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "baselines").rglob("*.json"))


def test_the_schema_names_the_metric_record_and_the_required_fields() -> None:
    schema = json.loads(schema_text(baseline_format.BaselineDocument))
    document = schema["$defs"]["BaselineDocument"]
    assert set(document["required"]) == {"format", "version", "key", "metrics"}
    assert document["properties"]["metrics"]["additionalProperties"] == {"$ref": "#/$defs/BaselineMetric"}


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(ROOT / "baselines")) for p in SHIPPED])
def test_every_shipped_baseline_decodes_and_loads(path: Path) -> None:
    doc = baseline_format.decode(json.loads(path.read_text()))
    assert doc.metrics or doc.accuracy, f"{path} compares nothing"
    baseline = load_baseline(path)
    assert baseline is not None and baseline.key.path(ROOT / "baselines") == path


def test_a_newer_writers_extra_field_is_read_past() -> None:
    data = json.loads(SHIPPED[0].read_text())
    data["written_by_a_newer_version"] = {"anything": 1}
    assert baseline_format.decode(data).key.workload == data["key"]["workload"]


def test_a_bad_metric_is_named_by_its_key() -> None:
    data = json.loads(SHIPPED[0].read_text())
    data["metrics"] = {"result_samples_per_second": {"name": "result_samples_per_second", "value": "fast",
                                                     "unit": "samples/s", "higher_is_better": True}}
    with pytest.raises(baseline_format.FormatError,
                       match=r'"metrics.result_samples_per_second.value": expected float, got str'):
        baseline_format.decode(data)
