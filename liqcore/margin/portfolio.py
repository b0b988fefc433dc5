"""Portfolio (scenario) margin: every option repriced with Black–Scholes on a grid of spot
and volatility shocks; MM is the worst scenario loss plus a short-option contingency."""

from __future__ import annotations

from decimal import Decimal

import attrs

from liqcore import _validators as v
from liqcore.errors import InvalidInput, PlanningError
from liqcore.inputs import Portfolio
from liqcore.margin.base import MarginFacts

__all__ = ["PortfolioMargin"]


def _shocks(
    inst: PortfolioMargin, attribute: attrs.Attribute[tuple[Decimal, ...]], value: object
) -> None:
    if type(value) is not tuple or not value:
        raise InvalidInput(f"PortfolioMargin.{attribute.name} must be a non-empty tuple")
    for shock in value:
        if type(shock) is not Decimal or not shock.is_finite() or shock <= -1:
            raise InvalidInput(
                f"PortfolioMargin.{attribute.name} entries must be finite Decimals > -1, "
                f"was {shock!r}"
            )


@attrs.frozen(kw_only=True)
class PortfolioMargin:
    """Scenario-based margin (the defaults are the seed's test margin config)."""

    spot_shocks: tuple[Decimal, ...] = attrs.field(
        default=(Decimal("-0.15"), Decimal(0), Decimal("0.15")), validator=_shocks
    )
    vol_shocks: tuple[Decimal, ...] = attrs.field(default=(Decimal(0),), validator=_shocks)
    base_volatility: Decimal = attrs.field(default=Decimal("0.8"), validator=v.positive)
    risk_free_rate: Decimal = attrs.field(default=Decimal("0.05"), validator=v.decimal)
    short_option_contingency: Decimal = attrs.field(default=Decimal(0), validator=v.non_negative)

    def evaluate(self, portfolio: Portfolio, now: int) -> MarginFacts:
        """Equity and mm_required of ``portfolio`` at ``now``."""
        raise PlanningError("portfolio margin is not implemented yet")
