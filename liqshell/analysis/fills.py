"""Fill estimates derived from a recording: what was bought, at what bonus.

A recording holds what the watcher decided and what it observed, not the exchange's
trades. :func:`derived_fills` estimates the fills of the watcher's liquidation orders from
the open-order snapshots each decision observed:

* a tracked order whose ``remaining_size`` dropped between two snapshots filled the
  difference (``how="remaining dropped"``);
* a tracked order that vanished from the snapshots although the watcher never sent its
  cancel and the engine did not reject it filled what remained (``how="vanished"``) — an
  estimate: an order the exchange expired or cancelled on its own looks the same.

Every :class:`Fill` is marked ``derived=True``. The bonus paid is the fill's size times its
price over the reference price (theo, else mid) at the time the order was placed — the
price the bonus was offered over.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs

from liqcore import CancelOrder, OrderFailed, OrderRejected, SubmitOrder
from liqshell.ports import RecordKind

__all__ = ["Fill", "derived_fills"]


@attrs.frozen(kw_only=True)
class Fill:
    """One fill (an estimate when ``derived``)."""

    wallet: str
    now: int
    """When the fill was observed (the snapshot that showed it), ms."""
    symbol: str
    client_id: str
    size: Decimal
    price: Decimal
    reference: Decimal | None
    """The reference price (theo, else mid) when the order was placed."""
    how: str
    derived: bool = True

    @property
    def notional(self) -> Decimal:
        """``size × price``."""
        return self.size * self.price

    @property
    def bonus_paid(self) -> Decimal:
        """``size × (price − reference)`` (0 without a reference price)."""
        if self.reference is None:
            return Decimal(0)
        return self.size * (self.price - self.reference)


@attrs.define
class _Order:
    symbol: str
    price: Decimal
    remaining: Decimal
    reference: Decimal | None
    order_id: int | None = None


@attrs.define
class _Wallet:
    open: dict[str, _Order] = attrs.field(factory=dict)
    cancelled: set[str] = attrs.field(factory=set)
    cancelled_ids: set[int] = attrs.field(factory=set)
    rejected: set[str] = attrs.field(factory=set)


def derived_fills(recording: Any) -> list[Fill]:
    """The fills of the watcher's liquidation orders, estimated from ``recording``'s
    open-order snapshots (see the module docs), in the order they were observed."""
    wallets: dict[str, _Wallet] = {}
    fills: list[Fill] = []
    for record in recording.records:
        book = wallets.setdefault(record.wallet, _Wallet())
        if record.kind is not RecordKind.DECISION:
            for event in record.events:
                if type(event) in {OrderRejected, OrderFailed}:
                    book.rejected.add(event.client_id)
            continue
        snapshot = {order.client_id: order for order in record.orders if order.client_id}
        for client_id, order in list(book.open.items()):
            seen = snapshot.get(client_id)
            if seen is not None:
                order.order_id = seen.order_id
                drop = order.remaining - seen.remaining_size
                if drop > 0:
                    fills.append(_fill(record, client_id, order, drop, "remaining dropped"))
                    order.remaining = seen.remaining_size
                continue
            del book.open[client_id]
            gone = client_id in book.cancelled or client_id in book.rejected
            if gone or (order.order_id is not None and order.order_id in book.cancelled_ids):
                continue
            if order.remaining > 0:
                fills.append(_fill(record, client_id, order, order.remaining, "vanished"))
        for command in record.commands:
            if type(command) is SubmitOrder:
                quote = record.health.quotes.get(command.symbol) if record.health else None
                reference = None if quote is None else (quote.theo or quote.mid)
                book.open[command.client_id] = _Order(
                    symbol=command.symbol,
                    price=command.price,
                    remaining=command.size,
                    reference=reference if reference is not None and reference > 0 else None,
                )
            elif type(command) is CancelOrder:
                book.cancelled_ids.add(command.order_id)
                if command.client_id is not None:
                    book.cancelled.add(command.client_id)
    return fills


def _fill(record: Any, client_id: str, order: _Order, size: Decimal, how: str) -> Fill:
    return Fill(
        wallet=record.wallet,
        now=record.now,
        symbol=order.symbol,
        client_id=client_id,
        size=size,
        price=order.price,
        reference=order.reference,
        how=how,
    )
