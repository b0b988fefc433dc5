"""liqshell.sim.auctions: idempotent per wallet; start → settle or stop, published in order."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from liqcore import (
    AuctionSettled,
    AuctionStarted,
    AuctionStopped,
    Config,
    StartAuction,
    StopAuction,
)
from liqshell.sim import auctions
from liqshell.sim.world import Market, SimParams, World, new_world

PARAMS = SimParams(accounts=3, minutes=5, seed=2, auction_delay_ms=2_000, auction_ms=30_000)
MARKET = Market(PARAMS)


def fresh() -> tuple[World, str]:
    """A new world and its first wallet."""
    world = new_world(PARAMS, Config(), MARKET)
    return world, sorted(world.accounts)[0]


def move_to(world: World, now: int) -> None:
    """Let the chain run until ``now``."""
    world.now = now
    auctions.advance(world, MARKET)


@given(request_ids=st.lists(st.text("abcdef0123", min_size=1, max_size=6), min_size=1, max_size=6))
def test_start_any_number_of_requests_one_auction(request_ids: list[str]) -> None:
    """While an auction is live, every start returns its receipt: never a second auction."""
    world, wallet = fresh()
    receipts = [
        auctions.start(world, StartAuction(wallet=wallet, request_id=r), Decimal(5))
        for r in request_ids
    ]
    assert len({r.auction_id for r in receipts}) == 1
    assert len(world.auctions) == 1
    assert receipts[0].tx_hash is not None
    assert receipts[0].tx_hash.startswith("0x")


def test_advance_running_auction_starts_then_settles_and_takes_the_book() -> None:
    """AuctionStarted after the delay, AuctionSettled after the duration; the book is gone."""
    world, wallet = fresh()
    receipt = auctions.start(world, StartAuction(wallet=wallet, request_id="r"), Decimal(5))
    auction = world.auctions[receipt.auction_id]
    move_to(world, auction.start_at - 1)
    assert world.feed == []
    move_to(world, auction.start_at)
    assert [type(e.event) for e in world.feed] == [AuctionStarted]
    started = world.feed[0].event
    assert isinstance(started, AuctionStarted)
    assert started.chain_start_time == auction.start_at
    assert world.accounts[wallet].holdings
    move_to(world, auction.settle_at)
    assert [type(e.event) for e in world.feed] == [AuctionStarted, AuctionSettled]
    assert world.accounts[wallet].holdings == {}
    assert world.accounts[wallet].cash >= 0
    assert world.stats.auctions_settled == 1


def test_stop_running_auction_publishes_stopped_and_keeps_the_book() -> None:
    """A stop before settlement ends the auction without touching the account."""
    world, wallet = fresh()
    receipt = auctions.start(world, StartAuction(wallet=wallet, request_id="r"), Decimal(5))
    auction = world.auctions[receipt.auction_id]
    move_to(world, auction.start_at)
    holdings = dict(world.accounts[wallet].holdings)
    auctions.stop(
        world,
        StopAuction(
            wallet=wallet,
            auction_id=auction.auction_id,
            chain_start_time=auction.start_at,
            request_id="s",
        ),
    )
    move_to(world, auction.settle_at + 60_000)
    assert [type(e.event) for e in world.feed] == [AuctionStarted, AuctionStopped]
    assert world.accounts[wallet].holdings == holdings
    assert auction.status == "stopped"


def test_start_after_settlement_opens_a_new_auction() -> None:
    """Idempotence covers live auctions only: a settled one does not block the next."""
    world, wallet = fresh()
    first = auctions.start(world, StartAuction(wallet=wallet, request_id="a"), Decimal(5))
    move_to(world, world.auctions[first.auction_id].settle_at)
    second = auctions.start(world, StartAuction(wallet=wallet, request_id="b"), Decimal(5))
    assert second.auction_id != first.auction_id


def test_feed_items_after_cursor_only_later_items() -> None:
    """Cursors are 1-based positions; items after a cursor are exactly the later ones."""
    world, wallet = fresh()
    receipt = auctions.start(world, StartAuction(wallet=wallet, request_id="r"), Decimal(5))
    move_to(world, world.auctions[receipt.auction_id].settle_at)
    items = auctions.feed_items(world, None)
    assert [i.cursor for i in items] == [1, 2]
    assert auctions.feed_items(world, 1) == items[1:]
    assert auctions.feed_items(world, 2) == []
    assert len({i.event_id for i in items}) == 2
