"""liqshell.sim.exchange: the ports of the simulated exchange, its journal and its sink."""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from liqcore import (
    AccountState,
    CancelOrder,
    Config,
    Healthy,
    MarginMode,
    OpenOrder,
    Portfolio,
    PreLiquidation,
    Side,
    StartAuction,
    StateChange,
    SubmitOrder,
    codec,
)
from liqshell.ports import (
    AnswerStatus,
    AuctionExecutor,
    AuctionFeed,
    EventSink,
    MarginReport,
    MarginSource,
    NotSent,
    OrderGateway,
    OrderSnapshot,
    PollReport,
    PortfolioSource,
    QuoteSource,
    RecordKind,
)
from liqshell.sim import SimExchange, WorldStore, new_world
from liqshell.sim.runner import SimClock
from liqshell.sim.world import SimParams
from liqshell.testing import MemoryStore
from liqshell.watcher import Watcher

PARAMS = SimParams(accounts=8, minutes=3, seed=6)


def exchange(store: WorldStore | None = None) -> SimExchange:
    """A fresh simulated exchange of :data:`PARAMS`."""
    return SimExchange(new_world(PARAMS, Config()), config=Config(), store=store)


def short_of(sim: SimExchange) -> tuple[str, str, Decimal]:
    """A wallet, one of its short symbols and the position."""
    for wallet, account in sorted(sim.world.accounts.items()):
        for symbol, holding in sorted(account.holdings.items()):
            if holding.amount < 0 and not symbol.endswith("PERP"):
                return wallet, symbol, holding.amount
    raise AssertionError("no short option")


def change(wallet: str, previous: str, new: str) -> StateChange:
    """A state change between two phase tags."""
    phase = (
        Healthy()
        if new == "healthy"
        else PreLiquidation(
            entered_at=0,
            mm_shortfall=Decimal(1),
            target_equity=Decimal(2),
            escalation_deadline=1,
            bonus_bps=50,
        )
    )
    state = AccountState(
        wallet=wallet,
        margin_mode=MarginMode.STANDARD,
        phase=phase,
        equity=Decimal(1),
        mm_required=Decimal(2),
        updated_at=0,
    )
    return StateChange(
        wallet=wallet,
        previous_phase=previous,  # type: ignore[arg-type]
        new_phase=new,  # type: ignore[arg-type]
        previous_mode=None,
        mode=None,
        margin_mode=MarginMode.STANDARD,
        equity=Decimal(1),
        mm_required=Decimal(2),
        maintenance_margin=Decimal(-1),
        shortfall=Decimal(1),
        previous_auction_id=None,
        auction_id=None,
        projection_changed=True,
        state=state,
        timestamp=0,
    )


def test_sim_exchange_serves_every_port() -> None:
    """One object is every port the watcher needs (checked statically by mypy)."""
    sim = exchange()
    ports: tuple[
        PortfolioSource, MarginSource, QuoteSource, OrderSnapshot, OrderGateway,
        AuctionExecutor, AuctionFeed, EventSink,
    ] = (sim, sim, sim, sim, sim, sim, sim, sim)  # fmt: skip
    assert all(p is sim for p in ports)


async def test_observations_consistent_with_the_world() -> None:
    """Portfolios hold every account; margin uses the configured model; quotes skip unknowns."""
    sim = exchange()
    portfolios = await sim.portfolios()
    assert sorted(portfolios) == sorted(sim.world.accounts)
    wallet = sorted(portfolios)[0]
    portfolio = portfolios[wallet]
    report = await sim.margin(wallet, portfolio)
    facts = Config().margin_model(report.margin_mode).evaluate(portfolio, sim.world.now)
    assert (report.equity, report.mm_required) == (facts.equity, facts.mm_required)
    symbols = [*portfolio.positions, "NOPE-PERP"]
    quotes = await sim.quotes(symbols)
    assert set(quotes) == set(portfolio.positions)
    assert await sim.portfolio("0xunknown") is None


async def test_publish_same_key_counted_once() -> None:
    """At-least-once delivery: a redelivered change (same key) is not counted again."""
    sim = exchange()
    wallet = sorted(sim.world.accounts)[0]
    entry = change(wallet, "healthy", "pre_liquidation")
    await sim.publish(entry, key=(wallet, 3, 0))
    await sim.publish(entry, key=(wallet, 3, 0))
    assert sim.world.stats.entries == 1
    await sim.publish(change(wallet, "pre_liquidation", "healthy"), key=(wallet, 4, 1))
    assert sim.world.stats.recoveries == 1
    assert sim.world.stats.publishes == 2


async def test_journal_replay_reproduces_the_live_world(tmp_path: Path) -> None:
    """Snapshot + journal replayed = the world the exchange had when it was killed."""
    store = WorldStore(tmp_path / "sim.sqlite")
    sim = exchange(store)
    store.save(sim.world)
    wallet, symbol, amount = short_of(sim)
    acked = await sim.submit(
        SubmitOrder(
            wallet=wallet,
            symbol=symbol,
            price=Decimal(1),
            size=-amount / 2,
            client_id="liq-a",
            request_id="r1",
        )
    )
    assert acked.status is AnswerStatus.ACKED
    assert acked.order_id is not None
    await sim.cancel(CancelOrder(wallet=wallet, order_id=acked.order_id, request_id="c1"))
    await sim.start(StartAuction(wallet=wallet, request_id="s1"))
    await sim.publish(change(wallet, "healthy", "pre_liquidation"), key=(wallet, 1, 0))
    store.close()

    reopened = WorldStore(tmp_path / "sim.sqlite")
    loaded = reopened.load()
    assert loaded is not None
    world, journal = loaded
    assert [entry["op"] for entry in journal] == ["submit", "cancel", "start", "publish"]
    resumed = SimExchange(world, config=Config())
    resumed.replay(journal)
    assert codec.to_json(resumed.world) == codec.to_json(sim.world)
    reopened.save(resumed.world)
    again = reopened.load()
    assert again is not None
    assert again[1] == []
    reopened.close()


async def test_advance_moves_time_by_one_tick_and_is_deterministic() -> None:
    """Two exchanges of the same parameters stay identical tick after tick."""
    one, two = exchange(), exchange()
    for _ in range(30):
        one.advance()
        two.advance()
    assert one.world.now == PARAMS.start_ms + 30 * PARAMS.tick_ms
    assert codec.to_json(one.world) == codec.to_json(two.world)
    assert one.world.spot != new_world(PARAMS, Config()).spot


async def test_start_unknown_wallet_not_sent_and_nothing_changes() -> None:
    """A start for a wallet the exchange does not know provably did nothing: NotSent."""
    sim = exchange()
    before = codec.to_json(sim.world)
    with pytest.raises(NotSent):
        await sim.start(StartAuction(wallet="0xnobody", request_id="s"))
    assert codec.to_json(sim.world) == before


class PerWalletSim:
    """The simulated exchange's observation ports without its batch methods: the watcher
    observes through them one wallet at a time (its fallback path)."""

    def __init__(self, sim: SimExchange) -> None:
        self._sim = sim

    async def portfolios(self) -> Mapping[str, Portfolio]:
        return await self._sim.portfolios()

    async def portfolio(self, wallet: str) -> Portfolio | None:
        return await self._sim.portfolio(wallet)

    async def margin(self, wallet: str, portfolio: Portfolio | None) -> MarginReport:
        return await self._sim.margin(wallet, portfolio)

    async def open_orders(self, wallet: str) -> Sequence[OpenOrder]:
        return await self._sim.open_orders(wallet)


class CountingSim(SimExchange):
    """A simulated exchange that counts the observation calls it answers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: collections.Counter[str] = collections.Counter()

    async def portfolio(self, wallet: str) -> Portfolio | None:
        self.calls["portfolio"] += 1
        return await super().portfolio(wallet)

    async def portfolios_of(self, wallets: Sequence[str]) -> Mapping[str, Portfolio | None]:
        self.calls["portfolios_of"] += 1
        return await super().portfolios_of(wallets)

    async def margins(
        self, portfolios: Mapping[str, Portfolio | None]
    ) -> Mapping[str, MarginReport]:
        self.calls["margins"] += 1
        return await super().margins(portfolios)

    async def open_orders_many(self, wallets: Sequence[str]) -> Mapping[str, Sequence[OpenOrder]]:
        self.calls["open_orders_many"] += 1
        return await super().open_orders_many(wallets)


async def simulated_run(
    seed: int, *, batch: bool, record: str
) -> tuple[CountingSim, MemoryStore, list[PollReport]]:
    """The runner's loop (drain the feed, poll, advance) over a small world, the watcher
    observing through the batch methods or wallet by wallet; one worker, so the wallets are
    decided in the same order on both paths."""
    params = SimParams(accounts=12, minutes=3, seed=seed)
    sim = CountingSim(new_world(params, Config()), config=Config())
    observing: Any = sim if batch else PerWalletSim(sim)
    store = MemoryStore()
    clock = SimClock(sim.world.now)
    watcher = Watcher(
        portfolios=observing, margin=observing, quotes=sim, orders=observing, gateway=sim,
        auctions=sim, feed=sim, store=store, sink=sim, recorder=store, clock=clock,
        concurrency=1, record=record,
    )  # fmt: skip
    reports = []
    while True:
        clock.set(sim.world.now)
        await watcher.drain_feed()
        reports.append(await watcher.run_once())
        if sim.world.tick >= params.ticks:
            return sim, store, reports
        sim.advance()


@pytest.mark.parametrize(("seed", "record"), [(3, "all"), (3, "changes"), (8, "all")])
async def test_watcher_takes_the_batch_path_and_decides_as_wallet_by_wallet(
    seed: int, record: str
) -> None:
    """Against the simulated exchange the watcher observes in batches (a per-wallet call
    only to re-step a wallet at once after its reprice's cancels) and records exactly the
    decisions, outcomes and feed items of a run that observes wallet by wallet; the
    exchange ends in the same state."""
    batched, batched_store, batched_reports = await simulated_run(seed, batch=True, record=record)
    single, single_store, single_reports = await simulated_run(seed, batch=False, record=record)
    stepped = sum(report.stepped + report.skipped for report in single_reports)
    assert stepped > 0
    assert single.calls["portfolio"] - batched.calls["portfolio"] == stepped
    assert batched.calls["portfolios_of"] == batched.calls["margins"] == len(batched_reports)
    assert batched.calls["open_orders_many"] == len(batched_reports)
    assert single.calls["portfolios_of"] == single.calls["margins"] == 0
    assert single.calls["portfolio"] > 0
    assert batched_store.records == single_store.records
    assert batched_store.states == single_store.states
    assert batched_reports == single_reports
    assert batched.world.stats == single.world.stats
    decisions = [r for r in batched_store.records if r.kind is RecordKind.DECISION]
    assert any(r.commands for r in decisions), "the run must liquidate something"


async def test_batch_methods_answer_as_the_per_wallet_calls() -> None:
    """portfolios_of, margins and open_orders_many give each wallet what portfolio, margin
    and open_orders give it; an unknown wallet has no portfolio and no margin answer."""
    sim = exchange()
    wallet, symbol, amount = short_of(sim)
    await sim.submit(
        SubmitOrder(
            wallet=wallet, symbol=symbol, side=Side.BUY, price=Decimal(1), size=-amount,
            reduce_only=True, client_id="liq-test", request_id="r-1",
        )
    )  # fmt: skip
    wallets = [*sorted(sim.world.accounts), "0xunknown"]
    portfolios = await sim.portfolios_of(wallets)
    assert portfolios == {w: await sim.portfolio(w) for w in wallets}
    reports = await sim.margins(portfolios)
    assert set(reports) == set(sim.world.accounts)
    for known in sim.world.accounts:
        assert reports[known] == await sim.margin(known, portfolios[known])
    orders = await sim.open_orders_many(wallets)
    assert orders == {w: tuple(await sim.open_orders(w)) for w in wallets}
    assert orders[wallet], "the order submitted is open"
