"""The simulated account: what closing part of a short does to a portfolio and to the
margin model's facts.

Owns :func:`close_short` (the seed's standard close), the one seam where a model's faster
path plugs in (``_relief``: standard margin changes only the closed position's margin,
portfolio margin recombines cached scenario values, any other model is evaluated again),
the per-plan memo of what a plan would otherwise re-derive per candidate (marks, parsed
symbols, per-unit standard margin), the simulated account that rounds and trims move
through, and the attribution of each order's relief once the orders before it have filled.
Everything here is planning-local: created per call of a public function, discarded with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TypeGuard

import attrs

from liqcore.errors import PlanningError
from liqcore.inputs import Portfolio, Position
from liqcore.instruments import OptionSymbol, option_symbol
from liqcore.margin.base import MarginFacts, MarginModel
from liqcore.margin.portfolio import PortfolioMargin, PreparedPortfolioMargin
from liqcore.margin.standard import StandardMargin
from liqcore.numbers import CONTEXT, MIN_SIZE, ZERO
from liqcore.planning.orders import OrderPlan

__all__ = ["close_short"]


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

    def relief(
        self,
        model: StandardMargin,
        position: Position,
        remaining: Decimal,
        spot: Mapping[str, Decimal],
    ) -> Decimal:
        """``mm(position.amount) − mm(remaining)`` (standard margin): what buying back down
        to ``remaining`` frees. The margin of the whole position is the one :meth:`evaluate`
        already took for it, when it did (the same :meth:`mm`, model and spot)."""
        after = (
            ZERO if remaining.copy_abs() <= MIN_SIZE else self.mm(model, position, remaining, spot)
        )
        term = self._terms.get(id(position))
        if term is None or model is not self._model or not self._same_spot(spot):
            before = self.mm(model, position, position.amount, spot)
        else:
            before = term[2]
        return CONTEXT.subtract(before, after)

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


def _is_short(position: Position) -> bool:
    return position.amount < 0 and position.amount.copy_abs() > MIN_SIZE


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
        relief = memo.relief(model, position, CONTEXT.add(position.amount, size), portfolio.spot)
        cost = CONTEXT.multiply(size, CONTEXT.subtract(price, memo.mark(position)))
        return relief, cost, 0
    facts = model.evaluate(close_short(portfolio, symbol, size, price), now)
    return (
        CONTEXT.subtract(before.mm_required, facts.mm_required),
        CONTEXT.subtract(before.equity, facts.equity),
        1,
    )


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
