"""The reference responder: the simulated exchange answering the whole wire protocol on NATS.

An exchange integrates with ``liqshell run`` by answering NATS requests — observations
(:mod:`liqshell.adapters.nats_exchange`), orders and auctions
(:mod:`liqshell.adapters.nats`) — and publishing chain events. This module does all of it
for the simulator, so a configuration with ``[exchange] source = "nats"`` can be tried
without an exchange (``liqshell sim-exchange --config FILE``), and it is the executable
example of the protocol: :func:`serve_simulation` is what an exchange's own service does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from liqshell.adapters import nats as nats_adapters
from liqshell.adapters.nats_exchange import serve_exchange
from liqshell.ports import FeedItem
from liqshell.settings import NatsSettings, Settings, SettingsError, chain_key, nats_options
from liqshell.sim.exchange import SimExchange
from liqshell.sim.live import ScaledClock, drive
from liqshell.sim.world import new_world

__all__ = ["run_reference_exchange", "serve_simulation"]

_log = logging.getLogger("liqshell.sim.responder")

Publish = Callable[[FeedItem], Awaitable[None]]


async def serve_simulation(
    connector: nats_adapters.NatsConnector,
    exchange: SimExchange,
    subjects: NatsSettings,
    *,
    key: bytes | None = None,
) -> tuple[list[nats_adapters.Responder], Publish]:
    """Answer every request subject of ``subjects`` from ``exchange`` and return the
    responders with the function that publishes a chain event (signed with ``key``, through
    the chain stream when one is set)."""
    responders = [
        await serve_exchange(
            connector,
            portfolios=exchange,
            margin=exchange,
            quotes=exchange,
            orders=exchange,
            portfolios_subject=subjects.portfolios_subject,
            margin_subject=subjects.margin_subject,
            quotes_subject=subjects.quotes_subject,
            open_orders_subject=subjects.open_orders_subject,
        ),
        await nats_adapters.serve_orders(
            connector,
            submit=exchange.submit,
            cancel=exchange.cancel,
            submit_subject=subjects.submit_subject,
            cancel_subject=subjects.cancel_subject,
        ),
        await nats_adapters.serve_auctions(
            connector,
            start=exchange.start,
            stop=exchange.stop,
            start_subject=subjects.auction_start_subject,
            stop_subject=subjects.auction_stop_subject,
        ),
    ]

    async def publish(item: FeedItem) -> None:
        event = nats_adapters.ChainEvent(
            event_id=item.event_id, wallet=item.wallet, event=item.event
        )
        await nats_adapters.publish_chain_event(
            connector,
            event,
            subject=subjects.chain_subject,
            stream=subjects.chain_stream,
            timeout_ms=subjects.request_timeout_ms,
            key=key,
        )

    return responders, publish


async def run_reference_exchange(
    settings: Settings,
    stop: asyncio.Event,
    *,
    on_ready: Callable[[SimExchange], object] | None = None,
) -> None:
    """Run the simulated exchange of ``settings`` (``[sim]``, ``[liqcore]``, ``[exchange]
    speed``) as a NATS service on ``[nats]`` until ``stop`` is set: it answers every request
    subject and publishes its chain events (signed with ``chain_key_file`` when set)."""
    subjects = settings.nats
    if subjects is None:
        raise SettingsError(f"{settings.source}: [nats]: required by the reference exchange")
    key = chain_key(settings)
    connector = nats_adapters.NatsConnector(
        list(subjects.servers),
        name="liqshell-sim-exchange",
        connect_timeout_ms=subjects.connect_timeout_ms,
        options=nats_options(settings),
    )
    async with connector, contextlib.AsyncExitStack() as stack:
        await connector.client()  # fail fast: ServiceUnavailable names the servers
        if subjects.chain_stream is not None:
            await nats_adapters.ensure_stream(
                connector, subjects.chain_stream, [subjects.chain_subject]
            )
        world = new_world(settings.sim, settings.config)
        exchange = SimExchange(world, config=settings.config)
        responders, publish = await serve_simulation(connector, exchange, subjects, key=key)
        for responder in responders:
            stack.push_async_callback(responder.stop)
        clock = ScaledClock(world.now, float(settings.exchange.speed))
        _log.info(
            "simulated exchange of %d accounts serving on %s",
            len(world.accounts),
            connector.shown_servers,
        )
        if on_ready is not None:
            on_ready(exchange)
        await drive(exchange, clock, stop, publish=publish)
