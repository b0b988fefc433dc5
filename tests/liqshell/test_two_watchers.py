"""Two watchers on one PostgreSQL store (SPEC §9: compare-and-set commits).

Two :class:`~liqshell.Watcher` instances, each with its own
:class:`~liqshell.adapters.postgres.PostgresStore` on one schema (two processes' worth of
connections), poll the same simulated exchange at the same virtual instants, concurrently,
for a whole simulation run. Every decision must be executed by exactly one of them: the
other's commit of the same wallet at the same version raises ``Conflict`` and it executes
nothing. The exchange side records which watcher sent each request and each state-change
publish.
"""

from __future__ import annotations

import asyncio
import collections

import attrs
import pytest

from liqcore import (
    CancelOrder,
    Config,
    PublishStateChange,
    StartAuction,
    StateChange,
    StopAuction,
    SubmitOrder,
)
from liqshell import Watcher
from liqshell.adapters.postgres import PostgresStore
from liqshell.ports import AuctionReceipt, OrderAnswer, Record, RecordKind
from liqshell.sim import SimClock, SimExchange, SimParams, new_world
from liqshell.sim.world import Market

PARAMS = SimParams(accounts=12, minutes=5, seed=4)
CONFIG = Config()
PAUSE_EVERY = 6


@attrs.define
class Sender:
    """One watcher's view of the exchange's order gateway, auction executor and event sink:
    the shared :class:`SimExchange`, recording ``(watcher, request id)`` of every request and
    ``(watcher, key)`` of every publish it gets."""

    name: str
    exchange: SimExchange
    sent: list[tuple[str, str]]
    published: list[tuple[str, tuple[str, int, int]]]

    async def publish(self, change: StateChange, *, key: tuple[str, int, int]) -> None:
        self.published.append((self.name, key))
        await self.exchange.publish(change, key=key)

    async def submit(self, command: SubmitOrder) -> OrderAnswer:
        self.sent.append((self.name, command.request_id))
        return await self.exchange.submit(command)

    async def cancel(self, command: CancelOrder) -> OrderAnswer:
        self.sent.append((self.name, command.request_id))
        return await self.exchange.cancel(command)

    async def start(self, command: StartAuction) -> AuctionReceipt:
        self.sent.append((self.name, command.request_id))
        return await self.exchange.start(command)

    async def stop(self, command: StopAuction) -> None:
        self.sent.append((self.name, command.request_id))
        await self.exchange.stop(command)


def decided_requests(records: list[Record]) -> dict[str, tuple[str, int]]:
    """Request id → (wallet, version) of every committed decision's commands."""
    decided: dict[str, tuple[str, int]] = {}
    for record in records:
        if record.kind is not RecordKind.DECISION:
            continue
        for command in record.commands:
            request = getattr(command, "request_id", None)
            if request is not None:
                assert request not in decided, f"request {request} decided twice"
                decided[request] = (record.wallet, record.version)
    return decided


def auction_requests(records: list[Record]) -> set[str]:
    """The request ids of every StartAuction and StopAuction decided."""
    return {
        command.request_id
        for record in records
        if record.kind is RecordKind.DECISION
        for command in record.commands
        if isinstance(command, StartAuction | StopAuction)
    }


def decided_publishes(records: list[Record]) -> set[tuple[str, int, int]]:
    """The publish keys ``(wallet, version, index)`` of every committed decision and
    applied feed item (a transition from the chain feed is published too)."""
    return {
        (record.wallet, record.version, index)
        for record in records
        if record.kind in (RecordKind.DECISION, RecordKind.FEED)
        for index, command in enumerate(record.commands)
        if isinstance(command, PublishStateChange)
    }


@pytest.mark.services
async def test_two_watchers_on_one_postgres_store_execute_each_decision_once(
    postgres_dsn: str, pg_schema: str
) -> None:
    """Over a whole simulated run polled by two watchers at once, every committed decision's
    requests and publishes reach the exchange exactly once, all from the watcher that
    committed it; the other watcher's commits conflict (there are conflicts) and execute
    nothing; both watchers lead at times."""
    market = Market(PARAMS)
    world = new_world(PARAMS, CONFIG, market)
    exchange = SimExchange(world, config=CONFIG, market=market)
    clock = SimClock(world.now)
    sent: list[tuple[str, str]] = []
    published: list[tuple[str, tuple[str, int, int]]] = []
    stores: list[PostgresStore] = []
    restarts = collections.Counter[str]()

    def watcher(name: str) -> Watcher:
        store = PostgresStore(postgres_dsn, schema=pg_schema, pool_size=4)
        stores.append(store)
        sender = Sender(name=name, exchange=exchange, sent=sent, published=published)
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
        )

    watchers = {"a": watcher("a"), "b": watcher("b")}
    conflicts = 0
    try:
        while True:
            clock.set(world.now)
            # Both poll every tick, taking turns to ask first; now and then one of them
            # sits a tick out (a pause, a network blip), and the one behind takes the lead.
            names = ["a", "b"] if world.tick % 2 == 0 else ["b", "a"]
            if world.tick % PAUSE_EVERY == PAUSE_EVERY // 2:
                names = [names[world.tick // PAUSE_EVERY % 2]]
            await asyncio.gather(*(watchers[n].drain_feed() for n in names))
            reports = await asyncio.gather(*(watchers[n].run_once() for n in names))
            conflicts += sum(report.conflicts for report in reports)
            for name in names:
                if watchers[name].quarantined:  # its outcomes lost a race: restart it
                    restarts[name] += 1
                    watchers[name] = watcher(name)
            if world.tick >= PARAMS.ticks:
                break
            exchange.advance()
        records = [record async for record in stores[0].records()]
        final = await stores[0].load()
    finally:
        for store in stores:
            await store.close()

    decided = decided_requests(records)
    counts = collections.Counter(request for _, request in sent)
    by_whom: dict[tuple[str, int], set[str]] = collections.defaultdict(set)
    for name, request in sent:
        by_whom[decided[request]].add(name)
    winners = collections.Counter(min(names) for names in by_whom.values())
    print(
        f"two watchers: {len(records)} records, {len(decided)} requests decided, "
        f"{len(sent)} sent, {len(published)} publishes, {conflicts} conflicts, decisions "
        f"executed per watcher {dict(winners)}, restarts after a lost outcome commit "
        f"{dict(restarts)}"
    )
    # Orders reach the exchange exactly once; an auction request that a restarted watcher
    # found unfinished and still the wallet's latest is sent again (idempotent per wallet:
    # never a second auction).
    orders = {r for r, n in counts.items() if n != 1 and r not in auction_requests(records)}
    assert orders == set()
    auctions = collections.Counter(a.request_id for a in world.auctions.values())
    assert all(n == 1 for n in auctions.values())
    assert set(counts) == set(decided)
    assert all(len(names) == 1 for names in by_whom.values())
    publish_counts = collections.Counter(key for _, key in published)
    assert set(publish_counts) == decided_publishes(records)
    if not restarts:  # a restart may publish an unconfirmed change again (at least once)
        assert [key for key, n in publish_counts.items() if n != 1] == []
    by_decision: dict[tuple[str, int], set[str]] = collections.defaultdict(set)
    for name, (wallet, version, _) in published:
        by_decision[wallet, version].add(name)
    assert all(len(names) == 1 for names in by_decision.values())
    assert conflicts > 0
    assert set(winners) == {"a", "b"}
    assert world.stats.submitted > 0
    assert world.stats.auctions_requested > 0
    assert final
    assert set(final) <= set(world.accounts)
    # Every version 1…N of a wallet was committed once (a record appended after a lost
    # race may repeat a version number; a decision never does).
    versions: dict[str, list[int]] = collections.defaultdict(list)
    decisions: dict[str, list[int]] = collections.defaultdict(list)
    for record in records:
        if record.kind is RecordKind.DECISION:
            decisions[record.wallet].append(record.version)
        if record.commits_version:
            versions[record.wallet].append(record.version)
    for wallet, entry in final.items():
        assert sorted(set(versions[wallet])) == list(range(1, entry.version + 1)), wallet
        assert len(decisions[wallet]) == len(set(decisions[wallet])), wallet
