"""SPEC §8: the seed's watcher tests, replayed through ``step`` / ``apply``.

The harness is the seed's ``setup_standard_partial_liquidation_harness``: wallet W, one
short call (−4 @ 100), BTC spot 105 000, a book of 149 / 150 (mid 149.5) and a user's
risk-increasing SELL 1 @ 95 (order 7). The seed seeds a ledger balance of 100; with our
equity convention (``cash + Σ amount × mark``) the same equity of 100 needs cash 500.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from liqcore.commands import (
    Alert,
    AlertCode,
    CancelOrder,
    Command,
    PublishStateChange,
    StateChange,
    SubmitOrder,
)
from liqcore.config import Config
from liqcore.events import OrderRejected
from liqcore.inputs import (
    Health,
    MarginMode,
    OpenOrder,
    Portfolio,
    Position,
    Quote,
    Side,
    TimeInForce,
)
from liqcore.machine import apply, request_id, step, wallets_to_check
from liqcore.reduce_only import cancel_targets
from liqcore.state import AccountState, Healthy, PreLiquidation
from liqcore.targets import is_above_partial_target

# inputs.py's generic mapping converter gives Portfolio.positions/spot and Health.quotes the
# type Mapping[K, T] with unbound type variables, which mypy cannot match against a dict;
# these untyped aliases build them until that is fixed.
PortfolioOf: Callable[..., Portfolio] = Portfolio
HealthOf: Callable[..., Health] = Health

W = "W"
SYMBOL = "BTC-20261231-100000-C"
SEED_CONFIG = Config(
    partial_target_buffer_bps=500,
    partial_reprice_interval_ms=5_000,
    partial_bonus_start_bps=50,
    partial_bonus_max_bps=500,
    partial_bonus_ramp_ms=60_000,
    full_escalation_timeout_ms=60_000,
)
QUOTES = {SYMBOL: Quote(best_bid=Decimal(149), best_ask=Decimal(150), mid=Decimal("149.5"))}
RISK_INCREASING = OpenOrder(
    order_id=7,
    symbol=SYMBOL,
    side=Side.SELL,
    price=Decimal(95),
    original_size=Decimal(1),
    remaining_size=Decimal(1),
    client_id="risk-increasing",
    created_at=1,
)


def seed_portfolio(amount: str = "-4") -> Portfolio:
    positions = {SYMBOL: Position(symbol=SYMBOL, amount=Decimal(amount), entry_price=Decimal(100))}
    return PortfolioOf(cash=Decimal(500), positions=positions, spot={"BTC": Decimal(105_000)})


def liquidatable_health(portfolio: Portfolio | None = None) -> Health:
    return HealthOf(
        wallet=W,
        margin_mode=MarginMode.STANDARD,
        equity=Decimal(100),
        mm_required=Decimal(300),
        is_liquidatable=True,
        portfolio=seed_portfolio() if portfolio is None else portfolio,
        quotes=QUOTES,
    )


def recovered_health(portfolio: Portfolio | None = None) -> Health:
    return HealthOf(
        wallet=W,
        margin_mode=MarginMode.STANDARD,
        equity=Decimal(420),
        mm_required=Decimal(300),
        is_liquidatable=False,
        portfolio=seed_portfolio() if portfolio is None else portfolio,
        quotes=QUOTES,
    )


def open_order_of(submit: SubmitOrder, *, order_id: int = 1_000, created_at: int) -> OpenOrder:
    """The order the seed's mock engine books for an acknowledged submit."""
    return OpenOrder(
        order_id=order_id,
        symbol=submit.symbol,
        side=submit.side,
        price=submit.price,
        original_size=submit.size,
        remaining_size=submit.size,
        client_id=submit.client_id,
        created_at=created_at,
    )


def enter() -> tuple[AccountState, tuple[Command, ...]]:
    return step(None, liquidatable_health(), [RISK_INCREASING], 10_000, SEED_CONFIG)


def pre(state: AccountState) -> PreLiquidation:
    assert isinstance(state.phase, PreLiquidation), state.phase
    return state.phase


def cancels(commands: tuple[Command, ...]) -> list[CancelOrder]:
    return [command for command in commands if isinstance(command, CancelOrder)]


def submits(commands: tuple[Command, ...]) -> list[SubmitOrder]:
    return [command for command in commands if isinstance(command, SubmitOrder)]


def alerts(commands: tuple[Command, ...]) -> list[Alert]:
    return [command for command in commands if isinstance(command, Alert)]


def changes(commands: tuple[Command, ...]) -> list[StateChange]:
    return [command.change for command in commands if isinstance(command, PublishStateChange)]


# --- scenario 1 --------------------------------------------------------------------------


def test_scenario1_liquidatable_enters_pre_liquidation_with_seed_numbers() -> None:
    """Liquidatable at 10 000 → PreLiquidation, shortfall 200, target 315.00, one liq- id."""
    state, _ = enter()
    phase = pre(state)
    assert phase.mm_shortfall == Decimal(200)
    assert phase.target_equity == Decimal("315.00")
    assert len(phase.active_order_client_ids) == 1
    assert all(client_id.startswith("liq-") for client_id in phase.active_order_client_ids)
    assert phase.last_reprice_at == 10_000
    assert phase.escalation_deadline == 70_000
    assert phase.bonus_bps == 50


def test_scenario1_entry_cancels_order_7_and_submits_one_reduce_only_buy() -> None:
    """Commands: publish entry, cancel order 7, one reduce-only BUY, final publish."""
    state, commands = enter()
    kinds = [type(command) for command in commands if not isinstance(command, Alert)]
    assert kinds == [PublishStateChange, CancelOrder, SubmitOrder, PublishStateChange]
    (cancel,) = cancels(commands)
    assert cancel == CancelOrder(
        wallet=W,
        order_id=7,
        client_id="risk-increasing",
        request_id=request_id("cancel", W, 10_000, 7),
    )
    (submit,) = submits(commands)
    assert (submit.wallet, submit.symbol, submit.side) == (W, SYMBOL, Side.BUY)
    assert submit.reduce_only is True
    assert submit.tif is TimeInForce.GTC
    assert pre(state).active_order_client_ids == (submit.client_id,)
    assert pre(state).active_order_request_ids == (submit.request_id,)


def test_scenario1_price_is_band_capped_ask_plus_start_bonus() -> None:
    """The ask 150 is capped at fair 100 × 1.2 = 120, then + 50 bps → 120.60 (seed: 150.75)."""
    _, commands = enter()
    (submit,) = submits(commands)
    assert submit.price == Decimal("120.60")


def test_scenario1_planned_size_puts_the_account_back_on_target_when_filled() -> None:
    """Filled, the order moves the Health-anchored facts on target without closing it all.

    Standard margin frees 10 500 per unit of this call (0.10 × spot, at the money); the
    fill costs 20.60 over the mark per unit.
    """
    _, commands = enter()
    (submit,) = submits(commands)
    assert Decimal(0) < submit.size < Decimal(4)
    equity_after = Decimal(100) - submit.size * (submit.price - Decimal(100))
    mm_after = Decimal(300) - submit.size * Decimal(10_500)
    assert is_above_partial_target(equity_after, mm_after, 500)
    smaller = submit.size - Decimal("0.0001")
    assert not is_above_partial_target(
        Decimal(100) - smaller * (submit.price - Decimal(100)),
        Decimal(300) - smaller * Decimal(10_500),
        500,
    )


def test_scenario1_reference_model_disagrees_with_seed_health_and_says_so() -> None:
    """The seed's fixed Health (mm 300) is not what standard margin computes (mm 42 000):
    the only alert is MARGIN_MODEL_MISMATCH."""
    _, commands = enter()
    assert [alert.code for alert in alerts(commands)] == [AlertCode.MARGIN_MODEL_MISMATCH]


def test_scenario1_entry_publishes_are_healthy_to_pre_then_pre_to_pre() -> None:
    """The entry publish projects Healthy → PreLiquidation; the final one the new orders."""
    state, commands = enter()
    first, last = changes(commands)
    assert (first.previous_phase, first.new_phase) == ("healthy", "pre_liquidation")
    assert (first.previous_mode, first.mode) == (None, "partial")
    assert first.projection_changed is True
    assert pre(first.state).active_order_client_ids == ()
    assert (last.previous_phase, last.new_phase) == ("pre_liquidation", "pre_liquidation")
    assert last.projection_changed is True
    assert last.state == state
    assert (first.timestamp, last.timestamp) == (10_000, 10_000)


def test_scenario1_orders_cleared_then_recovered_health_returns_to_healthy() -> None:
    """Orders gone and recovered at 20 000 → Healthy, published."""
    state, _ = enter()
    recovered, commands = step(state, recovered_health(), [], 20_000, SEED_CONFIG)
    assert recovered.phase == Healthy()
    assert recovered.updated_at == 20_000
    (publish,) = commands
    assert isinstance(publish, PublishStateChange)
    assert (publish.change.previous_phase, publish.change.new_phase) == (
        "pre_liquidation",
        "healthy",
    )
    assert (publish.change.previous_mode, publish.change.mode) == ("partial", None)


# --- scenario 2 --------------------------------------------------------------------------


def test_scenario2_open_liquidation_order_delays_recovery_by_one_poll() -> None:
    """Order open at 20 000 → cancelled, still PreLiquidation with one id; 25 000 → Healthy."""
    state, commands = enter()
    (submit,) = submits(commands)
    still_open = open_order_of(submit, created_at=10_000)
    middle, commands = step(state, recovered_health(), [still_open], 20_000, SEED_CONFIG)
    assert len(pre(middle).active_order_client_ids) == 1
    assert pre(middle).active_order_client_ids == pre(state).active_order_client_ids
    assert cancels(commands) == [
        CancelOrder(
            wallet=W,
            order_id=1_000,
            client_id=submit.client_id,
            request_id=request_id("cancel", W, 20_000, 1_000),
        )
    ]
    assert not submits(commands)
    final, _ = step(middle, recovered_health(), [], 25_000, SEED_CONFIG)
    assert final.phase == Healthy()


# --- scenario 3 --------------------------------------------------------------------------


def _close(order_id: int, created_at: int, price: str) -> OpenOrder:
    return OpenOrder(
        order_id=order_id,
        symbol=SYMBOL,
        side=Side.BUY,
        price=Decimal(price),
        original_size=Decimal(1),
        remaining_size=Decimal(1),
        client_id=f"close-{order_id}",
        created_at=created_at,
    )


def test_scenario3_second_of_two_full_closes_is_cancelled() -> None:
    """Position −1, BUY 1 @ t10 (100) and BUY 1 @ t20 (101), nothing tracked → cancel 101 only."""
    orders = [_close(100, 10, "150"), _close(101, 20, "151")]
    targets, open_ids = cancel_targets(orders, {SYMBOL: Decimal(-1)}, [], False, wallet=W)
    assert [target.order_id for target in targets] == [101]
    assert open_ids == ()


def test_scenario3_through_step_cancels_the_excess_close_only() -> None:
    """The same book seen by ``step`` between reprices cancels 101 and keeps 100."""
    phase = PreLiquidation(
        entered_at=0,
        mm_shortfall=Decimal(200),
        target_equity=Decimal(315),
        escalation_deadline=60_000,
        last_reprice_at=9_000,
        bonus_bps=50,
    )
    state = AccountState(wallet=W, margin_mode=MarginMode.STANDARD, phase=phase, updated_at=9_000)
    orders = [_close(100, 10, "150"), _close(101, 20, "151")]
    health = liquidatable_health(seed_portfolio("-1"))
    _, commands = step(state, health, orders, 10_000, SEED_CONFIG)
    assert [c.order_id for c in cancels(commands)] == [101]
    assert not submits(commands)


# --- scenario 4 --------------------------------------------------------------------------


def _liq_keep() -> OpenOrder:
    return OpenOrder(
        order_id=100,
        symbol=SYMBOL,
        side=Side.BUY,
        price=Decimal(150),
        original_size=Decimal(1),
        remaining_size=Decimal(1),
        client_id="liq-keep",
        created_at=10,
    )


def test_scenario4_portfolio_unavailable_cancels_nothing_and_reports_tracked() -> None:
    """No portfolio snapshot, tracked ``liq-keep`` open → no cancels, open ids [liq-keep]."""
    targets, open_ids = cancel_targets([_liq_keep()], None, ["liq-keep"], False, wallet=W)
    assert targets == ()
    assert open_ids == ("liq-keep",)


def test_scenario4_through_step_keeps_tracking_and_cancels_nothing() -> None:
    """``step`` without a portfolio keeps the tracked order and emits no cancel or submit."""
    phase = PreLiquidation(
        entered_at=0,
        mm_shortfall=Decimal(200),
        target_equity=Decimal(315),
        escalation_deadline=60_000,
        last_reprice_at=0,
        active_order_request_ids=("request-keep",),
        active_order_client_ids=("liq-keep",),
        bonus_bps=50,
    )
    state = AccountState(wallet=W, margin_mode=MarginMode.STANDARD, phase=phase, updated_at=0)
    health = HealthOf(
        wallet=W,
        margin_mode=MarginMode.STANDARD,
        equity=Decimal(100),
        mm_required=Decimal(300),
        is_liquidatable=True,
        portfolio=None,
    )
    new, commands = step(state, health, [_liq_keep()], 10_000, SEED_CONFIG)
    assert not cancels(commands)
    assert not submits(commands)
    assert pre(new).active_order_client_ids == ("liq-keep",)
    assert pre(new).active_order_request_ids == ("request-keep",)
    assert pre(new).last_reprice_at == 0


# --- scenario 5 --------------------------------------------------------------------------


def test_scenario5_rejected_submit_is_untracked_and_reprice_is_recorded() -> None:
    """``apply(OrderRejected)`` empties both active lists; ``last_reprice_at`` stays 10 000."""
    state, commands = enter()
    (submit,) = submits(commands)
    rejected = apply(state, OrderRejected(client_id=submit.client_id, reason="forced"), 10_001)
    assert pre(rejected).active_order_request_ids == ()
    assert pre(rejected).active_order_client_ids == ()
    assert pre(rejected).last_reprice_at == 10_000


# --- scenario 6 --------------------------------------------------------------------------


def test_scenario6_tracked_wallet_keeps_polling_after_positions_close() -> None:
    """Positions closed: W is still checked; poll 1 cancels the order, poll 2 → Healthy."""
    state, commands = enter()
    (submit,) = submits(commands)
    empty = PortfolioOf(cash=Decimal(420), spot={"BTC": Decimal(105_000)})
    assert wallets_to_check({W: empty}, {W: state}) == [W]

    live = open_order_of(submit, created_at=10_000)
    first, commands = step(state, recovered_health(empty), [live], 15_000, SEED_CONFIG)
    assert isinstance(first.phase, PreLiquidation)
    assert [c.order_id for c in cancels(commands)] == [1_000]

    assert wallets_to_check({W: empty}, {W: first}) == [W]
    second, _ = step(first, recovered_health(empty), [], 20_000, SEED_CONFIG)
    assert second.phase == Healthy()
    assert wallets_to_check({W: empty}, {W: second}) == []


# --- scenario 7 --------------------------------------------------------------------------


def test_scenario7_config_defaults_are_the_seeds() -> None:
    """``Config()`` equals the seed's ``LiquidationWatcherConfig::default()``."""
    config = Config()
    assert config.poll_interval_ms == 5_000
    assert config.full_escalation_timeout_ms == 60_000
    assert config.min_shortfall_threshold == Decimal(0)
    assert config.partial_target_buffer_bps == 500
    assert config.partial_reprice_interval_ms == 5_000
    assert config.partial_bonus_start_bps == 50
    assert config.partial_bonus_max_bps == 1_000
    assert config.partial_bonus_ramp_ms == 300_000


def test_scenario7_config_from_runtime_reads_the_seeds_keys() -> None:
    """``from_runtime`` maps the seed's runtime keys and ignores its extra ones."""
    config = Config.from_runtime(
        {
            "enabled": True,
            "health_poll_interval_ms": 1_500,
            "partial_target_buffer_bps": 250,
            "partial_reprice_interval_ms": 2_500,
            "partial_bonus_start_bps": 75,
            "partial_bonus_max_bps": 500,
            "partial_bonus_ramp_ms": 120_000,
            "min_shortfall_threshold": Decimal(42),
            "full_escalation_timeout_ms": 9_000,
            "full_target_buffer_bps": 700,
            "chain_observer_poll_interval_ms": 1_000,
            "chain_observer_max_lag_blocks": 16,
        }
    )
    assert config.poll_interval_ms == 1_500
    assert config.full_escalation_timeout_ms == 9_000
    assert config.min_shortfall_threshold == Decimal(42)
    assert config.partial_target_buffer_bps == 250
    assert config.partial_reprice_interval_ms == 2_500
    assert config.partial_bonus_start_bps == 75
    assert config.partial_bonus_max_bps == 500
    assert config.partial_bonus_ramp_ms == 120_000
    assert config.enabled is True
