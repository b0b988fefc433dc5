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
from liqcore.margin.base import MarginFacts
from liqcore.numbers import MIN_SIZE
from liqcore.planning import close_short
from tests.liqcore.planning.books import (
    SEED_ANCHOR,
    STANDARD,
    SYMBOL,
    TODAY,
    CountingStandard,
    accounts,
    bonuses,
    configs,
    plan_of,
    portfolio,
    position,
    seed_plan,
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
