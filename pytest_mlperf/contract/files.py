"""Writing a file atomically: a reader (another process, a later session, the same session after a crash or a
Ctrl-C) finds the old file or the new one, never a partial one. The one implementation in the package, used for the
baselines, results.json and the gate reports, the `pytest-mlperf aggregate` outputs and the stand-in model caches.

How: the data goes to a temporary file beside the target (the same folder, so the same file system, where
`os.replace` is atomic), is flushed and fsynced, and the temporary file is then renamed over the target. On any
exception, KeyboardInterrupt included, the temporary file is removed and the target is left as it was. The new
file gets the mode `open()` would give it (0o666 less the umask), not `mkstemp`'s private 0o600.

What this does not do: replace a folder (the Llama stand-in renames a whole built folder into place) or a symlink
(`outputs.point_latest`); those renames stay where they are.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

FILE_MODE = 0o666  # less the umask, which the kernel applies at creation, as for open()
_TEMP_SUFFIX = ".tmp"
_NAME_ATTEMPTS = 100


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that readers see the old file or the new one, never a partial one. Creates
    the parent folders if they are missing. Raises what the file system raises (an OSError); the target is then
    unchanged and no temporary file is left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp: Path | None = None
    try:
        fd, tmp = _create_temp(path)
        try:
            view = memoryview(data)
            while view:  # os.write may write less than asked (signals, files over 2 GiB)
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """`write_bytes_atomic` of ``text`` in UTF-8, written as given (no newline translation). Text that cannot be
    encoded raises UnicodeEncodeError before anything is written."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data: Any) -> None:
    """`write_bytes_atomic` of ``data`` as JSON: indented by 2, keys sorted (stable diffs of stored files), ASCII,
    ending in a newline. Data that is not JSON-serializable raises TypeError (ValueError for a circular reference)
    before anything is written."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new, empty temporary file beside ``path``, ``.<name>.<random>.tmp`` (hidden, and recognisable as the
    target's), opened for writing; O_EXCL so that two writers of one target never share a temporary file."""
    for _ in range(_NAME_ATTEMPTS):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{_TEMP_SUFFIX}"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path} after {_NAME_ATTEMPTS} attempts")
