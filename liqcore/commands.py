"""Commands: what ``step`` asks the shell to do, as plain data, in execution order.

Every command carries everything the shell needs and a deterministic request id
(:func:`liqcore.machine.request_id`), so replaying a recorded log reproduces it byte for
byte and two instances stepping the same observation agree.
"""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import TypeAlias

import attrs

from liqcore import _validators as v
from liqcore.errors import InvalidInput
from liqcore.inputs import MarginMode, Side, TimeInForce
from liqcore.state import PHASE_TAGS, AccountState, LiquidationMode, PhaseTag

__all__ = [
    "Alert",
    "AlertCode",
    "CancelOrder",
    "Command",
    "PublishStateChange",
    "StartAuction",
    "StateChange",
    "StopAuction",
    "SubmitOrder",
]


@attrs.frozen(kw_only=True)
class CancelOrder:
    """Cancel one open order of ``wallet``."""

    wallet: str = attrs.field(validator=v.text)
    order_id: int = attrs.field(validator=v.non_negative_int)
    client_id: str | None = attrs.field(default=None, validator=v.optional_text)
    request_id: str = attrs.field(validator=v.text)


_new = object.__new__
_set = object.__setattr__  # how attrs' own __init__ assigns the fields of a frozen class


def _cancel_order_of_valid(
    *, wallet: str, order_id: int, client_id: str | None, request_id: str
) -> CancelOrder:
    """``CancelOrder(...)`` without re-running its validators, for values that passed them.

    Only for ``step``'s cancels of the orders it was given: ``wallet`` is read from a
    ``Health`` (``v.text``, CancelOrder's rule), ``order_id`` and ``client_id`` from an
    ``OpenOrder`` (``v.non_negative_int`` and ``v.optional_text``, CancelOrder's rules) and
    ``request_id`` is a uuid5 string. The caller checks both are of the exact classes (a
    subclass could re-declare a field with a looser validator). The result equals the
    validated construction (a test in ``tests/liqcore/test_commands.py`` says so, and fails
    if a field is added here but not there).
    """
    command: CancelOrder = _new(CancelOrder)
    _set(command, "wallet", wallet)
    _set(command, "order_id", order_id)
    _set(command, "client_id", client_id)
    _set(command, "request_id", request_id)
    return command


def _buy(inst: SubmitOrder, attribute: attrs.Attribute[Side], value: object) -> None:
    if value is not Side.BUY:
        raise InvalidInput(f"SubmitOrder.side must be Side.BUY (closing shorts), was {value!r}")


def _reduce_only(inst: SubmitOrder, attribute: attrs.Attribute[bool], value: object) -> None:
    if value is not True:
        raise InvalidInput(f"SubmitOrder.reduce_only must be True, was {value!r}")


@attrs.frozen(kw_only=True)
class SubmitOrder:
    """Place a reduce-only BUY that closes part of a short option.

    ``size`` is in human units; the adapter converts to contract units.
    """

    wallet: str = attrs.field(validator=v.text)
    symbol: str = attrs.field(validator=v.text)
    side: Side = attrs.field(default=Side.BUY, validator=_buy)
    price: Decimal = attrs.field(validator=v.positive)
    size: Decimal = attrs.field(validator=v.positive)
    client_id: str = attrs.field(validator=v.text)
    request_id: str = attrs.field(validator=v.text)
    reduce_only: bool = attrs.field(default=True, validator=_reduce_only)
    tif: TimeInForce = attrs.field(default=TimeInForce.GTC, validator=v.instance_of(TimeInForce))


@attrs.frozen(kw_only=True)
class StartAuction:
    """Request a full on-chain auction of ``wallet``."""

    wallet: str = attrs.field(validator=v.text)
    request_id: str = attrs.field(validator=v.text)


@attrs.frozen(kw_only=True)
class StopAuction:
    """Stop ``wallet``'s running auction (the account recovered)."""

    wallet: str = attrs.field(validator=v.text)
    auction_id: str = attrs.field(validator=v.text)
    chain_start_time: int = attrs.field(validator=v.integer)
    request_id: str = attrs.field(validator=v.text)


_PHASE_TAG_VALUES: tuple[str, ...] = tuple(PHASE_TAGS.values())
_MODES: tuple[str, ...] = ("partial", "full")


def _phase_tag(inst: StateChange, attribute: attrs.Attribute[PhaseTag], value: object) -> None:
    if type(value) is not str or value not in _PHASE_TAG_VALUES:
        raise InvalidInput(
            f"StateChange.{attribute.name} must be a phase tag {_PHASE_TAG_VALUES}, was {value!r}"
        )


def _mode(
    inst: StateChange, attribute: attrs.Attribute[LiquidationMode | None], value: object
) -> None:
    if value is not None and (type(value) is not str or value not in _MODES):
        raise InvalidInput(
            f"StateChange.{attribute.name} must be 'partial', 'full' or None, was {value!r}"
        )


@attrs.frozen(kw_only=True)
class StateChange:
    """The seed's ``LiquidationStateMessage``: a projection of one state change."""

    wallet: str = attrs.field(validator=v.text)
    previous_phase: PhaseTag = attrs.field(validator=_phase_tag)
    new_phase: PhaseTag = attrs.field(validator=_phase_tag)
    previous_mode: LiquidationMode | None = attrs.field(validator=_mode)
    mode: LiquidationMode | None = attrs.field(validator=_mode)
    margin_mode: MarginMode = attrs.field(validator=v.instance_of(MarginMode))
    equity: Decimal = attrs.field(validator=v.decimal)
    mm_required: Decimal = attrs.field(validator=v.decimal)
    maintenance_margin: Decimal = attrs.field(validator=v.decimal)
    shortfall: Decimal = attrs.field(validator=v.decimal)
    previous_auction_id: str | None = attrs.field(validator=v.optional_text)
    auction_id: str | None = attrs.field(validator=v.optional_text)
    projection_changed: bool = attrs.field(validator=v.boolean)
    state: AccountState = attrs.field(validator=v.instance_of(AccountState))
    timestamp: int = attrs.field(validator=v.integer)


@attrs.frozen(kw_only=True)
class PublishStateChange:
    """Publish ``change`` to the exchange's event stream."""

    change: StateChange = attrs.field(validator=v.instance_of(StateChange))


class AlertCode(enum.Enum):
    """Why an :class:`Alert` was raised."""

    PLANNING_FAILED = "planning_failed"
    NO_HELPFUL_CLOSE = "no_helpful_close"
    MARGIN_MODEL_MISMATCH = "margin_model_mismatch"
    STUCK = "stuck"
    """The account overstays a phase (:func:`liqcore.overstay`)."""


@attrs.frozen(kw_only=True)
class Alert:
    """A diagnostic for the shell to log and count; the core never logs."""

    wallet: str = attrs.field(validator=v.text)
    code: AlertCode = attrs.field(validator=v.instance_of(AlertCode))
    message: str = attrs.field(validator=v.text)


Command: TypeAlias = (
    CancelOrder | SubmitOrder | StartAuction | StopAuction | PublishStateChange | Alert
)
"""The closed union of commands."""
