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

from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext
from types import MappingProxyType
from typing import TypeGuard

import attrs

from liqcore import _validators as v
from liqcore.config import Config
from liqcore.errors import InvalidInput, PlanningError
from liqcore.inputs import MarginMode, Portfolio, Position, Quote
from liqcore.instruments import InstrumentSpec, OptionSymbol, option_symbol
from liqcore.margin.base import MarginFacts, MarginModel
from liqcore.margin.portfolio import PortfolioMargin, PreparedPortfolioMargin
from liqcore.margin.standard import StandardMargin
from liqcore.numbers import (
    BPS,
    CONTEXT,
    MIN_SIZE,
    ONE,
    ZERO,
    bps_fraction,
    quantize_down,
    quantize_up,
    tidy,
)
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


# --- what a plan derives once ------------------------------------------------------------


class _Memo:
    """What one plan would otherwise re-derive per candidate and per round (planning-local:
    one per call of a public function, discarded with it; liqcore keeps no global cache).

    Each position's mark (by the :class:`Position` object, which is frozen; the memo keeps it
    alive so its ``id`` is not reused), each symbol's parsed option, and under standard margin
    the per-unit margin of a short option at the plan's spot. Every value is computed by the
    very operations the model and :attr:`Position.mark_price` use, in the same order, so a
    plan is the same, digit for digit, with or without the memo.
    """

    __slots__ = ("_expiries", "_marks", "_model", "_options", "_spot", "_terms", "_units")

    def __init__(self, model: MarginModel | None, spot: Mapping[str, Decimal]) -> None:
        self._model = model if model is not None and _is_additive(model) else None
        self._spot = spot
        self._marks: dict[int, tuple[Position, Decimal]] = {}
        self._options: dict[str, OptionSymbol | None] = {}
        self._expiries: dict[str, int | None] = {}
        self._units: dict[str, Decimal] = {}
        self._terms: dict[int, tuple[Position, Decimal, Decimal]] = {}

    def option(self, symbol: str) -> OptionSymbol | None:
        """:func:`~liqcore.instruments.option_symbol` of ``symbol``."""
        try:
            return self._options[symbol]
        except KeyError:
            option = self._options[symbol] = option_symbol(symbol)
            return option

    def expiry(self, symbol: str) -> int | None:
        """The option ``symbol``'s ``expires_at``, ``None`` when it is no option."""
        try:
            return self._expiries[symbol]
        except KeyError:
            option = self.option(symbol)
            expiry = self._expiries[symbol] = None if option is None else option.expires_at
            return expiry

    def mark(self, position: Position) -> Decimal:
        """``position.mark_price``."""
        known = self._marks.get(id(position))
        if known is None:
            known = self._marks[id(position)] = (position, position.mark_price)
        return known[1]

    def mm(
        self,
        model: StandardMargin,
        position: Position,
        amount: Decimal,
        spot: Mapping[str, Decimal],
    ) -> Decimal:
        """``model.position_mm`` of ``position`` holding ``amount`` instead (standard margin)."""
        if amount.copy_abs() <= MIN_SIZE:
            return ZERO
        option = self.option(position.symbol)
        if option is None or model is not self._model or not self._same_spot(spot):
            if amount is not position.amount:
                position = attrs.evolve(position, amount=amount)
            return model.position_mm(position, spot)
        if amount > 0:
            return ZERO
        unit = self._units.get(position.symbol)
        if unit is None:
            unit = self._units[position.symbol] = model._option_unit_mm(option, spot)
        return CONTEXT.multiply(amount.copy_negate(), unit)

    def evaluate(self, model: MarginModel, portfolio: Portfolio, now: int) -> MarginFacts:
        """``model.evaluate(portfolio, now)``."""
        if (
            model is not self._model
            or not _is_additive(model)
            or not self._same_spot(portfolio.spot)
        ):
            return model.evaluate(portfolio, now)
        equity = portfolio.cash
        mm = ZERO
        spot = portfolio.spot
        terms = self._terms
        for position in portfolio.positions.values():
            # A position's terms (its value and margin) are the same in every portfolio of
            # the plan that holds it: the spot is the plan's.
            term = terms.get(id(position))
            if term is None:
                amount = position.amount
                if amount.copy_abs() <= MIN_SIZE:
                    continue
                term = terms[id(position)] = (
                    position,
                    CONTEXT.multiply(amount, self.mark(position)),
                    self.mm(model, position, amount, spot),
                )
            equity = CONTEXT.add(equity, term[1])
            mm = CONTEXT.add(mm, term[2])
        return MarginFacts(equity=equity, mm_required=mm)

    def _same_spot(self, spot: Mapping[str, Decimal]) -> bool:
        return spot is self._spot or spot == self._spot


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
    return _reference_price(quote, position.symbol, _mark(position), bps_fraction(band_bps))


def _reference_price(
    quote: Quote | None, symbol: str, mark: Decimal | None, cap: Decimal
) -> Decimal:
    """:func:`reference_price` of the position ``symbol`` whose positive mark is ``mark``
    (``None`` if it has none), ``cap`` being ``bps_fraction(band_bps)``."""
    ask = bid = mid = theo = None
    if quote is not None:
        ask, mid, bid = _positive(quote.best_ask), _positive(quote.mid), _positive(quote.best_bid)
        theo = _positive(quote.theo)
    price = (
        ask
        if ask is not None
        else mid
        if mid is not None
        else bid
        if bid is not None
        else theo
        if theo is not None
        else mark
    )
    if price is None:
        raise PlanningError(f"no positive price for {symbol} (book, theo and mark)")
    fair = theo if theo is not None else mark
    if fair is None:
        raise PlanningError(f"no positive fair value (theo or mark) for {symbol}")
    return min(price, CONTEXT.multiply(fair, cap))


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
    return _execution_prices(portfolio, quotes, bonus_bps, config, now, _Memo(None, portfolio.spot))


def _execution_prices(  # noqa: PLR0917 (execution_prices' arguments and the memo)
    portfolio: Portfolio,
    quotes: Mapping[str, Quote],
    bonus_bps: int,
    config: Config,
    now: int,
    memo: _Memo,
) -> tuple[Mapping[str, Decimal], Mapping[str, str]]:
    markup = bps_fraction(bonus_bps)
    cap = bps_fraction(config.reference_band_bps)
    prices: dict[str, Decimal] = {}
    unpriced: dict[str, str] = {}
    for symbol in sorted(portfolio.positions):
        position = portfolio.positions[symbol]
        option, expiry = memo.option(symbol), memo.expiry(symbol)
        if option is None or expiry is None or not _is_short(position) or expiry <= now:
            continue
        try:
            reference = _reference_price(
                quotes.get(symbol), symbol, _positive(memo.mark(position)), cap
            )
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
    return _closed_all(portfolio, ((symbol, size, price),))


def _closed_all(portfolio: Portfolio, closes: Iterable[tuple[str, Decimal, Decimal]]) -> Portfolio:
    """``portfolio`` after every ``(symbol, size, price)`` close in turn (each size above
    ``MIN_SIZE``), built once."""
    positions = dict(portfolio.positions)
    cash = portfolio.cash
    for symbol, size, price in closes:
        position = positions.get(symbol)
        if position is None:
            raise PlanningError(f"cannot close {symbol}: no such position")
        if position.amount >= 0:
            raise PlanningError(f"cannot close {symbol}: position {position.amount} is not short")
        available = position.amount.copy_negate()
        if size > CONTEXT.add(available, MIN_SIZE):
            raise PlanningError(f"cannot close {size} of {symbol}: the short is only {available}")
        remainder = _remainder(position, size)
        if remainder is None:
            del positions[symbol]
        else:
            positions[symbol] = remainder
        cash = CONTEXT.subtract(cash, CONTEXT.multiply(price, size))
    return Portfolio(cash=cash, positions=positions, spot=portfolio.spot)


def _remainder(position: Position, size: Decimal) -> Position | None:
    """What is left of ``position`` after buying back ``size``: the mark kept, the unrealized
    PnL scaled with the amount; ``None`` at or below ``MIN_SIZE``."""
    remaining = CONTEXT.add(position.amount, size)
    if remaining.copy_abs() <= MIN_SIZE:
        return None
    pnl_per_unit = CONTEXT.divide(position.unrealized_pnl, position.amount)
    return attrs.evolve(
        position, amount=remaining, unrealized_pnl=CONTEXT.multiply(pnl_per_unit, remaining)
    )


def _is_additive(model: MarginModel) -> TypeGuard[StandardMargin]:
    """Standard margin is additive per position, so a close's relief is linear in its size.

    ``type(...) is``: a subclass may change ``evaluate``."""
    return type(model) is StandardMargin


def _is_scenario(model: MarginModel) -> TypeGuard[PortfolioMargin]:
    """Portfolio margin exposes its scenario structure (a maximum of linear losses), so the
    cheapest closes can be found exactly (:func:`_cheapest_closes`)."""
    return type(model) is PortfolioMargin


def _relief(
    model: MarginModel,
    *,
    portfolio: Portfolio,
    symbol: str,
    size: Decimal,
    price: Decimal,
    now: int,
    before: MarginFacts,
    prepared: PreparedPortfolioMargin | None = None,
    memo: _Memo | None = None,
) -> tuple[Decimal, Decimal, int]:
    """``(mm relief, equity cost, full model evaluations)`` of closing ``size`` of ``symbol``.

    ``before`` is the model's evaluation of ``portfolio``. The one seam where a model's
    faster path plugs in: under standard margin only the closed position's margin changes;
    under portfolio margin ``prepared`` (the portfolio valued once) recombines its cached
    scenario values; any other model evaluates the closed portfolio.
    """
    if prepared is not None:
        facts = prepared.facts_after_close(symbol, size, price)
        return (
            CONTEXT.subtract(before.mm_required, facts.mm_required),
            CONTEXT.subtract(before.equity, facts.equity),
            0,
        )
    if _is_additive(model):
        if memo is None:
            memo = _Memo(model, portfolio.spot)
        position = portfolio.positions[symbol]
        spot = portfolio.spot
        remaining = CONTEXT.add(position.amount, size)
        after = (
            ZERO if remaining.copy_abs() <= MIN_SIZE else memo.mm(model, position, remaining, spot)
        )
        relief = CONTEXT.subtract(memo.mm(model, position, position.amount, spot), after)
        cost = CONTEXT.multiply(size, CONTEXT.subtract(price, memo.mark(position)))
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
    prepared: PreparedPortfolioMargin | None = None,
    memo: _Memo,
) -> tuple[tuple[SliceCandidate, ...], int]:
    harm_factor = bps_fraction(buffer_bps)
    candidates: list[SliceCandidate] = []
    evaluations = 0
    for symbol in sorted(prices):
        position = portfolio.positions.get(symbol)
        expiry = memo.expiry(symbol)
        if position is None or expiry is None or not _is_short(position):
            continue
        if expiry <= now:
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
            prepared=prepared,
            memo=memo,
        )
        evaluations += used
        relief_per_unit = CONTEXT.divide(relief, step)
        cost_per_unit = CONTEXT.subtract(price, memo.mark(position))
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
    prepared = model.prepare(portfolio, now) if _is_scenario(model) else None
    before = prepared.facts() if prepared is not None else model.evaluate(portfolio, now)
    return _candidates(
        portfolio=portfolio,
        prices=prices,
        model=model,
        now=now,
        buffer_bps=buffer_bps,
        before=before,
        prepared=prepared,
        memo=_Memo(model, portfolio.spot),
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
    if not instruments:
        return None
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
        "_models",
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
        memo: _Memo,
    ) -> None:
        self._model, self._portfolio, self._before, self._now = model, portfolio, before, now
        self._models = memo
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
                memo=self._models,
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
    memo: _Memo,
) -> tuple[tuple[OrderPlan, ...], Portfolio, int]:
    """One greedy round: ``(plans, portfolio after them, model evaluations)``.

    Unlike :func:`greedy_plan`, a close is sized by its *gain* (:meth:`_Closes.gain`), so
    the equity the fill pays over the mark is covered in the same round instead of being
    discovered by the next one — with a costly close, three rounds of relief-only sizing
    leave the account short of its target. Each candidate is sized and valued on the
    portfolio the earlier ones leave (under standard margin that is its own position, so the
    round's closes are applied together at its end).
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
        closes = _Closes(
            model=model,
            portfolio=portfolio,
            before=facts,
            candidate=candidate,
            now=now,
            cost_weight=cost_weight,
            memo=memo,
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
        if not linear:  # the next candidate is valued on what this close leaves
            portfolio = close_short(
                portfolio, candidate.symbol, size, candidate.expected_fill_price
            )
        facts = MarginFacts(
            equity=CONTEXT.subtract(facts.equity, cost),
            mm_required=CONTEXT.subtract(facts.mm_required, relief),
        )
        remaining = CONTEXT.subtract(remaining, gain)
    if linear:  # each close changes only its own position's margin: apply them at once
        portfolio = _closed_all(
            portfolio, ((plan.symbol, plan.close_size, plan.limit_price) for plan in plans)
        )
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


# --- the simulated account ---------------------------------------------------------------


class _Simulation:
    """The original portfolio with some closes applied, as the model sees it (planning-local).

    Standard margin and portfolio margin move incrementally — a close changes only its own
    position's margin, or is swapped into cached scenario sums (``prepared``) — so their
    ``portfolio`` stays the original and a close costs no rebuild; any other model's
    portfolio is closed and evaluated again, every such evaluation counted in the shared
    ``counts``. A simulation closes each symbol at most once (a plan has one order a symbol).
    """

    __slots__ = ("_model", "_now", "counts", "facts", "memo", "portfolio", "prepared")

    def __init__(
        self,
        *,
        model: MarginModel,
        now: int,
        portfolio: Portfolio,
        prepared: PreparedPortfolioMargin | None,
        facts: MarginFacts,
        counts: list[int],
        memo: _Memo,
    ) -> None:
        self._model, self._now, self.counts = model, now, counts
        self.portfolio, self.prepared, self.facts = portfolio, prepared, facts
        self.memo = memo

    @staticmethod
    def of(model: MarginModel, portfolio: Portfolio, now: int, counts: list[int]) -> _Simulation:
        """The model's valuation of ``portfolio`` (one full evaluation)."""
        memo = _Memo(model, portfolio.spot)
        prepared = model.prepare(portfolio, now) if _is_scenario(model) else None
        facts = prepared.facts() if prepared is not None else memo.evaluate(model, portfolio, now)
        counts[0] += 1
        return _Simulation(
            model=model,
            now=now,
            portfolio=portfolio,
            prepared=prepared,
            facts=facts,
            counts=counts,
            memo=memo,
        )

    def change(self, symbol: str, size: Decimal, price: Decimal) -> tuple[Decimal, Decimal]:
        """``(mm relief, equity cost)`` of buying back ``size`` of ``symbol`` at ``price``."""
        relief, cost, used = _relief(
            self._model,
            portfolio=self.portfolio,
            symbol=symbol,
            size=size,
            price=price,
            now=self._now,
            before=self.facts,
            prepared=self.prepared,
            memo=self.memo,
        )
        self.counts[0] += used
        return relief, cost

    def after_close(self, symbol: str, size: Decimal, price: Decimal) -> _Simulation:
        """This simulation after buying back ``size`` of ``symbol`` at ``price``."""
        portfolio, prepared = self.portfolio, self.prepared
        if prepared is not None:
            prepared = prepared.closed(symbol, size, price)
            facts = prepared.facts()
        elif _is_additive(self._model):
            relief, cost = self.change(symbol, size, price)
            facts = MarginFacts(
                equity=CONTEXT.subtract(self.facts.equity, cost),
                mm_required=CONTEXT.subtract(self.facts.mm_required, relief),
            )
        else:
            portfolio = close_short(portfolio, symbol, size, price)
            facts = self._model.evaluate(portfolio, self._now)
            self.counts[0] += 1
        return _Simulation(
            model=self._model,
            now=self._now,
            portfolio=portfolio,
            prepared=prepared,
            facts=facts,
            counts=self.counts,
            memo=self.memo,
        )

    def after(self, orders: Sequence[OrderPlan], skip: int = -1) -> _Simulation:
        """This simulation after all ``orders`` but the one at index ``skip``."""
        simulation = self
        for index, order in enumerate(orders):
            if index != skip:
                simulation = simulation.after_close(
                    order.symbol, order.close_size, order.limit_price
                )
        return simulation


# --- portfolio margin: the cheapest closes, exactly -------------------------------------

# Scenario margin is a maximum of losses that are linear in the closed sizes, so the cheapest
# closes meeting a need solve a linear programme: for each underlying u and scenario j,
#     t_u ≥ L_uj + Σ_i x_i D_ij,   t_u ≥ 0            (t_u: the underlying's risk)
#     Σ_u t_u + Σ_i x_i (w c_i − κ_i) ≤ T − R          (the need R is met)
#     0 ≤ x_i ≤ available_i,   minimise Σ_i x_i max(c_i, 0)
# (D_ij: what one unit bought back adds to scenario j's loss, c_i: equity cost per unit,
# κ_i: contingency per unit, w = 10 000 / (10 000 + buffer), T = Σ_u max(0, max_j L_uj)).
# It is traced from R = 0 upwards by a parametric dual simplex: at every point on the way
# the current closes are the cheapest for the need reached so far. Each pivot is one of the
# greedy's natural steps — take the close with the least cost per unit of gain until it is
# used up or another scenario starts to bind; when two scenarios bind together, the next
# step is the cheapest *combination* of closes that lowers both (a strangle's call and put),
# which no single close can do. A pivot costs O(candidates × scenarios); pivots are bounded.

_TOLERANCE = Decimal("1e-18")
"""Pivot elements and rates at or below it count as zero (values are O(1)–O(1e7) and carry
28 digits, so round-off stays near 1e-21)."""
_NOISE = Decimal("1e-12")
"""A traced size at or below it is round-off, not a close."""
_PIVOTS_PER_COLUMN = 4
_PIVOTS_FLOOR = 64

_Column = tuple[Decimal, Decimal | None, tuple[tuple[int, Decimal], ...]]
"""(cost, upper bound or None, (row, coefficient) entries)."""


def _inverse(matrix: list[list[Decimal]]) -> list[list[Decimal]]:
    """Gauss–Jordan inverse of the starting basis, without pivoting: its columns are slacks
    (one 1 on the diagonal) and risks (−1 on the diagonal, in the worst scenario's row, and
    elsewhere only in rows whose own diagonal is a slack's), so no pivot is ever zero."""
    size = len(matrix)
    rows = [[*row, *(ONE if i == j else ZERO for j in range(size))] for i, row in enumerate(matrix)]
    for column in range(size):
        lead = rows[column][column]
        rows[column] = [value / lead for value in rows[column]]
        for other in range(size):
            factor = rows[other][column]
            if other != column and factor != 0:
                rows[other] = [
                    a - factor * b for a, b in zip(rows[other], rows[column], strict=True)
                ]
    return [row[size:] for row in rows]


def _trace(
    columns: Sequence[_Column], rhs: Sequence[Decimal], basis: list[int], target: Decimal
) -> tuple[list[Decimal], list[int]]:
    """Values of ``columns`` minimising cost for ``A v = rhs − θ e_last`` at ``θ = target`` (or
    the largest θ reachable), and the order in which columns first left zero.

    ``basis`` (one column per row) must be feasible and dual feasible at ``θ = 0``; every
    other column starts at zero. Call inside ``localcontext(CONTEXT)``.
    """
    rows = len(rhs)
    binv = _inverse([[_entry(columns[col], row) for col in basis] for row in range(rows)])
    position = {col: p for p, col in enumerate(basis)}
    at_upper: set[int] = set()
    shifted = list(rhs)
    theta = ZERO
    entered: list[int] = []
    for _ in range(_PIVOTS_PER_COLUMN * len(columns) + _PIVOTS_FLOOR):
        current = _basic_values(binv, shifted, theta)
        block = _blocking(columns, basis, binv, current)
        if block is None or theta + block[0] >= target:
            theta = target
            break
        distance, leaving_row, to_upper = block
        theta += distance
        entering = _entering(
            columns,
            basis,
            binv=binv,
            position=position,
            at_upper=at_upper,
            leaving_row=leaving_row,
            to_upper=to_upper,
        )
        if entering is None:
            break  # no close can add more gain: θ is the most that can be reached
        leaving = basis[leaving_row]
        _pivot(binv, columns[entering], leaving_row)
        del position[leaving]
        basis[leaving_row], position[entering] = entering, leaving_row
        if to_upper:  # a close used up (it entered the basis before, so it is listed)
            at_upper.add(leaving)
            _shift(shifted, columns[leaving], -1)
        if entering in at_upper:
            at_upper.remove(entering)
            _shift(shifted, columns[entering], 1)
        if entering not in entered:
            entered.append(entering)
    current = _basic_values(binv, shifted, theta)
    values = [ZERO] * len(columns)
    for col in at_upper:
        upper = columns[col][1]
        assert upper is not None
        values[col] = upper
    for p, col in enumerate(basis):
        upper = columns[col][1]
        value = max(ZERO, current[p])
        values[col] = value if upper is None else min(value, upper)
    return values, entered


def _entry(column: _Column, row: int) -> Decimal:
    return next((value for r, value in column[2] if r == row), ZERO)


def _basic_values(
    binv: list[list[Decimal]], shifted: list[Decimal], theta: Decimal
) -> list[Decimal]:
    last = len(shifted) - 1
    return [
        sum((a * b for a, b in zip(row, shifted, strict=True)), ZERO) - theta * row[last]
        for row in binv
    ]


def _blocking(
    columns: Sequence[_Column],
    basis: list[int],
    binv: list[list[Decimal]],
    current: list[Decimal],
) -> tuple[Decimal, int, bool] | None:
    """``(Δθ, row, to_upper)`` of the first basic value to reach a bound as θ grows."""
    last = len(binv) - 1
    best: tuple[Decimal, int, int, bool] | None = None
    for p, col in enumerate(basis):
        rate = -binv[p][last]  # d value / dθ
        upper = columns[col][1]
        if rate < -_TOLERANCE:
            distance, to_upper = max(ZERO, current[p]) / -rate, False
        elif rate > _TOLERANCE and upper is not None:
            distance, to_upper = max(ZERO, upper - current[p]) / rate, True
        else:
            continue
        if best is None or (distance, col) < (best[0], best[1]):
            best = (distance, col, p, to_upper)
    return None if best is None else (best[0], best[2], best[3])


def _entering(
    columns: Sequence[_Column],
    basis: list[int],
    *,
    binv: list[list[Decimal]],
    position: Mapping[int, int],
    at_upper: set[int],
    leaving_row: int,
    to_upper: bool,
) -> int | None:
    """The dual ratio test: the column whose move keeps every reduced cost's sign; the
    smallest index on ties (Bland's rule against cycling; the pivots are bounded anyway)."""
    row = binv[leaving_row]
    duals = [
        sum((columns[col][0] * binv[p][r] for p, col in enumerate(basis)), ZERO)
        for r in range(len(row))
    ]
    best: tuple[Decimal, int] | None = None
    for index, column in enumerate(columns):
        if index in position:
            continue
        alpha = sum((row[r] * value for r, value in column[2]), ZERO)
        wanted = alpha > _TOLERANCE if to_upper else alpha < -_TOLERANCE
        if index in at_upper:
            wanted = alpha < -_TOLERANCE if to_upper else alpha > _TOLERANCE
        if not wanted:
            continue
        reduced = column[0] - sum((duals[r] * value for r, value in column[2]), ZERO)
        ratio = abs(reduced) / abs(alpha)
        if best is None or ratio < best[0]:
            best = (ratio, index)
    return None if best is None else best[1]


def _pivot(binv: list[list[Decimal]], column: _Column, row: int) -> None:
    moved = [sum((line[r] * value for r, value in column[2]), ZERO) for line in binv]
    pivot_row = [value / moved[row] for value in binv[row]]
    for index, line in enumerate(binv):
        if index != row and moved[index] != 0:
            factor = moved[index]
            binv[index] = [a - factor * b for a, b in zip(line, pivot_row, strict=True)]
    binv[row] = pivot_row


def _shift(shifted: list[Decimal], column: _Column, sign: int) -> None:
    upper = column[1]
    assert upper is not None
    for row, value in column[2]:
        shifted[row] += sign * value * upper


def _unit_losses(prepared: PreparedPortfolioMargin, symbol: str) -> tuple[Decimal, ...]:
    """One candidate's linear effect on its underlying's scenario losses (per unit closed)."""
    return prepared.unit_losses(symbol)


def _cheapest_closes(
    *,
    simulation: _Simulation,
    model: PortfolioMargin,
    sizes: Mapping[str, tuple[Decimal, Decimal, Decimal]],
    required: Decimal,
    weight: Decimal,
) -> list[tuple[str, Decimal, Decimal]]:
    """The cheapest closes whose gain meets ``required`` (or the most gain there is), in the
    order the trace took them up, unrounded: ``(symbol, size, steepness)``, where steepness
    bounds how fast the gain can change with the size (for a rounding allowance).

    ``sizes``: ``symbol → (available, limit price, mark)`` of the shorts that may be closed.
    """
    prepared = simulation.prepared
    assert prepared is not None
    spot = simulation.portfolio.spot
    underlyings = sorted({_underlying(symbol) for symbol in sizes})
    with localcontext(CONTEXT):
        losses = {u: prepared.scenario_losses(u) for u in underlyings}
        first_row: dict[str, int] = {}
        rows = 0
        for u in underlyings:
            first_row[u] = rows
            rows += len(losses[u])
        budget = rows  # the row of the need
        columns: list[_Column] = []
        symbols = sorted(sizes)
        for symbol in symbols:
            available, price, mark = sizes[symbol]
            u = _underlying(symbol)
            unit = _unit_losses(prepared, symbol)
            cost = price - mark
            relief = model.short_option_contingency * spot[u]
            entries = [(first_row[u] + j, value) for j, value in enumerate(unit) if value != 0]
            entries.append((budget, weight * cost - relief))
            columns.append((max(cost, ZERO), available, tuple(entries)))
        basis: list[int] = [0] * (rows + 1)
        rhs = [ZERO] * (rows + 1)
        total = ZERO
        for u in underlyings:
            scenario = losses[u]
            risk_column = len(columns)
            columns.append(
                (
                    ZERO,
                    None,
                    (*((first_row[u] + j, -ONE) for j in range(len(scenario))), (budget, ONE)),
                )
            )
            worst = max(range(len(scenario)), key=lambda j: (scenario[j], -j))
            for j, loss in enumerate(scenario):
                row = first_row[u] + j
                rhs[row] = -loss
                columns.append((ZERO, None, ((row, ONE),)))
                basis[row] = len(columns) - 1
            if scenario[worst] >= 0:
                basis[first_row[u] + worst] = risk_column
                total += scenario[worst]
        columns.append((ZERO, None, ((budget, ONE),)))
        basis[budget] = len(columns) - 1
        rhs[budget] = total
        values, entered = _trace(columns, rhs, basis, required)
        return [
            (
                symbols[index],
                values[index],
                sum((abs(value) for _, value in columns[index][2]), ZERO),
            )
            for index in entered
            if index < len(symbols) and values[index] > _NOISE
        ]


def _underlying(symbol: str) -> str:
    option = option_symbol(symbol)
    assert option is not None
    return option.underlying


def _scenario_round(
    *,
    simulation: _Simulation,
    model: PortfolioMargin,
    prices: Mapping[str, Decimal],
    available: Mapping[str, Decimal],
    required: Decimal,
    required_at: Callable[[MarginFacts], Decimal],
    down: bool,
    config: Config,
    now: int,
) -> tuple[tuple[OrderPlan, ...], _Simulation]:
    """One round under portfolio margin: the exact cheapest closes, made tradeable (whole
    lots rounded ``down``, or up)."""
    weight = CONTEXT.divide(Decimal(BPS), Decimal(BPS + config.partial_target_buffer_bps))
    sizes: dict[str, tuple[Decimal, Decimal, Decimal]] = {}
    for symbol in sorted(prices):
        option = option_symbol(symbol)
        position = simulation.portfolio.positions.get(symbol)
        left = available.get(symbol, ZERO)
        if option is None or position is None or option.expires_at <= now or left <= MIN_SIZE:
            continue
        sizes[symbol] = (left, prices[symbol], position.mark_price)
    if not sizes:
        return (), simulation
    closes = _cheapest_closes(
        simulation=simulation, model=model, sizes=sizes, required=required, weight=weight
    )
    plans, allowance = _rounded(closes, sizes=sizes, prices=prices, config=config, down=down)
    after = simulation.after(plans)
    if not down and required_at(after.facts) > MIN_SIZE and config.instruments:
        plans, after = _repaired(
            plans, after=after, sizes=sizes, prices=prices, required_at=required_at, config=config
        )
    if not down and required_at(after.facts) > MIN_SIZE and allowance > 0:
        # Rounding sizes up can cost gain where scenarios bind together (the call and put of
        # a tie move apart): trace again for the need plus the most rounding can cost. The
        # trim takes back what this over-covers.
        closes = _cheapest_closes(
            simulation=simulation,
            model=model,
            sizes=sizes,
            required=CONTEXT.add(required, allowance),
            weight=weight,
        )
        again, _ = _rounded(closes, sizes=sizes, prices=prices, config=config, down=False)
        again_after = simulation.after(again)
        if required_at(again_after.facts) < required_at(after.facts):
            plans, after = again, again_after
    return plans, after


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


def _rounded(
    closes: Sequence[tuple[str, Decimal, Decimal]],
    *,
    sizes: Mapping[str, tuple[Decimal, Decimal, Decimal]],
    prices: Mapping[str, Decimal],
    config: Config,
    down: bool,
) -> tuple[tuple[OrderPlan, ...], Decimal]:
    """The traced closes as tradeable orders, and the most rounding them up can cost in gain
    (at least a whole step of each: a plan traced again rounds differently).

    Up: rounded up to the size step, raised to the minimum order, a stranded remainder
    closed too. Down (only for underlyings with an :class:`InstrumentSpec`): rounded down to
    the step, below the minimum order dropped, never leaving a stranded remainder.
    """
    plans: list[OrderPlan] = []
    allowance = ZERO
    for symbol, size, steepness in closes:
        spec = _spec(symbol, config.instruments)
        left = sizes[symbol][0]
        if down and spec is not None:
            tradeable = _tradeable_down(size, left, spec)
        else:
            step = spec.size_step if spec is not None else MIN_SIZE
            tradeable = _tradeable_size(_linear_size(left, size, step), left, spec)
        if tradeable <= 0:
            continue
        # Whatever the rounding of a re-traced plan: a whole step, or what was raised.
        step = spec.size_step if spec is not None else MIN_SIZE
        raised = max(step, CONTEXT.subtract(tradeable, size))
        allowance = CONTEXT.add(allowance, CONTEXT.multiply(raised, steepness))
        plans.append(
            OrderPlan(
                symbol=symbol,
                close_size=tradeable,
                limit_price=prices[symbol],
                expected_mm_relief=ZERO,
            )
        )
    return tuple(plans), allowance


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


# --- finishing the plan ------------------------------------------------------------------

_TRIM_ORDERS = 8
"""At most this many orders are trimmed (the least efficient first): each costs one pass
over the plan, so the work per reprice stays bounded."""


def _attributed(orders: Sequence[OrderPlan], start: _Simulation) -> tuple[OrderPlan, ...]:
    """``orders`` with ``expected_mm_relief`` the margin each frees once the orders before it
    have filled. Under scenario margin some closes only help together (a strangle's call and
    put), so a dip is carried forward: each relief is floored at zero and the reliefs still
    add up to the plan's whole relief whenever no order at the end undoes earlier ones."""
    simulation = start
    cumulative = peak = ZERO
    result: list[OrderPlan] = []
    for order in orders:
        relief, _ = simulation.change(order.symbol, order.close_size, order.limit_price)
        simulation = simulation.after_close(order.symbol, order.close_size, order.limit_price)
        cumulative = CONTEXT.add(cumulative, relief)
        share = max(ZERO, CONTEXT.subtract(cumulative, peak))
        peak = max(peak, cumulative)
        result.append(attrs.evolve(order, expected_mm_relief=share))
    return tuple(result)


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


# --- the whole plan ----------------------------------------------------------------------


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


def _scenario_plans(
    *,
    start: _Simulation,
    model: PortfolioMargin,
    prices: Mapping[str, Decimal],
    required_at: Callable[[MarginFacts], Decimal],
    config: Config,
    now: int,
) -> list[tuple[tuple[OrderPlan, ...], int]]:
    """Plans under portfolio margin: rounding whole lots up, and — when some underlying has
    whole lots — rounding them down first and covering the rest in the next round."""
    lots = any(_spec(symbol, config.instruments) is not None for symbol in prices)
    return [
        _scenario_rounds(
            start=start,
            model=model,
            prices=prices,
            required_at=required_at,
            config=config,
            now=now,
            down_first=down_first,
        )
        for down_first in ((False, True) if lots else (False,))
    ]


def _scenario_rounds(
    *,
    start: _Simulation,
    model: PortfolioMargin,
    prices: Mapping[str, Decimal],
    required_at: Callable[[MarginFacts], Decimal],
    config: Config,
    now: int,
    down_first: bool,
) -> tuple[tuple[OrderPlan, ...], int]:
    """Rounds under portfolio margin; a later round only covers what rounding left short."""
    available = {
        symbol: position.amount.copy_negate()
        for symbol, position in start.portfolio.positions.items()
        if symbol in prices
    }
    simulation = start
    plans: list[OrderPlan] = []
    rounds = 0
    for _ in range(PLAN_MAX_ROUNDS):
        required = required_at(simulation.facts)
        if required <= MIN_SIZE:
            break
        round_plans, after = _scenario_round(
            simulation=simulation,
            model=model,
            prices=prices,
            available=available,
            required=required,
            required_at=required_at,
            down=down_first and rounds == 0,
            config=config,
            now=now,
        )
        if not round_plans or required_at(after.facts) >= required:
            break  # nothing tradeable helps
        rounds += 1
        simulation = after
        for plan in round_plans:
            available[plan.symbol] = CONTEXT.subtract(available[plan.symbol], plan.close_size)
            plans.append(plan)
    merged: tuple[OrderPlan, ...] = ()
    for plan in plans:
        merged = merge_plan(merged, plan)
    return _attributed(merged, start), rounds


def _searched_plan(
    *,
    start: _Simulation,
    model: MarginModel,
    prices: Mapping[str, Decimal],
    required_at: Callable[[MarginFacts], Decimal],
    config: Config,
    now: int,
) -> tuple[tuple[OrderPlan, ...], int]:
    """Rounds of the greedy plan (standard margin, or any model by search)."""
    simulated, facts = start.portfolio, start.facts
    orders: tuple[OrderPlan, ...] = ()
    rounds = 0
    counts, memo = start.counts, start.memo
    for _ in range(PLAN_MAX_ROUNDS):
        if simulated is not start.portfolio:
            facts = memo.evaluate(model, simulated, now)
            counts[0] += 1
        required = required_at(facts)
        if required <= MIN_SIZE:
            break
        candidates, used = _candidates(
            portfolio=simulated,
            prices=prices,
            model=model,
            now=now,
            buffer_bps=config.partial_target_buffer_bps,
            before=facts,
            memo=memo,
        )
        counts[0] += used
        round_plans, simulated, used = _plan_round(
            candidates=candidates,
            required=required,
            portfolio=simulated,
            facts=facts,
            model=model,
            config=config,
            now=now,
            memo=memo,
        )
        counts[0] += used
        if not round_plans:
            break
        rounds += 1
        for plan in round_plans:
            orders = merge_plan(orders, plan)
    return orders, rounds
