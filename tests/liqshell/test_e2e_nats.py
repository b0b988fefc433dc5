"""End to end over NATS: the watcher and a small order-engine service, through a full life.

The watcher runs on the real adapters — :class:`NatsOrderGateway`,
:class:`NatsAuctionExecutor`, :class:`NatsAuctionFeed` on a JetStream stream,
:class:`NatsEventSink` on a JetStream stream, :class:`SqliteStore` — against
:class:`tests.liqshell.engine_service.Engine`, which answers per the documented wire format,
keeps the orders and auctions, and plays the chain. One wallet goes through the whole
life: enter pre-liquidation (cancel a risk-increasing order, submit a liquidation order),
reprice (cancel, re-step, submit at a higher bonus), escalate (cancel everything, start the
auction), auction started on chain, recovered (stop the auction), auction stopped on chain,
healthy again — and every request and state-change message is checked.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from liqcore import (
    AuctionStarted,
    AuctionStopped,
    CancelOrder,
    Command,
    Healthy,
    InLiquidation,
    PreLiquidation,
    PublishStateChange,
    StartAuction,
    StopAuction,
    SubmitOrder,
)
from liqshell.ports import RecordKind
from tests.liqshell.engine_service import RECOVERED, SYMBOL, Rig, W, eventually, open_rig

pytestmark = pytest.mark.services

_prefixes = itertools.count(1)


@pytest.fixture
async def rig(nats_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    """The engine with SPEC §8's liquidatable account, and the watcher's adapters."""
    async with open_rig(nats_url, tmp_path, f"e2e{next(_prefixes)}") as opened:
        yield opened


async def test_e2e_nats_full_life_enter_reprice_escalate_auction_stop_recover(rig: Rig) -> None:
    """One wallet's whole life over NATS: every request reaches the engine once with its
    request id as ``Nats-Msg-Id``, every state is as SPEC §7 says, and every published
    state change is a committed decision's publish under its ``wallet:version:index``."""
    engine, clock = rig.engine, rig.clock
    watcher = rig.watcher()

    # Enter: cancel the risk-increasing SELL, submit one reduce-only BUY (SPEC §8.1).
    report = await watcher.run_once()
    assert (report.stepped, report.skipped, report.conflicts) == (1, 0, 0)
    assert engine.kinds() == ["cancel", "submit"]
    cancel, submit = (r.command for r in engine.requests)
    assert isinstance(cancel, CancelOrder)
    assert cancel.order_id == 7
    assert isinstance(submit, SubmitOrder)
    assert (submit.symbol, submit.price, submit.reduce_only) == (SYMBOL, Decimal("120.60"), True)
    assert submit.client_id == f"liq-{W}-10000-0"
    entered = (await rig.state()).phase
    assert isinstance(entered, PreLiquidation)
    assert entered.active_order_client_ids == (submit.client_id,)
    assert rig.client_ids() == [submit.client_id]

    # Reprice: due after 5 s with the order still open: cancel it, re-step at once, submit
    # the new set at a higher bonus.
    clock.set(15_000)
    await watcher.run_once()
    assert engine.kinds()[2:] == ["cancel", "submit"]
    recancel, resubmit = (r.command for r in engine.requests[2:])
    assert isinstance(recancel, CancelOrder)
    assert recancel.client_id == submit.client_id
    assert isinstance(resubmit, SubmitOrder)
    assert resubmit.client_id == f"liq-{W}-15001-0"
    repriced = (await rig.state()).phase
    assert isinstance(repriced, PreLiquidation)
    assert repriced.active_order_client_ids == (resubmit.client_id,)
    assert repriced.last_reprice_at == 15_001
    assert repriced.bonus_bps > entered.bonus_bps
    assert resubmit.price > submit.price
    assert rig.client_ids() == [resubmit.client_id]

    # Escalate at the deadline: cancel every open order, start the auction (receipt).
    clock.set(70_000)
    await watcher.run_once()
    assert engine.kinds()[4:] == ["cancel", "start"]
    escalated = (await rig.state()).phase
    assert isinstance(escalated, PreLiquidation)
    assert escalated.pending_full_auction_id == "auction-1"
    assert escalated.pending_full_tx_hash == f"0x{1:064x}"
    assert escalated.pending_full_margin_needed == Decimal(200)
    assert engine.open_orders_of(W) == ()

    # The chain starts the auction: InLiquidation; a poll there has nothing to do.
    engine.auctions["auction-1"].status = "running"
    await engine.chain(W, AuctionStarted(auction_id="auction-1", chain_start_time=71_000),
                       "auction-1:started")  # fmt: skip
    clock.set(72_000)
    assert await watcher.drain_feed() == 1
    running = (await rig.state()).phase
    assert running == InLiquidation(auction_id="auction-1", entered_at=72_000,
                                    chain_start_time=71_000)  # fmt: skip
    clock.set(75_000)
    assert (await watcher.run_once()).commands == 0

    # Recovered: stop the auction; the chain confirms; healthy again.
    engine.margins[W] = RECOVERED
    clock.set(80_000)
    await watcher.run_once()
    assert engine.kinds()[6:] == ["stop"]
    stop = engine.requests[6].command
    assert isinstance(stop, StopAuction)
    assert (stop.auction_id, stop.chain_start_time) == ("auction-1", 71_000)
    stopping = (await rig.state()).phase
    assert isinstance(stopping, InLiquidation)
    assert stopping.stop_request_id == stop.request_id
    assert engine.auctions["auction-1"].status == "stopping"
    engine.auctions["auction-1"].status = "stopped"
    await engine.chain(W, AuctionStopped(auction_id="auction-1"), "auction-1:stopped")
    # A late copy of the start, under another id, must not reopen the closed auction.
    await engine.chain(W, AuctionStarted(auction_id="auction-1", chain_start_time=71_000),
                       "auction-1:started-again")  # fmt: skip
    clock.set(81_000)
    assert await watcher.drain_feed() == 1
    recovered = await rig.state()
    assert recovered.phase == Healthy()
    assert recovered.last_closed_auction_id == "auction-1"
    assert watcher.cursor == 3
    clock.set(85_000)
    assert (await watcher.run_once()).commands == 0
    assert (await rig.state()).phase == Healthy()

    # Every request once, under its request id; answered as documented.
    assert [r.msg_id for r in engine.requests] == [r.command.request_id for r in engine.requests]
    assert len({r.msg_id for r in engine.requests}) == len(engine.requests)
    assert all(r.reply is not None and "error" not in r.reply for r in engine.requests)

    # Every publish of every committed decision and applied feed item arrived once, under
    # its key, unchanged.
    records = list(rig.store.records(wallet=W))
    decided: list[tuple[str, Command]] = [
        (f"{W}:{r.version}:{i}", c)
        for r in records
        if r.kind in (RecordKind.DECISION, RecordKind.FEED)
        for i, c in enumerate(r.commands)
    ]
    publishes = {key: c.change for key, c in decided if isinstance(c, PublishStateChange)}
    await eventually(lambda: len(engine.published) >= len(publishes))
    await engine.settle()
    assert dict(engine.published) == publishes
    assert len(engine.published) == len(publishes)
    requested = [
        c.request_id
        for _, c in decided
        if isinstance(c, SubmitOrder | CancelOrder | StartAuction | StopAuction)
    ]
    assert requested == [r.command.request_id for r in engine.requests]
    # step's publishes and, since issue 9, the transitions the chain feed applies (auction
    # started → in_liquidation, auction stopped → healthy), in the order they were made.
    transitions = [(c.previous_phase, c.new_phase, c.projection_changed)
                   for _, c in engine.published]  # fmt: skip
    assert transitions == [
        ("healthy", "pre_liquidation", True),  # entry
        ("pre_liquidation", "pre_liquidation", True),  # the liquidation order tracked
        ("pre_liquidation", "pre_liquidation", True),  # reprice: the new bonus
        ("pre_liquidation", "pre_liquidation", True),  # reprice: the new order tracked
        ("pre_liquidation", "pre_liquidation", True),  # escalation: the auction requested
        ("pre_liquidation", "in_liquidation", True),  # feed: the auction started
        ("in_liquidation", "in_liquidation", True),  # the stop requested
        ("in_liquidation", "healthy", True),  # feed: the auction stopped
    ]
