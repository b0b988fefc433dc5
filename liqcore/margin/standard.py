"""Standard (per-position) margin: additive, so a close's relief is local to its position."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

import attrs

from liqcore import _validators as v
from liqcore.errors import PlanningError
from liqcore.inputs import Portfolio, Position
from liqcore.instruments import OptionSymbol, is_perp_symbol, option_symbol
from liqcore.margin.base import MarginFacts
from liqcore.numbers import CONTEXT, MIN_SIZE, ZERO

__all__ = ["StandardMargin", "spot_of"]


def spot_of(spot: Mapping[str, Decimal], underlying: str) -> Decimal:
    """The spot of ``underlying``, or :class:`PlanningError` when missing or non-positive."""
    price = spot.get(underlying)
    if price is None or not price.is_finite() or price <= 0:
        raise PlanningError(f"no usable spot price for {underlying}: {price!r}")
    return price


@attrs.frozen(kw_only=True)
class StandardMargin:
    """Per position: a short option needs ``|amount| × max(rate × S − OTM, floor_rate × S)``
    (OTM = ``max(0, K − S)`` for calls, ``max(0, S − K)`` for puts), a perp
    ``|amount| × S × perp_rate``, a long option nothing. Equity is ``cash + Σ amount × mark``.
    """

    rate: Decimal = attrs.field(default=Decimal("0.10"), validator=v.non_negative)
    floor_rate: Decimal = attrs.field(default=Decimal("0.05"), validator=v.non_negative)
    perp_rate: Decimal = attrs.field(default=Decimal("0.03"), validator=v.non_negative)

    def evaluate(self, portfolio: Portfolio, now: int) -> MarginFacts:
        """Equity and mm_required of ``portfolio`` (``now`` is unused: no time decay)."""
        equity = portfolio.cash
        mm = ZERO
        for position in portfolio.positions.values():
            if position.amount.copy_abs() <= MIN_SIZE:
                continue
            equity = CONTEXT.add(equity, CONTEXT.multiply(position.amount, position.mark_price))
            mm = CONTEXT.add(mm, self.position_mm(position, portfolio.spot))
        return MarginFacts(equity=equity, mm_required=mm)

    def position_mm(self, position: Position, spot: Mapping[str, Decimal]) -> Decimal:
        """Maintenance margin of one position (0 for a long option or dust)."""
        amount = position.amount
        if amount.copy_abs() <= MIN_SIZE:
            return ZERO
        option = option_symbol(position.symbol)
        if option is not None:
            if amount > 0:
                return ZERO
            return CONTEXT.multiply(amount.copy_negate(), self._option_unit_mm(option, spot))
        if is_perp_symbol(position.symbol):
            s = spot_of(spot, position.symbol[: -len("-PERP")])
            return CONTEXT.multiply(CONTEXT.multiply(amount.copy_abs(), s), self.perp_rate)
        raise PlanningError(f"standard margin cannot value {position.symbol!r}")

    def _option_unit_mm(self, option: OptionSymbol, spot: Mapping[str, Decimal]) -> Decimal:
        """Maintenance margin of one unit short of ``option``: ``max(rate × S − OTM,
        floor_rate × S)``. A short option's :meth:`position_mm` is ``|amount|`` times this."""
        s = spot_of(spot, option.underlying)
        if option.is_call:
            otm = max(ZERO, CONTEXT.subtract(option.strike, s))
        else:
            otm = max(ZERO, CONTEXT.subtract(s, option.strike))
        return max(
            CONTEXT.subtract(CONTEXT.multiply(self.rate, s), otm),
            CONTEXT.multiply(self.floor_rate, s),
        )
