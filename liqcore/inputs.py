"""What the core is told about the world: positions, portfolios, quotes, open orders, health.

All of it is frozen, keyword-only and validated at construction, so a bad observation fails
where it was built (naming the field) and never deep inside ``step``. Mappings are copied
into read-only views, so a caller mutating its dict afterwards cannot change an observation.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import TypeVar

import attrs

from liqcore import _validators as v
from liqcore.errors import InvalidInput
from liqcore.numbers import CONTEXT, MIN_SIZE, ZERO

__all__ = [
    "Health",
    "MarginMode",
    "OpenOrder",
    "Portfolio",
    "Position",
    "Quote",
    "Side",
    "TimeInForce",
]

T = TypeVar("T")


class MarginMode(enum.Enum):
    """How the exchange margins the account."""

    STANDARD = "standard"
    PORTFOLIO = "portfolio"


class Side(enum.Enum):
    """Order side."""

    BUY = "buy"
    SELL = "sell"


class TimeInForce(enum.Enum):
    """Order time in force (liquidation orders rest until cancelled)."""

    GTC = "gtc"


def _read_only(value: Mapping[str, T], field: str) -> Mapping[str, T]:
    # Exact types first: the ABC check of ``Mapping`` costs as much as the rest of a
    # healthy account's ``Health`` (it runs for every account of every poll).
    if type(value) is MappingProxyType:
        return value
    if type(value) is dict:
        return MappingProxyType(value.copy())
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{field} must be a mapping, was {value!r}")
    return MappingProxyType(dict(value))


# One converter per field, with concrete types, so typed callers may pass plain dicts.
def _positions(value: Mapping[str, Position]) -> Mapping[str, Position]:
    return _read_only(value, "Portfolio.positions")


def _spot(value: Mapping[str, Decimal]) -> Mapping[str, Decimal]:
    return _read_only(value, "Portfolio.spot")


def _quotes(value: Mapping[str, Quote]) -> Mapping[str, Quote]:
    return _read_only(value, "Health.quotes")


@attrs.frozen(kw_only=True)
class Position:
    """An executed position (seed ``PositionData``); ``amount`` < 0 is short."""

    symbol: str = attrs.field(validator=v.text)
    amount: Decimal = attrs.field(validator=v.decimal)
    entry_price: Decimal = attrs.field(validator=v.non_negative)
    unrealized_pnl: Decimal = attrs.field(default=ZERO, validator=v.decimal)
    realized_pnl: Decimal = attrs.field(default=ZERO, validator=v.decimal)
    margin_posted: Decimal = attrs.field(default=ZERO, validator=v.decimal)

    @property
    def mark_price(self) -> Decimal:
        """``entry_price + unrealized_pnl / amount`` (seed ``derive_portfolio_mark_price``)."""
        if self.amount.copy_abs() <= MIN_SIZE:
            raise InvalidInput(
                f"Position.amount of {self.symbol} is too small to derive a mark price: "
                f"{self.amount}"
            )
        return CONTEXT.add(self.entry_price, CONTEXT.divide(self.unrealized_pnl, self.amount))


def _positions_valid(
    inst: Portfolio, attribute: attrs.Attribute[Mapping[str, Position]], value: object
) -> None:
    assert type(value) is MappingProxyType or isinstance(value, Mapping)  # the converter's
    for symbol, position in value.items():
        if not isinstance(position, Position):
            raise InvalidInput(f"Portfolio.positions[{symbol!r}] must be a Position")
        if position.symbol != symbol:
            raise InvalidInput(
                f"Portfolio.positions key {symbol!r} differs from its symbol {position.symbol!r}"
            )


def _spot_valid(
    inst: Portfolio, attribute: attrs.Attribute[Mapping[str, Decimal]], value: object
) -> None:
    assert type(value) is MappingProxyType or isinstance(value, Mapping)  # the converter's
    for underlying, price in value.items():
        if type(underlying) is not str or not underlying:
            raise InvalidInput(f"Portfolio.spot key must be a non-empty str, was {underlying!r}")
        if type(price) is not Decimal or not price.is_finite():
            raise InvalidInput(
                f"Portfolio.spot[{underlying!r}] must be a finite Decimal, was {price!r}"
            )


@attrs.frozen(kw_only=True)
class Portfolio:
    """Cash, executed positions by symbol, and spot prices by underlying.

    Equity for both reference margin models is ``cash + Σ amount × mark``. A non-positive
    spot is accepted here (it is market data) and makes planning fail for that underlying.
    """

    cash: Decimal = attrs.field(default=ZERO, validator=v.decimal)
    positions: Mapping[str, Position] = attrs.field(
        factory=dict, converter=_positions, validator=_positions_valid
    )
    spot: Mapping[str, Decimal] = attrs.field(factory=dict, converter=_spot, validator=_spot_valid)


@attrs.frozen(kw_only=True)
class Quote:
    """Best bid/ask, mid and theoretical price of one symbol.

    Each is a finite Decimal or ``None``; a value ≤ 0 (an empty or broken book side) is
    accepted and means "no price" — odd market data must never make an account
    un-steppable.
    """

    best_bid: Decimal | None = attrs.field(default=None, validator=v.optional_decimal)
    best_ask: Decimal | None = attrs.field(default=None, validator=v.optional_decimal)
    mid: Decimal | None = attrs.field(default=None, validator=v.optional_decimal)
    theo: Decimal | None = attrs.field(default=None, validator=v.optional_decimal)


@attrs.frozen(kw_only=True)
class OpenOrder:
    """A resting order of the account (seed ``RuntimeOrderSummary``)."""

    order_id: int = attrs.field(validator=v.non_negative_int)
    symbol: str = attrs.field(validator=v.text)
    side: Side = attrs.field(validator=v.instance_of(Side))
    price: Decimal = attrs.field(validator=v.non_negative)
    original_size: Decimal = attrs.field(validator=v.non_negative)
    remaining_size: Decimal = attrs.field(validator=v.non_negative)
    client_id: str | None = attrs.field(default=None, validator=v.optional_text)
    created_at: int = attrs.field(validator=v.integer)
    is_perp: bool = attrs.field(default=False, validator=v.boolean)


def _quotes_valid(
    inst: Health, attribute: attrs.Attribute[Mapping[str, Quote]], value: object
) -> None:
    assert type(value) is MappingProxyType or isinstance(value, Mapping)  # the converter's
    for symbol, quote in value.items():
        if type(symbol) is not str or not isinstance(quote, Quote):
            raise InvalidInput(f"Health.quotes[{symbol!r}] must be a Quote, was {quote!r}")


@attrs.frozen(kw_only=True)
class Health:
    """What the exchange's margin engine said about one account this poll, plus the
    snapshot the planner needs. ``portfolio is None``: the snapshot was unavailable."""

    wallet: str = attrs.field(validator=v.text)
    margin_mode: MarginMode = attrs.field(validator=v.instance_of(MarginMode))
    equity: Decimal = attrs.field(validator=v.decimal)
    mm_required: Decimal = attrs.field(validator=v.non_negative)
    is_liquidatable: bool = attrs.field(validator=v.boolean)
    portfolio: Portfolio | None = attrs.field(
        default=None, validator=attrs.validators.optional(v.instance_of(Portfolio))
    )
    quotes: Mapping[str, Quote] = attrs.field(
        factory=dict, converter=_quotes, validator=_quotes_valid
    )

    @property
    def maintenance_margin(self) -> Decimal:
        """``equity − mm_required`` (negative when under-margined)."""
        return CONTEXT.subtract(self.equity, self.mm_required)

    @property
    def shortfall(self) -> Decimal:
        """``max(0, mm_required − equity)``."""
        return max(ZERO, CONTEXT.subtract(self.mm_required, self.equity))
