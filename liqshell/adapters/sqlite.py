"""``StateStore`` and ``Recorder`` in one SQLite file (stdlib ``sqlite3``): the embedded default.

The file is opened in WAL mode with ``synchronous=FULL``: a commit that returned is on disk
and survives a crash of the process or the machine. The schema is created on first use and
versioned (table ``schema_version``); the simulator's tables (``sim_*``) may share the file.
Before anything is written, an existing file is checked to be liqshell's
(:func:`check_store_file`): empty, or a SQLite database holding only liqshell's tables with
their columns. Another program's database — with or without a table called ``states`` — or
a file that is not SQLite raises :class:`~liqshell.adapters.ForeignFile` and is left
untouched. Tables:

``states(wallet PK, version, state_json, unfinished_json, updated_at)``
    one row per wallet: the codec JSON of its :class:`~liqcore.AccountState`, the codec JSON
    of its unfinished commands (``Record.pending`` of the last commit) and the state's
    ``updated_at``.
``records(seq PK autoincrement, wallet, kind, version, now, body_json)``
    the replay log, in commit order; ``version`` is the version a commit created (for a
    record appended on its own, ``Record.version``), ``body_json`` the codec JSON of the
    :class:`~liqshell.ports.Record`. A watcher start's
    :class:`~liqshell.ports.RecordingHeader` is a row with ``kind = 'header'``,
    ``wallet = ''`` and version 0 (schema version 2).
``feed(id = 1, cursor_json)``
    the committed feed cursor.
``applied_events(event_id PK)``
    feed event ids committed with a state or a cursor.
``pruned(id = 1, records, headers, through_seq, through_now)``
    what retention removed from ``records`` so far (schema version 3; see
    :class:`~liqshell.adapters.Retention`): a reader knows the log no longer starts at
    the beginning (:func:`read_pruned`).

Wallet and event ids are stored as :func:`~liqshell.adapters.storage_key` gives them
(unchanged unless they hold NUL or a lone surrogate).

A commit is one ``BEGIN IMMEDIATE`` transaction: ``UPDATE states … WHERE wallet = ? AND
version = ?`` (an ``INSERT … ON CONFLICT DO NOTHING`` for ``expected_version == 0``), the
record, the cursor and the applied event id; no row changed → :class:`~liqshell.ports.Conflict`.
The compare-and-set holds across connections and processes on the same file. Writes queued
while a transaction is under way go in the next one together (group commit: one
transaction, one sync to disk, one hop to a worker thread per group); each is whole or
absent, and none returns before the transaction holding it committed.

``sqlite3`` blocks, so every call runs in a worker thread (``asyncio.to_thread``) on the
store's one connection, guarded by a lock: the event loop never waits on the disk, calls
are serialized, and the store can be used from several loops in turn (the queue of writes
for the next transaction belongs to the loop that runs). ``sqlite3.OperationalError``
(database locked past ``timeout_ms``, I/O error, disk full) becomes
:class:`~liqshell.adapters.StoreUnavailable`.

:func:`read_records` (and :meth:`SqliteStore.records`) read the log synchronously, for
replay and notebooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from liqcore import AccountState, codec
from liqshell.adapters import (
    DAY_MS,
    HEADER_KIND,
    SQLITE_MAGIC,
    AsyncClosing,
    ForeignFile,
    Pruned,
    Retention,
    StoreUnavailable,
    cursor_from_json,
    cursor_to_json,
    header_from_json,
    header_to_json,
    record_from_json,
    record_to_json,
    storage_key,
)
from liqshell.logs import fields, get_logger
from liqshell.ports import (
    Conflict,
    Cursor,
    LiqshellError,
    Record,
    RecordingHeader,
    Stored,
    Unfinished,
)

__all__ = [
    "SCHEMA_VERSION",
    "SqliteStore",
    "check_store_file",
    "read_entries",
    "read_pruned",
    "read_records",
    "read_rows",
]

T = TypeVar("T")
_log = get_logger("store")

SCHEMA_VERSION = 3
"""The schema version this module writes (table ``schema_version``). Version 2 adds no
table: it marks a log that may hold header rows (``kind = 'header'``), which an older
liqshell could not read. Version 3 adds table ``pruned`` (what retention removed) and an
index of the header rows and one of the poll summaries."""

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1
        """CREATE TABLE states (
            wallet TEXT PRIMARY KEY,
            version INTEGER NOT NULL CHECK (version > 0),
            state_json TEXT NOT NULL,
            unfinished_json TEXT NOT NULL,
            updated_at INTEGER NOT NULL
        )""",
        """CREATE TABLE records (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            wallet TEXT NOT NULL,
            kind TEXT NOT NULL,
            version INTEGER NOT NULL,
            now INTEGER NOT NULL,
            body_json TEXT NOT NULL
        )""",
        "CREATE INDEX records_by_wallet ON records (wallet, seq)",
        """CREATE TABLE feed (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            cursor_json TEXT NOT NULL
        )""",
        "CREATE TABLE applied_events (event_id TEXT PRIMARY KEY)",
    ),
    (),  # 2: header rows in records (kind 'header', wallet '', version 0)
    (  # 3: retention
        """CREATE TABLE pruned (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            records INTEGER NOT NULL,
            headers INTEGER NOT NULL,
            through_seq INTEGER NOT NULL,
            through_now INTEGER NOT NULL
        )""",
        "CREATE INDEX records_headers ON records (seq) WHERE kind = 'header'",
        "CREATE INDEX records_polls ON records (seq) WHERE kind = 'poll'",
    ),
)
assert len(_MIGRATIONS) == SCHEMA_VERSION

_OUR_TABLES: Mapping[str, tuple[str, ...] | None] = MappingProxyType(
    {
        "schema_version": ("id", "version"),
        "states": ("wallet", "version", "state_json", "unfinished_json", "updated_at"),
        "records": ("seq", "wallet", "kind", "version", "now", "body_json"),
        "feed": ("id", "cursor_json"),
        "applied_events": ("event_id",),
        "pruned": ("id", "records", "headers", "through_seq", "through_now"),
        # liqshell.sim.persistence: the simulated world in the watcher's file.
        "sim_world": ("id", "params", "tick", "body"),
        "sim_journal": ("seq", "body"),
        "sim_requests": ("seq", "op", "wallet", "request_id", "client_id"),
        "sqlite_sequence": None,  # SQLite's own, made for AUTOINCREMENT
    }
)
"""Every table liqshell writes into a SQLite file, with its columns in order."""
_OUR_INDEXES = frozenset({"records_by_wallet", "records_headers", "records_polls"})
_WATCHER_TABLES = frozenset({"states", "records", "feed", "applied_events", "pruned"})


def _foreign_objects(db: sqlite3.Connection) -> str | None:
    """Why the database on ``db`` is not liqshell's (``None``: it is, or it is empty)."""
    objects = db.execute("SELECT type, name FROM sqlite_master ORDER BY type, name").fetchall()
    tables: set[str] = set()
    for kind, name in objects:
        if kind == "table":
            if name not in _OUR_TABLES:
                return f"it holds table {name!r}, which liqshell does not write"
            tables.add(name)
        elif kind == "index":
            if name not in _OUR_INDEXES and not name.startswith("sqlite_autoindex_"):
                return f"it holds index {name!r}, which liqshell does not write"
        else:
            return f"it holds {kind} {name!r}, which liqshell does not write"
    for name in sorted(tables):
        expected = _OUR_TABLES[name]
        columns = tuple(row[1] for row in db.execute(f'PRAGMA table_info("{name}")'))
        if expected is not None and columns != expected:
            return f"its table {name!r} has columns {', '.join(columns)}, not liqshell's"
    if tables & _WATCHER_TABLES and "schema_version" not in tables:
        return (
            f"it holds table(s) {', '.join(sorted(tables & _WATCHER_TABLES))} but no schema_version"
        )
    return None


def _check_ours(db: sqlite3.Connection, path: str) -> None:
    try:
        problem = _foreign_objects(db)
    except sqlite3.DatabaseError as error:
        if isinstance(error, sqlite3.OperationalError) and "locked" in str(error):
            raise
        raise ForeignFile(
            f"{path}: not a liqshell store ({error}): refusing to write to it"
        ) from None
    if problem is not None:
        raise ForeignFile(f"{path}: not a liqshell store, {problem}: refusing to write to it")


def check_store_file(path: str | os.PathLike[str]) -> None:
    """Raise :class:`~liqshell.adapters.ForeignFile` unless the file at ``path`` is missing,
    empty, or a SQLite database holding only liqshell's tables (the watcher's and the
    simulator's, with their columns). Reads only: nothing is written, no WAL file is made."""
    where = os.fspath(path)
    location = Path(where)
    if not location.exists():
        return
    if location.is_dir():
        raise ForeignFile(f"{where}: is a directory")
    with location.open("rb") as handle:
        head = handle.read(len(SQLITE_MAGIC))
    if not head:
        return
    if head != SQLITE_MAGIC:
        raise ForeignFile(f"{where}: not a SQLite file: refusing to write to it")
    db = sqlite3.connect(f"{location.resolve().as_uri()}?mode=ro", uri=True)
    try:
        _check_ours(db, where)
    finally:
        db.close()


_INSERT_STATE = (
    "INSERT INTO states (wallet, version, state_json, unfinished_json, updated_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (wallet) DO NOTHING"
)
_UPDATE_STATE = (
    "UPDATE states SET version = ?, state_json = ?, unfinished_json = ?, updated_at = ? "
    "WHERE wallet = ? AND version = ?"
)
_INSERT_RECORD = (
    "INSERT INTO records (wallet, kind, version, now, body_json) VALUES (?, ?, ?, ?, ?)"
)
_SET_CURSOR = (
    "INSERT INTO feed (id, cursor_json) VALUES (1, ?) "
    "ON CONFLICT (id) DO UPDATE SET cursor_json = excluded.cursor_json"
)
_MARK_APPLIED = "INSERT INTO applied_events (event_id) VALUES (?) ON CONFLICT DO NOTHING"
_PAGE = 1_000


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """A write transaction: the write lock is taken up front, so two writers never
    deadlock upgrading a read lock; rolled back on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _migrate(db: sqlite3.Connection, path: str) -> None:
    with _transaction(db):
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)"
        )
        row = db.execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
        current = 0 if row is None else int(row[0])
        if current > SCHEMA_VERSION:
            raise LiqshellError(
                f"SQLite store {path} has schema version {current}; this liqshell knows "
                f"versions up to {SCHEMA_VERSION} (upgrade liqshell)"
            )
        for statements in _MIGRATIONS[current:]:
            for statement in statements:
                db.execute(statement)
        db.execute(
            "INSERT INTO schema_version (id, version) VALUES (1, ?) "
            "ON CONFLICT (id) DO UPDATE SET version = excluded.version",
            (SCHEMA_VERSION,),
        )


def _group_writer(
    group: Sequence[tuple[Callable[[sqlite3.Connection], T], object]],
) -> Callable[[sqlite3.Connection], list[T]]:
    """One write transaction running each write of ``group`` in order: their results."""

    def run(db: sqlite3.Connection) -> list[T]:
        with _transaction(db):
            return [write(db) for write, _ in group]

    return run


def _settle(
    done: asyncio.Future[T], result: T | None = None, *, error: Exception | None = None
) -> None:
    """Resolve a queued write's future (unless its caller stopped waiting: cancelled)."""
    if done.done():
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)  # type: ignore[arg-type]


def _insert_record(db: sqlite3.Connection, record: Record, body: str) -> None:
    """Append ``record`` (encoded as ``body``) to the log, keyed by its own wallet."""
    db.execute(
        _INSERT_RECORD,
        (storage_key(record.wallet), record.kind.value, record.version, record.now, body),
    )


def _check_commit(wallet: str, state: AccountState, expected_version: int) -> None:
    if state.wallet != wallet:
        raise ValueError(f"commit of wallet {wallet!r} got a state of {state.wallet!r}")
    if type(expected_version) is not int or expected_version < 0:
        raise ValueError(f"expected_version must be an int >= 0, was {expected_version!r}")


def _wallet_of(stored: Stored) -> str:
    return stored.state.wallet


def _stored(version: int, state_json: str, unfinished_json: str) -> Stored:
    return Stored(
        state=codec.from_json(state_json, AccountState),
        version=version,
        unfinished=codec.from_json(unfinished_json, tuple[Unfinished, ...]),
    )


# ---------------------------------------------------------------------------- retention

_FIRST_RECORD = "SELECT seq FROM records WHERE kind <> 'header' ORDER BY seq LIMIT 1"
_NEWEST_NOW = "SELECT now FROM records WHERE kind <> 'header' ORDER BY seq DESC LIMIT 1"
_NTH_NEWEST = "SELECT seq FROM records WHERE kind <> 'header' ORDER BY seq DESC LIMIT 1 OFFSET ?"
_FIRST_YOUNG = "SELECT seq FROM records WHERE kind <> 'header' AND now >= ? ORDER BY seq LIMIT 1"
_LAST_POLL = "SELECT seq FROM records WHERE kind = 'poll' AND seq <= ? ORDER BY seq DESC LIMIT 1"
_NEXT_POLL = "SELECT seq FROM records WHERE kind = 'poll' AND seq > ? ORDER BY seq LIMIT 1"
_NTH_FROM = (
    "SELECT seq FROM records WHERE seq >= ? AND kind <> 'header' ORDER BY seq LIMIT 1 OFFSET ?"
)
_STRADDLING = (
    # Decisions in [low, end] whose wallet's next record, after end, is their outcomes.
    "SELECT d.seq, n.seq FROM records AS d JOIN records AS n ON n.seq = "
    "(SELECT min(x.seq) FROM records AS x WHERE x.wallet = d.wallet AND x.seq > d.seq) "
    "WHERE d.seq BETWEEN ? AND ? AND d.kind = 'decision' AND n.seq > ? AND n.kind = 'outcomes'"
)
_LAST_PRUNED_NOW = (
    "SELECT now FROM records WHERE seq <= ? AND kind <> 'header' ORDER BY seq DESC LIMIT 1"
)
_DELETE_RECORDS = "DELETE FROM records WHERE seq <= ? AND kind <> 'header'"
_DELETE_HEADERS = (
    "DELETE FROM records WHERE kind = 'header' AND seq < "
    "(SELECT max(seq) FROM records WHERE kind = 'header' AND seq <= ?)"
)
_ADD_PRUNED = (
    "INSERT INTO pruned (id, records, headers, through_seq, through_now) VALUES (1, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET records = records + excluded.records, "
    "headers = headers + excluded.headers, "
    "through_seq = max(through_seq, excluded.through_seq), "
    "through_now = max(through_now, excluded.through_now)"
)


def _one(db: sqlite3.Connection, query: str, *args: object) -> int | None:
    row = db.execute(query, args).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def _prune_target(db: sqlite3.Connection, retention: Retention) -> int:
    """The newest ``seq`` a pass may remove (0: nothing): past both limits, and in a log
    with poll summaries the last summary at or before it (whole polls; none when the
    limit falls in the oldest poll)."""
    target = 0
    if retention.keep_records is not None:
        target = max(target, _one(db, _NTH_NEWEST, retention.keep_records) or 0)
    if retention.keep_days is not None:
        newest = _one(db, _NEWEST_NOW)
        if newest is not None:
            young = _one(db, _FIRST_YOUNG, newest - retention.keep_days * DAY_MS)
            target = max(target, (young or 1) - 1)
    low = _one(db, _FIRST_RECORD)
    if low is None or target < low:
        return 0
    last_poll = _one(db, _LAST_POLL, target)
    if last_poll is not None and last_poll >= low:
        return last_poll
    if _one(db, _NEXT_POLL, target) is not None:
        return 0  # the limit falls in the oldest poll, which a summary still ends
    return target


def _batch_end(db: sqlite3.Connection, target: int, batch: int) -> int | None:
    """The newest ``seq`` of the next batch (about ``batch`` records from the oldest, at
    most ``target``) such that no decision is removed without its outcomes; ``None``:
    nothing can go."""
    low = _one(db, _FIRST_RECORD)
    if low is None or low > target:
        return None
    nth = _one(db, _NTH_FROM, low, batch - 1)
    end = target if nth is None else min(nth, target)
    ceiling = target
    while end >= low:
        straddling = db.execute(_STRADDLING, (low, end, end)).fetchall()
        if not straddling:
            return end
        beyond = [decision for decision, outcomes in straddling if outcomes > ceiling]
        if beyond:  # their outcomes stay: so do they
            ceiling = end = min(beyond) - 1
        else:  # take the outcomes along
            end = max(outcomes for _, outcomes in straddling)
    return None


def _prune_batch(db: sqlite3.Connection, target: int, batch: int) -> Pruned | None:
    """Remove one batch (one transaction); ``None`` when nothing more can go."""
    with _transaction(db):
        end = _batch_end(db, target, batch)
        if end is None:
            return None
        through_now = _one(db, _LAST_PRUNED_NOW, end) or 0
        records = db.execute(_DELETE_RECORDS, (end,)).rowcount
        headers = db.execute(_DELETE_HEADERS, (end,)).rowcount
        db.execute(_ADD_PRUNED, (records, headers, end, through_now))
    return Pruned(records=records, headers=headers, through_seq=end, through_now=through_now)


def _prune_pass(
    db: sqlite3.Connection, retention: Retention, stop: threading.Event | None = None
) -> Pruned:
    """Prune what ``retention`` lets go, batch after batch (``stop`` ends it between two)."""
    total = Pruned()
    target = _prune_target(db, retention)
    while target and (stop is None or not stop.is_set()):
        done = _prune_batch(db, target, retention.batch)
        if done is None:
            break
        total += done
        if done.through_seq >= target:
            break
    return total


def read_pruned(path: str | os.PathLike[str]) -> Pruned:
    """What retention removed from the log of the SQLite store at ``path`` (nothing for a
    store that never pruned, or of a schema before version 3). Opens the file read-only."""
    location = Path(path)
    if not location.is_file():
        raise FileNotFoundError(f"no SQLite store at {os.fspath(path)}")
    with contextlib.ExitStack() as stack:
        db = _open_read_only(location, stack)
        stack.callback(db.close)
        try:
            row = db.execute(
                "SELECT records, headers, through_seq, through_now FROM pruned WHERE id = 1"
            ).fetchone()
        except sqlite3.OperationalError:  # no such table: an older schema
            return Pruned()
    if row is None:
        return Pruned()
    return Pruned(records=row[0], headers=row[1], through_seq=row[2], through_now=row[3])


class SqliteStore(AsyncClosing):
    """``StateStore`` and ``Recorder`` in the SQLite file at ``path`` (created if missing).

    ``timeout_ms`` is how long a call waits for another connection's write lock before it
    raises :class:`~liqshell.adapters.StoreUnavailable`. The connection opens on first use
    and again after :meth:`close`. ``retention`` (default: keep everything) prunes the log
    in the background: after a write, at most every ``retention.interval_ms``, a pass runs
    in a thread of its own on a connection of its own, one short transaction per batch, so
    a commit waits at most for one batch's write lock (:meth:`prune` runs one now).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout_ms: int = 10_000,
        retention: Retention | None = None,
    ) -> None:
        if retention is not None and not isinstance(retention, Retention):
            raise TypeError(f"SqliteStore retention must be a Retention, was {retention!r}")
        self.path = os.fspath(path)
        self.timeout_ms = timeout_ms
        self.retention = retention or Retention()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._prune_lock = threading.Lock()
        self._pruner: threading.Thread | None = None
        self._stop_pruning = threading.Event()
        self._next_prune = time.monotonic() + self.retention.interval_ms / 1000
        self._pruned = Pruned()
        # Group commit (see _write): the writes waiting for the next transaction, and the
        # task writing them, on the loop that queued them.
        self._group_loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    # ------------------------------------------------------------------ plumbing

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(
                self.path,
                timeout=self.timeout_ms / 1000,
                isolation_level=None,  # transactions are explicit
                check_same_thread=False,  # used from worker threads, under self._lock
            )
            try:
                _check_ours(db, self.path)  # before the first write, even of the WAL mode
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                _migrate(db, self.path)
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    def _locked(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            try:
                return fn(self._connection())
            except sqlite3.OperationalError as error:
                raise StoreUnavailable(f"SQLite store {self.path}: {error}") from error

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self._locked, fn)

    # ------------------------------------------------------------------ StateStore

    async def load(self) -> Mapping[str, Stored]:
        """Every stored wallet, sorted by wallet."""
        rows = await self._call(
            lambda db: db.execute(
                "SELECT wallet, version, state_json, unfinished_json FROM states ORDER BY wallet"
            ).fetchall()
        )
        stored = [_stored(version, state, unfinished) for _, version, state, unfinished in rows]
        return MappingProxyType({s.state.wallet: s for s in sorted(stored, key=_wallet_of)})

    async def load_one(self, wallet: str) -> Stored | None:
        """One wallet's entry (``None``: nothing stored)."""
        row = await self._call(
            lambda db: db.execute(
                "SELECT version, state_json, unfinished_json FROM states WHERE wallet = ?",
                (storage_key(wallet),),
            ).fetchone()
        )
        return None if row is None else _stored(int(row[0]), row[1], row[2])

    async def history(self, wallet: str, *, after_version: int) -> Sequence[Record]:
        """The records committed with the wallet's states after ``after_version``, in order."""
        rows = await self._call(
            lambda db: db.execute(
                "SELECT body_json FROM records WHERE wallet = ? AND version > ? ORDER BY seq",
                (storage_key(wallet), after_version),
            ).fetchall()
        )
        records = (record_from_json(body) for (body,) in rows)
        return tuple(record for record in records if record.commits_version)

    async def cursor(self) -> Cursor | None:
        """The committed feed cursor."""
        row = await self._call(
            lambda db: db.execute("SELECT cursor_json FROM feed WHERE id = 1").fetchone()
        )
        return None if row is None else cursor_from_json(row[0])

    async def applied(self, event_id: str) -> bool:
        """Whether a feed item with ``event_id`` was committed."""
        row = await self._call(
            lambda db: db.execute(
                "SELECT 1 FROM applied_events WHERE event_id = ?", (storage_key(event_id),)
            ).fetchone()
        )
        return row is not None

    async def commit(
        self,
        wallet: str,
        state: AccountState,
        record: Record,
        *,
        expected_version: int,
        cursor: Cursor | None = None,
    ) -> int:
        """Compare-and-set ``state`` with ``record`` (its ``pending`` as the unfinished
        commands), ``cursor`` and ``record.event_id``, in one transaction; returns
        ``expected_version + 1``. Raises :class:`~liqshell.ports.Conflict`."""
        _check_commit(wallet, state, expected_version)
        version = expected_version + 1
        state_json = codec.to_json(state)
        unfinished_json = codec.to_json(record.pending)
        body = record_to_json(record)
        cursor_json = None if cursor is None else cursor_to_json(cursor)
        key = storage_key(wallet)
        applied = None if record.event_id is None else storage_key(record.event_id)

        def run(db: sqlite3.Connection) -> int | Conflict:
            if expected_version == 0:
                changed = db.execute(
                    _INSERT_STATE,
                    (key, version, state_json, unfinished_json, state.updated_at),
                ).rowcount
            else:
                changed = db.execute(
                    _UPDATE_STATE,
                    (
                        version,
                        state_json,
                        unfinished_json,
                        state.updated_at,
                        key,
                        expected_version,
                    ),
                ).rowcount
            if changed != 1:  # nothing of this commit was written
                row = db.execute("SELECT version FROM states WHERE wallet = ?", (key,)).fetchone()
                return Conflict(
                    f"wallet {wallet!r} is at version {0 if row is None else row[0]}, "
                    f"expected {expected_version}"
                )
            db.execute(_INSERT_RECORD, (key, record.kind.value, version, record.now, body))
            if cursor_json is not None:
                db.execute(_SET_CURSOR, (cursor_json,))
            if applied is not None:
                db.execute(_MARK_APPLIED, (applied,))
            return version

        result = await self._write(run)
        if isinstance(result, Conflict):
            raise result
        return version

    async def commit_cursor(self, cursor: Cursor, record: Record) -> None:
        """Move the cursor with ``record`` (and ``record.event_id`` as applied), atomically."""
        cursor_json = cursor_to_json(cursor)
        body = record_to_json(record)

        def run(db: sqlite3.Connection) -> None:
            _insert_record(db, record, body)
            db.execute(_SET_CURSOR, (cursor_json,))
            if record.event_id is not None:
                db.execute(_MARK_APPLIED, (storage_key(record.event_id),))

        await self._write(run)

    # ------------------------------------------------------------------ group commit

    async def _write(self, write: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``write`` in a write transaction, together with the writes queued meanwhile
        (group commit): one transaction, one sync to disk and one hop to a worker thread
        for all of them. Each write is whole or absent (a commit's compare-and-set that
        fails writes nothing and returns its ``Conflict``); none returns before the
        transaction that holds it committed, so a caller acts only on what is on disk. A
        group that fails is tried again write by write unless the store is unavailable
        (then every write of it raises)."""
        loop = asyncio.get_running_loop()
        if self._group_loop is not loop:  # another loop's queue is gone with its loop
            self._group_loop = loop
            self._queue = []
            self._flusher = None
        done: asyncio.Future[T] = loop.create_future()
        self._queue.append((write, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        """Write the queued writes, group after group, until the queue is empty."""
        while self._queue:
            # A write whose caller stopped waiting before its group began is not written.
            group = [(write, done) for write, done in self._queue if not done.cancelled()]
            self._queue = []
            if not group:
                continue
            try:
                results = await self._call(_group_writer(group))
            except asyncio.CancelledError:
                for _, done in group + self._queue:
                    done.cancel()
                self._queue = []
                raise
            except Exception as error:
                if isinstance(error, StoreUnavailable) or len(group) == 1:
                    for _, done in group:
                        _settle(done, error=error)
                    continue
                # Something in one write failed the group: each alone, so it fails alone.
                wrote = False
                for write, done in group:
                    try:
                        (alone,) = await self._call(_group_writer([(write, done)]))
                    except Exception as failure:
                        _settle(done, error=failure)
                    else:
                        wrote = True
                        _settle(done, alone)
                if wrote:
                    self._after_write()
                continue
            self._after_write()
            for (_, done), result in zip(group, results, strict=True):
                _settle(done, result)

    async def close(self) -> None:
        """Stop a background pruning pass (between two batches) and close the connection
        (the next call opens it again)."""

        def run() -> None:
            with self._prune_lock:
                pruner, self._pruner = self._pruner, None
            if pruner is not None:
                self._stop_pruning.set()
                pruner.join()
                self._stop_pruning.clear()
            with self._lock:
                db, self._db = self._db, None
                if db is not None:
                    db.close()

        await asyncio.to_thread(run)

    # ------------------------------------------------------------------ retention

    @property
    def pruned_total(self) -> Pruned:
        """What this store object's pruning passes removed so far (the metric's source)."""
        with self._prune_lock:
            return self._pruned

    async def prune(self) -> Pruned:
        """Run one pruning pass now (bounded batches on a connection of its own) and return
        what it removed; nothing when the retention keeps everything."""
        return await asyncio.to_thread(self._prune_now, None)

    def _prune_now(self, stop: threading.Event | None) -> Pruned:
        if self.retention.keeps_everything:
            return Pruned()
        db = sqlite3.connect(self.path, timeout=self.timeout_ms / 1000, isolation_level=None)
        try:
            self._connection_ready()
            done = _prune_pass(db, self.retention, stop)
        except sqlite3.OperationalError as error:
            raise StoreUnavailable(f"SQLite store {self.path}: pruning: {error}") from error
        finally:
            db.close()
        with self._prune_lock:
            self._pruned += done
        return done

    def _connection_ready(self) -> None:
        """Open (check, migrate) the store's own connection first: the pruning connection
        then meets a file of the current schema."""
        with self._lock:
            self._connection()

    def _after_write(self) -> None:
        """Start a background pass if one is due and none runs."""
        if self.retention.keeps_everything:
            return
        now = time.monotonic()
        with self._prune_lock:
            if now < self._next_prune or (self._pruner is not None and self._pruner.is_alive()):
                return
            self._next_prune = now + self.retention.interval_ms / 1000
            self._pruner = threading.Thread(
                target=self._prune_in_background, name="liqshell-sqlite-prune", daemon=True
            )
            self._pruner.start()

    def _prune_in_background(self) -> None:
        try:
            done = self._prune_now(self._stop_pruning)
        except Exception as error:
            _log.warning("pruning the log of %s failed: %r", self.path, error, extra=fields())
            return
        if done.records:
            _log.info(
                "pruned %d records and %d headers from the log of %s (through seq %d)",
                done.records,
                done.headers,
                self.path,
                done.through_seq,
                extra=fields(),
            )

    # ------------------------------------------------------------------ Recorder

    async def append(self, record: Record) -> None:
        """Append ``record`` to the log on its own (no state changes)."""
        body = record_to_json(record)

        def run(db: sqlite3.Connection) -> None:
            _insert_record(db, record, body)

        await self._write(run)

    async def begin(self, header: RecordingHeader) -> None:
        """Record a watcher start's header as a row of the log (``kind = 'header'``,
        ``wallet = ''``, version 0): the records after it were decided with its config."""
        body = header_to_json(header)
        now = header.started if header.started is not None else 0

        def run(db: sqlite3.Connection) -> None:
            db.execute(_INSERT_RECORD, ("", HEADER_KIND, 0, now, body))

        await self._write(run)

    # ------------------------------------------------------------------ reading the log

    def entries(self) -> Iterator[RecordingHeader | Record]:
        """Headers and records in order, read synchronously (see :func:`read_entries`)."""
        return read_entries(self.path)

    def records(self, *, wallet: str | None = None) -> Iterator[Record]:
        """The log in order, read synchronously on a connection of its own (see read_records)."""
        return read_records(self.path, wallet=wallet)


def read_records(path: str | os.PathLike[str], *, wallet: str | None = None) -> Iterator[Record]:
    """The records of the SQLite store at ``path`` in commit order (only ``wallet``'s if given).

    Opens the file read-only; raises ``FileNotFoundError`` if it is missing,
    ``sqlite3.DatabaseError`` if it is not a store, ``InvalidInput`` for a bad record.
    """
    location = Path(path)
    if not location.is_file():
        raise FileNotFoundError(f"no SQLite store at {os.fspath(path)}")
    entries = _read_entries(location, wallet)
    return (entry for entry in entries if isinstance(entry, Record))


def read_entries(path: str | os.PathLike[str]) -> Iterator[RecordingHeader | Record]:
    """The header rows and records of the SQLite store at ``path``, in commit order (read
    as :func:`read_records` reads)."""
    location = Path(path)
    if not location.is_file():
        raise FileNotFoundError(f"no SQLite store at {os.fspath(path)}")
    return _read_entries(location, None)


def _read_entries(location: Path, wallet: str | None) -> Iterator[RecordingHeader | Record]:
    with contextlib.ExitStack() as stack:
        db = _open_read_only(location, stack)
        stack.callback(db.close)
        after = 0
        while True:
            if wallet is None:
                rows = db.execute(
                    "SELECT seq, kind, body_json FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after, _PAGE),
                ).fetchall()
            else:
                rows = db.execute(
                    "SELECT seq, kind, body_json FROM records WHERE wallet = ? AND seq > ? "
                    "ORDER BY seq LIMIT ?",
                    (storage_key(wallet), after, _PAGE),
                ).fetchall()
            if not rows:
                return
            for seq, kind, body in rows:
                yield header_from_json(body) if kind == HEADER_KIND else record_from_json(body)
                after = seq


def read_rows(path: str | os.PathLike[str]) -> Iterator[tuple[int, str, str, str]]:
    """``(seq, wallet key, kind, body JSON)`` of each row of the store's log, in commit
    order, undecoded (headers included: ``kind == HEADER_KIND``) — for a reader that
    decodes elsewhere (the workers of a Dask replay)."""
    location = Path(path)
    if not location.is_file():
        raise FileNotFoundError(f"no SQLite store at {os.fspath(path)}")
    with contextlib.ExitStack() as stack:
        db = _open_read_only(location, stack)
        stack.callback(db.close)
        after = 0
        while True:
            rows = db.execute(
                "SELECT seq, wallet, kind, body_json FROM records WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (after, _PAGE),
            ).fetchall()
            if not rows:
                return
            yield from rows
            after = rows[-1][0]


def _open_read_only(location: Path, stack: contextlib.ExitStack) -> sqlite3.Connection:
    """A connection that reads the store at ``location`` and writes nothing, even where the
    folder is read-only: ``mode=ro`` first; if SQLite cannot open the WAL index there, the
    file is read as ``immutable`` when no WAL content is pending, else from a private copy of
    the file and its WAL (so no committed transaction is missed)."""
    uri = location.resolve().as_uri()
    db = sqlite3.connect(f"{uri}?mode=ro", uri=True)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        db.close()
    else:
        return db
    wal = location.with_name(location.name + "-wal")
    if not wal.exists() or wal.stat().st_size == 0:
        return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True)
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="liqshell-read-")))
    copy = folder / location.name
    shutil.copyfile(location, copy)
    shutil.copyfile(wal, folder / wal.name)
    return sqlite3.connect(copy, isolation_level=None)
