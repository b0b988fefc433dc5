"""Tests of the portfolio (scenario) margin model and its Black–Scholes pricing."""

from __future__ import annotations

import datetime
import decimal
import math
from collections.abc import Mapping
from decimal import Decimal

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from liqcore.errors import InvalidInput, PlanningError
from liqcore.inputs import Portfolio, Position
from liqcore.instruments import OptionSymbol, option_symbol
from liqcore.margin.portfolio import (
    YEAR_MS,
    PortfolioMargin,
    black_scholes,
    normal_cdf,
)
from liqcore.numbers import CONTEXT, MIN_SIZE, ONE, ZERO


def _ms(year: int, month: int, day: int, hour: int = 0) -> int:
    moment = datetime.datetime(year, month, day, hour, tzinfo=datetime.UTC)
    return int(moment.timestamp()) * 1000


NOW = _ms(2026, 1, 1)
SPOTS = {"BTC": Decimal(100_000), "ETH": Decimal(4_000)}
_PROFILE_EXAMPLES = (settings.default or settings()).max_examples
BOOK_EXAMPLES = max(min(_PROFILE_EXAMPLES, 50), _PROFILE_EXAMPLES * 2 // 5)
"""Tests that price whole books (tens of ms per example) run 40 % of the profile's examples
(at least the dev profile's 50): ci 120, nightly 2000."""
EXPIRIES = ("20251226", "20260130", "20260327", "20261231")  # the first one has expired


# --- independent float reference (plain math, written out here) ---------------------------


def _float_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _float_bs(is_call: bool, s: float, k: float, t: float, r: float, sigma: float) -> float:
    if t <= 0:
        return max(0.0, s - k) if is_call else max(0.0, k - s)
    sd = sigma * math.sqrt(t)
    d1 = (math.log(s / k) + (r + sigma * sigma / 2.0) * t) / sd
    d2 = d1 - sd
    if is_call:
        return s * _float_cdf(d1) - k * math.exp(-r * t) * _float_cdf(d2)
    return k * math.exp(-r * t) * _float_cdf(-d2) - s * _float_cdf(-d1)


def _close_enough(actual: Decimal, expected: float, *, rel: float, abs_: float) -> bool:
    return math.isclose(float(actual), expected, rel_tol=rel, abs_tol=abs_)


# --- helpers -----------------------------------------------------------------------------


def _years(symbol: str, now: int = NOW) -> Decimal:
    return CONTEXT.divide(Decimal(OptionSymbol.parse(symbol).expires_at - now), Decimal(YEAR_MS))


def _model_value(
    model: PortfolioMargin, symbol: str, spot: Decimal, shock: Decimal = ZERO, vol: Decimal = ZERO
) -> Decimal:
    """The model's value of one unit of ``symbol`` in scenario (shock, vol)."""
    option = OptionSymbol.parse(symbol)
    return black_scholes(
        is_call=option.is_call,
        spot=CONTEXT.multiply(spot, CONTEXT.add(ONE, shock)),
        strike=option.strike,
        years=_years(symbol),
        rate=model.risk_free_rate,
        volatility=CONTEXT.multiply(model.base_volatility, CONTEXT.add(ONE, vol)),
    )


def _make(
    cash: Decimal, positions: Mapping[str, Position], spot: Mapping[str, Decimal]
) -> Portfolio:
    """A portfolio from positional parts."""
    return Portfolio(cash=cash, positions=positions, spot=spot)


def _portfolio(
    positions: Mapping[str, tuple[Decimal, Decimal]],
    *,
    cash: Decimal = ZERO,
    spot: Mapping[str, Decimal] = SPOTS,
) -> Portfolio:
    """Positions given as symbol -> (amount, mark)."""
    return _make(
        cash,
        {
            symbol: Position(symbol=symbol, amount=amount, entry_price=mark)
            for symbol, (amount, mark) in positions.items()
        },
        spot,
    )


def _closed(portfolio: Portfolio, symbol: str, size: Decimal, price: Decimal) -> Portfolio:
    """SPEC §6 close_short: cash −= price × size, amount += size, the mark is kept."""
    position = portfolio.positions[symbol]
    amount = CONTEXT.add(position.amount, size)
    positions = dict(portfolio.positions)
    if abs(amount) <= MIN_SIZE:
        del positions[symbol]
    else:
        positions[symbol] = Position(symbol=symbol, amount=amount, entry_price=position.mark_price)
    return _make(
        CONTEXT.subtract(portfolio.cash, CONTEXT.multiply(price, size)), positions, portfolio.spot
    )


# --- strategies --------------------------------------------------------------------------

amounts = st.decimals(min_value="-20", max_value="20", places=3).filter(lambda a: abs(a) > MIN_SIZE)
short_amounts = st.decimals(min_value="-20", max_value="-0.001", places=3)
fractions = st.decimals(min_value="0.001", max_value="1", places=3)
shocks = st.decimals(min_value="-0.9", max_value="2", places=2)


@st.composite
def option_symbols(draw: st.DrawFn, *, underlying: str | None = None) -> str:
    name = underlying or draw(st.sampled_from(sorted(SPOTS)))
    factor = draw(st.integers(min_value=50, max_value=150))
    strike = SPOTS[name] * factor / 100
    return f"{name}-{draw(st.sampled_from(EXPIRIES))}-{strike}-{draw(st.sampled_from('CP'))}"


@st.composite
def positions(
    draw: st.DrawFn, *, symbol: str | None = None, amount: st.SearchStrategy[Decimal] = amounts
) -> Position:
    if symbol is None:
        symbol = draw(st.one_of(option_symbols(), st.sampled_from(["BTC-PERP", "ETH-PERP"])))
    underlying = symbol.split("-", maxsplit=1)[0]
    top = SPOTS[underlying] * (2 if symbol.endswith("PERP") else Decimal("0.5"))
    entry = draw(st.decimals(min_value=0, max_value=top, places=2))
    size = draw(amount)
    drift = draw(st.decimals(min_value=-entry / 2, max_value=entry / 2, places=2))
    return Position(
        symbol=symbol,
        amount=size,
        entry_price=entry,
        unrealized_pnl=CONTEXT.multiply(size, drift),
    )


@st.composite
def portfolios(draw: st.DrawFn, *, max_size: int = 6) -> Portfolio:
    drawn = draw(st.lists(positions(), max_size=max_size, unique_by=lambda p: p.symbol))
    cash = draw(st.decimals(min_value=-1_000_000, max_value=1_000_000, places=2))
    return _make(cash, {p.symbol: p for p in drawn}, SPOTS)


@st.composite
def models(draw: st.DrawFn) -> PortfolioMargin:
    spot_shocks = tuple(draw(st.lists(shocks, min_size=1, max_size=4)))
    vol_shocks = tuple(
        draw(
            st.lists(st.decimals(min_value="-0.5", max_value="1", places=2), min_size=1, max_size=2)
        )
    )
    return PortfolioMargin(
        spot_shocks=spot_shocks,
        vol_shocks=vol_shocks,
        base_volatility=draw(st.decimals(min_value="0.1", max_value="2", places=2)),
        risk_free_rate=draw(st.decimals(min_value="-0.05", max_value="0.2", places=3)),
        short_option_contingency=draw(st.sampled_from([ZERO, Decimal("0.01"), Decimal("0.1")])),
    )


def _short_options(portfolio: Portfolio) -> list[str]:
    return sorted(
        symbol
        for symbol, position in portfolio.positions.items()
        if position.amount < -MIN_SIZE and option_symbol(symbol) is not None
    )


# --- Black–Scholes and the normal CDF ----------------------------------------------------


def test_black_scholes_textbook_example_matches_hull() -> None:
    """S=42, K=40, r=10%, σ=20%, T=0.5: call ≈ 4.76 and put ≈ 0.81 (Hull, Example 15.6)."""
    args = {
        "spot": Decimal(42),
        "strike": Decimal(40),
        "years": Decimal("0.5"),
        "rate": Decimal("0.1"),
        "volatility": Decimal("0.2"),
    }
    call = black_scholes(is_call=True, **args)
    put = black_scholes(is_call=False, **args)
    assert abs(call - Decimal("4.76")) < Decimal("0.005")
    assert abs(put - Decimal("0.81")) < Decimal("0.005")
    assert _close_enough(call, _float_bs(True, 42, 40, 0.5, 0.1, 0.2), rel=1e-12, abs_=1e-12)
    assert _close_enough(put, _float_bs(False, 42, 40, 0.5, 0.1, 0.2), rel=1e-12, abs_=1e-12)


@given(
    is_call=st.booleans(),
    spot=st.decimals(min_value=1, max_value=200_000, places=2),
    moneyness=st.decimals(min_value="0.3", max_value="3", places=3),
    years=st.decimals(min_value="0.001", max_value=5, places=4),
    rate=st.decimals(min_value="-0.05", max_value="0.3", places=3),
    volatility=st.decimals(min_value="0.05", max_value=3, places=3),
)
def test_black_scholes_any_input_matches_float_formula(
    is_call: bool,
    spot: Decimal,
    moneyness: Decimal,
    years: Decimal,
    rate: Decimal,
    volatility: Decimal,
) -> None:
    """The Decimal price agrees with the textbook formula in doubles to ~1e-9 of the spot."""
    strike = CONTEXT.multiply(spot, moneyness)
    price = black_scholes(
        is_call=is_call, spot=spot, strike=strike, years=years, rate=rate, volatility=volatility
    )
    expected = _float_bs(
        is_call, float(spot), float(strike), float(years), float(rate), float(volatility)
    )
    assert _close_enough(price, expected, rel=1e-9, abs_=1e-9 * float(spot))


@given(
    spot=st.decimals(min_value="0.01", max_value=1_000_000, places=2),
    moneyness=st.decimals(min_value="0.1", max_value=10, places=3),
    years=st.decimals(min_value="0.0001", max_value=10, places=4),
    rate=st.decimals(min_value="-0.1", max_value="0.5", places=3),
    volatility=st.decimals(min_value="0.01", max_value=5, places=3),
)
def test_black_scholes_any_input_satisfies_put_call_parity(
    spot: Decimal, moneyness: Decimal, years: Decimal, rate: Decimal, volatility: Decimal
) -> None:
    """C − P = S − K·e^(−rT) up to the 1e-12 rounding of the two prices."""
    strike = CONTEXT.multiply(spot, moneyness)
    args = {"spot": spot, "strike": strike, "years": years, "rate": rate, "volatility": volatility}
    call = black_scholes(is_call=True, **args)
    put = black_scholes(is_call=False, **args)
    forward = CONTEXT.subtract(
        spot, CONTEXT.multiply(strike, CONTEXT.exp(CONTEXT.multiply(-rate, years)))
    )
    assert abs(CONTEXT.subtract(CONTEXT.subtract(call, put), forward)) <= Decimal("2e-12")


@given(
    is_call=st.booleans(),
    spot=st.decimals(min_value="0.01", max_value=1_000_000, places=2),
    strike=st.decimals(min_value="0.01", max_value=1_000_000, places=2),
    years=st.decimals(min_value=-5, max_value=0, places=4),
)
def test_black_scholes_no_time_left_is_intrinsic(
    is_call: bool, spot: Decimal, strike: Decimal, years: Decimal
) -> None:
    """At or after expiry an option is worth max(0, S − K) (call) or max(0, K − S) (put)."""
    price = black_scholes(
        is_call=is_call,
        spot=spot,
        strike=strike,
        years=years,
        rate=Decimal("0.05"),
        volatility=Decimal("0.8"),
    )
    assert price == max(ZERO, spot - strike if is_call else strike - spot)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("spot", Decimal(0)),
        ("spot", Decimal(-1)),
        ("strike", Decimal(0)),
        ("volatility", Decimal(0)),
        ("years", Decimal("NaN")),
        ("rate", Decimal("Infinity")),
        ("spot", 42.0),
        ("is_call", 1),
    ],
)
def test_black_scholes_bad_input_raises_invalid_input(field: str, value: object) -> None:
    """Non-positive spot/strike/volatility, non-finite numbers, floats and non-bools are
    refused, the message naming the function and the argument."""
    args: dict[str, object] = {
        "is_call": True,
        "spot": Decimal(42),
        "strike": Decimal(40),
        "years": Decimal("0.5"),
        "rate": Decimal("0.1"),
        "volatility": Decimal("0.2"),
    }
    args[field] = value
    with pytest.raises(InvalidInput, match=f"^black_scholes {field} must be"):
        black_scholes(**args)  # type: ignore[arg-type]


def test_black_scholes_huge_prices_keep_their_digits() -> None:
    """Prices of 1e15 and more are not quantized (that would overflow 28 digits) but stay
    consistent: C − P = S − K·e^(−rT) to 27 significant digits."""
    spot = Decimal("1e20")
    args = {
        "spot": spot,
        "strike": spot,
        "years": ONE,
        "rate": Decimal("0.05"),
        "volatility": Decimal("0.8"),
    }
    call = black_scholes(is_call=True, **args)
    put = black_scholes(is_call=False, **args)
    forward = CONTEXT.subtract(spot, CONTEXT.multiply(spot, CONTEXT.exp(Decimal("-0.05"))))
    assert call > put > 0
    assert abs(CONTEXT.subtract(CONTEXT.subtract(call, put), forward)) <= spot * Decimal("1e-26")


@given(st.decimals(min_value=-38, max_value=38, places=6))
def test_normal_cdf_any_x_matches_math_erfc(x: Decimal) -> None:
    """Φ agrees with the double-precision erfc, relative to the tail where it is tiny."""
    expected = 0.5 * math.erfc(-float(x) / math.sqrt(2.0))
    assert _close_enough(normal_cdf(x), expected, rel=1e-12, abs_=1e-300)


@given(st.decimals(min_value=-50, max_value=50, places=8))
def test_normal_cdf_any_x_is_symmetric(x: Decimal) -> None:
    """Φ(x) + Φ(−x) = 1 to 26 digits (both sides computed independently)."""
    assert abs(CONTEXT.add(normal_cdf(x), normal_cdf(-x)) - ONE) <= Decimal("1e-26")


@given(
    st.decimals(min_value=-45, max_value=45, places=4),
    st.decimals(min_value=0, max_value=10, places=4),
)
def test_normal_cdf_any_x_is_monotone_and_bounded(x: Decimal, step: Decimal) -> None:
    """0 ≤ Φ(x) ≤ Φ(x + step) ≤ 1."""
    low, high = normal_cdf(x), normal_cdf(x + step)
    assert ZERO <= low <= high <= ONE


def test_normal_cdf_reference_points_match_to_26_digits() -> None:
    """Φ(0), Φ(0.5), Φ(1.96) and the tail Φ(−10) match 120-digit values (computed with the
    alternating Maclaurin series of erf, a different algorithm) to 26 digits."""
    references = {
        Decimal(0): Decimal("0.5"),
        Decimal("0.5"): Decimal("0.691462461274013103637704610608337739883602175554577936820"),
        Decimal("1.96"): Decimal("0.975002104851779565863415730959162809977500220938116608914"),
    }
    for x, expected in references.items():
        assert abs(normal_cdf(x) - expected) < Decimal("1e-26")
        assert abs(normal_cdf(-x) - (1 - expected)) < Decimal("1e-26")
    tail = Decimal("7.61985302416052606597334325159930836350403327795696E-24")
    assert abs(normal_cdf(Decimal(-10)) / tail - 1) < Decimal("1e-24")


# --- hand-computed portfolio margin ------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "amount", "mark"),
    [
        ("BTC-20261231-100000-C", Decimal(-4), Decimal(30_000)),
        ("BTC-20261231-90000-P", Decimal("-2.5"), Decimal(15_000)),
        ("BTC-20260130-120000-C", Decimal(-3), Decimal(100)),
    ],
)
def test_evaluate_single_short_option_matches_hand_computation(
    symbol: str, amount: Decimal, mark: Decimal
) -> None:
    """A lone short option needs max(0, max_s |amount| × (BS(S(1+s)) − mark)) (default grid)."""
    now = _ms(2026, 6, 1)
    spot = 105_000.0
    strike = float(symbol.split("-")[2])
    expiry = datetime.datetime.strptime(symbol.split("-")[1], "%Y%m%d").replace(
        hour=8, tzinfo=datetime.UTC
    )
    years = (expiry.timestamp() * 1000 - now) / (365 * 86_400_000)
    is_call = symbol.endswith("C")
    losses = [
        -float(amount)
        * (_float_bs(is_call, spot * (1 + s), strike, years, 0.05, 0.8) - float(mark))
        for s in (-0.15, 0.0, 0.15)
    ]
    expected = max(0.0, *losses)
    facts = PortfolioMargin().evaluate(
        _portfolio({symbol: (amount, mark)}, cash=Decimal(1000), spot={"BTC": Decimal(105_000)}),
        now,
    )
    assert expected > 0
    assert _close_enough(facts.mm_required, expected, rel=1e-9, abs_=0)
    assert facts.equity == Decimal(1000) + amount * mark


def test_evaluate_expired_short_call_is_worth_intrinsic() -> None:
    """After 08:00 UTC of its expiry date an option is valued at intrinsic on the shocked spot."""
    symbol = "BTC-20251226-90000-C"
    assert OptionSymbol.parse(symbol).expires_at < NOW
    mark = Decimal(9_000)
    facts = PortfolioMargin().evaluate(_portfolio({symbol: (Decimal(-2), mark)}), NOW)
    # up shock: spot 115000, intrinsic 25000, loss 2 × (25000 − 9000)
    assert facts.mm_required == 2 * (Decimal(25_000) - mark)


def test_evaluate_option_just_before_expiry_is_near_intrinsic() -> None:
    """One millisecond before expiry the price is intrinsic to well under a cent."""
    symbol = "BTC-20260130-90000-C"
    now = OptionSymbol.parse(symbol).expires_at - 1
    facts = PortfolioMargin(spot_shocks=(ZERO,)).evaluate(
        _portfolio({symbol: (Decimal(-1), ZERO)}), now
    )
    assert abs(facts.mm_required - Decimal(10_000)) < Decimal("0.01")


def test_evaluate_long_perp_loses_on_the_down_shock() -> None:
    """A perp moves by spot × shock: a long one needs amount × S × 0.15 under the default grid."""
    facts = PortfolioMargin().evaluate(
        _portfolio({"BTC-PERP": (Decimal(3), Decimal(99_000))}, cash=Decimal(10)), NOW
    )
    assert facts.mm_required == 3 * Decimal(100_000) * Decimal("0.15")
    assert facts.equity == Decimal(10) + 3 * Decimal(99_000)


def test_evaluate_perps_lose_on_the_adverse_shock_of_an_asymmetric_grid() -> None:
    """Long perps lose on the down shock, short perps on the up shock (grid −20 %, +10 %)."""
    model = PortfolioMargin(spot_shocks=(Decimal("-0.2"), Decimal("0.1")))
    long = model.evaluate(_portfolio({"ETH-PERP": (Decimal(2), Decimal(1))}), NOW)
    short = model.evaluate(_portfolio({"ETH-PERP": (Decimal(-2), Decimal(1))}), NOW)
    assert long.mm_required == 2 * Decimal(4_000) * Decimal("0.2")
    assert short.mm_required == 2 * Decimal(4_000) * Decimal("0.1")


def test_evaluate_equity_is_summed_exactly_then_rounded_once() -> None:
    """Sums are exact and rounded once: 1e27 + 0.4 + 0.4 gives 1e27 + 1, whatever the order
    (a 28-digit running sum would drop both 0.4s)."""
    big = Decimal(10) ** 27
    book = {
        "BTC-PERP": (big, ONE),
        "ETH-PERP": (Decimal("0.4"), ONE),
        "SOL-PERP": (Decimal("0.4"), ONE),
    }
    spot = {"BTC": ONE, "ETH": ONE, "SOL": ONE}
    facts = PortfolioMargin().evaluate(_portfolio(book, spot=spot), NOW)
    assert facts.equity == big + 1


def test_evaluate_scenario_losses_are_summed_exactly_then_rounded_once() -> None:
    """Scenario losses 1e27 + 0.4 + 0.4 (expired short call and put at intrinsic 1, a short
    perp) give MM 1e27 + 1: summed exactly, not by a 28-digit running sum."""
    big = Decimal(10) ** 27
    book = {
        "BTC-20251226-1-C": (-big, ZERO),
        "BTC-20251226-3-P": (Decimal("-0.4"), ZERO),
        "BTC-PERP": (Decimal("-0.4"), ONE),
    }
    model = PortfolioMargin(spot_shocks=(ONE,))  # spot 1 -> 2
    facts = model.evaluate(_portfolio(book, spot={"BTC": ONE}), NOW)
    assert facts.mm_required == big + 1


def test_evaluate_underlyings_are_margined_independently() -> None:
    """Worst losses are taken per underlying and summed: a long BTC perp and a short ETH perp
    of equal notional do not offset (a joint grid would give 0)."""
    book = {"BTC-PERP": (Decimal(1), Decimal(100)), "ETH-PERP": (Decimal(-1), Decimal(100))}
    facts = PortfolioMargin().evaluate(
        _portfolio(book, spot={"BTC": Decimal(100), "ETH": Decimal(100)}), NOW
    )
    assert facts.mm_required == Decimal(30)


@settings(max_examples=BOOK_EXAMPLES)
@given(portfolio=portfolios())
def test_evaluate_any_book_is_sum_of_its_underlyings(portfolio: Portfolio) -> None:
    """MM of a book equals the sum of the MMs of its per-underlying sub-books."""
    model = PortfolioMargin()
    whole = model.evaluate(portfolio, NOW).mm_required
    parts = ZERO
    for underlying in SPOTS:
        sub = {s: p for s, p in portfolio.positions.items() if s.startswith(underlying + "-")}
        parts += model.evaluate(_make(ZERO, sub, SPOTS), NOW).mm_required
    assert abs(whole - parts) <= Decimal("1e-18") * max(ONE, whole)


def test_evaluate_vol_shock_up_raises_short_option_margin() -> None:
    """The vol shocks are applied: adding a +50 % vol scenario raises a short ATM call's MM."""
    book = _portfolio({"BTC-20261231-100000-C": (Decimal(-1), Decimal(20_000))})
    base = PortfolioMargin().evaluate(book, NOW).mm_required
    shocked = PortfolioMargin(vol_shocks=(ZERO, Decimal("0.5"))).evaluate(book, NOW).mm_required
    assert shocked > base


@settings(max_examples=BOOK_EXAMPLES)
@given(portfolio=portfolios(), model=models(), extra=st.lists(shocks, min_size=1, max_size=2))
def test_evaluate_more_scenarios_never_lower_margin(
    portfolio: Portfolio, model: PortfolioMargin, extra: list[Decimal]
) -> None:
    """A grid that contains another grid never requires less margin."""
    wider = PortfolioMargin(
        spot_shocks=model.spot_shocks + tuple(extra),
        vol_shocks=model.vol_shocks,
        base_volatility=model.base_volatility,
        risk_free_rate=model.risk_free_rate,
        short_option_contingency=model.short_option_contingency,
    )
    assert wider.evaluate(portfolio, NOW).mm_required >= model.evaluate(portfolio, NOW).mm_required


@settings(max_examples=BOOK_EXAMPLES)
@given(portfolio=portfolios(), model=models())
def test_evaluate_any_book_equity_is_cash_plus_amount_times_mark(
    portfolio: Portfolio, model: PortfolioMargin
) -> None:
    """equity = cash + Σ amount × mark (products in CONTEXT, summed exactly, rounded once)."""
    with decimal.localcontext(decimal.Context(prec=200)):
        total = portfolio.cash + sum(
            (CONTEXT.multiply(p.amount, p.mark_price) for p in portfolio.positions.values()),
            start=ZERO,
        )
    assert model.evaluate(portfolio, NOW).equity == CONTEXT.plus(total)


@settings(max_examples=BOOK_EXAMPLES)
@given(
    portfolio=portfolios(),
    rate=st.decimals(min_value="0.001", max_value="0.5", places=3),
)
def test_evaluate_contingency_adds_rate_times_spot_times_short_options(
    portfolio: Portfolio, rate: Decimal
) -> None:
    """The contingency adds c × S × Σ|short option amount| per underlying, nothing else."""
    plain = PortfolioMargin().evaluate(portfolio, NOW).mm_required
    loaded = PortfolioMargin(short_option_contingency=rate).evaluate(portfolio, NOW).mm_required
    expected = ZERO
    for symbol in _short_options(portfolio):
        spot = SPOTS[symbol.split("-", maxsplit=1)[0]]
        expected += rate * spot * -portfolio.positions[symbol].amount
    assert abs(loaded - plain - expected) <= Decimal("1e-18") * max(ONE, loaded)


def test_evaluate_contingency_on_one_short_option_exact() -> None:
    """With c = 2 %, a short 3 at S = 100000 adds exactly 6000 to the scenario margin."""
    book = _portfolio({"BTC-20261231-100000-C": (Decimal(-3), Decimal(20_000))})
    plain = PortfolioMargin().evaluate(book, NOW).mm_required
    loaded = PortfolioMargin(short_option_contingency=Decimal("0.02")).evaluate(book, NOW)
    assert loaded.mm_required == plain + Decimal(6_000)


# --- hedges and monotonicity -------------------------------------------------------------


@given(
    spot_shocks=st.lists(shocks, min_size=1, max_size=5),
    factor=st.integers(min_value=60, max_value=140),
    gap=st.integers(min_value=1, max_value=20),
    expiry=st.sampled_from(EXPIRIES),
    amount=short_amounts,
    volatility=st.decimals(min_value="0.1", max_value="2", places=2),
    rate=st.decimals(min_value="-0.05", max_value="0.2", places=3),
)
def test_evaluate_call_spread_needs_at_most_the_naked_short(
    spot_shocks: list[Decimal],
    factor: int,
    gap: int,
    expiry: str,
    amount: Decimal,
    volatility: Decimal,
    rate: Decimal,
) -> None:
    """Short call + long call at a higher strike (same expiry, marks at model value) needs no
    more margin than the naked short call, for any spot grid."""
    model = PortfolioMargin(
        spot_shocks=tuple(spot_shocks), base_volatility=volatility, risk_free_rate=rate
    )
    spot = SPOTS["BTC"]
    short = f"BTC-{expiry}-{1_000 * factor}-C"
    long = f"BTC-{expiry}-{1_000 * (factor + gap)}-C"
    naked = {short: (amount, _model_value(model, short, spot))}
    spread = naked | {long: (-amount, _model_value(model, long, spot))}
    naked_mm = model.evaluate(_portfolio(naked), NOW).mm_required
    spread_mm = model.evaluate(_portfolio(spread), NOW).mm_required
    assert spread_mm <= naked_mm + Decimal("4e-12") * abs(amount)


def test_evaluate_call_spread_needs_strictly_less_than_naked_short() -> None:
    """The long call's up-shock gain is credited: a 100k/110k call spread needs less margin."""
    model = PortfolioMargin()
    short, long = "BTC-20261231-100000-C", "BTC-20261231-110000-C"
    naked = {short: (Decimal(-1), _model_value(model, short, SPOTS["BTC"]))}
    spread = naked | {long: (Decimal(1), _model_value(model, long, SPOTS["BTC"]))}
    naked_mm = model.evaluate(_portfolio(naked), NOW).mm_required
    spread_mm = model.evaluate(_portfolio(spread), NOW).mm_required
    assert spread_mm < naked_mm / 2


@settings(max_examples=BOOK_EXAMPLES)
@given(
    symbol=option_symbols(),
    data=st.data(),
    others=portfolios(max_size=4),
    model=models(),
    fraction=fractions,
)
def test_closing_lone_short_option_never_raises_margin(
    symbol: str, data: st.DataObject, others: Portfolio, model: PortfolioMargin, fraction: Decimal
) -> None:
    """When a short option is the only position on its underlying, closing any part of it
    never raises MM — whatever its mark and whatever the book holds on other underlyings."""
    underlying = symbol.split("-", maxsplit=1)[0]
    position = data.draw(positions(symbol=symbol, amount=short_amounts))
    book = {s: p for s, p in others.positions.items() if not s.startswith(underlying + "-")}
    portfolio = _make(others.cash, book | {symbol: position}, SPOTS)
    size = CONTEXT.multiply(-position.amount, fraction)
    before = model.evaluate(portfolio, NOW).mm_required
    after = model.evaluate(_closed(portfolio, symbol, size, position.mark_price), NOW)
    assert after.mm_required <= before


@settings(max_examples=BOOK_EXAMPLES)
@given(
    portfolio=portfolios(),
    symbol=option_symbols(),
    amount=short_amounts,
    model=models(),
    cheapness=fractions,
    fraction=fractions,
)
def test_closing_short_option_worth_at_least_its_mark_never_raises_margin(
    portfolio: Portfolio,
    symbol: str,
    amount: Decimal,
    model: PortfolioMargin,
    cheapness: Decimal,
    fraction: Decimal,
) -> None:
    """In any book, closing part of a short option whose value in every scenario is at least
    its mark (so the short loses or breaks even in every scenario) never raises MM."""
    spot = SPOTS[symbol.split("-", maxsplit=1)[0]]
    floor = min(
        _model_value(model, symbol, spot, s, w) for s in model.spot_shocks for w in model.vol_shocks
    )
    mark = CONTEXT.multiply(floor, cheapness).quantize(
        Decimal("0.01"), rounding=decimal.ROUND_FLOOR
    )
    positions_ = dict(portfolio.positions)
    positions_[symbol] = Position(symbol=symbol, amount=amount, entry_price=mark)
    book = _make(portfolio.cash, positions_, SPOTS)
    size = CONTEXT.multiply(-amount, fraction)
    before = model.evaluate(book, NOW).mm_required
    after = model.evaluate(_closed(book, symbol, size, mark), NOW).mm_required
    assert after <= before


def test_closing_either_leg_of_short_strangle_raises_margin() -> None:
    """Known limit of scenario margin (as in SPAN): in a short strangle each leg's gain offsets
    the other's loss in its worst scenario, so closing one whole leg raises MM."""
    model = PortfolioMargin()
    put, call = "BTC-20261231-100000-P", "BTC-20261231-150000-C"
    spot = SPOTS["BTC"]
    marks = {s: _model_value(model, s, spot) for s in (put, call)}
    book = _portfolio({s: (Decimal(-1), marks[s]) for s in (put, call)})
    before = model.evaluate(book, NOW).mm_required
    for leg in (put, call):
        after = model.evaluate(_closed(book, leg, ONE, marks[leg]), NOW).mm_required
        assert after > before


# --- bad input and dust ------------------------------------------------------------------


@pytest.mark.parametrize("symbol", ["BTC-20261231-100000-C", "BTC-PERP"])
@pytest.mark.parametrize("spot", [{}, {"BTC": ZERO}, {"BTC": Decimal(-5)}, {"ETH": Decimal(1)}])
def test_evaluate_missing_or_non_positive_spot_raises_planning_error(
    symbol: str, spot: dict[str, Decimal]
) -> None:
    """A position whose underlying has no positive spot makes the model fail with PlanningError."""
    with pytest.raises(PlanningError, match="BTC"):
        PortfolioMargin().evaluate(_portfolio({symbol: (Decimal(-1), ONE)}, spot=spot), NOW)


def test_evaluate_unknown_instrument_raises_planning_error() -> None:
    """A symbol that is neither an option nor a perp cannot be valued."""
    with pytest.raises(PlanningError, match="BTC-FUT"):
        PortfolioMargin().evaluate(_portfolio({"BTC-FUT": (Decimal(1), ONE)}), NOW)


@pytest.mark.parametrize("now", [1.5, "1", None, True])
def test_evaluate_now_not_int_raises_invalid_input(now: object) -> None:
    """``now`` must be an int of milliseconds."""
    with pytest.raises(InvalidInput, match="now"):
        PortfolioMargin().evaluate(Portfolio(), now)  # type: ignore[arg-type]


def test_evaluate_overflowing_numbers_raise_planning_error() -> None:
    """Absurd parameters that overflow the decimal context fail as PlanningError."""
    model = PortfolioMargin(risk_free_rate=Decimal(-10_000_000))
    with pytest.raises(PlanningError, match=r"^portfolio margin cannot evaluate the portfolio: "):
        model.evaluate(_portfolio({"BTC-20261231-100000-C": (Decimal(-1), ONE)}), NOW)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("spot_shocks", ()),
        ("spot_shocks", [Decimal(0)]),
        ("spot_shocks", (Decimal(-1),)),
        ("vol_shocks", (0.1,)),
        ("vol_shocks", (Decimal("NaN"),)),
        ("base_volatility", ZERO),
        ("risk_free_rate", Decimal("Infinity")),
        ("short_option_contingency", Decimal("-0.01")),
    ],
)
def test_portfolio_margin_bad_params_raise_invalid_input(field: str, value: object) -> None:
    """Shocks must be a non-empty tuple of finite Decimals > −1, volatility > 0, rate finite,
    contingency ≥ 0; the message names the field."""
    with pytest.raises(InvalidInput, match=field):
        PortfolioMargin(**{field: value})  # type: ignore[arg-type]


def test_evaluate_empty_portfolio_is_cash_and_no_margin() -> None:
    """No positions: equity is the cash, MM is zero."""
    facts = PortfolioMargin().evaluate(Portfolio(cash=Decimal("12.50")), NOW)
    assert facts.equity == Decimal("12.5")
    assert facts.mm_required == 0


@settings(max_examples=BOOK_EXAMPLES)
@given(
    portfolio=portfolios(),
    dust=st.lists(
        st.tuples(
            st.sampled_from(["BTC-20261231-100000-C", "XRP-PERP", "BTC-FUT", "DOGE-20260130-1-P"]),
            st.decimals(min_value=-MIN_SIZE, max_value=MIN_SIZE),
        ),
        min_size=1,
        max_size=3,
        unique_by=lambda t: t[0],
    ),
)
def test_evaluate_dust_positions_are_ignored(
    portfolio: Portfolio, dust: list[tuple[str, Decimal]]
) -> None:
    """Positions with |amount| ≤ MIN_SIZE change nothing (not even a missing spot matters)."""
    positions_ = dict(portfolio.positions)
    for symbol, amount in dust:
        positions_.setdefault(
            symbol, Position(symbol=symbol, amount=amount, entry_price=Decimal(7))
        )
    dusty = _make(portfolio.cash, positions_, SPOTS)
    model = PortfolioMargin()
    assert model.evaluate(dusty, NOW) == model.evaluate(portfolio, NOW)


# --- the prepared (incremental) API ------------------------------------------------------


@settings(max_examples=BOOK_EXAMPLES)
@given(portfolio=portfolios(), model=models())
def test_prepare_facts_equal_evaluate(portfolio: Portfolio, model: PortfolioMargin) -> None:
    """prepare(...).facts() is evaluate(...)."""
    assert model.prepare(portfolio, NOW).facts() == model.evaluate(portfolio, NOW)


@settings(max_examples=BOOK_EXAMPLES)
@given(portfolio=portfolios(), model=models(), data=st.data())
def test_facts_after_close_any_book_equals_full_evaluation(
    portfolio: Portfolio, model: PortfolioMargin, data: st.DataObject
) -> None:
    """facts_after_close equals evaluate of the closed portfolio exactly (same digits)."""
    shorts = [s for s, p in portfolio.positions.items() if p.amount < -MIN_SIZE]
    assume(shorts)
    symbol = data.draw(st.sampled_from(sorted(shorts)))
    position = portfolio.positions[symbol]
    size = data.draw(
        st.one_of(
            st.just(-position.amount),
            st.just(-position.amount + MIN_SIZE),
            st.decimals(min_value=MIN_SIZE * 2, max_value=-position.amount, places=8),
        )
    )
    price = data.draw(st.decimals(min_value=0, max_value=200_000, places=4))
    assume(position.mark_price >= 0)
    incremental = model.prepare(portfolio, NOW).facts_after_close(symbol, size, price)
    full = model.evaluate(_closed(portfolio, symbol, size, price), NOW)
    assert incremental == full
    assert (str(incremental.equity), str(incremental.mm_required)) == (
        str(full.equity),
        str(full.mm_required),
    )


@settings(max_examples=BOOK_EXAMPLES)
@given(portfolio=portfolios(), data=st.data())
def test_closed_repeatedly_equals_full_evaluation(
    portfolio: Portfolio, data: st.DataObject
) -> None:
    """Chaining closed() over several closes equals evaluating the fully closed portfolio."""
    model = PortfolioMargin(short_option_contingency=Decimal("0.05"))
    prepared = model.prepare(portfolio, NOW)
    current = portfolio
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        shorts = sorted(s for s, p in current.positions.items() if p.amount < -MIN_SIZE)
        if not shorts:
            break
        symbol = data.draw(st.sampled_from(shorts))
        position = current.positions[symbol]
        assume(position.mark_price >= 0)
        size = CONTEXT.multiply(-position.amount, data.draw(fractions))
        price = data.draw(st.decimals(min_value=0, max_value=50_000, places=2))
        prepared = prepared.closed(symbol, size, price)
        current = _closed(current, symbol, size, price)
    assert prepared.facts() == model.evaluate(current, NOW)


def test_facts_after_close_tiny_size_is_a_no_op() -> None:
    """Closing MIN_SIZE or less changes nothing (SPEC close_short)."""
    prepared = PortfolioMargin().prepare(
        _portfolio({"BTC-20261231-100000-C": (Decimal(-1), Decimal(20_000))}), NOW
    )
    assert prepared.facts_after_close("BTC-20261231-100000-C", MIN_SIZE, Decimal(9)) == (
        prepared.facts()
    )


@pytest.mark.parametrize(
    ("symbol", "size", "match"),
    [
        ("BTC-20260327-100000-P", ONE, "no position"),
        ("BTC-PERP", ONE, "not short"),
        ("BTC-20261231-100000-C", Decimal("2.00000002"), "exceeds"),
        ("ETH-20261231-4000-C", Decimal("0.1"), "not short"),  # a long below 1
    ],
)
def test_facts_after_close_impossible_close_raises_planning_error(
    symbol: str, size: Decimal, match: str
) -> None:
    """Unknown symbol, a long position, or more than the short (+ MIN_SIZE) cannot be closed."""
    book = {
        "BTC-20261231-100000-C": (Decimal(-2), Decimal(20_000)),
        "BTC-PERP": (Decimal(1), Decimal(100_000)),
        "ETH-20261231-4000-C": (Decimal("0.5"), Decimal(300)),
    }
    prepared = PortfolioMargin().prepare(_portfolio(book), NOW)
    with pytest.raises(PlanningError, match=match):
        prepared.facts_after_close(symbol, size, Decimal(100))


def test_closed_tiny_size_returns_the_same_prepared_portfolio() -> None:
    """closed() with a size ≤ MIN_SIZE is a no-op and returns the object itself."""
    prepared = PortfolioMargin().prepare(
        _portfolio({"BTC-20261231-100000-C": (Decimal(-1), Decimal(20_000))}), NOW
    )
    assert prepared.closed("BTC-20261231-100000-C", ZERO, Decimal(9)) is prepared


def test_facts_after_close_overflowing_price_raises_planning_error() -> None:
    """A close whose cost overflows the decimal context fails as PlanningError."""
    prepared = PortfolioMargin().prepare(
        _portfolio({"BTC-20261231-100000-C": (Decimal(-2), Decimal(20_000))}), NOW
    )
    with pytest.raises(
        PlanningError, match=r"^portfolio margin cannot close 'BTC-20261231-100000-C': "
    ):
        prepared.facts_after_close("BTC-20261231-100000-C", Decimal(2), Decimal("9e999999"))


def test_facts_after_close_float_size_raises_invalid_input() -> None:
    """Sizes and prices are Decimals, never floats."""
    prepared = PortfolioMargin().prepare(
        _portfolio({"BTC-20261231-100000-C": (Decimal(-2), Decimal(20_000))}), NOW
    )
    with pytest.raises(InvalidInput, match="size"):
        prepared.facts_after_close("BTC-20261231-100000-C", 1.0, Decimal(1))  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["size", "price"])
def test_closed_non_finite_size_or_price_raises_invalid_input_naming_it(field: str) -> None:
    """The message names the method and the argument (issue 9: kills message mutants)."""
    prepared = PortfolioMargin().prepare(
        _portfolio({"BTC-20261231-100000-C": (Decimal(-2), Decimal(20_000))}), NOW
    )
    args = {"size": ONE, "price": Decimal(1), field: Decimal("NaN")}
    with pytest.raises(InvalidInput, match=f"^PreparedPortfolioMargin.closed {field} must be"):
        prepared.closed("BTC-20261231-100000-C", args["size"], args["price"])


def test_facts_after_close_whole_position_drops_its_underlying() -> None:
    """Closing the only position of an underlying leaves the other underlying's MM only."""
    model = PortfolioMargin()
    book = {
        "BTC-20261231-100000-C": (Decimal(-2), Decimal(20_000)),
        "ETH-PERP": (Decimal(1), Decimal(4_000)),
    }
    after = model.prepare(_portfolio(book), NOW).facts_after_close(
        "BTC-20261231-100000-C", Decimal(2), Decimal(20_000)
    )
    assert after.mm_required == Decimal(600)  # 1 × 4000 × 0.15
    assert after.equity == Decimal(-36_000)  # cash −40000 after the close, + 1 × 4000


# --- determinism -------------------------------------------------------------------------


@settings(max_examples=BOOK_EXAMPLES)
@given(portfolio=portfolios(), model=models())
def test_evaluate_any_book_is_deterministic(portfolio: Portfolio, model: PortfolioMargin) -> None:
    """Same digits whatever the caller's decimal context and the order of the positions."""
    first = model.evaluate(portfolio, NOW)
    reordered = _make(
        portfolio.cash,
        dict(reversed(list(portfolio.positions.items()))),
        dict(reversed(list(portfolio.spot.items()))),
    )
    with decimal.localcontext(decimal.Context(prec=5, rounding=decimal.ROUND_FLOOR)):
        second = model.evaluate(reordered, NOW)
    assert (repr(first.equity), repr(first.mm_required)) == (
        repr(second.equity),
        repr(second.mm_required),
    )


def test_evaluate_dust_boundary_ignores_caller_context() -> None:
    """An amount just above MIN_SIZE is a position even when the caller's context has 3
    digits (``abs()`` would round it to MIN_SIZE there and call it dust) — as held and as
    left by a close."""
    symbol = "BTC-20261231-100000-C"
    model = PortfolioMargin()
    held = _portfolio({symbol: (Decimal("-0.0000000100001"), Decimal(20_000))})
    closing = _portfolio({symbol: (Decimal("-0.0000000300001"), Decimal(20_000))})
    with decimal.localcontext(decimal.Context(prec=3)):
        facts = model.evaluate(held, NOW)
        left = model.prepare(closing, NOW).facts_after_close(symbol, Decimal("2e-8"), ZERO)
    assert facts.mm_required > 0
    assert left == model.evaluate(held, NOW)


def test_evaluate_spot_representation_does_not_leak() -> None:
    """Numerically equal spots written differently (1E+5 vs 100000.00) give the same digits."""
    book = {"BTC-20261231-97500-C": (Decimal(-1), Decimal(20_000))}
    model = PortfolioMargin()
    a = model.evaluate(_portfolio(book, spot={"BTC": Decimal("100000.00")}), NOW)
    b = model.evaluate(_portfolio(book, spot={"BTC": Decimal("1E+5")}), NOW)
    assert (repr(a.equity), repr(a.mm_required)) == (repr(b.equity), repr(b.mm_required))


def test_evaluate_known_book_gives_pinned_digits() -> None:
    """A fixed book gives the same digits as a double-precision hand computation to 1e-9
    (guards against silent changes of the pricing)."""
    model = PortfolioMargin()
    symbol = "BTC-20261231-100000-C"
    facts = model.evaluate(_portfolio({symbol: (Decimal(-1), Decimal(25_000))}), NOW)
    years = (OptionSymbol.parse(symbol).expires_at - NOW) / YEAR_MS
    expected = max(
        _float_bs(True, 100_000 * (1 + s), 100_000, years, 0.05, 0.8) - 25_000
        for s in (-0.15, 0.0, 0.15)
    )
    assert _close_enough(facts.mm_required, expected, rel=1e-12, abs_=0)


# --- boundaries (issue 9: each kills a mutant `nox -s mutate` found alive) -----------------


def test_normal_cdf_ignores_the_callers_decimal_context() -> None:
    """Φ is computed in CONTEXT whatever the caller's context: 5 digits there change nothing."""
    x = Decimal("0.3")
    expected = normal_cdf(x)
    with decimal.localcontext(decimal.Context(prec=5, rounding=decimal.ROUND_FLOOR)):
        assert normal_cdf(x) == expected
    assert abs(expected - Decimal("0.6179114221889526373")) < Decimal("1e-18")


@pytest.mark.parametrize("x", [Decimal("NaN"), Decimal("-Infinity"), 0.5])
def test_normal_cdf_non_finite_or_float_x_raises_invalid_input_naming_it(x: object) -> None:
    with pytest.raises(InvalidInput, match=r"^normal_cdf x must be a finite Decimal"):
        normal_cdf(x)  # type: ignore[arg-type]


ETH_CALL = "ETH-20261231-4000-C"
ETH_PUT = "ETH-20261231-3500-P"
BTC_CALL = "BTC-20261231-100000-C"


def _three_shorts() -> Portfolio:
    return _portfolio(
        {
            ETH_CALL: (Decimal(-2), Decimal(300)),
            ETH_PUT: (Decimal(-3), Decimal(150)),
            BTC_CALL: (Decimal(-1), Decimal(9_000)),
        },
        cash=Decimal(50_000),
    )


def test_closed_step_by_step_scenario_losses_equal_a_fresh_prepare() -> None:
    """After each close — part of a position, a whole one, the last of an underlying — the
    per-scenario losses equal those of the closed portfolio prepared afresh, and an
    underlying with no position left has none (not a row of zeros)."""
    model = PortfolioMargin(short_option_contingency=Decimal("0.01"))
    current = _three_shorts()
    prepared = model.prepare(current, NOW)
    assert prepared.scenario_losses("SOL") == ()
    for symbol, size in ((ETH_CALL, ONE), (ETH_PUT, Decimal(3)), (ETH_CALL, ONE)):
        prepared = prepared.closed(symbol, size, Decimal(200))
        current = _closed(current, symbol, size, Decimal(200))
        fresh = model.prepare(current, NOW)
        for underlying in ("ETH", "BTC"):
            assert prepared.scenario_losses(underlying) == fresh.scenario_losses(underlying)
        assert prepared.facts() == fresh.facts()
    assert prepared.scenario_losses("ETH") == ()
    assert len(prepared.scenario_losses("BTC")) > 0
    assert prepared.model is model
    assert prepared.now == NOW


def test_unit_losses_move_the_scenario_losses_linearly() -> None:
    """Buying back ``size`` moves each scenario's loss by ``size ×`` unit_losses; a symbol
    with no position (never held, or closed whole) has none: PlanningError naming it."""
    model = PortfolioMargin()
    prepared = model.prepare(_three_shorts(), NOW)
    before = prepared.scenario_losses("ETH")
    unit = prepared.unit_losses(ETH_PUT)
    after = prepared.closed(ETH_PUT, Decimal(2), Decimal(150)).scenario_losses("ETH")
    assert len(unit) == len(before) == len(after) > 1
    for b, u, a in zip(before, unit, after, strict=True):
        assert abs(a - (b + 2 * u)) <= Decimal("1e-20") * max(ONE, abs(b))
    assert any(u < 0 for u in unit)  # the short put loses on the down shocks
    with pytest.raises(PlanningError, match=f"^no position in '{ETH_PUT}'"):
        prepared.closed(ETH_PUT, Decimal(3), Decimal(150)).unit_losses(ETH_PUT)
    with pytest.raises(PlanningError, match=r"^no position in 'BTC-PERP'"):
        prepared.unit_losses("BTC-PERP")


def test_prepare_non_portfolio_raises_invalid_input_naming_it() -> None:
    with pytest.raises(InvalidInput, match=r"^PortfolioMargin.prepare portfolio must be a"):
        PortfolioMargin().prepare({"cash": ONE}, NOW)  # type: ignore[arg-type]


def test_normal_cdf_lower_tail_keeps_26_significant_digits_at_5_and_40() -> None:
    """The tail is the continued fraction from |x| = 5 on (the series there loses relative
    digits) and saturates only strictly above 40: Q(5) and Q(40) to 26 significant digits
    (references computed with 90 digits)."""
    for x, q in (
        (Decimal(5), Decimal("2.866515718791939116737523328746453538544e-7")),
        (Decimal(40), Decimal("3.655893540915029703748985802688283665054e-350")),
    ):
        assert abs(normal_cdf(-x) - q) < q * Decimal("1e-26")


def test_black_scholes_ignores_the_callers_decimal_context() -> None:
    args = {
        "is_call": False,
        "spot": Decimal(3_000),
        "strike": Decimal(3_100),
        "years": Decimal("0.25"),
        "rate": Decimal("0.03"),
        "volatility": Decimal("0.7"),
    }
    expected = black_scholes(**args)  # type: ignore[arg-type]
    with decimal.localcontext(decimal.Context(prec=4, rounding=decimal.ROUND_CEILING)):
        assert black_scholes(**args) == expected  # type: ignore[arg-type]


def test_black_scholes_expired_option_is_intrinsic_whatever_the_rate() -> None:
    """With no time left (years ≤ 0) the rate is not used: e^(−rate × years) would overflow."""
    value = black_scholes(
        is_call=True,
        spot=Decimal(3_200),
        strike=Decimal(3_000),
        years=Decimal(-10_000_000),
        rate=Decimal(10_000_000),
        volatility=Decimal("0.5"),
    )
    assert value == Decimal(200)


def test_evaluate_contingency_of_exactly_1_adds_spot_times_short_amount() -> None:
    """short_option_contingency = 1 is a rate like any other (only 0 adds nothing)."""
    book = _portfolio({"ETH-20261231-4000-C": (Decimal(-2), Decimal(300))})
    plain = PortfolioMargin().evaluate(book, NOW).mm_required
    full = PortfolioMargin(short_option_contingency=ONE).evaluate(book, NOW).mm_required
    assert full - plain == 2 * SPOTS["ETH"]


def test_evaluate_huge_equity_is_rounded_in_context_whatever_the_callers() -> None:
    """A sum of 1e27 or more is rounded to CONTEXT's 28 digits, not the caller's 5."""
    cash = Decimal("1234567890123456789012345678.5")
    with decimal.localcontext(decimal.Context(prec=5)):
        equity = PortfolioMargin().evaluate(_portfolio({}, cash=cash), NOW).equity
    assert equity == Decimal("1234567890123456789012345678")


@pytest.mark.parametrize(
    ("cash", "equity"),
    [
        # below 10^27 the sum stays exact, more than 28 digits included
        ("100000000000000000000000000.001", "100000000000000000000000000.001"),
        ("99999999999999999999999999.5", "99999999999999999999999999.5"),
        # from 10^27 up it is rounded once to 28 digits
        ("1000000000000000000000000000.001", "1E+27"),
    ],
)
def test_totals_are_exact_below_1e27_and_rounded_from_there(cash: str, equity: str) -> None:
    """The equity of a cash-only account is its cash, exactly, while below 10^27."""
    facts = PortfolioMargin().evaluate(Portfolio(cash=Decimal(cash), positions={}, spot={}), 0)
    assert facts.equity == Decimal(equity)
    assert str(facts.equity) == equity
