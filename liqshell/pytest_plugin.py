"""The fakes of :mod:`liqshell.testing` as pytest fixtures, by name.

Installed with liqshell (the ``pytest11`` entry point ``liqshell``), so a backend's tests
ask for them as arguments; nothing else is needed::

    async def test_liquidatable_account_gets_an_order(liq_exchange, liq_clock, liq_watcher):
        liq_exchange.set_portfolio("0xa", portfolio)
        liq_exchange.set_margin("0xa", liquidatable)
        await liq_clock.drive(liq_watcher.run_once())
        assert liq_exchange.submits

Every fixture is function-scoped and fresh per test; the fixtures of one test are wired
together (the exchange and the watcher use ``liq_clock``, the watcher writes to
``liq_store``, publishes to ``liq_sink``, reads ``liq_feed``):

=================  =========================================================================
``liq_clock``      :class:`~liqshell.testing.VirtualClock` at :data:`START_MS`
``liq_exchange``   :class:`~liqshell.testing.FakeExchange` on ``liq_clock`` (every exchange
                   port: portfolios, margin, quotes, open orders, orders, auctions)
``liq_store``      :class:`~liqshell.testing.MemoryStore` (``StateStore`` and ``Recorder``)
``liq_recorder``   :class:`~liqshell.testing.MemoryRecorder`, a ``Recorder`` only
``liq_feed``       :class:`~liqshell.testing.FakeFeed` (``AuctionFeed``)
``liq_sink``       :class:`~liqshell.testing.MemorySink` (``EventSink``)
``liq_config``     ``liqcore.Config()`` — override this fixture to change the watcher's
``liq_watcher``    :class:`~liqshell.Watcher` over all of the above, ``liq_store`` as its
                   recorder, no metrics registry
=================  =========================================================================

The fixtures are plain (synchronous) fixtures, so they work under pytest-asyncio, anyio or
a test that runs its own event loop. To give the watcher other settings, override
``liq_config`` in a ``conftest.py`` (or in the test module)::

    @pytest.fixture
    def liq_config() -> Config:
        return Config(partial_bonus_max_bps=300)

Disable the plugin with ``-p no:liqshell``.
"""

from __future__ import annotations

import pytest

from liqcore import Config
from liqshell.testing import (
    FakeExchange,
    FakeFeed,
    MemoryRecorder,
    MemorySink,
    MemoryStore,
    VirtualClock,
)
from liqshell.watcher import Watcher

__all__ = [
    "START_MS",
    "liq_clock",
    "liq_config",
    "liq_exchange",
    "liq_feed",
    "liq_recorder",
    "liq_sink",
    "liq_store",
    "liq_watcher",
]

START_MS = 1_767_225_600_000
"""Where ``liq_clock`` starts: 2026-01-01T00:00:00Z in ms (a realistic, fixed instant)."""


@pytest.fixture
def liq_clock() -> VirtualClock:
    """A :class:`~liqshell.testing.VirtualClock` at :data:`START_MS`."""
    return VirtualClock(START_MS)


@pytest.fixture
def liq_exchange(liq_clock: VirtualClock) -> FakeExchange:
    """A :class:`~liqshell.testing.FakeExchange` on ``liq_clock``: every exchange port."""
    return FakeExchange(clock=liq_clock)


@pytest.fixture
def liq_store() -> MemoryStore:
    """A :class:`~liqshell.testing.MemoryStore`: ``StateStore`` and ``Recorder``."""
    return MemoryStore()


@pytest.fixture
def liq_recorder() -> MemoryRecorder:
    """A :class:`~liqshell.testing.MemoryRecorder`: a ``Recorder`` only."""
    return MemoryRecorder()


@pytest.fixture
def liq_feed() -> FakeFeed:
    """A :class:`~liqshell.testing.FakeFeed`: an ``AuctionFeed``."""
    return FakeFeed()


@pytest.fixture
def liq_sink() -> MemorySink:
    """A :class:`~liqshell.testing.MemorySink`: an ``EventSink``."""
    return MemorySink()


@pytest.fixture
def liq_config() -> Config:
    """The watcher's configuration: ``Config()``; override the fixture to change it."""
    return Config()


@pytest.fixture
def liq_watcher(
    *,
    liq_exchange: FakeExchange,
    liq_store: MemoryStore,
    liq_feed: FakeFeed,
    liq_sink: MemorySink,
    liq_clock: VirtualClock,
    liq_config: Config,
) -> Watcher:
    """A :class:`~liqshell.Watcher` over the other fixtures (``liq_store`` records)."""
    return Watcher(
        portfolios=liq_exchange,
        margin=liq_exchange,
        quotes=liq_exchange,
        orders=liq_exchange,
        gateway=liq_exchange,
        auctions=liq_exchange,
        feed=liq_feed,
        store=liq_store,
        sink=liq_sink,
        recorder=liq_store,
        clock=liq_clock,
        config=liq_config,
    )
