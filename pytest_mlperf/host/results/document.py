"""What `results.json` holds: the document a pytest session writes (`report.ResultsCollector.results_document`),
as msgspec Structs, and the JSON Schema generated from them (`docs/results.schema.json`, written by host/schemas.py).

A consumer (a CI step, a dashboard, `pytest-mlperf aggregate`) can rely on every field named here: its type, and
whether it may be null. Nested objects whose shape belongs to another module (LoadGen's run, the calibration, the
gate, the capacity search) are typed as objects here and described where they are made. Records are checked
against this when the document is written: a mismatch is a bug of ours, said on the terminal, and the file is
written all the same (nothing is lost).

msgspec does the decoding and the schema (it is already the aggregate's decoder): hand-written checks of 30 fields
are what issue 15 found drifting."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from pytest_mlperf.host.schemas import describe

RESULTS_FORMAT = "pytest-mlperf/results"
RESULTS_VERSION = 1


class CaseKey(msgspec.Struct, forbid_unknown_fields=True):
    """The identity a baseline is stored and looked up by."""

    workload: str
    scenario: str
    mode: str
    backend: str
    precision: str
    system: Annotated[str, describe("GPUs (or CPU) of the machine, e.g. 1xNVIDIA-H200")]


class ServerTarget(msgspec.Struct, forbid_unknown_fields=True):
    """The Server load LoadGen ran at, and where it came from."""

    qps: float | None
    source: Annotated[str, describe("user.conf, baseline, search, benchmark, calibration or mlperf.conf")]
    why: str


class CaseRecord(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One LoadGen case: a measured run, or a case that failed before LoadGen gave it a result (`run` null,
    `reason` set)."""

    nodeid: Annotated[str, describe("pytest's node id of the test")]
    key: CaseKey
    outcome: Annotated[Literal["passed", "failed", "skipped", "error"],
                       describe("pytest's outcome of the test; error: its setup failed")]
    worker: Annotated[str, describe("the pytest-xdist worker (gw0, ...) or main")]
    reason: Annotated[str | None, describe("why the case failed, without a traceback")] = None
    recipe: Annotated[str | None, describe("how the runner was started (environment, prefix command)")]
    profile: str | None
    log_dir: Annotated[str | None, describe("the folder of LoadGen's logs of this run")]
    backend: Annotated[dict[str, Any], describe("the backend, device, precision and the details in effect")]
    system: Annotated[dict[str, Any], describe("the machine: CPU, driver, GPUs")]
    run: Annotated[dict[str, Any] | None, describe("LoadGen's result (contract.loadgen_run.Run.to_dict); null if none")]
    metrics: Annotated[dict[str, float | None], describe("the case's metrics by LoadGen key")]
    harness_efficiency: Annotated[float | None, describe("LoadGen's throughput over the bare loop's")]
    latency_overhead: Annotated[float | None, describe("SingleStream/MultiStream: LoadGen's p50 over the bare loop's "
                                                       "p50 at the same batch, minus one")]
    latency_tail_overhead: Annotated[float | None, describe("SingleStream/MultiStream: LoadGen's p99 over the bare "
                                                            "loop's p99, minus one")] = None
    calibration: dict[str, Any] | None
    schedule: dict[str, Any] | None
    test: Annotated[dict[str, Any] | None, describe("the test request LoadGen ran (loadgen.TestRequest)")]
    accuracy: dict[str, Any] | None
    stand_ins: Annotated[list[str], describe("what ran on a stand-in instead of MLPerf's files")] = []
    notes: list[str]
    baseline: Annotated[list[dict[str, Any]], describe("the comparisons with stored baselines")] = []
    missing_baseline: Annotated[str | None, describe("where this case's baseline would be, when there is none")]
    baseline_path: str | None
    outputs_match: bool | None
    gate: Annotated[dict[str, Any] | None, describe("the overhead gate's verdict and rounds, under the gate")]
    gpus: list[dict[str, Any]]
    repeats: list[dict[str, Any]]
    timings: Annotated[dict[str, float], describe("seconds: runner_start_s, prepare_s, loadgen_s, results_s, case_s")]
    runner_pid: int | None
    runner_cpus: str | None
    sut_options: Annotated[dict[str, Any],
                           describe("backend options from the command line or ini, with their source")] = {}
    server_target: ServerTarget | None = None
    server_search: Annotated[dict[str, Any] | None, describe("the capacity search's probes and capacity")] = None


class ResultsDocument(msgspec.Struct, forbid_unknown_fields=True):
    """A pytest session's results.json."""

    format: Literal["pytest-mlperf/results"]
    version: Literal[1]
    pytest_mlperf: Annotated[str, describe("the version that wrote it")]
    created: Annotated[str, describe("ISO 8601, UTC")]
    host: str
    profile: str
    cases: list[CaseRecord]


def check_document(document: dict[str, Any]) -> str | None:
    """None if `document` matches ResultsDocument, else msgspec's one-line reason (with the `$.path`)."""
    try:
        msgspec.convert(document, ResultsDocument)
    except msgspec.ValidationError as exc:
        return str(exc)
    return None


def load_document(data: bytes) -> ResultsDocument:
    """results.json's bytes decoded and checked (msgspec.ValidationError or DecodeError on a mismatch)."""
    return msgspec.json.decode(data, type=ResultsDocument)
