"""Stored baselines: one JSON file per case under the baselines directory, written atomically and only on request.

A case is keyed by workload, scenario, mode, backend, precision and the system (GPU model and count, or CPU
model and cores). Driver and framework versions are recorded in the file but are not part of the key, so that a
driver update is visible in the comparison rather than orphaning the baseline.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# write_json_atomic: tests/test_baselines.py and test_report.py import it from here too
from pytest_mlperf.contract.files import write_json_atomic
from pytest_mlperf.host.baselines import document as baseline_format
from pytest_mlperf.host.gate.stats import t_quantile

FORMAT = baseline_format.BASELINE_FORMAT
VERSION = baseline_format.BASELINE_VERSION


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

    def _case_part(self) -> str:
        """The file name up to the system's part: the same case on any system starts so."""
        parts = (self.scenario, self.mode, self.backend, self.precision)
        return "".join(re.sub(r"[^A-Za-z0-9_.]+", "_", p) + "-" for p in parts)

    def filename(self) -> str:
        return self._case_part() + re.sub(r"[^A-Za-z0-9_.]+", "_", self.system) + ".json"

    def path(self, baselines_dir: Path) -> Path:
        return baselines_dir / re.sub(r"[^A-Za-z0-9_.-]+", "_", self.workload) / self.filename()

    def systems_recorded(self, folder: Path) -> list[str]:
        """The systems (as their baseline files spell them) that have a baseline of this case in `folder`."""
        prefix = self._case_part()
        return sorted(p.name[len(prefix):-len(".json")] for p in folder.glob(f"{prefix}*.json"))


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
        """The baseline in `data` (a decoded JSON file), checked field by field against the file format's types:
        a wrong type (`"higher_is_better": "false"`), a missing field or a non-positive value raises BaselineError
        naming `source` and the field."""
        def bad(problem: str) -> BaselineError:
            return BaselineError(
                f"{source}: {problem}. Fix or delete the file, or record it again with --mlperf-update-baselines"
            )

        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise bad(f"not a pytest-mlperf baseline (expected \"format\": \"{FORMAT}\")")
        if data.get("version") != VERSION:
            raise bad(f"baseline format version {data.get('version')!r}, this pytest-mlperf reads {VERSION}")
        try:
            doc = baseline_format.decode(data)
        except baseline_format.FormatError as exc:
            raise bad(str(exc)) from None
        out = {}
        for name, m in doc.metrics.items():
            if m.name != name:
                raise bad(f"\"metrics.{name}.name\" is {m.name!r}: a metric is stored under its own name")
            if not m.value > 0:
                raise bad(f"metric {name} has a non-positive value {m.value}")
            if not math.isfinite(m.value):
                raise bad(f"metric {name} has an infinite value")
            if any(not (x > 0 and math.isfinite(x)) for x in m.samples):
                raise bad(f"\"metrics.{name}.samples\" must be positive numbers, got {m.samples}")
            out[name] = Metric(m.name, m.value, m.unit, m.higher_is_better, tuple(m.samples))
        k = doc.key
        key = CaseKey(k.workload, k.scenario, k.mode, k.backend, k.precision, k.system)
        return cls(key, out, doc.accuracy, dict(doc.settings or {}), dict(doc.system or {}), doc.recorded_at)


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


NOISE_ADVICE = ("record the baseline again with more repeats (--mlperf-baseline-repeats), longer runs "
                "(--mlperf-duration) or on a quieter machine")


@dataclass(frozen=True)
class Comparison:
    metric: str
    unit: str
    higher_is_better: bool
    baseline: float
    measured: float
    tolerance: float
    noise: float = 0.0  # the baseline's run-to-run spread as a noise allowance (noise_allowance)
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
    def excused(self) -> float:
        """What noise may excuse on top of the tolerance: the noise allowance, at most the tolerance itself, so a
        metric worse by twice the tolerance fails whatever its baseline's spread."""
        return min(self.noise, self.tolerance)

    @property
    def detects_tolerance(self) -> bool:
        """Whether the baseline's repeats are tight enough to tell a regression of the tolerance from noise: their
        noise allowance is at most the tolerance."""
        return self.noise <= self.tolerance

    @property
    def regressed(self) -> bool:
        """Worse than the baseline by the tolerance plus what noise may excuse."""
        return self.worse_by >= self.tolerance + self.excused

    def describe(self) -> str:
        direction = "higher" if self.higher_is_better else "lower"
        noise = ""
        if self.repeats > 1:
            noise = f" + {self.excused:.1%} noise allowance from {self.repeats} baseline repeats"
            if not self.detects_tolerance:
                noise += f" (their spread would allow {self.noise:.1%}; noise excuses at most the tolerance)"
        return (
            f"{self.metric}: measured {self.measured:.6g} {self.unit} vs baseline {self.baseline:.6g} {self.unit} "
            f"({self.change:+.2%}; {direction} is better; tolerance {self.tolerance:.1%}{noise})"
        )

    def undetectable(self) -> str:
        """Why this comparison cannot detect a regression of its tolerance, and what to do."""
        return (f"{self.metric}: the baseline's {self.repeats} repeats spread so much (noise allowance "
                f"{self.noise:.1%}) that a {self.tolerance:.1%} regression cannot be told from noise: {NOISE_ADVICE}")

    def to_record(self) -> dict[str, Any]:
        """What results.json keeps of this comparison."""
        return {"metric": self.metric, "baseline": self.baseline, "measured": self.measured, "change": self.change,
                "worse_by": self.worse_by, "regressed": self.regressed, "higher_is_better": self.higher_is_better,
                "noise_allowance": self.noise, "noise_excused": self.excused,
                "detects_tolerance": self.detects_tolerance, "baseline_repeats": self.repeats}


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


def key_mismatch(baseline: Baseline, expected: CaseKey) -> str | None:
    """Which key fields of a baseline file name another case than the one it was looked up for; None if none."""
    found, wanted = asdict(baseline.key), asdict(expected)
    differ = [f"{k}={found[k]!r} (this case: {wanted[k]!r})" for k in wanted if found[k] != wanted[k]]
    return ", ".join(differ) or None


def unusable_metrics(baseline: Baseline, measured: Mapping[str, Metric]) -> list[str]:
    """Baseline metrics that cannot be judged against this run: missing from it, or stored with the other
    direction than LoadGen's metric has (an edited file)."""
    have = ", ".join(measured) or "none"
    out = []
    for name, ref in baseline.metrics.items():
        m = measured.get(name)
        if m is None and name == "server_capacity_qps":
            out.append(f"{name}: the baseline holds a Server capacity, which only --mlperf-server-search measures "
                       f"(this run measured: {have}): run with --mlperf-server-search, or record the baseline again "
                       "without it")
        elif m is None and "server_capacity_qps" in measured:
            out.append(f"{name}: in the baseline but this run searched the Server capacity "
                       "(--mlperf-server-search), which compares its capacity only: run without the search, or "
                       "record the baseline again with it")
        elif m is None:
            out.append(f"{name}: in the baseline but this run did not measure it (it measured: {have}), so it "
                       "is not compared; record the baseline again with --mlperf-update-baselines if the run's "
                       "metrics changed on purpose")
        elif m.higher_is_better != ref.higher_is_better:
            said, real = ("higher", "lower") if ref.higher_is_better else ("lower", "higher")
            out.append(f"{name}: the baseline says {said} is better, but for this metric {real} is better "
                       "(an edited file?); fix \"higher_is_better\" or record the baseline again")
    return out


def noisy_metrics(metrics: Mapping[str, Metric], tolerance: float) -> list[str]:
    """At record time: the metrics whose repeats spread too much to detect a regression of `tolerance`."""
    out = []
    for name, m in metrics.items():
        allowance = noise_allowance(m.samples)
        if allowance > tolerance:
            c = Comparison(name, m.unit, m.higher_is_better, m.value, m.value, tolerance, allowance, len(m.samples))
            out.append(c.undetectable())
    return out
