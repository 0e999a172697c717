"""GPU probes: a backend that performs one small GPU operation per sample, so that LoadGen measures what a GPU
isolation layer (an API-remoting proxy, an LD_PRELOAD shim of the driver API, a hypervisor) adds to it.

Each op is the smallest unit of work that must cross such a layer, done exactly once per QSL index:
  launch        `kernels` tiny kernels (an in-place add on a one-element tensor: cudaLaunchKernel each), then
                cudaStreamSynchronize: launch and synchronisation latency;
  h2d_pinned    a `bytes`-byte copy from page-locked host memory to the GPU, then a stream synchronisation;
  h2d_pageable  the same from ordinary (pageable) host memory, which the driver stages through its own buffers;
  d2h_pinned    a `bytes`-byte copy from the GPU to page-locked host memory, then a stream synchronisation;
  d2h_pageable  the same into pageable host memory;
  alloc         cuMemAlloc then cuMemFree of `bytes` bytes, straight from the driver (`DriverMemory` says why).
A copy is `dst.copy_(src)` with non_blocking=False: torch issues cudaMemcpyAsync on the current stream and
cudaStreamSynchronize on it (plus cudaStreamIsCapturing), and nothing else per copy; non_blocking=True would add a
cudaEventRecord per copy for pinned memory.

Buffers, streams and (for pageable memory) touched pages exist before the first op, so only the op is timed. A
batch runs on a lane (a stream and its buffers). The lane made at construction is taken whenever it is free, so
sequential use (SingleStream on LoadGen's issue thread, one Offline stream) always runs on it, on the default stream
with no stream switch: entering a stream context costs 10-17 us of Python per batch (measured on an H100
machine), as much as a small copy. A thread that finds it busy (Offline with --mlperf-streams above 1) takes a spare
lane with a stream of its own, entered around each batch, made the first time that many threads run at once (the
runner's warm-up does that). torch's streams do not synchronise with the default stream, so concurrent threads
neither share buffers nor wait on each other's synchronisation.

Device 'cpu' runs the same code on CPU tensors (copies become memcpys, kernels become tiny CPU ops, there is no
pinned memory, allocations go to torch's CPU allocator): it tests the machinery, it measures nothing of a GPU.

Options (`sut_options` in the benchmark's marker, or `--mlperf-sut-option torch-probe.KEY=VALUE`, which wins): op
(required, one of OPS); bytes (copies: default 16 MiB; alloc: default 1 MiB); kernels (launch, default 64). The
baseline key has no slot for SUT options, so the probe's variant (op and size, e.g. 'h2d_pinned-16MiB') is
reported as the precision: each variant keeps a baseline of its own.

Why those sizes: LoadGen's own work per SingleStream query is about 8 us, whatever the SUT does (measured on the
H200, docs/performance.md, sessions 15-16). On a 1 MiB copy (about 36 us) or 8 launches (about 70 us) that is
14-26% of the probe's latency, a fixed share that dilutes the layer's cost and whose noise the overhead gate must
see through. A 16 MiB copy takes about 320 us and 64 launches about 410 us: the plugin's p90 was within 1-6% of
the bare loop's, and the gate's estimate of a 7% layer on the copies was within 1.5 points of the truth in 13 of 15
repeats in session 16 and 9 of 9 in session 17 (docs/performance.md). A layer with a fixed cost per call still
shows it: 64 launches are 64 calls. Smaller sizes remain an option away (`--mlperf-sut-option
torch-probe.bytes=1048576`).
"""

from __future__ import annotations

import contextlib
import ctypes
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_mlperf.contract.backends import whole_number
from pytest_mlperf.runner.backends.base import BackendError, BackendInfo, check_option_names

OPS = ("launch", "h2d_pinned", "h2d_pageable", "d2h_pinned", "d2h_pageable", "alloc")
COPY_OPS = ("h2d_pinned", "h2d_pageable", "d2h_pinned", "d2h_pageable")
MIB = 1 << 20
DEFAULT_COPY_BYTES = 16 * MIB
DEFAULT_ALLOC_BYTES = MIB
DEFAULT_KERNELS = 64


def _positive_int(options: Mapping[str, object], name: str, default: int) -> int:
    """An int, or its digits as a string (--mlperf-sut-option values are strings)."""
    value = options.get(name, default)
    number = whole_number(value)
    if number is None or number <= 0:
        raise BackendError(f"torch-probe SUT: option {name!r} must be a positive integer, got {value!r}")
    return number


def size_label(nbytes: int) -> str:
    """1048576 -> '1MiB', 4096 -> '4KiB', 1000 -> '1000B': short enough for a baseline file name."""
    for unit, size in (("GiB", 1 << 30), ("MiB", MIB), ("KiB", 1 << 10)):
        if nbytes % size == 0:
            return f"{nbytes // size}{unit}"
    return f"{nbytes}B"


@dataclass(frozen=True)
class ProbeConfig:
    op: str
    nbytes: int  # copies and alloc; from_options gives each its default
    kernels: int = DEFAULT_KERNELS

    @classmethod
    def from_options(cls, options: Mapping[str, object]) -> ProbeConfig:
        """Validates `sut_options` before torch is imported, so a typo is reported as such on any machine.
        An option the op does not use is rejected too: it would silently not change what is measured."""
        check_option_names("torch-probe", options)
        op = options.get("op")
        if op is None:
            raise BackendError(f"torch-probe SUT: sut_options must name an 'op', one of {', '.join(OPS)}")
        if op not in OPS:
            raise BackendError(f"torch-probe SUT: unknown op {op!r}; choose from {', '.join(OPS)}")
        unused = "bytes" if op == "launch" else "kernels"
        if unused in options:
            raise BackendError(f"torch-probe SUT: option {unused!r} does not apply to op {op!r}")
        default_bytes = DEFAULT_ALLOC_BYTES if op == "alloc" else DEFAULT_COPY_BYTES
        return cls(str(op), _positive_int(options, "bytes", default_bytes),
                   _positive_int(options, "kernels", DEFAULT_KERNELS))

    @property
    def variant(self) -> str:
        """What distinguishes this probe's baseline from another's: op and size."""
        if self.op == "launch":
            return f"launch-x{self.kernels}"
        return f"{self.op}-{size_label(self.nbytes)}"

    def calls(self, device: str) -> str:
        """The API calls one op makes, for the results' backend details."""
        if device != "cuda":
            return {"launch": f"{self.kernels} x add_ on a CPU tensor", "alloc": "torch.empty on the CPU"}.get(
                self.op, "memcpy between CPU tensors")
        if self.op == "launch":
            return f"{self.kernels} x cudaLaunchKernel (add_) + cudaStreamSynchronize"
        if self.op == "alloc":
            return "cuMemAlloc_v2 + cuMemFree_v2 (driver, through ctypes)"
        return "cudaMemcpyAsync + cudaStreamSynchronize (torch copy_, non_blocking=False)"


@dataclass
class Lane:
    """What one thread works with while it runs a batch of ops."""

    stream: Any  # the CUDA stream its ops run on and synchronise; None on the CPU
    own_stream: bool  # True: `stream` is entered around each batch; False: it is the default stream
    scratch: Any = None  # launch: the one-element int64 tensor the kernels add to
    src: Any = None  # copies: source and destination buffers of `bytes` bytes
    dst: Any = None


class DriverMemory:
    """cuMemAlloc_v2 and cuMemFree_v2 of the CUDA driver, called through ctypes, once each per op.

    torch's allocator caches: a freed block is kept and handed out again, and requests up to 1 MiB are carved from
    2 MiB segments it already holds, so `torch.empty` on the GPU rarely reaches cudaMalloc; freeing the cache after
    each op (torch.cuda.empty_cache) would add the allocator's bookkeeping and still miss allocations served from a
    shared segment. Calling the driver makes every op exactly one allocation and one free that the driver, or the
    layer in front of it, must serve. The symbols are looked up in the process's global scope, as a program linked
    against libcuda resolves them, so an LD_PRELOAD shim that interposes them is the one called.

    The allocations live in the device's primary context (the one torch uses), retained here rather than taken
    from the calling thread: the runtime need not have made it current on any thread yet. The driver's current
    context is per thread, so each thread makes it current once, on its first op."""

    def __init__(self, ordinal: int) -> None:
        try:
            ctypes.CDLL("libcuda.so.1", mode=ctypes.RTLD_GLOBAL)
            scope = ctypes.CDLL(None)
            self._error_name = scope.cuGetErrorName
            self._alloc, self._free = scope.cuMemAlloc_v2, scope.cuMemFree_v2
            self._set_current = scope.cuCtxSetCurrent
            self._release = scope.cuDevicePrimaryCtxRelease_v2
            init, device_get, retain = scope.cuInit, scope.cuDeviceGet, scope.cuDevicePrimaryCtxRetain
        except (OSError, AttributeError) as exc:
            raise BackendError(f"torch-probe op 'alloc' needs the CUDA driver library libcuda.so.1: {exc}") from None
        self._error_name.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
        self._alloc.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
        self._free.argtypes = [ctypes.c_uint64]
        self._set_current.argtypes = [ctypes.c_void_p]
        self._release.argtypes = [ctypes.c_int]
        device_get.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        retain.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
        self._device = ctypes.c_int()
        self._ctx: ctypes.c_void_p | None = None
        try:
            self._check(init(0), "cuInit")
            self._check(device_get(ctypes.byref(self._device), ordinal), "cuDeviceGet")
            ctx = ctypes.c_void_p()
            self._check(retain(ctypes.byref(ctx), self._device), "cuDevicePrimaryCtxRetain")
        except RuntimeError as exc:
            raise BackendError(f"torch-probe op 'alloc': {exc}") from None
        self._ctx = ctx
        self._thread = threading.local()

    def _check(self, result: int, call: str) -> None:
        if result != 0:
            name = ctypes.c_char_p()
            text = name.value if self._error_name(result, ctypes.byref(name)) == 0 else None
            raise RuntimeError(f"{call} failed: {text.decode() if text else 'CUresult'} ({result})")

    def alloc_free(self, nbytes: int) -> None:
        if not getattr(self._thread, "bound", False):
            self._check(self._set_current(self._ctx), "cuCtxSetCurrent")
            self._thread.bound = True
        ptr = ctypes.c_uint64()
        self._check(self._alloc(ctypes.byref(ptr), nbytes), "cuMemAlloc_v2")
        self._check(self._free(ptr), "cuMemFree_v2")

    def close(self) -> None:
        if self._ctx is not None:
            self._release(self._device)
            self._ctx = None


class TorchProbe:
    """Performs the configured op once per index; answers each index with itself (int32), like the null SUT."""

    def __init__(self, device: str, options: Mapping[str, object]) -> None:
        self.config = ProbeConfig.from_options(options)
        try:
            import torch
        except ImportError:
            raise BackendError("the torch-probe backend needs torch: pip install torch "
                               "(a CUDA build on a GPU machine: https://pytorch.org/get-started/locally/)") from None
        from pytest_mlperf.runner.backends.transformers_llm import resolve_device

        self._torch = torch
        self.device = resolve_device(device)
        cuda = self.device == "cuda"
        if not cuda:  # tiny CPU ops are overhead-bound: an intra-op thread pool only adds erratic wake-ups
            torch.set_num_threads(1)
        self._memory = DriverMemory(torch.cuda.current_device()) if cuda and self.config.op == "alloc" else None
        self._op: Callable[[Lane], None] = {"launch": self._launch, "alloc": self._alloc}.get(self.config.op, self._copy)
        self._first = self._new_lane(own_stream=False)  # taken whenever free: sequential use never switches lanes
        self._first_free = threading.Lock()
        self._spares: queue.SimpleQueue[Lane] = queue.SimpleQueue()  # lanes of threads running beside it
        cfg = self.config
        details = {"op": cfg.op, "calls": cfg.calls(self.device), "torch": torch.__version__,
                   "cuda": torch.version.cuda or "none", "gpu": torch.cuda.get_device_name() if cuda else "none (cpu)"}
        details.update({"kernels": str(cfg.kernels)} if cfg.op == "launch" else {"bytes": str(cfg.nbytes)})
        if cfg.op in COPY_OPS:
            details["host_memory"] = "pinned" if cfg.op.endswith("pinned") and cuda else "pageable"
        self.info = BackendInfo(backend="torch-probe", device=self.device, precision=cfg.variant, details=details)

    # --- lanes ----------------------------------------------------------------------------------------------------
    def _host(self, data: Any) -> Any:
        """A host buffer holding `data`: page-locked for *_pinned ops on a GPU. Writing it touches every page, so no
        page fault lands in a timed op."""
        pinned = self.config.op.endswith("pinned") and self.device == "cuda"
        buf = self._torch.empty(self.config.nbytes, dtype=self._torch.uint8, pin_memory=pinned)
        buf.copy_(data)
        return buf

    def _new_lane(self, own_stream: bool) -> Lane:
        t, cfg = self._torch, self.config
        stream = None
        if self.device == "cuda":
            stream = t.cuda.Stream() if own_stream else t.cuda.default_stream()
        lane = Lane(stream, own_stream and stream is not None)
        with self._context(lane):  # the lane's buffers belong to its stream in torch's allocator
            if cfg.op == "launch":
                lane.scratch = t.zeros(1, dtype=t.int64, device=self.device)
            elif cfg.op in COPY_OPS:
                pattern = t.randint(0, 256, (cfg.nbytes,), dtype=t.uint8, generator=t.Generator().manual_seed(0))
                zeros = t.zeros(cfg.nbytes, dtype=t.uint8)
                if cfg.op.startswith("h2d"):
                    lane.src, lane.dst = self._host(pattern), zeros.to(self.device)
                else:
                    lane.src, lane.dst = pattern.to(self.device), self._host(zeros)
            if stream is not None:
                stream.synchronize()
        return lane

    def _context(self, lane: Lane) -> AbstractContextManager[Any]:
        return self._torch.cuda.stream(lane.stream) if lane.own_stream else contextlib.nullcontext()

    # --- ops --------------------------------------------------------------------------------------------------------
    def _launch(self, lane: Lane) -> None:
        for _ in range(self.config.kernels):
            lane.scratch.add_(1)
        if lane.stream is not None:
            lane.stream.synchronize()

    def _copy(self, lane: Lane) -> None:
        lane.dst.copy_(lane.src)  # blocking: cudaMemcpyAsync + cudaStreamSynchronize on the lane's stream

    def _alloc(self, lane: Lane) -> None:
        if self._memory is not None:
            self._memory.alloc_free(self.config.nbytes)
        else:
            self._torch.empty(self.config.nbytes, dtype=self._torch.uint8)  # freed at once: no reference kept

    # --- Backend contract -------------------------------------------------------------------------------------------
    def stage(self, indices: Sequence[int], samples: np.ndarray) -> None:
        """Nothing to stage: a sample is its index, and the buffers the ops use exist from construction."""

    def infer(self, indices: Sequence[int]) -> np.ndarray:
        if self._first_free.acquire(blocking=False):
            try:
                self._run(self._first, len(indices))
            finally:
                self._first_free.release()
        else:
            try:
                lane = self._spares.get_nowait()
            except queue.Empty:
                lane = self._new_lane(own_stream=True)  # more threads at once than ever before (warm-up makes these)
            try:
                with self._context(lane):
                    self._run(lane, len(indices))
            finally:
                self._spares.put(lane)
        return np.asarray(indices, dtype=np.int32).reshape(-1, 1)

    def _run(self, lane: Lane, ops: int) -> None:
        for _ in range(ops):
            self._op(lane)

    def close(self) -> None:
        """Drops the spare lanes (their memory goes back to torch's allocator) and the driver context reference."""
        while True:
            try:
                self._spares.get_nowait()
            except queue.Empty:
                break
        if self._memory is not None:
            self._memory.close()
