"""user.conf checked before LoadGen sees it: each bad line named, with what is wrong (pytest_mlperf.host.userconf)."""

from __future__ import annotations

from pathlib import Path

import mlperf_loadgen as lg
import pytest

from pytest_mlperf.host.userconf import KNOWN_KEYS, check_user_conf, line_problem


@pytest.mark.parametrize("line", [
    "", "   ", "# a comment", "  # *.*.min_duration = 5", "resnet50.Server.target_qps = 1000",
    "*.Offline.min_duration = 60000", "llama3_1-8b.*.ttft_latency = 2000", "*.*.qsl_rng_seed = 0x10",
    "wan-2.2-t2v-a14b.Offline.min_query_count = 248", "*.Server.target_latency_percentile = 99.9",
])
def test_good_lines_pass(line: str) -> None:
    assert line_problem(line) is None


@pytest.mark.parametrize("line, words", [
    ("*.*.min_duraton = 5000", ["unknown key 'min_duraton'", "did you mean 'min_duration'", "known keys:"]),
    ("*.*.min_duration=5000", ["spaces around '='"]),
    ("*.*.min_duration = 5000 # five s", ["comment on a line of its own"]),
    ("*.*.min_duration = 1e3", ["whole number", "'1e3'"]),
    ("*.*.min_duration = -3", ["whole number", "'-3'"]),
    ("*.Offline.target_qps = fast", ["non-negative number", "'fast'"]),
    ("*.Ofline.min_duration = 5", ["unknown scenario 'Ofline'"]),
    ("min_duration = 5", ["is not MODEL.SCENARIO.key"]),
    ("garbage line here", ["not a setting"]),
])
def test_bad_lines_say_what_is_wrong(line: str, words: list[str]) -> None:
    problem = line_problem(line)
    assert problem is not None
    for word in words:
        assert word in problem


def test_every_known_key_is_read_by_loadgen(tmp_path: Path) -> None:
    """The checker must not reject what LoadGen reads: each key applied alone through FromConfig returns 0."""
    for key, whole in KNOWN_KEYS.items():
        conf = tmp_path / "user.conf"
        conf.write_text(f"*.*.{key} = {1 if whole else 0.5}\n")
        check_user_conf(conf)
        assert lg.TestSettings().FromConfig(str(conf), "resnet50", "Offline", 2) == 0, key


def test_lines_loadgen_rejects_or_ignores_are_rejected_here(tmp_path: Path) -> None:
    """What the checker refuses, LoadGen either rejects (rc -22, no line number) or silently ignores."""
    for line in ("*.*.min_duration = 5 # x", "*.*.min_duration =5", "*.*.min_duration 5"):
        assert line_problem(line) is not None
        (tmp_path / "u.conf").write_text(line + "\n")
        assert lg.TestSettings().FromConfig(str(tmp_path / "u.conf"), "resnet50", "Offline", 2) != 0
    for line in ("*.*.min_duration=5", "*.*.min_duraton = 5"):
        assert line_problem(line) is not None
        (tmp_path / "u.conf").write_text(line + "\n")
        ts = lg.TestSettings()
        before = ts.min_duration_ms
        assert ts.FromConfig(str(tmp_path / "u.conf"), "resnet50", "Offline", 2) == 0
        assert ts.min_duration_ms == before  # ignored without a word


def test_check_user_conf_lists_every_bad_line_with_its_number(tmp_path: Path) -> None:
    conf = tmp_path / "user.conf"
    conf.write_text("# mine\n*.Offline.min_duration = 5000\n*.*.min_duraton = 1\n\nbroken\n")
    with pytest.raises(ValueError) as exc:
        check_user_conf(conf)
    message = str(exc.value)
    assert "2 line(s)" in message
    assert "line 3: '*.*.min_duraton = 1'" in message
    assert "line 5: 'broken'" in message


def test_check_user_conf_missing_file_or_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        check_user_conf(tmp_path / "nope.conf")
    with pytest.raises(ValueError, match="is a folder"):
        check_user_conf(tmp_path)
