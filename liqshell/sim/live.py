"""The simulated exchange on wall-clock time (``liqshell run`` with ``[exchange] source = "sim"``).

:class:`ScaledClock` runs the simulation's virtual time at ``speed`` × wall time from the
world's current instant; :func:`drive` moves the world one tick whenever the clock reaches
it, commits its snapshot and hands every new chain event to ``publish`` (the NATS chain
subject, when the watcher reads the feed from NATS). The watcher runs beside it with its
own ``run`` loop, exactly as against a real exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from liqshell.ports import FeedItem
from liqshell.sim.auctions import feed_items
from liqshell.sim.exchange import SimExchange
from liqshell.sim.persistence import WorldStore

__all__ = ["ScaledClock", "drive"]

T = TypeVar("T")


class ScaledClock:
    """A ``Clock`` whose time starts at ``start_ms`` and runs ``speed`` times wall time."""

    def __init__(
        self, start_ms: int, speed: float = 1.0, *, wall: Callable[[], float] = time.monotonic
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, was {speed!r}")
        self._start = start_ms
        self._speed = speed
        self._wall = wall
        self._wall0 = wall()

    def now_ms(self) -> int:
        """The simulated instant now."""
        return self._start + int((self._wall() - self._wall0) * 1000 * self._speed)

    def wall_seconds_until(self, ms: int) -> float:
        """Wall-clock seconds until the simulated instant ``ms`` (negative when past)."""
        return (ms - self.now_ms()) / 1000 / self._speed

    async def sleep_until(self, ms: int) -> None:
        """Sleep (in wall time) until the simulated instant ``ms``."""
        delay = self.wall_seconds_until(ms)
        if delay > 0:
            await asyncio.sleep(delay)

    async def wait_for(self, awaitable: Awaitable[T], timeout_ms: int) -> T:
        """``awaitable`` within ``timeout_ms`` of simulated time; raises ``TimeoutError``."""
        return await asyncio.wait_for(awaitable, timeout_ms / 1000 / self._speed)


async def drive(
    exchange: SimExchange,
    clock: ScaledClock,
    stop: asyncio.Event,
    *,
    worlds: WorldStore | None = None,
    publish: Callable[[FeedItem], Awaitable[None]] | None = None,
) -> None:
    """Advance ``exchange`` one tick each time ``clock`` reaches the next tick, until ``stop``.

    Every new feed item goes to ``publish`` after the snapshot that holds it is committed;
    items not yet published when the process stops are published again on the next start
    (consumers deduplicate by event id).
    """
    world = exchange.world
    published = 0 if publish is not None else len(world.feed)
    while not stop.is_set():
        if publish is not None:
            for item in feed_items(world, published):
                await publish(item)
                published = int(item.cursor)
        next_at = world.now + world.params.tick_ms
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, clock.wall_seconds_until(next_at)))
        if stop.is_set():
            break
        while world.now + world.params.tick_ms <= clock.now_ms():
            exchange.advance()
        if worlds is not None:
            worlds.save(world)
