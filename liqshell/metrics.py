"""Prometheus metrics of the shell, created on a registry the caller passes in.

``Metrics(registry)`` registers every metric of SPEC §9 "Operation" (plus a few the shell
needs to be observable: conflicts, commit failures, feed items, publishes, unfinished
commands), the ``build_info`` gauge and the business counters on that registry — never the
global one. :class:`NullMetrics` has the same methods and records nothing; the watcher uses
it when no registry is given or ``prometheus_client`` is not installed, so the shell works
without it. :data:`METRIC_NAMES` lists every name exported (the docs list exactly these).

Business counters, by underlying: ``contracts_offered`` (sizes of acked liquidation
orders), ``bonus_offered`` (their size × (limit price − reference price) in the quote
currency: :func:`bonus_offered`) and ``contracts_closed``, a lower bound kept by
:class:`ClosedContracts`.
"""

from __future__ import annotations

import platform
import weakref
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING

import attrs

from liqcore import (
    CancelOrder,
    Health,
    InvalidSymbol,
    OpenOrder,
    PlanningError,
    SubmitOrder,
    __version__,
)
from liqcore.instruments import underlying_of
from liqcore.planning import reference_price
from liqshell.logs import get_logger

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

HAVE_PROMETHEUS: bool
try:
    import prometheus_client
except ImportError:  # pragma: no cover - the `shell` extra is not installed
    HAVE_PROMETHEUS = False
else:
    HAVE_PROMETHEUS = True

__all__ = [
    "HAVE_PROMETHEUS",
    "METRIC_NAMES",
    "ClosedContracts",
    "Metrics",
    "NullMetrics",
    "bonus_offered",
    "metrics_from",
    "underlying_label",
]

_log = get_logger("metrics")

POLL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class NullMetrics:
    """Records nothing; the interface the watcher and the interpreter count through."""

    def pre_liquidation_entry(self) -> None:
        """An account entered pre-liquidation."""

    def pre_liquidation_exit(self) -> None:
        """An account left pre-liquidation (recovered, auctioned or settled)."""

    def order(self, outcome: str) -> None:
        """A submit answered: ``acked``, ``rejected``, ``failed`` (not sent) or ``unknown``."""

    def cancel(self, outcome: str) -> None:
        """A cancel answered: ``canceled``, ``benign`` (``GONE`` or a benign rejection),
        ``rejected``, ``failed`` or ``unknown``."""

    def auction_request(self, outcome: str) -> None:
        """A start-auction answered: ``receipt``, ``failed`` or ``unknown``."""

    def stop_request(self, outcome: str) -> None:
        """A stop-auction answered: ``confirmed``, ``failed`` or ``unknown``."""

    def auction_event(self, kind: str) -> None:
        """A chain event changed a state: ``started``, ``stopped``, ``settled`` or ``reset``."""

    def alert(self, code: str) -> None:
        """``step`` raised an ``Alert`` with ``code``."""

    def publish(self, outcome: str) -> None:
        """A state change publish: ``published``, ``failed`` or ``republished``."""

    def skipped(self, reason: str) -> None:
        """A wallet was skipped this poll for ``reason``."""

    def poll_skipped(self) -> None:
        """A whole poll was skipped (the portfolio listing failed)."""

    def decision(self, *, executed: bool) -> None:
        """A decision was committed (``executed``) or recorded in shadow mode."""

    def healthy_noops(self, count: int) -> None:
        """``count`` healthy no-op decisions of one poll, neither committed nor recorded one
        by one (``record = "changes"``; counted in bulk, once a poll)."""

    def conflict(self) -> None:
        """A compare-and-set commit lost to another instance."""

    def commit_failed(self, kind: str) -> None:
        """A commit of a record of ``kind`` failed."""

    def feed_item(self, result: str) -> None:
        """A feed item by result: ``applied``, ``unchanged``, ``duplicate``, ``unknown_wallet``."""

    def feed_refused(self, reason: str) -> None:
        """A chain-feed message not taken: ``dropped`` (the buffer was full), ``rejected``
        (the verify hook refused it) or ``skipped`` (too large, unreadable, an over-long id)."""

    def unfinished(self, count: int) -> None:
        """``count`` unfinished commands were reported at start-up."""

    def quarantined(self, count: int) -> None:
        """``count`` wallets are quarantined (until reloaded from the store)."""

    def released(self) -> None:
        """A quarantined wallet was reloaded from the store and is stepped again."""

    def resent(self, command: str) -> None:
        """An unfinished ``StartAuction`` / ``StopAuction`` was sent again at a restart."""

    def pruned(self, count: int) -> None:
        """Records the store's retention removed from its log."""

    def backfilled(self, count: int) -> None:
        """``count`` committed records were appended to a recorder that lacked them."""

    def active_orders(self, count: int) -> None:
        """``count`` liquidation orders are tracked across all wallets."""

    def stuck(self, count: int) -> None:
        """``count`` wallets were found overstaying a phase by their last decision."""

    def owned_shards(self, count: int) -> None:
        """This instance now steps ``count`` shards (a cluster)."""

    def lease_renewed(self, count: int) -> None:
        """``count`` leases of shards were renewed."""

    def lease_lost(self) -> None:
        """A held shard was taken by another instance (a fenced renewal or commit)."""

    def fenced_commit(self) -> None:
        """A commit was refused because its lease was stale: nothing was executed."""

    def shadow_compared(self, differs: str | None) -> None:
        """A shadow re-decided a live decision recorded in the store under its own
        configuration; ``differs``: ``"state"``, ``"commands"`` or ``"step"`` where it
        decided otherwise, ``None`` when it decided the same."""

    def poll_duration(self, seconds: float) -> None:
        """One poll took ``seconds``."""

    def offered(self, underlying: str, contracts: Decimal, bonus: Decimal) -> None:
        """An acked liquidation order offered ``contracts`` with ``bonus`` (quote currency)."""

    def closed(self, underlying: str, contracts: Decimal) -> None:
        """``contracts`` of ``underlying`` were seen closed by liquidation orders."""


class Metrics(NullMetrics):
    """The shell's metrics on ``registry`` (names prefixed with ``namespace``)."""

    def __init__(self, registry: CollectorRegistry, *, namespace: str = "liqshell") -> None:
        if not HAVE_PROMETHEUS:  # pragma: no cover - the `shell` extra is not installed
            raise RuntimeError("liqshell.metrics.Metrics needs prometheus_client (extra 'shell')")
        pc = prometheus_client

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> pc.Counter:
            return pc.Counter(name, doc, labels, namespace=namespace, registry=registry)

        def gauge(name: str, doc: str) -> pc.Gauge:
            return pc.Gauge(name, doc, namespace=namespace, registry=registry)

        self.registry = registry
        self.pre_liquidation_entries = counter(
            "pre_liquidation_entries", "Accounts that entered pre-liquidation"
        )
        self.pre_liquidation_exits = counter(
            "pre_liquidation_exits", "Accounts that left pre-liquidation"
        )
        self.orders = counter("orders", "Liquidation order submits by outcome", ("outcome",))
        self.cancels = counter("cancels", "Order cancels by outcome", ("outcome",))
        self.auction_requests = counter(
            "auction_requests", "Full-auction start requests by outcome", ("outcome",)
        )
        self.stop_requests = counter(
            "stop_requests", "Auction stop requests by outcome", ("outcome",)
        )
        self.auction_events = counter(
            "auction_events", "Chain and operator events that changed a state", ("kind",)
        )
        self.alerts = counter("alerts", "Alerts raised by step, by code", ("code",))
        self.publishes = counter("publishes", "State change publishes by outcome", ("outcome",))
        self.wallets_skipped = counter(
            "wallets_skipped", "Wallets skipped in a poll, by reason", ("reason",)
        )
        self.polls_skipped = counter("polls_skipped", "Polls skipped (portfolio listing failed)")
        self.decisions = counter("decisions", "Decisions recorded", ("executed",))
        self.noop_decisions = counter(
            "healthy_noops", "Healthy no-op decisions, neither committed nor recorded one by one"
        )
        self.conflicts = counter("conflicts", "Commits that lost compare-and-set")
        self.commit_failures = counter(
            "commit_failures", "Commits that failed, by record kind", ("kind",)
        )
        self.feed_items = counter("feed_items", "Feed items by result", ("result",))
        self.feed_refusals = counter(
            "feed_refused",
            "Chain-feed messages not taken: dropped (buffer full), rejected (verify), skipped",
            ("reason",),
        )
        self.unfinished_commands = counter(
            "unfinished_commands", "Unfinished commands reported at start-up"
        )
        self.quarantined_wallets = gauge(
            "quarantined_wallets", "Wallets not stepped until reloaded from the store"
        )
        self.quarantine_releases = counter(
            "quarantine_releases", "Quarantined wallets reloaded from the store after a backoff"
        )
        self.resent_requests = counter(
            "resent_requests",
            "Unfinished auction requests sent again at a restart, by command",
            ("command",),
        )
        self.pruned_records = counter(
            "pruned_records", "Records the store's retention removed from its log"
        )
        self.backfilled_records = counter(
            "backfilled_records", "Committed records appended to a recorder that lacked them"
        )
        self.active_liquidation_orders = gauge(
            "active_liquidation_orders", "Liquidation orders tracked by pre-liquidation states"
        )
        self.stuck_wallets = gauge(
            "stuck_wallets", "Wallets whose last decision raised a STUCK alert (overstaying)"
        )
        self.owned = gauge("owned_shards", "Shards this instance holds and steps (a cluster)")
        self.lease_renewals = counter("lease_renewals", "Leases of shards renewed")
        self.lease_losses = counter(
            "lease_losses", "Shards taken by another instance (fenced renewal or commit)"
        )
        self.fenced_commits = counter(
            "fenced_commits", "Commits refused because their lease was stale (nothing executed)"
        )
        self.shadow_comparisons = counter(
            "shadow_comparisons",
            "Live decisions from the store a shadow re-decided under its configuration",
        )
        self.shadow_differences = counter(
            "shadow_differences",
            "Live decisions a shadow decided otherwise (what: state, commands, step)",
            ("what",),
        )
        self.poll_seconds = pc.Histogram(
            "poll_duration_seconds",
            "Duration of one poll of all accounts",
            namespace=namespace,
            registry=registry,
            buckets=POLL_BUCKETS,
        )
        self.build_info = pc.Gauge(
            "build_info",
            "The library's version and the Python running it (always 1)",
            ("version", "python"),
            namespace=namespace,
            registry=registry,
        )
        self.build_info.labels(version=__version__, python=platform.python_version()).set(1)
        self.contracts_offered = counter(
            "contracts_offered",
            "Contracts offered by acked liquidation orders, by underlying",
            ("underlying",),
        )
        self.bonus_offered = counter(
            "bonus_offered",
            "Bonus offered by acked liquidation orders over the reference price, in the quote "
            "currency, by underlying",
            ("underlying",),
        )
        self.contracts_closed = counter(
            "contracts_closed",
            "Contracts closed by liquidation orders (a lower bound: fills seen in snapshots "
            "and position reductions), by underlying",
            ("underlying",),
        )

    def pre_liquidation_entry(self) -> None:
        self.pre_liquidation_entries.inc()

    def pre_liquidation_exit(self) -> None:
        self.pre_liquidation_exits.inc()

    def order(self, outcome: str) -> None:
        self.orders.labels(outcome=outcome).inc()

    def cancel(self, outcome: str) -> None:
        self.cancels.labels(outcome=outcome).inc()

    def auction_request(self, outcome: str) -> None:
        self.auction_requests.labels(outcome=outcome).inc()

    def stop_request(self, outcome: str) -> None:
        self.stop_requests.labels(outcome=outcome).inc()

    def auction_event(self, kind: str) -> None:
        self.auction_events.labels(kind=kind).inc()

    def alert(self, code: str) -> None:
        self.alerts.labels(code=code).inc()

    def publish(self, outcome: str) -> None:
        self.publishes.labels(outcome=outcome).inc()

    def skipped(self, reason: str) -> None:
        self.wallets_skipped.labels(reason=reason).inc()

    def poll_skipped(self) -> None:
        self.polls_skipped.inc()

    def decision(self, *, executed: bool) -> None:
        self.decisions.labels(executed=str(executed).lower()).inc()

    def healthy_noops(self, count: int) -> None:
        self.noop_decisions.inc(count)

    def conflict(self) -> None:
        self.conflicts.inc()

    def commit_failed(self, kind: str) -> None:
        self.commit_failures.labels(kind=kind).inc()

    def feed_item(self, result: str) -> None:
        self.feed_items.labels(result=result).inc()

    def feed_refused(self, reason: str) -> None:
        self.feed_refusals.labels(reason=reason).inc()

    def unfinished(self, count: int) -> None:
        self.unfinished_commands.inc(count)

    def quarantined(self, count: int) -> None:
        self.quarantined_wallets.set(count)

    def released(self) -> None:
        self.quarantine_releases.inc()

    def resent(self, command: str) -> None:
        self.resent_requests.labels(command=command).inc()

    def pruned(self, count: int) -> None:
        self.pruned_records.inc(count)

    def backfilled(self, count: int) -> None:
        self.backfilled_records.inc(count)

    def active_orders(self, count: int) -> None:
        self.active_liquidation_orders.set(count)

    def stuck(self, count: int) -> None:
        self.stuck_wallets.set(count)

    def owned_shards(self, count: int) -> None:
        self.owned.set(count)

    def lease_renewed(self, count: int) -> None:
        self.lease_renewals.inc(count)

    def lease_lost(self) -> None:
        self.lease_losses.inc()

    def fenced_commit(self) -> None:
        self.fenced_commits.inc()

    def shadow_compared(self, differs: str | None) -> None:
        self.shadow_comparisons.inc()
        if differs is not None:
            self.shadow_differences.labels(what=differs).inc()

    def poll_duration(self, seconds: float) -> None:
        self.poll_seconds.observe(seconds)

    def offered(self, underlying: str, contracts: Decimal, bonus: Decimal) -> None:
        self.contracts_offered.labels(underlying=underlying).inc(float(contracts))
        self.bonus_offered.labels(underlying=underlying).inc(float(bonus))

    def closed(self, underlying: str, contracts: Decimal) -> None:
        self.contracts_closed.labels(underlying=underlying).inc(float(contracts))


METRIC_NAMES: tuple[str, ...] = (
    "liqshell_pre_liquidation_entries_total",
    "liqshell_pre_liquidation_exits_total",
    "liqshell_orders_total",
    "liqshell_cancels_total",
    "liqshell_auction_requests_total",
    "liqshell_stop_requests_total",
    "liqshell_auction_events_total",
    "liqshell_alerts_total",
    "liqshell_publishes_total",
    "liqshell_wallets_skipped_total",
    "liqshell_polls_skipped_total",
    "liqshell_decisions_total",
    "liqshell_healthy_noops_total",
    "liqshell_conflicts_total",
    "liqshell_commit_failures_total",
    "liqshell_feed_items_total",
    "liqshell_feed_refused_total",
    "liqshell_unfinished_commands_total",
    "liqshell_quarantined_wallets",
    "liqshell_quarantine_releases_total",
    "liqshell_resent_requests_total",
    "liqshell_pruned_records_total",
    "liqshell_backfilled_records_total",
    "liqshell_active_liquidation_orders",
    "liqshell_stuck_wallets",
    "liqshell_owned_shards",
    "liqshell_lease_renewals_total",
    "liqshell_lease_losses_total",
    "liqshell_fenced_commits_total",
    "liqshell_shadow_comparisons_total",
    "liqshell_shadow_differences_total",
    "liqshell_poll_duration_seconds",
    "liqshell_build_info",
    "liqshell_contracts_offered_total",
    "liqshell_bonus_offered_total",
    "liqshell_contracts_closed_total",
)
"""Every metric :class:`Metrics` exports with the default namespace, as scraped (counters
with their ``_total`` suffix; the histogram also exports ``_bucket``, ``_count``, ``_sum``
and ``_created`` series under its name)."""


def underlying_label(symbol: str) -> str:
    """The ``underlying`` label of ``symbol``: its underlying, or the symbol itself when it
    is neither an option nor a perp."""
    try:
        return underlying_of(symbol)
    except InvalidSymbol:
        return symbol


def bonus_offered(command: SubmitOrder, health: Health | None, band_bps: int) -> Decimal:
    """``size × (price − reference)`` of a liquidation order, in the quote currency: what it
    offers over the reference price the planner priced it from
    (:func:`liqcore.planning.prices.reference_price` with the quote and position it was decided
    on). 0 without them, and never negative."""
    portfolio = None if health is None else health.portfolio
    position = None if portfolio is None else portfolio.positions.get(command.symbol)
    if health is None or position is None:
        return Decimal(0)
    try:
        reference = reference_price(health.quotes.get(command.symbol), position, band_bps)
    except PlanningError:
        return Decimal(0)
    if command.price <= reference:
        return Decimal(0)
    return command.size * (command.price - reference)


@attrs.define
class _Tracked:
    symbol: str
    remaining: Decimal
    order_id: int | None


@attrs.define
class _Book:
    orders: dict[str, _Tracked] = attrs.field(factory=dict)
    cancelled: set[str] = attrs.field(factory=set)
    cancelled_ids: set[int] = attrs.field(factory=set)
    positions: Mapping[str, Decimal] | None = None


class ClosedContracts:
    """A lower bound of the contracts liquidation orders closed, from what the watcher sees.

    It tracks each wallet's acked liquidation orders (:meth:`placed`) and the cancels sent
    (:meth:`cancelled`), only while one of its orders rests; each new observation
    (:meth:`observe`: the open orders and the portfolio) counts as closed

    * what a tracked order's ``remaining_size`` dropped since the last snapshot (a fill the
      order engine reports), and
    * for a tracked order that vanished although no cancel was sent, only what the
      position in its symbol shrank since the last observed portfolio (beyond the fills
      already counted), at most the order's remaining size — an order the exchange expired
      shows no reduction and counts nothing.

    Fills between a snapshot and a cancel, and anything before a restart, are not seen: the
    count is a lower bound, never an estimate above what happened.
    """

    def __init__(self) -> None:
        self._books: dict[str, _Book] = {}

    def __contains__(self, wallet: object) -> bool:
        """Whether an order of ``wallet`` is tracked (else :meth:`observe` counts nothing
        and may be skipped: the common case, checked for every wallet of every poll)."""
        return wallet in self._books

    def placed(self, command: SubmitOrder, health: Health | None) -> None:
        """``command``, decided on ``health``, was acked: it rests until filled or
        cancelled."""
        book = self._books.setdefault(command.wallet, _Book())
        book.orders[command.client_id] = _Tracked(
            symbol=command.symbol, remaining=command.size, order_id=None
        )
        if book.positions is None and health is not None:
            book.positions = _positions(health)

    def cancelled(self, command: CancelOrder) -> None:
        """A cancel was sent: the order's disappearance is not a fill."""
        book = self._books.get(command.wallet)
        if book is None:  # no order of ours rests: nothing to tell apart
            return
        book.cancelled_ids.add(command.order_id)
        if command.client_id is not None:
            book.cancelled.add(command.client_id)

    def observe(self, health: Health, orders: Iterable[OpenOrder]) -> dict[str, Decimal]:
        """Fold in one observation of ``health.wallet``; the contracts closed since the last
        one, by underlying."""
        book = self._books.get(health.wallet)
        if book is None:  # the common case: no liquidation order of ours rests
            return {}
        snapshot = {order.client_id: order for order in orders if order.client_id}
        positions = _positions(health)
        filled: dict[str, Decimal] = {}
        vanished: list[_Tracked] = []
        for client_id, order in list(book.orders.items()):
            seen = snapshot.get(client_id)
            if seen is not None:
                order.order_id = seen.order_id
                drop = order.remaining - seen.remaining_size
                if drop > 0:
                    filled[order.symbol] = filled.get(order.symbol, Decimal(0)) + drop
                    order.remaining = seen.remaining_size
                continue
            del book.orders[client_id]
            cancelled = client_id in book.cancelled or order.order_id in book.cancelled_ids
            book.cancelled.discard(client_id)
            if not cancelled and order.remaining > 0:
                vanished.append(order)
        closed = dict(filled)
        if vanished and book.positions is not None and positions is not None:
            for order in vanished:
                before = book.positions.get(order.symbol, Decimal(0))
                shrank = before - positions.get(order.symbol, Decimal(0))
                room = shrank - closed.get(order.symbol, Decimal(0))
                if room > 0:
                    closed[order.symbol] = closed.get(order.symbol, Decimal(0)) + min(
                        room, order.remaining
                    )
        if not book.orders:
            del self._books[health.wallet]
        elif positions is not None:
            book.positions = positions
        by_underlying: dict[str, Decimal] = {}
        for symbol, size in sorted(closed.items()):
            underlying = underlying_label(symbol)
            by_underlying[underlying] = by_underlying.get(underlying, Decimal(0)) + size
        return by_underlying

    @property
    def tracked(self) -> int:
        """How many orders are tracked, over all wallets."""
        return sum(len(book.orders) for book in self._books.values())


def _positions(health: Health) -> dict[str, Decimal] | None:
    portfolio = health.portfolio
    if portfolio is None:
        return None
    return {symbol: abs(position.amount) for symbol, position in portfolio.positions.items()}


def metrics_from(value: object) -> NullMetrics:
    """What the watcher counts through: ``value`` itself if it is a :class:`NullMetrics`
    (or :class:`Metrics`), the registry's :class:`Metrics` if it is a registry (made on
    first use, then shared), else :class:`NullMetrics` (``None``, or no
    ``prometheus_client``)."""
    if isinstance(value, NullMetrics):
        return value
    if value is None:
        return NullMetrics()
    if not HAVE_PROMETHEUS:  # pragma: no cover - the `shell` extra is not installed
        _log.warning("prometheus_client is not installed: metrics are disabled")
        return NullMetrics()
    if not isinstance(value, prometheus_client.CollectorRegistry):
        raise TypeError(f"metrics must be a prometheus_client CollectorRegistry, was {value!r}")
    metrics = _BY_REGISTRY.get(value)
    if metrics is None:
        metrics = _BY_REGISTRY[value] = Metrics(value)
    return metrics


_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, Metrics] = weakref.WeakKeyDictionary()
"""One :class:`Metrics` per registry: a restarted watcher in the same process (or several
watchers given one registry) counts on the same metrics instead of registering twice."""
