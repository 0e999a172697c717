"""How a runner serves LoadGen's queries, one strategy per backend kind (contract/backends.py `Kind`): batching,
generation (token streams) and serving (an engine that takes concurrent requests)."""
