"""Types shared by the pytest process and the runner child: standard library and dataclasses only, so either
process imports them without numpy, msgspec, pytest, LoadGen or a backend. tests/test_metric_catalogue.py checks
that nothing here imports anything else."""
