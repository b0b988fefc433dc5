"""liqcore.commands: what step asks the shell to do — validated, frozen plain data."""

from __future__ import annotations

import typing
from decimal import Decimal
from typing import Any

import attrs
import pytest
from hypothesis import given, settings

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
from liqcore.errors import InvalidInput, LiqcoreError
from liqcore.inputs import MarginMode, Side, TimeInForce
from liqcore.state import AccountState, liquidation_mode, phase_tag
from liqcore.strategies import commands, state_changes, type_strategies

# Properties of the strategies themselves (not of liqcore) run on a quarter of the examples.
_PROFILE = settings.default
assert _PROFILE is not None
_STRATEGY_CHECK = settings(max_examples=max(10, _PROFILE.max_examples // 4))

_SYMBOL = "BTC-20261231-100000-C"


def _submit(**fields: Any) -> SubmitOrder:
    base: dict[str, Any] = {
        "wallet": "W",
        "symbol": _SYMBOL,
        "price": Decimal("120.6"),
        "size": Decimal("1.5"),
        "client_id": "liq-W-10000-0",
        "request_id": "r-0",
    }
    return SubmitOrder(**{**base, **fields})


def _change(**fields: Any) -> StateChange:
    state = AccountState(wallet="W", margin_mode=MarginMode.STANDARD, updated_at=1)
    base: dict[str, Any] = {
        "wallet": "W",
        "previous_phase": "pre_liquidation",
        "new_phase": "healthy",
        "previous_mode": "partial",
        "mode": None,
        "margin_mode": MarginMode.STANDARD,
        "equity": Decimal(420),
        "mm_required": Decimal(300),
        "maintenance_margin": Decimal(120),
        "shortfall": Decimal(0),
        "previous_auction_id": None,
        "auction_id": None,
        "projection_changed": True,
        "state": state,
        "timestamp": 20_000,
    }
    return StateChange(**{**base, **fields})


def test_command_union_is_exactly_the_six_commands() -> None:
    """Command is the closed union of the six command classes of SPEC §4."""
    assert set(typing.get_args(Command)) == {
        CancelOrder,
        SubmitOrder,
        StartAuction,
        StopAuction,
        PublishStateChange,
        Alert,
    }


def test_submit_order_defaults_are_a_reduce_only_gtc_buy() -> None:
    """side=BUY, reduce_only=True, tif=GTC unless given (and they cannot be anything else)."""
    order = _submit()
    assert order.side is Side.BUY
    assert order.reduce_only is True
    assert order.tif is TimeInForce.GTC


@_STRATEGY_CHECK
@given(command=commands(wallet="W"))
def test_commands_strategy_are_valid_frozen_commands_of_the_wallet(command: Command) -> None:
    """Generated commands belong to the wallet and cannot be mutated."""
    wallet = command.change.wallet if isinstance(command, PublishStateChange) else command.wallet
    assert wallet == "W"
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        command.wallet = "X"  # type: ignore[misc, union-attr]


@_STRATEGY_CHECK
@given(change=state_changes())
def test_state_changes_strategy_projects_its_new_state(change: StateChange) -> None:
    """A generated change carries its new state's tag, mode, numbers and auction id."""
    assert change.new_phase == phase_tag(change.state.phase)
    assert change.mode == liquidation_mode(change.state.phase)
    assert change.maintenance_margin == change.state.maintenance_margin
    assert change.shortfall == change.state.shortfall
    assert change.wallet == change.state.wallet
    assert change.auction_id is None or change.auction_id in (
        change.previous_auction_id,
        getattr(change.state.phase, "auction_id", None),
        getattr(change.state.phase, "pending_full_auction_id", None),
    )


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"side": Side.SELL}, "SubmitOrder.side"),
        ({"side": "buy"}, "SubmitOrder.side"),
        ({"reduce_only": False}, "SubmitOrder.reduce_only"),
        ({"reduce_only": 1}, "SubmitOrder.reduce_only"),
        ({"tif": "gtc"}, "SubmitOrder.tif"),
        ({"price": Decimal(0)}, "SubmitOrder.price"),
        ({"price": Decimal(-1)}, "SubmitOrder.price"),
        ({"price": 120.6}, "SubmitOrder.price"),
        ({"price": Decimal("NaN")}, "SubmitOrder.price"),
        ({"size": Decimal(0)}, "SubmitOrder.size"),
        ({"size": Decimal("-1.5")}, "SubmitOrder.size"),
        ({"size": 1.5}, "SubmitOrder.size"),
        ({"size": Decimal("Infinity")}, "SubmitOrder.size"),
        ({"symbol": ""}, "SubmitOrder.symbol"),
        ({"wallet": None}, "SubmitOrder.wallet"),
        ({"client_id": ""}, "SubmitOrder.client_id"),
        ({"request_id": 5}, "SubmitOrder.request_id"),
    ],
)
def test_submit_order_bad_field_raises_invalid_input_naming_it(
    fields: dict[str, object], name: str
) -> None:
    """Non-positive, float or non-finite prices/sizes and a non-BUY side are refused."""
    with pytest.raises(InvalidInput, match=name.replace(".", r"\.")) as error:
        _submit(**fields)
    assert isinstance(error.value, LiqcoreError)


@pytest.mark.parametrize(
    ("cls", "fields", "name"),
    [
        (CancelOrder, {"wallet": "", "order_id": 1, "request_id": "r"}, "CancelOrder.wallet"),
        (CancelOrder, {"wallet": "W", "order_id": -1, "request_id": "r"}, "CancelOrder.order_id"),
        (CancelOrder, {"wallet": "W", "order_id": True, "request_id": "r"}, "CancelOrder.order_id"),
        (
            CancelOrder,
            {"wallet": "W", "order_id": 1, "client_id": "", "request_id": "r"},
            "CancelOrder.client_id",
        ),
        (CancelOrder, {"wallet": "W", "order_id": 1, "request_id": ""}, "CancelOrder.request_id"),
        (StartAuction, {"wallet": "W", "request_id": None}, "StartAuction.request_id"),
        (StartAuction, {"wallet": 1, "request_id": "r"}, "StartAuction.wallet"),
        (
            StopAuction,
            {"wallet": "W", "auction_id": "a", "chain_start_time": None, "request_id": "r"},
            "StopAuction.chain_start_time",
        ),
        (
            StopAuction,
            {"wallet": "W", "auction_id": "", "chain_start_time": 1, "request_id": "r"},
            "StopAuction.auction_id",
        ),
        (PublishStateChange, {"change": {}}, "PublishStateChange.change"),
        (Alert, {"wallet": "W", "code": "planning_failed", "message": "m"}, "Alert.code"),
        (
            Alert,
            {"wallet": "W", "code": AlertCode.NO_HELPFUL_CLOSE, "message": ""},
            "Alert.message",
        ),
    ],
)
def test_command_bad_field_raises_invalid_input_naming_it(
    cls: Any, fields: dict[str, object], name: str
) -> None:
    """Every command validates its fields and names the bad one."""
    with pytest.raises(InvalidInput, match=name.replace(".", r"\.")):
        cls(**fields)


def test_cancel_order_client_id_is_optional() -> None:
    """A cancel may target an order without a client id."""
    assert CancelOrder(wallet="W", order_id=7, request_id="r").client_id is None


def test_alert_codes_have_stable_values() -> None:
    """Alert codes are the three of SPEC §4 and STUCK (liqcore.overstay), by value."""
    assert {code.value for code in AlertCode} == {
        "planning_failed",
        "no_helpful_close",
        "margin_model_mismatch",
        "stuck",
    }


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"previous_phase": "sick"}, "StateChange.previous_phase"),
        ({"new_phase": "PreLiquidation"}, "StateChange.new_phase"),
        ({"new_phase": None}, "StateChange.new_phase"),
        ({"previous_mode": "partially"}, "StateChange.previous_mode"),
        ({"mode": 1}, "StateChange.mode"),
        ({"margin_mode": "standard"}, "StateChange.margin_mode"),
        ({"equity": 420.0}, "StateChange.equity"),
        ({"shortfall": Decimal("NaN")}, "StateChange.shortfall"),
        ({"previous_auction_id": ""}, "StateChange.previous_auction_id"),
        ({"projection_changed": "yes"}, "StateChange.projection_changed"),
        ({"state": None}, "StateChange.state"),
        ({"timestamp": 1.5}, "StateChange.timestamp"),
    ],
)
def test_state_change_bad_field_raises_invalid_input_naming_it(
    fields: dict[str, object], name: str
) -> None:
    """Phase tags and modes must be the codec's tags and 'partial'/'full'/None."""
    with pytest.raises(InvalidInput, match=name.replace(".", r"\.")):
        _change(**fields)


def test_state_change_accepts_every_tag_and_mode() -> None:
    """Each phase tag and each mode is accepted in both positions."""
    for tag in ("healthy", "pre_liquidation", "in_liquidation", "liquidated"):
        for mode in ("partial", "full", None):
            change = _change(previous_phase=tag, new_phase=tag, previous_mode=mode, mode=mode)
            assert (change.previous_phase, change.mode) == (tag, mode)


# --- CancelOrder built from valid values (issue 10: step's cancels) -------------------------


@given(command=type_strategies()[CancelOrder])
def test_cancel_order_of_valid_equals_validated_construction(command: Command) -> None:
    """Built from valid values without re-running validators, a CancelOrder equals the
    validated one field by field (it takes exactly CancelOrder's fields: a field added to
    the class but not to the builder fails here)."""
    fields = {a.name: getattr(command, a.name) for a in attrs.fields(CancelOrder)}
    built = _cancel_order_of_valid(**fields)
    assert type(built) is CancelOrder
    assert built == CancelOrder(**fields)
    assert attrs.asdict(built, recurse=False) == fields
    assert hash(built) == hash(command)
    assert repr(built) == repr(command)
