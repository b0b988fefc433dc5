"""The shell's ports: what the watcher needs from the world, as ``typing.Protocol``\\s.

Adapters (SQLite, PostgreSQL, NATS, JSON Lines, the simulator, the in-memory fakes of
:mod:`liqshell.testing`) implement them; the watcher sees nothing else. Adapter exceptions
are translated at this boundary into the errors below, so the watcher can tell an
effect that provably never happened (:class:`NotSent`) from one that may have
(:class:`OutcomeUnknown`), and a commit that lost its race (:class:`Conflict`) from one
made under a lease that is no longer this instance's (:class:`Fenced`,
:class:`LeaseStore`).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from decimal import Decimal
from typing import Protocol, TypeAlias, TypeVar

import attrs

from liqcore import (
    AccountState,
    CancelOrder,
    Command,
    Config,
    Event,
    Health,
    MarginMode,
    OpenOrder,
    Portfolio,
    Quote,
    StartAuction,
    StateChange,
    StopAuction,
    SubmitOrder,
    __version__,
    codec,
)
from liqcore.errors import InvalidInput

__all__ = [
    "PORT_METHODS",
    "READABLE_SCHEMAS",
    "RECORDING_FORMAT",
    "RECORD_SCHEMA",
    "Answer",
    "AnswerStatus",
    "AuctionExecutor",
    "AuctionFeed",
    "AuctionReceipt",
    "Clock",
    "CompletableRecorder",
    "Conflict",
    "Cursor",
    "DecisionLog",
    "EventSink",
    "FeedItem",
    "Fenced",
    "HeaderRecorder",
    "Lease",
    "LeaseStore",
    "LiqshellError",
    "MarginReport",
    "MarginSource",
    "NotSent",
    "OrderAnswer",
    "OrderGateway",
    "OrderSnapshot",
    "OutcomeUnknown",
    "PollReport",
    "PortfolioSource",
    "QuoteSource",
    "Record",
    "RecordKind",
    "Recorder",
    "RecordingHeader",
    "StateStore",
    "Stored",
    "Unfinished",
    "WatcherSettings",
    "check_port",
    "recording_header",
]

T = TypeVar("T")

Cursor: TypeAlias = int | str
"""A position in the auction feed: any ordered, JSON-storable value the feed chooses."""

RECORD_SCHEMA = 3
"""Version of the recording layout written to replay logs (:class:`Record` and
:class:`RecordingHeader`). Schema 2 added the header's ``config``, ``watcher`` and
``started`` and header records anywhere in a log (one per watcher start). Schema 3 adds a
record's ``digest`` (see :func:`liqshell.adapters.record_to_json`): an integrity check
that lets replay build a record it wrote itself without validating it again."""

READABLE_SCHEMAS = (1, 2, 3)
"""The schemas this liqshell reads: 1 (a bare header, records only), 2 and 3."""

RECORDING_FORMAT = "liqshell-recording"
"""The ``format`` of a :class:`RecordingHeader`: what marks a JSON object as a header."""


class LiqshellError(Exception):
    """Base class of the shell's errors."""


class NotSent(LiqshellError):
    """The request provably never left (connection refused before sending, …)."""


class OutcomeUnknown(LiqshellError):
    """The request may have been acted on (timeout, connection lost after sending)."""


class Conflict(LiqshellError):
    """A compare-and-set commit lost: another instance committed this wallet first."""


class Fenced(LiqshellError):
    """The lease a call was made under is no longer this instance's: another instance took
    the shard over (its epoch moved on), so a commit decided under the old epoch was
    rejected — in the same transaction, nothing was written — or a renewal failed. The
    instance must stop acting on that shard; the wallet is not at fault (no quarantine)."""


def _finite(inst: object, attribute: attrs.Attribute[Decimal], value: object) -> None:
    if type(value) is not Decimal or not value.is_finite():
        raise InvalidInput(
            f"{type(inst).__name__}.{attribute.name} must be a finite Decimal, was {value!r}"
        )


def _non_negative(inst: object, attribute: attrs.Attribute[Decimal], value: object) -> None:
    _finite(inst, attribute, value)
    assert isinstance(value, Decimal)
    if value < 0:
        raise InvalidInput(f"{type(inst).__name__}.{attribute.name} must be ≥ 0, was {value}")


def _mode(inst: object, attribute: attrs.Attribute[MarginMode], value: object) -> None:
    if not isinstance(value, MarginMode):
        raise InvalidInput(
            f"{type(inst).__name__}.{attribute.name} must be a liqcore.MarginMode, was {value!r}"
        )


def _bool(inst: object, attribute: attrs.Attribute[bool], value: object) -> None:
    if type(value) is not bool:
        raise InvalidInput(
            f"{type(inst).__name__}.{attribute.name} must be True or False, was {value!r}"
        )


@attrs.frozen(kw_only=True)
class MarginReport:
    """The exchange margin engine's verdict on one account.

    Validated like :class:`~liqcore.Health`: a float, a NaN, a negative requirement or a
    truthy non-bool raises :class:`~liqcore.errors.InvalidInput` naming the field
    (``MarginReport.equity must be a finite Decimal, was 1.5``) where the adapter builds
    it, not later inside the watcher.
    """

    margin_mode: MarginMode = attrs.field(validator=_mode)
    equity: Decimal = attrs.field(validator=_finite)
    mm_required: Decimal = attrs.field(validator=_non_negative)
    is_liquidatable: bool = attrs.field(validator=_bool)


class AnswerStatus(enum.Enum):
    """How the order engine answered a submit or a cancel."""

    ACKED = "acked"
    REJECTED = "rejected"
    CANCELED = "canceled"
    GONE = "gone"
    """A cancel of an order that is no longer open (filled, cancelled or expired before the
    cancel arrived): nothing to do, the watcher treats it as done. Exchanges that only send
    text may answer ``REJECTED`` with a reason such as "order not found"; those phrases are
    recognised too (:func:`liqcore.reduce_only.is_benign_cancel_rejection`)."""


@attrs.frozen(kw_only=True)
class OrderAnswer:
    """The order engine's answer; ``order_id`` is the engine's id of an acked order."""

    status: AnswerStatus
    reason: str = ""
    order_id: int | None = None


@attrs.frozen(kw_only=True)
class AuctionReceipt:
    """The auction executor's answer to ``StartAuction``."""

    auction_id: str
    tx_hash: str | None = None
    margin_needed: Decimal | None = None


@attrs.frozen(kw_only=True)
class FeedItem:
    """One chain or operator observation, at ``cursor`` in the feed, deduplicated by
    ``event_id``."""

    cursor: Cursor
    event_id: str
    wallet: str
    event: Event


@attrs.frozen(kw_only=True)
class Unfinished:
    """A command of a committed decision whose outcome was never recorded.

    ``version`` is the committed version of that decision and ``index`` the command's
    position in it: together with the wallet they are the publish key.
    """

    version: int
    index: int
    command: Command


class RecordKind(enum.Enum):
    """What a :class:`Record` records."""

    DECISION = "decision"
    """An observation and ``step``'s decision (commands and new state)."""
    OUTCOMES = "outcomes"
    """The outcomes of a decision's commands, folded in with ``apply``."""
    FEED = "feed"
    """A feed item: applied, a duplicate, a no-op, or for an unknown wallet."""
    RESTART = "restart"
    """Unfinished commands found at start-up (reported, never replayed)."""
    POLL = "poll"
    """One poll's summary (``record = "changes"``): wallets stepped, healthy no-ops (not
    recorded one by one), skipped, conflicts, commands, released, and a digest of the no-op
    observations, in ``note``; ``wallet`` is empty."""


@attrs.frozen(kw_only=True)
class Answer:
    """What came back for one command of a decision, as an ``OUTCOMES`` record keeps it:
    the command's ``index`` and ``request_id``, the ``outcome`` the watcher concluded
    (``confirmed``, ``failed``, ``unknown``), the order engine's ``answer`` to a submit or
    a cancel as it came (``acked``, ``rejected``, ``canceled``; empty for other commands),
    the engine's ``order_id`` of an acked order, the ``auction_id`` of an auction receipt,
    and the ``reason`` given (a rejection's, or why it was not sent)."""

    index: int
    request_id: str = ""
    outcome: str
    answer: str = ""
    order_id: int | None = None
    auction_id: str | None = None
    reason: str = ""


@attrs.frozen(kw_only=True)
class Record:
    """One entry of the replay log.

    A ``DECISION`` holds everything ``step`` was given (``previous``, ``health``,
    ``orders``, ``now``) and what it returned (``commands``, ``state``), so
    ``step(previous, health, orders, now, config)`` reproduces it exactly. ``executed`` is
    false in shadow mode. ``pending`` is what the store keeps as the wallet's unfinished
    commands after this record is committed. ``version`` is the version its commit created;
    0 for a record that was not committed with a state (see :attr:`commits_version`).
    """

    kind: RecordKind
    wallet: str
    now: int
    version: int = 0
    previous: AccountState | None = None
    health: Health | None = None
    orders: tuple[OpenOrder, ...] = ()
    commands: tuple[Command, ...] = ()
    state: AccountState | None = None
    events: tuple[Event, ...] = ()
    pending: tuple[Unfinished, ...] = ()
    event_id: str | None = None
    cursor: Cursor | None = None
    executed: bool = True
    note: str = ""
    answers: tuple[Answer, ...] = ()
    """For an ``OUTCOMES`` record: each command's answer (schema 2)."""
    schema: int = RECORD_SCHEMA

    @property
    def commits_version(self) -> bool:
        """Whether the record was committed with a state: executed, and ``version`` is the
        version that commit created (records that went in without a state — a skipped feed
        item, a quarantine or a failed restart report — carry version 0)."""
        return self.executed and self.version > 0


@attrs.frozen(kw_only=True)
class WatcherSettings:
    """The watcher's own settings, as a recording header carries them."""

    concurrency: int = 32
    quarantine_backoff_ms: int = 0
    shadow: bool = False
    record: str = "all"
    """What was recorded: ``"changes"`` or ``"all"`` (a header without it predates the
    choice: everything was)."""


@attrs.frozen(kw_only=True)
class RecordingHeader:
    """What a recording says about itself: its ``schema`` and the ``library`` (liqcore
    version) that wrote it and, from schema 2, the full :class:`~liqcore.Config` the
    records after it were decided with (``None``: not known — a schema-1 header, a recorder
    used without a watcher, or a custom margin model the codec cannot write, see
    ``config_note``), the watcher's settings and the time it started (ms).

    The watcher gives each start's header to a recorder that has ``begin``
    (:class:`HeaderRecorder`): a JSON Lines recording opens with one and a restart with
    another configuration appends another, so the records after a header were decided
    with its ``config``.
    """

    format: str = RECORDING_FORMAT
    schema: int = RECORD_SCHEMA
    library: str = __version__
    config: Config | None = None
    config_note: str = ""
    watcher: WatcherSettings | None = None
    started: int | None = None


def recording_header(
    config: Config | None,
    *,
    watcher: WatcherSettings | None = None,
    started: int | None = None,
) -> RecordingHeader:
    """The header of a run with ``config``: a config the codec cannot write (a custom margin
    model) is left out, with ``config_note`` saying why, so replay asks for it."""
    note = ""
    if config is not None:
        try:
            codec.unstructure(config)
        except InvalidInput as error:
            config, note = None, f"the config is not recorded: {error}"
    return RecordingHeader(config=config, config_note=note, watcher=watcher, started=started)


@attrs.frozen(kw_only=True)
class Stored:
    """A wallet's committed state, its version (compare-and-set) and unfinished commands."""

    state: AccountState
    version: int
    unfinished: tuple[Unfinished, ...] = ()


@attrs.frozen(kw_only=True)
class PollReport:
    """What one poll did: wallets stepped and skipped, commits lost to another instance,
    commands executed; ``released`` wallets came back from quarantine at its start (their
    backoff over, reloaded from the store) and ``quarantined`` wallets are still held."""

    stepped: int = 0
    skipped: int = 0
    conflicts: int = 0
    commands: int = 0
    released: int = 0
    quarantined: int = 0
    noops: int = 0
    """Of ``stepped``: healthy no-ops, neither committed nor recorded one by one (``record =
    "changes"``)."""


@attrs.frozen(kw_only=True)
class Lease:
    """A grant of one shard to one instance: ``holder`` owns shard ``shard`` of ``shards``
    under fencing token ``epoch`` until ``expires`` (ms, on the callers' clocks).

    ``epoch`` grows by one at every grant of the shard (never reused, never reset), so a
    commit that carries a lease is accepted only while its epoch is still the shard's.
    """

    shard: int
    shards: int
    holder: str
    epoch: int
    expires: int


class PortfolioSource(Protocol):
    """Executed positions, cash and spot of every account."""

    async def portfolios(self) -> Mapping[str, Portfolio]:
        """All accounts with a portfolio."""
        ...

    async def portfolio(self, wallet: str) -> Portfolio | None:
        """One account's portfolio; ``None``: the snapshot is unavailable."""
        ...


class MarginSource(Protocol):
    """The exchange's margin engine."""

    async def margin(self, wallet: str, portfolio: Portfolio | None) -> MarginReport:
        """Its verdict on ``wallet``."""
        ...


class QuoteSource(Protocol):
    """Best bid/offer and theoretical prices."""

    async def quotes(self, symbols: Sequence[str]) -> Mapping[str, Quote]:
        """Quotes of ``symbols``; missing symbols are allowed."""
        ...


class OrderSnapshot(Protocol):
    """The order engine's open orders."""

    async def open_orders(self, wallet: str) -> Sequence[OpenOrder]:
        """Open orders of ``wallet``."""
        ...


class OrderGateway(Protocol):
    """Submits and cancels orders; raises :class:`NotSent` or :class:`OutcomeUnknown`."""

    async def submit(self, command: SubmitOrder) -> OrderAnswer:
        """``ACKED`` or ``REJECTED``."""
        ...

    async def cancel(self, command: CancelOrder) -> OrderAnswer:
        """``CANCELED``, ``GONE`` (the order was no longer open) or ``REJECTED``."""
        ...


class AuctionExecutor(Protocol):
    """Starts and stops on-chain auctions; idempotent per wallet.

    While an auction of the wallet is pending or running, ``start`` returns that
    auction's receipt — never a second auction.
    """

    async def start(self, command: StartAuction) -> AuctionReceipt:
        """Request the wallet's auction."""
        ...

    async def stop(self, command: StopAuction) -> None:
        """Stop the wallet's auction."""
        ...


class AuctionFeed(Protocol):
    """Chain observations and operator events, replayable from a cursor."""

    def events(self, after: Cursor | None) -> AsyncIterator[FeedItem]:
        """The items after ``after`` that are available now, in cursor order; then it ends."""
        ...


class StateStore(Protocol):
    """Committed account states: one transaction per call, compare-and-set on version."""

    async def load(self) -> Mapping[str, Stored]:
        """Every stored wallet."""
        ...

    async def load_one(self, wallet: str) -> Stored | None:
        """One wallet's entry (``None``: nothing stored). The watcher reloads a wallet whose
        version is in doubt with it; for a store without it, it falls back to :meth:`load`."""
        ...

    async def history(self, wallet: str, *, after_version: int) -> Sequence[Record]:
        """The records committed with the wallet's states after ``after_version``, in
        version order. The watcher completes a separate recorder's log with them at start-up;
        for a store without it, it cannot (and says so)."""
        ...

    async def cursor(self) -> Cursor | None:
        """The committed feed cursor."""
        ...

    async def applied(self, event_id: str) -> bool:
        """Whether a feed item with ``event_id`` was already committed."""
        ...

    async def commit(
        self,
        wallet: str,
        state: AccountState,
        record: Record,
        *,
        expected_version: int,
        cursor: Cursor | None = None,
    ) -> int:
        """Store ``state`` and ``record`` (and ``cursor``, and ``record.event_id`` as applied)
        in one transaction if the stored version is ``expected_version`` (0: none stored);
        return the new version, ``expected_version + 1`` (the watcher keys publishes and
        ``Record.version`` by it). ``record.pending`` becomes the wallet's ``unfinished``.
        Raises :class:`Conflict` otherwise."""
        ...

    async def commit_cursor(self, cursor: Cursor, record: Record) -> None:
        """Move the feed cursor past an item that changes no state, with its record (and
        ``record.event_id`` as applied, if set), in one transaction."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class LeaseStore(Protocol):
    """Leases of shards with fencing (see :doc:`/shell`, "Many instances").

    A store that implements it also accepts ``lease=`` in :meth:`StateStore.commit` and
    rejects a commit whose lease is stale with :class:`Fenced`, in the commit's transaction.
    A store without it (SQLite, the in-memory fakes) is single-instance: one implicit lease,
    commits carry none.
    """

    async def acquire(
        self, shard: int, holder: str, *, shards: int, now: int, ttl_ms: int
    ) -> Lease | None:
        """Grant ``shard`` to ``holder`` until ``now + ttl_ms`` under a new epoch (the
        previous one + 1) if it is free, expired at ``now``, or already ``holder``'s;
        ``None`` if another holder's lease is still running."""
        ...

    async def renew(self, lease: Lease, *, now: int, ttl_ms: int) -> Lease:
        """Extend ``lease`` to ``now + ttl_ms``, same epoch; :class:`Fenced` if its epoch is
        no longer the shard's (taken over)."""
        ...

    async def release(self, lease: Lease) -> bool:
        """Give ``lease`` up (it expires at once; the epoch stays); false if it was no
        longer the shard's."""
        ...

    async def leases(self) -> Mapping[int, Lease]:
        """The current lease row of every shard ever granted, by shard (expired ones too)."""
        ...

    async def heartbeat(self, member: str, *, now: int, ttl_ms: int) -> tuple[str, ...]:
        """Declare ``member`` live until ``now + ttl_ms``; the live members at ``now``,
        sorted (``member`` among them)."""
        ...

    async def leave(self, member: str) -> None:
        """Declare ``member`` gone at once."""
        ...


class DecisionLog(Protocol):
    """A store whose log can be followed: a shadow watcher reads the live decisions from it
    and decides them again under its own configuration (:doc:`/shell`, "Shadow mode")."""

    async def log_position(self) -> int:
        """The position of the newest record in the log (0: none)."""
        ...

    async def decisions_after(self, position: int, *, limit: int) -> Sequence[tuple[int, Record]]:
        """Up to ``limit`` decision records committed with a state after ``position``, with
        their positions, oldest first."""
        ...


class EventSink(Protocol):
    """Publishes state changes at least once; consumers dedupe by ``key``."""

    async def publish(self, change: StateChange, *, key: tuple[str, int, int]) -> None:
        """``key = (wallet, version, index)``."""
        ...


class Recorder(Protocol):
    """The replay log."""

    async def append(self, record: Record) -> None:
        """Append one record."""
        ...


class HeaderRecorder(Recorder, Protocol):
    """A recorder that keeps the recording's header: the watcher calls :meth:`begin` at each
    start, before any record of that run."""

    async def begin(self, header: RecordingHeader) -> None:
        """Record ``header``: the records appended after it were decided with its config."""
        ...


class CompletableRecorder(Recorder, Protocol):
    """A recorder that can tell what it holds, so the watcher completes it at start-up from
    the store's history (records committed before a crash but never appended)."""

    async def last_versions(self) -> Mapping[str, int]:
        """The highest version committed with a state that the log holds, by wallet."""
        ...


class Clock(Protocol):
    """Time, virtual in the simulator and tests."""

    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch."""
        ...

    async def sleep_until(self, ms: int) -> None:
        """Return at ``ms`` (at once if it has passed)."""
        ...

    async def wait_for(self, awaitable: Awaitable[T], timeout_ms: int) -> T:
        """Await with a timeout on this clock; raises ``TimeoutError``."""
        ...


PORT_METHODS: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "portfolios": ("PortfolioSource", ("portfolios", "portfolio")),
    "margin": ("MarginSource", ("margin",)),
    "quotes": ("QuoteSource", ("quotes",)),
    "orders": ("OrderSnapshot", ("open_orders",)),
    "gateway": ("OrderGateway", ("submit", "cancel")),
    "auctions": ("AuctionExecutor", ("start", "stop")),
    "feed": ("AuctionFeed", ("events",)),
    "store": ("StateStore", ("load", "cursor", "applied", "commit", "commit_cursor", "close")),
    "sink": ("EventSink", ("publish",)),
    "recorder": ("Recorder", ("append",)),
    "clock": ("Clock", ("now_ms", "sleep_until", "wait_for")),
}
"""The methods each of the :class:`~liqshell.watcher.Watcher`'s ports must have, by keyword:
``keyword → (protocol, methods)``. Optional methods (``StateStore.load_one`` and
``history``, which the watcher falls back from) are not listed."""


def check_port(keyword: str, port: object) -> None:
    """Raise ``TypeError`` naming the port and the first missing method when ``port`` lacks
    one that :data:`PORT_METHODS` lists for ``keyword`` (``Watcher margin: FakeExchange has no
    method 'margin' (a MarginSource needs margin)``) — at construction, instead of an
    ``AttributeError`` in the middle of a poll."""
    protocol, methods = PORT_METHODS[keyword]
    for method in methods:
        if not callable(getattr(port, method, None)):
            raise TypeError(
                f"Watcher {keyword}: {type(port).__name__} has no method {method!r} "
                f"(a {protocol} needs {', '.join(methods)})"
            )
