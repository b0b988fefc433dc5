"""liqshell.sim.engine: engine-enforced reduce-only, fills only where the market reaches."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from liqcore import CancelOrder, MarginMode, Side, StartAuction, SubmitOrder
from liqcore.reduce_only import is_benign_cancel_rejection, is_position_reduce_only
from liqshell.ports import AnswerStatus
from liqshell.sim import auctions, engine
from liqshell.sim.world import Account, Holding, Market, SimOrder, SimParams, World, wallet_name

PARAMS = SimParams(accounts=1, minutes=1, seed=4)
MARKET = Market(PARAMS)
SYMBOL = next(
    s for s, i in MARKET.instruments.items() if i.option is not None and s.startswith("BTC")
)
W = wallet_name(0)


def world_with(amount: Decimal, symbol: str = SYMBOL) -> World:
    """A world with one account holding ``amount`` of ``symbol``."""
    holdings = {symbol: Holding(amount=amount, entry_price=Decimal(100))} if amount else {}
    account = Account(
        wallet=W,
        number=0,
        profile="steady",
        margin_mode=MarginMode.STANDARD,
        cash=Decimal(10_000),
        holdings=holdings,
    )
    return World(
        params=PARAMS,
        tick=0,
        now=PARAMS.start_ms,
        base={"BTC": Decimal(60_000), "ETH": Decimal(3_000)},
        spot={"BTC": Decimal(60_000), "ETH": Decimal(3_000)},
        accounts={W: account},
    )


def order(size: Decimal, price: Decimal, *, client: str = "liq-1") -> SubmitOrder:
    """A watcher order: a reduce-only BUY."""
    return SubmitOrder(
        wallet=W, symbol=SYMBOL, price=price, size=size, client_id=client, request_id=f"r-{client}"
    )


amounts = st.decimals(-50, 50, places=2, allow_nan=False, allow_infinity=False)
sizes = st.decimals(Decimal("0.01"), 60, places=2, allow_nan=False, allow_infinity=False)


@given(amount=amounts, size=sizes)
def test_submit_any_reduce_only_order_acked_iff_it_reduces(amount: Decimal, size: Decimal) -> None:
    """An order is acked exactly when it reduces |position| without crossing zero."""
    world = world_with(amount)
    answer = engine.submit(world, MARKET, order(size, Decimal(50)))
    new = amount + size
    reduces = is_position_reduce_only(amount, new)
    assert (answer.status is AnswerStatus.ACKED) == reduces
    assert len(world.orders) == (1 if reduces else 0)
    if not reduces:
        assert answer.reason
        assert world.stats.rejected == 1


def test_submit_risk_increasing_buy_on_long_rejected() -> None:
    """A reduce-only BUY on a long position would grow it: rejected with a reason."""
    world = world_with(Decimal(3))
    answer = engine.submit(world, MARKET, order(Decimal(1), Decimal(50)))
    assert answer.status is AnswerStatus.REJECTED
    assert "increase" in answer.reason


def test_submit_same_client_id_returns_first_ack() -> None:
    """Submits are idempotent by client id: the same order id, one resting order."""
    world = world_with(Decimal(-4))
    first = engine.submit(world, MARKET, order(Decimal(1), Decimal(50)))
    again = engine.submit(world, MARKET, order(Decimal(1), Decimal(50)))
    assert first.status is again.status is AnswerStatus.ACKED
    assert first.order_id == again.order_id
    assert len(world.orders) == 1


def test_submit_while_auction_live_rejected() -> None:
    """An account being auctioned takes no orders."""
    world = world_with(Decimal(-4))
    auctions.start(world, StartAuction(wallet=W, request_id="s"), Decimal(1))
    answer = engine.submit(world, MARKET, order(Decimal(1), Decimal(50)))
    assert answer.status is AnswerStatus.REJECTED
    assert "auction" in answer.reason


@given(offset_ticks=st.integers(-50, 50))
def test_match_buy_fills_iff_ask_at_or_below_limit(offset_ticks: int) -> None:
    """A resting BUY fills at its own price exactly when the ask is at or below it."""
    world = world_with(Decimal(-4))
    ask = MARKET.quote(world, SYMBOL).best_ask
    assert ask is not None
    limit = ask + Decimal(offset_ticks) / 10
    if limit <= 0:
        return
    answer = engine.submit(world, MARKET, order(Decimal("0.5"), limit))
    cash_before = world.accounts[W].cash
    engine.match(world, MARKET)
    filled = world.orders[str(answer.order_id)].status == "filled"
    assert filled == (ask <= limit)
    holding = world.accounts[W].holdings[SYMBOL]
    if filled:
        assert holding.amount == Decimal("-3.5")
        assert world.accounts[W].cash == cash_before - limit * Decimal("0.5")
    else:
        assert holding.amount == Decimal(-4)
        assert world.accounts[W].cash == cash_before


def test_match_reduce_only_fill_stops_at_flat_and_cancels_rest() -> None:
    """A reduce-only order larger than the position fills the position only, never crosses."""
    world = world_with(Decimal(-1))
    world.orders["7"] = SimOrder(
        order_id=7,
        wallet=W,
        symbol=SYMBOL,
        side=Side.BUY,
        price=Decimal(10**6),
        original_size=Decimal("1.5"),
        remaining_size=Decimal("1.5"),
        client_id="liq-x",
        created_at=0,
        reduce_only=True,
        by_watcher=True,
    )
    engine.match(world, MARKET)
    assert SYMBOL not in world.accounts[W].holdings
    assert world.orders["7"].status == "cancelled"
    assert world.orders["7"].remaining_size == Decimal("0.5")


def test_match_reduce_only_on_flat_position_cancelled_unfilled() -> None:
    """A reduce-only order whose position is gone is cancelled by the engine, not filled."""
    world = world_with(Decimal(0))
    world.orders["8"] = SimOrder(
        order_id=8,
        wallet=W,
        symbol=SYMBOL,
        side=Side.BUY,
        price=Decimal(10**6),
        original_size=Decimal(1),
        remaining_size=Decimal(1),
        client_id="liq-y",
        created_at=0,
        reduce_only=True,
    )
    engine.match(world, MARKET)
    assert world.orders["8"].status == "cancelled"
    assert world.accounts[W].holdings == {}
    assert world.accounts[W].cash == Decimal(10_000)


def test_cancel_open_order_then_again_benign_rejection() -> None:
    """Cancelling twice: CANCELED, then GONE (with the reason a text-only engine sends)."""
    world = world_with(Decimal(-4))
    acked = engine.submit(world, MARKET, order(Decimal(1), Decimal(1)))
    assert acked.order_id is not None
    command = CancelOrder(wallet=W, order_id=acked.order_id, client_id="liq-1", request_id="c")
    assert engine.cancel(world, command).status is AnswerStatus.CANCELED
    second = engine.cancel(world, command)
    assert second.status is AnswerStatus.GONE
    assert is_benign_cancel_rejection(second.reason)
    unknown = engine.cancel(world, CancelOrder(wallet=W, order_id=999, request_id="u"))
    assert unknown.status is AnswerStatus.GONE
    assert is_benign_cancel_rejection(unknown.reason)


def test_cancel_other_wallets_order_not_found() -> None:
    """A wallet cannot cancel another wallet's order."""
    world = world_with(Decimal(-4))
    acked = engine.submit(world, MARKET, order(Decimal(1), Decimal(1)))
    assert acked.order_id is not None
    answer = engine.cancel(
        world, CancelOrder(wallet="0xother", order_id=acked.order_id, request_id="c")
    )
    assert answer.status is AnswerStatus.GONE  # not this wallet's: not found
    assert world.orders[str(acked.order_id)].status == "open"
