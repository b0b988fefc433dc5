"""liqcore.machine: step (SPEC §7), apply (the §4 table), next_wakeup, wallets_to_check."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal

import attrs
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from liqcore import machine
from liqcore import strategies as lst
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
from liqcore.inputs import Health, MarginMode, OpenOrder, Portfolio, Position, Quote, Side
from liqcore.instruments import InstrumentSpec, option_symbol
from liqcore.machine import (
    LIQCORE_NAMESPACE,
    apply,
    next_wakeup,
    request_id,
    step,
    wallets_to_check,
)
from liqcore.margin.base import MarginFacts
from liqcore.numbers import MIN_SIZE
from liqcore.reduce_only import is_liquidation_order, liquidation_client_id
from liqcore.state import (
    TRANSITIONS,
    AccountState,
    Healthy,
    InLiquidation,
    Liquidated,
    Phase,
    PreLiquidation,
    phase_tag,
)
from liqcore.targets import is_above_partial_target

# inputs.py's generic mapping converter gives Portfolio.positions/spot and Health.quotes the
# type Mapping[K, T] with unbound type variables, which mypy cannot match against a dict;
# these untyped aliases build them until that is fixed.
PortfolioOf: Callable[..., Portfolio] = Portfolio
HealthOf: Callable[..., Health] = Health

W = "W"
CALL = "BTC-20261231-100000-C"
PUT = "BTC-20261231-90000-P"
EXPIRED = "BTC-20200103-100000-C"
LATE = 1_750_000_000_000  # June 2025: EXPIRED has expired, CALL and PUT have not
CONFIG = Config(
    full_escalation_timeout_ms=60_000,
    partial_reprice_interval_ms=5_000,
    partial_bonus_start_bps=50,
    partial_bonus_max_bps=500,
    partial_bonus_ramp_ms=60_000,
)
ALLOWED = {(t.source, t.target) for t in TRANSITIONS}


# --- builders ------------------------------------------------------------------------------


def position(symbol: str = CALL, amount: str = "-4", entry: str = "100") -> Position:
    return Position(symbol=symbol, amount=Decimal(amount), entry_price=Decimal(entry))


def portfolio(*positions: Position, cash: str = "500") -> Portfolio:
    return PortfolioOf(
        cash=Decimal(cash),
        positions={p.symbol: p for p in positions},
        spot={"BTC": Decimal(105_000)},
    )


SEED_PORTFOLIO = portfolio(position())
QUOTES = {CALL: Quote(best_bid=Decimal(149), best_ask=Decimal(150), mid=Decimal("149.5"))}


def health(
    *,
    equity: str = "100",
    mm: str = "300",
    liquidatable: bool = True,
    snapshot: Portfolio | None = SEED_PORTFOLIO,
    quotes: dict[str, Quote] | None = None,
    wallet: str = W,
    mode: MarginMode = MarginMode.STANDARD,
) -> Health:
    return HealthOf(
        wallet=wallet,
        margin_mode=mode,
        equity=Decimal(equity),
        mm_required=Decimal(mm),
        is_liquidatable=liquidatable,
        portfolio=snapshot,
        quotes=QUOTES if quotes is None else quotes,
    )


RECOVERED = health(equity="420", liquidatable=False)


def order(
    order_id: int,
    *,
    client_id: str | None = None,
    side: Side = Side.BUY,
    symbol: str = CALL,
    size: str = "1",
    created_at: int = 1,
) -> OpenOrder:
    return OpenOrder(
        order_id=order_id,
        symbol=symbol,
        side=side,
        price=Decimal(100),
        original_size=Decimal(size),
        remaining_size=Decimal(size),
        client_id=client_id,
        created_at=created_at,
    )


pre = functools.partial(
    PreLiquidation,
    entered_at=0,
    mm_shortfall=Decimal(200),
    target_equity=Decimal("315.00"),
    escalation_deadline=60_000,
    bonus_bps=50,
)
"""A PreLiquidation entered at 0 with the seed's figures; keywords override."""


def account(
    phase: Phase | None = None, *, updated_at: int = 0, closed: str | None = None
) -> AccountState:
    return AccountState(
        wallet=W,
        margin_mode=MarginMode.STANDARD,
        phase=Healthy() if phase is None else phase,
        equity=Decimal(100),
        mm_required=Decimal(300),
        updated_at=updated_at,
        last_closed_auction_id=closed,
    )


def cancels(commands: Sequence[Command]) -> list[CancelOrder]:
    return [c for c in commands if isinstance(c, CancelOrder)]


def submits(commands: Sequence[Command]) -> list[SubmitOrder]:
    return [c for c in commands if isinstance(c, SubmitOrder)]


def alerts(commands: Sequence[Command]) -> list[Alert]:
    return [c for c in commands if isinstance(c, Alert)]


def starts(commands: Sequence[Command]) -> list[StartAuction]:
    return [c for c in commands if isinstance(c, StartAuction)]


def stops(commands: Sequence[Command]) -> list[StopAuction]:
    return [c for c in commands if isinstance(c, StopAuction)]


def changes(commands: Sequence[Command]) -> list[StateChange]:
    return [c.change for c in commands if isinstance(c, PublishStateChange)]


def phase_of(state: AccountState) -> PreLiquidation:
    assert isinstance(state.phase, PreLiquidation), state.phase
    return state.phase


@attrs.frozen
class FrozenModel:
    """A margin model whose answer never changes: no close ever frees margin."""

    facts: MarginFacts

    def evaluate(self, portfolio: Portfolio, now: int) -> MarginFacts:
        return self.facts


@attrs.frozen
class FailingModel:
    """A margin model that cannot value anything."""

    def evaluate(self, portfolio: Portfolio, now: int) -> MarginFacts:
        raise PlanningError("model offline")


# --- request ids ---------------------------------------------------------------------------


def test_namespace_is_uuid5_of_url_liqcore() -> None:
    """LIQCORE_NAMESPACE is uuid5(NAMESPACE_URL, "liqcore")."""
    assert uuid.uuid5(uuid.NAMESPACE_URL, "liqcore") == LIQCORE_NAMESPACE


@given(
    kind=st.sampled_from(["cancel", "submit", "start", "stop"]),
    wallet=lst.wallets(),
    now=st.integers(),
    key=st.integers(min_value=0),
)
def test_request_id_is_uuid5_of_kind_wallet_now_key(
    kind: str, wallet: str, now: int, key: int
) -> None:
    """The id is the uuid5 of ``kind|wallet|now|key`` in the liqcore namespace."""
    expected = uuid.uuid5(uuid.uuid5(uuid.NAMESPACE_URL, "liqcore"), f"{kind}|{wallet}|{now}|{key}")
    assert request_id(kind, wallet, now, key) == str(expected)


def test_request_id_differs_when_any_part_differs() -> None:
    """Changing the kind, wallet, instant or key changes the id."""
    base = request_id("cancel", W, 1, 2)
    variants = [
        request_id("submit", W, 1, 2),
        request_id("cancel", "V", 1, 2),
        request_id("cancel", W, 2, 2),
        request_id("cancel", W, 1, 3),
    ]
    assert len({base, *variants}) == 5


@pytest.mark.parametrize(
    "args",
    [("", W, 1, 0), ("stop", "", 1, 0), ("stop", W, True, 0), ("stop", W, 1, 1.0), (1, W, 1, 0)],
)
def test_request_id_with_bad_arguments_raises_invalid_input(args: tuple[object, ...]) -> None:
    """Empty names and non-int instants or keys are refused."""
    with pytest.raises(InvalidInput):
        request_id(*args)  # type: ignore[arg-type]


# --- step: contract ------------------------------------------------------------------------


def test_step_health_of_other_wallet_raises_invalid_input() -> None:
    """A Health whose wallet differs from the state's is a broken contract."""
    with pytest.raises(InvalidInput, match="wallet"):
        step(account(), health(wallet="V"), [], 1, CONFIG)


@pytest.mark.parametrize("now", [True, 1.0, "1", None])
def test_step_now_not_int_raises_invalid_input(now: object) -> None:
    """``now`` must be an int (a bool is not)."""
    with pytest.raises(InvalidInput, match="now"):
        step(None, health(), [], now, CONFIG)  # type: ignore[arg-type]


def test_step_config_not_config_raises_invalid_input() -> None:
    """``config`` must be a Config."""
    with pytest.raises(InvalidInput, match="config"):
        step(None, health(), [], 1, {"poll_interval_ms": 1})  # type: ignore[arg-type]


def test_step_health_not_health_raises_invalid_input() -> None:
    """``health`` must be a Health."""
    with pytest.raises(InvalidInput, match="health"):
        step(None, object(), [], 1, CONFIG)  # type: ignore[arg-type]


def test_step_state_not_account_state_raises_invalid_input() -> None:
    """``state`` must be an AccountState or None."""
    with pytest.raises(InvalidInput, match="state"):
        step(Healthy(), health(), [], 1, CONFIG)  # type: ignore[arg-type]


@pytest.mark.parametrize("orders", [None, 5, [object()], (order(1), "x")])
def test_step_orders_not_open_orders_raises_invalid_input(orders: object) -> None:
    """``orders`` must be a sequence of OpenOrders."""
    with pytest.raises(InvalidInput, match="orders"):
        step(None, health(), orders, 1, CONFIG)  # type: ignore[arg-type]


def test_step_orders_as_list_or_tuple_agree() -> None:
    """A list and a tuple of the same orders give the same decision."""
    orders = [order(7, side=Side.SELL, client_id="user"), order(9, client_id="liq-W-1-0")]
    assert step(None, health(), orders, 10_000, CONFIG) == step(
        None, health(), tuple(orders), 10_000, CONFIG
    )


def test_step_default_config_is_config_defaults() -> None:
    """Without a config, ``step`` decides as with ``Config()``."""
    assert step(None, health(), [], 10_000) == step(None, health(), [], 10_000, Config())


# --- step: Healthy ---------------------------------------------------------------------------


def test_step_untracked_healthy_account_initialises_healthy_state() -> None:
    """An untracked wallet that is fine gets a Healthy state with Health's figures, no commands."""
    state, commands = step(None, RECOVERED, [], 123, CONFIG)
    assert commands == ()
    assert state == AccountState(
        wallet=W,
        margin_mode=MarginMode.STANDARD,
        phase=Healthy(),
        equity=Decimal(420),
        mm_required=Decimal(300),
        updated_at=123,
    )


def test_step_healthy_takes_margin_mode_and_figures_and_keeps_last_closed() -> None:
    """Each step refreshes margin mode, equity, mm_required, updated_at; keeps the closed id."""
    previous = account(closed="A1")
    state, _ = step(
        previous, health(equity="7", mm="3", liquidatable=False, mode=MarginMode.PORTFOLIO), [], 9
    )
    assert (state.margin_mode, state.equity, state.mm_required, state.updated_at) == (
        MarginMode.PORTFOLIO,
        Decimal(7),
        Decimal(3),
        9,
    )
    assert state.last_closed_auction_id == "A1"


def test_step_liquidatable_but_above_target_stays_healthy() -> None:
    """Liquidatable yet already on target: no entry (it would flap every poll)."""
    state, commands = step(None, health(equity="315", mm="300"), [], 10_000, CONFIG)
    assert state.phase == Healthy()
    assert commands == ()


def test_step_shortfall_below_threshold_stays_healthy() -> None:
    """A shortfall under ``min_shortfall_threshold`` does not enter pre-liquidation."""
    config = attrs.evolve(CONFIG, min_shortfall_threshold=Decimal("200.01"))
    state, commands = step(None, health(), [], 10_000, config)
    assert state.phase == Healthy()
    assert commands == ()


def test_step_shortfall_at_threshold_enters() -> None:
    """A shortfall equal to the threshold is enough."""
    config = attrs.evolve(CONFIG, min_shortfall_threshold=Decimal(200))
    state, _ = step(None, health(), [], 10_000, config)
    assert isinstance(state.phase, PreLiquidation)


def test_step_healthy_cancels_only_the_wallets_orphans_oldest_first() -> None:
    """Healthy: ``liq-W-…`` orders are cancelled (oldest first); user and other wallets' stay."""
    orders = [
        order(5, client_id="liq-W-9-1", created_at=9),
        order(1, client_id="user", side=Side.SELL),
        order(2, client_id=None),
        order(3, client_id="liq-V-1-0"),
        order(4, client_id="liq-W-2-0", created_at=2),
        order(4, client_id="liq-W-2-0", created_at=2),  # listed twice: cancelled once
    ]
    state, commands = step(None, RECOVERED, orders, 50, CONFIG)
    assert state.phase == Healthy()
    assert commands == (
        CancelOrder(
            wallet=W, order_id=4, client_id="liq-W-2-0", request_id=request_id("cancel", W, 50, 4)
        ),
        CancelOrder(
            wallet=W, order_id=5, client_id="liq-W-9-1", request_id=request_id("cancel", W, 50, 5)
        ),
    )


def test_step_healthy_cancels_orphans_without_portfolio() -> None:
    """Cancelling our own order needs no position: it happens without a snapshot too."""
    _, commands = step(
        None, health(liquidatable=False, snapshot=None), [order(4, client_id="liq-W-1-0")], 5
    )
    assert [c.order_id for c in cancels(commands)] == [4]


def test_step_healthy_with_only_user_orders_emits_nothing() -> None:
    """User orders of a healthy account are none of our business."""
    orders = [order(1, client_id="user", side=Side.SELL), order(2)]
    assert step(None, RECOVERED, orders, 5, CONFIG)[1] == ()


# --- step: entry -------------------------------------------------------------------------------


def test_step_entry_publishes_before_anything_else() -> None:
    """The entry publish comes first and carries the freshly entered phase."""
    state, commands = step(None, health(), [], 10_000, CONFIG)
    assert isinstance(commands[0], PublishStateChange)
    entry = commands[0].change
    assert (entry.previous_phase, entry.new_phase, entry.projection_changed) == (
        "healthy",
        "pre_liquidation",
        True,
    )
    assert entry.state.phase == pre(
        entered_at=10_000, escalation_deadline=70_000, mm_shortfall=Decimal(200)
    )
    assert isinstance(commands[-1], PublishStateChange)
    assert commands[-1].change.state == state


def test_step_entry_with_negative_equity_escalates_in_the_same_step() -> None:
    """Entering with negative equity: publish entry, cancel all, StartAuction, publish."""
    orders = [order(2, created_at=5), order(1, side=Side.SELL, client_id="user", created_at=5)]
    state, commands = step(None, health(equity="-5"), orders, 10_000, CONFIG)
    start = request_id("start", W, 10_000, 0)
    assert [type(c) for c in commands] == [
        PublishStateChange,
        CancelOrder,
        CancelOrder,
        StartAuction,
        PublishStateChange,
    ]
    assert [c.order_id for c in cancels(commands)] == [1, 2]
    assert starts(commands) == [StartAuction(wallet=W, request_id=start)]
    assert phase_of(state).pending_full_request_id == start
    assert phase_of(state).pending_full_requested_at == 10_000


def test_step_entry_with_zero_timeout_escalates_at_once() -> None:
    """A zero escalation timeout puts the deadline at entry."""
    config = attrs.evolve(CONFIG, full_escalation_timeout_ms=0)
    _, commands = step(None, health(), [], 10_000, config)
    assert len(starts(commands)) == 1
    assert not submits(commands)


# --- step: pending full-auction request ------------------------------------------------------


def pending(requested_at: int, *, auction: str | None = None) -> PreLiquidation:
    return pre(
        pending_full_request_id="req-0",
        pending_full_requested_at=requested_at,
        pending_full_auction_id=auction,
        pending_full_tx_hash="0xabc" if auction else None,
        pending_full_margin_needed=Decimal(5) if auction else None,
    )


def test_step_unconfirmed_request_waits_cancelling_every_open_order() -> None:
    """Pending without receipt, not stale: nothing but a cancel of every open order (the
    account is about to be auctioned whole), and no new request."""
    state = account(pending(70_000))
    orders = [order(2, client_id="user", created_at=2), order(1, side=Side.SELL)]
    new, commands = step(state, health(), orders, 130_000, CONFIG)
    assert [type(c) for c in commands] == [CancelOrder, CancelOrder]
    assert [c.order_id for c in cancels(commands)] == [1, 2]
    assert new.phase == state.phase


def test_step_pending_request_with_nothing_open_is_silent() -> None:
    """Pending, not stale, no open order and nothing changed: no command at all."""
    state = account(pending(70_000))
    new, commands = step(state, health(), [], 130_000, CONFIG)
    assert commands == ()
    assert new.phase == state.phase


@pytest.mark.parametrize("auction", [None, "A1"])
def test_step_pending_request_drops_tracked_ids_the_exchange_never_saw(
    auction: str | None,
) -> None:
    """While a full auction is pending, only tracked orders still open stay tracked: a
    submit lost before it reached the engine is not tracked forever."""
    phase = attrs.evolve(
        pending(70_000, auction=auction),
        active_order_request_ids=("r-lost", "r-open"),
        active_order_client_ids=("liq-W-1-0", "liq-W-1-1"),
    )
    orders = [order(5, client_id="liq-W-1-1")]
    new, commands = step(account(phase), health(), orders, 130_000, CONFIG)
    assert phase_of(new).active_order_client_ids == ("liq-W-1-1",)
    assert phase_of(new).active_order_request_ids == ("r-open",)
    assert [c.order_id for c in cancels(commands)] == [5]


def test_step_escalation_drops_tracked_ids_the_exchange_never_saw() -> None:
    """Escalating keeps only the tracked pairs still open in the snapshot."""
    phase = pre(
        active_order_request_ids=("r-lost",),
        active_order_client_ids=("liq-W-1-0",),
        last_reprice_at=1,
    )
    new, commands = step(account(phase), health(equity="-5"), [], 10_001, CONFIG)
    assert len(starts(commands)) == 1
    assert phase_of(new).active_order_client_ids == ()
    assert phase_of(new).active_order_request_ids == ()


def test_step_unconfirmed_request_waiting_publishes_refreshed_figures_as_immaterial() -> None:
    """While waiting, a refreshed shortfall is published with ``projection_changed=False``."""
    state = account(pending(70_000))
    new, commands = step(state, health(equity="90"), [], 100_000, CONFIG)
    (change,) = changes(commands)
    assert len(commands) == 1
    assert change.projection_changed is False
    assert phase_of(new).mm_shortfall == Decimal(210)
    assert phase_of(new).pending_full_request_id == "req-0"


def test_step_stale_request_is_cleared_and_requested_again() -> None:
    """Past ``requested_at + timeout`` the request is cleared; escalation asks again."""
    state = account(pending(70_000))
    new, commands = step(state, health(), [], 130_001, CONFIG)
    start = request_id("start", W, 130_001, 0)
    assert starts(commands) == [StartAuction(wallet=W, request_id=start)]
    assert phase_of(new).pending_full_request_id == start
    assert phase_of(new).pending_full_requested_at == 130_001
    (change,) = changes(commands)
    assert change.projection_changed is True


def test_step_staleness_counts_from_the_request_not_the_deadline() -> None:
    """At deadline + timeout + 1 a later request is still fresh (the seed would re-request)."""
    state = account(pending(100_000))
    new, commands = step(state, health(), [], 60_000 + 60_000 + 1, CONFIG)
    assert not starts(commands)
    assert phase_of(new).pending_full_request_id == "req-0"


def test_step_stale_request_of_recovered_account_goes_healthy() -> None:
    """A stale request is dropped; a recovered account with nothing open then exits."""
    new, commands = step(account(pending(70_000)), RECOVERED, [], 130_001, CONFIG)
    assert new.phase == Healthy()
    assert not starts(commands)


def test_step_confirmed_auction_is_never_cleared() -> None:
    """With a receipt the auction stands, however late: no start, no clear; open orders
    are cancelled, and once the request is stale the account is reported stuck."""
    state = account(pending(70_000, auction="A1"))
    new, commands = step(state, health(), [order(1, side=Side.SELL)], 10**9, CONFIG)
    assert [type(c) for c in commands] == [CancelOrder, Alert]
    assert [a.code for a in alerts(commands)] == [AlertCode.STUCK]
    assert new.phase == state.phase


def test_step_confirmed_auction_within_its_limit_is_not_stuck() -> None:
    """A request with a receipt waits for the chain quietly until it is stale."""
    state = account(pending(70_000, auction="A1"))
    _, commands = step(state, health(), [], 70_000 + 60_000, CONFIG)
    assert commands == ()
    _, late = step(state, health(), [], 70_000 + 60_001, CONFIG)
    (alert,) = alerts(late)
    assert alert.code is AlertCode.STUCK
    assert alert.message == "request_stale since 130000 (1 ms)"


def test_step_in_liquidation_without_chain_start_past_its_bound_is_stuck() -> None:
    """An auction whose chain start time never arrived is reported stuck once
    chain_start_timeout_ms has passed since the account entered it; not before."""
    config = attrs.evolve(CONFIG, chain_start_timeout_ms=30_000)
    state = account(InLiquidation(auction_id="A1", entered_at=1_000))
    _, quiet = step(state, health(), [], 31_000, config)
    assert not alerts(quiet)
    _, commands = step(state, health(), [], 31_001, config)
    assert [a.code for a in alerts(commands)] == [AlertCode.STUCK]


def test_step_stop_unanswered_while_liquidatable_again_is_dropped_not_stuck() -> None:
    """A stop unanswered past the timeout of an account liquidatable once more is no
    longer wanted: step drops it (a publish), sends nothing and the auction goes on —
    nothing is left outstanding, so no STUCK. Before the timeout it is kept (its answer may
    still come); a stale stop of a recovered account is sent again instead; and once
    dropped, a later recovery sends a new stop at once."""
    phase = InLiquidation(
        auction_id="A1",
        entered_at=0,
        chain_start_time=10,
        stop_request_id="s1",
        stop_requested_at=1_000,
    )
    kept, waiting = step(account(phase), health(), [], 61_000, CONFIG)
    assert kept.phase == phase
    assert not waiting

    dropped, commands = step(account(phase), health(), [], 61_001, CONFIG)
    assert dropped.phase == InLiquidation(auction_id="A1", entered_at=0, chain_start_time=10)
    assert not alerts(commands)
    assert not stops(commands)
    [change] = changes(commands)
    assert change.projection_changed
    assert overstay(dropped, 61_001, CONFIG) is None
    assert next_wakeup(dropped, CONFIG) is None

    _, resent = step(account(phase), RECOVERED, [], 61_001, CONFIG)
    assert len(stops(resent)) == 1
    assert not alerts(resent)
    _, again = step(dropped, RECOVERED, [], 61_002, CONFIG)
    assert len(stops(again)) == 1
    assert not alerts(again)


def test_step_below_maintenance_past_deadline_without_verdict_is_stuck() -> None:
    """An engine that calls an account below maintenance "not liquidatable" past its
    escalation deadline leaves it in pre-liquidation with no request: stuck."""
    state = account(pre(last_reprice_at=59_000))
    _, commands = step(state, health(liquidatable=False), [], 60_001, CONFIG)
    assert not starts(commands)
    assert [a.code for a in alerts(commands)] == [AlertCode.STUCK]
    _, escalated = step(state, health(), [], 60_001, CONFIG)
    assert len(starts(escalated)) == 1
    assert not alerts(escalated)


# --- step: escalation ----------------------------------------------------------------------------


def test_step_escalates_at_deadline_cancelling_every_open_order() -> None:
    """At the deadline: cancel every open order (reduce-only or not, ours or not), start."""
    tracked = pre(
        active_order_request_ids=("r1",),
        active_order_client_ids=("c1",),
        last_reprice_at=55_000,
        bonus_bps=70,
    )
    orders = [
        order(4, client_id="liq-W-1-0", created_at=4),
        order(3, client_id="c1", created_at=3),
        order(2, client_id="user-close", created_at=2),
        order(1, side=Side.SELL, created_at=1),
    ]
    new, commands = step(account(tracked), health(), orders, 60_000, CONFIG)
    assert [c.order_id for c in cancels(commands)] == [1, 2, 3, 4]
    start = request_id("start", W, 60_000, 0)
    assert commands[-2] == StartAuction(wallet=W, request_id=start)
    assert isinstance(commands[-1], PublishStateChange)
    assert phase_of(new) == attrs.evolve(
        tracked, pending_full_request_id=start, pending_full_requested_at=60_000
    )


def test_step_does_not_escalate_before_deadline() -> None:
    """One ms before the deadline the partial cycle runs instead."""
    _, commands = step(account(pre()), health(), [], 59_999, CONFIG)
    assert not starts(commands)
    assert len(submits(commands)) == 1


def test_step_negative_equity_escalates_before_deadline() -> None:
    """Negative equity escalates at once."""
    _, commands = step(account(pre()), health(equity="-0.01"), [], 10_000, CONFIG)
    assert len(starts(commands)) == 1


@pytest.mark.parametrize(
    "snapshot",
    [
        portfolio(),
        portfolio(position(amount="4")),
        portfolio(position(EXPIRED)),
        portfolio(position("BTC-PERP")),
        portfolio(position(amount="-0.00000001")),
    ],
    ids=["empty", "long-call", "expired-short", "short-perp", "dust-short"],
)
def test_step_no_short_option_left_escalates(snapshot: Portfolio) -> None:
    """Nothing left to close by orders (no live short option above dust) escalates."""
    phase = pre(entered_at=LATE, escalation_deadline=LATE + 60_000)
    _, commands = step(account(phase), health(snapshot=snapshot), [], LATE + 1, CONFIG)
    assert len(starts(commands)) == 1


def test_step_unknown_portfolio_is_not_no_short_options() -> None:
    """Without a snapshot it is unknown whether shorts are left: no escalation for that."""
    _, commands = step(account(pre()), health(snapshot=None), [], 10_000, CONFIG)
    assert not starts(commands)


def test_step_not_liquidatable_never_escalates() -> None:
    """Past the deadline, negative equity, no shorts — but not liquidatable: no auction."""
    checked = health(equity="-5", liquidatable=False, snapshot=portfolio())
    _, commands = step(account(pre()), checked, [], 10**9, CONFIG)
    assert not starts(commands)


def test_step_above_target_never_escalates() -> None:
    """Liquidatable but on target after the deadline: recovery, not an auction."""
    new, commands = step(account(pre()), health(equity="315"), [], 10**9, CONFIG)
    assert not starts(commands)
    assert new.phase == Healthy()


def test_step_escalation_cancels_even_without_portfolio() -> None:
    """The account is auctioned whole: its orders go even without a snapshot."""
    _, commands = step(
        account(pre()), health(snapshot=None), [order(8, side=Side.SELL)], 60_000, CONFIG
    )
    assert [c.order_id for c in cancels(commands)] == [8]
    assert len(starts(commands)) == 1


# --- step: the partial cycle ---------------------------------------------------------------


def test_step_between_reprices_keeps_open_tracked_pairs_and_drops_gone_ones() -> None:
    """Not due: tracked orders stay live; pairs whose order is gone are dropped together."""
    phase = pre(
        last_reprice_at=8_000,
        active_order_request_ids=("r1", "r2", "r3"),
        active_order_client_ids=("c1", "c2", "c3"),
    )
    orders = [order(2, client_id="c2"), order(3, client_id="c3", created_at=2)]
    new, commands = step(account(phase), health(), orders, 10_000, CONFIG)
    assert not cancels(commands)
    assert not submits(commands)
    assert phase_of(new).active_order_request_ids == ("r2", "r3")
    assert phase_of(new).active_order_client_ids == ("c2", "c3")
    assert phase_of(new).last_reprice_at == 8_000


def test_step_between_reprices_cancels_risk_increasing_user_orders() -> None:
    """Not due: a user's order that is not reduce-only is still cancelled."""
    phase = pre(last_reprice_at=8_000)
    _, commands = step(account(phase), health(), [order(7, side=Side.SELL)], 10_000, CONFIG)
    assert [c.order_id for c in cancels(commands)] == [7]


def test_step_due_reprice_with_tracked_order_open_only_cancels() -> None:
    """Due, our order still open: cancel it, submit nothing, keep tracking, keep last_reprice_at."""
    phase = pre(
        last_reprice_at=0, active_order_request_ids=("r1",), active_order_client_ids=("c1",)
    )
    new, commands = step(account(phase), health(), [order(9, client_id="c1")], 10_000, CONFIG)
    assert cancels(commands) == [
        CancelOrder(
            wallet=W, order_id=9, client_id="c1", request_id=request_id("cancel", W, 10_000, 9)
        )
    ]
    assert not submits(commands)
    assert phase_of(new).last_reprice_at == 0
    assert phase_of(new).active_order_client_ids == ("c1",)


def test_step_due_reprice_with_orphan_open_cancels_it_and_never_tracks_it() -> None:
    """An untracked ``liq-W-…`` order blocks the reprice, is cancelled, and stays untracked."""
    phase = pre(last_reprice_at=0)
    orphan = order(9, client_id="liq-W-3-0")
    new, commands = step(account(phase), health(), [orphan], 10_000, CONFIG)
    assert [c.order_id for c in cancels(commands)] == [9]
    assert not submits(commands)
    assert phase_of(new).active_order_client_ids == ()


def test_step_due_reprice_with_none_open_submits_with_deterministic_ids() -> None:
    """Due and clear: one submit per plan, ids ``liq-W-{now}-{i}`` / ``submit`` request ids."""
    snapshot = portfolio(position(), position(PUT, amount="-2"))
    quotes = {**QUOTES, PUT: Quote(best_ask=Decimal(50), theo=Decimal(48))}
    phase = pre(last_reprice_at=0)
    checked = health(equity="100", mm="20000", snapshot=snapshot, quotes=quotes)
    new, commands = step(account(phase), checked, [], 10_000, CONFIG)
    orders = submits(commands)
    assert len(orders) == 2
    for index, submit in enumerate(orders):
        assert submit.client_id == liquidation_client_id(W, 10_000, index)
        assert submit.request_id == request_id("submit", W, 10_000, index)
    assert phase_of(new).last_reprice_at == 10_000
    assert phase_of(new).active_order_client_ids == tuple(s.client_id for s in orders)
    assert phase_of(new).active_order_request_ids == tuple(s.request_id for s in orders)


def test_step_reprice_interval_boundary() -> None:
    """Due exactly ``partial_reprice_interval_ms`` after the last reprice, not a ms before."""
    phase = pre(last_reprice_at=5_000)
    assert not submits(step(account(phase), health(), [], 9_999, CONFIG)[1])
    assert len(submits(step(account(phase), health(), [], 10_000, CONFIG)[1])) == 1


def test_step_clock_stepped_back_reprices() -> None:
    """``now`` before ``last_reprice_at`` (a clock stepped back) makes a reprice due."""
    phase = pre(last_reprice_at=20_000)
    new, commands = step(account(phase), health(), [], 10_000, CONFIG)
    assert len(submits(commands)) == 1
    assert phase_of(new).last_reprice_at == 10_000


def test_step_bonus_ramps_with_time_and_prices_follow() -> None:
    """Half-way through the ramp the bonus is half-way; the limit price carries it."""
    new, commands = step(account(pre()), health(), [], 30_000, CONFIG)
    assert phase_of(new).bonus_bps == 50 + (500 - 50) // 2
    (submit,) = submits(commands)
    assert submit.price == Decimal(120) * (1 + Decimal(275) / 10_000)


def test_step_above_target_with_nothing_open_recovers() -> None:
    """On target and no liquidation order open: Healthy, published."""
    phase = pre(active_order_request_ids=("r1",), active_order_client_ids=("c1",))
    new, commands = step(account(phase), RECOVERED, [order(1, client_id="user")], 10_000, CONFIG)
    assert new.phase == Healthy()
    (change,) = changes(commands)
    assert (change.previous_phase, change.new_phase) == ("pre_liquidation", "healthy")


def test_step_above_target_cancels_tracked_order_and_waits() -> None:
    """On target with our order open: cancel it and stay until it is gone."""
    phase = pre(
        last_reprice_at=9_000, active_order_request_ids=("r1",), active_order_client_ids=("c1",)
    )
    new, commands = step(account(phase), RECOVERED, [order(3, client_id="c1")], 10_000, CONFIG)
    assert [c.order_id for c in cancels(commands)] == [3]
    assert phase_of(new).active_order_client_ids == ("c1",)


def test_step_above_target_cancels_orphan_and_waits_for_it() -> None:
    """An orphan delays recovery too, and is not taken into the active ids."""
    phase = pre(last_reprice_at=9_000)
    new, commands = step(
        account(phase), RECOVERED, [order(3, client_id="liq-W-1-0")], 10_000, CONFIG
    )
    assert [c.order_id for c in cancels(commands)] == [3]
    assert isinstance(new.phase, PreLiquidation)
    assert phase_of(new).active_order_client_ids == ()


def test_step_not_liquidatable_without_shorts_exits_below_target() -> None:
    """Nothing left to close and no longer liquidatable: exit rather than stick."""
    checked = health(liquidatable=False, snapshot=portfolio())
    new, _ = step(account(pre()), checked, [], 10_000, CONFIG)
    assert new.phase == Healthy()


def test_step_not_liquidatable_below_target_with_shorts_keeps_closing() -> None:
    """Below target with shorts left, the cycle continues even if not liquidatable."""
    new, commands = step(account(pre()), health(liquidatable=False), [], 10_000, CONFIG)
    assert isinstance(new.phase, PreLiquidation)
    assert len(submits(commands)) == 1


def test_step_unchanged_phase_between_reprices_publishes_nothing() -> None:
    """Nothing new in the phase: no publish."""
    phase = pre(last_reprice_at=9_000, bonus_bps=125)  # 50 + 450 × 10 000 / 60 000
    new, commands = step(account(phase), health(), [], 10_000, CONFIG)
    assert commands == ()
    assert new.phase == phase


# --- step: alerts ----------------------------------------------------------------------------


def test_step_reprice_without_portfolio_alerts_and_retries_next_poll() -> None:
    """No snapshot: PLANNING_FAILED, no submit, no active ids, last_reprice_at unchanged."""
    new, commands = step(account(pre()), health(snapshot=None), [], 10_000, CONFIG)
    assert [a.code for a in alerts(commands)] == [AlertCode.PLANNING_FAILED]
    assert not submits(commands)
    assert phase_of(new).last_reprice_at is None
    assert phase_of(new).active_order_client_ids == ()


def test_step_model_failure_alerts_planning_failed_with_its_reason() -> None:
    """A model that cannot evaluate: PLANNING_FAILED naming why, no submit."""
    config = attrs.evolve(CONFIG, standard_margin=FailingModel())
    new, commands = step(account(pre(last_reprice_at=1)), health(), [], 10_000, config)
    (alert,) = alerts(commands)
    assert alert.code is AlertCode.PLANNING_FAILED
    assert "model offline" in alert.message
    assert not submits(commands)
    assert phase_of(new).last_reprice_at == 1


def test_step_unpriced_symbol_is_named_and_the_rest_still_planned() -> None:
    """A short without any price is named in one PLANNING_FAILED; the priced one is submitted."""
    snapshot = portfolio(position(), position(PUT, amount="-2", entry="0"))
    checked = health(mm="20000", snapshot=snapshot)
    _, commands = step(account(pre()), checked, [], 10_000, CONFIG)
    failed = [a for a in alerts(commands) if a.code is AlertCode.PLANNING_FAILED]
    assert len(failed) == 1
    assert PUT in failed[0].message
    assert CALL not in failed[0].message
    assert [s.symbol for s in submits(commands)] == [CALL]


@pytest.mark.parametrize(
    ("equity", "mm", "alerted"),
    [
        ("100", "42000", False),
        ("100", "42420", False),
        ("100", "42430", True),
        ("100", "41579", True),
        ("520", "42000", False),
        ("521", "42000", True),
    ],
)
def test_step_margin_model_mismatch_beyond_one_percent_alerts(
    equity: str, mm: str, alerted: bool
) -> None:
    """The model (equity 100, mm 42 000 here) may differ from Health by 1 % of mm, no more."""
    _, commands = step(account(pre()), health(equity=equity, mm=mm), [], 10_000, CONFIG)
    codes = [a.code for a in alerts(commands)]
    assert (AlertCode.MARGIN_MODEL_MISMATCH in codes) is alerted


def test_step_mismatch_tolerance_has_a_floor_of_one_percent_of_one() -> None:
    """With mm 0 the tolerance is 0.01, not 0."""
    for model_equity, alerted in (("-1.01", False), ("-1.02", True)):
        model = FrozenModel(MarginFacts(equity=Decimal(model_equity), mm_required=Decimal(0)))
        config = attrs.evolve(CONFIG, standard_margin=model)
        checked = health(equity="-1", mm="0", liquidatable=False)
        _, commands = step(account(pre()), checked, [], 10_000, config)
        codes = [a.code for a in alerts(commands)]
        assert (AlertCode.MARGIN_MODEL_MISMATCH in codes) is alerted


def test_step_empty_plan_while_relief_needed_alerts_no_helpful_close() -> None:
    """No close frees margin: NO_HELPFUL_CLOSE, the reprice is still recorded."""
    model = FrozenModel(MarginFacts(equity=Decimal(100), mm_required=Decimal(300)))
    config = attrs.evolve(CONFIG, standard_margin=model)
    new, commands = step(account(pre()), health(), [], 10_000, config)
    assert [a.code for a in alerts(commands)] == [AlertCode.NO_HELPFUL_CLOSE]
    assert not submits(commands)
    assert phase_of(new).last_reprice_at == 10_000


def test_step_empty_plan_with_negligible_relief_is_silent() -> None:
    """Below target by less than MIN_SIZE of relief: nothing to plan, nothing to report."""
    equity = "314.99999999"
    model = FrozenModel(MarginFacts(equity=Decimal(equity), mm_required=Decimal(300)))
    config = attrs.evolve(CONFIG, standard_margin=model)
    new, commands = step(account(pre()), health(equity=equity), [], 10_000, config)
    assert not alerts(commands)
    assert not submits(commands)
    assert phase_of(new).last_reprice_at == 10_000


# --- step: InLiquidation and Liquidated -------------------------------------------------------


auction = functools.partial(InLiquidation, auction_id="A1", entered_at=0)
"""The running auction A1; keywords override."""


def test_step_in_liquidation_cancels_every_open_order_without_portfolio() -> None:
    """The auctioned portfolio must not change: every order goes, snapshot or not."""
    orders = [order(2, created_at=2), order(1, side=Side.SELL, client_id="u", created_at=1)]
    new, commands = step(account(auction()), health(snapshot=None), orders, 10_000, CONFIG)
    assert [c.order_id for c in cancels(commands)] == [1, 2]
    assert not stops(commands)
    assert not changes(commands)
    assert new.phase == auction()


def test_step_recovered_auction_without_chain_start_waits() -> None:
    """Recovered, but the chain start time is unknown: no stop yet."""
    _, commands = step(account(auction()), RECOVERED, [], 10_000, CONFIG)
    assert commands == ()


def test_step_recovered_auction_is_stopped_and_published() -> None:
    """Recovered with a chain start: StopAuction, recorded, published as material."""
    new, commands = step(account(auction(chain_start_time=5)), RECOVERED, [], 10_000, CONFIG)
    stop_id = request_id("stop", W, 10_000, 0)
    assert stops(commands) == [
        StopAuction(wallet=W, auction_id="A1", chain_start_time=5, request_id=stop_id)
    ]
    assert new.phase == auction(
        chain_start_time=5, stop_request_id=stop_id, stop_requested_at=10_000
    )
    (change,) = changes(commands)
    assert (change.previous_phase, change.new_phase, change.mode) == (
        "in_liquidation",
        "in_liquidation",
        "full",
    )
    assert (change.previous_auction_id, change.auction_id) == ("A1", "A1")
    assert change.projection_changed is True
    assert isinstance(commands[-1], PublishStateChange)


def test_step_pending_stop_is_resent_only_when_stale() -> None:
    """A stop goes again only after ``stop_requested_at + timeout`` (strictly)."""
    waiting = auction(chain_start_time=5, stop_request_id="s0", stop_requested_at=10_000)
    assert step(account(waiting), RECOVERED, [], 70_000, CONFIG)[1] == ()
    new, commands = step(account(waiting), RECOVERED, [], 70_001, CONFIG)
    assert [s.request_id for s in stops(commands)] == [request_id("stop", W, 70_001, 0)]
    assert isinstance(new.phase, InLiquidation)
    assert new.phase.stop_requested_at == 70_001


def test_step_liquidatable_auction_is_not_stopped() -> None:
    """Still liquidatable: the auction runs on."""
    _, commands = step(account(auction(chain_start_time=5)), health(), [], 10_000, CONFIG)
    assert commands == ()


def test_step_liquidated_cancels_only_orphans() -> None:
    """Liquidated: our stray orders go, the user's stay; nothing is published."""
    settled = Liquidated(auction_id="A1", liquidated_at=1)
    orders = [order(1, client_id="user", side=Side.SELL), order(2, client_id="liq-W-1-0")]
    new, commands = step(account(settled), health(), orders, 10_000, CONFIG)
    assert [c.order_id for c in cancels(commands)] == [2]
    assert len(commands) == 1
    assert new.phase == settled


def test_step_publish_carries_health_figures_and_full_state() -> None:
    """StateChange mirrors the new state's figures, margin mode and timestamp."""
    new, commands = step(account(pre()), health(equity="90", mm="300"), [], 10_000, CONFIG)
    (change,) = changes(commands)
    assert change.state == new
    assert (change.equity, change.mm_required) == (Decimal(90), Decimal(300))
    assert change.maintenance_margin == Decimal(-210)
    assert change.shortfall == Decimal(210)
    assert change.margin_mode is MarginMode.STANDARD
    assert change.timestamp == 10_000
    assert (change.previous_auction_id, change.auction_id) == (None, None)


# --- apply ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", [OrderRejected, OrderFailed])
def test_apply_order_rejected_or_failed_drops_the_pair(event_type: type[OrderRejected]) -> None:
    """The client id and the request id at its index leave together."""
    phase = pre(
        active_order_request_ids=("r1", "r2", "r3"), active_order_client_ids=("c1", "c2", "c3")
    )
    new = apply(account(phase), event_type(client_id="c2", reason="no"), 5)
    assert phase_of(new).active_order_request_ids == ("r1", "r3")
    assert phase_of(new).active_order_client_ids == ("c1", "c3")
    assert new.updated_at == 5


@pytest.mark.parametrize(
    "state",
    [
        account(pre(active_order_request_ids=("r1",), active_order_client_ids=("c1",))),
        account(),
        account(auction()),
    ],
)
def test_apply_order_rejected_of_unknown_id_is_identity(state: AccountState) -> None:
    """An untracked client id, or another phase: the very same state comes back."""
    assert apply(state, OrderRejected(client_id="c9"), 5) is state
    assert apply(state, OrderFailed(client_id="c9"), 5) is state


def test_apply_auction_requested_fills_the_receipt() -> None:
    """A receipt for the pending request fills auction id, tx hash and margin needed."""
    state = account(pending(1))
    event = AuctionRequested(
        request_id="req-0", auction_id="A7", tx_hash="0x1", margin_needed=Decimal(3)
    )
    new = apply(state, event, 9)
    assert phase_of(new).pending_full_auction_id == "A7"
    assert phase_of(new).pending_full_tx_hash == "0x1"
    assert phase_of(new).pending_full_margin_needed == Decimal(3)
    assert phase_of(new).pending_full_request_id == "req-0"
    assert new.updated_at == 9
    assert apply(new, event, 10) is new


@pytest.mark.parametrize("state", [account(pending(1)), account(pre()), account(auction())])
def test_apply_auction_requested_for_other_request_is_identity(state: AccountState) -> None:
    """A receipt for another request changes nothing."""
    assert apply(state, AuctionRequested(request_id="req-9", auction_id="A7"), 9) is state


def test_apply_auction_request_failed_clears_all_pending_fields() -> None:
    """A request that never left is forgotten so the next poll retries."""
    new = apply(account(pending(1, auction="A1")), AuctionRequestFailed(request_id="req-0"), 9)
    assert phase_of(new) == pre()
    state = account(pending(1))
    assert apply(state, AuctionRequestFailed(request_id="req-9"), 9) is state
    healthy = account()
    assert apply(healthy, AuctionRequestFailed(request_id="req-0"), 9) is healthy


@pytest.mark.parametrize("phase", [Healthy(), pre(), pending(1, auction="A2")])
def test_apply_auction_started_opens_in_liquidation(phase: Phase) -> None:
    """Healthy or PreLiquidation → InLiquidation(auction, now, chain start, no stop)."""
    new = apply(account(phase), AuctionStarted(auction_id="A1", chain_start_time=7), 9)
    assert new.phase == InLiquidation(auction_id="A1", entered_at=9, chain_start_time=7)
    assert new.updated_at == 9


def test_apply_auction_started_fills_missing_chain_start_only() -> None:
    """Same auction: a missing chain start is filled; a known one is never overwritten."""
    new = apply(account(auction()), AuctionStarted(auction_id="A1", chain_start_time=7), 9)
    assert new.phase == auction(chain_start_time=7)
    assert apply(new, AuctionStarted(auction_id="A1", chain_start_time=8), 10) is new
    unknown = account(auction())
    assert apply(unknown, AuctionStarted(auction_id="A1"), 9) is unknown


@pytest.mark.parametrize(
    "state",
    [
        account(auction()),
        account(closed="A2"),
        account(pre(), closed="A2"),
        account(Liquidated(auction_id="A1", liquidated_at=1)),
    ],
)
def test_apply_auction_started_of_other_or_closed_auction_is_identity(state: AccountState) -> None:
    """Another auction while one runs, a closed one redelivered, or a settled account: no-op."""
    assert apply(state, AuctionStarted(auction_id="A2", chain_start_time=3), 9) is state


def test_apply_stop_request_failed_clears_the_stop() -> None:
    """A stop that never left is cleared so the next step sends it again."""
    running = auction(chain_start_time=5, stop_request_id="s1", stop_requested_at=6)
    new = apply(account(running), StopRequestFailed(request_id="s1"), 9)
    assert new.phase == auction(chain_start_time=5)
    state = account(running)
    assert apply(state, StopRequestFailed(request_id="s2"), 9) is state
    healthy = account()
    assert apply(healthy, StopRequestFailed(request_id="s1"), 9) is healthy


def test_apply_auction_stopped_ends_the_running_auction() -> None:
    """InLiquidation with that auction → Healthy, the auction remembered as closed."""
    new = apply(account(auction()), AuctionStopped(auction_id="A1"), 9)
    assert new.phase == Healthy()
    assert new.last_closed_auction_id == "A1"
    assert new.updated_at == 9
    assert apply(new, AuctionStarted(auction_id="A1", chain_start_time=1), 10) is new


def test_apply_auction_stopped_clears_a_pending_one() -> None:
    """PreLiquidation waiting on that auction: pending cleared, auction remembered."""
    new = apply(account(pending(1, auction="A1")), AuctionStopped(auction_id="A1"), 9)
    assert phase_of(new) == pre()
    assert new.last_closed_auction_id == "A1"


@pytest.mark.parametrize(
    "state",
    [
        account(auction(auction_id="A2")),
        account(pending(1, auction="A2")),
        account(pre()),
        account(),
    ],
)
def test_apply_auction_stopped_of_other_auction_is_identity(state: AccountState) -> None:
    """A stop of an auction the account is not in changes nothing."""
    assert apply(state, AuctionStopped(auction_id="A1"), 9) is state


@pytest.mark.parametrize("phase", [auction(), pending(1, auction="A1")])
def test_apply_auction_settled_liquidates(phase: Phase) -> None:
    """The running or pending auction settled → Liquidated(now), remembered as closed."""
    new = apply(account(phase), AuctionSettled(auction_id="A1"), 9)
    assert new.phase == Liquidated(auction_id="A1", liquidated_at=9)
    assert new.last_closed_auction_id == "A1"
    assert apply(new, AuctionSettled(auction_id="A1"), 10) is new


@pytest.mark.parametrize(
    "state", [account(auction(auction_id="A2")), account(pending(1)), account(), account(pre())]
)
def test_apply_auction_settled_of_other_auction_is_identity(state: AccountState) -> None:
    """Settlement of an auction the account is not in changes nothing."""
    assert apply(state, AuctionSettled(auction_id="A1"), 9) is state


def test_apply_account_reset_reopens_only_a_liquidated_account() -> None:
    """Liquidated → Healthy; in any other phase a reset is a no-op."""
    new = apply(
        account(Liquidated(auction_id="A1", liquidated_at=1), closed="A1"), AccountReset(), 9
    )
    assert new.phase == Healthy()
    assert new.last_closed_auction_id == "A1"
    for phase in (Healthy(), pre(), auction()):
        state = account(phase)
        assert apply(state, AccountReset(), 9) is state


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((account(), AccountReset(), 1.5), "^apply now must be an int"),
        ((account(), AccountReset(), True), "^apply now must be an int"),
        ((Healthy(), AccountReset(), 1), "^apply state must be an AccountState"),
        ((account(), Healthy(), 1), "^apply event must be an Event"),
    ],
)
def test_apply_bad_arguments_raise_invalid_input(
    args: tuple[object, object, object], match: str
) -> None:
    """Wrong types for state, event or now are refused, the message naming the argument."""
    with pytest.raises(InvalidInput, match=match):
        apply(*args)  # type: ignore[arg-type]


# --- next_wakeup -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "updated_at", "expected"),
    [
        (Healthy(), 0, None),
        (Liquidated(auction_id="A1", liquidated_at=1), 0, None),
        (pre(), 10_000, 60_000),
        (pre(last_reprice_at=10_000), 10_000, 15_000),
        (pre(last_reprice_at=58_000), 58_000, 60_000),
        (pre(last_reprice_at=1_000), 10_000, 60_000),
        (pre(last_reprice_at=1_000), 70_000, None),
        (pending(70_000), 70_000, 130_001),
        (pending(70_000), 130_001, None),
        (pending(70_000, auction="A1"), 70_000, None),
        (auction(), 0, None),
        (auction(chain_start_time=1, stop_request_id="s", stop_requested_at=10), 10, 60_011),
        (auction(chain_start_time=1, stop_request_id="s", stop_requested_at=10), 60_011, None),
    ],
)
def test_next_wakeup_is_the_next_instant_step_acts_differently(
    phase: Phase, updated_at: int, expected: int | None
) -> None:
    """Reprice, deadline, stale request or stale stop — whichever lies ahead first."""
    assert next_wakeup(account(phase, updated_at=updated_at), CONFIG) == expected


# --- wallets_to_check --------------------------------------------------------------------------


def test_wallets_to_check_follows_portfolios_and_live_liquidations() -> None:
    """Wallets with positions, plus ones liquidating; empty and idle ones are skipped; sorted."""
    empty = portfolio()
    full = portfolio(position())
    settled = Liquidated(auction_id="A1", liquidated_at=1)

    def state(wallet: str, phase: Phase) -> AccountState:
        return attrs.evolve(account(phase), wallet=wallet)

    portfolios = {"e": full, "a": empty, "b": empty, "c": empty, "d": full, "f": empty}
    states = {
        "b": state("b", Healthy()),
        "c": state("c", settled),
        "g": state("g", pre()),
        "h": state("h", auction()),
        "i": state("i", settled),
        "j": state("j", Healthy()),
        "f": state("f", pre()),
    }
    assert wallets_to_check(portfolios, states) == ["c", "d", "e", "f", "g", "h"]


# --- properties ------------------------------------------------------------------------------

SYMBOLS = (CALL, PUT, EXPIRED, "ETH-20261231-3000-C", "BTC-PERP")
TIMES = st.integers(min_value=LATE, max_value=LATE + 400_000)


@st.composite
def pre_phases(draw: st.DrawFn) -> PreLiquidation:
    """PreLiquidation phases around LATE, tracking ``liq-W-…`` ids; any pending shape."""
    entered = draw(TIMES)
    count = draw(st.integers(min_value=0, max_value=3))
    reprice = draw(st.one_of(st.none(), TIMES))
    pending_kind = draw(st.sampled_from(["none", "unconfirmed", "confirmed"]))
    requested = draw(TIMES) if pending_kind != "none" else None
    return PreLiquidation(
        entered_at=entered,
        mm_shortfall=draw(lst.money(min_value=0, max_value=2_000, places=2)),
        target_equity=draw(lst.money(min_value=0, max_value=2_000, places=2)),
        escalation_deadline=entered + draw(st.integers(min_value=0, max_value=200_000)),
        last_reprice_at=reprice,
        active_order_request_ids=tuple(f"req-{i}" for i in range(count)),
        active_order_client_ids=tuple(f"liq-W-{entered}-{i}" for i in range(count)),
        bonus_bps=draw(st.integers(min_value=0, max_value=1_000)),
        pending_full_request_id="start-0" if requested is not None else None,
        pending_full_requested_at=requested,
        pending_full_auction_id="A1" if pending_kind == "confirmed" else None,
    )


@st.composite
def in_phases(draw: st.DrawFn) -> InLiquidation:
    chain = draw(st.one_of(st.none(), TIMES))
    stop_at = draw(TIMES) if chain is not None and draw(st.booleans()) else None
    return InLiquidation(
        auction_id=draw(st.sampled_from(["A1", "A2"])),
        entered_at=draw(TIMES),
        chain_start_time=chain,
        stop_request_id="stop-0" if stop_at is not None else None,
        stop_requested_at=stop_at,
    )


PHASES: st.SearchStrategy[Phase] = st.one_of(
    st.just(Healthy()),
    pre_phases(),
    in_phases(),
    st.builds(Liquidated, auction_id=st.sampled_from(["A1", "A2"]), liquidated_at=TIMES),
)


@st.composite
def states(draw: st.DrawFn, phases: st.SearchStrategy[Phase] = PHASES) -> AccountState:
    return AccountState(
        wallet=W,
        margin_mode=MarginMode.STANDARD,
        phase=draw(phases),
        equity=draw(lst.money(min_value=-500, max_value=2_000, places=2)),
        mm_required=draw(lst.money(min_value=0, max_value=2_000, places=2)),
        updated_at=draw(TIMES),
        last_closed_auction_id=draw(st.sampled_from([None, "A0", "A1"])),
    )


ODD_DECIMALS = st.one_of(
    st.none(),
    st.just(Decimal(0)),
    lst.decimals(min_value=-50, max_value=-1, places=2),
    lst.decimals(min_value="0.01", max_value=3_000, places=2),
)
ODD_QUOTES = st.builds(
    Quote, best_bid=ODD_DECIMALS, best_ask=ODD_DECIMALS, mid=ODD_DECIMALS, theo=ODD_DECIMALS
)


@st.composite
def odd_positions(draw: st.DrawFn, symbol: str) -> Position:
    amount = draw(
        st.one_of(
            lst.decimals(min_value=-10, max_value=10, places=8),
            st.sampled_from([Decimal("-0.00000001"), Decimal("0.00000001"), Decimal(0)]),
        )
    )
    return Position(
        symbol=symbol,
        amount=amount,
        entry_price=draw(lst.decimals(min_value=0, max_value=3_000, places=2)),
        unrealized_pnl=draw(lst.decimals(min_value=-100, max_value=100, places=2)),
    )


@st.composite
def odd_portfolios(draw: st.DrawFn) -> Portfolio | None:
    """Anything a snapshot may be: none at all, dust, expired options, perps, odd spots."""
    if draw(st.integers(min_value=0, max_value=5)) == 0:
        return None
    symbols = draw(st.lists(st.sampled_from(SYMBOLS), unique=True, max_size=4))
    spot = {}
    for underlying in ("BTC", "ETH"):
        value = draw(ODD_DECIMALS)
        if value is not None:
            spot[underlying] = value
    return PortfolioOf(
        cash=draw(lst.money(min_value=-1_000, max_value=5_000, places=2)),
        positions={symbol: draw(odd_positions(symbol)) for symbol in symbols},
        spot=spot,
    )


@st.composite
def odd_healths(draw: st.DrawFn, liquidatable: bool | None = None) -> Health:
    """Health verdicts not tied to the snapshot (the engine may disagree with our model)."""
    snapshot = draw(odd_portfolios())
    quote_symbols = draw(st.lists(st.sampled_from(SYMBOLS), unique=True, max_size=4))
    return HealthOf(
        wallet=W,
        margin_mode=draw(st.sampled_from([MarginMode.STANDARD] * 4 + [MarginMode.PORTFOLIO])),
        equity=draw(lst.money(min_value=-300, max_value=1_500, places=2)),
        mm_required=draw(lst.money(min_value=0, max_value=1_000, places=2)),
        is_liquidatable=draw(st.booleans()) if liquidatable is None else liquidatable,
        portfolio=snapshot,
        quotes={symbol: draw(ODD_QUOTES) for symbol in quote_symbols},
    )


def tracked_ids(state: AccountState | None) -> tuple[str, ...]:
    if state is not None and isinstance(state.phase, PreLiquidation):
        return state.phase.active_order_client_ids
    return ()


@st.composite
def snapshots(draw: st.DrawFn, state: AccountState | None) -> tuple[OpenOrder, ...]:
    """Open orders: users', orphans and some of the state's tracked orders (unique ids)."""
    client_ids = st.sampled_from(
        [None, "user-1", "liq-W-1-0", "liq-W-2-1", "liq-V-1-0", *tracked_ids(state)]
    )
    raw = draw(
        st.lists(
            st.builds(
                OpenOrder,
                order_id=st.integers(min_value=0, max_value=50),
                symbol=st.sampled_from(SYMBOLS),
                side=st.sampled_from(Side),
                price=lst.decimals(min_value=0, max_value=500, places=2),
                original_size=lst.decimals(min_value=0, max_value=5, places=4),
                remaining_size=lst.decimals(min_value=0, max_value=5, places=4),
                client_id=client_ids,
                created_at=st.integers(min_value=0, max_value=LATE + 400_000),
            ),
            max_size=5,
            unique_by=lambda o: o.order_id,
        )
    )
    return tuple(raw)


CONFIGS = st.builds(
    Config,
    full_escalation_timeout_ms=st.integers(min_value=0, max_value=120_000),
    min_shortfall_threshold=lst.money(min_value=0, max_value=300, places=2),
    partial_target_buffer_bps=st.integers(min_value=0, max_value=1_000),
    partial_reprice_interval_ms=st.integers(min_value=1, max_value=20_000),
    partial_bonus_start_bps=st.just(50),
    partial_bonus_max_bps=st.integers(min_value=50, max_value=1_000),
    partial_bonus_ramp_ms=st.integers(min_value=0, max_value=300_000),
)


@st.composite
def steps(
    draw: st.DrawFn,
) -> tuple[AccountState | None, Health, tuple[OpenOrder, ...], int, Config]:
    state = draw(st.one_of(st.none(), states()))
    return state, draw(odd_healths()), draw(snapshots(state)), draw(TIMES), draw(CONFIGS)


StepArgs = tuple[AccountState | None, Health, tuple[OpenOrder, ...], int, Config]


def liquidation_orders_open(state: AccountState | None, orders: Sequence[OpenOrder]) -> bool:
    tracked = tracked_ids(state)
    return any(is_liquidation_order(o, wallet=W, tracked=tracked) for o in orders)


def check_decision(args: StepArgs, new: AccountState, commands: tuple[Command, ...]) -> None:
    """The invariants every single decision of ``step`` keeps (used by several tests)."""
    state, checked, orders, now, config = args
    before = Healthy() if state is None else state.phase
    after = new.phase
    # Phase changes are all in the table.
    if type(before) is not type(after):
        assert (phase_tag(before), phase_tag(after)) in ALLOWED
    assert new.updated_at == now
    assert new.wallet == W
    # Submits: reduce-only BUYs on live shorts, never above target, never over a live set.
    for submit in submits(commands):
        assert submit.side is Side.BUY
        assert submit.reduce_only is True
        assert checked.portfolio is not None
        held = checked.portfolio.positions[submit.symbol]
        option = option_symbol(submit.symbol)
        assert option is not None
        assert option.expires_at > now
        assert held.amount < -MIN_SIZE
        assert submit.size <= -held.amount
        assert submit.size > 0
        assert submit.price > 0
    if submits(commands):
        assert not is_above_partial_target(
            checked.equity, checked.mm_required, config.partial_target_buffer_bps
        )
        assert not liquidation_orders_open(state, orders)
    # Recovery from PreLiquidation only when none of our orders is open.
    if isinstance(before, PreLiquidation) and isinstance(after, Healthy):
        assert not liquidation_orders_open(state, orders)
    # At most one StartAuction, only while liquidatable, recorded as the pending request.
    started = starts(commands)
    assert len(started) <= 1
    if started:
        assert checked.is_liquidatable
        assert isinstance(after, PreLiquidation)
        assert after.pending_full_request_id == started[0].request_id
        assert not (isinstance(before, PreLiquidation) and before.pending_full_auction_id)
    # InLiquidation: every open order cancelled.
    if isinstance(before, InLiquidation):
        assert {c.order_id for c in cancels(commands)} == {o.order_id for o in orders}
    # Active ids stay paired: each pair was tracked before or was minted now at one index.
    if isinstance(after, PreLiquidation):
        old = (
            set(zip(before.active_order_request_ids, before.active_order_client_ids, strict=True))
            if isinstance(before, PreLiquidation)
            else set()
        )
        minted = {(s.request_id, s.client_id) for s in submits(commands)}
        assert (
            set(zip(after.active_order_request_ids, after.active_order_client_ids, strict=True))
            <= old | minted
        )
    # Cancels are of orders in the snapshot, each once.
    cancelled = [c.order_id for c in cancels(commands)]
    assert len(cancelled) == len(set(cancelled))
    assert set(cancelled) <= {o.order_id for o in orders}
    # Publishes: the entry's comes first, the final one last; the last carries the new state.
    published = changes(commands)
    positions_of_publishes = [
        i for i, c in enumerate(commands) if isinstance(c, PublishStateChange)
    ]
    assert set(positions_of_publishes) <= {0, len(commands) - 1}
    if published:
        assert published[-1].state == new
    if after != before:
        assert published
    wakeup = next_wakeup(new, config)
    assert wakeup is None or wakeup > new.updated_at


@settings(max_examples=200)
@given(args=steps())
def test_step_never_raises_and_keeps_every_decision_invariant(args: StepArgs) -> None:
    """Odd market data never raises; every decision keeps the §7 invariants."""
    new, commands = step(*args)
    check_decision(args, new, commands)


@given(args=steps())
def test_step_is_deterministic(args: StepArgs) -> None:
    """The same arguments give the same state and commands."""
    assert step(*args) == step(*args)


@given(args=steps(), data=st.data())
def test_step_ignores_the_order_of_snapshot_and_mappings(
    args: StepArgs, data: st.DataObject
) -> None:
    """Shuffled open orders, positions and quotes give the same decision."""
    state, checked, orders, now, config = args
    shuffled_orders = tuple(data.draw(st.permutations(orders)))
    snapshot = checked.portfolio
    if snapshot is not None:
        snapshot = PortfolioOf(
            cash=snapshot.cash,
            positions=dict(reversed(list(snapshot.positions.items()))),
            spot=dict(reversed(list(snapshot.spot.items()))),
        )
    reordered = HealthOf(
        wallet=checked.wallet,
        margin_mode=checked.margin_mode,
        equity=checked.equity,
        mm_required=checked.mm_required,
        is_liquidatable=checked.is_liquidatable,
        portfolio=snapshot,
        quotes=dict(reversed([*checked.quotes.items()])),
    )
    assert step(state, reordered, shuffled_orders, now, config) == step(*args)


@given(
    state=st.one_of(st.none(), states(st.just(Healthy()))),
    checked=odd_healths(liquidatable=False),
    data=st.data(),
    now=TIMES,
)
def test_step_healthy_not_liquidatable_only_cancels_orphans(
    state: AccountState | None, checked: Health, data: st.DataObject, now: int
) -> None:
    """Healthy and not liquidatable: exactly the wallet's orphans are cancelled, nothing else."""
    orders = data.draw(snapshots(state))
    new, commands = step(state, checked, orders, now, CONFIG)
    assert new.phase == Healthy()
    assert all(isinstance(c, CancelOrder) for c in commands)
    orphans = {o.order_id for o in orders if o.client_id and o.client_id.startswith("liq-W-")}
    assert {c.order_id for c in cancels(commands)} == orphans


@given(state=states(in_phases()), checked=odd_healths(), data=st.data(), now=TIMES)
def test_step_in_liquidation_cancels_every_open_order(
    state: AccountState, checked: Health, data: st.DataObject, now: int
) -> None:
    """During an auction every open order of the wallet is cancelled."""
    orders = data.draw(snapshots(state))
    _, commands = step(state, checked, orders, now, CONFIG)
    assert {c.order_id for c in cancels(commands)} == {o.order_id for o in orders}


@given(state=states(), config=CONFIGS)
def test_next_wakeup_lies_strictly_after_updated_at(state: AccountState, config: Config) -> None:
    """A shell driven by next_wakeup can never spin."""
    wakeup = next_wakeup(state, config)
    assert wakeup is None or wakeup > state.updated_at


LIQUIDATING_STATES = states(st.one_of(pre_phases(), pre_phases(), in_phases())).flatmap(
    lambda state: st.builds(
        attrs.evolve, st.just(state), updated_at=st.integers(LATE - 100_000, LATE - 3)
    )
)


@given(state=LIQUIDATING_STATES, config=CONFIGS, checked=odd_healths(), data=st.data())
def test_next_wakeup_before_it_the_phase_evolves_only_with_observations(
    state: AccountState, config: Config, checked: Health, data: st.DataObject
) -> None:
    """Between ``updated_at`` and the wakeup, time alone never starts or stops an auction:
    stepping just before the wakeup does so exactly when stepping right after updated_at does."""
    wakeup = next_wakeup(state, config)
    assume(wakeup is not None and wakeup - 1 > state.updated_at + 1)
    assert wakeup is not None
    orders = data.draw(snapshots(state))
    early = step(state, checked, orders, state.updated_at + 1, config)[1]
    late = step(state, checked, orders, wakeup - 1, config)[1]
    for kind in (StartAuction, StopAuction):
        assert any(isinstance(c, kind) for c in early) == any(isinstance(c, kind) for c in late)


@st.composite
def related_events(draw: st.DrawFn, state: AccountState) -> Event:
    """Events whose ids are drawn from the state's own ids plus strangers."""
    phase = state.phase
    clients = ["c-x", *tracked_ids(state)]
    requests = ["req-x", "start-0", "stop-0"]
    auctions = ["A0", "A1", "A2", "A3"]
    if isinstance(phase, PreLiquidation) and phase.pending_full_request_id:
        requests.append(phase.pending_full_request_id)
    event: Event = draw(
        st.one_of(
            st.builds(OrderRejected, client_id=st.sampled_from(clients)),
            st.builds(OrderFailed, client_id=st.sampled_from(clients)),
            st.builds(
                AuctionRequested,
                request_id=st.sampled_from(requests),
                auction_id=st.sampled_from(auctions),
                tx_hash=st.sampled_from([None, "0x1"]),
                margin_needed=st.sampled_from([None, Decimal(1)]),
            ),
            st.builds(AuctionRequestFailed, request_id=st.sampled_from(requests)),
            st.builds(
                AuctionStarted,
                auction_id=st.sampled_from(auctions),
                chain_start_time=st.one_of(st.none(), TIMES),
            ),
            st.builds(StopRequestFailed, request_id=st.sampled_from(requests)),
            st.builds(AuctionStopped, auction_id=st.sampled_from(auctions)),
            st.builds(AuctionSettled, auction_id=st.sampled_from(auctions)),
            st.just(AccountReset()),
        )
    )
    return event


@given(state=states(), data=st.data(), now=TIMES, later=TIMES)
def test_apply_redelivered_event_is_identity(
    state: AccountState, data: st.DataObject, now: int, later: int
) -> None:
    """Applying an event a second time returns the very same state object."""
    event = data.draw(related_events(state))
    once = apply(state, event, now)
    assert apply(once, event, later) is once


@given(state=states(), event=lst.events(), now=TIMES)
def test_apply_event_for_foreign_ids_is_identity(
    state: AccountState, event: Event, now: int
) -> None:
    """Events naming ids the state never had (uuids, ``auction-…``) change nothing — except a
    new auction starting for an account not yet in one, or an operator's reset."""
    starts_new = isinstance(event, AuctionStarted) and isinstance(
        state.phase, Healthy | PreLiquidation
    )
    resets = isinstance(event, AccountReset) and isinstance(state.phase, Liquidated)
    assume(not starts_new and not resets)
    assert apply(state, event, now) is state


@given(state=states(), data=st.data(), now=TIMES)
def test_apply_changes_follow_the_transition_table(
    state: AccountState, data: st.DataObject, now: int
) -> None:
    """Every phase change ``apply`` makes is in TRANSITIONS, and stamps ``updated_at``."""
    new = apply(state, data.draw(related_events(state)), now)
    if new is not state:
        assert new != state
        assert new.updated_at == now
    if type(new.phase) is not type(state.phase):
        assert (phase_tag(state.phase), phase_tag(new.phase)) in ALLOWED


@given(state=states(), data=st.data(), now=TIMES)
def test_apply_closed_auction_never_reopens(
    state: AccountState, data: st.DataObject, now: int
) -> None:
    """An AuctionStarted for ``last_closed_auction_id`` is always ignored."""
    assume(state.last_closed_auction_id is not None)
    assert state.last_closed_auction_id is not None
    event = AuctionStarted(
        auction_id=state.last_closed_auction_id, chain_start_time=data.draw(TIMES)
    )
    assert apply(state, event, now) is state


@settings(max_examples=50)
@given(
    polls=st.lists(
        st.tuples(
            odd_healths(),
            st.integers(min_value=1, max_value=90_000),
            st.sampled_from(["receipt", "failed", "lost"]),
        ),
        min_size=1,
        max_size=12,
    ),
    data=st.data(),
)
def test_folded_polls_start_one_auction_per_pending_request(
    polls: list[tuple[Health, int, str]], data: st.DataObject
) -> None:
    """Folding step over polls (receipts sometimes failing or lost) emits exactly one
    StartAuction per distinct pending request id, never for a non-liquidatable account."""
    state: AccountState | None = None
    now = LATE
    started: list[str] = []
    pending_ids: set[str] = set()
    for checked, dt, outcome in polls:
        now += dt
        args: StepArgs = (state, checked, data.draw(snapshots(state)), now, CONFIG)
        state, commands = step(*args)
        check_decision(args, state, commands)
        if isinstance(state.phase, PreLiquidation) and state.phase.pending_full_request_id:
            pending_ids.add(state.phase.pending_full_request_id)
        for start in starts(commands):
            assert checked.is_liquidatable
            started.append(start.request_id)
            if outcome == "failed":
                state = apply(state, AuctionRequestFailed(request_id=start.request_id), now)
            elif outcome == "receipt":
                receipt = AuctionRequested(request_id=start.request_id, auction_id="A9")
                state = apply(state, receipt, now)
    assert len(started) == len(set(started))
    assert set(started) == pending_ids


# --- the lifecycle, statefully -----------------------------------------------------------------


class Lifecycle(RuleBasedStateMachine):
    """An account driven through polls, engine answers, chain events and operator resets.

    A tiny exchange keeps the open orders: acknowledged submits rest until filled or
    cancelled, cancels may be lost, auction requests may be answered, fail or be lost.
    """

    def __init__(self) -> None:
        super().__init__()
        self.state: AccountState | None = None
        self.now = LATE
        self.book: dict[int, OpenOrder] = {}
        self.next_order_id = 1_000
        self.receipts: list[str] = []
        self.started: list[str] = []
        self.pending_ids: set[str] = set()
        self.events: list[Event] = []

    def _apply(self, event: Event) -> None:
        assert self.state is not None
        before = self.state
        self.now += 1
        self.state = apply(before, event, self.now)
        if type(self.state.phase) is not type(before.phase):
            assert (phase_tag(before.phase), phase_tag(self.state.phase)) in ALLOWED
        self.events.append(event)

    @rule(
        checked=odd_healths(),
        dt=st.integers(min_value=1, max_value=40_000),
        submit_outcome=st.sampled_from(["ack", "reject", "fail", "lost"]),
        cancel_works=st.booleans(),
        auction_outcome=st.sampled_from(["receipt", "failed", "lost"]),
    )
    def poll(
        self,
        checked: Health,
        dt: int,
        submit_outcome: str,
        cancel_works: bool,
        auction_outcome: str,
    ) -> None:
        self.now += dt
        orders = tuple(self.book.values())
        args: StepArgs = (self.state, checked, orders, self.now, CONFIG)
        new, commands = step(*args)
        check_decision(args, new, commands)
        self.state = new
        if isinstance(new.phase, PreLiquidation) and new.phase.pending_full_request_id:
            self.pending_ids.add(new.phase.pending_full_request_id)
        for command in commands:
            match command:
                case CancelOrder(order_id=order_id) if cancel_works:
                    self.book.pop(order_id, None)
                case SubmitOrder() as submit:
                    if submit_outcome == "ack":
                        self.book[self.next_order_id] = OpenOrder(
                            order_id=self.next_order_id,
                            symbol=submit.symbol,
                            side=submit.side,
                            price=submit.price,
                            original_size=submit.size,
                            remaining_size=submit.size,
                            client_id=submit.client_id,
                            created_at=self.now,
                        )
                        self.next_order_id += 1
                    elif submit_outcome == "reject":
                        self._apply(OrderRejected(client_id=submit.client_id, reason="no"))
                    elif submit_outcome == "fail":
                        self._apply(OrderFailed(client_id=submit.client_id))
                case StartAuction(request_id=start_id):
                    self.started.append(start_id)
                    if auction_outcome == "receipt":
                        auction_id = f"A{len(self.receipts) + 1}"
                        self.receipts.append(auction_id)
                        self._apply(AuctionRequested(request_id=start_id, auction_id=auction_id))
                    elif auction_outcome == "failed":
                        self._apply(AuctionRequestFailed(request_id=start_id))
                case StopAuction(request_id=stop_id) if auction_outcome == "failed":
                    self._apply(StopRequestFailed(request_id=stop_id))
                case _:
                    pass

    @precondition(lambda self: self.state is not None and bool(self.receipts))
    @rule(data=st.data())
    def chain_event(self, data: st.DataObject) -> None:
        auction_id = data.draw(st.sampled_from(self.receipts))
        event = data.draw(
            st.one_of(
                st.builds(
                    AuctionStarted,
                    auction_id=st.just(auction_id),
                    chain_start_time=st.one_of(st.none(), TIMES),
                ),
                st.just(AuctionStopped(auction_id=auction_id)),
                st.just(AuctionSettled(auction_id=auction_id)),
            )
        )
        self._apply(event)

    @precondition(lambda self: self.state is not None and bool(self.events))
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        assert self.state is not None
        before = self.state
        event = data.draw(st.sampled_from(self.events))
        once = apply(before, event, self.now + 1)
        assert apply(once, event, self.now + 2) is once

    @precondition(lambda self: self.state is not None)
    @rule()
    def operator_reset(self) -> None:
        self._apply(AccountReset())

    @precondition(lambda self: bool(self.book))
    @rule(data=st.data())
    def fill(self, data: st.DataObject) -> None:
        order_id = data.draw(st.sampled_from(sorted(self.book)))
        del self.book[order_id]

    @rule(index=st.integers(min_value=0, max_value=3))
    def lost_submit_lands(self, index: int) -> None:
        """An order whose submit answer was lost shows up untracked: an orphan."""
        self.book[self.next_order_id] = order(
            self.next_order_id, client_id=f"liq-W-{self.now}-{index}", created_at=self.now
        )
        self.next_order_id += 1

    @invariant()
    def state_is_consistent(self) -> None:
        if self.state is None:
            return
        assert self.state.wallet == W
        wakeup = next_wakeup(self.state, CONFIG)
        assert wakeup is None or wakeup > self.state.updated_at
        phase = self.state.phase
        if isinstance(phase, PreLiquidation):
            assert len(phase.active_order_request_ids) == len(phase.active_order_client_ids)
            assert len(set(phase.active_order_client_ids)) == len(phase.active_order_client_ids)

    @invariant()
    def one_start_per_pending_request(self) -> None:
        assert len(self.started) == len(set(self.started))
        assert set(self.started) == self.pending_ids


Lifecycle.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
test_lifecycle = Lifecycle.TestCase


# --- the healthy fast path and the other shortcuts ------------------------------------------


def _general_path(
    state: AccountState | None, checked: Health, orders: tuple[OpenOrder, ...], now: int
) -> tuple[AccountState, tuple[Command, ...]]:
    """What step's general path (one match arm per phase) decides for these arguments."""
    return machine._decide(
        start=Healthy() if state is None else state.phase,
        closed=None if state is None else state.last_closed_auction_id,
        health=checked,
        orders=orders,
        now=now,
        config=CONFIG,
    )


@given(
    state=st.one_of(st.none(), states(st.just(Healthy()))),
    checked=odd_healths(),
    data=st.data(),
    now=TIMES,
)
def test_step_healthy_equals_the_general_path(
    state: AccountState | None, checked: Health, data: st.DataObject, now: int
) -> None:
    """A healthy account gets what the general path decides (the fast path when it stays
    healthy, the general one when it enters): same state, same commands, with or without
    open orders and orphans among them."""
    orders = data.draw(st.one_of(st.just(()), snapshots(state)))
    assert step(state, checked, orders, now, CONFIG) == _general_path(state, checked, orders, now)


@given(
    state=st.one_of(st.none(), states(st.just(Healthy()))),
    checked=odd_healths(liquidatable=False),
    now=TIMES,
)
def test_step_fast_path_state_is_a_valid_account_state_equal_to_the_general_one(
    state: AccountState | None, checked: Health, now: int
) -> None:
    """The fast path's state (built without re-running validators) is exactly what
    validated construction gives: equal, same hash and repr, and it re-validates."""
    fast, commands = step(state, checked, (), now, CONFIG)
    general, _ = _general_path(state, checked, (), now)
    assert commands == ()
    assert type(fast) is AccountState
    assert fast == general
    assert hash(fast) == hash(general)
    assert repr(fast) == repr(general)
    assert AccountState(**attrs.asdict(fast, recurse=False)) == fast


@attrs.frozen(kw_only=True)
class LooseHealth(Health):
    """A Health subclass that re-declares equity without its validator."""

    equity: Decimal = attrs.field()


def test_step_health_subclass_with_a_looser_field_is_still_validated() -> None:
    """Values from a subclass of Health are validated in full: a float equity it let through
    is refused by AccountState, naming the field."""
    loose = LooseHealth(
        wallet=W,
        margin_mode=MarginMode.STANDARD,
        equity=1.5,  # type: ignore[arg-type]
        mm_required=Decimal(1),
        is_liquidatable=False,
    )
    with pytest.raises(InvalidInput, match=r"AccountState\.equity"):
        step(None, loose, (), LATE, CONFIG)


@given(
    portfolios=st.dictionaries(
        st.sampled_from("abcdefgh"),
        st.sampled_from([portfolio(), portfolio(position())]),
        max_size=8,
    ),
    phases=st.dictionaries(st.sampled_from("abcdefghij"), PHASES, max_size=10),
)
def test_wallets_to_check_is_the_sorted_union_the_spec_describes(
    portfolios: dict[str, Portfolio], phases: dict[str, Phase]
) -> None:
    """Wallets with a portfolio (unless empty and idle) plus wallets liquidating: each once,
    sorted, whatever the mappings' order."""
    states = {
        wallet: attrs.evolve(account(phase), wallet=wallet) for wallet, phase in phases.items()
    }

    def idle(wallet: str) -> bool:
        return wallet not in states or isinstance(states[wallet].phase, Healthy)

    with_portfolio = {w for w, p in portfolios.items() if p.positions or not idle(w)}
    liquidating = {
        w for w, s in states.items() if isinstance(s.phase, PreLiquidation | InLiquidation)
    }
    expected = sorted(with_portfolio | liquidating)
    assert wallets_to_check(portfolios, states) == expected
    reversed_order = dict(reversed(portfolios.items())), dict(reversed(states.items()))
    assert wallets_to_check(*reversed_order) == expected


@given(name=st.text(max_size=80))
def test_uuid5_spelled_out_equals_the_standard_library(name: str) -> None:
    """The hand-rolled uuid5 of request ids is uuid.uuid5, for any name that encodes."""
    try:
        name.encode()
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            machine._uuid5(name)
        return
    assert machine._uuid5(name) == str(uuid.uuid5(LIQCORE_NAMESPACE, name))


def test_step_alert_text_does_not_depend_on_trailing_zeros() -> None:
    """Health figures equal in value give the same commands, alert messages included: a
    decision read back from a log (whose codec drops trailing zeros) replays exactly
    (DST seed 1099: MARGIN_MODEL_MISMATCH printed 96285.79170 live, 96285.7917 replayed)."""
    live = health(equity="100.00", mm="300.000")
    logged = health(equity="100", mm="300")
    first = step(account(pre()), live, [], 1_000, CONFIG)
    again = step(account(pre()), logged, [], 1_000, CONFIG)
    assert alerts(first[1])
    assert first == again


# --- dust and the reduce-only walk through step (issue 9) ----------------------------------

DUST_CALL = "BTC-20261231-120000-C"


def test_step_dust_position_with_instruments_does_not_raise() -> None:
    """A position of |amount| <= MIN_SIZE is ignored everywhere (SPEC §6): with an
    InstrumentSpec configured, planning's trim read every position's mark and raised."""
    book = portfolio(position(), position(DUST_CALL, amount="-0.000000005"))
    config = attrs.evolve(
        CONFIG,
        instruments={"BTC": InstrumentSpec(size_step=Decimal("0.1"), price_tick=Decimal("0.01"))},
    )
    state, commands = step(None, health(snapshot=book), (), 1_000, config)
    assert isinstance(state.phase, PreLiquidation)
    assert [s.symbol for s in submits(commands)] == [CALL]


def test_step_dust_short_does_not_make_a_user_buy_reduce_only() -> None:
    """A BUY of 5e-9 against a "short" of -5e-9 opens a position (dust is zero): it is
    cancelled, not kept as reduce-only."""
    book = portfolio(position(), position(DUST_CALL, amount="-0.000000005"))
    buy = order(7, client_id="user-1", symbol=DUST_CALL, size="0.000000005")
    _, commands = step(
        account(pre(last_reprice_at=1_000)), health(snapshot=book), [buy], 2_000, CONFIG
    )
    assert [c.order_id for c in cancels(commands)] == [7]


def test_step_reprice_keeps_the_traders_take_profit_behind_an_orphan() -> None:
    """Orders the same step cancels anyway (an orphan, our set at a reprice) do not use up
    the position: the trader's reduce-only take-profit behind them stays."""
    ours = liquidation_client_id(W, 1_000, 0)
    orphan = order(1, client_id=liquidation_client_id(W, 500, 0), size="4", created_at=1)
    tracked = order(2, client_id=ours, size="4", created_at=2)
    take_profit = order(3, client_id="user-tp", size="2", created_at=3)
    phase = pre(
        last_reprice_at=1_000, active_order_client_ids=(ours,), active_order_request_ids=("r0",)
    )
    # Reprice due: our set and the orphan are cancelled, the take-profit is not.
    _, commands = step(account(phase), health(), [orphan, tracked, take_profit], 6_000, CONFIG)
    assert sorted(c.order_id for c in cancels(commands)) == [1, 2]
    # Reprice not due: our tracked order stays and uses up 4 of the short 4, so the
    # take-profit would overshoot and goes; the orphan goes anyway.
    _, commands = step(account(phase), health(), [orphan, tracked, take_profit], 2_000, CONFIG)
    assert sorted(c.order_id for c in cancels(commands)) == [1, 3]
