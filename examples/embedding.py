"""Embedding the watcher in a backend: your exchange behind the ports, typed.

Checked by ``mypy --strict`` (``nox -s typecheck``); the README shows this file verbatim.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from decimal import Decimal

from prometheus_client import CollectorRegistry

from liqcore import (
    CancelOrder,
    Config,
    InstrumentSpec,
    OpenOrder,
    Portfolio,
    Quote,
    StandardMargin,
    StartAuction,
    StateChange,
    StopAuction,
    SubmitOrder,
)
from liqshell import (
    AuctionReceipt,
    FeedItem,
    MarginReport,
    OrderAnswer,
    SqliteStore,
    SystemClock,
    Watcher,
)
from liqshell.ports import Cursor


class Exchange:
    """Your backend, seen through the watcher's ports (one object may serve them all).

    Raise ``liqshell.NotSent`` when a request surely did not leave, and
    ``liqshell.OutcomeUnknown`` when it may have been applied; the watcher reconciles.
    """

    # PortfolioSource
    async def portfolios(self) -> Mapping[str, Portfolio]:
        raise NotImplementedError("every account with a portfolio, by wallet")

    async def portfolio(self, wallet: str) -> Portfolio | None:
        raise NotImplementedError("one account; None if the snapshot is unavailable")

    # MarginSource
    async def margin(self, wallet: str, portfolio: Portfolio | None) -> MarginReport:
        raise NotImplementedError("your margin engine's equity, mm_required and verdict")

    # QuoteSource
    async def quotes(self, symbols: Sequence[str]) -> Mapping[str, Quote]:
        raise NotImplementedError("best bid/ask, mid and theo; missing symbols allowed")

    # OrderSnapshot
    async def open_orders(self, wallet: str) -> Sequence[OpenOrder]:
        raise NotImplementedError("the order engine's open orders of the wallet")

    # OrderGateway
    async def submit(self, command: SubmitOrder) -> OrderAnswer:
        raise NotImplementedError("reduce-only limit order; ACKED (with order_id) or REJECTED")

    async def cancel(self, command: CancelOrder) -> OrderAnswer:
        raise NotImplementedError("CANCELED, GONE (no longer open) or REJECTED")

    # AuctionExecutor: idempotent per wallet
    async def start(self, command: StartAuction) -> AuctionReceipt:
        raise NotImplementedError("the wallet's auction (the running one if there is one)")

    async def stop(self, command: StopAuction) -> None:
        raise NotImplementedError("stop the wallet's auction")

    # AuctionFeed: what the chain and operators report, after a cursor, then end
    async def events(self, after: Cursor | None) -> AsyncIterator[FeedItem]:
        observed: list[FeedItem] = []  # FeedItem(cursor=…, event_id=…, wallet=…, event=…)
        for item in observed:
            yield item

    # EventSink: at least once; consumers dedupe by key = (wallet, version, index)
    async def publish(self, change: StateChange, *, key: tuple[str, int, int]) -> None:
        raise NotImplementedError("publish the state change to your bus")


CONFIG = Config(
    poll_interval_ms=5_000,
    partial_target_buffer_bps=500,
    partial_bonus_start_bps=50,
    partial_bonus_max_bps=500,
    partial_bonus_ramp_ms=60_000,
    full_escalation_timeout_ms=60_000,
    min_shortfall_threshold=Decimal(10),
    standard_margin=StandardMargin(rate=Decimal("0.10"), floor_rate=Decimal("0.05")),
    instruments={"BTC": InstrumentSpec(size_step=Decimal("0.01"), price_tick=Decimal("0.1"))},
)
"""Our names (``liqcore.Config``); ``liqshell check-config`` prints the same from a TOML."""


def build_watcher(exchange: Exchange, store: SqliteStore, registry: CollectorRegistry) -> Watcher:
    """The composition root: every port, the store, a real clock and a metrics registry."""
    return Watcher(
        portfolios=exchange,
        margin=exchange,
        quotes=exchange,
        orders=exchange,
        gateway=exchange,
        auctions=exchange,
        feed=exchange,
        store=store,  # StateStore and Recorder in one SQLite file
        sink=exchange,
        recorder=store,
        clock=SystemClock(),
        config=CONFIG,
        metrics=registry,  # serve it with prometheus_client's start_http_server
    )


async def main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with SqliteStore("liquidations.sqlite") as store:
        watcher = build_watcher(Exchange(), store, CollectorRegistry())
        await watcher.run(stop)  # polls, wake-ups and the feed until a signal


if __name__ == "__main__":
    asyncio.run(main())
