"""Tests for pytest_mlperf.host.settings: the option parsers and the profiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_mlperf.host.settings import (
    DEVICES,
    MODES,
    PROFILES,
    SCENARIOS,
    Settings,
    check_marker,
    parse_device,
    parse_duration_ms,
    parse_duration_s,
    parse_fraction,
    parse_mode,
    parse_name_path,
    parse_positive_float,
    parse_positive_int,
    parse_profile,
    parse_scenarios,
    parse_sut_options,
    parse_wait_s,
)

# --------------------------------------------------------------------------- parse_scenarios


@pytest.mark.parametrize("values", [None, [], "", [""], [" , ,"]])
def test_parse_scenarios_nothing_means_what_each_benchmark_declares(values) -> None:
    assert parse_scenarios(values) is None


def test_parse_scenarios_accepts_a_single_string() -> None:
    assert parse_scenarios("Offline") == ("Offline",)


def test_parse_scenarios_comma_lists_and_repeats_keep_order() -> None:
    assert parse_scenarios(["Server,Offline", "MultiStream"]) == ("Server", "Offline", "MultiStream")


def test_parse_scenarios_is_case_insensitive_and_returns_canonical_names() -> None:
    assert parse_scenarios(["offline", "SINGLESTREAM", "multistream", "sErVeR"]) == (
        "Offline", "SingleStream", "MultiStream", "Server")


def test_parse_scenarios_strips_blanks_and_skips_empty_items() -> None:
    assert parse_scenarios([" server , ,offline ,"]) == ("Server", "Offline")


def test_parse_scenarios_dedupes_keeping_first_occurrence() -> None:
    assert parse_scenarios(["Server,offline", "SERVER", "Offline,SingleStream,server"]) == (
        "Server", "Offline", "SingleStream")


def test_parse_scenarios_all_four() -> None:
    assert parse_scenarios([",".join(SCENARIOS)]) == SCENARIOS


@pytest.mark.parametrize("bad", ["Ofline", "offline-llm", "single stream"])
def test_parse_scenarios_unknown_name_lists_the_choices(bad: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_scenarios(["Offline", bad])
    message = str(exc.value)
    assert repr(bad) in message
    assert "Offline, Server, SingleStream, MultiStream" in message


# --------------------------------------------------------------------------- parse_mode / profile / device


@pytest.mark.parametrize("value, expected", [
    ("performance", ("performance",)),
    ("accuracy", ("accuracy",)),
    (" Accuracy ", ("accuracy",)),
    ("both", ("performance", "accuracy")),
    ("BOTH", ("performance", "accuracy")),
])
def test_parse_mode(value: str, expected: tuple[str, ...]) -> None:
    assert parse_mode(value) == expected


def test_parse_mode_both_is_every_mode_performance_first() -> None:
    assert parse_mode("both") == MODES == ("performance", "accuracy")


@pytest.mark.parametrize("bad", ["", "perf", "all", "performance,accuracy"])
def test_parse_mode_rejects_unknown_and_lists_choices(bad: str) -> None:
    with pytest.raises(ValueError, match="choose from performance, accuracy, both") as exc:
        parse_mode(bad)
    assert "--mlperf-mode" in str(exc.value)


@pytest.mark.parametrize("name", ["smoke", "ci", "official"])
def test_parse_profile_returns_the_profile_object(name: str) -> None:
    assert parse_profile(name) is PROFILES[name]
    assert parse_profile(f" {name.upper()} ") is PROFILES[name]


def test_parse_profile_unknown_lists_choices() -> None:
    with pytest.raises(ValueError) as exc:
        parse_profile("nightly")
    assert "'nightly'" in str(exc.value)
    assert "choose from smoke, ci, official" in str(exc.value)


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("CUDA", "cuda"), (" cpu ", "cpu")])
def test_parse_device(value: str, expected: str) -> None:
    assert parse_device(value) == expected
    assert expected in DEVICES


@pytest.mark.parametrize("bad", ["gpu", "cuda:0", "rocm", ""])
def test_parse_device_rejects_unknown(bad: str) -> None:
    with pytest.raises(ValueError, match="choose from auto, cuda, cpu"):
        parse_device(bad)


# --------------------------------------------------------------------------- parse_duration_ms


@pytest.mark.parametrize("value, expected", [
    ("1500ms", 1500),
    ("2s", 2000),
    ("2.5s", 2500),
    ("10m", 600_000),
    ("10min", 600_000),
    ("0.5m", 30_000),
    (" 3 s ", 3000),
    ("1.5ms", 2),
])
def test_parse_duration_ms_units(value: str, expected: int) -> None:
    assert parse_duration_ms(value) == expected


@pytest.mark.parametrize("value, expected", [("2", 2000), ("2.5", 2500), ("0.25", 250)])
def test_parse_duration_ms_bare_number_is_seconds(value: str, expected: int) -> None:
    assert parse_duration_ms(value) == expected


@pytest.mark.parametrize("value", ["0", "0s", "0ms", "0.0m"])
def test_parse_duration_ms_zero_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        parse_duration_ms(value)


@pytest.mark.parametrize("value", ["-2s", "-1", "abc", "", "2x", "2 seconds", "1e3ms", "s", "ms2", "2.s"])
def test_parse_duration_ms_negative_and_garbage_are_refused_with_an_example(value: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_duration_ms(value)
    message = str(exc.value)
    assert "--mlperf-duration" in message
    assert repr(value) in message
    assert "2s, 1500ms or 10m" in message


@pytest.mark.parametrize("value, expected", [("1h", 3_600_000), ("0.5h", 1_800_000), ("10s", 10_000),
                                             ("1500ms", 1500), ("30m", 1_800_000)])
def test_one_duration_grammar_has_hours(value: str, expected: int) -> None:
    assert parse_duration_ms(value, option="--mlperf-gpu-lock-timeout") == expected


def test_parse_duration_s_is_the_same_grammar_in_seconds() -> None:
    assert parse_duration_s("10s", option="--mlperf-timeout") == 10.0
    assert parse_duration_s("8", option="--mlperf-timeout") == 8.0  # a bare number stays seconds
    assert parse_duration_s("1h", option="--mlperf-timeout") == 3600.0
    with pytest.raises(ValueError, match="--mlperf-timeout must be positive, got '-5s'"):
        parse_duration_s("-5s", option="--mlperf-timeout")


def test_marker_values_name_the_marker_and_the_test() -> None:
    with pytest.raises(ValueError) as exc:
        check_marker({"workload": "null", "tolerance": "abc"}, "test_b.py::test_x[null-Offline-performance]")
    message = str(exc.value)
    assert "test_b.py::test_x[null-Offline-performance]" in message
    assert "@pytest.mark.mlperf(tolerance='abc')" in message
    assert "--mlperf" not in message
    assert check_marker({"tolerance": "10%", "timeout": "1m", "batch_size": 4}, "t") == {
        "tolerance": 0.1, "timeout": 60.0, "batch_size": 4}
    with pytest.raises(ValueError, match=r"mlperf\(gpus=0\)"):
        check_marker({"gpus": 0}, "t")


def test_parse_duration_ms_never_returns_zero_for_a_positive_input() -> None:
    try:
        result = parse_duration_ms("0.4ms")
    except ValueError:
        return  # refusing is fine too
    assert result > 0


# --------------------------------------------------------------------------- parse_fraction


@pytest.mark.parametrize("value, expected", [
    ("5%", 0.05), ("0.05", 0.05), (" 12.5% ", 0.125), ("0.5", 0.5), ("99.9%", 0.999), ("1e-3", 0.001),
])
def test_parse_fraction(value: str, expected: float) -> None:
    assert parse_fraction(value) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["0", "0%", "1", "100%", "150%", "-5%", "-0.1", "2", "nan"])
def test_parse_fraction_must_lie_strictly_between_0_and_1(value: str) -> None:
    with pytest.raises(ValueError, match=r"between 0% and 100% \(exclusive\)") as exc:
        parse_fraction(value)
    assert "--mlperf-tolerance" in str(exc.value)


@pytest.mark.parametrize("value", ["five", "%", "", "5%%", "0.05x"])
def test_parse_fraction_garbage_says_how_to_write_it(value: str) -> None:
    with pytest.raises(ValueError, match="write a percentage like 5% or a fraction like 0.05"):
        parse_fraction(value)


def test_parse_fraction_names_the_option_it_was_given() -> None:
    with pytest.raises(ValueError, match="--my-gate"):
        parse_fraction("x", option="--my-gate")
    with pytest.raises(ValueError, match="--my-gate"):
        parse_fraction("200%", option="--my-gate")


# --------------------------------------------------------------------------- parse_name_path


def test_parse_name_path_maps_names_to_paths(tmp_path: Path) -> None:
    model = tmp_path / "r.onnx"
    model.write_bytes(b"x")
    data = tmp_path / "imagenet"
    data.mkdir()
    out = parse_name_path([f"resnet50={model}", f" imagenet = {data} "], option="--mlperf-model")
    assert out == {"resnet50": model, "imagenet": data}


def test_parse_name_path_nothing_is_empty() -> None:
    assert parse_name_path(None, option="--mlperf-model") == {}
    assert parse_name_path([], option="--mlperf-model") == {}


def test_parse_name_path_later_entry_for_a_name_wins(tmp_path: Path) -> None:
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    a.touch()
    b.touch()
    assert parse_name_path([f"m={a}", f"m={b}"], option="--mlperf-model") == {"m": b}


def test_parse_name_path_keeps_equals_signs_in_the_path(tmp_path: Path) -> None:
    odd = tmp_path / "a=b.onnx"
    odd.touch()
    assert parse_name_path([f"m={odd}"], option="--mlperf-model") == {"m": odd}


def test_parse_name_path_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "m.onnx").touch()
    assert parse_name_path(["m=~/m.onnx"], option="--mlperf-model") == {"m": tmp_path / "m.onnx"}


@pytest.mark.parametrize("raw", ["resnet50", "=/tmp", "resnet50=", " = ", "resnet50 /m.onnx"])
def test_parse_name_path_requires_name_equals_path(raw: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_name_path([raw], option="--mlperf-model")
    message = str(exc.value)
    assert message.startswith(f"bad --mlperf-model {raw!r}")
    assert "write NAME=PATH" in message


def test_parse_name_path_missing_file_names_option_name_and_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ValueError) as exc:
        parse_name_path([f"resnet50={missing}"], option="--mlperf-model")
    message = str(exc.value)
    assert message.startswith("--mlperf-model resnet50: ")
    assert str(missing) in message
    assert "does not exist" in message


def test_parse_name_path_missing_file_allowed_when_not_required(tmp_path: Path) -> None:
    missing = tmp_path / "later.onnx"
    assert parse_name_path([f"m={missing}"], option="--x", must_exist=False) == {"m": missing}


# --------------------------------------------------------------------------- positive numbers


@pytest.mark.parametrize("value, expected", [("1", 1), ("32", 32), (" 7 ", 7)])
def test_parse_positive_int(value: str, expected: int) -> None:
    assert parse_positive_int(value, option="--mlperf-batch-size") == expected


@pytest.mark.parametrize("value", ["0", "-3"])
def test_parse_positive_int_below_one(value: str) -> None:
    with pytest.raises(ValueError, match=r"--mlperf-batch-size must be at least 1"):
        parse_positive_int(value, option="--mlperf-batch-size")


@pytest.mark.parametrize("value", ["1.5", "x", "", "1e3"])
def test_parse_positive_int_garbage(value: str) -> None:
    with pytest.raises(ValueError, match=r"write a whole number") as exc:
        parse_positive_int(value, option="--mlperf-batch-size")
    assert "bad --mlperf-batch-size" in str(exc.value)


@pytest.mark.parametrize("value, expected", [("1", 1.0), ("0.25", 0.25), ("1e3", 1000.0)])
def test_parse_positive_float(value: str, expected: float) -> None:
    assert parse_positive_float(value, option="--mlperf-timeout") == expected


@pytest.mark.parametrize("value", ["0", "-1", "0.0", "-inf"])
def test_parse_positive_float_not_positive(value: str) -> None:
    with pytest.raises(ValueError, match="--mlperf-timeout must be positive"):
        parse_positive_float(value, option="--mlperf-timeout")


@pytest.mark.parametrize("value", ["x", "", "5s"])
def test_parse_positive_float_garbage(value: str) -> None:
    with pytest.raises(ValueError, match="bad --mlperf-timeout .*write a number of seconds"):
        parse_positive_float(value, option="--mlperf-timeout")


def test_parse_positive_float_refuses_nan() -> None:
    with pytest.raises(ValueError, match="--mlperf-timeout"):
        parse_positive_float("nan", option="--mlperf-timeout")


# --------------------------------------------------------------------------- profiles and defaults


def test_profiles_are_named_by_their_key() -> None:
    assert set(PROFILES) == {"smoke", "ci", "official"}
    for name, profile in PROFILES.items():
        assert profile.name == name


def test_official_profile_overrides_nothing_and_tolerates_nothing() -> None:
    official = PROFILES["official"]
    assert official.min_duration_ms is None
    assert dict(official.min_query_count) == {}
    assert official.performance_sample_count is None
    assert official.tolerated == frozenset()
    assert official.server_latency_floor_factor is None
    assert official.calibrate is False


def test_shorter_profiles_cover_every_scenario_and_only_tolerate_known_reasons() -> None:
    known = {"early_stopping", "perf_constraints", "min_duration", "min_queries"}
    for name in ("smoke", "ci"):
        profile = PROFILES[name]
        assert set(profile.min_query_count) == set(SCENARIOS)
        assert all(n >= 1 for n in profile.min_query_count.values())
        assert profile.min_duration_ms and profile.min_duration_ms > 0
        assert profile.tolerated <= known
        # a run too short for LoadGen's duration or query count must never be accepted
        assert not profile.tolerated & {"min_duration", "min_queries"}
    assert PROFILES["smoke"].min_duration_ms < PROFILES["ci"].min_duration_ms
    assert PROFILES["ci"].tolerated <= PROFILES["smoke"].tolerated


def test_settings_defaults() -> None:
    s = Settings()
    assert s.scenarios is None
    assert s.modes == ("performance",)
    assert s.profile is PROFILES["smoke"]
    assert s.device == "auto"
    assert 0 < s.tolerance < 1
    with pytest.raises(AttributeError):
        s.tolerance = 0.1  # type: ignore[misc]  # frozen


# --------------------------------------------------------------------------- parse_sut_options

KNOWN = {"vllm": ("max_model_len", "gpu_memory_utilization"), "onnxruntime": ("cuda_graph_max_batch",),
         "torch-probe": ("op",)}


def test_parse_sut_options_groups_by_backend_and_keeps_strings() -> None:
    values, sources = parse_sut_options([("vllm.max_model_len=4096", "ini mlperf_sut_option"),
                                         ("onnxruntime.cuda_graph_max_batch=8", "--mlperf-sut-option"),
                                         (" vllm.gpu_memory_utilization = 0.85 ", "--mlperf-sut-option"),
                                         ("torch-probe.op=h2d_pinned", "--mlperf-sut-option")], KNOWN)
    assert {b: dict(v) for b, v in values.items()} == {
        "vllm": {"max_model_len": "4096", "gpu_memory_utilization": "0.85"},
        "onnxruntime": {"cuda_graph_max_batch": "8"}, "torch-probe": {"op": "h2d_pinned"}}
    assert sources["vllm"]["max_model_len"] == "ini mlperf_sut_option"
    assert sources["vllm"]["gpu_memory_utilization"] == "--mlperf-sut-option"
    with pytest.raises(TypeError):  # frozen: a case cannot change the session's options for the next
        values["vllm"]["max_model_len"] = "1"  # type: ignore[index]


def test_parse_sut_options_later_entry_wins_and_remembers_its_source() -> None:
    values, sources = parse_sut_options([("vllm.max_model_len=4096", "ini mlperf_sut_option"),
                                         ("vllm.max_model_len=2048", "--mlperf-sut-option")], KNOWN)
    assert values["vllm"]["max_model_len"] == "2048" and sources["vllm"]["max_model_len"] == "--mlperf-sut-option"
    assert parse_sut_options([], KNOWN) == ({}, {})
    # a value may hold '=' and '.': only the first '=' and the first '.' before it split the entry
    values, _ = parse_sut_options([("vllm.max_model_len=a=b.c", "--mlperf-sut-option")], KNOWN)
    assert values["vllm"]["max_model_len"] == "a=b.c"


@pytest.mark.parametrize("raw, message", [
    ("max_model_len=4096", "bad --mlperf-sut-option 'max_model_len=4096': write BACKEND.KEY=VALUE"),
    ("vllm.max_model_len", "bad --mlperf-sut-option 'vllm.max_model_len': write BACKEND.KEY=VALUE"),
    ("vllm.max_model_len=", "bad --mlperf-sut-option 'vllm.max_model_len=': write BACKEND.KEY=VALUE"),
    (".max_model_len=1", "bad --mlperf-sut-option '.max_model_len=1': write BACKEND.KEY=VALUE"),
    ("vllm.=1", "bad --mlperf-sut-option 'vllm.=1': write BACKEND.KEY=VALUE"),
    ("vlm.max_model_len=1", ("--mlperf-sut-option 'vlm.max_model_len=1': unknown backend 'vlm'; known backends are "
                             "vllm, onnxruntime, torch-probe")),
    ("vllm.max_len=1", ("--mlperf-sut-option 'vllm.max_len=1': the vllm backend has no option 'max_len'; its "
                        "options are max_model_len, gpu_memory_utilization")),
])
def test_parse_sut_options_refuses_malformed_entries(raw: str, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_sut_options([(raw, "--mlperf-sut-option")], KNOWN)
    assert str(exc.value).startswith(message)
    assert "vllm, onnxruntime, torch-probe" in str(exc.value) or "its options" in str(exc.value)


def test_settings_have_no_sut_options_by_default() -> None:
    assert dict(Settings().sut_options) == {} and dict(Settings().sut_option_sources) == {}


@pytest.mark.parametrize(("value", "seconds"), [("0", 0.0), ("0ms", 0.0), ("0.5ms", 0.0005), ("2ms", 0.002),
                                                ("0.001", 0.001), (" 1.5 ms ", 0.0015)])
def test_parse_wait_s_allows_zero_and_fractions_of_a_millisecond(value: str, seconds: float) -> None:
    assert parse_wait_s(value) == pytest.approx(seconds)


@pytest.mark.parametrize(("value", "message"), [("-1ms", "between 0 and 10 s"), ("11s", "between 0 and 10 s"),
                                                ("soon", "write e.g. 0, 0.5ms or 2ms")])
def test_parse_wait_s_refuses_what_it_cannot_wait(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_wait_s(value)


def test_the_gate_estimator_follows_the_device_under_auto():
    from dataclasses import replace

    from pytest_mlperf.host import settings as S
    from pytest_mlperf.host.pool.recipe import LaunchRecipe
    gate = S.GateSettings(candidate=LaunchRecipe())
    assert gate.plan("cuda").estimator == "floor-latency"  # latency noise on a GPU host is one-sided (issue 14)
    assert gate.plan("cpu").estimator == "paired"
    assert replace(gate, estimator="floor").plan("cpu").estimator == "floor"
    assert replace(gate, estimator="paired").plan("cuda").estimator == "paired"
    assert S.parse_gate_estimator(" Floor ") == "floor"
    with pytest.raises(ValueError, match="must be one of auto, paired, floor"):
        S.parse_gate_estimator("min")


@pytest.mark.parametrize(("device", "scenario", "round_ms", "given", "rounds"), [
    ("cuda", "SingleStream", 100, {}, (60, 160)),  # the floor judges p90 latency: more rounds (issue 14) ...
    ("cuda", "SingleStream", 150, {}, (60, 160)),  # ... and more still when they are short
    ("cuda", "SingleStream", 250, {}, (36, 72)),
    ("cuda", "SingleStream", None, {}, (36, 72)),
    ("cuda", "MultiStream", 1000, {}, (36, 72)),
    ("cuda", "Offline", 1000, {}, (12, 60)),  # throughput: paired rounds
    ("cuda", "Offline", 100, {}, (12, 60)),
    ("cuda", "Server", 1000, {}, (36, 72)),  # p99 latency at a fixed load, by the floor too
    ("cpu", "SingleStream", 1000, {}, (12, 60)),
    ("cpu", "SingleStream", 1000, {"estimator": "floor"}, (36, 72)),
    ("cuda", "SingleStream", 100, {"estimator": "paired"}, (12, 60)),
    ("cuda", "SingleStream", 100, {"min_rounds": 3, "max_rounds": 6}, (3, 6)),  # the options win
    ("cuda", "SingleStream", 100, {"max_rounds": 6}, (6, 6)),  # the default first look never passes the last round
    ("cuda", "SingleStream", 100, {"min_rounds": 200}, (200, 200)),  # nor the default last round the first look
    ("cuda", "SingleStream", 250, {"min_rounds": 80}, (80, 80)),
    ("cpu", "Offline", 1000, {"min_rounds": 4}, (4, 60)),
])
def test_the_gate_rounds_follow_the_estimator_that_judges(device: str, scenario: str, round_ms: int | None,
                                                          given: dict, rounds: tuple) -> None:
    from pytest_mlperf.host import settings as S
    from pytest_mlperf.host.pool.recipe import LaunchRecipe
    plan = S.GateSettings(candidate=LaunchRecipe(), **given).plan(device, scenario, round_ms)
    assert (plan.min_rounds, plan.max_rounds) == rounds


@pytest.mark.parametrize(("profile", "device", "scenario", "round_ms", "expected"), [
    ("ci", "cuda", "SingleStream", None, 100),  # shorter rounds: the vCPU's slow states (issue 14)
    ("smoke", "cuda", "SingleStream", None, 100),
    ("ci", "cuda", "MultiStream", None, 1000),
    ("ci", "cpu", "SingleStream", None, 1000),
    ("smoke", "cpu", "Offline", None, 500),
    ("official", "cuda", "SingleStream", None, 10_000),
    ("ci", "cuda", "SingleStream", 800, 800),  # --mlperf-gate-round wins
])
def test_a_gate_rounds_length(profile: str, device: str, scenario: str, round_ms: int | None, expected: int) -> None:
    from pytest_mlperf.host import settings as S
    from pytest_mlperf.host.pool.recipe import LaunchRecipe
    gate = S.GateSettings(candidate=LaunchRecipe(), round_ms=round_ms)
    assert gate.round_ms_for(S.PROFILES[profile], device, scenario) == expected
