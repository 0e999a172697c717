"""The pytest process's part of pytest-mlperf: what runs in pytest and its xdist workers, never in a runner. It
imports neither LoadGen, nor a backend's framework, nor `pytest_mlperf.runner` (import-linter contracts in
pyproject.toml); what it shares with a runner is in `pytest_mlperf.contract`."""
