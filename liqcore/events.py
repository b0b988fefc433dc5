"""Events: outcomes the shell reports back, folded into a state by ``apply``.

Past tense, one class per outcome. An event that does not match the current phase or ids
leaves the state unchanged, so replaying an event twice is harmless.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TypeAlias

import attrs

from liqcore import _validators as v

__all__ = [
    "AccountReset",
    "AuctionRequestFailed",
    "AuctionRequested",
    "AuctionSettled",
    "AuctionStarted",
    "AuctionStopped",
    "Event",
    "OrderFailed",
    "OrderRejected",
    "StopRequestFailed",
]


@attrs.frozen(kw_only=True)
class OrderRejected:
    """The order engine rejected a liquidation order."""

    client_id: str = attrs.field(validator=v.text)
    reason: str = attrs.field(default="", validator=v.any_text)


@attrs.frozen(kw_only=True)
class OrderFailed:
    """A liquidation order provably never reached the engine."""

    client_id: str = attrs.field(validator=v.text)
    reason: str = attrs.field(default="", validator=v.any_text)


@attrs.frozen(kw_only=True)
class AuctionRequested:
    """The auction executor answered a ``StartAuction`` with a receipt."""

    request_id: str = attrs.field(validator=v.text)
    auction_id: str = attrs.field(validator=v.text)
    tx_hash: str | None = attrs.field(default=None, validator=v.optional_text)
    margin_needed: Decimal | None = attrs.field(default=None, validator=v.optional_decimal)


@attrs.frozen(kw_only=True)
class AuctionRequestFailed:
    """A ``StartAuction`` provably never left; the next poll may request again."""

    request_id: str = attrs.field(validator=v.text)
    reason: str = attrs.field(default="", validator=v.any_text)


@attrs.frozen(kw_only=True)
class AuctionStarted:
    """The chain reports the account's auction running."""

    auction_id: str = attrs.field(validator=v.text)
    chain_start_time: int | None = attrs.field(default=None, validator=v.optional_int)


@attrs.frozen(kw_only=True)
class StopRequestFailed:
    """A ``StopAuction`` provably never left."""

    request_id: str = attrs.field(validator=v.text)
    reason: str = attrs.field(default="", validator=v.any_text)


@attrs.frozen(kw_only=True)
class AuctionStopped:
    """The chain reports the auction stopped (the account recovered)."""

    auction_id: str = attrs.field(validator=v.text)


@attrs.frozen(kw_only=True)
class AuctionSettled:
    """The chain reports the auction settled: the account is liquidated."""

    auction_id: str = attrs.field(validator=v.text)


@attrs.frozen(kw_only=True)
class AccountReset:
    """An operator re-opens a liquidated account."""


Event: TypeAlias = (
    OrderRejected
    | OrderFailed
    | AuctionRequested
    | AuctionRequestFailed
    | AuctionStarted
    | StopRequestFailed
    | AuctionStopped
    | AuctionSettled
    | AccountReset
)
"""The closed union of events."""
