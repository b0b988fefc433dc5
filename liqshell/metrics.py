"""Prometheus metrics of the shell, created on a registry the caller passes in.

``Metrics(registry)`` registers every metric of SPEC §9 "Operation" (plus a few the shell
needs to be observable: conflicts, commit failures, feed items, publishes, unfinished
commands) on that registry — never the global one. :class:`NullMetrics` has the same
methods and records nothing; the watcher uses it when no registry is given or
``prometheus_client`` is not installed, so the shell works without it.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

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

__all__ = ["HAVE_PROMETHEUS", "Metrics", "NullMetrics", "metrics_from"]

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

    def conflict(self) -> None:
        """A compare-and-set commit lost to another instance."""

    def commit_failed(self, kind: str) -> None:
        """A commit of a record of ``kind`` failed."""

    def feed_item(self, result: str) -> None:
        """A feed item by result: ``applied``, ``unchanged``, ``duplicate``, ``unknown_wallet``."""

    def unfinished(self, count: int) -> None:
        """``count`` unfinished commands were reported at start-up."""

    def quarantined(self, count: int) -> None:
        """``count`` wallets are quarantined (until reloaded from the store)."""

    def released(self) -> None:
        """A quarantined wallet was reloaded from the store and is stepped again."""

    def resent(self, command: str) -> None:
        """An unfinished ``StartAuction`` / ``StopAuction`` was sent again at a restart."""

    def backfilled(self, count: int) -> None:
        """``count`` committed records were appended to a recorder that lacked them."""

    def active_orders(self, count: int) -> None:
        """``count`` liquidation orders are tracked across all wallets."""

    def stuck(self, count: int) -> None:
        """``count`` wallets were found overstaying a phase by their last decision."""

    def poll_duration(self, seconds: float) -> None:
        """One poll took ``seconds``."""


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
        self.conflicts = counter("conflicts", "Commits that lost compare-and-set")
        self.commit_failures = counter(
            "commit_failures", "Commits that failed, by record kind", ("kind",)
        )
        self.feed_items = counter("feed_items", "Feed items by result", ("result",))
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
        self.backfilled_records = counter(
            "backfilled_records", "Committed records appended to a recorder that lacked them"
        )
        self.active_liquidation_orders = gauge(
            "active_liquidation_orders", "Liquidation orders tracked by pre-liquidation states"
        )
        self.stuck_wallets = gauge(
            "stuck_wallets", "Wallets whose last decision raised a STUCK alert (overstaying)"
        )
        self.poll_seconds = pc.Histogram(
            "poll_duration_seconds",
            "Duration of one poll of all accounts",
            namespace=namespace,
            registry=registry,
            buckets=POLL_BUCKETS,
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

    def conflict(self) -> None:
        self.conflicts.inc()

    def commit_failed(self, kind: str) -> None:
        self.commit_failures.labels(kind=kind).inc()

    def feed_item(self, result: str) -> None:
        self.feed_items.labels(result=result).inc()

    def unfinished(self, count: int) -> None:
        self.unfinished_commands.inc(count)

    def quarantined(self, count: int) -> None:
        self.quarantined_wallets.set(count)

    def released(self) -> None:
        self.quarantine_releases.inc()

    def resent(self, command: str) -> None:
        self.resent_requests.labels(command=command).inc()

    def backfilled(self, count: int) -> None:
        self.backfilled_records.inc(count)

    def active_orders(self, count: int) -> None:
        self.active_liquidation_orders.set(count)

    def stuck(self, count: int) -> None:
        self.stuck_wallets.set(count)

    def poll_duration(self, seconds: float) -> None:
        self.poll_seconds.observe(seconds)


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
