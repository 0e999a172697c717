"""Messages between the pytest process and a runner: JSON objects over a local socket, one reply per command.
Only commands and results cross; per-sample traffic never does. Before its reply, a runner may send a few phase
notices (`{"phase": ...}`, a `Notice`: calibrating, the LoadGen test with its predicted length, accuracy scoring):
phases inside one command that the pytest side shows and names when it kills the runner.

Every command carries `PROTOCOL_VERSION`. A runner launched under a candidate's prefix may run another install of
pytest-mlperf (a container, a remote host behind an API-remoting layer); one that speaks another version refuses
the command, saying both versions, instead of misreading it.

| command | fields | reply |
|---|---|---|
| load | request: `LoadRequest` (a `DataRequest` and the backend) | ok, info: the backend's description |
| run | request: `RunRequest` (a `TestRequest` and how to calibrate) | ok, result: the run (`Run.to_dict`, calibration, ...) |
| exit | - | ok |
| any failure | - | ok false, error, traceback, runner_ok (true: refused before LoadGen, the runner is still good) |"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from multiprocessing.connection import Connection
from typing import Any

from pytest_mlperf.contract.test_request import TestRequest

# the version of the commands and replies below: raised when one changes in a way an older side would misread
PROTOCOL_VERSION = 1
PROTOCOL = "protocol"  # the key every command carries it under


@dataclass(frozen=True)
class DataRequest:
    """How the runner should open a workload's data; crosses the process boundary."""

    workload: str
    model_path: str | None
    dataset_path: str | None
    seed: int = 0
    total_count: int | None = None


class Phase(str, Enum):
    """A phase of a case, as the words that complete "mlperf: <case>: ..." and "killed while ..."."""

    START = "starting the runner"
    LOAD = "loading the model and data"
    PREPARE = "preparing the test"
    ENGINE = "getting the serving engine up"
    CALIBRATE = "calibrating"
    LOADGEN = "running the LoadGen test"
    ACCURACY = "scoring accuracy"


@dataclass(frozen=True)
class Notice:
    """A phase entered: what it is, about how long it should take (None: unknown) and why, and what it works on."""

    phase: Phase
    predicted_s: float | None = None
    why: str = ""  # how the prediction follows from the settings, e.g. "64 queries of about 60 ms each"
    detail: str = ""  # what the phase works on, e.g. "resnet50 on onnxruntime"

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase.name, "predicted_s": self.predicted_s, "why": self.why, "detail": self.detail}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Notice:
        """The notice a runner sent; ValueError names what is wrong with it."""
        try:
            phase = Phase[str(d["phase"])]
        except KeyError:
            raise ValueError(f"runner protocol: unknown phase {d.get('phase')!r}") from None
        predicted = d.get("predicted_s")
        return cls(phase, None if predicted is None else float(predicted), str(d.get("why") or ""),
                   str(d.get("detail") or ""))


@dataclass(frozen=True)
class LoadRequest:
    """What a runner hosts: one workload's data and model on one backend. Loaded once, reused by every test."""

    data: DataRequest
    backend: str
    device: str
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"data": asdict(self.data), "backend": self.backend, "device": self.device, "options": self.options}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoadRequest:
        return cls(DataRequest(**d["data"]), d["backend"], d["device"], dict(d.get("options") or {}))


@dataclass(frozen=True)
class RunRequest:
    test: TestRequest
    batch_size: int
    streams: int = 1
    calibrate: bool = True
    calibrate_seconds: float = 0.5
    # CPU stand-ins: relax the Server latency bound to this many times the measured batch-1 latency
    server_latency_floor_factor: float | None = None
    official_server_latency_ns: int | None = None
    server_load_fraction: float = 0.5  # target QPS as a fraction of the measured throughput when not fixed
    server_batch_wait_s: float | None = None  # the Server batcher's longest gather wait (None: a tenth of the bound)
    expectation_margin: float = 1.0  # calibrated expectations err by this factor towards more work
    # how long the parent waits for this run before killing the runner: a test predicted to outlast it fails at once
    timeout_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "test"}
        d["test"] = self.test.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRequest:
        rest = {k: v for k, v in d.items() if k != "test"}
        return cls(test=TestRequest.from_dict(d["test"]), **rest)


def command(op: str, **fields: Any) -> dict[str, Any]:
    """A command as it crosses: its op, its fields and this side's protocol version."""
    return {"op": op, PROTOCOL: PROTOCOL_VERSION, **fields}


def protocol_problem(message: dict[str, Any]) -> str | None:
    """Why a runner must not serve this command (its protocol version is not this side's), or None."""
    theirs = message.get(PROTOCOL)
    if theirs == PROTOCOL_VERSION:
        return None
    return (f"runner protocol: the pytest process speaks version {theirs!r}, this runner {PROTOCOL_VERSION}: the "
            "runner's command line (a --mlperf-candidate-prefix or --mlperf-reference-prefix) runs another install of "
            "pytest-mlperf; install the same version on both sides")


def send(conn: Connection, message: dict[str, Any]) -> None:
    conn.send_bytes(json.dumps(message).encode())


PHASE = "phase"  # the key of a phase notice, which is no reply


def send_phase(conn: Connection, notice: Notice) -> None:
    send(conn, {PHASE: notice.to_dict()})


def phase_of(message: dict[str, Any]) -> Notice | None:
    """The notice a message carries, or None when it is a reply."""
    notice = message.get(PHASE)
    return Notice.from_dict(notice) if isinstance(notice, dict) else None


def receive(conn: Connection) -> dict[str, Any]:
    message = json.loads(conn.recv_bytes().decode())
    if not isinstance(message, dict):
        raise TypeError(f"runner protocol: expected a JSON object, got {type(message).__name__}")
    return message
