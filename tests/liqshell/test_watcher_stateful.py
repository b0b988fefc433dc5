"""liqshell.watcher under arbitrary interleavings of polls, feed events, faults, crashes and
restarts (a Hypothesis state machine over the in-memory fakes).

Invariants: after every completed poll no wallet has two live sets of liquidation orders;
a wallet's stored version only ever increases, by one per commit; nothing reaches the
exchange before its decision was committed; no decision is executed twice (every request id
reaches the exchange at most once); a publish key always carries the same change; a
quarantined wallet is never stepped until a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import TypeVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from liqcore import (
    AccountReset,
    AuctionSettled,
    AuctionStarted,
    AuctionStopped,
    Config,
    Event,
    InLiquidation,
    MarginMode,
    Portfolio,
    Position,
    PreLiquidation,
    Quote,
    StateChange,
)
from liqshell import Watcher
from liqshell.ports import MarginReport, RecordKind
from liqshell.testing import (
    FakeExchange,
    FakeFeed,
    Fault,
    MemorySink,
    MemoryStore,
    VirtualClock,
)

T = TypeVar("T")

PortfolioOf: Callable[..., Portfolio] = Portfolio  # see test_watcher.py

W = "W"  # short calls: partial liquidation by orders
V = "V"  # short perp only: escalates straight to a full auction
WALLETS = (W, V)
SYMBOL = "BTC-20261231-100000-C"
CONFIG = Config(
    partial_target_buffer_bps=500,
    partial_reprice_interval_ms=5_000,
    partial_bonus_start_bps=50,
    partial_bonus_max_bps=500,
    partial_bonus_ramp_ms=60_000,
    full_escalation_timeout_ms=20_000,
    engine_response_timeout_ms=1_000,
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
SPOT = {"BTC": Decimal(105_000)}

FAULTS = {
    "not_sent": Fault.not_sent(),
    "unknown": Fault.outcome_unknown(),
    "lost_answer": Fault.outcome_unknown(applied=True),
    "late": Fault.delay(1_500),  # past engine_response_timeout_ms
    "reject": Fault.reject("injected"),
    "benign": Fault.reject("order already filled"),
}


def portfolio_of(wallet: str) -> Portfolio:
    if wallet == W:
        position = Position(symbol=SYMBOL, amount=Decimal(-4), entry_price=Decimal(100))
        return PortfolioOf(cash=Decimal(500), positions={SYMBOL: position}, spot=SPOT)
    perp = Position(symbol="BTC-PERP", amount=Decimal(-1), entry_price=Decimal(100))
    return PortfolioOf(cash=Decimal(500), positions={"BTC-PERP": perp}, spot=SPOT)


def batch_of(client_id: str) -> str:
    """``liq-{wallet}-{now}-{i}`` → ``liq-{wallet}-{now}``: one step's set."""
    return client_id.rsplit("-", 1)[0]


class WatcherInterleavings(RuleBasedStateMachine):
    """Polls, feed events, faults, crashes and restarts in any order."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = VirtualClock(10_000)
        self.exchange = FakeExchange(clock=self.clock)
        for wallet in WALLETS:
            self.exchange.set_portfolio(wallet, portfolio_of(wallet))
            self.exchange.set_margin(wallet, LIQUIDATABLE)
        self.exchange.set_quote(
            SYMBOL, Quote(best_bid=Decimal(149), best_ask=Decimal(150), mid=Decimal("149.5"))
        )
        self.store = MemoryStore()
        self.sink = MemorySink()
        self.feed = FakeFeed()
        self.watcher = self.new_watcher()
        self.versions: dict[str, int] = {}
        self.quarantined_decisions: dict[str, int] = {}

    def new_watcher(self) -> Watcher:
        return Watcher(
            portfolios=self.exchange,
            margin=self.exchange,
            quotes=self.exchange,
            orders=self.exchange,
            gateway=self.exchange,
            auctions=self.exchange,
            feed=self.feed,
            store=self.store,
            sink=self.sink,
            recorder=self.store,
            clock=self.clock,
            config=CONFIG,
            concurrency=2,
        )

    def run(self, coroutine: Coroutine[object, object, T]) -> T:
        # A fresh event loop per call: the watcher must rebind its locks to each.
        return asyncio.run(self.clock.drive(coroutine))

    def decisions_of(self, wallet: str) -> int:
        return sum(
            1 for r in self.store.records if r.kind is RecordKind.DECISION and r.wallet == wallet
        )

    # ---------------------------------------------------------------- rules

    @rule(elapsed=st.integers(min_value=0, max_value=8_000))
    def poll(self, elapsed: int) -> None:
        self.clock.advance(elapsed)
        for wallet in self.watcher.quarantined:
            self.quarantined_decisions.setdefault(wallet, self.decisions_of(wallet))
        self.run(self.watcher.run_once())
        self.check_one_live_set()
        for wallet, count in self.quarantined_decisions.items():
            assert self.decisions_of(wallet) == count, f"{wallet} stepped while quarantined"

    @rule(wallet=st.sampled_from(WALLETS), liquidatable=st.booleans())
    def market(self, wallet: str, liquidatable: bool) -> None:
        self.exchange.set_margin(wallet, LIQUIDATABLE if liquidatable else RECOVERED)

    @rule(wallet=st.sampled_from(WALLETS), data=st.data())
    def fill(self, wallet: str, data: st.DataObject) -> None:
        orders = self.exchange.open_orders_of(wallet)
        if orders:
            order = data.draw(st.sampled_from(orders))
            self.exchange.remove_order(wallet, order.order_id)

    @rule(
        method=st.sampled_from(["submit", "cancel", "start", "stop"]),
        fault=st.sampled_from(sorted(FAULTS)),
    )
    def exchange_fault(self, method: str, fault: str) -> None:
        if fault in ("reject", "benign") and method not in ("submit", "cancel"):
            fault = "not_sent"
        self.exchange.inject(method, FAULTS[fault])

    @rule()
    def sink_fault(self) -> None:
        self.sink.fail(times=1)

    @rule(
        kind=st.sampled_from([RecordKind.DECISION, RecordKind.OUTCOMES, RecordKind.FEED]),
        applied=st.booleans(),
        times=st.sampled_from([1, 3]),
    )
    def store_fault(self, kind: RecordKind, applied: bool, times: int) -> None:
        self.store.fail_commit(kind=kind, applied=applied, times=times)

    @rule(
        wallet=st.sampled_from(WALLETS),
        kind=st.sampled_from(["started", "stopped", "settled", "reset"]),
    )
    def chain_event(self, wallet: str, kind: str) -> None:
        receipt = self.exchange.running_auction(wallet)
        created = [r for w, r in self.exchange.auctions_created if w == wallet]
        if kind == "reset":
            self.feed.push(wallet, AccountReset())
            return
        if receipt is None and not created:
            return
        auction = (receipt or created[-1]).auction_id
        event: Event
        match kind:
            case "started":
                event = AuctionStarted(auction_id=auction, chain_start_time=self.clock.now_ms())
            case "stopped":
                event = AuctionStopped(auction_id=auction)
                self.exchange.end_auction(wallet)
            case _:
                event = AuctionSettled(auction_id=auction)
                self.exchange.end_auction(wallet)
        self.feed.push(wallet, event)

    @precondition(lambda self: bool(self.feed.items))
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        item = data.draw(st.sampled_from(self.feed.items))
        self.feed.redeliver(item.event_id)

    @rule()
    def drain(self) -> None:
        self.run(self.watcher.drain_feed())

    @rule()
    def restart(self) -> None:
        self.watcher = self.new_watcher()
        self.quarantined_decisions.clear()

    @rule(steps=st.integers(min_value=0, max_value=60))
    def crash_mid_poll(self, steps: int) -> None:
        """Kill a poll after a number of event-loop turns, then restart on the same store."""

        async def crash() -> None:
            task = asyncio.ensure_future(self.watcher.run_once())
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.wait((task,))

        asyncio.run(crash())
        self.restart()

    @rule(duration=st.integers(min_value=1, max_value=12_000))
    def run_for(self, duration: int) -> None:
        """Run the watcher's own loop (polls, wake-ups, feed) for a while, then stop it."""
        stop_at = self.clock.now_ms() + duration

        async def session() -> None:
            stop = asyncio.Event()

            async def stopper() -> None:
                await self.clock.sleep_until(stop_at)
                stop.set()

            await asyncio.gather(self.watcher.run(stop), stopper())

        self.run(session())

    # ---------------------------------------------------------------- invariants

    def check_one_live_set(self) -> None:
        for wallet in WALLETS:
            batches = {
                batch_of(o.client_id)
                for o in self.exchange.open_orders_of(wallet)
                if o.client_id is not None and o.client_id.startswith(f"liq-{wallet}-")
            }
            assert len(batches) <= 1, f"{wallet} has live sets {sorted(batches)}"

    @invariant()
    def versions_only_increase(self) -> None:
        for wallet in WALLETS:
            stored = self.store.stored(wallet)
            version = 0 if stored is None else stored.version
            assert version >= self.versions.get(wallet, 0)
            self.versions[wallet] = version
        for wallet in WALLETS:
            # Records committed with a state carry the version they created (cursor-only
            # feed records carry 0): exactly 1, 2, 3, … per wallet.
            committed = [
                r.version for r in self.store.committed if r.wallet == wallet and r.version
            ]
            assert committed == list(range(1, len(committed) + 1)), committed

    @invariant()
    def no_request_executed_twice(self) -> None:
        # Auction requests are idempotent per wallet and an unfinished one that is still the
        # wallet's latest is sent again at a restart, by design; orders never are.
        ids = [
            getattr(call.argument, "request_id", None)
            for call in self.exchange.calls
            if call.method in ("submit", "cancel")
        ]
        assert len(ids) == len(set(ids)), "an order request was sent twice"

    @invariant()
    def nothing_executed_before_its_decision_was_committed(self) -> None:
        committed = {
            getattr(command, "request_id", None)
            for record in self.store.committed
            if record.kind is RecordKind.DECISION
            for command in record.commands
        }
        for call in self.exchange.calls:
            if call.method in ("submit", "cancel", "start", "stop"):
                assert getattr(call.argument, "request_id", None) in committed, call

    @invariant()
    def publish_keys_are_stable(self) -> None:
        seen: dict[tuple[str, int, int], StateChange] = {}
        for key, change in self.sink.published:
            assert seen.setdefault(key, change) == change

    @invariant()
    def states_are_consistent(self) -> None:
        for wallet, state in self.store.states.items():
            assert state.wallet == wallet
            if isinstance(state.phase, PreLiquidation):
                phase = state.phase
                assert len(phase.active_order_client_ids) == len(phase.active_order_request_ids)
            if isinstance(state.phase, InLiquidation):
                assert state.phase.auction_id


WatcherInterleavings.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None
)
test_watcher_interleavings_keep_invariants = WatcherInterleavings.TestCase
