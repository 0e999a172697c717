"""The pytest process's side of pytest-mlperf (issue 15's layout): what runs in pytest and its xdist workers, never
in a runner. It imports neither LoadGen, nor a backend, nor the runner process's modules (import-linter contracts in
pyproject.toml). Modules move here from the package's top level one at a time; `host/case.py` is the first."""
