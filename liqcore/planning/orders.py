"""The orders a plan is made of: :class:`OrderPlan` (one reduce-only buy), how two plans of
the same symbol and price merge (:func:`merge_plan`), and how many rounds a plan may take
(:data:`PLAN_MAX_ROUNDS`)."""

from __future__ import annotations

from decimal import Decimal

import attrs

from liqcore import _validators as v
from liqcore.numbers import CONTEXT

__all__ = ["PLAN_MAX_ROUNDS", "OrderPlan", "merge_plan"]


PLAN_MAX_ROUNDS = 3
"""Planning rounds on the simulated portfolio (seed ``PARTIAL_PLAN_MAX_ROUNDS``)."""


@attrs.frozen(kw_only=True)
class OrderPlan:
    """One reduce-only BUY to submit (seed ``PartialLiquidationOrderPlan``)."""

    symbol: str = attrs.field(validator=v.text)
    close_size: Decimal = attrs.field(validator=v.positive)
    limit_price: Decimal = attrs.field(validator=v.positive)
    expected_mm_relief: Decimal = attrs.field(validator=v.non_negative)


def merge_plan(plans: tuple[OrderPlan, ...], plan: OrderPlan) -> tuple[OrderPlan, ...]:
    """[merge_partial_plan] Add ``plan`` into the first plan of the same symbol and limit
    price (sizes and reliefs add up), else append it."""
    for index, existing in enumerate(plans):
        if existing.symbol == plan.symbol and existing.limit_price == plan.limit_price:
            merged = attrs.evolve(
                existing,
                close_size=CONTEXT.add(existing.close_size, plan.close_size),
                expected_mm_relief=CONTEXT.add(
                    existing.expected_mm_relief, plan.expected_mm_relief
                ),
            )
            return (*plans[:index], merged, *plans[index + 1 :])
    return (*plans, plan)
