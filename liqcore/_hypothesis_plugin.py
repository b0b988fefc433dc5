"""liqcore's ``hypothesis`` entry point: registers liqcore's types with ``st.from_type``.

Hypothesis runs its entry points while ``import hypothesis`` is still under way, and that
import may be the first line of :mod:`liqcore.strategies` itself — so this module imports
neither at its top, and registers a resolver that builds the strategies from
:func:`liqcore.strategies.type_strategies` when a type is first drawn.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from liqcore.commands import (
    Alert,
    CancelOrder,
    PublishStateChange,
    StartAuction,
    StateChange,
    StopAuction,
    SubmitOrder,
)
from liqcore.config import Config
from liqcore.events import (
    AccountReset,
    AuctionRequested,
    AuctionRequestFailed,
    AuctionSettled,
    AuctionStarted,
    AuctionStopped,
    OrderFailed,
    OrderRejected,
    StopRequestFailed,
)
from liqcore.inputs import Health, OpenOrder, Portfolio, Position, Quote
from liqcore.instruments import InstrumentSpec, OptionSymbol
from liqcore.margin.base import MarginFacts
from liqcore.margin.portfolio import PortfolioMargin
from liqcore.margin.standard import StandardMargin
from liqcore.state import AccountState, Healthy, InLiquidation, Liquidated, PreLiquidation

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

REGISTERED_TYPES: tuple[type[object], ...] = (
    OptionSymbol,
    InstrumentSpec,
    Position,
    Portfolio,
    Quote,
    OpenOrder,
    Health,
    StandardMargin,
    PortfolioMargin,
    MarginFacts,
    Config,
    AccountState,
    StateChange,
    Healthy,
    PreLiquidation,
    InLiquidation,
    Liquidated,
    OrderRejected,
    OrderFailed,
    AuctionRequested,
    AuctionRequestFailed,
    AuctionStarted,
    StopRequestFailed,
    AuctionStopped,
    AuctionSettled,
    AccountReset,
    CancelOrder,
    SubmitOrder,
    StartAuction,
    StopAuction,
    PublishStateChange,
    Alert,
)
"""The types :func:`liqcore.strategies.type_strategies` has a strategy for."""


@functools.cache
def _table() -> dict[type[object], SearchStrategy[object]]:
    from liqcore.strategies import type_strategies

    return type_strategies()


def _resolve(kind: type[object]) -> SearchStrategy[object]:
    return _table()[kind]


def setup() -> None:
    """Register a (lazy) strategy for each of :data:`REGISTERED_TYPES`."""
    from hypothesis import strategies as st

    for kind in REGISTERED_TYPES:
        st.register_type_strategy(kind, _resolve)
