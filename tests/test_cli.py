"""Tests for the ``pytest-mlperf`` command (pytest_mlperf.host.results.cli)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_mlperf.host.results.cli import build_parser, main

DATA = Path(__file__).parent / "data"
REAL = {p.name[:2]: p for p in (DATA / "mlperf-logs").iterdir() if p.is_dir()}
FRESH = DATA / "loadgen-6.0.17"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_text_summary_invalid_llm_server(capsys):
    code, out, err = run_cli(capsys, "summarize", str(REAL["07"]))
    assert code == 0 and err == ""
    assert "Scenario     Server" in out
    assert "Mode         PerformanceOnly" in out
    assert "Result       INVALID" in out
    assert "TTFT constrain not met: Reduce target QPS to improve latency." in out
    assert "Early stopping not satisfied (TTFT)" in out
    assert "361.631 samples/s" in out and "result_completed_samples_per_sec" in out
    assert "99204.8 tokens/s" in out
    assert "TTFT (ns)" in out and "TPOT (ns)" in out
    assert "p99.9 17454978131" in out  # TTFT 99.9th percentile
    assert "Errors       0, warnings 0" in out


def test_text_summary_singlestream_shows_both_headlines(capsys):
    code, out, _ = run_cli(capsys, "summarize", str(REAL["03"]))
    assert code == 0
    head = next(l for l in out.splitlines() if l.startswith("Headline"))
    reported = next(l for l in out.splitlines() if l.startswith("Reported"))
    assert "513395 ns" in head and "early_stopping_latency_ss" in head and "lower" in head
    assert "513380 ns" in reported and "result_90.00_percentile_latency_ns" in reported
    assert "Result       VALID" in out
    assert "TTFT" not in out and "Per-query" not in out


def test_text_summary_multistream_errors(capsys):
    code, out, _ = run_cli(capsys, "summarize", str(REAL["08"]))
    assert code == 0
    assert "Min duration not satisfied" in out
    assert "Per-query latency (ns)" in out
    assert "Errors       1, warnings 1" in out
    assert "error: error_runtime: Ending early" in out


def test_text_summary_accuracy_run(capsys):
    code, out, _ = run_cli(capsys, "summarize", str(FRESH / "offline-accuracy"))
    assert code == 0
    assert "AccuracyOnly" in out and "Result       UNKNOWN" in out
    assert "Headline     (none logged)" in out


@pytest.mark.parametrize("key", ["01", "02", "03", "04", "05", "06", "07", "08"])
def test_json_summary_real_logs(capsys, key):
    code, out, err = run_cli(capsys, "summarize", str(REAL[key]), "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert data["path"] == str(REAL[key])
    assert data["scenario"] in ("Offline", "Server", "SingleStream", "MultiStream")
    assert data["mode"] == "PerformanceOnly"
    assert data["validity"] == ("INVALID" if key in ("07", "08") else "VALID")
    assert data["valid"] is (data["validity"] == "VALID")
    assert isinstance(data["headline"]["metric"], str)
    assert isinstance(data["headline"]["value"], (int, float))
    assert {"p50", "p90", "p99", "p999", "min", "max", "mean"} <= set(data["latency_ns"])
    llm_server = key in ("05", "07")
    assert (data["ttft_ns"] is not None) == llm_server
    assert (data["tpot_ns"] is not None) == llm_server


def test_json_summary_values(capsys):
    _, out, _ = run_cli(capsys, "summarize", "--json", str(REAL["05"]))
    data = json.loads(out)
    assert data["headline"]["metric"] == "result_completed_samples_per_sec"
    assert data["headline"]["value"] == 81.6768
    assert data["token_headline"]["value"] == 24593.8
    assert data["ttft_ns"]["p99"] == 1914647645
    assert data["tpot_ns"]["p99"] == 193380124
    assert data["latency_ns"]["p50"] == 38401775522
    assert data["error_count"] == 0
    _, out, _ = run_cli(capsys, "summarize", "--json", str(REAL["04"]))
    data = json.loads(out)
    assert data["headline"] == {"metric": "early_stopping_latency_ms", "value": 1482812,
                                "unit": "ns", "higher_is_better": False}
    assert data["reported"]["value"] == 1482562
    assert data["per_query_latency_ns"]["p99"] == 1482562
    assert data["ttft_ns"] is None and data["tpot_ns"] is None


@pytest.mark.parametrize("name", ["offline", "server", "singlestream", "multistream", "server-llm"])
def test_json_summary_fresh_logs(capsys, name):
    code, out, _ = run_cli(capsys, "summarize", str(FRESH / name), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["loadgen_version"].startswith("6.0.17")
    assert data["validity"] == "VALID"
    assert data["headline"]["value"] > 0


def test_missing_dir(capsys, tmp_path):
    missing = tmp_path / "nope"
    code, out, err = run_cli(capsys, "summarize", str(missing))
    assert code == 2 and out == ""
    assert str(missing) in err and "does not exist" in err
    assert "mlperf_log_detail.txt" in err


def test_dir_without_detail_log(capsys, tmp_path):
    (tmp_path / "mlperf_log_summary.txt").write_text("x")
    code, out, err = run_cli(capsys, "summarize", str(tmp_path), "--json")
    assert code == 2 and out == ""
    assert str(tmp_path / "mlperf_log_detail.txt") in err and "not found" in err


def test_path_is_a_file(capsys, tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("")
    code, _, err = run_cli(capsys, "summarize", str(f))
    assert code == 2 and "is not a folder" in err


def test_corrupt_detail_log(capsys, tmp_path):
    (tmp_path / "mlperf_log_detail.txt").write_text("garbage\n")
    code, out, err = run_cli(capsys, "summarize", str(tmp_path))
    assert code == 2 and out == ""
    assert "mlperf_log_detail.txt" in err and "MLLOG" in err


def test_usage_errors(capsys):
    assert main([]) == 2
    assert "summarize" in capsys.readouterr().err
    assert main(["summarize"]) == 2  # PATH missing
    assert main(["bogus"]) == 2
    assert main(["--help"]) == 0
    assert "summarize" in capsys.readouterr().out


def test_parser_is_extensible():
    parser = build_parser()
    args = parser.parse_args(["summarize", "x", "--json"])
    assert args.command == "summarize" and args.json and args.path == "x"
    assert callable(args.func)


# --- logs that must not read as fine, and the LLM SingleStream headline ---------------------


def cut_copy(tmp_path: Path, src: Path, keep) -> Path:
    """A copy of src whose detail log keeps keep(text) only, summary beside it."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "mlperf_log_summary.txt").write_bytes((src / "mlperf_log_summary.txt").read_bytes())
    (tmp_path / "mlperf_log_detail.txt").write_text(keep((src / "mlperf_log_detail.txt").read_text()))
    return tmp_path


def before_results(text: str) -> str:
    return text[: text.index(':::MLLOG {"key": "result_validity"')]


@pytest.mark.parametrize("as_json", [False, True])
def test_a_detail_log_cut_before_its_results_warns_and_exits_non_zero(capsys, tmp_path, as_json):
    folder = cut_copy(tmp_path, REAL["04"], before_results)
    code, out, err = run_cli(capsys, "summarize", str(folder), *(["--json"] if as_json else []))
    assert code == 1
    assert f"warning: {folder / 'mlperf_log_detail.txt'}: no result_validity in the detail log" in err
    if as_json:
        assert json.loads(out)["log_problems"] == [
            "no result_validity in the detail log: it stops before LoadGen's results "
            "(the result shown is mlperf_log_summary.txt's)"]
    else:
        assert "Log problems (the log is cut short or damaged" in out


def test_a_detail_log_cut_before_its_results_without_summary_is_not_exit_0(capsys, tmp_path):
    folder = cut_copy(tmp_path, REAL["01"], before_results)
    (folder / "mlperf_log_summary.txt").unlink()
    code, out, err = run_cli(capsys, "summarize", str(folder))
    assert code == 1 and "Result       UNKNOWN" in out and "no result_validity" in err


def test_a_detail_log_cut_mid_line_warns_and_exits_non_zero(capsys, tmp_path):
    folder = cut_copy(tmp_path, FRESH / "offline", lambda t: t[: len(t) - 30])
    code, _, err = run_cli(capsys, "summarize", str(folder))
    assert code == 1 and "is not a whole MLLOG entry" in err


def test_a_nan_never_makes_invalid_json(capsys, tmp_path):
    def nan(text: str) -> str:
        out = []
        for line in text.splitlines(keepends=True):
            if '"key": "result_mean_latency_ns"' in line or '"key": "effective_target_qps"' in line:
                line = line.replace(line.split('"value": ')[1].split(",")[0], "NaN", 1)
            out.append(line)
        return "".join(out)

    folder = cut_copy(tmp_path, FRESH / "offline", nan)
    code, out, err = run_cli(capsys, "summarize", str(folder), "--json")
    assert code == 1 and "result_mean_latency_ns: nan is not a finite number" in err
    data = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in --json output"))
    assert "mean" not in data["latency_ns"]
    assert data["settings"]["target_qps"] is None


def test_llm_singlestream_reports_the_checkers_headline_and_labels_the_ttft_estimate(capsys):
    code, out, err = run_cli(capsys, "summarize", str(FRESH / "singlestream-llm"))
    assert code == 0 and err == ""
    assert "Headline     1160398 ns  [result_90.00_percentile_latency_ns, lower is better]" in out
    assert "Tokens       13687.2 tokens/s  [result_completed_tokens_per_second, higher is better]" in out
    assert "early_stopping_latency_ss 15503 (TTFT estimate (TPOT's when TPOT early stopping failed), not " \
           "end-to-end latency)" in out
    _, out, _ = run_cli(capsys, "summarize", "--json", str(FRESH / "singlestream-llm"))
    data = json.loads(out)
    assert data["headline"]["metric"] == "result_90.00_percentile_latency_ns"
    assert data["token_headline"]["value"] == 13687.2
    assert data["estimates"]["early_stopping_latency_ss"].startswith("TTFT estimate")
