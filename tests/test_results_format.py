"""results_format: the typed results.json, its JSON Schema file, and the check made when the document is written."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import msgspec
import pytest

from pytest_mlperf.host.results import document as results_format
from pytest_mlperf.host.results.report import STRICT_RESULTS_ENV, ResultsCollector

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def recorded_results() -> tuple[Path, ...]:
    """Every results.json recorded in docs/measurements (GPU runs of several sessions) and under tests/data."""
    found = []
    for path in sorted([*ROOT.glob("docs/measurements/**/*.json"), *ROOT.glob("tests/data/**/*.json")]):
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("format") == results_format.RESULTS_FORMAT:
            found.append(path)
    return tuple(found)


def test_every_recorded_results_file_decodes() -> None:
    paths = recorded_results()
    assert len(paths) >= 20  # the GPU sessions' files: the format has to keep reading them
    for path in paths:
        doc = results_format.load_document(path.read_bytes())
        assert doc.cases and all(c.key.workload for c in doc.cases), path


def good_record() -> dict[str, object]:
    data = json.loads(recorded_results()[0].read_text())
    return dict(data["cases"][0])


def document(*cases: dict[str, object]) -> dict[str, object]:
    return {"format": "pytest-mlperf/results", "version": 1, "pytest_mlperf": "0", "created": "now", "host": "h",
            "profile": "ci", "cases": list(cases)}


def test_a_mismatch_names_the_field_and_its_path() -> None:
    assert results_format.check_document(document(good_record())) is None
    unknown = {**good_record(), "surprise": 1}  # a writer that adds a field without typing it here
    assert "surprise" in (results_format.check_document(document(unknown)) or "")
    wrong = {**good_record(), "timings": {"case_s": "long"}}
    assert "`$.cases[0].timings[...]`" in (results_format.check_document(document(wrong)) or "")
    missing = {k: v for k, v in good_record().items() if k != "nodeid"}
    assert "nodeid" in (results_format.check_document(document(missing)) or "")
    with pytest.raises(msgspec.ValidationError, match="version"):
        results_format.load_document(json.dumps({**document(), "version": 2}).encode())


class Profile:
    name = "ci"


class FakeSettings:
    profile = Profile()


def test_writing_a_mismatched_document_warns_and_fails_only_when_strict(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    collector = ResultsCollector(tmp_path)
    collector.records.append({**good_record(), "surprise": 1})
    monkeypatch.delenv(STRICT_RESULTS_ENV, raising=False)
    doc = collector.results_document(FakeSettings())  # type: ignore[arg-type]
    assert doc["cases"][0]["surprise"] == 1  # written all the same: nothing is lost
    assert not collector.problems and "does not match its schema" in collector.warnings[0]
    monkeypatch.setenv(STRICT_RESULTS_ENV, "1")
    collector.results_document(FakeSettings())  # type: ignore[arg-type]
    assert "surprise" in collector.problems[0]
