"""Tests for pytest_mlperf/contract/files.py, the one atomic file writer: the new content lands, a write that fails
at any step leaves the old file byte for byte and no temporary file, and the package has no other copy of it."""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path

import pytest

import pytest_mlperf
from pytest_mlperf.contract import files
from pytest_mlperf.contract.files import (
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)

OLD = b"old content\x00\xff, kept byte for byte\n"


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def existing(tmp_path: Path) -> Path:
    path = tmp_path / "target.bin"
    path.write_bytes(OLD)
    return path


# --------------------------------------------------------------------------- success


def test_writes_a_new_file_and_leaves_only_it(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    write_bytes_atomic(path, b"\x00new\xffdata")
    assert path.read_bytes() == b"\x00new\xffdata"
    assert names(tmp_path) == ["x.bin"]


def test_replaces_an_existing_file_by_renaming_a_new_one_over_it(existing: Path) -> None:
    inode_before = existing.stat().st_ino
    write_bytes_atomic(existing, b"new")
    assert existing.read_bytes() == b"new"
    assert existing.stat().st_ino != inode_before  # not rewritten in place, where a reader could see it half done
    assert names(existing.parent) == ["target.bin"]


def test_empty_data_makes_an_empty_file(existing: Path) -> None:
    write_bytes_atomic(existing, b"")
    assert existing.read_bytes() == b""
    assert names(existing.parent) == ["target.bin"]


def test_creates_missing_parent_folders(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "x.bin"
    write_bytes_atomic(path, b"data")
    assert path.read_bytes() == b"data"
    assert names(path.parent) == ["x.bin"]


def test_accepts_a_str_path(tmp_path: Path) -> None:
    write_bytes_atomic(str(tmp_path / "x.bin"), b"data")  # type: ignore[arg-type]
    assert (tmp_path / "x.bin").read_bytes() == b"data"


def test_short_writes_are_continued_until_all_data_is_written(tmp_path: Path, monkeypatch) -> None:
    real_write = os.write
    calls = []

    def short_write(fd: int, data) -> int:
        calls.append(len(data))
        return real_write(fd, bytes(data[:3]))

    monkeypatch.setattr(os, "write", short_write)
    data = bytes(range(256)) * 4
    write_bytes_atomic(tmp_path / "x.bin", data)
    monkeypatch.undo()
    assert (tmp_path / "x.bin").read_bytes() == data
    assert len(calls) == -(-len(data) // 3)


def test_the_data_is_fsynced_before_the_rename(tmp_path: Path, monkeypatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda s, d: (events.append("replace"), real_replace(s, d))[1])
    write_bytes_atomic(tmp_path / "x.bin", b"data")
    assert events == ["fsync", "replace"]


def test_the_temp_file_lives_beside_the_target(tmp_path: Path, monkeypatch) -> None:
    # a temp file in another folder could sit on another file system, where os.replace is not atomic
    seen: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def spy(src, dst) -> None:
        seen.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    path = tmp_path / "x.json"
    write_bytes_atomic(path, b"{}")
    ((src, dst),) = seen
    assert src.parent == tmp_path and dst == path
    assert re.fullmatch(r"\.x\.json\.[0-9a-f]+\.tmp", src.name), src.name


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077, 0o002])
def test_the_new_file_has_the_mode_open_would_give(tmp_path: Path, umask: int) -> None:
    old_umask = os.umask(umask)
    try:
        write_bytes_atomic(tmp_path / "x.bin", b"data")
        (tmp_path / "plain.bin").write_bytes(b"data")
    finally:
        os.umask(old_umask)
    mode = (tmp_path / "x.bin").stat().st_mode & 0o777
    assert mode == 0o666 & ~umask  # not mkstemp's private 0o600
    assert mode == (tmp_path / "plain.bin").stat().st_mode & 0o777


def test_a_stray_file_with_the_temp_name_is_not_clobbered(tmp_path: Path, monkeypatch) -> None:
    stray = tmp_path / ".x.bin.aaaa.tmp"
    stray.write_bytes(b"someone else's")
    tokens = iter(["aaaa", "bbbb"])
    monkeypatch.setattr(secrets, "token_hex", lambda n=None: next(tokens))
    write_bytes_atomic(tmp_path / "x.bin", b"data")
    assert (tmp_path / "x.bin").read_bytes() == b"data"
    assert stray.read_bytes() == b"someone else's"
    assert names(tmp_path) == [".x.bin.aaaa.tmp", "x.bin"]


# --------------------------------------------------------------------------- failures


class Boom(Exception):
    pass


def _temp_files(folder: Path) -> list[str]:
    return [n for n in names(folder) if n.endswith(".tmp")]


@pytest.mark.parametrize("exc_type", [Boom, OSError, KeyboardInterrupt])
@pytest.mark.parametrize("step", ["write", "fsync", "close", "replace"])
def test_a_failure_at_any_step_keeps_the_old_file_and_removes_the_temp_file(
        existing: Path, monkeypatch, step: str, exc_type: type[BaseException]) -> None:
    folder = existing.parent
    real = getattr(os, step)
    temps_seen: list[list[str]] = []
    written = []

    def failing(*args):
        if step == "write" and not written:  # a first chunk lands, so the temp file holds part of the new data
            written.append(1)
            return real(args[0], bytes(args[1][:4]))
        if step == "close":
            real(*args)  # close it, then fail, as a close that reports a deferred write error does
        temps_seen.append(_temp_files(folder))
        raise exc_type("injected")

    monkeypatch.setattr(os, step, failing)
    with pytest.raises(exc_type, match="injected"):
        write_bytes_atomic(existing, b"new content that must not appear" * 100)
    monkeypatch.undo()
    assert temps_seen and len(temps_seen[0]) == 1  # there was a temp file to clean up
    assert existing.read_bytes() == OLD
    assert names(folder) == ["target.bin"]


def test_a_failure_on_a_new_path_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    def failing(src, dst):
        raise OSError("injected")

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="injected"):
        write_bytes_atomic(tmp_path / "x.bin", b"data")
    monkeypatch.undo()
    assert names(tmp_path) == []


def test_a_folder_where_the_file_should_be_is_an_error_and_leaves_no_temp(tmp_path: Path) -> None:
    (tmp_path / "x.bin").mkdir()
    with pytest.raises(OSError):
        write_bytes_atomic(tmp_path / "x.bin", b"data")
    assert names(tmp_path) == ["x.bin"] and (tmp_path / "x.bin").is_dir()


def test_an_unwritable_folder_is_an_oserror(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(PermissionError):
            write_bytes_atomic(tmp_path / "x.bin", b"data")
    finally:
        tmp_path.chmod(0o755)
    assert names(tmp_path) == []


# --------------------------------------------------------------------------- text and JSON


def test_text_is_written_as_utf8_without_newline_translation(tmp_path: Path) -> None:
    path = tmp_path / "x.md"
    write_text_atomic(path, "héllo\r\nwörld ✅\n")
    assert path.read_bytes() == "héllo\r\nwörld ✅\n".encode()
    assert names(tmp_path) == ["x.md"]


def test_text_that_cannot_be_encoded_keeps_the_old_file(existing: Path) -> None:
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(existing, "fine so far " * 1000 + "\udc80")  # a lone surrogate
    assert existing.read_bytes() == OLD
    assert names(existing.parent) == ["target.bin"]


def test_json_is_indented_sorted_ascii_and_ends_in_a_newline(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    data = {"b": 1, "a": [1, {"d": None, "c": "é"}]}
    write_json_atomic(path, data)
    text = path.read_text(encoding="ascii")
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"
    assert text.startswith('{\n  "a": [') and '"\\u00e9"' in text
    assert json.loads(text) == data


def _circular() -> list:
    loop: list = []
    loop.append(loop)
    return loop


@pytest.mark.parametrize("make_bad", [lambda: {"a": "x" * 10_000, "z": object()}, lambda: {"s": {1, 2}}, _circular],
                         ids=["object", "set", "circular"])
def test_json_that_cannot_be_serialized_keeps_the_old_file(existing: Path, make_bad) -> None:
    bad = make_bad()
    with pytest.raises((TypeError, ValueError)):
        write_json_atomic(existing, bad)
    assert existing.read_bytes() == OLD
    assert names(existing.parent) == ["target.bin"]


# --------------------------------------------------------------------------- one implementation


def test_the_old_names_are_the_shared_functions() -> None:
    from pytest_mlperf.host import controller
    from pytest_mlperf.host.baselines import store as baselines
    from pytest_mlperf.host.gate import report as gate_report

    assert baselines.write_json_atomic is files.write_json_atomic
    assert gate_report.write_bytes_atomic is files.write_bytes_atomic
    assert controller.write_json_atomic is files.write_json_atomic
    assert controller.write_text_atomic is files.write_text_atomic


def test_no_other_module_writes_files_atomically_by_hand() -> None:
    # a new copy of the pattern (mkstemp or fsync before an os.replace) belongs in contract/files.py instead
    package = Path(pytest_mlperf.__file__).parent
    offenders = []
    for source in sorted(package.rglob("*.py")):
        if source == Path(files.__file__):
            continue
        text = source.read_text(encoding="utf-8")
        if re.search(r"\bmkstemp\b|\bNamedTemporaryFile\b|\bfsync\b", text):
            offenders.append(str(source.relative_to(package)))
    assert offenders == []
