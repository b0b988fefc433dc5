"""NATS adapters (nats-py; the ``nats`` extra): orders and auctions by request/reply, state
changes and chain events on subjects, optionally through JetStream.

One :class:`NatsConnector` holds the connection the adapters share. It connects on first
use (within ``connect_timeout_ms``, else :class:`~liqshell.ports.NotSent` /
:class:`~liqshell.adapters.ServiceUnavailable`), reconnects by itself after a server
restart, and does **not** buffer while disconnected: a request made while the connection is
down fails at once with ``NotSent`` instead of being sent later behind the watcher's back.

Wire format (every JSON body is :mod:`liqcore.codec` JSON, UTF-8)
------------------------------------------------------------------

Requests — header ``Nats-Msg-Id`` = the command's ``request_id`` (a responder may dedupe
by it; the ids are deterministic, so a retried command carries the same id):

==========================  =====================================  ==========================
subject (default)           request body                           success reply body
==========================  =====================================  ==========================
``liq.orders.submit``       ``SubmitOrder`` (``"type":             ``OrderAnswer``:
                            "submit_order"``, price/size strings)  ``{"status": "acked" |
                                                                   "rejected", "reason": "",
                                                                   "order_id": 42 | null}``
``liq.orders.cancel``       ``CancelOrder``                        ``OrderAnswer`` with status
                                                                   ``"canceled" | "gone" |
                                                                   "rejected"`` (``"gone"``:
                                                                   the order was no longer
                                                                   open)
``liq.auctions.start``      ``StartAuction``                       ``AuctionReceipt``:
                                                                   ``{"auction_id": "…",
                                                                   "tx_hash": "0x…" | null,
                                                                   "margin_needed": "12.5" |
                                                                   null}``
``liq.auctions.stop``       ``StopAuction``                        ``{}``
==========================  =====================================  ==========================

A responder that did not act answers ``{"error": "not_sent", "reason": "…"}`` (the caller
raises ``NotSent``); one that cannot tell answers ``{"error": "outcome_unknown", "reason":
"…"}`` (``OutcomeUnknown``). The auction responder must be idempotent per wallet (SPEC
§9): while the wallet's auction is pending or running, ``start`` answers its receipt.
:func:`serve_orders` and :func:`serve_auctions` implement a responder from plain async
functions. On the caller's side: no reply within ``timeout_ms``, a lost connection after
sending, or an unreadable reply → ``OutcomeUnknown``; no responder on the subject ("no
responders"), not connected, or closed before sending → ``NotSent``.

State changes (:class:`NatsEventSink`) — subject ``liq.state``, body the ``StateChange``,
header ``Nats-Msg-Id`` = ``f"{wallet}:{version}:{index}"`` (the publish key). With a
JetStream ``stream`` the publish waits for the stream's ack, so a change survives a
subscriber restart, and the stream drops a duplicate id within its duplicate window
(:func:`ensure_stream` creates one); without, it is a plain publish flushed to the server.
Consumers dedupe by the key either way (the window is finite).

Chain events (:class:`NatsAuctionFeed`) — subject ``liq.chain.events``, body
:class:`ChainEvent` ``{"event_id": "…", "wallet": "…", "event": {"type":
"auction_started", …}}``, header ``Nats-Msg-Id`` = ``event_id``
(:func:`publish_chain_event`). With a JetStream ``stream`` the cursor is the message's
stream sequence (an int) and ``events(after)`` replays the stream from ``after + 1`` up to
what is there now, through a short-lived consumer, a batch at a time (the stream holds the
rest: memory stays bounded however much is published). Without a stream the feed subscribes
on first use and only has what arrived since (cursors are increasing ints of this process);
nothing published while the watcher is down is seen — use a stream in production — and at
most ``max_pending`` items wait for the watcher: beyond that, messages are dropped (counted
in ``dropped``, logged) rather than grow memory without bound.

The chain-event subject is a trust boundary: anyone who can publish on it can send any
wallet an ``AccountReset`` or a forged ``AuctionSettled``. Give publish permission on it to
the chain indexer alone (NATS accounts and permissions), and verify what arrives: a feed's
``verify`` callable is given each :class:`ChainEvent`, the message headers and its body and
returns whether to accept it; :func:`hmac_verifier` checks the ``Liq-Signature`` header that
:func:`publish_chain_event` writes when given the shared ``key``. A body larger than
:data:`MAX_CHAIN_EVENT_BYTES`, an id longer than :data:`MAX_ID_LENGTH`, a body that cannot be
read, or an event ``verify`` refuses is logged and skipped (it would otherwise block the feed
forever) and counted in ``skipped`` / ``rejected``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import attrs
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from liqcore import (
    CancelOrder,
    Event,
    StartAuction,
    StateChange,
    StopAuction,
    SubmitOrder,
    codec,
)
from liqcore.errors import InvalidInput
from liqshell.adapters import AsyncClosing, ServiceUnavailable
from liqshell.metrics import metrics_from
from liqshell.ports import (
    AnswerStatus,
    AuctionReceipt,
    Cursor,
    FeedItem,
    NotSent,
    OrderAnswer,
    OutcomeUnknown,
)
from liqshell.redaction import redact

__all__ = [
    "AUCTION_START_SUBJECT",
    "AUCTION_STOP_SUBJECT",
    "CANCEL_SUBJECT",
    "CHAIN_SUBJECT",
    "MAX_CHAIN_EVENT_BYTES",
    "MAX_ID_LENGTH",
    "MAX_PENDING",
    "MSG_ID",
    "SIGNATURE",
    "STATE_SUBJECT",
    "SUBMIT_SUBJECT",
    "ChainEvent",
    "NatsAuctionExecutor",
    "NatsAuctionFeed",
    "NatsConnector",
    "NatsEventSink",
    "NatsOrderGateway",
    "Responder",
    "ensure_stream",
    "error_reply",
    "hmac_verifier",
    "publish_chain_event",
    "serve_auctions",
    "serve_orders",
    "settle",
]

log = logging.getLogger("liqshell.adapters.nats")

T = TypeVar("T")

SUBMIT_SUBJECT = "liq.orders.submit"
CANCEL_SUBJECT = "liq.orders.cancel"
AUCTION_START_SUBJECT = "liq.auctions.start"
AUCTION_STOP_SUBJECT = "liq.auctions.stop"
STATE_SUBJECT = "liq.state"
CHAIN_SUBJECT = "liq.chain.events"
MSG_ID = "Nats-Msg-Id"
"""The header NATS JetStream deduplicates by."""
SIGNATURE = "Liq-Signature"
"""The header holding a chain event's HMAC-SHA256 (hex) over its body, when signed."""
MAX_CHAIN_EVENT_BYTES = 16 * 1024
"""The largest chain-event body the feed reads (a real one is a few hundred bytes)."""
MAX_ID_LENGTH = 256
"""The longest event id, wallet or auction id the feed accepts, in characters."""
MAX_PENDING = 10_000
"""How many items a feed without a stream keeps for the watcher (``max_pending``)."""

# Raised by nats-py before anything was written for the server: provably not sent.
_NOT_SENT_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.MaxPayloadError,
    nats.errors.BadSubjectError,
    # BadHeaderError came with nats-py 2.13; older versions raise none.
    *((nats.errors.BadHeaderError,) if hasattr(nats.errors, "BadHeaderError") else ()),
    nats.js.errors.NoStreamResponseError,
)


_DISCONNECTED_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.OutboundBufferLimitError,  # nothing may be buffered: the socket is gone
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionClosedError,
)


def _not_sent_reason(error: BaseException) -> str:
    """Why a request provably never left, in words: with buffering off, nats-py reports a
    lost connection as "outbound buffer limit exceeded"; say "disconnected"."""
    if isinstance(error, _DISCONNECTED_ERRORS):
        return "disconnected from NATS (reconnecting)"
    return f"{type(error).__name__} {error}"


def _seconds(ms: int, name: str) -> float:
    if type(ms) is not int or ms <= 0:
        raise ValueError(f"{name} must be an int > 0 (ms), was {ms!r}")
    return ms / 1000


async def settle(client: Client, timeout: float = 5.0) -> None:
    """Return once the server has processed everything ``client`` sent before the call.

    One ``flush()`` is not enough: nats-py puts its PING *ahead* of commands still queued,
    so the PONG can come back before an earlier SUB or PUB was read. After the first round
    trip those commands are on the wire; the second PING follows them.
    """
    await client.flush(timeout=timeout)  # type: ignore[arg-type]
    await client.flush(timeout=timeout)  # type: ignore[arg-type]


class NatsConnector(AsyncClosing):
    """One lazily opened NATS connection, shared by the NATS adapters.

    ``options`` go to ``nats.connect`` as they are (credentials, TLS, …). The connection
    belongs to the event loop that opened it; used from another loop, a new one is opened
    (:meth:`close` the old one first if you can).
    """

    def __init__(
        self,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        *,
        name: str = "liqshell",
        connect_timeout_ms: int = 2_000,
        reconnect_wait_ms: int = 250,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.name = name
        self.connect_timeout = _seconds(connect_timeout_ms, "connect_timeout_ms")
        self.reconnect_wait = _seconds(reconnect_wait_ms, "reconnect_wait_ms")
        self.options = dict(options or {})
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._client: Client | None = None

    def __repr__(self) -> str:
        return redact(f"NatsConnector({self.servers!r})")

    @property
    def shown_servers(self) -> str:
        """The servers as they may be shown (credentials redacted)."""
        return redact(", ".join(self.servers))

    async def client(self) -> Client:
        """The connected client; raises :class:`~liqshell.adapters.ServiceUnavailable` if
        no server answers within ``connect_timeout_ms``."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._lock, self._client = loop, asyncio.Lock(), None
        client = self._client
        if client is not None and not client.is_closed:
            return client
        assert self._lock is not None
        async with self._lock:
            if self._client is None or self._client.is_closed:
                self._client = await self._connect()
            return self._client

    async def _connect(self) -> Client:
        client = Client()
        errors: list[Exception] = []

        async def on_error(error: Exception) -> None:
            errors.append(error)
            log.debug("nats: %s", redact(str(error)))

        async def on_disconnected() -> None:
            log.warning("nats: disconnected from %s", self.shown_servers)

        async def on_reconnected() -> None:
            url = client.connected_url
            log.warning("nats: reconnected to %s", redact(url.geturl() if url else "?"))

        try:
            await asyncio.wait_for(
                client.connect(
                    servers=self.servers,
                    name=self.name,
                    connect_timeout=self.connect_timeout,  # type: ignore[arg-type]
                    reconnect_time_wait=self.reconnect_wait,  # type: ignore[arg-type]
                    max_reconnect_attempts=-1,
                    allow_reconnect=True,
                    pending_size=0,  # never buffer while disconnected: NotSent instead
                    error_cb=on_error,
                    disconnected_cb=on_disconnected,
                    reconnected_cb=on_reconnected,
                    **self.options,
                ),
                timeout=self.connect_timeout,
            )
        except (TimeoutError, OSError, nats.errors.Error) as error:
            with contextlib.suppress(Exception):
                await client.close()
            raise ServiceUnavailable(
                f"cannot connect to NATS at {self.shown_servers}: "
                f"{type(error).__name__} {redact(str(error))}".rstrip()
                + _why_not_connected([*errors, error])
            ) from error
        return client

    async def close(self) -> None:
        """Close the connection (the next use opens a new one)."""
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            with contextlib.suppress(Exception):
                await client.close()


_HINTS = (
    (
        ("CERTIFICATE_VERIFY_FAILED",),
        "the server's TLS certificate failed verification: check [nats] tls_ca (the CA that "
        "signed it) and tls_hostname",
    ),
    (
        ("CERTIFICATE_REQUIRED", "ALERT_BAD_CERTIFICATE"),
        "the server refused the TLS client certificate (it requires one signed by a CA it "
        "trusts): check [nats] tls_cert and tls_key",
    ),
    (
        ("AUTHORIZATION", "AUTHENTICATION"),
        "the server refused the credentials: check [nats] credentials, nkey_seed, token, user "
        "and password",
    ),
)


def _why_not_connected(errors: Sequence[BaseException]) -> str:
    """What the server or the handshake said while we tried to connect (the connect call
    itself often ends in a bare timeout while the client retries): the latest error with a
    known cause — TLS or authorization, with the settings to check — else the latest one
    that says anything; ``""`` when there is nothing to add."""

    def said(error: BaseException) -> str:
        return " ".join(redact(str(error)).split())

    for error in reversed(errors):
        upper = said(error).upper()
        for markers, hint in _HINTS:
            if any(marker in upper for marker in markers):
                return f"; last error: {type(error).__name__}: {said(error)} — {hint}"
    for error in reversed(errors[:-1]):  # the last one is the connect call's own
        if said(error) and not isinstance(error, TimeoutError):
            return f"; last error: {type(error).__name__}: {said(error)}"
    return ""


async def _connected(connector: NatsConnector, what: str) -> Client:
    """The client, connected right now, or ``NotSent``."""
    try:
        client = await connector.client()
    except ServiceUnavailable as error:
        raise NotSent(f"{what}: {error}") from error
    if not client.is_connected:
        raise NotSent(f"{what}: not connected to NATS (reconnecting)")
    return client


async def _request(
    connector: NatsConnector, subject: str, body: str, *, msg_id: str, timeout: float, what: str
) -> bytes:
    client = await _connected(connector, what)
    try:
        reply = await client.request(
            subject, body.encode(), timeout=timeout, headers={MSG_ID: msg_id}
        )
    except nats.errors.NoRespondersError as error:
        raise NotSent(f"{what}: no responder on {subject!r}") from error
    except _NOT_SENT_ERRORS as error:
        raise NotSent(f"{what}: not sent: {_not_sent_reason(error)}") from error
    except TimeoutError as error:  # nats.errors.TimeoutError is one
        raise OutcomeUnknown(f"{what}: no reply on {subject!r} within {timeout:g} s") from error
    except (nats.errors.Error, OSError) as error:
        raise OutcomeUnknown(f"{what}: {type(error).__name__} {error}") from error
    data: bytes = reply.data
    return data


def error_reply(kind: str, reason: str) -> bytes:
    """The reply of a responder that did not act (``"not_sent"``) or cannot tell
    (``"outcome_unknown"``)."""
    if kind not in ("not_sent", "outcome_unknown"):
        raise ValueError(f"error reply kind must be 'not_sent' or 'outcome_unknown', was {kind!r}")
    return json.dumps({"error": kind, "reason": reason}, sort_keys=True).encode()


def _parse_reply(data: bytes, what: str) -> object:
    try:
        parsed: object = json.loads(data)
    except ValueError:
        raise OutcomeUnknown(f"{what}: unreadable reply {data[:200]!r}") from None
    if isinstance(parsed, dict) and "error" in parsed:
        reason = str(parsed.get("reason", ""))
        if parsed["error"] == "not_sent":
            raise NotSent(f"{what}: responder did not act: {reason}")
        raise OutcomeUnknown(f"{what}: responder cannot tell ({parsed['error']}): {reason}")
    return parsed


def _structured(data: bytes, cls: type[T], what: str) -> T:
    parsed = _parse_reply(data, what)
    try:
        return codec.structure(parsed, cls)
    except InvalidInput as error:
        raise OutcomeUnknown(f"{what}: bad reply: {error}") from None


class NatsOrderGateway:
    """``OrderGateway`` by request/reply (see the module docs for the wire format)."""

    def __init__(
        self,
        connector: NatsConnector,
        *,
        submit_subject: str = SUBMIT_SUBJECT,
        cancel_subject: str = CANCEL_SUBJECT,
        timeout_ms: int = 5_000,
    ) -> None:
        self.connector = connector
        self.submit_subject = submit_subject
        self.cancel_subject = cancel_subject
        self.timeout = _seconds(timeout_ms, "timeout_ms")

    async def submit(self, command: SubmitOrder) -> OrderAnswer:
        """``ACKED`` or ``REJECTED``; raises ``NotSent`` or ``OutcomeUnknown``."""
        what = f"submit {command.request_id}"
        data = await _request(
            self.connector,
            self.submit_subject,
            codec.to_json(command),
            msg_id=command.request_id,
            timeout=self.timeout,
            what=what,
        )
        answer = _structured(data, OrderAnswer, what)
        if answer.status not in (AnswerStatus.ACKED, AnswerStatus.REJECTED):
            raise OutcomeUnknown(f"{what}: a submit cannot be {answer.status.value!r}")
        return answer

    async def cancel(self, command: CancelOrder) -> OrderAnswer:
        """``CANCELED``, ``GONE`` or ``REJECTED``; raises ``NotSent`` or ``OutcomeUnknown``."""
        what = f"cancel {command.request_id}"
        data = await _request(
            self.connector,
            self.cancel_subject,
            codec.to_json(command),
            msg_id=command.request_id,
            timeout=self.timeout,
            what=what,
        )
        answer = _structured(data, OrderAnswer, what)
        if answer.status not in (AnswerStatus.CANCELED, AnswerStatus.GONE, AnswerStatus.REJECTED):
            raise OutcomeUnknown(f"{what}: a cancel cannot be {answer.status.value!r}")
        return answer


class NatsAuctionExecutor:
    """``AuctionExecutor`` by request/reply; the responder is idempotent per wallet."""

    def __init__(
        self,
        connector: NatsConnector,
        *,
        start_subject: str = AUCTION_START_SUBJECT,
        stop_subject: str = AUCTION_STOP_SUBJECT,
        timeout_ms: int = 5_000,
    ) -> None:
        self.connector = connector
        self.start_subject = start_subject
        self.stop_subject = stop_subject
        self.timeout = _seconds(timeout_ms, "timeout_ms")

    async def start(self, command: StartAuction) -> AuctionReceipt:
        """The wallet's auction receipt; raises ``NotSent`` or ``OutcomeUnknown``."""
        what = f"start auction {command.request_id}"
        data = await _request(
            self.connector,
            self.start_subject,
            codec.to_json(command),
            msg_id=command.request_id,
            timeout=self.timeout,
            what=what,
        )
        return _structured(data, AuctionReceipt, what)

    async def stop(self, command: StopAuction) -> None:
        """Stop the wallet's auction; raises ``NotSent`` or ``OutcomeUnknown``."""
        what = f"stop auction {command.request_id}"
        data = await _request(
            self.connector,
            self.stop_subject,
            codec.to_json(command),
            msg_id=command.request_id,
            timeout=self.timeout,
            what=what,
        )
        if not isinstance(_parse_reply(data, what), dict):
            raise OutcomeUnknown(f"{what}: bad reply {data[:200]!r}")


# --- responders ----------------------------------------------------------------------------


class Responder:
    """Subscriptions that answer requests; :meth:`stop` unsubscribes them."""

    def __init__(self, subscriptions: Sequence[Subscription], client: Client | None = None) -> None:
        self.subscriptions = tuple(subscriptions)
        self.client = client
        """The connection the subscriptions are on: :meth:`stop` waits until its server has
        processed the unsubscriptions."""

    async def stop(self) -> None:
        """Stop answering. With the client known, the server has dropped the subscriptions
        when this returns: a request sent afterwards finds no responder here (without that
        wait it could still be routed to a subscription this side has already forgotten, and
        go unanswered until the requester's timeout)."""
        for subscription in self.subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        if self.client is not None and self.client.is_connected:
            with contextlib.suppress(Exception):
                await settle(self.client)


def _handler(
    cls: type[T], act: Callable[[T], Awaitable[bytes]]
) -> Callable[[Msg], Awaitable[None]]:
    async def handle(msg: Msg) -> None:
        try:
            command = codec.from_json(msg.data, cls)
        except InvalidInput as error:
            reply = error_reply("not_sent", f"bad request: {error}")
        else:
            try:
                reply = await act(command)
            except NotSent as error:
                reply = error_reply("not_sent", str(error))
            except Exception as error:  # it may have acted: the caller cannot know
                log.exception("responder for %s failed", msg.subject)
                reply = error_reply("outcome_unknown", f"{type(error).__name__}: {error}")
        if msg.reply:
            await msg.respond(reply)

    return handle


async def _client_of(connection: NatsConnector | Client) -> Client:
    return await connection.client() if isinstance(connection, NatsConnector) else connection


async def serve_orders(
    connection: NatsConnector | Client,
    *,
    submit: Callable[[SubmitOrder], Awaitable[OrderAnswer]],
    cancel: Callable[[CancelOrder], Awaitable[OrderAnswer]],
    submit_subject: str = SUBMIT_SUBJECT,
    cancel_subject: str = CANCEL_SUBJECT,
    queue: str = "",
) -> Responder:
    """Answer order requests with ``submit`` and ``cancel`` (an order engine, a simulator).

    A handler raising ``NotSent`` answers ``not_sent``; any other exception
    ``outcome_unknown``; a request that does not parse ``not_sent``.
    """
    client = await _client_of(connection)

    async def do_submit(command: SubmitOrder) -> bytes:
        return codec.to_json(await submit(command)).encode()

    async def do_cancel(command: CancelOrder) -> bytes:
        return codec.to_json(await cancel(command)).encode()

    responder = Responder(
        [
            await client.subscribe(
                submit_subject, queue=queue, cb=_handler(SubmitOrder, do_submit)
            ),
            await client.subscribe(
                cancel_subject, queue=queue, cb=_handler(CancelOrder, do_cancel)
            ),
        ],
        client,
    )
    await settle(client)  # the server knows the subscriptions when this returns
    return responder


async def serve_auctions(
    connection: NatsConnector | Client,
    *,
    start: Callable[[StartAuction], Awaitable[AuctionReceipt]],
    stop: Callable[[StopAuction], Awaitable[None]],
    start_subject: str = AUCTION_START_SUBJECT,
    stop_subject: str = AUCTION_STOP_SUBJECT,
    queue: str = "",
) -> Responder:
    """Answer auction requests with ``start`` and ``stop`` (same error rules as
    :func:`serve_orders`); ``start`` must be idempotent per wallet."""
    client = await _client_of(connection)

    async def do_start(command: StartAuction) -> bytes:
        return codec.to_json(await start(command)).encode()

    async def do_stop(command: StopAuction) -> bytes:
        await stop(command)
        return b"{}"

    responder = Responder(
        [
            await client.subscribe(start_subject, queue=queue, cb=_handler(StartAuction, do_start)),
            await client.subscribe(stop_subject, queue=queue, cb=_handler(StopAuction, do_stop)),
        ],
        client,
    )
    await settle(client)  # the server knows the subscriptions when this returns
    return responder


# --- JetStream -----------------------------------------------------------------------------


async def ensure_stream(
    connection: NatsConnector | Client,
    name: str,
    subjects: Sequence[str],
    *,
    duplicate_window_ms: int = 120_000,
    max_age_ms: int | None = None,
) -> None:
    """Create the JetStream stream ``name`` on ``subjects`` (file storage, deduplication
    by ``Nats-Msg-Id`` within ``duplicate_window_ms``) unless it exists."""
    client = await _client_of(connection)
    js = client.jetstream()
    try:
        await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        await js.add_stream(
            name=name,
            subjects=list(subjects),
            duplicate_window=duplicate_window_ms / 1000,
            max_age=None if max_age_ms is None else max_age_ms / 1000,
        )


async def _publish(
    connector: NatsConnector,
    subject: str,
    payload: bytes,
    msg_id: str,
    *,
    stream: str | None,
    timeout: float,
    what: str,
    extra_headers: Mapping[str, str] | None = None,
) -> bool:
    """Publish; with a stream, wait for its ack. Returns whether the stream called it a
    duplicate. Raises ``NotSent`` / ``OutcomeUnknown``."""
    client = await _connected(connector, what)
    headers = {MSG_ID: msg_id, **(extra_headers or {})}
    try:
        if stream is None:
            await client.publish(subject, payload, headers=headers)
            await settle(client, timeout)
            return False
        ack = await client.jetstream(timeout=timeout).publish(
            subject, payload, stream=stream, headers=headers
        )
    except _NOT_SENT_ERRORS as error:
        raise NotSent(f"{what}: not sent: {_not_sent_reason(error)}") from error
    except nats.js.errors.APIError as error:  # the stream refused it: not stored
        raise NotSent(f"{what}: refused by stream {stream!r}: {error}") from error
    except TimeoutError as error:
        raise OutcomeUnknown(f"{what}: no ack within {timeout:g} s") from error
    except (nats.errors.Error, OSError) as error:
        raise OutcomeUnknown(f"{what}: {type(error).__name__} {error}") from error
    return bool(ack.duplicate)


class NatsEventSink:
    """``EventSink``: each ``StateChange`` on ``subject`` with ``Nats-Msg-Id`` =
    ``"wallet:version:index"``; through JetStream ``stream`` when given.

    Raises ``NotSent`` or ``OutcomeUnknown`` (the watcher publishes again after a restart).
    ``duplicates`` counts publishes the stream recognised as already stored.
    """

    def __init__(
        self,
        connector: NatsConnector,
        *,
        subject: str = STATE_SUBJECT,
        stream: str | None = None,
        timeout_ms: int = 5_000,
    ) -> None:
        self.connector = connector
        self.subject = subject
        self.stream = stream
        self.timeout = _seconds(timeout_ms, "timeout_ms")
        self.duplicates = 0

    async def publish(self, change: StateChange, *, key: tuple[str, int, int]) -> None:
        """Publish ``change`` under ``key = (wallet, version, index)``."""
        wallet, version, index = key
        msg_id = f"{wallet}:{version}:{index}"
        if await _publish(
            self.connector,
            self.subject,
            codec.to_json(change).encode(),
            msg_id,
            stream=self.stream,
            timeout=self.timeout,
            what=f"publish {msg_id}",
        ):
            self.duplicates += 1


# --- the chain feed ------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ChainEvent:
    """The body of one chain-event message."""

    event_id: str
    wallet: str
    event: Event


async def publish_chain_event(
    connector: NatsConnector,
    item: ChainEvent,
    *,
    subject: str = CHAIN_SUBJECT,
    stream: str | None = None,
    timeout_ms: int = 5_000,
    key: bytes | None = None,
) -> None:
    """Publish one chain event (``Nats-Msg-Id`` = its ``event_id``), for a chain bridge,
    the simulator or a test; with ``key``, signed (:data:`SIGNATURE`). Raises ``NotSent``
    or ``OutcomeUnknown``."""
    body = codec.to_json(item).encode()
    await _publish(
        connector,
        subject,
        body,
        item.event_id,
        stream=stream,
        timeout=_seconds(timeout_ms, "timeout_ms"),
        what=f"publish chain event {item.event_id}",
        extra_headers={} if key is None else {SIGNATURE: _signature(key, body)},
    )


def _signature(key: bytes, body: bytes) -> str:
    return hmac.new(key, body, hashlib.sha256).hexdigest()


Verify = Callable[[ChainEvent, Mapping[str, str], bytes], bool]
"""A feed's check of each event: ``verify(event, headers, body)`` → accept it? (``body`` is
the message as received, ``event`` what it parsed to.)"""


def hmac_verifier(key: bytes) -> Verify:
    """A ``verify`` that accepts an event only with a valid :data:`SIGNATURE` header — the
    HMAC-SHA256 of its body under ``key`` (what ``publish_chain_event(key=…)`` writes)."""
    if not key:
        raise ValueError("hmac_verifier key must be non-empty bytes")

    def verify(event: ChainEvent, headers: Mapping[str, str], body: bytes) -> bool:
        return hmac.compare_digest(headers.get(SIGNATURE, ""), _signature(key, body))

    return verify


def _oversized(body: ChainEvent) -> str | None:
    texts = {"event_id": body.event_id, "wallet": body.wallet}
    for field in attrs.fields(type(body.event)):
        value = getattr(body.event, field.name)
        if isinstance(value, str):
            texts[f"event.{field.name}"] = value
    for name, text in texts.items():
        if len(text) > MAX_ID_LENGTH:
            return f"{name} is {len(text)} characters (at most {MAX_ID_LENGTH})"
    return None


class NatsAuctionFeed:
    """``AuctionFeed`` of :class:`ChainEvent` messages on ``subject``; replayable from a
    stream sequence when ``stream`` is a JetStream stream (see the module docs).

    ``verify(event, headers, body)`` decides whether an event is accepted
    (:func:`hmac_verifier`);
    without a stream at most ``max_pending`` items are kept. ``skipped`` counts bodies that
    could not be read or were too large, ``rejected`` events ``verify`` refused, ``dropped``
    messages that found the buffer full; each is also counted in ``metrics`` (a
    :class:`~liqshell.metrics.Metrics` or a registry: ``liqshell_feed_refused_total`` by
    ``reason``).
    """

    def __init__(
        self,
        connector: NatsConnector,
        *,
        subject: str = CHAIN_SUBJECT,
        stream: str | None = None,
        batch: int = 256,
        timeout_ms: int = 5_000,
        max_pending: int = MAX_PENDING,
        verify: Verify | None = None,
        metrics: object = None,
    ) -> None:
        if type(batch) is not int or batch < 1:
            raise ValueError(f"batch must be an int >= 1, was {batch!r}")
        if type(max_pending) is not int or max_pending < 1:
            raise ValueError(f"max_pending must be an int >= 1, was {max_pending!r}")
        self.connector = connector
        self.subject = subject
        self.stream = stream
        self.batch = batch
        self.timeout = _seconds(timeout_ms, "timeout_ms")
        self.max_pending = max_pending
        self.verify = verify
        self.skipped = 0
        self.rejected = 0
        self.dropped = 0
        self._metrics = metrics_from(metrics)
        self._refused_at: set[int] = set()
        """Stream sequences after the caller's cursor already refused (a stream is read again
        from the cursor at every call: a refused message is counted and logged once)."""
        self._buffer: list[FeedItem] = []
        self._subscribed: Client | None = None
        self._last = 0

    def events(self, after: Cursor | None) -> AsyncIterator[FeedItem]:
        """The items after ``after`` available now, in cursor order; then it ends."""
        if after is not None and type(after) is not int:
            raise ValueError(f"NatsAuctionFeed cursors are ints, was {after!r}")
        if self.stream is None:
            return self._buffered(after)
        return self._replayed(after)

    def _item(self, data: bytes, headers: Mapping[str, str] | None, cursor: int) -> FeedItem | None:
        """The message as a feed item, or ``None`` (logged, counted) when it is too large,
        unreadable, has an over-long id, or ``verify`` refuses it."""
        if cursor in self._refused_at:
            return None  # refused at an earlier read of the stream
        item = self._checked(data, headers, cursor)
        if item is None and self.stream is not None:
            self._refused_at.add(cursor)
        return item

    def _checked(
        self, data: bytes, headers: Mapping[str, str] | None, cursor: int
    ) -> FeedItem | None:
        where = f"chain event at {cursor} on {self.subject}"
        if len(data) > MAX_CHAIN_EVENT_BYTES:
            self._refused("skipped")
            log.error("skipping %s: %d bytes (at most %d)", where, len(data), MAX_CHAIN_EVENT_BYTES)
            return None
        try:
            body = codec.from_json(data, ChainEvent)
        except (InvalidInput, RecursionError) as error:
            self._refused("skipped")
            log.error("skipping unreadable %s: %s", where, error)
            return None
        problem = _oversized(body)
        if problem is not None:
            self._refused("skipped")
            log.error("skipping %s: %s", where, problem)
            return None
        if self.verify is not None and not self.verify(body, dict(headers or {}), data):
            self._refused("rejected")
            log.error("rejecting %s (%s for %s): not verified", where, body.event_id, body.wallet)
            return None
        return FeedItem(cursor=cursor, event_id=body.event_id, wallet=body.wallet, event=body.event)

    def _refused(self, reason: Literal["skipped", "rejected", "dropped"]) -> None:
        """Count a message not taken: in the attribute named ``reason`` and the metric."""
        if reason == "skipped":
            self.skipped += 1
        elif reason == "rejected":
            self.rejected += 1
        else:
            self.dropped += 1
        self._metrics.feed_refused(reason)

    # ---- JetStream: replay the stream through a short-lived consumer

    async def _replayed(self, after: int | None) -> AsyncIterator[FeedItem]:
        assert self.stream is not None
        if after is not None:  # never read again: forget them
            self._refused_at = {cursor for cursor in self._refused_at if cursor > after}
        try:
            client = await self.connector.client()
            js = client.jetstream(timeout=self.timeout)
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.ALL
                if after is None
                else DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=None if after is None else after + 1,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=60.0,
                mem_storage=True,
            )
            subscription = await js.pull_subscribe(self.subject, stream=self.stream, config=config)
        except (TimeoutError, OSError, nats.errors.Error) as error:
            raise ServiceUnavailable(f"chain feed {self.stream!r}: {error}") from error
        name: str | None = None
        try:
            try:
                info = await subscription.consumer_info()
            except (TimeoutError, OSError, nats.errors.Error) as error:
                raise ServiceUnavailable(f"chain feed {self.stream!r}: {error}") from error
            name = info.name
            remaining = info.num_pending or 0
            while remaining > 0:
                try:
                    messages = await subscription.fetch(
                        batch=min(remaining, self.batch), timeout=self.timeout
                    )
                except (TimeoutError, OSError, nats.errors.Error) as error:
                    raise ServiceUnavailable(f"chain feed {self.stream!r}: {error}") from error
                for message in messages:
                    metadata = message.metadata
                    remaining = metadata.num_pending
                    item = self._item(message.data, message.headers, metadata.sequence.stream)
                    if item is not None:
                        yield item
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
            if name is not None:
                with contextlib.suppress(Exception):
                    await js.delete_consumer(self.stream, name)

    # ---- core NATS: what arrived since the first call

    async def _buffered(self, after: int | None) -> AsyncIterator[FeedItem]:
        client = await self.connector.client()
        if self._subscribed is not client:
            await client.subscribe(
                self.subject,
                cb=self._received,
                # The client's own queue in front of the callback is bounded too (it drops
                # what does not fit, as a slow consumer); the callback keeps max_pending.
                pending_msgs_limit=2 * self.max_pending,
                pending_bytes_limit=2 * self.max_pending * MAX_CHAIN_EVENT_BYTES,
            )
            await settle(client, self.timeout)  # from here on, what is published is seen
            self._subscribed = client
        if after is not None:
            self._buffer = [item for item in self._buffer if int(item.cursor) > after]
        for item in list(self._buffer):
            yield item

    async def _received(self, msg: Msg) -> None:
        if len(self._buffer) >= self.max_pending:
            self._refused("dropped")
            if self.dropped == 1 or self.dropped % 1_000 == 0:
                log.error(
                    "chain feed on %s: %d messages dropped, %d items wait for the watcher "
                    "(use a JetStream stream to keep every event)",
                    self.subject,
                    self.dropped,
                    len(self._buffer),
                )
            return
        self._last = max(self._last + 1, time.time_ns())
        item = self._item(msg.data, msg.headers, self._last)
        if item is not None:
            self._buffer.append(item)
