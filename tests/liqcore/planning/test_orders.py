"""liqcore.planning.orders: merging order plans and the round limit (SPEC §6)."""

from __future__ import annotations

from decimal import Decimal

import attrs

from liqcore.planning import PLAN_MAX_ROUNDS, OrderPlan, merge_plan


def test_merge_plan_seed_same_symbol_and_price_accumulate() -> None:
    """Seed: 1 @ 100 (relief 50) + 2 @ 100 (relief 75) → 3 @ 100 (relief 125)."""
    first = OrderPlan(
        symbol="BTC-20251231-100000-C",
        close_size=Decimal(1),
        limit_price=Decimal(100),
        expected_mm_relief=Decimal(50),
    )
    second = attrs.evolve(first, close_size=Decimal(2), expected_mm_relief=Decimal(75))
    assert merge_plan((first,), second) == (
        attrs.evolve(first, close_size=Decimal(3), expected_mm_relief=Decimal(125)),
    )


def test_merge_plan_other_price_or_symbol_appends() -> None:
    """A different limit price or symbol is a separate order, appended in place."""
    base = OrderPlan(
        symbol="A-20261231-1-C",
        close_size=Decimal(1),
        limit_price=Decimal(100),
        expected_mm_relief=Decimal(1),
    )
    other_price = attrs.evolve(base, limit_price=Decimal(101))
    other_symbol = attrs.evolve(base, symbol="B-20261231-1-C")
    merged = merge_plan(merge_plan((base,), other_price), other_symbol)
    assert merged == (base, other_price, other_symbol)
    again = merge_plan(merged, attrs.evolve(other_price, close_size=Decimal(2)))
    grown = attrs.evolve(other_price, close_size=Decimal(3), expected_mm_relief=Decimal(2))
    assert again == (base, grown, other_symbol)


def test_plan_max_rounds_is_the_seeds() -> None:
    """Three rounds, as the seed's PARTIAL_PLAN_MAX_ROUNDS."""
    assert PLAN_MAX_ROUNDS == 3
