"""liqshell.pytest_plugin: the fakes as fixtures by name, through the ``pytest11`` entry
point, wired together; ``liq_config`` can be overridden; ``-p no:liqshell`` turns it off."""

from __future__ import annotations

import importlib.metadata
from decimal import Decimal

import pytest

from liqcore import Config, MarginMode, Portfolio, Position, PreLiquidation, Quote
from liqshell import MarginReport, Watcher
from liqshell.pytest_plugin import START_MS
from liqshell.testing import (
    FakeExchange,
    FakeFeed,
    MemoryRecorder,
    MemorySink,
    MemoryStore,
    VirtualClock,
)
from tests.installed import stale_entry_point

pytest_plugins = ["pytester"]

SYMBOL = "BTC-20261231-100000-C"
FIXTURES = (
    "liq_clock",
    "liq_config",
    "liq_exchange",
    "liq_feed",
    "liq_recorder",
    "liq_sink",
    "liq_store",
    "liq_watcher",
)


def _needs_the_entry_point() -> None:
    reason = stale_entry_point("pytest11", "liqshell")
    if reason is not None:
        pytest.skip(reason)


def test_the_plugin_is_declared_as_a_pytest11_entry_point() -> None:
    _needs_the_entry_point()
    (entry,) = [
        e for e in importlib.metadata.entry_points(group="pytest11") if e.name == "liqshell"
    ]
    assert entry.value == "liqshell.pytest_plugin"


def test_fixtures_are_the_fakes_and_are_wired_together(
    liq_clock: VirtualClock,
    liq_exchange: FakeExchange,
    liq_store: MemoryStore,
    liq_recorder: MemoryRecorder,
    liq_feed: FakeFeed,
    liq_sink: MemorySink,
    liq_config: Config,
    liq_watcher: Watcher,
) -> None:
    """Used directly in this suite (the entry point loads the plugin here too)."""
    assert liq_clock.now_ms() == START_MS
    assert liq_exchange.clock is liq_clock
    assert liq_config == Config()
    assert liq_watcher.config is liq_config
    assert isinstance(liq_store, MemoryStore)
    assert isinstance(liq_recorder, MemoryRecorder)
    assert not isinstance(liq_recorder, MemoryStore)
    assert isinstance(liq_feed, FakeFeed)
    assert isinstance(liq_sink, MemorySink)


async def test_a_poll_through_the_fixtures_acts_on_the_exchange_and_stores(
    liq_clock: VirtualClock,
    liq_exchange: FakeExchange,
    liq_store: MemoryStore,
    liq_sink: MemorySink,
    liq_watcher: Watcher,
) -> None:
    """The seed's liquidatable account, one poll: the watcher built by ``liq_watcher``
    submits to ``liq_exchange``, commits to ``liq_store`` and publishes to ``liq_sink``."""
    position = Position(symbol=SYMBOL, amount=Decimal(-4), entry_price=Decimal(100))
    liq_exchange.set_portfolio(
        "W",
        Portfolio(cash=Decimal(100), positions={SYMBOL: position}, spot={"BTC": Decimal(105_000)}),
    )
    liq_exchange.set_margin(
        "W",
        MarginReport(
            margin_mode=MarginMode.STANDARD,
            equity=Decimal(100),
            mm_required=Decimal(300),
            is_liquidatable=True,
        ),
    )
    liq_exchange.set_quote(
        SYMBOL, Quote(best_bid=Decimal(149), best_ask=Decimal(150), mid=Decimal("149.5"))
    )
    report = await liq_clock.drive(liq_watcher.run_once())
    assert report.stepped == 1
    (submit,) = liq_exchange.submits
    assert submit.symbol == SYMBOL
    stored = liq_store.stored("W")
    assert stored is not None
    assert isinstance(stored.state.phase, PreLiquidation)
    assert [key[0] for key in liq_sink.keys] == ["W", "W"]


USER_TESTS = """
import asyncio

import pytest
from liqcore import Config


@pytest.fixture
def liq_config():
    return Config(partial_bonus_max_bps=300)


def test_by_name(liq_clock, liq_exchange, liq_store, liq_recorder, liq_feed, liq_sink,
                 liq_watcher):
    assert liq_watcher.config.partial_bonus_max_bps == 300
    assert liq_exchange.clock is liq_clock
    report = asyncio.run(liq_clock.drive(liq_watcher.run_once()))
    assert report.stepped == 0  # no accounts yet


def test_fresh_per_test(liq_store):
    assert liq_store.records == []
"""


def test_a_backends_tests_get_the_fixtures_by_name(pytester: pytest.Pytester) -> None:
    """In a project of its own (no conftest, no import of the plugin), tests ask for the
    fixtures by name and may override ``liq_config``."""
    _needs_the_entry_point()
    pytester.makepyfile(test_backend=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_the_fixtures_are_listed_and_can_be_switched_off(pytester: pytest.Pytester) -> None:
    """``pytest --fixtures`` lists every ``liq_*`` fixture; ``-p no:liqshell`` removes them."""
    _needs_the_entry_point()
    pytester.makepyfile(test_backend="def test_nothing():\n    pass\n")
    listed = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    text = listed.stdout.str()
    for name in FIXTURES:
        assert f"{name} -- " in text, name
    pytester.makepyfile(test_uses="def test_uses(liq_store):\n    pass\n")
    off = pytester.runpytest_subprocess("-p", "no:liqshell", "-p", "no:cacheprovider")
    off.assert_outcomes(passed=1, errors=1)
    assert "fixture 'liq_store' not found" in off.stdout.str()
