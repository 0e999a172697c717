"""CUDA graph sessions under several threads, on a fake of ONNX Runtime's CUDA provider (the H200's CUDA error 900).

ONNX Runtime keeps a CUDA graph per calling thread: each thread runs a graph session normally, then captures its
own graph in CUDA's global capture mode, during which any GPU call from another thread fails with error 900 and
spoils the capture. On the H200 (2026-12-02) every session had been captured on the main thread, and the
stream threads of the next test, new threads, captured again side by side. The fake below fails the same way."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from pytest_mlperf.runner.backends.onnxruntime import CAPTURE_RUNS, CaptureGate, _GraphSession


class CaptureError(RuntimeError):
    pass


class FakeCuda:
    """The GPU as the CUDA provider sees it: which thread captures, how many calls run, what failed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.capturing: int | None = None
        self.running = 0
        self.errors: list[str] = []
        self.captures = 0

    def call(self, seconds: float) -> None:
        """A GPU call of another kind than a capture (a run, a copy, a stream synchronisation)."""
        me = threading.get_ident()
        with self.lock:
            if self.capturing not in (None, me):
                self.errors.append("CUDA failure 900: operation not permitted when stream is capturing")
                raise CaptureError(self.errors[-1])
            self.running += 1
        time.sleep(seconds)
        with self.lock:
            self.running -= 1

    def capture(self, seconds: float) -> None:
        me = threading.get_ident()
        with self.lock:
            if self.capturing is not None or self.running:
                self.errors.append("CUDA failure 900: a capture while other work is on the GPU")
                raise CaptureError(self.errors[-1])
            self.capturing = me
            self.captures += 1
        time.sleep(seconds)
        with self.lock:
            self.capturing = None


class FakeValue:
    def __init__(self, cuda: FakeCuda, data: np.ndarray) -> None:
        self.cuda, self.data = cuda, data

    def update_inplace(self, data: np.ndarray) -> None:
        self.cuda.call(0.0001)  # ORT copies and synchronises the default stream: error 900 during a capture
        self.data[...] = data

    def numpy(self) -> np.ndarray:
        return self.data.copy()


class FakeOrt:
    """The few `onnxruntime` names a graph session uses."""

    def __init__(self, cuda: FakeCuda) -> None:
        outer = self

        class OrtValue:
            @staticmethod
            def ortvalue_from_numpy(data: np.ndarray, device: str, index: int) -> FakeValue:
                return FakeValue(outer.cuda, data.copy())

            @staticmethod
            def ortvalue_from_shape_and_type(shape: list[int], dtype: type, device: str, index: int) -> FakeValue:
                return FakeValue(outer.cuda, np.zeros(shape, dtype=dtype))

        self.cuda = cuda
        self.OrtValue = OrtValue


class FakeBinding:
    def __init__(self) -> None:
        self.inputs: dict[str, FakeValue] = {}
        self.output: FakeValue | None = None

    def bind_ortvalue_input(self, name: str, value: FakeValue) -> None:
        self.inputs[name] = value

    def bind_ortvalue_output(self, name: str, value: FakeValue) -> None:
        self.output = value


class FakeGraphSession:
    """A session with enable_cuda_graph: per thread, one normal run, then a capture, then replays."""

    def __init__(self, cuda: FakeCuda) -> None:
        self.cuda = cuda
        self.local = threading.local()

    def io_binding(self) -> FakeBinding:
        return FakeBinding()

    def run_with_iobinding(self, binding: FakeBinding) -> None:
        runs = getattr(self.local, "runs", 0)
        self.local.runs = runs + 1
        if runs == 1:
            self.cuda.capture(0.003)
        else:
            self.cuda.call(0.0005)
        rows = binding.inputs["pytest_mlperf_rows"].data
        assert binding.output is not None
        binding.output.data[...] = rows * 10


def graph_sessions(cuda: FakeCuda, sizes: tuple[int, ...]) -> dict[int, _GraphSession]:
    ort = FakeOrt(cuda)
    gate = CaptureGate()
    staged = FakeValue(cuda, np.zeros(4))
    return {b: _GraphSession(FakeGraphSession(cuda), ort, "out", staged, b, gate) for b in sizes}


def test_new_threads_capture_their_own_graphs_one_at_a_time() -> None:
    """Sessions first run (and captured) on the main thread, then 4 new threads use them at once, as the stream
    threads of a test do: no GPU call may meet another thread's capture, and every answer is right."""
    cuda = FakeCuda()
    sessions = graph_sessions(cuda, (1, 2, 4))
    for b, s in sessions.items():  # the runner's warm-up, on its own thread
        assert s.run(np.arange(b, dtype=np.int64)).tolist() == [10 * k for k in range(b)]
    failures: list[BaseException] = []
    start = threading.Barrier(4)
    used: list[set[int]] = [set() for _ in range(4)]

    def stream(seed: int) -> None:
        rng = np.random.default_rng(seed)
        start.wait()
        try:
            for _ in range(30):
                b = int(rng.choice([1, 2, 4]))
                used[seed].add(b)
                rows = rng.integers(0, 100, size=b)
                assert sessions[b].run(rows).tolist() == (rows * 10).tolist()
        except BaseException as exc:  # noqa: BLE001 - checked below
            failures.append(exc)

    threads = [threading.Thread(target=stream, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert cuda.errors == [] and failures == []
    assert cuda.captures == 3 + sum(len(u) for u in used)  # the main thread's, and each new thread's own


def test_a_threads_first_call_makes_its_whole_capture() -> None:
    """The first call from a thread runs the session enough times to capture, so its next calls only replay:
    no capture is left for the middle of a test."""
    cuda = FakeCuda()
    session = graph_sessions(cuda, (2,))[2]
    calls: list[int] = []
    original = session.session.run_with_iobinding

    def counted(binding: FakeBinding) -> None:
        calls.append(1)
        original(binding)

    session.session.run_with_iobinding = counted  # type: ignore[method-assign]
    session.run(np.array([1, 2]))
    assert len(calls) == CAPTURE_RUNS and cuda.captures == 1
    session.run(np.array([3, 4]))
    assert len(calls) == CAPTURE_RUNS + 1 and cuda.captures == 1


def test_the_fake_fails_as_the_gpu_did_without_the_gate() -> None:
    """The fake is strict enough to tell: a GPU call from another thread during a capture is error 900."""
    cuda = FakeCuda()
    capture = threading.Thread(target=cuda.capture, args=(0.5,))
    capture.start()
    for _ in range(500):
        if cuda.capturing is not None:
            break
        time.sleep(0.001)
    with pytest.raises(CaptureError, match="900"):
        cuda.call(0.0)
    capture.join(10)


if __name__ == "__main__":
    pytest.main([__file__])
