"""PostgresStore's leases of shards with fencing, against a real, throwaway PostgreSQL:
races for a lease, expiry and takeover, stale commits rejected in the commit's transaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from liqshell.adapters.postgres import LEASES_SCHEMA_VERSION, SCHEMA_VERSION, PostgresStore
from liqshell.cluster import shard_of
from liqshell.ports import Conflict, Fenced, Lease, LeaseStore, LiqshellError, Record, RecordKind
from tests.liqshell.adapters.store_contract import decision, state_of

pytestmark = pytest.mark.services

SHARDS = 8
TTL = 1_000


def wallet_of(shard: int, n: int = 0) -> str:
    """The ``n``-th wallet name of ``shard`` (of :data:`SHARDS`)."""
    names = (f"0x{i:04x}" for i in range(100_000))
    return [w for w in names if shard_of(w, SHARDS) == shard][n]


@pytest.fixture
async def stores(postgres_dsn: str, pg_schema: str) -> AsyncIterator[tuple[PostgresStore, ...]]:
    """Two PostgresStores on one schema: the stores of two instances."""
    opened = tuple(PostgresStore(postgres_dsn, schema=pg_schema, pool_size=4) for _ in range(2))
    try:
        yield opened
    finally:
        for store in opened:
            await store.close()


async def _commit(
    store: PostgresStore,
    wallet: str,
    n: int,
    *,
    expected: int,
    lease: Lease | None,
    event_id: str | None = None,
    cursor: int | None = None,
) -> int:
    state = state_of(wallet, n)
    return await store.commit(
        wallet,
        state,
        decision(state, expected + 1, event_id=event_id, cursor=cursor),
        expected_version=expected,
        cursor=cursor,
        lease=lease,
    )


def test_postgres_store_is_a_lease_store() -> None:
    """PostgresStore has every method of the LeaseStore port."""
    store: LeaseStore = PostgresStore("postgresql://unused")
    assert all(callable(getattr(store, m)) for m in ("acquire", "renew", "release", "leases"))


async def test_two_instances_racing_for_a_free_lease_one_wins(
    stores: tuple[PostgresStore, ...],
) -> None:
    """Sixteen acquisitions of each shard from two stores at once: exactly one is granted,
    at epoch 1; the others get None and the row names the winner."""
    a, b = stores
    for shard in range(SHARDS):
        grants = await asyncio.gather(
            *(
                (a if i % 2 else b).acquire(shard, f"i{i}", shards=SHARDS, now=10_000, ttl_ms=TTL)
                for i in range(16)
            )
        )
        won = [g for g in grants if g is not None]
        assert len(won) == 1
        assert won[0].epoch == 1
        assert (await a.leases())[shard] == won[0]


async def test_racing_for_an_expired_lease_one_wins_and_the_epoch_moves_by_one(
    stores: tuple[PostgresStore, ...],
) -> None:
    """Once the lease expired, of many racing takeovers exactly one wins, at epoch + 1."""
    a, b = stores
    first = await a.acquire(3, "old", shards=SHARDS, now=0, ttl_ms=TTL)
    assert first is not None
    grants = await asyncio.gather(
        *(
            (a if i % 2 else b).acquire(3, f"new{i}", shards=SHARDS, now=TTL, ttl_ms=TTL)
            for i in range(16)
        )
    )
    won = [g for g in grants if g is not None]
    assert len(won) == 1
    assert won[0].epoch == first.epoch + 1
    assert won[0].holder != "old"


async def test_expiry_and_takeover_increment_the_epoch_and_renew_after_loss_fails(
    stores: tuple[PostgresStore, ...],
) -> None:
    """A running lease is not taken; at its expiry it is, at the next epoch; the old holder's
    renewal then raises Fenced, and its release is refused."""
    a, b = stores
    lease = await a.acquire(0, "A", shards=SHARDS, now=5_000, ttl_ms=TTL)
    assert lease == Lease(shard=0, shards=SHARDS, holder="A", epoch=1, expires=6_000)
    assert await b.acquire(0, "B", shards=SHARDS, now=5_999, ttl_ms=TTL) is None
    lease = await a.renew(lease, now=5_500, ttl_ms=TTL)
    assert lease.expires == 6_500
    assert lease.epoch == 1
    assert await b.acquire(0, "B", shards=SHARDS, now=6_499, ttl_ms=TTL) is None
    taken = await b.acquire(0, "B", shards=SHARDS, now=6_500, ttl_ms=TTL)
    assert taken == Lease(shard=0, shards=SHARDS, holder="B", epoch=2, expires=7_500)
    with pytest.raises(Fenced, match="shard 0 at epoch 1"):
        await a.renew(lease, now=6_600, ttl_ms=TTL)
    assert not await a.release(lease)
    assert (await a.leases())[0] == taken


async def test_an_expired_lease_nobody_took_can_be_renewed(
    stores: tuple[PostgresStore, ...],
) -> None:
    """Expiry alone does not fence: until another instance takes the shard, the holder may
    renew (its epoch is still the shard's, so its commits were and are safe)."""
    a, _ = stores
    lease = await a.acquire(1, "A", shards=SHARDS, now=0, ttl_ms=TTL)
    assert lease is not None
    renewed = await a.renew(lease, now=5 * TTL, ttl_ms=TTL)
    assert renewed.epoch == 1
    assert renewed.expires == 6 * TTL


async def test_the_same_holder_reacquiring_fences_its_previous_incarnation(
    stores: tuple[PostgresStore, ...],
) -> None:
    """An instance restarted with the same id gets the next epoch at once; the grant its
    previous incarnation holds is stale from then on."""
    a, b = stores
    old = await a.acquire(2, "A", shards=SHARDS, now=0, ttl_ms=TTL)
    new = await b.acquire(2, "A", shards=SHARDS, now=1, ttl_ms=TTL)
    assert old is not None
    assert new is not None
    assert new.epoch == old.epoch + 1
    with pytest.raises(Fenced):
        await a.renew(old, now=2, ttl_ms=TTL)


async def test_a_released_lease_is_taken_at_once_at_the_next_epoch(
    stores: tuple[PostgresStore, ...],
) -> None:
    a, b = stores
    lease = await a.acquire(4, "A", shards=SHARDS, now=100, ttl_ms=TTL)
    assert lease is not None
    assert await a.release(lease)
    taken = await b.acquire(4, "B", shards=SHARDS, now=101, ttl_ms=TTL)
    assert taken is not None
    assert taken.epoch == 2


async def test_a_commit_under_a_stale_epoch_is_rejected_although_its_version_matches(
    stores: tuple[PostgresStore, ...],
) -> None:
    """After a takeover, the old holder's commit — right expected version, cursor and event
    id — raises Fenced and writes nothing; the new holder's commit of that version wins."""
    a, b = stores
    wallet = wallet_of(5)
    old = await a.acquire(5, "A", shards=SHARDS, now=0, ttl_ms=TTL)
    assert old is not None
    assert await _commit(a, wallet, 1, expected=0, lease=old) == 1
    new = await b.acquire(5, "B", shards=SHARDS, now=TTL, ttl_ms=TTL)
    assert new is not None
    assert new.epoch == 2

    with pytest.raises(Fenced, match="is stale"):
        await _commit(a, wallet, 2, expected=1, lease=old, event_id="ev", cursor=7)
    stored = (await b.load())[wallet]
    assert stored.version == 1
    assert stored.state == state_of(wallet, 1)
    assert [r.version async for r in b.records(wallet=wallet)] == [1]
    assert await b.cursor() is None
    assert not await b.applied("ev")

    assert await _commit(b, wallet, 3, expected=1, lease=new, event_id="ev", cursor=7) == 2
    assert (await a.load())[wallet].state == state_of(wallet, 3)
    assert await _epoch_of(b, wallet) == 2


async def test_a_lease_never_granted_fences_the_commit(
    stores: tuple[PostgresStore, ...],
) -> None:
    a, _ = stores
    wallet = wallet_of(6)
    made_up = Lease(shard=6, shards=SHARDS, holder="A", epoch=1, expires=TTL)
    with pytest.raises(Fenced, match="never granted"):
        await _commit(a, wallet, 1, expected=0, lease=made_up)
    assert await a.load() == {}


async def test_fencing_wins_over_the_compare_and_set(stores: tuple[PostgresStore, ...]) -> None:
    """A stale commit that would also lose its compare-and-set raises Fenced, not Conflict:
    the instance must drop the shard, not reload the wallet."""
    a, b = stores
    wallet = wallet_of(0)
    old = await a.acquire(0, "A", shards=SHARDS, now=0, ttl_ms=TTL)
    assert old is not None
    await _commit(a, wallet, 1, expected=0, lease=old)
    new = await b.acquire(0, "B", shards=SHARDS, now=TTL, ttl_ms=TTL)
    assert new is not None
    await _commit(b, wallet, 2, expected=1, lease=new)
    with pytest.raises(Fenced):
        await _commit(a, wallet, 3, expected=1, lease=old)
    with pytest.raises(Conflict):
        await _commit(b, wallet, 3, expected=1, lease=new)


async def test_a_takeover_waits_for_a_running_commit_which_then_sees_the_new_epoch(
    stores: tuple[PostgresStore, ...], postgres_dsn: str, pg_schema: str
) -> None:
    """The epoch is read in the commit's transaction under a row lock: a takeover that is
    in flight (the lease row updated, not yet committed) when the commit starts makes the
    commit wait, and once the takeover commits the commit is Fenced — a check made before
    the transaction, or without the lock, would have let it through on the old epoch."""
    a, _ = stores
    wallet = wallet_of(7)
    old = await a.acquire(7, "A", shards=SHARDS, now=0, ttl_ms=TTL)
    assert old is not None
    async with await psycopg.AsyncConnection.connect(postgres_dsn) as takeover:
        await takeover.execute(
            f"UPDATE {pg_schema}.leases SET holder = 'B', epoch = epoch + 1 WHERE shard = 7"
        )
        pending = asyncio.ensure_future(_commit(a, wallet, 1, expected=0, lease=old))
        await _until_a_lock_wait(postgres_dsn, pending)
        assert not pending.done()
        await takeover.commit()
    with pytest.raises(Fenced):
        await pending
    assert await a.load() == {}


async def _until_a_lock_wait(dsn: str, task: asyncio.Future[int]) -> None:
    """Return once some backend waits for a lock (the commit, blocked by the takeover)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as watcher:
        for _ in range(2_000):
            row = await (
                await watcher.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
            ).fetchone()
            if row is not None and row[0] > 0:
                return
            assert not task.done(), "the commit ended without waiting for the lease row"
            await asyncio.sleep(0.01)
    raise AssertionError("the commit never waited for the lease row lock")


async def test_commits_racing_a_takeover_are_before_it_or_fenced(
    stores: tuple[PostgresStore, ...],
) -> None:
    """The old holder commits in a loop while another store takes the shard over: the
    commits it starts after the takeover returned are all Fenced (those in flight during it
    may go either way), and the new holder then commits on the version it loads."""
    a, b = stores
    wallet = wallet_of(1)
    old = await a.acquire(1, "A", shards=SHARDS, now=0, ttl_ms=TTL)
    assert old is not None
    taken = asyncio.Event()
    committing = asyncio.Event()
    after_takeover: list[str] = []

    async def old_holder() -> None:
        version = 0
        for n in range(100_000):
            started_after = taken.is_set()
            try:
                version = await _commit(a, wallet, n, expected=version, lease=old)
                outcome = "committed"
            except Fenced:
                outcome = "fenced"
            if started_after:
                after_takeover.append(outcome)
                if len(after_takeover) == 3:
                    return
            if n == 3:
                committing.set()
            await asyncio.sleep(0)

    async def new_holder() -> Lease:
        await committing.wait()
        lease = await b.acquire(1, "B", shards=SHARDS, now=TTL, ttl_ms=TTL)
        taken.set()
        assert lease is not None
        return lease

    _, new = await asyncio.gather(old_holder(), new_holder())
    assert after_takeover == ["fenced"] * 3
    stored = (await b.load())[wallet]
    assert await _commit(b, wallet, 999, expected=stored.version, lease=new) == stored.version + 1


async def test_every_instance_must_use_the_same_shard_count(
    stores: tuple[PostgresStore, ...],
) -> None:
    a, b = stores
    assert await a.acquire(0, "A", shards=SHARDS, now=0, ttl_ms=TTL) is not None
    with pytest.raises(LiqshellError, match=f"cluster of {SHARDS} shards.*shards = 16"):
        await b.acquire(0, "B", shards=16, now=0, ttl_ms=TTL)


async def test_a_commit_under_the_lease_of_another_shard_is_refused(
    stores: tuple[PostgresStore, ...],
) -> None:
    a, _ = stores
    lease = await a.acquire(2, "A", shards=SHARDS, now=0, ttl_ms=TTL)
    assert lease is not None
    with pytest.raises(ValueError, match="got the lease of shard 2"):
        await _commit(a, wallet_of(3), 1, expected=0, lease=lease)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shard": 8}, r"shard must be an int in 0\.\.7, was 8"),
        ({"shard": -1}, "shard must be an int in"),
        ({"holder": ""}, "holder must be a non-empty str"),
        ({"shards": 0}, "shards must be an int >= 1, was 0"),
        ({"now": -1}, "now must be an int >= 0"),
        ({"ttl_ms": 0}, "ttl_ms must be an int >= 1, was 0"),
        ({"ttl_ms": 1.5}, "ttl_ms must be an int >= 1, was 1.5"),
    ],
)
async def test_acquire_rejects_bad_arguments_naming_them(
    kwargs: dict[str, object], message: str
) -> None:
    """Checked before any connection (the DSN here leads nowhere)."""
    store = PostgresStore("postgresql://unused")
    args: dict[str, object] = {"shard": 0, "holder": "A", "shards": SHARDS, "now": 0, "ttl_ms": 1}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        await store.acquire(**args)  # type: ignore[arg-type]


async def test_a_schema_of_version_2_is_migrated_and_keeps_its_states(
    postgres_dsn: str, pg_schema: str
) -> None:
    """A store written by the previous liqshell (schema 2: no leases, no states.epoch) is
    migrated on first use; its states stay, at epoch 0, and leases work."""
    assert SCHEMA_VERSION == LEASES_SCHEMA_VERSION + 2  # 4: members, 5: retention
    store = PostgresStore(postgres_dsn, schema=pg_schema)
    wallet = wallet_of(0)
    try:
        await _commit(store, wallet, 1, expected=0, lease=None)
    finally:
        await store.close()
    async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
        for statement in (
            f"DROP TABLE {pg_schema}.leases",
            f"DROP TABLE {pg_schema}.cluster",
            f"DROP TABLE {pg_schema}.members",
            f"DROP TABLE {pg_schema}.pruned",
            f"DROP INDEX {pg_schema}.records_headers",
            f"DROP INDEX {pg_schema}.records_polls",
            f"ALTER TABLE {pg_schema}.states DROP COLUMN epoch",
            f"DELETE FROM {pg_schema}.schema_migrations WHERE version >= {LEASES_SCHEMA_VERSION}",
        ):
            await conn.execute(statement)
    store = PostgresStore(postgres_dsn, schema=pg_schema)
    try:
        assert (await store.load())[wallet].state == state_of(wallet, 1)
        assert await _epoch_of(store, wallet) == 0
        lease = await store.acquire(0, "A", shards=SHARDS, now=0, ttl_ms=TTL)
        assert lease is not None
        assert await _commit(store, wallet, 2, expected=1, lease=lease) == 2
        assert await _epoch_of(store, wallet) == 1
    finally:
        await store.close()


async def test_commits_without_a_lease_are_single_instance_as_before(
    stores: tuple[PostgresStore, ...],
) -> None:
    """A commit that carries no lease is checked by version only (states.epoch 0), even
    next to a leased shard — leases fence only the commits that carry one."""
    a, _ = stores
    assert await a.acquire(0, "A", shards=SHARDS, now=0, ttl_ms=TTL) is not None
    wallet = wallet_of(0)
    assert await _commit(a, wallet, 1, expected=0, lease=None) == 1
    assert await _epoch_of(a, wallet) == 0
    await a.commit_cursor(3, Record(kind=RecordKind.FEED, wallet=wallet, now=1, event_id="x"))
    assert await a.cursor() == 3


async def _epoch_of(store: PostgresStore, wallet: str) -> int:
    async with await psycopg.AsyncConnection.connect(store.dsn) as conn:
        row = await (
            await conn.execute(
                f"SELECT epoch FROM {store.schema}.states WHERE wallet = %s", (wallet,)
            )
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_members_are_live_until_their_heartbeat_expires_or_they_leave(
    stores: tuple[PostgresStore, ...],
) -> None:
    """heartbeat() declares a member live until now + ttl and returns the live ones;
    leave() ends it at once."""
    a, b = stores
    assert await a.heartbeat("a", now=0, ttl_ms=TTL) == ("a",)
    assert await b.heartbeat("b", now=500, ttl_ms=TTL) == ("a", "b")
    assert await b.heartbeat("b", now=TTL, ttl_ms=TTL) == ("b",)
    await b.leave("b")
    assert await a.heartbeat("a", now=TTL + 1, ttl_ms=TTL) == ("a",)
    with pytest.raises(ValueError, match="member must be a non-empty str"):
        await a.heartbeat("", now=0, ttl_ms=TTL)
