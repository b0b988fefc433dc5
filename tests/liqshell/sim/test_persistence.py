"""liqshell.sim.persistence: snapshot + journal in SQLite, beside the watcher's tables."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from liqcore import Config, codec
from liqshell.adapters import ForeignFile
from liqshell.adapters.sqlite import SqliteStore
from liqshell.sim import SimParams, SimStateError, WorldStore, new_world
from tests.liqshell.adapters.store_contract import decision, state_of

PARAMS = SimParams(accounts=4, seed=8)


def test_world_store_save_load_round_trip_and_clears_journal(tmp_path: Path) -> None:
    """What is saved loads back equal; a save empties the journal in the same transaction."""
    store = WorldStore(tmp_path / "w.sqlite")
    assert store.load() is None
    assert store.stored_params() is None
    world = new_world(PARAMS, Config())
    store.save(world)
    store.journal({"op": "stop", "command": {}})
    loaded = store.load()
    assert loaded is not None
    assert codec.to_json(loaded[0]) == codec.to_json(world)
    assert loaded[1] == [{"op": "stop", "command": {}}]
    world.tick = 3
    store.save(world)
    again = store.load()
    assert again is not None
    assert (again[0].tick, again[1]) == (3, [])
    assert store.stored_params() == PARAMS
    store.close()


async def test_world_store_tables_of_its_own_only(tmp_path: Path) -> None:
    """The simulator touches only its sim_* tables of the watcher's store file."""
    path = tmp_path / "shared.sqlite"
    states = SqliteStore(path)
    await states.commit("w", state_of("w", 1), decision(state_of("w", 1), 1), expected_version=0)
    await states.close()
    store = WorldStore(path)
    store.save(new_world(PARAMS, Config()))
    store.close()
    with sqlite3.connect(path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert db.execute("SELECT wallet, version FROM states").fetchall() == [("w", 1)]
    assert {"states", "sim_world", "sim_journal"} <= tables


def test_world_store_refuses_another_programs_database(tmp_path: Path) -> None:
    """A SQLite file of another program (here with a ``states`` table of its own) is refused
    before the simulator's tables are written into it."""
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE states (wallet TEXT)")
        db.execute("INSERT INTO states VALUES ('w')")
    db.close()
    before = path.read_bytes()
    with pytest.raises(ForeignFile, match="not a liqshell store"):
        WorldStore(path)
    assert path.read_bytes() == before


def test_world_store_corrupt_snapshot_clear_error(tmp_path: Path) -> None:
    """An unreadable snapshot is a SimStateError naming the file, not a codec traceback."""
    path = tmp_path / "bad.sqlite"
    store = WorldStore(path)
    store.save(new_world(PARAMS, Config()))
    with sqlite3.connect(path) as db:
        db.execute('UPDATE sim_world SET body = \'{"tick": "x"}\'')
    with pytest.raises(SimStateError, match="unreadable"):
        store.load()
    store.close()
