"""The plan entry point: :func:`plan_partial_orders` and its result, :class:`PartialPlan`.

Owns how a reprice is planned from end to end: the account valued once, the execution
prices, the rounds of the margin model's planner (:mod:`liqcore.planning.greedy` or
:mod:`liqcore.planning.portfolio`) anchored on ``Health``, each plan's whole-lot surplus
trimmed (:mod:`liqcore.planning.lots`), and, with whole lots, the comparison with plans made
without each of the dearest lot-traded orders — the plan on target for the least premium
kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from types import MappingProxyType

import attrs

from liqcore import _validators as v
from liqcore.config import Config
from liqcore.errors import InvalidInput
from liqcore.inputs import MarginMode, Portfolio, Quote
from liqcore.margin.base import MarginFacts, MarginModel
from liqcore.numbers import BPS, CONTEXT, MIN_SIZE, ZERO
from liqcore.planning.greedy import _searched_plan
from liqcore.planning.lots import _premium, _spec, _trimmed
from liqcore.planning.orders import OrderPlan
from liqcore.planning.portfolio import _scenario_plans
from liqcore.planning.prices import _execution_prices
from liqcore.planning.simulation import _attributed, _is_scenario, _Simulation
from liqcore.targets import required_mm_relief

__all__ = ["PartialPlan", "plan_partial_orders"]


def _frozen_str_mapping(value: Mapping[str, str]) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise InvalidInput(f"PartialPlan.unpriced must be a mapping, was {value!r}")
    return MappingProxyType(dict(sorted(value.items())))


def _order_plans(
    inst: PartialPlan, attribute: attrs.Attribute[tuple[OrderPlan, ...]], value: object
) -> None:
    if type(value) is not tuple or not all(isinstance(plan, OrderPlan) for plan in value):
        raise InvalidInput(f"PartialPlan.orders must be a tuple of OrderPlan, was {value!r}")


@attrs.frozen(kw_only=True)
class PartialPlan:
    """The orders of one reprice and how they were found.

    ``unpriced``: symbols left out for want of a price, with the reason; ``model_facts``:
    the model's evaluation of the original portfolio (for the mismatch check against
    ``Health``); ``rounds``: planning rounds that added orders; ``evaluations``: full
    margin-model evaluations spent.
    """

    orders: tuple[OrderPlan, ...] = attrs.field(validator=_order_plans)
    unpriced: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_str_mapping)
    model_facts: MarginFacts = attrs.field(validator=v.instance_of(MarginFacts))
    rounds: int = attrs.field(validator=v.non_negative_int)
    evaluations: int = attrs.field(validator=v.non_negative_int)


def plan_partial_orders(  # noqa: PLR0917 (the seed's argument order)
    portfolio: Portfolio,
    quotes: Mapping[str, Quote],
    bonus_bps: int,
    config: Config,
    margin_mode: MarginMode,
    now: int,
    *,
    anchor: MarginFacts,
) -> PartialPlan:
    """The reduce-only orders that put the account back on target, at least loss.

    [build_standard_partial_orders / build_portfolio_partial_orders] Up to
    :data:`PLAN_MAX_ROUNDS` rounds on a simulated portfolio. A round's facts are
    ``anchor`` (``Health``'s equity and mm_required) plus the model's change from the
    original portfolio to the simulated one; it stops when the required relief is at or
    below ``MIN_SIZE`` or no candidate helps. Symbols without a price are left out and
    named in ``unpriced``. A plan that would leave less than the instrument's ``min_size``
    closes the position whole, one below the minimum order size is raised to it, and a
    short smaller than one size step (or the off-grid rest of one) is closed whole: a close
    of the whole position is the one order off the grid (the sub-step rule). Raises
    :class:`PlanningError` when the model cannot evaluate the portfolio.

    Each close is sized by its *gain*, the cut it makes in the required relief: its margin
    relief less the equity its fill pays over the mark × ``10_000 / (10_000 + buffer)``
    (deviation: the seed sizes by relief alone and leaves the equity its own fills cost to
    later rounds, so with a costly close three rounds leave the account short of target).

    * Standard margin is linear per position: the candidates ranked by gain per unit of
      premium, each taken as far as needed, are the cheapest plan.
    * Portfolio margin is a maximum of scenario losses that are linear in the sizes: the
      cheapest closes are found exactly by tracing a linear programme (see
      :func:`_cheapest_closes`), which re-ranks whenever another scenario starts to bind and
      closes a combination (a strangle's call and put) where no single close helps.
    * Any other model is searched: the smallest size meeting the need, never past the size
      after which closing more stops moving the account towards its target.

    Whole lots (an :class:`InstrumentSpec`) make the problem a knapsack, handled by bounded,
    deterministic local search: a round whose sizes rounded to lots fall short adds the
    cheapest lots that cover the rest; orders are cut back, least efficient first, to the
    smallest tradeable size that keeps the plan on target; and the plan is compared with
    plans made without each of its dearest lot-traded orders (and, under portfolio margin,
    with rounding the first round down), the one on target for the least premium kept.
    """
    model = config.margin_model(margin_mode)
    counts = [0]
    start = _Simulation.of(model, portfolio, now, counts)
    original = start.facts
    prices, unpriced = _execution_prices(portfolio, quotes, bonus_bps, config, now, start.memo)
    buffer_bps = config.partial_target_buffer_bps

    def required_at(facts: MarginFacts) -> Decimal:
        return required_mm_relief(
            CONTEXT.add(anchor.equity, CONTEXT.subtract(facts.equity, original.equity)),
            CONTEXT.add(
                anchor.mm_required, CONTEXT.subtract(facts.mm_required, original.mm_required)
            ),
            buffer_bps,
        )

    lots = any(_spec(symbol, config.instruments) is not None for symbol in prices)
    found = _finished_plans(
        start=start,
        model=model,
        prices=prices,
        required_at=required_at,
        config=config,
        now=now,
        ranked=lots,
    )
    best = min(found, key=_rank)
    if any(_spec(o.symbol, config.instruments) is not None for o in best[2]):
        # Whole lots make this a knapsack: the cheapest tradeable plan may leave out a close
        # that rounding made dear (a tenth of a lot where a hundredth was wanted). Plan again
        # without each of the dearest lot-traded orders and keep the best plan of all.
        dearest = sorted(
            (o for o in best[2] if _spec(o.symbol, config.instruments) is not None),
            key=lambda o: (_premium((o,), start.portfolio).copy_negate(), o.symbol),
        )[:_ALTERNATIVES]
        for left_out in dearest:
            others = {s: price for s, price in prices.items() if s != left_out.symbol}
            found += _finished_plans(
                start=start,
                model=model,
                prices=others,
                required_at=required_at,
                config=config,
                now=now,
                ranked=True,
            )
        best = min(found, key=_rank)
    _, _, orders, rounds = best
    return PartialPlan(
        orders=orders,
        unpriced=unpriced,
        model_facts=original,
        rounds=rounds,
        evaluations=counts[0],
    )


_Finished = tuple[Decimal, Decimal, tuple[OrderPlan, ...], int]
"""(required relief left when short of target, else 0; premium; orders; rounds)."""


_ALTERNATIVES = 4
"""Lot-traded plans are compared with plans made without each of their dearest orders."""


def _rank(plan: _Finished) -> tuple[Decimal, Decimal]:
    """On target (or nearest to it) first, then the least premium."""
    return plan[0], plan[1]


def _finished_plans(
    *,
    start: _Simulation,
    model: MarginModel,
    prices: Mapping[str, Decimal],
    required_at: Callable[[MarginFacts], Decimal],
    config: Config,
    now: int,
    ranked: bool,
) -> list[_Finished]:
    """The plans for ``prices``, each with instrument rounding's surplus trimmed; valued
    (what they leave, what they pay) when ``ranked``, to be compared."""
    if _is_scenario(model):
        found = _scenario_plans(
            start=start, model=model, prices=prices, required_at=required_at, config=config, now=now
        )
    else:
        found = [
            _searched_plan(
                start=start,
                model=model,
                prices=prices,
                required_at=required_at,
                config=config,
                now=now,
            )
        ]
    weight = CONTEXT.divide(Decimal(BPS), Decimal(BPS + config.partial_target_buffer_bps))
    finished: list[_Finished] = []
    for plan, rounds in found:
        orders = plan
        lots = any(_spec(o.symbol, config.instruments) is not None for o in orders)
        if not ranked:
            finished.append((ZERO, ZERO, orders, rounds))
            continue
        left = required_at(start.after(orders).facts)
        if lots:
            limit = max(MIN_SIZE, left)

            def on_target(facts: MarginFacts, limit: Decimal = limit) -> bool:
                return required_at(facts) <= limit

            trimmed = _trimmed(
                orders, start=start, still_on_target=on_target, config=config, weight=weight
            )
            if trimmed != orders:
                orders = _attributed(trimmed, start)
        short = left if left > MIN_SIZE else ZERO
        finished.append((short, _premium(orders, start.portfolio), orders, rounds))
    return finished
