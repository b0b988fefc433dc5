"""liqcore.machine at its boundaries: tests that kill the mutants issue 9 found alive.

Each test pins one comparison or one argument of ``step`` at the value where a wrong line
(``<`` for ``<=``, a dropped argument, a fixed margin mode) gives another answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal

import attrs
import pytest

from liqcore.commands import (
    Alert,
    AlertCode,
    CancelOrder,
    Command,
    PublishStateChange,
    StartAuction,
    SubmitOrder,
)
from liqcore.config import Config
from liqcore.errors import InvalidInput, PlanningError
from liqcore.inputs import Health, MarginMode, OpenOrder, Portfolio, Position, Quote, Side
from liqcore.instruments import option_symbol
from liqcore.machine import request_id, step
from liqcore.margin.base import MarginFacts
from liqcore.numbers import MIN_SIZE
from liqcore.state import AccountState, Healthy, InLiquidation, Phase, PreLiquidation
from liqcore.targets import partial_bonus_bps, target_equity_from_mm

PortfolioOf: Callable[..., Portfolio] = Portfolio
HealthOf: Callable[..., Health] = Health

W = "W"
CALL = "BTC-20261231-100000-C"
CONFIG = Config(
    full_escalation_timeout_ms=60_000,
    partial_reprice_interval_ms=5_000,
    partial_bonus_start_bps=50,
    partial_bonus_max_bps=500,
    partial_bonus_ramp_ms=60_000,
)
QUOTES = {CALL: Quote(best_bid=Decimal(149), best_ask=Decimal(150), mid=Decimal("149.5"))}


def portfolio(amount: str = "-4", symbol: str = CALL) -> Portfolio:
    return PortfolioOf(
        cash=Decimal(500),
        positions={
            symbol: Position(symbol=symbol, amount=Decimal(amount), entry_price=Decimal(100))
        },
        spot={"BTC": Decimal(105_000)},
    )


def health(
    *,
    equity: str = "100",
    mm: str = "300",
    snapshot: Portfolio | None = None,
    mode: MarginMode = MarginMode.STANDARD,
    no_snapshot: bool = False,
) -> Health:
    return HealthOf(
        wallet=W,
        margin_mode=mode,
        equity=Decimal(equity),
        mm_required=Decimal(mm),
        is_liquidatable=True,
        portfolio=None if no_snapshot else (snapshot or portfolio()),
        quotes=QUOTES,
    )


def pre(**changes: object) -> PreLiquidation:
    fields: dict[str, object] = {
        "entered_at": 0,
        "mm_shortfall": Decimal(200),
        "target_equity": Decimal("315.00"),
        "escalation_deadline": 60_000,
        "bonus_bps": 50,
    }
    fields.update(changes)
    return PreLiquidation(**fields)  # type: ignore[arg-type]


def account(
    phase: Phase, *, closed: str | None = None, mode: MarginMode = MarginMode.STANDARD
) -> AccountState:
    return AccountState(
        wallet=W,
        margin_mode=mode,
        phase=phase,
        equity=Decimal(100),
        mm_required=Decimal(300),
        updated_at=0,
        last_closed_auction_id=closed,
    )


def of(kind: type, commands: Sequence[Command]) -> list:  # type: ignore[type-arg]
    return [c for c in commands if isinstance(c, kind)]


def codes(commands: Sequence[Command]) -> list[AlertCode]:
    return [c.code for c in commands if isinstance(c, Alert)]


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
    def evaluate(self, portfolio: Portfolio, now: int) -> MarginFacts:
        raise PlanningError("model offline")


# --- escalation: equity < 0 -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("equity", "escalates"),
    [("-0.00000001", True), ("0", False), ("0.00000001", False), ("0.5", False)],
)
def test_escalation_on_equity_strictly_below_zero(equity: str, escalates: bool) -> None:
    """``equity < 0`` escalates before the deadline; exactly 0 and anything above do not
    (kills ``<= 0``, ``< 1`` and ``< -1``)."""
    _, commands = step(account(pre()), health(equity=equity), [], 10_000, CONFIG)
    assert bool(of(StartAuction, commands)) is escalates


# --- escalation: no short option left, expiry at now --------------------------------------


def test_option_expiring_exactly_now_is_no_short_option_left() -> None:
    """A short option whose expiry is ``now`` is expired (``expires_at > now`` keeps only
    live ones): nothing is left to close by orders, so the account escalates."""
    expiry = option_symbol(CALL)
    assert expiry is not None
    now = expiry.expires_at
    phase = pre(entered_at=now - 1, escalation_deadline=now + 60_000)
    _, commands = step(account(phase), health(), [], now, CONFIG)
    assert len(of(StartAuction, commands)) == 1
    _, before = step(account(phase), health(), [], now - 1, CONFIG)
    assert not of(StartAuction, before)


# --- the reprice instant ---------------------------------------------------------------------


def test_second_step_at_the_very_instant_of_a_reprice_cancels_nothing() -> None:
    """``now == last_reprice_at`` is not a clock stepped back: the orders just submitted
    stay live and nothing is submitted again (kills ``now <= last``)."""
    first, commands = step(account(pre()), health(), [], 10_000, CONFIG)
    submitted = of(SubmitOrder, commands)
    assert submitted
    live = [
        OpenOrder(
            order_id=100 + index,
            symbol=s.symbol,
            side=s.side,
            price=s.price,
            original_size=s.size,
            remaining_size=s.size,
            client_id=s.client_id,
            created_at=10_000,
        )
        for index, s in enumerate(submitted)
    ]
    second, again = step(first, health(), live, 10_000, CONFIG)
    assert not of(CancelOrder, again)
    assert not of(SubmitOrder, again)
    assert phase_of(second).active_order_client_ids == phase_of(first).active_order_client_ids


# --- the margin model follows health.margin_mode ----------------------------------------------


@pytest.mark.parametrize("mode", list(MarginMode))
def test_step_plans_with_the_model_of_the_healths_margin_mode(mode: MarginMode) -> None:
    """Through ``step``: the model used is ``config.margin_model(health.margin_mode)``; the
    other mode's model (failing here) is never consulted."""
    other = MarginMode.STANDARD if mode is MarginMode.PORTFOLIO else MarginMode.PORTFOLIO
    failing = {
        MarginMode.STANDARD: "standard_margin",
        MarginMode.PORTFOLIO: "portfolio_margin",
    }
    broken_other = attrs.evolve(CONFIG, **{failing[other]: FailingModel()})
    broken_own = attrs.evolve(CONFIG, **{failing[mode]: FailingModel()})
    checked = health(mode=mode)
    _, commands = step(account(pre(), mode=mode), checked, [], 10_000, broken_other)
    assert not any("model offline" in a.message for a in of(Alert, commands))
    _, commands = step(account(pre(), mode=mode), checked, [], 10_000, broken_own)
    assert any("model offline" in a.message for a in of(Alert, commands))


# --- the entry publish and refreshed figures ---------------------------------------------------


def test_entry_publish_keeps_last_closed_auction_id() -> None:
    state, commands = step(account(Healthy(), closed="A0"), health(), [], 10_000, CONFIG)
    entry = commands[0]
    assert isinstance(entry, PublishStateChange)
    assert entry.change.new_phase == "pre_liquidation"
    assert entry.change.state.last_closed_auction_id == "A0"
    assert state.last_closed_auction_id == "A0"


def test_waiting_path_refreshes_target_equity_shortfall_and_bonus() -> None:
    """Not due, our order still open: the phase still takes this poll's target, shortfall
    and the bonus of the ramp."""
    phase = pre(
        last_reprice_at=28_000,
        target_equity=Decimal(1),
        mm_shortfall=Decimal(1),
        active_order_request_ids=("r1",),
        active_order_client_ids=("c1",),
    )
    tracked = OpenOrder(
        order_id=9,
        symbol=CALL,
        side=Side.BUY,
        price=Decimal(100),
        original_size=Decimal(1),
        remaining_size=Decimal(1),
        client_id="c1",
        created_at=1,
    )
    new, commands = step(account(phase), health(mm="400"), [tracked], 30_000, CONFIG)
    assert not of(CancelOrder, commands)
    got = phase_of(new)
    assert got.target_equity == target_equity_from_mm(
        Decimal(400), CONFIG.partial_target_buffer_bps
    )
    assert got.mm_shortfall == Decimal(300)
    assert got.bonus_bps == partial_bonus_bps(50, 500, 60_000, 0, 30_000) == 275


def test_planning_failure_refreshes_target_equity_and_bonus() -> None:
    phase = pre(target_equity=Decimal(1), bonus_bps=50)
    new, commands = step(account(phase), health(mm="400", no_snapshot=True), [], 30_000, CONFIG)
    assert codes(commands) == [AlertCode.PLANNING_FAILED]
    got = phase_of(new)
    assert got.target_equity == target_equity_from_mm(
        Decimal(400), CONFIG.partial_target_buffer_bps
    )
    assert got.bonus_bps == 275


def test_model_failure_refreshes_bonus() -> None:
    config = attrs.evolve(CONFIG, standard_margin=FailingModel())
    new, commands = step(account(pre()), health(), [], 30_000, config)
    assert codes(commands) == [AlertCode.PLANNING_FAILED]
    assert phase_of(new).bonus_bps == 275


# --- the validated path for subclasses -------------------------------------------------------


@attrs.frozen(kw_only=True)
class LooseState(AccountState):
    """An AccountState subclass that re-declares last_closed_auction_id without its validator."""

    last_closed_auction_id: str | None = attrs.field(default=None)


def test_step_state_subclass_with_a_looser_field_is_still_validated() -> None:
    """A healthy account whose state is of a subclass takes the validated path: the value
    the subclass let through is refused when the new AccountState is built."""
    loose = LooseState(
        wallet=W,
        margin_mode=MarginMode.STANDARD,
        updated_at=0,
        last_closed_auction_id=7,  # type: ignore[arg-type]
    )
    recovered = HealthOf(
        wallet=W,
        margin_mode=MarginMode.STANDARD,
        equity=Decimal(500),
        mm_required=Decimal(100),
        is_liquidatable=False,
    )
    with pytest.raises(InvalidInput, match="last_closed_auction_id"):
        step(loose, recovered, (), 10_000, CONFIG)


def test_step_exact_types_take_the_fast_path_with_an_equal_result() -> None:
    exact = AccountState(wallet=W, margin_mode=MarginMode.STANDARD, updated_at=0)
    recovered = HealthOf(
        wallet=W,
        margin_mode=MarginMode.STANDARD,
        equity=Decimal(500),
        mm_required=Decimal(100),
        is_liquidatable=False,
    )
    state, commands = step(exact, recovered, (), 10_000, CONFIG)
    assert commands == ()
    assert state == AccountState(
        wallet=W,
        margin_mode=MarginMode.STANDARD,
        equity=Decimal(500),
        mm_required=Decimal(100),
        updated_at=10_000,
    )


@attrs.frozen(kw_only=True)
class LooseOrder(OpenOrder):
    """An OpenOrder subclass that re-declares order_id without its validator."""

    order_id: int = attrs.field()


@attrs.frozen(kw_only=True)
class SameOrder(OpenOrder):
    """An OpenOrder subclass that changes nothing."""


def _selling(kind: type[OpenOrder], order_id: int) -> OpenOrder:
    """A user's SELL of the short call: it would grow the short, so a reprice cancels it."""
    return kind(
        order_id=order_id,
        symbol=CALL,
        side=Side.SELL,
        price=Decimal(150),
        original_size=Decimal(1),
        remaining_size=Decimal(1),
        client_id="user-1",
        created_at=1,
    )


def test_step_order_subclass_with_a_looser_field_is_still_validated() -> None:
    """The cancels of orders of a subclass take the validated path: the negative order id
    the subclass let through is refused when the CancelOrder is built, naming the field."""
    with pytest.raises(InvalidInput, match=r"CancelOrder\.order_id"):
        step(account(pre()), health(), [_selling(LooseOrder, -5)], 30_000, CONFIG)


def test_step_cancels_of_exact_orders_equal_the_validated_ones() -> None:
    """An exact OpenOrder's cancel (built without re-running validators) equals the cancel
    of the same order of a subclass (validated), request id included."""
    exact_state, exact = step(account(pre()), health(), [_selling(OpenOrder, 7)], 30_000, CONFIG)
    sub_state, sub = step(account(pre()), health(), [_selling(SameOrder, 7)], 30_000, CONFIG)
    assert of(CancelOrder, exact) == [
        CancelOrder(
            wallet=W, order_id=7, client_id="user-1", request_id=request_id("cancel", W, 30_000, 7)
        )
    ]
    assert exact == sub
    assert exact_state == sub_state


# --- NO_HELPFUL_CLOSE and MARGIN_MODEL_MISMATCH boundaries ---------------------------------


@pytest.mark.parametrize(
    ("equity", "alerted"),
    [("299.99999999", False), ("299.99999998", True)],
    ids=["relief-is-min-size", "relief-above-min-size"],
)
def test_no_helpful_close_needs_relief_above_min_size(equity: str, alerted: bool) -> None:
    """Buffer 0, so the relief is ``mm − equity``: exactly MIN_SIZE is negligible (no
    alert), one unit more is not (kills ``relief >= MIN_SIZE``)."""
    model = FrozenModel(MarginFacts(equity=Decimal(equity), mm_required=Decimal(300)))
    config = attrs.evolve(CONFIG, partial_target_buffer_bps=0, standard_margin=model)
    assert Decimal(300) - Decimal("299.99999999") == MIN_SIZE
    _, commands = step(account(pre()), health(equity=equity), [], 10_000, config)
    assert not of(SubmitOrder, commands)
    assert (AlertCode.NO_HELPFUL_CLOSE in codes(commands)) is alerted


@pytest.mark.parametrize(
    ("equity_gap", "mm_gap", "alerted"),
    [
        ("3", "0", False),
        ("-3", "0", False),
        ("0", "3", False),
        ("0", "-3", False),
        ("3", "3", False),
        ("3.00000001", "0", True),
        ("-3.00000001", "0", True),
        ("0", "3.00000001", True),
        ("0", "-3.00000001", True),
    ],
)
def test_margin_model_mismatch_at_exactly_the_tolerance(
    equity_gap: str, mm_gap: str, alerted: bool
) -> None:
    """mm 300: the tolerance is 3. A gap of exactly 3 (in equity, in mm, or both) is
    tolerated; a gap just above it, in either, alerts."""
    model = FrozenModel(
        MarginFacts(
            equity=Decimal(100) + Decimal(equity_gap),
            mm_required=Decimal(300) + Decimal(mm_gap),
        )
    )
    config = attrs.evolve(CONFIG, standard_margin=model)
    _, commands = step(account(pre()), health(), [], 10_000, config)
    assert (AlertCode.MARGIN_MODEL_MISMATCH in codes(commands)) is alerted


def test_margin_model_mismatch_message_gives_both_views_by_value() -> None:
    """The alert says what the model and Health say and the tolerance, each by value in
    plain notation (no exponent, no trailing zeros): 1e-7 is written 0.0000001."""
    model = FrozenModel(MarginFacts(equity=Decimal("1E-7"), mm_required=Decimal("290.50")))
    config = attrs.evolve(CONFIG, standard_margin=model)
    _, commands = step(account(pre()), health(equity="100.000", mm="300.0"), [], 10_000, config)
    messages = [c.message for c in of(Alert, commands) if c.code is AlertCode.MARGIN_MODEL_MISMATCH]
    assert messages == [
        "the margin model values the portfolio at equity 0.0000001, mm_required 290.5; "
        "Health says 100, 300 (tolerance 3)"
    ]


# --- the full run of machine.py (issue 9): messages, dust at MIN_SIZE, a stale request -------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", W, 1, 0), r"^request_id kind must be a non-empty str, was ''$"),
        (("stop", "", 1, 0), r"^request_id wallet must be a non-empty str, was ''$"),
        (("stop", W, True, 0), r"^request_id now and key must be ints, were True and 0$"),
        (("stop", W, 1, 1.0), r"^request_id now and key must be ints, were 1 and 1\.0$"),
    ],
)
def test_request_id_refusals_name_the_argument_and_its_value(
    args: tuple[object, ...], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        request_id(*args)  # type: ignore[arg-type]


def test_reprice_without_snapshot_says_so() -> None:
    _, commands = step(account(pre()), health(no_snapshot=True), [], 10_000, CONFIG)
    assert [c.message for c in of(Alert, commands)] == ["planning failed: no portfolio snapshot"]


def test_unpriced_symbols_are_listed_sorted_one_by_one() -> None:
    """Two shorts without any price: one PLANNING_FAILED naming both, sorted, each as
    ``symbol: why`` and separated by ``; ``."""
    put, other_put = "BTC-20261231-90000-P", "BTC-20261231-80000-P"
    book = PortfolioOf(
        cash=Decimal(500),
        positions={
            symbol: Position(symbol=symbol, amount=Decimal(-2), entry_price=Decimal(0))
            for symbol in (put, other_put)
        }
        | {CALL: Position(symbol=CALL, amount=Decimal(-4), entry_price=Decimal(100))},
        spot={"BTC": Decimal(105_000)},
    )
    _, commands = step(account(pre()), health(mm="20000", snapshot=book), [], 10_000, CONFIG)
    (failed,) = [c.message for c in of(Alert, commands) if c.code is AlertCode.PLANNING_FAILED]
    prefix = "left out, no usable price: "
    assert failed.startswith(prefix)
    parts = failed.removeprefix(prefix).split("; ")
    assert [part.split(": ", 1)[0] for part in parts] == [other_put, put]
    assert all(part.split(": ", 1)[1] for part in parts)
    assert [s.symbol for s in of(SubmitOrder, commands)] == [CALL]


def test_no_helpful_close_names_the_relief_needed() -> None:
    """Buffer 0: the relief is mm − equity = 200, written by value."""
    model = FrozenModel(MarginFacts(equity=Decimal(100), mm_required=Decimal(300)))
    config = attrs.evolve(CONFIG, partial_target_buffer_bps=0, standard_margin=model)
    _, commands = step(account(pre()), health(equity="100.00"), [], 10_000, config)
    assert [c.message for c in of(Alert, commands)] == [
        "no close improves the account; 200 of margin relief is needed"
    ]


@pytest.mark.parametrize(
    ("amount", "cancelled"),
    [("-0.00000001", True), ("-0.00000002", False)],
    ids=["short-of-min-size-is-dust", "short-above-min-size"],
)
def test_user_buy_against_a_short_of_exactly_min_size_opens_a_position(
    amount: str, cancelled: bool
) -> None:
    """|amount| = MIN_SIZE is dust (SPEC §6: ≤ MIN_SIZE is ignored): a BUY of that size
    opens a position and is cancelled; one unit more is a short the BUY reduces, kept
    (kills ``>= MIN_SIZE`` in the walk's positions)."""
    assert Decimal("0.00000001") == MIN_SIZE
    dust = "BTC-20261231-120000-C"
    book = PortfolioOf(
        cash=Decimal(500),
        positions={
            CALL: Position(symbol=CALL, amount=Decimal(-4), entry_price=Decimal(100)),
            dust: Position(symbol=dust, amount=Decimal(amount), entry_price=Decimal(100)),
        },
        spot={"BTC": Decimal(105_000)},
    )
    size = Decimal(amount).copy_abs()
    buy = OpenOrder(
        order_id=7,
        symbol=dust,
        side=Side.BUY,
        price=Decimal(100),
        original_size=size,
        remaining_size=size,
        client_id="user-1",
        created_at=1,
    )
    _, commands = step(
        account(pre(last_reprice_at=1_000)), health(snapshot=book), [buy], 2_000, CONFIG
    )
    assert [c.order_id for c in of(CancelOrder, commands)] == ([7] if cancelled else [])


def test_stale_request_is_cleared_whole_even_a_receipt_without_auction_id() -> None:
    """A stale unconfirmed request leaves no pending field behind: the validators admit a
    hash and a margin without an auction id (a state restored from a store), and they go
    with the request."""
    phase = pre(
        escalation_deadline=10_000_000,
        pending_full_request_id="r0",
        pending_full_requested_at=1_000,
        pending_full_tx_hash="0xabc",
        pending_full_margin_needed=Decimal(5),
    )
    new, commands = step(account(phase), health(), [], 61_001, CONFIG)
    assert not of(StartAuction, commands)
    got = phase_of(new)
    assert (
        got.pending_full_auction_id,
        got.pending_full_request_id,
        got.pending_full_requested_at,
        got.pending_full_tx_hash,
        got.pending_full_margin_needed,
    ) == (None, None, None, None, None)


def test_publishes_carry_the_mode_left() -> None:
    """``previous_mode`` is the mode of the phase left: "partial" on a recovery from
    PreLiquidation, "full" on a stop in InLiquidation."""
    recovered = HealthOf(
        wallet=W,
        margin_mode=MarginMode.STANDARD,
        equity=Decimal(500),
        mm_required=Decimal(100),
        is_liquidatable=False,
        portfolio=portfolio(),
        quotes=QUOTES,
    )
    _, commands = step(account(pre()), recovered, [], 10_000, CONFIG)
    (recovery,) = of(PublishStateChange, commands)
    assert (recovery.change.previous_mode, recovery.change.mode) == ("partial", None)
    running = InLiquidation(auction_id="A1", entered_at=0, chain_start_time=5)
    _, commands = step(account(running), recovered, [], 10_000, CONFIG)
    (stop,) = of(PublishStateChange, commands)
    assert (stop.change.previous_mode, stop.change.mode) == ("full", "full")


@attrs.frozen(kw_only=True)
class LooseWalletState(AccountState):
    """An AccountState subclass that re-declares wallet without its validator."""

    wallet: str = attrs.field()


@attrs.frozen(kw_only=True)
class LooseWalletHealth(Health):
    """A Health subclass that re-declares wallet without its validator."""

    wallet: str = attrs.field()


def test_step_cancels_for_a_health_subclass_are_validated() -> None:
    """The cancels of a Health subclass take the validated path even for exact orders: the
    empty wallet it let through is refused when the cancel's id is made, before the new
    AccountState is (not due to reprice: no submit's id is made; kills ``type(health) is not
    Health``)."""
    state = LooseWalletState(
        wallet="",
        margin_mode=MarginMode.STANDARD,
        phase=pre(last_reprice_at=28_000),
        equity=Decimal(100),
        mm_required=Decimal(300),
        updated_at=0,
    )
    loose = LooseWalletHealth(
        wallet="",
        margin_mode=MarginMode.STANDARD,
        equity=Decimal(100),
        mm_required=Decimal(300),
        is_liquidatable=True,
        portfolio=portfolio(),
        quotes=QUOTES,
    )
    with pytest.raises(InvalidInput, match=r"^request_id wallet must be a non-empty str"):
        step(state, loose, [_selling(OpenOrder, 7)], 30_000, CONFIG)
