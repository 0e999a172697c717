"""The runners of a session: how one is launched (`recipe.py`) and the pool that starts, reuses and ends them
(`client.py`)."""
