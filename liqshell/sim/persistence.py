"""The simulated world in SQLite: a snapshot per tick plus a journal of exchange actions.

Tables of their own (``sim_world``, ``sim_journal``, ``sim_requests``), so they can live in
the watcher's store file. The snapshot is written once per tick; every action that changes
the world between ticks (a submit, a cancel, an auction start or stop, a published state
change) is journaled — committed durably — *before* it takes effect, as a real exchange
persists an order before acknowledging it. Every request received is also kept for the
whole run (``sim_requests``, never emptied), so a test can count what reached the exchange.
On restart the last snapshot is loaded and the journal replayed, so a ``simulate`` killed at
any instant resumes from exactly what the exchange had done, and the watcher's crash
recovery sees the world it would see in production. An existing file is checked to be
liqshell's before anything is written into it
(:func:`liqshell.adapters.sqlite.check_store_file`).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from liqcore import codec
from liqcore.errors import InvalidInput
from liqshell.adapters.sqlite import check_store_file
from liqshell.sim.world import SimParams, World

__all__ = ["SimStateError", "WorldStore"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS sim_world (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    params TEXT NOT NULL,
    tick INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sim_journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sim_requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL,
    wallet TEXT NOT NULL,
    request_id TEXT NOT NULL,
    client_id TEXT
);
"""


class SimStateError(Exception):
    """The stored simulation cannot be used (other parameters, unreadable)."""


class WorldStore:
    """Snapshot and journal of one simulated world in the SQLite file at ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        check_store_file(self.path)  # never write into another program's file
        self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def load(self) -> tuple[World, list[dict[str, object]]] | None:
        """The stored world and the journal after it, or ``None`` if none is stored."""
        row = self._db.execute("SELECT body FROM sim_world WHERE id = 1").fetchone()
        if row is None:
            return None
        try:
            world = codec.structure(json.loads(row[0]), World)
        except (InvalidInput, ValueError) as error:
            raise SimStateError(
                f"the stored simulation in {self.path} is unreadable: {error}"
            ) from None
        journal: list[dict[str, object]] = []
        for (body,) in self._db.execute("SELECT body FROM sim_journal ORDER BY seq"):
            entry = json.loads(body)
            if not isinstance(entry, dict):
                raise SimStateError(f"the simulation journal in {self.path} is corrupt")
            journal.append(entry)
        return world, journal

    def stored_params(self) -> SimParams | None:
        """The parameters of the stored world, if any."""
        row = self._db.execute("SELECT params FROM sim_world WHERE id = 1").fetchone()
        if row is None:
            return None
        return codec.structure(json.loads(row[0]), SimParams)

    def save(self, world: World) -> None:
        """Replace the snapshot by ``world`` and empty the journal, in one transaction."""
        body = json.dumps(codec.unstructure(world), sort_keys=True, separators=(",", ":"))
        params = codec.to_json(world.params)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "INSERT INTO sim_world (id, params, tick, body) VALUES (1, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET params = excluded.params, "
                "tick = excluded.tick, body = excluded.body",
                (params, world.tick, body),
            )
            self._db.execute("DELETE FROM sim_journal")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def journal(self, entry: dict[str, object]) -> None:
        """Durably append one action (committed before the caller applies it); a request
        (submit, cancel, start, stop) also joins :meth:`requests`, in the same transaction."""
        body = json.dumps(entry, sort_keys=True, separators=(",", ":"))
        command = entry.get("command")
        request = command.get("request_id") if isinstance(command, dict) else None
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("INSERT INTO sim_journal (body) VALUES (?)", (body,))
            if isinstance(command, dict) and isinstance(request, str):
                self._db.execute(
                    "INSERT INTO sim_requests (op, wallet, request_id, client_id) "
                    "VALUES (?, ?, ?, ?)",
                    (entry["op"], command.get("wallet"), request, command.get("client_id")),
                )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def requests(self) -> list[tuple[str, str, str, str | None]]:
        """Every request the exchange received over the whole run, resumes included, in
        order: ``(op, wallet, request_id, client_id)`` — what crash tests count sends by."""
        rows = self._db.execute(
            "SELECT op, wallet, request_id, client_id FROM sim_requests ORDER BY seq"
        ).fetchall()
        return [(str(op), str(w), str(r), None if c is None else str(c)) for op, w, r, c in rows]

    def close(self) -> None:
        """Close the connection."""
        self._db.close()
