"""liqcore.changes: the publish of a transition applied from the chain feed (issue 9, bug 6)."""

from __future__ import annotations

from decimal import Decimal

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import liqcore
from liqcore import strategies as lst
from liqcore.changes import state_change
from liqcore.commands import PublishStateChange, StopAuction
from liqcore.config import Config
from liqcore.errors import InvalidInput
from liqcore.events import (
    AccountReset,
    AuctionSettled,
    AuctionStarted,
    AuctionStopped,
    Event,
)
from liqcore.inputs import Health, MarginMode
from liqcore.machine import apply, step
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
    phase_tag,
)

W = "0xw"
ALLOWED = {(t.source, t.target) for t in TRANSITIONS}
PRE = PreLiquidation(
    entered_at=0,
    mm_shortfall=Decimal(200),
    target_equity=Decimal("315"),
    escalation_deadline=60_000,
    bonus_bps=50,
    active_order_request_ids=("r1",),
    active_order_client_ids=("liq-0xw-1-0",),
)


def account(phase: Phase, *, updated_at: int = 1_000, closed: str | None = None) -> AccountState:
    return AccountState(
        wallet=W,
        margin_mode=MarginMode.PORTFOLIO,
        phase=phase,
        equity=Decimal("-12.5"),
        mm_required=Decimal(300),
        updated_at=updated_at,
        last_closed_auction_id=closed,
    )


def published(previous: AccountState, event: Event, now: int = 2_000) -> PublishStateChange:
    new = apply(previous, event, now)
    command = state_change(previous, new, now)
    assert command is not None
    assert command.change.state is new
    return command


def test_exported_at_the_top_level() -> None:
    assert liqcore.state_change is state_change
    assert "state_change" in liqcore.__all__


def test_auction_started_from_pre_liquidation_publishes_partial_to_full() -> None:
    change = published(account(PRE), AuctionStarted(auction_id="a1", chain_start_time=1_900)).change
    assert (change.previous_phase, change.new_phase) == ("pre_liquidation", "in_liquidation")
    assert (change.previous_mode, change.mode) == ("partial", "full")
    assert (change.previous_auction_id, change.auction_id) == (None, "a1")
    assert change.projection_changed is True
    assert change.timestamp == 2_000
    assert change.wallet == W
    assert change.margin_mode is MarginMode.PORTFOLIO
    assert change.equity == Decimal("-12.5")
    assert change.mm_required == Decimal(300)
    assert change.maintenance_margin == Decimal("-312.5")
    assert change.shortfall == Decimal("312.5")


def test_auction_started_from_healthy_publishes() -> None:
    change = published(account(Healthy()), AuctionStarted(auction_id="a1")).change
    assert (change.previous_phase, change.new_phase) == ("healthy", "in_liquidation")
    assert (change.previous_mode, change.mode) == (None, "full")


def test_chain_start_time_filled_in_is_a_material_publish_within_the_phase() -> None:
    running = InLiquidation(auction_id="a1", entered_at=1_000)
    change = published(
        account(running), AuctionStarted(auction_id="a1", chain_start_time=1_500)
    ).change
    assert (change.previous_phase, change.new_phase) == ("in_liquidation", "in_liquidation")
    assert change.projection_changed is True
    assert (change.previous_auction_id, change.auction_id) == ("a1", "a1")


def test_auction_stopped_publishes_healthy_keeping_the_auction_id() -> None:
    running = InLiquidation(auction_id="a1", entered_at=1_000, chain_start_time=1_500)
    command = published(account(running), AuctionStopped(auction_id="a1"))
    change = command.change
    assert (change.previous_phase, change.new_phase) == ("in_liquidation", "healthy")
    assert (change.previous_mode, change.mode) == ("full", None)
    assert (change.previous_auction_id, change.auction_id) == ("a1", "a1")
    assert change.state.last_closed_auction_id == "a1"


def test_auction_stopped_of_a_pending_request_publishes_within_pre_liquidation() -> None:
    waiting = PreLiquidation(
        entered_at=0,
        mm_shortfall=Decimal(200),
        target_equity=Decimal("315"),
        escalation_deadline=60_000,
        bonus_bps=50,
        pending_full_request_id="req",
        pending_full_requested_at=500,
        pending_full_auction_id="a1",
    )
    change = published(account(waiting), AuctionStopped(auction_id="a1")).change
    assert (change.previous_phase, change.new_phase) == ("pre_liquidation", "pre_liquidation")
    assert change.projection_changed is True
    assert change.state.last_closed_auction_id == "a1"


def test_auction_settled_publishes_liquidated() -> None:
    running = InLiquidation(auction_id="a1", entered_at=1_000, chain_start_time=1_500)
    change = published(account(running), AuctionSettled(auction_id="a1")).change
    assert (change.previous_phase, change.new_phase) == ("in_liquidation", "liquidated")
    assert (change.previous_mode, change.mode) == ("full", None)
    assert (change.previous_auction_id, change.auction_id) == ("a1", "a1")


def test_account_reset_publishes_healthy() -> None:
    done = Liquidated(auction_id="a1", liquidated_at=1_000)
    change = published(account(done, closed="a1"), AccountReset()).change
    assert (change.previous_phase, change.new_phase) == ("liquidated", "healthy")
    assert (change.previous_auction_id, change.auction_id) == ("a1", "a1")
    assert change.state.last_closed_auction_id == "a1"


@pytest.mark.parametrize(
    "event",
    [
        AccountReset(),
        AuctionStopped(auction_id="other"),
        AuctionSettled(auction_id="other"),
        AuctionStarted(auction_id="closed"),
    ],
)
def test_an_event_apply_ignores_publishes_nothing(event: Event) -> None:
    previous = account(Healthy(), closed="closed")
    assert state_change(previous, apply(previous, event, 2_000), 2_000) is None


def test_only_a_new_timestamp_publishes_nothing() -> None:
    previous = account(PRE)
    later = account(PRE, updated_at=5_000)
    assert state_change(previous, later, 5_000) is None


def test_a_phase_change_without_material_news_is_published_as_immaterial() -> None:
    refreshed = account(attrs.evolve(PRE, mm_shortfall=Decimal(250)), updated_at=3_000)
    command = state_change(account(PRE), refreshed, 3_000)
    assert command is not None
    assert command.change.projection_changed is False


def test_mirrors_steps_final_publish() -> None:
    """The same move made by step (a stop request in InLiquidation) publishes the same."""
    running = InLiquidation(auction_id="a1", entered_at=1_000, chain_start_time=1_500)
    previous = account(running)
    health = Health(
        wallet=W,
        margin_mode=MarginMode.PORTFOLIO,
        equity=Decimal("-12.5"),
        mm_required=Decimal(300),
        is_liquidatable=False,
    )
    new, commands = step(previous, health, (), 2_000, Config())
    assert any(isinstance(c, StopAuction) for c in commands)
    final = [c for c in commands if isinstance(c, PublishStateChange)]
    assert final == [state_change(previous, new, 2_000)]


@pytest.mark.parametrize(
    ("previous", "new", "now", "message"),
    [
        (
            account(PRE),
            account(Healthy()),
            1.5,
            r"state_change now must be an int \(ms\), was 1\.5",
        ),
        (account(PRE), account(Healthy()), True, "state_change now must be an int"),
        (account(PRE), account(Healthy()), "2000", "state_change now must be an int"),
        (
            None,
            account(Healthy()),
            2_000,
            "state_change previous must be an AccountState, was None",
        ),
        (account(PRE), PRE, 2_000, "state_change new must be an AccountState, was PreLiquidation"),
    ],
)
def test_bad_arguments_raise_invalid_input(
    previous: object, new: object, now: object, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        state_change(previous, new, now)  # type: ignore[arg-type]


def test_states_of_two_wallets_raise_invalid_input() -> None:
    other = AccountState(wallet="0xother", margin_mode=MarginMode.STANDARD, updated_at=1)
    with pytest.raises(InvalidInput, match="two wallets"):
        state_change(account(PRE), other, 2_000)


@given(
    previous=lst.account_states(wallet=W),
    event=lst.events(),
    delay=st.integers(min_value=1, max_value=10**6),
)
def test_property_publish_exactly_when_apply_changes_the_phase(
    previous: AccountState, event: Event, delay: int
) -> None:
    now = previous.updated_at + delay
    new = apply(previous, event, now)
    command = state_change(previous, new, now)
    if new.phase == previous.phase:
        assert command is None
        return
    assert command is not None
    change = command.change
    assert change.state is new
    assert change.wallet == W
    assert change.timestamp == now
    assert change.previous_phase == phase_tag(previous.phase)
    assert change.new_phase == phase_tag(new.phase)
    assert (change.previous_phase, change.new_phase) in ALLOWED or (
        change.previous_phase == change.new_phase
    )
    assert change.previous_mode == liquidation_mode(previous.phase)
    assert change.mode == liquidation_mode(new.phase)
    assert change.projection_changed == material_change(previous.phase, new.phase)
    assert change.margin_mode is new.margin_mode
    assert (change.equity, change.mm_required) == (new.equity, new.mm_required)
    assert change.shortfall == new.shortfall
    assert change.maintenance_margin == new.maintenance_margin
    new_auction = getattr(new.phase, "auction_id", None)
    previous_auction = getattr(previous.phase, "auction_id", None)
    assert change.previous_auction_id == previous_auction
    assert change.auction_id == (previous_auction if new_auction is None else new_auction)


@given(previous=lst.account_states(wallet=W), new=lst.account_states(wallet=W))
def test_property_any_two_states_of_a_wallet(previous: AccountState, new: AccountState) -> None:
    """Pure and total over valid states: the same arguments give equal answers."""
    now = max(previous.updated_at, new.updated_at) + 1
    first = state_change(previous, new, now)
    assert first == state_change(previous, new, now)
    assert (first is None) == (previous.phase == new.phase)
