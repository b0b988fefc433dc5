"""liqshell.ownership: instances sharing the shards of one PostgreSQL store — convergence
to the balanced assignment, takeover of a dead instance's shards within TTL + one tick, a
paused instance fenced when it resumes, hand-over on a clean leave."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest

from liqshell.adapters.postgres import PostgresStore
from liqshell.cluster import assign, shard_of
from liqshell.ownership import ShardOwner
from liqshell.ports import Fenced
from tests.liqshell.adapters.store_contract import decision, state_of

SHARDS = 8
TTL = 3_000


@pytest.fixture
async def owners(postgres_dsn: str, pg_schema: str) -> AsyncIterator[tuple[ShardOwner, ...]]:
    """Three instances, each with a store of its own on one schema."""
    stores = [PostgresStore(postgres_dsn, schema=pg_schema, pool_size=2) for _ in range(3)]
    try:
        yield tuple(
            ShardOwner(store, instance_id=name, shards=SHARDS, lease_ttl_ms=TTL)
            for store, name in zip(stores, "abc", strict=True)
        )
    finally:
        for store in stores:
            await store.close()


async def _round(owners: Sequence[ShardOwner], now: int) -> None:
    for owner in owners:
        await owner.tick(now)


def _check_disjoint_and_balanced(owners: Sequence[ShardOwner]) -> None:
    held = [set(owner.owned) for owner in owners]
    assert sum(len(h) for h in held) == SHARDS
    assert set().union(*held) == set(range(SHARDS))
    assert all(SHARDS // len(owners) <= len(h) <= -(-SHARDS // len(owners)) for h in held)


@pytest.mark.services
async def test_instances_converge_to_one_balanced_owner_per_shard(
    owners: tuple[ShardOwner, ...],
) -> None:
    """Started one after the other, three instances own disjoint, balanced sets of shards
    covering all of them after two rounds of ticks, matching assign(); a third round
    changes nothing."""
    await _round(owners, 0)
    await _round(owners, 500)
    _check_disjoint_and_balanced(owners)
    expected = assign(SHARDS, ["a", "b", "c"], {s: o.instance_id for o in owners for s in o.owned})
    assert {s: o.instance_id for o in owners for s in o.owned} == dict(expected)
    before = {o.instance_id: dict(o.owned) for o in owners}
    ticks = [await o.tick(1_000) for o in owners]
    assert all(not (t.acquired or t.released or t.lost) for t in ticks)
    assert {o.instance_id: set(o.owned) for o in owners} == {k: set(v) for k, v in before.items()}


@pytest.mark.services
async def test_a_dead_instances_shards_are_taken_within_the_ttl_and_one_tick(
    owners: tuple[ShardOwner, ...],
) -> None:
    """c stops ticking at 500; at 500 + TTL (its member row and leases expired) one round
    of the others owns every shard again, balanced over two, at the next epochs."""
    a, b, c = owners
    await _round(owners, 0)
    await _round(owners, 500)
    dead = dict(c.owned)
    assert dead
    await _round([a, b], 500 + TTL - 1)
    assert set(a.owned) | set(b.owned) == set(range(SHARDS)) - set(dead)
    await _round([a, b], 500 + TTL)
    _check_disjoint_and_balanced([a, b])
    for shard, lease in dead.items():
        now_held = a.owned.get(shard) or b.owned[shard]
        assert now_held.epoch == lease.epoch + 1


@pytest.mark.services
async def test_a_paused_instance_is_fenced_when_it_resumes(
    owners: tuple[ShardOwner, ...],
) -> None:
    """c pauses past its lease; the others take its shards; resumed, c's commit under an
    old lease raises Fenced and its renewals are lost — then it rejoins and the shards are
    rebalanced over three again."""
    a, b, c = owners
    await _round(owners, 0)
    await _round(owners, 500)
    shard = min(c.owned)
    wallet = next(w for w in (f"0x{i:04x}" for i in range(10_000)) if shard_of(w, SHARDS) == shard)
    stale = c.lease_of(wallet)
    assert stale is not None
    await _round([a, b], 500 + TTL)
    state = state_of(wallet, 1)
    assert isinstance(c.store, PostgresStore)
    with pytest.raises(Fenced):
        await c.store.commit(wallet, state, decision(state, 1), expected_version=0, lease=stale)
    resumed = await c.tick(600 + TTL)
    assert shard in resumed.lost
    assert c.losses >= 1
    assert shard not in c.owned
    await _round([a, b, c], 700 + TTL)
    await _round([a, b, c], 800 + TTL)
    _check_disjoint_and_balanced(owners)


@pytest.mark.services
async def test_a_clean_leave_hands_the_shards_over_at_the_next_tick(
    owners: tuple[ShardOwner, ...],
) -> None:
    """b leaves (releases, leaves the members): a and c own everything one round later,
    long before b's TTL would have run out."""
    a, b, c = owners
    await _round(owners, 0)
    await _round(owners, 500)
    await b.leave()
    assert b.owned == {}
    await _round([a, c], 600)
    _check_disjoint_and_balanced([a, c])


@pytest.mark.services
async def test_a_join_moves_at_most_the_bound(owners: tuple[ShardOwner, ...]) -> None:
    """c joins a and b: the shards that change hands are at most ⌈S/M⌉ + 1 (M = 2), all to
    c, and everyone is balanced after two rounds."""
    a, b, c = owners
    await _round([a, b], 0)
    await _round([a, b], 500)
    before = {s: o.instance_id for o in (a, b) for s in o.owned}
    await _round(owners, 1_000)
    await _round(owners, 1_500)
    _check_disjoint_and_balanced(owners)
    after = {s: o.instance_id for o in owners for s in o.owned}
    changed = {s for s in range(SHARDS) if before[s] != after[s]}
    assert changed == set(c.owned)
    assert len(changed) <= -(-SHARDS // 2) + 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"instance_id": ""}, "instance_id must be a non-empty str"),
        ({"shards": 0}, "shards must be an int >= 1, was 0"),
        ({"lease_ttl_ms": 0}, "lease_ttl_ms must be an int >= 1, was 0"),
    ],
)
def test_shard_owner_rejects_bad_settings_naming_them(
    kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"instance_id": "a", "shards": 4, "lease_ttl_ms": 1_000}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ShardOwner(PostgresStore("postgresql://unused"), **args)  # type: ignore[arg-type]
