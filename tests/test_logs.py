"""Tests for the LoadGen log parser (contract/loadgen_*.py) against real submission logs and fresh LoadGen 6.0.17 logs."""

from __future__ import annotations

import json
import re
import struct
from decimal import Decimal
from pathlib import Path

import pytest

from pytest_mlperf.contract.loadgen_log import parse_detail, parse_run, parse_summary, read_accuracy_log, read_run
from pytest_mlperf.contract.loadgen_results import estimate_label
from pytest_mlperf.contract.loadgen_run import AccuracyEntry, Headline, Latency, LogParseError, Run

DATA = Path(__file__).parent / "data"
REAL_DIR = DATA / "mlperf-logs"
FRESH_DIR = DATA / "loadgen-6.0.17"
REAL = sorted(p for p in REAL_DIR.iterdir() if p.is_dir())
FRESH = sorted(p for p in FRESH_DIR.iterdir() if p.is_dir() and not p.name.startswith("__"))
FRESH_PERF = [p for p in FRESH if "accuracy" not in p.name]
ALL = REAL + FRESH
PERF = REAL + FRESH_PERF


def real(prefix: str) -> Path:
    (match,) = [p for p in REAL if p.name.startswith(prefix)]
    return match


def ids(paths: list[Path]) -> list[str]:
    return [p.name[:40] for p in paths]


# --- helpers reading mlperf_log_summary.txt as text -------------------------------------

def summary_lines(log_dir: Path) -> list[str]:
    return (log_dir / "mlperf_log_summary.txt").read_text().splitlines()


def printed(line: str) -> tuple[float, float]:
    """(value, tolerance) of the number after the last ':' of a summary line.

    Tolerance: half a unit of the last printed digit, plus the detail log's rounding to 6
    significant digits (LoadGen prints detail floats with std::ostream's default precision).
    """
    text = line.rsplit(":", 1)[1].strip()
    exponent = Decimal(text).as_tuple().exponent
    value = float(text)
    return value, 0.5 * 10.0 ** exponent + 5e-6 * abs(value) + 1e-9


def headline_lines(log_dir: Path) -> list[str]:
    """The summary's result lines between 'Mode' and 'Result is'."""
    lines = summary_lines(log_dir)
    start = next(i for i, l in enumerate(lines) if l.startswith("Mode"))
    end = next(i for i, l in enumerate(lines) if l.startswith("Result is"))
    return lines[start + 1:end]


def close(value: float, expected_line: str) -> bool:
    exp, tol = printed(expected_line)
    return abs(value - exp) <= tol


# --- the copied data --------------------------------------------------------------------

def test_real_logs_are_present():
    assert len(REAL) == 8
    assert (REAL_DIR / "SOURCES.md").is_file()
    for d in REAL:
        assert (d / "mlperf_log_detail.txt").is_file()
        assert (d / "mlperf_log_summary.txt").is_file()


def test_fresh_logs_cover_all_scenarios():
    scenarios = {read_run(d).scenario for d in FRESH_PERF}
    assert scenarios == {"Offline", "Server", "SingleStream", "MultiStream"}
    for d in FRESH:
        assert read_run(d).loadgen_version.startswith("6.0.17")
        names = {p.name for p in d.iterdir()}
        assert names <= {"mlperf_log_detail.txt", "mlperf_log_summary.txt",
                         "mlperf_log_accuracy.json"}
        assert all((d / n).stat().st_size < 64_000 for n in names)


# --- headline values vs the summary's text --------------------------------------------

@pytest.mark.parametrize("log_dir", PERF, ids=ids(PERF))
def test_reported_matches_summary_headline(log_dir: Path):
    run = read_run(log_dir)
    lines = headline_lines(log_dir)
    first = lines[0]
    assert run.reported is not None
    assert close(run.reported.value, first), (run.reported, first)
    expected_metric = {
        "Offline": "result_samples_per_second",
        "Server": "result_completed_samples_per_sec",
        "SingleStream": "result_90.00_percentile_latency_ns",
        "MultiStream": "result_99.00_percentile_per_query_latency_ns",
    }[run.scenario]
    assert run.reported.metric == expected_metric
    if run.scenario in ("Offline", "Server"):
        assert run.headline == run.reported
        assert run.reported.unit == "samples/s" and run.reported.higher_is_better
    else:
        assert first.startswith(("90.0th", "99.0th")) and "latency (ns)" in first
        assert run.reported.unit == "ns" and not run.reported.higher_is_better
    token_lines = [l for l in lines if "okens per second" in l]
    if token_lines:
        assert run.token_headline is not None
        assert close(run.token_headline.value, token_lines[0]), (run.token_headline, token_lines)
        assert run.token_headline.unit == "tokens/s"
        assert run.token_headline.metric == (
            "result_tokens_per_second" if run.scenario == "Offline"
            else "result_completed_tokens_per_second")
    elif run.scenario == "SingleStream" and run.token_latencies:  # the summary prints no token throughput
        assert run.token_headline == Headline("result_completed_tokens_per_second",
                                              run.metrics["result_completed_tokens_per_second"], "tokens/s", True)
    else:
        assert run.token_headline is None


@pytest.mark.parametrize("log_dir", PERF, ids=ids(PERF))
def test_validity_matches_summary(log_dir: Path):
    run = read_run(log_dir)
    (line,) = [l for l in summary_lines(log_dir) if l.startswith("Result is")]
    assert run.validity == line.split(":")[1].strip()
    assert run.valid == (run.validity == "VALID")
    assert bool(run.invalid_reasons) == (not run.valid)
    words = {"Performance constraints": "perf_constraints_met", "Min duration": "min_duration_met",
             "Min queries": "min_queries_met", "Early stopping": "early_stopping_met"}
    for l in summary_lines(log_dir):
        m = re.match(r"\s+(.+?) satisfied\s*: (Yes|NO)$", l)
        if m:
            assert run.constraints[words[m.group(1)]] is (m.group(2) == "Yes")


def test_sources_table_validity():
    table = (REAL_DIR / "SOURCES.md").read_text()
    for d in REAL:
        row = next(l for l in table.splitlines() if l.startswith(f"| {d.name} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        run = read_run(d)
        assert run.loadgen_version == cells[4]
        assert run.scenario == cells[5]
        assert run.validity == cells[6]


def test_invalid_ttft_run_07():
    run = read_run(real("07"))
    assert not run.valid
    assert run.constraints == {"perf_constraints_met": False, "min_duration_met": True,
                               "min_queries_met": True, "early_stopping_met": False}
    assert run.invalid_reasons[0] == "TTFT constrain not met: Reduce target QPS to improve latency."
    assert "Performance constraints not satisfied" in run.invalid_reasons
    es = [r for r in run.invalid_reasons if r.startswith("Early stopping not satisfied (TTFT)")]
    assert len(es) == 1 and "350367 more queries" in es[0]
    assert not any("(TPOT)" in r for r in run.invalid_reasons)  # TPOT early stopping passed
    assert run.settings["target_qps"] == 364


def test_invalid_min_duration_run_08():
    run = read_run(real("08"))
    assert not run.valid
    assert run.constraints["min_duration_met"] is False
    assert run.invalid_reasons == (
        "Decrease the expected latency so the loadgen pre-generates more queries.",
        "Min duration not satisfied")
    assert len(run.errors) == 1 and run.errors[0].startswith("error_runtime: Ending early")
    assert len(run.warnings) == 1 and "audit.config" in run.warnings[0]
    assert run.settings["accuracy_log_sampling_target"] == 4096


@pytest.mark.parametrize("log_dir", ALL, ids=ids(ALL))
def test_token_latencies_only_for_llm_server(log_dir: Path):
    run = read_run(log_dir)
    llm_server = log_dir.name.startswith(("05", "07")) or log_dir.name in ("server-llm", "singlestream-llm")
    assert (run.ttft_ns is not None) == llm_server
    assert (run.tpot_ns is not None) == llm_server
    if llm_server:
        assert set(run.ttft_ns.as_dict()) == set(run.tpot_ns.as_dict()) == {
            "min", "max", "mean", "p50", "p90", "p95", "p97", "p99", "p999"}


def test_ttft_tpot_values_05():
    run = read_run(real("05"))
    lines = {l.split(":")[0].strip(): l for l in summary_lines(real("05"))}
    assert close(run.ttft_ns.p99, lines["99.00 percentile first token latency (ns)"])
    assert close(run.ttft_ns.min, lines["Min First Token latency (ns)"])
    assert close(run.tpot_ns.p999, lines["99.90 percentile time to output token (ns)"])
    assert close(run.tpot_ns.mean, lines["Mean Time to Output Token (ns)"])
    assert run.ttft_ns.p90 == 1449459253
    assert run.metrics["result_token_throughput_with_loadgen_overhead"] == 25263.4


@pytest.mark.parametrize("log_dir", ALL, ids=ids(ALL))
def test_per_query_latency_for_multistream(log_dir: Path):
    run = read_run(log_dir)
    if run.scenario == "MultiStream":
        assert run.per_query_latency_ns is not None
        lines = summary_lines(log_dir)
        i = next(i for i, l in enumerate(lines) if l.startswith("Per-query latency"))
        p99 = next(l for l in lines[i:] if l.startswith("99.00 percentile latency"))
        assert close(run.per_query_latency_ns.p99, p99)
        assert run.reported.value == run.per_query_latency_ns.p99
    else:
        assert run.per_query_latency_ns is None


def test_early_stopping_singlestream_03():
    run = read_run(real("03"))
    assert run.headline == Headline("early_stopping_latency_ss", 513395, "ns", False)
    assert run.reported == Headline("result_90.00_percentile_latency_ns", 513380, "ns", False)
    assert run.early_stopping == {"early_stopping_latency_ss": 513395,
                                  "early_stopping_latency_ms": 528172}
    assert run.latency_ns.p90 == 513380
    assert run.query_count == 1167425
    assert run.metrics["result_qps_with_loadgen_overhead"] == 1945.71


def test_early_stopping_multistream_04():
    run = read_run(real("04"))
    assert run.headline == Headline("early_stopping_latency_ms", 1482812, "ns", False)
    assert run.reported.value == 1482562
    assert run.early_stopping == {"early_stopping_latency_ms": 1482812}
    assert run.settings["samples_per_query"] == 8


@pytest.mark.parametrize("log_dir", PERF, ids=ids(PERF))
def test_early_stopping_estimates_match_summary(log_dir: Path):
    run = read_run(log_dir)
    seen = set()
    for line in summary_lines(log_dir):
        m = re.search(r"Early stopping (\d+\.\d)th percentile estimate: (\d+)", line)
        if m:
            key = "early_stopping_latency_ss" if m.group(1) == "90.0" else "early_stopping_latency_ms"
            if key not in seen:  # an LLM's TTFT section comes first, then TPOT's: the detail logs TTFT's
                assert run.early_stopping[key] == float(m.group(2))
            seen.add(key)


def test_offline_and_server_basics():
    off = read_run(real("01"))
    assert (off.scenario, off.mode, off.validity) == ("Offline", "PerformanceOnly", "VALID")
    assert off.headline == Headline("result_samples_per_second", 45617.3, "samples/s", True)
    assert off.settings["samples_per_query"] == 30360000
    assert off.settings["print_timestamps"] is False
    assert off.latency_ns.p999 == 664704714787
    srv = read_run(real("02"))
    assert srv.headline.value == 632229  # the detail's 6 significant digits (summary: 632229.06)
    assert srv.query_count == 379344721
    assert len(srv.warnings) == 9 and srv.errors == ()
    assert srv.loadgen_version == "4.1 @ c83565d85d"
    llm = read_run(real("06"))
    assert llm.token_headline == Headline("result_tokens_per_second", 27803.9, "tokens/s", True)
    assert llm.headline.value == 92.1544


@pytest.mark.parametrize("log_dir", ALL, ids=ids(ALL))
def test_summary_agrees_with_detail(log_dir: Path):
    """Every value parse_summary finds in the summary equals the detail's (to print precision)."""
    detail = {e.key: e.value for e in parse_detail((log_dir / "mlperf_log_detail.txt").read_text())}
    summary = parse_summary((log_dir / "mlperf_log_summary.txt").read_text())
    common = [k for k in summary if k in detail]
    if "accuracy" not in log_dir.name:
        assert len(common) > 25
    for key in common:
        s, d = summary[key], detail[key]
        if isinstance(s, (int, float)) and isinstance(d, (int, float)):
            assert abs(s - d) <= 5e-6 * abs(d) + 0.005, key
        else:
            assert s == d, key


# --- LoadGen 6.0.17 specifics ----------------------------------------------------------

def test_6017_offline_detail_has_all_percentiles():
    keys = {e.key for e in parse_detail((FRESH_DIR / "offline" / "mlperf_log_detail.txt").read_text())}
    for pct in ("50.00", "90.00", "95.00", "97.00", "99.00", "99.90"):
        assert f"result_{pct}_percentile_latency_ns" in keys
    assert {"result_min_latency_ns", "result_max_latency_ns", "result_mean_latency_ns"} <= keys


def test_6017_singlestream_and_multistream():
    ss = read_run(FRESH_DIR / "singlestream")
    assert ss.valid and ss.headline.metric == "early_stopping_latency_ss"
    ms = read_run(FRESH_DIR / "multistream")
    assert ms.valid and ms.headline.metric == "early_stopping_latency_ms"


def test_6017_multistream_without_early_stopping_falls_back_to_p99():
    run = read_run(FRESH_DIR / "multistream-short")
    assert not run.valid
    assert run.metrics["early_stopping_latency_ms"] == 0  # LoadGen logs 0: not computed
    assert run.early_stopping == {}
    assert run.headline.metric == "result_99.00_percentile_per_query_latency_ns"
    assert run.headline.value == run.per_query_latency_ns.p99
    assert any(r.startswith("Early stopping not satisfied: Only processed 100 queries")
               for r in run.invalid_reasons)


def test_singlestream_fallback_when_early_stopping_key_missing():
    text = (real("03") / "mlperf_log_detail.txt").read_text()
    entries = [e for e in parse_detail(text) if e.key != "early_stopping_latency_ss"]
    run = parse_run(entries)
    assert run.headline == Headline("result_90.00_percentile_latency_ns", 513380, "ns", False)


def test_6017_llm_server_tokens():
    run = read_run(FRESH_DIR / "server-llm")
    assert run.valid and run.token_headline.metric == "result_completed_tokens_per_second"
    assert run.ttft_ns.p50 <= run.latency_ns.p50
    off = read_run(FRESH_DIR / "offline-llm")
    assert off.token_headline.value == pytest.approx(16 * off.headline.value, rel=1e-4)


@pytest.mark.parametrize("name", ["offline-accuracy", "offline-llm-accuracy"])
def test_6017_accuracy_only_run(name: str):
    run = read_run(FRESH_DIR / name)
    assert (run.scenario, run.mode, run.validity) == ("Offline", "AccuracyOnly", "UNKNOWN")
    assert not run.valid
    assert run.headline is run.reported is run.token_headline is None
    assert run.latency_ns == Latency() and run.query_count is None
    entries = read_accuracy_log(FRESH_DIR / name / "mlperf_log_accuracy.json")
    assert sorted(e.qsl_idx for e in entries) == list(range(64))
    assert [e.seq_id for e in entries] == list(range(64))
    for e in entries:  # the generator's SUT answers with the sample index as uint32
        assert e.data == struct.pack("<I", e.qsl_idx)
        assert e.token_count == (16 if "llm" in name else None)


# --- accuracy logs ---------------------------------------------------------------------

def test_empty_accuracy_logs():
    for d in REAL:
        path = d / "mlperf_log_accuracy.json"
        if path.exists():
            assert path.read_bytes() == b"[\n]\n"
            assert read_accuracy_log(path) == []


@pytest.mark.parametrize("text", ['[\n{ "seq_id" : 0, "qsl_idx" : 1, "data" : "AB',  # truncated
                                  "not json", '{"a": 1}',
                                  '[{ "seq_id" : 0, "qsl_idx" : 1, "data" : "XYZ" }]',
                                  '[{ "seq_id" : 0, "data" : "00" }]', "[1]"])
def test_corrupt_accuracy_log(tmp_path: Path, text: str):
    path = tmp_path / "mlperf_log_accuracy.json"
    path.write_text(text)
    with pytest.raises(LogParseError) as info:
        read_accuracy_log(path)
    assert str(path) in str(info.value) and info.value.path == str(path)


def test_accuracy_entry_hex_decoding(tmp_path: Path):
    path = tmp_path / "acc.json"
    path.write_text('[\n{ "seq_id" : 3, "qsl_idx" : 7, "data" : "00FFa0", "token_count" : 2 }\n]\n')
    assert read_accuracy_log(path) == [AccuracyEntry(3, 7, b"\x00\xff\xa0", 2)]


# --- parser edge cases -----------------------------------------------------------------

def detail_text(prefix: str = "01") -> str:
    return (real(prefix) / "mlperf_log_detail.txt").read_text()


def test_truncated_last_line_is_tolerated():
    text = detail_text()
    full = parse_detail(text)
    cut = parse_detail(text[: len(text) - 60])  # cut inside the last entry
    assert len(cut) == len(full) - 1
    assert parse_run(cut).headline == parse_run(full).headline


def test_junk_lines_are_skipped():
    text = detail_text()
    junk = "WARNING: something\n\n:::MLLOG {broken json\n:::MLLOG [1, 2]\nrandom text\n"
    lines = text.splitlines(keepends=True)
    mixed = junk + "".join(lines[:10]) + junk + "".join(lines[10:]) + junk
    entries = parse_detail(mixed)
    assert [e.key for e in entries] == [e.key for e in parse_detail(text)]
    assert entries[0].line == 6  # 1-based line numbers in the text given
    assert parse_run(entries) == parse_run(parse_detail(text))


@pytest.mark.parametrize("text", ["", "\n\n", "hello\nworld\n", ":::MLLOG {not json\n"])
def test_no_entries_raise(text: str):
    with pytest.raises(LogParseError) as info:
        parse_detail(text, path="some/mlperf_log_detail.txt")
    assert "some/mlperf_log_detail.txt" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_malformed_line_number_is_reported():
    with pytest.raises(LogParseError) as info:
        parse_detail("junk\n:::MLLOG {oops\n", path="x.txt")
    assert info.value.line == 2 and "x.txt:2" in str(info.value)


def test_read_run_empty_detail_file(tmp_path: Path):
    (tmp_path / "mlperf_log_detail.txt").write_text("")
    with pytest.raises(LogParseError, match="mlperf_log_detail.txt"):
        read_run(tmp_path)


def test_read_run_missing_detail(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="mlperf_log_detail.txt"):
        read_run(tmp_path)


def test_no_scenario_raises():
    entries = [e for e in parse_detail(detail_text()) if "scenario" not in e.key]
    with pytest.raises(LogParseError, match="scenario"):
        parse_run(entries)


def test_summary_fills_what_a_cut_detail_lacks(tmp_path: Path):
    """A detail log cut before its results: the summary supplies the result keys."""
    src = real("04")
    lines = (src / "mlperf_log_detail.txt").read_text().splitlines(keepends=True)
    cut = next(i for i, l in enumerate(lines) if '"key": "result_validity"' in l)
    (tmp_path / "mlperf_log_detail.txt").write_text("".join(lines[:cut]))
    (tmp_path / "mlperf_log_summary.txt").write_bytes((src / "mlperf_log_summary.txt").read_bytes())
    run = read_run(tmp_path)
    full = read_run(src)
    assert parse_run(parse_detail("".join(lines[:cut]))).headline is None
    assert run.validity == "VALID" and run.constraints == full.constraints
    assert run.headline == full.headline  # early_stopping_latency_ms from the summary text
    assert run.reported == full.reported
    assert run.per_query_latency_ns == full.per_query_latency_ns
    assert run.settings["samples_per_query"] == 8  # detail's own value kept


# --- records ---------------------------------------------------------------------------

@pytest.mark.parametrize("log_dir", ALL, ids=ids(ALL))
def test_round_trip(log_dir: Path):
    run = read_run(log_dir)
    data = json.loads(json.dumps(run.to_dict()))
    assert Run.from_dict(data) == run
    assert data["latency_ns"] == run.latency_ns.as_dict()
    for key in ("scenario", "mode", "validity", "headline", "latency_ns", "ttft_ns", "tpot_ns"):
        assert key in data


def test_latency_as_dict_keys():
    lat = Latency(min=1, p50=2, p999=3)
    assert lat.as_dict() == {"min": 1, "p50": 2, "p999": 3}
    assert Latency.from_dict(lat.as_dict()) == lat
    assert Latency().as_dict() == {}


def test_metrics_and_settings_are_flat_and_numeric():
    run = read_run(real("05"))
    assert all(k.startswith(("result_", "early_stopping_")) for k in run.metrics)
    assert all(isinstance(v, float) for v in run.metrics.values())
    assert "result_validity" not in run.metrics and "early_stopping_met" not in run.metrics
    assert run.settings["sample_concatenate_permutation"] is True
    assert run.settings["scenario"] == "Server"
    assert run.settings["ttft_latency_ns"] == 2_000_000_000  # only in the summary: filled


# --- what MLCommons' parser reads, and logs that must not read as fine ------------------

FRESH_SS_LLM = FRESH_DIR / "singlestream-llm"


def copy_logs(src: Path, dst: Path, detail: str | bytes | None = None) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("mlperf_log_summary.txt", "mlperf_log_accuracy.json"):
        if (src / name).is_file():
            (dst / name).write_bytes((src / name).read_bytes())
    if detail is None:
        detail = (src / "mlperf_log_detail.txt").read_bytes()
    target = dst / "mlperf_log_detail.txt"
    target.write_bytes(detail) if isinstance(detail, bytes) else target.write_text(detail, encoding="utf-8")
    return dst


def with_value(line: str, value: str) -> str:
    """An MLLOG line of the same key with another raw JSON value."""
    return re.sub(r'"value": (?:"[^"]*"|[^,]+),', f'"value": {value},', line, count=1)


@pytest.mark.parametrize("log_dir", ALL, ids=ids(ALL))
def test_whole_logs_have_no_log_problems(log_dir: Path):
    assert read_run(log_dir).log_problems == ()


def test_a_raw_line_separator_inside_a_value_keeps_its_line():
    """MLCommons reads a file by line breaks; str.splitlines() also splits at U+2028 and dropped the entry."""
    lines = detail_text().splitlines(keepends=True)
    i = next(i for i, l in enumerate(lines) if '"key": "sut_name"' in l)
    lines[i] = with_value(lines[i], '"SUT\u2028name\u2029x\x85y"')
    problems: list[str] = []
    entries = parse_detail("".join(lines), problems=problems)
    assert problems == []
    assert [e.value for e in entries if e.key == "sut_name"] == ["SUT\u2028name\u2029x\x85y"]
    assert len(entries) == len(parse_detail(detail_text()))


def test_a_key_logged_twice_keeps_its_first_value_as_mlcommons_does():
    text = detail_text()
    line = next(l for l in text.splitlines() if '"key": "result_samples_per_second"' in l)
    first = parse_run(parse_detail(text)).headline
    run = parse_run(parse_detail(text + with_value(line, "1.5") + "\n"))
    assert run.headline == first and first.value != 1.5
    assert run.metrics["result_samples_per_second"] == first.value


def test_a_nan_is_a_log_problem_not_a_metric(tmp_path: Path):
    lines = detail_text().splitlines(keepends=True)
    i = next(i for i, l in enumerate(lines) if '"key": "result_99.00_percentile_latency_ns"' in l)
    lines[i] = with_value(lines[i], "NaN")
    run = read_run(copy_logs(real("01"), tmp_path, "".join(lines)))
    assert "result_99.00_percentile_latency_ns" not in run.metrics and run.latency_ns.p99 is None
    assert run.log_problems == ("result_99.00_percentile_latency_ns: nan is not a finite number",)
    json.dumps(run.to_dict(), allow_nan=False)


def test_a_detail_log_cut_mid_line_is_a_log_problem(tmp_path: Path):
    text = detail_text()
    run = read_run(copy_logs(real("01"), tmp_path, text[: len(text) - 60]))
    (problem,) = run.log_problems
    assert re.fullmatch(rf"line {len(text.splitlines())} is not a whole MLLOG entry .*", problem), problem


def test_a_detail_log_cut_before_its_results_is_a_log_problem_even_with_the_summary(tmp_path: Path):
    src = real("04")
    lines = (src / "mlperf_log_detail.txt").read_text().splitlines(keepends=True)
    cut = next(i for i, l in enumerate(lines) if '"key": "result_validity"' in l)
    with_summary = read_run(copy_logs(src, tmp_path / "a", "".join(lines[:cut])))
    assert with_summary.validity == "VALID"  # the summary's word, now said to be only that
    assert with_summary.log_problems == ("no result_validity in the detail log: it stops before LoadGen's results "
                                         "(the result shown is mlperf_log_summary.txt's)",)
    alone = tmp_path / "b"
    alone.mkdir()
    (alone / "mlperf_log_detail.txt").write_text("".join(lines[:cut]))
    run = read_run(alone)
    assert run.validity == "UNKNOWN"
    assert run.log_problems == ("no result_validity in the detail log: it stops before LoadGen's results",)


def test_an_accuracy_log_without_result_validity_is_whole():
    assert read_run(FRESH_DIR / "offline-accuracy").log_problems == ()


def test_bytes_that_are_not_utf8_are_a_log_problem(tmp_path: Path):
    data = (real("01") / "mlperf_log_detail.txt").read_bytes()
    at = data.index(b'"value": "', data.index(b'"sut_name"')) + len(b'"value": "')  # inside a string: JSON holds
    run = read_run(copy_logs(real("01"), tmp_path, data[:at] + b"\xff" + data[at:]))
    assert run.log_problems == (f"mlperf_log_detail.txt: byte {at} is not UTF-8 (a damaged log)",)


def test_llm_singlestream_headline_is_the_checkers_end_to_end_p90():
    """The submission checker's metric for llama3.1-8b-edge SingleStream is result_90.00_percentile_latency_ns;
    LoadGen's early_stopping_latency_ss is the TTFT estimate there (here 75x smaller)."""
    run = read_run(FRESH_SS_LLM)
    assert run.token_latencies
    assert run.headline == Headline("result_90.00_percentile_latency_ns", 1160398, "ns", False)
    assert run.headline == run.reported
    assert run.early_stopping["early_stopping_latency_ss"] == 15503  # the TTFT section's estimate
    assert run.ttft_ns.p90 == 13660 and run.latency_ns.p90 == 1160398
    assert run.token_headline == Headline("result_completed_tokens_per_second", 13687.2, "tokens/s", True)
    assert estimate_label(run, "early_stopping_latency_ss").startswith("TTFT estimate")
    assert estimate_label(read_run(FRESH_DIR / "singlestream"), "early_stopping_latency_ss") is None
    assert estimate_label(run, "early_stopping_latency_ms") is None
