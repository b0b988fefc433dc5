"""Run the real watcher against the simulated exchange on a virtual clock.

Each tick: the watcher applies what the chain published (``drain_feed``) and polls every
account (``run_once``) at the tick's virtual instant; then the world moves one tick
(prices, fills, auctions) and its snapshot is committed. Nothing waits for wall time, so
ten simulated minutes take seconds. The watcher's states and decisions go to a
:class:`~liqshell.adapters.sqlite.SqliteStore`; the world lives in the same file (tables
of its own), so a run killed at any instant and started again with the same store
resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import TextIO, TypeVar

import attrs

from liqcore import Config
from liqcore.state import PHASE_TAGS, phase_tag
from liqshell.ports import Recorder
from liqshell.sim.exchange import SimExchange
from liqshell.sim.persistence import SimStateError, WorldStore
from liqshell.sim.world import Market, SimParams, World, new_world

__all__ = ["ProgressBar", "SimClock", "SimSummary", "render_summary", "simulate"]

T = TypeVar("T")


class SimClock:
    """The virtual clock of a simulation: it stands still until the runner moves it."""

    def __init__(self, now_ms: int) -> None:
        self._now = now_ms

    def now_ms(self) -> int:
        """The current virtual instant."""
        return self._now

    def set(self, now_ms: int) -> None:
        """Move to ``now_ms`` (never backwards)."""
        self._now = max(self._now, now_ms)

    async def sleep_until(self, ms: int) -> None:
        """Jump to ``ms``: nothing else runs in between in a simulation."""
        self.set(ms)

    async def wait_for(self, awaitable: Awaitable[T], timeout_ms: int) -> T:
        """The simulated exchange answers at once: no timeout can pass."""
        return await awaitable


@attrs.frozen(kw_only=True)
class SimSummary:
    """What a simulation did (identical for identical parameters and seed)."""

    params: SimParams
    polls: int
    accounts: int
    entered: int
    entries: int
    recovered: int
    recoveries: int
    auctioned: int
    auctions_settled: int
    auctions_stopped: int
    never_liquidating: int
    submitted: int
    rejected: int
    cancelled: int
    filled_orders: int
    fills: int
    filled_size: Decimal
    bonus_paid: Decimal
    liquidator_take: Decimal
    final_phases: Mapping[str, int]
    spot: Mapping[str, Decimal]


class ProgressBar:
    """A plain-text progress bar on ``stream``: redrawn in place on a terminal, a line every
    10 % otherwise (logs and pipes stay readable)."""

    def __init__(self, total: int, stream: TextIO | None = None, *, width: int = 30) -> None:
        self.total = max(1, total)
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_decile = -1

    def update(self, tick: int, world: World) -> None:
        """Show progress at ``tick``."""
        fraction = min(1.0, tick / self.total)
        decile = int(fraction * 10)
        if not self.tty and decile == self._last_decile:
            return
        self._last_decile = decile
        done = int(fraction * self.width)
        elapsed = (world.now - world.params.start_ms) // 1000
        total = world.params.duration_ms // 1000
        stats = world.stats
        live = sum(
            1 for a in world.auctions.values() if a.status in ("pending", "running", "stopping")
        )
        text = (
            f"[{'#' * done}{'-' * (self.width - done)}] {fraction:4.0%} "
            f"{elapsed // 60:02d}:{elapsed % 60:02d}/{total // 60:02d}:{total % 60:02d} "
            f"BTC {world.spot['BTC']:,.0f} ETH {world.spot['ETH']:,.0f} | "
            f"orders {stats.submitted} fills {stats.fills} "
            f"auctions {live} live {stats.auctions_settled} settled"
        )
        if self.tty:
            self.stream.write("\r" + text + " " * 4)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _params_differ(stored: SimParams, wanted: SimParams) -> str:
    changed = [
        f"{field.name}={getattr(stored, field.name)}"
        for field in attrs.fields(SimParams)
        if getattr(stored, field.name) != getattr(wanted, field.name)
    ]
    return ", ".join(changed)


async def simulate(
    params: SimParams,
    *,
    config: Config | None = None,
    store: str | Path | None = None,
    record: str | Path | None = None,
    progress: ProgressBar | None = None,
    on_tick: Callable[[World], None] | None = None,
    exchange_config: Config | None = None,
    record_mode: str = "changes",
) -> SimSummary:
    """Run (or resume) the simulation of ``params`` and return its summary.

    ``store`` is the SQLite file (a temporary one when ``None``); ``record`` an optional
    JSON Lines replay log. ``exchange_config`` is what the simulated exchange's engines
    (its margin models above all) run with — ``config``, the watcher's, by default; give
    another to study a watcher whose margin model does not match the exchange's (see
    ``liqshell calibrate``). ``record_mode`` is the watcher's ``record`` (``"all"`` records
    every decision, healthy no-ops included: what calibration wants). Raises
    :class:`SimStateError` when ``store`` holds a simulation of other parameters.
    """
    config = config or Config()
    with contextlib.ExitStack() as stack:
        if store is None:
            # A throw-away store needs no durability: keep it in memory-backed tmpfs when
            # there is one (SQLite's fsync per commit is most of a run's time on disk).
            shm = Path("/dev/shm")
            where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
            folder = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="liqshell-sim-", dir=where)
            )
            store = os.path.join(folder, "sim.sqlite")
        return await _simulate(
            params,
            config,
            Path(store),
            record,
            progress,
            on_tick,
            exchange_config or config,
            record_mode,
        )
    raise AssertionError("unreachable")  # pragma: no cover


async def _simulate(  # noqa: PLR0917
    params: SimParams,
    config: Config,
    store_path: Path,
    record: str | Path | None,
    progress: ProgressBar | None,
    on_tick: Callable[[World], None] | None,
    exchange_config: Config,
    record_mode: str,
) -> SimSummary:
    from liqshell.adapters.sqlite import SqliteStore
    from liqshell.watcher import Watcher

    worlds = WorldStore(store_path)
    try:
        market = Market(params)
        loaded = worlds.load()
        if loaded is None:
            world = new_world(params, exchange_config, market)
            worlds.save(world)
            exchange = SimExchange(world, config=exchange_config, store=worlds, market=market)
        else:
            world, journal = loaded
            if world.params != params:
                raise SimStateError(
                    f"{store_path} holds a simulation with other parameters "
                    f"({_params_differ(world.params, params)}); use another --store"
                )
            exchange = SimExchange(world, config=exchange_config, store=worlds, market=market)
            exchange.replay(journal)
        states = SqliteStore(str(store_path))
        recorder: Recorder = states
        closers: list[Callable[[], Awaitable[None]]] = [states.close]
        if record is not None:
            from liqshell.adapters.jsonl import JsonlRecorder

            jsonl = JsonlRecorder(str(record))
            recorder = jsonl
            closer = getattr(jsonl, "close", None)
            if closer is not None:
                closers.append(closer)
        clock = SimClock(world.now)
        watcher = Watcher(
            portfolios=exchange,
            margin=exchange,
            quotes=exchange,
            orders=exchange,
            gateway=exchange,
            auctions=exchange,
            feed=exchange,
            store=states,
            sink=exchange,
            recorder=recorder,
            clock=clock,
            config=config,
            record=record_mode,
        )
        try:
            while not world.done:
                clock.set(world.now)
                await watcher.drain_feed()
                await watcher.run_once()
                if progress is not None:
                    progress.update(world.tick, world)
                if on_tick is not None:
                    on_tick(world)
                if world.tick >= params.ticks:
                    world.done = True
                else:
                    exchange.advance()
                worlds.save(world)
            stored = await states.load()
        finally:
            for close in closers:
                with contextlib.suppress(Exception):
                    await close()
            if progress is not None:
                progress.close()
        phases: dict[str, int] = dict.fromkeys(PHASE_TAGS.values(), 0)
        for wallet in world.accounts:
            entry = stored.get(wallet)
            tag = "healthy" if entry is None else phase_tag(entry.state.phase)
            phases[tag] += 1
        return _summary(world, phases)
    finally:
        worlds.close()


def _summary(world: World, phases: Mapping[str, int]) -> SimSummary:
    stats = world.stats
    touched = set(stats.entered) | set(stats.auctioned)
    return SimSummary(
        params=world.params,
        polls=world.tick + 1,
        accounts=len(world.accounts),
        entered=len(stats.entered),
        entries=stats.entries,
        recovered=len(stats.recovered),
        recoveries=stats.recoveries,
        auctioned=len(stats.auctioned),
        auctions_settled=stats.auctions_settled,
        auctions_stopped=stats.auctions_stopped,
        never_liquidating=len(world.accounts) - len(touched),
        submitted=stats.submitted,
        rejected=stats.rejected,
        cancelled=stats.cancelled + stats.engine_cancelled,
        filled_orders=stats.filled_orders,
        fills=stats.fills,
        filled_size=stats.filled_size,
        bonus_paid=stats.bonus_paid.quantize(Decimal("0.01")),
        liquidator_take=stats.liquidator_take.quantize(Decimal("0.01")),
        final_phases=dict(phases),
        spot=dict(sorted(world.spot.items())),
    )


def render_summary(summary: SimSummary, *, elapsed_s: float | None = None) -> str:
    """The summary as a plain-text table."""
    p = summary.params
    minutes = p.duration_ms / 60_000
    timing = f" in {elapsed_s:.1f} s" if elapsed_s is not None else ""
    shock_at = (p.shock_time - p.start_ms) // 1000
    rows: list[tuple[str, str, str]] = [
        ("accounts", "", ""),
        ("  simulated", f"{summary.accounts}", f"{summary.polls} polls"),
        ("  entered pre-liquidation", f"{summary.entered}", f"{summary.entries} entries"),
        ("  recovered", f"{summary.recovered}", f"{summary.recoveries} recoveries"),
        (
            "  auctioned",
            f"{summary.auctioned}",
            f"{summary.auctions_settled} settled, {summary.auctions_stopped} stopped",
        ),
        ("  never liquidating", f"{summary.never_liquidating}", ""),
        ("orders", "", ""),
        ("  submitted", f"{summary.submitted}", f"{summary.rejected} rejected"),
        ("  cancelled", f"{summary.cancelled}", ""),
        (
            "  filled",
            f"{summary.filled_orders}",
            f"{summary.fills} fills, {summary.filled_size:,.4f} contracts",
        ),
        ("  bonus paid", f"{summary.bonus_paid:,.2f}", "USD over theo"),
        ("  liquidator discount", f"{summary.liquidator_take:,.2f}", "USD"),
        ("final phases", "", ""),
        *((f"  {tag}", f"{count}", "") for tag, count in summary.final_phases.items()),
    ]
    label = max(len(r[0]) for r in rows)
    value = max(len(r[1]) for r in rows)
    spot = ", ".join(f"{k} {v:,.2f}" for k, v in summary.spot.items())
    lines = [
        f"simulated {summary.accounts} accounts for {minutes:g} min (seed {p.seed}, "
        f"shock {p.shock_pct:+}% at {shock_at // 60:d}:{shock_at % 60:02d}){timing}",
        *(f"{a:<{label}}  {b:>{value}}  {c}".rstrip() for a, b, c in rows),
        f"final spot: {spot}",
    ]
    return "\n".join(lines)


def wall_timer() -> Callable[[], float]:
    """Seconds since this call (for the summary line)."""
    started = time.perf_counter()
    return lambda: time.perf_counter() - started
