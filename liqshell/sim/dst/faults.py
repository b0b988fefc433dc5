"""The fault schedule of a DST seed, and the fakes that inject it around the real ports.

Every fault is decided by a seeded draw keyed by (stream, wallet), so a seed's schedule is
the same on every machine and in both runs of a seed (with crashes and without). The fakes
sit between the real :class:`~liqshell.watcher.Watcher` and the simulated exchange or the
store; they record what reached the exchange (for the invariants) *before* they decide a
fault, and raise :class:`Crash` — a ``BaseException``, which the watcher's ``except
Exception`` cannot swallow — at the await point where the process dies. After a crash
every call of that life raises :class:`Crash` too: nothing of a dead process reaches the
exchange or the store.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

import attrs

from liqcore import (
    AccountState,
    CancelOrder,
    OpenOrder,
    Portfolio,
    Quote,
    StartAuction,
    StateChange,
    StopAuction,
    SubmitOrder,
)
from liqshell.ports import (
    AnswerStatus,
    AuctionReceipt,
    Conflict,
    Cursor,
    FeedItem,
    MarginReport,
    NotSent,
    OrderAnswer,
    OutcomeUnknown,
    Record,
    Stored,
)

__all__ = ["Crash", "FaultKind", "FaultPlan", "FeedLog", "Life"]

T = TypeVar("T")


class Crash(BaseException):
    """The simulated process died at this await point."""


class FaultKind(enum.Enum):
    """The faults a seed may inject (each counted when it fires)."""

    TIMEOUT_BEFORE = "timeout_before_apply"
    TIMEOUT_AFTER = "timeout_after_apply"
    REJECTED = "rejected"
    NOT_SENT = "not_sent"
    DUPLICATED = "duplicated"
    REORDERED = "reordered"
    SOURCE_ERROR = "source_error"
    STALE_SNAPSHOT = "stale_snapshot"
    COMMIT_FAILED = "commit_failed"
    COMMIT_LOST = "commit_answer_lost"
    CONFLICT = "conflict"
    FEED_REDELIVERED = "feed_redelivered"
    FEED_REORDERED = "feed_reordered"
    CLOCK_BACKWARDS = "clock_backwards"
    CRASH = "crash"
    FEED_BLOCKED = "feed_blocked"


_EXCHANGE_FAULTS = (
    FaultKind.TIMEOUT_BEFORE,
    FaultKind.TIMEOUT_AFTER,
    FaultKind.REJECTED,
    FaultKind.NOT_SENT,
    FaultKind.DUPLICATED,
)


@attrs.frozen(kw_only=True)
class FaultPlan:
    """A seed's fault rates (probability per call) and switches."""

    seed: int
    exchange: float = 0.0
    """Per order-engine or auction call: one of the exchange faults."""
    source: float = 0.0
    """Per observation call: an error or a stale snapshot."""
    store: float = 0.0
    """Per store commit: a failure, a lost answer or a conflict."""
    feed: float = 0.0
    """Per batch of chain events published into the feed: a redelivery or a reordering."""
    clock: float = 0.0
    """Per clock reading: a jump backwards."""
    reorder: float = 0.0
    """Per answer: handed back after other tasks ran (answers reordered)."""
    crash: float = 0.0
    """Per await point (any port call): the process dies there."""
    feed_blocked_after: int | None = None
    """From this tick on the chain feed delivers nothing (the stuck-detection probe)."""

    @classmethod
    def draw(cls, seed: int) -> FaultPlan:
        """The plan of ``seed``: each fault family on or off, at a seeded rate."""
        r = random.Random(f"dst-plan|{seed}")

        def rate(on: float, low: float, high: float) -> float:
            return round(r.uniform(low, high), 4) if r.random() < on else 0.0

        return cls(
            seed=seed,
            exchange=rate(0.8, 0.02, 0.15),
            source=rate(0.7, 0.01, 0.1),
            store=rate(0.6, 0.01, 0.06),
            feed=rate(0.7, 0.05, 0.3),
            clock=rate(0.5, 0.01, 0.05),
            reorder=rate(0.5, 0.05, 0.3),
            crash=rate(0.5, 0.0005, 0.003),
        )

    def without_crashes(self) -> FaultPlan:
        """The same plan with no crash (the twin run)."""
        return attrs.evolve(self, crash=0.0)


class _Draws:
    """Keyed random streams: one per (stream, wallet), so one wallet's calls never shift
    another's faults."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._streams: dict[tuple[str, str], random.Random] = {}

    def stream(self, name: str, wallet: str) -> random.Random:
        key = (name, wallet)
        found = self._streams.get(key)
        if found is None:
            digest = hashlib.sha256(f"{self._seed}|{name}|{wallet}".encode()).digest()
            found = self._streams[key] = random.Random(int.from_bytes(digest[:8], "big"))
        return found

    def hit(self, name: str, wallet: str, rate: float) -> bool:
        return rate > 0 and self.stream(name, wallet).random() < rate


@attrs.define
class Tally:
    """What a run injected, by kind."""

    faults: Counter[str] = attrs.Factory(Counter)

    def count(self, kind: FaultKind) -> None:
        self.faults[kind.value] += 1


class Life:
    """One life of the watcher process: its fakes share the dead-or-alive switch."""

    def __init__(
        self,
        *,
        plan: FaultPlan,
        draws: _Draws,
        tally: Tally,
        number: int,
        on_reach: Callable[[str, object], None],
        on_send: Callable[[object], None],
        on_committed: Callable[[str, AccountState, Record], None],
        committed_state: Callable[[str], AccountState | None],
        tick: Callable[[], int],
    ) -> None:
        self.plan = plan
        self.draws = draws
        self.tally = tally
        self.number = number
        self.dead = False
        self.on_reach = on_reach
        self.on_send = on_send
        self.on_committed = on_committed
        self.committed_state = committed_state
        self.tick = tick

    def check(self) -> None:
        """Raise :class:`Crash` if this life is over."""
        if self.dead:
            raise Crash

    def point(self, wallet: str) -> None:
        """An await point: the process may die here."""
        self.check()
        if self.draws.hit("crash", wallet, self.plan.crash):
            self.dead = True
            self.tally.count(FaultKind.CRASH)
            raise Crash

    async def answer(self, wallet: str, value: T) -> T:
        """Hand ``value`` back, maybe after other tasks ran (reordered answers); the
        process may die before it arrives."""
        if self.draws.hit("reorder", wallet, self.plan.reorder):
            self.tally.count(FaultKind.REORDERED)
            for _ in range(self.draws.stream("reorder-n", wallet).randint(1, 4)):
                await asyncio.sleep(0)
        self.point(wallet)
        return value


class FaultyExchange:
    """Every exchange port of the watcher, with the seed's faults (see the module docs).

    ``inner`` is the :class:`~liqshell.sim.SimExchange`; what reached it is reported to
    ``life.on_reach`` before the answer (or its loss) is decided. The chain feed is served
    from ``feed_log``, which survives the process (as the exchange does).
    """

    def __init__(self, inner: object, life: Life, feed_log: FeedLog) -> None:
        self._inner = inner
        self._life = life
        self._feed_log = feed_log
        self._last_portfolio: dict[str, Portfolio | None] = {}
        self._last_margin: dict[str, MarginReport] = {}

    # --- observation ---------------------------------------------------------------------

    async def _observe(self, wallet: str, call: Callable[[], Awaitable[T]], stale: T | None) -> T:
        life = self._life
        life.point(wallet)
        if life.draws.hit("source", wallet, life.plan.source):
            if stale is not None and life.draws.stream("source-kind", wallet).random() < 0.5:
                life.tally.count(FaultKind.STALE_SNAPSHOT)
                return await life.answer(wallet, stale)
            life.tally.count(FaultKind.SOURCE_ERROR)
            raise ConnectionError("margin engine unavailable (injected)")
        return await life.answer(wallet, await call())

    async def portfolios(self) -> Mapping[str, Portfolio]:
        """The listing (errors only: a stale listing is a stale portfolio of each)."""
        life = self._life
        life.point("*")
        if life.draws.hit("source", "*", life.plan.source / 4):
            life.tally.count(FaultKind.SOURCE_ERROR)
            raise ConnectionError("portfolio listing unavailable (injected)")
        return await life.answer("*", await self._inner.portfolios())  # type: ignore[attr-defined]

    async def portfolio(self, wallet: str) -> Portfolio | None:
        """The portfolio, maybe the previous one (stale) or an error."""
        fresh = await self._observe(
            wallet,
            lambda: self._inner.portfolio(wallet),  # type: ignore[attr-defined]
            self._last_portfolio.get(wallet),
        )
        self._last_portfolio[wallet] = fresh
        return fresh

    async def margin(self, wallet: str, portfolio: Portfolio | None) -> MarginReport:
        """The margin verdict, maybe the previous one (stale) or an error."""
        fresh = await self._observe(
            wallet,
            lambda: self._inner.margin(wallet, portfolio),  # type: ignore[attr-defined]
            self._last_margin.get(wallet),
        )
        self._last_margin[wallet] = fresh
        return fresh

    async def quotes(self, symbols: Sequence[str]) -> Mapping[str, Quote]:
        """Quotes (never faulty: the market data feed is not under test)."""
        self._life.check()
        return await self._inner.quotes(symbols)  # type: ignore[attr-defined,no-any-return]

    async def open_orders(self, wallet: str) -> Sequence[OpenOrder]:
        """Open orders: fresh or an error (a stale order book would break the exchange's
        own guarantee the watcher relies on)."""
        return await self._observe(
            wallet,
            lambda: self._inner.open_orders(wallet),  # type: ignore[attr-defined]
            None,
        )

    # --- actions -------------------------------------------------------------------------

    async def _act(self, kind: str, command: object, wallet: str) -> object:
        life = self._life
        life.point(wallet)
        life.on_send(command)  # the watcher sent it; whether it arrives is the network's
        fault: FaultKind | None = None
        if life.draws.hit("exchange", wallet, life.plan.exchange):
            fault = life.draws.stream("exchange-kind", wallet).choice(_EXCHANGE_FAULTS)
            if fault is FaultKind.REJECTED and kind not in ("submit", "cancel"):
                fault = FaultKind.NOT_SENT
        if fault is FaultKind.NOT_SENT:
            life.tally.count(fault)
            raise NotSent(f"{kind} not sent (injected)")
        if fault is FaultKind.TIMEOUT_BEFORE:
            life.tally.count(fault)
            raise OutcomeUnknown(f"{kind} timed out before the engine saw it (injected)")
        if fault is FaultKind.REJECTED:
            life.tally.count(fault)
            life.on_reach(kind, command)
            return OrderAnswer(status=AnswerStatus.REJECTED, reason="engine busy (injected)")
        life.on_reach(kind, command)
        result = await getattr(self._inner, kind)(command)
        if fault is FaultKind.DUPLICATED:
            life.tally.count(fault)
            life.on_reach(kind, command)
            result = await getattr(self._inner, kind)(command)
        if fault is FaultKind.TIMEOUT_AFTER:
            life.tally.count(fault)
            life.point(wallet)
            raise OutcomeUnknown(f"{kind} answer lost after the engine applied it (injected)")
        return await life.answer(wallet, result)

    async def submit(self, command: SubmitOrder) -> OrderAnswer:
        """Submit (see :meth:`_act`)."""
        answer = await self._act("submit", command, command.wallet)
        assert isinstance(answer, OrderAnswer)
        return answer

    async def cancel(self, command: CancelOrder) -> OrderAnswer:
        """Cancel (see :meth:`_act`)."""
        answer = await self._act("cancel", command, command.wallet)
        assert isinstance(answer, OrderAnswer)
        return answer

    async def start(self, command: StartAuction) -> AuctionReceipt:
        """Start an auction (see :meth:`_act`)."""
        receipt = await self._act("start", command, command.wallet)
        assert isinstance(receipt, AuctionReceipt)
        return receipt

    async def stop(self, command: StopAuction) -> None:
        """Stop an auction (see :meth:`_act`)."""
        await self._act("stop", command, command.wallet)

    async def publish(self, change: StateChange, *, key: tuple[str, int, int]) -> None:
        """Publish a state change (never faulty beyond crashes: the sink is not the
        exchange's order engine)."""
        life = self._life
        life.point(change.wallet)
        life.on_reach("publish", (change, key))
        await self._inner.publish(change, key=key)  # type: ignore[attr-defined]
        await life.answer(change.wallet, None)

    # --- the feed ------------------------------------------------------------------------

    async def events(self, after: Cursor | None) -> AsyncIterator[FeedItem]:
        """The feed log's items after ``after`` (see :class:`FeedLog`), or — once the plan
        blocks the feed — nothing."""
        life = self._life
        life.point("feed")
        blocked = life.plan.feed_blocked_after
        if blocked is not None and life.tick() >= blocked:
            life.tally.count(FaultKind.FEED_BLOCKED)
            return
        log = self._feed_log
        fresh: list[FeedItem] = [item async for item in self._inner.events(log.chain_cursor)]  # type: ignore[attr-defined]
        if fresh:
            log.chain_cursor = fresh[-1].cursor
            log.extend(_feed_faults(fresh, life))
        for item in log.after(after):
            life.point(item.wallet)
            yield item


def _feed_faults(fresh: list[FeedItem], life: Life) -> list[FeedItem]:
    """The chain's new items as the feed publishes them: maybe two in swapped order, or
    one twice (the copy later)."""
    draws = life.draws
    items = list(fresh)
    if draws.hit("feed", "feed", life.plan.feed):
        stream = draws.stream("feed-kind", "feed")
        if len(items) >= 2 and stream.random() < 0.5:
            i = stream.randrange(len(items) - 1)
            items[i], items[i + 1] = items[i + 1], items[i]
            life.tally.count(FaultKind.FEED_REORDERED)
        else:
            i = stream.randrange(len(items))
            items.insert(stream.randrange(i, len(items)) + 1, items[i])
            life.tally.count(FaultKind.FEED_REDELIVERED)
    return items


class FeedLog:
    """The chain feed as an adapter serves it: a log that keeps every item at its cursor
    (its position, from 1), as a JetStream stream does, and that outlives the watcher.

    Faults happen where the real world makes them — when the chain's events are published
    into the log: two events in the other order, or one event twice (same event id, a
    later cursor). The log itself is read in cursor order, as :class:`~liqshell.ports.
    AuctionFeed` promises: a feed that handed out a later cursor before an earlier one
    would let a watcher that stops in between commit a cursor past an item it never
    handled (DST seed 3785), and no adapter does (a stream's sequence numbers and the core
    NATS feed's arrival counter both grow with delivery).
    """

    def __init__(self) -> None:
        self.items: list[FeedItem] = []
        self.chain_cursor: Cursor | None = None
        """The last chain item published into the log."""

    def extend(self, items: Sequence[FeedItem]) -> None:
        """Publish ``items`` at the next cursors, in this order."""
        for item in items:
            self.items.append(attrs.evolve(item, cursor=len(self.items) + 1))

    def after(self, after: Cursor | None) -> list[FeedItem]:
        """The items after cursor ``after`` (every item for ``None``)."""
        if after is None:
            return list(self.items)
        if not isinstance(after, int):
            raise ValueError(f"the DST feed's cursors are ints, was {after!r}")
        return self.items[max(0, after) :]


class FaultyStore:
    """The state store (memory or SQLite) with commit faults and crash points; it tells
    the checker every commit that took effect."""

    def __init__(self, inner: object, life: Life) -> None:
        self._inner = inner
        self._life = life

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def load(self) -> Mapping[str, Stored]:
        """Load (a crash point)."""
        self._life.point("store")
        return await self._inner.load()  # type: ignore[attr-defined,no-any-return]

    async def load_one(self, wallet: str) -> Stored | None:
        """Load one (a crash point)."""
        self._life.point(wallet)
        return await self._inner.load_one(wallet)  # type: ignore[attr-defined,no-any-return]

    async def commit(
        self,
        wallet: str,
        state: AccountState,
        record: Record,
        *,
        expected_version: int,
        cursor: Cursor | None = None,
    ) -> int:
        """Commit, maybe failing before, losing the answer after, or a conflict."""
        life = self._life
        life.point(wallet)
        fault: FaultKind | None = None
        if life.draws.hit("store", wallet, life.plan.store):
            fault = life.draws.stream("store-kind", wallet).choice(
                (FaultKind.COMMIT_FAILED, FaultKind.COMMIT_LOST, FaultKind.CONFLICT)
            )
            life.tally.count(fault)
        if fault is FaultKind.COMMIT_FAILED:
            raise OSError("disk I/O error (injected)")
        if fault is FaultKind.CONFLICT:
            raise Conflict(f"wallet {wallet!r} was committed by another instance (injected)")
        version: int = await self._inner.commit(  # type: ignore[attr-defined]
            wallet, state, record, expected_version=expected_version, cursor=cursor
        )
        life.on_committed(wallet, state, attrs.evolve(record, version=version))
        if fault is FaultKind.COMMIT_LOST:
            life.point(wallet)
            raise OSError("connection lost after commit (injected)")
        life.point(wallet)
        return version

    async def commit_cursor(self, cursor: Cursor, record: Record) -> None:
        """Move the cursor (a crash point before and after)."""
        life = self._life
        life.point(record.wallet)
        await self._inner.commit_cursor(cursor, record)  # type: ignore[attr-defined]
        life.point(record.wallet)

    async def close(self) -> None:
        """Closing a memory store is a no-op; a SQLite one reopens on next use."""
        await self._inner.close()  # type: ignore[attr-defined]


class FaultyClock:
    """The virtual clock, read back a little in the past now and then."""

    def __init__(self, inner: object, life: Life) -> None:
        self._inner = inner
        self._life = life

    def now_ms(self) -> int:
        """The virtual instant, or up to two ticks before it (a jump backwards)."""
        now: int = self._inner.now_ms()  # type: ignore[attr-defined]
        life = self._life
        if life.draws.hit("clock", "clock", life.plan.clock):
            life.tally.count(FaultKind.CLOCK_BACKWARDS)
            return now - life.draws.stream("clock-by", "clock").randint(1, 10_000)
        return now

    async def sleep_until(self, ms: int) -> None:
        """Nothing waits in a simulation."""
        self._life.check()

    async def wait_for(self, awaitable: Awaitable[T], timeout_ms: int) -> T:
        """Timeouts are injected by the exchange's fake (as unknown outcomes)."""
        return await awaitable
