"""The observation wire protocol: NatsExchange against serve_exchange on a real server."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liqcore import MarginMode, OpenOrder, Portfolio, Position, Quote, Side
from liqshell.adapters.nats import NatsConnector, Responder, settle
from liqshell.adapters.nats_exchange import (
    WIRE_VERSION,
    ExchangeUnavailable,
    NatsExchange,
    serve_exchange,
)
from liqshell.ports import MarginReport
from liqshell.testing import FakeExchange, Fault

pytestmark = pytest.mark.services

_prefixes = itertools.count(1)
SYMBOL = "BTC-20261231-100000-C"
PortfolioOf: Callable[..., Portfolio] = Portfolio
QUOTE = Quote(best_bid=Decimal(149), best_ask=Decimal(150), mid=Decimal("149.5"))
REPORT = MarginReport(
    margin_mode=MarginMode.STANDARD,
    equity=Decimal(100),
    mm_required=Decimal(300),
    is_liquidatable=True,
)
ORDER = OpenOrder(
    order_id=7,
    symbol=SYMBOL,
    side=Side.SELL,
    price=Decimal(95),
    original_size=Decimal(1),
    remaining_size=Decimal(1),
    client_id="user",
    created_at=1,
)


def portfolio(cash: int = 500) -> Portfolio:
    position = Position(symbol=SYMBOL, amount=Decimal(-4), entry_price=Decimal(100))
    return PortfolioOf(
        cash=Decimal(cash), positions={SYMBOL: position}, spot={"BTC": Decimal(105_000)}
    )


def fake(wallets: int = 3) -> FakeExchange:
    exchange = FakeExchange()
    for i in range(wallets):
        wallet = f"0x{i:02d}"
        exchange.set_portfolio(wallet, portfolio(500 + i))
        exchange.set_margin(wallet, REPORT)
    exchange.add_order("0x00", ORDER)
    exchange.set_quote(SYMBOL, QUOTE)
    return exchange


@pytest.fixture
async def connector(nats_url: str) -> AsyncIterator[NatsConnector]:
    connection = NatsConnector(nats_url)
    yield connection
    await connection.close()


@pytest.fixture
async def server_side(nats_url: str) -> AsyncIterator[NatsConnector]:
    connection = NatsConnector(nats_url, name="exchange")
    yield connection
    await connection.close()


def subjects(prefix: str) -> dict[str, str]:
    return {
        "portfolios_subject": f"{prefix}.portfolios",
        "margin_subject": f"{prefix}.margin",
        "quotes_subject": f"{prefix}.quotes",
        "open_orders_subject": f"{prefix}.open_orders",
    }


async def serve(connection: NatsConnector, exchange: object, prefix: str) -> Responder:
    return await serve_exchange(
        connection,
        portfolios=exchange,  # type: ignore[arg-type]
        margin=exchange,  # type: ignore[arg-type]
        quotes=exchange,  # type: ignore[arg-type]
        orders=exchange,  # type: ignore[arg-type]
        **subjects(prefix),
    )


async def test_every_observation_round_trips(
    connector: NatsConnector, server_side: NatsConnector
) -> None:
    """Portfolios (all, one, several), margin (one, several), quotes and open orders arrive
    equal to what the exchange's ports return."""
    prefix = f"x{next(_prefixes)}"
    exchange = fake()
    responder = await serve(server_side, exchange, prefix)
    client = NatsExchange(connector, **subjects(prefix))
    try:
        assert await client.portfolios() == await exchange.portfolios()
        assert await client.portfolio("0x01") == portfolio(501)
        assert await client.portfolio("0xnone") is None
        assert await client.portfolios_of(["0x00", "0x02"]) == {
            "0x00": portfolio(500),
            "0x02": portfolio(502),
        }
        assert await client.margin("0x00", portfolio()) == REPORT
        assert await client.margins({"0x00": portfolio(), "0x01": None}) == {
            "0x00": REPORT,
            "0x01": REPORT,
        }
        assert await client.quotes([SYMBOL, "NOPE"]) == {SYMBOL: QUOTE}
        assert list(await client.open_orders("0x00")) == [ORDER]
        assert await client.open_orders_many(["0x00", "0x01"]) == {"0x00": (ORDER,), "0x01": ()}
    finally:
        await responder.stop()


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(wallets=st.integers(min_value=0, max_value=12), batch=st.integers(min_value=1, max_value=5))
async def test_listing_and_batches_are_split_and_joined_exactly(
    connector: NatsConnector, server_side: NatsConnector, wallets: int, batch: int
) -> None:
    """However many accounts and whatever the batch size, paging the listing and splitting
    batches loses and duplicates nothing."""
    prefix = f"x{next(_prefixes)}"
    exchange = fake(wallets)
    responder = await serve(server_side, exchange, prefix)
    client = NatsExchange(connector, batch=batch, **subjects(prefix))
    try:
        listing = await client.portfolios()
        assert listing == await exchange.portfolios()
        reports = await client.margins(dict.fromkeys(listing))
        assert set(reports) == set(listing)
    finally:
        await responder.stop()


async def test_a_failing_wallet_is_left_out_alone(
    connector: NatsConnector, server_side: NatsConnector
) -> None:
    """A wallet whose observation fails at the exchange is missing from the batch reply (the
    others are answered); asked alone, it is an ExchangeUnavailable."""
    prefix = f"x{next(_prefixes)}"
    exchange = fake()
    exchange.inject(
        "margin", Fault.raising(RuntimeError("engine hiccup")), wallet="0x01", times=None
    )
    responder = await serve(server_side, exchange, prefix)
    client = NatsExchange(connector, **subjects(prefix))
    try:
        reports = await client.margins({"0x00": None, "0x01": None, "0x02": None})
        assert set(reports) == {"0x00", "0x02"}
        with pytest.raises(ExchangeUnavailable, match="no report for '0x01'"):
            await client.margin("0x01", None)
    finally:
        await responder.stop()


async def test_a_stopped_responder_is_gone_from_the_server_when_stop_returns(
    connector: NatsConnector, server_side: NatsConnector
) -> None:
    """Once stop() returns, a request finds no responder at once: it is never routed to a
    subscription the responder's side has already forgotten (which answers nothing, so the
    requester would wait out its whole timeout)."""
    prefix = f"x{next(_prefixes)}"
    client = NatsExchange(connector, timeout_ms=3_000, **subjects(prefix))
    for _ in range(10):
        responder = await serve(server_side, fake(), prefix)
        assert dict(await client.quotes([SYMBOL]))
        await responder.stop()
        with pytest.raises(ExchangeUnavailable, match="no responder"):
            await client.quotes([SYMBOL])


async def test_versions_errors_and_no_responder(
    connector: NatsConnector, server_side: NatsConnector
) -> None:
    """A request of another version is refused naming the version; a reply of another
    version, an error reply, an unreadable reply and no responder are ExchangeUnavailable."""
    prefix = f"x{next(_prefixes)}"
    responder = await serve(server_side, fake(), prefix)
    raw = await connector.client()
    try:
        reply = await raw.request(f"{prefix}.quotes", b'{"v": 2, "symbols": []}', timeout=2)
        assert json.loads(reply.data)["error"] == "unsupported_version"
        reply = await raw.request(f"{prefix}.quotes", b"[1]", timeout=2)
        assert json.loads(reply.data)["error"] == "bad_request"
    finally:
        await responder.stop()

    server = await server_side.client()
    answers = iter([b'{"v": 2, "quotes": {}}', b'{"error": "failed", "reason": "x"}', b"{"])

    async def answer(msg: object) -> None:
        await msg.respond(next(answers))  # type: ignore[attr-defined]

    subscription = await server.subscribe(f"{prefix}.quotes", cb=answer)
    await settle(server)  # one flush() can return before the server read the SUB
    client = NatsExchange(connector, **subjects(prefix))
    try:
        for expected in (f"version 2, expected {WIRE_VERSION}", "answered 'failed'", "unreadable"):
            with pytest.raises(ExchangeUnavailable, match=expected):
                await client.quotes([SYMBOL])
    finally:
        await subscription.unsubscribe()
    with pytest.raises(ExchangeUnavailable, match="no responder"):
        await NatsExchange(connector, **subjects(f"{prefix}-none")).portfolios()
