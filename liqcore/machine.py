"""The liquidation state machine: ``step`` decides, ``apply`` folds outcomes in.

Theory of operation
-------------------
One account at a time. The shell observes the account — the exchange margin engine's
verdict and the portfolio snapshot (:class:`~liqcore.inputs.Health`) plus the wallet's open
orders — and calls ``step(state, health, orders, now, config)``. ``step`` returns the new
:class:`~liqcore.state.AccountState` and a tuple of commands for the shell to execute, in
order. The shell reports what came of them (an order rejected, an auction receipt, the
chain's auction events, an operator's reset) through ``apply(state, event, now)``, which
returns the folded state and never emits anything. Both are pure: the same arguments give
the same results on every machine, so a recorded log replays exactly and several instances
agree on every decision; every request id is a uuid5 of ``(kind, wallet, now, key)``.

Phases (see :mod:`liqcore.state`; every move between them is in ``TRANSITIONS``):

* **Healthy** — enter PreLiquidation when the engine says liquidatable, the shortfall
  reaches ``min_shortfall_threshold`` and equity is below the partial target (an account
  already above target would enter and leave in one step, flapping every poll). Otherwise
  only cancel orphans: open orders whose client id is ``liq-{wallet}-…``. This is most
  accounts on most polls, so it is a fast path: the general path's answer without its
  dispatch, and without re-validating values that passed the same validators already.
* **PreLiquidation** — a pending full-auction request first: a confirmed one (a receipt
  came back) waits for the chain; an unconfirmed one waits until it is stale
  (``pending_full_requested_at + full_escalation_timeout_ms``) and is then cleared. While
  either waits, every open order of the wallet is cancelled and only the tracked orders
  still open stay tracked (the account is about to be auctioned whole; SPEC's "stop here"
  read safely).
  Next, escalation (only while liquidatable and below target: negative equity, no short
  option left, or the deadline passed): cancel every open order, ``StartAuction``. Else
  the partial cycle: cancel what ``reduce_only.cancel_targets`` says; recover to Healthy
  when the account is done and no liquidation order (tracked or orphan) is open; reprice
  only when due *and* no liquidation order is open (otherwise cancel them and wait), by
  planning reduce-only BUYs with ``planning.plan_partial_orders`` anchored on ``Health``.
* **InLiquidation** — cancel every open order (the auctioned portfolio must not change);
  once the account recovered and the chain start time is known, ``StopAuction`` (again
  if a stop went unanswered past the timeout; a stop unanswered past the timeout of an
  account liquidatable again is dropped instead, and the auction goes on).
* **Liquidated** — only orphans are cancelled; an operator's ``AccountReset`` re-opens.

Whatever the phase, when the state a step leaves behind has overstayed a deadline nothing
in the step could act on (:func:`liqcore.deadlines.overstay`), the step raises an
``Alert`` with ``AlertCode.STUCK``.

Command order within one step: the ``PublishStateChange`` of an entry into
PreLiquidation, then the ``CancelOrder`` commands (sorted by ``(created_at, order_id)``),
then the ``SubmitOrder`` commands (plan order), then ``Alert`` commands, then
``StartAuction`` / ``StopAuction``,
then the final ``PublishStateChange``. The final publish is emitted exactly when the phase
object at the end differs from the one the step started from (after an entry: from the
entered phase) — the seed's ``metadata != original_metadata`` rule; a publish whose only
news is a refreshed shortfall, target or timestamp carries ``projection_changed=False``.
``StateChange.auction_id`` is the ``auction_id`` field of the new phase, else of the
previous one (only InLiquidation and Liquidated have one; a PreLiquidation's
``pending_full_auction_id`` is not reported there — it is in ``state``).

Deliberately not modelled: fills and their prices (positions are observed, never
predicted), the exchange's margin computation (``Health`` is its verdict; the configured
model only says what a close changes), the auction itself (the chain's events arrive via
``apply``), retries and timeouts of I/O (the shell's; a lost answer is reconciled from the
next snapshot), and which instance acts (the shell's compare-and-set store).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import assert_never, cast, get_args

import attrs

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
    _cancel_order_of_valid,
)
from liqcore.config import Config
from liqcore.deadlines import overstay
from liqcore.errors import InvalidInput, PlanningError
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
from liqcore.inputs import Health, OpenOrder, Portfolio
from liqcore.instruments import option_symbol
from liqcore.margin.base import MarginFacts
from liqcore.numbers import CONTEXT, MIN_SIZE, ONE, tidy
from liqcore.planning import plan_partial_orders
from liqcore.reduce_only import _cancel_orders, _liquidation_orders, liquidation_client_id
from liqcore.state import (
    AccountState,
    Healthy,
    InLiquidation,
    Liquidated,
    Phase,
    PreLiquidation,
    _account_state_of_valid,
    liquidation_mode,
    material_change,
    phase_tag,
)
from liqcore.targets import (
    is_above_partial_target,
    partial_bonus_bps,
    required_mm_relief,
    target_equity_from_mm,
)

__all__ = [
    "LIQCORE_NAMESPACE",
    "apply",
    "next_wakeup",
    "request_id",
    "step",
    "wallets_to_check",
]

LIQCORE_NAMESPACE: uuid.UUID = uuid.uuid5(uuid.NAMESPACE_URL, "liqcore")
"""The uuid5 namespace of every request id liqcore makes."""
_NAMESPACE_BYTES = LIQCORE_NAMESPACE.bytes

_DEFAULT_CONFIG = Config()
_HEALTHY = Healthy()
_EXACT_STATE_TYPES: tuple[type, ...] = (AccountState, type(None))
_LIQUIDATING = frozenset({PreLiquidation, InLiquidation})
_EVENT_TYPES: tuple[type, ...] = get_args(Event)
_MISMATCH_FRACTION = Decimal("0.01")


def request_id(kind: str, wallet: str, now: int, key: int) -> str:
    """``str(uuid5(LIQCORE_NAMESPACE, f"{kind}|{wallet}|{now}|{key}"))``.

    Kinds: ``cancel`` (key = order id), ``submit`` (key = index in the step), ``start`` and
    ``stop`` (key 0). The same request at the same instant always gets the same id.
    """
    if type(kind) is not str or not kind:
        raise InvalidInput(f"request_id kind must be a non-empty str, was {kind!r}")
    if type(wallet) is not str or not wallet:
        raise InvalidInput(f"request_id wallet must be a non-empty str, was {wallet!r}")
    if type(now) is not int or type(key) is not int:
        raise InvalidInput(f"request_id now and key must be ints, were {now!r} and {key!r}")
    return _uuid5(f"{kind}|{wallet}|{now}|{key}")


def _uuid5(name: str) -> str:
    """``str(uuid.uuid5(LIQCORE_NAMESPACE, name))`` spelled out (RFC 4122 §4.3).

    The first 16 bytes of SHA-1(namespace + name) with the version (5) and variant bits
    set, in 8-4-4-4-12 hex; building a ``uuid.UUID`` on the way costs more than the hash.
    Equality with ``uuid.uuid5`` is tested.
    """
    digest = hashlib.sha1(_NAMESPACE_BYTES + name.encode(), usedforsecurity=False).digest()
    raw = bytearray(digest[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # variant RFC 4122
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


# --------------------------------------------------------------------------- step


def step(
    state: AccountState | None,
    health: Health,
    orders: Sequence[OpenOrder],
    now: int,
    config: Config = _DEFAULT_CONFIG,
) -> tuple[AccountState, tuple[Command, ...]]:
    """Decide what to do about one account, given this poll's observation (SPEC §7).

    ``state`` is ``None`` for a wallet not yet tracked; ``orders`` are the wallet's open
    orders. Returns the new state (``updated_at = now``) and the commands in execution
    order. Raises :class:`InvalidInput` only for broken contracts (wrong types, a health of
    another wallet); odd market data yields commands and ``Alert`` commands, never an exception.
    """
    if type(now) is not int:
        raise InvalidInput(f"step now must be an int (ms), was {now!r}")
    if not isinstance(health, Health):
        raise InvalidInput(f"step health must be a Health, was {health!r}")
    if not isinstance(config, Config):
        raise InvalidInput(f"step config must be a Config, was {config!r}")
    orders = _checked_orders(orders)
    if state is None:
        start: Phase = _HEALTHY
        closed = None
    elif not isinstance(state, AccountState):
        raise InvalidInput(f"step state must be an AccountState or None, was {state!r}")
    elif state.wallet != health.wallet:
        raise InvalidInput(
            f"step health.wallet {health.wallet!r} differs from state.wallet {state.wallet!r}"
        )
    else:
        start = state.phase
        closed = state.last_closed_auction_id

    if type(start) is Healthy and not _should_enter(health, config):
        # The fast path, most accounts on most polls: it stays healthy, at most orphans to
        # cancel. It is _decide's answer (tests/liqcore/test_machine.py checks that), with
        # no dispatch, no command list, no publish check and no re-validation.
        new_state = _still_healthy(state, health, start, now, closed)
        return new_state, _orphan_cancels(health.wallet, orders, now)
    return _decide(start=start, closed=closed, health=health, orders=orders, now=now, config=config)


def _still_healthy(
    state: AccountState | None, health: Health, phase: Healthy, now: int, closed: str | None
) -> AccountState:
    """``_decide``'s new state for a Healthy account that stays so.

    Every value passed AccountState's validators already (``health``'s fields by the same
    rules, ``phase`` and ``closed`` in ``state``, ``now`` in ``step``), so they are not run
    again — unless ``health`` or ``state`` is of a subclass, which could have re-declared a
    field with a looser validator.
    """
    if type(health) is Health and type(state) in _EXACT_STATE_TYPES:
        return _account_state_of_valid(
            wallet=health.wallet,
            margin_mode=health.margin_mode,
            phase=phase,
            equity=health.equity,
            mm_required=health.mm_required,
            updated_at=now,
            last_closed_auction_id=closed,
        )
    return _account(health, phase, now, closed)


def _decide(
    *,
    start: Phase,
    closed: str | None,
    health: Health,
    orders: tuple[OpenOrder, ...],
    now: int,
    config: Config,
) -> tuple[AccountState, tuple[Command, ...]]:
    """The general path of ``step``, once its arguments are checked: one arm per phase."""
    wallet = health.wallet
    entry: list[Command] = []
    new_phase: Phase
    effects: list[Command]
    match start:
        case Healthy():
            if not _should_enter(health, config):
                new_phase, effects = start, list(_orphan_cancels(wallet, orders, now))
            else:
                entered = PreLiquidation(
                    entered_at=now,
                    mm_shortfall=health.shortfall,
                    target_equity=target_equity_from_mm(
                        health.mm_required, config.partial_target_buffer_bps
                    ),
                    escalation_deadline=now + config.full_escalation_timeout_ms,
                    bonus_bps=config.partial_bonus_start_bps,
                )
                entry.append(_publish(start, _account(health, entered, now, closed), now))
                start = entered
                new_phase, effects = _pre_liquidation(entered, health, orders, now, config)
        case PreLiquidation():
            new_phase, effects = _pre_liquidation(start, health, orders, now, config)
        case InLiquidation():
            new_phase, effects = _in_liquidation(start, health, orders, now, config)
        case Liquidated():
            new_phase, effects = start, list(_orphan_cancels(wallet, orders, now))
        case _:
            assert_never(start)

    new_state = _account(health, new_phase, now, closed)
    stuck = overstay(new_state, now, config)
    if stuck is not None:
        # With the other alerts: before any StartAuction / StopAuction (none is emitted
        # by a step that leaves an overstaying state, but the order stays the documented one).
        at = next(
            (i for i, c in enumerate(effects) if isinstance(c, StartAuction | StopAuction)),
            len(effects),
        )
        effects.insert(at, _alert(wallet, AlertCode.STUCK, stuck.describe(now)))
    if new_phase != start:
        effects.append(_publish(start, new_state, now))
    return new_state, (*entry, *effects)


def _checked_orders(orders: object) -> tuple[OpenOrder, ...]:
    if type(orders) is not tuple:  # a tuple skips the (slow) abstract-class check
        if not isinstance(orders, Sequence):
            raise InvalidInput(f"step orders must be a sequence of OpenOrder, was {orders!r}")
        orders = tuple(orders)
    for order in orders:
        if not isinstance(order, OpenOrder):
            raise InvalidInput(f"step orders must contain OpenOrders only, had {order!r}")
    return cast("tuple[OpenOrder, ...]", orders)


def _account(health: Health, phase: Phase, now: int, closed: str | None) -> AccountState:
    return AccountState(
        wallet=health.wallet,
        margin_mode=health.margin_mode,
        phase=phase,
        equity=health.equity,
        mm_required=health.mm_required,
        updated_at=now,
        last_closed_auction_id=closed,
    )


def _should_enter(health: Health, config: Config) -> bool:
    return (
        health.is_liquidatable
        and health.shortfall >= config.min_shortfall_threshold
        and not is_above_partial_target(
            health.equity, health.mm_required, config.partial_target_buffer_bps
        )
    )


def _pre_liquidation(
    phase: PreLiquidation,
    health: Health,
    orders: tuple[OpenOrder, ...],
    now: int,
    config: Config,
) -> tuple[Phase, list[Command]]:
    """SPEC §7 step 3: pending request, escalation, then the partial cycle."""
    wallet = health.wallet
    buffer_bps = config.partial_target_buffer_bps
    phase = attrs.evolve(
        phase,
        mm_shortfall=health.shortfall,
        target_equity=target_equity_from_mm(health.mm_required, buffer_bps),
    )

    # a. A pending full-auction request. The account is about to be auctioned whole, so
    # every open order is cancelled while it waits (a user order placed since, or a cancel
    # of the escalation that was lost), and only the tracked orders still open stay tracked.
    if phase.pending_full_auction_id is not None:
        # Confirmed: only the chain's events move it on.
        return _tracking_open(phase, orders), list(_cancels(wallet, orders, now))
    requested_at = phase.pending_full_requested_at  # set exactly with the request id
    if requested_at is not None:
        if now <= requested_at + config.full_escalation_timeout_ms:
            return _tracking_open(phase, orders), list(_cancels(wallet, orders, now))
        phase = attrs.evolve(
            phase,
            pending_full_auction_id=None,
            pending_full_request_id=None,
            pending_full_requested_at=None,
            pending_full_tx_hash=None,
            pending_full_margin_needed=None,
        )

    # b. Escalation to a full auction.
    above = is_above_partial_target(health.equity, health.mm_required, buffer_bps)
    has_shorts = _has_short_options(health.portfolio, now)
    if (
        health.is_liquidatable
        and not above
        and (health.equity < 0 or has_shorts is False or now >= phase.escalation_deadline)
    ):
        start_id = request_id("start", wallet, now, 0)
        effects: list[Command] = list(_cancels(wallet, orders, now))
        effects.append(StartAuction(wallet=wallet, request_id=start_id))
        return attrs.evolve(
            _tracking_open(phase, orders),
            pending_full_request_id=start_id,
            pending_full_requested_at=now,
        ), effects

    # c. The partial cycle.
    bonus = partial_bonus_bps(
        config.partial_bonus_start_bps,
        config.partial_bonus_max_bps,
        config.partial_bonus_ramp_ms,
        phase.entered_at,
        now,
    )
    last = phase.last_reprice_at
    reprice_due = last is None or now - last >= config.partial_reprice_interval_ms or now < last
    done = above or (not health.is_liquidatable and has_shorts is False)
    positions = (
        None
        if health.portfolio is None
        else {
            symbol: p.amount
            for symbol, p in health.portfolio.positions.items()
            if p.amount.copy_abs() > MIN_SIZE  # dust is no position (SPEC §6)
        }
    )
    cancel, open_ids = _cancel_orders(
        orders, positions, phase.active_order_client_ids, done or reprice_due, wallet=wallet
    )
    effects = _cancel_commands(health, cancel, now)

    if done or not reprice_due or open_ids:
        if done and not open_ids:
            return _HEALTHY, effects
        # Keep tracking the tracked pairs still open; last_reprice_at stays, so the first
        # step that finds no liquidation order open reprices.
        still_open = set(open_ids)
        pairs = [
            (request, client)
            for request, client in zip(
                phase.active_order_request_ids, phase.active_order_client_ids, strict=True
            )
            if client in still_open
        ]
        return attrs.evolve(
            phase,
            bonus_bps=bonus,
            active_order_request_ids=tuple(request for request, _ in pairs),
            active_order_client_ids=tuple(client for _, client in pairs),
        ), effects

    repriced, planned = _reprice(phase, bonus, health, now, config)
    effects.extend(planned)
    return repriced, effects


def _reprice(
    phase: PreLiquidation,
    bonus: int,
    health: Health,
    now: int,
    config: Config,
) -> tuple[Phase, list[Command]]:
    """Plan and submit a new set of liquidation orders (none is open)."""
    wallet = health.wallet
    portfolio = health.portfolio
    if portfolio is None:
        return _planning_failed(phase, bonus, wallet, "planning failed: no portfolio snapshot")
    try:
        plan = plan_partial_orders(
            portfolio,
            health.quotes,
            bonus,
            config,
            health.margin_mode,
            now,
            anchor=MarginFacts(equity=health.equity, mm_required=health.mm_required),
        )
    except PlanningError as error:
        return _planning_failed(phase, bonus, wallet, f"planning failed: {error}")

    effects: list[Command] = []
    submits = [
        SubmitOrder(
            wallet=wallet,
            symbol=order.symbol,
            price=order.limit_price,
            size=order.close_size,
            client_id=liquidation_client_id(wallet, now, index),
            request_id=request_id("submit", wallet, now, index),
        )
        for index, order in enumerate(plan.orders)
    ]
    effects.extend(submits)
    if plan.unpriced:
        named = "; ".join(f"{symbol}: {why}" for symbol, why in sorted(plan.unpriced.items()))
        effects.append(
            _alert(wallet, AlertCode.PLANNING_FAILED, f"left out, no usable price: {named}")
        )
    mismatch = _model_mismatch(plan.model_facts, health)
    if mismatch is not None:
        effects.append(_alert(wallet, AlertCode.MARGIN_MODEL_MISMATCH, mismatch))
    if not submits:
        relief = required_mm_relief(
            health.equity, health.mm_required, config.partial_target_buffer_bps
        )
        if relief > MIN_SIZE:
            effects.append(
                _alert(
                    wallet,
                    AlertCode.NO_HELPFUL_CLOSE,
                    f"no close improves the account; {_text(relief)} of margin relief is needed",
                )
            )
    return attrs.evolve(
        phase,
        bonus_bps=bonus,
        last_reprice_at=now,
        active_order_request_ids=tuple(submit.request_id for submit in submits),
        active_order_client_ids=tuple(submit.client_id for submit in submits),
    ), effects


def _planning_failed(
    phase: PreLiquidation, bonus: int, wallet: str, message: str
) -> tuple[Phase, list[Command]]:
    """No submits, the alert, no active ids; ``last_reprice_at`` unchanged (retry next poll)."""
    failed = attrs.evolve(
        phase, bonus_bps=bonus, active_order_request_ids=(), active_order_client_ids=()
    )
    return failed, [_alert(wallet, AlertCode.PLANNING_FAILED, message)]


def _model_mismatch(facts: MarginFacts, health: Health) -> str | None:
    """A message when the model's view differs from ``Health`` by > 1 % of max(|mm|, 1)."""
    tolerance = CONTEXT.multiply(_MISMATCH_FRACTION, max(health.mm_required.copy_abs(), ONE))
    equity_gap = CONTEXT.subtract(facts.equity, health.equity).copy_abs()
    mm_gap = CONTEXT.subtract(facts.mm_required, health.mm_required).copy_abs()
    if equity_gap <= tolerance and mm_gap <= tolerance:
        return None
    return (
        f"the margin model values the portfolio at equity {_text(facts.equity)}, mm_required "
        f"{_text(facts.mm_required)}; Health says {_text(health.equity)}, "
        f"{_text(health.mm_required)} (tolerance {_text(tolerance)})"
    )


def _text(value: Decimal) -> str:
    """A Decimal in alert text, by value only (``96285.7917`` whether it came as
    ``96285.79170`` or read back from a log, whose codec drops trailing zeros), so a
    recorded decision replays to the same message."""
    return format(tidy(value), "f")


def _in_liquidation(
    phase: InLiquidation,
    health: Health,
    orders: tuple[OpenOrder, ...],
    now: int,
    config: Config,
) -> tuple[Phase, list[Command]]:
    """SPEC §7 step 4: cancel everything; stop the auction once the account recovered.

    A stop that went unanswered past the timeout is sent again while the account is still
    recovered, and dropped once it is liquidatable again: the auction goes on, and a later
    recovery sends a new stop at once."""
    wallet = health.wallet
    effects: list[Command] = list(_cancels(wallet, orders, now))
    stop_at = phase.stop_requested_at  # set exactly with stop_request_id
    stale = stop_at is not None and now > stop_at + config.full_escalation_timeout_ms
    if health.is_liquidatable and stale:
        return attrs.evolve(phase, stop_request_id=None, stop_requested_at=None), effects
    if (
        not health.is_liquidatable
        and phase.chain_start_time is not None
        and (stop_at is None or stale)
    ):
        stop_id = request_id("stop", wallet, now, 0)
        effects.append(
            StopAuction(
                wallet=wallet,
                auction_id=phase.auction_id,
                chain_start_time=phase.chain_start_time,
                request_id=stop_id,
            )
        )
        return attrs.evolve(phase, stop_request_id=stop_id, stop_requested_at=now), effects
    return phase, effects


def _has_short_options(portfolio: Portfolio | None, now: int) -> bool | None:
    """A non-expired option with amount < −MIN_SIZE; ``None`` when the portfolio is unknown."""
    if portfolio is None:
        return None
    for symbol, position in portfolio.positions.items():
        if position.amount < -MIN_SIZE:
            option = option_symbol(symbol)
            if option is not None and option.expires_at > now:
                return True
    return False


def _cancel_commands(health: Health, orders: Sequence[OpenOrder], now: int) -> list[Command]:
    """One ``CancelOrder`` per order, in their order (``reduce_only.cancel_targets``' targets).

    Every field passed CancelOrder's validators already (the wallet in ``Health``, the ids in
    ``OpenOrder``, ``now`` in ``step``), so they are not run again — unless ``health`` or an
    order is of a subclass, which could have re-declared a field with a looser validator.
    """
    wallet = health.wallet
    exact = type(health) is Health
    commands: list[Command] = []
    for order in orders:
        order_id = order.order_id
        if exact and type(order) is OpenOrder:
            command = _cancel_order_of_valid(
                wallet=wallet,
                order_id=order_id,
                client_id=order.client_id,
                request_id=_uuid5(f"cancel|{wallet}|{now}|{order_id}"),  # request_id's name
            )
        else:
            command = CancelOrder(
                wallet=wallet,
                order_id=order_id,
                client_id=order.client_id,
                request_id=request_id("cancel", wallet, now, order_id),
            )
        commands.append(command)
    return commands


def _cancels(wallet: str, orders: Sequence[OpenOrder], now: int) -> tuple[CancelOrder, ...]:
    """One ``CancelOrder`` per distinct order id, by ``(created_at, order_id)``."""
    seen: set[int] = set()
    cancels: list[CancelOrder] = []
    for order in sorted(orders, key=lambda o: (o.created_at, o.order_id)):
        if order.order_id not in seen:
            seen.add(order.order_id)
            cancels.append(
                CancelOrder(
                    wallet=wallet,
                    order_id=order.order_id,
                    client_id=order.client_id,
                    request_id=request_id("cancel", wallet, now, order.order_id),
                )
            )
    return tuple(cancels)


def _tracking_open(phase: PreLiquidation, orders: tuple[OpenOrder, ...]) -> PreLiquidation:
    """``phase`` tracking only its (request id, client id) pairs still open in ``orders``:
    a submit whose answer was lost and that never reached the engine is dropped."""
    tracked = phase.active_order_client_ids
    if not tracked:
        return phase
    open_ids = {order.client_id for order in orders}
    if all(client in open_ids for client in tracked):
        return phase
    pairs = [
        (request, client)
        for request, client in zip(phase.active_order_request_ids, tracked, strict=True)
        if client in open_ids
    ]
    return attrs.evolve(
        phase,
        active_order_request_ids=tuple(request for request, _ in pairs),
        active_order_client_ids=tuple(client for _, client in pairs),
    )


def _orphan_cancels(
    wallet: str, orders: tuple[OpenOrder, ...], now: int
) -> tuple[CancelOrder, ...]:
    """Cancels of the wallet's liquidation orders (none is tracked outside PreLiquidation)."""
    if not orders:
        return ()
    orphans = _liquidation_orders(orders, wallet=wallet, tracked=())
    return _cancels(wallet, orphans, now) if orphans else ()


def _auction_id(phase: Phase) -> str | None:
    match phase:
        case InLiquidation(auction_id=auction_id) | Liquidated(auction_id=auction_id):
            return auction_id
        case Healthy() | PreLiquidation():
            return None
        case _:
            assert_never(phase)


def _publish(previous: Phase, state: AccountState, now: int) -> PublishStateChange:
    new = state.phase
    previous_auction = _auction_id(previous)
    auction = _auction_id(new)
    return PublishStateChange(
        change=StateChange(
            wallet=state.wallet,
            previous_phase=phase_tag(previous),
            new_phase=phase_tag(new),
            previous_mode=liquidation_mode(previous),
            mode=liquidation_mode(new),
            margin_mode=state.margin_mode,
            equity=state.equity,
            mm_required=state.mm_required,
            maintenance_margin=state.maintenance_margin,
            shortfall=state.shortfall,
            previous_auction_id=previous_auction,
            auction_id=previous_auction if auction is None else auction,
            projection_changed=material_change(previous, new),
            state=state,
            timestamp=now,
        )
    )


def _alert(wallet: str, code: AlertCode, message: str) -> Alert:
    return Alert(wallet=wallet, code=code, message=message)


# --------------------------------------------------------------------------- apply


def apply(state: AccountState, event: Event, now: int) -> AccountState:
    """Fold one reported outcome into ``state`` (SPEC §4, the ``apply`` table).

    An event that does not match the current phase or ids returns ``state`` itself (the
    same object), so replaying an event is harmless and the shell can count no-ops by
    identity. A change sets ``updated_at = now``.
    """
    if type(now) is not int:
        raise InvalidInput(f"apply now must be an int (ms), was {now!r}")
    if not isinstance(state, AccountState):
        raise InvalidInput(f"apply state must be an AccountState, was {state!r}")
    if not isinstance(event, _EVENT_TYPES):
        raise InvalidInput(f"apply event must be an Event, was {event!r}")
    phase = state.phase
    match event:
        case OrderRejected(client_id=client_id) | OrderFailed(client_id=client_id):
            if type(phase) is PreLiquidation and client_id in phase.active_order_client_ids:
                pairs = [
                    (request, client)
                    for request, client in zip(
                        phase.active_order_request_ids, phase.active_order_client_ids, strict=True
                    )
                    if client != client_id
                ]
                return _changed(
                    state,
                    attrs.evolve(
                        phase,
                        active_order_request_ids=tuple(request for request, _ in pairs),
                        active_order_client_ids=tuple(client for _, client in pairs),
                    ),
                    now,
                )
        case AuctionRequested():
            if type(phase) is PreLiquidation and phase.pending_full_request_id == event.request_id:
                return _changed(
                    state,
                    attrs.evolve(
                        phase,
                        pending_full_auction_id=event.auction_id,
                        pending_full_tx_hash=event.tx_hash,
                        pending_full_margin_needed=event.margin_needed,
                    ),
                    now,
                )
        case AuctionRequestFailed(request_id=failed_id):
            if type(phase) is PreLiquidation and phase.pending_full_request_id == failed_id:
                return _changed(state, _without_pending(phase), now)
        case AuctionStarted(auction_id=auction_id, chain_start_time=chain_start_time):
            if auction_id != state.last_closed_auction_id:
                match phase:
                    case Healthy() | PreLiquidation():
                        started = InLiquidation(
                            auction_id=auction_id, entered_at=now, chain_start_time=chain_start_time
                        )
                        return _changed(state, started, now)
                    case InLiquidation(chain_start_time=None) if (
                        phase.auction_id == auction_id and chain_start_time is not None
                    ):
                        return _changed(
                            state, attrs.evolve(phase, chain_start_time=chain_start_time), now
                        )
        case StopRequestFailed(request_id=failed_id):
            if type(phase) is InLiquidation and phase.stop_request_id == failed_id:
                return _changed(
                    state, attrs.evolve(phase, stop_request_id=None, stop_requested_at=None), now
                )
        case AuctionStopped(auction_id=auction_id):
            if type(phase) is InLiquidation and phase.auction_id == auction_id:
                return _changed(state, _HEALTHY, now, closed=auction_id)
            if type(phase) is PreLiquidation and phase.pending_full_auction_id == auction_id:
                return _changed(state, _without_pending(phase), now, closed=auction_id)
        case AuctionSettled(auction_id=auction_id):
            if (type(phase) is InLiquidation and phase.auction_id == auction_id) or (
                type(phase) is PreLiquidation and phase.pending_full_auction_id == auction_id
            ):
                settled = Liquidated(auction_id=auction_id, liquidated_at=now)
                return _changed(state, settled, now, closed=auction_id)
        case AccountReset():
            if type(phase) is Liquidated:
                return _changed(state, _HEALTHY, now)
        case _:
            assert_never(event)
    return state


def _without_pending(phase: PreLiquidation) -> PreLiquidation:
    return attrs.evolve(
        phase,
        pending_full_auction_id=None,
        pending_full_request_id=None,
        pending_full_requested_at=None,
        pending_full_tx_hash=None,
        pending_full_margin_needed=None,
    )


def _changed(
    state: AccountState, phase: Phase, now: int, *, closed: str | None = None
) -> AccountState:
    """``state`` with ``phase`` (and ``last_closed_auction_id`` when given), or ``state``
    itself when that changes nothing (a redelivered receipt)."""
    last_closed = state.last_closed_auction_id if closed is None else closed
    if phase == state.phase and last_closed == state.last_closed_auction_id:
        return state
    return attrs.evolve(state, phase=phase, updated_at=now, last_closed_auction_id=last_closed)


# --------------------------------------------------------------------------- scheduling


def next_wakeup(state: AccountState, config: Config) -> int | None:
    """The earliest instant after ``state.updated_at`` at which ``step`` would act
    differently without a new observation, or ``None`` (SPEC §7).

    PreLiquidation: the next reprice and the escalation deadline, or — while a full-auction
    request is pending unconfirmed — the instant it goes stale; InLiquidation: the instant a
    pending stop goes stale. Never ≤ ``updated_at``, so a shell driven by it cannot spin.
    """
    candidates: list[int] = []
    match state.phase:
        case PreLiquidation() as phase:
            if phase.pending_full_auction_id is not None:
                return None  # confirmed: waits for the chain, whatever the time
            if phase.pending_full_requested_at is not None:
                candidates.append(
                    phase.pending_full_requested_at + config.full_escalation_timeout_ms + 1
                )
            else:
                candidates.append(phase.escalation_deadline)
                if phase.last_reprice_at is not None:
                    candidates.append(phase.last_reprice_at + config.partial_reprice_interval_ms)
        case InLiquidation(stop_requested_at=stop_at) if stop_at is not None:
            candidates.append(stop_at + config.full_escalation_timeout_ms + 1)
        case Healthy() | InLiquidation() | Liquidated():
            return None
        case _:
            assert_never(state.phase)
    ahead = [instant for instant in candidates if instant > state.updated_at]
    return min(ahead) if ahead else None


def wallets_to_check(
    portfolios: Mapping[str, Portfolio], states: Mapping[str, AccountState]
) -> list[str]:
    """The wallets to step this poll, sorted (seed ``check_all_accounts``).

    Every wallet with a portfolio, plus every wallet in PreLiquidation or InLiquidation
    (so a liquidation can finish after the last position closed), minus wallets without
    positions whose state is absent or Healthy.
    """
    # Lists in the mappings' order, not a set: sorting a list that is (nearly) in order
    # already, as an exchange lists its accounts, costs far less than sorting a set's
    # hash order. The two lists are disjoint, so no wallet appears twice.
    checked = [
        wallet
        for wallet, portfolio in portfolios.items()
        if portfolio.positions or not _idle(states.get(wallet))
    ]
    checked += [
        wallet
        for wallet, state in states.items()
        if type(state.phase) in _LIQUIDATING and wallet not in portfolios
    ]
    checked.sort()
    return checked


def _idle(state: AccountState | None) -> bool:
    return state is None or type(state.phase) is Healthy
