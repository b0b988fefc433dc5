"""Margin models: what closing part of a position changes in equity and maintenance margin.

A :class:`MarginModel` evaluates a :class:`~liqcore.inputs.Portfolio` from its positions
only (open orders are ignored, as the seed's ``position_mm`` / ``without_open_orders()``).
Two reference models ship — :class:`StandardMargin` (additive per position) and
:class:`PortfolioMargin` (scenario based, SPAN-like). Users may plug in any object with an
``evaluate`` method, e.g. their exchange's real margin engine.
"""

from __future__ import annotations

from liqcore.margin.base import MarginFacts, MarginModel
from liqcore.margin.portfolio import (
    YEAR_MS,
    PortfolioMargin,
    PreparedPortfolioMargin,
    black_scholes,
    normal_cdf,
)
from liqcore.margin.standard import StandardMargin

__all__ = [
    "YEAR_MS",
    "MarginFacts",
    "MarginModel",
    "PortfolioMargin",
    "PreparedPortfolioMargin",
    "StandardMargin",
    "black_scholes",
    "normal_cdf",
]
