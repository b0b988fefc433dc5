"""Retention of a store's log, checked against every store that prunes (SQLite, PostgreSQL).

A test module builds a :class:`RetentionHarness` for its store and runs every check of
:data:`RETENTION` (``@pytest.mark.parametrize("check", RETENTION)``). The logs are written
through the store's ``begin`` and ``append`` (headers and records as a watcher writes them:
decisions followed by their outcomes, other wallets' records in between, feed items, a
``POLL`` summary ending each poll, a restart's header), except :func:`check_replay_of_a_pruned_run`,
which runs the real watcher against the simulated exchange with pruning in the background
and replays what is left.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence

from liqcore import Config
from liqshell import analysis
from liqshell.adapters import DAY_MS, Pruned, Retention
from liqshell.ports import Record, RecordingHeader, RecordKind, WatcherSettings
from liqshell.sim import SimExchange, new_world
from liqshell.sim.runner import SimClock
from liqshell.sim.world import SimParams
from liqshell.watcher import Watcher

__all__ = ["RETENTION", "Check", "RetentionHarness", "run_simulation", "written_log"]

Entry = RecordingHeader | Record


class RetentionHarness:
    """How the checks reach one kind of store: ``open(retention)`` makes a store on fresh
    data, ``entries`` reads its headers and records in order, ``pruned`` what its log says
    retention removed, ``load`` the recording as :func:`liqshell.analysis.load` reads it.
    Every store made is closed by :meth:`close_all`."""

    def __init__(
        self,
        *,
        open: Callable[[Retention], Awaitable[object]],
        entries: Callable[[object], Awaitable[list[Entry]]],
        pruned: Callable[[object], Awaitable[Pruned]],
        load: Callable[[object], Awaitable[analysis.Recording]],
    ) -> None:
        self._open = open
        self.entries = entries
        self.pruned = pruned
        self.load = load
        self._stores: list[object] = []

    async def open(self, retention: Retention) -> object:
        store = await self._open(retention)
        self._stores.append(store)
        return store

    async def close_all(self) -> None:
        for store in self._stores:
            await store.close()  # type: ignore[attr-defined]


Check = Callable[[RetentionHarness], Awaitable[None]]


def header(started: int) -> RecordingHeader:
    return RecordingHeader(config=Config(), watcher=WatcherSettings(), started=started)


def written_log(*, polls: int, wallets: int, seed: int, poll_ms: int = 5_000) -> list[Entry]:
    """A watcher-like log: a header, then polls; in a poll some wallets decide (a decision,
    often followed by its outcomes after another wallet's decision), a feed item now and
    then, and the poll's ``POLL`` summary; a restart (a second header) halfway."""
    rng = random.Random(seed)
    versions = dict.fromkeys((f"w{i:02d}" for i in range(wallets)), 0)
    log: list[Entry] = [header(0)]
    for poll in range(polls):
        now = 1_000 + poll * poll_ms
        if poll == polls // 2:
            log.append(header(now))
        pending: list[Record] = []
        for wallet in sorted(versions):
            if rng.random() < 0.5:
                continue
            versions[wallet] += 1
            log.append(
                Record(kind=RecordKind.DECISION, wallet=wallet, now=now, version=versions[wallet])
            )
            log.extend(pending)  # a previous wallet's outcomes land after this decision
            pending = []
            if rng.random() < 0.6:
                versions[wallet] += 1
                pending.append(
                    Record(
                        kind=RecordKind.OUTCOMES, wallet=wallet, now=now, version=versions[wallet]
                    )
                )
        log.extend(pending)
        if rng.random() < 0.3:
            log.append(Record(kind=RecordKind.FEED, wallet="w00", now=now, note=f"feed {poll}"))
        log.append(Record(kind=RecordKind.POLL, wallet="", now=now, note=f"poll {poll}"))
    return log


async def write(store: object, log: Sequence[Entry]) -> None:
    for entry in log:
        if isinstance(entry, RecordingHeader):
            await store.begin(entry)  # type: ignore[attr-defined]
        else:
            await store.append(entry)  # type: ignore[attr-defined]


def records_of(log: Sequence[Entry]) -> list[Record]:
    return [entry for entry in log if isinstance(entry, Record)]


def assert_whole_units_pruned(original: Sequence[Entry], kept: Sequence[Entry]) -> None:
    """What a pruned log must be: a suffix of the records, cut right after a poll's
    summary, no outcomes without their decision, opening with the header in force for its
    oldest record (and every later header)."""
    everything = records_of(original)
    remaining = records_of(kept)
    assert remaining, "retention never removes the newest records"
    cut = len(everything) - len(remaining)
    assert remaining == everything[cut:], "pruning removes the oldest records only"
    if cut:
        assert everything[cut - 1].kind is RecordKind.POLL, "whole polls are pruned"
    for index, record in enumerate(everything[cut:], start=cut):
        if record.kind is RecordKind.OUTCOMES:
            before = [r for r in everything[:index] if r.wallet == record.wallet]
            assert before
            assert before[-1].kind is RecordKind.DECISION
            assert everything.index(before[-1]) >= cut, "outcomes kept without their decision"
    position = original.index(everything[cut]) if cut < len(everything) else len(original)
    in_force = [e for e in original[:position] if isinstance(e, RecordingHeader)][-1]
    later = [e for e in original[position:] if isinstance(e, RecordingHeader)]
    assert [e for e in kept if isinstance(e, RecordingHeader)] == [in_force, *later]
    assert isinstance(kept[0], RecordingHeader), "a pruned log opens with its header"


async def check_keeps_everything_by_default(harness: RetentionHarness) -> None:
    """Without a limit nothing is pruned, however long the log."""
    store = await harness.open(Retention())
    log = written_log(polls=30, wallets=6, seed=1)
    await write(store, log)
    assert await store.prune() == Pruned()  # type: ignore[attr-defined]
    assert await harness.entries(store) == log
    assert await harness.pruned(store) == Pruned()


async def check_keep_records_prunes_the_oldest_whole_polls(harness: RetentionHarness) -> None:
    """``keep_records = N`` keeps at least the newest N records and removes every older
    whole poll it can: one poll fewer would leave fewer than N. Batches of 3 records cut
    between decisions and their outcomes; no batch separates them."""
    for seed in range(4):
        store = await harness.open(Retention(keep_records=40, batch=3))
        log = written_log(polls=30, wallets=6, seed=seed)
        await write(store, log)
        done = await store.prune()  # type: ignore[attr-defined]
        kept = await harness.entries(store)
        assert_whole_units_pruned(log, kept)
        remaining = records_of(kept)
        assert len(remaining) >= 40
        first_poll = next(i for i, r in enumerate(remaining) if r.kind is RecordKind.POLL)
        assert len(remaining) - (first_poll + 1) < 40, "an older whole poll could have gone"
        removed = len(records_of(log)) - len(remaining)
        assert done.records == removed > 0
        assert (await harness.pruned(store)).records == removed
        assert done.headers == len(log) - len(kept) - removed
        assert await store.prune() == Pruned()  # type: ignore[attr-defined]


async def check_keep_days_prunes_what_is_older(harness: RetentionHarness) -> None:
    """``keep_days = D`` keeps every record within D days of the newest record's ``now``
    and removes only older ones (whole polls); ``pruned`` says how far it went."""
    store = await harness.open(Retention(keep_days=2, batch=5))
    log = written_log(polls=24, wallets=5, seed=7, poll_ms=DAY_MS // 4)
    await write(store, log)
    await store.prune()  # type: ignore[attr-defined]
    kept = await harness.entries(store)
    assert_whole_units_pruned(log, kept)
    newest = records_of(log)[-1].now
    cutoff = newest - 2 * DAY_MS
    remaining = records_of(kept)
    removed = records_of(log)[: len(records_of(log)) - len(remaining)]
    assert removed, "the log spans 6 days: some of it goes"
    assert all(record.now < cutoff for record in removed)
    assert [r for r in records_of(log) if r.now >= cutoff] == [
        r for r in remaining if r.now >= cutoff
    ]
    pruned = await harness.pruned(store)
    assert (pruned.records, pruned.through_now) == (len(removed), removed[-1].now)


async def check_a_decision_stays_with_outcomes_past_the_limit(harness: RetentionHarness) -> None:
    """In a full log (no poll summaries) the limit may fall between a decision and its
    outcomes: the decision stays, and so does everything after it."""
    decision = Record(kind=RecordKind.DECISION, wallet="a", now=2, version=1)
    outcomes = Record(kind=RecordKind.OUTCOMES, wallet="a", now=2, version=2)
    log: list[Entry] = [
        header(0),
        Record(kind=RecordKind.DECISION, wallet="b", now=1, version=1),
        Record(kind=RecordKind.FEED, wallet="b", now=1),
        decision,
        Record(kind=RecordKind.DECISION, wallet="c", now=2, version=1),
        outcomes,
        Record(kind=RecordKind.DECISION, wallet="c", now=3, version=2),
    ]
    store = await harness.open(Retention(keep_records=3, batch=1))
    await write(store, log)
    done = await store.prune()  # type: ignore[attr-defined]
    assert done.records == 2
    assert await harness.entries(store) == [log[0], *log[3:]]


async def run_simulation(store: object, *, record: str) -> None:
    """The runner's loop: the watcher against the simulated exchange (10 accounts, 4
    minutes, a shock) with ``store`` as its store and recorder."""
    params = SimParams(accounts=10, minutes=4, seed=3)
    sim = SimExchange(new_world(params, Config()), config=Config())
    clock = SimClock(sim.world.now)
    watcher = Watcher(
        portfolios=sim, margin=sim, quotes=sim, orders=sim, gateway=sim, auctions=sim,
        feed=sim, store=store, sink=sim, recorder=store, clock=clock,  # type: ignore[arg-type]
        record=record,
    )  # fmt: skip
    for _ in range(params.ticks):
        clock.set(sim.world.now)
        await watcher.drain_feed()
        await watcher.run_once()
        sim.advance()


async def replay_what_remains(harness: RetentionHarness, store: object, keep: int) -> None:
    """Background passes ran while the watcher polled; after one more pass the recording
    loads with its header, says it was pruned, replays with 0 mismatches and has no
    version gaps but the versions before its start."""
    await store.close()  # type: ignore[attr-defined]  # waits for a pass under way
    in_background = store.pruned_total.records  # type: ignore[attr-defined]
    assert in_background > 0, "passes ran in the background while the watcher polled"
    await store.prune()  # type: ignore[attr-defined]
    recording = await harness.load(store)
    assert recording.pruned.records >= in_background
    assert recording.headers
    assert recording.header_index[0] == 0
    assert recording.config == Config()
    assert len(recording) >= keep
    assert sum(1 for _ in recording.decisions()) > 0
    trace = analysis.replay(recording)
    assert trace.mismatches == ()
    assert not trace.config_notes
    versions: dict[str, set[int]] = {}
    for record in recording.records:
        if record.commits_version:
            versions.setdefault(record.wallet, set()).add(record.version)
    assert analysis.version_gaps(versions, from_one=False) == {}
    assert analysis.version_gaps(versions, from_one=True) != {}, "the log starts later"


async def check_replay_of_a_pruned_run(harness: RetentionHarness) -> None:
    """A full log (``record = "all"``) pruned in the background while the watcher runs
    replays what remains exactly — liquidation decisions with commands among them."""
    store = await harness.open(Retention(keep_records=400, batch=25, interval_ms=1))
    await run_simulation(store, record="all")
    await replay_what_remains(harness, store, 400)
    recording = await harness.load(store)
    assert any(r.commands for _, r in recording.decisions()), "the run liquidated something"


async def check_replay_of_a_pruned_compact_run(harness: RetentionHarness) -> None:
    """A compact log (``record = "changes"``) pruned in the background while the watcher
    runs is cut after a poll's summary and replays what remains exactly."""
    store = await harness.open(Retention(keep_records=60, batch=10, interval_ms=1))
    await run_simulation(store, record="changes")
    await replay_what_remains(harness, store, 60)
    recording = await harness.load(store)
    assert any(r.kind is RecordKind.POLL for r in recording.records)


RETENTION: tuple[Check, ...] = (
    check_keeps_everything_by_default,
    check_keep_records_prunes_the_oldest_whole_polls,
    check_keep_days_prunes_what_is_older,
    check_a_decision_stays_with_outcomes_past_the_limit,
    check_replay_of_a_pruned_run,
    check_replay_of_a_pruned_compact_run,
)
