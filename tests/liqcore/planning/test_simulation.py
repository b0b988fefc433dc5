"""liqcore.planning.simulation: the simulated close, and the fast paths (standard margin's
per-plan memo, portfolio margin's prepared scenarios) agreeing with evaluating the model."""

from __future__ import annotations

from decimal import Decimal

import attrs
import pytest
from hypothesis import given

from liqcore.config import Config
from liqcore.errors import PlanningError
from liqcore.inputs import Portfolio, Quote
from liqcore.instruments import OptionSymbol, option_symbol
from liqcore.margin.base import MarginFacts, MarginModel
from liqcore.margin.portfolio import PortfolioMargin
from liqcore.margin.standard import StandardMargin
from liqcore.numbers import MIN_SIZE
from liqcore.planning import close_short
from liqcore.planning.orders import OrderPlan
from liqcore.planning.simulation import _attributed, _is_short, _Memo, _relief, _Simulation
from tests.liqcore.planning.books import (
    PM,
    PM_NOW,
    SEED_ANCHOR,
    STANDARD,
    STRANGLE_CALL,
    STRANGLE_PUT,
    SYMBOL,
    TODAY,
    CountingStandard,
    accounts,
    bonuses,
    configs,
    model_equity,
    plan_of,
    portfolio,
    position,
    seed_plan,
    strangle,
    user_plan,
)


def test_close_short_hand_values() -> None:
    """Closing 1 of −4 at 120.6: cash 500 − 120.6, amount −3, mark kept at 110."""
    book = portfolio(position(pnl="-40"))
    after = close_short(book, SYMBOL, Decimal(1), Decimal("120.6"))
    remaining = after.positions[SYMBOL]
    assert after.cash == Decimal("379.4")
    assert remaining.amount == Decimal(-3)
    assert remaining.unrealized_pnl == Decimal(-30)
    assert remaining.mark_price == Decimal(110)
    assert after.spot == book.spot


def test_close_short_whole_position_disappears() -> None:
    """Closing all of it (or up to MIN_SIZE more) removes the position."""
    book = portfolio(position())
    assert SYMBOL not in close_short(book, SYMBOL, Decimal(4), Decimal(1)).positions
    assert SYMBOL not in close_short(book, SYMBOL, Decimal("4.00000001"), Decimal(1)).positions
    assert SYMBOL not in close_short(book, SYMBOL, Decimal("3.99999999"), Decimal(1)).positions


def test_close_short_min_size_is_a_no_op() -> None:
    """A size at or below MIN_SIZE changes nothing."""
    book = portfolio(position())
    assert close_short(book, SYMBOL, MIN_SIZE, Decimal(100)) is book


@pytest.mark.parametrize(
    ("symbol", "size"),
    [("BTC-20261231-1-C", "1"), ("BTC-20261231-90000-P", "1"), (SYMBOL, "4.00000002")],
)
def test_close_short_invalid_close_raises_planning_error(symbol: str, size: str) -> None:
    """Unknown symbol, a long position, or more than the short → PlanningError."""
    book = portfolio(position(), position("BTC-20261231-90000-P", amount="1"))
    with pytest.raises(PlanningError):
        close_short(book, symbol, Decimal(size), Decimal(100))


def test_plan_generic_path_agrees_with_standard_fast_path() -> None:
    """Standard margin behind an opaque class plans the same orders, and every evaluation
    it made is counted."""
    counting = CountingStandard()
    generic = user_plan(counting, SEED_ANCHOR)
    assert generic.orders == seed_plan().orders
    assert generic.evaluations == counting.calls


@given(accounts(), bonuses, configs)
def test_plan_expected_relief_is_the_models_relief(
    account: tuple[Portfolio, dict[str, Quote], MarginFacts], bonus: int, config: Config
) -> None:
    """The orders' expected reliefs add up to the model's MM cut when they all fill."""
    book = account[0]
    plan = plan_of(account, bonus, config)
    after = book
    for order in plan.orders:
        after = close_short(after, order.symbol, order.close_size, order.limit_price)
    cut = STANDARD.evaluate(book, TODAY).mm_required - STANDARD.evaluate(after, TODAY).mm_required
    expected = sum((o.expected_mm_relief for o in plan.orders), Decimal(0))
    assert abs(cut - expected) <= Decimal("1e-15") * max(Decimal(1), cut)


@given(accounts(), bonuses, configs)
def test_plan_generic_path_matches_fast_path_on_standard_margin(
    account: tuple[Portfolio, dict[str, Quote], MarginFacts], bonus: int, config: Config
) -> None:
    """The model-searching path and the additive fast path plan the same sizes (to one
    MIN_SIZE step) for standard margin."""
    fast = plan_of(account, bonus, config)
    generic = plan_of(account, bonus, attrs.evolve(config, standard_margin=CountingStandard()))
    assert [o.symbol for o in generic.orders] == [o.symbol for o in fast.orders]
    for g, f in zip(generic.orders, fast.orders, strict=True):
        assert abs(g.close_size - f.close_size) <= MIN_SIZE


# The simulated account's internals, pinned directly: every fast path (the standard memo,
# the prepared scenarios) must give exactly what evaluating the model on the closed
# portfolio gives, and every full evaluation a generic model makes is counted.

PUT = "BTC-20261231-90000-P"
LONG_CALL = "BTC-20261231-120000-C"
DUST = "BTC-20261231-110000-C"
PERP = "BTC-PERP"


def mixed_book(spot: str = "105000") -> Portfolio:
    """Dust first (exactly MIN_SIZE, whose mark cannot be derived), then two shorts, a long
    option of less than one unit and a perp."""
    return portfolio(
        position(DUST, amount=f"-{MIN_SIZE}"),
        position(pnl="-40"),
        position(PUT, amount="-2", entry="50"),
        position(LONG_CALL, amount="0.5", entry="20"),
        position(PERP, amount="1", entry="104000"),
        spot={"BTC": Decimal(spot)},
    )


OTHER_STANDARD = StandardMargin(rate=Decimal("0.2"), floor_rate=Decimal("0.07"))


@attrs.frozen
class OpaquePortfolioMargin(PortfolioMargin):
    """Portfolio margin behind another class: the generic path, which reads ``now``."""


def pm_book() -> Portfolio:
    book, _ = strangle()
    return book


def test_memo_evaluate_is_the_models_evaluate() -> None:
    """The memo's evaluation equals the model's, digit for digit: dust skipped (not the
    rest after it), a long option free, the cached terms reused only for the memo's model
    and spot, any other model evaluated by itself at ``now``."""
    book = mixed_book()
    memo = _Memo(STANDARD, book.spot)
    assert memo.evaluate(STANDARD, book, TODAY) == STANDARD.evaluate(book, TODAY)
    assert memo.evaluate(STANDARD, book, TODAY) == STANDARD.evaluate(book, TODAY)
    assert memo.evaluate(OTHER_STANDARD, book, TODAY) == OTHER_STANDARD.evaluate(book, TODAY)
    moved = Portfolio(cash=book.cash, positions=book.positions, spot={"BTC": Decimal(90_000)})
    assert memo.evaluate(STANDARD, moved, TODAY) == STANDARD.evaluate(moved, TODAY)
    assert STANDARD.evaluate(moved, TODAY) != STANDARD.evaluate(book, TODAY)
    pm = pm_book()
    assert memo.evaluate(PM, pm, PM_NOW) == PM.evaluate(pm, PM_NOW)


def test_memo_mm_is_the_models_position_mm() -> None:
    """``mm`` is ``position_mm`` of the position holding that amount: 0 at or below
    MIN_SIZE and for a long option (also below one unit), the cached per-unit margin used
    only for the memo's model at its spot."""
    book = mixed_book()
    memo = _Memo(STANDARD, book.spot)
    short, long_call, perp = (book.positions[s] for s in (SYMBOL, LONG_CALL, PERP))
    moved = {"BTC": Decimal(90_000)}
    for amount in ("-4", "-1.5", f"-{MIN_SIZE}", str(MIN_SIZE), "0.5", "3"):
        held = attrs.evolve(short, amount=Decimal(amount))
        for model, spot in ((STANDARD, book.spot), (OTHER_STANDARD, book.spot), (STANDARD, moved)):
            assert memo.mm(model, short, Decimal(amount), spot) == model.position_mm(held, spot)
    assert memo.mm(STANDARD, short, Decimal(-MIN_SIZE), book.spot) == 0
    assert memo.mm(STANDARD, long_call, Decimal("0.5"), book.spot) == 0
    assert memo.mm(STANDARD, perp, Decimal(2), book.spot) == Decimal(6300)  # 2 × 105000 × 3 %
    assert memo.mm(STANDARD, perp, Decimal(1), book.spot) == Decimal(3150)


def test_memo_relief_is_the_models_margin_change() -> None:
    """``relief`` is what the whole position's margin exceeds the remainder's by (0 for
    the remainder at or below MIN_SIZE), before and after ``evaluate`` cached the terms,
    and for another model or spot."""
    book = mixed_book()
    short = book.positions[SYMBOL]
    moved = {"BTC": Decimal(90_000)}
    memo = _Memo(STANDARD, book.spot)
    for _ in range(2):
        for model, spot in ((STANDARD, book.spot), (OTHER_STANDARD, book.spot), (STANDARD, moved)):
            whole = model.position_mm(short, spot)
            for remaining in ("-3", f"-{MIN_SIZE}", "0"):
                left = model.position_mm(attrs.evolve(short, amount=Decimal(remaining)), spot)
                assert memo.relief(model, short, Decimal(remaining), spot) == whole - left
            assert memo.relief(model, short, Decimal(f"-{MIN_SIZE}"), spot) == whole
        memo.evaluate(STANDARD, book, TODAY)


def test_memo_option_and_expiry() -> None:
    """The parsed option (twice: cached) and its expiry; ``None`` for a perp."""
    memo = _Memo(None, {})
    for _ in range(2):
        assert memo.option(SYMBOL) == option_symbol(SYMBOL)
        assert memo.expiry(SYMBOL) == OptionSymbol.parse(SYMBOL).expires_at
        assert memo.option(PERP) is None
        assert memo.expiry(PERP) is None


def test_memo_mark_is_the_positions_mark() -> None:
    book = mixed_book()
    memo = _Memo(STANDARD, book.spot)
    for _ in range(2):
        for symbol in (SYMBOL, PUT, PERP):
            assert memo.mark(book.positions[symbol]) == book.positions[symbol].mark_price


MODELS: list[tuple[str, object, bool]] = [
    # (name, model, generic: every close is a full evaluation)
    ("standard", STANDARD, False),
    ("portfolio", PM, False),
    ("generic standard", "counting", True),
    ("generic portfolio", OpaquePortfolioMargin(), True),
]


def _model_of(spec: object) -> MarginModel:
    return CountingStandard() if spec == "counting" else spec  # type: ignore[return-value]


def _book_for(model: MarginModel) -> tuple[Portfolio, int, str, str]:
    """A book the model can value, its ``now``, and two shorts to close."""
    if isinstance(model, PortfolioMargin):
        return pm_book(), PM_NOW, STRANGLE_PUT, STRANGLE_CALL
    return mixed_book(), TODAY, SYMBOL, PUT


@pytest.mark.parametrize(("name", "spec", "generic"), MODELS, ids=[m[0] for m in MODELS])
def test_simulation_matches_evaluating_the_closed_portfolio(
    name: str, spec: object, generic: bool
) -> None:
    """Under every kind of model, a simulation's facts, a close's (relief, cost) and the
    facts after closes (in turn, or all but one) are the model's evaluation of the closed
    portfolio, and the shared count grows by one per full evaluation only."""
    model = _model_of(spec)
    book, now, first, second = _book_for(model)
    price = Decimal(120)
    reference = STANDARD if isinstance(model, CountingStandard) else model

    def facts(*closes: tuple[str, Decimal]) -> MarginFacts:
        after = book
        for symbol, size in closes:
            after = close_short(after, symbol, size, price)
        return reference.evaluate(after, now)

    counts = [0]
    start = _Simulation.of(model, book, now, counts)
    assert counts == [1]
    assert start.facts == facts()
    whole, one = facts(), facts((first, Decimal(1)))
    relief, cost = start.change(first, Decimal(1), price)
    assert (relief, cost) == (
        whole.mm_required - one.mm_required,
        whole.equity - one.equity,
    )
    assert counts == [2 if generic else 1]
    after = start.after_close(first, Decimal(1), price)
    assert after.facts == one
    assert start.facts == whole
    assert counts == [3 if generic else 1]
    both = after.after_close(second, Decimal("0.5"), price)
    assert both.facts == facts((first, Decimal(1)), (second, Decimal("0.5")))
    assert counts == [4 if generic else 1]
    orders = (
        OrderPlan(symbol=first, close_size=Decimal(1), limit_price=price, expected_mm_relief=Z),
        OrderPlan(
            symbol=second, close_size=Decimal("0.5"), limit_price=price, expected_mm_relief=Z
        ),
    )
    assert after.memo is start.memo  # one memo a plan
    assert both.memo is start.memo
    assert start.after(orders).facts == both.facts
    assert start.after(orders, skip=0).facts == facts((second, Decimal("0.5")))
    assert start.after(orders, skip=1).facts == one
    assert counts == [8 if generic else 1]
    if isinstance(model, CountingStandard):
        assert counts[0] == model.calls


Z = Decimal(0)


@pytest.mark.parametrize(("name", "spec", "generic"), MODELS, ids=[m[0] for m in MODELS])
def test_relief_without_a_simulation(name: str, spec: object, generic: bool) -> None:
    """``_relief`` on its own (no memo, or no prepared portfolio): the model's change, and
    one full evaluation on the generic path, none on the fast ones."""
    model = _model_of(spec)
    book, now, first, _ = _book_for(model)
    before = model.evaluate(book, now)
    after = model.evaluate(close_short(book, first, Decimal(1), Decimal(120)), now)
    prepared = PM.prepare(book, now) if type(model) is PortfolioMargin else None
    got = _relief(
        model,
        portfolio=book,
        symbol=first,
        size=Decimal(1),
        price=Decimal(120),
        now=now,
        before=before,
        prepared=prepared,
    )
    assert got == (
        before.mm_required - after.mm_required,
        before.equity - after.equity,
        1 if generic else 0,
    )


@attrs.frozen
class TableMargin:
    """MM by which of four shorts are still held (equity as usual): closing A alone
    raises MM by 5, B then cuts it by 20, C raises it by 3, D cuts it by 5."""

    def evaluate(self, portfolio: Portfolio, now: int) -> MarginFacts:
        held = frozenset(s for s in TABLE_SYMBOLS if s in portfolio.positions)
        return MarginFacts(equity=model_equity(portfolio), mm_required=TABLE[held])


TABLE_SYMBOLS = (
    "BTC-20261231-1000-P",
    "BTC-20261231-2000-P",
    "BTC-20261231-3000-P",
    "BTC-20261231-4000-P",
)
_A, _B, _C, _D = TABLE_SYMBOLS
TABLE = {
    frozenset(TABLE_SYMBOLS): Decimal(100),
    frozenset({_B, _C, _D}): Decimal(105),
    frozenset({_C, _D}): Decimal(85),
    frozenset({_D}): Decimal(88),
    frozenset(): Decimal(83),
}


def test_attributed_carries_a_dip_forward() -> None:
    """Each order's relief is what it frees once the orders before it filled, floored at 0,
    a dip carried forward: A +5 MM → 0, B −20 → 15, C +3 → 0, D −5 → 2 (the MM is back
    above its earlier low only by 2). The shares add up to the whole cut, 17."""
    book = portfolio(*(position(s, amount="-1", entry="10") for s in TABLE_SYMBOLS))
    orders = tuple(
        OrderPlan(symbol=s, close_size=Decimal(1), limit_price=Decimal(12), expected_mm_relief=Z)
        for s in TABLE_SYMBOLS
    )
    counts = [0]
    shared = _attributed(orders, _Simulation.of(TableMargin(), book, TODAY, counts))
    assert [o.expected_mm_relief for o in shared] == [0, 15, 0, 2]
    assert [attrs.evolve(o, expected_mm_relief=Z) for o in shared] == list(orders)
    assert sum(o.expected_mm_relief for o in shared) == 17
    assert _attributed((), _Simulation.of(TableMargin(), book, TODAY, counts)) == ()


def test_attributed_under_standard_margin_is_each_orders_relief() -> None:
    """Additive margin: each share is the order's own margin relief (hand values: the call
    frees 3 × 10,500 of 4 × 10,500, the put 2 × 5,250)."""
    book = mixed_book()
    orders = (
        OrderPlan(
            symbol=SYMBOL, close_size=Decimal(3), limit_price=Decimal(120), expected_mm_relief=Z
        ),
        OrderPlan(symbol=PUT, close_size=Decimal(2), limit_price=Decimal(60), expected_mm_relief=Z),
    )
    shared = _attributed(orders, _Simulation.of(STANDARD, book, TODAY, [0]))
    call_unit = STANDARD.position_mm(position(amount="-1"), book.spot)
    put_unit = STANDARD.position_mm(position(PUT, amount="-1"), book.spot)
    assert (call_unit, put_unit) == (Decimal(10500), Decimal(5250))
    assert [o.expected_mm_relief for o in shared] == [31500, 10500]


@pytest.mark.parametrize(
    ("symbol", "size", "message"),
    [
        ("BTC-20261231-1-C", "1", "BTC-20261231-1-C: no such position"),
        (LONG_CALL, "0.1", "is not short"),
        (SYMBOL, "4.00000002", "the short is only 4"),
    ],
)
def test_close_short_errors_name_the_close(symbol: str, size: str, message: str) -> None:
    """Each refusal says which close and why (a long below one unit is 'not short')."""
    with pytest.raises(PlanningError, match=message):
        close_short(mixed_book(), symbol, Decimal(size), Decimal(100))


def test_is_short_is_a_short_above_min_size() -> None:
    for amount, short in (
        ("-1", True),
        ("-0.5", True),
        (f"-{MIN_SIZE}", False),
        ("0.5", False),
        ("-0.00000002", True),
    ):
        assert _is_short(position(amount=amount)) is short


def test_close_short_of_a_zero_position_is_not_short() -> None:
    with pytest.raises(PlanningError, match="position 0 is not short"):
        close_short(portfolio(position(amount="0")), SYMBOL, Decimal(1), Decimal(100))


def test_simulations_add_their_evaluations_to_the_shared_count() -> None:
    """Two valuations sharing one count add up (one full evaluation each)."""
    counts = [0]
    _Simulation.of(STANDARD, mixed_book(), TODAY, counts)
    _Simulation.of(PM, pm_book(), PM_NOW, counts)
    assert counts == [2]


def test_memo_caches_nothing_of_one_other_model_or_spot_for_the_next() -> None:
    """Asked about two models other than its own, then two spots other than its own, one
    after the other, the memo gives each its own values (``mm`` and ``evaluate``): what it
    caches is for its own model at its own spot only."""
    book = mixed_book()
    memo = _Memo(STANDARD, book.spot)
    short = book.positions[SYMBOL]
    held = attrs.evolve(short, amount=Decimal(-2))
    third = StandardMargin(rate=Decimal("0.3"), floor_rate=Decimal("0.1"))
    cases: list[tuple[StandardMargin, dict[str, Decimal]]] = [
        (OTHER_STANDARD, dict(book.spot)),
        (third, dict(book.spot)),
        (STANDARD, {"BTC": Decimal(90_000)}),
        (STANDARD, {"BTC": Decimal(80_000)}),
    ]
    for model, spot in cases:
        assert memo.mm(model, short, Decimal(-2), spot) == model.position_mm(held, spot)
        moved = Portfolio(cash=book.cash, positions=book.positions, spot=spot)
        assert memo.evaluate(model, moved, TODAY) == model.evaluate(moved, TODAY)
    values = {memo.mm(model, short, Decimal(-2), spot) for model, spot in cases}
    assert len(values) == len(cases)
