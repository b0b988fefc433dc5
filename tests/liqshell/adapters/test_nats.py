"""NATS adapters against a real, throwaway nats-server: request/reply, errors, JetStream."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from decimal import Decimal

import nats
import pytest
from hypothesis import HealthCheck, given, settings
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig
from prometheus_client import CollectorRegistry

from liqcore import (
    AccountReset,
    AuctionSettled,
    AuctionStarted,
    CancelOrder,
    StartAuction,
    StateChange,
    StopAuction,
    SubmitOrder,
    codec,
)
from liqcore.strategies import state_changes
from liqshell.adapters import ServiceUnavailable
from liqshell.adapters import nats as nats_adapters
from liqshell.adapters.nats import (
    MAX_CHAIN_EVENT_BYTES,
    MAX_ID_LENGTH,
    MSG_ID,
    ChainEvent,
    NatsAuctionExecutor,
    NatsAuctionFeed,
    NatsConnector,
    NatsEventSink,
    NatsOrderGateway,
    ensure_stream,
    error_reply,
    hmac_verifier,
    publish_chain_event,
    serve_auctions,
    serve_orders,
    settle,
)
from liqshell.metrics import Metrics
from liqshell.ports import (
    AnswerStatus,
    AuctionReceipt,
    FeedItem,
    NotSent,
    OrderAnswer,
    OutcomeUnknown,
)
from tests.liqshell.engine_service import eventually
from tests.liqshell.services import NatsServer, free_port

pytestmark = pytest.mark.services

_prefixes = itertools.count(1)

SUBMIT = SubmitOrder(
    wallet="0xa",
    symbol="BTC-20261231-100000-C",
    price=Decimal("0.0125"),
    size=Decimal("2.5"),
    client_id="liq-0xa-5-0",
    request_id="req-submit-1",
)
CANCEL = CancelOrder(wallet="0xa", order_id=41, client_id="liq-0xa-1-0", request_id="req-cancel-1")
START = StartAuction(wallet="0xa", request_id="req-start-1")
STOP = StopAuction(
    wallet="0xa", auction_id="auction-7", chain_start_time=3, request_id="req-stop-1"
)


@pytest.fixture
def prefix() -> str:
    """Subjects and stream names no other test uses."""
    return f"t{next(_prefixes)}"


@pytest.fixture
async def connector(nats_url: str) -> AsyncIterator[NatsConnector]:
    """The watcher side's connection."""
    connection = NatsConnector(nats_url, connect_timeout_ms=2_000, reconnect_wait_ms=50)
    yield connection
    await connection.close()


@pytest.fixture
async def exchange(nats_url: str) -> AsyncIterator[NatsConnector]:
    """The other side's connection (responders, subscribers)."""
    connection = NatsConnector(nats_url, name="exchange", reconnect_wait_ms=50)
    yield connection
    await connection.close()


def gateway(connector: NatsConnector, prefix: str, timeout_ms: int = 2_000) -> NatsOrderGateway:
    return NatsOrderGateway(
        connector,
        submit_subject=f"{prefix}.orders.submit",
        cancel_subject=f"{prefix}.orders.cancel",
        timeout_ms=timeout_ms,
    )


def auctions(connector: NatsConnector, prefix: str) -> NatsAuctionExecutor:
    return NatsAuctionExecutor(
        connector,
        start_subject=f"{prefix}.auctions.start",
        stop_subject=f"{prefix}.auctions.stop",
        timeout_ms=2_000,
    )


async def order_engine(exchange: NatsConnector, prefix: str, seen: list[object]) -> None:
    """A responder that acks every submit with order id 42 and cancels every cancel."""

    async def submit(command: SubmitOrder) -> OrderAnswer:
        seen.append(command)
        return OrderAnswer(status=AnswerStatus.ACKED, order_id=42)

    async def cancel(command: CancelOrder) -> OrderAnswer:
        seen.append(command)
        return OrderAnswer(status=AnswerStatus.CANCELED)

    await serve_orders(
        exchange,
        submit=submit,
        cancel=cancel,
        submit_subject=f"{prefix}.orders.submit",
        cancel_subject=f"{prefix}.orders.cancel",
    )


# --- request/reply -------------------------------------------------------------------------


async def test_nats_gateway_round_trips_submit_and_cancel(
    connector: NatsConnector, exchange: NatsConnector, prefix: str
) -> None:
    """Submit and cancel reach the responder as the same commands, with the request id as
    Nats-Msg-Id, and its answers come back."""
    seen: list[object] = []
    await order_engine(exchange, prefix, seen)
    headers: list[dict[str, str] | None] = []

    async def spy(msg: Msg) -> None:
        headers.append(msg.headers)

    await (await exchange.client()).subscribe(f"{prefix}.orders.*", cb=spy)
    await settle(await exchange.client())
    orders = gateway(connector, prefix)
    assert await orders.submit(SUBMIT) == OrderAnswer(status=AnswerStatus.ACKED, order_id=42)
    assert await orders.cancel(CANCEL) == OrderAnswer(status=AnswerStatus.CANCELED)
    assert seen == [SUBMIT, CANCEL]
    await asyncio.sleep(0.05)
    assert [h and h.get(MSG_ID) for h in headers] == ["req-submit-1", "req-cancel-1"]


async def test_nats_executor_round_trips_start_and_stop(
    connector: NatsConnector, exchange: NatsConnector, prefix: str
) -> None:
    """Start returns the responder's receipt (Decimals intact) and stop returns None."""
    receipt = AuctionReceipt(auction_id="auction-7", tx_hash="0xabc", margin_needed=Decimal("12.5"))
    seen: list[object] = []

    async def start(command: StartAuction) -> AuctionReceipt:
        seen.append(command)
        return receipt

    async def stop(command: StopAuction) -> None:
        seen.append(command)

    await serve_auctions(
        exchange,
        start=start,
        stop=stop,
        start_subject=f"{prefix}.auctions.start",
        stop_subject=f"{prefix}.auctions.stop",
    )
    executor = auctions(connector, prefix)
    assert await executor.start(START) == receipt
    await executor.stop(STOP)
    assert seen == [START, STOP]


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(answer=...)
async def test_nats_gateway_returns_any_submit_answer_unchanged(
    connector: NatsConnector, exchange: NatsConnector, answer: OrderAnswer
) -> None:
    """Whatever acked or rejected answer the engine gives, the gateway returns it equal."""
    if answer.status in (AnswerStatus.CANCELED, AnswerStatus.GONE):  # cancel-only answers
        answer = OrderAnswer(status=AnswerStatus.REJECTED, reason=answer.reason)
    prefix = f"t{next(_prefixes)}"

    async def submit(command: SubmitOrder) -> OrderAnswer:
        return answer

    async def cancel(command: CancelOrder) -> OrderAnswer:
        return answer

    responder = await serve_orders(
        exchange,
        submit=submit,
        cancel=cancel,
        submit_subject=f"{prefix}.orders.submit",
        cancel_subject=f"{prefix}.orders.cancel",
    )
    try:
        assert await gateway(connector, prefix).submit(SUBMIT) == answer
    finally:
        await responder.stop()


@pytest.mark.parametrize("status", [AnswerStatus.CANCELED, AnswerStatus.GONE])
async def test_nats_gateway_cancel_passes_canceled_and_gone(
    connector: NatsConnector, exchange: NatsConnector, prefix: str, status: AnswerStatus
) -> None:
    """A cancel answered ``"gone"`` (the order was no longer open) reaches the watcher as
    ``GONE``, like ``"canceled"``."""
    answer = OrderAnswer(status=status, reason="order already filled")

    async def cancel(command: CancelOrder) -> OrderAnswer:
        return answer

    async def submit(command: SubmitOrder) -> OrderAnswer:
        raise AssertionError("not called")

    responder = await serve_orders(
        exchange,
        submit=submit,
        cancel=cancel,
        submit_subject=f"{prefix}.orders.submit",
        cancel_subject=f"{prefix}.orders.cancel",
    )
    try:
        assert await gateway(connector, prefix).cancel(CANCEL) == answer
    finally:
        await responder.stop()


async def test_nats_gateway_without_responder_raises_not_sent(
    connector: NatsConnector, prefix: str
) -> None:
    """With nobody subscribed to the subject the request provably never arrived: NotSent."""
    with pytest.raises(NotSent, match="no responder"):
        await gateway(connector, prefix).submit(SUBMIT)
    with pytest.raises(NotSent):
        await auctions(connector, prefix).start(START)


async def test_nats_gateway_timeout_raises_outcome_unknown(
    connector: NatsConnector, exchange: NatsConnector, prefix: str
) -> None:
    """A responder that received the request but never answers gives OutcomeUnknown."""
    received: list[bytes] = []

    async def silent(msg: Msg) -> None:
        received.append(msg.data)

    await (await exchange.client()).subscribe(f"{prefix}.orders.submit", cb=silent)
    await settle(await exchange.client())
    with pytest.raises(OutcomeUnknown, match="no reply"):
        await gateway(connector, prefix, timeout_ms=200).submit(SUBMIT)
    assert len(received) == 1


async def test_nats_responder_errors_map_to_not_sent_and_outcome_unknown(
    connector: NatsConnector, exchange: NatsConnector, prefix: str
) -> None:
    """A handler raising NotSent gives NotSent; any other failure OutcomeUnknown."""

    async def submit(command: SubmitOrder) -> OrderAnswer:
        raise NotSent("engine paused, nothing done")

    async def cancel(command: CancelOrder) -> OrderAnswer:
        raise RuntimeError("engine crashed mid-way")

    await serve_orders(
        exchange,
        submit=submit,
        cancel=cancel,
        submit_subject=f"{prefix}.orders.submit",
        cancel_subject=f"{prefix}.orders.cancel",
    )
    orders = gateway(connector, prefix)
    with pytest.raises(NotSent, match="engine paused"):
        await orders.submit(SUBMIT)
    with pytest.raises(OutcomeUnknown, match="engine crashed"):
        await orders.cancel(CANCEL)


@pytest.mark.parametrize(
    "reply",
    [
        b"not json",
        b'{"status": "canceled"}',  # a submit cannot be canceled
        b'{"status": "acked", "unknown": 1}',
        b'{"status": "maybe"}',
        b"[]",
        error_reply("outcome_unknown", "lost track"),
    ],
)
async def test_nats_gateway_bad_or_uncertain_reply_raises_outcome_unknown(
    connector: NatsConnector, exchange: NatsConnector, prefix: str, reply: bytes
) -> None:
    """A reply that cannot be read, or says it cannot tell, gives OutcomeUnknown."""

    async def answer(msg: Msg) -> None:
        await msg.respond(reply)

    await (await exchange.client()).subscribe(f"{prefix}.orders.submit", cb=answer)
    await settle(await exchange.client())
    with pytest.raises(OutcomeUnknown):
        await gateway(connector, prefix).submit(SUBMIT)


async def test_nats_responder_refuses_an_unreadable_request_as_not_sent(
    exchange: NatsConnector, prefix: str
) -> None:
    """A request body that is not a command is answered not_sent (nothing was done)."""
    seen: list[object] = []
    await order_engine(exchange, prefix, seen)
    client = await exchange.client()
    reply = await client.request(f"{prefix}.orders.submit", b'{"type": "submit_order"}', timeout=2)
    assert json.loads(reply.data)["error"] == "not_sent"
    assert seen == []


async def test_nats_gateway_with_no_server_raises_not_sent() -> None:
    """When no server can be reached, nothing was sent: NotSent (the connector itself
    raises ServiceUnavailable)."""
    dead = NatsConnector(f"nats://127.0.0.1:{free_port()}", connect_timeout_ms=300)
    with pytest.raises(NotSent):
        await gateway(dead, "x").submit(SUBMIT)
    with pytest.raises(ServiceUnavailable):
        await dead.client()
    await dead.close()


async def test_nats_gateway_reconnects_after_a_server_restart(
    nats_server: NatsServer,
    connector: NatsConnector,
    exchange: NatsConnector,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While the server is down (the client has seen the connection drop) a request is
    NotSent at once, saying it is disconnected — never nats-py's "outbound buffer limit
    exceeded" — and the drop is logged as "disconnected"; after the server restarts, the
    same gateway (and the responder) reconnect by themselves and requests succeed again."""
    seen: list[object] = []
    await order_engine(exchange, prefix, seen)
    orders = gateway(connector, prefix, timeout_ms=1_000)
    assert (await orders.submit(SUBMIT)).status is AnswerStatus.ACKED
    client = await connector.client()
    await asyncio.to_thread(nats_server.stop)
    try:
        with caplog.at_level(logging.WARNING, logger="liqshell"):
            await eventually(lambda: not client.is_connected)
            with pytest.raises(NotSent) as raised:
                await orders.submit(SUBMIT)
        reason = str(raised.value)
        assert re.search(r"disconnected from NATS|not connected to NATS", reason), reason
        assert "buffer" not in reason
        assert f"nats: disconnected from {nats_server.url}" in caplog.text
    finally:
        await asyncio.to_thread(nats_server.start)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        try:
            answer = await orders.submit(SUBMIT)
            break
        except (NotSent, OutcomeUnknown):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)
    assert answer == OrderAnswer(status=AnswerStatus.ACKED, order_id=42)


def test_nats_connector_serves_several_event_loops(nats_url: str) -> None:
    """One connector (and gateway) works from one asyncio.run after another."""
    connection = NatsConnector(nats_url)
    orders = gateway(connection, "loops", timeout_ms=500)

    async def once() -> None:
        with pytest.raises(NotSent, match="no responder"):
            await orders.submit(SUBMIT)
        await connection.close()

    asyncio.run(once())
    asyncio.run(once())


# --- the event sink --------------------------------------------------------------------------


def change(wallet: str = "0xa", n: int = 1) -> StateChange:
    from tests.liqshell.adapters.store_contract import state_of

    state = state_of(wallet, n)
    return StateChange(
        wallet=wallet,
        previous_phase="healthy",
        new_phase="healthy",
        previous_mode=None,
        mode=None,
        margin_mode=state.margin_mode,
        equity=state.equity,
        mm_required=state.mm_required,
        maintenance_margin=state.maintenance_margin,
        shortfall=state.shortfall,
        previous_auction_id=None,
        auction_id=None,
        projection_changed=False,
        state=state,
        timestamp=state.updated_at,
    )


async def test_nats_sink_jetstream_drops_a_duplicate_key(
    connector: NatsConnector, exchange: NatsConnector, prefix: str
) -> None:
    """Publishing the same key twice stores one message in the stream (dedupe by
    Nats-Msg-Id), and it reads back as the same StateChange with the key as its id."""
    await ensure_stream(exchange, f"{prefix}-state", [f"{prefix}.state"])
    sink = NatsEventSink(connector, subject=f"{prefix}.state", stream=f"{prefix}-state")
    await sink.publish(change(), key=("0xa", 3, 0))
    await sink.publish(change(), key=("0xa", 3, 0))
    await sink.publish(change(n=2), key=("0xa", 3, 1))
    assert sink.duplicates == 1
    js = (await exchange.client()).jetstream()
    info = await js.stream_info(f"{prefix}-state")
    assert info.state.messages == 2
    subscription = await js.pull_subscribe(f"{prefix}.state", stream=f"{prefix}-state")
    messages = await subscription.fetch(2, timeout=2)
    assert [m.headers and m.headers[MSG_ID] for m in messages] == ["0xa:3:0", "0xa:3:1"]
    assert [codec.from_json(m.data, StateChange) for m in messages] == [change(), change(n=2)]


async def test_nats_sink_jetstream_changes_survive_a_subscriber_restart(
    connector: NatsConnector, nats_url: str, exchange: NatsConnector, prefix: str
) -> None:
    """A durable subscriber that stops midway gets, when it comes back, every change it
    had not acknowledged, including those published while it was down."""
    stream = f"{prefix}-state"
    await ensure_stream(exchange, stream, [f"{prefix}.state"])
    sink = NatsEventSink(connector, subject=f"{prefix}.state", stream=stream)
    config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT)
    for n in range(3):
        await sink.publish(change(n=n), key=("0xa", n + 1, 0))

    async def consume(count: int) -> list[str]:
        client = await nats.connect(nats_url)
        try:
            subscription = await client.jetstream().pull_subscribe(
                f"{prefix}.state", durable="projector", stream=stream, config=config
            )
            messages = await subscription.fetch(count, timeout=2)
            for message in messages:
                await message.ack_sync()
            return [m.headers[MSG_ID] for m in messages if m.headers]
        finally:
            await client.close()

    first = await consume(2)
    for n in range(3, 5):
        await sink.publish(change(n=n), key=("0xa", n + 1, 0))
    rest = await consume(3)
    assert first + rest == [f"0xa:{v}:0" for v in range(1, 6)]


async def test_nats_sink_jetstream_keeps_changes_across_a_server_restart(
    connector: NatsConnector,
    exchange: NatsConnector,
    prefix: str,
    restart_nats: Callable[[], None],
) -> None:
    """Changes stored before nats-server restarts are still in the stream after it, and
    the same sink publishes again once its connection is back (a resend is deduped)."""
    stream = f"{prefix}-state"
    await ensure_stream(exchange, stream, [f"{prefix}.state"])
    sink = NatsEventSink(connector, subject=f"{prefix}.state", stream=stream, timeout_ms=1_000)
    await sink.publish(change(n=1), key=("0xa", 1, 0))
    await asyncio.to_thread(restart_nats)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        try:
            await sink.publish(change(n=1), key=("0xa", 1, 0))  # the watcher's resend
            break
        except (NotSent, OutcomeUnknown):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)
    await sink.publish(change(n=2), key=("0xa", 2, 0))
    info = await (await exchange.client()).jetstream().stream_info(stream)
    assert info.state.messages == 2
    assert sink.duplicates == 1


async def test_nats_sink_plain_publish_reaches_a_subscriber(
    connector: NatsConnector, exchange: NatsConnector, prefix: str
) -> None:
    """Without a stream the change is published on the subject with its key as id."""
    received: list[Msg] = []

    async def collect(msg: Msg) -> None:
        received.append(msg)

    await (await exchange.client()).subscribe(f"{prefix}.state", cb=collect)
    await settle(await exchange.client())
    await NatsEventSink(connector, subject=f"{prefix}.state").publish(change(), key=("0xa", 1, 2))
    for _ in range(100):
        if received:
            break
        await asyncio.sleep(0.01)
    assert [m.headers and m.headers[MSG_ID] for m in received] == ["0xa:1:2"]
    assert codec.from_json(received[0].data, StateChange) == change()


async def test_nats_sink_to_a_missing_stream_raises_not_sent(
    connector: NatsConnector, prefix: str
) -> None:
    """A JetStream publish that no stream stores was not stored: NotSent."""
    sink = NatsEventSink(connector, subject=f"{prefix}.nowhere", stream="missing", timeout_ms=500)
    with pytest.raises(NotSent):
        await sink.publish(change(), key=("0xa", 1, 0))


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=state_changes())
async def test_nats_sink_plain_publish_round_trips_any_change(
    connector: NatsConnector, exchange: NatsConnector, value: StateChange
) -> None:
    """Any StateChange published reads back equal from the subject."""
    subject = f"t{next(_prefixes)}.state"
    subscription = await (await exchange.client()).subscribe(subject)
    await settle(await exchange.client())
    await NatsEventSink(connector, subject=subject).publish(value, key=(value.wallet, 1, 0))
    message = await subscription.next_msg(timeout=2)
    await subscription.unsubscribe()
    assert codec.from_json(message.data, StateChange) == value


# --- the chain feed --------------------------------------------------------------------------

EVENTS = (
    ChainEvent(
        event_id="e1", wallet="0xa", event=AuctionStarted(auction_id="a1", chain_start_time=5)
    ),
    ChainEvent(event_id="e2", wallet="0xb", event=AuctionStarted(auction_id="a2")),
    ChainEvent(event_id="e3", wallet="0xa", event=AuctionSettled(auction_id="a1")),
    ChainEvent(event_id="e4", wallet="0xa", event=AccountReset()),
)


async def _items(feed: NatsAuctionFeed, after: int | None) -> list[FeedItem]:
    return [item async for item in feed.events(after)]


async def test_nats_feed_jetstream_replays_after_any_cursor(
    connector: NatsConnector, exchange: NatsConnector, prefix: str
) -> None:
    """events(after) yields, in order, exactly the items after the cursor that are in the
    stream now, then ends; a redelivered event id is stored once."""
    stream = f"{prefix}-chain"
    subject = f"{prefix}.chain"
    await ensure_stream(exchange, stream, [subject])
    for event in (*EVENTS, EVENTS[1]):
        await publish_chain_event(exchange, event, subject=subject, stream=stream)
    feed = NatsAuctionFeed(connector, subject=subject, stream=stream, batch=3)
    everything = await _items(feed, None)
    assert [(i.event_id, i.wallet, i.event) for i in everything] == [
        (e.event_id, e.wallet, e.event) for e in EVENTS
    ]
    cursors = [i.cursor for i in everything]
    assert cursors == sorted(cursors)
    assert len(set(cursors)) == len(cursors)
    for k, item in enumerate(everything):
        assert await _items(feed, int(item.cursor)) == everything[k + 1 :]
    assert await _items(feed, int(cursors[-1]) + 100) == []
    info = await (await exchange.client()).jetstream().stream_info(stream)
    assert info.state.consumer_count == 0  # the short-lived consumers are gone


async def test_nats_feed_jetstream_skips_an_unreadable_message(
    connector: NatsConnector, exchange: NatsConnector, prefix: str
) -> None:
    """A message that is not a chain event is skipped (and counted), not a dead end."""
    stream = f"{prefix}-chain"
    subject = f"{prefix}.chain"
    await ensure_stream(exchange, stream, [subject])
    await publish_chain_event(exchange, EVENTS[0], subject=subject, stream=stream)
    await (await exchange.client()).jetstream().publish(subject, b"garbage")
    await publish_chain_event(exchange, EVENTS[1], subject=subject, stream=stream)
    feed = NatsAuctionFeed(connector, subject=subject, stream=stream)
    assert [i.event_id for i in await _items(feed, None)] == ["e1", "e2"]
    assert feed.skipped == 1


async def test_nats_feed_plain_yields_what_arrived_since_it_subscribed(
    connector: NatsConnector, exchange: NatsConnector, prefix: str
) -> None:
    """Without a stream the feed has the events published since its first use, after
    the cursor, in order."""
    subject = f"{prefix}.chain"
    feed = NatsAuctionFeed(connector, subject=subject)
    assert await _items(feed, None) == []  # subscribes: from here on it sees everything
    for event in EVENTS[:3]:
        await publish_chain_event(exchange, event, subject=subject)
    items: list[FeedItem] = []
    for _ in range(100):
        items = await _items(feed, None)
        if len(items) == 3:
            break
        await asyncio.sleep(0.01)
    assert [i.event_id for i in items] == ["e1", "e2", "e3"]
    assert [i.event_id for i in await _items(feed, int(items[0].cursor))] == ["e2", "e3"]


async def test_nats_feed_refuses_a_cursor_that_is_not_an_int(connector: NatsConnector) -> None:
    """Feed cursors are stream sequences: a string cursor is a ValueError."""
    with pytest.raises(ValueError, match="int"):
        NatsAuctionFeed(connector, stream="s").events("3")


@pytest.mark.parametrize(
    "error",
    [
        nats.errors.OutboundBufferLimitError(),
        nats.errors.ConnectionReconnectingError(),
        nats.errors.ConnectionClosedError(),
    ],
)
def test_nats_request_while_disconnected_says_disconnected(error: Exception) -> None:
    """With buffering off, nats-py reports a lost connection as "outbound buffer limit
    exceeded": the NotSent reason says "disconnected" instead."""
    reason = nats_adapters._not_sent_reason(error)
    assert reason == "disconnected from NATS (reconnecting)"
    assert "buffer" not in reason


# --------------------------------------------------------------------------- hostile feeds


@pytest.mark.services
async def test_nats_feed_without_a_stream_keeps_at_most_max_pending_items(
    nats_url: str,
) -> None:
    """A flood on the chain subject (no stream) keeps at most ``max_pending`` items for the
    watcher and drops the rest, counted in ``dropped`` and in the metric
    ``liqshell_feed_refused_total{reason="dropped"}`` — memory does not grow with the flood."""
    connector = NatsConnector(nats_url)
    subject = f"liq.chain.flood{next(_prefixes)}"
    registry = CollectorRegistry()
    feed = NatsAuctionFeed(connector, subject=subject, max_pending=50, metrics=registry)
    try:
        assert [item async for item in feed.events(None)] == []  # subscribed
        client = await connector.client()
        for n in range(300):
            body = ChainEvent(event_id=f"e{n}", wallet=f"0x{n}", event=AccountReset())
            await client.publish(subject, codec.to_json(body).encode() + b" " * 1_500)
        await settle(client)
        await eventually(lambda: len(feed._buffer) == 50 and feed.dropped > 0)
        await settle(client)
        items = [item async for item in feed.events(None)]
        assert len(items) == 50
        assert [i.event_id for i in items] == [f"e{n}" for n in range(50)]
        after = [item async for item in feed.events(items[-1].cursor)]
        assert after == []
        assert _refused(registry) == {"dropped": feed.dropped}
    finally:
        await connector.close()


@pytest.mark.services
async def test_nats_feed_skips_oversized_bodies_and_ids(nats_url: str) -> None:
    """A body over MAX_CHAIN_EVENT_BYTES or an id over MAX_ID_LENGTH characters (a
    2,000-character wallet) is skipped and counted (also in
    ``liqshell_feed_refused_total{reason="skipped"}``); a normal event behind it is read."""
    connector = NatsConnector(nats_url)
    stream, subject = f"HOSTILE{next(_prefixes)}", f"liq.chain.hostile{next(_prefixes)}"
    await ensure_stream(connector, stream, [subject])
    metrics = Metrics(CollectorRegistry())
    feed = NatsAuctionFeed(connector, subject=subject, stream=stream, metrics=metrics)
    try:
        long_wallet = ChainEvent(event_id="e1", wallet="0x" + "a" * 2_000, event=AccountReset())
        long_id = ChainEvent(event_id="e" * (MAX_ID_LENGTH + 1), wallet="0xa", event=AccountReset())
        long_auction = ChainEvent(
            event_id="e2", wallet="0xa", event=AuctionSettled(auction_id="x" * 5_000)
        )
        good = ChainEvent(event_id="e3", wallet="0xa", event=AccountReset())
        for body in (long_wallet, long_id, long_auction, good):
            await publish_chain_event(connector, body, subject=subject, stream=stream)
        client = await connector.client()
        big = (
            b'{"event":{"type":"account_reset"},"event_id":"big","wallet":"'
            + b"w" * (MAX_CHAIN_EVENT_BYTES + 10)
            + b'"}'
        )
        await client.jetstream().publish(subject, big, stream=stream)
        items = [item async for item in feed.events(None)]
        assert [item.event_id for item in items] == ["e3"]
        assert feed.skipped == 4
        assert _refused(metrics.registry) == {"skipped": 4}
    finally:
        await connector.close()


@pytest.mark.services
async def test_nats_feed_verify_hook_rejects_unsigned_and_forged_events(nats_url: str) -> None:
    """With ``verify=hmac_verifier(key)`` only events signed with the key are applied: an
    unsigned AccountReset and one signed with another key are rejected and counted (also in
    ``liqshell_feed_refused_total{reason="rejected"}``)."""
    connector = NatsConnector(nats_url)
    stream, subject = f"SIGNED{next(_prefixes)}", f"liq.chain.signed{next(_prefixes)}"
    await ensure_stream(connector, stream, [subject])
    registry = CollectorRegistry()
    feed = NatsAuctionFeed(
        connector,
        subject=subject,
        stream=stream,
        verify=hmac_verifier(b"indexer-key"),
        metrics=registry,
    )
    try:
        for event_id, key in (("unsigned", None), ("forged", b"guess"), ("signed", b"indexer-key")):
            body = ChainEvent(event_id=event_id, wallet="0xvictim", event=AccountReset())
            await publish_chain_event(connector, body, subject=subject, stream=stream, key=key)
        items = [item async for item in feed.events(None)]
        assert [item.event_id for item in items] == ["signed"]
        assert feed.rejected == 2
        assert _refused(registry) == {"rejected": 2}
    finally:
        await connector.close()


def test_nats_feed_verify_hook_may_be_an_allow_list() -> None:
    """Any callable is a verify hook: here an allow-list of wallets the indexer serves. It is
    given the parsed event, the headers and the body as received."""
    allowed = {"0xa"}
    seen: list[tuple[str, dict[str, str], bytes]] = []

    def verify(event: ChainEvent, headers: Mapping[str, str], body: bytes) -> bool:
        seen.append((event.event_id, dict(headers), body))
        return event.wallet in allowed

    registry = CollectorRegistry()
    feed = NatsAuctionFeed(NatsConnector("nats://127.0.0.1:1"), verify=verify, metrics=registry)
    ok = codec.to_json(ChainEvent(event_id="e1", wallet="0xa", event=AccountReset())).encode()
    other = codec.to_json(ChainEvent(event_id="e2", wallet="0xb", event=AccountReset())).encode()
    item = feed._item(ok, {"Liq-Publisher": "indexer"}, 1)
    assert item is not None
    assert (item.event_id, item.wallet) == ("e1", "0xa")
    assert feed._item(other, {}, 2) is None
    assert seen == [("e1", {"Liq-Publisher": "indexer"}, ok), ("e2", {}, other)]
    assert feed.rejected == 1
    assert _refused(registry) == {"rejected": 1}


def _refused(registry: CollectorRegistry) -> dict[str, float]:
    """``liqshell_feed_refused_total`` by reason (the reasons counted at all)."""
    return {
        sample.labels["reason"]: sample.value
        for family in registry.collect()
        if family.name == "liqshell_feed_refused"
        for sample in family.samples
        if sample.name == "liqshell_feed_refused_total"
    }
