"""Tests for pytest_mlperf.runner.loadgen against the real mlperf_loadgen module (no GPU, no model)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

lg = pytest.importorskip("mlperf_loadgen")

from pytest_mlperf.contract.test_request import TestRequest, user_conf_keys
from pytest_mlperf.runner.loadgen import LoadGenError, Responder, build_test_settings, effective_test, run_test
from pytest_mlperf.contract.loadgen_log import read_accuracy_log, read_run  # noqa: E402

# pytest would otherwise try to collect the dataclass named Test*
TestRequest.__test__ = False  # type: ignore[attr-defined]


def make_request(tmp_path: Path, scenario: str = "Server", mode: str = "performance", **kw) -> TestRequest:
    return TestRequest("resnet50", scenario, mode, str(tmp_path / "logs"), 100, **kw)


# --------------------------------------------------------------------------- user_conf_keys


def test_user_conf_keys_model_and_wildcards(tmp_path: Path) -> None:
    conf = tmp_path / "user.conf"
    conf.write_text(
        "# a comment line: resnet50.Server.ignored_key = 1\n"
        "\n"
        "resnet50.Server.target_qps = 1000\n"
        "  resnet50.Server.target_latency=20   # trailing comment\n"
        "*.Server.min_duration = 60000\n"
        "resnet50.*.min_query_count = 100\n"
        "*.*.performance_sample_count_override = 1024\n"
        "resnet50.Offline.target_qps = 5000\n"  # another scenario
        "retinanet.Server.samples_per_query = 8\n"  # another model
        "bert-99.*.max_async_queries = 1\n"  # another model, wildcard scenario
        "resnet50.Server.broken line\n"  # not a key = value line
        "resnet50.Server = 3\n"
        "#resnet50.Server.commented_out = 3\n"
    )
    assert user_conf_keys(conf, "resnet50", "Server") == {
        "target_qps", "target_latency", "min_duration", "min_query_count", "performance_sample_count_override",
    }
    assert user_conf_keys(conf, "resnet50", "Offline") == {
        "target_qps", "min_query_count", "performance_sample_count_override",
    }
    assert user_conf_keys(conf, "retinanet", "Server") == {
        "samples_per_query", "min_duration", "performance_sample_count_override",
    }
    assert user_conf_keys(conf, "gptj", "SingleStream") == {"performance_sample_count_override"}


def test_user_conf_keys_model_names_with_dashes_and_underscores(tmp_path: Path) -> None:
    conf = tmp_path / "user.conf"
    conf.write_text("llama3_1-8b.Offline.target_qps = 12.5\nllama3_1-8b-edge.Offline.min_duration = 1\n")
    assert user_conf_keys(conf, "llama3_1-8b", "Offline") == {"target_qps"}


def test_user_conf_keys_empty_file(tmp_path: Path) -> None:
    conf = tmp_path / "user.conf"
    conf.write_text("")
    assert user_conf_keys(conf, "resnet50", "Offline") == set()


# --------------------------------------------------------------------------- build_test_settings


def test_effective_test_reads_back_ours_then_user_conf_then_mlperf_conf(tmp_path: Path) -> None:
    conf = tmp_path / "user.conf"
    conf.write_text("resnet50.Server.min_query_count = 24\n*.Server.target_qps = 7.5\n")
    ours = make_request(tmp_path, min_duration_ms=1000, min_query_count=100, server_target_qps=50.0,
                        user_conf=str(conf))
    eff = effective_test(ours)
    assert (eff.min_duration_ms, eff.min_query_count, eff.server_target_qps) == (1000, 24, 7.5)  # the user's win
    plain = effective_test(make_request(tmp_path, "Offline"))
    assert plain.min_duration_ms == 600_000 and plain.min_query_count == 24576  # mlperf.conf's resnet50 Offline
    assert plain.scenario == "Offline" and plain.log_dir == str(tmp_path / "logs")



def test_mlperf_conf_defaults_are_loaded_on_every_call(tmp_path: Path) -> None:
    # LoadGen's FromConfig(path, model, scenario, 1) loads mlperf.conf only on the first call in a process;
    # build_test_settings must give the same defaults however often it is called.
    for _ in range(3):
        ts = build_test_settings(make_request(tmp_path, "Server"))
        assert ts.server_target_latency_ns == 15_000_000  # resnet50 Server: 15 ms in mlperf.conf
        assert ts.scenario == lg.TestScenario.Server
        assert ts.mode == lg.TestMode.PerformanceOnly
    ss = build_test_settings(make_request(tmp_path, "SingleStream"))
    assert ss.scenario == lg.TestScenario.SingleStream
    again = build_test_settings(make_request(tmp_path, "Server"))
    assert again.server_target_latency_ns == 15_000_000


def test_mlperf_conf_defaults_survive_a_raw_loadgen_load(tmp_path: Path) -> None:
    # another library in the process may already have used the embedded mlperf.conf
    raw = lg.TestSettings()
    raw.FromConfig("", "resnet50", "Server", 0)
    assert build_test_settings(make_request(tmp_path, "Server")).server_target_latency_ns == 15_000_000


def test_request_values_fill_what_no_conf_sets(tmp_path: Path) -> None:
    ts = build_test_settings(make_request(
        tmp_path, "Server", min_duration_ms=1500, min_query_count=64, performance_sample_count=64,
        server_target_qps=123.0, server_target_latency_ns=40_000_000,
    ))
    assert ts.min_duration_ms == 1500
    assert ts.min_query_count == 64
    assert ts.performance_sample_count_override == 64
    assert ts.server_target_qps == 123.0
    assert ts.server_target_latency_ns == 40_000_000


def test_unset_request_values_keep_mlperf_conf(tmp_path: Path) -> None:
    ts = build_test_settings(make_request(tmp_path, "Server"))
    default = lg.TestSettings()
    default.FromConfig("", "resnet50", "Server", 0)
    assert ts.min_duration_ms == default.min_duration_ms
    assert ts.min_query_count == default.min_query_count
    assert ts.server_target_qps == default.server_target_qps


def test_performance_sample_count_is_capped_at_the_dataset(tmp_path: Path) -> None:
    ts = build_test_settings(make_request(tmp_path, "Offline", performance_sample_count=5000))
    assert ts.performance_sample_count_override == 100  # total_sample_count


def test_accuracy_mode_and_sample_count(tmp_path: Path) -> None:
    ts = build_test_settings(make_request(tmp_path, "Offline", "accuracy", accuracy_sample_count=500))
    assert ts.mode == lg.TestMode.AccuracyOnly
    assert ts.accuracy_sample_count_override == 100  # capped at total_sample_count
    ts = build_test_settings(make_request(tmp_path, "Offline", "accuracy", accuracy_sample_count=10))
    assert ts.accuracy_sample_count_override == 10


def test_token_latencies_switch(tmp_path: Path) -> None:
    assert build_test_settings(make_request(tmp_path, "Offline", use_token_latencies=True)).use_token_latencies
    assert not build_test_settings(make_request(tmp_path, "Offline")).use_token_latencies


def test_multistream_samples_per_query(tmp_path: Path) -> None:
    ts = build_test_settings(make_request(tmp_path, "MultiStream", multi_stream_samples_per_query=4,
                                     multi_stream_expected_latency_ns=2_000_000))
    assert ts.multi_stream_samples_per_query == 4
    assert ts.multi_stream_expected_latency_ns == 2_000_000


def test_user_conf_values_win_over_the_request(tmp_path: Path) -> None:
    conf = tmp_path / "user.conf"
    conf.write_text(
        "resnet50.Server.min_duration = 3000\n"
        "*.Server.target_latency = 20\n"
        "resnet50.*.min_query_count = 77\n"
        "resnet50.Offline.min_duration = 9999\n"  # another scenario: not for this run
    )
    ts = build_test_settings(make_request(
        tmp_path, "Server", user_conf=str(conf), min_duration_ms=100, min_query_count=5,
        server_target_latency_ns=5_000_000, server_target_qps=3.0,
    ))
    assert ts.min_duration_ms == 3000
    assert ts.server_target_latency_ns == 20_000_000  # conf is in ms
    assert ts.min_query_count == 77
    assert ts.server_target_qps == 3.0  # the conf does not set it: ours applies
    # and mlperf.conf still underlies the user conf (the conf does not set the performance sample count)
    assert ts.performance_sample_count_override == build_test_settings(
        make_request(tmp_path, "Server")).performance_sample_count_override


@pytest.mark.parametrize("scenario, line, attr, ours, theirs", [
    ("Offline", "resnet50.Offline.target_qps = 1234", "offline_expected_qps", 99.0, 1234.0),
    ("SingleStream", "resnet50.SingleStream.target_latency = 7", "single_stream_expected_latency_ns",
     5_000, 7_000_000),
    ("MultiStream", "resnet50.MultiStream.target_latency = 9", "multi_stream_expected_latency_ns",
     5_000, 9_000_000),
])
def test_user_conf_expected_qps_and_latency_win_over_calibration(tmp_path: Path, scenario, line, attr, ours,
                                                                  theirs) -> None:
    conf = tmp_path / "user.conf"
    conf.write_text(line + "\n")
    ts = build_test_settings(make_request(tmp_path, scenario, user_conf=str(conf), **{attr: ours}))
    assert getattr(ts, attr) == theirs


def test_missing_user_conf_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.conf"
    with pytest.raises(LoadGenError) as exc:
        build_test_settings(make_request(tmp_path, user_conf=str(missing)))
    assert str(exc.value) == f"--mlperf-user-conf {missing} does not exist"


def test_user_conf_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LoadGenError, match="does not exist"):
        build_test_settings(make_request(tmp_path, user_conf=str(tmp_path)))


@pytest.mark.parametrize("text", ["this is not a conf line\n", "resnet50.Server.target_qps = fast\n"])
def test_garbage_user_conf_is_a_clear_error(tmp_path: Path, text: str) -> None:
    conf = tmp_path / "user.conf"
    conf.write_text(text)
    with pytest.raises(LoadGenError) as exc:
        build_test_settings(make_request(tmp_path, user_conf=str(conf)))
    message = str(exc.value)
    assert f"LoadGen rejected user.conf {conf}" in message
    assert "rc -22" in message
    assert "MODEL.SCENARIO.key = value" in message


def test_server_issue_query_threads_forced_to_zero(tmp_path: Path) -> None:
    conf = tmp_path / "user.conf"
    conf.write_text("resnet50.Server.server_num_issue_query_threads = 4\n")
    assert build_test_settings(make_request(tmp_path, "Server")).server_num_issue_query_threads == 0
    assert build_test_settings(make_request(tmp_path, "Server", user_conf=str(conf))).server_num_issue_query_threads == 0


@pytest.mark.parametrize("field, value, phrase", [
    ("scenario", "Streaming", "unknown scenario 'Streaming'"),
    ("scenario", "offline", "unknown scenario 'offline'"),
    ("mode", "both", "unknown mode 'both'"),
])
def test_unknown_scenario_or_mode(tmp_path: Path, field: str, value: str, phrase: str) -> None:
    kw = {"scenario": "Offline", "mode": "performance", field: value}
    req = TestRequest("resnet50", kw["scenario"], kw["mode"], str(tmp_path), 10)
    with pytest.raises(LoadGenError, match=phrase):
        build_test_settings(req)


# --------------------------------------------------------------------------- TestRequest


def test_test_request_round_trips_through_json() -> None:
    req = TestRequest(
        "llama3_1-8b", "Server", "accuracy", "/tmp/logs/x", 13368, performance_sample_count=13368,
        min_duration_ms=1500, min_query_count=64, user_conf="/conf/user.conf", offline_expected_qps=1.5,
        single_stream_expected_latency_ns=1000, multi_stream_expected_latency_ns=2000, server_target_qps=2.5,
        server_target_latency_ns=3000, multi_stream_samples_per_query=8, use_token_latencies=True,
        accuracy_sample_count=100,
    )
    data = req.to_dict()
    assert data["loadgen_model"] == "llama3_1-8b" and data["use_token_latencies"] is True
    assert TestRequest.from_dict(json.loads(json.dumps(data))) == req
    minimal = TestRequest("resnet50", "Offline", "performance", "/l", 10)
    assert TestRequest.from_dict(minimal.to_dict()) == minimal


def test_test_request_to_dict_is_a_copy() -> None:
    req = TestRequest("resnet50", "Offline", "performance", "/l", 10)
    data = req.to_dict()
    data["scenario"] = "Server"
    assert req.scenario == "Offline"


def test_test_request_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(TypeError):
        TestRequest.from_dict({**TestRequest("resnet50", "Offline", "performance", "/l", 10).to_dict(), "x": 1})


# --------------------------------------------------------------------------- Responder


@pytest.mark.parametrize("tokens", [[], [42]])
def test_complete_tokens_needs_two_tokens(tokens: list[int]) -> None:
    # raises before it touches LoadGen, so no test needs to be running
    with pytest.raises(LoadGenError) as exc:
        Responder().complete_tokens(7, np.array(tokens, dtype=np.int64))
    assert str(exc.value) == f"sample 7 returned {len(tokens)} token(s); token latencies need at least 2"


# --------------------------------------------------------------------------- run_test


class EchoHarness:
    """Completes every sample at once with its QSL index as one int32."""

    def __init__(self) -> None:
        self.loaded: list[int] = []
        self.unloaded: list[int] = []
        self.issued = 0

    def issue(self, samples: list[tuple[int, int]], responder: Responder) -> None:
        self.issued += len(samples)
        responder.complete([i for i, _ in samples], np.array([idx for _, idx in samples], dtype=np.int32))

    def flush(self) -> None:
        pass

    def load(self, indices: list[int]) -> None:
        self.loaded.extend(indices)

    def unload(self, indices: list[int]) -> None:
        self.unloaded.extend(indices)


def test_run_test_writes_logs_into_the_given_folder(tmp_path: Path) -> None:
    log_dir = tmp_path / "deep" / "case-logs"  # created by run_test
    req = TestRequest("resnet50", "SingleStream", "performance", str(log_dir), 16,
                      performance_sample_count=16, min_duration_ms=200, min_query_count=32,
                      single_stream_expected_latency_ns=2_000)  # enough queries pre-generated for 200 ms
    harness = EchoHarness()
    run_test(req, harness)
    for name in ("mlperf_log_detail.txt", "mlperf_log_summary.txt", "mlperf_log_accuracy.json"):
        assert (log_dir / name).is_file(), name
    assert not (log_dir / "audit.config").exists()
    run = read_run(log_dir)
    assert run.scenario == "SingleStream"
    assert run.mode == "PerformanceOnly"
    # LoadGen keeps the errors FromConfig logged earlier in this process (the garbage user.conf tests above) and
    # writes them into the next test's detail log; the runner replaces its process after a failure, so only
    # errors of this run count here.
    assert [e for e in run.errors if not e.startswith("error_invalid_config")] == []
    assert run.settings["min_duration_ms"] == 200
    assert run.constraints["min_duration_met"] and run.constraints["min_queries_met"]
    assert run.query_count is not None and run.query_count >= 32
    assert harness.issued >= 32
    assert sorted(harness.loaded) == list(range(16))
    assert sorted(harness.unloaded) == list(range(16))
    assert read_accuracy_log(log_dir / "mlperf_log_accuracy.json") == []  # performance mode logs no outputs


def test_run_test_refuses_an_existing_audit_config(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    audit = log_dir / "audit.config"
    audit.write_text("*.*.mode = 2\n")
    harness = EchoHarness()
    req = TestRequest("resnet50", "SingleStream", "performance", str(log_dir), 16, min_duration_ms=200)
    with pytest.raises(LoadGenError) as exc:
        run_test(req, harness)
    assert str(exc.value) == f"{audit} exists: remove it; an audit config would silently change the test"
    assert harness.issued == 0 and harness.loaded == []
    assert sorted(p.name for p in log_dir.iterdir()) == ["audit.config"]  # nothing ran


def test_run_test_refuses_a_log_dir_that_is_a_file(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "logs"
    not_a_dir.write_text("")
    req = TestRequest("resnet50", "SingleStream", "performance", str(not_a_dir), 16, min_duration_ms=200)
    with pytest.raises((LoadGenError, FileExistsError)):
        run_test(req, EchoHarness())


# --------------------------------------------------------------------------- queries LoadGen issues


def test_issued_query_count_rounds_to_whole_passes_only_where_samples_are_concatenated(tmp_path: Path) -> None:
    from dataclasses import replace

    from pytest_mlperf.contract.test_request import issued_query_count

    ss = TestRequest("llama3_1-8b", "SingleStream", "performance", str(tmp_path), 256)
    assert issued_query_count(ss, 100, True) == 256
    assert issued_query_count(ss, 300, True) == 512
    assert issued_query_count(ss, 100, False) == 100  # resnet50: no concatenation
    assert issued_query_count(replace(ss, scenario="Offline"), 1, True) == 1
    assert issued_query_count(replace(ss, mode="accuracy"), 100, True) == 100
    assert issued_query_count(replace(ss, performance_sample_count=64), 100, True) == 128


@pytest.mark.parametrize("scenario", ["SingleStream", "Server"])
def test_effective_query_count_is_what_loadgen_issues_for_an_llm(tmp_path: Path, scenario: str) -> None:
    """The H200's vllm SingleStream case ran 256 queries where the ci profile asked for 100 (and the plugin
    predicted 100): LoadGen itself, for llama3_1-8b, issues whole passes over the loaded samples."""
    req = TestRequest("llama3_1-8b", scenario, "performance", str(tmp_path / "logs"), 64, min_duration_ms=0,
                      min_query_count=100, single_stream_expected_latency_ns=100_000, server_target_qps=5000.0,
                      server_target_latency_ns=10**9, use_token_latencies=True)
    expected = effective_test(req).min_query_count
    issued = _run_instant_token_test(tmp_path, req)["result_query_count"]
    assert expected == int(issued) == 128


@pytest.mark.parametrize(("qps", "loaded", "issued"), [(500.0, None, 64), (700.0, None, 128), (700.0, 32, 96),
                                                      (5.0, None, 64)])
def test_offline_samples_per_query_is_what_loadgen_issues_for_an_llm(tmp_path: Path, qps: float,
                                                                     loaded: int | None, issued: int) -> None:
    """The H200's vllm Offline case planned 586 samples and LoadGen generated 768 (3 passes over 256 loaded), and
    the transformers case planned 9 and ran 256 (88 s where 10 s were predicted): for llama3_1-8b, LoadGen rounds
    its Offline query up to whole passes over the loaded samples."""
    from pytest_mlperf.contract.test_request import offline_samples_per_query

    req = TestRequest("llama3_1-8b", "Offline", "performance", str(tmp_path / "logs"), 64,
                      performance_sample_count=loaded, min_duration_ms=100, min_query_count=1,
                      offline_expected_qps=qps, use_token_latencies=True)
    effective = effective_test(req)
    assert effective.sample_concatenate_permutation
    values = _run_instant_token_test(tmp_path, req)
    assert offline_samples_per_query(effective) == int(values["generated_samples_per_query"]) == issued
    resnet = effective_test(replace(req, loadgen_model="resnet50", use_token_latencies=False))
    assert not resnet.sample_concatenate_permutation
    assert offline_samples_per_query(resnet) == max(1, int(1.1 * 0.1 * qps))  # no rounding without concatenation


def _run_instant_token_test(tmp_path: Path, req: TestRequest) -> dict[str, object]:
    """Runs `req` in LoadGen against a SUT that answers every query at once with 3 tokens; the detail log's values
    by key."""
    tokens = np.array([1, 2, 3], dtype=np.int32)
    ptr = tokens.__array_interface__["data"][0]

    def issue(queries):
        for q in queries:
            lg.FirstTokenComplete([lg.QuerySampleResponse(q.id, ptr, 4)])
        lg.QuerySamplesComplete([lg.QuerySampleResponse(q.id, ptr, 12, 3) for q in queries])

    sut = lg.ConstructSUT(issue, lambda: None)
    qsl = lg.ConstructQSL(req.total_sample_count, req.total_sample_count, lambda s: None, lambda s: None)
    tmp_path.mkdir(parents=True, exist_ok=True)  # LoadGen aborts the process on a missing log folder
    out = lg.LogOutputSettings()
    out.outdir = str(tmp_path)
    log = lg.LogSettings()
    log.log_output = out
    try:
        lg.StartTestWithLogSettings(sut, qsl, build_test_settings(req), log)
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    values: dict[str, object] = {}
    for line in (tmp_path / "mlperf_log_detail.txt").read_text().splitlines():
        if ":::MLLOG " in line:
            entry = json.loads(line.split(":::MLLOG ", 1)[1])
            values[str(entry["key"])] = entry["value"]
    return values


def test_the_ci_profile_gives_an_llm_server_run_enough_queries_for_early_stopping(tmp_path: Path) -> None:
    """H200, vLLM Server in the ci profile: 256 queries in 10 s, INVALID only for TPOT early stopping. With the ci
    profile's Server minimum, a run in which no query misses its bounds is VALID by LoadGen's own verdict."""
    from pytest_mlperf.host.settings import PROFILES

    req = TestRequest("llama3_1-8b", "Server", "performance", str(tmp_path / "logs"), 64, min_duration_ms=0,
                      min_query_count=PROFILES["ci"].min_query_count["Server"], server_target_qps=5000.0,
                      use_token_latencies=True)
    result = _run_instant_token_test(tmp_path, req)
    assert result["result_validity"] == "VALID" and result["early_stopping_met"] is True
    fewer = TestRequest(**{**req.to_dict(), "min_query_count": 448})  # one pass of 64 samples fewer
    assert _run_instant_token_test(tmp_path / "fewer", fewer)["early_stopping_met"] is False
