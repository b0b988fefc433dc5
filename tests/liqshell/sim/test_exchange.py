"""liqshell.sim.exchange: the ports of the simulated exchange, its journal and its sink."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from liqcore import (
    AccountState,
    CancelOrder,
    Config,
    Healthy,
    MarginMode,
    PreLiquidation,
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
    MarginSource,
    NotSent,
    OrderGateway,
    OrderSnapshot,
    PortfolioSource,
    QuoteSource,
)
from liqshell.sim import SimExchange, WorldStore, new_world
from liqshell.sim.world import SimParams

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
