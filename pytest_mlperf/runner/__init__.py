"""A runner process's part of pytest-mlperf (`python -m pytest_mlperf.runner.child`): LoadGen, the backends, the
workloads' data and the stand-in models. It imports neither pytest nor `pytest_mlperf.host` (import-linter contracts
in pyproject.toml); what it shares with the pytest process is in `pytest_mlperf.contract`."""
