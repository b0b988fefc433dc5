"""liqcore.events: outcomes the shell feeds back — validated, frozen plain data."""

from __future__ import annotations

import typing
from decimal import Decimal
from typing import Any

import attrs
import pytest
from hypothesis import given

from liqcore.errors import InvalidInput, LiqcoreError
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
from liqcore.strategies import events

_WITH_REASON: list[Any] = [OrderRejected, OrderFailed, AuctionRequestFailed, StopRequestFailed]


def test_event_union_is_exactly_the_nine_events() -> None:
    """Event is the closed union of the nine outcomes of SPEC §4."""
    assert set(typing.get_args(Event)) == {
        OrderRejected,
        OrderFailed,
        AuctionRequested,
        AuctionRequestFailed,
        AuctionStarted,
        StopRequestFailed,
        AuctionStopped,
        AuctionSettled,
        AccountReset,
    }


def test_event_optional_fields_default_to_empty() -> None:
    """Reasons default to "", receipts' hash and margin and the chain start to None."""
    assert OrderRejected(client_id="c").reason == ""
    assert OrderFailed(client_id="c").reason == ""
    assert AuctionRequestFailed(request_id="r").reason == ""
    assert StopRequestFailed(request_id="r").reason == ""
    receipt = AuctionRequested(request_id="r", auction_id="a")
    assert (receipt.tx_hash, receipt.margin_needed) == (None, None)
    assert AuctionStarted(auction_id="a").chain_start_time is None
    assert AccountReset() == AccountReset()


@given(event=events())
def test_events_strategy_are_valid_frozen_events(event: Event) -> None:
    """Generated events rebuild equal from their fields and cannot be mutated."""
    assert type(event)(**attrs.asdict(event, recurse=False)) == event
    fields = attrs.fields(type(event))
    if fields:
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(event, fields[0].name, "x")


@pytest.mark.parametrize(
    ("cls", "fields", "name"),
    [
        (OrderRejected, {"client_id": ""}, "OrderRejected.client_id"),
        (OrderRejected, {"client_id": None}, "OrderRejected.client_id"),
        (OrderFailed, {"client_id": 5}, "OrderFailed.client_id"),
        (AuctionRequested, {"request_id": "", "auction_id": "a"}, "AuctionRequested.request_id"),
        (AuctionRequested, {"request_id": "r", "auction_id": ""}, "AuctionRequested.auction_id"),
        (
            AuctionRequested,
            {"request_id": "r", "auction_id": "a", "tx_hash": ""},
            "AuctionRequested.tx_hash",
        ),
        (
            AuctionRequested,
            {"request_id": "r", "auction_id": "a", "margin_needed": 1.5},
            "AuctionRequested.margin_needed",
        ),
        (
            AuctionRequested,
            {"request_id": "r", "auction_id": "a", "margin_needed": Decimal("NaN")},
            "AuctionRequested.margin_needed",
        ),
        (AuctionRequestFailed, {"request_id": ""}, "AuctionRequestFailed.request_id"),
        (AuctionStarted, {"auction_id": ""}, "AuctionStarted.auction_id"),
        (
            AuctionStarted,
            {"auction_id": "a", "chain_start_time": 1.5},
            "AuctionStarted.chain_start_time",
        ),
        (
            AuctionStarted,
            {"auction_id": "a", "chain_start_time": True},
            "AuctionStarted.chain_start_time",
        ),
        (StopRequestFailed, {"request_id": None}, "StopRequestFailed.request_id"),
        (AuctionStopped, {"auction_id": ""}, "AuctionStopped.auction_id"),
        (AuctionSettled, {"auction_id": 7}, "AuctionSettled.auction_id"),
    ],
)
def test_event_bad_field_raises_invalid_input_naming_it(
    cls: Any, fields: dict[str, object], name: str
) -> None:
    """Empty or wrong-typed ids, float margins and non-int times are refused, naming the field."""
    with pytest.raises(InvalidInput, match=name.replace(".", r"\.")) as error:
        cls(**fields)
    assert isinstance(error.value, LiqcoreError)


@pytest.mark.parametrize("cls", _WITH_REASON)
def test_event_non_text_reason_raises_invalid_input(cls: Any) -> None:
    """A reason that is not a str is refused with InvalidInput naming Class.reason."""
    key = "client_id" if cls in (OrderRejected, OrderFailed) else "request_id"
    with pytest.raises(InvalidInput, match=rf"{cls.__name__}\.reason"):
        cls(**{key: "x", "reason": 404})


def test_account_reset_takes_no_fields() -> None:
    """AccountReset is a bare signal."""
    with pytest.raises(TypeError):
        AccountReset(wallet="W")  # type: ignore[call-arg]
