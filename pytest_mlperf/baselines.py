"""Stored baselines: one JSON file per case under the baselines directory, written atomically and only on request.

A case is keyed by workload, scenario, mode, backend, precision and the system (GPU model and count, or CPU
model and cores). Driver and framework versions are recorded in the file but are not part of the key, so that a
driver update is visible in the comparison rather than orphaning the baseline.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .stats import t_quantile

FORMAT = "pytest-mlperf/baseline"
VERSION = 1


class BaselineError(ValueError):
    """A baseline file exists but cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class CaseKey:
    workload: str
    scenario: str
    mode: str
    backend: str
    precision: str
    system: str  # e.g. "1xNVIDIA-H100-80GB-HBM3" or "cpu-AMD-EPYC-7B13-2c"

    def filename(self) -> str:
        parts = (self.scenario, self.mode, self.backend, self.precision, self.system)
        return "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", p) for p in parts) + ".json"

    def path(self, baselines_dir: Path) -> Path:
        return baselines_dir / re.sub(r"[^A-Za-z0-9_.-]+", "_", self.workload) / self.filename()


@dataclass(frozen=True)
class Metric:
    name: str  # e.g. "result_samples_per_second", "latency_p99_ns"
    value: float
    unit: str
    higher_is_better: bool
    samples: tuple[float, ...] = ()  # repeats the value summarises (the gate records several)


@dataclass(frozen=True)
class Baseline:
    key: CaseKey
    metrics: dict[str, Metric]
    accuracy: dict[str, Any] | None = None  # outputs digest and predictions; top-1 etc. with real data
    settings: dict[str, Any] = field(default_factory=dict)  # what the run used that a later run should reuse
    system: dict[str, Any] = field(default_factory=dict)  # driver, framework versions, GPU/CPU details
    recorded_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "key": asdict(self.key),
            "metrics": {n: {**asdict(m), "samples": list(m.samples)} for n, m in self.metrics.items()},
            "accuracy": self.accuracy,
            "settings": self.settings,
            "system": self.system,
            "recorded_at": self.recorded_at,
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "baseline") -> Baseline:
        def bad(problem: str) -> BaselineError:
            return BaselineError(
                f"{source}: {problem}. Fix or delete the file, or record it again with --mlperf-update-baselines"
            )

        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise bad(f"not a pytest-mlperf baseline (expected \"format\": \"{FORMAT}\")")
        if data.get("version") != VERSION:
            raise bad(f"baseline format version {data.get('version')!r}, this pytest-mlperf reads {VERSION}")
        for name in ("key", "metrics"):
            if not isinstance(data.get(name), dict):
                raise bad(f"\"{name}\" must be an object")
        for name in ("settings", "system"):
            if data.get(name) is not None and not isinstance(data[name], dict):
                raise bad(f"\"{name}\" must be an object or null")
        try:
            key = CaseKey(**data["key"])
            metrics = {}
            for name, m in data["metrics"].items():
                metric = Metric(
                    name=str(m["name"]),
                    value=float(m["value"]),
                    unit=str(m["unit"]),
                    higher_is_better=bool(m["higher_is_better"]),
                    samples=tuple(float(x) for x in m.get("samples", ())),
                )
                if not metric.value > 0:
                    raise bad(f"metric {name} has a non-positive value {metric.value}")
                metrics[name] = metric
        except BaselineError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"malformed content ({type(exc).__name__}: {exc})") from None
        accuracy = data.get("accuracy")
        if accuracy is not None and not isinstance(accuracy, dict):
            raise bad("\"accuracy\" must be an object or null")
        return cls(key, metrics, accuracy, dict(data.get("settings") or {}), dict(data.get("system") or {}),
                   str(data.get("recorded_at", "")))


def load_baseline(path: Path) -> Baseline | None:
    """The baseline at `path`, or None when there is none. Raises BaselineError when it exists but is unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineError(
            f"{path}: cannot be read as a UTF-8 JSON file ({exc}). Fix or delete the file, or record it again "
            "with --mlperf-update-baselines"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BaselineError(
            f"{path}: corrupt JSON at line {exc.lineno} column {exc.colno} ({exc.msg}). "
            "Fix or delete the file, or record it again with --mlperf-update-baselines"
        ) from None
    return Baseline.from_dict(data, source=str(path))


def write_json_atomic(path: Path, data: Any) -> None:
    """Writes JSON so that readers see the old file or the new one, never a partial one."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Writes a file so that readers see the old file or the new one, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # as open() would create it (mkstemp makes it private)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_baseline(path: Path, baseline: Baseline) -> None:
    write_json_atomic(path, baseline.to_dict())


NOISE_CONFIDENCE = 0.95  # one-sided: how sure a flagged regression is not the baseline's own run-to-run noise


def noise_allowance(samples: Sequence[float], confidence: float = NOISE_CONFIDENCE) -> float:
    """How much worse one new run may look by noise alone, as a fraction, from a baseline's repeats: the one-sided
    prediction bound `t_{n-1} * s * sqrt(1 + 1/n)` of a new run's log value, with s the repeats' log spread.
    0 with fewer than two repeats (a single-run baseline says nothing about noise)."""
    n = len(samples)
    if n < 2 or any(not x > 0 for x in samples):
        return 0.0
    logs = [math.log(x) for x in samples]
    mean = sum(logs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (n - 1))
    return math.exp(t_quantile(confidence, n - 1) * sd * math.sqrt(1 + 1 / n)) - 1.0


@dataclass(frozen=True)
class Comparison:
    metric: str
    unit: str
    higher_is_better: bool
    baseline: float
    measured: float
    tolerance: float
    noise: float = 0.0  # allowance for the baseline's own run-to-run spread (noise_allowance)
    repeats: int = 1  # runs the baseline value summarises

    @property
    def change(self) -> float:
        """Signed relative change, measured against baseline (+0.05 = 5% higher)."""
        return self.measured / self.baseline - 1.0

    @property
    def worse_by(self) -> float:
        """How much worse than the baseline, as a fraction (negative when better)."""
        return -self.change if self.higher_is_better else self.change

    @property
    def regressed(self) -> bool:
        """Worse than the baseline by the tolerance plus what the baseline's repeats say noise alone can do."""
        return self.worse_by >= self.tolerance + self.noise

    def describe(self) -> str:
        direction = "higher" if self.higher_is_better else "lower"
        noise = (f" + {self.noise:.1%} noise allowance from {self.repeats} baseline repeats" if self.repeats > 1
                 else "")
        return (
            f"{self.metric}: measured {self.measured:.6g} {self.unit} vs baseline {self.baseline:.6g} {self.unit} "
            f"({self.change:+.2%}; {direction} is better; tolerance {self.tolerance:.1%}{noise})"
        )


def compare(baseline: Baseline, measured: Mapping[str, Metric], tolerance: float) -> list[Comparison]:
    """Compares every metric present in both; the baseline's direction and unit rule."""
    out = []
    for name, ref in baseline.metrics.items():
        m = measured.get(name)
        if m is None:
            continue
        out.append(Comparison(name, ref.unit, ref.higher_is_better, ref.value, m.value, tolerance,
                              noise_allowance(ref.samples), max(1, len(ref.samples))))
    return out
