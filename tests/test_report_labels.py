"""What the results table and notes say about stand-ins, accuracy runs and the harness figure (issue 11)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pytest_mlperf.host.baselines.store import CaseKey
from pytest_mlperf.host.driver.cases import CaseRun
from pytest_mlperf.contract.loadgen_log import read_run
from pytest_mlperf.host.results.report import ResultsCollector, accuracy_of, harness_line, standin_lines, table_rows
from pytest_mlperf.host.driver.sut_handle import SUTHandle, stand_ins
from pytest_mlperf.contract.protocol import LoadRequest
from pytest_mlperf.host.settings import PROFILES
from pytest_mlperf.contract.workloads import workload_spec
from pytest_mlperf.contract.protocol import DataRequest

LOGS = Path(__file__).parent / "data" / "mlperf-logs"


def record(mode: str = "performance", **fields: Any) -> dict[str, Any]:
    (logs,) = [p for p in LOGS.iterdir() if p.is_dir() and p.name.startswith("01")]
    run = read_run(logs)
    key = CaseKey("resnet50", run.scenario, mode, "onnxruntime", "fp32", "cpu-Test-CPU-2c")
    case = CaseRun(nodeid=f"b/test_r.py::test_r[{mode}]", key=key, run=run, log_dir=str(logs), profile="smoke",
                   tolerated=PROFILES["smoke"].tolerated, backend={"device": "cpu"}, system={"key": key.system},
                   recipe="reference", test={}, **fields)
    return json.loads(json.dumps(case.to_record()))


def test_accuracy_rows_show_the_accuracy_not_dashes_and_unknown() -> None:
    rows = table_rows([record("accuracy", accuracy={"samples": 64, "outputs_sha256": "ab", "predictions": []}),
                       record("accuracy", accuracy={"samples": 500, "top1": 0.7612}),
                       record("accuracy", accuracy={"samples": 13368, "rouge1": 38.91})])
    assert [r[3] for r in rows[1:]] == ["64 outputs", "top-1 76.12%", "ROUGE-1 38.91"]
    assert all(r[5] == "n/a" and r[4] == "-" for r in rows[1:])  # LoadGen judges no accuracy run: not UNKNOWN
    (_, perf) = table_rows([record()])
    assert perf[5] != "n/a" and perf[3] != "-"


def test_accuracy_of_without_a_result() -> None:
    assert accuracy_of({"accuracy": None}) == "-"


def test_harness_above_the_bare_loop_is_no_efficiency() -> None:
    bare = {"samples_per_s": 50_000.0, "batch_latency_p50_s": 0.001}
    assert harness_line("t", 0.912, bare) == "harness: t: LoadGen 91.2% of the bare loop (50,000.0 samples/s)"
    line = harness_line("t", 2.567, {**bare, "samples_per_s": 1_000.0})
    assert "256.7%" not in line and "2.57x" in line and "calibration was disturbed" in line
    # the H200's transformers case: a calibration that stopped still warming up is not "disturbed"
    warming = {"samples_per_s": 1.394, "batch_latency_p50_s": 5.74, "batches": 2, "first_batch_s": 9.14,
               "settled": False}
    line = harness_line("t", 2.07, warming)
    assert "disturbed" not in line and "still getting faster" in line and "the first 9.14 s" in line
    assert "the median 5.74 s" in line and "a floor" in line


def test_stand_ins_are_named_once_per_workload(tmp_path: Path) -> None:
    spec = workload_spec("resnet50")

    def sut(model: str | None, dataset: str | None) -> SUTHandle:
        data = DataRequest(workload="resnet50", model_path=model, dataset_path=dataset)
        return SUTHandle(spec=spec, load=LoadRequest(data=data, backend="onnxruntime", device="cpu", options={}),
                         batch_size=0, streams=0)

    assert stand_ins(sut("/m.onnx", "/imagenet")) == []
    assert stand_ins(sut("/m.onnx", None)) == ["dataset: seeded synthetic images"]
    both = stand_ins(sut(None, None))
    assert both[0].startswith("model: a seeded stand-in ResNet50")
    records = [record(stand_ins=both), record("accuracy", stand_ins=both)]
    (line,) = standin_lines(records)
    assert line.startswith("stand-in: resnet50 ran without MLPerf's files (model: a seeded stand-in ResNet50")
    assert "seeded synthetic images" in line and "not MLPerf results" in line
    collector = ResultsCollector(tmp_path)
    for r in records:
        collector.add(SimpleNamespace(when="call", outcome="passed", passed=True, user_properties=[("c", r)]), "c", "b")
    assert line in collector.note_lines()
    assert standin_lines([record()]) == []
