"""A small order engine and auction house on NATS, for the watcher's end-to-end tests.

:class:`Engine` answers the requests of :class:`~liqshell.adapters.nats.NatsOrderGateway`
and :class:`~liqshell.adapters.nats.NatsAuctionExecutor` as the wire format documented in
:mod:`liqshell.adapters.nats` says — written here from that documentation, on raw
subscriptions with hand-made JSON replies, not with the adapters' own ``serve_*`` helpers —
keeps the orders and auctions, serves the observation ports (portfolios, margin, quotes,
open orders) in-process, publishes chain events into a JetStream stream for
:class:`~liqshell.adapters.nats.NatsAuctionFeed`, and records every state change the
watcher publishes. :class:`Script` makes it misbehave: reject, answer late, never answer,
or answer with the documented error replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import attrs
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from liqcore import (
    AccountState,
    CancelOrder,
    Config,
    Event,
    MarginMode,
    OpenOrder,
    Portfolio,
    Position,
    Quote,
    Side,
    StartAuction,
    StateChange,
    StopAuction,
    SubmitOrder,
    codec,
)
from liqshell import Watcher
from liqshell.adapters.nats import (
    MSG_ID,
    NatsAuctionExecutor,
    NatsAuctionFeed,
    NatsConnector,
    NatsEventSink,
    NatsOrderGateway,
    ensure_stream,
    settle,
)
from liqshell.adapters.sqlite import SqliteStore
from liqshell.ports import MarginReport

__all__ = [
    "CONFIG",
    "LIQUIDATABLE",
    "RECOVERED",
    "RISK_INCREASING",
    "SYMBOL",
    "Engine",
    "ManualClock",
    "Request",
    "Rig",
    "Script",
    "Subjects",
    "W",
    "eventually",
    "open_rig",
    "seed_portfolio",
]

T = TypeVar("T")

LIVE = ("pending", "running", "stopping")


class ManualClock:
    """Virtual ``now`` that the test sets; waits are bounded in real time (the NATS
    adapters' own timeouts are real)."""

    def __init__(self, now_ms: int) -> None:
        self._now = now_ms

    def now_ms(self) -> int:
        """The virtual instant."""
        return self._now

    def set(self, now_ms: int) -> None:
        """Move to ``now_ms``."""
        self._now = now_ms

    async def sleep_until(self, ms: int) -> None:
        """Jump to ``ms`` (nothing else runs on virtual time)."""
        self._now = max(self._now, ms)
        await asyncio.sleep(0)

    async def wait_for(self, awaitable: Awaitable[T], timeout_ms: int) -> T:
        """Await with a real-time bound of ``timeout_ms``."""
        return await asyncio.wait_for(awaitable, timeout_ms / 1000)


@attrs.frozen(kw_only=True)
class Subjects:
    """The subjects and streams of one test (a prefix no other test uses)."""

    prefix: str

    @property
    def submit(self) -> str:
        return f"{self.prefix}.orders.submit"

    @property
    def cancel(self) -> str:
        return f"{self.prefix}.orders.cancel"

    @property
    def start(self) -> str:
        return f"{self.prefix}.auctions.start"

    @property
    def stop(self) -> str:
        return f"{self.prefix}.auctions.stop"

    @property
    def state(self) -> str:
        return f"{self.prefix}.state"

    @property
    def chain(self) -> str:
        return f"{self.prefix}.chain.events"

    @property
    def state_stream(self) -> str:
        return f"{self.prefix.upper()}_STATE"

    @property
    def chain_stream(self) -> str:
        return f"{self.prefix.upper()}_CHAIN"


@attrs.frozen(kw_only=True)
class Script:
    """What the engine does with the next request of a kind instead of its normal answer.

    ``reject``: answer ``rejected`` with this reason (submit, cancel), having acted only if
    ``act`` (a cancel "rejected" because the order already filled: it is gone anyway).
    ``error``: the documented error reply — ``"not_sent"`` without acting,
    ``"outcome_unknown"`` after acting. ``delay_s``: act, answer this much later.
    ``silent``: act, never answer. ``lost``: neither act nor answer (lost on the way).
    """

    reject: str | None = None
    act: bool = False
    error: str | None = None
    delay_s: float = 0.0
    silent: bool = False
    lost: bool = False


@attrs.frozen(kw_only=True)
class Request:
    """One request as the engine received it, and what it answered (``None``: nothing)."""

    kind: str
    msg_id: str | None
    command: SubmitOrder | CancelOrder | StartAuction | StopAuction
    reply: Mapping[str, object] | None


@attrs.define(kw_only=True)
class Auction:
    """One auction of the engine's chain."""

    auction_id: str
    wallet: str
    tx_hash: str
    margin_needed: Decimal
    status: str = "pending"


@attrs.define(kw_only=True)
class _Armed:
    script: Script
    remaining: int | None


class Engine:
    """The order engine, auction house and chain of one test (see the module docs)."""

    def __init__(self, url: str, subjects: Subjects, *, now: Callable[[], int]) -> None:
        self.url = url
        self.subjects = subjects
        self.now = now
        self.portfolios_: dict[str, Portfolio] = {}
        self.margins: dict[str, MarginReport] = {}
        self.quotes_: dict[str, Quote] = {}
        self.orders: dict[str, dict[int, OpenOrder]] = {}
        self.auctions: dict[str, Auction] = {}
        self.requests: list[Request] = []
        self.published: list[tuple[str | None, StateChange]] = []
        self.down: set[str] = set()
        """Observation methods that raise (``"margin"`` …), for fault tests."""
        self._answers: dict[str, Mapping[str, object]] = {}
        self._scripts: dict[str, list[_Armed]] = {}
        self._order_ids = itertools.count(1001)
        self._auction_numbers = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: Client | None = None

    # ------------------------------------------------------------------ life cycle

    @property
    def client(self) -> Client:
        assert self._client is not None, "Engine.start() first"
        return self._client

    async def start(self) -> None:
        """Connect, create the streams, subscribe the four request subjects and the state
        subject; the server knows the subscriptions when this returns."""
        self._client = await nats.connect(
            self.url, name="engine", reconnect_time_wait=0.05, max_reconnect_attempts=-1
        )
        await ensure_stream(self.client, self.subjects.chain_stream, [self.subjects.chain])
        await ensure_stream(self.client, self.subjects.state_stream, [self.subjects.state])
        s = self.subjects
        for subject, kind in ((s.submit, "submit"), (s.cancel, "cancel"), (s.start, "start"),
                              (s.stop, "stop")):  # fmt: skip
            await self.client.subscribe(subject, cb=self._handler(kind))
        await self.client.subscribe(s.state, cb=self._on_state)
        await settle(self.client)

    async def close(self) -> None:
        """Cancel late answers in flight and close the connection."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()

    # ------------------------------------------------------------------ test controls

    def script(self, kind: str, script: Script, *, times: int | None = 1) -> None:
        """Apply ``script`` to the next ``times`` requests of ``kind`` (``None``: all)."""
        self._scripts.setdefault(kind, []).append(_Armed(script=script, remaining=times))

    def clear_scripts(self) -> None:
        """Back to normal answers."""
        self._scripts.clear()

    def rest(self, wallet: str, order: OpenOrder) -> None:
        """Put a user's order on the book."""
        self.orders.setdefault(wallet, {})[order.order_id] = order

    def open_orders_of(self, wallet: str) -> tuple[OpenOrder, ...]:
        """The wallet's open orders by ``(created_at, order_id)``."""
        orders = self.orders.get(wallet, {}).values()
        return tuple(sorted(orders, key=lambda o: (o.created_at, o.order_id)))

    def kinds(self) -> list[str]:
        """The kinds of the requests received, in order."""
        return [request.kind for request in self.requests]

    async def chain(self, wallet: str, event: Event, event_id: str) -> None:
        """Publish a chain event as documented: body ``{"event_id", "wallet", "event"}``,
        header ``Nats-Msg-Id`` = event id, into the chain stream."""
        body = {
            "event_id": event_id,
            "wallet": wallet,
            "event": json.loads(codec.to_json(event)),
        }
        await self.client.jetstream().publish(
            self.subjects.chain,
            json.dumps(body).encode(),
            stream=self.subjects.chain_stream,
            headers={MSG_ID: event_id},
        )

    async def settle(self) -> None:
        """Return once the server delivered what was published before the call."""
        await settle(self.client)

    # ------------------------------------------------------------------ observation ports

    def _check(self, method: str) -> None:
        if method in self.down:
            raise ConnectionError(f"engine {method} is down")

    async def portfolios(self) -> Mapping[str, Portfolio]:
        """Every account's portfolio."""
        self._check("portfolios")
        return dict(sorted(self.portfolios_.items()))

    async def portfolio(self, wallet: str) -> Portfolio | None:
        """One account's portfolio."""
        self._check("portfolio")
        return self.portfolios_.get(wallet)

    async def margin(self, wallet: str, portfolio: Portfolio | None) -> MarginReport:
        """The margin engine's verdict."""
        self._check("margin")
        return self.margins[wallet]

    async def quotes(self, symbols: Sequence[str]) -> Mapping[str, Quote]:
        """The books of the listed symbols."""
        self._check("quotes")
        return {s: self.quotes_[s] for s in symbols if s in self.quotes_}

    async def open_orders(self, wallet: str) -> Sequence[OpenOrder]:
        """The wallet's open orders."""
        self._check("open_orders")
        return self.open_orders_of(wallet)

    # ------------------------------------------------------------------ requests

    def _next_script(self, kind: str) -> Script | None:
        armed = self._scripts.get(kind, [])
        if not armed:
            return None
        first = armed[0]
        if first.remaining is not None:
            first.remaining -= 1
            if first.remaining <= 0:
                armed.pop(0)
        return first.script

    def _handler(self, kind: str) -> Callable[[Msg], Awaitable[None]]:
        types: dict[str, Any] = {
            "submit": SubmitOrder,
            "cancel": CancelOrder,
            "start": StartAuction,
            "stop": StopAuction,
        }

        async def handle(msg: Msg) -> None:
            command = codec.from_json(msg.data, types[kind])
            msg_id = (msg.headers or {}).get(MSG_ID)
            script = self._next_script(kind)
            reply: Mapping[str, object] | None
            if script is not None and script.lost:
                self.requests.append(Request(kind=kind, msg_id=msg_id, command=command, reply=None))
                return
            if script is not None and script.reject is not None:
                if script.act:
                    self._act(kind, command, msg_id)
                reply = {"status": "rejected", "reason": script.reject, "order_id": None}
            elif script is not None and script.error == "not_sent":
                reply = {"error": "not_sent", "reason": "engine refused the request"}
            else:
                reply = self._act(kind, command, msg_id)
                if script is not None and script.error is not None:
                    reply = {"error": script.error, "reason": "engine cannot tell"}
            if script is not None and script.silent:
                self.requests.append(Request(kind=kind, msg_id=msg_id, command=command, reply=None))
                return
            self.requests.append(Request(kind=kind, msg_id=msg_id, command=command, reply=reply))
            data = json.dumps(reply, sort_keys=True).encode()
            if script is not None and script.delay_s > 0:
                task = asyncio.ensure_future(self._late(msg, data, script.delay_s))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif msg.reply:
                await msg.respond(data)

        return handle

    async def _late(self, msg: Msg, data: bytes, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        if msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(data)

    def _act(self, kind: str, command: object, msg_id: str | None) -> Mapping[str, object]:
        """The normal answer, once per ``Nats-Msg-Id`` (a retry gets the first answer)."""
        if msg_id is not None and msg_id in self._answers:
            return self._answers[msg_id]
        match command:
            case SubmitOrder():
                reply = self._submit(command)
            case CancelOrder():
                reply = self._cancel(command)
            case StartAuction():
                reply = self._start(command)
            case StopAuction():
                reply = self._stop(command)
            case _:
                raise AssertionError(f"unexpected {kind} request {command!r}")
        if msg_id is not None:
            self._answers[msg_id] = reply
        return reply

    def _live(self, wallet: str) -> Auction | None:
        for auction in self.auctions.values():
            if auction.wallet == wallet and auction.status in LIVE:
                return auction
        return None

    def _submit(self, command: SubmitOrder) -> Mapping[str, object]:
        if self._live(command.wallet) is not None:
            return {"status": "rejected", "reason": "account is being auctioned", "order_id": None}
        order_id = next(self._order_ids)
        self.rest(
            command.wallet,
            OpenOrder(
                order_id=order_id,
                symbol=command.symbol,
                side=Side.BUY,
                price=command.price,
                original_size=command.size,
                remaining_size=command.size,
                client_id=command.client_id,
                created_at=self.now(),
            ),
        )
        return {"status": "acked", "reason": "", "order_id": order_id}

    def _cancel(self, command: CancelOrder) -> Mapping[str, object]:
        if self.orders.get(command.wallet, {}).pop(command.order_id, None) is None:
            return {"status": "rejected", "reason": "order not found", "order_id": None}
        return {"status": "canceled", "reason": "", "order_id": command.order_id}

    def _start(self, command: StartAuction) -> Mapping[str, object]:
        auction = self._live(command.wallet)
        if auction is None:
            number = next(self._auction_numbers)
            report = self.margins.get(command.wallet)
            needed = Decimal(0) if report is None else report.mm_required - report.equity
            auction = Auction(
                auction_id=f"auction-{number}",
                wallet=command.wallet,
                tx_hash=f"0x{number:064x}",
                margin_needed=max(needed, Decimal(0)),
            )
            self.auctions[auction.auction_id] = auction
        return {
            "auction_id": auction.auction_id,
            "tx_hash": auction.tx_hash,
            "margin_needed": str(auction.margin_needed),
        }

    def _stop(self, command: StopAuction) -> Mapping[str, object]:
        auction = self.auctions.get(command.auction_id)
        if auction is not None and auction.wallet == command.wallet and auction.status in LIVE:
            auction.status = "stopping"
        return {}

    async def _on_state(self, msg: Msg) -> None:
        msg_id = (msg.headers or {}).get(MSG_ID)
        self.published.append((msg_id, codec.from_json(msg.data, StateChange)))


async def eventually(check: Callable[[], bool], *, timeout_s: float = 10.0) -> None:
    """Wait until ``check()`` holds (real time), or fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- SPEC §8's account

# inputs.py's generic mapping converter types Portfolio.positions as Mapping[K, T]; build
# portfolios through an untyped alias (as tests/liqcore do) until that is fixed.
PortfolioOf: Callable[..., Portfolio] = Portfolio

W = "0xe2e"
SYMBOL = "BTC-20261231-100000-C"
CONFIG = Config(
    partial_target_buffer_bps=500,
    partial_reprice_interval_ms=5_000,
    partial_bonus_start_bps=50,
    partial_bonus_max_bps=500,
    partial_bonus_ramp_ms=60_000,
    full_escalation_timeout_ms=60_000,
)
"""The seed harness's configuration (SPEC §8)."""
LIQUIDATABLE = MarginReport(
    margin_mode=MarginMode.STANDARD,
    equity=Decimal(100),
    mm_required=Decimal(300),
    is_liquidatable=True,
)
RECOVERED = MarginReport(
    margin_mode=MarginMode.STANDARD,
    equity=Decimal(420),
    mm_required=Decimal(300),
    is_liquidatable=False,
)
RISK_INCREASING = OpenOrder(
    order_id=7,
    symbol=SYMBOL,
    side=Side.SELL,
    price=Decimal(95),
    original_size=Decimal(1),
    remaining_size=Decimal(1),
    client_id="risk-increasing",
    created_at=1,
)


def seed_portfolio() -> Portfolio:
    """SPEC §8's account: short 4 calls at 100, BTC at 105 000."""
    position = Position(symbol=SYMBOL, amount=Decimal(-4), entry_price=Decimal(100))
    return PortfolioOf(
        cash=Decimal(500), positions={SYMBOL: position}, spot={"BTC": Decimal(105_000)}
    )


@attrs.define
class Rig:
    """An engine with SPEC §8's liquidatable account, and the watcher's real adapters."""

    engine: Engine
    clock: ManualClock
    connector: NatsConnector
    store: SqliteStore
    subjects: Subjects

    def watcher(self, *, config: Config = CONFIG, gateway_timeout_ms: int = 2_000) -> Watcher:
        """A watcher on NATS (gateway, executor, feed and sink on JetStream) and SQLite."""
        s = self.subjects
        return Watcher(
            portfolios=self.engine,
            margin=self.engine,
            quotes=self.engine,
            orders=self.engine,
            gateway=NatsOrderGateway(
                self.connector,
                submit_subject=s.submit,
                cancel_subject=s.cancel,
                timeout_ms=gateway_timeout_ms,
            ),
            auctions=NatsAuctionExecutor(
                self.connector,
                start_subject=s.start,
                stop_subject=s.stop,
                timeout_ms=gateway_timeout_ms,
            ),
            feed=NatsAuctionFeed(self.connector, subject=s.chain, stream=s.chain_stream),
            store=self.store,
            sink=NatsEventSink(self.connector, subject=s.state, stream=s.state_stream),
            recorder=self.store,
            clock=self.clock,
            config=config,
        )

    async def state(self, wallet: str = W) -> AccountState:
        """The wallet's committed state."""
        return (await self.store.load())[wallet].state

    def client_ids(self, wallet: str = W) -> list[str]:
        """Client ids of the wallet's open orders at the engine."""
        return [o.client_id or "" for o in self.engine.open_orders_of(wallet)]


@contextlib.asynccontextmanager
async def open_rig(url: str, folder: Path, prefix: str) -> AsyncIterator[Rig]:
    """A started :class:`Rig` at virtual time 10 000 (closed on exit)."""
    clock = ManualClock(10_000)
    subjects = Subjects(prefix=prefix)
    engine = Engine(url, subjects, now=clock.now_ms)
    await engine.start()
    engine.portfolios_[W] = seed_portfolio()
    engine.margins[W] = LIQUIDATABLE
    engine.quotes_[SYMBOL] = Quote(
        best_bid=Decimal(149), best_ask=Decimal(150), mid=Decimal("149.5")
    )
    engine.rest(W, RISK_INCREASING)
    connector = NatsConnector(url, connect_timeout_ms=2_000, reconnect_wait_ms=50)
    store = SqliteStore(folder / "watcher.sqlite")
    try:
        yield Rig(engine=engine, clock=clock, connector=connector, store=store, subjects=subjects)
    finally:
        await store.close()
        await connector.close()
        await engine.close()
