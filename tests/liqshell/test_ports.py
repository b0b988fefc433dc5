"""The port contracts: validated margin reports, checked ports, ``async with``."""

from __future__ import annotations

from decimal import Decimal

import pytest

from liqcore import InvalidInput, MarginMode
from liqshell import Watcher
from liqshell.ports import PORT_METHODS, MarginReport, check_port
from liqshell.testing import FakeExchange, FakeFeed, MemorySink, MemoryStore, VirtualClock

GOOD = {
    "margin_mode": MarginMode.STANDARD,
    "equity": Decimal(10),
    "mm_required": Decimal(5),
    "is_liquidatable": False,
}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("equity", 1.5, "MarginReport.equity must be a finite Decimal, was 1.5"),
        ("equity", Decimal("NaN"), "MarginReport.equity must be a finite Decimal"),
        ("equity", "10", "MarginReport.equity must be a finite Decimal, was '10'"),
        ("mm_required", Decimal(-1), "MarginReport.mm_required must be ≥ 0, was -1"),
        ("mm_required", 3, "MarginReport.mm_required must be a finite Decimal, was 3"),
        ("is_liquidatable", 1, "MarginReport.is_liquidatable must be True or False, was 1"),
        ("margin_mode", "standard", "MarginReport.margin_mode must be a liqcore.MarginMode"),
    ],
)
def test_margin_report_rejects_bad_values_naming_the_field(
    field: str, value: object, message: str
) -> None:
    """A float or any bad value fails where the report is built, naming the field."""
    with pytest.raises(InvalidInput, match="^" + message.replace("(", r"\(")):
        MarginReport(**{**GOOD, field: value})  # type: ignore[arg-type]


def test_margin_report_accepts_negative_equity() -> None:
    """Equity may be negative (an account under water); only the requirement is ≥ 0."""
    report = MarginReport(**{**GOOD, "equity": Decimal(-3)})  # type: ignore[arg-type]
    assert report.equity == Decimal(-3)


class NoMargin:
    """An exchange stub that forgot the margin engine."""

    async def portfolios(self) -> dict[str, object]:
        return {}


def ports(**override: object) -> dict[str, object]:
    clock = VirtualClock(0)
    exchange = FakeExchange(clock=clock)
    store = MemoryStore()
    kwargs: dict[str, object] = {
        "portfolios": exchange,
        "margin": exchange,
        "quotes": exchange,
        "orders": exchange,
        "gateway": exchange,
        "auctions": exchange,
        "feed": FakeFeed(),
        "store": store,
        "sink": MemorySink(),
        "recorder": store,
        "clock": clock,
    }
    kwargs.update(override)
    return kwargs


@pytest.mark.parametrize("keyword", sorted(PORT_METHODS))
def test_watcher_refuses_a_port_without_a_method_naming_port_and_method(keyword: str) -> None:
    """A stub port fails at construction with the keyword, protocol and method, not with an
    ``AttributeError`` in the middle of a poll."""
    protocol, methods = PORT_METHODS[keyword]
    with pytest.raises(TypeError) as raised:
        Watcher(**ports(**{keyword: NoMargin()}))  # type: ignore[arg-type]
    missing = next(m for m in methods if not hasattr(NoMargin, m))
    assert str(raised.value).startswith(
        f"Watcher {keyword}: NoMargin has no method {missing!r} (a {protocol} needs"
    )


def test_check_port_accepts_the_fakes() -> None:
    """Every fake serves the methods its ports need."""
    for keyword, port in ports().items():
        check_port(keyword, port)


async def test_watcher_async_with_starts_and_closes_the_store() -> None:
    """``async with watcher`` loads the store on entry and closes it on exit."""
    kwargs = ports()
    store = kwargs["store"]
    assert isinstance(store, MemoryStore)
    async with Watcher(**kwargs) as watcher:  # type: ignore[arg-type]
        assert store.close_calls == 0
        assert watcher.cursor is None
    assert store.close_calls == 1
