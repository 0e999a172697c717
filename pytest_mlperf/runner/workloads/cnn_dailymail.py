"""CNN/DailyMail summarization data for MLPerf's ``llama3.1-8b`` workload.

Two sources of :class:`Sample`:

* :func:`load_mlcommons_dataset` reads the MLCommons evaluation file
  (``cnn_eval.json``, 13368 records, or ``sample_cnn_eval_5000.json`` for edge).
  It is a JSON list of records written by the reference's ``download_cnndm.py``::

      {"instruction": {"llama": "<template with {input}>"},
       "input": "<article>",
       "tok_input": [128000, ...],   # Llama-3.1 token ids of the filled template
       "output": "<reference highlights>"}

  The reference harness (``language/llama3.1-8b/dataset.py``) reads ``input``,
  ``tok_input`` and ``output``; generation is fed ``tok_input``, and
  ``evaluation.py`` scores against ``output``.

* :func:`standin_corpus` makes seeded synthetic news articles and summaries
  locally (nothing downloaded), shaped like CNN/DailyMail, for tests and CPU runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "PROMPT_TEMPLATE",
    "DatasetError",
    "Sample",
    "format_prompt",
    "load_mlcommons_dataset",
    "standin_corpus",
]

#: The instruction template the MLCommons reference uses for llama3.1-8b
#: (``download_cnndm.py``: ``instruction_template["llama"]``); ``{input}`` is the article.
PROMPT_TEMPLATE = (
    "In very brief sentences, summarize the following news article. "
    "Only return the summary.\nArticle: {input}\nSummary: "
)


@dataclass(frozen=True)
class Sample:
    """One summarization query.

    ``input_text`` is the full prompt (template already applied); ``input_ids``
    are the prompt's token ids when the source provides them (MLCommons'
    ``tok_input``, for the real Llama-3.1 tokenizer) and ``None`` otherwise;
    ``reference`` is the reference summary that ROUGE is computed against.
    """

    input_text: str
    input_ids: list[int] | None
    reference: str


class DatasetError(ValueError):
    """A dataset file or record is malformed; the message names file and record."""


def format_prompt(article: str, template: str = PROMPT_TEMPLATE) -> str:
    """Fill the llama3.1-8b instruction template with ``article``."""
    # str.replace rather than str.format: articles contain braces.
    return template.replace("{input}", article)


def _record_error(path: Path, index: int, what: str) -> DatasetError:
    return DatasetError(f"{path}: record {index}: {what}")


def _template_of(record: dict[str, Any]) -> str:
    instruction = record.get("instruction")
    if isinstance(instruction, dict):
        template = instruction.get("llama")
        if isinstance(template, str) and "{input}" in template:
            return template
    return PROMPT_TEMPLATE


def _parse_record(path: Path, index: int, record: Any) -> Sample:
    if not isinstance(record, dict):
        raise _record_error(path, index, f"expected a JSON object, got {type(record).__name__}")
    for key in ("input", "output"):
        if key not in record:
            raise _record_error(path, index, f"missing field {key!r}")
        if not isinstance(record[key], str):
            raise _record_error(
                path, index, f"field {key!r} must be a string, got {type(record[key]).__name__}"
            )
    ids: list[int] | None = None
    if "tok_input" in record and record["tok_input"] is not None:
        raw = record["tok_input"]
        if not isinstance(raw, list) or not raw:
            raise _record_error(path, index, "field 'tok_input' must be a non-empty list of token ids")
        for pos, tok in enumerate(raw):
            if isinstance(tok, bool) or not isinstance(tok, int) or tok < 0:
                raise _record_error(
                    path, index, f"field 'tok_input'[{pos}] must be a non-negative integer, got {tok!r}"
                )
        ids = list(raw)
    return Sample(
        input_text=format_prompt(record["input"], _template_of(record)),
        input_ids=ids,
        reference=record["output"],
    )


def load_mlcommons_dataset(path: Path) -> list[Sample]:
    """Read MLCommons' llama3.1-8b evaluation file (``cnn_eval.json``).

    Raises :class:`DatasetError` (a ``ValueError``) naming the file and, for a bad
    record, its index and the offending field; ``FileNotFoundError`` if absent.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: MLCommons CNN/DailyMail file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text: {exc}") from exc
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    if not data:
        raise DatasetError(f"{path}: contains no records")
    return [_parse_record(path, i, rec) for i, rec in enumerate(data)]


# --------------------------------------------------------------------------- stand-in

_FIRST = ("James", "Maria", "David", "Sarah", "Ahmed", "Li", "Elena", "Thomas", "Grace",
          "Carlos", "Hannah", "Peter", "Aisha", "Robert", "Naomi", "Victor")
_LAST = ("Smith", "Johnson", "Brown", "Garcia", "Okafor", "Chen", "Novak", "Walker",
         "Rossi", "Patel", "Murphy", "Jensen", "Kowalski", "Hughes", "Silva", "Tanaka")
_TITLES = ("Mr.", "Mrs.", "Dr.", "Prof.", "Sen.", "Gov.")
_PLACES = ("London", "the U.S.", "New York", "Manchester", "Paris", "Sydney", "Chicago",
           "Texas", "Scotland", "Berlin", "Washington", "Florida", "Madrid", "Dublin")
_ORGS = ("the council", "police", "the hospital", "the company", "the club", "the ministry",
         "the university", "the airline", "the charity", "the court", "the school board")
_NOUNS = ("plan", "report", "investigation", "match", "storm", "election", "trial", "deal",
          "project", "scheme", "fire", "study", "campaign", "strike", "rescue", "budget",
          "festival", "flight", "bridge", "policy", "vaccine", "museum", "record", "verdict")
_ADJS = ("major", "surprising", "controversial", "dramatic", "historic", "unexpected",
         "local", "national", "remarkable", "difficult", "rare", "serious", "early", "final")
_VERBS = ("announced", "rejected", "approved", "delayed", "criticised", "praised",
          "confirmed", "launched", "investigated", "defended", "questioned", "backed")
_FILLER = ("on Monday", "on Tuesday", "last week", "earlier this year", "after months of talks",
           "despite strong opposition", "according to officials", "in a statement",
           "for the first time", "amid growing concern", "late on Friday", "this morning")
_QUOTES = ("We are very proud of what has been achieved", "This should never have happened",
           "It is a difficult day for everyone involved", "We will keep fighting",
           "The evidence speaks for itself", "Nobody expected it to end like this",
           "Our thoughts are with the families", "There is still a lot of work to do")


def _pick(rng: Any, seq: tuple[str, ...]) -> str:
    return seq[int(rng.integers(len(seq)))]


_SYLLABLES = ("ka", "lo", "ver", "an", "mi", "tor", "bel", "sa", "ri", "den", "ho", "gal",
              "pe", "stra", "ul", "wen", "dor", "ni", "fe", "mar", "chi", "ost", "lin", "ba",
              "quen", "zo", "rath", "el", "tis", "mo", "gru", "ay")


def _coined(rng: Any) -> str:
    """A made-up proper name (news is full of names a small word bank lacks)."""
    n = int(rng.integers(2, 4))
    return "".join(_pick(rng, _SYLLABLES) for _ in range(n)).capitalize()


def _person(rng: Any) -> str:
    last = _coined(rng) if rng.random() < 0.4 else _pick(rng, _LAST)
    if rng.random() < 0.35:
        return f"{_pick(rng, _TITLES)} {last}"
    return f"{_pick(rng, _FIRST)} {last}"


def _place(rng: Any) -> str:
    return _coined(rng) if rng.random() < 0.3 else _pick(rng, _PLACES)


def _sentence(rng: Any) -> str:
    kind = int(rng.integers(6))
    if kind == 0:
        return (f"{_person(rng)}, {int(rng.integers(19, 80))}, said the {_pick(rng, _ADJS)} "
                f"{_pick(rng, _NOUNS)} in {_place(rng)} was {_pick(rng, _VERBS)} "
                f"{_pick(rng, _FILLER)}.")
    if kind == 1:
        amount = f"{rng.integers(1, 99)}.{rng.integers(0, 10)}"
        return (f"{_pick(rng, _ORGS).capitalize()} {_pick(rng, _VERBS)} a {_pick(rng, _ADJS)} "
                f"{_pick(rng, _NOUNS)} worth ${amount} million {_pick(rng, _FILLER)}.")
    if kind == 2:
        return f'"{_pick(rng, _QUOTES)}," {_person(rng)} told reporters {_pick(rng, _FILLER)}.'
    if kind == 3:
        return (f"The {_pick(rng, _NOUNS)} was {_pick(rng, _VERBS)} by {_pick(rng, _ORGS)} "
                f"after a {_pick(rng, _ADJS)} {_pick(rng, _NOUNS)} in {_place(rng)}.")
    if kind == 4:
        return (f"Officials in {_place(rng)} said {int(rng.integers(2, 500))} people "
                f"were affected by the {_pick(rng, _NOUNS)}, up {rng.integers(1, 40)}.{rng.integers(0, 10)} "
                f"per cent on last year.")
    return (f"Critics of the {_pick(rng, _NOUNS)}, including {_person(rng)}, {_pick(rng, _VERBS)} "
            f"the decision {_pick(rng, _FILLER)}, calling it {_pick(rng, _ADJS)}.")


def _highlight(rng: Any, source: str) -> str:
    """A CNN-style highlight: a shortened article sentence, space before the final period."""
    words = source.rstrip(".").split()
    keep = max(6, min(len(words), int(rng.integers(8, 20))))
    return " ".join(words[:keep]).rstrip(",") + " ."


def standin_corpus(count: int, seed: int) -> list[Sample]:
    """``count`` seeded synthetic articles with reference summaries.

    Articles have 200-800 words, summaries 30-80 words in 3-6 newline-separated
    highlights (CNN/DailyMail's ``highlights`` style, copied in part from the
    article so a summarizer can score ROUGE). Prompts use :data:`PROMPT_TEMPLATE`;
    ``input_ids`` is ``None`` (tokenize with the model's tokenizer). Deterministic
    for a given ``(count, seed)``; sample ``i`` does not depend on ``count``.
    """
    import numpy as np

    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    samples: list[Sample] = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        target_words = int(rng.integers(200, 801))
        sentences: list[str] = []
        n_words = 0
        while True:
            s = _sentence(rng)
            w = len(s.split())
            if n_words + w > target_words and n_words >= 200:
                break
            sentences.append(s)
            n_words += w
        paragraphs: list[str] = []
        pos = 0
        while pos < len(sentences):
            step = int(rng.integers(2, 5))
            paragraphs.append(" ".join(sentences[pos:pos + step]))
            pos += step
        article = "\n\n".join(paragraphs)
        summary_target = int(rng.integers(30, 81))
        order = rng.permutation(len(sentences))
        highlights: list[str] = []
        n_sum = 0
        for idx in order:
            h = _highlight(rng, sentences[int(idx)])
            hw = len(h.split())
            if n_sum + hw > 80:
                continue
            highlights.append(h)
            n_sum += hw
            if n_sum >= summary_target or len(highlights) >= 6:
                break
        samples.append(Sample(input_text=format_prompt(article), input_ids=None,
                              reference="\n".join(highlights)))
    return samples
