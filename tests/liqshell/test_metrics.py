"""liqshell.metrics: build_info, the business counters (through the watcher and on their
own), and the docs' metric names exactly as exported."""

from __future__ import annotations

import platform
import re
from decimal import Decimal
from pathlib import Path

import attrs
from prometheus_client import CollectorRegistry

from liqcore import (
    CancelOrder,
    Config,
    Health,
    MarginMode,
    OpenOrder,
    Portfolio,
    Position,
    Quote,
    Side,
    SubmitOrder,
    __version__,
)
from liqshell import MarginReport, Watcher
from liqshell.metrics import (
    METRIC_NAMES,
    ClosedContracts,
    Metrics,
    bonus_offered,
    metrics_from,
    underlying_label,
)
from liqshell.testing import FakeExchange, MemorySink, MemoryStore, VirtualClock

ROOT = Path(__file__).resolve().parents[2]
W = "W"
SYMBOL = "BTC-20261231-100000-C"
ETH = "ETH-20261231-3000-C"
QUOTE = Quote(best_bid=Decimal(149), best_ask=Decimal(150), mid=Decimal("149.5"))
LIQUIDATABLE = MarginReport(
    margin_mode=MarginMode.STANDARD,
    equity=Decimal(100),
    mm_required=Decimal(300),
    is_liquidatable=True,
)


def exported(registry: CollectorRegistry) -> set[str]:
    """The metric names a scrape shows (counters with ``_total``)."""
    return {
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in registry.collect()
    }


def portfolio(amount: str = "-4", cash: str = "100") -> Portfolio:
    position = Position(symbol=SYMBOL, amount=Decimal(amount), entry_price=Decimal(100))
    return Portfolio(
        cash=Decimal(cash), positions={SYMBOL: position}, spot={"BTC": Decimal(105_000)}
    )


def health(amount: str = "-4") -> Health:
    return Health(
        wallet=W,
        margin_mode=MarginMode.STANDARD,
        equity=Decimal(100),
        mm_required=Decimal(300),
        is_liquidatable=True,
        portfolio=portfolio(amount),
        quotes={SYMBOL: QUOTE},
    )


def order(client_id: str, remaining: str, size: str = "1", order_id: int = 1) -> OpenOrder:
    return OpenOrder(
        order_id=order_id,
        symbol=SYMBOL,
        side=Side.BUY,
        price=Decimal("120.6"),
        original_size=Decimal(size),
        remaining_size=Decimal(remaining),
        client_id=client_id,
        created_at=1,
    )


def submit(client_id: str, size: str = "1") -> SubmitOrder:
    return SubmitOrder(
        wallet=W,
        symbol=SYMBOL,
        price=Decimal("120.6"),
        size=Decimal(size),
        client_id=client_id,
        request_id=f"r-{client_id}",
    )


# --------------------------------------------------------------------------- names


def test_docs_list_exactly_the_metrics_exported() -> None:
    """The metrics table of docs/shell.md names every metric a registry exports, no more:
    a metric added or renamed without the docs fails here."""
    registry = CollectorRegistry()
    Metrics(registry)
    names = exported(registry)
    assert names == set(METRIC_NAMES)
    text = (ROOT / "docs" / "shell.md").read_text(encoding="utf-8")
    section = text.split("## Metrics and logging", 1)[1].split("**Logging**", 1)[0]
    rows = re.findall(r"^\| `(liqshell_[a-z_]+)` \|", section, flags=re.M)
    assert len(rows) == len(set(rows))
    assert set(rows) == names


def test_build_info_carries_the_version_and_the_python() -> None:
    registry = CollectorRegistry()
    metrics_from(registry)
    labels = {"version": __version__, "python": platform.python_version()}
    assert registry.get_sample_value("liqshell_build_info", labels) == 1.0


def test_a_namespace_prefixes_every_name() -> None:
    registry = CollectorRegistry()
    Metrics(registry, namespace="venue")
    assert {name.replace("venue_", "liqshell_", 1) for name in exported(registry)} == set(
        METRIC_NAMES
    )


# --------------------------------------------------------------------------- bonus


def test_bonus_offered_is_the_price_over_the_planners_reference() -> None:
    """The seed: reference = min(ask 150, mark 100 × 1.2) = 120; 120.6 pays 0.6 a contract."""
    command = submit("a", size="2")
    assert bonus_offered(command, health(), 2_000) == Decimal("1.2")
    # no position, no health, or a price under the reference: no bonus
    assert bonus_offered(command, None, 2_000) == 0
    assert bonus_offered(attrs.evolve(command, symbol=ETH), health(), 2_000) == 0
    assert bonus_offered(attrs.evolve(command, price=Decimal(100)), health(), 2_000) == 0


def test_underlying_label() -> None:
    assert underlying_label(SYMBOL) == "BTC"
    assert underlying_label("ETH-PERP") == "ETH"
    assert underlying_label("odd") == "odd"


# --------------------------------------------------------------------------- closed


def test_closed_counts_remaining_drops() -> None:
    tally = ClosedContracts()
    tally.placed(submit("a", size="1"), health())
    assert tally.observe(health(), [order("a", "1")]) == {}
    assert tally.observe(health("-3.6"), [order("a", "0.6")]) == {"BTC": Decimal("0.4")}
    assert tally.observe(health("-3.5"), [order("a", "0.5")]) == {"BTC": Decimal("0.1")}


def test_closed_counts_a_vanished_order_only_as_far_as_the_position_shrank() -> None:
    """An order gone without a cancel: counted up to the position's reduction, capped at
    what remained; an expired order (no reduction) counts nothing."""
    tally = ClosedContracts()
    tally.placed(submit("a", size="1"), health("-4"))
    tally.placed(submit("b", size="1"), health("-4"))
    assert tally.observe(health("-2.5"), []) == {"BTC": Decimal("1.5")}  # 1 + 0.5 of 2
    assert tally.tracked == 0
    tally.placed(submit("c", size="1"), health("-2.5"))
    assert tally.observe(health("-2.5"), []) == {}  # expired: nothing closed
    tally.placed(submit("d", size="1"), health("-2.5"))
    assert tally.observe(health("-0.5"), []) == {"BTC": Decimal(1)}  # capped at remaining


def test_closed_counts_nothing_for_a_cancelled_order() -> None:
    tally = ClosedContracts()
    tally.placed(submit("a"), health("-4"))
    tally.observe(health("-4"), [order("a", "1", order_id=9)])
    tally.cancelled(CancelOrder(wallet=W, order_id=9, client_id=None, request_id="r-cancel"))
    assert tally.observe(health("-3"), []) == {}
    assert tally.tracked == 0


def test_closed_keeps_nothing_for_wallets_without_orders() -> None:
    tally = ClosedContracts()
    assert tally.observe(health(), [order("a", "1")]) == {}
    tally.cancelled(CancelOrder(wallet=W, order_id=9, client_id="x", request_id="r"))
    assert tally.tracked == 0


def test_closed_holds_a_wallet_from_its_first_acked_order_until_none_rests() -> None:
    """``wallet in tally`` (what the watcher asks before observing) is true from the first
    placed order until an observation finds none of its orders resting."""
    tally = ClosedContracts()
    assert W not in tally
    tally.placed(submit("a", size="1"), health())
    assert W in tally
    assert "other" not in tally
    tally.observe(health(), [order("a", "1")])
    assert W in tally
    tally.observe(health(), [])
    assert W not in tally


# --------------------------------------------------------------------------- watcher


async def test_watcher_counts_offered_bonus_and_closed_by_underlying() -> None:
    """The seed account through the watcher: its acked order offers its size at 0.6 bonus a
    contract; after a partial fill (remaining dropped) and the rest vanishing while the
    short shrank, contracts_closed holds both."""
    clock = VirtualClock(10_000)
    exchange = FakeExchange(clock=clock)
    exchange.set_portfolio(W, portfolio())
    exchange.set_margin(W, LIQUIDATABLE)
    exchange.set_quote(SYMBOL, QUOTE)
    store, registry = MemoryStore(), CollectorRegistry()
    watcher = Watcher(
        portfolios=exchange,
        margin=exchange,
        quotes=exchange,
        orders=exchange,
        gateway=exchange,
        auctions=exchange,
        store=store,
        sink=MemorySink(),
        recorder=store,
        clock=clock,
        config=Config(partial_reprice_interval_ms=60_000),
        metrics=registry,
    )

    def value(name: str) -> float:
        return registry.get_sample_value(f"liqshell_{name}", {"underlying": "BTC"}) or 0.0

    await clock.drive(watcher.run_once())
    (placed,) = exchange.submits
    assert placed.price == Decimal("120.6")
    size = float(placed.size)
    assert value("contracts_offered_total") == size
    assert value("bonus_offered_total") == float(placed.size * Decimal("0.6"))
    assert value("contracts_closed_total") == 0

    (resting,) = exchange.open_orders_of(W)
    half = resting.remaining_size / 2
    exchange.set_open_orders(W, [attrs.evolve(resting, remaining_size=half)])
    exchange.set_portfolio(W, portfolio(str(Decimal(-4) + half)))
    clock.set_time(11_000)
    await clock.drive(watcher.run_once())
    assert value("contracts_closed_total") == float(half)

    exchange.clear_orders(W)  # the rest filled: the order vanished, the short shrank again
    exchange.set_portfolio(W, portfolio(str(Decimal(-4) + placed.size)))
    clock.set_time(12_000)
    await clock.drive(watcher.run_once())
    assert value("contracts_closed_total") == size
