"""The greedy plan: standard margin, and any other margin model by search.

Owns the candidates (each short option worth closing with what one unit frees and costs,
after the no-harm filter), their ranking (margin freed per unit of equity given up, a free
close first), the seed's :func:`greedy_plan`, and the planning rounds of
:func:`~liqcore.planning.plan.plan_partial_orders` under any model but portfolio margin:
under standard margin (linear per position) each ranked candidate is taken as far as its
*gain* is needed; under any other model the size is searched (the smallest size meeting
the need, never past the size after which closing more stops helping).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from types import MappingProxyType

import attrs

from liqcore import _validators as v
from liqcore.config import Config
from liqcore.inputs import Portfolio
from liqcore.instruments import InstrumentSpec
from liqcore.margin.base import MarginFacts, MarginModel
from liqcore.margin.portfolio import PreparedPortfolioMargin
from liqcore.numbers import BPS, CONTEXT, MIN_SIZE, ONE, ZERO, bps_fraction, tidy
from liqcore.planning.lots import _ceil_div, _linear_size, _spec, _tradeable_size
from liqcore.planning.orders import PLAN_MAX_ROUNDS, OrderPlan, merge_plan
from liqcore.planning.simulation import (
    _closed_all,
    _is_additive,
    _is_scenario,
    _is_short,
    _Memo,
    _relief,
    _Simulation,
    close_short,
)

__all__ = ["SliceCandidate", "greedy_plan", "slice_candidates"]


_NO_INSTRUMENTS: Mapping[str, InstrumentSpec] = MappingProxyType({})


# Steps of each search for a size under a non-linear margin model: 32 bisections tell
# 2**32 lots apart, more than any real position has, and the bound keeps planning time fixed.
_SEARCH_STEPS = 32


# The golden-section search for where closing more stops helping: 0.618034 of the bracket
# is kept per evaluation, so 64 steps resolve 10**13 lots.
_GOLDEN_PPM = 618_034


_PEAK_STEPS = 64


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
