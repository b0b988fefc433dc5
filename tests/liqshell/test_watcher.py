"""liqshell.watcher: the poll, the feed, restarts and shadow mode, end to end on the fakes."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from liqcore import (
    AccountReset,
    AccountState,
    AlertCode,
    AuctionSettled,
    AuctionStarted,
    AuctionStopped,
    CancelOrder,
    Config,
    Event,
    Healthy,
    InLiquidation,
    InvalidInput,
    Liquidated,
    MarginMode,
    OpenOrder,
    Portfolio,
    Position,
    PreLiquidation,
    PublishStateChange,
    Quote,
    Side,
    StartAuction,
    StopAuction,
    SubmitOrder,
    to_decimal,
)
from liqcore.changes import state_change
from liqcore.machine import step
from liqshell import Watcher
from liqshell.adapters.jsonl import JsonlRecorder
from liqshell.adapters.jsonl import read_records as jsonl_records
from liqshell.cli import main as cli_main
from liqshell.ports import (
    AuctionReceipt,
    Cursor,
    MarginReport,
    OutcomeUnknown,
    PollReport,
    Record,
    RecordKind,
    Stored,
    Unfinished,
)
from liqshell.testing import (
    Call,
    FakeExchange,
    FakeFeed,
    Fault,
    MemoryRecorder,
    MemorySink,
    MemoryStore,
    VirtualClock,
)

# inputs.py's generic mapping converter types Portfolio.positions as Mapping[K, T]; build
# portfolios through an untyped alias (as tests/liqcore do) until that is fixed.
PortfolioOf: Callable[..., Portfolio] = Portfolio

W = "W"
V = "V"
SYMBOL = "BTC-20261231-100000-C"
ETH = "ETH-20261231-3000-C"
SEED_CONFIG = Config(
    partial_target_buffer_bps=500,
    partial_reprice_interval_ms=5_000,
    partial_bonus_start_bps=50,
    partial_bonus_max_bps=500,
    partial_bonus_ramp_ms=60_000,
    full_escalation_timeout_ms=60_000,
)
QUOTE = Quote(best_bid=Decimal(149), best_ask=Decimal(150), mid=Decimal("149.5"))
RISK_INCREASING = OpenOrder(
    order_id=7,
    symbol=SYMBOL,
    side=Side.SELL,
    price=Decimal(95),
    original_size=Decimal(1),
    remaining_size=Decimal(1),
    client_id="risk-increasing",
    created_at=1,
)
LIQUIDATABLE = MarginReport(
    margin_mode=MarginMode.STANDARD,
    equity=Decimal(100),
    mm_required=Decimal(300),
    is_liquidatable=True,
)
RECOVERED = MarginReport(
    margin_mode=MarginMode.STANDARD,
    equity=Decimal(420),
    mm_required=Decimal(300),
    is_liquidatable=False,
)


def seed_portfolio(symbol: str = SYMBOL, amount: str = "-4") -> Portfolio:
    position = Position(symbol=symbol, amount=Decimal(amount), entry_price=Decimal(100))
    spot = {"BTC": Decimal(105_000), "ETH": Decimal(3_000)}
    return PortfolioOf(cash=Decimal(500), positions={symbol: position}, spot=spot)


def perp_portfolio() -> Portfolio:
    """No short option: a liquidatable account escalates to a full auction at once."""
    position = Position(symbol="BTC-PERP", amount=Decimal(-1), entry_price=Decimal(100))
    return PortfolioOf(
        cash=Decimal(500), positions={"BTC-PERP": position}, spot={"BTC": Decimal(105_000)}
    )


@attrs.define
class World:
    """The fakes of one test, and a factory of watchers over them."""

    clock: VirtualClock
    exchange: FakeExchange
    store: MemoryStore
    sink: MemorySink
    feed: FakeFeed
    registry: CollectorRegistry = attrs.field(factory=CollectorRegistry)

    def watcher(
        self,
        *,
        config: Config = SEED_CONFIG,
        concurrency: int = 32,
        recorder: object | None = None,
        **ports: object,
    ) -> Watcher:
        kwargs: dict[str, object] = {
            "portfolios": self.exchange,
            "margin": self.exchange,
            "quotes": self.exchange,
            "orders": self.exchange,
            "gateway": self.exchange,
            "auctions": self.exchange,
            "feed": self.feed,
            "store": self.store,
            "sink": self.sink,
            "recorder": self.store if recorder is None else recorder,
            "clock": self.clock,
            "config": config,
            "concurrency": concurrency,
            "metrics": self.registry,
        }
        kwargs.update(ports)
        return Watcher(**kwargs)  # type: ignore[arg-type]

    async def poll(self, watcher: Watcher) -> PollReport:
        return await self.clock.drive(watcher.run_once())

    async def drain(self, watcher: Watcher) -> int:
        return await self.clock.drive(watcher.drain_feed())

    def decisions(self, wallet: str = W) -> list[Record]:
        return [
            r for r in self.store.records if r.kind is RecordKind.DECISION and r.wallet == wallet
        ]

    def state(self, wallet: str = W) -> AccountState:
        stored = self.store.stored(wallet)
        assert stored is not None, f"nothing stored for {wallet}"
        return stored.state

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(f"liqshell_{name}", labels)
        return 0.0 if value is None else value


def seed_world(start: int = 10_000, *, user_order: bool = True) -> World:
    """SPEC §8's harness: wallet W short 4 calls, liquidatable, one risk-increasing order."""
    clock = VirtualClock(start)
    exchange = FakeExchange(clock=clock)
    exchange.set_portfolio(W, seed_portfolio())
    exchange.set_margin(W, LIQUIDATABLE)
    exchange.set_quote(SYMBOL, QUOTE)
    if user_order:
        exchange.add_order(W, RISK_INCREASING)
    return World(
        clock=clock, exchange=exchange, store=MemoryStore(), sink=MemorySink(), feed=FakeFeed()
    )


def pre(state: AccountState) -> PreLiquidation:
    assert isinstance(state.phase, PreLiquidation), state.phase
    return state.phase


def liquidation_orders(world: World, wallet: str = W) -> list[OpenOrder]:
    return [
        o
        for o in world.exchange.open_orders_of(wallet)
        if o.client_id is not None and o.client_id.startswith(f"liq-{wallet}-")
    ]


# --------------------------------------------------------------------------- SPEC §8


async def test_watcher_seed_scenario_enters_cancels_submits_then_recovers() -> None:
    """SPEC §8.1 through the watcher: enter, cancel order 7, submit one capped BUY; after the
    fills and recovery the account is Healthy again."""
    world = seed_world()
    watcher = world.watcher()
    report = await world.poll(watcher)
    assert (report.stepped, report.skipped, report.conflicts) == (1, 0, 0)

    phase = pre(world.state())
    assert phase.mm_shortfall == 200
    assert phase.target_equity == Decimal("315.00")
    (client_id,) = phase.active_order_client_ids
    assert client_id.startswith("liq-")
    assert [c.order_id for c in world.exchange.cancels] == [7]
    (submit,) = world.exchange.submits
    assert (submit.symbol, submit.side, submit.reduce_only) == (SYMBOL, Side.BUY, True)
    assert submit.price == Decimal("120.60")
    assert submit.client_id == client_id
    assert [o.client_id for o in world.exchange.open_orders_of(W)] == [client_id]
    entry = world.sink.changes[0]
    assert (entry.previous_phase, entry.new_phase) == ("healthy", "pre_liquidation")
    assert world.sink.keys[0] == (W, 1, 0)

    world.exchange.clear_orders(W)  # filled
    world.exchange.set_margin(W, RECOVERED)
    world.clock.set_time(20_000)
    await world.poll(watcher)
    assert isinstance(world.state().phase, Healthy)
    assert world.sink.changes[-1].new_phase == "healthy"
    assert world.metric("pre_liquidation_entries_total") == 1
    assert world.metric("pre_liquidation_exits_total") == 1


async def test_watcher_decision_records_replay_exactly_through_step() -> None:
    """Every DECISION record holds what step was given and returns exactly what it gave."""
    world = seed_world()
    watcher = world.watcher()
    await world.poll(watcher)
    world.exchange.set_margin(W, RECOVERED)
    world.clock.set_time(20_000)
    await world.poll(watcher)
    records = world.decisions()
    assert len(records) >= 2
    for record in records:
        assert record.health is not None
        state, commands = step(
            record.previous, record.health, record.orders, record.now, SEED_CONFIG
        )
        assert (state, commands) == (record.state, record.commands)
        assert record.executed


async def test_watcher_seed_scenario_open_order_recovers_after_confirmed_cancel() -> None:
    """SPEC §8.2: the liquidation order still open at recovery is cancelled; its cancel came
    back confirmed, so the wallet is stepped again at once and recovers in the same poll."""
    world = seed_world()
    watcher = world.watcher()
    await world.poll(watcher)
    world.exchange.set_margin(W, RECOVERED)
    world.clock.set_time(20_000)
    await world.poll(watcher)
    assert isinstance(world.state().phase, Healthy)
    assert [r.now for r in world.decisions()] == [10_000, 20_000, 20_001]
    assert liquidation_orders(world) == []


async def test_watcher_seed_scenario_unknown_cancel_recovers_next_poll() -> None:
    """SPEC §8.2 when the cancel's answer is lost: still PreLiquidation with the active id;
    the next poll that finds no order open recovers."""
    world = seed_world()
    watcher = world.watcher()
    await world.poll(watcher)
    world.exchange.set_margin(W, RECOVERED)
    world.exchange.inject("cancel", Fault.outcome_unknown())
    world.clock.set_time(20_000)
    await world.poll(watcher)
    assert len(pre(world.state()).active_order_client_ids) == 1
    assert [r.now for r in world.decisions()] == [10_000, 20_000]
    world.exchange.clear_orders(W)
    world.clock.set_time(25_000)
    await world.poll(watcher)
    assert isinstance(world.state().phase, Healthy)


# --------------------------------------------------------------------------- commit before act


async def test_watcher_failed_decision_commit_executes_nothing() -> None:
    """When the decision cannot be committed, none of its commands is executed."""
    world = seed_world()
    world.store.fail_commit(kind=RecordKind.DECISION)
    watcher = world.watcher()
    report = await world.poll(watcher)
    assert (report.stepped, report.skipped, report.commands) == (0, 1, 0)
    assert world.exchange.submits == []
    assert world.exchange.cancels == []
    assert world.sink.attempts == []
    assert world.store.stored(W) is None
    world.clock.set_time(11_000)
    await world.poll(watcher)
    assert len(world.exchange.submits) == 1


async def test_watcher_decision_committed_but_answer_lost_reconciles_and_never_replays() -> None:
    """A decision commit that took effect but raised executes nothing; the next poll
    reloads the wallet, reports the unexecuted commands, republishes its publish with the
    original key, and decides afresh (its submit is never sent)."""
    world = seed_world()
    world.store.fail_commit(kind=RecordKind.DECISION, applied=True)
    watcher = world.watcher()
    await world.poll(watcher)
    assert world.exchange.calls_of("submit") == []
    first = world.store.stored(W)
    assert first is not None
    lost_submit = next(u.command for u in first.unfinished if isinstance(u.command, SubmitOrder))

    world.clock.set_time(11_000)
    report = await world.poll(watcher)
    assert report.conflicts == 0
    assert lost_submit not in world.exchange.submits
    assert (W, 1, 0) in world.sink.keys  # the lost decision's entry, published once more
    restart = [r for r in world.store.records if r.kind is RecordKind.RESTART]
    assert [r.note for r in restart] == ["reload"]


async def test_watcher_conflict_executes_nothing_and_is_counted() -> None:
    """Another instance committing first makes the commit conflict: nothing is executed,
    the conflict is reported and counted; the next poll continues from the store."""
    world = seed_world()
    watcher = world.watcher()
    await world.drain(watcher)  # start-up: loads an empty store
    world.store.put(
        AccountState(wallet=W, margin_mode=MarginMode.STANDARD, updated_at=9_000), version=5
    )
    report = await world.poll(watcher)
    assert (report.conflicts, report.stepped, report.commands) == (1, 0, 0)
    assert world.exchange.submits == []
    assert world.sink.attempts == []
    assert world.metric("conflicts_total") == 1
    world.clock.set_time(10_500)
    report = await world.poll(watcher)
    assert (report.conflicts, report.stepped) == (0, 1)
    stored = world.store.stored(W)
    assert stored is not None
    assert stored.version > 5
    assert len(world.exchange.submits) == 1


# --------------------------------------------------------------------------- outcomes


@pytest.mark.parametrize(
    ("fault", "tracked", "pending"),
    [
        (Fault.reject("too far"), 0, 0),
        (Fault.not_sent(), 0, 0),
        (Fault.outcome_unknown(), 1, 1),
        (Fault.outcome_unknown(applied=True), 1, 1),
        (Fault.delay(60_000), 1, 1),  # beyond engine_response_timeout_ms: unknown
    ],
)
async def test_watcher_submit_outcomes_fold_into_state(
    fault: Fault, tracked: int, pending: int
) -> None:
    """A rejected or unsent submit is dropped from tracking; an unknown one stays tracked
    and unfinished until a snapshot tells."""
    world = seed_world()
    world.exchange.inject("submit", fault)
    await world.poll(world.watcher())
    assert len(pre(world.state()).active_order_client_ids) == tracked
    stored = world.store.stored(W)
    assert stored is not None
    assert [type(u.command) for u in stored.unfinished] == [SubmitOrder] * pending
    outcomes = world.store.of_kind(RecordKind.OUTCOMES)
    assert len(outcomes) == 1
    assert outcomes[0].pending == stored.unfinished


@pytest.mark.parametrize(
    ("fault", "receipt", "request_kept"),
    [
        (None, True, True),
        (Fault.not_sent(), False, False),
        (Fault.outcome_unknown(), False, True),
    ],
)
async def test_watcher_start_auction_outcomes(
    fault: Fault | None, receipt: bool, request_kept: bool
) -> None:
    """A receipt fills the pending auction; NotSent clears the request (retried next poll);
    an unknown outcome keeps the request until it goes stale."""
    world = seed_world()
    world.exchange.set_portfolio(W, perp_portfolio())
    if fault is not None:
        world.exchange.inject("start", fault)
    await world.poll(world.watcher())
    phase = pre(world.state())
    assert (phase.pending_full_auction_id is not None) is receipt
    assert (phase.pending_full_request_id is not None) is request_kept
    assert len(world.exchange.starts) == 1


@pytest.mark.parametrize(
    ("fault", "kept"), [(None, True), (Fault.not_sent(), False), (Fault.outcome_unknown(), True)]
)
async def test_watcher_stop_auction_outcomes(fault: Fault | None, kept: bool) -> None:
    """A stop that was not sent clears the stop request; unknown or confirmed keep it."""
    world = seed_world()
    world.exchange.set_margin(W, RECOVERED)
    world.exchange.clear_orders(W)
    running = InLiquidation(auction_id="a1", entered_at=5_000, chain_start_time=5_000)
    world.store.put(
        AccountState(wallet=W, margin_mode=MarginMode.STANDARD, phase=running, updated_at=5_000)
    )
    if fault is not None:
        world.exchange.inject("stop", fault)
    await world.poll(world.watcher())
    phase = world.state().phase
    assert isinstance(phase, InLiquidation)
    assert (phase.stop_request_id is not None) is kept
    assert len(world.exchange.stops) == 1


async def test_watcher_lost_stop_of_an_account_liquidatable_again_is_dropped_not_stuck() -> None:
    """A stop whose outcome is unknown, for an account that then falls back below
    maintenance, is neither sent again nor left outstanding: once stale it is dropped, the
    auction goes on, and no STUCK is raised; a later recovery sends a new stop at once."""
    world = seed_world()
    world.exchange.set_margin(W, RECOVERED)
    world.exchange.clear_orders(W)
    running = InLiquidation(auction_id="a1", entered_at=5_000, chain_start_time=5_000)
    world.store.put(
        AccountState(wallet=W, margin_mode=MarginMode.STANDARD, phase=running, updated_at=5_000)
    )
    world.exchange.inject("stop", Fault.outcome_unknown())
    watcher = world.watcher()
    await world.poll(watcher)
    assert world.state().phase.stop_request_id is not None  # type: ignore[union-attr]
    world.exchange.set_margin(W, LIQUIDATABLE)
    world.clock.advance(SEED_CONFIG.full_escalation_timeout_ms + 1)
    await world.poll(watcher)
    assert world.state().phase == running
    assert len(world.exchange.stops) == 1
    assert world.metric("alerts_total", code="stuck") == 0
    assert world.metric("stuck_wallets") == 0
    world.exchange.set_margin(W, RECOVERED)
    world.clock.advance(5_000)
    await world.poll(watcher)
    assert len(world.exchange.stops) == 2
    assert world.metric("alerts_total", code="stuck") == 0


async def test_watcher_benign_cancel_rejection_counts_as_confirmed() -> None:
    """A cancel rejected because the order already filled is done: the wallet is stepped
    again at once, as for a confirmed cancel."""
    world = seed_world()
    watcher = world.watcher()
    await world.poll(watcher)
    world.exchange.set_margin(W, RECOVERED)
    world.exchange.inject("cancel", Fault.reject("order already filled"))
    world.clock.set_time(20_000)
    await world.poll(watcher)
    assert [r.now for r in world.decisions()] == [10_000, 20_000, 20_001]
    assert world.metric("cancels_total", outcome="benign") == 1


# --------------------------------------------------------------------------- isolation


def two_wallet_world() -> World:
    world = seed_world(user_order=False)
    world.exchange.set_portfolio(V, seed_portfolio(ETH))
    world.exchange.set_margin(V, LIQUIDATABLE)
    world.exchange.set_quote(ETH, Quote(best_ask=Decimal(110), theo=Decimal(100)))
    return world


async def test_watcher_margin_failure_skips_only_that_wallet() -> None:
    """A margin source raising for one wallet skips it (logged with the wallet, counted);
    the other wallet is stepped."""
    world = two_wallet_world()
    world.exchange.inject("margin", Fault.raising(ConnectionError("engine down")), wallet=V)
    report = await world.poll(world.watcher())
    assert (report.stepped, report.skipped) == (1, 1)
    assert world.store.stored(V) is None
    assert isinstance(world.state(W).phase, PreLiquidation)
    assert world.metric("wallets_skipped_total", reason="observation") == 1


class RawQuotes:
    """A quote adapter building quotes from raw feed values (NaN raises InvalidInput)."""

    def __init__(self, raw: Mapping[str, str]) -> None:
        self.raw = raw

    async def quotes(self, symbols: Sequence[str]) -> Mapping[str, Quote]:
        return {
            s: Quote(best_ask=to_decimal(self.raw[s], "Quote.best_ask"))
            for s in symbols
            if s in self.raw
        }


async def test_watcher_malformed_quote_skips_only_that_wallet_and_keeps_its_state() -> None:
    """A NaN quote is an observation error: its wallet is skipped with its stored state
    intact, the other wallet is stepped."""
    world = two_wallet_world()
    watcher = world.watcher(quotes=RawQuotes({SYMBOL: "150", ETH: "150"}))
    await world.poll(watcher)
    before = world.store.stored(V)
    assert before is not None
    bad = world.watcher(quotes=RawQuotes({SYMBOL: "150", ETH: "NaN"}))
    world.clock.set_time(16_000)
    report = await world.poll(bad)
    assert (report.stepped, report.skipped) == (1, 1)
    assert world.store.stored(V) == before
    assert world.state(W).updated_at >= 16_000


async def test_watcher_portfolio_listing_failure_skips_the_poll() -> None:
    """If listing portfolios fails the poll is skipped and counted; the next one works."""
    world = seed_world()
    world.exchange.inject("portfolios", Fault.raising(ConnectionError("down")))
    watcher = world.watcher()
    assert await world.poll(watcher) == PollReport()
    assert world.metric("polls_skipped_total") == 1
    assert (await world.poll(watcher)).stepped == 1


async def test_watcher_invalid_margin_report_is_an_observation_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A margin report with a negative requirement fails validation where the adapter builds
    it: the wallet is skipped with a warning carrying the wallet field."""
    world = seed_world()
    with pytest.raises(InvalidInput, match=r"MarginReport\.mm_required must be ≥ 0") as bad:
        attrs.evolve(LIQUIDATABLE, mm_required=Decimal(-1))
    world.exchange.inject("margin", Fault.raising(bad.value), wallet=W)
    with caplog.at_level(logging.WARNING, logger="liqshell.watcher"):
        report = await world.poll(world.watcher())
    assert report.skipped == 1
    skipped = [r for r in caplog.records if "observation failed" in r.getMessage()]
    assert [getattr(r, "wallet", None) for r in skipped] == [W]


# --------------------------------------------------------------------------- re-step


def repricing_world() -> tuple[World, Watcher]:
    """W in PreLiquidation with one live liquidation order, the reprice due."""
    world = seed_world(user_order=False)
    return world, world.watcher()


async def test_watcher_restep_after_confirmed_reprice_cancels_submits_at_once() -> None:
    """When a reprice cancels the live set and every cancel is confirmed, the wallet is
    stepped again at once and the new set is submitted in the same poll."""
    world, watcher = repricing_world()
    await world.poll(watcher)
    first = pre(world.state()).active_order_client_ids
    world.clock.set_time(15_000)
    await world.poll(watcher)
    assert [r.now for r in world.decisions()] == [10_000, 15_000, 15_001]
    second = pre(world.state()).active_order_client_ids
    assert len(second) == 1
    assert second != first
    assert [o.client_id for o in liquidation_orders(world)] == list(second)
    assert [c.client_id for c in world.exchange.cancels] == list(first)


async def test_watcher_no_restep_when_a_reprice_cancel_is_unknown() -> None:
    """A reprice cancel without a confirmed answer: no re-step, no new set; the orphan is
    cancelled again by the next poll."""
    world, watcher = repricing_world()
    await world.poll(watcher)
    world.exchange.inject("cancel", Fault.outcome_unknown())
    world.clock.set_time(15_000)
    await world.poll(watcher)
    assert [r.now for r in world.decisions()] == [10_000, 15_000]
    assert len(world.exchange.submits) == 1
    assert len(liquidation_orders(world)) == 1


# --------------------------------------------------------------------------- feed


async def auctioned_world() -> tuple[World, Watcher, str]:
    """W escalated at once (no short option): its auction was requested with a receipt."""
    world = seed_world()
    world.exchange.set_portfolio(W, perp_portfolio())
    watcher = world.watcher()
    await world.poll(watcher)
    auction = pre(world.state()).pending_full_auction_id
    assert auction is not None
    return world, watcher, auction


async def test_watcher_counts_a_wallet_stuck_while_its_auction_never_starts() -> None:
    """A requested auction that the chain never starts (the feed is silent) makes step
    raise STUCK once the request is stale: the alert is counted and the wallet shows in
    the stuck_wallets gauge until a decision no longer finds it overstaying."""
    world, watcher, auction = await auctioned_world()
    assert world.metric("stuck_wallets") == 0
    world.clock.advance(SEED_CONFIG.full_escalation_timeout_ms + 1)
    await world.poll(watcher)
    assert world.metric("alerts_total", code="stuck") == 1
    assert world.metric("stuck_wallets") == 1
    world.feed.push(W, AuctionStarted(auction_id=auction, chain_start_time=10_500))
    await world.drain(watcher)
    await world.poll(watcher)
    assert world.metric("stuck_wallets") == 0


async def test_watcher_feed_applies_chain_events_with_cursor() -> None:
    """Chain events are applied and committed with the cursor; events change phases."""
    world, watcher, auction = await auctioned_world()
    world.feed.push(W, AuctionStarted(auction_id=auction, chain_start_time=10_500))
    assert await world.drain(watcher) == 1
    assert isinstance(world.state().phase, InLiquidation)
    assert world.store.current_cursor == 1
    world.feed.push(W, AuctionSettled(auction_id=auction))
    world.feed.push(W, AccountReset())
    assert await world.drain(watcher) == 2
    assert isinstance(world.state().phase, Healthy)
    assert world.store.applied_ids == {"event-1", "event-2", "event-3"}
    assert world.metric("auction_events_total", kind="settled") == 1


async def test_watcher_feed_duplicate_ids_skipped_and_cursor_moves() -> None:
    """A redelivered event id is skipped (not applied twice) and still moves the cursor."""
    world, watcher, auction = await auctioned_world()
    world.feed.push(W, AuctionStarted(auction_id=auction, chain_start_time=1))
    await world.drain(watcher)
    version = world.store.stored(W)
    world.feed.redeliver("event-1")
    assert await world.drain(watcher) == 0
    assert world.store.stored(W) == version
    assert world.store.current_cursor == 2
    feed_records = [r for r in world.store.records if r.kind is RecordKind.FEED]
    assert [r.note for r in feed_records] == ["applied", "duplicate"]


async def test_watcher_feed_unknown_wallet_moves_cursor_only() -> None:
    """An event for a wallet with no stored state is recorded, counted and passed."""
    world, watcher, _ = await auctioned_world()
    world.feed.push("ghost", AuctionStarted(auction_id="zzz"))
    assert await world.drain(watcher) == 0
    assert world.store.stored("ghost") is None
    assert world.store.current_cursor == 1
    assert world.metric("feed_items_total", result="unknown_wallet") == 1


async def test_watcher_feed_restart_resumes_from_committed_cursor() -> None:
    """A restarted watcher reads the feed after the committed cursor and applies nothing
    twice."""
    world, watcher, auction = await auctioned_world()
    world.feed.push(W, AuctionStarted(auction_id=auction, chain_start_time=1))
    world.feed.push(W, AuctionSettled(auction_id=auction))
    await world.drain(watcher)
    state = world.state()
    restarted = world.watcher()
    assert await world.drain(restarted) == 0
    assert world.feed.reads[-1] == 2
    assert world.state() == state


async def test_watcher_feed_commit_failure_keeps_cursor_and_retries() -> None:
    """A feed item whose commit fails stops the drain before it; the next drain applies it."""
    world, watcher, auction = await auctioned_world()
    world.feed.push(W, AuctionStarted(auction_id=auction, chain_start_time=1))
    world.store.fail_commit(kind=RecordKind.FEED)
    assert await world.drain(watcher) == 0
    assert world.store.current_cursor is None
    assert await world.drain(watcher) == 1
    assert world.store.current_cursor == 1


async def test_watcher_feed_unchanged_event_is_counted() -> None:
    """An event that changes nothing (another auction) is recorded, counted, passed."""
    world, watcher, _ = await auctioned_world()
    world.feed.push(W, AuctionStopped(auction_id="not-ours"))
    assert await world.drain(watcher) == 0
    assert world.metric("feed_items_total", result="unchanged") == 1
    assert world.store.current_cursor == 1


async def test_watcher_feed_reloads_a_quarantined_wallet_at_once() -> None:
    """An event for a quarantined wallet reloads it from the store at once (before its
    backoff: the feed is in order, so it holds up every other wallet's events) and is
    applied. Found by DST seed 119: a lost commit answer quarantined one wallet, and the
    other wallets' auction starts waited 30 s until their requests went stale (STUCK)."""
    world = seed_world()
    world.store.fail_commit(kind=RecordKind.OUTCOMES, times=3)
    watcher = world.watcher()
    await world.poll(watcher)
    assert watcher.quarantined == {W}
    world.feed.push(W, AuctionStarted(auction_id="a1", chain_start_time=1))
    assert await world.drain(watcher) == 1
    assert watcher.quarantined == frozenset()
    assert await world.store.cursor() == 1
    assert isinstance(world.state().phase, InLiquidation)


class _UnreadableStore(MemoryStore):
    """A store whose single-wallet reads fail (it cannot tell the wallet's state)."""

    async def load_one(self, wallet: str) -> Stored | None:
        raise OSError("store unavailable (injected)")


async def test_watcher_feed_waits_for_a_quarantined_wallet_the_store_cannot_reload() -> None:
    """When the reload fails the item is not applied and the cursor stays before it until
    a restart, which then applies it."""
    world = seed_world()
    world.store = _UnreadableStore()
    world.store.fail_commit(kind=RecordKind.OUTCOMES, times=3)
    watcher = world.watcher()
    await world.poll(watcher)
    assert watcher.quarantined == {W}
    world.feed.push(W, AuctionStarted(auction_id="a1", chain_start_time=1))
    assert await world.drain(watcher) == 0
    assert await world.store.cursor() is None
    assert world.metric("feed_items_total", result="blocked") == 1
    assert await world.drain(world.watcher()) == 1
    assert await world.store.cursor() == 1
    assert isinstance(world.state().phase, InLiquidation)


async def test_watcher_outcome_commit_whose_answer_was_lost_is_not_a_conflict() -> None:
    """An outcomes commit that landed but whose answer was lost is retried, meets the
    version it created itself, and is taken as committed: no quarantine (DST seed 119)."""
    world = seed_world()
    world.store.fail_commit(kind=RecordKind.OUTCOMES, times=1, applied=True)
    watcher = world.watcher()
    await world.poll(watcher)
    assert watcher.quarantined == frozenset()
    assert world.metric("conflicts_total") == 0
    assert pre(world.state()).active_order_client_ids


async def test_watcher_feed_invalid_item_is_recorded_and_passed() -> None:
    """A feed item whose event is not an Event is recorded, counted, and the cursor moves."""
    world, watcher, _ = await auctioned_world()
    world.feed.push(W, "not an event")  # type: ignore[arg-type]
    assert await world.drain(watcher) == 0
    assert world.store.current_cursor == 1
    assert world.metric("feed_items_total", result="invalid") == 1


def feed_records(world: World) -> list[Record]:
    return [r for r in world.store.records if r.kind is RecordKind.FEED and r.note == "applied"]


async def test_watcher_feed_transition_is_published_once_after_its_commit() -> None:
    """Issue 9, bug 6: a transition applied from the feed produces exactly one publish,
    keyed (wallet, version of the feed commit, 0), that the consumer sees; it is what
    liqcore.state_change says, and once confirmed it is no longer unfinished."""
    world, watcher, auction = await auctioned_world()
    before = list(world.sink.published)
    previous = world.state()
    world.feed.push(W, AuctionStarted(auction_id=auction, chain_start_time=10_500))
    assert await world.drain(watcher) == 1

    (record,) = feed_records(world)
    new = world.state()
    assert isinstance(new.phase, InLiquidation)
    expected = state_change(previous, new, record.now)
    assert expected is not None
    assert record.commands == (expected,)
    assert world.sink.published == [*before, ((W, record.version, 0), expected.change)]
    change = world.sink.changes[-1]
    assert (change.previous_phase, change.new_phase) == ("pre_liquidation", "in_liquidation")
    assert change.auction_id == auction
    stored = world.store.stored(W)
    assert stored is not None
    assert stored.unfinished == ()
    assert stored.version == record.version + 1  # the confirmed publish was committed
    (outcomes,) = [r for r in world.store.records if r.version == record.version + 1]
    assert (outcomes.kind, outcomes.note, outcomes.pending) == (
        RecordKind.OUTCOMES,
        "confirmed",
        (),
    )


async def test_watcher_feed_item_that_failed_to_commit_publishes_nothing() -> None:
    """Commit before act: the publish of an item whose commit failed is not sent; the
    retry that commits it publishes it once."""
    world, watcher, auction = await auctioned_world()
    before = len(world.sink.published)
    world.feed.push(W, AuctionStarted(auction_id=auction, chain_start_time=1))
    world.store.fail_commit(kind=RecordKind.FEED)
    assert await world.drain(watcher) == 0
    assert len(world.sink.published) == before
    assert await world.drain(watcher) == 1
    assert len(world.sink.published) == before + 1


async def test_watcher_feed_publishes_every_chain_transition_in_order() -> None:
    """Started, settled, reset: one publish each, keys in commit order."""
    world, watcher, auction = await auctioned_world()
    before = len(world.sink.published)
    world.feed.push(W, AuctionStarted(auction_id=auction, chain_start_time=1))
    world.feed.push(W, AuctionSettled(auction_id=auction))
    world.feed.push(W, AccountReset())
    assert await world.drain(watcher) == 3
    changes = world.sink.changes[before:]
    assert [(c.previous_phase, c.new_phase) for c in changes] == [
        ("pre_liquidation", "in_liquidation"),
        ("in_liquidation", "liquidated"),
        ("liquidated", "healthy"),
    ]
    assert world.sink.keys[before:] == [(W, r.version, 0) for r in feed_records(world)]


async def test_watcher_feed_stopped_auction_is_published() -> None:
    world, watcher, auction = await auctioned_world()
    world.feed.push(W, AuctionStarted(auction_id=auction, chain_start_time=1))
    world.feed.push(W, AuctionStopped(auction_id=auction))
    assert await world.drain(watcher) == 2
    last = world.sink.changes[-1]
    assert (last.previous_phase, last.new_phase, last.auction_id) == (
        "in_liquidation",
        "healthy",
        auction,
    )


async def test_watcher_feed_unchanged_item_publishes_nothing() -> None:
    world, watcher, _ = await auctioned_world()
    before = len(world.sink.published)
    world.feed.push(W, AuctionStopped(auction_id="not-ours"))
    await world.drain(watcher)
    assert len(world.sink.published) == before


async def test_watcher_feed_publish_that_fails_is_published_again_after_a_restart() -> None:
    """A feed publish the sink refused stays unfinished (carried by later decisions) and a
    restarted watcher publishes it with its original key."""
    world, watcher, auction = await auctioned_world()
    world.sink.fail(times=1)
    world.feed.push(W, AuctionStarted(auction_id=auction, chain_start_time=1))
    assert await world.drain(watcher) == 1
    (record,) = feed_records(world)
    key = (W, record.version, 0)
    assert key not in world.sink.keys
    stored = world.store.stored(W)
    assert stored is not None
    assert [(u.version, u.index) for u in stored.unfinished] == [(record.version, 0)]
    await world.poll(watcher)  # a later decision carries it
    stored = world.store.stored(W)
    assert stored is not None
    assert (record.version, 0) in [(u.version, u.index) for u in stored.unfinished]
    restarted = world.watcher()
    await world.drain(restarted)
    assert world.sink.keys.count(key) == 1
    assert world.sink.changes[world.sink.keys.index(key)] == record.commands[0].change  # type: ignore[union-attr]


async def test_watcher_feed_shadow_mode_records_the_publish_but_sends_nothing() -> None:
    world = seed_world()
    world.exchange.set_portfolio(W, perp_portfolio())
    recorder = MemoryRecorder()
    shadow = world.watcher(config=attrs.evolve(SEED_CONFIG, enabled=False), recorder=recorder)
    await world.poll(shadow)
    phase = shadow.states[W].phase
    assert isinstance(phase, PreLiquidation)
    world.feed.push(W, AuctionStarted(auction_id="a1", chain_start_time=1))
    await world.drain(shadow)
    assert world.sink.published == []
    (applied,) = [r for r in recorder.records if r.kind is RecordKind.FEED]
    assert [type(c) for c in applied.commands] == [PublishStateChange]
    assert applied.executed is False


async def test_watcher_feed_read_failure_keeps_what_was_applied() -> None:
    """A feed that breaks mid-read keeps the items handled before the break; the next
    drain resumes after them."""
    world, watcher, auction = await auctioned_world()
    world.feed.push(W, AuctionStarted(auction_id=auction, chain_start_time=1))
    world.feed.push(W, AuctionSettled(auction_id=auction))
    world.feed.fail_next(after=1)
    assert await world.drain(watcher) == 1
    assert world.store.current_cursor == 1
    assert world.metric("feed_items_total", result="failed") == 1
    assert await world.drain(watcher) == 1
    assert isinstance(world.state().phase, Liquidated)


def closed_rank(state: AccountState, auction: str) -> int:
    """0 auction requested, 1 running, 2 closed (settled, or stopped: Healthy after it)."""
    match state.phase:
        case PreLiquidation():
            return 0
        case InLiquidation():
            return 1
        case Liquidated() | Healthy():
            assert state.last_closed_auction_id == auction
            return 2
        case _:
            raise AssertionError(state.phase)


CHAIN = st.lists(
    st.sampled_from(["started", "stopped", "settled", "redeliver"]), min_size=1, max_size=8
)


@settings(max_examples=40)
@given(CHAIN)
def test_watcher_feed_redelivered_and_reordered_events_never_rewind(kinds: list[str]) -> None:
    """Whatever order chain events arrive in, and however often they are redelivered
    (same or new ids), the account's auction never goes back to an earlier stage."""

    async def scenario() -> None:
        world, watcher, auction = await auctioned_world()
        events: dict[str, Event] = {
            "started": AuctionStarted(auction_id=auction, chain_start_time=10_100),
            "stopped": AuctionStopped(auction_id=auction),
            "settled": AuctionSettled(auction_id=auction),
        }
        rank = closed_rank(world.state(), auction)
        closed: AccountState | None = None
        for kind in kinds:
            if kind == "redeliver":
                if world.feed.items:
                    world.feed.redeliver(world.feed.items[0].event_id)
            else:
                world.feed.push(W, events[kind])
            await world.drain(watcher)
            state = world.state()
            new_rank = closed_rank(state, auction)
            assert new_rank >= rank
            if closed is not None:
                assert state == closed
            if new_rank == 2:
                closed = state
            rank = new_rank
        versions = [r.version for r in world.store.committed if r.wallet == W and r.version]
        assert versions == sorted(set(versions))

    asyncio.run(scenario())


# --------------------------------------------------------------------------- restart


async def test_watcher_restart_reports_unfinished_and_republishes_with_same_key() -> None:
    """After a restart the unfinished commands are reported (never replayed) and the
    unconfirmed publish is published again with its original key."""
    world = seed_world()
    world.sink.fail(times=1)
    world.exchange.inject("submit", Fault.outcome_unknown(applied=True))
    first = world.watcher()
    await world.poll(first)
    stored = world.store.stored(W)
    assert stored is not None
    kinds = sorted(type(u.command).__name__ for u in stored.unfinished)
    assert kinds == ["PublishStateChange", "SubmitOrder"]
    publish = next(u for u in stored.unfinished if isinstance(u.command, PublishStateChange))
    submits_before = len(world.exchange.submits)

    published = list(world.sink.keys)
    assert (W, publish.version, publish.index) not in published

    restarted = world.watcher()
    await world.drain(restarted)  # start-up only: no poll
    assert world.sink.keys == [*published, (W, publish.version, publish.index)]
    assert len(world.exchange.submits) == submits_before
    (restart,) = [r for r in world.store.records if r.kind is RecordKind.RESTART]
    assert restart.note == "restart"
    assert {type(c).__name__ for c in restart.commands} == {"PublishStateChange", "SubmitOrder"}
    assert restart.pending == ()
    after = world.store.stored(W)
    assert after is not None
    assert after.unfinished == ()
    assert world.metric("unfinished_commands_total") == 2


async def test_watcher_restart_keeps_a_publish_that_fails_again() -> None:
    """A republish that fails again stays unfinished for the next restart."""
    world = seed_world()
    world.sink.fail(times=None)
    await world.poll(world.watcher())
    stored = world.store.stored(W)
    assert stored is not None
    keys = [(W, u.version, u.index) for u in stored.unfinished]
    assert len(keys) == 2  # the entry and the final publish
    world.sink.clear_faults()
    world.sink.fail(times=1)  # the first republish fails again
    await world.drain(world.watcher())
    stored = world.store.stored(W)
    assert stored is not None
    assert [(W, u.version, u.index) for u in stored.unfinished] == keys[:1]
    await world.drain(world.watcher())
    stored = world.store.stored(W)
    assert stored is not None
    assert stored.unfinished == ()
    assert world.sink.keys == [keys[1], keys[0]]


async def test_watcher_later_decisions_keep_unconfirmed_publishes_for_the_restart() -> None:
    """A publish that failed stays unfinished (same key) through later decisions, and a
    restart publishes it."""
    world = seed_world()
    world.sink.fail(times=2)  # both publishes of the entry decision fail
    watcher = world.watcher()
    await world.poll(watcher)
    stored = world.store.stored(W)
    assert stored is not None
    lost = [(W, u.version, u.index) for u in stored.unfinished]
    assert len(lost) == 2
    world.exchange.clear_orders(W)
    world.clock.set_time(10_500)
    await world.poll(watcher)  # a later decision, committed with its own commands
    stored = world.store.stored(W)
    assert stored is not None
    assert stored.version > lost[0][1]
    assert [(W, u.version, u.index) for u in stored.unfinished][:2] == lost
    await world.drain(world.watcher())  # restart
    assert set(lost) <= set(world.sink.keys)


async def test_watcher_quarantines_wallet_whose_outcomes_cannot_be_committed() -> None:
    """If the outcomes commit keeps failing the wallet is not stepped again until a restart,
    which reconciles it from the store."""
    world = seed_world()
    world.store.fail_commit(kind=RecordKind.OUTCOMES, times=3)
    watcher = world.watcher()
    await world.poll(watcher)
    assert watcher.quarantined == {W}
    submits = len(world.exchange.submits)
    world.clock.set_time(30_000)
    report = await world.poll(watcher)
    assert (report.stepped, report.skipped) == (0, 1)
    assert len(world.exchange.submits) == submits
    assert world.metric("quarantined_wallets") == 1
    restarted = world.watcher()
    report = await world.poll(restarted)
    assert report.stepped >= 1
    assert restarted.quarantined == frozenset()


@attrs.define
class Killed:
    """An auction executor in a process killed right after the commit: nothing leaves."""

    async def start(self, command: StartAuction) -> AuctionReceipt:
        raise OutcomeUnknown("killed before sending")

    async def stop(self, command: StopAuction) -> None:
        raise OutcomeUnknown("killed before sending")


async def test_watcher_restart_sends_again_a_start_auction_lost_to_a_crash() -> None:
    """A StartAuction committed but never sent (the process died) is sent again at the
    restart, before the first poll, with its original request id; its receipt is folded in
    and committed, and nothing is left unfinished."""
    world = seed_world()
    world.exchange.set_portfolio(W, perp_portfolio())
    await world.poll(world.watcher(auctions=Killed()))
    decided = pre(world.state())
    assert decided.pending_full_request_id is not None
    assert decided.pending_full_auction_id is None
    assert world.exchange.starts == []

    restarted = world.watcher()
    await world.drain(restarted)  # start-up only: no poll
    (start,) = world.exchange.starts
    assert start.request_id == decided.pending_full_request_id
    phase = pre(world.state())
    assert phase.pending_full_request_id == start.request_id
    assert phase.pending_full_auction_id == world.exchange.auctions_created[0][1].auction_id
    stored = world.store.stored(W)
    assert stored is not None
    assert stored.unfinished == ()
    (restart,) = [r for r in world.store.records if r.kind is RecordKind.RESTART]
    assert [type(e).__name__ for e in restart.events] == ["AuctionRequested"]
    assert restart.state == stored.state
    assert world.metric("resent_requests_total", command="StartAuction") == 1
    report = await world.poll(restarted)
    assert report.stepped == 1
    assert len(world.exchange.auctions_created) == 1  # never a second auction


async def test_watcher_restart_sends_again_a_stop_auction_lost_to_a_crash() -> None:
    """A StopAuction committed but never sent is sent again at the restart with its
    original request id, and the auction is stopped."""
    world = seed_world()
    world.exchange.set_margin(W, RECOVERED)
    world.exchange.clear_orders(W)
    receipt = await world.exchange.start(StartAuction(wallet=W, request_id="r0"))
    running = InLiquidation(auction_id=receipt.auction_id, entered_at=5_000, chain_start_time=5_000)
    world.store.put(
        AccountState(wallet=W, margin_mode=MarginMode.STANDARD, phase=running, updated_at=5_000)
    )
    await world.poll(world.watcher(auctions=Killed()))
    phase = world.state().phase
    assert isinstance(phase, InLiquidation)
    assert phase.stop_request_id is not None
    assert world.exchange.stops == []

    await world.drain(world.watcher())
    (stop,) = world.exchange.stops
    assert stop.request_id == phase.stop_request_id
    assert world.exchange.auctions_stopped == [(W, receipt.auction_id)]
    stored = world.store.stored(W)
    assert stored is not None
    assert stored.unfinished == ()


async def test_watcher_restart_leaves_an_auction_request_gone_stale_to_the_next_step() -> None:
    """A StartAuction lost to a crash is not sent again by a restart (or a release from
    quarantine) that comes after the request went stale: its receipt would confirm a
    request already past its limit, and step would raise STUCK at once (DST seed 6935).
    The first poll clears it and requests again, with a new id and a fresh request time;
    no second auction, no STUCK. A stop gone stale is not sent again either."""
    world = seed_world()
    world.exchange.set_portfolio(W, perp_portfolio())
    await world.poll(world.watcher(auctions=Killed()))
    decided = pre(world.state())
    assert decided.pending_full_request_id is not None
    assert decided.pending_full_requested_at is not None
    world.clock.set_time(
        decided.pending_full_requested_at + SEED_CONFIG.full_escalation_timeout_ms + 1
    )

    restarted = world.watcher()
    await world.drain(restarted)  # start-up only: no poll
    assert world.exchange.starts == []
    assert world.metric("resent_requests_total", command="StartAuction") == 0
    await world.poll(restarted)
    (start,) = world.exchange.starts
    assert start.request_id != decided.pending_full_request_id
    phase = pre(world.state())
    assert phase.pending_full_request_id == start.request_id
    assert phase.pending_full_auction_id == world.exchange.auctions_created[0][1].auction_id
    assert world.metric("alerts_total", code="stuck") == 0

    stopping = InLiquidation(
        auction_id="a1",
        entered_at=5_000,
        chain_start_time=5_000,
        stop_request_id="stop-1",
        stop_requested_at=6_000,
    )
    world.store.put(
        AccountState(wallet=V, margin_mode=MarginMode.STANDARD, phase=stopping, updated_at=6_000),
        unfinished=[
            Unfinished(
                version=1,
                index=0,
                command=StopAuction(
                    wallet=V, auction_id="a1", chain_start_time=5_000, request_id="stop-1"
                ),
            )
        ],
    )
    await world.drain(world.watcher())
    assert world.exchange.stops == []


@pytest.mark.parametrize(
    ("left_ms", "resent"),
    [(SEED_CONFIG.poll_interval_ms, True), (SEED_CONFIG.poll_interval_ms - 1, False), (0, False)],
)
async def test_watcher_restart_resends_a_start_only_with_a_poll_interval_of_its_window_left(
    left_ms: int, resent: bool
) -> None:
    """A StartAuction lost to a crash is sent again at a restart only while at least one
    poll interval of its staleness window is left: sent in the window's last poll interval
    (down to its very last millisecond, DST seed 5165) it goes stale before the chain can
    answer, and the next step, even 1 ms later, reports the account STUCK. Not sent, the
    first step past the limit requests anew with a whole window: one StartAuction either
    way, no STUCK."""
    world = seed_world()
    world.exchange.set_portfolio(W, perp_portfolio())
    await world.poll(world.watcher(auctions=Killed()))
    decided = pre(world.state())
    assert decided.pending_full_requested_at is not None
    limit = decided.pending_full_requested_at + SEED_CONFIG.full_escalation_timeout_ms
    world.clock.set_time(limit - left_ms)

    restarted = world.watcher()
    await world.drain(restarted)  # start-up only: no poll
    expected = [decided.pending_full_request_id] if resent else []
    assert [s.request_id for s in world.exchange.starts] == expected
    # Sent: the next poll finds it confirmed. Not sent: it waits out its window (at most a
    # poll interval) and the first step past the limit requests anew.
    world.clock.set_time(limit - left_ms + 1 if resent else limit + 1)
    await world.poll(restarted)
    (start,) = world.exchange.starts
    assert (start.request_id == decided.pending_full_request_id) is resent
    assert pre(world.state()).pending_full_auction_id is not None
    assert world.metric("alerts_total", code="stuck") == 0


async def test_watcher_restart_never_sends_a_stale_auction_request_or_an_order() -> None:
    """Unfinished auction requests that are no longer the wallet's latest (the state waits on
    another request id, or has its receipt) and unfinished submits are reported at the
    restart and never sent."""
    world = seed_world()
    old_start = StartAuction(wallet=W, request_id="old")
    submit = SubmitOrder(
        wallet=W,
        request_id="submit-1",
        client_id="liq-W-1-0",
        symbol=SYMBOL,
        side=Side.BUY,
        size=Decimal(1),
        price=Decimal(150),
    )
    waiting = PreLiquidation(
        entered_at=5_000,
        mm_shortfall=Decimal(200),
        target_equity=Decimal(330),
        escalation_deadline=65_000,
        bonus_bps=50,
        pending_full_request_id="newer",
        pending_full_requested_at=6_000,
    )
    world.store.put(
        AccountState(wallet=W, margin_mode=MarginMode.STANDARD, phase=waiting, updated_at=6_000),
        unfinished=[
            Unfinished(version=1, index=0, command=old_start),
            Unfinished(version=1, index=1, command=submit),
        ],
    )
    await world.drain(world.watcher())
    assert world.exchange.starts == []
    assert world.exchange.submits == []
    stored = world.store.stored(W)
    assert stored is not None
    assert stored.unfinished == ()
    assert stored.state.phase == waiting


# --------------------------------------------------------------------------- reloads


async def test_watcher_reloads_only_the_wallets_in_doubt() -> None:
    """After failed decision commits (a store blip) each wallet in doubt is reloaded alone:
    no full load of the store after the start-up one."""
    world = seed_world()
    world.exchange.set_portfolio(V, seed_portfolio(ETH))
    world.exchange.set_margin(V, LIQUIDATABLE)
    world.exchange.set_quote(ETH, QUOTE)
    watcher = world.watcher()
    world.store.fail_commit(OSError("store blip"), kind=RecordKind.DECISION, times=2)
    report = await world.poll(watcher)
    assert (report.stepped, report.skipped) == (0, 2)
    world.clock.set_time(11_000)
    report = await world.poll(watcher)
    assert report.stepped == 2
    assert world.store.load_calls == 1  # the start-up
    assert world.store.load_one_calls == 2  # one per wallet in doubt


@attrs.define
class PlainStore:
    """A third-party store with only the original StateStore methods (no load_one,
    no history)."""

    inner: MemoryStore

    async def load(self) -> Mapping[str, Stored]:
        return await self.inner.load()

    async def cursor(self) -> object:
        return await self.inner.cursor()

    async def applied(self, event_id: str) -> bool:
        return await self.inner.applied(event_id)

    async def commit(self, *args: object, **kwargs: object) -> int:
        return await self.inner.commit(*args, **kwargs)  # type: ignore[arg-type]

    async def commit_cursor(self, *args: object) -> None:
        await self.inner.commit_cursor(*args)  # type: ignore[arg-type]

    async def close(self) -> None:
        await self.inner.close()

    async def append(self, record: Record) -> None:
        await self.inner.append(record)


async def test_watcher_reloads_a_wallet_from_a_store_without_load_one() -> None:
    """A store without load_one still has its wallets in doubt reloaded (whole)."""
    world = seed_world()
    store = PlainStore(world.store)
    watcher = world.watcher(store=store, recorder=store)
    world.store.fail_commit(OSError("store blip"), kind=RecordKind.DECISION, times=1)
    assert (await world.poll(watcher)).skipped == 1
    world.clock.set_time(11_000)
    assert (await world.poll(watcher)).stepped == 1
    assert world.store.load_calls == 2


async def test_watcher_releases_a_quarantined_wallet_after_its_backoff() -> None:
    """A quarantined wallet is reloaded from the store once its backoff has passed (as a
    restart would: its unfinished commands reconciled), counted, reported in the poll, and
    stepped again — no restart needed."""
    world = seed_world()
    world.store.fail_commit(kind=RecordKind.OUTCOMES, times=3)
    watcher = world.watcher(quarantine_backoff_ms=20_000)
    report = await world.poll(watcher)
    assert watcher.quarantined == {W}
    assert report.quarantined == 1
    world.clock.set_time(29_999)  # quarantined at 10_000: the backoff has not passed
    report = await world.poll(watcher)
    assert (report.released, report.quarantined, report.stepped) == (0, 1, 0)
    world.clock.set_time(30_000)
    report = await world.poll(watcher)
    assert (report.released, report.quarantined, report.stepped) == (1, 0, 1)
    assert watcher.quarantined == frozenset()
    assert world.metric("quarantined_wallets") == 0
    assert world.metric("quarantine_releases_total") == 1
    assert [r.note for r in world.store.records if r.kind is RecordKind.RESTART] == ["release"]
    stored = world.store.stored(W)
    assert stored is not None
    assert stored.state.updated_at > 30_000


@attrs.define
class FlakyLoads(PlainStore):
    """A store whose single-wallet loads fail while ``down``."""

    down: bool = False

    async def load_one(self, wallet: str) -> Stored | None:
        if self.down:
            raise OSError("store down")
        return await self.inner.load_one(wallet)


async def test_watcher_keeps_a_quarantined_wallet_while_the_store_cannot_reload_it() -> None:
    """A reload that fails keeps the wallet quarantined for another whole backoff."""
    world = seed_world()
    store = FlakyLoads(world.store)
    world.store.fail_commit(kind=RecordKind.OUTCOMES, times=3)
    watcher = world.watcher(store=store, recorder=store, quarantine_backoff_ms=1_000)
    await world.poll(watcher)
    assert watcher.quarantined == {W}
    store.down = True
    world.clock.set_time(11_000)
    assert (await world.poll(watcher)).quarantined == 1
    store.down = False
    world.clock.set_time(11_999)
    assert (await world.poll(watcher)).quarantined == 1
    world.clock.set_time(12_000)
    report = await world.poll(watcher)
    assert (report.released, report.quarantined, report.stepped) == (1, 0, 1)


# --------------------------------------------------------------------------- the log


@attrs.define
class Crashing:
    """A recorder in a process that dies right after its commits: once ``dead``, nothing
    more reaches the file."""

    inner: JsonlRecorder
    dead: bool = False

    async def append(self, record: Record) -> None:
        if self.dead:
            raise OSError("killed before the append")
        await self.inner.append(record)


async def _log_with_a_lost_tail(world: World, path: Path) -> int:
    """Two polls: the second's records are committed but never appended (a crash between
    commit and append); returns the wallet's committed version."""
    crashing = Crashing(JsonlRecorder(path))
    watcher = world.watcher(recorder=crashing)
    await watcher.run_once()  # not clock.drive: the recorder works in a thread
    crashing.dead = True
    world.exchange.clear_orders(W)
    world.clock.set_time(20_000)
    await watcher.run_once()
    await crashing.inner.close()
    stored = world.store.stored(W)
    assert stored is not None
    logged = {r.version for r in jsonl_records(path) if r.commits_version}
    assert max(logged) < stored.version
    return stored.version


async def test_watcher_restart_completes_a_log_that_lost_records_at_a_crash(
    tmp_path: Path,
) -> None:
    """Records committed but lost between the commit and the append are appended from the
    store's history at the restart, before anything new: the log holds versions 1…N, and
    replay finds it complete."""
    world = seed_world()
    path = tmp_path / "log.jsonl"
    await _log_with_a_lost_tail(world, path)
    recorder = JsonlRecorder(path)
    restarted = world.watcher(recorder=recorder)
    world.clock.set_time(30_000)
    await restarted.run_once()
    await recorder.close()
    stored = world.store.stored(W)
    assert stored is not None
    versions = [r.version for r in jsonl_records(path) if r.commits_version]
    assert versions == list(range(1, stored.version + 1))
    assert world.metric("backfilled_records_total") >= 1
    assert cli_main(["replay", str(path), "--config", str(seed_config_file(tmp_path))]) == 0


async def test_replay_detects_versions_missing_from_a_log_and_names_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log with a hole (records lost at a crash, the store unable to complete it) fails
    replay with exit 1, naming the wallet and the missing versions."""
    world = seed_world()
    path = tmp_path / "log.jsonl"
    lost_up_to = await _log_with_a_lost_tail(world, path)
    store = PlainStore(world.store)  # no history(): the log cannot be completed
    recorder = JsonlRecorder(path)
    restarted = world.watcher(store=store, recorder=recorder)
    world.clock.set_time(30_000)
    await restarted.run_once()
    await recorder.close()
    logged = sorted({r.version for r in jsonl_records(path) if r.commits_version})
    missing = [v for v in range(1, lost_up_to + 1) if v not in logged]
    assert missing
    capsys.readouterr()
    assert cli_main(["replay", str(path), "--config", str(seed_config_file(tmp_path))]) == 1
    out = capsys.readouterr().out
    assert f"gap: wallet {W}: versions {missing[0]}-{missing[-1]} missing" in out


def seed_config_file(folder: Path) -> Path:
    """SEED_CONFIG as a TOML file for ``liqshell replay --config``."""
    path = folder / "seed.toml"
    lines = ["[liqcore]"] + [
        f"{name} = {getattr(SEED_CONFIG, name)}"
        for name in (
            "partial_target_buffer_bps",
            "partial_reprice_interval_ms",
            "partial_bonus_start_bps",
            "partial_bonus_max_bps",
            "partial_bonus_ramp_ms",
            "full_escalation_timeout_ms",
        )
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------- shadow mode


async def test_watcher_shadow_mode_executes_and_commits_nothing_but_records() -> None:
    """In shadow mode every decision is recorded (not executed); no port is acted on and
    nothing is committed to the store; the watcher keeps its states in memory."""
    world = seed_world()
    recorder = MemoryRecorder()
    shadow = world.watcher(config=attrs.evolve(SEED_CONFIG, enabled=False), recorder=recorder)
    await world.poll(shadow)
    world.clock.set_time(15_000)
    await world.poll(shadow)
    assert world.exchange.submits == []
    assert world.exchange.cancels == []
    assert world.sink.attempts == []
    assert world.store.committed == []
    assert world.store.records == []
    decisions = recorder.of_kind(RecordKind.DECISION)
    assert [r.now for r in decisions] == [10_000, 15_000]
    assert not any(r.executed for r in decisions)
    assert decisions[1].previous == decisions[0].state
    assert isinstance(shadow.states[W].phase, PreLiquidation)
    assert world.store.close_calls == 0


async def test_watcher_shadow_mode_applies_feed_in_memory_only() -> None:
    """A shadow watcher applies feed events to its own states, never to the store."""
    world = seed_world()
    world.exchange.set_portfolio(W, perp_portfolio())
    recorder = MemoryRecorder()
    shadow = world.watcher(config=attrs.evolve(SEED_CONFIG, enabled=False), recorder=recorder)
    await world.poll(shadow)
    world.feed.push(W, AuctionStarted(auction_id="x"))
    assert await world.drain(shadow) == 1
    assert isinstance(shadow.states[W].phase, InLiquidation)
    assert world.store.current_cursor is None
    assert shadow.cursor == 1


# --------------------------------------------------------------------------- time and concurrency


async def test_watcher_now_strictly_increases_when_the_clock_steps_back() -> None:
    """A clock stepping back never repeats or rewinds a wallet's now."""
    world = seed_world()
    watcher = world.watcher()
    await world.poll(watcher)
    world.clock.set_time(4_000)
    await world.poll(watcher)
    await world.poll(watcher)
    nows = [r.now for r in world.decisions()]
    assert nows[0] == 10_000
    assert all(b > a for a, b in itertools.pairwise(nows))
    assert nows[1] == 10_001


class CountingMargin:
    """A margin source that takes 100 ms of clock time and tracks calls in flight."""

    def __init__(self, exchange: FakeExchange, clock: VirtualClock) -> None:
        self.exchange = exchange
        self.clock = clock
        self.in_flight = 0
        self.peak = 0

    async def margin(self, wallet: str, portfolio: Portfolio | None) -> MarginReport:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await self.clock.sleep(100)
            return await self.exchange.margin(wallet, portfolio)
        finally:
            self.in_flight -= 1


async def test_watcher_bounds_concurrency_across_wallets() -> None:
    """At most `concurrency` wallets are observed at once, and the bound is used."""
    world = seed_world(user_order=False)
    wallets = [f"w{n:02}" for n in range(10)]
    for wallet in wallets:
        world.exchange.set_portfolio(wallet, seed_portfolio())
        world.exchange.set_margin(wallet, RECOVERED)
    margin = CountingMargin(world.exchange, world.clock)
    watcher = world.watcher(concurrency=3, margin=margin)
    report = await world.poll(watcher)
    assert report.stepped == 11
    assert margin.peak == 3


async def test_watcher_run_stops_promptly_and_closes_store() -> None:
    """run returns as soon as stop is set, mid-sleep, and closes the store."""
    world = seed_world()
    watcher = world.watcher(config=attrs.evolve(SEED_CONFIG, poll_interval_ms=3_600_000))
    stop = asyncio.Event()

    async def stopper() -> None:
        await world.clock.sleep_until(10_250)
        stop.set()

    await world.clock.drive(asyncio.gather(watcher.run(stop), stopper()))
    assert world.clock.now_ms() == 10_250
    assert world.store.close_calls == 1


async def test_watcher_run_steps_liquidating_wallets_at_their_wakeups() -> None:
    """Between polls, run steps a liquidating wallet at next_wakeup (its reprice time)."""
    world = seed_world(user_order=False)
    watcher = world.watcher(config=attrs.evolve(SEED_CONFIG, poll_interval_ms=60_000))
    stop = asyncio.Event()

    async def stopper() -> None:
        await world.clock.sleep_until(21_000)
        stop.set()

    await world.clock.drive(asyncio.gather(watcher.run(stop), stopper()))
    nows = [r.now for r in world.decisions()]
    assert nows[0] == 10_000
    assert len(nows) > 2  # the poll interval alone would step it once
    assert 15_000 in nows  # last_reprice_at 10_000 + 5_000
    assert all(n < 21_000 for n in nows)


async def test_watcher_run_drains_the_feed() -> None:
    """run applies feed events between polls."""
    world, watcher, auction = await auctioned_world()
    world.feed.push(W, AuctionStarted(auction_id=auction, chain_start_time=1))
    stop = asyncio.Event()

    async def stopper() -> None:
        await world.clock.sleep_until(10_001)
        stop.set()

    await world.clock.drive(asyncio.gather(watcher.run(stop), stopper()))
    assert isinstance(world.state().phase, InLiquidation)


def test_watcher_driven_from_several_event_loops_in_turn() -> None:
    """A watcher holds no loop-bound resources between calls: two loops can drive it."""
    world = seed_world()
    watcher = world.watcher()
    asyncio.run(world.poll(watcher))
    world.clock.set_time(15_000)
    asyncio.run(world.poll(watcher))
    world.feed.push(W, AuctionStarted(auction_id="other"))
    asyncio.run(world.drain(watcher))
    assert [r.now for r in world.decisions()][:2] == [10_000, 15_000]


# --------------------------------------------------------------------------- operation


async def test_watcher_alerts_are_logged_with_code_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """step's alerts are logged at warning with their code and counted by code."""
    world = seed_world()
    with caplog.at_level(logging.WARNING, logger="liqshell"):
        await world.poll(world.watcher())
    alerts = [r for r in caplog.records if getattr(r, "code", None) is not None]
    codes = {getattr(r, "code", None) for r in alerts}
    assert AlertCode.MARGIN_MODEL_MISMATCH.value in codes
    assert all(r.levelno == logging.WARNING for r in alerts)
    assert world.metric("alerts_total", code=AlertCode.MARGIN_MODEL_MISMATCH.value) == 1


async def test_watcher_never_configures_the_root_logger() -> None:
    """Running the watcher adds no handler to the root logger."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    world = seed_world()
    await world.poll(world.watcher())
    assert root.handlers == handlers
    assert root.level == level


async def test_watcher_works_without_metrics_registry() -> None:
    """metrics=None counts nothing and changes nothing."""
    world = seed_world()
    report = await world.poll(world.watcher(metrics=None))
    assert report.stepped == 1
    assert isinstance(world.exchange.submits[0], SubmitOrder)


def test_watcher_rejects_bad_construction() -> None:
    """A non-Config config or a concurrency below 1 is refused."""
    world = seed_world()
    with pytest.raises(ValueError, match="concurrency"):
        world.watcher(concurrency=0)
    with pytest.raises(TypeError, match="Config"):
        world.watcher(config={"enabled": True})  # type: ignore[arg-type]


async def test_watcher_recorder_separate_from_store_gets_every_record() -> None:
    """With a separate recorder, every committed record is appended to it as well."""
    world = seed_world()
    recorder = MemoryRecorder()
    await world.poll(world.watcher(recorder=recorder))
    assert [r for r in recorder.records if r.kind is not RecordKind.POLL] == world.store.committed
    assert [r.kind for r in recorder.records if r.kind is RecordKind.POLL] == [RecordKind.POLL]
    assert StartAuction not in {type(c) for r in recorder.records for c in r.commands}


# --------------------------------------------------------------------------- at scale


class PerWallet:
    """The observation ports of ``exchange`` without its batch methods: an adapter that
    observes one wallet at a time (the watcher's fallback path)."""

    def __init__(self, exchange: FakeExchange) -> None:
        self._exchange = exchange

    async def portfolios(self) -> Mapping[str, Portfolio]:
        return await self._exchange.portfolios()

    async def portfolio(self, wallet: str) -> Portfolio | None:
        return await self._exchange.portfolio(wallet)

    async def margin(self, wallet: str, portfolio: Portfolio | None) -> MarginReport:
        return await self._exchange.margin(wallet, portfolio)

    async def open_orders(self, wallet: str) -> Sequence[OpenOrder]:
        return await self._exchange.open_orders(wallet)


def random_world(seed: int, wallets: int) -> World:
    """``wallets`` accounts short one or two calls, a third of them liquidatable, some with
    a user order (seeded)."""
    rng = random.Random(seed)
    clock = VirtualClock(10_000)
    exchange = FakeExchange(clock=clock)
    exchange.set_quote(SYMBOL, QUOTE)
    exchange.set_quote(ETH, Quote(best_bid=Decimal(99), best_ask=Decimal(100), mid=Decimal(99)))
    for index in range(wallets):
        wallet = f"w{index:03d}"
        positions = {
            symbol: Position(
                symbol=symbol, amount=-Decimal(rng.randint(1, 8)), entry_price=Decimal(100)
            )
            for symbol in rng.sample([SYMBOL, ETH], rng.randint(1, 2))
        }
        spot = {"BTC": Decimal(105_000), "ETH": Decimal(3_000)}
        exchange.set_portfolio(
            wallet, PortfolioOf(cash=Decimal(500), positions=positions, spot=spot)
        )
        exchange.set_margin(wallet, LIQUIDATABLE if rng.random() < 0.3 else RECOVERED)
        if rng.random() < 0.3:
            exchange.add_order(wallet, attrs.evolve(RISK_INCREASING, order_id=10_000 + index))
    return World(
        clock=clock, exchange=exchange, store=MemoryStore(), sink=MemorySink(), feed=FakeFeed()
    )


async def run_world(seed: int, *, batch: bool, record: str) -> tuple[World, list[PollReport]]:
    """Four polls 5 s apart over the seeded world; between polls some accounts turn
    liquidatable or recover (the same ones in every run)."""
    world = random_world(seed, 24)
    ports: dict[str, object] = {}
    if not batch:
        per_wallet = PerWallet(world.exchange)
        ports = {"portfolios": per_wallet, "margin": per_wallet, "orders": per_wallet}
    watcher = world.watcher(record=record, **ports)
    rng = random.Random(seed + 1)
    reports = []
    for _ in range(4):
        reports.append(await world.poll(watcher))
        for wallet in sorted(world.exchange._portfolios):
            if rng.random() < 0.15:
                flip = LIQUIDATABLE if rng.random() < 0.5 else RECOVERED
                world.exchange.set_margin(wallet, flip)
        world.clock.advance(5_000)
    return world, reports


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_watcher_batched_compact_path_acts_like_the_per_wallet_full_path(seed: int) -> None:
    """Batch observation with compact recording sends the exchange the same commands,
    publishes the same changes and commits the same states as per-wallet observation with
    every decision committed; the wallets it never committed were healthy no-ops."""
    full, full_reports = asyncio.run(run_world(seed, batch=False, record="all"))
    compact, compact_reports = asyncio.run(run_world(seed, batch=True, record="changes"))
    # Per wallet in order (wallets are decided concurrently, so their interleaving differs).
    assert by_wallet(compact.exchange.calls) == by_wallet(full.exchange.calls)
    assert by_wallet(compact.sink.changes) == by_wallet(full.sink.changes)
    for wallet, state in full.store.states.items():
        stored = compact.store.stored(wallet)
        if stored is None:
            assert type(state.phase) is Healthy, wallet
        else:
            assert stored.state.phase == state.phase, wallet
    assert [r.stepped for r in compact_reports] == [r.stepped for r in full_reports]
    assert all(r.noops == 0 for r in full_reports)
    assert sum(r.noops for r in compact_reports) > 0
    polls = [r for r in compact.store.records if r.kind is RecordKind.POLL]
    assert len(polls) == 4
    assert not [r for r in full.store.records if r.kind is RecordKind.POLL]


ACTIONS = ("submit", "cancel", "start", "stop")


def by_wallet(items: Sequence[object]) -> dict[str, list[object]]:
    """The exchange's action calls (their commands), or published changes, per wallet. The
    fake numbers orders across wallets in the order it receives them, so a cancel of one of
    our orders is compared by its client id (its order id and request id, derived from the
    order id, depend on how the wallets interleaved)."""
    grouped: dict[str, list[object]] = {}
    for item in items:
        value = item.argument if isinstance(item, Call) else item
        if isinstance(item, Call) and item.method not in ACTIONS:
            continue
        if isinstance(value, CancelOrder) and (value.client_id or "").startswith("liq-"):
            value = attrs.evolve(value, order_id=0, request_id="-")
        grouped.setdefault(value.wallet, []).append(value)  # type: ignore[attr-defined]
    return dict(sorted(grouped.items()))


async def test_watcher_compact_recording_replays_with_no_mismatch(tmp_path: Path) -> None:
    """A compact recording (record = "changes") replays exactly: every decision recorded
    is re-decided the same, and the poll summaries are no decisions."""
    world, _ = await run_world(7, batch=True, record="changes")
    path = tmp_path / "compact.jsonl"
    recorder = JsonlRecorder(path)
    for entry in world.store.entries:  # the header (the config), then the records
        if isinstance(entry, Record):
            await recorder.append(entry)
        else:
            await recorder.begin(entry)
    await recorder.close()
    assert cli_main(["replay", str(path)]) == 0


async def test_watcher_batch_failure_of_one_wallet_skips_only_it() -> None:
    """In a batch, a wallet whose margin call fails is left out of the answer and skipped
    alone; a batch call that fails skips its chunk for this poll."""
    world = random_world(3, 10)
    watcher = world.watcher()
    world.exchange.inject("margin", Fault.raising(TimeoutError("engine")), wallet="w004")
    report = await world.poll(watcher)
    assert (report.stepped, report.skipped) == (9, 1)
    world.exchange.inject("margin", Fault.raising(TimeoutError("engine")), wallet="w004")
    world.clock.advance(5_000)

    class BrokenBatch(PerWallet):
        async def portfolios_of(self, wallets: Sequence[str]) -> Mapping[str, Portfolio]:
            raise ConnectionError("portfolio service down")

        async def margins(
            self, portfolios: Mapping[str, Portfolio | None]
        ) -> Mapping[str, MarginReport]:
            raise AssertionError("not reached")

        async def open_orders_many(
            self, wallets: Sequence[str]
        ) -> Mapping[str, Sequence[OpenOrder]]:
            raise AssertionError("not reached")

    broken = BrokenBatch(world.exchange)
    down = world.watcher(portfolios=broken, margin=broken, orders=broken)
    report = await world.poll(down)
    assert (report.stepped, report.skipped) == (0, 10)


def test_watcher_record_mode_is_checked() -> None:
    """An unknown record mode is refused at construction, naming it."""
    with pytest.raises(ValueError, match="record must be one of"):
        seed_world().watcher(record="some")


class _GatedStore(MemoryStore):
    """Holds the commit of a feed item until :attr:`gate` is set (once armed)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Event | None = None
        self.held = 0

    async def commit(
        self,
        wallet: str,
        state: AccountState,
        record: Record,
        *,
        expected_version: int,
        cursor: Cursor | None = None,
    ) -> int:
        if self.gate is not None and record.kind is RecordKind.FEED:
            self.held += 1
            await self.gate.wait()
        return await super().commit(
            wallet, state, record, expected_version=expected_version, cursor=cursor
        )


@pytest.mark.parametrize("record", ["changes", "all"])
async def test_watcher_poll_waits_for_a_feed_item_in_flight_on_the_wallet(record: str) -> None:
    """A wallet whose feed item is being committed (its lock held) is not stepped by a poll
    observed in batches until that commit is done; it is then stepped from the state the
    item committed, without a conflict."""
    world = seed_world()
    world.exchange.set_portfolio(W, perp_portfolio())
    world.exchange.set_portfolio("other", seed_portfolio())
    world.exchange.set_margin("other", RECOVERED)
    store = _GatedStore()
    world.store = store
    watcher = world.watcher(record=record)
    await world.poll(watcher)
    auction = pre(world.state()).pending_full_auction_id
    assert auction is not None
    decisions = len(world.decisions())
    world.feed.push(W, AuctionStarted(auction_id=auction, chain_start_time=10_500))
    store.gate = asyncio.Event()
    world.clock.advance(1_000)
    drain = asyncio.ensure_future(watcher.drain_feed())
    await world.clock.settle()
    assert store.held == 1
    assert not drain.done()
    poll = asyncio.ensure_future(watcher.run_once())
    await world.clock.settle()
    assert not poll.done()
    assert len(world.decisions()) == decisions  # W not stepped while its item is in flight
    store.gate.set()
    assert await drain == 1
    report = await poll
    assert (report.conflicts, report.skipped, report.stepped) == (0, 0, 2)
    assert isinstance(world.state().phase, InLiquidation)
    last = world.decisions()[-1]
    assert last.previous is not None
    assert isinstance(last.previous.phase, InLiquidation)


async def test_poll_summary_digest_hashes_one_line_per_healthy_noop_in_step_order() -> None:
    """The POLL record's digest is the BLAKE2b-128 of one line per healthy no-op —
    ``wallet|equity|mm_required|0`` and a newline, the Decimals as ``str`` writes them — in
    the order the wallets were stepped, over more wallets than one batch of lines hashes
    (none lost, none twice); a wallet with a decision to commit adds no line."""
    clock = VirtualClock(10_000)
    exchange = FakeExchange(clock=clock)
    store = MemoryStore()
    world = World(clock=clock, exchange=exchange, store=store, sink=MemorySink(), feed=FakeFeed())
    figures = ["1E+3", "0.50", "7", "123.4560", "-2.5", "0"]
    expected = []
    for index in range(300):
        wallet = f"h{index:03d}"
        equity = Decimal(figures[index % len(figures)])
        mm = Decimal(figures[(index + 1) % len(figures)]).copy_abs()
        if index == 150:  # liquidatable: a decision committed and recorded on its own
            exchange.set_portfolio(wallet, seed_portfolio())
            exchange.set_margin(wallet, LIQUIDATABLE)
            continue
        exchange.set_portfolio(wallet, seed_portfolio(amount="1"))
        exchange.set_margin(
            wallet,
            MarginReport(
                margin_mode=MarginMode.STANDARD,
                equity=equity,
                mm_required=mm,
                is_liquidatable=False,
            ),
        )
        expected.append(f"{wallet}|{equity!s}|{mm!s}|0\n")
    exchange.set_quote(SYMBOL, QUOTE)
    report = await world.poll(world.watcher(concurrency=1))
    assert report.noops == 299
    (summary,) = [r for r in store.records if r.kind is RecordKind.POLL]
    digest = hashlib.blake2b("".join(expected).encode(), digest_size=16).hexdigest()
    assert summary.note.endswith(f" digest={digest}")
    assert [r.wallet for r in store.records if r.kind is RecordKind.DECISION] == ["h150"]
    assert "E+3" in expected[0]  # the figures keep the form str gives them
