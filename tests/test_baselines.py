"""Tests for pytest_mlperf.host.baselines.store: case keys, the baseline file format, atomic writes, comparisons."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from pytest_mlperf.host.baselines.store import (
    FORMAT,
    VERSION,
    Baseline,
    BaselineError,
    CaseKey,
    Comparison,
    Metric,
    compare,
    load_baseline,
    write_baseline,
    write_json_atomic,
)

FIX_HINT = "Fix or delete the file, or record it again with --mlperf-update-baselines"


def make_key(**overrides: str) -> CaseKey:
    fields = dict(workload="resnet50", scenario="Offline", mode="performance", backend="onnxruntime",
                  precision="fp32", system="1xNVIDIA-H100-80GB-HBM3")
    fields.update(overrides)
    return CaseKey(**fields)


def make_baseline(**overrides) -> Baseline:
    fields = dict(
        key=make_key(),
        metrics={
            "result_samples_per_second": Metric("result_samples_per_second", 1234.5, "samples/s", True,
                                                (1200.0, 1234.5, 1250.0)),
            "result_99.00_percentile_latency_ns": Metric("result_99.00_percentile_latency_ns", 2.5e6, "ns", False),
        },
        accuracy={"digest": "ab" * 32, "predictions": [[0, 65], [1, 970]]},
        settings={"server_target_qps": None, "min_duration_ms": 1500},
        system={"driver": "580.65.06", "loadgen": "6.0.17"},
        recorded_at="2025-01-02T03:04:05+00:00",
    )
    fields.update(overrides)
    return Baseline(**fields)


def valid_dict() -> dict:
    return make_baseline().to_dict()


# --------------------------------------------------------------------------- CaseKey


def test_case_key_path_is_workload_folder_and_joined_parts(tmp_path: Path) -> None:
    path = make_key().path(tmp_path)
    assert path == tmp_path / "resnet50" / "Offline-performance-onnxruntime-fp32-1xNVIDIA_H100_80GB_HBM3.json"


def test_case_key_filename_sanitizes_odd_characters() -> None:
    key = make_key(scenario="Single Stream", backend="onnx/runtime:cuda", precision="fp 16 (tf32)",
                   system="cpu-AMD EPYC 7B13-2c")
    name = key.filename()
    assert name == "Single_Stream-performance-onnx_runtime_cuda-fp_16_tf32_-cpu_AMD_EPYC_7B13_2c.json"
    # '-' only separates the parts: a part's own dashes are replaced, so the parts stay recoverable
    assert name.count("-") == 4
    assert "/" not in name and " " not in name


def test_case_key_filename_keeps_dots_and_underscores() -> None:
    key = make_key(precision="int8_v1.2", backend="tensorrt-10.3")
    assert key.filename() == "Offline-performance-tensorrt_10.3-int8_v1.2-1xNVIDIA_H100_80GB_HBM3.json"


def test_case_key_workload_folder_sanitized_but_keeps_dashes(tmp_path: Path) -> None:
    path = make_key(workload="llama2-70b/99.9 int4").path(tmp_path)
    assert path.parent == tmp_path / "llama2-70b_99.9_int4"
    assert path.parent.parent == tmp_path  # a slash in the workload never makes a deeper folder


def test_case_keys_differing_in_any_part_get_different_paths(tmp_path: Path) -> None:
    base = make_key()
    variants = [make_key(**{f: "other"}) for f in ("workload", "scenario", "mode", "backend", "precision", "system")]
    paths = {k.path(tmp_path) for k in [base, *variants]}
    assert len(paths) == 7


# --------------------------------------------------------------------------- to_dict / from_dict


def test_baseline_round_trips_through_dict_and_json() -> None:
    original = make_baseline()
    data = original.to_dict()
    assert data["format"] == FORMAT and data["version"] == VERSION
    assert data["metrics"]["result_samples_per_second"]["samples"] == [1200.0, 1234.5, 1250.0]
    again = Baseline.from_dict(json.loads(json.dumps(data)))
    assert again == original
    assert again.metrics["result_samples_per_second"].samples == (1200.0, 1234.5, 1250.0)


def test_from_dict_defaults_optional_fields() -> None:
    data = valid_dict()
    for k in ("accuracy", "settings", "system", "recorded_at"):
        del data[k]
    for m in data["metrics"].values():
        del m["samples"]
    b = Baseline.from_dict(data)
    assert b.accuracy is None and b.settings == {} and b.system == {} and b.recorded_at == ""
    assert all(m.samples == () for m in b.metrics.values())


def bad_dicts() -> dict[str, tuple[object, str]]:
    """name -> (data, a phrase the message must contain)"""
    out: dict[str, tuple[object, str]] = {}
    d = valid_dict()
    d["format"] = "something-else"
    out["wrong format"] = (d, f'not a pytest-mlperf baseline (expected "format": "{FORMAT}")')
    out["not a dict"] = ([1, 2, 3], "not a pytest-mlperf baseline")
    d = valid_dict()
    del d["format"]
    out["no format"] = (d, "not a pytest-mlperf baseline")
    d = valid_dict()
    d["version"] = 2
    out["wrong version"] = (d, f"baseline format version 2, this pytest-mlperf reads {VERSION}")
    d = valid_dict()
    del d["version"]
    out["no version"] = (d, "baseline format version None")
    d = valid_dict()
    del d["key"]
    out["missing key"] = (d, '"key": required field missing')
    d = valid_dict()
    del d["key"]["system"]
    out["key missing a field"] = (d, '"key.system": required field missing')
    d = valid_dict()
    del d["metrics"]
    out["missing metrics"] = (d, '"metrics": required field missing')
    d = valid_dict()
    del d["metrics"]["result_samples_per_second"]["unit"]
    out["metric missing unit"] = (d, '"metrics.result_samples_per_second.unit": required field missing')
    d = valid_dict()
    d["metrics"]["result_samples_per_second"]["value"] = "fast"
    out["metric value not a number"] = (d, '"metrics.result_samples_per_second.value": expected float, got str')
    d = valid_dict()
    d["metrics"]["result_samples_per_second"]["value"] = 0
    out["zero metric"] = (d, "metric result_samples_per_second has a non-positive value 0.0")
    d = valid_dict()
    d["metrics"]["result_99.00_percentile_latency_ns"]["value"] = -5
    out["negative metric"] = (d, "metric result_99.00_percentile_latency_ns has a non-positive value -5.0")
    d = valid_dict()
    d["metrics"]["result_samples_per_second"]["value"] = float("nan")
    out["nan metric"] = (d, "has a non-positive value nan")
    d = valid_dict()
    d["accuracy"] = [0.76]
    out["accuracy a list"] = (d, '"accuracy": expected object or null, got array')
    d = valid_dict()
    d["accuracy"] = "0.76"
    out["accuracy a string"] = (d, '"accuracy": expected object or null, got str')
    # typed fields: a string where a bool is due is no longer read as True (bool("false") is True)
    d = valid_dict()
    d["metrics"]["result_99.00_percentile_latency_ns"]["higher_is_better"] = "false"
    out["direction a string"] = (d, '"metrics.result_99.00_percentile_latency_ns.higher_is_better": expected bool, '
                                    'got str')
    d = valid_dict()
    d["metrics"]["result_samples_per_second"]["higher_is_better"] = 1
    out["direction a number"] = (d, '"metrics.result_samples_per_second.higher_is_better": expected bool, got int')
    d = valid_dict()
    d["key"]["scenario"] = 3
    out["key field a number"] = (d, '"key.scenario": expected str, got int')
    d = valid_dict()
    d["metrics"]["result_samples_per_second"]["value"] = True
    out["metric value a bool"] = (d, '"metrics.result_samples_per_second.value": expected float, got bool')
    d = valid_dict()
    d["metrics"]["result_samples_per_second"]["samples"] = [1200.0, "1234.5"]
    out["sample a string"] = (d, '"metrics.result_samples_per_second.samples[1]": expected float, got str')
    d = valid_dict()
    d["metrics"]["result_samples_per_second"]["samples"] = [1200.0, -1.0]
    out["negative sample"] = (d, '"metrics.result_samples_per_second.samples" must be positive numbers')
    d = valid_dict()
    d["metrics"]["result_samples_per_second"]["value"] = float("inf")
    out["infinite metric"] = (d, "metric result_samples_per_second has an infinite value")
    d = valid_dict()
    d["metrics"]["result_samples_per_second"]["name"] = "result_tokens_per_second"
    out["metric under another name"] = (d, '"metrics.result_samples_per_second.name" is \'result_tokens_per_second\'')
    d = valid_dict()
    d["recorded_at"] = 20250102
    out["recorded_at a number"] = (d, '"recorded_at": expected str, got int')
    return out


BAD = bad_dicts()


@pytest.mark.parametrize("name", list(BAD))
def test_from_dict_rejects_with_source_problem_and_fix(name: str) -> None:
    data, phrase = BAD[name]
    with pytest.raises(BaselineError) as exc:
        Baseline.from_dict(copy.deepcopy(data), source="baselines/resnet50/x.json")
    message = str(exc.value)
    assert message.startswith("baselines/resnet50/x.json: ")
    assert phrase in message
    assert message.endswith(FIX_HINT)


def test_every_shipped_baseline_loads_with_its_key_matching_its_path() -> None:
    root = Path(__file__).resolve().parent.parent / "baselines"
    files = sorted(root.rglob("*.json"))
    assert files
    for path in files:
        baseline = load_baseline(path)
        assert baseline is not None and baseline.key.path(root) == path, path


def test_baseline_error_is_a_value_error() -> None:
    assert issubclass(BaselineError, ValueError)


@pytest.mark.parametrize("metrics", [[], None])
def test_from_dict_rejects_metrics_that_are_not_an_object(metrics) -> None:
    data = valid_dict()
    data["metrics"] = metrics
    with pytest.raises(BaselineError, match="x.json: "):
        Baseline.from_dict(data, source="x.json")


@pytest.mark.parametrize("field, value", [("settings", "fast"), ("system", 5)])
def test_from_dict_rejects_settings_or_system_that_are_not_objects(field: str, value) -> None:
    data = valid_dict()
    data[field] = value
    with pytest.raises(BaselineError, match="x.json: "):
        Baseline.from_dict(data, source="x.json")


# --------------------------------------------------------------------------- load_baseline


def test_load_baseline_missing_file_is_none(tmp_path: Path) -> None:
    assert load_baseline(tmp_path / "nope" / "x.json") is None


def test_load_baseline_reads_what_write_baseline_wrote(tmp_path: Path) -> None:
    path = make_key().path(tmp_path)
    write_baseline(path, make_baseline())
    assert load_baseline(path) == make_baseline()


def test_load_baseline_corrupt_json_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{\n  "format": "pytest-mlperf/baseline",\n  "version": 1,,\n}\n')
    with pytest.raises(BaselineError) as exc:
        load_baseline(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: corrupt JSON at line 3 column 16 (")
    assert message.endswith(FIX_HINT)


def test_load_baseline_empty_file_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text("")
    with pytest.raises(BaselineError, match="corrupt JSON at line 1 column 1"):
        load_baseline(path)


def test_load_baseline_wrong_content_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"format": FORMAT, "version": 99}))
    with pytest.raises(BaselineError) as exc:
        load_baseline(path)
    assert str(exc.value).startswith(f"{path}: baseline format version 99")


def test_load_baseline_unreadable_path_is_a_baseline_error(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.mkdir()  # a directory where the file should be
    with pytest.raises(BaselineError, match="cannot be read"):
        load_baseline(path)


def test_load_baseline_binary_file_is_a_baseline_error(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(BaselineError, match=str(path)):
        load_baseline(path)


# --------------------------------------------------------------------------- write_json_atomic


def test_write_json_atomic_creates_folders_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "x.json"
    write_json_atomic(path, {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    assert path.read_text().endswith("}\n")
    assert path.read_text().index('"a"') < path.read_text().index('"b"')  # sorted keys: stable diffs
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.json"]


def test_write_json_atomic_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    write_json_atomic(path, {"v": 1})
    inode_before = path.stat().st_ino
    write_json_atomic(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 2}
    assert path.stat().st_ino != inode_before  # a new file renamed over the old one, not rewritten in place
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_write_json_atomic_failure_keeps_old_file_and_removes_temp(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    write_json_atomic(path, {"v": 1})
    old = path.read_text()
    with pytest.raises(TypeError, match="not JSON serializable"):
        # json.dump writes the first keys before reaching the unserialisable value: a partial temp file exists
        write_json_atomic(path, {"a": "x" * 10_000, "z": object()})
    assert path.read_text() == old
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_write_json_atomic_failure_on_a_new_path_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": {1, 2}})
    assert list(tmp_path.iterdir()) == []


def test_write_json_atomic_temp_file_lives_beside_the_target(tmp_path: Path, monkeypatch) -> None:
    # a temp file in another folder could sit on another file system, where os.replace is not atomic
    seen: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((str(src), str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    path = tmp_path / "x.json"
    write_json_atomic(path, {})
    ((src, dst),) = seen
    assert Path(src).parent == tmp_path and Path(src).name.startswith(".x.json.")
    assert dst == str(path)


# --------------------------------------------------------------------------- compare / Comparison


def test_comparison_throughput_lower_is_worse() -> None:
    c = Comparison("result_samples_per_second", "samples/s", True, baseline=200.0, measured=150.0, tolerance=0.3)
    assert c.change == pytest.approx(-0.25)
    assert c.worse_by == pytest.approx(0.25)
    assert not c.regressed
    better = Comparison("result_samples_per_second", "samples/s", True, 200.0, 260.0, 0.05)
    assert better.worse_by == pytest.approx(-0.30)
    assert not better.regressed


def test_comparison_latency_higher_is_worse() -> None:
    c = Comparison("result_99.00_percentile_latency_ns", "ns", False, baseline=4.0, measured=6.0, tolerance=0.05)
    assert c.change == pytest.approx(0.5)
    assert c.worse_by == pytest.approx(0.5)
    assert c.regressed
    faster = Comparison("result_99.00_percentile_latency_ns", "ns", False, 4.0, 2.0, 0.05)
    assert faster.worse_by == pytest.approx(-0.5)
    assert not faster.regressed


@pytest.mark.parametrize("higher, baseline, measured", [(True, 200.0, 150.0), (False, 4.0, 5.0)])
def test_comparison_regressed_exactly_at_tolerance(higher: bool, baseline: float, measured: float) -> None:
    # values chosen so the relative change is exactly 0.25 in binary floating point
    at = Comparison("m", "u", higher, baseline, measured, tolerance=0.25)
    assert at.worse_by == 0.25
    assert at.regressed
    assert not Comparison("m", "u", higher, baseline, measured, tolerance=0.2500001).regressed


def test_comparison_equal_values_never_regress() -> None:
    for higher in (True, False):
        c = Comparison("m", "u", higher, 10.0, 10.0, 0.01)
        assert c.change == 0 and not c.regressed


def test_describe_names_metric_values_and_signed_percent() -> None:
    drop = Comparison("result_samples_per_second", "samples/s", True, 200.0, 150.0, 0.05)
    text = drop.describe()
    assert text.startswith("result_samples_per_second: ")
    assert "measured 150 samples/s" in text
    assert "baseline 200 samples/s" in text
    assert "-25.00%" in text
    assert "higher is better" in text
    assert "tolerance 5.0%" in text
    rise = Comparison("result_99.00_percentile_latency_ns", "ns", False, 4e6, 5e6, 0.1).describe()
    assert "measured 5e+06 ns vs baseline 4e+06 ns" in rise
    assert "+25.00%" in rise
    assert "lower is better" in rise


def test_compare_uses_metrics_in_both_with_the_baselines_direction_and_unit() -> None:
    base = make_baseline()
    measured = {
        "result_samples_per_second": Metric("result_samples_per_second", 1000.0, "other", False),
        "new_metric": Metric("new_metric", 1.0, "x", True),
    }
    (c,) = compare(base, measured, 0.05)
    assert c.metric == "result_samples_per_second"
    assert c.unit == "samples/s" and c.higher_is_better is True
    assert (c.baseline, c.measured, c.tolerance) == (1234.5, 1000.0, 0.05)
    assert c.regressed


def test_compare_with_nothing_measured_is_empty() -> None:
    assert compare(make_baseline(), {}, 0.05) == []


# --- noise-aware comparison -------------------------------------------------------------------------------------
from pytest_mlperf.host.baselines.store import noise_allowance  # noqa: E402


def test_noise_allowance_grows_with_the_spread_of_the_repeats() -> None:
    assert noise_allowance([]) == 0.0 and noise_allowance([5.0]) == 0.0
    assert noise_allowance([100.0, 100.0, 100.0]) == 0.0
    tight, loose = noise_allowance([100.0, 100.5, 99.5]), noise_allowance([100.0, 102.0, 98.0])
    assert 0 < tight < loose
    # n=3, log sd 0.02: t(0.95, 2) = 2.92, times sqrt(4/3): exp(0.0675) - 1, about 7.0%
    assert loose == pytest.approx(0.0698, abs=0.002)


def _noisy_baseline(samples: tuple[float, ...]) -> Baseline:
    return Baseline(key=CaseKey("w", "Offline", "performance", "b", "fp32", "sys"),
                    metrics={"result_samples_per_second": Metric("result_samples_per_second", 100.0, "samples/s",
                                                                 True, samples)})


def test_a_noisy_baseline_widens_the_check_and_says_so() -> None:
    measured = {"result_samples_per_second": Metric("result_samples_per_second", 93.0, "samples/s", True)}
    (single,) = compare(_noisy_baseline(()), measured, 0.05)
    assert single.regressed  # 7% worse than a one-run baseline at 5% tolerance
    (noisy,) = compare(_noisy_baseline((100.0, 102.0, 98.0)), measured, 0.05)
    assert not noisy.regressed and noisy.repeats == 3  # within what the baseline's own spread allows
    assert "noise allowance from 3 baseline repeats" in noisy.describe()
    far = {"result_samples_per_second": Metric("result_samples_per_second", 85.0, "samples/s", True)}
    (worse,) = compare(_noisy_baseline((100.0, 102.0, 98.0)), far, 0.05)
    assert worse.regressed  # 15% worse is beyond tolerance plus noise


# --- what noise may excuse is bounded (issue 10) ----------------------------------------------------------------
from pytest_mlperf.host.baselines.store import key_mismatch, noisy_metrics, unusable_metrics  # noqa: E402


def _throughput(value: float) -> dict[str, Metric]:
    return {"result_samples_per_second": Metric("result_samples_per_second", value, "samples/s", True)}


def test_a_31_percent_regression_fails_against_a_baseline_with_a_150_percent_noise_allowance() -> None:
    samples = (100.0, 60.0, 140.0)  # 3 repeats this spread: a noise allowance of about 150%
    assert noise_allowance(samples) > 1.4
    (c,) = compare(_noisy_baseline(samples), _throughput(69.0), 0.05)  # 31% slower
    assert c.excused == 0.05  # noise excuses at most the tolerance...
    assert c.regressed  # ...so 31% worse fails (it passed before: 5% + 150% allowed)
    assert not c.detects_tolerance
    assert "their spread would allow" in c.describe() and "noise excuses at most the tolerance" in c.describe()


def test_a_90_percent_regression_fails_against_wildly_spread_repeats() -> None:
    (c,) = compare(_noisy_baseline((100.0, 10.0, 1000.0)), _throughput(10.0), 0.05)
    assert c.noise > 10 and c.regressed


def test_noise_may_excuse_up_to_the_tolerance_and_no_more() -> None:
    samples = (100.0, 90.0, 110.0)  # allowance well above 10%
    for measured, regressed in ((80.5, False), (79.5, True)):  # 19.5% / 20.5% worse against 10% + 10%
        (c,) = compare(_noisy_baseline(samples), _throughput(measured), 0.10)
        assert c.tolerance + c.excused == pytest.approx(0.20)
        assert c.regressed is regressed, measured


def test_tight_repeats_detect_the_tolerance_and_keep_their_whole_allowance() -> None:
    (c,) = compare(_noisy_baseline((100.0, 100.5, 99.5)), _throughput(95.0), 0.05)
    assert c.detects_tolerance and 0 < c.excused == c.noise < 0.05
    assert c.to_record()["detects_tolerance"] is True
    assert c.to_record()["noise_excused"] == c.noise


def test_undetectable_says_what_to_do() -> None:
    (c,) = compare(_noisy_baseline((100.0, 60.0, 140.0)), _throughput(100.0), 0.05)
    text = c.undetectable()
    assert text.startswith("result_samples_per_second: the baseline's 3 repeats spread so much")
    assert "a 5.0% regression cannot be told from noise" in text
    for advice in ("--mlperf-baseline-repeats", "--mlperf-duration", "quieter machine"):
        assert advice in text


def test_noisy_metrics_at_record_time() -> None:
    wide = Metric("result_samples_per_second", 100.0, "samples/s", True, (100.0, 60.0, 140.0))
    tight = Metric("result_90.00_percentile_latency_ns", 2e6, "ns", False, (2e6, 2.001e6, 1.999e6))
    (problem,) = noisy_metrics({wide.name: wide, tight.name: tight}, 0.05)
    assert problem.startswith("result_samples_per_second: ") and "--mlperf-baseline-repeats" in problem
    assert noisy_metrics({tight.name: tight}, 0.05) == []
    assert noisy_metrics({"m": Metric("m", 1.0, "x", True)}, 0.05) == []  # one run: nothing to say


# --- what a baseline cannot compare -----------------------------------------------------------------------------


def test_key_mismatch_names_each_differing_field() -> None:
    base = make_baseline()
    assert key_mismatch(base, make_key()) is None
    text = key_mismatch(base, make_key(workload="llama3_1-8b", scenario="Server"))
    assert text == "workload='resnet50' (this case: 'llama3_1-8b'), scenario='Offline' (this case: 'Server')"


def test_unusable_metrics_names_what_the_run_lacks_and_a_flipped_direction() -> None:
    base = make_baseline()
    measured = _throughput(1234.5)
    (missing,) = unusable_metrics(base, measured)
    assert missing.startswith("result_99.00_percentile_latency_ns: in the baseline but this run did not measure it "
                              "(it measured: result_samples_per_second)")
    flipped = make_baseline(metrics={"result_samples_per_second": Metric("result_samples_per_second", 1.0,
                                                                         "samples/s", False)})
    (problem,) = unusable_metrics(flipped, measured)
    assert "the baseline says lower is better, but for this metric higher is better" in problem
    assert unusable_metrics(make_baseline(metrics=dict(measured)), measured) == []
