"""The reduce-only walk, cancel targets and benign cancel rejections (SPEC §5, §8.3–8.4)."""

from __future__ import annotations

import decimal
import random
from collections.abc import Mapping, Sequence
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liqcore.inputs import OpenOrder, Side
from liqcore.reduce_only import (
    CancelTarget,
    cancel_targets,
    is_benign_cancel_rejection,
    is_liquidation_order,
    is_position_reduce_only,
    liquidation_client_id,
    reduce_only_order_ids,
)
from liqcore.strategies import decimals

W = "W"
CALL = "BTC-20261231-100000-C"
PUT = "ETH-20261231-3000-P"
PERP = "BTC-PERP"


def order(
    order_id: int,
    *,
    side: Side = Side.BUY,
    size: str = "1",
    created_at: int = 0,
    client_id: str | None = None,
    symbol: str = CALL,
    is_perp: bool = False,
) -> OpenOrder:
    return OpenOrder(
        order_id=order_id,
        symbol=symbol,
        side=side,
        price=Decimal(100),
        original_size=Decimal(size),
        remaining_size=Decimal(size),
        client_id=client_id,
        created_at=created_at,
        is_perp=is_perp,
    )


def ids(targets: Sequence[CancelTarget]) -> list[int]:
    return [target.order_id for target in targets]


# --- is_position_reduce_only -------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "new", "expected"),
    [
        ("-1", "0", True),
        ("-1", "-0.5", True),
        ("1", "0.25", True),
        ("1", "0", True),
        ("-1", "0.5", False),  # crosses zero
        ("1", "-0.1", False),  # crosses zero
        ("-1", "-1", False),  # no change
        ("-1", "-2", False),  # grows
        ("2", "3", False),  # grows
        ("0", "0", False),  # nothing to reduce
        ("0", "1", False),
    ],
)
def test_is_position_reduce_only_hand_cases(current: str, new: str, expected: bool) -> None:
    """Reduce-only iff the position is non-zero, does not cross zero and shrinks."""
    assert is_position_reduce_only(Decimal(current), Decimal(new)) is expected


# --- reduce_only_order_ids ---------------------------------------------------------------


def test_reduce_only_order_ids_seed_two_buys_only_older_kept() -> None:
    """Seed: position −1, BUY 1 @t10 (100) and BUY 1 @t20 (101) → only 100 is reduce-only."""
    orders = [order(101, created_at=20), order(100, created_at=10)]
    assert reduce_only_order_ids({CALL: Decimal(-1)}, orders) == frozenset({100})


def test_reduce_only_order_ids_same_time_ties_by_order_id() -> None:
    """Orders created at the same instant are walked by order id."""
    orders = [order(9, created_at=5), order(3, created_at=5)]
    assert reduce_only_order_ids({CALL: Decimal(-1)}, orders) == frozenset({3})


def test_reduce_only_order_ids_crossing_order_not_kept() -> None:
    """A BUY larger than the short would cross zero: not reduce-only; a later fitting one is."""
    orders = [order(1, size="2", created_at=1), order(2, size="0.5", created_at=2)]
    assert reduce_only_order_ids({CALL: Decimal(-1)}, orders) == frozenset({2})


def test_reduce_only_order_ids_growing_side_not_kept() -> None:
    """A SELL on a short and a BUY on a long grow the position: never reduce-only."""
    orders = [
        order(1, side=Side.SELL),
        order(2, side=Side.BUY, symbol=PUT),
        order(3, side=Side.SELL, symbol=PUT, size="0.5"),
    ]
    kept = reduce_only_order_ids({CALL: Decimal(-1), PUT: Decimal(1)}, orders)
    assert kept == frozenset({3})


def test_reduce_only_order_ids_missing_position_counts_as_zero() -> None:
    """An order on a symbol without a position can never be reduce-only."""
    assert reduce_only_order_ids({}, [order(1)]) == frozenset()


def test_reduce_only_order_ids_perp_counts_against_its_symbol() -> None:
    """Perp orders reduce the perp position like any other order."""
    orders = [order(1, symbol=PERP, side=Side.SELL, size="2", is_perp=True)]
    assert reduce_only_order_ids({PERP: Decimal(3)}, orders) == frozenset({1})
    assert reduce_only_order_ids({PERP: Decimal(1)}, orders) == frozenset()


def test_reduce_only_order_ids_independent_of_caller_decimal_context() -> None:
    """A caller's 2-digit context cannot round −12.34 + 1.23 to −11 and so judge the exact
    remainder 11.11 as crossing zero."""
    orders = [order(1, size="1.23", created_at=1), order(2, size="11.11", created_at=2)]
    expected = reduce_only_order_ids({CALL: Decimal("-12.34")}, orders)
    assert expected == frozenset({1, 2})
    with decimal.localcontext() as context:
        context.prec = 2
        context.traps[decimal.Inexact] = True
        assert reduce_only_order_ids({CALL: Decimal("-12.34")}, orders) == expected


def test_reduce_only_order_ids_first_group_walked_before_older_orders() -> None:
    """Orders named in ``first`` take the position before older orders do."""
    orders = [order(1, created_at=1, client_id="user"), order(2, created_at=9, client_id="liq")]
    assert reduce_only_order_ids({CALL: Decimal(-1)}, orders) == frozenset({1})
    assert reduce_only_order_ids({CALL: Decimal(-1)}, orders, first=["liq"]) == frozenset({2})


# --- liquidation orders ------------------------------------------------------------------


def test_liquidation_client_id_format() -> None:
    """``liq-{wallet}-{now}-{index}``."""
    assert liquidation_client_id("0xabc", 10_000, 2) == "liq-0xabc-10000-2"


def test_is_liquidation_order_tracked_or_minted_prefix() -> None:
    """Tracked ids and ids with the wallet's ``liq-`` prefix are liquidation orders."""
    assert is_liquidation_order(order(1, client_id="custom"), wallet=W, tracked={"custom"})
    assert is_liquidation_order(order(1, client_id="liq-W-5-0"), wallet=W, tracked=())
    assert not is_liquidation_order(order(1, client_id="liq-X-5-0"), wallet=W, tracked=())
    assert not is_liquidation_order(order(1, client_id="user"), wallet=W, tracked=())
    assert not is_liquidation_order(order(1, client_id=None), wallet=W, tracked=())


# --- cancel_targets ----------------------------------------------------------------------


def test_cancel_targets_seed_cancels_only_the_excess_buy() -> None:
    """Seed §8.3: position −1, BUY 1 @10 (100), BUY 1 @20 (101) → cancel 101 only."""
    orders = [
        order(100, created_at=10, client_id="close-1"),
        order(101, created_at=20, client_id="close-2"),
    ]
    targets, open_ids = cancel_targets(orders, {CALL: Decimal(-1)}, (), False, wallet=W)
    assert targets == (CancelTarget(order_id=101, client_id="close-2"),)
    assert open_ids == ()


def test_cancel_targets_no_portfolio_keeps_everything_and_reports() -> None:
    """Seed §8.4: without positions nothing is cancelled; open liquidation ids are reported."""
    orders = [order(100, created_at=10, client_id="liq-keep")]
    targets, open_ids = cancel_targets(orders, None, ["liq-keep"], False, wallet=W)
    assert targets == ()
    assert open_ids == ("liq-keep",)


def test_cancel_targets_no_portfolio_reports_orphans_in_snapshot_order() -> None:
    """Orphans count among the open liquidation ids, in snapshot order, each once."""
    orders = [
        order(5, created_at=9, client_id="liq-W-9-0"),
        order(3, created_at=1, client_id="user"),
        order(4, created_at=2, client_id="tracked"),
        order(6, created_at=3, client_id="liq-W-9-0"),
    ]
    targets, open_ids = cancel_targets(orders, None, ["tracked"], True, wallet=W)
    assert targets == ()
    assert open_ids == ("liq-W-9-0", "tracked")


def test_cancel_targets_tracked_first_cancels_users_overlapping_order() -> None:
    """Deviation: our tracked order keeps the position; the user's older overlap is cancelled."""
    user = order(100, created_at=10, client_id="user-close")
    ours = order(101, created_at=20, client_id="liq-W-20-0")
    targets, open_ids = cancel_targets(
        [user, ours], {CALL: Decimal(-1)}, ["liq-W-20-0"], False, wallet=W
    )
    assert ids(targets) == [100]
    assert open_ids == ("liq-W-20-0",)


def test_cancel_targets_reprice_cancels_tracked_orders_too() -> None:
    """With ``cancel_liquidation_orders`` every liquidation order is cancelled as well."""
    ours = order(101, created_at=20, client_id="liq-W-20-0")
    targets, _ = cancel_targets([ours], {CALL: Decimal(-1)}, ["liq-W-20-0"], True, wallet=W)
    assert targets == (CancelTarget(order_id=101, client_id="liq-W-20-0"),)


def test_cancel_targets_orphan_cancelled_even_when_reduce_only() -> None:
    """An untracked ``liq-W-`` order is an orphan: always cancelled, and reported open."""
    orphan = order(7, created_at=5, client_id="liq-W-1-0")
    targets, open_ids = cancel_targets([orphan], {CALL: Decimal(-4)}, (), False, wallet=W)
    assert targets == (CancelTarget(order_id=7, client_id="liq-W-1-0"),)
    assert open_ids == ("liq-W-1-0",)


def test_cancel_targets_other_wallets_prefix_is_not_an_orphan() -> None:
    """A reduce-only order whose id looks like another wallet's liquidation id is kept."""
    other = order(7, created_at=5, client_id="liq-X-1-0")
    targets, open_ids = cancel_targets([other], {CALL: Decimal(-4)}, (), False, wallet=W)
    assert targets == ()
    assert open_ids == ()


def test_cancel_targets_dedupes_liquidation_orders_by_client_id() -> None:
    """Two open orders with one liquidation client id give one target (the older)."""
    orders = [
        order(9, created_at=2, client_id="liq-W-1-0"),
        order(8, created_at=1, client_id="liq-W-1-0"),
    ]
    targets, open_ids = cancel_targets(orders, {CALL: Decimal(-4)}, ["liq-W-1-0"], True, wallet=W)
    assert targets == (CancelTarget(order_id=8, client_id="liq-W-1-0"),)
    assert open_ids == ("liq-W-1-0",)


def test_cancel_targets_dedupes_other_orders_by_order_id() -> None:
    """A user order listed twice in the snapshot is cancelled once; same client ids do not merge."""
    orders = [
        order(1, side=Side.SELL, created_at=1, client_id="same"),
        order(1, side=Side.SELL, created_at=1, client_id="same"),
        order(2, side=Side.SELL, created_at=2, client_id="same"),
    ]
    targets, _ = cancel_targets(orders, {CALL: Decimal(-1)}, (), False, wallet=W)
    assert ids(targets) == [1, 2]


def test_cancel_targets_output_oldest_first() -> None:
    """Targets come in (created_at, order_id) order whatever the snapshot order."""
    orders = [
        order(3, side=Side.SELL, created_at=30),
        order(1, side=Side.SELL, created_at=30),
        order(2, side=Side.SELL, created_at=10),
    ]
    targets, _ = cancel_targets(orders, {CALL: Decimal(-1)}, (), False, wallet=W)
    assert ids(targets) == [2, 1, 3]


# --- benign cancel rejections ------------------------------------------------------------


@pytest.mark.parametrize(
    "reason",
    [
        "Order has already been completed",
        "order already filled",
        "ALREADY CANCELLED",
        "already canceled by user",
        "Order 12 not found",
    ],
)
def test_is_benign_cancel_rejection_known_reasons(reason: str) -> None:
    """Reasons meaning "the order is gone anyway" are benign, whatever their case."""
    assert is_benign_cancel_rejection(reason)


@pytest.mark.parametrize("reason", ["", "insufficient margin", "rate limited", "cancelled?"])
def test_is_benign_cancel_rejection_other_reasons(reason: str) -> None:
    """Any other rejection is a real failure."""
    assert not is_benign_cancel_rejection(reason)


# --- properties --------------------------------------------------------------------------

SYMBOLS = (CALL, PUT, PERP)
CLIENT_IDS = (None, "user-a", "user-b", "liq-W-1-0", "liq-W-1-1", "liq-W-2-0", "liq-X-1-0", "t")
small_sizes = decimals(min_value="0.01", max_value=5, places=2)


@st.composite
def snapshots(draw: st.DrawFn) -> list[OpenOrder]:
    """Up to 8 orders with unique ids, few symbols, clashing times and client ids."""
    order_ids = draw(st.lists(st.integers(0, 50), max_size=8, unique=True))
    orders = []
    for order_id in order_ids:
        symbol = draw(st.sampled_from(SYMBOLS))
        size = draw(small_sizes)
        orders.append(
            OpenOrder(
                order_id=order_id,
                symbol=symbol,
                side=draw(st.sampled_from(Side)),
                price=Decimal(1),
                original_size=size,
                remaining_size=size,
                client_id=draw(st.sampled_from(CLIENT_IDS)),
                created_at=draw(st.integers(0, 5)),
                is_perp=symbol == PERP,
            )
        )
    return orders


position_maps = st.dictionaries(
    st.sampled_from(SYMBOLS), decimals(min_value=-5, max_value=5, places=2), max_size=3
)
tracked_sets = st.lists(st.sampled_from(CLIENT_IDS[1:]), max_size=3, unique=True)


def signed(o: OpenOrder) -> Decimal:
    return o.remaining_size if o.side is Side.BUY else -o.remaining_size


@given(position_maps, snapshots(), tracked_sets)
def test_reduce_only_order_ids_all_kept_never_cross_or_grow(
    positions: Mapping[str, Decimal], orders: list[OpenOrder], first: list[str]
) -> None:
    """Filling every kept order, in any order, never crosses zero nor grows a position."""
    kept = reduce_only_order_ids(positions, orders, first=first)
    for symbol in SYMBOLS:
        start = positions.get(symbol, Decimal(0))
        fills = [signed(o) for o in orders if o.order_id in kept and o.symbol == symbol]
        # Every kept fill moves towards zero, so partial sums stay between start and zero.
        assert all((f > 0) == (start < 0) for f in fills)
        end = start + sum(fills, Decimal(0))
        assert end == 0 or (end > 0) == (start > 0)
        assert abs(end) <= abs(start)


@given(position_maps, snapshots(), tracked_sets, st.randoms(use_true_random=False))
def test_reduce_only_order_ids_independent_of_snapshot_order(
    positions: Mapping[str, Decimal],
    orders: list[OpenOrder],
    first: list[str],
    rng: random.Random,
) -> None:
    """The walk sorts the orders, so their order in the snapshot does not matter."""
    shuffled = list(orders)
    rng.shuffle(shuffled)
    assert reduce_only_order_ids(positions, shuffled, first=first) == reduce_only_order_ids(
        positions, orders, first=first
    )


@given(position_maps, snapshots(), tracked_sets, st.booleans())
def test_cancel_targets_cancel_exactly_what_the_rules_say(
    positions: Mapping[str, Decimal], orders: list[OpenOrder], tracked: list[str], reprice: bool
) -> None:
    """Each order is cancelled iff an orphan, a liquidation order on reprice, or not
    reduce-only once the orders cancelled anyway are left out of the walk (they do not use
    up the position); one target per key, oldest first."""
    targets, open_ids = cancel_targets(orders, positions, tracked, reprice, wallet=W)

    def is_liq(o: OpenOrder) -> bool:
        return is_liquidation_order(o, wallet=W, tracked=tracked)

    def key(o: OpenOrder) -> tuple[str, object]:
        return ("c", o.client_id) if is_liq(o) else ("o", o.order_id)

    anyway = {o.order_id for o in orders if is_liq(o) and (reprice or o.client_id not in tracked)}
    staying = [o for o in orders if o.order_id not in anyway]
    kept = reduce_only_order_ids(positions, staying, first=tracked)
    should = {key(o) for o in orders if o.order_id in anyway or o.order_id not in kept}
    by_id = {o.order_id: o for o in orders}
    target_orders = [by_id[t.order_id] for t in targets]
    assert all(t.client_id == by_id[t.order_id].client_id for t in targets)
    keys = [key(o) for o in target_orders]
    assert len(keys) == len(set(keys))
    assert set(keys) == should
    ages = [(o.created_at, o.order_id) for o in target_orders]
    assert ages == sorted(ages)
    assert set(open_ids) == {o.client_id for o in orders if is_liq(o)}
    assert len(open_ids) == len(set(open_ids))


@given(snapshots(), tracked_sets, st.booleans())
def test_cancel_targets_without_positions_never_cancel(
    orders: list[OpenOrder], tracked: list[str], reprice: bool
) -> None:
    """An unavailable portfolio never yields a cancel; the open ids are still reported."""
    targets, open_ids = cancel_targets(orders, None, tracked, reprice, wallet=W)
    with_positions = cancel_targets(orders, {}, tracked, reprice, wallet=W)[1]
    assert targets == ()
    assert open_ids == with_positions


def walked_one_sort(
    positions: Mapping[str, Decimal], orders: Sequence[OpenOrder], first: Sequence[str]
) -> frozenset[int]:
    """The reduce-only walk as first written: one sort by (not first, created_at, order_id)."""
    chosen = frozenset(first)
    walk = sorted(orders, key=lambda o: (o.client_id not in chosen, (o.created_at, o.order_id)))
    remaining = dict(positions)
    kept = set()
    for o in walk:
        current = remaining.get(o.symbol, Decimal(0))
        new = current + signed(o)
        if is_position_reduce_only(current, new):
            remaining[o.symbol] = new
            kept.add(o.order_id)
    return frozenset(kept)


@given(position_maps, snapshots(), snapshots(), tracked_sets)
def test_reduce_only_order_ids_partitioning_one_sorted_list_equals_one_sort_by_group(
    positions: Mapping[str, Decimal], some: list[OpenOrder], more: list[OpenOrder], first: list[str]
) -> None:
    """Sorting once by age and walking the ``first`` orders out of it first gives the same
    ids as sorting by (group, age) — also with repeated order ids and equal ages."""
    orders = some + more  # the two lists may share order ids
    assert reduce_only_order_ids(positions, orders, first=first) == walked_one_sort(
        positions, orders, first
    )


# --- orders cancelled anyway do not use up the position (issue 9) --------------------------


def test_cancel_targets_orphan_does_not_use_up_the_position() -> None:
    """An orphan liquidation BUY of 10 and a trader's take-profit BUY of 5 against a short
    of 10: the orphan is cancelled; the take-profit is reduce-only once it is gone."""
    orphan = order(1, size="10", created_at=1, client_id=liquidation_client_id(W, 1, 0), symbol=PUT)
    user = order(2, size="5", created_at=2, client_id="user-tp", symbol=PUT)
    targets, _ = cancel_targets([orphan, user], {PUT: Decimal(-10)}, (), False, wallet=W)
    assert ids(targets) == [1]
    alone, _ = cancel_targets([user], {PUT: Decimal(-10)}, (), False, wallet=W)
    assert ids(alone) == []


def test_cancel_targets_liquidation_set_cancelled_at_a_reprice_does_not_use_up_the_position() -> (
    None
):
    """When our tracked set is cancelled (a reprice, recovery) it is not walked either."""
    ours = liquidation_client_id(W, 5, 0)
    tracked = order(1, size="10", created_at=1, client_id=ours, symbol=PUT)
    user = order(2, size="5", created_at=2, client_id="user-tp", symbol=PUT)
    positions = {PUT: Decimal(-10)}
    kept, _ = cancel_targets([tracked, user], positions, (ours,), False, wallet=W)
    assert ids(kept) == [2]  # our live order uses up the short: the user's would overshoot
    repriced, _ = cancel_targets([tracked, user], positions, (ours,), True, wallet=W)
    assert ids(repriced) == [1]


@given(
    short=decimals(min_value=Decimal(1), max_value=Decimal(100), places=2),
    sizes=st.lists(
        decimals(min_value=Decimal("0.01"), max_value=Decimal(50), places=2), max_size=5
    ),
    orphans=st.lists(
        decimals(min_value=Decimal("0.01"), max_value=Decimal(50), places=2), max_size=3
    ),
    reprice=st.booleans(),
)
def test_cancel_targets_kept_orders_never_overshoot_and_orphans_change_nothing(
    short: Decimal, sizes: list[Decimal], orphans: list[Decimal], reprice: bool
) -> None:
    """What stays live is reduce-only filled in any order (their sum never crosses zero),
    and adding orphans changes which user orders are cancelled in no way."""
    users = [
        order(10 + i, size=str(s), created_at=10 + i, client_id=f"u{i}", symbol=PUT)
        for i, s in enumerate(sizes)
    ]
    lost = [
        order(i, size=str(s), created_at=i, client_id=liquidation_client_id(W, i, 0), symbol=PUT)
        for i, s in enumerate(orphans)
    ]
    positions = {PUT: -short}
    with_orphans, _ = cancel_targets([*lost, *users], positions, (), reprice, wallet=W)
    without, _ = cancel_targets(users, positions, (), reprice, wallet=W)
    assert [i for i in ids(with_orphans) if i >= 10] == ids(without)
    assert [i for i in ids(with_orphans) if i < 10] == [o.order_id for o in lost]
    cancelled = set(ids(without))
    live = sum((o.remaining_size for o in users if o.order_id not in cancelled), Decimal(0))
    assert live <= short
