"""Three instances, a kill and a pause, against one instance of the same seed (issue 13).

One simulated exchange (the seed of :data:`PARAMS`) is swept twice on a real PostgreSQL:

* the **reference**: one :class:`~liqshell.Watcher` without an owner (the single-instance
  default) on a schema of its own;
* the **cluster**: three watchers ``a``, ``b``, ``c``, each with a
  :class:`~liqshell.ownership.ShardOwner` and a store of its own, on another schema. ``c`` is
  **killed** at its first send once the shock has come, as a SIGKILL would: its decision
  is committed, its first command never leaves, and from then on none of its calls
  reaches the store or the exchange. Once its shards are taken over, ``b`` is **paused**
  between two polls (its clock stands still, as a SIGSTOPped process sees time) for longer
  than its lease, then resumed: it first polls on its stale clock, then catches up.

Asserted:

* **stale epochs** — from the store's view: triggers installed on the cluster's schema
  log, in one sequence, every state written (wallet, version, epoch) and every grant of a
  lease (shard, epoch); every state write was made under the epoch its shard had then;
  the resumed instance's commits were fenced (there were some);
* **none executed twice, none lost** — counted at the exchange: no request twice (an
  auction request found unfinished by the new owner and still the wallet's latest is sent
  again: one auction per request), nothing sent that no committed decision made, and
  every committed request reached the exchange unless a takeover's reconciliation
  reported it unfinished and superseded (a submit or cancel, or an auction request no
  longer the wallet's latest) — the rule of ``test_crash_safety.py``;
* **every shard owned again within the bound** — TTL + one renewal interval + one tick of
  the world after each fault, the live instances hold every shard;
* **final states against the single-instance run's** — before the kill every wallet
  decided exactly as the single instance did (the same inputs, commands and states). After
  it, a wallet may end in another state only for one of two asserted reasons: its shard
  was **orphaned** (held by the killed or the paused instance), so the new owner stepped it
  later than the single instance did, on a market that had moved — a wallet liquidatable
  at the kill and stepped 15 s later may place partial orders and recover instead of
  going to a full auction; or it holds a symbol on which an orphaned wallet ordered after
  its fault (a **contested book**: the simulated book's depth per symbol and tick is
  shared in price-time priority, so its fills differ), and then it ends in the
  reference's phase. Every other wallet — its shard never orphaned, its books not
  contested — ends in exactly the reference's state after exactly its decisions, and the
  auctions of wallets outside the orphaned shards are the reference's. How many wallets
  end equal, and why the others differ, is printed.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import attrs
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from liqcore import (
    AccountState,
    CancelOrder,
    Command,
    Config,
    Health,
    OpenOrder,
    PublishStateChange,
    StartAuction,
    StopAuction,
    SubmitOrder,
)
from liqcore.state import phase_tag
from liqshell import Watcher
from liqshell.adapters.postgres import PostgresStore
from liqshell.cluster import shard_of
from liqshell.ownership import ShardOwner
from liqshell.ports import AuctionReceipt, OrderAnswer, Record, RecordKind, Stored
from liqshell.sim import SimClock, SimExchange, SimParams, new_world
from liqshell.sim.world import Market, World
from tests.liqshell.test_crash_safety import unreached_requests
from tests.liqshell.test_two_watchers import Sender

pytestmark = pytest.mark.services

PARAMS = SimParams(accounts=24, minutes=8, seed=4)
CONFIG = Config()
SHARDS = 12
TTL = 12_000  # ms of simulated time: more than two ticks of the world (5 s each)
RENEW = 5_000
NAMES = ("a", "b", "c")
PAUSED = "b"  # "c" is killed (Faults.victim); "a" keeps its first shards throughout
PAUSE_TICKS = 5  # 25 s: past the paused instance's lease and its takeover
BOUND_MS = TTL + RENEW + PARAMS.tick_ms


class Killed(BaseException):
    """The instance is dead: raised from its sends and store calls (not an ``Exception``,
    so nothing in the watcher catches it — the process is gone)."""


@attrs.define
class Faults:
    """Who is dead and when the kill may land."""

    victim: str = "c"
    armed: bool = False
    dead: str | None = None
    killed_at: int | None = None
    interrupted: str | None = None
    """The request id of the command the kill kept from leaving."""


class KillableStore(PostgresStore):
    """A PostgreSQL store whose every call raises :class:`Killed` once its instance died."""

    def __init__(self, *args: Any, name: str, faults: Faults, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = name
        self.faults = faults

    def _connection(self, what: str) -> Any:
        if self.faults.dead == self.name:
            raise Killed(self.name)
        return super()._connection(what)


@attrs.define
class KillableSender(Sender):
    """:class:`Sender` that kills its instance at its first send once the kill is armed."""

    faults: Faults = attrs.field(kw_only=True)
    clock: SimClock = attrs.field(kw_only=True)

    def _check(self, command: Command) -> None:
        faults = self.faults
        if faults.dead is None and faults.armed and self.name == faults.victim:
            faults.dead, faults.killed_at = self.name, self.clock.now_ms()
            faults.interrupted = getattr(command, "request_id", None)
        if faults.dead == self.name:
            raise Killed(self.name)

    async def submit(self, command: SubmitOrder) -> OrderAnswer:
        self._check(command)
        return await super().submit(command)

    async def cancel(self, command: CancelOrder) -> OrderAnswer:
        self._check(command)
        return await super().cancel(command)

    async def start(self, command: StartAuction) -> AuctionReceipt:
        self._check(command)
        return await super().start(command)

    async def stop(self, command: StopAuction) -> None:
        self._check(command)
        await super().stop(command)


AUDIT = """
CREATE TABLE {s}.audit (seq bigserial PRIMARY KEY, what text NOT NULL, key text NOT NULL,
                        version bigint NOT NULL, epoch bigint NOT NULL);
CREATE FUNCTION {s}.audit_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {s}.audit (what, key, version, epoch)
  VALUES ('state', NEW.wallet, NEW.version, NEW.epoch);
  RETURN NEW;
END $$;
CREATE FUNCTION {s}.audit_lease() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' OR NEW.epoch <> OLD.epoch THEN
    INSERT INTO {s}.audit (what, key, version, epoch)
    VALUES ('lease', NEW.shard::text, 0, NEW.epoch);
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER audit_state AFTER INSERT OR UPDATE ON {s}.states
  FOR EACH ROW EXECUTE FUNCTION {s}.audit_state();
CREATE TRIGGER audit_lease AFTER INSERT OR UPDATE ON {s}.leases
  FOR EACH ROW EXECUTE FUNCTION {s}.audit_lease();
"""


async def _install_audit(dsn: str, schema: str) -> None:
    """Log every state write and every grant of a lease, in one sequence, from the
    database's own triggers (the store's view, not the instances')."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(AUDIT.format(s=schema))


async def _audit(dsn: str, schema: str) -> list[tuple[str, str, int, int]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        rows = await (
            await conn.execute(f"SELECT what, key, version, epoch FROM {schema}.audit ORDER BY seq")
        ).fetchall()
    return [(str(w), str(k), int(v), int(e)) for w, k, v, e in rows]


def stale_writes(audit: Sequence[tuple[str, str, int, int]]) -> list[str]:
    """State writes made under another epoch than their shard's at that point of the
    sequence (a write of a shard never granted counts as stale too)."""
    current: dict[int, int] = {}
    problems = []
    for what, key, version, epoch in audit:
        if what == "lease":
            current[int(key)] = epoch
        elif current.get(shard_of(key, SHARDS)) != epoch:
            problems.append(
                f"{key} v{version} written at epoch {epoch}, shard "
                f"{shard_of(key, SHARDS)} at {current.get(shard_of(key, SHARDS))}"
            )
    return problems


@attrs.frozen(kw_only=True)
class Step:
    """One decision as compared between the runs: its inputs and what it decided."""

    now: int
    previous: AccountState | None
    health: Health | None
    orders: tuple[OpenOrder, ...]
    commands: tuple[Command, ...]
    state: AccountState | None


def decisions(records: Sequence[Record]) -> dict[str, list[Step]]:
    """Each wallet's committed decisions in log order."""
    found: dict[str, list[Step]] = collections.defaultdict(list)
    for record in records:
        if record.kind is RecordKind.DECISION and record.commits_version:
            found[record.wallet].append(
                Step(
                    now=record.now,
                    previous=record.previous,
                    health=record.health,
                    orders=record.orders,
                    commands=record.commands,
                    state=record.state,
                )
            )
    return dict(found)


def fields_differing(ours: object, theirs: object, path: str = "") -> list[str]:
    """The attrs fields (dotted, nested) in which two values differ."""
    if type(ours) is not type(theirs) or not attrs.has(type(ours)):
        return [] if ours == theirs else [path or "value"]
    found = []
    for field in attrs.fields(type(ours)):  # type: ignore[arg-type]
        found += fields_differing(
            getattr(ours, field.name), getattr(theirs, field.name), f"{path}.{field.name}"
        )
    return found


def symbols_held(steps: Sequence[Step]) -> set[str]:
    """Every symbol the wallet held in a position at one of its decisions."""
    return {
        symbol
        for step in steps
        if step.health is not None and step.health.portfolio is not None
        for symbol in step.health.portfolio.positions
    }


@pytest.fixture
async def stores() -> AsyncIterator[list[PostgresStore]]:
    made: list[PostgresStore] = []
    try:
        yield made
    finally:
        for store in made:
            if isinstance(store, KillableStore):
                store.faults = Faults()  # the dead one's pool is closed too
            await store.close()


def _exchange() -> tuple[World, SimExchange]:
    market = Market(PARAMS)
    world = new_world(PARAMS, CONFIG, market)
    return world, SimExchange(world, config=CONFIG, market=market)


async def _reference(
    dsn: str, schema: str, stores: list[PostgresStore]
) -> tuple[World, Mapping[str, Stored], list[Record]]:
    """The single-instance run of the seed: its world, final states and log."""
    world, exchange = _exchange()
    clock = SimClock(world.now)
    store = PostgresStore(dsn, schema=schema, pool_size=3)
    stores.append(store)
    sender = Sender(name="ref", exchange=exchange, sent=[], published=[])
    watcher = Watcher(
        portfolios=exchange, margin=exchange, quotes=exchange, orders=exchange,
        gateway=sender, auctions=sender, feed=exchange, store=store, sink=sender,
        recorder=store, clock=clock, config=CONFIG, record="all",
    )  # fmt: skip
    while True:
        clock.set(world.now)
        await watcher.drain_feed()
        await watcher.run_once()
        if world.tick >= PARAMS.ticks:
            break
        exchange.advance()
    return world, await store.load(), [record async for record in store.records()]


async def _settle(calls: Mapping[str, Any], faults: Faults, live: set[str]) -> dict[str, Any]:
    """Await one call per instance; an instance that raised :class:`Killed` is dead."""
    names = list(calls)
    results = await asyncio.gather(*calls.values(), return_exceptions=True)
    out = {}
    for name, result in zip(names, results, strict=True):
        if isinstance(result, Killed):
            assert faults.dead == name
            live.discard(name)
        elif isinstance(result, BaseException):
            raise result
        else:
            out[name] = result
    return out


async def test_three_instances_with_a_kill_and_a_pause_end_as_one_instance_does(
    postgres_dsn: str, pg_schema: str, stores: list[PostgresStore]
) -> None:
    ref_world, ref_final, ref_records = await _reference(postgres_dsn, pg_schema + "r", stores)

    world, exchange = _exchange()
    faults = Faults()
    sent: list[tuple[str, str]] = []
    published: list[tuple[str, tuple[str, int, int]]] = []
    clocks = {name: SimClock(world.now) for name in NAMES}
    registries = {name: CollectorRegistry() for name in NAMES}
    watchers: dict[str, Watcher] = {}
    for name in NAMES:
        store = KillableStore(postgres_dsn, schema=pg_schema, pool_size=3, name=name, faults=faults)
        stores.append(store)
        if name == NAMES[0]:
            await store.cursor()  # creates the schema
            await _install_audit(postgres_dsn, pg_schema)
        sender = KillableSender(
            name=name, exchange=exchange, sent=sent, published=published, faults=faults,
            clock=clocks[name],
        )  # fmt: skip
        watchers[name] = Watcher(
            portfolios=exchange, margin=exchange, quotes=exchange, orders=exchange,
            gateway=sender, auctions=sender, feed=exchange, store=store, sink=sender,
            recorder=store, clock=clocks[name], config=CONFIG, record="all",
            metrics=registries[name],
            owner=ShardOwner(store, instance_id=name, shards=SHARDS, lease_ttl_ms=TTL),
            renew_interval_ms=RENEW,
        )  # fmt: skip

    # The three join at the start instant and converge before the first poll (two rounds),
    # so every wallet is stepped from the first tick on, as by the single instance.
    for _ in range(2):
        for watcher in watchers.values():
            await watcher.tick()
    assert set().union(*(w.shards for w in watchers.values())) == set(range(SHARDS))
    joined = len(await _audit(postgres_dsn, pg_schema))

    live = set(NAMES)
    paused: str | None = None
    paused_at = resumed_at = 0
    held_at_fault: dict[str, set[int]] = {}  # instance → shards it held when it failed
    unheld: list[str] = []
    regained: dict[int, int] = {}  # fault instant → first tick after it with all held
    first_holders = {s: n for n, w in watchers.items() for s in w.shards}
    moved: dict[int, int] = {}  # shard → the first instant it was not with its first holder
    while True:
        now = world.now
        faults.armed = now >= PARAMS.shock_time
        if faults.dead is not None and faults.dead not in held_at_fault:
            held_at_fault[faults.dead] = set(watchers[faults.dead].shards)
        if paused is None and not paused_at and faults.killed_at is not None:
            if now >= faults.killed_at + BOUND_MS:  # after the takeover of the dead's shards
                paused, paused_at = PAUSED, now
                held_at_fault[paused] = set(watchers[paused].shards)
        elif paused is not None and now >= paused_at + PAUSE_TICKS * PARAMS.tick_ms:
            # Resumed: it polls once on its stale clock (every commit fenced), then catches up.
            report = await watchers[paused].run_once()
            assert report.conflicts == 0
            paused, resumed_at = None, now
        running = {n: watchers[n] for n in sorted(live) if n != paused}
        for name in running:
            clocks[name].set(now)
        await _settle({n: w.drain_feed() for n, w in running.items()}, faults, live)
        reports = await _settle({n: w.run_once() for n, w in running.items()}, faults, live)
        assert all(report.conflicts == 0 for report in reports.values())
        holders = {n: watchers[n].shards for n in live if n != paused}
        held = set().union(*holders.values())
        for shard, first in first_holders.items():
            if shard not in moved and shard not in holders.get(first, ()):
                moved[shard] = now
        last_fault = max([t for t in (faults.killed_at, paused_at, resumed_at) if t], default=0)
        if last_fault and held != set(range(SHARDS)):
            if now >= last_fault + BOUND_MS:
                unheld.append(f"+{(now - PARAMS.start_ms) / 1000:g} s: held {sorted(held)}")
            else:
                regained[last_fault] = now + PARAMS.tick_ms
        if world.tick >= PARAMS.ticks:
            break
        exchange.advance()

    audit = await _audit(postgres_dsn, pg_schema)
    first_fault = faults.killed_at
    assert first_fault is not None
    async with PostgresStore(postgres_dsn, schema=pg_schema) as reader:
        final = await reader.load()
        records = [record async for record in reader.records()]

    # ------------------------------------------------------------ the faults happened
    assert faults.dead is not None, "nothing was killed"
    assert faults.killed_at is not None
    assert faults.interrupted is not None
    pausee = next(n for n in held_at_fault if n != faults.dead)
    assert held_at_fault[faults.dead]
    assert held_at_fault[pausee]
    fenced = registries[pausee].get_sample_value("liqshell_fenced_commits_total")
    assert fenced is not None
    assert fenced >= 1, "the resumed instance committed nothing"
    takeovers = [r for r in records if r.kind is RecordKind.RESTART and r.note == "acquired"]
    found = {getattr(c, "request_id", None) for r in takeovers for c in r.commands}
    assert faults.interrupted in found, "the interrupted command was not found unfinished"

    # ------------------------------------------------------------ stale epochs (the store)
    grants = sum(what == "lease" for what, *_ in audit)
    writes = sum(what == "state" for what, *_ in audit)
    assert stale_writes(audit) == []
    assert grants > SHARDS  # the takeovers granted shards again, at later epochs

    # ------------------------------------------------------------ none twice, none lost
    counts = collections.Counter(request for _, request in sent)
    decided = {
        getattr(c, "request_id", None)
        for r in records
        if r.kind is RecordKind.DECISION and r.commits_version
        for c in r.commands
    }
    assert set(counts) <= decided, "a request reached the exchange that nobody committed"
    resent = {r for r, n in counts.items() if n > 1}
    auction_ids = {
        c.request_id
        for r in records
        for c in r.commands
        if isinstance(c, StartAuction | StopAuction)
    }
    assert resent <= auction_ids, "an order or cancel reached the exchange twice"
    auctions = collections.Counter(a.request_id for a in world.auctions.values())
    assert all(n == 1 for n in auctions.values()), "an auction request opened two auctions"
    unreached = unreached_requests(records, counts, committed_only=True)
    assert unreached.lost == ()

    # ------------------------------------------------------------ owned again in time
    assert unheld == []

    # ------------------------------------------------------------ final states
    # The shards granted again after the start: taken over, or handed over at a rejoin.
    touched = {int(key) for what, key, _, _ in audit[joined:] if what == "lease"}
    assert touched == set(moved)
    # The shards left without a live holder by a fault, from the fault's instant.
    orphaned = dict.fromkeys(held_at_fault[faults.dead], faults.killed_at)
    for shard in held_at_fault[pausee]:
        orphaned.setdefault(shard, paused_at)
    # The wallets whose commands a takeover found unfinished (the kill's, but publishes).
    interrupted = {
        r.wallet
        for r in takeovers
        if any(not isinstance(c, PublishStateChange) for c in r.commands)
    }
    assert interrupted
    ours, theirs = decisions(records), decisions(ref_records)
    assert set(final) == set(ref_final)
    # Symbols on which an orphaned wallet ordered after its fault, in either run: the book's
    # depth per symbol and tick is shared (price-time priority), so other wallets' fills
    # on them may differ from the reference's.
    contested = {
        command.symbol
        for steps in (ours, theirs)
        for wallet, history in steps.items()
        if shard_of(wallet, SHARDS) in orphaned
        for step in history
        if step.now >= orphaned[shard_of(wallet, SHARDS)]
        for command in step.commands
        if isinstance(command, SubmitOrder)
    }
    unexplained = []
    explained: dict[str, str] = {}
    for wallet in sorted(ref_final):
        mine, reference = ours.get(wallet, []), theirs.get(wallet, [])
        shard = shard_of(wallet, SHARDS)
        if [s for s in mine if s.now < first_fault] != [
            s for s in reference if s.now < first_fault
        ]:
            unexplained.append(f"{wallet} decided otherwise before the first fault")
        if final[wallet].state == ref_final[wallet].state and mine == reference:
            continue
        if shard in orphaned:
            explained[wallet] = "orphaned"  # stepped later than by one instance: another market
            continue
        books = symbols_held(reference) | symbols_held(mine)
        if not books & contested:
            unexplained.append(f"{wallet}: never orphaned nor sharing a contested book")
        elif phase_tag(final[wallet].state.phase) != phase_tag(ref_final[wallet].state.phase):
            unexplained.append(f"{wallet}: never orphaned, yet ends in another phase")
        else:
            explained[wallet] = "contested book"
    equal = [w for w in ref_final if final[w].state == ref_final[w].state]
    different = {
        w: fields_differing(final[w].state, ref_final[w].state)
        for w in sorted(set(ref_final) - set(equal))
    }
    why = {w: explained[w] for w in different}
    ref_auctions = collections.Counter(
        a.wallet for a in ref_world.auctions.values() if shard_of(a.wallet, SHARDS) not in orphaned
    )
    our_auctions = collections.Counter(
        a.wallet for a in world.auctions.values() if shard_of(a.wallet, SHARDS) not in orphaned
    )
    print(
        f"cluster of three vs one instance ({PARAMS.accounts} accounts, seed {PARAMS.seed}): "
        f"killed {faults.dead} at +{(faults.killed_at - PARAMS.start_ms) / 1000:g} s holding "
        f"shards {sorted(held_at_fault[faults.dead])} (interrupted {faults.interrupted}), "
        f"paused {pausee} at +{(paused_at - PARAMS.start_ms) / 1000:g} s holding "
        f"{sorted(held_at_fault[pausee])} for {PAUSE_TICKS * PARAMS.tick_ms / 1000:g} s; "
        f"{fenced:g} commits fenced; store audit: {writes} state writes, {grants} grants, "
        f"0 stale; {len(counts)} requests at the exchange, resent {sorted(resent)}, "
        f"superseded at a takeover {len(unreached.superseded - unreached.must_resend)}; "
        f"final states equal to the reference's: "
        f"{len(equal)}/{len(ref_final)}; different {different}; why: {why} "
        f"(interrupted by the kill: {sorted(interrupted)}); wallets of shards that never moved "
        f"{sum(shard_of(w, SHARDS) not in touched for w in ref_final)}; every shard held again "
        f"{[(regained[t] - t) / 1000 for t in sorted(regained)]} s after each fault "
        f"(bound {BOUND_MS / 1000:g} s)"
    )
    assert unexplained == []
    assert our_auctions == ref_auctions
