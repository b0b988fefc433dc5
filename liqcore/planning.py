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

from collections.abc import Callable, Mapping, Sequence
from decimal import ROUND_CEILING, Decimal
from types import MappingProxyType
from typing import TypeGuard

import attrs

from liqcore import _validators as v
from liqcore.config import Config
from liqcore.errors import InvalidInput, PlanningError
from liqcore.inputs import MarginMode, Portfolio, Position, Quote
from liqcore.instruments import InstrumentSpec, option_symbol
from liqcore.margin.base import MarginFacts, MarginModel
from liqcore.margin.standard import StandardMargin
from liqcore.numbers import BPS, CONTEXT, MIN_SIZE, ONE, ZERO, bps_fraction, quantize_up, tidy
from liqcore.targets import required_mm_relief

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

PLAN_MAX_ROUNDS = 3
"""Planning rounds on the simulated portfolio (seed ``PARTIAL_PLAN_MAX_ROUNDS``)."""

_NO_INSTRUMENTS: Mapping[str, InstrumentSpec] = MappingProxyType({})

# Sizes at or below MIN_SIZE count as zero, so the smallest order is two of its units (a
# need so small that rounding up gives MIN_SIZE would otherwise plan nothing at all).
_SMALLEST_SIZE = CONTEXT.multiply(MIN_SIZE, Decimal(2))

# Steps of each search for a size under a non-linear margin model: 32 bisections tell
# 2**32 lots apart, more than any real position has, and the bound keeps planning time fixed.
_SEARCH_STEPS = 32
# The golden-section search for where closing more stops helping: 0.618034 of the bracket
# is kept per evaluation, so 64 steps resolve 10**13 lots.
_GOLDEN_PPM = 618_034
_PEAK_STEPS = 64


# --- prices ------------------------------------------------------------------------------


def _positive(value: Decimal | None) -> Decimal | None:
    return value if value is not None and value > 0 else None


def _is_short(position: Position) -> bool:
    return position.amount < 0 and position.amount.copy_abs() > MIN_SIZE


def _mark(position: Position) -> Decimal | None:
    """The position's mark price if it has a positive one (dust has none)."""
    if position.amount.copy_abs() <= MIN_SIZE:
        return None
    return _positive(position.mark_price)


def reference_price(quote: Quote | None, position: Position, band_bps: int) -> Decimal:
    """The price a liquidation buy starts from, before the bonus.

    The best ask, else the mid, else the best bid, else theo, else the position's mark —
    the first that is positive — capped at ``fair × (1 + band_bps / 10_000)`` where fair
    is theo if positive, else the mark. Raises :class:`PlanningError` when there is no
    positive price or no positive fair value to cap it against.
    """
    ask = bid = mid = theo = None
    if quote is not None:
        ask, mid, bid = _positive(quote.best_ask), _positive(quote.mid), _positive(quote.best_bid)
        theo = _positive(quote.theo)
    mark = _mark(position)
    price = next((p for p in (ask, mid, bid, theo, mark) if p is not None), None)
    if price is None:
        raise PlanningError(f"no positive price for {position.symbol} (book, theo and mark)")
    fair = theo if theo is not None else mark
    if fair is None:
        raise PlanningError(f"no positive fair value (theo or mark) for {position.symbol}")
    return min(price, CONTEXT.multiply(fair, bps_fraction(band_bps)))


def execution_prices(
    portfolio: Portfolio,
    quotes: Mapping[str, Quote],
    bonus_bps: int,
    config: Config,
    now: int,
) -> tuple[Mapping[str, Decimal], Mapping[str, str]]:
    """Limit prices of the short options that may be closed, and why others have none.

    For each short option that has not expired (expiry > ``now``): the reference price
    × ``(1 + bonus_bps / 10_000)``, rounded up to the underlying's price tick (``MIN_SIZE``
    without an :class:`InstrumentSpec`). A symbol without a usable price is named in the
    second mapping with the reason; the others are still priced. Both are in symbol order.
    """
    markup = bps_fraction(bonus_bps)
    prices: dict[str, Decimal] = {}
    unpriced: dict[str, str] = {}
    for symbol in sorted(portfolio.positions):
        position = portfolio.positions[symbol]
        option = option_symbol(symbol)
        if option is None or not _is_short(position) or option.expires_at <= now:
            continue
        try:
            reference = reference_price(quotes.get(symbol), position, config.reference_band_bps)
        except PlanningError as error:
            unpriced[symbol] = str(error)
            continue
        spec = config.instruments.get(option.underlying)
        tick = spec.price_tick if spec is not None else MIN_SIZE
        prices[symbol] = quantize_up(CONTEXT.multiply(reference, markup), tick)
    return MappingProxyType(prices), MappingProxyType(unpriced)


# --- the simulated close -----------------------------------------------------------------


def close_short(portfolio: Portfolio, symbol: str, size: Decimal, price: Decimal) -> Portfolio:
    """``portfolio`` after buying back ``size`` of the short ``symbol`` at ``price``.

    [apply_standard_close] ``cash −= price × size``, ``amount += size``; the remainder keeps
    its entry and mark price (its unrealized PnL scales with the amount) and disappears at
    or below ``MIN_SIZE``. A size at or below ``MIN_SIZE`` changes nothing. Raises
    :class:`PlanningError` for an unknown symbol, a position that is not short, or a size
    above ``|amount| + MIN_SIZE``.
    """
    if size <= MIN_SIZE:
        return portfolio
    position = portfolio.positions.get(symbol)
    if position is None:
        raise PlanningError(f"cannot close {symbol}: no such position")
    if position.amount >= 0:
        raise PlanningError(f"cannot close {symbol}: position {position.amount} is not short")
    available = position.amount.copy_negate()
    if size > CONTEXT.add(available, MIN_SIZE):
        raise PlanningError(f"cannot close {size} of {symbol}: the short is only {available}")
    remaining = CONTEXT.add(position.amount, size)
    positions = dict(portfolio.positions)
    if remaining.copy_abs() <= MIN_SIZE:
        del positions[symbol]
    else:
        pnl_per_unit = CONTEXT.divide(position.unrealized_pnl, position.amount)
        positions[symbol] = attrs.evolve(
            position, amount=remaining, unrealized_pnl=CONTEXT.multiply(pnl_per_unit, remaining)
        )
    cash = CONTEXT.subtract(portfolio.cash, CONTEXT.multiply(price, size))
    return Portfolio(cash=cash, positions=positions, spot=portfolio.spot)


def _is_additive(model: MarginModel) -> TypeGuard[StandardMargin]:
    """Standard margin is additive per position, so a close's relief is linear in its size.

    ``type(...) is``: a subclass may change ``evaluate``."""
    return type(model) is StandardMargin


def _relief(
    model: MarginModel,
    *,
    portfolio: Portfolio,
    symbol: str,
    size: Decimal,
    price: Decimal,
    now: int,
    before: MarginFacts,
) -> tuple[Decimal, Decimal, int]:
    """``(mm relief, equity cost, model evaluations)`` of closing ``size`` of ``symbol``.

    ``before`` is the model's evaluation of ``portfolio``. The one seam where a model's
    faster path plugs in: under standard margin only the closed position's margin changes.
    """
    if _is_additive(model):
        position = portfolio.positions[symbol]
        remaining = CONTEXT.add(position.amount, size)
        after = (
            ZERO
            if remaining.copy_abs() <= MIN_SIZE
            else model.position_mm(attrs.evolve(position, amount=remaining), portfolio.spot)
        )
        relief = CONTEXT.subtract(model.position_mm(position, portfolio.spot), after)
        cost = CONTEXT.multiply(size, CONTEXT.subtract(price, position.mark_price))
        return relief, cost, 0
    facts = model.evaluate(close_short(portfolio, symbol, size, price), now)
    return (
        CONTEXT.subtract(before.mm_required, facts.mm_required),
        CONTEXT.subtract(before.equity, facts.equity),
        1,
    )


# --- candidates and the greedy plan ------------------------------------------------------


@attrs.frozen(kw_only=True)
class SliceCandidate:
    """A short option that can be bought back, with what one unit of it frees and costs.

    ``equity_cost_per_unit = expected_fill_price − mark``: the bonus over fair value the
    account gives up per unit (negative when the fill is below the mark).
    """

    symbol: str = attrs.field(validator=v.text)
    max_close_size: Decimal = attrs.field(validator=v.positive)
    expected_fill_price: Decimal = attrs.field(validator=v.positive)
    mm_relief_per_unit: Decimal = attrs.field(validator=v.positive)
    equity_cost_per_unit: Decimal = attrs.field(validator=v.decimal)


@attrs.frozen(kw_only=True)
class OrderPlan:
    """One reduce-only BUY to submit (seed ``PartialLiquidationOrderPlan``)."""

    symbol: str = attrs.field(validator=v.text)
    close_size: Decimal = attrs.field(validator=v.positive)
    limit_price: Decimal = attrs.field(validator=v.positive)
    expected_mm_relief: Decimal = attrs.field(validator=v.non_negative)


def _candidates(
    *,
    portfolio: Portfolio,
    prices: Mapping[str, Decimal],
    model: MarginModel,
    now: int,
    buffer_bps: int,
    before: MarginFacts,
) -> tuple[tuple[SliceCandidate, ...], int]:
    harm_factor = bps_fraction(buffer_bps)
    candidates: list[SliceCandidate] = []
    evaluations = 0
    for symbol in sorted(prices):
        position = portfolio.positions.get(symbol)
        option = option_symbol(symbol)
        if position is None or option is None or not _is_short(position):
            continue
        if option.expires_at <= now:
            continue
        available = position.amount.copy_negate()
        step = min(available, ONE)
        price = prices[symbol]
        relief, _, used = _relief(
            model,
            portfolio=portfolio,
            symbol=symbol,
            size=step,
            price=price,
            now=now,
            before=before,
        )
        evaluations += used
        relief_per_unit = CONTEXT.divide(relief, step)
        cost_per_unit = CONTEXT.subtract(price, position.mark_price)
        if relief_per_unit <= 0:
            continue
        if cost_per_unit >= CONTEXT.multiply(harm_factor, relief_per_unit):
            continue  # no-harm filter: it would move the account away from its target
        candidates.append(
            SliceCandidate(
                symbol=symbol,
                max_close_size=available,
                expected_fill_price=price,
                mm_relief_per_unit=relief_per_unit,
                equity_cost_per_unit=cost_per_unit,
            )
        )
    return tuple(candidates), evaluations


def slice_candidates(
    portfolio: Portfolio,
    prices: Mapping[str, Decimal],
    model: MarginModel,
    now: int,
    buffer_bps: int,
) -> tuple[SliceCandidate, ...]:
    """The short options worth closing, in symbol order.

    For each non-expired short option with a price: relief per unit = (MM now − MM after
    closing ``min(|amount|, 1)`` at the price) / that step; kept when positive and when
    its equity cost per unit stays below ``(1 + buffer_bps / 10_000) ×`` relief per unit
    (the no-harm filter). Raises :class:`PlanningError` when the model cannot evaluate.
    """
    before = model.evaluate(portfolio, now)
    return _candidates(
        portfolio=portfolio,
        prices=prices,
        model=model,
        now=now,
        buffer_bps=buffer_bps,
        before=before,
    )[0]


def _rank_key(candidate: SliceCandidate) -> tuple[int, Decimal, str]:
    # copy_negate is exact: unary minus would round in the caller's decimal context.
    if candidate.equity_cost_per_unit <= 0:
        return (0, candidate.mm_relief_per_unit.copy_negate(), candidate.symbol)
    efficiency = CONTEXT.divide(candidate.mm_relief_per_unit, candidate.equity_cost_per_unit)
    return (1, efficiency.copy_negate(), candidate.symbol)


def _ranked(candidates: Sequence[SliceCandidate]) -> list[SliceCandidate]:
    """Most margin freed per unit of equity given up first; a free close first of all."""
    return sorted(candidates, key=_rank_key)


def _spec(symbol: str, instruments: Mapping[str, InstrumentSpec]) -> InstrumentSpec | None:
    option = option_symbol(symbol)
    return instruments.get(option.underlying) if option is not None else None


def _linear_size(available: Decimal, wanted: Decimal, step: Decimal) -> Decimal:
    """``wanted`` rounded up to ``step``, never above ``available``."""
    if wanted >= available:
        return available
    return min(quantize_up(wanted, step), available)


def greedy_plan(
    candidates: Sequence[SliceCandidate],
    required_relief: Decimal,
    instruments: Mapping[str, InstrumentSpec] = _NO_INSTRUMENTS,
) -> tuple[OrderPlan, ...]:
    """Close the best-ranked candidates until ``required_relief`` is covered.

    [greedy_partial_plan] Ranked by ``mm_relief_per_unit / equity_cost_per_unit``
    descending (a cost ≤ 0 first, by relief; ties by symbol); from each
    ``min(max_close_size, remaining / relief per unit)``, rounded up to the underlying's
    size step (``MIN_SIZE`` without one), never above ``max_close_size``.
    """
    plans: list[OrderPlan] = []
    remaining = required_relief
    for candidate in _ranked(candidates):
        if remaining <= 0:
            break
        spec = _spec(candidate.symbol, instruments)
        step = spec.size_step if spec is not None else MIN_SIZE
        size = _linear_size(
            candidate.max_close_size,
            CONTEXT.divide(remaining, candidate.mm_relief_per_unit),
            step,
        )
        relief = CONTEXT.multiply(size, candidate.mm_relief_per_unit)
        plans.append(
            OrderPlan(
                symbol=candidate.symbol,
                close_size=size,
                limit_price=candidate.expected_fill_price,
                expected_mm_relief=relief,
            )
        )
        remaining = CONTEXT.subtract(remaining, relief)
    return tuple(plans)


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


# --- the whole plan ----------------------------------------------------------------------


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


def _searched_size(
    gain: Callable[[Decimal], Decimal], available: Decimal, step: Decimal, needed: Decimal
) -> Decimal | None:
    """The smallest size, in whole steps, whose gain meets ``needed`` — or, when none does,
    the smallest with the highest gain: closing more would stop moving the account towards
    its target. ``None`` when no size helps.

    For a margin model whose relief is not linear in the size (portfolio margin, a user's
    engine). Sizes are counted in units of ``step`` (the last unit is the whole position).
    The search assumes the gain is concave in the size, as it is for scenario margin (a
    maximum of losses that are linear in the size); it compares sizes far enough apart
    that a model rounding its output (to cents, say) cannot mislead it, and it stays
    bounded and deterministic whatever the model does.
    """
    units = _ceil_div(available, step)

    def size_of(unit: int) -> Decimal:
        return min(tidy(CONTEXT.multiply(Decimal(unit), step)), available)

    def at(unit: int) -> Decimal:
        return ZERO if unit <= 0 else gain(size_of(unit))

    # Leave more than MIN_SIZE: a remainder at or below it would be closed too.
    tail = 1 if step > MIN_SIZE else 2
    peak = units
    if units <= tail or at(units - tail) >= at(units):
        peak = _peak_unit(at, 1, units)
    best = at(peak)
    if best <= 0:
        return None
    wanted = min(needed, best)
    # Invariant: at(low) < wanted <= at(high). False position is exact in one step where
    # the gain is linear; every other step halves the bracket, so it always closes.
    low, low_gain, high, high_gain = 0, ZERO, peak, best
    for index in range(_SEARCH_STEPS):
        if high - low <= 1:
            break
        if index % 2 == 0:
            share = CONTEXT.multiply(CONTEXT.subtract(wanted, low_gain), Decimal(high - low))
            guess = low + _ceil_div(share, CONTEXT.subtract(high_gain, low_gain))
        else:
            guess = (low + high) // 2
        guess = min(max(guess, low + 1), high - 1)
        guess_gain = at(guess)
        if guess_gain >= wanted:
            high, high_gain = guess, guess_gain
        else:
            low, low_gain = guess, guess_gain
    return size_of(high)


class _Closes:
    """What closing each size of one short does to one portfolio, memoised (planning-local)."""

    __slots__ = (
        "_before",
        "_memo",
        "_model",
        "_now",
        "_portfolio",
        "_price",
        "_symbol",
        "_weight",
        "evaluations",
    )

    def __init__(
        self,
        *,
        model: MarginModel,
        portfolio: Portfolio,
        before: MarginFacts,
        candidate: SliceCandidate,
        now: int,
        cost_weight: Decimal,
    ) -> None:
        self._model, self._portfolio, self._before, self._now = model, portfolio, before, now
        self._symbol, self._price = candidate.symbol, candidate.expected_fill_price
        self._weight = cost_weight
        self._memo: dict[Decimal, tuple[Decimal, Decimal]] = {}
        self.evaluations = 0

    def change(self, size: Decimal) -> tuple[Decimal, Decimal]:
        """``(mm relief, equity cost)`` of closing ``size``."""
        if size not in self._memo:
            relief, cost, used = _relief(
                self._model,
                portfolio=self._portfolio,
                symbol=self._symbol,
                size=size,
                price=self._price,
                now=self._now,
                before=self._before,
            )
            self.evaluations += used
            self._memo[size] = (relief, cost)
        return self._memo[size]

    def gain(self, size: Decimal) -> Decimal:
        """The cut in required relief: ``relief − equity cost × 10_000 / (10_000 + buffer)``."""
        relief, cost = self.change(size)
        return CONTEXT.subtract(relief, CONTEXT.multiply(cost, self._weight))


def _peak_unit(at: Callable[[int], Decimal], low: int, high: int) -> int:
    """A unit in ``[low, high]`` where the (concave) gain ``at`` is highest, smallest first.

    A golden-section search: each evaluation keeps 0.618 of the bracket, and it compares
    points far apart, so a model that rounds its output cannot mislead it.
    """
    inner_left = high - (high - low) * _GOLDEN_PPM // 1_000_000
    inner_right = low + (high - low) * _GOLDEN_PPM // 1_000_000
    for _ in range(_PEAK_STEPS):
        if high - low <= 3:
            break
        inner_left = min(max(inner_left, low + 1), high - 2)
        inner_right = min(max(inner_right, inner_left + 1), high - 1)
        if at(inner_left) < at(inner_right):
            low, inner_left = inner_left, inner_right  # the peak lies right of inner_left
            inner_right = low + (high - low) * _GOLDEN_PPM // 1_000_000
        else:
            high, inner_right = inner_right, inner_left  # the peak lies left of inner_right
            inner_left = high - (high - low) * _GOLDEN_PPM // 1_000_000
    points = {low, inner_left, inner_right, high, *range(low, min(high, low + 3) + 1)}
    peak = low
    for unit in sorted(point for point in points if low <= point <= high):
        if at(unit) > at(peak):
            peak = unit
    return peak


def _plan_round(
    *,
    candidates: Sequence[SliceCandidate],
    required: Decimal,
    portfolio: Portfolio,
    facts: MarginFacts,
    model: MarginModel,
    config: Config,
    now: int,
) -> tuple[tuple[OrderPlan, ...], Portfolio, int]:
    """One greedy round: ``(plans, portfolio after them, model evaluations)``.

    Unlike :func:`greedy_plan`, a close is sized by its *gain* (:meth:`_Closes.gain`), so
    the equity the fill pays over the mark is covered in the same round instead of being
    discovered by the next one — with a costly close, three rounds of relief-only sizing
    leave the account short of its target. Each candidate is sized and valued on the
    portfolio the earlier ones leave.
    """
    cost_weight = CONTEXT.divide(Decimal(BPS), Decimal(BPS + config.partial_target_buffer_bps))
    linear = _is_additive(model)
    plans: list[OrderPlan] = []
    evaluations = 0
    remaining = required
    for candidate in _ranked(candidates):
        if remaining <= 0:
            break
        spec = _spec(candidate.symbol, config.instruments)
        if spec is not None and candidate.max_close_size < spec.size_step:
            continue  # less than one lot: the exchange cannot take the order
        closes = _Closes(
            model=model,
            portfolio=portfolio,
            before=facts,
            candidate=candidate,
            now=now,
            cost_weight=cost_weight,
        )
        fitted = _fit(closes, candidate, remaining, spec, linear=linear, cost_weight=cost_weight)
        evaluations += closes.evaluations
        if fitted is None:
            continue
        size, relief, cost, gain = fitted
        plans.append(
            OrderPlan(
                symbol=candidate.symbol,
                close_size=size,
                limit_price=candidate.expected_fill_price,
                expected_mm_relief=relief,
            )
        )
        portfolio = close_short(portfolio, candidate.symbol, size, candidate.expected_fill_price)
        facts = MarginFacts(
            equity=CONTEXT.subtract(facts.equity, cost),
            mm_required=CONTEXT.subtract(facts.mm_required, relief),
        )
        remaining = CONTEXT.subtract(remaining, gain)
    return tuple(plans), portfolio, evaluations


def _fit(
    closes: _Closes,
    candidate: SliceCandidate,
    needed: Decimal,
    spec: InstrumentSpec | None,
    *,
    linear: bool,
    cost_weight: Decimal,
) -> tuple[Decimal, Decimal, Decimal, Decimal] | None:
    """``(size, mm relief, equity cost, gain)`` of the close planned for ``candidate``, or
    ``None`` when no tradeable size helps."""
    step = spec.size_step if spec is not None else MIN_SIZE
    if linear:
        size = _linear_gain_size(candidate, needed, cost_weight, step)
    else:
        size = _searched_size(closes.gain, candidate.max_close_size, step, needed)
    if size is None:
        return None
    size = _tradeable_size(size, candidate.max_close_size, spec)
    relief, cost = closes.change(size)
    gain = closes.gain(size)
    if relief <= 0 or gain <= 0:
        return None
    return size, relief, cost, gain


def _linear_gain_size(
    candidate: SliceCandidate, needed: Decimal, cost_weight: Decimal, step: Decimal
) -> Decimal | None:
    """The size whose gain meets ``needed`` when relief and cost are linear in the size."""
    gain_per_unit = CONTEXT.subtract(
        candidate.mm_relief_per_unit, CONTEXT.multiply(candidate.equity_cost_per_unit, cost_weight)
    )
    if gain_per_unit <= 0:
        return None  # only reachable by rounding at the no-harm boundary
    return _linear_size(candidate.max_close_size, CONTEXT.divide(needed, gain_per_unit), step)


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
    position smaller than one size step is not planned. Raises :class:`PlanningError` when
    the model cannot evaluate the portfolio.

    Each close is sized by its *gain*, the cut it makes in the required relief: its margin
    relief less the equity its fill pays over the mark × ``10_000 / (10_000 + buffer)``
    (deviation: the seed sizes by relief alone and leaves the equity its own fills cost to
    later rounds, so with a costly close three rounds leave the account short of target).
    Under a model whose relief is not linear (portfolio margin, a user's engine) each
    close is sized by searching the model: the smallest size meeting the need, never past
    the size after which closing more stops moving the account towards its target.
    """
    model = config.margin_model(margin_mode)
    original = model.evaluate(portfolio, now)
    evaluations = 1
    prices, unpriced = execution_prices(portfolio, quotes, bonus_bps, config, now)
    buffer_bps = config.partial_target_buffer_bps
    simulated, facts = portfolio, original
    orders: tuple[OrderPlan, ...] = ()
    rounds = 0
    for _ in range(PLAN_MAX_ROUNDS):
        if simulated is not portfolio:
            facts = model.evaluate(simulated, now)
            evaluations += 1
        required = required_mm_relief(
            CONTEXT.add(anchor.equity, CONTEXT.subtract(facts.equity, original.equity)),
            CONTEXT.add(
                anchor.mm_required, CONTEXT.subtract(facts.mm_required, original.mm_required)
            ),
            buffer_bps,
        )
        if required <= MIN_SIZE:
            break
        candidates, used = _candidates(
            portfolio=simulated,
            prices=prices,
            model=model,
            now=now,
            buffer_bps=buffer_bps,
            before=facts,
        )
        evaluations += used
        round_plans, simulated, used = _plan_round(
            candidates=candidates,
            required=required,
            portfolio=simulated,
            facts=facts,
            model=model,
            config=config,
            now=now,
        )
        evaluations += used
        if not round_plans:
            break
        rounds += 1
        for plan in round_plans:
            orders = merge_plan(orders, plan)
    return PartialPlan(
        orders=orders,
        unpriced=unpriced,
        model_facts=original,
        rounds=rounds,
        evaluations=evaluations,
    )
