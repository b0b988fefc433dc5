"""Watchers sharing one PostgreSQL store through shards and leases (issue 13).

Two :class:`~liqshell.Watcher` instances, each with a :class:`ShardOwner` and a store of its
own on one schema, poll one simulated exchange. With disjoint shards they never conflict
and every request reaches the exchange once, from the owner of the wallet's shard; an
instance paused past its lease is fenced at its first commit and sends nothing after the
takeover (counted at the exchange)."""

from __future__ import annotations

import asyncio
import collections

import pytest
from prometheus_client import CollectorRegistry

from liqcore import Config
from liqshell import Watcher
from liqshell.adapters.postgres import PostgresStore
from liqshell.cluster import shard_of
from liqshell.ownership import ShardOwner
from liqshell.sim import SimClock, SimExchange, SimParams, new_world
from liqshell.sim.world import Market
from tests.liqshell.test_two_watchers import Sender, decided_requests

pytestmark = pytest.mark.services

PARAMS = SimParams(accounts=12, minutes=5, seed=4)
CONFIG = Config()
SHARDS = 6
TTL = 12_000  # ms of simulated time: more than two ticks of the world (5 s each)
RENEW = 5_000


def _watcher(
    name: str,
    exchange: SimExchange,
    clock: SimClock,
    store: PostgresStore,
    sent: list[tuple[str, str]],
    published: list[tuple[str, tuple[str, int, int]]],
    **kwargs: object,
) -> Watcher:
    sender = Sender(name=name, exchange=exchange, sent=sent, published=published)
    owner = ShardOwner(store, instance_id=name, shards=SHARDS, lease_ttl_ms=TTL)
    return Watcher(
        portfolios=exchange,
        margin=exchange,
        quotes=exchange,
        orders=exchange,
        gateway=sender,
        auctions=sender,
        feed=exchange,
        store=store,
        sink=sender,
        recorder=store,
        clock=clock,
        config=CONFIG,
        owner=owner,
        renew_interval_ms=RENEW,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_two_instances_on_disjoint_shards_never_conflict(
    postgres_dsn: str, pg_schema: str, stores: list[PostgresStore]
) -> None:
    """Over a whole simulated run, two instances converge to disjoint shards covering all
    of them; no commit ever conflicts; every committed request reaches the exchange exactly
    once, sent by the instance that held the wallet's shard; both instances act."""
    market = Market(PARAMS)
    world = new_world(PARAMS, CONFIG, market)
    exchange = SimExchange(world, config=CONFIG, market=market)
    clock = SimClock(world.now)
    sent: list[tuple[str, str]] = []
    published: list[tuple[str, tuple[str, int, int]]] = []
    stores.extend(PostgresStore(postgres_dsn, schema=pg_schema, pool_size=3) for _ in "ab")
    watchers = {
        name: _watcher(name, exchange, clock, store, sent, published)
        for name, store in zip("ab", stores, strict=True)
    }
    conflicts = 0
    holders: dict[str, set[str]] = collections.defaultdict(set)  # wallet → who stepped it
    while True:
        clock.set(world.now)
        await asyncio.gather(*(w.drain_feed() for w in watchers.values()))
        reports = await asyncio.gather(*(w.run_once() for w in watchers.values()))
        conflicts += sum(report.conflicts for report in reports)
        for name, watcher in watchers.items():
            for wallet in watcher.states:
                holders[wallet].add(name)
        if world.tick >= PARAMS.ticks:
            break
        exchange.advance()
    owned = {name: w.shards for name, w in watchers.items()}
    assert owned["a"] | owned["b"] == set(range(SHARDS))
    assert not owned["a"] & owned["b"]
    assert {len(s) for s in owned.values()} == {SHARDS // 2}
    records = [record async for record in stores[0].records()]
    decided = decided_requests(records)
    counts = collections.Counter(request for _, request in sent)
    print(
        f"cluster of two: {len(records)} records, {len(decided)} requests decided, "
        f"{len(sent)} sent, owned {owned}, conflicts {conflicts}"
    )
    assert conflicts == 0
    assert [r for r, n in counts.items() if n != 1] == []
    assert set(counts) == set(decided)
    assert {name for name, _ in sent} == {"a", "b"}
    for name, request in sent:
        wallet, _ = decided[request]
        assert shard_of(wallet, SHARDS) in owned[name] or len(holders[wallet]) > 1, request
    assert world.stats.submitted > 0


async def test_an_instance_paused_past_its_lease_never_acts_after_the_takeover(
    postgres_dsn: str, pg_schema: str, stores: list[PostgresStore]
) -> None:
    """Instance a holds every shard; it stops (its clock too, as a SIGSTOPped process's
    view of time) while b's clock moves past a's lease and b takes every shard at the next
    epochs. Resumed, a steps as if nothing happened: every commit is fenced, nothing it
    decided reaches the exchange, its shards are dropped and counted."""
    market = Market(PARAMS)
    world = new_world(PARAMS, CONFIG, market)
    exchange = SimExchange(world, config=CONFIG, market=market)
    clock_a, clock_b = SimClock(world.now), SimClock(world.now)
    sent: list[tuple[str, str]] = []
    published: list[tuple[str, tuple[str, int, int]]] = []
    stores.extend(PostgresStore(postgres_dsn, schema=pg_schema, pool_size=3) for _ in "ab")
    registry = CollectorRegistry()
    a = _watcher("a", exchange, clock_a, stores[0], sent, published, record="all", metrics=registry)
    await a.run_once()
    assert a.shards == set(range(SHARDS))
    paused_at = clock_a.now_ms()
    epochs_a = {s: lease.epoch for s, lease in a._owner.owned.items()}  # type: ignore[union-attr]

    # a is paused: its clock stands still; b starts once a's lease has run out.
    while world.now <= paused_at + TTL:
        exchange.advance()
    clock_b.set(world.now)
    b = _watcher("b", exchange, clock_b, stores[1], sent, published, record="all")
    await b.run_once()
    assert b.shards == set(range(SHARDS))
    leases_b = b._owner.owned  # type: ignore[union-attr]
    assert all(leases_b[s].epoch == epochs_a[s] + 1 for s in range(SHARDS))

    # a resumes without noticing (its next tick is not due on its clock): it steps every
    # wallet it holds (record="all": each decision is a commit) and is fenced each time.
    before = len(sent)
    report = await a.run_once()
    assert report.stepped == 0
    assert [name for name, _ in sent[before:]] == []
    fenced = registry.get_sample_value("liqshell_fenced_commits_total")
    assert fenced is not None
    assert fenced >= 1
    stepped = {shard_of(w, SHARDS) for w in world.accounts}
    assert not a.shards & stepped  # every shard it committed in is dropped
    assert a.states.keys().isdisjoint(world.accounts)
    # Its clock catches up: the next tick finds the other shards taken too.
    clock_a.set(world.now)
    await a.tick()
    assert a.shards == frozenset()
    assert registry.get_sample_value("liqshell_lease_losses_total") == SHARDS
    assert registry.get_sample_value("liqshell_owned_shards") == 0
    assert [name for name, _ in sent[before:]] == []
    # b goes on alone and acts.
    for _ in range(PARAMS.ticks - world.tick):
        exchange.advance()
        clock_b.set(world.now)
        await b.drain_feed()
        await b.run_once()
    assert {name for name, _ in sent[before:]} <= {"b"}
