"""The watcher: observe → step → commit → execute → apply outcomes → commit (SPEC §9).

It decides nothing — every decision is ``liqcore.step``'s or ``liqcore.apply``'s. Per
wallet and poll it observes (portfolio, margin report, quotes of its symbols, open orders),
computes ``now`` strictly after the stored state's ``updated_at``, steps, and commits the
decision *before* acting (compare-and-set: a conflict or any failure executes nothing).
Then the interpreter executes the commands in order, the outcomes are folded in with
``apply`` and committed with the commands still unfinished. A wallet whose outcomes cannot
be committed is quarantined until it is reconciled from the store: it is never
stepped on an unknown state.

Chain and operator events from the feed are applied under the same per-wallet lock as the
polls and committed with the feed cursor; event ids already applied are skipped, and every
item moves the cursor. A phase change they make is published after that commit
(``liqcore.state_change``), keyed like a decision's publishes. At start-up the unfinished
commands of each wallet's last decision are reported; a ``StartAuction`` or
``StopAuction`` that is still the wallet's latest request is sent again with its request
id (the executor is idempotent per wallet) and its outcome folded in; unconfirmed
publishes are published again with their key; submits and cancels are not replayed (the
next step, on a fresh snapshot, supersedes them). A recorder that is not the store is
completed from the store's history before the first poll.

In shadow mode (``Config.enabled = False``) decisions are recorded with
``executed=False``; nothing is executed and nothing is committed to the store, whose
contents are only read at start-up; states are kept in memory (:attr:`Watcher.states`).

The watcher holds no event-loop resources between calls: its locks and semaphore are made
afresh for each running loop, so it can be driven from several loops in turn.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import attrs

from liqcore import (
    AccountReset,
    AccountState,
    Alert,
    AlertCode,
    AuctionSettled,
    AuctionStarted,
    AuctionStopped,
    CancelOrder,
    Command,
    Config,
    Event,
    Health,
    Healthy,
    InLiquidation,
    InvalidInput,
    OpenOrder,
    Portfolio,
    PreLiquidation,
    PublishStateChange,
    Quote,
    StartAuction,
    StopAuction,
    SubmitOrder,
)
from liqcore.changes import state_change
from liqcore.machine import apply, next_wakeup, step, wallets_to_check
from liqcore.reduce_only import is_liquidation_order
from liqshell.analysis import redecide
from liqshell.cluster import shard_of
from liqshell.interpreter import Execution, Interpreter, OutcomeStatus, answers_of
from liqshell.logs import command_request_id, fields, get_logger, state_phase
from liqshell.metrics import (
    ClosedContracts,
    NullMetrics,
    bonus_offered,
    metrics_from,
    underlying_label,
)
from liqshell.ownership import ShardOwner
from liqshell.ports import (
    AnswerStatus,
    AuctionExecutor,
    AuctionFeed,
    Clock,
    Conflict,
    Cursor,
    DecisionLog,
    EventSink,
    FeedItem,
    Fenced,
    Lease,
    MarginReport,
    MarginSource,
    OrderGateway,
    OrderSnapshot,
    PollReport,
    PortfolioSource,
    QuoteSource,
    Record,
    Recorder,
    RecordKind,
    StateStore,
    Stored,
    Unfinished,
    WatcherSettings,
    check_port,
    recording_header,
)

__all__ = [
    "OBSERVE_CHUNK",
    "OUTCOME_COMMIT_ATTEMPTS",
    "QUARANTINE_BACKOFF_MS",
    "RECORD_MODES",
    "SHADOW_DIFFERENCES_KEPT",
    "ShadowDifference",
    "Watcher",
]

T = TypeVar("T")

OUTCOME_COMMIT_ATTEMPTS = 3
"""How often the outcomes of a decision are committed before the wallet is quarantined."""

QUARANTINE_BACKOFF_MS = 30_000
"""How long a quarantined wallet waits before it is reloaded from the store (the default of
``Watcher(quarantine_backoff_ms=…)``); a reload that fails waits as long again."""

OBSERVE_CHUNK = 200
"""Wallets observed together: one call per batch method of a port (one timeout each)."""

RECORD_MODES = ("changes", "all")
"""``"changes"`` (the default): a healthy no-op decision — no command, healthy before and
after, nothing unfinished — is neither committed nor recorded one by one (nothing the next
step depends on changed); each poll records one ``POLL`` summary instead. ``"all"``: every
decision is committed and recorded (the full log, for audits)."""

SHADOW_DIFFERENCES_KEPT = 1_000
"""How many of its latest differences a shadow watcher keeps
(:attr:`Watcher.shadow_differences`); all are counted and logged."""

_SHADOW_PAGE = 1_000
_DIGEST_BATCH = 256


@attrs.frozen(kw_only=True)
class ShadowDifference:
    """A live decision recorded in the store that a shadow watcher, deciding it again under
    its own configuration on the same inputs, decided otherwise: the decision's ``wallet``,
    ``version`` and ``now``; ``what`` differs first (``state.<field>``, ``commands…``,
    ``step`` when it raised) with the ``live`` and the ``shadow`` value as text, and
    ``detail`` in words."""

    wallet: str
    version: int
    now: int
    what: str
    live: str
    shadow: str
    detail: str


_DEFAULT_CONFIG = Config()
_log = get_logger("watcher")
_feed_log = get_logger("watcher.feed")


@attrs.define
class _Tally:
    stepped: int = 0
    skipped: int = 0
    conflicts: int = 0
    commands: int = 0
    released: int = 0
    noops: int = 0
    digest: hashlib.blake2b = attrs.field(factory=lambda: hashlib.blake2b(digest_size=16))
    lines: list[str] = attrs.field(factory=list)
    """No-op lines not yet folded into ``digest`` (hashed in batches: the same bytes in the
    same order give the same digest, with one ``update`` per batch instead of per wallet)."""

    def noop(self, health: Health) -> None:
        """Count a healthy no-op and fold what was observed into the poll's digest:
        ``wallet|equity|mm_required|0 or 1`` and a newline (``str`` of the Decimals)."""
        self.noops += 1
        lines = self.lines
        lines.append(
            "%s|%s|%s|%d\n"  # noqa: UP031 (%-formatting: the cheapest, per healthy wallet)
            % (health.wallet, health.equity, health.mm_required, health.is_liquidatable)
        )
        if len(lines) >= _DIGEST_BATCH:
            self.fold()

    def fold(self) -> None:
        """Hash the pending no-op lines into ``digest``."""
        if self.lines:
            self.digest.update("".join(self.lines).encode())
            self.lines.clear()

    def report(self, quarantined: int) -> PollReport:
        return PollReport(
            stepped=self.stepped,
            skipped=self.skipped,
            conflicts=self.conflicts,
            commands=self.commands,
            released=self.released,
            quarantined=quarantined,
            noops=self.noops,
        )

    def summary(self) -> str:
        """The ``POLL`` record's note: counts and the digest of the no-op observations."""
        self.fold()
        return (
            f"stepped={self.stepped} noops={self.noops} skipped={self.skipped} "
            f"conflicts={self.conflicts} commands={self.commands} released={self.released} "
            f"digest={self.digest.hexdigest()}"
        )


@attrs.frozen
class _Stepped:
    """A decision that must be committed (and maybe acted on): what it was stepped from."""

    stored: Stored | None
    health: Health
    orders: tuple[OpenOrder, ...]
    now: int
    state: AccountState
    commands: tuple[Command, ...]


@attrs.define
class _Quarantine:
    reason: str
    since_ms: int


class _Stop(Exception):
    """The feed item could not be committed: stop draining, retry from the cursor."""


class Watcher:
    """Polls accounts, steps them with ``liqcore.step`` and executes what it decides.

    The keywords are the ports of SPEC §9 (one object may serve several). ``metrics`` is a
    ``prometheus_client.CollectorRegistry`` (the metrics of :mod:`liqshell.metrics` are
    created on it) or a :class:`~liqshell.metrics.Metrics`; ``None`` counts nothing.
    ``concurrency`` bounds how many wallets are worked on at once; one wallet's steps never
    overlap. When ``recorder`` is the store itself, records committed with a state are not
    appended a second time; when it is not, and it can tell what it holds (a
    :class:`~liqshell.ports.CompletableRecorder`), it is completed from the store's history at
    start-up. A wallet quarantined because its outcomes could not be committed is reloaded
    from the store ``quarantine_backoff_ms`` later (at the start of a poll).

    ``owner`` (a :class:`~liqshell.ownership.ShardOwner` keeping its leases in ``store``)
    makes the watcher one instance of a cluster: it ticks the owner every
    ``renew_interval_ms`` (default a third of the lease TTL), steps and applies feed items
    only for the wallets of the shards it holds, reconciles a shard's wallets as a restart
    does when it takes the shard, commits every wallet under its shard's lease and drops a
    shard whose commit is :class:`~liqshell.ports.Fenced` (``docs/shell.md``, "Many
    instances"). Without it the watcher is the single instance of its store.
    """

    def __init__(
        self,
        *,
        portfolios: PortfolioSource,
        margin: MarginSource,
        quotes: QuoteSource,
        orders: OrderSnapshot,
        gateway: OrderGateway,
        auctions: AuctionExecutor,
        feed: AuctionFeed | None = None,
        store: StateStore,
        sink: EventSink,
        recorder: Recorder,
        clock: Clock,
        config: Config = _DEFAULT_CONFIG,
        concurrency: int = 32,
        metrics: object = None,
        quarantine_backoff_ms: int = QUARANTINE_BACKOFF_MS,
        record: str = "changes",
        owner: ShardOwner | None = None,
        renew_interval_ms: int | None = None,
    ) -> None:
        if not isinstance(config, Config):
            raise TypeError(f"Watcher config must be a liqcore.Config, was {config!r}")
        if type(concurrency) is not int or concurrency < 1:
            raise ValueError(f"Watcher concurrency must be an int ≥ 1, was {concurrency!r}")
        if record not in RECORD_MODES:
            raise ValueError(f"Watcher record must be one of {RECORD_MODES}, was {record!r}")
        if type(quarantine_backoff_ms) is not int or quarantine_backoff_ms < 0:
            raise ValueError(
                f"Watcher quarantine_backoff_ms must be an int ≥ 0, was {quarantine_backoff_ms!r}"
            )
        ports: dict[str, object] = {
            "portfolios": portfolios, "margin": margin, "quotes": quotes, "orders": orders,
            "gateway": gateway, "auctions": auctions, "store": store, "sink": sink,
            "recorder": recorder, "clock": clock,
        }  # fmt: skip
        if feed is not None:
            ports["feed"] = feed
        for keyword, port in ports.items():
            check_port(keyword, port)
        if owner is not None:
            if not isinstance(owner, ShardOwner):
                raise TypeError(f"Watcher owner must be a ShardOwner, was {owner!r}")
            if id(owner.store) != id(store):
                raise ValueError("Watcher owner must keep its leases in the watcher's store")
        if renew_interval_ms is None:
            renew_interval_ms = max(1, (owner.lease_ttl_ms if owner else 3) // 3)
        if type(renew_interval_ms) is not int or renew_interval_ms < 1:
            raise ValueError(
                f"Watcher renew_interval_ms must be an int ≥ 1, was {renew_interval_ms!r}"
            )
        # A shadow watcher observes every shard and holds no lease (it commits nothing).
        self._owner = None if not config.enabled else owner
        self._renew_interval_ms = renew_interval_ms
        self._ready: set[int] = set()  # held shards whose wallets are loaded and reconciled
        self._next_tick = 0
        self._feed_origin: Cursor | None = None
        self._rewind = False
        self._quarantine_backoff_ms = quarantine_backoff_ms
        self._record_mode = record
        self._batching = all(
            callable(getattr(port, method, None))
            for port, method in (
                (portfolios, "portfolios_of"),
                (margin, "margins"),
                (orders, "open_orders_many"),
            )
        )
        self._compact = record == "changes"
        self._active_total = 0
        self._portfolios = portfolios
        self._margin = margin
        self._quotes = quotes
        self._orders = orders
        self._feed = feed
        self._store = store
        self._recorder = recorder
        self._clock = clock
        self._config = config
        self._concurrency = concurrency
        self._metrics: NullMetrics = metrics_from(metrics)
        self._closed = ClosedContracts()
        self._interpreter = Interpreter(
            gateway=gateway,
            auctions=auctions,
            sink=sink,
            clock=clock,
            config=config,
            metrics=self._metrics,
        )
        self._shadow = not config.enabled
        self._started = False
        self._stored: dict[str, Stored] = {}
        self._cursor: Cursor | None = None
        self._cursor_stale = False
        self._shadow_applied: set[str] = set()
        # A shadow follows the live decisions of a store that keeps a followable log.
        self._follow = self._shadow and all(
            callable(getattr(store, name, None)) for name in ("log_position", "decisions_after")
        )
        self._log_position: int | None = None
        self._differences: collections.deque[ShadowDifference] = collections.deque(
            maxlen=SHADOW_DIFFERENCES_KEPT
        )
        self._compared = 0
        self._stale: dict[str, bool] = {}  # wallet → reconcile its unfinished after reload
        self._quarantined: dict[str, _Quarantine] = {}
        self._wakeups: dict[str, int] = {}
        self._active_orders: dict[str, int] = {}
        self._stuck: set[str] = set()  # wallets whose last decision raised a STUCK alert
        self._pruned_seen: dict[int, int] = {}  # id(store or recorder) → records pruned
        self._stop: asyncio.Event | None = None
        # Loop-bound resources, made afresh for each running loop.
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._start_lock = asyncio.Lock()
        self._drain_lock = asyncio.Lock()
        self._tick_lock = asyncio.Lock()
        self._semaphore = asyncio.Semaphore(concurrency)

    # ---------------------------------------------------------------- public

    @property
    def config(self) -> Config:
        """The configuration."""
        return self._config

    @property
    def shadow(self) -> bool:
        """Whether this watcher runs in shadow mode (``config.enabled`` is false)."""
        return self._shadow

    @property
    def shadow_compared(self) -> int:
        """How many live decisions this shadow watcher decided again (0 when not a shadow,
        or its store keeps no log it can follow)."""
        return self._compared

    @property
    def shadow_differences(self) -> tuple[ShadowDifference, ...]:
        """The latest live decisions this shadow decided otherwise, oldest first (at most
        :data:`SHADOW_DIFFERENCES_KEPT`)."""
        return tuple(self._differences)

    @property
    def states(self) -> Mapping[str, AccountState]:
        """The states the watcher holds, by wallet (in shadow mode: its own)."""
        return MappingProxyType({w: s.state for w, s in sorted(self._stored.items())})

    @property
    def quarantined(self) -> frozenset[str]:
        """Wallets not stepped until they are reloaded from the store (their outcomes could
        not be committed); see ``quarantine_backoff_ms``."""
        return frozenset(self._quarantined)

    @property
    def shards(self) -> frozenset[int]:
        """The shards this watcher steps (given an ``owner``): held, loaded and reconciled."""
        return frozenset(self._ready)

    @property
    def cursor(self) -> Cursor | None:
        """The feed cursor of the last item handled."""
        return self._cursor

    @property
    def wakeups(self) -> Mapping[str, int]:
        """``next_wakeup`` of each liquidating wallet, by wallet."""
        return MappingProxyType(dict(sorted(self._wakeups.items())))

    async def run_once(self) -> PollReport:
        """One poll of every wallet to check (SPEC §9, the poll)."""
        await self._ensure_started()
        started = time.perf_counter()
        tally = _Tally()
        try:
            if self._owner is not None and self._clock.now_ms() >= self._next_tick:
                await self.tick()
            tally.released = await self._release_quarantined()
            try:
                portfolios = await self._observe_call(self._portfolios.portfolios())
                states = {wallet: stored.state for wallet, stored in self._stored.items()}
                wallets = wallets_to_check(portfolios, states)
                if self._owner is not None:
                    wallets = [w for w in wallets if self._lease(w) is not None]
            except Exception as error:
                self._metrics.poll_skipped()
                _log.warning(
                    "poll skipped: listing portfolios failed: %r",
                    error,
                    extra=fields(phase=None),
                )
                return tally.report(len(self._quarantined))
            await self._step_wallets(wallets, tally)
            if self._follow:
                await self._compare_live()
            if self._compact:
                self._metrics.healthy_noops(tally.noops)
                await self._record(
                    Record(
                        kind=RecordKind.POLL,
                        wallet="",
                        now=self._clock.now_ms(),
                        executed=not self._shadow,
                        note=tally.summary(),
                    ),
                    committed=False,
                )
            self._count_pruned()
            return tally.report(len(self._quarantined))
        finally:
            self._metrics.poll_duration(time.perf_counter() - started)

    async def drain_feed(self) -> int:
        """Apply what the feed has now; returns how many events changed a state."""
        await self._ensure_started()
        if self._feed is None:
            return 0
        async with self._drain_lock:
            if self._rewind:
                # A shard was taken: read again from the cluster's origin (items already
                # applied are skipped by their event id), so none of its items is missed.
                self._rewind = False
                self._cursor = self._feed_origin
            if self._cursor_stale:
                try:
                    self._cursor = await self._store.cursor()
                except Exception as error:
                    _feed_log.warning("reading the feed cursor failed: %r", error, extra=fields())
                    return 0
                self._cursor_stale = False
            applied = 0
            iterator: AsyncIterator[FeedItem] = self._feed.events(self._cursor)
            try:
                async for item in iterator:
                    applied += await self._feed_item(item)
            except _Stop:
                pass
            except Exception as error:
                self._metrics.feed_item("failed")
                _feed_log.warning(
                    "reading the feed after cursor %r failed: %r",
                    self._cursor,
                    error,
                    extra=fields(cursor=self._cursor),
                )
            finally:
                aclose = getattr(iterator, "aclose", None)
                if aclose is not None:
                    await aclose()
            return applied

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every ``poll_interval_ms``, step liquidating wallets at their wake-ups and
        drain the feed, until ``stop`` is set; then finish the wallets in flight and close
        the store (a shadow watcher leaves the store, which is not its own, open)."""
        self._stop = stop
        ticker: asyncio.Task[None] | None = None
        try:
            await self._ensure_started()
            if self._owner is not None:
                ticker = asyncio.ensure_future(self._keep_leases(stop))
            next_poll = self._clock.now_ms()
            while not stop.is_set():
                now = self._clock.now_ms()
                if now >= next_poll:
                    next_poll = now + self._config.poll_interval_ms
                    await self.run_once()
                else:
                    due = sorted(w for w, at in self._wakeups.items() if at <= now)
                    for wallet in due:
                        del self._wakeups[wallet]  # re-armed by a successful step
                    if due:
                        await self._step_wallets(due, _Tally())
                if stop.is_set():
                    break
                await self.drain_feed()
                if stop.is_set():
                    break
                await self._sleep_until(min([next_poll, *self._wakeups.values()]), stop)
        finally:
            self._stop = None
            if ticker is not None:
                ticker.cancel()
                await asyncio.gather(ticker, return_exceptions=True)
                await self._leave()
            await self.close()

    async def close(self) -> None:
        """Close the store (a shadow watcher leaves the store, which is not its own, open);
        a failure is logged. ``async with watcher:`` starts the watcher (loads the store)
        on entry and closes it on exit."""
        if not self._shadow:
            try:
                await self._store.close()
            except Exception as error:
                _log.warning("closing the store failed: %r", error, extra=fields())

    async def __aenter__(self) -> Watcher:
        await self._ensure_started()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ---------------------------------------------------------------- loop and start-up

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is None or self._loop() is not loop:
            self._loop = weakref.ref(loop)
            self._locks = {}
            self._start_lock = asyncio.Lock()
            self._drain_lock = asyncio.Lock()
            self._tick_lock = asyncio.Lock()
            self._semaphore = asyncio.Semaphore(self._concurrency)

    def _lock(self, wallet: str) -> asyncio.Lock:
        lock = self._locks.get(wallet)
        if lock is None:
            lock = self._locks[wallet] = asyncio.Lock()
        return lock

    async def _ensure_started(self) -> None:
        self._bind()
        if self._started:
            return
        async with self._start_lock:
            if self._is_started():  # another caller started it while we waited
                return
            self._cursor = await self._store.cursor()
            self._feed_origin = self._cursor
            # A watcher of a cluster loads the wallets of a shard when it takes the shard.
            loaded = {} if self._owner is not None else await self._store.load()
            self._stored = dict(loaded)
            if not self._shadow:
                await self._complete_recorder(self._stored)
            await self._begin_recording()
            for wallet in sorted(self._stored):
                self._track(wallet)
                if self._stored[wallet].unfinished:
                    await self._reconcile(wallet, "restart")
            self._started = True
            _log.info(
                "started with %d stored wallets, feed cursor %r%s",
                len(self._stored),
                self._cursor,
                " (shadow mode)" if self._shadow else "",
                extra=fields(cursor=self._cursor),
            )

    def _is_started(self) -> bool:
        return self._started

    # ---------------------------------------------------------------- shards (a cluster)

    def _lease(self, wallet: str, *, ready: bool = True) -> Lease | None:
        """The lease to commit ``wallet`` under: ``None`` if its shard is not held (or, with
        ``ready``, not yet loaded and reconciled) or the lease ran out on our clock — an
        instance paused past its lease acts on nothing before its next tick."""
        owner = self._owner
        if owner is None:
            return None
        lease = owner.lease_of(wallet)
        if lease is None or (ready and lease.shard not in self._ready):
            return None
        if self._clock.now_ms() >= lease.expires:
            return None
        return lease

    def _kw(self, lease: Lease | None) -> dict[str, Any]:
        """The ``lease=`` of a commit: none for a single instance; a watcher of a cluster
        without the lease commits nothing (:class:`Fenced`, without asking the store)."""
        if self._owner is None:
            return {}
        if lease is None:
            raise Fenced("the shard is not held by this instance")
        return {"lease": lease}

    def _fenced(self, wallet: str, error: Fenced) -> None:
        """A commit of ``wallet`` was fenced: drop its shard without acting."""
        assert self._owner is not None
        self._metrics.fenced_commit()
        shard = shard_of(wallet, self._owner.shards)
        lease = self._owner.lease_of(wallet)
        self._owner.drop(shard)
        if lease is not None or shard in self._ready:
            self._forget_shard(shard)
            self._metrics.lease_lost()
            _log.warning(
                "shard %d lost (epoch %s): a commit of wallet %s was fenced (%s); nothing executed",
                shard,
                None if lease is None else lease.epoch,
                wallet,
                error,
                extra=fields(wallet=wallet, shard=shard),
            )
        self._metrics.owned_shards(len(self._ready))

    def _forget_shard(self, shard: int) -> None:
        """Stop stepping ``shard``: forget its wallets' states, wake-ups, quarantines."""
        assert self._owner is not None
        self._ready.discard(shard)
        shards = self._owner.shards
        for wallet in [w for w in self._stored if shard_of(w, shards) == shard]:
            del self._stored[wallet]
            self._track(wallet)
        for table in (self._quarantined, self._stale):
            for wallet in [w for w in table if shard_of(w, shards) == shard]:
                del table[wallet]
        self._stuck = {w for w in self._stuck if shard_of(w, shards) != shard}
        self._metrics.quarantined(len(self._quarantined))

    async def _quiesce(self, shard: int) -> None:
        """Before ``shard`` is handed over: stop starting work on it and wait for the work
        in flight on its wallets (their locks), then forget it."""
        assert self._owner is not None
        self._ready.discard(shard)
        shards = self._owner.shards
        for wallet, lock in list(self._locks.items()):
            if shard_of(wallet, shards) == shard:
                async with lock:
                    pass
        self._forget_shard(shard)

    async def tick(self) -> None:
        """Keep the leases (:meth:`ShardOwner.tick <liqshell.ownership.ShardOwner.tick>`),
        then take the shards newly held — their wallets loaded from the store and their
        unfinished commands reconciled exactly as at a restart — and forget the ones
        released or lost. :meth:`run` calls it every ``renew_interval_ms``; a poll calls
        it when it is due."""
        owner = self._owner
        if owner is None:
            return
        await self._ensure_started()
        async with self._tick_lock:
            now = self._clock.now_ms()
            self._next_tick = now + self._renew_interval_ms
            before = {shard: lease.epoch for shard, lease in owner.owned.items()}
            try:
                result = await owner.tick(now, before_release=self._quiesce)
            except Exception as error:
                result = None
                _log.warning("keeping the leases failed: %r", error, extra=fields())
            held = dict(owner.owned)
            for shard in sorted(self._ready - set(held)):
                self._forget_shard(shard)
            if result is not None:
                self._metrics.lease_renewed(len(result.renewed))
            for shard in sorted(set(before) - set(held)):
                released = result is not None and shard in result.released
                if not released:
                    self._metrics.lease_lost()
                (_log.info if released else _log.warning)(
                    "shard %d %s (epoch %d)",
                    shard,
                    "released (handed over)" if released else "lost (taken over)",
                    before[shard],
                    extra=fields(shard=shard, epoch=before[shard]),
                )
            taking = sorted(set(held) - self._ready)
            if taking:
                await self._take(taking, held)
            self._metrics.owned_shards(len(self._ready))

    async def _take(self, shards: list[int], held: Mapping[int, Lease]) -> None:
        """Load the wallets of ``shards`` from the store and reconcile them as a restart
        does; a shard whose load fails is taken at the next tick."""
        assert self._owner is not None
        count = self._owner.shards
        try:
            loaded = await self._store.load()
        except Exception as error:
            _log.warning("loading the shards %s failed: %r", shards, error, extra=fields())
            return
        wanted = set(shards)
        mine = {w: entry for w, entry in loaded.items() if shard_of(w, count) in wanted}
        for wallet, entry in mine.items():
            self._stored[wallet] = entry
            self._stale.pop(wallet, None)
            self._quarantined.pop(wallet, None)
        await self._complete_recorder(mine)
        for wallet in sorted(mine):
            self._track(wallet)
            if self._stored.get(wallet) is not None and self._stored[wallet].unfinished:
                async with self._lock(wallet):
                    await self._reconcile(wallet, "acquired")
        for shard in shards:
            lease = self._owner.owned.get(shard)
            if lease is None:  # fenced while reconciling
                continue
            self._ready.add(shard)
            _log.info(
                "shard %d acquired (epoch %d): %d wallets loaded, %d reconciled",
                shard,
                lease.epoch,
                sum(1 for w in mine if shard_of(w, count) == shard),
                sum(1 for w in mine if shard_of(w, count) == shard and mine[w].unfinished),
                extra=fields(shard=shard, epoch=lease.epoch),
            )
        self._rewind = True

    async def _keep_leases(self, stop: asyncio.Event) -> None:
        """Tick every ``renew_interval_ms`` until ``stop`` (beside the polls: a long poll
        must not let the leases run out)."""
        while not stop.is_set():
            if self._clock.now_ms() >= self._next_tick:
                await self.tick()
            await self._sleep_until(self._next_tick, stop)

    async def _leave(self) -> None:
        """A clean stop: hand every shard over at once (the others take them at their next
        tick rather than after the lease TTL)."""
        if self._owner is None:
            return
        try:
            await self._owner.leave()
        except Exception as error:
            _log.warning("leaving the cluster failed: %r", error, extra=fields())
        for shard in sorted(self._ready):
            self._forget_shard(shard)
        self._metrics.owned_shards(0)

    async def _begin_recording(self) -> None:
        """Give the recorder — and the store, whose log is a recording too, unless in shadow
        mode — this start's header (config, settings, start time), if they keep headers:
        the records of this run are then replayed with this config."""
        targets: list[object] = [self._recorder]
        if not self._shadow and id(self._store) != id(self._recorder):
            targets.append(self._store)
        begins = [getattr(target, "begin", None) for target in targets]
        if all(begin is None for begin in begins):
            return
        header = recording_header(
            self._config,
            watcher=WatcherSettings(
                concurrency=self._concurrency,
                quarantine_backoff_ms=self._quarantine_backoff_ms,
                shadow=self._shadow,
                record=self._record_mode,
            ),
            started=self._clock.now_ms(),
        )
        for begin in begins:
            if begin is None:
                continue
            try:
                await begin(header)
            except Exception as error:
                self._metrics.commit_failed("recorder")
                _log.warning("recording the header failed: %r", error, extra=fields())

    async def _complete_recorder(self, wallets: Iterable[str]) -> None:
        """Append to a separate recorder the records the store committed that it lacks (lost
        to a crash between a commit and its append), so its log is complete again."""
        if id(self._recorder) == id(self._store):
            return
        last_versions = getattr(self._recorder, "last_versions", None)
        if last_versions is None:
            return  # a recorder that cannot tell what it holds
        if not hasattr(self._store, "history"):
            _log.warning(
                "the store has no history(): the recorder cannot be completed after a crash",
                extra=fields(),
            )
            return
        try:
            held: Mapping[str, int] = await last_versions()
            appended = 0
            for wallet in sorted(wallets):
                have = held.get(wallet, 0)
                if have >= self._stored[wallet].version:
                    continue
                for record in await self._store.history(wallet, after_version=have):
                    await self._recorder.append(record)
                    appended += 1
        except Exception as error:
            self._metrics.commit_failed("recorder")
            _log.warning("completing the recorder failed: %r", error, extra=fields())
            return
        if appended:
            self._metrics.backfilled(appended)
            _log.warning(
                "appended %d committed records the recorder lacked (lost at a crash)",
                appended,
                extra=fields(),
            )

    async def _reconcile(self, wallet: str, note: str) -> None:
        """Reconcile a wallet's unfinished commands (at start-up, or after a reload).

        A ``StartAuction`` or ``StopAuction`` that is still the wallet's latest request (its
        request id is the one the stored state waits on, with no receipt yet, and at least a
        poll interval of its staleness window is left) is sent again with that id — the
        executor is idempotent per wallet — and its outcome folded in as after any send.
        Publishes are published again with their original key. Submits and cancels are
        reported, never replayed: the next step sees a fresh snapshot and supersedes them."""
        stored = self._stored[wallet]
        unfinished = stored.unfinished
        self._metrics.unfinished(len(unfinished))
        now = self._now(stored.state)
        state = stored.state
        events: list[Event] = []
        remaining: list[Unfinished] = []
        for entry in unfinished:
            command = entry.command
            resend = not self._shadow and (
                isinstance(command, PublishStateChange)
                or _still_requested(
                    stored.state,
                    command,
                    now,
                    self._config.full_escalation_timeout_ms,
                    self._config.poll_interval_ms,
                )
            )
            _log.warning(
                "wallet %s: %s found unfinished %s (version %d, index %d): %s",
                wallet,
                note,
                type(command).__name__,
                entry.version,
                entry.index,
                "sent again" if resend else "not replayed",
                extra=fields(
                    wallet=wallet,
                    phase=state_phase(stored.state),
                    request_id=command_request_id(command),
                    version=entry.version,
                    index=entry.index,
                ),
            )
            if not resend:
                if isinstance(command, PublishStateChange):
                    remaining.append(entry)  # shadow mode: published by nobody
                continue
            outcome = await self._interpreter.interpret(
                command, version=entry.version, index=entry.index, phase=state_phase(state)
            )
            for event in outcome.events:
                state = apply(state, event, now)
            events.extend(outcome.events)
            if outcome.unfinished:
                remaining.append(entry)
            elif isinstance(command, PublishStateChange):
                self._metrics.publish("republished")
            else:
                self._metrics.resent(type(command).__name__)
        record = Record(
            kind=RecordKind.RESTART,
            wallet=wallet,
            now=now,
            version=stored.version + 1,
            previous=stored.state,
            state=state,
            commands=tuple(entry.command for entry in unfinished),
            events=tuple(events),
            pending=tuple(remaining),
            executed=not self._shadow,
            note=note,
        )
        if self._shadow:
            await self._record(record, committed=False)
            return
        try:
            version = await self._store.commit(
                wallet,
                state,
                record,
                expected_version=stored.version,
                **self._kw(self._lease(wallet, ready=False)),
            )
        except Exception as error:
            if isinstance(error, Fenced):
                self._fenced(wallet, error)
                return
            if isinstance(error, Conflict):
                self._metrics.conflict()
            else:
                self._metrics.commit_failed(RecordKind.RESTART.value)
                _log.warning(
                    "wallet %s: committing the %s report failed: %r",
                    wallet,
                    note,
                    error,
                    extra=fields(wallet=wallet, phase=state_phase(stored.state)),
                )
            # The state is in doubt: reload it before the wallet is stepped again.
            self._stale[wallet] = False
            await self._record(attrs.evolve(record, version=0), committed=False)
            return
        self._stored[wallet] = Stored(state=state, version=version, unfinished=record.pending)
        self._counted_transition(stored.state, state)
        self._track(wallet)
        await self._record(record, committed=True)

    # ---------------------------------------------------------------- shadow comparison

    async def _compare_live(self) -> None:
        """Decide again, under this shadow's configuration, every live decision committed
        to the store since the last poll (from the log's end at the first poll): a
        difference is counted, logged and kept. The shadow's own decisions are made on its
        own observations and its own states, which part from the live ones once it decides
        otherwise (it executes nothing), so it is the live decision's recorded inputs that
        isolate what the configuration changes."""
        log: DecisionLog = self._store  # type: ignore[assignment]
        try:
            if self._log_position is None:
                self._log_position = await log.log_position()
                return
            while True:
                page = await log.decisions_after(self._log_position, limit=_SHADOW_PAGE)
                for position, record in page:
                    self._log_position = position
                    if record.executed:
                        self._compare_one(record)
                if len(page) < _SHADOW_PAGE:
                    return
        except Exception as error:
            _log.warning(
                "shadow: reading the live decisions from the store failed: %r",
                error,
                extra=fields(),
            )

    def _compare_one(self, record: Record) -> None:
        mismatch = redecide(record, self._config)
        self._compared += 1
        if mismatch is None:
            self._metrics.shadow_compared(None)
            return
        what = mismatch.field.split(".", 1)[0].split("[", 1)[0]
        self._metrics.shadow_compared(what if what in ("state", "commands") else "step")
        difference = ShadowDifference(
            wallet=record.wallet,
            version=record.version,
            now=record.now,
            what=mismatch.field,
            live=mismatch.recorded,
            shadow=mismatch.replayed,
            detail=mismatch.what,
        )
        self._differences.append(difference)
        _log.warning(
            "shadow: wallet %s version %d decided otherwise than live: %s",
            record.wallet,
            record.version,
            mismatch.what,
            extra=fields(
                wallet=record.wallet,
                phase=state_phase(record.previous),
                version=record.version,
            ),
        )

    async def _load_one(self, wallet: str) -> Stored | None:
        """The wallet's stored entry; a store without ``load_one`` is loaded whole."""
        if hasattr(self._store, "load_one"):
            return await self._store.load_one(wallet)
        return (await self._store.load()).get(wallet)

    async def _refresh(self, wallet: str) -> bool:
        """Reload a wallet whose stored version is in doubt (a conflict or a failed commit);
        false if the store cannot tell yet."""
        if wallet not in self._stale:
            return True
        try:
            entry = await self._load_one(wallet)
        except Exception as error:
            _log.warning(
                "wallet %s: reloading from the store failed: %r",
                wallet,
                error,
                extra=fields(wallet=wallet),
            )
            return False
        reconcile = self._stale.pop(wallet)
        if entry is None:
            self._stored.pop(wallet, None)
        else:
            self._stored[wallet] = entry
            if reconcile and entry.unfinished:
                await self._reconcile(wallet, "reload")
        self._track(wallet)
        return True

    async def _release_quarantined(self) -> int:
        """Reload from the store, and reconcile as a restart would, every quarantined wallet
        whose backoff has passed; returns how many came back."""
        if not self._quarantined:
            return 0
        now = self._clock.now_ms()
        due = sorted(
            wallet
            for wallet, held in self._quarantined.items()
            if now >= held.since_ms + self._quarantine_backoff_ms
        )
        released = 0
        for wallet in due:
            async with self._lock(wallet):
                if wallet in self._quarantined and await self._release(wallet, now):
                    released += 1
        return released

    async def _release(self, wallet: str, now: int) -> bool:
        """Reload a quarantined wallet from the store and reconcile it as a restart would
        (under its lock); false, and another backoff, if the store cannot tell yet."""
        try:
            entry = await self._load_one(wallet)
        except Exception as error:
            self._quarantined[wallet].since_ms = now  # wait another backoff
            _log.warning(
                "wallet %s: reloading the quarantined wallet failed: %r",
                wallet,
                error,
                extra=fields(wallet=wallet),
            )
            return False
        del self._quarantined[wallet]
        self._stale.pop(wallet, None)
        if entry is None:
            self._stored.pop(wallet, None)
        else:
            self._stored[wallet] = entry
            if entry.unfinished:
                await self._reconcile(wallet, "release")
        self._track(wallet)
        self._metrics.released()
        self._metrics.quarantined(len(self._quarantined))
        _log.warning(
            "wallet %s: released from quarantine, reloaded at version %s",
            wallet,
            None if entry is None else entry.version,
            extra=fields(wallet=wallet, phase=state_phase(None if entry is None else entry.state)),
        )
        return True

    # ---------------------------------------------------------------- the poll

    async def _step_wallets(self, wallets: list[str], tally: _Tally) -> None:
        """A fixed pool of ``concurrency`` workers over chunks of wallets (no task per
        wallet). With ports that observe in batches each chunk is observed with one call per
        port, then its wallets are decided one after another; otherwise a chunk is one
        wallet, observed on its own under its lock.

        A wallet observed with its chunk, not busy (its lock free), not quarantined and with
        nothing to reload is stepped at once, in the worker's loop, without awaiting
        anything: no other task can touch the wallet meanwhile (what its lock guarantees).
        A healthy no-op ends there, with no coroutine, lock or record made for it; a
        decision to commit takes the wallet's lock (free: nothing ran since the step)."""
        size = OBSERVE_CHUNK if self._batching else 1
        chunks = iter([wallets[i : i + size] for i in range(0, len(wallets), size)])
        stop = self._stop
        locks = self._locks
        quarantined = self._quarantined
        stale = self._stale

        async def worker() -> None:
            for chunk in chunks:  # one shared iterator: each chunk goes to one worker
                if stop is not None and stop.is_set():
                    return
                observed = await self._observe_chunk(chunk) if self._batching else None
                for wallet in chunk:
                    if stop is not None and stop.is_set():
                        return
                    try:
                        if observed is None:
                            await self._poll_wallet(wallet, tally)
                            continue
                        lock = locks.get(wallet)
                        if (
                            (lock is None or not lock.locked())
                            and wallet not in quarantined
                            and wallet not in stale
                        ):
                            stepped = self._step(wallet, tally, observed[wallet], False)
                            if stepped is not None:
                                await self._act_stepped(wallet, tally, stepped)
                        else:
                            await self._poll_wallet(wallet, tally, observed[wallet])
                    except Exception:
                        tally.skipped += 1
                        self._metrics.skipped("error")
                        _log.exception(
                            "wallet %s: unexpected error; skipped this poll",
                            wallet,
                            extra=fields(wallet=wallet),
                        )

        count = min(self._concurrency, -(-len(wallets) // size))
        await asyncio.gather(*(worker() for _ in range(count)))

    async def _act_stepped(self, wallet: str, tally: _Tally, stepped: _Stepped) -> None:
        """Act on a decision stepped at once from the chunk's observation (see
        :meth:`_step_wallets`), under the wallet's lock."""
        async with self._lock(wallet):  # free: taken at once, nothing ran since the step
            if await self._act(wallet, tally, stepped, again=False):
                # SPEC §9 step 7: the reprice's cancels all came back confirmed.
                await self._decide(wallet, tally, again=True)

    async def _poll_wallet(
        self, wallet: str, tally: _Tally, observed: _Observed | None = None
    ) -> None:
        """Decide a wallet under its lock (observed alone when ``observed`` is ``None``)."""
        async with self._lock(wallet):
            if self._owner is not None and self._lease(wallet) is None:
                return  # its shard went to another instance since the poll began
            if wallet in self._quarantined:
                tally.skipped += 1
                self._metrics.skipped("quarantined")
                return
            if not await self._refresh(wallet):
                tally.skipped += 1
                self._metrics.skipped("reload")
                return
            if await self._decide(wallet, tally, observed=observed):
                # SPEC §9 step 7: the reprice's cancels all came back confirmed.
                await self._decide(wallet, tally, again=True)

    async def _decide(
        self,
        wallet: str,
        tally: _Tally,
        *,
        again: bool = False,
        observed: _Observed | None = None,
    ) -> bool:
        """Observe, step, commit, execute, commit the outcomes. True when the wallet should
        be stepped again at once (its liquidation orders were cancelled to reprice);
        ``again`` marks that re-step (the poll report counts wallets, not steps).
        ``observed``: the wallet's observation made with its chunk's (batch) calls, or the
        error they raised for it; ``None`` observes it alone."""
        if observed is None:
            try:
                observed = await self._observe(wallet)
            except Exception as error:
                observed = error
        stepped = self._step(wallet, tally, observed, again=again)
        if stepped is None:
            return False
        return await self._act(wallet, tally, stepped, again=again)

    def _step(
        self, wallet: str, tally: _Tally, observed: _Observed, again: bool = False
    ) -> _Stepped | None:
        """Step the wallet on its observation (synchronously: nothing else runs meanwhile).
        ``None`` when that is all there is to do: the observation failed, the step failed
        (both counted as skipped) or the decision is a healthy no-op in compact mode (counted,
        neither committed nor recorded). The observation's answers are checked and its
        ``Health`` built here, just before the step (a chunk's are not all held at once)."""
        stored = self._stored.get(wallet)
        previous = None if stored is None else stored.state
        try:
            if isinstance(observed, BaseException):
                raise observed
            health, orders = _observation(wallet, *observed)
        except Exception as error:
            tally.skipped += 0 if again else 1
            self._metrics.skipped("observation")
            _log.warning(
                "wallet %s: skipped this poll, observation failed: %r",
                wallet,
                error,
                extra=fields(wallet=wallet, phase=state_phase(previous)),
            )
            return None
        if wallet in self._closed:  # a liquidation order of ours rests
            for underlying, contracts in self._closed.observe(health, orders).items():
                self._metrics.closed(underlying, contracts)
        now = self._now(previous)
        try:
            state, commands = step(previous, health, orders, now, self._config)
        except Exception:
            tally.skipped += 1
            self._metrics.skipped("step")
            _log.exception(
                "wallet %s: step failed; skipped this poll",
                wallet,
                extra=fields(wallet=wallet, phase=state_phase(previous)),
            )
            return None
        if commands or wallet in self._stuck:
            self._note_stuck(wallet, commands)
        if self._compact and not commands and _healthy_noop(stored, previous, state):
            # Nothing the next step depends on changed: no commit, no record of its own.
            tally.stepped += 0 if again else 1
            tally.noop(health)
            return None
        return _Stepped(
            stored=stored, health=health, orders=orders, now=now, state=state, commands=commands
        )

    async def _act(self, wallet: str, tally: _Tally, stepped: _Stepped, *, again: bool) -> bool:
        """Commit a decision (compare-and-set) before acting on it, execute its commands and
        commit their outcomes: :meth:`_decide` after the step. Under the wallet's lock."""
        stored, health, orders = stepped.stored, stepped.health, stepped.orders
        now, state, commands = stepped.now, stepped.state, stepped.commands
        previous = None if stored is None else stored.state
        expected = 0 if stored is None else stored.version
        version = expected + 1
        # Publishes of earlier decisions that were never confirmed stay unfinished (with
        # their original keys) until a restart publishes them again; the other unfinished
        # commands are superseded by this decision, which saw a fresh snapshot.
        carried = _unconfirmed_publishes(stored)
        pending = carried + tuple(
            Unfinished(version=version, index=index, command=command)
            for index, command in enumerate(commands)
            if not isinstance(command, Alert)
        )
        record = Record(
            kind=RecordKind.DECISION,
            wallet=wallet,
            now=now,
            version=version,
            previous=previous,
            health=health,
            orders=orders,
            commands=commands,
            state=state,
            pending=pending,
            executed=not self._shadow,
        )
        tally.commands += len(commands)
        if self._shadow:
            self._stored[wallet] = Stored(state=state, version=version)
            self._track(wallet)
            tally.stepped += 0 if again else 1
            self._metrics.decision(executed=False)
            await self._record(record, committed=False)
            return False

        lease = self._lease(wallet)
        if self._owner is not None and lease is None:
            return False  # the shard is no longer this instance's: act on nothing
        try:
            committed = await self._store.commit(
                wallet, state, record, expected_version=expected, **self._kw(lease)
            )
        except Fenced as error:
            tally.commands -= len(commands)
            self._fenced(wallet, error)
            return False
        except Conflict as error:
            tally.commands -= len(commands)
            tally.conflicts += 1
            self._metrics.conflict()
            self._stale[wallet] = False
            _log.warning(
                "wallet %s: another instance committed first (%s); nothing executed",
                wallet,
                error,
                extra=fields(wallet=wallet, phase=state_phase(previous), version=version),
            )
            return False
        except Exception as error:
            tally.commands -= len(commands)
            tally.skipped += 1
            self._metrics.commit_failed(RecordKind.DECISION.value)
            self._metrics.skipped("commit")
            self._stale[wallet] = True
            _log.warning(
                "wallet %s: committing the decision failed; nothing executed: %r",
                wallet,
                error,
                extra=fields(wallet=wallet, phase=state_phase(previous), version=version),
            )
            return False
        self._stored[wallet] = Stored(state=state, version=committed, unfinished=pending)
        self._counted_transition(previous, state)
        self._track(wallet)
        tally.stepped += 0 if again else 1
        self._metrics.decision(executed=True)
        await self._record(record, committed=True)
        if commands or _log.isEnabledFor(logging.DEBUG):
            (_log.info if commands else _log.debug)(
                "wallet %s: %s → %s at %d, %d commands",
                wallet,
                state_phase(previous),
                state_phase(state),
                now,
                len(commands),
                extra=fields(wallet=wallet, phase=state_phase(state), version=committed),
            )
        if not commands:
            return False

        execution = await self._interpreter.execute(
            commands, version=version, phase=state_phase(state)
        )
        self._count_business(health, execution)
        after = state
        for event in execution.events:
            after = apply(after, event, now)
        remaining = carried + execution.pending(version)
        if (after != state or remaining != pending) and not await self._commit_outcomes(
            wallet,
            decided=state,
            after=after,
            commands=commands,
            execution=execution,
            pending=remaining,
            now=now,
            lease=lease,
        ):
            return False
        return _reprice_cancels_confirmed(
            wallet,
            previous=previous,
            decided=state,
            after=after,
            orders=orders,
            execution=execution,
        )

    async def _commit_outcomes(
        self,
        wallet: str,
        *,
        decided: AccountState,
        after: AccountState,
        commands: tuple[Command, ...],
        execution: Execution,
        pending: tuple[Unfinished, ...],
        now: int,
        lease: Lease | None = None,
    ) -> bool:
        """Commit the state after the outcomes with the commands still unfinished; after
        :data:`OUTCOME_COMMIT_ATTEMPTS` failures (or a conflict) quarantine the wallet."""
        stored = self._stored[wallet]
        record = Record(
            kind=RecordKind.OUTCOMES,
            wallet=wallet,
            now=now,
            version=stored.version + 1,
            previous=decided,
            commands=commands,
            state=after,
            events=execution.events,
            pending=pending,
            note=" ".join(outcome.status.value for outcome in execution.outcomes),
            answers=answers_of(execution),
        )
        failure: BaseException | None = None
        for _attempt in range(OUTCOME_COMMIT_ATTEMPTS):
            try:
                version = await self._store.commit(
                    wallet, after, record, expected_version=stored.version, **self._kw(lease)
                )
            except Fenced as error:
                # Taken over: the new owner reconciles the unfinished commands from the store.
                self._fenced(wallet, error)
                return False
            except Conflict as error:
                # The store is ahead of us: the state is unknown — unless an earlier attempt
                # landed and only its answer was lost (the store then holds this very commit).
                if failure is None or not await self._landed(
                    wallet, stored.version + 1, after, pending
                ):
                    failure = error
                    self._metrics.conflict()
                    break
                version = stored.version + 1
            except Exception as error:
                failure = error
                self._metrics.commit_failed(RecordKind.OUTCOMES.value)
                continue
            self._stored[wallet] = Stored(state=after, version=version, unfinished=pending)
            self._counted_transition(decided, after)
            self._track(wallet)
            await self._record(record, committed=True)
            return True
        self._quarantined[wallet] = _Quarantine(reason=repr(failure), since_ms=self._clock.now_ms())
        self._wakeups.pop(wallet, None)
        self._metrics.quarantined(len(self._quarantined))
        await self._record(
            attrs.evolve(record, version=0, note=f"quarantined: {failure!r}"), committed=False
        )
        _log.error(
            "wallet %s: committing the outcomes failed (%r); quarantined: not stepped until "
            "it is reloaded from the store",
            wallet,
            failure,
            extra=fields(wallet=wallet, phase=state_phase(after), version=stored.version),
        )
        return False

    async def _landed(
        self, wallet: str, version: int, state: AccountState, pending: tuple[Unfinished, ...]
    ) -> bool:
        """Whether the store holds exactly ``state`` with ``pending`` at ``version``."""
        try:
            entry = await self._load_one(wallet)
        except Exception:
            return False
        return (
            entry is not None
            and entry.version == version
            and entry.state == state
            and entry.unfinished == pending
        )

    async def _observe(self, wallet: str) -> _Answers:
        """The wallet's answers, observed alone (checked and assembled by :meth:`_step`)."""
        portfolio = _checked_portfolio(
            wallet, await self._observe_call(self._portfolios.portfolio(wallet))
        )
        report = await self._observe_call(self._margin.margin(wallet, portfolio))
        symbols = sorted(portfolio.positions) if portfolio is not None else []
        quotes = await self._observe_call(self._quotes.quotes(symbols)) if symbols else {}
        orders = await self._observe_call(self._orders.open_orders(wallet))
        return portfolio, report, quotes, orders

    async def _observe_chunk(self, chunk: list[str]) -> dict[str, _Observed]:
        """Observe ``chunk`` with one call per port and one timeout per call (ports with
        ``portfolios_of``, ``margins`` and ``open_orders_many``). A wallet an answer leaves
        out, or whose answer is malformed, fails alone; a call that fails fails the chunk.
        Each wallet's answers are checked and its ``Health`` built when it is stepped."""
        quarantined = self._quarantined
        wanted = [w for w in chunk if w not in quarantined] if quarantined else chunk
        result: dict[str, _Observed] = dict.fromkeys(
            chunk, LookupError("quarantined: not observed")
        )
        try:
            listed = await self._observe_call(self._portfolios.portfolios_of(wanted))  # type: ignore[attr-defined]
            portfolios: dict[str, Portfolio | None] = {}
            for wallet in wanted:
                portfolio = listed.get(wallet, _MISSING)
                if portfolio is _MISSING:
                    result[wallet] = LookupError(f"no portfolio answer for {wallet!r}")
                    continue
                try:
                    portfolios[wallet] = _checked_portfolio(wallet, portfolio)
                except InvalidInput as error:
                    result[wallet] = error
            reports = await self._observe_call(self._margin.margins(portfolios))  # type: ignore[attr-defined]
            orders = await self._observe_call(self._orders.open_orders_many(list(portfolios)))  # type: ignore[attr-defined]
        except Exception as error:
            for wallet in wanted:
                result[wallet] = error
            return result
        symbols = sorted({s for p in portfolios.values() if p is not None for s in p.positions})
        quotes: Mapping[str, Quote] = {}
        try:
            quotes = await self._observe_call(self._quotes.quotes(symbols)) if symbols else {}
        except Exception:
            # One bad symbol must not blind the chunk: ask again wallet by wallet.
            for wallet, portfolio in list(portfolios.items()):
                if portfolio is None or not portfolio.positions:
                    continue
                try:
                    await self._observe_call(self._quotes.quotes(sorted(portfolio.positions)))
                except Exception as error:
                    result[wallet] = error
                    del portfolios[wallet]
            symbols = sorted({s for p in portfolios.values() if p is not None for s in p.positions})
            try:
                quotes = await self._observe_call(self._quotes.quotes(symbols)) if symbols else {}
            except Exception as error:
                for wallet in portfolios:
                    result[wallet] = error
                return result
        for wallet, portfolio in portfolios.items():
            report = reports.get(wallet, _MISSING)
            open_orders = orders.get(wallet, _MISSING)
            if report is _MISSING:
                result[wallet] = LookupError(f"no margin answer for {wallet!r}")
            elif open_orders is _MISSING:
                result[wallet] = LookupError(f"no open orders answer for {wallet!r}")
            else:
                result[wallet] = (portfolio, report, quotes, open_orders)
        return result

    async def _observe_call(self, awaitable: Awaitable[T]) -> T:
        return await self._clock.wait_for(awaitable, self._config.engine_response_timeout_ms)

    def _now(self, previous: AccountState | None) -> int:
        now = self._clock.now_ms()
        return now if previous is None else max(now, previous.updated_at + 1)

    # ---------------------------------------------------------------- the feed

    async def _feed_item(self, item: FeedItem) -> int:
        """Handle one item; 1 if it changed a state. Raises :class:`_Stop` when the item
        could not be committed (the cursor stays before it)."""
        if self._owner is not None:
            # A watcher of a cluster handles the items of its shards only (the owner of the
            # others reads them too) and keeps its feed position to itself.
            if self._lease(item.wallet) is None:
                self._cursor = item.cursor
                self._metrics.feed_item("not_owned")
                return 0
            if await self._already_applied(item.event_id):
                self._cursor = item.cursor
                self._metrics.feed_item("duplicate")
                return 0
        if await self._already_applied(item.event_id):
            await self._skip_item(item, "duplicate", None)
            return 0
        wallet = item.wallet
        async with self._lock(wallet):  # serialized with the wallet's polls
            if self._owner is not None and self._lease(wallet) is None:
                self._cursor = item.cursor  # handed over meanwhile: the new owner reads it
                return 0
            if wallet not in self._stored and wallet not in self._stale:
                await self._skip_item(item, "unknown_wallet", None)
                return 0
            # The feed is in order, so a quarantined wallet's item holds up every other
            # wallet's chain events: reload it now rather than after its backoff.
            if wallet in self._quarantined and not await self._release(
                wallet, self._clock.now_ms()
            ):
                self._metrics.feed_item("blocked")
                _feed_log.error(
                    "wallet %s is quarantined: feed item %s waits for its reload",
                    wallet,
                    item.event_id,
                    extra=fields(wallet=wallet, event_id=item.event_id, cursor=item.cursor),
                )
                raise _Stop
            if not await self._refresh(wallet):
                raise _Stop
            stored = self._stored.get(wallet)
            if stored is None:
                await self._skip_item(item, "unknown_wallet", None)
                return 0
            now = self._now(stored.state)
            try:
                new = apply(stored.state, item.event, now)
            except Exception as error:
                _feed_log.warning(
                    "wallet %s: feed item %s is invalid: %r",
                    wallet,
                    item.event_id,
                    error,
                    extra=fields(wallet=wallet, event_id=item.event_id, cursor=item.cursor),
                )
                await self._skip_item(item, "invalid", stored.state)
                return 0
            if new == stored.state:
                await self._skip_item(item, "unchanged", stored.state)
                return 0
            await self._apply_item(item, stored, new, now)
            return 1

    async def _apply_item(
        self, item: FeedItem, stored: Stored, new: AccountState, now: int
    ) -> None:
        wallet = item.wallet
        version = stored.version + 1
        # The transition's publish (SPEC §9, issue 9): committed as unfinished with the
        # feed item, published after the commit with the key (wallet, version, 0), and
        # dropped from the unfinished commands once confirmed — as step's publishes are.
        publish = state_change(stored.state, new, now)
        commands: tuple[Command, ...] = () if publish is None else (publish,)
        pending = stored.unfinished + tuple(
            Unfinished(version=version, index=index, command=command)
            for index, command in enumerate(commands)
        )
        record = Record(
            kind=RecordKind.FEED,
            wallet=wallet,
            now=now,
            version=version,
            previous=stored.state,
            commands=commands,
            state=new,
            events=(item.event,),
            pending=pending,
            event_id=item.event_id,
            cursor=item.cursor,
            executed=not self._shadow,
            note="applied",
        )
        lease = self._lease(wallet)
        if self._shadow:
            self._stored[wallet] = Stored(state=new, version=version, unfinished=stored.unfinished)
            self._shadow_applied.add(item.event_id)
            self._cursor = item.cursor
            await self._record(record, committed=False)
        else:
            try:
                committed = await self._store.commit(
                    wallet,
                    new,
                    record,
                    expected_version=stored.version,
                    cursor=item.cursor if self._owner is None else None,
                    **self._kw(lease),
                )
            except Fenced as error:
                self._fenced(wallet, error)
                self._cursor = item.cursor  # the shard's new owner applies it
                return
            except Exception as error:
                conflict = isinstance(error, Conflict)
                if conflict:
                    self._metrics.conflict()
                else:
                    self._metrics.commit_failed(RecordKind.FEED.value)
                self._stale[wallet] = False
                self._cursor_stale = self._owner is None
                _feed_log.warning(
                    "wallet %s: committing feed item %s failed (retried from the cursor): %r",
                    wallet,
                    item.event_id,
                    error,
                    extra=fields(wallet=wallet, event_id=item.event_id, cursor=item.cursor),
                )
                raise _Stop from error
            self._stored[wallet] = Stored(state=new, version=committed, unfinished=pending)
            self._cursor = item.cursor
            await self._record(record, committed=True)
        self._metrics.feed_item("applied")
        self._metrics.auction_event(_event_kind(item.event))
        self._counted_transition(stored.state, new)
        self._track(wallet)
        _feed_log.info(
            "wallet %s: %s applied: %s → %s",
            wallet,
            type(item.event).__name__,
            state_phase(stored.state),
            state_phase(new),
            extra=fields(
                wallet=wallet, phase=state_phase(new), event_id=item.event_id, cursor=item.cursor
            ),
        )
        if publish is not None and not self._shadow:
            await self._publish_applied(
                wallet, publish, version=version, decided=new, now=now, lease=lease
            )

    async def _publish_applied(
        self,
        wallet: str,
        publish: PublishStateChange,
        *,
        version: int,
        decided: AccountState,
        now: int,
        lease: Lease | None = None,
    ) -> None:
        """Publish a feed transition committed as ``version``; once confirmed, commit the
        unfinished commands without it (a failed publish stays unfinished and is published
        again after a restart, like any publish)."""
        outcome = await self._interpreter.interpret(publish, version=version, index=0)
        if outcome.unfinished:
            return
        stored = self._stored[wallet]
        await self._commit_outcomes(
            wallet,
            decided=decided,
            after=decided,
            commands=(publish,),
            execution=Execution(outcomes=(outcome,)),
            pending=tuple(
                entry for entry in stored.unfinished if (entry.version, entry.index) != (version, 0)
            ),
            now=now,
            lease=lease,
        )

    async def _skip_item(self, item: FeedItem, result: str, state: AccountState | None) -> None:
        """Record an item that changes no state and move the cursor past it."""
        record = Record(
            kind=RecordKind.FEED,
            wallet=item.wallet,
            now=self._clock.now_ms(),
            previous=state,
            state=state,
            events=(item.event,),
            event_id=item.event_id,
            cursor=item.cursor,
            executed=not self._shadow,
            note=result,
        )
        if self._shadow:
            self._shadow_applied.add(item.event_id)
            self._cursor = item.cursor
            await self._record(record, committed=False)
        else:
            try:
                if self._owner is None:
                    await self._store.commit_cursor(item.cursor, record)
                else:
                    lease = self._lease(item.wallet)
                    if lease is None:
                        raise Fenced(f"shard of {item.wallet!r} no longer held")
                    await self._store.commit_cursor(item.cursor, record, lease=lease)  # type: ignore[call-arg]
            except Fenced as error:
                self._fenced(item.wallet, error)
                self._cursor = item.cursor
                return
            except Exception as error:
                self._metrics.commit_failed("cursor")
                self._cursor_stale = self._owner is None
                _feed_log.warning(
                    "moving the feed cursor past %r failed (retried): %r",
                    item.cursor,
                    error,
                    extra=fields(wallet=item.wallet, event_id=item.event_id, cursor=item.cursor),
                )
                raise _Stop from error
            self._cursor = item.cursor
            await self._record(record, committed=True)
        self._metrics.feed_item(result)
        log = _feed_log.info if result == "duplicate" else _feed_log.warning
        log(
            "wallet %s: feed item %s (%s) skipped: %s",
            item.wallet,
            item.event_id,
            type(item.event).__name__,
            result.replace("_", " "),
            extra=fields(
                wallet=item.wallet,
                phase=state_phase(state),
                event_id=item.event_id,
                cursor=item.cursor,
            ),
        )

    async def _already_applied(self, event_id: str) -> bool:
        if self._shadow:
            return event_id in self._shadow_applied
        return await self._store.applied(event_id)

    # ---------------------------------------------------------------- bookkeeping

    async def _record(self, record: Record, *, committed: bool) -> None:
        """Append ``record`` to the recorder unless the store (being the recorder too)
        already holds it."""
        if committed and id(self._recorder) == id(self._store):
            return
        try:
            await self._recorder.append(record)
        except Exception as error:
            self._metrics.commit_failed("recorder")
            _log.warning(
                "wallet %s: appending a %s record failed: %r",
                record.wallet,
                record.kind.value,
                error,
                extra=fields(wallet=record.wallet),
            )

    def _count_pruned(self) -> None:
        """Count what the store's (and a separate recorder's) retention removed since the
        last poll (``liqshell_pruned_records_total``)."""
        for target in {id(self._store): self._store, id(self._recorder): self._recorder}.values():
            total = getattr(target, "pruned_total", None)
            records = getattr(total, "records", None)
            if type(records) is not int:
                continue
            seen = self._pruned_seen.get(id(target), 0)
            if records > seen:
                self._metrics.pruned(records - seen)
                self._pruned_seen[id(target)] = records

    def _track(self, wallet: str) -> None:
        """Refresh the wallet's wake-up and its count of active liquidation orders."""
        stored = self._stored.get(wallet)
        wakeup = None if stored is None else next_wakeup(stored.state, self._config)
        if wakeup is None or wallet in self._quarantined:
            self._wakeups.pop(wallet, None)
        else:
            self._wakeups[wallet] = wakeup
        phase = None if stored is None else stored.state.phase
        count = len(phase.active_order_client_ids) if isinstance(phase, PreLiquidation) else 0
        before = self._active_orders.pop(wallet, 0)
        if count:
            self._active_orders[wallet] = count
        if count != before:
            # A running total: summing every wallet's count per call made a poll quadratic.
            self._active_total += count - before
            self._metrics.active_orders(self._active_total)

    def _count_business(self, health: Health, execution: Execution) -> None:
        """Contracts and bonus offered by acked orders; orders tracked for contracts closed
        (a cancel sent, whatever its outcome, marks its order as not filled)."""
        for outcome in execution.outcomes:
            command = outcome.command
            if isinstance(command, CancelOrder):
                self._closed.cancelled(command)
            elif (
                isinstance(command, SubmitOrder)
                and outcome.answer is not None
                and outcome.answer.status is AnswerStatus.ACKED
            ):
                self._closed.placed(command, health)
                self._metrics.offered(
                    underlying_label(command.symbol),
                    command.size,
                    bonus_offered(command, health, self._config.reference_band_bps),
                )

    def _note_stuck(self, wallet: str, commands: tuple[Command, ...]) -> None:
        """Keep the count of wallets whose last decision found them overstaying a phase."""
        if any(isinstance(c, Alert) and c.code is AlertCode.STUCK for c in commands):
            self._stuck.add(wallet)
        else:
            self._stuck.discard(wallet)
        self._metrics.stuck(len(self._stuck))

    def _counted_transition(self, previous: AccountState | None, new: AccountState) -> None:
        was = previous is not None and isinstance(previous.phase, PreLiquidation)
        now = isinstance(new.phase, PreLiquidation)
        if now and not was:
            self._metrics.pre_liquidation_entry()
        elif was and not now:
            self._metrics.pre_liquidation_exit()

    async def _sleep_until(self, instant: int, stop: asyncio.Event) -> None:
        sleeper = asyncio.ensure_future(self._clock.sleep_until(instant))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((sleeper, stopper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, stopper):
                task.cancel()
            await asyncio.wait((sleeper, stopper))


def _reprice_cancels_confirmed(
    wallet: str,
    *,
    previous: AccountState | None,
    decided: AccountState,
    after: AccountState,
    orders: tuple[OpenOrder, ...],
    execution: Execution,
) -> bool:
    """Whether the decision cancelled liquidation orders in order to reprice (or to
    recover) and every cancel came back confirmed: SPEC §9 step 7."""
    if not isinstance(decided.phase, PreLiquidation) or not isinstance(after.phase, PreLiquidation):
        return False
    if decided.phase.pending_full_request_id is not None:
        return False
    commands = [outcome.command for outcome in execution.outcomes]
    if any(isinstance(command, SubmitOrder | StartAuction) for command in commands):
        return False
    cancels = [o for o in execution.outcomes if isinstance(o.command, CancelOrder)]
    if not cancels or any(o.status is not OutcomeStatus.CONFIRMED for o in cancels):
        return False
    tracked: tuple[str, ...] = ()
    if previous is not None and isinstance(previous.phase, PreLiquidation):
        tracked = previous.phase.active_order_client_ids
    by_id = {order.order_id: order for order in orders}
    return any(
        (order := by_id.get(o.command.order_id)) is not None
        and is_liquidation_order(order, wallet=wallet, tracked=tracked)
        for o in cancels
        if isinstance(o.command, CancelOrder)
    )


def _still_requested(
    state: AccountState, command: Command, now: int, timeout_ms: int, margin_ms: int
) -> bool:
    """Whether ``command`` is an auction request the stored ``state`` still waits on at
    ``now``: the ``StartAuction`` of a pre-liquidation pending full request with no receipt
    yet, or the ``StopAuction`` of the running auction's stop request — with at least
    ``margin_ms`` (one poll interval) of its window left (``now + margin_ms`` at most
    ``timeout_ms`` after it was made). Any other is the next step's to decide: it requests
    anew (a start, or a stop of a recovered account) with a fresh request time, or drops it
    (a stop of an account liquidatable again). Sent now, a stale request's receipt would
    confirm a request already past its limit (``STUCK`` at once, DST seed 6935) or stop the
    auction of an account that needs it; one sent in the last poll interval of its window
    goes stale before the chain can answer it (the next step, even 1 ms later, reports it
    ``STUCK``: DST seed 5165), while the next step's fresh request gets a whole window."""
    phase = state.phase
    answer_by = now + margin_ms  # the chain needs a poll to answer
    match command:
        case StartAuction():
            return (
                isinstance(phase, PreLiquidation)
                and phase.pending_full_request_id == command.request_id
                and phase.pending_full_auction_id is None
                and phase.pending_full_requested_at is not None
                and answer_by <= phase.pending_full_requested_at + timeout_ms
            )
        case StopAuction():
            return (
                isinstance(phase, InLiquidation)
                and phase.stop_request_id == command.request_id
                and phase.stop_requested_at is not None
                and answer_by <= phase.stop_requested_at + timeout_ms
            )
        case _:
            return False


def _event_kind(event: Event) -> str:
    match event:
        case AuctionStarted():
            return "started"
        case AuctionStopped():
            return "stopped"
        case AuctionSettled():
            return "settled"
        case AccountReset():
            return "reset"
        case _:
            return "other"


def _unconfirmed_publishes(stored: Stored | None) -> tuple[Unfinished, ...]:
    """The stored unfinished publishes: they must survive later decisions until published."""
    if stored is None:
        return ()
    return tuple(
        entry for entry in stored.unfinished if isinstance(entry.command, PublishStateChange)
    )


_Answers = tuple[Portfolio | None, object, Mapping[str, Quote], Iterable[object]]
"""A wallet's answers as the ports gave them: its portfolio (checked), margin report, the
quotes (of its symbols, or of its chunk's) and open orders; :func:`_observation` checks the
rest and builds the ``Health``."""

_Observed = _Answers | BaseException
"""A wallet's answers, or the error that left it out."""

_MISSING: Any = object()
"""An answer a batch call left out."""


def _healthy_noop(stored: Stored | None, previous: AccountState | None, new: AccountState) -> bool:
    """Whether a decision without commands changed nothing the next step depends on:
    healthy before (or untracked) and after, the same margin mode and last closed auction,
    nothing unfinished. The healthy step reads only those of the previous state (its
    figures and ``updated_at`` are the observation's), so stepping from the older state
    decides exactly the same."""
    if type(new.phase) is not Healthy or (stored is not None and stored.unfinished):
        return False
    return previous is None or (
        type(previous.phase) is Healthy
        and previous.margin_mode is new.margin_mode
        and previous.last_closed_auction_id == new.last_closed_auction_id
    )


def _checked_portfolio(wallet: str, portfolio: object) -> Portfolio | None:
    if portfolio is not None and not isinstance(portfolio, Portfolio):
        raise InvalidInput(f"portfolio of {wallet!r} is not a Portfolio: {portfolio!r}")
    return portfolio


def _observation(
    wallet: str,
    portfolio: Portfolio | None,
    report: object,
    quotes: Mapping[str, Quote],
    open_orders: Iterable[object],
) -> tuple[Health, tuple[OpenOrder, ...]]:
    """The wallet's ``Health`` (its quotes picked from ``quotes``) and open orders, checked."""
    if not isinstance(report, MarginReport):
        raise InvalidInput(f"margin report of {wallet!r} is not a MarginReport: {report!r}")
    orders: list[OpenOrder] = []
    for order in open_orders:
        if not isinstance(order, OpenOrder):
            raise InvalidInput(f"open orders of {wallet!r} hold a non-OpenOrder: {order!r}")
        orders.append(order)
    wanted: dict[str, Quote] = (
        {}
        if portfolio is None
        else {s: quotes[s] for s in sorted(portfolio.positions) if s in quotes}
    )
    health = Health(
        wallet=wallet,
        margin_mode=report.margin_mode,
        equity=report.equity,
        mm_required=report.mm_required,
        is_liquidatable=report.is_liquidatable,
        portfolio=portfolio,
        # A read-only view of a dict made here and kept nowhere else: Health takes it as
        # it is (a plain dict would be copied first).
        quotes=MappingProxyType(wanted),
    )
    return health, tuple(orders)
