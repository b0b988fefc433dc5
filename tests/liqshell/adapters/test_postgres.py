"""PostgresStore against a real, throwaway PostgreSQL: the store contract, races, restarts."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings

from liqshell import analysis
from liqshell.adapters import Pruned, Retention, StoreUnavailable
from liqshell.adapters.postgres import SCHEMA_VERSION, PostgresStore
from liqshell.ports import Conflict, LiqshellError, Record, RecordingHeader, RecordKind, StateStore
from tests.liqshell.adapters.retention_contract import RETENTION, RetentionHarness
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
from tests.liqshell.services import PostgresServer

_schemas = itertools.count(1)


def postgres_harness(dsn: str) -> StoreHarness:
    """Stores on new schemas of the test database; ``again`` opens the same schema anew."""

    async def open_store() -> StateStore:
        return PostgresStore(dsn, schema=f"contract_{next(_schemas)}", timeout_ms=5_000)

    async def again(store: StateStore) -> StateStore:
        assert isinstance(store, PostgresStore)
        return PostgresStore(store.dsn, schema=store.schema, timeout_ms=5_000)

    async def records(store: StateStore) -> list[Record]:
        assert isinstance(store, PostgresStore)
        return [record async for record in store.records()]

    return StoreHarness(open=open_store, again=again, read_records=records)


@pytest.mark.services
@pytest.mark.parametrize("check", CONTRACT, ids=lambda check: check.__name__)
async def test_postgres_store_meets_the_store_contract(check: Check, postgres_dsn: str) -> None:
    """PostgresStore satisfies every check of the StateStore contract."""
    harness = postgres_harness(postgres_dsn)
    try:
        await check(harness)
    finally:
        await harness.close_all()


@pytest.mark.services
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(plan=commit_plans())
async def test_postgres_store_commit_plans_match_the_model(
    postgres_dsn: str, plan: list[Step]
) -> None:
    """Any sequence of commit attempts leaves PostgresStore equal to the model."""
    harness = postgres_harness(postgres_dsn)
    try:
        await check_commit_plan(harness, plan)
    finally:
        await harness.close_all()


async def _commit_next(store: PostgresStore, wallet: str, n: int) -> int:
    state = state_of(wallet, n)
    return await store.commit(wallet, state, decision(state, n + 1), expected_version=n)


@pytest.mark.services
async def test_postgres_two_stores_racing_on_one_wallet_win_each_version_once(
    postgres_dsn: str, pg_schema: str
) -> None:
    """Two PostgresStores, four tasks each, racing commits on one wallet: every version is
    won exactly once, the rest get Conflict, and the log holds one record per version."""
    stores = [PostgresStore(postgres_dsn, schema=pg_schema, pool_size=4) for _ in range(2)]
    wins: list[int] = []
    conflicts = 0

    async def racer(store: PostgresStore, index: int) -> None:
        nonlocal conflicts
        for attempt in range(8):
            loaded = await store.load()
            version = loaded["0xr"].version if "0xr" in loaded else 0
            state = state_of("0xr", 1000 * index + attempt)
            try:
                wins.append(
                    await store.commit(
                        "0xr", state, decision(state, version + 1), expected_version=version
                    )
                )
            except Conflict:
                conflicts += 1

    try:
        await asyncio.gather(*(racer(stores[i % 2], i) for i in range(8)))
        assert sorted(wins) == list(range(1, len(wins) + 1))
        assert len(wins) + conflicts == 64
        assert conflicts > 0
        assert (await stores[1].load())["0xr"].version == len(wins)
        assert [r.version async for r in stores[0].records()] == list(range(1, len(wins) + 1))
    finally:
        for store in stores:
            await store.close()


@pytest.mark.services
@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgres_store_reconnects_after_a_restart_and_loses_nothing(
    postgres_dsn: str, pg_schema: str, restart_postgres: Callable[[str], None], mode: str
) -> None:
    """After PostgreSQL restarts (cleanly or as after a crash) the same store object
    reconnects by itself, and every commit made before the restart is there."""
    store = PostgresStore(postgres_dsn, schema=pg_schema, timeout_ms=10_000)
    try:
        for n in range(3):
            await _commit_next(store, "0xa", n)
        await store.commit_cursor(
            5, Record(kind=RecordKind.FEED, wallet="0xfeed", now=1, event_id="e")
        )
        await asyncio.to_thread(restart_postgres, mode)
        assert await _commit_next(store, "0xa", 3) == 4
        stored = (await store.load())["0xa"]
        assert stored.version == 4
        assert stored.state == state_of("0xa", 3)
        assert await store.cursor() == 5
        assert await store.applied("e")
        assert [r.version async for r in store.records(wallet="0xa")] == [1, 2, 3, 4]
    finally:
        await store.close()


@pytest.mark.services
async def test_postgres_store_keeps_committing_through_a_restart(
    postgres_dsn: str, pg_schema: str, restart_postgres: Callable[[str], None]
) -> None:
    """A writer that retries on StoreUnavailable (re-reading its version) keeps going while
    the server restarts under it; no confirmed commit is lost and the log has no gap."""
    store = PostgresStore(postgres_dsn, schema=pg_schema, timeout_ms=10_000)
    confirmed: list[int] = []
    unavailable = 0
    done = asyncio.Event()

    async def writer() -> None:
        nonlocal unavailable
        while not done.is_set() or len(confirmed) < 40:
            try:
                loaded = await store.load()
                version = loaded["0xw"].version if "0xw" in loaded else 0
                confirmed.append(await _commit_next(store, "0xw", version))
            except StoreUnavailable:
                unavailable += 1
                await asyncio.sleep(0.05)
            except Conflict:  # our own commit, whose answer was lost in the restart
                pass

    task = asyncio.create_task(writer())
    try:
        while len(confirmed) < 10:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(restart_postgres, "immediate")
        done.set()
        await asyncio.wait_for(task, 30)
        stored = (await store.load())["0xw"]
        assert stored.version >= confirmed[-1]
        assert stored.state == state_of("0xw", stored.version - 1)
        versions = [r.version async for r in store.records()]
        assert versions == list(range(1, stored.version + 1))
        assert set(confirmed) <= set(versions)
    finally:
        task.cancel()
        await store.close()


@pytest.mark.services
async def test_postgres_store_with_server_down_raises_store_unavailable(
    postgres_server: PostgresServer, postgres_dsn: str, pg_schema: str
) -> None:
    """With the server down every call raises StoreUnavailable (after timeout_ms), and the
    store works again once the server is back."""
    store = PostgresStore(postgres_dsn, schema=pg_schema, timeout_ms=500)
    try:
        await _commit_next(store, "0xa", 0)
        await asyncio.to_thread(postgres_server.stop, "fast")
        try:
            with pytest.raises(StoreUnavailable):
                await store.load()
            with pytest.raises(StoreUnavailable):
                await _commit_next(store, "0xa", 1)
        finally:
            await asyncio.to_thread(postgres_server.start)
        assert await _commit_next(store, "0xa", 1) == 2
    finally:
        await store.close()


@pytest.mark.services
async def test_postgres_store_never_reached_raises_store_unavailable(
    postgres_server: PostgresServer,
) -> None:
    """A store whose server cannot be reached raises StoreUnavailable, not a psycopg error."""
    dsn = postgres_server.dsn().replace(f"port={postgres_server.port}", "port=1")
    store = PostgresStore(dsn, schema="never", timeout_ms=300)
    try:
        with pytest.raises(StoreUnavailable, match="server unreachable"):
            await store.load()
    finally:
        await store.close()


PASSWORD_ROLE = "liq_pw_test"


@pytest.fixture
def password_role(postgres_server: PostgresServer) -> str:
    """A role that must give its password (scram on loopback for it alone); its DSN
    without the password."""
    return postgres_server.require_password(PASSWORD_ROLE, "right-one")


@pytest.mark.services
async def test_postgres_store_with_a_wrong_password_says_authentication_failed(
    password_role: str,
) -> None:
    """A wrong password reads as an authentication failure, not as a server that is down;
    the right one connects."""
    wrong = PostgresStore(f"{password_role} password=WrongPw99", schema="auth", timeout_ms=2_000)
    try:
        with pytest.raises(StoreUnavailable, match="authentication failed") as raised:
            await wrong.load()
        assert "WrongPw99" not in str(raised.value)
        assert "couldn't get a connection" not in str(raised.value)
    finally:
        await wrong.close()
    right = PostgresStore(f"{password_role} password=right-one", schema="auth", timeout_ms=2_000)
    try:
        assert dict(await right.load()) == {}
    finally:
        await right.close()


@pytest.mark.services
async def test_postgres_store_creates_its_schema_once_under_concurrent_first_use(
    postgres_dsn: str, pg_schema: str
) -> None:
    """Several stores using a new schema at once create it once, at the current version."""
    stores = [PostgresStore(postgres_dsn, schema=pg_schema) for _ in range(4)]
    try:
        await asyncio.gather(*(store.load() for store in stores))
    finally:
        for store in stores:
            await store.close()
    async with await psycopg.AsyncConnection.connect(postgres_dsn) as conn:
        rows = await (
            await conn.execute(
                f"SELECT version FROM {pg_schema}.schema_migrations ORDER BY version"
            )
        ).fetchall()
    assert rows == [(version,) for version in range(1, SCHEMA_VERSION + 1)]


@pytest.mark.services
async def test_postgres_store_refuses_a_newer_schema(postgres_dsn: str, pg_schema: str) -> None:
    """A schema written by a newer version is refused, not silently misread."""
    store = PostgresStore(postgres_dsn, schema=pg_schema)
    await store.load()
    await store.close()
    async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
        await conn.execute(
            f"INSERT INTO {pg_schema}.schema_migrations (version) VALUES (%s)",
            (SCHEMA_VERSION + 1,),
        )
    fresh = PostgresStore(postgres_dsn, schema=pg_schema)
    try:
        with pytest.raises(LiqshellError, match="version"):
            await fresh.load()
    finally:
        await fresh.close()


@pytest.mark.services
async def test_postgres_store_appended_records_join_the_log(
    postgres_dsn: str, pg_schema: str
) -> None:
    """Records appended on their own join the committed ones in one ordered log."""
    store = PostgresStore(postgres_dsn, schema=pg_schema)
    restart = Record(kind=RecordKind.RESTART, wallet="0xa", now=1, note="restart")
    try:
        await store.append(restart)
        await _commit_next(store, "0xa", 0)
        records = [r async for r in store.records()]
        assert records[0] == restart
        assert [r.kind for r in records] == [RecordKind.RESTART, RecordKind.DECISION]
        assert [r async for r in store.records(wallet="0xb")] == []
    finally:
        await store.close()


@pytest.mark.services
def test_postgres_store_is_usable_from_several_event_loops(
    postgres_dsn: str, pg_schema: str
) -> None:
    """One store object serves one asyncio.run after another (closed between loops, and
    also when it is not)."""
    store = PostgresStore(postgres_dsn, schema=pg_schema)

    async def step(n: int, close: bool) -> int:
        version = await _commit_next(store, "0xa", n)
        if close:
            await store.close()
        return version

    assert asyncio.run(step(0, False)) == 1
    assert asyncio.run(step(1, True)) == 2
    assert asyncio.run(step(2, False)) == 3
    asyncio.run(store.close())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schema": "Bad-Name"}, "schema"),
        ({"schema": ""}, "schema"),
        ({"pool_size": 0}, "pool_size"),
        ({"timeout_ms": 0}, "timeout_ms"),
    ],
)
def test_postgres_store_with_bad_settings_raises_value_error(
    kwargs: dict[str, object], message: str
) -> None:
    """Bad constructor arguments raise ValueError naming the argument, before connecting."""
    with pytest.raises(ValueError, match=message):
        PostgresStore("host=127.0.0.1 port=1", **kwargs)  # type: ignore[arg-type]


@pytest.mark.services
async def test_postgres_store_load_one_and_history(postgres_dsn: str, pg_schema: str) -> None:
    """PostgresStore: load_one and history as for every store."""
    from tests.liqshell.adapters.test_sqlite import check_load_one_and_history

    store = PostgresStore(postgres_dsn, schema=pg_schema)
    try:
        await check_load_one_and_history(store)
    finally:
        await store.close()


def postgres_retention_harness(dsn: str) -> RetentionHarness:
    """Pruning stores on new schemas of the test database, read back as analysis.load
    reads a DSN."""

    async def open_store(retention: Retention) -> object:
        return PostgresStore(dsn, schema=f"pruned_{next(_schemas)}", retention=retention)

    async def entries(store: object) -> list[RecordingHeader | Record]:
        assert isinstance(store, PostgresStore)
        return [entry async for entry in store.entries()]

    async def pruned(store: object) -> Pruned:
        assert isinstance(store, PostgresStore)
        return await store.pruned_log()

    async def load(store: object) -> analysis.Recording:
        assert isinstance(store, PostgresStore)
        return await asyncio.to_thread(analysis.load, store.dsn, schema=store.schema)

    return RetentionHarness(open=open_store, entries=entries, pruned=pruned, load=load)


@pytest.mark.services
@pytest.mark.parametrize("check", RETENTION, ids=lambda check: check.__name__)
async def test_postgres_store_retention(check: RetentionCheck, postgres_dsn: str) -> None:
    """PostgresStore prunes its log as every check of the retention contract says."""
    harness = postgres_retention_harness(postgres_dsn)
    try:
        await check(harness)
    finally:
        await harness.close_all()
