"""The test request that crosses the process boundary (pytest process -> runner), and what can be read from it
without LoadGen: the keys a user.conf sets, and how many samples LoadGen will load and issue. Standard library
only, so that the pytest process reads requests without importing `mlperf_loadgen`; runner/loadgen.py builds LoadGen's
TestSettings from them (and fills in mlperf.conf's values: `effective_test`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_CONF_LINE = re.compile(r"^\s*([^.#\s]+)\.([^.\s]+)\.([A-Za-z0-9_]+)\s*=\s*(\S+)\s*$")


@dataclass(frozen=True)
class TestRequest:
    """Everything one StartTest needs; crosses the runner boundary as a dict."""

    __test__ = False  # a name pytest would otherwise try to collect as a test class

    loadgen_model: str  # the model name in mlperf.conf, e.g. "resnet50", "llama3_1-8b"
    scenario: str
    mode: str  # "performance" | "accuracy"
    log_dir: str
    total_sample_count: int
    performance_sample_count: int | None = None
    min_duration_ms: int | None = None
    min_query_count: int | None = None
    user_conf: str | None = None
    # calibration: measured expectations so LoadGen pre-generates the right amount of work (None: mlperf.conf)
    offline_expected_qps: float | None = None
    single_stream_expected_latency_ns: int | None = None
    multi_stream_expected_latency_ns: int | None = None
    server_target_qps: float | None = None
    server_target_latency_ns: int | None = None
    multi_stream_samples_per_query: int | None = None
    use_token_latencies: bool = False
    accuracy_sample_count: int | None = None  # accuracy mode: how many samples (None: all of the dataset)
    # LoadGen's own (mlperf.conf: the LLMs): queries are whole passes over the loaded samples; set by effective_test
    sample_concatenate_permutation: bool = False

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> TestRequest:
        return cls(**data)  # type: ignore[arg-type]


def user_conf_keys(path: Path, model: str, scenario: str) -> set[str]:
    """The keys a user.conf sets for this model and scenario (wildcards included), so ours do not override them."""
    keys: set[str] = set()
    for line in path.read_text().splitlines():
        m = _CONF_LINE.match(line.split("#", 1)[0])
        if m and m.group(1) in (model, "*") and m.group(2) in (scenario, "*"):
            keys.add(m.group(3))
    return keys


def loaded_sample_count(req: TestRequest) -> int:
    """How many samples LoadGen loads at once for this test (its performance sample set): what a backend stages."""
    return min(req.performance_sample_count or req.total_sample_count, req.total_sample_count)


def _whole_passes(n: int, loaded: int) -> int:
    """`n` rounded up to whole passes over `loaded` samples (LoadGen's `sample_concatenate_permutation`)."""
    return -(-n // loaded) * loaded


def issued_query_count(req: TestRequest, min_query_count: int, concatenated: bool) -> int:
    """The fewest queries LoadGen issues in a performance run. Where mlperf.conf sets `sample_concatenate_permutation`
    (llama3_1-8b and the other LLMs), SingleStream and Server round the minimum up to a whole number of passes over
    the loaded samples: 100 queries over 256 loaded prompts become 256 (seen on the H200: a SingleStream case ran
    152 s where 54 s were predicted; checked with LoadGen 6.0.17 in tests/test_loadgen.py)."""
    loaded = loaded_sample_count(req)
    if not concatenated or req.mode != "performance" or req.scenario not in ("SingleStream", "Server") or loaded < 1:
        return min_query_count
    return _whole_passes(min_query_count, loaded)


def offline_samples_per_query(t: TestRequest) -> int:
    """The samples of LoadGen's one Offline performance query (loadgen.cc): max(min_query_count, 1.1 x duration x
    expected QPS), and where `sample_concatenate_permutation` holds (llama3_1-8b), rounded up to whole passes over
    the loaded samples. On the H200 the vllm case planned 586 and LoadGen issued 768 (3 x 256), and the
    transformers case 9 and 256 (88 s where 10 s were predicted); tests/test_loadgen.py checks it against LoadGen."""
    n = max(t.min_query_count or 0, int(1.1 * (t.min_duration_ms or 0) / 1000 * (t.offline_expected_qps or 0)), 1)
    loaded = loaded_sample_count(t)
    return _whole_passes(n, loaded) if t.sample_concatenate_permutation and loaded >= 1 else n
