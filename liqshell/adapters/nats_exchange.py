"""The observation ports over NATS: an exchange in any language answers four subjects.

``liqshell run`` with ``[exchange] source = "nats"`` observes the exchange through
:class:`NatsExchange` — the ``PortfolioSource``, ``MarginSource``, ``QuoteSource`` and
``OrderSnapshot`` of the watcher — and so needs no Python code of the exchange's at all:
the exchange answers NATS requests (orders and auctions as in :mod:`liqshell.adapters.nats`,
observations as here). :func:`serve_exchange` is the other side, for an exchange written in
Python (the simulator's reference responder, :mod:`liqshell.sim.responder`, uses it).

Wire format, version 1 (the docs' wire page has an example per subject)
-----------------------------------------------------------------------

Every body is :mod:`liqcore.codec` JSON (UTF-8; money and sizes as decimal strings, times as
int ms) and carries ``"v": 1``. Every request is batched; a single-wallet call is a batch of
one, and a batch larger than ``batch`` wallets is split into several requests.

* ``liq.exchange.portfolios``: ``{"v": 1, "wallets": null, "after": null, "limit": 500}``
  lists every account a page at a time (in wallet order; the reply's ``next`` is the last
  wallet of a full page), ``{"v": 1, "wallets": ["0xa"]}`` asks for some; the reply is
  ``{"v": 1, "portfolios": {wallet: Portfolio | null}, "next": …}``.
* ``liq.exchange.margin``: ``{"v": 1, "portfolios": {wallet: Portfolio | null}}`` →
  ``{"v": 1, "reports": {wallet: MarginReport}}``.
* ``liq.exchange.quotes``: ``{"v": 1, "symbols": [symbol]}`` →
  ``{"v": 1, "quotes": {symbol: Quote}}``.
* ``liq.exchange.open_orders``: ``{"v": 1, "wallets": [wallet]}`` →
  ``{"v": 1, "orders": {wallet: [OpenOrder]}}``.

A wallet (or symbol) missing from a reply failed alone: the watcher skips that wallet this
poll. A responder that cannot answer at all replies ``{"error": "…", "reason": "…"}``
(``"unsupported_version"`` for a request of another version, ``"bad_request"``,
``"failed"``); the caller raises :class:`ExchangeUnavailable`, as it does for no responder,
no reply within ``timeout_ms``, or a reply that does not parse (the watcher skips the poll or
the wallet, as for any observation failure). Observations change nothing, so a request may
be retried freely.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import attrs
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from liqcore import OpenOrder, Portfolio, Quote, codec
from liqcore.errors import InvalidInput
from liqshell.adapters import ServiceUnavailable
from liqshell.adapters.nats import NatsConnector, Responder, settle
from liqshell.ports import MarginReport, MarginSource, OrderSnapshot, PortfolioSource, QuoteSource

__all__ = [
    "MARGIN_SUBJECT",
    "OPEN_ORDERS_SUBJECT",
    "PORTFOLIOS_SUBJECT",
    "QUOTES_SUBJECT",
    "WIRE_VERSION",
    "ExchangeUnavailable",
    "MarginReply",
    "MarginRequest",
    "NatsExchange",
    "OpenOrdersReply",
    "OpenOrdersRequest",
    "PortfoliosReply",
    "PortfoliosRequest",
    "QuotesReply",
    "QuotesRequest",
    "serve_exchange",
]

log = logging.getLogger("liqshell.adapters.nats_exchange")

T = TypeVar("T")

WIRE_VERSION = 1
"""The version of the observation protocol (``"v"`` of every body)."""

PORTFOLIOS_SUBJECT = "liq.exchange.portfolios"
MARGIN_SUBJECT = "liq.exchange.margin"
QUOTES_SUBJECT = "liq.exchange.quotes"
OPEN_ORDERS_SUBJECT = "liq.exchange.open_orders"

PAGE = 500
"""Wallets per request (and per page of the account listing) by default."""


class ExchangeUnavailable(ServiceUnavailable):
    """An observation request got no usable answer (no responder, no reply in time, an
    error reply, a reply that does not parse)."""


# --- messages ----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class PortfoliosRequest:
    """Every account (``wallets`` ``None``; paged by ``after``/``limit``) or some."""

    v: int = WIRE_VERSION
    wallets: tuple[str, ...] | None = None
    after: str | None = None
    limit: int = PAGE


@attrs.frozen(kw_only=True)
class PortfoliosReply:
    """Portfolios by wallet (``None``: unavailable); ``next`` pages the listing."""

    v: int = WIRE_VERSION
    portfolios: Mapping[str, Portfolio | None] = attrs.field(factory=dict)
    next: str | None = None


@attrs.frozen(kw_only=True)
class MarginRequest:
    """The margin engine's verdicts on these wallets, each with the portfolio observed."""

    v: int = WIRE_VERSION
    portfolios: Mapping[str, Portfolio | None] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class MarginReply:
    """Verdicts by wallet."""

    v: int = WIRE_VERSION
    reports: Mapping[str, MarginReport] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class QuotesRequest:
    """Quotes of these symbols."""

    v: int = WIRE_VERSION
    symbols: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class QuotesReply:
    """Quotes by symbol (a symbol without a quote is left out)."""

    v: int = WIRE_VERSION
    quotes: Mapping[str, Quote] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class OpenOrdersRequest:
    """Open orders of these wallets."""

    v: int = WIRE_VERSION
    wallets: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class OpenOrdersReply:
    """Open orders by wallet (an empty list for a wallet with none)."""

    v: int = WIRE_VERSION
    orders: Mapping[str, tuple[OpenOrder, ...]] = attrs.field(factory=dict)


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)] or [items]


# --- the client --------------------------------------------------------------------------


class NatsExchange:
    """``PortfolioSource``, ``MarginSource``, ``QuoteSource`` and ``OrderSnapshot`` by NATS
    request/reply (see the module docs), with batch methods for many wallets at once."""

    def __init__(
        self,
        connector: NatsConnector,
        *,
        portfolios_subject: str = PORTFOLIOS_SUBJECT,
        margin_subject: str = MARGIN_SUBJECT,
        quotes_subject: str = QUOTES_SUBJECT,
        open_orders_subject: str = OPEN_ORDERS_SUBJECT,
        timeout_ms: int = 5_000,
        batch: int = PAGE,
    ) -> None:
        if type(timeout_ms) is not int or timeout_ms <= 0:
            raise ValueError(f"timeout_ms must be an int > 0 (ms), was {timeout_ms!r}")
        if type(batch) is not int or batch < 1:
            raise ValueError(f"batch must be an int >= 1, was {batch!r}")
        self.connector = connector
        self.portfolios_subject = portfolios_subject
        self.margin_subject = margin_subject
        self.quotes_subject = quotes_subject
        self.open_orders_subject = open_orders_subject
        self.timeout = timeout_ms / 1000
        self.batch = batch

    def __repr__(self) -> str:
        return f"NatsExchange({self.connector!r})"

    async def _ask(self, subject: str, request: object, reply_type: type[T]) -> T:
        try:
            client = await self.connector.client()
            reply = await client.request(
                subject, codec.to_json(request).encode(), timeout=self.timeout
            )
        except nats.errors.NoRespondersError:
            raise ExchangeUnavailable(f"no responder on {subject!r}") from None
        except TimeoutError:
            raise ExchangeUnavailable(
                f"no reply on {subject!r} within {self.timeout:g} s"
            ) from None
        except (nats.errors.Error, OSError) as error:
            raise ExchangeUnavailable(f"{subject}: {type(error).__name__} {error}") from error
        return _reply(subject, reply.data, reply_type)

    # PortfolioSource

    async def portfolios(self) -> Mapping[str, Portfolio]:
        """Every account with a portfolio, page by page."""
        result: dict[str, Portfolio] = {}
        after: str | None = None
        while True:
            request = PortfoliosRequest(after=after, limit=self.batch)
            page = await self._ask(self.portfolios_subject, request, PortfoliosReply)
            result.update({w: p for w, p in page.portfolios.items() if p is not None})
            if page.next is None:
                return result
            if after is not None and page.next <= after:
                raise ExchangeUnavailable(
                    f"{self.portfolios_subject}: page after {after!r} went back to {page.next!r}"
                )
            after = page.next

    async def portfolio(self, wallet: str) -> Portfolio | None:
        """One account's portfolio (``None``: unavailable)."""
        return (await self.portfolios_of([wallet])).get(wallet)

    async def portfolios_of(self, wallets: Sequence[str]) -> Mapping[str, Portfolio | None]:
        """The portfolios of ``wallets``; a wallet left out failed alone."""
        result: dict[str, Portfolio | None] = {}
        for chunk in _chunks(list(wallets), self.batch):
            request = PortfoliosRequest(wallets=tuple(chunk))
            reply = await self._ask(self.portfolios_subject, request, PortfoliosReply)
            result.update({w: p for w, p in reply.portfolios.items() if w in chunk})
        return result

    # MarginSource

    async def margin(self, wallet: str, portfolio: Portfolio | None) -> MarginReport:
        """The engine's verdict on ``wallet``."""
        reports = await self.margins({wallet: portfolio})
        if wallet not in reports:
            raise ExchangeUnavailable(f"{self.margin_subject}: no report for {wallet!r}")
        return reports[wallet]

    async def margins(
        self, portfolios: Mapping[str, Portfolio | None]
    ) -> Mapping[str, MarginReport]:
        """Verdicts on the wallets of ``portfolios``; a wallet left out failed alone."""
        result: dict[str, MarginReport] = {}
        for chunk in _chunks(list(portfolios), self.batch):
            request = MarginRequest(portfolios={w: portfolios[w] for w in chunk})
            reply = await self._ask(self.margin_subject, request, MarginReply)
            result.update({w: r for w, r in reply.reports.items() if w in portfolios})
        return result

    # QuoteSource

    async def quotes(self, symbols: Sequence[str]) -> Mapping[str, Quote]:
        """Quotes of ``symbols`` (missing symbols are allowed)."""
        if not symbols:
            return {}
        reply = await self._ask(
            self.quotes_subject, QuotesRequest(symbols=tuple(symbols)), QuotesReply
        )
        return {s: q for s, q in reply.quotes.items() if s in symbols}

    # OrderSnapshot

    async def open_orders(self, wallet: str) -> Sequence[OpenOrder]:
        """Open orders of ``wallet``."""
        orders = await self.open_orders_many([wallet])
        if wallet not in orders:
            raise ExchangeUnavailable(f"{self.open_orders_subject}: no answer for {wallet!r}")
        return orders[wallet]

    async def open_orders_many(self, wallets: Sequence[str]) -> Mapping[str, Sequence[OpenOrder]]:
        """Open orders of each of ``wallets``; a wallet left out failed alone."""
        result: dict[str, Sequence[OpenOrder]] = {}
        for chunk in _chunks(list(wallets), self.batch):
            request = OpenOrdersRequest(wallets=tuple(chunk))
            reply = await self._ask(self.open_orders_subject, request, OpenOrdersReply)
            result.update({w: o for w, o in reply.orders.items() if w in chunk})
        return result


def _reply(subject: str, data: bytes, reply_type: type[T]) -> T:
    try:
        parsed: object = json.loads(data)
    except ValueError:
        raise ExchangeUnavailable(f"{subject}: unreadable reply {data[:200]!r}") from None
    if isinstance(parsed, dict) and "error" in parsed:
        raise ExchangeUnavailable(
            f"{subject}: the exchange answered {parsed['error']!r}: {parsed.get('reason', '')}"
        )
    if isinstance(parsed, dict) and parsed.get("v") != WIRE_VERSION:
        raise ExchangeUnavailable(
            f"{subject}: reply of version {parsed.get('v')!r}, expected {WIRE_VERSION}"
        )
    try:
        return codec.structure(parsed, reply_type)
    except (InvalidInput, RecursionError) as error:
        raise ExchangeUnavailable(f"{subject}: bad reply: {error}") from None


# --- the responder -----------------------------------------------------------------------


def _error(kind: str, reason: str) -> bytes:
    return json.dumps({"error": kind, "reason": reason}, sort_keys=True).encode()


async def _each(wallets: Sequence[str], call: Callable[[str], Awaitable[T]]) -> dict[str, T]:
    """``call`` per wallet, concurrently; a wallet whose call fails is left out."""
    results = await asyncio.gather(*(call(w) for w in wallets), return_exceptions=True)
    answered: dict[str, T] = {}
    for wallet, result in zip(wallets, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result
            log.warning("observation of %s failed: %r", wallet, result)
        else:
            answered[wallet] = result
    return answered


async def serve_exchange(
    connection: NatsConnector | Client,
    *,
    portfolios: PortfolioSource,
    margin: MarginSource,
    quotes: QuoteSource,
    orders: OrderSnapshot,
    portfolios_subject: str = PORTFOLIOS_SUBJECT,
    margin_subject: str = MARGIN_SUBJECT,
    quotes_subject: str = QUOTES_SUBJECT,
    open_orders_subject: str = OPEN_ORDERS_SUBJECT,
    queue: str = "",
) -> Responder:
    """Answer the observation subjects from the four ports (batch methods —
    ``portfolios_of``, ``margins``, ``open_orders_many`` — when a port has them, one call per
    wallet otherwise; a wallet whose call fails is left out of the reply)."""
    client = connection if isinstance(connection, Client) else await connection.client()
    any_portfolios: Any = portfolios
    any_margin: Any = margin
    any_orders: Any = orders

    async def do_portfolios(request: PortfoliosRequest) -> PortfoliosReply:
        if request.wallets is None:
            listing = await portfolios.portfolios()
            ordered = sorted(w for w in listing if request.after is None or w > request.after)
            page = ordered[: max(request.limit, 1)]
            more = len(ordered) > len(page)
            return PortfoliosReply(
                portfolios={w: listing[w] for w in page}, next=page[-1] if more else None
            )
        if callable(getattr(portfolios, "portfolios_of", None)):
            found = await any_portfolios.portfolios_of(list(request.wallets))
            return PortfoliosReply(portfolios=dict(found))
        return PortfoliosReply(portfolios=await _each(request.wallets, portfolios.portfolio))

    async def do_margin(request: MarginRequest) -> MarginReply:
        if callable(getattr(margin, "margins", None)):
            return MarginReply(reports=dict(await any_margin.margins(dict(request.portfolios))))

        async def one(wallet: str) -> MarginReport:
            return await margin.margin(wallet, request.portfolios[wallet])

        return MarginReply(reports=await _each(list(request.portfolios), one))

    async def do_quotes(request: QuotesRequest) -> QuotesReply:
        return QuotesReply(quotes=dict(await quotes.quotes(list(request.symbols))))

    async def do_open_orders(request: OpenOrdersRequest) -> OpenOrdersReply:
        if callable(getattr(orders, "open_orders_many", None)):
            found = await any_orders.open_orders_many(list(request.wallets))
        else:
            found = await _each(request.wallets, orders.open_orders)
        return OpenOrdersReply(orders={w: tuple(o) for w, o in found.items()})

    subscriptions = [
        await client.subscribe(subject, queue=queue, cb=_handler(subject, request_type, act))
        for subject, request_type, act in (
            (portfolios_subject, PortfoliosRequest, do_portfolios),
            (margin_subject, MarginRequest, do_margin),
            (quotes_subject, QuotesRequest, do_quotes),
            (open_orders_subject, OpenOrdersRequest, do_open_orders),
        )
    ]
    await settle(client)  # the server knows the subscriptions when this returns
    return Responder(subscriptions, client)


def _handler(
    subject: str, request_type: type[Any], act: Callable[[Any], Awaitable[object]]
) -> Callable[[Msg], Awaitable[None]]:
    async def handle(msg: Msg) -> None:
        reply: bytes
        try:
            parsed: object = json.loads(msg.data)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            reply = _error("bad_request", "the body must be a JSON object")
        elif parsed.get("v") != WIRE_VERSION:
            reply = _error(
                "unsupported_version",
                f"this responder speaks version {WIRE_VERSION}, the request {parsed.get('v')!r}",
            )
        else:
            try:
                request = codec.structure(parsed, request_type)
            except (InvalidInput, RecursionError) as error:
                reply = _error("bad_request", str(error))
            else:
                try:
                    reply = codec.to_json(await act(request)).encode()
                except Exception as error:
                    log.exception("responder for %s failed", subject)
                    reply = _error("failed", f"{type(error).__name__}: {error}")
        if msg.reply:
            await msg.respond(reply)

    return handle
