"""In-memory fakes of every port and a virtual clock, for tests and simulations.

Fakes, not mocks: each one behaves like a small, honest implementation of its port
(compare-and-set store, an order engine that keeps open orders, an auction house that is
idempotent per wallet, a replayable feed) and records what it was asked, so tests assert on
recorded calls and stored state rather than on which methods were called how.

* :class:`VirtualClock` — time that moves only when told (:meth:`~VirtualClock.advance`,
  :meth:`~VirtualClock.run_for`) or when everything waits on it (:meth:`~VirtualClock.drive`).
* :class:`MemoryStore` — ``StateStore`` and ``Recorder`` in memory.
* :class:`MemoryRecorder` — a ``Recorder`` only.
* :class:`FakeExchange` — ``PortfolioSource``, ``MarginSource``, ``QuoteSource``,
  ``OrderSnapshot``, ``OrderGateway`` and ``AuctionExecutor`` in one object, with scripted
  :class:`Fault`\\s.
* :class:`FakeFeed` — an ``AuctionFeed`` that can redeliver and reorder.
* :class:`MemorySink` — an ``EventSink`` recording ``(key, change)``.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
    Sized,
)
from types import MappingProxyType
from typing import TypeVar

import attrs

from liqcore import (
    AccountState,
    CancelOrder,
    Event,
    OpenOrder,
    Portfolio,
    Quote,
    Side,
    StartAuction,
    StateChange,
    StopAuction,
    SubmitOrder,
)
from liqshell.ports import (
    AnswerStatus,
    AuctionReceipt,
    Clock,
    Conflict,
    Cursor,
    FeedItem,
    MarginReport,
    NotSent,
    OrderAnswer,
    OutcomeUnknown,
    Record,
    RecordingHeader,
    RecordKind,
    Stored,
    Unfinished,
)

__all__ = [
    "Call",
    "FakeExchange",
    "FakeFeed",
    "Fault",
    "FaultKind",
    "MemoryRecorder",
    "MemorySink",
    "MemoryStore",
    "VirtualClock",
]

T = TypeVar("T")

_SETTLE_LIMIT = 100_000
"""Loop iterations :meth:`VirtualClock.settle` waits for the event loop to go idle."""
_SETTLE_FALLBACK = 200
"""Iterations it yields on loops whose ready queue it cannot see (not CPython's asyncio)."""


# --------------------------------------------------------------------------- clock


class VirtualClock:
    """A ``Clock`` whose time moves only when the test or simulator moves it.

    ``sleep_until`` and ``wait_for`` wait on *virtual* time: a sleeper wakes when
    :meth:`advance`, :meth:`set_time`, :meth:`run_for` or :meth:`drive` moves the clock to
    or past its deadline; sleepers due at the same instant wake in the order they slept.
    Time may be set backwards (:meth:`set_time`) to test a clock that steps back; nothing
    wakes then. The clock holds no event-loop resources between calls, so it can serve
    several event loops in turn.
    """

    def __init__(self, start_ms: int = 0) -> None:
        if type(start_ms) is not int:
            raise TypeError(f"VirtualClock start_ms must be an int (ms), was {start_ms!r}")
        self._now = start_ms
        self._sleepers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now_ms(self) -> int:
        """The virtual time (ms)."""
        return self._now

    @property
    def sleepers(self) -> tuple[int, ...]:
        """Deadlines of the tasks waiting on this clock, earliest first."""
        return tuple(
            sorted(deadline for deadline, _, future in self._sleepers if not future.done())
        )

    def next_deadline(self) -> int | None:
        """The earliest deadline anyone waits for, or ``None``."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    async def sleep_until(self, ms: int) -> None:
        """Return once the virtual time is ``ms`` or later (after one loop turn if it is)."""
        if ms <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (ms, next(self._order), future))
        await future

    async def sleep(self, ms: int) -> None:
        """Sleep ``ms`` of virtual time."""
        await self.sleep_until(self._now + ms)

    async def wait_for(self, awaitable: Awaitable[T], timeout_ms: int) -> T:
        """Await ``awaitable``; raise ``TimeoutError`` (and cancel it) if it has not finished
        when the virtual time reaches now + ``timeout_ms``."""
        task = asyncio.ensure_future(awaitable)
        deadline = self._now + timeout_ms
        if deadline <= self._now:  # as asyncio.wait_for: no time at all to run
            if task.done():
                return task.result()
            task.cancel()
            await asyncio.wait((task,))
            raise TimeoutError(f"no result within {timeout_ms} ms of virtual time")
        timer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._order), timer))
        try:
            await asyncio.wait((task, timer), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            timer.cancel()
            raise
        if task.done():
            timer.cancel()
            return task.result()
        task.cancel()
        await asyncio.wait((task,))
        raise TimeoutError(f"no result within {timeout_ms} ms of virtual time")

    def set_time(self, ms: int) -> None:
        """Set the virtual time (backwards too) and wake every sleeper now due."""
        if type(ms) is not int:
            raise TypeError(f"VirtualClock time must be an int (ms), was {ms!r}")
        self._now = ms
        while self._sleepers and self._sleepers[0][0] <= ms:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done() and not future.get_loop().is_closed():
                future.set_result(None)

    def advance(self, ms: int) -> None:
        """Move the virtual time forward by ``ms`` at once, waking every sleeper now due.

        The woken tasks run when the caller next yields to the event loop; to let chained
        sleeps run at their own instants, use :meth:`run_for`.
        """
        if type(ms) is not int or ms < 0:
            raise ValueError(f"VirtualClock.advance needs an int ≥ 0 (ms), was {ms!r}")
        self.set_time(self._now + ms)

    async def settle(self) -> None:
        """Yield until every task of the running loop waits (on this clock or anything else).

        Only work scheduled on the event loop is seen: a thread or real I/O in flight is
        not waited for.
        """
        loop = asyncio.get_running_loop()
        ready = getattr(loop, "_ready", None)  # CPython's queue of runnable callbacks
        if not isinstance(ready, Sized):
            for _ in range(_SETTLE_FALLBACK):
                await asyncio.sleep(0)
            return
        for _ in range(_SETTLE_LIMIT):
            await asyncio.sleep(0)
            if len(ready) == 0:
                return
        raise RuntimeError("VirtualClock.settle: the event loop never went idle")

    async def run_for(self, ms: int) -> None:
        """Let ``ms`` of virtual time pass: wake each sleeper at its own deadline, letting
        the loop settle in between, then set the time to now + ``ms``."""
        if type(ms) is not int or ms < 0:
            raise ValueError(f"VirtualClock.run_for needs an int ≥ 0 (ms), was {ms!r}")
        target = self._now + ms
        await self.settle()
        while (deadline := self.next_deadline()) is not None and deadline <= target:
            self.set_time(max(deadline, self._now))
            await self.settle()
        self.set_time(target)
        await self.settle()

    async def drive(self, awaitable: Awaitable[T], *, limit_ms: int | None = None) -> T:
        """Await ``awaitable`` on virtual time: whenever every task waits, jump to the
        earliest deadline (like trio's autojump clock).

        Raises ``RuntimeError`` when the loop is idle with nobody waiting on the clock (a
        deadlock) and ``TimeoutError`` when the next deadline lies beyond ``limit_ms``
        (absolute virtual time); the awaitable is cancelled in both cases.
        """
        task = asyncio.ensure_future(awaitable)
        try:
            while True:
                await self.settle()
                if task.done():
                    return task.result()
                deadline = self.next_deadline()
                if deadline is None:
                    raise RuntimeError(
                        "VirtualClock.drive: deadlock, nothing waits on the clock and the "
                        "awaitable cannot finish"
                    )
                if limit_ms is not None and deadline > limit_ms:
                    raise TimeoutError(f"VirtualClock.drive: still running at {limit_ms} ms")
                self.set_time(max(deadline, self._now))
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait((task,))


# --------------------------------------------------------------------------- store


@attrs.define(kw_only=True)
class _StoreFault:
    error: BaseException
    applied: bool
    kind: RecordKind | None
    wallet: str | None
    remaining: int | None

    def matches(self, record: Record) -> bool:
        return (self.kind is None or record.kind is self.kind) and (
            self.wallet is None or record.wallet == self.wallet
        )


class MemoryRecorder:
    """A ``Recorder`` keeping every record in :attr:`records`, and every header and record
    in order in :attr:`entries` (what a recording file would hold)."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.entries: list[RecordingHeader | Record] = []

    async def begin(self, header: RecordingHeader) -> None:
        """Keep a watcher start's header."""
        self.entries.append(header)

    async def append(self, record: Record) -> None:
        """Keep ``record``."""
        self.records.append(record)
        self.entries.append(record)

    def of_kind(self, kind: RecordKind) -> list[Record]:
        """The records of ``kind``, in order."""
        return [record for record in self.records if record.kind is kind]

    async def last_versions(self) -> Mapping[str, int]:
        """The highest version committed with a state among the records, by wallet."""
        last: dict[str, int] = {}
        for record in self.records:
            if record.commits_version:
                last[record.wallet] = max(last.get(record.wallet, 0), record.version)
        return MappingProxyType(dict(sorted(last.items())))


class MemoryStore(MemoryRecorder):
    """``StateStore`` and ``Recorder`` in memory, with real compare-and-set semantics.

    :attr:`records` holds every committed and appended record in order (the replay log),
    :attr:`committed` only the records that went in with a state or cursor. Each call is
    one atomic step of the event loop, so concurrent callers see compare-and-set exactly as
    with a database. :meth:`fail_commit` scripts failures (before or after the commit took
    effect). :meth:`close` only counts calls, so a "restarted" watcher can reuse the store;
    ``load_calls`` and ``load_one_calls`` count full and single-wallet loads.
    """

    def __init__(self) -> None:
        super().__init__()
        self.committed: list[Record] = []
        self.close_calls = 0
        self.load_calls = 0
        self.load_one_calls = 0
        self._stored: dict[str, Stored] = {}
        self._cursor: Cursor | None = None
        self._applied: set[str] = set()
        self._faults: list[_StoreFault] = []

    # ---------------------------------------------------------------- the port

    async def load(self) -> Mapping[str, Stored]:
        """Every stored wallet, sorted by wallet."""
        self.load_calls += 1
        return MappingProxyType(dict(sorted(self._stored.items())))

    async def load_one(self, wallet: str) -> Stored | None:
        """The wallet's entry (``None``: nothing stored)."""
        self.load_one_calls += 1
        return self._stored.get(wallet)

    async def history(self, wallet: str, *, after_version: int) -> Sequence[Record]:
        """The records committed with the wallet's states after ``after_version``."""
        return tuple(
            record
            for record in self.committed
            if record.wallet == wallet and record.commits_version and record.version > after_version
        )

    async def cursor(self) -> Cursor | None:
        """The committed feed cursor."""
        return self._cursor

    async def applied(self, event_id: str) -> bool:
        """Whether a feed item with ``event_id`` was committed."""
        return event_id in self._applied

    async def commit(
        self,
        wallet: str,
        state: AccountState,
        record: Record,
        *,
        expected_version: int,
        cursor: Cursor | None = None,
    ) -> int:
        """Compare-and-set: store ``state``, ``record`` (its ``pending`` as the wallet's
        unfinished commands), ``cursor`` and ``record.event_id``; return
        ``expected_version + 1``. Raises :class:`Conflict` on a version mismatch."""
        fault = self._take_fault(record)
        if fault is not None and not fault.applied:
            raise fault.error
        if state.wallet != wallet:
            raise ValueError(f"commit of wallet {wallet!r} got a state of {state.wallet!r}")
        current = self._stored.get(wallet)
        version = 0 if current is None else current.version
        if version != expected_version:
            raise Conflict(
                f"wallet {wallet!r} is at version {version}, expected {expected_version}"
            )
        self._stored[wallet] = Stored(state=state, version=version + 1, unfinished=record.pending)
        if cursor is not None:
            self._cursor = cursor
        if record.event_id is not None:
            self._applied.add(record.event_id)
        self.records.append(record)
        self.entries.append(record)
        self.committed.append(record)
        if fault is not None:
            raise fault.error
        return version + 1

    async def commit_cursor(self, cursor: Cursor, record: Record) -> None:
        """Move the cursor with ``record`` (and mark ``record.event_id`` applied)."""
        fault = self._take_fault(record)
        if fault is not None and not fault.applied:
            raise fault.error
        self._cursor = cursor
        if record.event_id is not None:
            self._applied.add(record.event_id)
        self.records.append(record)
        self.entries.append(record)
        self.committed.append(record)
        if fault is not None:
            raise fault.error

    async def close(self) -> None:
        """Count the call (the store stays usable)."""
        self.close_calls += 1

    # ---------------------------------------------------------------- for tests

    def stored(self, wallet: str) -> Stored | None:
        """The wallet's committed entry."""
        return self._stored.get(wallet)

    @property
    def states(self) -> Mapping[str, AccountState]:
        """Committed states by wallet."""
        return MappingProxyType({w: s.state for w, s in sorted(self._stored.items())})

    @property
    def applied_ids(self) -> frozenset[str]:
        """Every committed feed event id."""
        return frozenset(self._applied)

    @property
    def current_cursor(self) -> Cursor | None:
        """The committed feed cursor (synchronously)."""
        return self._cursor

    def put(
        self,
        state: AccountState,
        *,
        version: int | None = None,
        unfinished: Sequence[Unfinished] = (),
    ) -> Stored:
        """Seed a wallet's entry directly (no record), as if committed earlier."""
        current = self._stored.get(state.wallet)
        if version is None:
            version = 1 if current is None else current.version + 1
        entry = Stored(state=state, version=version, unfinished=tuple(unfinished))
        self._stored[state.wallet] = entry
        return entry

    def fail_commit(
        self,
        error: BaseException | None = None,
        *,
        times: int | None = 1,
        applied: bool = False,
        kind: RecordKind | None = None,
        wallet: str | None = None,
    ) -> None:
        """Make the next ``times`` matching commits (``None``: all) raise ``error``.

        ``applied=True`` raises after the commit took effect (the answer was lost).
        ``kind`` and ``wallet`` restrict which records' commits fail; ``commit_cursor``
        counts as a commit of its (``FEED``) record.
        """
        self._faults.append(
            _StoreFault(
                error=error if error is not None else OSError("injected store failure"),
                applied=applied,
                kind=kind,
                wallet=wallet,
                remaining=times,
            )
        )

    def clear_faults(self) -> None:
        """Remove every scripted failure."""
        self._faults.clear()

    def _take_fault(self, record: Record) -> _StoreFault | None:
        for fault in self._faults:
            if fault.matches(record):
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault
        return None


# --------------------------------------------------------------------------- exchange


class FaultKind(enum.Enum):
    """What a scripted :class:`Fault` does to one call."""

    REJECT = "reject"
    """Submit/cancel: answer ``REJECTED`` with ``reason`` (nothing happens)."""
    NOT_SENT = "not_sent"
    """Raise :class:`NotSent` (nothing happens)."""
    OUTCOME_UNKNOWN = "outcome_unknown"
    """Raise :class:`OutcomeUnknown`; nothing happened."""
    LOST_ANSWER = "lost_answer"
    """The effect happens, then :class:`OutcomeUnknown` is raised (the answer was lost)."""
    DELAY = "delay"
    """The effect happens at once; the answer comes ``delay_ms`` of clock time later
    (different delays reorder answers across wallets)."""
    DUPLICATE = "duplicate"
    """The request is delivered twice; the engine dedupes it by request id."""
    ERROR = "error"
    """Raise ``error`` (an adapter bug, an observation failure)."""


@attrs.frozen(kw_only=True)
class Fault:
    """A scripted misbehaviour of one call; build with the static constructors."""

    kind: FaultKind
    reason: str = "injected"
    delay_ms: int = 0
    error: BaseException | None = None

    @staticmethod
    def reject(reason: str = "rejected by the fake exchange") -> Fault:
        """Answer ``REJECTED`` with ``reason``."""
        return Fault(kind=FaultKind.REJECT, reason=reason)

    @staticmethod
    def not_sent(reason: str = "not sent (injected)") -> Fault:
        """Raise :class:`NotSent`."""
        return Fault(kind=FaultKind.NOT_SENT, reason=reason)

    @staticmethod
    def outcome_unknown(*, applied: bool = False, reason: str = "timed out (injected)") -> Fault:
        """Raise :class:`OutcomeUnknown`, after the effect happened if ``applied``."""
        kind = FaultKind.LOST_ANSWER if applied else FaultKind.OUTCOME_UNKNOWN
        return Fault(kind=kind, reason=reason)

    @staticmethod
    def delay(ms: int) -> Fault:
        """Answer ``ms`` of clock time late."""
        if type(ms) is not int or ms < 0:
            raise ValueError(f"Fault.delay needs an int ≥ 0 (ms), was {ms!r}")
        return Fault(kind=FaultKind.DELAY, delay_ms=ms)

    @staticmethod
    def duplicate() -> Fault:
        """Deliver the request twice."""
        return Fault(kind=FaultKind.DUPLICATE)

    @staticmethod
    def raising(error: BaseException) -> Fault:
        """Raise ``error``."""
        return Fault(kind=FaultKind.ERROR, error=error)


@attrs.frozen(kw_only=True)
class Call:
    """One call the fake exchange received: ``method``, the wallet it concerned (if any),
    its argument (a command, a wallet, the symbols) and the fault applied (if any)."""

    method: str
    wallet: str | None
    argument: object
    fault: FaultKind | None = None


@attrs.define(kw_only=True)
class _Armed:
    method: str
    fault: Fault
    wallet: str | None
    remaining: int | None


_METHODS = frozenset(
    {
        "portfolios",
        "portfolio",
        "margin",
        "quotes",
        "open_orders",
        "submit",
        "cancel",
        "start",
        "stop",
    }
)
_REJECTABLE = frozenset({"submit", "cancel"})


class FakeExchange:
    """Portfolios, margin reports, quotes, open orders, an order gateway and an auction
    executor in one in-memory object.

    Tests set the world (:meth:`set_portfolio`, :meth:`set_margin`, :meth:`set_quote`,
    :meth:`set_open_orders`, …); every call is recorded in :attr:`calls` (the typed lists
    :attr:`submits`, :attr:`cancels`, :attr:`starts`, :attr:`stops` hold the commands).
    An acked submit rests as an :class:`OpenOrder` until the test fills it
    (:meth:`remove_order`) or a cancel removes it; a cancel of an order that is not open is
    answered ``GONE`` (``"order not found"``). Submits and cancels are
    deduplicated by request id (a repeated request gets the first answer). The auction
    executor is idempotent per wallet: while the wallet's auction is pending or running,
    ``start`` returns its receipt. :meth:`inject` scripts :class:`Fault`\\s per method
    (and wallet). ``clock`` is needed for ``created_at`` of orders and for delays.
    """

    def __init__(self, *, clock: Clock | None = None, first_order_id: int = 1_000) -> None:
        self.clock = clock
        self.calls: list[Call] = []
        self.duplicates_delivered = 0
        self._portfolios: dict[str, Portfolio | None] = {}
        self._listing: Mapping[str, Portfolio] | None = None  # portfolios(), until changed
        self._margins: dict[str, MarginReport] = {}
        self._quotes: dict[str, Quote] = {}
        self._orders: dict[str, dict[int, OpenOrder]] = {}
        self._answers: dict[str, OrderAnswer] = {}
        self._auctions: dict[str, AuctionReceipt] = {}
        self._auction_numbers = itertools.count(1)
        self._order_ids = itertools.count(first_order_id)
        self._armed: list[_Armed] = []
        self.auctions_created: list[tuple[str, AuctionReceipt]] = []
        self.auctions_stopped: list[tuple[str, str]] = []

    # ---------------------------------------------------------------- the world

    def set_portfolio(self, wallet: str, portfolio: Portfolio | None) -> None:
        """Set ``wallet``'s portfolio; ``None``: the snapshot is unavailable."""
        self._portfolios[wallet] = portfolio
        self._listing = None

    def remove_portfolio(self, wallet: str) -> None:
        """Forget ``wallet`` (it no longer has a portfolio)."""
        self._portfolios.pop(wallet, None)
        self._listing = None

    def set_margin(self, wallet: str, report: MarginReport) -> None:
        """Set the margin engine's verdict on ``wallet``."""
        self._margins[wallet] = report

    def set_quote(self, symbol: str, quote: Quote | None) -> None:
        """Set (or with ``None`` remove) the quote of ``symbol``."""
        if quote is None:
            self._quotes.pop(symbol, None)
        else:
            self._quotes[symbol] = quote

    def set_open_orders(self, wallet: str, orders: Iterable[OpenOrder]) -> None:
        """Replace ``wallet``'s open orders."""
        self._orders[wallet] = {order.order_id: order for order in orders}

    def add_order(self, wallet: str, order: OpenOrder) -> None:
        """Add one open order of ``wallet``."""
        self._orders.setdefault(wallet, {})[order.order_id] = order

    def remove_order(self, wallet: str, order_id: int) -> bool:
        """Remove an open order (it filled); whether it was open."""
        return self._orders.get(wallet, {}).pop(order_id, None) is not None

    def clear_orders(self, wallet: str) -> None:
        """Remove every open order of ``wallet`` (they filled)."""
        self._orders.pop(wallet, None)

    def open_orders_of(self, wallet: str) -> tuple[OpenOrder, ...]:
        """``wallet``'s open orders by ``(created_at, order_id)`` (synchronously)."""
        orders = self._orders.get(wallet)
        if not orders:
            return ()
        return tuple(sorted(orders.values(), key=lambda o: (o.created_at, o.order_id)))

    def running_auction(self, wallet: str) -> AuctionReceipt | None:
        """The receipt of ``wallet``'s pending or running auction."""
        return self._auctions.get(wallet)

    def end_auction(self, wallet: str) -> AuctionReceipt | None:
        """End ``wallet``'s auction (settled on chain); its receipt, if one ran."""
        return self._auctions.pop(wallet, None)

    # ---------------------------------------------------------------- faults and calls

    def inject(
        self, method: str, fault: Fault, *, wallet: str | None = None, times: int | None = 1
    ) -> None:
        """Apply ``fault`` to the next ``times`` calls (``None``: every call) of ``method``
        (``submit``, ``cancel``, ``start``, ``stop``, ``portfolios``, ``portfolio``,
        ``margin``, ``quotes``, ``open_orders``), of ``wallet`` only if given."""
        if method not in _METHODS:
            raise ValueError(f"unknown method {method!r}; one of {sorted(_METHODS)}")
        if fault.kind is FaultKind.REJECT and method not in _REJECTABLE:
            raise ValueError(f"only submit and cancel can be rejected, not {method!r}")
        if fault.kind is FaultKind.DELAY and self.clock is None:
            raise ValueError("a delay needs FakeExchange(clock=...)")
        self._armed.append(_Armed(method=method, fault=fault, wallet=wallet, remaining=times))

    def clear_faults(self) -> None:
        """Remove every scripted fault."""
        self._armed.clear()

    def calls_of(self, method: str) -> list[Call]:
        """The recorded calls of ``method``."""
        return [call for call in self.calls if call.method == method]

    @property
    def submits(self) -> list[SubmitOrder]:
        """Every submit received, faulted or not."""
        return [c.argument for c in self.calls if isinstance(c.argument, SubmitOrder)]

    @property
    def cancels(self) -> list[CancelOrder]:
        """Every cancel received, faulted or not."""
        return [c.argument for c in self.calls if isinstance(c.argument, CancelOrder)]

    @property
    def starts(self) -> list[StartAuction]:
        """Every start-auction received, faulted or not."""
        return [c.argument for c in self.calls if isinstance(c.argument, StartAuction)]

    @property
    def stops(self) -> list[StopAuction]:
        """Every stop-auction received, faulted or not."""
        return [c.argument for c in self.calls if isinstance(c.argument, StopAuction)]

    def _take(self, method: str, wallet: str | None) -> Fault | None:
        for armed in self._armed:
            if armed.method == method and (armed.wallet is None or armed.wallet == wallet):
                if armed.remaining is not None:
                    armed.remaining -= 1
                    if armed.remaining <= 0:
                        self._armed.remove(armed)
                return armed.fault
        return None

    async def _serve(
        self,
        method: str,
        wallet: str | None,
        argument: object,
        effect: Callable[[], T],
        rejected: Callable[[str], T] | None = None,
    ) -> T:
        fault = self._take(method, wallet)
        self.calls.append(
            Call(
                method=method,
                wallet=wallet,
                argument=argument,
                fault=None if fault is None else fault.kind,
            )
        )
        if fault is None:
            return effect()
        match fault.kind:
            case FaultKind.REJECT:
                assert rejected is not None
                return rejected(fault.reason)
            case FaultKind.NOT_SENT:
                raise NotSent(fault.reason)
            case FaultKind.OUTCOME_UNKNOWN:
                raise OutcomeUnknown(fault.reason)
            case FaultKind.LOST_ANSWER:
                effect()
                raise OutcomeUnknown(fault.reason)
            case FaultKind.DELAY:
                result = effect()
                assert self.clock is not None
                await self.clock.sleep_until(self.clock.now_ms() + fault.delay_ms)
                return result
            case FaultKind.DUPLICATE:
                result = effect()
                effect()
                self.duplicates_delivered += 1
                return result
            case FaultKind.ERROR:
                assert fault.error is not None
                raise fault.error

    def _now(self) -> int:
        return 0 if self.clock is None else self.clock.now_ms()

    # ---------------------------------------------------------------- observation ports

    async def portfolios(self) -> Mapping[str, Portfolio]:
        """Every wallet with an available portfolio, sorted."""

        def effect() -> Mapping[str, Portfolio]:
            if self._listing is None:  # sorted once, not at every poll of a large world
                self._listing = MappingProxyType(
                    {w: p for w, p in sorted(self._portfolios.items()) if p is not None}
                )
            return self._listing

        return await self._serve("portfolios", None, None, effect)

    async def portfolio(self, wallet: str) -> Portfolio | None:
        """``wallet``'s portfolio; ``None`` when unavailable or unknown."""
        return await self._serve("portfolio", wallet, wallet, lambda: self._portfolios.get(wallet))

    async def margin(self, wallet: str, portfolio: Portfolio | None) -> MarginReport:
        """The report set with :meth:`set_margin`; ``LookupError`` if none was."""

        def effect() -> MarginReport:
            if wallet not in self._margins:
                raise LookupError(f"no margin report for wallet {wallet!r}")
            return self._margins[wallet]

        return await self._serve("margin", wallet, wallet, effect)

    async def quotes(self, symbols: Sequence[str]) -> Mapping[str, Quote]:
        """The quotes of those ``symbols`` that have one."""
        wanted = tuple(symbols)

        def effect() -> Mapping[str, Quote]:
            return MappingProxyType({s: self._quotes[s] for s in wanted if s in self._quotes})

        return await self._serve("quotes", None, wanted, effect)

    async def open_orders(self, wallet: str) -> Sequence[OpenOrder]:
        """``wallet``'s open orders."""
        return await self._serve("open_orders", wallet, wallet, lambda: self.open_orders_of(wallet))

    # ---------------------------------------------------------------- batch observation

    async def portfolios_of(self, wallets: Sequence[str]) -> Mapping[str, Portfolio | None]:
        """:meth:`portfolio` of each of ``wallets``, in one call; a wallet whose own call
        fails (an injected fault) is left out — it fails alone."""
        if not self._armed:
            return self._each_now("portfolio", wallets, self._portfolios.get)
        return await self._each(wallets, self.portfolio)

    async def margins(
        self, portfolios: Mapping[str, Portfolio | None]
    ) -> Mapping[str, MarginReport]:
        """:meth:`margin` of each wallet of ``portfolios``, in one call (failures left out)."""
        if not self._armed:
            return self._each_now("margin", list(portfolios), self._margins.__getitem__)
        return await self._each(list(portfolios), lambda w: self.margin(w, portfolios[w]))

    async def open_orders_many(self, wallets: Sequence[str]) -> Mapping[str, Sequence[OpenOrder]]:
        """:meth:`open_orders` of each of ``wallets``, in one call (failures left out)."""
        if not self._armed:
            return self._each_now("open_orders", wallets, self.open_orders_of)
        return await self._each(wallets, self.open_orders)

    async def _each(
        self, wallets: Sequence[str], call: Callable[[str], Awaitable[T]]
    ) -> dict[str, T]:
        answered: dict[str, T] = {}
        for wallet in wallets:
            try:
                answered[wallet] = await call(wallet)
            except Exception:
                continue
        return answered

    def _each_now(
        self, method: str, wallets: Sequence[str], effect: Callable[[str], T]
    ) -> dict[str, T]:
        """What :meth:`_each` over the single-wallet calls answers when no fault is armed
        (each call recorded as its own, each effect run), without a coroutine per wallet:
        a wallet whose effect raises (no margin report set) is left out."""
        answered: dict[str, T] = {}
        record = self.calls.append
        for wallet in wallets:
            record(Call(method=method, wallet=wallet, argument=wallet))
            try:
                answered[wallet] = effect(wallet)
            except LookupError:
                continue
        return answered

    # ---------------------------------------------------------------- order gateway

    async def submit(self, command: SubmitOrder) -> OrderAnswer:
        """Rest the order (``ACKED`` with a new order id), once per request id."""

        def effect() -> OrderAnswer:
            if command.request_id in self._answers:
                return self._answers[command.request_id]
            order_id = next(self._order_ids)
            self.add_order(
                command.wallet,
                OpenOrder(
                    order_id=order_id,
                    symbol=command.symbol,
                    side=Side.BUY,
                    price=command.price,
                    original_size=command.size,
                    remaining_size=command.size,
                    client_id=command.client_id,
                    created_at=self._now(),
                ),
            )
            answer = OrderAnswer(status=AnswerStatus.ACKED, order_id=order_id)
            self._answers[command.request_id] = answer
            return answer

        def rejected(reason: str) -> OrderAnswer:
            return OrderAnswer(status=AnswerStatus.REJECTED, reason=reason)

        return await self._serve("submit", command.wallet, command, effect, rejected)

    async def cancel(self, command: CancelOrder) -> OrderAnswer:
        """Remove the order (``CANCELED``), or answer ``GONE`` with ``"order not found"`` for
        an order that is not open (``Fault.reject("order not found")`` scripts an exchange
        that only sends text)."""

        def effect() -> OrderAnswer:
            if command.request_id in self._answers:
                return self._answers[command.request_id]
            if self.remove_order(command.wallet, command.order_id):
                answer = OrderAnswer(status=AnswerStatus.CANCELED, order_id=command.order_id)
            else:
                answer = OrderAnswer(status=AnswerStatus.GONE, reason="order not found")
            self._answers[command.request_id] = answer
            return answer

        def rejected(reason: str) -> OrderAnswer:
            return OrderAnswer(status=AnswerStatus.REJECTED, reason=reason)

        return await self._serve("cancel", command.wallet, command, effect, rejected)

    # ---------------------------------------------------------------- auction executor

    async def start(self, command: StartAuction) -> AuctionReceipt:
        """The wallet's running auction's receipt, or a new auction's."""

        def effect() -> AuctionReceipt:
            running = self._auctions.get(command.wallet)
            if running is not None:
                return running
            number = next(self._auction_numbers)
            receipt = AuctionReceipt(auction_id=f"auction-{number}", tx_hash=f"0x{number:064x}")
            self._auctions[command.wallet] = receipt
            self.auctions_created.append((command.wallet, receipt))
            return receipt

        return await self._serve("start", command.wallet, command, effect)

    async def stop(self, command: StopAuction) -> None:
        """Stop the wallet's auction if it is ``command.auction_id`` (else nothing)."""

        def effect() -> None:
            running = self._auctions.get(command.wallet)
            if running is not None and running.auction_id == command.auction_id:
                del self._auctions[command.wallet]
                self.auctions_stopped.append((command.wallet, command.auction_id))

        await self._serve("stop", command.wallet, command, effect)


# --------------------------------------------------------------------------- feed and sink


class FakeFeed:
    """An ``AuctionFeed`` over a list: :meth:`push` appends at the next integer cursor.

    :meth:`redeliver` appends an item again (same event id, a later cursor), :meth:`swap`
    exchanges the payloads of two cursors (events arriving out of order), :meth:`fail_next`
    makes the next read break off. :attr:`reads` records every ``events(after)`` call.
    """

    def __init__(self) -> None:
        self._items: list[FeedItem] = []
        self._next_cursor = 1
        self._failure: tuple[int, BaseException] | None = None
        self.reads: list[Cursor | None] = []

    @property
    def items(self) -> tuple[FeedItem, ...]:
        """Every item, in cursor order."""
        return tuple(self._items)

    def push(self, wallet: str, event: Event, event_id: str | None = None) -> FeedItem:
        """Append ``event`` for ``wallet`` (event id ``event-<cursor>`` unless given)."""
        cursor = self._next_cursor
        self._next_cursor += 1
        item = FeedItem(
            cursor=cursor,
            event_id=event_id if event_id is not None else f"event-{cursor}",
            wallet=wallet,
            event=event,
        )
        self._items.append(item)
        return item

    def redeliver(self, event_id: str) -> FeedItem:
        """Append the item with ``event_id`` once more, at a new cursor."""
        for item in self._items:
            if item.event_id == event_id:
                return self.push(item.wallet, item.event, item.event_id)
        raise KeyError(f"no feed item with event id {event_id!r}")

    def swap(self, first: Cursor, second: Cursor) -> None:
        """Exchange the payloads (wallet, event, id) at two cursors; cursors stay ordered."""
        positions = {item.cursor: i for i, item in enumerate(self._items)}
        i, j = positions[first], positions[second]
        a, b = self._items[i], self._items[j]
        self._items[i] = attrs.evolve(b, cursor=a.cursor)
        self._items[j] = attrs.evolve(a, cursor=b.cursor)

    def fail_next(self, error: BaseException | None = None, *, after: int = 0) -> None:
        """Make the next read raise ``error`` after yielding ``after`` items."""
        self._failure = (after, error if error is not None else ConnectionError("feed broke"))

    async def events(self, after: Cursor | None) -> AsyncIterator[FeedItem]:
        """The items after ``after`` available now, in cursor order."""
        self.reads.append(after)
        failure, self._failure = self._failure, None
        snapshot = [item for item in self._items if after is None or _after(item.cursor, after)]
        for count, item in enumerate(snapshot):
            if failure is not None and count == failure[0]:
                raise failure[1]
            await asyncio.sleep(0)
            yield item
        if failure is not None and failure[0] >= len(snapshot):
            raise failure[1]


def _after(cursor: Cursor, after: Cursor) -> bool:
    if isinstance(cursor, int) and isinstance(after, int):
        return cursor > after
    return str(cursor) > str(after)


@attrs.define(kw_only=True)
class _SinkFault:
    error: BaseException
    remaining: int | None


class MemorySink:
    """An ``EventSink`` recording every publish as ``(key, change)`` in :attr:`published`."""

    def __init__(self) -> None:
        self.published: list[tuple[tuple[str, int, int], StateChange]] = []
        self.attempts: list[tuple[str, int, int]] = []
        self._faults: list[_SinkFault] = []

    async def publish(self, change: StateChange, *, key: tuple[str, int, int]) -> None:
        """Record ``(key, change)`` unless a scripted failure raises."""
        self.attempts.append(key)
        if self._faults:
            fault = self._faults[0]
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.pop(0)
            raise fault.error
        self.published.append((key, change))

    def fail(self, error: BaseException | None = None, *, times: int | None = 1) -> None:
        """Make the next ``times`` publishes (``None``: all) raise ``error``."""
        self._faults.append(
            _SinkFault(error=error if error is not None else NotSent("sink down"), remaining=times)
        )

    def clear_faults(self) -> None:
        """Remove every scripted failure."""
        self._faults.clear()

    @property
    def keys(self) -> list[tuple[str, int, int]]:
        """The keys published, in order."""
        return [key for key, _ in self.published]

    @property
    def changes(self) -> list[StateChange]:
        """The changes published, in order."""
        return [change for _, change in self.published]
