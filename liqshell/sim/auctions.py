"""The simulated auction house and its chain-event feed.

``start`` is idempotent per wallet: while an auction of the wallet is pending, running or
being stopped, it returns that auction's receipt. An auction starts on chain a few seconds
after the request (``AuctionStarted`` in the feed), and settles after a while — a
liquidator takes the whole book at a discount (``AuctionSettled``) — unless it was stopped
first (``AuctionStopped``). Delays are drawn per auction from the run's seed, so they do not
depend on the order in which wallets asked.

The feed is the world's list of published items: the cursor of an item is its 1-based
position, its event id names the auction and what happened to it.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

from liqcore import (
    AuctionSettled,
    AuctionStarted,
    AuctionStopped,
    Event,
    StartAuction,
    StopAuction,
)
from liqcore.numbers import CONTEXT
from liqshell.ports import AuctionReceipt, FeedItem
from liqshell.sim.market import rng
from liqshell.sim.world import Auction, FeedEntry, Market, World, account_portfolio

__all__ = ["advance", "feed_items", "receipt", "start", "stop"]

ZERO = Decimal(0)


def receipt(auction: Auction) -> AuctionReceipt:
    """What ``start`` answers for ``auction``."""
    return AuctionReceipt(
        auction_id=auction.auction_id, tx_hash=auction.tx_hash, margin_needed=auction.margin_needed
    )


def start(world: World, command: StartAuction, margin_needed: Decimal) -> AuctionReceipt:
    """Request the wallet's auction (or return the live one: idempotent per wallet)."""
    live = [
        a
        for a in world.auctions.values()
        if a.wallet == command.wallet and a.status in ("pending", "running", "stopping")
    ]
    if live:
        return receipt(live[0])
    account = world.accounts[command.wallet]
    account.auction_seq += 1
    auction_id = f"auction-{command.wallet}-{account.auction_seq}"
    draw = rng(world.params.seed, f"auction|{auction_id}")
    start_at = world.now + int(world.params.auction_delay_ms * draw.uniform(0.5, 1.5))
    settle_at = start_at + int(world.params.auction_ms * draw.uniform(0.7, 1.3))
    auction = Auction(
        auction_id=auction_id,
        wallet=command.wallet,
        request_id=command.request_id,
        tx_hash="0x" + hashlib.sha256(auction_id.encode()).hexdigest(),
        margin_needed=max(ZERO, margin_needed),
        requested_at=world.now,
        start_at=start_at,
        settle_at=settle_at,
    )
    world.auctions[auction_id] = auction
    world.stats.auctions_requested += 1
    world.stats.auctioned[command.wallet] = world.stats.auctioned.get(command.wallet, 0) + 1
    return receipt(auction)


def stop(world: World, command: StopAuction) -> None:
    """Ask the chain to stop the auction; a closed or unknown one is left alone."""
    auction = world.auctions.get(command.auction_id)
    if auction is None or auction.wallet != command.wallet:
        return
    if auction.status in ("pending", "running"):
        draw = rng(world.params.seed, f"stop|{auction.auction_id}")
        auction.status = "stopping"
        auction.stop_at = max(auction.start_at, world.now + int(1_000 * draw.uniform(0.5, 2.0)))


def _settle(world: World, market: Market, auction: Auction) -> None:
    """The liquidator takes the whole book at a discount; what is left of the equity stays
    with the account as cash (a negative equity is the insurance fund's)."""
    account = world.accounts[auction.wallet]
    portfolio = account_portfolio(world, market, account)
    value = ZERO
    gross = ZERO
    for position in portfolio.positions.values():
        worth = CONTEXT.multiply(position.amount, position.mark_price)
        value = CONTEXT.add(value, worth)
        gross = CONTEXT.add(gross, abs(worth))
    equity = CONTEXT.add(account.cash, value)
    take = min(max(equity, ZERO), CONTEXT.multiply(world.params.liquidator_discount, gross))
    account.cash = max(ZERO, CONTEXT.subtract(equity, take))
    account.holdings.clear()
    for order in world.orders.values():
        if order.wallet == auction.wallet and order.status == "open":
            order.status = "cancelled"
            world.stats.engine_cancelled += 1
    world.stats.liquidator_take = CONTEXT.add(world.stats.liquidator_take, take)


def advance(world: World, market: Market) -> None:
    """Publish what the chain did up to ``world.now``, in time order."""
    published: list[FeedEntry] = []

    def publish(at: int, auction: Auction, what: str, event: Event) -> None:
        event_id = f"{auction.auction_id}:{what}"
        published.append(FeedEntry(at=at, wallet=auction.wallet, event_id=event_id, event=event))

    for auction_id in sorted(world.auctions):
        auction = world.auctions[auction_id]
        if auction.status in ("settled", "stopped"):
            continue
        if not auction.started and auction.start_at <= world.now:
            auction.started = True
            if auction.status == "pending":
                auction.status = "running"
            world.stats.auctions_started += 1
            started = AuctionStarted(auction_id=auction_id, chain_start_time=auction.start_at)
            publish(auction.start_at, auction, "started", started)
        if not auction.started:
            continue
        stop_at = auction.stop_at if auction.status == "stopping" else None
        if stop_at is not None and stop_at <= auction.settle_at:
            if stop_at <= world.now:
                auction.status = "stopped"
                world.stats.auctions_stopped += 1
                recovered = world.stats.recovered
                recovered[auction.wallet] = recovered.get(auction.wallet, 0) + 1
                world.stats.recoveries += 1
                publish(stop_at, auction, "stopped", AuctionStopped(auction_id=auction_id))
        elif auction.settle_at <= world.now:
            auction.status = "settled"
            world.stats.auctions_settled += 1
            _settle(world, market, auction)
            publish(auction.settle_at, auction, "settled", AuctionSettled(auction_id=auction_id))
    published.sort(key=lambda entry: (entry.at, entry.event_id))
    world.feed.extend(published)


def feed_items(world: World, after: int | str | None) -> list[FeedItem]:
    """The published items after cursor ``after`` (``None``: all)."""
    first = 0
    if isinstance(after, int):
        first = max(0, after)
    elif isinstance(after, str) and after.isdigit():
        first = int(after)
    return [
        FeedItem(cursor=index + 1, event_id=e.event_id, wallet=e.wallet, event=e.event)
        for index, e in enumerate(world.feed[first:], start=first)
    ]
