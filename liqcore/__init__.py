"""liqcore: the pure core of liquidation for options exchanges.

``step(state, health, orders, now, config) -> (state, commands)`` decides; ``apply(state,
event, now)`` folds outcomes in. Everything here is pure and deterministic: no I/O, no
clock, no randomness, no logging.
"""

from __future__ import annotations

from liqcore.commands import (
    Alert,
    AlertCode,
    CancelOrder,
    Command,
    PublishStateChange,
    StartAuction,
    StateChange,
    StopAuction,
    SubmitOrder,
)
from liqcore.config import Config
from liqcore.errors import InvalidConfig, InvalidInput, InvalidSymbol, LiqcoreError, PlanningError
from liqcore.events import (
    AccountReset,
    AuctionRequested,
    AuctionRequestFailed,
    AuctionSettled,
    AuctionStarted,
    AuctionStopped,
    Event,
    OrderFailed,
    OrderRejected,
    StopRequestFailed,
)
from liqcore.inputs import Health, MarginMode, OpenOrder, Portfolio, Position, Quote, Side, TimeInForce
from liqcore.instruments import InstrumentSpec, OptionKind, OptionSymbol
from liqcore.margin import MarginFacts, MarginModel, PortfolioMargin, StandardMargin
from liqcore.numbers import BPS, MIN_SIZE, to_decimal
from liqcore.state import (
    TRANSITIONS,
    AccountState,
    Healthy,
    InLiquidation,
    Liquidated,
    Phase,
    PreLiquidation,
    liquidation_mode,
    material_change,
)
from liqcore.targets import (
    is_above_partial_target,
    partial_bonus_bps,
    required_mm_relief,
    target_equity_from_mm,
)

__all__ = [
    "BPS",
    "MIN_SIZE",
    "TRANSITIONS",
    "AccountReset",
    "AccountState",
    "Alert",
    "AlertCode",
    "AuctionRequestFailed",
    "AuctionRequested",
    "AuctionSettled",
    "AuctionStarted",
    "AuctionStopped",
    "CancelOrder",
    "Command",
    "Config",
    "Event",
    "Health",
    "Healthy",
    "InLiquidation",
    "InstrumentSpec",
    "InvalidConfig",
    "InvalidInput",
    "InvalidSymbol",
    "LiqcoreError",
    "Liquidated",
    "MarginFacts",
    "MarginMode",
    "MarginModel",
    "OpenOrder",
    "OptionKind",
    "OptionSymbol",
    "OrderFailed",
    "OrderRejected",
    "Phase",
    "PlanningError",
    "Portfolio",
    "PortfolioMargin",
    "Position",
    "PreLiquidation",
    "PublishStateChange",
    "Quote",
    "Side",
    "StandardMargin",
    "StartAuction",
    "StateChange",
    "StopAuction",
    "StopRequestFailed",
    "SubmitOrder",
    "TimeInForce",
    "is_above_partial_target",
    "liquidation_mode",
    "material_change",
    "partial_bonus_bps",
    "required_mm_relief",
    "target_equity_from_mm",
    "to_decimal",
]
