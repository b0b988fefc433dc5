"""The margin-model protocol and its answer."""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol

import attrs

from liqcore import _validators as v
from liqcore.inputs import Portfolio

__all__ = ["MarginFacts", "MarginModel"]


@attrs.frozen(kw_only=True)
class MarginFacts:
    """Equity and maintenance margin required, as a model (or the exchange) sees them."""

    equity: Decimal = attrs.field(validator=v.decimal)
    mm_required: Decimal = attrs.field(validator=v.decimal)


class MarginModel(Protocol):
    """Anything that can value a portfolio's equity and maintenance margin at ``now``.

    Must raise :class:`~liqcore.errors.PlanningError` (not anything else) when it cannot
    evaluate the portfolio, e.g. a missing or non-positive spot for an underlying.
    Closing part of a lone short option should never raise the margin it requires (under
    scenario margin a hedged book can: see :mod:`liqcore.margin.portfolio`).
    """

    def evaluate(self, portfolio: Portfolio, now: int) -> MarginFacts:
        """Equity and mm_required of ``portfolio`` at ``now`` (ms)."""
        ...
