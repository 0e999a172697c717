"""MLCommons cnn_eval.json loader and the seeded stand-in corpus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("numpy")

from pytest_mlperf.runner.workloads.cnn_dailymail import (  # noqa: E402
    PROMPT_TEMPLATE,
    DatasetError,
    Sample,
    format_prompt,
    load_mlcommons_dataset,
    standin_corpus,
)


def _record(article: str, summary: str, ids: Any = (128000, 644, 1633)) -> dict[str, Any]:
    rec: dict[str, Any] = {"instruction": {"llama": PROMPT_TEMPLATE}, "input": article, "output": summary}
    if ids is not None:
        rec["tok_input"] = list(ids)
    return rec


def _write(tmp_path: Path, data: Any, name: str = "cnn_eval.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=4), encoding="utf-8")
    return path


def test_template_is_the_reference_one() -> None:
    assert PROMPT_TEMPLATE == (
        "In very brief sentences, summarize the following news article. Only return the "
        "summary.\nArticle: {input}\nSummary: "
    )
    assert format_prompt("A {b} c.") == PROMPT_TEMPLATE.replace("{input}", "A {b} c.")


def test_loads_mlcommons_records(tmp_path: Path) -> None:
    custom = "Summarize: {input}\nSummary: "
    data = [
        _record("First article. It has {braces}.", "First summary ."),
        {"input": "Second article.", "output": "Second summary .", "tok_input": [1, 2],
         "instruction": {"llama": custom}},
        _record("Third article.", "Third .", ids=None),
    ]
    samples = load_mlcommons_dataset(_write(tmp_path, data))
    assert samples[0] == Sample(
        input_text=format_prompt("First article. It has {braces}."),
        input_ids=[128000, 644, 1633],
        reference="First summary .",
    )
    assert samples[1].input_text == "Summarize: Second article.\nSummary: "
    assert samples[1].input_ids == [1, 2]
    assert samples[2].input_ids is None


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ({"input": "a"}, "missing field 'output'"),
        ({"output": "a"}, "missing field 'input'"),
        ({"input": 3, "output": "a"}, "field 'input' must be a string"),
        ({"input": "a", "output": "b", "tok_input": [1, "x"]}, "'tok_input'[1]"),
        ({"input": "a", "output": "b", "tok_input": [1, -2]}, "'tok_input'[1]"),
        ({"input": "a", "output": "b", "tok_input": []}, "non-empty list"),
        (["not", "a", "dict"], "expected a JSON object"),
    ],
)
def test_bad_record_names_file_and_index(tmp_path: Path, bad: Any, fragment: str) -> None:
    path = _write(tmp_path, [_record("ok", "ok"), bad])
    with pytest.raises(DatasetError) as err:
        load_mlcommons_dataset(path)
    msg = str(err.value)
    assert str(path) in msg and "record 1" in msg and fragment in msg


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_mlcommons_dataset(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("[{", encoding="utf-8")
    with pytest.raises(DatasetError, match="broken.json.*not valid JSON"):
        load_mlcommons_dataset(broken)
    with pytest.raises(DatasetError, match="JSON list"):
        load_mlcommons_dataset(_write(tmp_path, {"input": "a"}, "obj.json"))
    with pytest.raises(DatasetError, match="no records"):
        load_mlcommons_dataset(_write(tmp_path, [], "empty.json"))
    assert issubclass(DatasetError, ValueError)


def test_standin_corpus_is_deterministic() -> None:
    a = standin_corpus(12, seed=7)
    assert a == standin_corpus(12, seed=7)
    assert a != standin_corpus(12, seed=8)
    # Sample i does not depend on how many are asked for.
    assert standin_corpus(5, seed=7) == a[:5]
    assert standin_corpus(0, seed=7) == []
    with pytest.raises(ValueError):
        standin_corpus(-1, seed=0)


def test_standin_corpus_shapes() -> None:
    samples = standin_corpus(60, seed=0)
    assert len({s.input_text for s in samples}) == 60
    prefix = PROMPT_TEMPLATE.split("{input}")[0]
    for s in samples:
        assert s.input_text.startswith(prefix) and s.input_text.endswith("\nSummary: ")
        assert s.input_ids is None
        article = s.input_text[len(prefix):-len("\nSummary: ")]
        assert 200 <= len(article.split()) <= 800
        assert 30 <= len(s.reference.split()) <= 80
        lines = s.reference.split("\n")
        assert 2 <= len(lines) <= 6 and all(line.endswith(" .") for line in lines)
    lengths = [len(s.input_text.split()) for s in samples]
    assert max(lengths) - min(lengths) > 200  # varied, like the real articles
