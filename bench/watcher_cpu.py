"""CPU time of the watcher's poll against the bare core sweep, on a clock that only moves
between polls: ``python -m bench.watcher_cpu memory:100000 sqlite:100000``.

:mod:`bench.watcher` times polls on the wall clock with a ``SystemClock``: on a loaded
machine both the poll and the core sweep it is divided by swing several-fold, and how long a
poll takes changes what the liquidating accounts decide (reprices fall due, requests go
stale), so two runs do not even do the same work. Here the accounts of
:func:`bench.throughput.poll` are polled with a :class:`~liqshell.testing.VirtualClock`
advanced 5 s before each poll (every run does the same work) and what is measured is the
process's CPU time (``time.process_time``, the store's worker threads included) of a poll
and of the bare core sweep of the same accounts: the least of 3 timed polls after 2 untimed
ones, and of 3 sweeps. Run it in two checkouts one after the other, from each checkout's
root, to compare them.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path

from bench.throughput import NOW, poll, sweep
from bench.watcher import exchange_of, opened_store, watcher_over
from liqcore import Config
from liqshell.testing import MemorySink, VirtualClock

POLL_MS = 5_000


async def measure(kind: str, size: int, liquidating: float = 0.01) -> str:
    """One line: the store, the accounts, CPU µs an account of a poll and of the core sweep,
    and their ratio (wall-clock figures beside them, for what they are worth)."""
    config = Config()
    data = poll(size, config, liquidating=liquidating)
    exchange = exchange_of(data)
    core_cpu = core_wall = float("inf")
    for k in range(3):
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        sweep(data, config, NOW + k)
        core_cpu = min(core_cpu, time.process_time() - cpu)
        core_wall = min(core_wall, time.perf_counter() - wall)
    with tempfile.TemporaryDirectory() as folder:
        async with opened_store(kind, Path(folder)) as store:
            clock = VirtualClock(NOW)
            watcher = watcher_over(exchange, store, clock, config, MemorySink())
            for _ in range(2):
                clock.advance(POLL_MS)
                await watcher.run_once()
            poll_cpu = poll_wall = float("inf")
            for _ in range(3):
                clock.advance(POLL_MS)
                gc.collect()
                wall, cpu = time.perf_counter(), time.process_time()
                await watcher.run_once()
                poll_cpu = min(poll_cpu, time.process_time() - cpu)
                poll_wall = min(poll_wall, time.perf_counter() - wall)
            await watcher.close()
    per = 1e6 / size
    return (
        f"{kind} {size}: CPU {poll_cpu * per:.1f} µs an account, core sweep "
        f"{core_cpu * per:.1f}, ratio {poll_cpu / core_cpu:.2f}× (wall {poll_wall * per:.1f} "
        f"and {core_wall * per:.1f} µs, {poll_wall / core_wall:.2f}×)"
    )


def main(argv: list[str]) -> int:
    for spec in argv or ["memory:100000", "sqlite:100000"]:
        kind, size = spec.split(":")
        print(asyncio.run(measure(kind, int(size))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
