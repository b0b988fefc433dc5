"""The ``StateStore`` contract, run against every store (SQLite, PostgreSQL, MemoryStore).

A test module builds a :class:`StoreHarness` for its store and runs every check of
:data:`CONTRACT` (``@pytest.mark.parametrize("check", CONTRACT)``) plus the Hypothesis
property :func:`check_commit_plan` over :func:`commit_plans`. Each check is a free async
function whose docstring states the property.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal

import attrs
from hypothesis import strategies as st

from liqcore import (
    AccountState,
    AuctionStarted,
    CancelOrder,
    Healthy,
    InLiquidation,
    MarginMode,
    Phase,
    PreLiquidation,
    StartAuction,
    SubmitOrder,
)
from liqcore.strategies import account_states, commands
from liqshell.ports import (
    Conflict,
    Cursor,
    Record,
    RecordKind,
    StateStore,
    Stored,
    Unfinished,
)

__all__ = [
    "CONTRACT",
    "Check",
    "Step",
    "StoreHarness",
    "check_commit_plan",
    "commit_plans",
    "decision",
    "state_of",
]


class StoreHarness:
    """How the contract reaches one kind of store.

    ``open`` makes a store on fresh, empty data; ``again`` a second store object on the
    same data as a given one (another process, as far as the store can tell);
    ``read_records`` its log in order. Every store made is closed by :meth:`close_all`.
    """

    def __init__(
        self,
        *,
        open: Callable[[], Awaitable[StateStore]],
        again: Callable[[StateStore], Awaitable[StateStore]],
        read_records: Callable[[StateStore], Awaitable[list[Record]]],
    ) -> None:
        self._open = open
        self._again = again
        self._read_records = read_records
        self._stores: list[StateStore] = []

    async def open(self) -> StateStore:
        store = await self._open()
        self._stores.append(store)
        return store

    async def again(self, store: StateStore) -> StateStore:
        other = await self._again(store)
        self._stores.append(other)
        return other

    async def records(self, store: StateStore) -> list[Record]:
        return await self._read_records(store)

    async def close_all(self) -> None:
        stores, self._stores = self._stores, []
        for store in stores:
            await store.close()


def state_of(wallet: str, n: int, *, phase: Phase | None = None) -> AccountState:
    """A distinct, valid state of ``wallet`` for each ``n``."""
    return AccountState(
        wallet=wallet,
        margin_mode=MarginMode.STANDARD,
        phase=Healthy() if phase is None else phase,
        equity=Decimal(1000 + n) / 8,
        mm_required=Decimal(n),
        updated_at=1_700_000_000_000 + n,
    )


def decision(
    state: AccountState,
    version: int,
    *,
    pending: Sequence[Unfinished] = (),
    event_id: str | None = None,
    cursor: Cursor | None = None,
    kind: RecordKind = RecordKind.DECISION,
) -> Record:
    """The record committed with ``state`` as ``version``."""
    return Record(
        kind=kind,
        wallet=state.wallet,
        now=state.updated_at,
        version=version,
        state=state,
        commands=tuple(u.command for u in pending),
        pending=tuple(pending),
        event_id=event_id,
        cursor=cursor,
    )


async def _commit(
    store: StateStore,
    state: AccountState,
    expected: int,
    *,
    pending: Sequence[Unfinished] = (),
    event_id: str | None = None,
    cursor: Cursor | None = None,
) -> int:
    record = decision(state, expected + 1, pending=pending, event_id=event_id, cursor=cursor)
    return await store.commit(state.wallet, state, record, expected_version=expected, cursor=cursor)


async def _conflicts(awaitable: Awaitable[object]) -> bool:
    try:
        await awaitable
    except Conflict:
        return True
    return False


# --- the checks ----------------------------------------------------------------------------


async def empty_store_has_no_state_cursor_or_applied_ids(h: StoreHarness) -> None:
    """A fresh store loads nothing, has no cursor and no applied event id."""
    store = await h.open()
    assert dict(await store.load()) == {}
    assert await store.cursor() is None
    assert not await store.applied("event-1")
    assert await h.records(store) == []


async def first_commit_stores_version_one(h: StoreHarness) -> None:
    """Committing a new wallet with expected_version 0 stores it as version 1."""
    store = await h.open()
    state = state_of("0xa", 1)
    assert await _commit(store, state, 0) == 1
    assert dict(await store.load()) == {"0xa": Stored(state=state, version=1)}


async def each_commit_increments_the_version(h: StoreHarness) -> None:
    """Successive commits return 1, 2, 3, … and the last state is the one loaded."""
    store = await h.open()
    versions = [await _commit(store, state_of("0xa", n), n) for n in range(5)]
    assert versions == [1, 2, 3, 4, 5]
    loaded = await store.load()
    assert loaded["0xa"] == Stored(state=state_of("0xa", 4), version=5)


async def stale_or_future_version_conflicts_and_changes_nothing(h: StoreHarness) -> None:
    """A commit whose expected version is not the stored one raises Conflict and stores
    nothing: not the state, the record, the cursor nor the event id."""
    store = await h.open()
    await _commit(store, state_of("0xa", 1), 0, cursor=1, event_id="e1")
    await _commit(store, state_of("0xa", 2), 1, cursor=2, event_id="e2")
    before = (dict(await store.load()), await store.cursor(), await h.records(store))
    for expected in (0, 1, 3, 10):
        assert await _conflicts(
            _commit(store, state_of("0xa", 9), expected, cursor=99, event_id="bad")
        )
    after = (dict(await store.load()), await store.cursor(), await h.records(store))
    assert after == before
    assert not await store.applied("bad")


async def missing_wallet_with_nonzero_version_conflicts(h: StoreHarness) -> None:
    """Expecting a version of a wallet that was never stored raises Conflict."""
    store = await h.open()
    assert await _conflicts(_commit(store, state_of("0xb", 1), 1))
    assert dict(await store.load()) == {}


async def commit_of_another_wallets_state_is_refused(h: StoreHarness) -> None:
    """A state whose wallet is not the committed wallet raises ValueError, storing nothing."""
    store = await h.open()
    state = state_of("0xa", 1)
    try:
        await store.commit("0xb", state, decision(state, 1), expected_version=0)
    except ValueError:
        pass
    else:
        raise AssertionError("expected ValueError")
    assert dict(await store.load()) == {}


async def wallets_are_versioned_independently(h: StoreHarness) -> None:
    """Each wallet has its own version; a commit of one never conflicts with another."""
    store = await h.open()
    assert await _commit(store, state_of("0xa", 1), 0) == 1
    assert await _commit(store, state_of("0xb", 1), 0) == 1
    assert await _commit(store, state_of("0xa", 2), 1) == 2
    loaded = await store.load()
    assert list(loaded) == ["0xa", "0xb"]
    assert [loaded[w].version for w in loaded] == [2, 1]


async def unfinished_commands_round_trip_and_are_replaced(h: StoreHarness) -> None:
    """``record.pending`` is stored as the wallet's unfinished commands, exactly, and the
    next commit replaces them (an empty pending clears them)."""
    store = await h.open()
    pre = PreLiquidation(
        entered_at=1,
        mm_shortfall=Decimal("12.5"),
        target_equity=Decimal("100"),
        escalation_deadline=99,
        active_order_request_ids=("r1",),
        active_order_client_ids=("c1",),
        bonus_bps=25,
    )
    pending = (
        Unfinished(
            version=1,
            index=0,
            command=CancelOrder(wallet="0xa", order_id=7, client_id=None, request_id="r0"),
        ),
        Unfinished(
            version=1,
            index=1,
            command=SubmitOrder(
                wallet="0xa",
                symbol="BTC-20261231-100000-C",
                price=Decimal("0.0001"),
                size=Decimal("1.5"),
                client_id="c1",
                request_id="r1",
            ),
        ),
        Unfinished(version=1, index=2, command=StartAuction(wallet="0xa", request_id="r2")),
    )
    state = state_of("0xa", 1, phase=pre)
    await _commit(store, state, 0, pending=pending)
    assert (await store.load())["0xa"] == Stored(state=state, version=1, unfinished=pending)
    await _commit(store, state_of("0xa", 2), 1)
    assert (await store.load())["0xa"].unfinished == ()


async def cursor_and_event_id_commit_with_the_state(h: StoreHarness) -> None:
    """The cursor and the record's event id are committed with the state, and only when
    the state is: a conflicting commit moves neither."""
    store = await h.open()
    auction = InLiquidation(auction_id="auction-1", entered_at=5, chain_start_time=4)
    await _commit(store, state_of("0xa", 1, phase=auction), 0, cursor=7, event_id="e7")
    assert await store.cursor() == 7
    assert await store.applied("e7")
    assert await _conflicts(_commit(store, state_of("0xa", 2), 0, cursor=8, event_id="e8"))
    assert await store.cursor() == 7
    assert not await store.applied("e8")
    await _commit(store, state_of("0xa", 3), 1, cursor="stream-9", event_id="e9")
    assert await store.cursor() == "stream-9"
    assert await store.applied("e7")
    assert await store.applied("e9")


async def commit_without_cursor_keeps_the_cursor(h: StoreHarness) -> None:
    """A commit without a cursor leaves the committed cursor where it was."""
    store = await h.open()
    await _commit(store, state_of("0xa", 1), 0, cursor=3)
    await _commit(store, state_of("0xa", 2), 1)
    assert await store.cursor() == 3


async def commit_cursor_moves_the_cursor_with_its_record(h: StoreHarness) -> None:
    """commit_cursor moves the cursor, marks the record's event id applied and logs the
    record, without touching any state."""
    store = await h.open()
    await _commit(store, state_of("0xa", 1), 0)
    item = Record(
        kind=RecordKind.FEED,
        wallet="0xunknown",
        now=5,
        events=(AuctionStarted(auction_id="auction-3", chain_start_time=2),),
        event_id="e5",
        cursor=5,
        note="unknown wallet",
    )
    await store.commit_cursor(5, item)
    assert await store.cursor() == 5
    assert await store.applied("e5")
    assert list(await store.load()) == ["0xa"]
    quiet = Record(kind=RecordKind.FEED, wallet="0xa", now=6, cursor=6)
    await store.commit_cursor(6, quiet)
    assert await store.cursor() == 6
    assert (await h.records(store))[-2:] == [item, quiet]


async def records_are_read_back_in_commit_order(h: StoreHarness) -> None:
    """Every committed record is read back, equal and in the order committed."""
    store = await h.open()
    written: list[Record] = []
    for n in range(4):
        for wallet in ("0xa", "0xb"):
            state = state_of(wallet, n)
            record = decision(state, n + 1, event_id=f"{wallet}-{n}", cursor=n)
            await store.commit(wallet, state, record, expected_version=n, cursor=n)
            written.append(record)
    feed = Record(kind=RecordKind.FEED, wallet="0xc", now=1, event_id="x", cursor=10)
    await store.commit_cursor(10, feed)
    written.append(feed)
    assert await h.records(store) == written


async def a_second_store_on_the_same_data_sees_and_respects_commits(h: StoreHarness) -> None:
    """Two store objects on the same data see each other's commits, cursor and applied
    ids, and compare-and-set holds between them."""
    one = await h.open()
    two = await h.again(one)
    await _commit(one, state_of("0xa", 1), 0, cursor=1, event_id="e1")
    assert (await two.load())["0xa"].version == 1
    assert await two.cursor() == 1
    assert await two.applied("e1")
    assert await _commit(two, state_of("0xa", 2), 1) == 2
    assert await _conflicts(_commit(one, state_of("0xa", 3), 1))
    assert (await one.load())["0xa"] == Stored(state=state_of("0xa", 2), version=2)


async def concurrent_commits_of_one_version_have_one_winner(h: StoreHarness) -> None:
    """Of several commits racing on the same expected version, exactly one succeeds."""
    first = await h.open()
    stores = [first] + [await h.again(first) for _ in range(3)]
    await _commit(first, state_of("0xa", 0), 0)
    outcomes = await asyncio.gather(
        *(_commit(store, state_of("0xa", 10 + i), 1) for i, store in enumerate(stores * 2)),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if o == 2]
    losers = [o for o in outcomes if isinstance(o, Conflict)]
    assert len(winners) == 1
    assert len(losers) == len(outcomes) - 1
    assert (await first.load())["0xa"].version == 2
    assert len(await h.records(first)) == 2


async def racing_writers_win_each_version_exactly_once(h: StoreHarness) -> None:
    """Writers that each read the version and try to commit the next one, concurrently,
    win every version exactly once and lose the rest with Conflict."""
    first = await h.open()
    stores = [first] + [await h.again(first) for _ in range(2)]
    wins: list[tuple[int, int]] = []

    async def writer(index: int, store: StateStore) -> None:
        for attempt in range(6):
            loaded = await store.load()
            version = loaded["0xa"].version if "0xa" in loaded else 0
            state = state_of("0xa", 100 * index + attempt)
            with contextlib.suppress(Conflict):
                wins.append((await _commit(store, state, version), index))

    await asyncio.gather(*(writer(i, s) for i, s in enumerate(stores)))
    versions = sorted(version for version, _ in wins)
    assert versions == list(range(1, len(versions) + 1))
    stored = (await first.load())["0xa"]
    assert stored.version == len(versions)
    assert [r.version for r in await h.records(first)] == versions


async def odd_wallet_and_event_ids_are_stored_and_found(h: StoreHarness) -> None:
    """Wallet and event ids with NUL, lone surrogates or look-alike escapes are stored,
    loaded and found as they are, and never collide."""
    store = await h.open()
    wallets = ["0x\x00a", 'json:"0x\\u0000a"', "0x\ud800", "0xa"]
    events = ["\x00", 'json:"\\u0000"', "\udfff", "e"]
    for wallet, event_id in zip(wallets, events, strict=True):
        await _commit(store, state_of(wallet, 1), 0, event_id=event_id, cursor=event_id)
    loaded = await store.load()
    assert sorted(loaded) == sorted(wallets)
    assert all(loaded[w].state.wallet == w for w in wallets)
    for event_id in events:
        assert await store.applied(event_id)
    assert not await store.applied('json:"\\u0000\\u0000"')
    assert await store.cursor() == "e"
    assert [r.wallet for r in await h.records(store)] == wallets
    await store.commit_cursor(
        "x", Record(kind=RecordKind.FEED, wallet="\x00", now=1, event_id="\x00\x00")
    )
    assert await store.applied("\x00\x00")


async def store_is_usable_after_close(h: StoreHarness) -> None:
    """After close(), the same store object serves calls again (reconnecting)."""
    store = await h.open()
    await _commit(store, state_of("0xa", 1), 0)
    await store.close()
    assert await _commit(store, state_of("0xa", 2), 1) == 2
    assert (await store.load())["0xa"].version == 2


Check = Callable[[StoreHarness], Awaitable[None]]
"""One check of the contract."""

CONTRACT: tuple[Check, ...] = (
    empty_store_has_no_state_cursor_or_applied_ids,
    first_commit_stores_version_one,
    each_commit_increments_the_version,
    stale_or_future_version_conflicts_and_changes_nothing,
    missing_wallet_with_nonzero_version_conflicts,
    commit_of_another_wallets_state_is_refused,
    wallets_are_versioned_independently,
    unfinished_commands_round_trip_and_are_replaced,
    cursor_and_event_id_commit_with_the_state,
    commit_without_cursor_keeps_the_cursor,
    commit_cursor_moves_the_cursor_with_its_record,
    records_are_read_back_in_commit_order,
    a_second_store_on_the_same_data_sees_and_respects_commits,
    concurrent_commits_of_one_version_have_one_winner,
    racing_writers_win_each_version_exactly_once,
    odd_wallet_and_event_ids_are_stored_and_found,
    store_is_usable_after_close,
)
"""Every check; run each against a fresh store."""


# --- the property --------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Step:
    """One commit attempt of a plan: ``offset`` from the wallet's true version (0 wins)."""

    wallet: str
    offset: int
    state: AccountState
    pending: tuple[Unfinished, ...]
    cursor: Cursor | None
    event_id: str | None


WALLETS = ("0xa", "0xb", "0xc")


@st.composite
def _steps(draw: st.DrawFn) -> Step:
    wallet = draw(st.sampled_from(WALLETS))
    pending = tuple(
        Unfinished(version=0, index=i, command=command)
        for i, command in enumerate(draw(st.lists(commands(wallet=wallet), max_size=2)))
    )
    return Step(
        wallet=wallet,
        offset=draw(st.sampled_from((0, 0, 0, -1, 1))),
        state=draw(account_states(wallet=wallet)),
        pending=pending,
        cursor=draw(st.none() | st.integers(0, 2**53) | st.text(max_size=8)),
        event_id=draw(st.none() | st.text(min_size=1, max_size=6)),
    )


def commit_plans() -> st.SearchStrategy[list[Step]]:
    """Short sequences of commit attempts on a few wallets, most of them at the right version."""
    return st.lists(_steps(), min_size=1, max_size=6)


async def check_commit_plan(h: StoreHarness, plan: Sequence[Step]) -> None:
    """Any sequence of commits leaves the store equal to a model: a commit at the stored
    version wins (state, unfinished, record, cursor, event id all stored), any other
    raises Conflict and changes nothing."""
    store = await h.open()
    stored: dict[str, Stored] = {}
    cursor: Cursor | None = None
    applied: set[str] = set()
    log: list[Record] = []
    for step in plan:
        current = stored[step.wallet].version if step.wallet in stored else 0
        expected = max(0, current + step.offset)
        version = expected + 1
        pending = tuple(attrs.evolve(u, version=version) for u in step.pending)
        record = decision(
            step.state, version, pending=pending, event_id=step.event_id, cursor=step.cursor
        )
        try:
            got = await store.commit(
                step.wallet, step.state, record, expected_version=expected, cursor=step.cursor
            )
        except Conflict:
            assert expected != current
            continue
        assert expected == current
        assert got == version
        stored[step.wallet] = Stored(state=step.state, version=version, unfinished=pending)
        if step.cursor is not None:
            cursor = step.cursor
        if step.event_id is not None:
            applied.add(step.event_id)
        log.append(record)
    assert dict(await store.load()) == dict(sorted(stored.items()))
    assert await store.cursor() == cursor
    for step in plan:
        if step.event_id is not None:
            assert await store.applied(step.event_id) == (step.event_id in applied)
    assert await h.records(store) == log
