"""``StateStore`` and ``Recorder`` on PostgreSQL (psycopg 3 async with a connection pool).

Install the ``postgres`` extra (``psycopg[binary,pool]``). The tables live in their own
PostgreSQL schema (``liqshell`` unless told otherwise, created if missing), so several
stores — a live one and a shadow one — can share a database. The schema is created on
first use and versioned (table ``schema_migrations``); concurrent first uses are serialized
by an advisory lock. Tables, as in :mod:`liqshell.adapters.sqlite`:
``states(wallet PK, version, state_json, unfinished_json, updated_at)``,
``records(seq PK bigserial, wallet, kind, version, now, body_json)``,
``feed(id = 1, cursor_json)``, ``applied_events(event_id PK)``; JSON is kept as ``text``
exactly as :mod:`liqcore.codec` wrote it (cast to ``jsonb`` to query it), wallet and event
ids as :func:`~liqshell.adapters.storage_key` gives them (PostgreSQL text cannot hold NUL).

A commit is one transaction: ``UPDATE states … WHERE wallet = %s AND version = %s`` (an
``INSERT … ON CONFLICT DO NOTHING`` for ``expected_version == 0``), the record, the cursor
and the applied event id; no row changed → :class:`~liqshell.ports.Conflict`. Under READ
COMMITTED a concurrent commit on the same wallet waits for the row lock and then finds the
version moved, so of two instances racing on one version exactly one wins. Records of one
wallet are in commit order; across wallets ``seq`` follows insertion.

Leases of shards (:class:`~liqshell.ports.LeaseStore`, schema versions 3 and 4): tables
``cluster(id = 1, shards)``, ``leases(shard PK, holder, epoch, expires_at)`` and
``members(member PK, expires_at)`` (the heartbeats of a cluster's instances); a commit
given a ``lease`` reads the shard's row ``FOR SHARE`` in its transaction and raises
:class:`~liqshell.ports.Fenced` unless the epoch is still the lease's (``docs/shell.md``,
"Many instances").

Connections come from a ``psycopg_pool.AsyncConnectionPool`` opened on first use; each is
checked when taken from the pool, so after a PostgreSQL restart the first call reconnects.
Connection loss, a server shutting down, a pool timeout — ``psycopg.OperationalError`` and
``InterfaceError`` — become :class:`~liqshell.adapters.StoreUnavailable` (retriable; for a
commit: *not known to be committed*). The pool belongs to the event loop that opened it:
:meth:`PostgresStore.close` it before driving the store from another loop (if you do not,
a new pool is opened there and the old one's connections are abandoned).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, LiteralString

import attrs
import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from liqcore import AccountState, codec
from liqshell.adapters import (
    DAY_MS,
    HEADER_KIND,
    AsyncClosing,
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
from liqshell.cluster import shard_of
from liqshell.logs import fields, get_logger
from liqshell.ports import (
    Conflict,
    Cursor,
    Fenced,
    Lease,
    LiqshellError,
    Record,
    RecordingHeader,
    Stored,
    Unfinished,
)
from liqshell.redaction import redact

__all__ = ["LEASES_SCHEMA_VERSION", "SCHEMA_VERSION", "PostgresStore"]

SCHEMA_VERSION = 5
"""The schema version this module writes (table ``schema_migrations``). Version 2 adds no
table: it marks a log that may hold header rows (``kind = 'header'``, ``wallet = ''``,
version 0), which an older liqshell could not read. Version 3 adds the leases of shards
(tables ``cluster`` and ``leases``) and the epoch each state was committed under
(``states.epoch``, 0: without a lease); version 4 the members of a cluster (``members``);
version 5 table ``pruned`` (what retention removed) and indexes of the header rows and of
the poll summaries."""

LEASES_SCHEMA_VERSION = 3
"""The schema version that added the leases (``cluster``, ``leases``, ``states.epoch``);
the next one added ``members``."""

_MIGRATIONS: tuple[tuple[LiteralString, ...], ...] = (
    (  # 1
        """CREATE TABLE {schema}.states (
            wallet text PRIMARY KEY,
            version bigint NOT NULL CHECK (version > 0),
            state_json text NOT NULL,
            unfinished_json text NOT NULL,
            updated_at bigint NOT NULL
        )""",
        """CREATE TABLE {schema}.records (
            seq bigserial PRIMARY KEY,
            wallet text NOT NULL,
            kind text NOT NULL,
            version bigint NOT NULL,
            now bigint NOT NULL,
            body_json text NOT NULL
        )""",
        "CREATE INDEX records_by_wallet ON {schema}.records (wallet, seq)",
        """CREATE TABLE {schema}.feed (
            id smallint PRIMARY KEY CHECK (id = 1),
            cursor_json text NOT NULL
        )""",
        "CREATE TABLE {schema}.applied_events (event_id text PRIMARY KEY)",
    ),
    (),  # 2: header rows in records
    (  # 3: leases with fencing
        """CREATE TABLE {schema}.cluster (
            id smallint PRIMARY KEY CHECK (id = 1),
            shards integer NOT NULL CHECK (shards > 0)
        )""",
        """CREATE TABLE {schema}.leases (
            shard integer PRIMARY KEY CHECK (shard >= 0),
            holder text NOT NULL,
            epoch bigint NOT NULL CHECK (epoch > 0),
            expires_at bigint NOT NULL
        )""",
        "ALTER TABLE {schema}.states ADD COLUMN epoch bigint NOT NULL DEFAULT 0",
    ),
    (  # 4: members of a cluster
        """CREATE TABLE {schema}.members (
            member text PRIMARY KEY,
            expires_at bigint NOT NULL
        )""",
    ),
    (  # 5: retention
        """CREATE TABLE {schema}.pruned (
            id smallint PRIMARY KEY CHECK (id = 1),
            records bigint NOT NULL,
            headers bigint NOT NULL,
            through_seq bigint NOT NULL,
            through_now bigint NOT NULL
        )""",
        "CREATE INDEX records_headers ON {schema}.records (seq) WHERE kind = 'header'",
        "CREATE INDEX records_polls ON {schema}.records (seq) WHERE kind = 'poll'",
    ),
)
assert len(_MIGRATIONS) == SCHEMA_VERSION

_log = get_logger("store")
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_PAGE = 1_000


class _Queries:
    """The statements of one schema, composed once."""

    def __init__(self, schema: str) -> None:
        name = sql.Identifier(schema)

        def q(text: LiteralString) -> sql.Composed:
            return sql.SQL(text).format(schema=name)

        self.create_schema = q("CREATE SCHEMA IF NOT EXISTS {schema}")
        self.create_migrations = q(
            "CREATE TABLE IF NOT EXISTS {schema}.schema_migrations ("
            "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        self.current_version = q("SELECT coalesce(max(version), 0) FROM {schema}.schema_migrations")
        self.add_migration = q("INSERT INTO {schema}.schema_migrations (version) VALUES (%s)")
        self.migrations = tuple(tuple(q(text) for text in step) for step in _MIGRATIONS)
        self.load = q(
            "SELECT wallet, version, state_json, unfinished_json FROM {schema}.states "
            "ORDER BY wallet"
        )
        self.load_one = q(
            "SELECT version, state_json, unfinished_json FROM {schema}.states WHERE wallet = %s"
        )
        self.history = q(
            "SELECT body_json FROM {schema}.records WHERE wallet = %s AND version > %s ORDER BY seq"
        )
        self.cursor = q("SELECT cursor_json FROM {schema}.feed WHERE id = 1")
        self.applied = q("SELECT 1 FROM {schema}.applied_events WHERE event_id = %s")
        self.insert_state = q(
            "INSERT INTO {schema}.states "
            "(wallet, version, state_json, unfinished_json, updated_at, epoch) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (wallet) DO NOTHING"
        )
        self.update_state = q(
            "UPDATE {schema}.states SET version = %s, state_json = %s, unfinished_json = %s, "
            "updated_at = %s, epoch = %s WHERE wallet = %s AND version = %s"
        )
        self.version_of = q("SELECT version FROM {schema}.states WHERE wallet = %s")
        self.insert_record = q(
            "INSERT INTO {schema}.records (wallet, kind, version, now, body_json) "
            "VALUES (%s, %s, %s, %s, %s)"
        )
        self.set_cursor = q(
            "INSERT INTO {schema}.feed (id, cursor_json) VALUES (1, %s) "
            "ON CONFLICT (id) DO UPDATE SET cursor_json = excluded.cursor_json"
        )
        self.mark_applied = q(
            "INSERT INTO {schema}.applied_events (event_id) VALUES (%s) ON CONFLICT DO NOTHING"
        )
        self.set_shards = q(
            "INSERT INTO {schema}.cluster (id, shards) VALUES (1, %s) ON CONFLICT (id) DO NOTHING"
        )
        self.shards = q("SELECT shards FROM {schema}.cluster WHERE id = 1")
        self.acquire = q(
            "INSERT INTO {schema}.leases AS l (shard, holder, epoch, expires_at) "
            "VALUES (%(shard)s, %(holder)s, 1, %(until)s) "
            "ON CONFLICT (shard) DO UPDATE SET holder = excluded.holder, "
            "epoch = l.epoch + 1, expires_at = excluded.expires_at "
            "WHERE l.expires_at <= %(now)s OR l.holder = excluded.holder "
            "RETURNING epoch"
        )
        self.renew = q(
            "UPDATE {schema}.leases SET expires_at = %s "
            "WHERE shard = %s AND epoch = %s AND holder = %s"
        )
        self.release = q(
            "UPDATE {schema}.leases SET expires_at = 0 "
            "WHERE shard = %s AND epoch = %s AND holder = %s"
        )
        self.leases = q(
            "SELECT shard, holder, epoch, expires_at FROM {schema}.leases ORDER BY shard"
        )
        self.heartbeat = q(
            "INSERT INTO {schema}.members AS m (member, expires_at) VALUES (%s, %s) "
            "ON CONFLICT (member) DO UPDATE SET expires_at = excluded.expires_at"
        )
        self.members = q(
            "SELECT member FROM {schema}.members WHERE expires_at > %s ORDER BY member"
        )
        self.leave = q("UPDATE {schema}.members SET expires_at = 0 WHERE member = %s")
        self.fence = q("SELECT holder, epoch FROM {schema}.leases WHERE shard = %s FOR SHARE")
        self.records = q(
            "SELECT seq, kind, body_json FROM {schema}.records WHERE seq > %s ORDER BY seq LIMIT %s"
        )
        self.log_position = q("SELECT coalesce(max(seq), 0) FROM {schema}.records")
        self.decisions_after = q(
            "SELECT seq, body_json FROM {schema}.records WHERE seq > %s AND kind = 'decision' "
            "AND version > 0 ORDER BY seq LIMIT %s"
        )
        self.first_record = q(
            "SELECT seq FROM {schema}.records WHERE kind <> 'header' ORDER BY seq LIMIT 1"
        )
        self.newest_now = q(
            "SELECT now FROM {schema}.records WHERE kind <> 'header' ORDER BY seq DESC LIMIT 1"
        )
        self.nth_newest = q(
            "SELECT seq FROM {schema}.records WHERE kind <> 'header' "
            "ORDER BY seq DESC LIMIT 1 OFFSET %s"
        )
        self.first_young = q(
            "SELECT seq FROM {schema}.records WHERE kind <> 'header' AND now >= %s "
            "ORDER BY seq LIMIT 1"
        )
        self.last_poll = q(
            "SELECT seq FROM {schema}.records WHERE kind = 'poll' AND seq <= %s "
            "ORDER BY seq DESC LIMIT 1"
        )
        self.next_poll = q(
            "SELECT seq FROM {schema}.records WHERE kind = 'poll' AND seq > %s ORDER BY seq LIMIT 1"
        )
        self.nth_from = q(
            "SELECT seq FROM {schema}.records WHERE seq >= %s AND kind <> 'header' "
            "ORDER BY seq LIMIT 1 OFFSET %s"
        )
        self.straddling = q(
            "SELECT d.seq, n.seq FROM {schema}.records AS d JOIN {schema}.records AS n "
            "ON n.seq = (SELECT min(x.seq) FROM {schema}.records AS x "
            "WHERE x.wallet = d.wallet AND x.seq > d.seq) "
            "WHERE d.seq BETWEEN %s AND %s AND d.kind = 'decision' AND n.seq > %s "
            "AND n.kind = 'outcomes'"
        )
        self.last_pruned_now = q(
            "SELECT now FROM {schema}.records WHERE seq <= %s AND kind <> 'header' "
            "ORDER BY seq DESC LIMIT 1"
        )
        self.delete_records = q("DELETE FROM {schema}.records WHERE seq <= %s AND kind <> 'header'")
        self.delete_headers = q(
            "DELETE FROM {schema}.records WHERE kind = 'header' AND seq < "
            "(SELECT max(seq) FROM {schema}.records WHERE kind = 'header' AND seq <= %s)"
        )
        self.add_pruned = q(
            "INSERT INTO {schema}.pruned AS p (id, records, headers, through_seq, through_now) "
            "VALUES (1, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
            "records = p.records + excluded.records, headers = p.headers + excluded.headers, "
            "through_seq = greatest(p.through_seq, excluded.through_seq), "
            "through_now = greatest(p.through_now, excluded.through_now)"
        )
        self.pruned = q(
            "SELECT records, headers, through_seq, through_now FROM {schema}.pruned WHERE id = 1"
        )
        self.wallet_records = q(
            "SELECT seq, kind, body_json FROM {schema}.records WHERE wallet = %s AND seq > %s "
            "ORDER BY seq LIMIT %s"
        )


_AUTHENTICATION = ("password authentication failed", "authentication failed", "no password")


def _why_not_connected(error: psycopg.OperationalError) -> str:
    """A connection failure in words: the server refused us (credentials, role, database)
    or could not be reached — two problems an operator fixes in different places."""
    text = redact(" ".join(str(error).split()))
    lowered = text.lower()
    if (error.sqlstate or "").startswith("28") or any(m in lowered for m in _AUTHENTICATION):
        return f"authentication failed (check the user and password of the DSN): {text}"
    if (error.sqlstate or "").startswith("3D") or "does not exist" in lowered:
        return f"the server refused the connection (check the DSN): {text}"
    return f"server unreachable: {text}"


def _check_grant(
    shard: object, holder: object, *, shards: object, now: object, ttl_ms: object
) -> None:
    if type(shards) is not int or shards < 1:
        raise ValueError(f"shards must be an int >= 1, was {shards!r}")
    if type(shard) is not int or not 0 <= shard < shards:
        raise ValueError(f"shard must be an int in 0..{shards - 1}, was {shard!r}")
    if type(holder) is not str or not holder:
        raise ValueError(f"holder must be a non-empty str, was {holder!r}")
    if type(now) is not int or now < 0:
        raise ValueError(f"now must be an int >= 0 (ms), was {now!r}")
    if type(ttl_ms) is not int or ttl_ms < 1:
        raise ValueError(f"ttl_ms must be an int >= 1, was {ttl_ms!r}")


def _check_lease(lease: object) -> None:
    if not isinstance(lease, Lease):
        raise ValueError(f"lease must be a liqshell.ports.Lease, was {lease!r}")
    if type(lease.epoch) is not int or lease.epoch < 1:
        raise ValueError(f"Lease.epoch must be an int >= 1, was {lease.epoch!r}")


class PostgresStore(AsyncClosing):
    """``StateStore`` and ``Recorder`` in PostgreSQL schema ``schema`` of the database at ``dsn``.

    ``pool_size`` bounds the connections; ``timeout_ms`` is how long a call waits for a
    connection (e.g. while the server restarts) before it raises
    :class:`~liqshell.adapters.StoreUnavailable`. Nothing connects until the first call.
    ``retention`` (default: keep everything) prunes the log in the background: after a
    write, at most every ``retention.interval_ms``, a task of the store's event loop runs a
    pass, one short transaction per batch on a pooled connection (:meth:`prune` runs one
    now); :meth:`close` stops it between two batches.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "liqshell",
        pool_size: int = 4,
        timeout_ms: int = 10_000,
        retention: Retention | None = None,
    ) -> None:
        if _SCHEMA_NAME.fullmatch(schema) is None:
            raise ValueError(
                f"PostgresStore schema must be a lower-case SQL identifier, was {schema!r}"
            )
        if type(pool_size) is not int or pool_size < 1:
            raise ValueError(f"PostgresStore pool_size must be an int >= 1, was {pool_size!r}")
        if type(timeout_ms) is not int or timeout_ms <= 0:
            raise ValueError(f"PostgresStore timeout_ms must be an int > 0, was {timeout_ms!r}")
        if retention is not None and not isinstance(retention, Retention):
            raise TypeError(f"PostgresStore retention must be a Retention, was {retention!r}")
        self.retention = retention or Retention()
        self._pruner: asyncio.Task[None] | None = None
        self._stop_pruning = False
        self._next_prune = time.monotonic() + self.retention.interval_ms / 1000
        self._pruned = Pruned()
        self.dsn = dsn
        self.schema = schema
        self.pool_size = pool_size
        self.timeout_ms = timeout_ms
        self._q = _Queries(schema)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._pool: AsyncConnectionPool | None = None
        self._ready = False

    def __repr__(self) -> str:
        return f"PostgresStore(schema={self.schema!r})"

    # ------------------------------------------------------------------ plumbing

    async def _connections(self) -> AsyncConnectionPool:
        """The pool of the running event loop, opened and with the schema in place."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._lock, self._pool = loop, asyncio.Lock(), None
            self._pruner = None
        if self._pool is not None and self._ready:
            return self._pool
        assert self._lock is not None
        async with self._lock:
            if not self._ready:
                # The first contact and the schema go over a connection of their own, not
                # the pool: the pool's timeout would hide why a server cannot be used.
                await self._first_contact()
                self._ready = True
            if self._pool is None:
                pool = AsyncConnectionPool(
                    self.dsn,
                    min_size=0,  # no background connects outliving a call (see close)
                    max_size=self.pool_size,
                    open=False,
                    kwargs={"autocommit": True},
                    check=AsyncConnectionPool.check_connection,
                    configure=self._configure,
                    timeout=self.timeout_ms / 1000,
                    name=f"liqshell-{self.schema}",
                )
                await pool.open(wait=False)
                self._pool = pool
            return self._pool

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """A pooled session ends a transaction left idle for ``timeout_ms``: a process
        paused (SIGSTOP, GC) inside a commit would otherwise keep its row locks — the
        ``FOR SHARE`` of a lease row — and stall every other instance's takeover of the
        shard until it resumes. The server aborts the transaction: nothing of it is
        written."""
        await conn.execute(
            "SELECT set_config('idle_in_transaction_session_timeout', %s, false)",
            (str(self.timeout_ms),),
        )

    async def _first_contact(self) -> None:
        """Connect once, directly, and migrate; a failure says whether the server refused
        the credentials or could not be reached."""
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, connect_timeout=max(1, self.timeout_ms // 1000)
            )
        except psycopg.OperationalError as error:
            raise StoreUnavailable(
                f"PostgreSQL store {self.schema!r}: {_why_not_connected(error)}"
            ) from error
        try:
            await self._migrate(conn)
        finally:
            await conn.close()

    async def _migrate(self, conn: psycopg.AsyncConnection[Any]) -> None:
        q = self._q
        async with conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"liqshell.schema:{self.schema}",)
            )
            await conn.execute(q.create_schema)
            await conn.execute(q.create_migrations)
            row = await (await conn.execute(q.current_version)).fetchone()
            current = 0 if row is None else int(row[0])
            if current > SCHEMA_VERSION:
                raise LiqshellError(
                    f"PostgreSQL schema {self.schema!r} has version {current}; this liqshell "
                    f"knows versions up to {SCHEMA_VERSION} (upgrade liqshell)"
                )
            for version, statements in enumerate(q.migrations[current:], start=current + 1):
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute(q.add_migration, (version,))

    @contextlib.asynccontextmanager
    async def _connection(self, what: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection; a connection-level error becomes StoreUnavailable and
        discards the pool, so the next call connects afresh instead of waiting out the
        pool's reconnect backoff (which grows while the server is down)."""
        pool: AsyncConnectionPool | None = None
        try:
            pool = await self._connections()
            async with pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            await self._discard(pool)
            raise StoreUnavailable(
                f"PostgreSQL store {self.schema!r}, {what}: {redact(str(error))}"
            ) from error

    async def _discard(self, pool: AsyncConnectionPool | None) -> None:
        if pool is None or pool is not self._pool:
            return
        self._pool = None
        with contextlib.suppress(Exception):
            await pool.close(timeout=1.0)

    # ------------------------------------------------------------------ StateStore

    async def load(self) -> Mapping[str, Stored]:
        """Every stored wallet, sorted by wallet."""
        async with self._connection("load") as conn:
            rows = await (await conn.execute(self._q.load)).fetchall()
        stored = [
            Stored(
                state=codec.from_json(state, AccountState),
                version=int(version),
                unfinished=codec.from_json(unfinished, tuple[Unfinished, ...]),
            )
            for _, version, state, unfinished in rows
        ]
        return MappingProxyType(
            {s.state.wallet: s for s in sorted(stored, key=lambda s: s.state.wallet)}
        )

    async def load_one(self, wallet: str) -> Stored | None:
        """One wallet's entry (``None``: nothing stored)."""
        async with self._connection("load_one") as conn:
            row = await (await conn.execute(self._q.load_one, (storage_key(wallet),))).fetchone()
        if row is None:
            return None
        version, state, unfinished = row
        return Stored(
            state=codec.from_json(state, AccountState),
            version=int(version),
            unfinished=codec.from_json(unfinished, tuple[Unfinished, ...]),
        )

    async def history(self, wallet: str, *, after_version: int) -> Sequence[Record]:
        """The records committed with the wallet's states after ``after_version``, in order."""
        async with self._connection("history") as conn:
            cur = await conn.execute(self._q.history, (storage_key(wallet), after_version))
            rows = await cur.fetchall()
        records = (record_from_json(body) for (body,) in rows)
        return tuple(record for record in records if record.commits_version)

    async def cursor(self) -> Cursor | None:
        """The committed feed cursor."""
        async with self._connection("cursor") as conn:
            row = await (await conn.execute(self._q.cursor)).fetchone()
        return None if row is None else cursor_from_json(row[0])

    async def applied(self, event_id: str) -> bool:
        """Whether a feed item with ``event_id`` was committed."""
        async with self._connection("applied") as conn:
            row = await (await conn.execute(self._q.applied, (storage_key(event_id),))).fetchone()
        return row is not None

    async def commit(
        self,
        wallet: str,
        state: AccountState,
        record: Record,
        *,
        expected_version: int,
        cursor: Cursor | None = None,
        lease: Lease | None = None,
    ) -> int:
        """Compare-and-set ``state`` with ``record`` (its ``pending`` as the unfinished
        commands), ``cursor`` and ``record.event_id``, in one transaction; returns
        ``expected_version + 1``. Raises :class:`~liqshell.ports.Conflict`.

        With a ``lease`` (of the wallet's shard, :func:`~liqshell.cluster.shard_of`), the
        same transaction first reads the shard's lease row ``FOR SHARE`` and raises
        :class:`~liqshell.ports.Fenced`, writing nothing, unless its epoch is still the
        lease's — whatever the compare-and-set would have said. The row lock makes a
        takeover wait for the commit to end, so a commit is either before the takeover or
        rejected. ``states.epoch`` keeps the epoch of the last commit (0: none given)."""
        if state.wallet != wallet:
            raise ValueError(f"commit of wallet {wallet!r} got a state of {state.wallet!r}")
        if type(expected_version) is not int or expected_version < 0:
            raise ValueError(f"expected_version must be an int >= 0, was {expected_version!r}")
        if lease is not None:
            _check_lease(lease)
            if shard_of(wallet, lease.shards) != lease.shard:
                raise ValueError(
                    f"commit of wallet {wallet!r} (shard {shard_of(wallet, lease.shards)} "
                    f"of {lease.shards}) got the lease of shard {lease.shard}"
                )
        epoch = 0 if lease is None else lease.epoch
        q = self._q
        version = expected_version + 1
        state_json = codec.to_json(state)
        unfinished_json = codec.to_json(record.pending)
        body = record_to_json(record)
        cursor_json = None if cursor is None else cursor_to_json(cursor)
        key = storage_key(wallet)
        applied = None if record.event_id is None else storage_key(record.event_id)
        async with self._connection("commit") as conn, conn.transaction():
            if lease is not None:
                held = await (await conn.execute(q.fence, (lease.shard,))).fetchone()
                if held is None or int(held[1]) != lease.epoch:
                    now_held = (
                        "never granted" if held is None else f"epoch {held[1]} of {held[0]!r}"
                    )
                    raise Fenced(
                        f"wallet {wallet!r}: the lease of shard {lease.shard} at epoch "
                        f"{lease.epoch} of {lease.holder!r} is stale (the shard is at "
                        f"{now_held})"
                    )
            if expected_version == 0:
                written = await conn.execute(
                    q.insert_state,
                    (key, version, state_json, unfinished_json, state.updated_at, epoch),
                )
            else:
                written = await conn.execute(
                    q.update_state,
                    (
                        version,
                        state_json,
                        unfinished_json,
                        state.updated_at,
                        epoch,
                        key,
                        expected_version,
                    ),
                )
            if written.rowcount != 1:
                row = await (await conn.execute(q.version_of, (key,))).fetchone()
                raise Conflict(
                    f"wallet {wallet!r} is at version {0 if row is None else row[0]}, "
                    f"expected {expected_version}"
                )
            await conn.execute(q.insert_record, (key, record.kind.value, version, record.now, body))
            if cursor_json is not None:
                await conn.execute(q.set_cursor, (cursor_json,))
            if applied is not None:
                await conn.execute(q.mark_applied, (applied,))
        self._after_write()
        return version

    # ------------------------------------------------------------------ LeaseStore

    async def acquire(
        self, shard: int, holder: str, *, shards: int, now: int, ttl_ms: int
    ) -> Lease | None:
        """Grant ``shard`` to ``holder`` until ``now + ttl_ms`` under the next epoch, if the
        shard was never granted, its lease expired at ``now`` (``expires <= now``), or it is
        ``holder``'s already (a restarted instance with the same id fences its previous
        incarnation); ``None`` while another holder's lease runs. One transaction: the
        ``INSERT … ON CONFLICT DO UPDATE … WHERE`` locks the lease row, so of two instances
        racing for an expired lease exactly one gets it. The first grant fixes the store's
        shard count (table ``cluster``); an instance configured with another count gets a
        :class:`~liqshell.ports.LiqshellError` saying so."""
        _check_grant(shard, holder, shards=shards, now=now, ttl_ms=ttl_ms)
        q = self._q
        async with self._connection("acquire") as conn, conn.transaction():
            await conn.execute(q.set_shards, (shards,))
            await self._check_shards(conn, shards)
            row = await (
                await conn.execute(
                    q.acquire,
                    {"shard": shard, "holder": holder, "until": now + ttl_ms, "now": now},
                )
            ).fetchone()
        if row is None:
            return None
        return Lease(
            shard=shard, shards=shards, holder=holder, epoch=int(row[0]), expires=now + ttl_ms
        )

    async def heartbeat(self, member: str, *, now: int, ttl_ms: int) -> tuple[str, ...]:
        """Declare ``member`` live until ``now + ttl_ms`` and return the live members at
        ``now`` (``expires_at > now``), sorted — ``member`` among them."""
        if type(member) is not str or not member:
            raise ValueError(f"member must be a non-empty str, was {member!r}")
        _check_grant(0, member, shards=1, now=now, ttl_ms=ttl_ms)
        async with self._connection("heartbeat") as conn, conn.transaction():
            await conn.execute(self._q.heartbeat, (member, now + ttl_ms))
            rows = await (await conn.execute(self._q.members, (now,))).fetchall()
        return tuple(str(row[0]) for row in rows)

    async def leave(self, member: str) -> None:
        """Declare ``member`` gone at once (its leases are released separately)."""
        async with self._connection("leave") as conn:
            await conn.execute(self._q.leave, (member,))

    async def _check_shards(self, conn: psycopg.AsyncConnection[Any], shards: int) -> None:
        row = await (await conn.execute(self._q.shards)).fetchone()
        if row is not None and int(row[0]) != shards:
            raise LiqshellError(
                f"PostgreSQL store {self.schema!r} holds a cluster of {row[0]} shards; this "
                f"instance is configured with shards = {shards} (every instance must use "
                "the same count)"
            )

    async def renew(self, lease: Lease, *, now: int, ttl_ms: int) -> Lease:
        """Extend ``lease`` to ``now + ttl_ms`` (same epoch) if its epoch is still the
        shard's — even after it expired, as long as nobody took the shard over; raises
        :class:`~liqshell.ports.Fenced` otherwise."""
        _check_lease(lease)
        _check_grant(lease.shard, lease.holder, shards=lease.shards, now=now, ttl_ms=ttl_ms)
        async with self._connection("renew") as conn:
            written = await conn.execute(
                self._q.renew, (now + ttl_ms, lease.shard, lease.epoch, lease.holder)
            )
        if written.rowcount != 1:
            raise Fenced(
                f"lease of shard {lease.shard} at epoch {lease.epoch} of {lease.holder!r} "
                "was taken over"
            )
        return attrs.evolve(lease, expires=now + ttl_ms)

    async def release(self, lease: Lease) -> bool:
        """Let ``lease`` expire at once (the epoch stays, so the next grant is the next
        epoch); false if it was no longer the shard's."""
        _check_lease(lease)
        async with self._connection("release") as conn:
            written = await conn.execute(self._q.release, (lease.shard, lease.epoch, lease.holder))
        return written.rowcount == 1

    async def leases(self) -> Mapping[int, Lease]:
        """Every shard's current lease row (expired ones too), by shard."""
        async with self._connection("leases") as conn:
            count = await (await conn.execute(self._q.shards)).fetchone()
            rows = await (await conn.execute(self._q.leases)).fetchall()
        if count is None:
            return MappingProxyType({})
        shards = int(count[0])
        return MappingProxyType(
            {
                int(shard): Lease(
                    shard=int(shard),
                    shards=shards,
                    holder=holder,
                    epoch=int(epoch),
                    expires=int(expires),
                )
                for shard, holder, epoch, expires in rows
            }
        )

    # ------------------------------------------------------------------ StateStore

    async def commit_cursor(
        self, cursor: Cursor, record: Record, *, lease: Lease | None = None
    ) -> None:
        """Move the cursor with ``record`` (and ``record.event_id`` as applied), atomically.

        With a ``lease`` (a watcher of a cluster, whose feed position is its own), the
        transaction is fenced as :meth:`commit` is and the store's cursor is not moved:
        only the record and the applied event id are written."""
        q = self._q
        cursor_json = cursor_to_json(cursor)
        body = record_to_json(record)
        if lease is not None:
            _check_lease(lease)
        async with self._connection("commit_cursor") as conn, conn.transaction():
            if lease is not None:
                held = await (await conn.execute(q.fence, (lease.shard,))).fetchone()
                if held is None or int(held[1]) != lease.epoch:
                    raise Fenced(
                        f"feed item {record.event_id!r}: the lease of shard {lease.shard} at "
                        f"epoch {lease.epoch} of {lease.holder!r} is stale"
                    )
            await conn.execute(
                q.insert_record,
                (
                    storage_key(record.wallet),
                    record.kind.value,
                    record.version,
                    record.now,
                    body,
                ),
            )
            if lease is None:
                await conn.execute(q.set_cursor, (cursor_json,))
            if record.event_id is not None:
                await conn.execute(q.mark_applied, (storage_key(record.event_id),))
        self._after_write()

    async def close(self) -> None:
        """Stop a background pruning pass (between two batches) and close the pool (the
        next call opens a new one)."""
        pruner, self._pruner = self._pruner, None
        if pruner is not None and self._loop is asyncio.get_running_loop():
            self._stop_pruning = True
            try:
                await asyncio.gather(pruner, return_exceptions=True)
            finally:
                self._stop_pruning = False
        pool, self._pool = self._pool, None
        if pool is not None and self._loop is asyncio.get_running_loop():
            await pool.close()

    # ------------------------------------------------------------------ Recorder

    async def append(self, record: Record) -> None:
        """Append ``record`` to the log on its own (no state changes)."""
        body = record_to_json(record)
        async with self._connection("append") as conn:
            await conn.execute(
                self._q.insert_record,
                (
                    storage_key(record.wallet),
                    record.kind.value,
                    record.version,
                    record.now,
                    body,
                ),
            )
        self._after_write()

    async def begin(self, header: RecordingHeader) -> None:
        """Record a watcher start's header as a row of the log (``kind = 'header'``,
        ``wallet = ''``, version 0): the records after it were decided with its config."""
        body = header_to_json(header)
        now = header.started if header.started is not None else 0
        async with self._connection("begin") as conn:
            await conn.execute(self._q.insert_record, ("", HEADER_KIND, 0, now, body))

    # ------------------------------------------------------------------ retention

    @property
    def pruned_total(self) -> Pruned:
        """What this store object's pruning passes removed so far (the metric's source)."""
        return self._pruned

    async def pruned_log(self) -> Pruned:
        """What retention removed from the log so far (by any store on this schema)."""
        async with self._connection("pruned") as conn:
            row = await (await conn.execute(self._q.pruned)).fetchone()
        if row is None:
            return Pruned()
        return Pruned(
            records=int(row[0]),
            headers=int(row[1]),
            through_seq=int(row[2]),
            through_now=int(row[3]),
        )

    async def prune(self) -> Pruned:
        """Run one pruning pass now (bounded batches, a transaction each) and return what it
        removed; nothing when the retention keeps everything."""
        if self.retention.keeps_everything:
            return Pruned()
        total = Pruned()
        async with self._connection("prune") as conn:
            target = await self._prune_target(conn)
        while target and not self._stop_pruning:
            async with self._connection("prune") as conn, conn.transaction():
                done = await self._prune_batch(conn, target)
            if done is None:
                break
            total += done
            self._pruned += done
            if done.through_seq >= target:
                break
        return total

    async def _one(
        self, conn: psycopg.AsyncConnection[Any], query: sql.Composed, *args: object
    ) -> int | None:
        row = await (await conn.execute(query, args)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    async def _prune_target(self, conn: psycopg.AsyncConnection[Any]) -> int:
        """As :func:`liqshell.adapters.sqlite` computes it: past both limits, and in a log
        with poll summaries the last summary at or before it (whole polls)."""
        q, retention = self._q, self.retention
        target = 0
        if retention.keep_records is not None:
            target = max(target, await self._one(conn, q.nth_newest, retention.keep_records) or 0)
        if retention.keep_days is not None:
            newest = await self._one(conn, q.newest_now)
            if newest is not None:
                cutoff = newest - retention.keep_days * DAY_MS
                young = await self._one(conn, q.first_young, cutoff)
                target = max(target, (young or 1) - 1)
        low = await self._one(conn, q.first_record)
        if low is None or target < low:
            return 0
        last_poll = await self._one(conn, q.last_poll, target)
        if last_poll is not None and last_poll >= low:
            return last_poll
        if await self._one(conn, q.next_poll, target) is not None:
            return 0  # the limit falls in the oldest poll, which a summary still ends
        return target

    async def _prune_batch(self, conn: psycopg.AsyncConnection[Any], target: int) -> Pruned | None:
        """Remove one batch; ``None`` when nothing more can go. No decision is removed
        without its outcomes (the wallet's next record)."""
        q = self._q
        low = await self._one(conn, q.first_record)
        if low is None or low > target:
            return None
        nth = await self._one(conn, q.nth_from, low, self.retention.batch - 1)
        end = target if nth is None else min(nth, target)
        ceiling = target
        while True:
            if end < low:
                return None
            cur = await conn.execute(q.straddling, (low, end, end))
            straddling = [(int(d), int(o)) for d, o in await cur.fetchall()]
            if not straddling:
                break
            beyond = [decision for decision, outcomes in straddling if outcomes > ceiling]
            if beyond:
                ceiling = end = min(beyond) - 1
            else:
                end = max(outcomes for _, outcomes in straddling)
        through_now = await self._one(conn, q.last_pruned_now, end) or 0
        records = (await conn.execute(q.delete_records, (end,))).rowcount
        headers = (await conn.execute(q.delete_headers, (end,))).rowcount
        await conn.execute(q.add_pruned, (records, headers, end, through_now))
        return Pruned(records=records, headers=headers, through_seq=end, through_now=through_now)

    def _after_write(self) -> None:
        """Start a background pass on this loop if one is due and none runs."""
        if self.retention.keeps_everything:
            return
        now = time.monotonic()
        if now < self._next_prune or (self._pruner is not None and not self._pruner.done()):
            return
        self._next_prune = now + self.retention.interval_ms / 1000
        self._pruner = asyncio.get_running_loop().create_task(self._prune_in_background())

    async def _prune_in_background(self) -> None:
        try:
            done = await self.prune()
        except Exception as error:
            _log.warning(
                "pruning the log of schema %r failed: %r", self.schema, error, extra=fields()
            )
            return
        if done.records:
            _log.info(
                "pruned %d records and %d headers from the log of schema %r (through seq %d)",
                done.records,
                done.headers,
                self.schema,
                done.through_seq,
                extra=fields(),
            )

    # ------------------------------------------------------------------ reading the log

    async def log_position(self) -> int:
        """The ``seq`` of the newest record (0: an empty log)."""
        async with self._connection("log_position") as conn:
            row = await (await conn.execute(self._q.log_position)).fetchone()
        return 0 if row is None else int(row[0])

    async def decisions_after(self, position: int, *, limit: int) -> Sequence[tuple[int, Record]]:
        """Up to ``limit`` decisions committed with a state after ``seq`` ``position``,
        oldest first, with their ``seq`` (:class:`~liqshell.ports.DecisionLog`: a shadow
        follows the live decisions). A decision whose transaction took its ``seq`` before
        and committed after a later one was read is not seen (a shadow compares it not)."""
        if type(position) is not int or position < 0:
            raise ValueError(f"position must be an int >= 0, was {position!r}")
        if type(limit) is not int or limit < 1:
            raise ValueError(f"limit must be an int >= 1, was {limit!r}")
        async with self._connection("decisions_after") as conn:
            rows = await (await conn.execute(self._q.decisions_after, (position, limit))).fetchall()
        return [(int(seq), record_from_json(body)) for seq, body in rows]

    async def records(self, *, wallet: str | None = None) -> AsyncIterator[Record]:
        """The log in ``seq`` order (only ``wallet``'s if given), read page by page."""
        async for entry in self._entries(wallet):
            if isinstance(entry, Record):
                yield entry

    async def entries(self) -> AsyncIterator[RecordingHeader | Record]:
        """Header rows and records in ``seq`` order, read page by page."""
        async for entry in self._entries(None):
            yield entry

    async def _entries(self, wallet: str | None) -> AsyncIterator[RecordingHeader | Record]:
        after = 0
        while True:
            async with self._connection("records") as conn:
                if wallet is None:
                    cur = await conn.execute(self._q.records, (after, _PAGE))
                else:
                    cur = await conn.execute(
                        self._q.wallet_records, (storage_key(wallet), after, _PAGE)
                    )
                rows = await cur.fetchall()
            if not rows:
                return
            for seq, kind, body in rows:
                yield header_from_json(body) if kind == HEADER_KIND else record_from_json(body)
                after = seq
