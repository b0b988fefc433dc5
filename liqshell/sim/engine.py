"""The simulated order engine: acks, rejects, cancels and fills orders.

Reduce-only is enforced by the engine, as a real exchange does: a reduce-only order that
would not reduce the position (open it, grow it or cross zero) is rejected at submit, and
at fill time it fills at most what is left of the position — the rest is cancelled by the
engine. An account whose auction is pending or running takes no new orders.

Orders rest until the market reaches them: at each tick (:func:`match`), a BUY fills when
the ask is at or below its limit, a SELL when the bid is at or above it, at the order's own
price, up to the depth the book shows at that tick, in price-time priority. Matching only
happens between ticks, in a fixed order, so fills never depend on the order in which the
watcher's concurrent tasks submitted.
"""

from __future__ import annotations

from decimal import Decimal

from liqcore import CancelOrder, Side, SubmitOrder
from liqcore.numbers import CONTEXT
from liqcore.reduce_only import is_position_reduce_only
from liqshell.ports import AnswerStatus, OrderAnswer
from liqshell.sim.market import rng
from liqshell.sim.world import ORDER_ID_BLOCK, Holding, Market, SimOrder, World

__all__ = ["cancel", "has_live_auction", "match", "submit"]

ZERO = Decimal(0)


def has_live_auction(world: World, wallet: str) -> bool:
    """An auction of ``wallet`` is pending, running or being stopped."""
    return any(
        a.wallet == wallet and a.status in ("pending", "running", "stopping")
        for a in world.auctions.values()
    )


def _signed(side: Side, size: Decimal) -> Decimal:
    return size if side is Side.BUY else -size


def submit(world: World, market: Market, command: SubmitOrder) -> OrderAnswer:
    """Ack (the order rests) or reject ``command``; a client id seen before gets the first
    answer again (submits are idempotent by client id)."""
    for order in world.orders.values():
        if order.wallet == command.wallet and order.client_id == command.client_id:
            return OrderAnswer(status=AnswerStatus.ACKED, order_id=order.order_id)
    account = world.accounts.get(command.wallet)
    reason = ""
    if account is None:
        reason = "unknown account"
    elif command.symbol not in market.instruments:
        reason = f"unknown symbol {command.symbol}"
    elif has_live_auction(world, command.wallet):
        reason = "account is being auctioned"
    elif command.reduce_only:
        holding = account.holdings.get(command.symbol)
        current = holding.amount if holding is not None else ZERO
        new = CONTEXT.add(current, _signed(command.side, command.size))
        if current == 0:
            reason = "reduce-only order on a flat position"
        elif not is_position_reduce_only(current, new):
            reason = "reduce-only order would increase the position"
    if reason or account is None:
        world.stats.rejected += 1
        return OrderAnswer(status=AnswerStatus.REJECTED, reason=reason)
    account.order_seq += 1
    order_id = account.number * ORDER_ID_BLOCK + account.order_seq
    world.orders[str(order_id)] = SimOrder(
        order_id=order_id,
        wallet=command.wallet,
        symbol=command.symbol,
        side=command.side,
        price=command.price,
        original_size=command.size,
        remaining_size=command.size,
        client_id=command.client_id,
        created_at=world.now,
        reduce_only=command.reduce_only,
        by_watcher=True,
    )
    world.stats.submitted += 1
    return OrderAnswer(status=AnswerStatus.ACKED, order_id=order_id)


def cancel(world: World, command: CancelOrder) -> OrderAnswer:
    """Cancel an open order of the wallet; a closed or unknown one is answered ``GONE`` with
    the reason a real engine gives."""
    order = world.orders.get(str(command.order_id))
    if order is None or order.wallet != command.wallet:
        world.stats.cancel_rejected += 1
        return OrderAnswer(status=AnswerStatus.GONE, reason="order not found")
    if order.status != "open":
        world.stats.cancel_rejected += 1
        verb = "filled" if order.status == "filled" else "cancelled"
        return OrderAnswer(status=AnswerStatus.GONE, reason=f"order already {verb}")
    order.status = "cancelled"
    world.stats.cancelled += 1
    return OrderAnswer(status=AnswerStatus.CANCELED)


def _fill(
    world: World, account_holdings: dict[str, Holding], order: SimOrder, size: Decimal
) -> None:
    """Move ``size`` of ``order`` into the position and cash."""
    account = world.accounts[order.wallet]
    holding = account_holdings.get(order.symbol)
    delta = _signed(order.side, size)
    if holding is None or holding.amount == 0:
        account_holdings[order.symbol] = Holding(amount=delta, entry_price=order.price)
    else:
        new = CONTEXT.add(holding.amount, delta)
        if (holding.amount > 0) == (delta > 0):  # growing: average the entry
            cost = CONTEXT.add(
                CONTEXT.multiply(holding.amount, holding.entry_price),
                CONTEXT.multiply(delta, order.price),
            )
            holding.entry_price = CONTEXT.divide(cost, new).quantize(Decimal("0.00000001"))
        elif new != 0 and (new > 0) != (holding.amount > 0):  # crossed: a new position
            holding.entry_price = order.price
        holding.amount = new
        if new == 0:
            del account_holdings[order.symbol]
    account.cash = CONTEXT.subtract(account.cash, CONTEXT.multiply(delta, order.price))
    order.remaining_size = CONTEXT.subtract(order.remaining_size, size)
    world.stats.fills += 1
    if order.by_watcher:
        world.stats.filled_size = CONTEXT.add(world.stats.filled_size, size)
    if order.remaining_size <= 0:
        order.remaining_size = ZERO
        order.status = "filled"
        if order.by_watcher:
            world.stats.filled_orders += 1


def match(world: World, market: Market) -> None:
    """Fill the resting orders the market reached at this tick (see the module docs)."""
    by_symbol: dict[str, list[SimOrder]] = {}
    for order in world.orders.values():
        if order.status == "open":
            by_symbol.setdefault(order.symbol, []).append(order)
    for symbol in sorted(by_symbol):
        book = market.quote(world, symbol)
        instrument = market.instruments[symbol]
        draw = rng(world.params.seed, f"depth|{symbol}|{world.tick}")
        depth = {
            Side.BUY: instrument.depth * Decimal(str(round(draw.uniform(0.5, 1.5), 2))),
            Side.SELL: instrument.depth * Decimal(str(round(draw.uniform(0.5, 1.5), 2))),
        }
        fair = market.mark(world, symbol)
        orders = by_symbol[symbol]
        orders.sort(key=lambda o: (o.side.value, -o.price, o.created_at, o.order_id))
        for order in orders:
            if order.side is Side.BUY:
                reached = book.best_ask is not None and 0 < book.best_ask <= order.price
            else:
                reached = (
                    book.best_bid is not None and book.best_bid > 0 and book.best_bid >= order.price
                )
            if not reached or depth[order.side] <= 0:
                continue
            holdings = world.accounts[order.wallet].holdings
            size = min(order.remaining_size, depth[order.side])
            if order.reduce_only:
                holding = holdings.get(order.symbol)
                current = holding.amount if holding is not None else ZERO
                reducing = current < 0 if order.side is Side.BUY else current > 0
                size = min(size, abs(current)) if reducing else ZERO
                if size <= 0:
                    order.status = "cancelled"
                    world.stats.engine_cancelled += 1
                    continue
            depth[order.side] -= size
            if order.by_watcher:
                bonus = CONTEXT.multiply(size, CONTEXT.subtract(order.price, fair))
                world.stats.bonus_paid = CONTEXT.add(world.stats.bonus_paid, bonus)
            _fill(world, holdings, order, size)
            if order.reduce_only and order.status == "open" and order.symbol not in holdings:
                order.status = "cancelled"  # position closed: a reduce-only rest cannot open one
                world.stats.engine_cancelled += 1
