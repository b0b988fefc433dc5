"""Real adapters of the shell's ports.

* :mod:`liqshell.adapters.sqlite` — ``SqliteStore``: ``StateStore`` and ``Recorder`` in one
  SQLite file (stdlib).
* :mod:`liqshell.adapters.postgres` — ``PostgresStore``: ``StateStore`` and ``Recorder`` on
  PostgreSQL (the ``postgres`` extra).
* :mod:`liqshell.adapters.nats` — ``OrderGateway``, ``AuctionExecutor``, ``EventSink`` and
  ``AuctionFeed`` over NATS (the ``nats`` extra).
* :mod:`liqshell.adapters.jsonl` — ``Recorder`` and ``EventSink`` as JSON Lines files
  (stdlib).

This package imports nothing optional: import the adapter module you use. Every adapter
serializes with :mod:`liqcore.codec` (records, states and commands as its JSON) and
translates its library's exceptions at the port boundary: ``Conflict``, ``NotSent`` and
``OutcomeUnknown`` of :mod:`liqshell.ports`, and :class:`ServiceUnavailable` /
:class:`StoreUnavailable` below for a service that cannot be reached (retry later).

No adapter writes into a file it did not write itself: a JSON Lines recording opens with a
:class:`RecordingHeader` line, a SQLite store holds only liqshell's tables, and a file that
is not recognisably liqshell's raises :class:`ForeignFile` before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import typing
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs

from liqcore import Config, __version__, codec
from liqcore.errors import InvalidInput
from liqshell.ports import (
    READABLE_SCHEMAS,
    RECORD_SCHEMA,
    RECORDING_FORMAT,
    Cursor,
    LiqshellError,
    Record,
    RecordingHeader,
    WatcherSettings,
    recording_header,
)

__all__ = [
    "DAY_MS",
    "DIGEST_KEY",
    "HEADER_KIND",
    "RECORDING_FORMAT",
    "AsyncClosing",
    "ForeignFile",
    "Pruned",
    "RecordingHeader",
    "Retention",
    "ServiceUnavailable",
    "StoreUnavailable",
    "cursor_from_json",
    "cursor_to_json",
    "header_data",
    "header_from_data",
    "header_from_json",
    "header_to_json",
    "intact",
    "read_entries",
    "read_records",
    "record_from_data",
    "record_from_json",
    "record_from_line",
    "record_to_json",
    "recording_header",
    "storage_key",
]

SQLITE_MAGIC = b"SQLite format 3\x00"


class AsyncClosing:
    """``async with adapter:`` — the adapter itself on entry, :meth:`close` on exit (every
    adapter with connections or files: the stores, the JSON Lines files, the NATS
    connector). ``close`` may be called again: the next use opens what it needs anew."""

    async def close(self) -> None:
        """Release connections and files."""

    async def __aenter__(self) -> typing.Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class ServiceUnavailable(LiqshellError):
    """A service (database, message bus) could not be reached or failed; retry later."""


class StoreUnavailable(ServiceUnavailable):
    """The state store could not be reached or failed mid-call (connection lost, database
    locked, server restarting).

    Retriable. For a commit it means *not known to be committed*: the transaction was rolled
    back, or the connection was lost while the commit was under way. A retry with the same
    ``expected_version`` either commits or raises ``Conflict``; a ``Conflict`` after a
    ``StoreUnavailable`` may be this instance's own earlier commit.
    """


class ForeignFile(LiqshellError, ValueError):
    """A file liqshell was asked to write into is not one it wrote (another program's
    SQLite database, a text file, a recording of an unknown schema): nothing was written."""


DAY_MS = 86_400_000


def _retention_limit(inst: object, attribute: attrs.Attribute[int | None], value: object) -> None:
    if value is not None and (type(value) is not int or value < 1):
        raise ValueError(f"Retention.{attribute.name} must be an int >= 1 or None, was {value!r}")


def _retention_positive(inst: object, attribute: attrs.Attribute[int], value: object) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"Retention.{attribute.name} must be an int >= 1, was {value!r}")


@attrs.frozen(kw_only=True)
class Retention:
    """How much of its log a SQLite or PostgreSQL store keeps (the default: everything).

    ``keep_days``: the records whose ``now`` lies within that many days of the newest
    record's (the log's own clock, so a simulated run ages as it runs); ``keep_records``:
    the newest that many records (headers not counted). With both, a record is kept only if
    both keep it. Older records are pruned oldest first, in transactions of about ``batch``
    records, by a background pass started at most every ``interval_ms`` after a write (a
    poll never waits for it). A pass never separates a decision from its outcomes; in a
    compact recording (``POLL`` summaries) it ends right after a poll's summary, so whole
    polls go; the header in force for the oldest record kept stays (older ones go).
    """

    keep_days: int | None = attrs.field(default=None, validator=_retention_limit)
    keep_records: int | None = attrs.field(default=None, validator=_retention_limit)
    batch: int = attrs.field(default=1_000, validator=_retention_positive)
    interval_ms: int = attrs.field(default=60_000, validator=_retention_positive)

    @property
    def keeps_everything(self) -> bool:
        """Whether nothing is ever pruned (no limit set)."""
        return self.keep_days is None and self.keep_records is None


@attrs.frozen(kw_only=True)
class Pruned:
    """Records and superseded headers removed by retention; ``through_seq`` and
    ``through_now`` are the position and ``now`` of the newest record removed (0: none)."""

    records: int = 0
    headers: int = 0
    through_seq: int = 0
    through_now: int = 0

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(
            records=self.records + other.records,
            headers=self.headers + other.headers,
            through_seq=max(self.through_seq, other.through_seq),
            through_now=max(self.through_now, other.through_now),
        )


def header_data(header: RecordingHeader) -> dict[str, object]:
    """A header as plain JSON data: ``config`` in :mod:`liqcore.codec` form (``None`` when
    it is not known). A schema-1 header keeps its three fields only."""
    data: dict[str, object] = {
        "format": header.format,
        "library": header.library,
        "schema": header.schema,
    }
    if header.schema == 1:
        return data
    data["config"] = None if header.config is None else codec.unstructure(header.config)
    data["config_note"] = header.config_note
    data["watcher"] = None if header.watcher is None else codec.unstructure(header.watcher)
    data["started"] = header.started
    return data


def header_to_json(header: RecordingHeader) -> str:
    """A header as one compact, key-sorted JSON line (without the newline)."""
    return json.dumps(header_data(header), sort_keys=True, separators=(",", ":"))


HEADER_KIND = "header"
"""The ``kind`` column of a header row in a store's ``records`` table."""


def header_from_json(text: str | bytes) -> RecordingHeader:
    """The header a store's header row holds; raises ``InvalidInput``."""
    header = header_from_data(_loads(text))
    if header is None:
        raise InvalidInput("a header row holds no recording header")
    return header


_HEADER_FIELDS = frozenset(field.name for field in attrs.fields(RecordingHeader))


def header_from_data(data: object) -> RecordingHeader | None:
    """The header ``data`` holds, ``None`` if it is not a header (a record, say); raises
    ``InvalidInput`` naming the schema or library version this liqshell cannot read, or the
    field of a bad header."""
    if not isinstance(data, dict) or data.get("format") != RECORDING_FORMAT:
        return None
    schema, library = data.get("schema"), data.get("library")
    if type(schema) is not int or schema not in READABLE_SCHEMAS:
        raise InvalidInput(
            f"recording schema {schema!r} is not one this liqshell reads "
            f"(schemas {READABLE_SCHEMAS[0]}-{READABLE_SCHEMAS[-1]}, liqshell {__version__})"
        )
    written = _version_key(library) if type(library) is str else None
    if written is None:
        raise InvalidInput(f"recording header: library version {library!r} is not a version")
    if written > (_version_key(__version__) or ()):
        raise InvalidInput(
            f"recording written by liqshell {library}, newer than this {__version__}: "
            "upgrade liqshell to read it"
        )
    allowed = {"format", "schema", "library"} if schema == 1 else _HEADER_FIELDS
    unknown = sorted(str(key) for key in data if key not in allowed)
    if unknown:
        raise InvalidInput(f"recording header: unknown field(s) {', '.join(unknown)}")
    config = watcher = None
    raw = data.get("config")
    try:
        if raw is not None:
            config = codec.structure(raw, Config)
        if data.get("watcher") is not None:
            watcher = codec.structure(data["watcher"], WatcherSettings)
    except InvalidInput as error:
        raise type(error)(f"recording header: {error}") from None
    except RecursionError:
        raise InvalidInput("recording header: nested too deeply") from None
    note, started = data.get("config_note", ""), data.get("started")
    if type(note) is not str:
        raise InvalidInput(f"recording header: config_note must be a string, was {note!r}")
    if started is not None and type(started) is not int:
        raise InvalidInput(f"recording header: started must be an int (ms), was {started!r}")
    return RecordingHeader(
        schema=schema,
        library=str(library),
        config=config,
        config_note=note,
        watcher=watcher,
        started=started,
    )


def _version_key(text: str) -> tuple[int, ...] | None:
    """``"1.2.3"`` → ``(1, 2, 3)``; pre-release and local suffixes are ignored."""
    head = text.split("+", 1)[0]
    parts: list[int] = []
    for part in head.split("."):
        digits = ""
        for char in part:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) if parts else None


def _reject_constant(name: str) -> object:
    raise InvalidInput(f"JSON must not contain {name}")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
"""Built once: ``json.loads`` with an option builds a new decoder per call."""


def _loads(text: str | bytes) -> object:
    try:
        if type(text) is str and not text.startswith("\ufeff"):
            return _DECODER.decode(text)  # what json.loads does with a str
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise InvalidInput("JSON nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        if isinstance(error, InvalidInput):
            raise
        raise InvalidInput(f"not valid JSON: {error}") from None


_KEY_ESCAPE = "json:"


def storage_key(text: str) -> str:
    """``text`` as a database key column holds it: unchanged when it is plain, else escaped.

    PostgreSQL text cannot hold NUL and neither database takes a lone surrogate, yet wallet
    and event ids arrive from outside (a feed item for an unknown wallet must still move
    the cursor). Plain text is kept as it is, so the columns stay readable; text with NUL,
    a surrogate or starting with ``json:`` becomes ``json:`` + its JSON string literal
    (ASCII). The mapping is one-to-one, so keys never collide.
    """
    if "\x00" in text or text.startswith(_KEY_ESCAPE) or _unencodable(text):
        return _KEY_ESCAPE + json.dumps(text)
    return text


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def cursor_to_json(cursor: Cursor) -> str:
    """A feed cursor as JSON text (an integer or a string)."""
    return json.dumps(_checked_cursor(cursor, "cursor"))


def _checked_cursor(value: object, where: str) -> Cursor:
    if type(value) is int or type(value) is str:
        return value
    raise InvalidInput(f"{where} must be an integer or a string, was {value!r}")


def cursor_from_json(text: str | bytes) -> Cursor:
    """The inverse of :func:`cursor_to_json`; raises ``InvalidInput`` for anything else."""
    return _checked_cursor(_loads(text), "cursor")


DIGEST_KEY = "digest"
"""The member of a record's JSON that holds its digest (schema 3, see :func:`record_to_json`)."""

_DIGEST_OPEN = f',"{DIGEST_KEY}":"'
_DIGEST_HEX = 32  # BLAKE2b-128
_DIGEST_TAIL = len(_DIGEST_OPEN) + _DIGEST_HEX + len('"}')


def _digest(canonical: str) -> str:
    return hashlib.blake2b(canonical.encode(), digest_size=_DIGEST_HEX // 2).hexdigest()


def record_to_json(record: Record) -> str:
    """One :class:`~liqshell.ports.Record` as the codec's compact, key-sorted JSON, followed
    by its digest as the last member: ``…,"digest":"<32 hex digits>"}``.

    The digest is the BLAKE2b-128 of the record's canonical JSON (the same text without the
    digest member), in UTF-8. It is an integrity check against corruption (a torn write, a
    flipped bit, an edited line), not a signature: anyone can compute it. A record whose
    text matches its digest is one liqshell wrote from validated values, so
    :func:`record_from_json` builds it without validating it again
    (:func:`liqcore.codec.trusted_structurer`); any other — no digest, a wrong one, an older
    schema — is read and validated field by field as before.
    """
    canonical = codec.to_json(record)
    return f'{canonical[:-1]}{_DIGEST_OPEN}{_digest(canonical)}"}}'


def intact(text: str) -> bool:
    """Whether ``text`` (a record's JSON, a trailing newline allowed) ends with the digest
    of the rest, as :func:`record_to_json` writes it."""
    end = len(text) - 1 if text.endswith("\n") else len(text)
    mark = end - _DIGEST_TAIL
    if mark < 1 or text[end - 2 : end] != '"}' or not text.startswith(_DIGEST_OPEN, mark):
        return False
    canonical = hashlib.blake2b(text[:mark].encode(), digest_size=_DIGEST_HEX // 2)
    canonical.update(b"}")
    return canonical.hexdigest() == text[end - 2 - _DIGEST_HEX : end - 2]


def _record_fields() -> dict[str, tuple[object, bool]]:
    hints = typing.get_type_hints(Record)
    return {
        field.name: (hints[field.name], field.default is attrs.NOTHING)
        for field in attrs.fields(Record)
    }


_RECORD_FIELDS = _record_fields()
_RECORD_NAMES = frozenset(_RECORD_FIELDS) | {DIGEST_KEY}
_RECORD_REQUIRED = frozenset(name for name, (_, required) in _RECORD_FIELDS.items() if required)


def _fast_cursor(value: object) -> Cursor | None:
    return None if value is None else _checked_cursor(value, "Record.cursor")


_FAST_FIELDS: dict[str, Callable[[object], object]] = {
    name: _fast_cursor if name == "cursor" else codec.fast_structurer(hint)
    for name, (hint, _) in _RECORD_FIELDS.items()
}
_TRUSTED_RECORD = codec.trusted_structurer(Record)


def _trusted_record(data: object) -> Record | None:
    """The record of intact data (see :func:`intact`) built without validation, or ``None``
    when it is not what this liqshell writes (another schema, another shape)."""
    try:
        if type(data) is not dict or data.get("schema") != RECORD_SCHEMA:
            return None
        digest = data.pop(DIGEST_KEY)
        try:
            return typing.cast(Record, _TRUSTED_RECORD(data))
        finally:
            data[DIGEST_KEY] = digest
    except Exception:  # the validated path decides, and says why
        return None


def record_from_data(data: object) -> Record:
    """A :class:`~liqshell.ports.Record` from parsed JSON data; raises ``InvalidInput``.

    Field by field through :func:`liqcore.codec.structure`, except the feed cursor
    (``int | str``), which is checked here: the codec has no hook for that union.
    """
    if not isinstance(data, dict):
        raise InvalidInput(f"Record must be a JSON object, was {data!r:.80}")
    if not _RECORD_NAMES.issuperset(data):
        unknown = sorted(str(key) for key in data if key not in _RECORD_NAMES)
        raise InvalidInput(f"Record: unknown field(s) {', '.join(unknown)}")
    digest = data.get(DIGEST_KEY, "")
    if type(digest) is not str:
        raise InvalidInput(f"Record.{DIGEST_KEY} must be a string, was {digest!r:.80}")
    if not _RECORD_REQUIRED.issubset(data):
        missing = sorted(name for name in _RECORD_REQUIRED if name not in data)
        raise InvalidInput(f"Record: missing required field(s) {', '.join(missing)}")
    schema = data.get("schema", 1)
    if type(schema) is not int or schema not in READABLE_SCHEMAS:
        raise InvalidInput(
            f"Record.schema {schema!r} is not one this liqshell reads "
            f"(schemas {READABLE_SCHEMAS[0]}-{READABLE_SCHEMAS[-1]}, liqshell {__version__})"
        )
    try:  # the fast path (see liqcore.codec): anything it does not take is read below
        fast = {
            name: _FAST_FIELDS[name](value) for name, value in data.items() if name != DIGEST_KEY
        }
        return Record(**fast)  # type: ignore[arg-type]
    except Exception:  # the strict path below decides, and says why
        pass
    values: dict[str, object] = {}
    for name, value in data.items():
        if name == DIGEST_KEY:
            continue
        if name == "cursor":
            values[name] = None if value is None else _checked_cursor(value, "Record.cursor")
            continue
        try:
            values[name] = codec.structure(value, _RECORD_FIELDS[name][0])  # type: ignore[call-overload]
        except InvalidInput as error:
            raise type(error)(f"Record.{name}: {error}") from None
        except RecursionError:
            raise InvalidInput(f"Record.{name}: nested too deeply") from None
    try:
        return Record(**values)  # type: ignore[arg-type]
    except (TypeError, ValueError) as error:
        raise InvalidInput(f"Record: {error}") from None


def record_from_json(text: str | bytes) -> Record:
    """The inverse of :func:`record_to_json`; raises ``InvalidInput`` naming the field.

    Text that matches its digest (:func:`intact`) is built without validating it again;
    anything else is validated field by field."""
    data = _loads(text)
    if type(text) is str and intact(text):
        record = _trusted_record(data)
        if record is not None:
            return record
    return record_from_data(data)


def record_from_line(data: object, text: str) -> Record:
    """:func:`record_from_json` of ``text`` already parsed into ``data`` (a JSON Lines
    line)."""
    if intact(text):
        record = _trusted_record(data)
        if record is not None:
            return record
    return record_from_data(data)


def read_entries(path: str | Path) -> Iterator[RecordingHeader | Record]:
    """The headers and records of a recording in order: a SQLite store's log or a JSON
    Lines file (each header precedes the records decided with its config).

    The kind is told from the file's first bytes. Raises ``FileNotFoundError``,
    ``sqlite3.DatabaseError`` or ``InvalidInput`` (naming the line) for a bad file.
    """
    with Path(path).open("rb") as handle:
        head = handle.read(len(SQLITE_MAGIC))
    if head == SQLITE_MAGIC:
        from liqshell.adapters import sqlite

        return sqlite.read_entries(path)
    from liqshell.adapters import jsonl

    return jsonl.read_entries(path)


def read_records(path: str | Path) -> Iterator[Record]:
    """The records of a recording in order (:func:`read_entries` without the headers)."""
    return (entry for entry in read_entries(path) if isinstance(entry, Record))
