"""What a case asks its runner to host: `SUTHandle` (workload data and model on a backend, with its batch, streams
and GPU count), built once per case by `make_sut` from the benchmark's marker and the command line. Plain data and
the rules that resolve it; the driver (host/driver/loadgen_driver.py) starts runners from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mlperf.contract.backends import whole_number
from pytest_mlperf.contract.protocol import DataRequest, LoadRequest
from pytest_mlperf.contract.workloads import WorkloadSpec, workload_spec

if TYPE_CHECKING:
    from pytest_mlperf.host.driver.loadgen_driver import MlperfSession


@dataclass(frozen=True)
class SUTHandle:
    """What a runner hosts for a benchmark: workload data + model on a backend. The runner starts on first use
    and is reused by every case of this process that asks for the same thing."""

    spec: WorkloadSpec
    load: LoadRequest
    batch_size: int
    streams: int
    calibrate: bool = True
    gpus: int = 1  # GPUs the case needs (tensor parallel); they are locked together while it measures
    option_sources: dict[str, str] = field(default_factory=dict)  # load.options' keys -> where each was set

    @property
    def workload(self) -> str:
        return self.spec.name

    def options_record(self) -> dict[str, dict[str, Any]]:
        """The backend options the runner was given, each with where it was set (for results.json)."""
        return {k: {"value": v, "from": self.option_sources.get(k, "marker")} for k, v in self.load.options.items()}

    def options_described(self) -> str:
        return ", ".join(f"{k}={v!r} ({self.option_sources.get(k, 'marker')})" for k, v in self.load.options.items())


# the option of a backend that says how many GPUs it spreads over: set for a run, it sets the case's GPU count
GPU_COUNT_OPTIONS = {"vllm": "tensor_parallel_size"}


def sut_options(session: MlperfSession, backend: str, marker_kwargs: dict[str, Any]
                ) -> tuple[dict[str, Any], dict[str, str]]:
    """A case's backend options and where each was set: the marker's sut_options, overridden key by key by
    --mlperf-sut-option (or its ini twin) for this backend. A user's run-time choice beats the benchmark's default."""
    marker = dict(marker_kwargs.get("sut_options") or {})
    user = session.settings.sut_options.get(backend, {})
    given = session.settings.sut_option_sources.get(backend, {})
    sources = {k: "marker" for k in marker}
    for k in user:
        sources[k] = given.get(k, "--mlperf-sut-option") + (f", over the marker's {marker[k]!r}" if k in marker else "")
    return {**marker, **user}, sources


def make_sut(session: MlperfSession, workload: str, marker_kwargs: dict[str, Any]) -> SUTHandle:
    s = session.settings
    spec = workload_spec(workload)
    backend = str(marker_kwargs.get("backend", spec.backends[0]))
    model = s.models.get(workload)
    dataset = s.datasets.get(workload)
    options, sources = sut_options(session, backend, marker_kwargs)
    data = DataRequest(
        workload=workload,
        model_path=str(model) if model else None,
        dataset_path=str(dataset) if dataset else None,
        total_count=marker_kwargs.get("total_count"),
    )
    load = LoadRequest(data=data, backend=backend, device=s.device, options=options)
    batch = s.batch_size or int(marker_kwargs.get("batch_size", 0)) or 0
    streams = s.streams or int(marker_kwargs.get("streams", 0)) or 0
    calibrate = bool(marker_kwargs.get("calibrate", True))
    gpus = int(marker_kwargs.get("gpus", 1))
    if gpus < 1:
        pytest.fail(f"mlperf marker: gpus must be at least 1, got {gpus}", pytrace=False)
    count = GPU_COUNT_OPTIONS.get(backend)
    if count is not None and count in s.sut_options.get(backend, {}):  # e.g. vllm.tensor_parallel_size=2: the case takes 2 GPUs
        value = whole_number(s.sut_options[backend][count])
        if value is not None and value >= 1:  # anything else is the backend's to refuse, naming the option
            gpus = value
    return SUTHandle(spec=spec, load=load, batch_size=batch, streams=streams, calibrate=calibrate, gpus=gpus,
                     option_sources=sources)


def stand_ins(sut: SUTHandle) -> list[str]:
    """What runs in place of MLPerf's model and dataset for this SUT (none where both are given)."""
    data, spec = sut.load.data, sut.spec
    return [f"{what}: {text}" for what, given, text in (("model", data.model_path, spec.standin_model),
                                                         ("dataset", data.dataset_path, spec.standin_data))
            if given is None and text]
