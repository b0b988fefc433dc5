"""``Recorder`` and ``EventSink`` as JSON Lines files: one codec JSON object per line.

A :class:`JsonlRecorder` file opens with a :class:`~liqshell.adapters.RecordingHeader` line
(``{"format":"liqshell-recording","library":"0.1.0","schema":1}``) and then holds the
:mod:`liqcore.codec` JSON of one :class:`~liqshell.ports.Record` per line
(:func:`liqshell.adapters.record_to_json`); a :class:`JsonlEventSink` line is ``{"change":
<StateChange JSON>, "key": [wallet, version, index]}``. Keys are sorted and separators
compact, so equal inputs give identical bytes.

Nothing is written into a file liqshell did not write: an existing file is appended to only
when its first line is a header of the schema this liqshell writes, or a record (a
recording from before headers), or — for the sink — a state change; anything else (a text
file, a SQLite database, a recording of another schema) raises
:class:`~liqshell.adapters.ForeignFile` when the recorder or sink is made, before anything
is written (:func:`check_file` checks a path without writing).

Durability (the fsync policy): each line is written with one ``write`` on a file opened with
``O_APPEND``, so lines from several writers never interleave. With ``fsync=True`` (the
default) every append is followed by ``os.fsync`` before it returns: a record that was
appended survives a crash of the machine. With ``fsync=False`` the line is handed to the
operating system only — it survives the process being killed, not a power loss — which is
much faster (a simulation, a notebook). Writes run in a worker thread, never on the event
loop, and nothing is bound to an event loop.

A crash can leave a torn last line (no newline). On opening a file of liqshell's to append,
a torn tail that is not valid JSON is cut off and a complete one gets its newline, so the
next line starts clean (a file holding only the torn start of a header is started afresh);
:func:`read_records` likewise ignores a torn, unparsable last line. Any other bad line
raises :class:`~liqcore.InvalidInput` naming the file and the line.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import json
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType

from liqcore import StateChange, codec
from liqcore.errors import InvalidInput
from liqshell.adapters import (
    AsyncClosing,
    ForeignFile,
    RecordingHeader,
    _loads,
    header_from_data,
    header_to_json,
    record_from_data,
    record_from_line,
    record_to_json,
)
from liqshell.ports import Record

__all__ = [
    "JsonlEventSink",
    "JsonlRecorder",
    "check_file",
    "read_entries",
    "read_header",
    "read_records",
    "read_state_changes",
]

_TAIL = 1 << 16


_HEAD_LIMIT = 1 << 24
"""How far the first line of an existing file is looked for (a record is far shorter)."""

_RECORDING = "recording"
_CHANGES = "changes"


class _AppendFile:
    """A file that whole lines are appended to, from worker threads, under a lock.

    ``kind`` says what the file holds (a recording, or state changes): an existing file is
    checked to be one before anything is written into it (:func:`check_file`), at
    construction and again on opening.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool, kind: str) -> None:
        self.path = os.fspath(path)
        self.fsync = fsync
        self.kind = kind
        self._lock = threading.Lock()
        self._fd: int | None = None
        check_file(self.path, kind=kind)  # fail fast: never after a run has started

    def _open(self, header: str | None = None) -> tuple[int, bool]:
        """The open file, and whether ``header`` was written as its first line."""
        if self._fd is not None:
            return self._fd, False
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            started = _prepare(fd, self.path, self.kind, fsync=self.fsync, header=header)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return fd, started

    def write(self, line: str, *, header: bool = False) -> None:
        """Append ``line``; a ``header`` line opens a new file instead of the bare header."""
        data = (line + "\n").encode("utf-8")
        with self._lock:
            fd, written = self._open(line if header else None)
            if written:
                return
            _write_all(fd, data)
            if self.fsync:
                os.fsync(fd)

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)

    async def append(self, line: str, *, header: bool = False) -> None:
        await asyncio.to_thread(functools.partial(self.write, line, header=header))

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def check_file(path: str | os.PathLike[str], *, kind: str = _RECORDING) -> None:
    """Raise :class:`~liqshell.adapters.ForeignFile` unless the file at ``path`` is missing,
    empty, or one liqshell wrote: a recording (``kind="recording"``: its first line is a
    :class:`~liqshell.adapters.RecordingHeader` of a schema this liqshell writes, or a record
    of a recording written before headers) or a state-change log (``kind="changes"``).
    Reads only; a torn first line counts as liqshell's only if it is the start of what
    liqshell writes first."""
    where = os.fspath(path)
    try:
        fd = os.open(where, os.O_RDONLY)
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise ForeignFile(f"{where}: is a directory") from None
    try:
        _verdict(fd, where, kind)
    finally:
        os.close(fd)


def _verdict(fd: int, path: str, kind: str) -> bool:
    """Whether the file is liqshell's and holds at least one whole line (false: it is empty
    or only a torn start of liqshell's first line); raises ForeignFile otherwise."""
    size = os.fstat(fd).st_size
    if size == 0:
        return False
    head = os.pread(fd, min(size, _HEAD_LIMIT), 0)
    end = head.find(b"\n")
    first = head if end < 0 else head[:end]
    if end < 0 and size > len(head):
        raise _foreign(path, kind, "its first line is longer than any liqshell writes")
    problem = _first_line_problem(first, kind)
    if problem is None:
        return True
    if end < 0 and _torn_start(first, kind):
        return False
    raise _foreign(path, kind, problem)


def _foreign(path: str, kind: str, problem: str) -> ForeignFile:
    noun = "recording" if kind == _RECORDING else "state-change log"
    return ForeignFile(f"{path}: not a liqshell {noun} ({problem}): refusing to write to it")


def _first_line_problem(line: bytes, kind: str) -> str | None:
    """Why ``line`` cannot be the first line of a file of ``kind`` (None: it can)."""
    try:
        data = _loads(line)
    except InvalidInput:
        return "its first line is not JSON"
    try:
        if kind == _CHANGES:
            _change_from_data(data, "its first line")
            return None
        if header_from_data(data) is not None:
            return None
        record_from_data(data)
    except InvalidInput as error:
        return f"its first line is not liqshell's: {error}"
    return None


def _torn_start(fragment: bytes, kind: str) -> bool:
    """Whether ``fragment`` is the torn start of the first line liqshell writes (a bare
    header, or a full one: its keys sorted, ``config`` comes first)."""
    if kind == _RECORDING:
        full = b'{"config":'
        return (
            header_to_json(RecordingHeader(schema=1)).encode().startswith(fragment)
            or full.startswith(fragment)
            or fragment.startswith(full)
        )
    return fragment.startswith(b'{"change":{')


def _prepare(fd: int, path: str, kind: str, *, fsync: bool, header: str | None) -> bool:
    """Check the file is liqshell's, start a recording with a header (``header``, or the
    bare one), and make the file end with a newline (a torn last line is cut, a whole one
    ended). Under an exclusive lock on the file, so two writers opening a new file at once
    write one first header. Returns whether ``header`` was written."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        return _prepare_locked(fd, path, kind, fsync=fsync, header=header)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _prepare_locked(fd: int, path: str, kind: str, *, fsync: bool, header: str | None) -> bool:
    if not _verdict(fd, path, kind):
        os.ftruncate(fd, 0)  # empty, or only a torn start of our own first line
        if kind == _RECORDING:
            first = header if header is not None else header_to_json(RecordingHeader())
            _write_all(fd, (first + "\n").encode())
            if fsync:
                os.fsync(fd)
            return header is not None
        return False
    _repair_tail(fd)
    return False


def _repair_tail(fd: int) -> None:
    """Make the file end with a newline: cut a torn, unparsable last line, or end a whole one."""
    size = os.fstat(fd).st_size
    if size == 0:
        return
    start = max(0, size - _TAIL)
    tail = os.pread(fd, size - start, start)
    if tail.endswith(b"\n"):
        return
    cut = tail.rfind(b"\n")
    if cut < 0 and start > 0:
        os.write(fd, b"\n")  # a last line longer than we look at: keep it, end it
        return
    fragment = tail[cut + 1 :]
    try:
        json.loads(fragment)
    except (ValueError, RecursionError):
        os.ftruncate(fd, start + cut + 1)
    else:
        os.write(fd, b"\n")


def _lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each non-blank line; a torn last line is left out when
    it does not parse (the caller sees only complete lines)."""
    with Path(path).open("r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if not line.endswith("\n"):  # the last line, cut short by a crash mid-write?
                try:
                    json.loads(line)
                except (ValueError, RecursionError):
                    return
            yield number, line


def _parse(path: str | os.PathLike[str], number: int, line: str) -> object:
    try:
        return _loads(line)
    except InvalidInput as error:
        raise InvalidInput(f"{os.fspath(path)}:{number}: {error}") from None


def read_header(path: str | os.PathLike[str]) -> RecordingHeader | None:
    """The recording's header (``None`` for a recording written before headers, or an
    empty file); raises ``InvalidInput`` for a header of a schema or a library version this
    liqshell cannot read."""
    for number, line in _lines(path):
        data = _parse(path, number, line)
        try:
            return header_from_data(data)
        except InvalidInput as error:
            raise type(error)(f"{os.fspath(path)}:{number}: {error}") from None
    return None


def read_entries(path: str | os.PathLike[str]) -> Iterator[RecordingHeader | Record]:
    """The headers and records of a JSON Lines recording, in order (a header line starts
    each watcher run; the records after it were decided with its config).

    Raises ``FileNotFoundError``, or ``InvalidInput`` naming the file and line of a bad record
    or of a header of a schema or library version this liqshell cannot read.
    """
    for number, line in _lines(path):
        data = _parse(path, number, line)
        try:
            header = header_from_data(data)
            yield record_from_line(data, line) if header is None else header
        except InvalidInput as error:
            raise type(error)(f"{os.fspath(path)}:{number}: {error}") from None


def read_records(path: str | os.PathLike[str]) -> Iterator[Record]:
    """The records of a JSON Lines recording, in order (:func:`read_entries` without the
    headers)."""
    return (entry for entry in read_entries(path) if isinstance(entry, Record))


def _last_versions(path: str) -> Mapping[str, int]:
    last: dict[str, int] = {}
    if not os.path.exists(path):
        return last
    for number, line in _lines(path):
        data = _parse(path, number, line)
        if not isinstance(data, dict) or header_from_data(data) is not None:
            continue
        wallet, version = data.get("wallet"), data.get("version", 0)
        if type(wallet) is str and type(version) is int and data.get("executed", True) is True:
            last[wallet] = max(last.get(wallet, 0), version)
    return MappingProxyType(dict(sorted(last.items())))


def _change_from_data(data: object, where: str) -> tuple[tuple[str, int, int], StateChange]:
    if not isinstance(data, dict) or set(data) != {"change", "key"}:
        raise InvalidInput(f"{where}: expected an object with 'change' and 'key'")
    key = data["key"]
    if not (
        isinstance(key, list)
        and len(key) == 3
        and type(key[0]) is str
        and type(key[1]) is int
        and type(key[2]) is int
    ):
        raise InvalidInput(f"{where}: key must be [wallet, version, index], was {key!r}")
    try:
        change = codec.structure(data["change"], StateChange)
    except InvalidInput as error:
        raise type(error)(f"{where}: {error}") from None
    except RecursionError:
        raise InvalidInput(f"{where}: nested too deeply") from None
    return (key[0], key[1], key[2]), change


def read_state_changes(
    path: str | os.PathLike[str],
) -> Iterator[tuple[tuple[str, int, int], StateChange]]:
    """``(key, change)`` of each line a :class:`JsonlEventSink` wrote, in order."""
    for number, line in _lines(path):
        data = _parse(path, number, line)
        yield _change_from_data(data, f"{os.fspath(path)}:{number}")


class JsonlRecorder(AsyncClosing):
    """``Recorder``: appends each :class:`~liqshell.ports.Record` as one line to ``path``.

    ``fsync=True`` makes every append durable before it returns (see the module docs).
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self._file = _AppendFile(path, fsync=fsync, kind=_RECORDING)

    @property
    def path(self) -> str:
        """The file appended to."""
        return self._file.path

    def __repr__(self) -> str:
        return f"JsonlRecorder({self.path!r})"

    async def begin(self, header: RecordingHeader) -> None:
        """Record a watcher start's header (the first line of a new file, else a line of its
        own): the records after it were decided with its config."""
        await self._file.append(header_to_json(header), header=True)

    async def append(self, record: Record) -> None:
        """Append one record."""
        await self._file.append(record_to_json(record))

    async def close(self) -> None:
        """Close the file (the next append opens it again)."""
        await self._file.aclose()

    async def last_versions(self) -> Mapping[str, int]:
        """The highest version committed with a state that the file holds, by wallet (read
        in a worker thread; the watcher completes the log from the store's history with it)."""
        return await asyncio.to_thread(_last_versions, self.path)

    def records(self) -> Iterator[Record]:
        """The records written so far (:func:`read_records`; none before the first append)."""
        return read_records(self.path) if os.path.exists(self.path) else iter(())


class JsonlEventSink(AsyncClosing):
    """``EventSink``: appends ``{"change": …, "key": [wallet, version, index]}`` lines."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self._file = _AppendFile(path, fsync=fsync, kind=_CHANGES)

    @property
    def path(self) -> str:
        """The file appended to."""
        return self._file.path

    def __repr__(self) -> str:
        return f"JsonlEventSink({self.path!r})"

    async def publish(self, change: StateChange, *, key: tuple[str, int, int]) -> None:
        """Append ``change`` with its key (at least once: a consumer dedupes by key)."""
        wallet, version, index = key
        line = json.dumps(
            {"change": codec.unstructure(change), "key": [wallet, version, index]},
            sort_keys=True,
            separators=(",", ":"),
            allow_nan=False,
        )
        await self._file.append(line)

    async def close(self) -> None:
        """Close the file (the next publish opens it again)."""
        await self._file.aclose()

    def changes(self) -> Iterator[tuple[tuple[str, int, int], StateChange]]:
        """What was published so far (:func:`read_state_changes`; nothing before the first)."""
        return read_state_changes(self.path) if os.path.exists(self.path) else iter(())
