"""``Recorder`` and ``EventSink`` as JSON Lines files: one codec JSON object per line.

A :class:`JsonlRecorder` line is the :mod:`liqcore.codec` JSON of one
:class:`~liqshell.ports.Record` (:func:`liqshell.adapters.record_to_json`); a
:class:`JsonlEventSink` line is ``{"change": <StateChange JSON>, "key": [wallet, version,
index]}``. Keys are sorted and separators compact, so equal inputs give identical bytes.

Durability (the fsync policy): each line is written with one ``write`` on a file opened with
``O_APPEND``, so lines from several writers never interleave. With ``fsync=True`` (the
default) every append is followed by ``os.fsync`` before it returns: a record that was
appended survives a crash of the machine. With ``fsync=False`` the line is handed to the
operating system only — it survives the process being killed, not a power loss — which is
much faster (a simulation, a notebook). Writes run in a worker thread, never on the event
loop, and nothing is bound to an event loop.

A crash can leave a torn last line (no newline). On opening a file to append, a torn tail
that is not valid JSON is cut off and a complete one gets its newline, so the next line
starts clean; :func:`read_records` likewise ignores a torn, unparsable last line. Any other
bad line raises :class:`~liqcore.InvalidInput` naming the file and the line.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from liqcore import StateChange, codec
from liqcore.errors import InvalidInput
from liqshell.adapters import record_from_data, record_to_json
from liqshell.ports import Record

__all__ = [
    "JsonlEventSink",
    "JsonlRecorder",
    "read_records",
    "read_state_changes",
]

_TAIL = 1 << 16


class _AppendFile:
    """A file that whole lines are appended to, from worker threads, under a lock."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool) -> None:
        self.path = os.fspath(path)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                _repair_tail(fd)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
        return self._fd

    def write(self, line: str) -> None:
        data = (line + "\n").encode("utf-8")
        with self._lock:
            fd = self._open()
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(fd)

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)

    async def append(self, line: str) -> None:
        await asyncio.to_thread(self.write, line)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)


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
    except ValueError:
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
                except ValueError:
                    return
            yield number, line


def _parse(path: str | os.PathLike[str], number: int, line: str) -> object:
    try:
        return json.loads(line, parse_constant=_reject_constant)
    except ValueError as error:
        raise InvalidInput(f"{os.fspath(path)}:{number}: not valid JSON: {error}") from None


def _reject_constant(name: str) -> object:
    raise InvalidInput(f"JSON must not contain {name}")


def read_records(path: str | os.PathLike[str]) -> Iterator[Record]:
    """The records of a JSON Lines recording, in order.

    Raises ``FileNotFoundError``, or ``InvalidInput`` naming the file and line of a bad record.
    """
    for number, line in _lines(path):
        data = _parse(path, number, line)
        try:
            yield record_from_data(data)
        except InvalidInput as error:
            raise type(error)(f"{os.fspath(path)}:{number}: {error}") from None


def read_state_changes(
    path: str | os.PathLike[str],
) -> Iterator[tuple[tuple[str, int, int], StateChange]]:
    """``(key, change)`` of each line a :class:`JsonlEventSink` wrote, in order."""
    for number, line in _lines(path):
        data = _parse(path, number, line)
        where = f"{os.fspath(path)}:{number}"
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
        yield (key[0], key[1], key[2]), change


class JsonlRecorder:
    """``Recorder``: appends each :class:`~liqshell.ports.Record` as one line to ``path``.

    ``fsync=True`` makes every append durable before it returns (see the module docs).
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self._file = _AppendFile(path, fsync=fsync)

    @property
    def path(self) -> str:
        """The file appended to."""
        return self._file.path

    def __repr__(self) -> str:
        return f"JsonlRecorder({self.path!r})"

    async def append(self, record: Record) -> None:
        """Append one record."""
        await self._file.append(record_to_json(record))

    async def close(self) -> None:
        """Close the file (the next append opens it again)."""
        await self._file.aclose()

    def records(self) -> Iterator[Record]:
        """The records written so far (:func:`read_records`; none before the first append)."""
        return read_records(self.path) if os.path.exists(self.path) else iter(())


class JsonlEventSink:
    """``EventSink``: appends ``{"change": …, "key": [wallet, version, index]}`` lines."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self._file = _AppendFile(path, fsync=fsync)

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
