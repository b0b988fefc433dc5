"""Why ``step`` decided what it did: reasons for each transition and command.

:func:`explain` is a pure function of ``step``'s inputs (previous state, health, open
orders, ``now``, config) and its outputs (new state, commands): a recording holds all of
them, so the explanation of any recorded decision is reproduced exactly by replay and
never needs storing. :func:`explain_event` does the same for an outcome or chain event
folded in with :func:`~liqcore.machine.apply`.

Each :class:`Reason` has a stable ``code`` (:class:`ReasonCode`) and a sentence with the
figures it rests on (equity, maintenance margin, shortfall, threshold, deadline, bonus,
planning inputs), written for the account's owner.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from decimal import Decimal

import attrs

from liqcore.commands import Alert, CancelOrder, Command, StartAuction, StopAuction, SubmitOrder
from liqcore.config import Config
from liqcore.events import (
    AuctionSettled,
    AuctionStarted,
    AuctionStopped,
    Event,
)
from liqcore.inputs import Health, OpenOrder
from liqcore.state import (
    AccountState,
    Healthy,
    InLiquidation,
    Liquidated,
    PreLiquidation,
    phase_tag,
)
from liqcore.targets import is_above_partial_target, required_mm_relief, target_equity_from_mm

__all__ = ["Explanation", "Reason", "ReasonCode", "explain", "explain_event"]


class ReasonCode(enum.Enum):
    """What a :class:`Reason` explains."""

    ENTERED = "entered"
    """Healthy → pre-liquidation: liquidatable and the shortfall at or above the threshold."""
    NOT_ENTERED = "not_entered"
    """Liquidatable but left healthy (shortfall below the threshold, or above the target)."""
    ESCALATED = "escalated"
    """A full auction requested: equity < 0, no short option left, or the deadline passed."""
    WAITING_FOR_AUCTION = "waiting_for_auction"
    """A full-auction request is pending: orders are cancelled while it waits."""
    REPRICED = "repriced"
    """New liquidation orders planned and submitted at the current bonus."""
    PLANNING = "planning"
    """The planning inputs of a reprice: candidates, relief needed, cost, bonus."""
    HOLDING = "holding"
    """Still in pre-liquidation, orders working; the next reprice is due later."""
    RECOVERED = "recovered"
    """Pre-liquidation → healthy: above the partial target, or nothing left to close."""
    STOP_REQUESTED = "stop_requested"
    """The account recovered during a full auction: the auction is asked to stop."""
    CANCELLED = "cancelled"
    """An order is cancelled (why: reprice, orphan, pending auction, recovery)."""
    ALERT = "alert"
    """An alert ``step`` raised (planning failed, no helpful close, model mismatch)."""
    AUCTION = "auction"
    """An outcome or chain event moved the account (auction started, settled, stopped)."""


@attrs.frozen(kw_only=True)
class Reason:
    """One reason: a stable code and a sentence with the figures."""

    code: ReasonCode
    text: str


@attrs.frozen(kw_only=True)
class Explanation:
    """The reasons of one decision (or event) of one wallet at ``now``."""

    wallet: str
    now: int
    previous_phase: str
    phase: str
    reasons: tuple[Reason, ...]

    @property
    def transition(self) -> str | None:
        """``"healthy -> pre_liquidation"``, or ``None`` when the phase did not change."""
        if self.previous_phase == self.phase:
            return None
        return f"{self.previous_phase} -> {self.phase}"


def _money(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01')):,}" if value.is_finite() else str(value)


def _seconds(ms: int) -> str:
    return f"{ms / 1000:g} s"


def explain(  # noqa: PLR0917
    previous: AccountState | None,
    health: Health,
    orders: Sequence[OpenOrder],
    now: int,
    config: Config,
    state: AccountState,
    commands: Sequence[Command],
) -> Explanation:
    """The reasons ``step(previous, health, orders, now, config)`` returned ``(state,
    commands)``: for the transition, then for each command."""
    before = previous.phase if previous is not None else Healthy()
    after = state.phase
    reasons: list[Reason] = []
    buffer = config.partial_target_buffer_bps
    target = target_equity_from_mm(health.mm_required, buffer)
    figures = (
        f"equity {_money(health.equity)}, maintenance margin required "
        f"{_money(health.mm_required)}, shortfall {_money(health.shortfall)}"
    )
    starts = any(type(c) is StartAuction for c in commands)
    entered = type(before) is not PreLiquidation and type(after) is PreLiquidation
    entered = entered and type(before) is Healthy

    if entered:
        reasons.append(
            Reason(
                code=ReasonCode.ENTERED,
                text=(
                    f"entered pre-liquidation: the account is liquidatable ({figures}); the "
                    f"shortfall is at or above the threshold "
                    f"{_money(config.min_shortfall_threshold)} and equity is below the "
                    f"partial target {_money(target)} (maintenance margin + "
                    f"{buffer} bps); a full auction follows if still short by "
                    f"{_seconds(config.full_escalation_timeout_ms)} from now"
                ),
            )
        )
    elif type(before) is Healthy and type(after) is Healthy and health.is_liquidatable:
        above = is_above_partial_target(health.equity, health.mm_required, buffer)
        because = (
            f"equity is above the partial target {_money(target)}"
            if above
            else f"the shortfall is below the threshold {_money(config.min_shortfall_threshold)}"
        )
        reasons.append(
            Reason(
                code=ReasonCode.NOT_ENTERED,
                text=f"left healthy although liquidatable ({figures}): {because}",
            )
        )

    if starts:
        deadline = before.escalation_deadline if type(before) is PreLiquidation else None
        if type(after) is PreLiquidation:
            deadline = after.escalation_deadline
        why: list[str] = []
        if health.equity < 0:
            why.append(f"equity {_money(health.equity)} is below zero")
        shorts = _short_options(health, now)
        if shorts is not None and not shorts:
            why.append("no short option is left to close with orders")
        if deadline is not None and now >= deadline:
            why.append(f"the escalation deadline passed ({_seconds(now - deadline)} ago)")
        reasons.append(
            Reason(
                code=ReasonCode.ESCALATED,
                text=(
                    "escalated to a full auction: "
                    + ("; ".join(why) or "the account could not be brought back with orders")
                    + f" ({figures})"
                ),
            )
        )
    elif (
        type(before) is PreLiquidation
        and type(after) is PreLiquidation
        and after.pending_full_request_id is not None
    ):
        reasons.append(
            Reason(
                code=ReasonCode.WAITING_FOR_AUCTION,
                text=(
                    "waiting for the full auction requested at "
                    f"{after.pending_full_requested_at}: open orders are cancelled meanwhile"
                ),
            )
        )

    submits = [c for c in commands if type(c) is SubmitOrder]
    if submits and type(after) is PreLiquidation:
        reasons.append(_repriced(before, after, now, config))
        reasons.append(_planning(health, submits, config))
    elif (
        type(after) is PreLiquidation
        and after.pending_full_request_id is None
        and not entered
        and not starts
    ):
        due = (
            None
            if after.last_reprice_at is None
            else after.last_reprice_at + config.partial_reprice_interval_ms
        )
        working = len(after.active_order_client_ids)
        reasons.append(
            Reason(
                code=ReasonCode.HOLDING,
                text=(
                    f"in pre-liquidation ({figures}), bonus {after.bonus_bps} bps, "
                    f"{working} liquidation order(s) working"
                    + (f"; next reprice due at {due}" if due is not None and due > now else "")
                ),
            )
        )

    if type(before) is PreLiquidation and type(after) is Healthy:
        above = is_above_partial_target(health.equity, health.mm_required, buffer)
        why_text = (
            f"equity {_money(health.equity)} is above the partial target {_money(target)}"
            if above
            else "the account is no longer liquidatable and holds no short option"
        )
        reasons.append(
            Reason(
                code=ReasonCode.RECOVERED,
                text=f"recovered after {_seconds(now - before.entered_at)}: {why_text}",
            )
        )

    for command in commands:
        if type(command) is StopAuction:
            reasons.append(
                Reason(
                    code=ReasonCode.STOP_REQUESTED,
                    text=(
                        f"the account recovered during auction {command.auction_id} "
                        f"({figures}, not liquidatable): asked to stop the auction"
                    ),
                )
            )
        elif type(command) is CancelOrder:
            reasons.append(
                Reason(
                    code=ReasonCode.CANCELLED,
                    text=f"cancel order {command.order_id}: {_cancel_why(before, after, submits)}",
                )
            )
        elif type(command) is Alert:
            reasons.append(
                Reason(
                    code=ReasonCode.ALERT,
                    text=f"alert {command.code.value}: {command.message}",
                )
            )
    return Explanation(
        wallet=health.wallet,
        now=now,
        previous_phase=phase_tag(before),
        phase=phase_tag(after),
        reasons=tuple(reasons),
    )


def _short_options(health: Health, now: int) -> list[str] | None:
    """The non-expired short options of the portfolio (``None``: no portfolio known)."""
    from liqcore.instruments import option_symbol
    from liqcore.numbers import MIN_SIZE

    if health.portfolio is None:
        return None
    shorts = []
    for symbol, position in sorted(health.portfolio.positions.items()):
        if position.amount < -MIN_SIZE:
            option = option_symbol(symbol)
            if option is not None and option.expires_at > now:
                shorts.append(symbol)
    return shorts


def _repriced(before: object, after: PreLiquidation, now: int, config: Config) -> Reason:
    elapsed = now - after.entered_at
    ramp = (
        f"the ramp goes from {config.partial_bonus_start_bps} to "
        f"{config.partial_bonus_max_bps} bps over {_seconds(config.partial_bonus_ramp_ms)}"
    )
    first = type(before) is not PreLiquidation or before.last_reprice_at is None
    return Reason(
        code=ReasonCode.REPRICED,
        text=(
            f"{'placed the first' if first else 'repriced the'} liquidation orders at a bonus "
            f"of {after.bonus_bps} bps, {_seconds(elapsed)} after entry ({ramp})"
        ),
    )


def _planning(health: Health, submits: list[SubmitOrder], config: Config) -> Reason:
    relief = required_mm_relief(health.equity, health.mm_required, config.partial_target_buffer_bps)
    cost = sum((s.price * s.size for s in submits), Decimal(0))
    bonus = Decimal(0)
    priced = True
    for submit in submits:
        quote = health.quotes.get(submit.symbol)
        reference = None if quote is None else (quote.theo or quote.mid)
        if reference is None or reference <= 0:
            priced = False
            continue
        bonus += (submit.price - reference) * submit.size
    candidates = (
        0
        if health.portfolio is None
        else sum(1 for p in health.portfolio.positions.values() if p.amount < 0)
    )
    orders = ", ".join(f"buy {s.size} {s.symbol} at {s.price}" for s in submits)
    return Reason(
        code=ReasonCode.PLANNING,
        text=(
            f"planning: {candidates} short position(s) as candidates, "
            f"{_money(relief)} of maintenance-margin relief needed; {orders}; cost "
            f"{_money(cost)}, bonus over the reference price {_money(bonus)}"
            + ("" if priced else " (some symbols had no reference price)")
        ),
    )


def _cancel_why(before: object, after: object, submits: list[SubmitOrder]) -> str:
    if type(after) is PreLiquidation and after.pending_full_request_id is not None:
        return "a full auction is requested: every open order is cancelled"
    if type(after) is InLiquidation:
        return "the account is being auctioned: every open order is cancelled"
    if type(after) is Healthy and type(before) is PreLiquidation:
        return "the account recovered: its liquidation orders are withdrawn"
    if type(after) in {Healthy, Liquidated}:
        return "a liquidation order left over outside pre-liquidation (an orphan)"
    if submits or type(after) is PreLiquidation:
        return "replaced at the new bonus (a reprice), or no longer reducing the position"
    return "no longer needed"


def explain_event(
    previous: AccountState, event: Event, now: int, state: AccountState
) -> Explanation:
    """The reason an outcome or chain ``event`` folded into ``previous`` gave ``state``."""
    reasons: list[Reason] = []
    if state != previous:
        match event:
            case AuctionStarted():
                text = f"the full auction {event.auction_id} started on chain"
            case AuctionSettled():
                text = f"the full auction {event.auction_id} settled: the account is liquidated"
            case AuctionStopped():
                text = f"the full auction {event.auction_id} was stopped: the account recovered"
            case _:
                text = f"{type(event).__name__} folded in"
        reasons.append(Reason(code=ReasonCode.AUCTION, text=text))
    return Explanation(
        wallet=state.wallet,
        now=now,
        previous_phase=phase_tag(previous.phase),
        phase=phase_tag(state.phase),
        reasons=tuple(reasons),
    )
