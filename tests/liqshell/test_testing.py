"""liqshell.testing: the fakes behave like honest, small implementations of their ports."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from liqcore import (
    AccountState,
    AuctionStarted,
    CancelOrder,
    Health,
    Healthy,
    MarginMode,
    OpenOrder,
    Portfolio,
    PublishStateChange,
    Quote,
    Side,
    StartAuction,
    StateChange,
    StopAuction,
    SubmitOrder,
)
from liqcore.machine import step
from liqshell.ports import (
    AnswerStatus,
    AuctionExecutor,
    AuctionFeed,
    Clock,
    Conflict,
    EventSink,
    MarginReport,
    MarginSource,
    NotSent,
    OrderGateway,
    OrderSnapshot,
    OutcomeUnknown,
    PortfolioSource,
    QuoteSource,
    Record,
    Recorder,
    RecordKind,
    StateStore,
    Unfinished,
)
from liqshell.testing import (
    FakeExchange,
    FakeFeed,
    Fault,
    FaultKind,
    MemoryRecorder,
    MemorySink,
    MemoryStore,
    VirtualClock,
)

W = "W"
SYMBOL = "BTC-20261231-100000-C"
REPORT = MarginReport(
    margin_mode=MarginMode.STANDARD,
    equity=Decimal(10),
    mm_required=Decimal(1),
    is_liquidatable=False,
)


def state_at(updated_at: int, wallet: str = W) -> AccountState:
    return AccountState(wallet=wallet, margin_mode=MarginMode.STANDARD, updated_at=updated_at)


def decision(wallet: str = W, **kwargs: object) -> Record:
    return Record(kind=RecordKind.DECISION, wallet=wallet, now=1, **kwargs)  # type: ignore[arg-type]


def submit(request_id: str = "r1", client_id: str = "liq-W-1-0", wallet: str = W) -> SubmitOrder:
    return SubmitOrder(
        wallet=wallet,
        symbol=SYMBOL,
        price=Decimal(120),
        size=Decimal(1),
        client_id=client_id,
        request_id=request_id,
    )


def cancel(order_id: int, request_id: str = "c1") -> CancelOrder:
    return CancelOrder(wallet=W, order_id=order_id, client_id=None, request_id=request_id)


# --------------------------------------------------------------------------- ports


def test_fakes_port_protocols_are_implemented() -> None:
    """Every fake is usable where its ports are expected (checked by mypy too)."""
    clock: Clock = VirtualClock(0)
    exchange = FakeExchange(clock=clock)
    ports: tuple[object, ...] = (
        exchange,
        FakeFeed(),
        MemorySink(),
        MemoryStore(),
        MemoryRecorder(),
    )
    portfolio_source: PortfolioSource = exchange
    margin_source: MarginSource = exchange
    quote_source: QuoteSource = exchange
    snapshot: OrderSnapshot = exchange
    gateway: OrderGateway = exchange
    auctions: AuctionExecutor = exchange
    feed: AuctionFeed = FakeFeed()
    sink: EventSink = MemorySink()
    store: StateStore = MemoryStore()
    recorder: Recorder = MemoryStore()
    assert all(
        p is not None
        for p in (
            *ports,
            portfolio_source,
            margin_source,
            quote_source,
            snapshot,
            gateway,
            auctions,
            feed,
            sink,
            store,
            recorder,
        )
    )


# --------------------------------------------------------------------------- clock


async def test_virtual_clock_sleep_until_wakes_only_when_time_reaches_deadline() -> None:
    """A sleeper stays asleep until the virtual time reaches its deadline."""
    clock = VirtualClock(1_000)
    task = asyncio.ensure_future(clock.sleep_until(1_500))
    await clock.settle()
    assert not task.done()
    assert clock.sleepers == (1_500,)
    clock.advance(499)
    await clock.settle()
    assert not task.done()
    clock.advance(1)
    await clock.settle()
    assert task.done()
    assert not clock.sleepers


async def test_virtual_clock_sleep_until_past_returns_at_once() -> None:
    """Sleeping until an instant already passed returns without time moving."""
    clock = VirtualClock(50)
    await clock.sleep_until(10)
    assert clock.now_ms() == 50


async def test_virtual_clock_set_time_backwards_wakes_nobody() -> None:
    """A clock stepping back moves now_ms back and wakes no sleeper."""
    clock = VirtualClock(100)
    task = asyncio.ensure_future(clock.sleep_until(150))
    await clock.settle()
    clock.set_time(20)
    await clock.settle()
    assert clock.now_ms() == 20
    assert not task.done()
    task.cancel()


def test_virtual_clock_rejects_non_int_times() -> None:
    """Time is int milliseconds; anything else is refused."""
    with pytest.raises(TypeError):
        VirtualClock(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="advance"):
        VirtualClock(0).advance(-1)


async def test_virtual_clock_wait_for_times_out_on_virtual_time() -> None:
    """wait_for raises TimeoutError exactly when virtual time passes the timeout, and
    cancels what it waited for."""
    clock = VirtualClock(0)
    inner = asyncio.ensure_future(clock.sleep_until(10_000))

    async def waited() -> None:
        await inner

    with pytest.raises(TimeoutError):
        await clock.drive(clock.wait_for(waited(), 3_000))
    assert clock.now_ms() == 3_000
    assert inner.cancelled()


async def test_virtual_clock_wait_for_returns_result_before_timeout() -> None:
    """wait_for returns the awaitable's result when it finishes in time."""
    clock = VirtualClock(0)

    async def answer() -> int:
        await clock.sleep_until(200)
        return 42

    assert await clock.drive(clock.wait_for(answer(), 1_000)) == 42
    assert clock.now_ms() == 200
    assert clock.next_deadline() is None


async def test_virtual_clock_wait_for_zero_timeout_times_out_at_once() -> None:
    """A zero timeout gives up before the awaitable runs."""
    clock = VirtualClock(0)

    async def answer() -> int:
        return 1

    with pytest.raises(TimeoutError):
        await clock.wait_for(answer(), 0)


@given(st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=12))
def test_virtual_clock_drive_wakes_sleepers_in_deadline_order(deadlines: list[int]) -> None:
    """drive jumps from deadline to deadline: each sleeper wakes at its own instant, in
    order."""
    clock = VirtualClock(0)
    woken: list[tuple[int, int]] = []

    async def sleeper(deadline: int) -> None:
        await clock.sleep_until(deadline)
        woken.append((deadline, clock.now_ms()))

    async def main() -> None:
        await asyncio.gather(*(sleeper(d) for d in deadlines))

    asyncio.run(clock.drive(main()))
    assert [d for d, _ in woken] == sorted(deadlines)
    assert all(deadline == at for deadline, at in woken)


async def test_virtual_clock_run_for_runs_chained_sleeps_at_their_instants() -> None:
    """run_for lets a chain of sleeps run at their own instants within the window."""
    clock = VirtualClock(0)
    seen: list[int] = []

    async def ticker() -> None:
        for _ in range(5):
            await clock.sleep(100)
            seen.append(clock.now_ms())

    task = asyncio.ensure_future(ticker())
    await clock.run_for(350)
    assert seen == [100, 200, 300]
    assert clock.now_ms() == 350
    await clock.run_for(200)
    assert seen == [100, 200, 300, 400, 500]
    assert task.done()


async def test_virtual_clock_drive_reports_deadlock() -> None:
    """drive raises when the awaitable waits on something the clock cannot advance."""
    clock = VirtualClock(0)
    never = asyncio.Event()
    with pytest.raises(RuntimeError, match="deadlock"):
        await clock.drive(never.wait())


async def test_virtual_clock_drive_limit_raises_timeout() -> None:
    """drive stops with TimeoutError when the next deadline is beyond limit_ms."""
    clock = VirtualClock(0)
    with pytest.raises(TimeoutError):
        await clock.drive(clock.sleep_until(5_000), limit_ms=1_000)
    assert clock.now_ms() == 0


def test_virtual_clock_serves_several_event_loops_in_turn() -> None:
    """The clock holds no loop resources: two event loops can use it one after another."""
    clock = VirtualClock(0)
    asyncio.run(clock.drive(clock.sleep_until(100)))
    asyncio.run(clock.drive(clock.sleep_until(300)))
    assert clock.now_ms() == 300


# --------------------------------------------------------------------------- store


async def test_memory_store_commit_is_compare_and_set() -> None:
    """A commit with a stale expected version raises Conflict and changes nothing."""
    store = MemoryStore()
    assert await store.commit(W, state_at(1), decision(), expected_version=0) == 1
    assert await store.commit(W, state_at(2), decision(), expected_version=1) == 2
    with pytest.raises(Conflict):
        await store.commit(W, state_at(3), decision(), expected_version=1)
    stored = store.stored(W)
    assert stored is not None
    assert (stored.version, stored.state.updated_at) == (2, 2)
    assert len(store.committed) == 2


async def test_memory_store_keeps_pending_as_unfinished_and_cursor_with_event_id() -> None:
    """A commit stores the record's pending as unfinished, the cursor and the event id."""
    store = MemoryStore()
    start = StartAuction(wallet=W, request_id="s")
    pending = (Unfinished(version=1, index=0, command=start),)
    record = decision(pending=pending, event_id="e1")
    await store.commit(W, state_at(1), record, expected_version=0, cursor=7)
    loaded = await store.load()
    assert loaded[W].unfinished == pending
    assert await store.cursor() == 7
    assert await store.applied("e1")
    assert not await store.applied("e2")


async def test_memory_store_commit_cursor_moves_cursor_and_marks_event() -> None:
    """commit_cursor moves the cursor, marks the event id applied and keeps the record."""
    store = MemoryStore()
    record = Record(kind=RecordKind.FEED, wallet="ghost", now=1, event_id="e9", cursor=3)
    await store.commit_cursor(3, record)
    assert store.current_cursor == 3
    assert store.applied_ids == {"e9"}
    assert store.records == [record]


async def test_memory_store_fail_commit_before_and_after_effect() -> None:
    """A scripted failure raises before the commit, or after it took effect (lost answer)."""
    store = MemoryStore()
    store.fail_commit(OSError("down"))
    with pytest.raises(OSError, match="down"):
        await store.commit(W, state_at(1), decision(), expected_version=0)
    assert store.stored(W) is None
    store.fail_commit(OSError("lost"), applied=True)
    with pytest.raises(OSError, match="lost"):
        await store.commit(W, state_at(1), decision(), expected_version=0)
    stored = store.stored(W)
    assert stored is not None
    assert stored.version == 1


async def test_memory_store_fail_commit_filters_by_kind_and_wallet() -> None:
    """Failures scripted for one record kind or wallet leave other commits alone."""
    store = MemoryStore()
    store.fail_commit(kind=RecordKind.OUTCOMES, times=None)
    store.fail_commit(wallet="V", times=None)
    await store.commit(W, state_at(1), decision(), expected_version=0)
    outcomes = Record(kind=RecordKind.OUTCOMES, wallet=W, now=2)
    with pytest.raises(OSError, match="injected"):
        await store.commit(W, state_at(2), outcomes, expected_version=1)
    with pytest.raises(OSError, match="injected"):
        await store.commit("V", state_at(1, "V"), decision("V"), expected_version=0)
    store.clear_faults()
    assert await store.commit(W, state_at(2), outcomes, expected_version=1) == 2


async def test_memory_store_close_counts_and_stays_usable() -> None:
    """close only counts, so a restarted watcher can reuse the store."""
    store = MemoryStore()
    await store.close()
    assert store.close_calls == 1
    store.put(state_at(5))
    assert (await store.load())[W].version == 1


async def test_memory_recorder_keeps_records_in_order() -> None:
    """The recorder appends records in order and filters by kind."""
    recorder = MemoryRecorder()
    first, second = decision(), Record(kind=RecordKind.FEED, wallet=W, now=2)
    await recorder.append(first)
    await recorder.append(second)
    assert recorder.records == [first, second]
    assert recorder.of_kind(RecordKind.FEED) == [second]


# --------------------------------------------------------------------------- exchange


async def test_fake_exchange_acked_submit_rests_until_filled() -> None:
    """An acked submit becomes an open order with the client id; a fill removes it."""
    clock = VirtualClock(77)
    exchange = FakeExchange(clock=clock)
    answer = await exchange.submit(submit())
    assert answer.status is AnswerStatus.ACKED
    assert answer.order_id is not None
    (order,) = await exchange.open_orders(W)
    assert (order.order_id, order.client_id, order.created_at) == (answer.order_id, "liq-W-1-0", 77)
    assert exchange.remove_order(W, order.order_id)
    assert await exchange.open_orders(W) == ()


async def test_fake_exchange_dedupes_requests_by_request_id() -> None:
    """The same submit request twice books one order and answers the same."""
    exchange = FakeExchange()
    first = await exchange.submit(submit())
    second = await exchange.submit(submit())
    assert first == second
    assert len(exchange.open_orders_of(W)) == 1
    assert len(exchange.submits) == 2


async def test_fake_exchange_cancel_removes_or_rejects_not_found() -> None:
    """A cancel removes an open order; a cancel of a missing order is rejected benignly."""
    exchange = FakeExchange()
    exchange.add_order(
        W,
        OpenOrder(
            order_id=7,
            symbol=SYMBOL,
            side=Side.SELL,
            price=Decimal(95),
            original_size=Decimal(1),
            remaining_size=Decimal(1),
            created_at=1,
        ),
    )
    assert (await exchange.cancel(cancel(7))).status is AnswerStatus.CANCELED
    missing = await exchange.cancel(cancel(7, "c2"))
    assert (missing.status, missing.reason) == (AnswerStatus.GONE, "order not found")


@pytest.mark.parametrize(
    ("fault", "error", "rests"),
    [
        (Fault.not_sent(), NotSent, False),
        (Fault.outcome_unknown(), OutcomeUnknown, False),
        (Fault.outcome_unknown(applied=True), OutcomeUnknown, True),
        (Fault.raising(RuntimeError("bug")), RuntimeError, False),
    ],
)
async def test_fake_exchange_submit_faults_raise_with_or_without_effect(
    fault: Fault, error: type[Exception], rests: bool
) -> None:
    """Scripted submit faults raise; only a lost answer leaves the order resting."""
    exchange = FakeExchange()
    exchange.inject("submit", fault)
    with pytest.raises(error):
        await exchange.submit(submit())
    assert bool(exchange.open_orders_of(W)) is rests
    assert exchange.calls_of("submit")[0].fault is fault.kind
    assert (await exchange.submit(submit("r2", "liq-W-1-1"))).status is AnswerStatus.ACKED


async def test_fake_exchange_reject_answers_rejected_without_effect() -> None:
    """A scripted rejection answers REJECTED with its reason and books nothing."""
    exchange = FakeExchange()
    exchange.inject("submit", Fault.reject("too far from mark"), times=2)
    for request in ("a", "b"):
        answer = await exchange.submit(submit(request))
        assert (answer.status, answer.reason) == (AnswerStatus.REJECTED, "too far from mark")
    assert exchange.open_orders_of(W) == ()
    assert (await exchange.submit(submit("c"))).status is AnswerStatus.ACKED


async def test_fake_exchange_faults_scoped_to_a_wallet() -> None:
    """A fault scoped to one wallet leaves other wallets' calls alone."""
    exchange = FakeExchange()
    exchange.inject("margin", Fault.raising(ConnectionError("x")), wallet="V", times=None)
    report = MarginReport(
        margin_mode=MarginMode.STANDARD,
        equity=Decimal(1),
        mm_required=Decimal(0),
        is_liquidatable=False,
    )
    exchange.set_margin(W, report)
    exchange.set_margin("V", report)
    assert await exchange.margin(W, None) == report
    for _ in range(3):
        with pytest.raises(ConnectionError):
            await exchange.margin("V", None)


async def test_fake_exchange_delay_answers_late_on_virtual_time() -> None:
    """A delayed answer arrives after the delay; the effect happens at once."""
    clock = VirtualClock(0)
    exchange = FakeExchange(clock=clock)
    exchange.inject("submit", Fault.delay(2_500))
    task = asyncio.ensure_future(exchange.submit(submit()))
    await clock.settle()
    assert not task.done()
    assert len(exchange.open_orders_of(W)) == 1
    await clock.run_for(2_500)
    assert task.result().status is AnswerStatus.ACKED


async def test_fake_exchange_duplicate_delivery_books_once() -> None:
    """A request delivered twice books one order (the engine dedupes by request id)."""
    exchange = FakeExchange()
    exchange.inject("submit", Fault.duplicate())
    await exchange.submit(submit())
    assert exchange.duplicates_delivered == 1
    assert len(exchange.open_orders_of(W)) == 1


def test_fake_exchange_inject_validates() -> None:
    """Unknown methods, rejections of auctions and clockless delays are refused."""
    exchange = FakeExchange()
    with pytest.raises(ValueError, match="unknown method"):
        exchange.inject("teleport", Fault.not_sent())
    with pytest.raises(ValueError, match="rejected"):
        exchange.inject("start", Fault.reject())
    with pytest.raises(ValueError, match="clock"):
        exchange.inject("submit", Fault.delay(5))
    assert Fault.delay(5).kind is FaultKind.DELAY


async def test_fake_exchange_auction_start_is_idempotent_per_wallet() -> None:
    """While a wallet's auction runs, start returns its receipt; after it ends, a new one."""
    exchange = FakeExchange()
    first = await exchange.start(StartAuction(wallet=W, request_id="s1"))
    again = await exchange.start(StartAuction(wallet=W, request_id="s2"))
    other = await exchange.start(StartAuction(wallet="V", request_id="s3"))
    assert first == again
    assert other.auction_id != first.auction_id
    await exchange.stop(
        StopAuction(wallet=W, auction_id="someone-else", chain_start_time=1, request_id="x")
    )
    assert exchange.running_auction(W) == first
    await exchange.stop(
        StopAuction(wallet=W, auction_id=first.auction_id, chain_start_time=1, request_id="y")
    )
    assert exchange.running_auction(W) is None
    assert exchange.auctions_stopped == [(W, first.auction_id)]
    fresh = await exchange.start(StartAuction(wallet=W, request_id="s4"))
    assert fresh.auction_id != first.auction_id
    assert len(exchange.starts) == 4


async def test_fake_exchange_portfolios_lists_only_available_ones() -> None:
    """portfolios() omits wallets whose snapshot is unavailable; portfolio() gives None."""
    exchange = FakeExchange()
    exchange.set_portfolio(W, Portfolio())
    exchange.set_portfolio("V", None)
    assert list(await exchange.portfolios()) == [W]
    assert await exchange.portfolio("V") is None
    assert await exchange.portfolio("nobody") is None
    exchange.set_quote(SYMBOL, Quote(best_ask=Decimal(1)))
    assert list(await exchange.quotes([SYMBOL, "ETH-20261231-1000-C"])) == [SYMBOL]


async def test_fake_exchange_portfolios_listing_follows_every_change() -> None:
    """The listing (sorted once) is made anew after a portfolio is set, made unavailable or
    removed."""
    exchange = FakeExchange()
    exchange.set_portfolio("b", Portfolio())
    assert list(await exchange.portfolios()) == ["b"]
    exchange.set_portfolio("a", Portfolio())
    assert list(await exchange.portfolios()) == ["a", "b"]
    exchange.set_portfolio("b", None)
    assert list(await exchange.portfolios()) == ["a"]
    exchange.remove_portfolio("a")
    assert list(await exchange.portfolios()) == []


async def batch_answers(exchange: FakeExchange, wallets: list[str]) -> tuple[object, ...]:
    portfolios = await exchange.portfolios_of(wallets)
    margins = await exchange.margins(portfolios)
    orders = await exchange.open_orders_many(wallets)
    return dict(portfolios), dict(margins), dict(orders)


async def test_fake_exchange_batch_calls_answer_and_log_as_the_single_calls_do() -> None:
    """With no fault armed, the batch calls (served without a call per wallet) give the
    answers and log the calls that the path through each wallet's own call gives with a
    fault armed elsewhere: a wallet without a margin report is left out of ``margins``,
    orders come sorted by (created_at, order_id), each wallet's call is logged."""
    order = OpenOrder(
        order_id=9,
        symbol=SYMBOL,
        side=Side.SELL,
        price=Decimal(1),
        original_size=Decimal(1),
        remaining_size=Decimal(1),
        created_at=5,
    )
    older = attrs.evolve(order, order_id=11, created_at=2)
    answers = []
    logs = []
    for armed in (False, True):
        exchange = FakeExchange()
        for wallet in ("a", "b", "c"):
            exchange.set_portfolio(wallet, Portfolio())
        exchange.set_margin("a", REPORT)
        exchange.set_margin("c", REPORT)
        exchange.set_open_orders("c", [order, older])
        if armed:  # the per-wallet path, its fault never applying to these calls
            exchange.inject("submit", Fault.not_sent(), times=None)
        answers.append(await batch_answers(exchange, ["a", "b", "c", "d"]))
        logs.append(exchange.calls)
    assert answers[0] == answers[1]
    portfolios, margins, orders = answers[0]  # type: ignore[misc]
    assert list(portfolios) == ["a", "b", "c", "d"]
    assert portfolios["d"] is None
    assert list(margins) == ["a", "c"]
    assert orders["c"] == (older, order)
    assert orders["a"] == ()
    assert logs[0] == logs[1]
    assert [(c.method, c.wallet) for c in logs[0]] == [
        (method, wallet)
        for method, wallets in (("portfolio", "abcd"), ("margin", "abcd"), ("open_orders", "abcd"))
        for wallet in wallets
    ]


# --------------------------------------------------------------------------- feed and sink


async def collect(feed: FakeFeed, after: int | None) -> list[tuple[int | str, str]]:
    return [(item.cursor, item.event_id) async for item in feed.events(after)]


async def test_fake_feed_replays_after_cursor_and_redelivers() -> None:
    """The feed yields items after a cursor; a redelivery repeats an id at a new cursor."""
    feed = FakeFeed()
    feed.push(W, AuctionStarted(auction_id="a1"))
    feed.push(W, AuctionStarted(auction_id="a2"), event_id="x")
    feed.redeliver("event-1")
    assert await collect(feed, None) == [(1, "event-1"), (2, "x"), (3, "event-1")]
    assert await collect(feed, 2) == [(3, "event-1")]
    assert feed.reads == [None, 2]


async def test_fake_feed_swap_reorders_payloads() -> None:
    """swap exchanges two items' payloads while cursors stay ordered."""
    feed = FakeFeed()
    feed.push(W, AuctionStarted(auction_id="a1"))
    feed.push(W, AuctionStarted(auction_id="a2"))
    feed.swap(1, 2)
    assert await collect(feed, None) == [(1, "event-2"), (2, "event-1")]


async def test_fake_feed_fail_next_breaks_one_read() -> None:
    """fail_next breaks the next read after the given number of items, once."""
    feed = FakeFeed()
    for n in range(3):
        feed.push(W, AuctionStarted(auction_id=f"a{n}"))
    feed.fail_next(after=1)
    seen: list[int | str] = []

    async def read() -> None:
        async for item in feed.events(None):
            seen.append(item.cursor)  # noqa: PERF401 - the items before the break count

    with pytest.raises(ConnectionError):
        await read()
    assert seen == [1]
    assert len(await collect(feed, None)) == 3


async def test_memory_sink_records_and_fails_on_demand() -> None:
    """The sink records (key, change) and raises the scripted failures."""
    sink = MemorySink()
    change = a_state_change()
    sink.fail(times=1)
    with pytest.raises(NotSent):
        await sink.publish(change, key=(W, 1, 0))
    await sink.publish(change, key=(W, 1, 0))
    assert sink.keys == [(W, 1, 0)]
    assert sink.changes == [change]
    assert sink.attempts == [(W, 1, 0), (W, 1, 0)]


def a_state_change() -> StateChange:
    """The publish step emits when a liquidatable account enters pre-liquidation."""
    health = Health(
        wallet=W,
        margin_mode=MarginMode.STANDARD,
        equity=Decimal(100),
        mm_required=Decimal(300),
        is_liquidatable=True,
    )
    _, commands = step(None, health, (), 10)
    return next(c.change for c in commands if isinstance(c, PublishStateChange))


def test_healthy_is_default_phase_of_seeded_states() -> None:
    """MemoryStore.put seeds a state as if committed (version 1, no unfinished)."""
    store = MemoryStore()
    entry = store.put(state_at(3))
    assert isinstance(entry.state.phase, Healthy)
    assert (entry.version, entry.unfinished) == (1, ())
    assert store.states == {W: state_at(3)}
