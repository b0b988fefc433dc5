"""Whole lots: sizes made tradeable and the bounded local search that whole lots need.

Owns the rounding of a size to an :class:`~liqcore.instruments.InstrumentSpec` (up to the
size step, raised to the minimum order, a stranded remainder closed whole; or down, for a
round that covers the rest later), and the knapsack repairs whole lots make necessary: a
round left short by rounding adds the cheapest lots that cover the rest, and orders are
trimmed back, least efficient first, to the smallest tradeable size that keeps the plan on
target. Bounded (:data:`_REPAIRS`, :data:`_TRIM_ORDERS`) and deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import attrs

from liqcore.config import Config
from liqcore.inputs import Portfolio
from liqcore.instruments import InstrumentSpec, option_symbol
from liqcore.margin.base import MarginFacts
from liqcore.numbers import CONTEXT, MIN_SIZE, ZERO, quantize_down, quantize_up, tidy
from liqcore.planning.orders import OrderPlan
from liqcore.planning.simulation import _Simulation

__all__: list[str] = []


# Sizes at or below MIN_SIZE count as zero, so the smallest order is two of its units (a
# need so small that rounding up gives MIN_SIZE would otherwise plan nothing at all).
_SMALLEST_SIZE = CONTEXT.multiply(MIN_SIZE, Decimal(2))


def _spec(symbol: str, instruments: Mapping[str, InstrumentSpec]) -> InstrumentSpec | None:
    if not instruments:
        return None
    option = option_symbol(symbol)
    return instruments.get(option.underlying) if option is not None else None


def _linear_size(available: Decimal, wanted: Decimal, step: Decimal) -> Decimal:
    """``wanted`` rounded up to ``step``, never above ``available``."""
    if wanted >= available:
        return available
    return min(quantize_up(wanted, step), available)


def _tradeable_size(size: Decimal, available: Decimal, spec: InstrumentSpec | None) -> Decimal:
    """``size`` raised to the smallest size that is not zero and to the exchange's minimum
    order, and to the whole position when the remainder could not be traded: at or below
    ``MIN_SIZE`` (zero), or below the instrument's ``min_size`` (the dust rule)."""
    min_size = spec.min_size if spec is not None else ZERO
    size = min(max(size, min_size, _SMALLEST_SIZE), available)
    remainder = CONTEXT.subtract(available, size)
    if remainder <= MIN_SIZE or remainder < min_size:
        return available
    return size


def _ceil_div(numerator: Decimal, denominator: Decimal) -> int:
    quotient = CONTEXT.divide(numerator, denominator)
    return int(quotient.to_integral_value(rounding=ROUND_CEILING, context=CONTEXT))


_REPAIRS = 8
"""Whole-lot increments a round may add to cover what rounding left short."""


def _repaired(
    plans: tuple[OrderPlan, ...],
    *,
    after: _Simulation,
    sizes: Mapping[str, tuple[Decimal, Decimal, Decimal]],
    prices: Mapping[str, Decimal],
    required_at: Callable[[MarginFacts], Decimal],
    config: Config,
) -> tuple[tuple[OrderPlan, ...], _Simulation]:
    """``plans`` with whole-lot increments added until they cover the need: the cheapest
    increment that covers what is left, else the one with the least premium per unit of
    the need it cuts.

    Rounding sizes to whole lots can leave a round short where scenarios bind together (a
    tie's call and put rounded up move apart); a few lots of a cheap close fix that where
    tracing the need again would reshuffle the plan. For each candidate one lot more, and
    as many lots as would cover the rest at that rate, are valued with the model. At most
    :data:`_REPAIRS` steps.
    """
    planned = {plan.symbol: plan.close_size for plan in plans}
    for _ in range(_REPAIRS):
        short = required_at(after.facts)
        if short <= MIN_SIZE:
            break
        best: tuple[tuple[int, Decimal, str], str, Decimal] | None = None
        for symbol in sorted(sizes):
            spec = _spec(symbol, config.instruments)
            available, price, mark = sizes[symbol]
            size = planned.get(symbol, ZERO)
            step = spec.size_step if spec is not None else MIN_SIZE
            one = CONTEXT.subtract(_tradeable_size(CONTEXT.add(size, step), available, spec), size)
            if one <= MIN_SIZE:
                continue
            cut = _cut(after, symbol, one, price, short=short, required_at=required_at)
            if cut <= 0:
                continue
            options = [(one, cut)]
            if cut < short:  # as many lots as would cover the rest at this rate
                lots = _ceil_div(CONTEXT.multiply(short, one), CONTEXT.multiply(cut, step))
                wanted = CONTEXT.add(size, CONTEXT.multiply(Decimal(lots), step))
                more = CONTEXT.subtract(_tradeable_size(wanted, available, spec), size)
                if more > one:
                    gained = _cut(after, symbol, more, price, short=short, required_at=required_at)
                    if gained > 0:  # more lots can cut less, even nothing or less than nothing
                        options.append((more, gained))
            for increment, gained in options:
                premium = max(ZERO, CONTEXT.multiply(increment, CONTEXT.subtract(price, mark)))
                if gained >= short:
                    key = (0, premium, symbol)  # covers the rest: the cheapest such
                else:
                    key = (1, CONTEXT.divide(premium, gained), symbol)  # least premium per cut
                if best is None or key < best[0]:
                    best = (key, symbol, increment)
        if best is None:
            break
        _, symbol, increment = best
        after = after.after_close(symbol, increment, prices[symbol])
        planned[symbol] = CONTEXT.add(planned.get(symbol, ZERO), increment)
    repaired = tuple(
        OrderPlan(
            symbol=symbol,
            close_size=planned[symbol],
            limit_price=prices[symbol],
            expected_mm_relief=ZERO,
        )
        for symbol in [
            *(plan.symbol for plan in plans),
            *sorted(set(planned) - {p.symbol for p in plans}),
        ]
    )
    return repaired, after


def _cut(
    after: _Simulation,
    symbol: str,
    size: Decimal,
    price: Decimal,
    *,
    short: Decimal,
    required_at: Callable[[MarginFacts], Decimal],
) -> Decimal:
    """How much buying back ``size`` more of ``symbol`` cuts the required relief ``short``."""
    relief, cost = after.change(symbol, size, price)
    left = required_at(
        MarginFacts(
            equity=CONTEXT.subtract(after.facts.equity, cost),
            mm_required=CONTEXT.subtract(after.facts.mm_required, relief),
        )
    )
    return CONTEXT.subtract(short, left)


def _tradeable_down(size: Decimal, available: Decimal, spec: InstrumentSpec) -> Decimal:
    """``size`` rounded down to a tradeable size: whole steps, at least the minimum order
    (else zero), leaving no remainder below the minimum order."""
    step = spec.size_step
    least = max(spec.min_size, step)
    if size >= available:
        return available
    size = quantize_down(size, step)
    if CONTEXT.subtract(available, size) < spec.min_size:
        size = quantize_down(CONTEXT.subtract(available, spec.min_size), step)
    return size if size >= least else ZERO


_TRIM_ORDERS = 8
"""At most this many orders are trimmed (the least efficient first): each costs one pass
over the plan, so the work per reprice stays bounded."""


def _trimmed(
    orders: tuple[OrderPlan, ...],
    *,
    start: _Simulation,
    still_on_target: Callable[[MarginFacts], bool],
    config: Config,
    weight: Decimal,
) -> tuple[OrderPlan, ...]:
    """``orders`` with instrument rounding's surplus taken back.

    Rounding up to lots, raising to the minimum order and closing dust whole can leave more
    than the need covered. Least efficient first (gain per unit of premium), each order on
    an underlying with an :class:`InstrumentSpec` that costs the account equity (a close at
    or below its mark is never cut) is cut to the smallest tradeable size at
    which the plan stays on target (or no further from it), found by bisection over whole
    steps — a cut that removes an order entirely is taken too. Deterministic and bounded.
    """
    # Only the planned symbols: a dust position elsewhere in the portfolio has no mark.
    marks = {o.symbol: start.portfolio.positions[o.symbol].mark_price for o in orders}

    def cost(order: OrderPlan) -> Decimal:
        return CONTEXT.multiply(
            order.close_size, CONTEXT.subtract(order.limit_price, marks[order.symbol])
        )

    def efficiency(order: OrderPlan) -> tuple[Decimal, str]:
        gain = CONTEXT.subtract(order.expected_mm_relief, CONTEXT.multiply(weight, cost(order)))
        return (CONTEXT.divide(gain, cost(order)), order.symbol)

    # A close that pays the account (its price at or below the mark) is never cut: each
    # contract of it frees margin *and* adds equity, so cutting it only makes the others dearer.
    chosen = sorted(
        (o for o in orders if _spec(o.symbol, config.instruments) is not None and cost(o) > 0),
        key=efficiency,
    )[:_TRIM_ORDERS]
    current = list(orders)
    for order in chosen:
        index = next(i for i, o in enumerate(current) if o.symbol == order.symbol)
        spec = _spec(order.symbol, config.instruments)
        assert spec is not None
        others = start.after(current, skip=index)
        available = start.portfolio.positions[order.symbol].amount.copy_negate()

        def fits(size: Decimal, others: _Simulation = others, order: OrderPlan = order) -> bool:
            if size <= 0:
                return still_on_target(others.facts)
            relief, cost = others.change(order.symbol, size, order.limit_price)
            return still_on_target(
                MarginFacts(
                    equity=CONTEXT.subtract(others.facts.equity, cost),
                    mm_required=CONTEXT.subtract(others.facts.mm_required, relief),
                )
            )

        size = _smallest_fitting(fits, available, order.close_size, spec)
        if size == order.close_size:
            continue
        if size <= 0:
            del current[index]
        else:
            current[index] = attrs.evolve(order, close_size=size)
    return tuple(current)


def _premium(orders: Sequence[OrderPlan], portfolio: Portfolio) -> Decimal:
    """What ``orders`` pay above the marks: the equity the account gives up."""
    total = ZERO
    for order in orders:
        mark = portfolio.positions[order.symbol].mark_price
        price_over = CONTEXT.subtract(order.limit_price, mark)
        total = CONTEXT.add(total, CONTEXT.multiply(order.close_size, price_over))
    return total


def _smallest_fitting(
    fits: Callable[[Decimal], bool], available: Decimal, current: Decimal, spec: InstrumentSpec
) -> Decimal:
    """The smallest tradeable size up to ``current`` that ``fits`` (``current`` does)."""
    if fits(ZERO):
        return ZERO
    step = spec.size_step
    keep = max(spec.min_size, _SMALLEST_SIZE)
    low = _ceil_div(max(spec.min_size, step), step)  # in steps
    high = int(
        CONTEXT.divide(min(current, CONTEXT.subtract(available, keep)), step).to_integral_value(
            rounding=ROUND_FLOOR, context=CONTEXT
        )
    )
    if high < low:
        return current
    best = current
    # Invariant: sizes of more than ``high`` steps (up to ``current``) fit.
    if not fits(tidy(CONTEXT.multiply(Decimal(high), step))):
        return current
    best = tidy(CONTEXT.multiply(Decimal(high), step))
    while low < high:
        middle = (low + high) // 2
        size = tidy(CONTEXT.multiply(Decimal(middle), step))
        if fits(size):
            high, best = middle, size
        else:
            low = middle + 1
    return best
