"""Partial liquidation planning: which short options to buy back, how many, at what price.

The aim is the smallest loss to the account that puts its equity back on target. Prices
start from the book but are capped at fair value plus a band, because one resting ask far
above fair value (a thin book, or a colluding account) would otherwise set what the
account pays; a bonus that ramps with time is added on top to attract a counterparty.
Candidates are ranked by margin freed per unit of equity given up, and a close that would
cost more equity than the margin it frees moves the account away from its target, so it
is never planned (the no-harm filter).

How much is needed comes from the exchange (``Health``, the *anchor*); the margin model
only says what a close *changes*, so a model that disagrees with the engine in absolute
terms neither over- nor under-liquidates. Every size and price is a Decimal rounded
**up** (to the instrument's steps or ``MIN_SIZE``) in :data:`~liqcore.numbers.CONTEXT`,
and everything is iterated in symbol order, so the same inputs give the same plan on
every machine.
"""

from __future__ import annotations

from liqcore.planning.greedy import SliceCandidate, greedy_plan, slice_candidates
from liqcore.planning.orders import PLAN_MAX_ROUNDS, OrderPlan, merge_plan
from liqcore.planning.plan import PartialPlan, plan_partial_orders
from liqcore.planning.prices import execution_prices, reference_price
from liqcore.planning.simulation import close_short

__all__ = [
    "PLAN_MAX_ROUNDS",
    "OrderPlan",
    "PartialPlan",
    "SliceCandidate",
    "close_short",
    "execution_prices",
    "greedy_plan",
    "merge_plan",
    "plan_partial_orders",
    "reference_price",
    "slice_candidates",
]
