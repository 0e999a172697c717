"""A launch recipe: how a runner process is started. Reference (bare metal) and candidate (under an isolation
layer) differ only in their recipes: a command prefix, extra environment, and the GPU(s) it may see."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pytest_mlperf.contract.cpu_list import format_cpu_list
from pytest_mlperf.contract.lifetime import bind_to_parent
from pytest_mlperf.host.machine.gpus import worker_gpu_env


@dataclass(frozen=True)
class LaunchRecipe:
    name: str = "reference"
    prefix: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    # CUDA_VISIBLE_DEVICES for the runner: None inherits the caller's; a tuple pins (an empty tuple hides all GPUs)
    gpus: tuple[str, ...] | None = None
    # the CPUs the runner and everything it starts may run on (host/machine/cpus.py); None: inherited
    cpus: tuple[int, ...] | None = None

    @classmethod
    def from_strings(cls, name: str, prefix: str | None, env: list[str] | None) -> LaunchRecipe:
        pairs: dict[str, str] = {}
        for item in env or []:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"bad environment entry {item!r} for the {name} recipe: write NAME=VALUE")
            pairs[key] = value
        return cls(name=name, prefix=tuple(shlex.split(prefix or "")), env=pairs)

    def argv(self, *args: str) -> list[str]:
        return [*self.prefix, sys.executable, "-m", "pytest_mlperf.runner.child", *args]

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env.update(self.env)
        if self.gpus is not None:
            env.update(worker_gpu_env(self.gpus))
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in sorted(self.env.items())]
        if self.gpus is not None:
            parts.append(f"CUDA_VISIBLE_DEVICES={','.join(self.gpus)}")
        if self.cpus is not None:
            parts.append(f"cpus={format_cpu_list(self.cpus)}")
        return " ".join([*parts, *self.prefix]) or "(plain)"

    def key(self) -> tuple[object, ...]:
        return (self.name, self.prefix, tuple(sorted(self.env.items())), self.gpus, self.cpus)

    def preexec(self, parent_pid: int | None = None) -> Callable[[], None]:
        """Popen's preexec_fn (it runs in the child between fork and exec): pins the CPUs (`pin`) and has the kernel
        send SIGTERM to the process about to become the runner (or the layer's launcher) when the pytest process
        `parent_pid` (default: this one) dies, so that no runner outlives its session (contract/lifetime.py)."""
        bind = bind_to_parent(os.getpid() if parent_pid is None else parent_pid)

        def hook() -> None:
            self.pin()
            bind()

        return hook

    def pin(self) -> None:
        """Run in the child between fork and exec (Popen's preexec_fn): applies `cpus` to the process about to
        become the runner (or the layer's launcher), so every thread and process it starts inherits them."""
        if self.cpus is not None:
            os.sched_setaffinity(0, self.cpus)


def interpreter_hint(recipe: LaunchRecipe, error: str) -> str | None:
    """Why a runner under a prefix such as `python -m pytest_mlperf.slowdown --` lacks its modules: the prefix's
    `python` is another interpreter than this session's (a venv not activated). None where that is not the case."""
    if not recipe.prefix or "No module named" not in error:
        return None
    first = recipe.prefix[0]
    if not re.fullmatch(r"python[0-9.]*", Path(first).name):
        return None
    found = shutil.which(first)
    # the same folder is the same environment (a venv's python and python3 are links to one system binary, so
    # resolving links would call a venv and the system the same)
    if found and os.path.dirname(os.path.abspath(found)) == os.path.dirname(os.path.abspath(sys.executable)):
        return None
    return (f"hint: the {recipe.name} prefix starts {first!r} ({found or 'not on PATH'}), not this session's "
            f"interpreter {sys.executable}, which has pytest-mlperf and LoadGen installed: write {sys.executable} "
            f"in --mlperf-{recipe.name}-prefix, or activate the virtual environment first")
