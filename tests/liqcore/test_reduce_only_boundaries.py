"""liqcore.reduce_only.is_position_reduce_only at its boundaries (issue 9).

The hand cases in test_reduce_only.py use positions of ±1 and more; these use longs and
shorts between 0 and 1 and a new amount of exactly 0, where ``current > 1`` for
``current > 0`` or ``new <= 0`` for ``new < 0`` would answer differently. Also the
private ``_liquidation_orders``, which only machine.py's orphan cancels call, and the walk
of ``reduce_only_order_ids`` over orders with nothing left to fill.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from liqcore.inputs import OpenOrder, Side
from liqcore.reduce_only import (
    _liquidation_orders,
    is_position_reduce_only,
    reduce_only_order_ids,
)


@pytest.mark.parametrize(
    ("current", "new", "expected"),
    [
        ("0.5", "0.25", True),  # a long below 1 shrinks
        ("0.5", "0", True),  # closed exactly
        ("0.5", "-0.1", False),  # crosses zero
        ("0.5", "-0.5", False),  # crosses zero to the same size
        ("0.5", "0.5", False),  # no change
        ("0.5", "0.75", False),  # grows
        ("0.00000001", "0", True),  # the smallest long, closed
        ("-0.5", "0", True),  # a short below 1 closed exactly
        ("-0.5", "-0.25", True),
        ("-0.5", "0.1", False),  # crosses zero
        ("-0.5", "-0.5", False),
        ("0", "0", False),  # nothing to reduce
        ("0", "-0.5", False),
        ("0", "0.5", False),
        ("0.0", "-0.0", False),  # a zero of either sign is zero
    ],
)
def test_is_position_reduce_only_between_zero_and_one(
    current: str, new: str, expected: bool
) -> None:
    assert is_position_reduce_only(Decimal(current), Decimal(new)) is expected


# --- _liquidation_orders (machine's orphan cancels use it; nothing else here covered it) ---


def _order(order_id: int, client_id: str | None) -> OpenOrder:
    return OpenOrder(
        order_id=order_id,
        symbol="BTC-20261231-100000-C",
        side=Side.BUY,
        price=Decimal(1),
        original_size=Decimal(1),
        remaining_size=Decimal(1),
        client_id=client_id,
        created_at=10 - order_id,
    )


def test_liquidation_orders_are_the_minted_and_the_tracked_in_their_given_order() -> None:
    """The wallet's ``liq-{wallet}-…`` orders and the tracked ones, in the order given (not
    by age); none without a client id, none of another wallet, no user order."""
    orders = [
        _order(1, "liq-w-5-0"),
        _order(2, None),
        _order(3, "user-tp"),
        _order(4, "liq-w2-5-0"),  # another wallet's prefix
        _order(5, "tracked-x"),
        _order(6, "liq-w-4-1"),
        _order(7, "liq-w"),  # the prefix needs its trailing dash
    ]
    found = _liquidation_orders(orders, wallet="w", tracked=("tracked-x",))
    assert [o.order_id for o in found] == [1, 5, 6]
    assert _liquidation_orders(orders, wallet="w", tracked=()) == [orders[0], orders[5]]
    assert _liquidation_orders([], wallet="w", tracked=("tracked-x",)) == []


# --- the walk over orders with nothing left ---------------------------------------------


@pytest.mark.parametrize(("side", "position"), [(Side.BUY, "-10"), (Side.SELL, "10")])
def test_an_order_with_nothing_remaining_is_not_reduce_only(side: Side, position: str) -> None:
    """A filled-out order (remaining 0) leaves the position as it is: not reduce-only
    (``|new| < |current|`` fails at equality), so it is not kept, and the order behind it
    still has the whole position to reduce."""
    symbol = "ETH-20270326-3000-P"

    def order(order_id: int, remaining: str) -> OpenOrder:
        return OpenOrder(
            order_id=order_id,
            symbol=symbol,
            side=side,
            price=Decimal(1),
            original_size=Decimal(10),
            remaining_size=Decimal(remaining),
            client_id=f"user-{order_id}",
            created_at=order_id,
        )

    positions = {symbol: Decimal(position)}
    assert reduce_only_order_ids(positions, [order(1, "0"), order(2, "10")]) == {2}
