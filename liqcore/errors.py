"""The exceptions liqcore raises.

Every one of them derives from :class:`LiqcoreError`, so a caller can catch the whole
family at one boundary. They are raised for broken contracts (a wrong type, a NaN, a
malformed symbol, an invalid config) — never because the market is odd: a missing quote
or an unavailable portfolio is an *observation* that ``step`` answers with an ``Alert``.
"""

from __future__ import annotations

__all__ = ["InvalidConfig", "InvalidInput", "InvalidSymbol", "LiqcoreError", "PlanningError"]


class LiqcoreError(Exception):
    """Base class of every liqcore error."""


class InvalidInput(LiqcoreError, ValueError):
    """A value handed to liqcore is of the wrong type, non-finite or out of range.

    The message names the field, e.g. ``Position.amount must be a finite Decimal, was nan``.
    """


class InvalidSymbol(InvalidInput):
    """An option symbol does not parse as ``UNDERLYING-YYYYMMDD-STRIKE-C|P``."""


class InvalidConfig(InvalidInput):
    """A :class:`~liqcore.Config` field is out of range (names the field)."""


class PlanningError(LiqcoreError):
    """A liquidation plan could not be computed (no price, no spot, a model failure).

    ``step`` never lets it escape: it becomes an ``Alert(PLANNING_FAILED)``.
    """
