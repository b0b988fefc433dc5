"""Run one DST seed: the real watcher, the simulated exchange, the seed's faults.

A seed decides the world (accounts, books, the market path: :func:`liqshell.sim.new_world`),
the store (in memory, or SQLite for one seed in four), the configuration's timeouts and
the :class:`~liqshell.sim.dst.faults.FaultPlan`. Each tick the watcher drains the feed and
polls every account at the tick's virtual instant, then the world moves one tick. A crash
ends the watcher's life: its memory is dropped, the store and the exchange survive, and a
new watcher starts on the same store and runs the tick again. After the last tick one
more life starts without faults, drains the feed and polls (every unfinished command is
reported by its start-up). A seed with crashes is run again without them (its twin), and
the final phases of the wallets whose requests and books match are compared.

Everything runs on one thread and one event loop; SQLite runs (whose calls go through a
worker thread) step one wallet at a time, so a seed replays exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs

from liqcore import (
    AccountState,
    Config,
    Healthy,
    Liquidated,
    OpenOrder,
    StartAuction,
    SubmitOrder,
)
from liqcore.state import phase_tag
from liqshell.ports import Record, Stored
from liqshell.sim.dst.faults import (
    Crash,
    FaultPlan,
    FaultyClock,
    FaultyExchange,
    FaultyStore,
    FeedLog,
    Life,
    Tally,
    _Draws,
)
from liqshell.sim.dst.invariants import Checker, Violation
from liqshell.sim.exchange import SimExchange
from liqshell.sim.runner import SimClock
from liqshell.sim.world import Market, SimParams, World, new_world

__all__ = ["BUGS", "SeedResult", "Trace", "run_seed", "seed_setup", "trace"]

BUGS = (
    "oversize_submit",
    "hide_liquidation_orders",
    "stale_start",
    "drop_submits",
    "reuse_request_ids",
    "watcher_target_buffer",
    "watcher_bonus",
    "forget_liquidated_after_crash",
    "extra_order",
    "corrupt_state",
)
"""Planted bugs (for the tests proving each invariant check can fail); never on by default."""

MAX_RETRIES = 3
"""How often a tick is run again after crashes before the run moves on."""


@attrs.frozen(kw_only=True)
class Trace:
    """One line of a wallet's minimal trace."""

    tick: int
    what: str


@attrs.frozen(kw_only=True)
class SeedResult:
    """What one seed did."""

    seed: int
    store: str
    accounts: int
    ticks: int
    polls: int
    decisions: int
    lives: int
    faults: Mapping[str, int]
    checks: Mapping[str, int]
    violations: tuple[Violation, ...]
    compared: int
    final_phases: Mapping[str, int]

    @property
    def ok(self) -> bool:
        """No invariant was broken."""
        return not self.violations


def seed_setup(seed: int) -> tuple[SimParams, Config, str]:
    """The world's parameters, the configuration and the store kind of ``seed``."""
    draw = random.Random(f"dst-world|{seed}")
    params = SimParams(
        accounts=draw.randint(5, 9),
        minutes=draw.choice((2, 3)),
        shock_pct=Decimal(-draw.randint(10, 35)),
        seed=seed,
        rebound=Decimal(str(round(draw.uniform(0.0, 0.8), 2))),
        rebound_ms=draw.choice((60_000, 120_000)),
        auction_ms=draw.choice((30_000, 60_000, 90_000)),
        portfolio_share=Decimal("0.25"),
    )
    config = Config(
        full_escalation_timeout_ms=draw.choice((20_000, 30_000, 60_000)),
        partial_reprice_interval_ms=draw.choice((5_000, 10_000)),
    )
    store = "sqlite" if draw.random() < 0.25 else "memory"
    return params, config, store


class _Bugged:
    """A planted bug between the watcher and the faulty ports (tests only)."""

    def __init__(self, inner: object, bug: str | None, life: Life) -> None:
        self._inner = inner
        self._bug = bug
        self._life = life
        self._last_start: dict[str, StartAuction] = {}
        self._started_at: dict[str, int] = {}

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def open_orders(self, wallet: str) -> tuple[OpenOrder, ...]:
        previous = self._last_start.get(wallet)
        # stale_start: the request of an earlier tick is sent again (its auction started).
        if (
            self._bug == "stale_start"
            and previous is not None
            and self._started_at[wallet] < self._life.tick()
        ):
            del self._last_start[wallet]
            with contextlib.suppress(Exception):
                await self._inner.start(previous)  # type: ignore[attr-defined]
        orders = tuple(await self._inner.open_orders(wallet))  # type: ignore[attr-defined]
        if self._bug == "hide_liquidation_orders":
            return tuple(o for o in orders if not (o.client_id or "").startswith("liq-"))
        return orders

    async def submit(self, command: SubmitOrder) -> object:
        if self._bug == "drop_submits":
            from liqshell.ports import AnswerStatus, OrderAnswer

            return OrderAnswer(status=AnswerStatus.ACKED, order_id=1)
        if self._bug == "oversize_submit":
            command = attrs.evolve(command, size=command.size * 3)
        if self._bug == "extra_order":
            await self._inner.submit(  # type: ignore[attr-defined]
                attrs.evolve(command, request_id=command.request_id + "-x", client_id="extra")
            )
        return await self._inner.submit(command)  # type: ignore[attr-defined]

    async def start(self, command: StartAuction) -> object:
        self._last_start[command.wallet] = command
        self._started_at[command.wallet] = self._life.tick()
        return await self._inner.start(command)  # type: ignore[attr-defined]


@attrs.frozen(kw_only=True)
class _Foreign(AccountState):
    """A state the codec cannot give back as it was (it comes back as an AccountState)."""


class _BuggedStore:
    """A planted store bug (tests only): ids rewritten, states corrupted, feed skipped."""

    def __init__(self, inner: FaultyStore, bug: str | None, after_crash: bool) -> None:
        self._inner = inner
        self._bug = bug
        self._after_crash = after_crash

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def commit(
        self, wallet: str, state: AccountState, record: Record, **kwargs: object
    ) -> int:
        if self._bug == "reuse_request_ids" and record.commands:
            commands = tuple(
                attrs.evolve(c, request_id=f"req-{wallet}") if isinstance(c, SubmitOrder) else c
                for c in record.commands
            )
            record = attrs.evolve(record, commands=commands)
        if (
            self._bug == "forget_liquidated_after_crash"
            and self._after_crash
            and isinstance(state.phase, Liquidated)
        ):
            state = attrs.evolve(state, phase=Healthy())  # the settlement is lost
        if self._bug == "corrupt_state":
            state = _Foreign(**{f.name: getattr(state, f.name) for f in attrs.fields(AccountState)})
        return await self._inner.commit(wallet, state, record, **kwargs)  # type: ignore[arg-type]


@attrs.define
class _Run:
    """The state of one run of a seed (with or without crashes)."""

    seed: int
    params: SimParams
    config: Config
    store_kind: str
    plan: FaultPlan
    folder: str
    bug: str | None = None
    watcher_config: Config | None = None
    world: World = attrs.field(init=False)
    exchange: SimExchange = attrs.field(init=False)
    checker: Checker = attrs.field(init=False)
    tally: Tally = attrs.field(factory=Tally)
    lives: int = 0
    polls: int = 0
    inner_store: object = None
    feed_log: FeedLog = attrs.field(factory=FeedLog)

    def __attrs_post_init__(self) -> None:
        market = Market(self.params)
        self.world = new_world(self.params, self.config, market)
        self.exchange = SimExchange(self.world, config=self.config, market=market)
        self.checker = Checker(self.world, self.config)

    def _store(self) -> object:
        if self.inner_store is None:
            if self.store_kind == "sqlite":
                from liqshell.adapters.sqlite import SqliteStore

                self.inner_store = SqliteStore(os.path.join(self.folder, "dst.sqlite"))
            else:
                from liqshell.testing import MemoryStore

                self.inner_store = MemoryStore()
        return self.inner_store

    def _life(self, plan: FaultPlan, draws: _Draws, clock: SimClock, after_crash: bool) -> object:
        from liqshell.watcher import Watcher

        self.lives += 1
        life = Life(
            plan=plan,
            draws=draws,
            tally=self.tally,
            number=self.lives,
            on_reach=self.checker.reach,
            on_send=self.checker.sent,
            on_committed=self.checker.committed,
            committed_state=self.checker.latest.get,
            tick=lambda: self.world.tick,
        )
        ports = _Bugged(FaultyExchange(self.exchange, life, self.feed_log), self.bug, life)
        store = _BuggedStore(FaultyStore(self._store(), life), self.bug, after_crash)
        port: Any = ports  # one fake serves every port (duck-typed)
        stored: Any = store
        return Watcher(
            portfolios=port,
            margin=port,
            quotes=port,
            orders=port,
            gateway=port,
            auctions=port,
            feed=port,
            store=stored,
            sink=port,
            recorder=stored,
            clock=FaultyClock(clock, life),
            config=self.watcher_config or self.config,
            concurrency=1 if self.store_kind == "sqlite" else 4,
        )

    async def run(self, on_tick: Callable[[World], None] | None = None) -> None:
        draws = _Draws(self.seed)
        clock = SimClock(self.world.now)
        watcher = self._life(self.plan, draws, clock, after_crash=False)
        world = self.world
        while True:
            clock.set(world.now)
            for _attempt in range(MAX_RETRIES + 1):
                try:
                    await watcher.drain_feed()  # type: ignore[attr-defined]
                    await watcher.run_once()  # type: ignore[attr-defined]
                    self.polls += 1
                    break
                except Crash:
                    await _bury()
                    watcher = self._life(self.plan, draws, clock, after_crash=True)
            self.checker.tick()
            if on_tick is not None:
                on_tick(world)
            if world.tick >= self.params.ticks:
                break
            self.exchange.advance()
        # A last life without faults: its start-up reports what is unfinished.
        calm = FaultPlan(seed=self.seed)
        watcher = self._life(calm, _Draws(self.seed), clock, after_crash=False)
        await watcher.drain_feed()  # type: ignore[attr-defined]
        await watcher.run_once()  # type: ignore[attr-defined]
        self.polls += 1
        self.checker.tick()

    def records(self) -> list[Record]:
        store = self.inner_store
        if self.store_kind == "sqlite":
            from liqshell.adapters.sqlite import read_records

            return list(read_records(os.path.join(self.folder, "dst.sqlite")))
        return list(store.records)  # type: ignore[attr-defined]

    def phases(self) -> dict[str, str]:
        """The final committed phase of every wallet of the world."""
        loaded: Mapping[str, Stored] = asyncio.run(self.inner_store.load())  # type: ignore[attr-defined]
        last = {wallet: entry.state for wallet, entry in loaded.items()}
        return {
            wallet: phase_tag(last[wallet].phase) if wallet in last else "healthy"
            for wallet in sorted(self.world.accounts)
        }

    def books(self) -> dict[str, object]:
        return {
            wallet: (
                sorted((s, h.amount) for s, h in account.holdings.items()),
                account.cash,
                sorted(
                    (a.auction_id, a.status)
                    for a in self.world.auctions.values()
                    if a.wallet == wallet
                ),
            )
            for wallet, account in sorted(self.world.accounts.items())
        }


async def _bury() -> None:
    """Cancel what the dead life left running (every port of it raises Crash anyway)."""
    current = asyncio.current_task()
    leftovers = [task for task in asyncio.all_tasks() if task is not current]
    for task in leftovers:
        task.cancel()
    await asyncio.gather(*leftovers, return_exceptions=True)


def run_seed(
    seed: int,
    *,
    plan: FaultPlan | None = None,
    bug: str | None = None,
    watcher_config: Config | None = None,
    store: str | None = None,
    twin: bool = True,
) -> SeedResult:
    """Run ``seed`` (its own plan unless ``plan`` is given) and check every invariant.

    ``bug`` plants one of :data:`BUGS`; ``watcher_config`` gives the watcher another
    configuration than the checker's (a planted bug too); ``store`` forces ``"memory"`` or
    ``"sqlite"``; ``twin=False`` skips the run without crashes.
    """
    params, config, kind = seed_setup(seed)
    plan = plan if plan is not None else FaultPlan.draw(seed)
    kind = store or kind
    watcher_config = _watcher_config(bug, config) or watcher_config
    shm = Path("/dev/shm")
    where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="liqshell-dst-", dir=where) as folder:
        run = _Run(
            seed=seed,
            params=params,
            config=config,
            store_kind=kind,
            plan=plan,
            folder=folder,
            bug=bug,
            watcher_config=watcher_config,
        )
        asyncio.run(run.run())
        records = run.records()
        run.checker.log(records, config)
        phases = run.phases()
        compared = 0
        if twin and run.tally.faults.get("crash", 0):
            with tempfile.TemporaryDirectory(prefix="liqshell-dst-", dir=where) as other:
                calm = _Run(
                    seed=seed,
                    params=params,
                    config=config,
                    store_kind=kind,
                    plan=plan.without_crashes(),
                    folder=other,
                    watcher_config=watcher_config,
                    bug=bug,
                )
                asyncio.run(calm.run())
                compared = run.checker.equivalence(
                    phases=phases,
                    twin_phases=calm.phases(),
                    twin_reached=calm.checker.reached,
                    books=run.books(),
                    twin_books=calm.books(),
                )
                _close(calm.inner_store)
        _close(run.inner_store)
    decisions = sum(1 for r in records if r.kind.value == "decision")
    return SeedResult(
        seed=seed,
        store=kind,
        accounts=params.accounts,
        ticks=params.ticks + 1,
        polls=run.polls,
        decisions=decisions,
        lives=run.lives,
        faults=dict(sorted(run.tally.faults.items())),
        checks=dict(sorted(run.checker.checks.items())),
        violations=tuple(run.checker.violations),
        compared=compared,
        final_phases=dict(sorted(Counter(phases.values()).items())),
    )


def _watcher_config(bug: str | None, config: Config) -> Config | None:
    """The watcher's configuration under a planted bug that gives it another one."""
    if bug == "watcher_target_buffer":  # the watcher aims ten times higher than SPEC's target
        return attrs.evolve(config, partial_target_buffer_bps=config.partial_target_buffer_bps * 10)
    if bug == "watcher_bonus":  # the watcher pays another bonus than the log says
        return attrs.evolve(config, partial_bonus_start_bps=config.partial_bonus_start_bps + 25)
    return None


def _close(store: object) -> None:
    closer = getattr(store, "_db", None)
    if closer is not None:
        with contextlib.suppress(Exception):
            closer.close()


def trace(
    seed: int, wallet: str, *, plan: FaultPlan | None = None, bug: str | None = None
) -> list[Trace]:
    """The minimal trace of ``wallet`` in ``seed``: its decisions that did something (a
    command or a change of phase), its feed items, restarts and outcomes (from the replay
    log), and what reached the exchange, by tick."""
    params, config, kind = seed_setup(seed)
    plan = plan if plan is not None else FaultPlan.draw(seed)
    lines: list[Trace] = []
    with tempfile.TemporaryDirectory(prefix="liqshell-dst-") as folder:
        run = _Run(
            seed=seed,
            params=params,
            config=config,
            store_kind=kind,
            plan=plan,
            folder=folder,
            bug=bug,
            watcher_config=_watcher_config(bug, config),
        )
        reach = run.checker.reach

        def spy(what: str, command: object) -> None:
            if getattr(command, "wallet", None) == wallet:
                lines.append(Trace(tick=run.world.tick, what=f"exchange got {what} {command}"))
            reach(what, command)

        run.checker.reach = spy  # type: ignore[method-assign, assignment]
        asyncio.run(run.run())
        for record in run.records():
            if record.wallet != wallet:
                continue
            before = None if record.previous is None else phase_tag(record.previous.phase)
            after = None if record.state is None else phase_tag(record.state.phase)
            if record.kind.value == "decision" and not record.commands and before == after:
                continue  # minimal: a decision that did nothing says nothing
            phase = "-" if record.state is None else phase_tag(record.state.phase)
            kinds = [type(c).__name__ for c in record.commands]
            events = [type(e).__name__ for e in record.events]
            lines.append(
                Trace(
                    tick=(record.now - params.start_ms) // params.tick_ms,
                    what=f"{record.kind.value} v{record.version} now={record.now} → {phase} "
                    f"commands={kinds} events={events} {record.note}".rstrip(),
                )
            )
        _close(run.inner_store)
    return sorted(lines, key=lambda line: line.tick)
