"""One case driven through LoadGen from the pytest process: the `loadgen` fixture's driver, the case's SUT handle, its
checks, the Server capacity search."""
