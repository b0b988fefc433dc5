"""Faults through the real adapters: what tests/liqshell/test_watcher.py does not cover.

The fakes there already cover, one poll at a time: each answer of each port (rejections,
``NotSent``, unknown outcomes, delays past ``engine_response_timeout_ms``), benign cancel
rejections, a margin source raising for one wallet, a NaN quote. Here the same faults come
through the real adapters and services, and over whole runs:

* the order engine on NATS (:mod:`tests.liqshell.engine_service`): late answers (past the
  gateway's timeout and past the watcher's), lost requests, rejections, the documented
  error replies, benign and other cancel rejections;
* the NATS server restarting while the watcher runs (requests ``NotSent`` meanwhile, the
  adapters reconnect by themselves, no state lost);
* PostgreSQL stopped for a poll and restarted while a decision executes (nothing executed
  without a commit, the outcomes committed after the restart, no version lost);
* over a simulated run on SQLite, a margin source that keeps raising for one wallet and a
  quote feed that keeps sending NaN for one symbol: those wallets are skipped with their
  stored state untouched, every other wallet goes on.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path

import attrs
import pytest
from prometheus_client import CollectorRegistry

from liqcore import (
    AccountReset,
    CancelOrder,
    Config,
    Portfolio,
    PreLiquidation,
    Quote,
    StartAuction,
    StopAuction,
    SubmitOrder,
    to_decimal,
)
from liqshell import Watcher
from liqshell.adapters import StoreUnavailable
from liqshell.adapters.postgres import PostgresStore
from liqshell.adapters.sqlite import SqliteStore
from liqshell.ports import (
    AuctionReceipt,
    MarginReport,
    OrderAnswer,
    PollReport,
    Record,
    RecordKind,
)
from liqshell.sim import SimClock, SimExchange, SimParams, new_world
from liqshell.sim.world import Market
from tests.liqshell.engine_service import CONFIG, Rig, Script, W, eventually, open_rig
from tests.liqshell.services import NatsServer, PostgresServer

_prefixes = itertools.count(1)


@pytest.fixture
async def rig(nats_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    """The NATS engine with SPEC §8's liquidatable account, and the watcher's adapters."""
    async with open_rig(nats_url, tmp_path, f"faults{next(_prefixes)}") as opened:
        yield opened


def tracked(phase: object) -> tuple[str, ...]:
    assert isinstance(phase, PreLiquidation), phase
    return phase.active_order_client_ids


# --------------------------------------------------------------------------- the order engine


SUBMIT_FAULTS = [
    # id, script, watcher's engine_response_timeout_ms, gateway timeout, tracked, at the engine
    ("rejected", Script(reject="price outside the band"), 10_000, 2_000, False, False),
    ("not-sent-reply", Script(error="not_sent"), 10_000, 2_000, False, False),
    ("outcome-unknown-reply", Script(error="outcome_unknown"), 10_000, 2_000, True, True),
    ("late-past-gateway-timeout", Script(delay_s=1.0), 10_000, 300, True, True),
    ("late-past-watcher-timeout", Script(delay_s=1.0), 300, 2_000, True, True),
    ("lost", Script(lost=True), 10_000, 300, True, False),
]


@pytest.mark.services
@pytest.mark.parametrize(
    ("script", "response_ms", "gateway_ms", "kept", "landed"),
    [case[1:] for case in SUBMIT_FAULTS],
    ids=[case[0] for case in SUBMIT_FAULTS],
)
async def test_faults_submit_answers_over_nats_fold_in_and_reconcile_from_the_snapshot(
    rig: Rig, script: Script, response_ms: int, gateway_ms: int, kept: bool, landed: bool
) -> None:
    """A rejected or unsent submit is dropped from tracking at once; one whose outcome is
    unknown (error reply, answer too late, request lost) stays tracked and unfinished until
    the next snapshot tells: tracked exactly when the order is at the engine. It is never
    sent again, and the reprice clock is not reset."""
    rig.engine.script("submit", script)
    config = attrs.evolve(CONFIG, engine_response_timeout_ms=response_ms)
    watcher = rig.watcher(config=config, gateway_timeout_ms=gateway_ms)
    await watcher.run_once()
    (submit,) = [r.command for r in rig.engine.requests if r.kind == "submit"]
    assert isinstance(submit, SubmitOrder)
    first = (await rig.store.load())[W]
    assert tracked(first.state.phase) == ((submit.client_id,) if kept else ())
    unfinished = [type(u.command) for u in first.unfinished]
    assert unfinished == ([SubmitOrder] if kept else [])
    assert (submit.client_id in rig.client_ids()) is landed

    rig.clock.set(11_000)  # the reprice is not due: only the snapshot can tell
    await watcher.run_once()
    after = (await rig.store.load())[W]
    assert tracked(after.state.phase) == ((submit.client_id,) if landed else ())
    assert after.unfinished == ()
    assert rig.engine.kinds().count("submit") == 1
    phase = after.state.phase
    assert isinstance(phase, PreLiquidation)
    assert phase.last_reprice_at == 10_000


@pytest.mark.services
@pytest.mark.parametrize(
    ("script", "benign"),
    [
        (Script(reject="Order already filled", act=True), True),
        (Script(reject="order not found", act=True), True),
        (Script(reject="engine busy, try later"), False),
    ],
    ids=["already-filled", "not-found", "busy"],
)
async def test_faults_cancel_rejections_over_nats_benign_resteps_other_retries(
    rig: Rig, script: Script, benign: bool
) -> None:
    """A reprice cancel rejected because the order is gone anyway counts as confirmed (the
    wallet is re-stepped at once and the new order goes out); any other rejection leaves the
    order tracked, and the next step cancels it again."""
    watcher = rig.watcher()
    await watcher.run_once()
    first = tracked((await rig.state()).phase)
    rig.engine.script("cancel", script)
    rig.clock.set(15_000)
    await watcher.run_once()
    if benign:
        assert rig.engine.kinds()[2:] == ["cancel", "submit"]
        assert tracked((await rig.state()).phase) == (f"liq-{W}-15001-0",)
        return
    assert rig.engine.kinds()[2:] == ["cancel"]
    assert tracked((await rig.state()).phase) == first
    assert rig.client_ids() == list(first)
    rig.clock.set(16_000)
    await watcher.run_once()
    assert rig.engine.kinds()[3:] == ["cancel", "submit"]
    assert rig.client_ids() == [f"liq-{W}-16001-0"]


# --------------------------------------------------------------------------- NATS restarts


async def reconnected(rig: Rig) -> None:
    """Wait until both sides are connected to the restarted server again."""
    client = await rig.connector.client()
    await eventually(lambda: client.is_connected and rig.engine.client.is_connected)


def versions(records: Sequence[Record], wallet: str) -> list[int]:
    """The versions committed with a state, in log order."""
    kinds = (RecordKind.DECISION, RecordKind.OUTCOMES, RecordKind.RESTART)
    return [
        r.version
        for r in records
        if r.wallet == wallet
        and (r.kind in kinds or (r.kind is RecordKind.FEED and r.note == "applied"))
    ]


@pytest.mark.services
async def test_faults_nats_restart_mid_run_fails_fast_then_resumes_with_no_state_lost(
    rig: Rig, nats_server: NatsServer
) -> None:
    """While the NATS server is down the reprice cancel is NotSent at once (nothing is
    re-stepped or submitted, the feed read fails softly, the decision is committed); once it
    is back the adapters reconnect by themselves, the next poll reprices, the feed resumes
    from its cursor, and the log holds every version once."""
    engine = rig.engine
    watcher = rig.watcher()
    await watcher.run_once()
    before = await rig.state()
    entered = tracked(before.phase)
    await asyncio.to_thread(nats_server.stop)
    try:
        rig.clock.set(15_000)
        report = await watcher.run_once()
        assert (report.stepped, report.skipped) == (1, 0)
        assert await watcher.drain_feed() == 0
        during = await rig.state()
        assert tracked(during.phase) == entered
        assert during.updated_at == 15_000
    finally:
        await asyncio.to_thread(nats_server.start)
    await reconnected(rig)
    assert engine.kinds() == ["cancel", "submit"]  # nothing reached the engine meanwhile
    rig.clock.set(16_000)
    await watcher.run_once()
    assert engine.kinds()[2:] == ["cancel", "submit"]
    assert tracked((await rig.state()).phase) == (f"liq-{W}-16001-0",)
    assert rig.client_ids() == [f"liq-{W}-16001-0"]
    await engine.chain("0xother", AccountReset(), "reset-after-the-restart")
    rig.clock.set(17_000)
    assert await watcher.drain_feed() == 0  # read from the stream that outlived the restart
    assert watcher.cursor == 1
    final = (await rig.store.load())[W]
    assert versions(list(rig.store.records(wallet=W)), W) == list(range(1, final.version + 1))


@pytest.mark.services
async def test_faults_publishes_lost_in_a_nats_outage_reach_the_stream_after_a_restart(
    rig: Rig, nats_server: NatsServer
) -> None:
    """The state changes whose publish failed while NATS was down are published (under their
    original key) once a restarted watcher runs, even if decisions were committed since."""
    watcher = rig.watcher()
    await rig.connector.client()  # connected: requests fail at once while the server is down
    await asyncio.to_thread(nats_server.stop)
    try:
        await watcher.run_once()  # the entry: its publishes (and requests) fail
    finally:
        await asyncio.to_thread(nats_server.start)
    await reconnected(rig)
    lost = {f"{W}:{u.version}:{u.index}" for u in (await rig.store.load())[W].unfinished}
    assert f"{W}:1:0" in lost
    rig.clock.set(11_000)
    await watcher.run_once()  # NATS is back: a later decision is committed and executed
    restarted = rig.watcher()
    rig.clock.set(12_000)
    await restarted.run_once()
    await rig.engine.settle()
    published = {key for key, _ in rig.engine.published}
    assert lost <= published


# --------------------------------------------------------------------------- PostgreSQL

SIM = SimParams(accounts=8, minutes=4, seed=4)


@attrs.define
class Sender:
    """The simulated exchange's order gateway and auction executor, recording each request
    and running ``before`` (once) ahead of the first submit or cancel it is armed for."""

    exchange: SimExchange
    sent: list[str] = attrs.Factory(list)
    before: list[Callable[[], None]] = attrs.Factory(list)

    def _hook(self) -> None:
        while self.before:
            self.before.pop()()

    async def submit(self, command: SubmitOrder) -> OrderAnswer:
        self._hook()
        self.sent.append(command.request_id)
        return await self.exchange.submit(command)

    async def cancel(self, command: CancelOrder) -> OrderAnswer:
        self._hook()
        self.sent.append(command.request_id)
        return await self.exchange.cancel(command)

    async def start(self, command: StartAuction) -> AuctionReceipt:
        self.sent.append(command.request_id)
        return await self.exchange.start(command)

    async def stop(self, command: StopAuction) -> None:
        self.sent.append(command.request_id)
        await self.exchange.stop(command)


@attrs.define
class Broken:
    """The simulated exchange's margin and quote sources, failing for chosen wallets and
    symbols: the margin engine times out, the quote feed sends NaN."""

    exchange: SimExchange
    margin_down: set[str] = attrs.Factory(set)
    nan: set[str] = attrs.Factory(set)

    async def margin(self, wallet: str, portfolio: Portfolio | None) -> MarginReport:
        if wallet in self.margin_down:
            raise TimeoutError(f"margin engine did not answer for {wallet}")
        return await self.exchange.margin(wallet, portfolio)

    async def quotes(self, symbols: Sequence[str]) -> Mapping[str, Quote]:
        books = dict(await self.exchange.quotes(symbols))
        for symbol in sorted(self.nan & set(symbols)):
            raw = {"best_bid": "NaN", "best_ask": "NaN", "mid": "NaN"}
            books[symbol] = Quote(**{k: to_decimal(v, f"{symbol}.{k}") for k, v in raw.items()})
        return books


@attrs.define
class SimRun:
    """A watcher on the simulated exchange (through :class:`Sender` and :class:`Broken`),
    ticked by the test."""

    exchange: SimExchange
    sender: Sender
    broken: Broken
    clock: SimClock
    watcher: Watcher
    registry: CollectorRegistry

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(f"liqshell_{name}", labels)
        return 0.0 if value is None else value

    @property
    def tick(self) -> int:
        return self.exchange.world.tick

    async def poll(self) -> tuple[int, int]:
        """Drain the feed and poll at the current tick; (stepped, skipped)."""
        report = await self.report()
        return report.stepped, report.skipped

    async def report(self) -> PollReport:
        """Drain the feed and poll at the current tick; the poll's report."""
        self.clock.set(self.exchange.world.now)
        await self.watcher.drain_feed()
        return await self.watcher.run_once()

    def advance(self) -> None:
        self.exchange.advance()


def sim_run(
    store: SqliteStore | PostgresStore, params: SimParams = SIM, *, record: str = "changes"
) -> SimRun:
    """A fresh world of ``params`` and a watcher on it committing to ``store`` (``record``:
    the watcher's record mode)."""
    market = Market(params)
    exchange = SimExchange(new_world(params, Config(), market), config=Config(), market=market)
    sender, broken = Sender(exchange), Broken(exchange)
    clock = SimClock(exchange.world.now)
    registry = CollectorRegistry()
    watcher = Watcher(
        portfolios=exchange,
        margin=broken,
        quotes=broken,
        orders=exchange,
        gateway=sender,
        auctions=sender,
        feed=exchange,
        store=store,
        sink=exchange,
        recorder=store,
        clock=clock,
        metrics=registry,
        record=record,
    )
    return SimRun(
        exchange=exchange,
        sender=sender,
        broken=broken,
        clock=clock,
        watcher=watcher,
        registry=registry,
    )


def decided(records: Sequence[Record]) -> list[str]:
    """The request ids of every committed decision, in log order."""
    return [
        request
        for r in records
        if r.kind is RecordKind.DECISION
        for c in r.commands
        if (request := getattr(c, "request_id", None)) is not None
    ]


@attrs.define
class CommitFault:
    """The store, with one fault injected at a commit: once ``armed``, the next commit of an
    ``OUTCOMES`` record raises StoreUnavailable before reaching PostgreSQL (what a commit
    sent as the server restarts gets), so the retry path runs whatever the timing."""

    inner: PostgresStore
    armed: bool = False
    injected: int = 0

    async def commit(self, wallet: str, state: object, record: Record, **kwargs: object) -> int:
        if self.armed and record.kind is RecordKind.OUTCOMES:
            self.armed = False
            self.injected += 1
            raise StoreUnavailable("injected: the commit met the restarting server")
        return await self.inner.commit(wallet, state, record, **kwargs)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@pytest.mark.services
async def test_faults_postgres_down_for_a_poll_then_restarted_mid_decision_loses_nothing(
    postgres_dsn: str,
    pg_schema: str,
    postgres_server: PostgresServer,
) -> None:
    """With PostgreSQL down for a poll every wallet is skipped and nothing is executed (no
    decision without a commit). PostgreSQL restarted as after a crash while a decision's
    submit or cancel runs: the outcomes are committed once it is back (no wallet
    quarantined). The outcome commit after the restart is made to fail once (injected at the
    commit, so it does not hang on timing) and is retried. Over the run the watcher's states
    equal the store's, every version of the log is committed once and every committed request
    reached the exchange once."""
    store = PostgresStore(postgres_dsn, schema=pg_schema, timeout_ms=1_500)
    faulty = CommitFault(store)
    run = sim_run(faulty)  # type: ignore[arg-type]
    down_at, restart_from = 9, 10  # the shock is at tick 7: liquidations run from tick 8
    skipped_down = sent_down = stepped_down_needing_commit = -1
    try:
        while True:
            if run.tick == down_at:
                await asyncio.to_thread(postgres_server.stop, "immediate")
                try:
                    sent = len(run.sender.sent)
                    report = await run.report()
                    stepped, skipped_down = report.stepped - report.noops, report.skipped
                    stepped_down_needing_commit = report.skipped
                    skipped_down += report.noops  # healthy no-ops need no store
                    sent_down = len(run.sender.sent) - sent
                    assert stepped == 0
                finally:
                    await asyncio.to_thread(postgres_server.start)
            else:
                if run.tick == restart_from:

                    def restart() -> None:
                        postgres_server.restart("immediate")
                        faulty.armed = True

                    run.sender.before.append(restart)
                await run.poll()
            assert run.watcher.quarantined == frozenset(), run.tick
            if run.tick >= SIM.ticks:
                break
            run.advance()
        loaded = await store.load()
        records = [record async for record in store.records()]
    finally:
        await store.close()
    assert run.sender.before == [], "the restart never ran: no submit or cancel after it"
    assert (skipped_down, sent_down) == (len(run.exchange.world.accounts), 0)
    # Every decision that had to be committed failed (the healthy no-ops needed no commit).
    assert stepped_down_needing_commit >= 1
    assert run.metric("commit_failures_total", kind="decision") >= stepped_down_needing_commit
    assert faulty.injected == 1
    assert run.metric("commit_failures_total", kind="outcomes") >= 1  # the injected fault
    assert dict(run.watcher.states) == {w: s.state for w, s in loaded.items()}
    for wallet, entry in loaded.items():
        assert versions(records, wallet) == list(range(1, entry.version + 1)), wallet
        assert entry.unfinished == ()
    assert sorted(run.sender.sent) == sorted(decided(records))
    assert len(set(run.sender.sent)) == len(run.sender.sent)


# --------------------------------------------------------------------------- bad observations

FAULT_TICKS = 6


async def test_faults_margin_raising_and_nan_quotes_skip_only_their_wallets_over_a_run(
    tmp_path: Path,
) -> None:
    """For a stretch of a simulated run the margin engine keeps failing for a wallet in
    pre-liquidation and the quote feed keeps sending NaN for a symbol of another wallet:
    exactly the wallets concerned are skipped each poll with their stored state untouched,
    every other wallet is stepped each poll; when the faults end, they are stepped again."""
    store = SqliteStore(tmp_path / "faults.sqlite")
    run = sim_run(store, record="all")  # every decision committed: versions count the polls
    world = run.exchange.world
    try:
        liquidating: list[str] = []
        while not liquidating:
            assert run.tick < SIM.ticks, "no wallet entered pre-liquidation"
            await run.poll()
            run.advance()
            states = run.watcher.states
            liquidating = [w for w, s in states.items() if isinstance(s.phase, PreLiquidation)]
        margin_down = liquidating[0]
        other = next(
            w for w in sorted(world.accounts) if w != margin_down and world.accounts[w].holdings
        )
        symbol = sorted(world.accounts[other].holdings)[0]
        holders = {w for w, a in world.accounts.items() if symbol in a.holdings}
        broken = {margin_down, *holders}
        run.broken.margin_down.add(margin_down)
        run.broken.nan.add(symbol)
        before = dict(await store.load())
        for _ in range(FAULT_TICKS):
            checked = {w for w, a in world.accounts.items() if a.holdings} | set(liquidating)
            stepped, skipped = await run.poll()
            assert (stepped, skipped) == (len(checked - broken), len(broken))
            run.advance()
        during = dict(await store.load())
        for wallet in sorted(during):
            if wallet in broken:
                assert during[wallet] == before[wallet], wallet
            elif world.accounts[wallet].holdings:
                assert during[wallet].version >= before[wallet].version + FAULT_TICKS, wallet
        run.broken.margin_down.clear()
        run.broken.nan.clear()
        stepped, skipped = await run.poll()
        assert skipped == 0
        after = dict(await store.load())
        assert all(after[w].version > during[w].version for w in broken if w in during)
    finally:
        await store.close()
