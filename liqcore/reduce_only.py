"""Which open orders may stay while an account is liquidated, and which are cancelled.

An order may stay only if it is *reduce-only*: filled, it shrinks its position towards zero
without crossing it. Orders are judged one after another against what the earlier ones
leave of the position, so two orders that each close the whole position are not both
kept. The wallet's own tracked liquidation orders are judged first, so a user's
overlapping order is the one cancelled — judged purely by age (as the seed does), our
order, sized against the whole position, would be cancelled and replaced on every reprice.

A *liquidation order* carries a client id we track or one we would have minted
(``liq-{wallet}-…``); one we do not track is an *orphan* (its submit answer was lost, or an
older set's cancel failed) and is always cancelled, so an account never has two live sets.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from decimal import Decimal

import attrs

from liqcore import _validators as v
from liqcore.inputs import OpenOrder, Side
from liqcore.numbers import CONTEXT, ZERO

__all__ = [
    "CancelTarget",
    "cancel_targets",
    "is_benign_cancel_rejection",
    "is_liquidation_order",
    "is_position_reduce_only",
    "liquidation_client_id",
    "reduce_only_order_ids",
]

_BENIGN_CANCEL_REASONS = (
    "already been completed",
    "already filled",
    "already cancelled",
    "already canceled",
    "not found",
)


def is_position_reduce_only(current: Decimal, new: Decimal) -> bool:
    """True iff ``current != 0``, ``new`` does not cross zero and ``|new| < |current|``."""
    if current == 0:
        return False
    if (current > 0 and new < 0) or (current < 0 and new > 0):
        return False
    # copy_abs is exact; abs() would round in the caller's decimal context.
    return new.copy_abs() < current.copy_abs()


_age: Callable[[OpenOrder], tuple[int, int]] = operator.attrgetter("created_at", "order_id")
"""The sort key oldest first: ``(created_at, order_id)`` (attrgetter: no Python call per order)."""


def reduce_only_order_ids(
    positions: Mapping[str, Decimal],
    orders: Iterable[OpenOrder],
    *,
    first: Collection[str] = (),
) -> frozenset[int]:
    """Ids of the orders that are reduce-only when filled one after another.

    The orders whose client id is in ``first`` are walked first, then all others, each
    group oldest first (``(created_at, order_id)``). An order that is reduce-only against
    what remains of its symbol's position (missing symbols count as 0) is kept and moves
    that remainder; one that is not leaves it untouched. Perp orders count like any other.
    """
    return _reduce_only_walk(positions, sorted(orders, key=_age), frozenset(first))


def _reduce_only_walk(
    positions: Mapping[str, Decimal], by_age: list[OpenOrder], first: frozenset[str]
) -> frozenset[int]:
    """``reduce_only_order_ids`` for orders already sorted oldest first.

    Taking the ``first`` orders out of the sorted list, then the others, gives the walk
    order without a second sort (sorting is stable, so each group stays oldest first).
    """
    walk = [o for o in by_age if o.client_id in first]
    walk += [o for o in by_age if o.client_id not in first]
    remaining = dict(positions)
    kept: set[int] = set()
    add, buy = CONTEXT.add, Side.BUY
    for order in walk:
        current = remaining.get(order.symbol, ZERO)
        size = order.remaining_size
        # The order's signed size and is_position_reduce_only, inline (no calls per order).
        new = add(current, size if order.side is buy else size.copy_negate())
        if current == 0 or (current > 0 and new < 0) or (current < 0 and new > 0):
            continue
        if new.copy_abs() < current.copy_abs():
            remaining[order.symbol] = new
            kept.add(order.order_id)
    return frozenset(kept)


def liquidation_client_id(wallet: str, now: int, index: int) -> str:
    """The client id of the ``index``-th liquidation order submitted at ``now``."""
    return f"liq-{wallet}-{now}-{index}"


def is_liquidation_order(order: OpenOrder, *, wallet: str, tracked: Collection[str]) -> bool:
    """True iff the order's client id is tracked or starts with ``liq-{wallet}-``."""
    return _is_liquidation(order.client_id, tracked, _minted_prefix(wallet))


def _liquidation_orders(
    orders: Iterable[OpenOrder], *, wallet: str, tracked: Collection[str]
) -> list[OpenOrder]:
    """The orders ``is_liquidation_order`` accepts, in their order (the prefix built once)."""
    prefix = _minted_prefix(wallet)
    return [order for order in orders if _is_liquidation(order.client_id, tracked, prefix)]


def _minted_prefix(wallet: str) -> str:
    return f"liq-{wallet}-"


def _is_liquidation(client_id: str | None, tracked: Collection[str], prefix: str) -> bool:
    return client_id is not None and (client_id in tracked or client_id.startswith(prefix))


@attrs.frozen(kw_only=True)
class CancelTarget:
    """An open order to cancel (seed ``CancelTarget``)."""

    order_id: int = attrs.field(validator=v.non_negative_int)
    client_id: str | None = attrs.field(default=None, validator=v.optional_text)


def cancel_targets(
    open_orders: Sequence[OpenOrder],
    positions: Mapping[str, Decimal] | None,
    tracked_ids: Sequence[str],
    cancel_liquidation_orders: bool,
    *,
    wallet: str,
) -> tuple[tuple[CancelTarget, ...], tuple[str, ...]]:
    """The orders to cancel, and the client ids of the wallet's open liquidation orders.

    [sync_and_cancel_orders] The open liquidation ids come in snapshot order, each once.
    ``positions is None`` (portfolio unavailable): nothing is cancelled — without positions
    no order can be judged. Otherwise cancel every orphan, every liquidation order when
    ``cancel_liquidation_orders``, and every other order that is not reduce-only once the
    orders that stay live are counted (tracked liquidation orders walked first; the
    orders cancelled anyway do not use up the position, so a trader's genuine reduce-only
    order is not cancelled because of one of ours that is going); one target per
    liquidation client id and per other order id, oldest first.
    """
    cancel, open_liquidation_ids = _cancel_orders(
        open_orders, positions, tracked_ids, cancel_liquidation_orders, wallet=wallet
    )
    targets = tuple(
        CancelTarget(order_id=order.order_id, client_id=order.client_id) for order in cancel
    )
    return targets, open_liquidation_ids


def _cancel_orders(
    open_orders: Sequence[OpenOrder],
    positions: Mapping[str, Decimal] | None,
    tracked_ids: Sequence[str],
    cancel_liquidation_orders: bool,
    *,
    wallet: str,
) -> tuple[list[OpenOrder], tuple[str, ...]]:
    """:func:`cancel_targets` with the orders to cancel themselves (``step`` builds its
    commands from them, with no :class:`CancelTarget` on the way)."""
    tracked = frozenset(tracked_ids)
    prefix = _minted_prefix(wallet)  # once, not per order
    open_ids: dict[str, None] = {}
    for order in open_orders:
        client_id = order.client_id
        if client_id is not None and (client_id in tracked or client_id.startswith(prefix)):
            open_ids[client_id] = None
    open_liquidation_ids = tuple(open_ids)
    if positions is None:
        return [], open_liquidation_ids

    # An order is a liquidation order iff its client id is one of ``open_ids`` (each client
    # id was judged once above); ``None`` is never among them.
    # Sort once: the walk and the targets both go oldest first.
    by_age = sorted(open_orders, key=_age)
    # Orders cancelled whatever the walk says (orphans; every liquidation order when asked)
    # do not use up the position: a trader's reduce-only order behind them stays.
    anyway: set[int] = set()
    for order in by_age:
        if order.client_id in open_ids and (
            cancel_liquidation_orders or order.client_id not in tracked
        ):
            anyway.add(order.order_id)
    staying = [order for order in by_age if order.order_id not in anyway]
    reduce_only = _reduce_only_walk(positions, staying, tracked)
    cancel: list[OpenOrder] = []
    seen: set[tuple[str, str | int]] = set()
    for order in by_age:
        if order.order_id not in anyway and order.order_id in reduce_only:
            continue
        # Tagged keys: a client id can never collide with an order id.
        client_id = order.client_id
        key: tuple[str, str | int] = (
            ("client", client_id)
            if client_id is not None and client_id in open_ids
            else ("order", order.order_id)
        )
        if key not in seen:
            seen.add(key)
            cancel.append(order)
    return cancel, open_liquidation_ids


def is_benign_cancel_rejection(reason: str) -> bool:
    """True iff a rejected cancel means the order is gone anyway (the shell counts it done).

    The reason contains, case-insensitively, "already been completed", "already filled",
    "already cancelled", "already canceled" or "not found". Engines word these messages
    differently ("Order not found", "order has already been completed"), so a substring
    match ignoring case is the safe reading; a false "benign" only delays a cancel to the
    next step, which cancels again while the order is open.
    """
    text = reason.casefold()
    return any(phrase in text for phrase in _BENIGN_CANCEL_REASONS)
