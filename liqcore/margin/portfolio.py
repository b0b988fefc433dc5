"""Portfolio (scenario) margin: every option repriced with Black–Scholes on a grid of spot
and volatility shocks; MM is the worst scenario loss plus a short-option contingency.

The model (SPEC §6)
-------------------
For each underlying ``u`` with spot ``S`` the grid is every pair (spot shock ``s``, vol
shock ``w``) of :attr:`PortfolioMargin.spot_shocks` × :attr:`PortfolioMargin.vol_shocks`.
In scenario ``(s, w)``

* an option is worth ``black_scholes(S × (1 + s), K, T, r, base_volatility × (1 + w))``,
  ``T`` in years of 365 days from ``now`` to its 08:00 UTC expiry; an expired option
  (``now ≥ expires_at``) is worth its intrinsic value at the shocked spot;
* a perpetual gains ``S × s`` per unit (its mark plays no part in the scenario).

The scenario loss of ``u`` is ``L_u(s, w) = Σ amount × (mark − scenario value)`` over its
positions (for a perp: ``Σ −amount × S × s``), and::

    mm_required = Σ_u [ max(0, max_(s, w) L_u(s, w))
                        + short_option_contingency × S_u × Σ |short option amount on u| ]
    equity      = cash + Σ amount × mark

Positions with ``|amount| ≤ MIN_SIZE`` are ignored; the contingency counts every short
option, expired or not, until it leaves the portfolio.

**Scenarios are applied per underlying, independently, and the worst losses summed** (each
floored at zero). This is SPAN's rule — a risk array per combined commodity, requirements
added across commodities — and the safest reading: it is never less than the joint reading
``max(0, max_(s, w) Σ_u L_u(s, w))`` (the per-underlying maxima may come from different
scenarios, and a gain on one underlying never offsets a loss on another), and it does not
pretend that BTC and ETH move by the same percentage at once.

Monotonicity (what "closing a short never raises MM" means here)
----------------------------------------------------------------
Closing ``δ`` of a short position ``X`` changes its underlying's loss in scenario ``j`` by
``δ × (mark_X − value_X,j)`` and lowers the contingency by ``c × S × δ``. So MM never rises
when ``X`` is worth at least its mark in every scenario (then no scenario loss grows) — in
particular when ``X`` is the only position on its underlying (MM is then ``|amount|`` times a
constant). It **can** rise otherwise, as in SPAN itself: in a short strangle the short call
gains in the down-shock scenario, which offsets part of the short put's loss there;
closing the call removes that offset, and when the down shock is the worst scenario the MM
grows (``tests/liqcore/margin/test_portfolio.py`` shows a concrete book). The planner
therefore measures each close with the model and keeps only closes with positive relief
(SPEC §6: "relief is not linear").

Numerics
--------
Pricing and products are computed in :data:`~liqcore.numbers.CONTEXT` with Decimal:
``exp``, ``ln`` and ``sqrt`` are correctly rounded, and the normal CDF is a Decimal series
(``|x| < 5``) or continued fraction (``5 ≤ |x| ≤ 40``) — no ``math`` calls, whose last bits differ
between libms. Option values are then rounded to ``1e-12`` (half-even). Sums (equity, the
per-scenario losses, the short total, the per-underlying MMs) are taken exactly, in a private
unbounded-precision context used for additions only, and each total is rounded once to
CONTEXT and written without trailing zeros: so the result cannot depend on the order of the
positions, an incremental update equals a full re-evaluation, and every machine gets the
same bytes. (Deviation from "sum in CONTEXT": a 28-digit running sum would make the answer
depend on summation order and rule out exact incremental updates.)

The incremental API
-------------------
:meth:`PortfolioMargin.prepare` values every position once and returns a
:class:`PreparedPortfolioMargin`; :meth:`PreparedPortfolioMargin.facts_after_close` then
answers "what if ``size`` of ``symbol`` were bought back at ``price``" by recombining the
cached per-scenario values (no repricing), and equals a full :meth:`PortfolioMargin.evaluate`
of the closed portfolio exactly. Per-unit scenario values are also memoised by a bounded
``lru_cache`` of a pure function of (model, kind, strike, time left, spot), so repeated
``evaluate`` calls on portfolios that differ only in amounts, marks or cash reprice nothing.
"""

from __future__ import annotations

import decimal
import functools
from collections.abc import Mapping
from decimal import Decimal, localcontext
from types import MappingProxyType

import attrs

from liqcore import _validators as v
from liqcore.errors import InvalidInput, PlanningError
from liqcore.inputs import Portfolio
from liqcore.instruments import is_perp_symbol, option_symbol
from liqcore.margin.base import MarginFacts
from liqcore.margin.standard import spot_of
from liqcore.numbers import CONTEXT, MIN_SIZE, ONE, ZERO, tidy

__all__ = [
    "YEAR_MS",
    "PortfolioMargin",
    "PreparedPortfolioMargin",
    "black_scholes",
    "normal_cdf",
]

YEAR_MS = 365 * 86_400_000
"""Milliseconds in the model's year (365 days)."""

_YEAR = Decimal(YEAR_MS)
_HALF = Decimal("0.5")
_PI = Decimal("3.14159265358979323846264338327950288")
_SQRT_2PI = CONTEXT.sqrt(CONTEXT.multiply(Decimal(2), _PI))
_SERIES_BELOW = Decimal(5)
"""|x| below: Taylor series of Φ around 0 (all terms positive, ≤ 70 of them)."""
_SATURATES_ABOVE = Decimal(40)
"""|x| above: Φ is 0 or 1 (Q(40) ≈ 4e-350)."""
_FRACTION_TERMS = 60
"""Depth of the Mills-ratio continued fraction: relative error < 1e-27 for x ≥ 5."""
_VALUE_QUANTUM = Decimal("1e-12")
_QUANTIZE_BELOW_ADJUSTED = 15
"""Values of 1e15 and more keep their 28 significant digits (quantizing would overflow)."""


# --- pricing ------------------------------------------------------------------------------
# The private helpers below expect the caller to have entered ``localcontext(CONTEXT)``.


def _finite(value: object, name: str) -> Decimal:
    if type(value) is not Decimal or not value.is_finite():
        raise InvalidInput(f"{name} must be a finite Decimal, was {value!r}")
    return value


def _positive(value: object, name: str) -> Decimal:
    number = _finite(value, name)
    if number <= 0:
        raise InvalidInput(f"{name} must be > 0, was {number}")
    return number


def normal_cdf(x: Decimal) -> Decimal:
    """Φ(x), the standard normal distribution function, in Decimal (absolute error < 1e-26).

    Deterministic on every machine: no binary floating point is involved.
    """
    _finite(x, "normal_cdf x")
    with localcontext(CONTEXT):
        return _cdf(x)


def _cdf(x: Decimal) -> Decimal:
    z = abs(x)
    if z > _SATURATES_ABOVE:
        return ONE if x > 0 else ZERO
    z2 = z * z
    density = (-z2 / 2).exp() / _SQRT_2PI
    if z < _SERIES_BELOW:
        # Φ(z) = 1/2 + φ(z) Σ z^(2n+1) / (2n+1)!!
        total = term = z
        n = 1
        while True:
            n += 2
            term = term * z2 / n
            grown = total + term
            if grown == total:
                break
            total = grown
        central = density * total
        return _HALF + central if x >= 0 else _HALF - central
    # Q(z) = φ(z) / (z + 1/(z + 2/(z + 3/(z + …)))), Laplace's continued fraction.
    fraction = z
    for k in range(_FRACTION_TERMS, 0, -1):
        fraction = z + k / fraction
    tail = density / fraction
    return ONE - tail if x > 0 else tail


def _rounded(value: Decimal) -> Decimal:
    if value.adjusted() < _QUANTIZE_BELOW_ADJUSTED:
        return value.quantize(_VALUE_QUANTUM)
    return value


def _intrinsic(is_call: bool, spot: Decimal, strike: Decimal) -> Decimal:
    return max(ZERO, spot - strike if is_call else strike - spot)


def _price(
    *,
    is_call: bool,
    spot: Decimal,
    strike: Decimal,
    years: Decimal,
    root_years: Decimal,
    discount: Decimal,
    volatility: Decimal,
    rate: Decimal,
) -> Decimal:
    if years <= 0:
        return _rounded(_intrinsic(is_call, spot, strike))
    spread = volatility * root_years
    d1 = ((spot / strike).ln() + (rate + volatility * volatility / 2) * years) / spread
    d2 = d1 - spread
    if is_call:
        value = spot * _cdf(d1) - strike * discount * _cdf(d2)
    else:
        value = strike * discount * _cdf(-d2) - spot * _cdf(-d1)
    return _rounded(max(ZERO, value))


def black_scholes(
    *,
    is_call: bool,
    spot: Decimal,
    strike: Decimal,
    years: Decimal,
    rate: Decimal,
    volatility: Decimal,
) -> Decimal:
    """Black–Scholes value of a European option (no dividends), rounded to ``1e-12``.

    ``years ≤ 0`` gives the intrinsic value ``max(0, S − K)`` (call) or ``max(0, K − S)``
    (put). ``spot``, ``strike`` and ``volatility`` must be > 0, ``rate`` finite; otherwise
    :class:`InvalidInput`.
    """
    if type(is_call) is not bool:
        raise InvalidInput(f"black_scholes is_call must be a bool, was {is_call!r}")
    _positive(spot, "black_scholes spot")
    _positive(strike, "black_scholes strike")
    _finite(years, "black_scholes years")
    _finite(rate, "black_scholes rate")
    _positive(volatility, "black_scholes volatility")
    with localcontext(CONTEXT):
        positive_time = years > 0
        return _price(
            is_call=is_call,
            spot=spot,
            strike=strike,
            years=years,
            root_years=years.sqrt() if positive_time else ZERO,
            discount=(-rate * years).exp() if positive_time else ONE,
            volatility=volatility,
            rate=rate,
        )


@functools.lru_cache(maxsize=1 << 16)
def _option_values(
    model: PortfolioMargin, is_call: bool, strike: Decimal, remaining_ms: int, spot: Decimal
) -> tuple[Decimal, ...]:
    """Per-unit value of one option in every scenario of ``model``, spot-shock major.

    Pure (the result depends only on the numeric values of the arguments; the model is
    frozen and hashed by value), so memoising it cannot leak state between calls.
    """
    rate = model.risk_free_rate
    with localcontext(CONTEXT):
        years = Decimal(remaining_ms) / _YEAR
        root_years = years.sqrt() if years > 0 else ZERO
        discount = (-rate * years).exp() if years > 0 else ONE
        volatilities = [model.base_volatility * (1 + w) for w in model.vol_shocks]
        values: list[Decimal] = []
        for s in model.spot_shocks:
            shocked = spot * (1 + s)
            values.extend(
                _price(
                    is_call=is_call,
                    spot=shocked,
                    strike=strike,
                    years=years,
                    root_years=root_years,
                    discount=discount,
                    volatility=sigma,
                    rate=rate,
                )
                for sigma in volatilities
            )
        return tuple(values)


# --- the model ----------------------------------------------------------------------------

_EXACT = decimal.Context(
    prec=decimal.MAX_PREC,
    rounding=decimal.ROUND_HALF_EVEN,
    Emin=decimal.MIN_EMIN,
    Emax=decimal.MAX_EMAX,
    traps=[decimal.InvalidOperation, decimal.Inexact, decimal.Overflow],
)
"""Sums only: additions of finite Decimals are exact here, so totals do not depend on the
order of summation and an incremental update equals a full re-summation."""


def _total(value: Decimal) -> Decimal:
    """An exact sum in canonical form (no trailing zeros): kept exact while it is below
    ``10 ** (CONTEXT.prec − 1)`` (up to 27 integer digits, with whatever decimals it has),
    rounded once to CONTEXT from there up."""
    if value.adjusted() < CONTEXT.prec - 1:
        return tidy(value)
    return CONTEXT.plus(value).normalize(CONTEXT)


def _shocks(
    inst: PortfolioMargin, attribute: attrs.Attribute[tuple[Decimal, ...]], value: object
) -> None:
    if type(value) is not tuple or not value:
        raise InvalidInput(f"PortfolioMargin.{attribute.name} must be a non-empty tuple")
    for shock in value:
        if type(shock) is not Decimal or not shock.is_finite() or shock <= -1:
            raise InvalidInput(
                f"PortfolioMargin.{attribute.name} entries must be finite Decimals > -1, "
                f"was {shock!r}"
            )


@attrs.frozen(kw_only=True)
class PortfolioMargin:
    """Scenario-based margin (the defaults are the seed's test margin config).

    ``mm_required = Σ_u [max(0, worst scenario loss of u) + short_option_contingency × S_u ×
    Σ |short option amount on u|]``: scenarios are applied to each underlying independently
    and the worst losses summed (SPAN's rule, the safest reading; see the module docs).
    """

    spot_shocks: tuple[Decimal, ...] = attrs.field(
        default=(Decimal("-0.15"), Decimal(0), Decimal("0.15")), validator=_shocks
    )
    vol_shocks: tuple[Decimal, ...] = attrs.field(default=(Decimal(0),), validator=_shocks)
    base_volatility: Decimal = attrs.field(default=Decimal("0.8"), validator=v.positive)
    risk_free_rate: Decimal = attrs.field(default=Decimal("0.05"), validator=v.decimal)
    short_option_contingency: Decimal = attrs.field(default=Decimal(0), validator=v.non_negative)

    def evaluate(self, portfolio: Portfolio, now: int) -> MarginFacts:
        """Equity and mm_required of ``portfolio`` at ``now`` (ms).

        Raises :class:`PlanningError` for a missing, non-finite or non-positive spot of an
        underlying with positions, for a symbol that is neither an option nor a perp, and
        when the numbers overflow the decimal context.
        """
        return self.prepare(portfolio, now).facts()

    def prepare(self, portfolio: Portfolio, now: int) -> PreparedPortfolioMargin:
        """Value every position of ``portfolio`` once, for :meth:`evaluate` and for cheap
        what-if closes (:meth:`PreparedPortfolioMargin.facts_after_close`). Errors as
        :meth:`evaluate`; :class:`InvalidInput` when ``now`` is not an int."""
        if not isinstance(portfolio, Portfolio):
            raise InvalidInput(
                f"PortfolioMargin.prepare portfolio must be a Portfolio, was {portfolio!r}"
            )
        if type(now) is not int:
            raise InvalidInput(f"PortfolioMargin.prepare now must be an int (ms), was {now!r}")
        try:
            return self._prepare(portfolio, now)
        except ArithmeticError as error:  # decimal overflow on absurd inputs
            raise PlanningError(
                f"portfolio margin cannot evaluate the portfolio: {error!r}"
            ) from None

    def _prepare(self, portfolio: Portfolio, now: int) -> PreparedPortfolioMargin:
        lines: dict[str, _Line] = {}
        spots: dict[str, Decimal] = {}
        for symbol in sorted(portfolio.positions):
            position = portfolio.positions[symbol]
            if position.amount.copy_abs() <= MIN_SIZE:
                continue
            mark = position.mark_price
            option = option_symbol(symbol)
            if option is not None:
                underlying = option.underlying
                spot = spot_of(portfolio.spot, underlying)
                values = _option_values(
                    self, option.is_call, option.strike, option.expires_at - now, spot
                )
                unit_losses = tuple(CONTEXT.subtract(mark, value) for value in values)
            elif is_perp_symbol(symbol):
                underlying = symbol[: -len("-PERP")]
                spot = spot_of(portfolio.spot, underlying)
                unit_losses = tuple(
                    CONTEXT.multiply(spot, s.copy_negate())
                    for s in self.spot_shocks
                    for _ in self.vol_shocks
                )
            else:
                raise PlanningError(f"portfolio margin cannot value {symbol!r}")
            spots[underlying] = spot
            lines[symbol] = _line(
                underlying=underlying,
                amount=position.amount,
                mark=mark,
                is_option=option is not None,
                unit_losses=unit_losses,
            )
        members: dict[str, list[_Line]] = {}
        for line in lines.values():
            members.setdefault(line.underlying, []).append(line)
        count = len(self.spot_shocks) * len(self.vol_shocks)
        books = {
            underlying: _book(self, spots[underlying], members[underlying], count)
            for underlying in sorted(members)
        }
        equity = ZERO
        for line in lines.values():
            equity = _EXACT.add(equity, line.equity)
        return PreparedPortfolioMargin(
            model=self,
            now=now,
            cash=portfolio.cash,
            lines=MappingProxyType(lines),
            line_equity=equity,
            books=MappingProxyType(books),
        )


@attrs.frozen(kw_only=True)
class _Line:
    """One position's contribution: equity term and per-scenario losses."""

    underlying: str
    amount: Decimal
    mark: Decimal
    is_option: bool
    unit_losses: tuple[Decimal, ...]
    """Loss of one long unit in each scenario (``mark − value``; ``−S × s`` for a perp)."""
    equity: Decimal
    losses: tuple[Decimal, ...]
    short_options: Decimal
    """``|amount|`` of a short option, else 0 (for the contingency)."""


def _line(
    *,
    underlying: str,
    amount: Decimal,
    mark: Decimal,
    is_option: bool,
    unit_losses: tuple[Decimal, ...],
) -> _Line:
    return _Line(
        underlying=underlying,
        amount=amount,
        mark=mark,
        is_option=is_option,
        unit_losses=unit_losses,
        equity=CONTEXT.multiply(amount, mark),
        losses=tuple(CONTEXT.multiply(amount, unit) for unit in unit_losses),
        short_options=amount.copy_abs() if is_option and amount < 0 else ZERO,
    )


@attrs.frozen(kw_only=True)
class _Book:
    """One underlying: exact per-scenario loss sums, short option total, its MM."""

    spot: Decimal
    size: int
    """Number of positions."""
    losses: tuple[Decimal, ...]
    short_options: Decimal
    risk: Decimal


def _book(model: PortfolioMargin, spot: Decimal, lines: list[_Line], count: int) -> _Book:
    losses: list[Decimal] = []
    for j in range(count):
        total = ZERO
        for line in lines:
            total = _EXACT.add(total, line.losses[j])
        losses.append(total)
    short_options = ZERO
    for line in lines:
        short_options = _EXACT.add(short_options, line.short_options)
    return _book_of(model, spot, len(lines), tuple(losses), short_options)


def _book_of(
    model: PortfolioMargin,
    spot: Decimal,
    size: int,
    losses: tuple[Decimal, ...],
    short_options: Decimal,
) -> _Book:
    risk = max(ZERO, *losses)
    if model.short_option_contingency != 0 and short_options != 0:
        rate = CONTEXT.multiply(model.short_option_contingency, spot)
        risk = _EXACT.add(risk, CONTEXT.multiply(rate, short_options))
    return _Book(spot=spot, size=size, losses=losses, short_options=short_options, risk=risk)


def _replaced(model: PortfolioMargin, book: _Book, old: _Line, new: _Line | None) -> _Book | None:
    """``book`` with ``old`` replaced by ``new`` (removed when ``None``): exact updates."""
    size = book.size if new is not None else book.size - 1
    if size == 0:
        return None
    losses = tuple(
        _EXACT.subtract(total, loss) for total, loss in zip(book.losses, old.losses, strict=True)
    )
    short_options = _EXACT.subtract(book.short_options, old.short_options)
    if new is not None:
        losses = tuple(
            _EXACT.add(total, loss) for total, loss in zip(losses, new.losses, strict=True)
        )
        short_options = _EXACT.add(short_options, new.short_options)
    return _book_of(model, book.spot, size, losses, short_options)


def _facts(cash: Decimal, line_equity: Decimal, risks: list[Decimal]) -> MarginFacts:
    mm = ZERO
    for risk in risks:
        mm = _EXACT.add(mm, risk)
    return MarginFacts(equity=_total(_EXACT.add(cash, line_equity)), mm_required=_total(mm))


@attrs.frozen(kw_only=True, eq=False)
class PreparedPortfolioMargin:
    """A portfolio valued once by :meth:`PortfolioMargin.prepare` (do not build directly).

    Holds each position's per-scenario values (computed for this ``now`` only, independent
    of the amount) and each underlying's exact per-scenario loss sums, so a what-if close
    costs O(number of scenarios): the closed position's contribution is swapped in the
    sums, nothing is repriced. Immutable: :meth:`closed` returns a new object.
    """

    model: PortfolioMargin
    now: int
    cash: Decimal
    _lines: Mapping[str, _Line]
    """Non-dust positions by symbol."""
    _line_equity: Decimal
    """Exact ``Σ amount × mark``."""
    _books: Mapping[str, _Book]
    """By underlying, sorted."""

    def facts(self) -> MarginFacts:
        """Equity and mm_required, identical to ``model.evaluate(portfolio, now)``."""
        return _facts(self.cash, self._line_equity, [book.risk for book in self._books.values()])

    def facts_after_close(self, symbol: str, size: Decimal, price: Decimal) -> MarginFacts:
        """The facts after buying back ``size`` of the short ``symbol`` at ``price``.

        Identical to ``model.evaluate(closed, now)`` where ``closed`` has ``cash − price ×
        size`` and the position's amount ``+ size`` with its mark kept (dropped when at or
        below ``MIN_SIZE``) — SPEC §6 ``close_short``. Errors as :meth:`closed`.
        """
        change = self._change(symbol, size, price)
        if change is None:
            return self.facts()
        cash, line_equity, underlying, book, _ = change
        risks = [b.risk for u, b in self._books.items() if u != underlying]
        if book is not None:
            risks.append(book.risk)
        return _facts(cash, line_equity, risks)

    def scenario_losses(self, underlying: str) -> tuple[Decimal, ...]:
        """The loss of ``underlying``'s positions in each scenario (spot-shock major), each
        exact sum rounded once to CONTEXT; empty when it has no (non-dust) position.

        Its margin is ``max(0, *losses) + short_option_contingency × spot × Σ |short option
        amount|``. With :meth:`unit_losses` this is the model's exact linear structure: a
        planner can see which scenario binds and which closes lower it.
        """
        book = self._books.get(underlying)
        return () if book is None else tuple(_total(loss) for loss in book.losses)

    def unit_losses(self, symbol: str) -> tuple[Decimal, ...]:
        """What buying back one unit of ``symbol`` adds to its underlying's loss in each
        scenario (``mark − value``: negative where the short loses).

        Linear in the size until the position is closed: buying back ``size`` moves the
        losses by ``size ×`` these and lowers the contingency by ``short_option_contingency ×
        spot × size``. :class:`PlanningError` when ``symbol`` has no (non-dust) position.
        """
        line = self._lines.get(symbol)
        if line is None:
            raise PlanningError(f"no position in {symbol!r}")
        return line.unit_losses

    def closed(self, symbol: str, size: Decimal, price: Decimal) -> PreparedPortfolioMargin:
        """This prepared portfolio after buying back ``size`` of ``symbol`` at ``price``.

        ``size ≤ MIN_SIZE`` is a no-op. :class:`PlanningError` when ``symbol`` has no
        (non-dust) position, the position is not short, or ``size > |amount| + MIN_SIZE``;
        :class:`InvalidInput` when ``size`` or ``price`` is not a finite Decimal.
        """
        change = self._change(symbol, size, price)
        if change is None:
            return self
        cash, line_equity, underlying, book, line = change
        lines = dict(self._lines)
        if line is None:
            del lines[symbol]
        else:
            lines[symbol] = line
        books = dict(self._books)
        if book is None:
            del books[underlying]
        else:
            books[underlying] = book
        return PreparedPortfolioMargin(
            model=self.model,
            now=self.now,
            cash=cash,
            lines=MappingProxyType(lines),
            line_equity=line_equity,
            books=MappingProxyType(books),
        )

    def _change(
        self, symbol: str, size: Decimal, price: Decimal
    ) -> tuple[Decimal, Decimal, str, _Book | None, _Line | None] | None:
        """(cash, Σ amount × mark, underlying, its new book, the new line) after the close;
        ``None`` for a no-op."""
        _finite(size, "PreparedPortfolioMargin.closed size")
        _finite(price, "PreparedPortfolioMargin.closed price")
        if size <= MIN_SIZE:
            return None
        old = self._lines.get(symbol)
        if old is None:
            raise PlanningError(f"cannot close {symbol!r}: no position")
        if old.amount >= 0:
            raise PlanningError(f"cannot close {symbol!r}: position {old.amount} is not short")
        if size > CONTEXT.add(old.amount.copy_abs(), MIN_SIZE):
            raise PlanningError(
                f"cannot close {size} of {symbol!r}: exceeds the short position {old.amount}"
            )
        try:
            cash = CONTEXT.subtract(self.cash, CONTEXT.multiply(price, size))
            amount = CONTEXT.add(old.amount, size)
            new: _Line | None = None
            if amount.copy_abs() > MIN_SIZE:
                new = _line(
                    underlying=old.underlying,
                    amount=amount,
                    mark=old.mark,
                    is_option=old.is_option,
                    unit_losses=old.unit_losses,
                )
            line_equity = _EXACT.subtract(self._line_equity, old.equity)
            if new is not None:
                line_equity = _EXACT.add(line_equity, new.equity)
            book = _replaced(self.model, self._books[old.underlying], old, new)
        except ArithmeticError as error:
            raise PlanningError(f"portfolio margin cannot close {symbol!r}: {error!r}") from None
        return cash, line_equity, old.underlying, book, new
