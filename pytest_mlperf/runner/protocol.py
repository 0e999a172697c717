"""Messages between the pytest process and a runner: JSON objects over a local socket, one reply per command.
Only commands and results cross; per-sample traffic never does. Before its reply, a runner may send a few phase
notices (`{"phase": ...}`, progress.Notice: calibrating, the LoadGen test with its predicted length, accuracy
scoring): phases inside one command that the pytest side shows and names when it kills the runner."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from ..contract.test_request import TestRequest
from ..progress import Notice
from ..workloads.base import DataRequest


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
