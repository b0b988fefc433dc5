"""The wall clock as a :class:`~liqshell.ports.Clock` (tests and the simulator use
:class:`liqshell.testing.VirtualClock`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["SystemClock"]

_T = TypeVar("_T")


class SystemClock:
    """Milliseconds since the Unix epoch, from the system clock."""

    def now_ms(self) -> int:
        """Now."""
        return time.time_ns() // 1_000_000

    async def sleep_until(self, ms: int) -> None:
        """Sleep until the instant ``ms`` (at once if it has passed)."""
        delay = (ms - self.now_ms()) / 1000
        if delay > 0:
            await asyncio.sleep(delay)

    async def wait_for(self, awaitable: Awaitable[_T], timeout_ms: int) -> _T:
        """``awaitable`` within ``timeout_ms``; raises ``TimeoutError``."""
        return await asyncio.wait_for(awaitable, timeout_ms / 1000)
