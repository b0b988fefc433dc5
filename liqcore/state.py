"""Account liquidation state: the four phases and the one table of allowed transitions.

Theory of operation
-------------------
An account is in exactly one phase, a closed union matched with ``match``:

``Healthy``
    Nothing to do beyond cancelling a stray liquidation order (an *orphan*).
``PreLiquidation``
    Equity fell below maintenance margin. The backend closes just enough short options
    with reduce-only BUY orders, priced at a capped reference plus a bonus that ramps up
    with time, repriced every ``partial_reprice_interval_ms``. It carries the ids of the
    orders it placed (two parallel tuples: request id i pairs with client id i) and, once
    escalation was requested, the pending full-auction request.
``InLiquidation``
    An on-chain auction runs for the whole account; every open order is cancelled, and
    the auction is stopped if the account recovers.
``Liquidated``
    The auction settled; only an operator's ``AccountReset`` re-opens the account.

``step`` (observations) and ``apply`` (outcomes the shell reports) are the only functions
that move an account between phases; :data:`TRANSITIONS` lists every move either may make,
with its cause, and the documentation's diagram is drawn from it. Timestamps are int ms;
amounts are Decimals. What is deliberately not modelled: fills (positions are observed,
never predicted), partial auction results, and the exchange's own margin computation
(``Health`` carries its verdict).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal, TypeAlias

import attrs

from liqcore import _validators as v
from liqcore.errors import InvalidInput
from liqcore.inputs import MarginMode
from liqcore.numbers import CONTEXT, ZERO

__all__ = [
    "PHASE_TAGS",
    "TRANSITIONS",
    "AccountState",
    "Healthy",
    "InLiquidation",
    "Liquidated",
    "LiquidationMode",
    "Phase",
    "PreLiquidation",
    "Transition",
    "liquidation_mode",
    "material_change",
    "phase_tag",
]


@attrs.frozen(kw_only=True)
class Healthy:
    """Not liquidating."""


@attrs.frozen(kw_only=True)
class PreLiquidation:
    """Partial liquidation by reduce-only orders; see the module docstring."""

    entered_at: int = attrs.field(validator=v.integer)
    mm_shortfall: Decimal = attrs.field(validator=v.non_negative)
    target_equity: Decimal = attrs.field(validator=v.decimal)
    escalation_deadline: int = attrs.field(validator=v.integer)
    last_reprice_at: int | None = attrs.field(default=None, validator=v.optional_int)
    active_order_request_ids: tuple[str, ...] = attrs.field(default=(), validator=v.str_tuple)
    active_order_client_ids: tuple[str, ...] = attrs.field(default=(), validator=v.str_tuple)
    bonus_bps: int = attrs.field(validator=v.non_negative_int)
    pending_full_auction_id: str | None = attrs.field(default=None, validator=v.optional_text)
    pending_full_request_id: str | None = attrs.field(default=None, validator=v.optional_text)
    pending_full_requested_at: int | None = attrs.field(default=None, validator=v.optional_int)
    pending_full_tx_hash: str | None = attrs.field(default=None, validator=v.optional_text)
    pending_full_margin_needed: Decimal | None = attrs.field(
        default=None, validator=v.optional_decimal
    )

    def __attrs_post_init__(self) -> None:
        if len(self.active_order_request_ids) != len(self.active_order_client_ids):
            raise InvalidInput(
                "PreLiquidation.active_order_request_ids and active_order_client_ids must be "
                f"parallel, had {len(self.active_order_request_ids)} and "
                f"{len(self.active_order_client_ids)} entries"
            )
        if (self.pending_full_request_id is None) != (self.pending_full_requested_at is None):
            raise InvalidInput(
                "PreLiquidation.pending_full_requested_at must be set exactly when "
                "pending_full_request_id is"
            )


@attrs.frozen(kw_only=True)
class InLiquidation:
    """A full on-chain auction of the account is running."""

    auction_id: str = attrs.field(validator=v.text)
    entered_at: int = attrs.field(validator=v.integer)
    chain_start_time: int | None = attrs.field(default=None, validator=v.optional_int)
    stop_request_id: str | None = attrs.field(default=None, validator=v.optional_text)
    stop_requested_at: int | None = attrs.field(default=None, validator=v.optional_int)

    def __attrs_post_init__(self) -> None:
        if (self.stop_request_id is None) != (self.stop_requested_at is None):
            raise InvalidInput(
                "InLiquidation.stop_requested_at must be set exactly when stop_request_id is"
            )


@attrs.frozen(kw_only=True)
class Liquidated:
    """The auction settled; the account waits for an operator's reset."""

    auction_id: str = attrs.field(validator=v.text)
    liquidated_at: int = attrs.field(validator=v.integer)


Phase: TypeAlias = Healthy | PreLiquidation | InLiquidation | Liquidated
"""The closed union of phases."""

PhaseTag: TypeAlias = Literal["healthy", "pre_liquidation", "in_liquidation", "liquidated"]

PHASE_TAGS: dict[type[Phase], PhaseTag] = {
    Healthy: "healthy",
    PreLiquidation: "pre_liquidation",
    InLiquidation: "in_liquidation",
    Liquidated: "liquidated",
}
"""Stable wire tags of the phases (never derived from class names)."""

LiquidationMode: TypeAlias = Literal["partial", "full"]


def phase_tag(phase: Phase) -> PhaseTag:
    """The stable tag of ``phase`` (``"pre_liquidation"``, …)."""
    return PHASE_TAGS[type(phase)]


def liquidation_mode(phase: Phase) -> LiquidationMode | None:
    """``"partial"`` in PreLiquidation, ``"full"`` in InLiquidation, else ``None``."""
    if type(phase) is PreLiquidation:
        return "partial"
    if type(phase) is InLiquidation:
        return "full"
    return None


def _phase_valid(inst: AccountState, attribute: attrs.Attribute[Phase], value: object) -> None:
    if type(value) not in PHASE_TAGS:
        raise InvalidInput(f"AccountState.phase must be a Phase, was {value!r}")


@attrs.frozen(kw_only=True)
class AccountState:
    """One account's liquidation state as of ``updated_at`` (ms)."""

    wallet: str = attrs.field(validator=v.text)
    margin_mode: MarginMode = attrs.field(validator=v.instance_of(MarginMode))
    phase: Phase = attrs.field(factory=Healthy, validator=_phase_valid)
    equity: Decimal = attrs.field(default=ZERO, validator=v.decimal)
    mm_required: Decimal = attrs.field(default=ZERO, validator=v.non_negative)
    updated_at: int = attrs.field(validator=v.integer)
    last_closed_auction_id: str | None = attrs.field(default=None, validator=v.optional_text)

    @property
    def maintenance_margin(self) -> Decimal:
        """``equity − mm_required``."""
        return CONTEXT.subtract(self.equity, self.mm_required)

    @property
    def shortfall(self) -> Decimal:
        """``max(0, mm_required − equity)``."""
        return max(ZERO, CONTEXT.subtract(self.mm_required, self.equity))

    @property
    def liquidation_mode(self) -> LiquidationMode | None:
        """See :func:`liquidation_mode`."""
        return liquidation_mode(self.phase)


_new = object.__new__
_set = object.__setattr__  # how attrs' own __init__ assigns the fields of a frozen class


def _account_state_of_valid(
    *,
    wallet: str,
    margin_mode: MarginMode,
    phase: Phase,
    equity: Decimal,
    mm_required: Decimal,
    updated_at: int,
    last_closed_auction_id: str | None,
) -> AccountState:
    """``AccountState(...)`` without re-running its validators, for values that passed them.

    Only for ``step``'s new state, whose every value was validated by the same rule before:
    ``wallet``, ``margin_mode``, ``equity`` and ``mm_required`` are read from a ``Health``
    (whose validators are AccountState's), ``phase`` is a phase object (validated when
    built), ``updated_at`` is ``now`` (``step`` checks it is an int) and
    ``last_closed_auction_id`` is read from an ``AccountState``. Re-checking them would
    check nothing new and is most of the cost of a healthy step. The result is equal to
    the validated construction (a test in ``tests/liqcore/test_state.py`` says so, and
    fails if a field is added here but not there).
    """
    state: AccountState = _new(AccountState)
    _set(state, "wallet", wallet)
    _set(state, "margin_mode", margin_mode)
    _set(state, "phase", phase)
    _set(state, "equity", equity)
    _set(state, "mm_required", mm_required)
    _set(state, "updated_at", updated_at)
    _set(state, "last_closed_auction_id", last_closed_auction_id)
    return state


def material_change(previous: Phase, new: Phase) -> bool:
    """Whether a phase change is worth projecting (seed ``has_material_projection_change``).

    True iff the phase kind, bonus, the set of active client ids, any pending-full field
    except its timestamp, the auction id, chain start time or stop request id differ.
    Timestamps and refreshed shortfall/target alone are not material.
    """
    if type(previous) is not type(new):
        return True
    match previous, new:
        case PreLiquidation(), PreLiquidation():
            return (
                previous.bonus_bps != new.bonus_bps
                or set(previous.active_order_client_ids) != set(new.active_order_client_ids)
                or previous.pending_full_request_id != new.pending_full_request_id
                or previous.pending_full_auction_id != new.pending_full_auction_id
                or previous.pending_full_tx_hash != new.pending_full_tx_hash
                or previous.pending_full_margin_needed != new.pending_full_margin_needed
            )
        case InLiquidation(), InLiquidation():
            return (
                previous.auction_id != new.auction_id
                or previous.chain_start_time != new.chain_start_time
                or previous.stop_request_id != new.stop_request_id
            )
        case Liquidated(), Liquidated():
            return previous.auction_id != new.auction_id
        case _:
            return False


@attrs.frozen(kw_only=True)
class Transition:
    """One allowed move between phase kinds, and what causes it."""

    source: PhaseTag
    target: PhaseTag
    cause: str


TRANSITIONS: tuple[Transition, ...] = (
    Transition(
        source="healthy", target="pre_liquidation", cause="step: liquidatable, below target"
    ),
    Transition(source="healthy", target="in_liquidation", cause="apply: AuctionStarted"),
    Transition(
        source="pre_liquidation",
        target="healthy",
        cause="step: target met, no liquidation order open",
    ),
    Transition(source="pre_liquidation", target="in_liquidation", cause="apply: AuctionStarted"),
    Transition(source="pre_liquidation", target="liquidated", cause="apply: AuctionSettled"),
    Transition(source="in_liquidation", target="healthy", cause="apply: AuctionStopped"),
    Transition(source="in_liquidation", target="liquidated", cause="apply: AuctionSettled"),
    Transition(source="liquidated", target="healthy", cause="apply: AccountReset"),
)
"""Every phase change ``step`` or ``apply`` may make (staying in a phase is always allowed)."""
