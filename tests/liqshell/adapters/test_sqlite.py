"""SqliteStore: the store contract, the recorder, reading the log, and crash safety."""

from __future__ import annotations

import asyncio
import itertools
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import liqshell
from liqcore import Config
from liqshell import analysis
from liqshell.adapters import ForeignFile, Pruned, Retention, StoreUnavailable, storage_key
from liqshell.adapters import read_records as read_any_records
from liqshell.adapters.sqlite import (
    SCHEMA_VERSION,
    SqliteStore,
    check_store_file,
    read_pruned,
    read_records,
)
from liqshell.cli import main as cli_main
from liqshell.ports import Conflict, LiqshellError, Record, RecordingHeader, RecordKind, StateStore
from liqshell.sim import SimExchange, new_world
from liqshell.sim.persistence import SCHEMA as SIM_SCHEMA
from liqshell.sim.persistence import WorldStore
from liqshell.sim.runner import SimClock
from liqshell.sim.world import SimParams
from liqshell.testing import MemoryStore
from liqshell.watcher import Watcher
from tests.liqshell.adapters.retention_contract import (
    RETENTION,
    RetentionHarness,
    run_simulation,
)
from tests.liqshell.adapters.retention_contract import Check as RetentionCheck
from tests.liqshell.adapters.store_contract import (
    CONTRACT,
    Check,
    Step,
    StoreHarness,
    check_commit_plan,
    commit_plans,
    decision,
    state_of,
)

ROOT = Path(__file__).resolve().parents[3]
_files = itertools.count(1)


def sqlite_harness(folder: Path) -> StoreHarness:
    """Stores on new files in ``folder``; ``again`` opens the same file anew."""

    async def open_store() -> StateStore:
        return SqliteStore(folder / f"store-{next(_files)}.sqlite", timeout_ms=20_000)

    async def again(store: StateStore) -> StateStore:
        assert isinstance(store, SqliteStore)
        return SqliteStore(store.path, timeout_ms=20_000)

    async def records(store: StateStore) -> list[Record]:
        assert isinstance(store, SqliteStore)
        return list(store.records())

    return StoreHarness(open=open_store, again=again, read_records=records)


@pytest.mark.parametrize("check", CONTRACT, ids=lambda check: check.__name__)
async def test_sqlite_store_meets_the_store_contract(check: Check, tmp_path: Path) -> None:
    """SqliteStore satisfies every check of the StateStore contract."""
    harness = sqlite_harness(tmp_path)
    try:
        await check(harness)
    finally:
        await harness.close_all()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=commit_plans())
async def test_sqlite_store_commit_plans_match_the_model(plan: list[Step]) -> None:
    """Any sequence of commit attempts leaves SqliteStore equal to the model."""
    with tempfile.TemporaryDirectory(prefix="liqshell-test-") as folder:
        harness = sqlite_harness(Path(folder))
        try:
            await check_commit_plan(harness, plan)
        finally:
            await harness.close_all()


def memory_harness() -> StoreHarness:
    """MemoryStores; ``again`` is the same object (it has no second handle)."""

    async def open_store() -> StateStore:
        return MemoryStore()

    async def again(store: StateStore) -> StateStore:
        return store

    async def records(store: StateStore) -> list[Record]:
        assert isinstance(store, MemoryStore)
        return list(store.records)

    return StoreHarness(open=open_store, again=again, read_records=records)


# MemoryStore is the reference fake: it must keep the contract the real stores keep. (Its
# run lives here until a home in tests/liqshell/test_testing.py is agreed.)
@pytest.mark.parametrize("check", CONTRACT, ids=lambda check: check.__name__)
async def test_memory_store_meets_the_store_contract(check: Check) -> None:
    """liqshell.testing.MemoryStore satisfies every check of the StateStore contract."""
    harness = memory_harness()
    try:
        await check(harness)
    finally:
        await harness.close_all()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=commit_plans())
async def test_memory_store_commit_plans_match_the_model(plan: list[Step]) -> None:
    """Any sequence of commit attempts leaves MemoryStore equal to the model."""
    await check_commit_plan(memory_harness(), plan)


@given(one=st.text(alphabet=st.characters(codec="utf-16")), other=st.text())
def test_storage_key_is_one_to_one_and_keeps_plain_text(one: str, other: str) -> None:
    """Distinct ids get distinct keys, every key is storable text, plain ids are unchanged."""
    for text in (one, other, "json:" + one, one + "\x00"):
        key = storage_key(text)
        assert "\x00" not in key
        key.encode("utf-8")
        if "\x00" not in text and not text.startswith("json:") and text.isascii():
            assert key == text
    assert (storage_key(one) == storage_key(other)) == (one == other)
    assert storage_key("json:" + one) != storage_key(one)


# --- the recorder and the log ---------------------------------------------------------------


async def test_sqlite_store_appended_records_join_the_log_in_order(tmp_path: Path) -> None:
    """Records appended on their own and records committed with a state form one log,
    in call order, and append changes no state."""
    store = SqliteStore(tmp_path / "s.sqlite")
    restart = Record(kind=RecordKind.RESTART, wallet="0xa", now=1, note="restart")
    first = decision(state_of("0xa", 1), 1)
    shadow = Record(kind=RecordKind.DECISION, wallet="0xb", now=2, executed=False)
    await store.append(restart)
    await store.commit("0xa", state_of("0xa", 1), first, expected_version=0)
    await store.append(shadow)
    await store.close()
    assert list(store.records()) == [restart, first, shadow]
    assert list(read_records(tmp_path / "s.sqlite", wallet="0xb")) == [shadow]
    assert list((await store.load()).keys()) == ["0xa"]


# --- group commit ---------------------------------------------------------------------------


def _transactions(store: SqliteStore) -> list[str]:
    """The BEGINs run on the store's connection from now on (traced in its worker threads)."""
    begins: list[str] = []
    store._connection().set_trace_callback(
        lambda sql: begins.append(sql) if sql.startswith("BEGIN") else None
    )
    return begins


async def test_sqlite_commits_made_together_share_one_transaction_and_a_conflict_fails_alone(
    tmp_path: Path,
) -> None:
    """Commits of several wallets (and an append) made while none has been written go in one
    transaction; the one whose compare-and-set fails raises Conflict and writes nothing, the
    others are committed, with their records in call order."""
    store = SqliteStore(tmp_path / "s.sqlite")
    await store.commit(
        "0xa", state_of("0xa", 1), decision(state_of("0xa", 1), 1), expected_version=0
    )
    begins = _transactions(store)
    poll = Record(kind=RecordKind.POLL, wallet="", now=5, note="stepped=3")
    wallets = ["0xb", "0xc", "0xd"]
    outcomes = await asyncio.gather(
        *(
            store.commit(w, state_of(w, 2), decision(state_of(w, 2), 1), expected_version=0)
            for w in wallets
        ),
        store.commit(
            "0xa", state_of("0xa", 3), decision(state_of("0xa", 3), 1), expected_version=0
        ),
        store.append(poll),
        return_exceptions=True,
    )
    assert outcomes[:3] == [1, 1, 1]
    assert isinstance(outcomes[3], Conflict)
    assert "at version 1, expected 0" in str(outcomes[3])
    assert outcomes[4] is None
    assert begins == ["BEGIN IMMEDIATE"]
    loaded = await store.load()
    assert loaded["0xa"].state == state_of("0xa", 1)
    assert [loaded[w].state for w in wallets] == [state_of(w, 2) for w in wallets]
    await store.close()
    assert [(r.wallet, r.version) for r in store.records()] == [
        ("0xa", 1), ("0xb", 1), ("0xc", 1), ("0xd", 1), ("", 0)
    ]  # fmt: skip


async def test_sqlite_a_write_that_fails_its_group_fails_alone(tmp_path: Path) -> None:
    """A write raising an error that is not the store's (a bug, a bad value) fails the group's
    transaction; each write is then tried alone, so only that one raises and the others are
    committed."""
    store = SqliteStore(tmp_path / "s.sqlite")
    await store.load()
    begins = _transactions(store)

    def broken(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO feed (id, cursor_json) VALUES (1, '7')")
        raise ValueError("broken write")

    outcomes = await asyncio.gather(
        store.commit(
            "0xa", state_of("0xa", 1), decision(state_of("0xa", 1), 1), expected_version=0
        ),
        store._write(broken),
        store.commit(
            "0xb", state_of("0xb", 1), decision(state_of("0xb", 1), 1), expected_version=0
        ),
        return_exceptions=True,
    )
    assert outcomes[0] == 1
    assert outcomes[2] == 1
    assert isinstance(outcomes[1], ValueError)
    assert len(begins) == 4  # the group, then each write alone
    assert sorted(await store.load()) == ["0xa", "0xb"]
    assert await store.cursor() is None  # the broken write's statement was rolled back
    await store.close()
    assert [r.wallet for r in store.records()] == ["0xa", "0xb"]


async def test_sqlite_a_locked_store_fails_every_write_of_the_group(tmp_path: Path) -> None:
    """StoreUnavailable (the write lock held elsewhere past timeout_ms) fails every write of
    the group at once, without trying each alone (each would wait as long again)."""
    path = tmp_path / "s.sqlite"
    store = SqliteStore(path, timeout_ms=50)
    await store.load()
    begins = _transactions(store)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        outcomes = await asyncio.gather(
            *(
                store.commit(w, state_of(w, 1), decision(state_of(w, 1), 1), expected_version=0)
                for w in ("0xa", "0xb", "0xc")
            ),
            return_exceptions=True,
        )
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert all(isinstance(o, StoreUnavailable) for o in outcomes)
    assert len(begins) == 1
    assert await store.load() == {}
    await store.close()


async def test_sqlite_a_commit_cancelled_before_its_group_began_is_not_written(
    tmp_path: Path,
) -> None:
    """A commit whose caller stopped waiting while an earlier group was being written is
    left out of the next group; the others in it are committed."""
    store = SqliteStore(tmp_path / "s.sqlite")
    await store.load()
    first = asyncio.ensure_future(
        store.commit("0xa", state_of("0xa", 1), decision(state_of("0xa", 1), 1), expected_version=0)
    )
    await asyncio.sleep(0)  # its group is being written
    cancelled = asyncio.ensure_future(
        store.commit("0xb", state_of("0xb", 1), decision(state_of("0xb", 1), 1), expected_version=0)
    )
    kept = asyncio.ensure_future(
        store.commit("0xc", state_of("0xc", 1), decision(state_of("0xc", 1), 1), expected_version=0)
    )
    await asyncio.sleep(0)
    cancelled.cancel()
    assert await first == 1
    assert await kept == 1
    assert cancelled.cancelled()
    assert sorted(await store.load()) == ["0xa", "0xc"]
    await store.close()


async def test_sqlite_read_records_reads_a_store_in_use(tmp_path: Path) -> None:
    """The synchronous reader sees every commit of a store that is still open."""
    store = SqliteStore(tmp_path / "s.sqlite")
    for n in range(3):
        await store.commit(
            "0xa", state_of("0xa", n), decision(state_of("0xa", n), n + 1), expected_version=n
        )
    assert [r.version for r in read_any_records(tmp_path / "s.sqlite")] == [1, 2, 3]
    await store.close()


def test_sqlite_read_records_of_a_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    """Reading a store that does not exist raises FileNotFoundError (and creates nothing)."""
    with pytest.raises(FileNotFoundError):
        list(read_records(tmp_path / "missing.sqlite"))
    assert not (tmp_path / "missing.sqlite").exists()


def test_sqlite_read_records_of_a_database_without_log_raises(tmp_path: Path) -> None:
    """A SQLite file that is not a store raises sqlite3.DatabaseError."""
    path = tmp_path / "other.sqlite"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(sqlite3.DatabaseError):
        list(read_records(path))


# --- schema, settings, shared files ---------------------------------------------------------


async def test_sqlite_store_creates_a_versioned_schema_in_wal_mode(tmp_path: Path) -> None:
    """First use creates the tables, records the schema version and turns on WAL."""
    path = tmp_path / "s.sqlite"
    store = SqliteStore(path)
    await store.load()
    await store.close()
    db = sqlite3.connect(path)
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"states", "records", "feed", "applied_events", "schema_version"} <= tables
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        db.close()


async def test_sqlite_store_refuses_a_newer_schema(tmp_path: Path) -> None:
    """A file written by a newer schema version is refused, not silently misread."""
    path = tmp_path / "s.sqlite"
    store = SqliteStore(path)
    await store.load()
    await store.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    db.close()
    with pytest.raises(LiqshellError, match="schema version"):
        await SqliteStore(path).load()


async def test_sqlite_store_shares_a_file_with_the_simulators_tables(tmp_path: Path) -> None:
    """The simulator's tables in the same file are left as they were."""
    path = tmp_path / "s.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(SIM_SCHEMA)
        db.execute("INSERT INTO sim_world VALUES (1, '{}', 0, 'world')")
    db.close()
    store = SqliteStore(path)
    await store.commit(
        "0xa", state_of("0xa", 1), decision(state_of("0xa", 1), 1), expected_version=0
    )
    await store.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT body FROM sim_world").fetchall() == [("world",)]
    db.close()


async def test_sqlite_store_locked_past_its_timeout_raises_store_unavailable(
    tmp_path: Path,
) -> None:
    """A write lock held elsewhere longer than timeout_ms gives StoreUnavailable."""
    path = tmp_path / "s.sqlite"
    store = SqliteStore(path, timeout_ms=50)
    await store.load()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable):
            await store.commit(
                "0xa", state_of("0xa", 1), decision(state_of("0xa", 1), 1), expected_version=0
            )
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (
        await store.commit(
            "0xa", state_of("0xa", 1), decision(state_of("0xa", 1), 1), expected_version=0
        )
        == 1
    )
    await store.close()


async def test_sqlite_store_waiting_for_a_lock_does_not_block_the_event_loop(
    tmp_path: Path,
) -> None:
    """While a commit waits for another connection's write lock, other tasks keep running."""
    path = tmp_path / "s.sqlite"
    store = SqliteStore(path, timeout_ms=5_000)
    await store.load()
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: blocker.execute("ROLLBACK"))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    release.start()
    try:
        version = await store.commit(
            "0xa", state_of("0xa", 1), decision(state_of("0xa", 1), 1), expected_version=0
        )
    finally:
        task.cancel()
        release.join()
        blocker.close()
    assert version == 1
    assert ticks >= 10
    await store.close()


def test_sqlite_store_is_usable_from_several_event_loops(tmp_path: Path) -> None:
    """One store object serves one asyncio.run after another (nothing is loop-bound)."""
    store = SqliteStore(tmp_path / "s.sqlite")
    for n in range(3):
        state = state_of("0xa", n)
        assert (
            asyncio.run(store.commit("0xa", state, decision(state, n + 1), expected_version=n))
            == n + 1
        )
    assert asyncio.run(store.load())["0xa"].version == 3
    asyncio.run(store.close())


# --- crash safety ---------------------------------------------------------------------------

_WRITER = """
import asyncio, sys
from decimal import Decimal
from liqcore import AccountState, MarginMode
from liqshell.adapters.sqlite import SqliteStore
from liqshell.ports import Record, RecordKind

async def main() -> None:
    store = SqliteStore(sys.argv[1])
    loaded = await store.load()
    version = loaded["0xk"].version if "0xk" in loaded else 0
    while True:
        n = version + 1
        state = AccountState(
            wallet="0xk", margin_mode=MarginMode.STANDARD, equity=Decimal(n), updated_at=n
        )
        record = Record(kind=RecordKind.DECISION, wallet="0xk", now=n, version=n, state=state)
        version = await store.commit("0xk", state, record, expected_version=version, cursor=n)
        print(version, flush=True)

asyncio.run(main())
"""


def _kill_writer_after(path: Path, commits: int) -> int:
    """Run the writer until it reported ``commits`` more commits, SIGKILL it; return the
    last version it reported."""
    root = Path(liqshell.__file__).resolve().parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert process.stdout is not None
    last = 0
    try:
        for _ in range(commits):
            line = process.stdout.readline()
            if not line:
                raise AssertionError(
                    f"writer died: {process.stderr.read() if process.stderr else ''}"
                )
            last = int(line)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        process.stdout.close()
        if process.stderr is not None:
            process.stderr.close()
    return last


@pytest.mark.slow
async def test_sqlite_store_killed_mid_run_keeps_every_reported_commit(tmp_path: Path) -> None:
    """A writer killed with SIGKILL at any instant loses no commit it reported, and what
    the file holds is consistent: the state, its record and the cursor of one version."""
    path = tmp_path / "killed.sqlite"
    reported = 0
    for _ in range(3):
        reported = _kill_writer_after(path, 25)
        store = SqliteStore(path)
        stored = (await store.load())["0xk"]
        assert stored.version >= reported
        assert stored.state.equity == stored.version
        assert stored.state.updated_at == stored.version
        assert await store.cursor() == stored.version
        assert [r.version for r in store.records()] == list(range(1, stored.version + 1))
        await store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()


# --------------------------------------------------------------------------- foreign files


def _foreign_database(path: Path, tables: str) -> bytes:
    """Another program's SQLite file with ``tables`` (and 5,000 rows); its bytes."""
    with sqlite3.connect(path) as db:
        db.executescript(tables)
        db.executemany("INSERT INTO t (a) VALUES (?)", [(i,) for i in range(5_000)])
    db.close()
    return path.read_bytes()


FOREIGN_SCHEMAS = {
    "other-tables": "CREATE TABLE t (a INTEGER);",
    "clashing-states": "CREATE TABLE t (a INTEGER); CREATE TABLE states (wallet TEXT, x INT);",
    "states-alike": (
        "CREATE TABLE t (a INTEGER); CREATE TABLE states (wallet TEXT PRIMARY KEY, "
        "version INT, state_json TEXT, unfinished_json TEXT, updated_at INT);"
    ),
}


@pytest.mark.parametrize("tables", FOREIGN_SCHEMAS.values(), ids=FOREIGN_SCHEMAS.keys())
async def test_sqlite_store_refuses_another_programs_database_and_writes_nothing(
    tmp_path: Path, tables: str
) -> None:
    """Another program's SQLite file — with or without a ``states`` table — is refused with
    ForeignFile by the store, the world store and the check, and its bytes stay as they were
    (no table created, no WAL switch, no -wal file)."""
    path = tmp_path / "other.db"
    before = _foreign_database(path, tables)
    with pytest.raises(ForeignFile, match="not a liqshell store"):
        check_store_file(path)
    store = SqliteStore(path)
    with pytest.raises(ForeignFile, match="not a liqshell store"):
        await store.commit(
            "0xa", state_of("0xa", 1), decision(state_of("0xa", 1), 1), expected_version=0
        )
    with pytest.raises(ForeignFile):
        await store.load()
    with pytest.raises(ForeignFile):
        WorldStore(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


def test_sqlite_store_refuses_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    """A text file is not a store: refused, untouched."""
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    with pytest.raises(ForeignFile, match="not a SQLite file"):
        check_store_file(path)
    with pytest.raises(ForeignFile):
        asyncio.run(SqliteStore(path).load())
    assert path.read_text() == "keep me"


async def test_sqlite_store_accepts_its_own_file_an_empty_one_and_an_empty_database(
    tmp_path: Path,
) -> None:
    """Its own store (with the simulator's tables), an empty file and a database with no
    tables are liqshell's to use."""
    own = tmp_path / "own.sqlite"
    store = SqliteStore(own)
    await store.commit(
        "0xa", state_of("0xa", 1), decision(state_of("0xa", 1), 1), expected_version=0
    )
    await store.close()
    WorldStore(own).close()
    check_store_file(own)
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    check_store_file(empty)
    bare = tmp_path / "bare.sqlite"
    sqlite3.connect(bare).execute("VACUUM").connection.close()
    check_store_file(bare)
    for path in (own, empty, bare):
        assert (await SqliteStore(path).load()).keys() <= {"0xa"}


# --------------------------------------------------------------------------- read-only


def _read_only_mount(source: Path, target: Path, argv: list[str]) -> list[str]:
    """``argv`` run where ``target`` is ``source`` mounted read-only (a private mount
    namespace: root, like every user, cannot write there — nor create SQLite's -shm)."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("a read-only mount needs root and unshare")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace: {probe.stderr.strip()}")
    command = " ".join(shlex.quote(part) for part in argv)
    mount = f"mount --bind -o ro {shlex.quote(str(source))} {shlex.quote(str(target))}"
    return ["unshare", "-m", "sh", "-c", f"{mount} && exec {command}"]


@pytest.mark.parametrize("pending_wal", [False, True], ids=["checkpointed", "wal-pending"])
async def test_sqlite_read_records_on_a_read_only_filesystem_reads_every_record(
    tmp_path: Path, pending_wal: bool
) -> None:
    """A store on a read-only filesystem is read whole: closed cleanly (no WAL left), or as
    a crash leaves it (committed transactions still in the -wal file), through ``liqshell
    replay`` as through read_records."""
    source, copy, target = tmp_path / "work", tmp_path / "copy", tmp_path / "ro"
    for folder in (source, copy, target):
        folder.mkdir()
    store = SqliteStore(source / "s.sqlite")
    for n in range(1, 6):
        await store.commit(
            "0xa", state_of("0xa", n), decision(state_of("0xa", n), n), expected_version=n - 1
        )
    names = ["s.sqlite", "s.sqlite-wal"] if pending_wal else ["s.sqlite"]
    if not pending_wal:
        await store.close()
    for name in names:  # while the store is open: its WAL is not checkpointed yet
        shutil.copyfile(source / name, copy / name)
    await store.close()
    script = (
        "import sys; from liqshell.adapters.sqlite import read_records; "
        "print([r.version for r in read_records(sys.argv[1])])"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for argv, expected in (
        ([sys.executable, "-c", script, str(target / "s.sqlite")], "[1, 2, 3, 4, 5]"),
        (
            [sys.executable, "-m", "liqshell", "replay", str(target / "s.sqlite")],
            "replayed 5 decisions",
        ),
    ):
        out = subprocess.run(
            _read_only_mount(copy, target, argv), capture_output=True, text=True, env=env,
            check=False,
        )  # fmt: skip
        assert expected in out.stdout, out.stderr
    assert sorted(p.name for p in copy.iterdir()) == sorted(names)


# --------------------------------------------------------------------------- load_one, history


async def check_load_one_and_history(store: StateStore) -> None:
    """``load_one`` is the wallet's entry of ``load`` (None when nothing is stored);
    ``history`` the records committed with its versions after a version, in order — not a
    skipped feed item's, not an appended uncommitted one's, not another wallet's."""
    for n in range(1, 4):
        await store.commit(
            "0xa", state_of("0xa", n), decision(state_of("0xa", n), n), expected_version=n - 1
        )
    await store.commit(
        "0xb", state_of("0xb", 1), decision(state_of("0xb", 1), 1), expected_version=0
    )
    skipped = Record(kind=RecordKind.FEED, wallet="0xa", now=5, event_id="e", cursor=1)
    await store.commit_cursor(1, skipped)
    append = getattr(store, "append", None)
    if append is not None:
        await append(Record(kind=RecordKind.OUTCOMES, wallet="0xa", now=6, note="quarantined"))
    loaded = await store.load()
    assert await store.load_one("0xa") == loaded["0xa"]
    assert await store.load_one("0xnone") is None
    history = await store.history("0xa", after_version=1)
    assert [r.version for r in history] == [2, 3]
    assert history == (decision(state_of("0xa", 2), 2), decision(state_of("0xa", 3), 3))
    assert [r.version for r in await store.history("0xa", after_version=0)] == [1, 2, 3]
    assert await store.history("0xa", after_version=3) == ()


async def test_sqlite_store_load_one_and_history(tmp_path: Path) -> None:
    """SqliteStore: see check_load_one_and_history."""
    store = SqliteStore(tmp_path / "s.sqlite")
    try:
        await check_load_one_and_history(store)
    finally:
        await store.close()


async def test_memory_store_load_one_and_history() -> None:
    """MemoryStore: see check_load_one_and_history."""
    await check_load_one_and_history(MemoryStore())


def sqlite_retention_harness(folder: Path) -> RetentionHarness:
    """Pruning stores on new files in ``folder``, read back as analysis.load reads them."""

    async def open_store(retention: Retention) -> object:
        return SqliteStore(folder / f"pruned-{next(_files)}.sqlite", retention=retention)

    async def entries(store: object) -> list[RecordingHeader | Record]:
        assert isinstance(store, SqliteStore)
        return list(store.entries())

    async def pruned(store: object) -> Pruned:
        assert isinstance(store, SqliteStore)
        return read_pruned(store.path)

    async def load(store: object) -> analysis.Recording:
        assert isinstance(store, SqliteStore)
        return await asyncio.to_thread(analysis.load, store.path)

    return RetentionHarness(open=open_store, entries=entries, pruned=pruned, load=load)


@pytest.mark.parametrize("check", RETENTION, ids=lambda check: check.__name__)
async def test_sqlite_store_retention(check: RetentionCheck, tmp_path: Path) -> None:
    """SqliteStore prunes its log as every check of the retention contract says."""
    harness = sqlite_retention_harness(tmp_path)
    try:
        await check(harness)
    finally:
        await harness.close_all()


async def test_sqlite_pruned_recording_replays_from_the_cli_without_gaps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``liqshell replay`` of a pruned store: 0 mismatches, no version reported missing
    (the log starts later by design), and a line saying what retention removed."""
    path = tmp_path / "pruned.sqlite"
    store = SqliteStore(path, retention=Retention(keep_records=300))
    await run_simulation(store, record="all")
    done = await store.prune()
    await store.close()
    assert done.records > 0
    assert cli_main(["replay", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"pruned: retention removed the oldest {done.records} records" in out
    assert "gap" not in out
    assert ": 0 mismatches" in out


async def test_sqlite_store_counts_what_it_pruned_into_the_watchers_metric(
    tmp_path: Path,
) -> None:
    """The watcher adds what the store's retention removed since its last poll to
    ``liqshell_pruned_records_total``."""
    from prometheus_client import CollectorRegistry

    params = SimParams(accounts=6, minutes=2, seed=3)
    sim = SimExchange(new_world(params, Config()), config=Config())
    store = SqliteStore(
        tmp_path / "m.sqlite", retention=Retention(keep_records=20, interval_ms=3_600_000)
    )
    registry = CollectorRegistry()
    clock = SimClock(sim.world.now)
    watcher = Watcher(
        portfolios=sim, margin=sim, quotes=sim, orders=sim, gateway=sim, auctions=sim,
        store=store, sink=sim, recorder=store, clock=clock, record="all", metrics=registry,
    )  # fmt: skip
    for _ in range(6):
        clock.set(sim.world.now)
        await watcher.run_once()
        sim.advance()
    await store.close()  # the pass the first write started (nothing to prune yet) is over
    before = store.pruned_total.records
    done = await store.prune()
    assert done.records > 0
    clock.set(sim.world.now)
    await watcher.run_once()
    assert registry.get_sample_value("liqshell_pruned_records_total") == before + done.records
    await watcher.close()


def test_retention_with_bad_limits_raises_value_error_naming_the_field() -> None:
    """A limit that is not an int >= 1 is refused, naming the field; never clamped."""
    for field, value in (
        ("keep_days", 0),
        ("keep_records", -1),
        ("keep_days", 1.5),
        ("batch", 0),
        ("interval_ms", True),
    ):
        with pytest.raises(ValueError, match=f"Retention.{field} must be an int >= 1"):
            Retention(**{field: value})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retention must be a Retention"):
        SqliteStore("x.sqlite", retention={"keep_days": 3})  # type: ignore[arg-type]
