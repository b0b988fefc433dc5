"""liqcore.planning.prices: reference and execution prices, the band and the tick (SPEC §5)."""

from __future__ import annotations

from decimal import Decimal

import attrs
import pytest
from hypothesis import given

from liqcore.config import Config
from liqcore.errors import PlanningError
from liqcore.inputs import Portfolio, Quote
from liqcore.instruments import InstrumentSpec, OptionSymbol
from liqcore.margin.base import MarginFacts
from liqcore.numbers import MIN_SIZE, bps_fraction, quantize_up
from liqcore.planning import execution_prices, reference_price
from tests.liqcore.planning.books import (
    NOW,
    SEED_CONFIG,
    SEED_QUOTE,
    SYMBOL,
    accounts,
    bonuses,
    configs,
    plan_of,
    portfolio,
    position,
)


def test_reference_price_seed_ask_capped_by_band() -> None:
    """Seed: ask 150, no theo, mark 100 → capped at 100 × 1.2 = 120."""
    assert reference_price(SEED_QUOTE, position(), 2_000) == Decimal(120)


def test_reference_price_theo_is_the_fair_value() -> None:
    """With a theo the cap is theo × (1 + band): an ask inside it is taken as is."""
    quote = attrs.evolve(SEED_QUOTE, theo=Decimal(140))
    assert reference_price(quote, position(), 2_000) == Decimal(150)
    assert reference_price(attrs.evolve(quote, best_ask=Decimal(200)), position(), 2_000) == 168


@pytest.mark.parametrize(
    ("ask", "mid", "bid", "theo", "expected"),
    [
        ("110", "105", "100", "101", "110"),
        ("0", "105", "100", None, "105"),  # an empty ask side means no price
        (None, "-3", "100", None, "100"),
        (None, None, "95", None, "95"),  # the bid, not the mark of 100 behind it
        (None, None, None, "90", "90"),
        (None, None, None, None, "100"),  # the position's mark
        (None, None, "0", "-1", "100"),  # a non-positive theo is no fair value either
    ],
)
def test_reference_price_first_positive_source(
    ask: str | None, mid: str | None, bid: str | None, theo: str | None, expected: str
) -> None:
    """Ask, else mid, else bid, else theo, else mark — the first positive one."""

    def d(text: str | None) -> Decimal | None:
        return None if text is None else Decimal(text)

    quote = Quote(best_ask=d(ask), mid=d(mid), best_bid=d(bid), theo=d(theo))
    assert reference_price(quote, position(), 2_000) == Decimal(expected)


def test_reference_price_no_quote_uses_mark() -> None:
    """Without a quote the mark is both price and fair value."""
    assert reference_price(None, position(pnl="-40"), 2_000) == Decimal(110)


def test_reference_price_no_positive_price_raises_planning_error() -> None:
    """No book, no theo and a negative mark (entry 1, PnL 8 on −4 → −1): no price."""
    with pytest.raises(PlanningError, match=SYMBOL):
        reference_price(Quote(), position(entry="1", pnl="8"), 2_000)


def test_reference_price_no_fair_value_raises_planning_error() -> None:
    """An ask without theo or positive mark cannot be capped: no price."""
    with pytest.raises(PlanningError, match="fair"):
        reference_price(Quote(best_ask=Decimal(10)), position(entry="1", pnl="8"), 2_000)


@pytest.mark.parametrize("amount", ["-0.000000001", "-0.00000001"])  # < and = MIN_SIZE
def test_reference_price_dust_position_raises_planning_error_not_invalid_input(
    amount: str,
) -> None:
    """A dust position (|amount| ≤ MIN_SIZE) has no mark; without a theo that is a
    PlanningError."""
    assert Decimal(amount).copy_abs() <= MIN_SIZE
    dust = position(amount=amount)
    assert reference_price(Quote(theo=Decimal(5)), dust, 0) == Decimal(5)
    with pytest.raises(PlanningError):
        reference_price(None, dust, 2_000)


def test_execution_prices_seed_is_120_60() -> None:
    """Seed: 120 + 50 bps = 120.60 (the seed would pay 150.75)."""
    prices, unpriced = execution_prices(
        portfolio(position()), {SYMBOL: SEED_QUOTE}, 50, SEED_CONFIG, NOW
    )
    assert dict(prices) == {SYMBOL: Decimal("120.60")}
    assert dict(unpriced) == {}


@pytest.mark.parametrize(("tick", "expected"), [("0.5", "121"), ("0.01", "120.6"), ("5", "125")])
def test_execution_prices_round_up_to_price_tick(tick: str, expected: str) -> None:
    """With an InstrumentSpec the price is rounded up to its tick."""
    config = attrs.evolve(
        SEED_CONFIG, instruments={"BTC": InstrumentSpec(price_tick=Decimal(tick))}
    )
    prices, _ = execution_prices(portfolio(position()), {SYMBOL: SEED_QUOTE}, 50, config, NOW)
    assert prices[SYMBOL] == Decimal(expected)


def test_execution_prices_round_up_to_min_size_without_spec() -> None:
    """Without a spec the price is rounded up to MIN_SIZE: 100.00000001 × 1.0001."""
    quote = Quote(theo=Decimal("100.00000001"))
    prices, _ = execution_prices(portfolio(position()), {SYMBOL: quote}, 1, SEED_CONFIG, NOW)
    # 100.00000001 × 1.0001 = 100.010000010001 → up to 8 places.
    assert prices[SYMBOL] == Decimal("100.01000002")


def test_execution_prices_only_live_shorts_and_names_unpriced() -> None:
    """Longs, perps, dust and expired options are skipped; an unpriceable short is named."""
    expired = "BTC-20240105-90000-P"
    unpriceable = "BTC-20261231-120000-C"
    book = portfolio(
        position(),
        position("BTC-20261231-90000-P", amount="2"),
        position("BTC-PERP", amount="-1"),
        position("BTC-20261231-95000-C", amount="-0.000000005"),
        position(expired),
        position(unpriceable, entry="1", pnl="8"),
    )
    now = OptionSymbol.parse(expired).expires_at
    prices, unpriced = execution_prices(book, {SYMBOL: SEED_QUOTE}, 50, SEED_CONFIG, now)
    assert list(prices) == [SYMBOL]
    assert list(unpriced) == [unpriceable]
    assert unpriceable in unpriced[unpriceable]


def test_execution_prices_priced_until_expiry_instant() -> None:
    """An option is priced up to the ms before its expiry."""
    expiry = OptionSymbol.parse(SYMBOL).expires_at
    prices, _ = execution_prices(portfolio(position()), {}, 0, SEED_CONFIG, expiry - 1)
    assert list(prices) == [SYMBOL]


def test_execution_prices_sorted_by_symbol() -> None:
    """Both mappings come in symbol order whatever the portfolio's order."""
    symbols = ["BTC-20261231-130000-C", "BTC-20261231-110000-C", "BTC-20261231-120000-P"]
    book = portfolio(*(position(s) for s in symbols))
    prices, _ = execution_prices(book, {}, 0, SEED_CONFIG, NOW)
    assert list(prices) == sorted(symbols)


@given(accounts(), bonuses, configs)
def test_plan_limit_prices_within_band_and_bonus(
    account: tuple[Portfolio, dict[str, Quote], MarginFacts], bonus: int, config: Config
) -> None:
    """No limit price exceeds fair × (1 + band) × (1 + bonus), rounded up to MIN_SIZE."""
    book, quotes, _ = account
    for order in plan_of(account, bonus, config).orders:
        quote = quotes.get(order.symbol)
        theo = quote.theo if quote is not None else None
        fair = theo if theo is not None and theo > 0 else book.positions[order.symbol].mark_price
        ceiling = fair * bps_fraction(config.reference_band_bps) * bps_fraction(bonus)
        assert order.limit_price <= quantize_up(ceiling, MIN_SIZE)


def test_execution_prices_an_unpriceable_symbol_does_not_stop_the_rest() -> None:
    """The symbols after an unpriceable one (in symbol order) are still priced."""
    unpriceable = "BTC-20261130-120000-C"
    book = portfolio(position(unpriceable, entry="1", pnl="8"), position())
    assert sorted(book.positions) == [unpriceable, SYMBOL]
    prices, unpriced = execution_prices(book, {SYMBOL: SEED_QUOTE}, 50, SEED_CONFIG, NOW)
    assert list(unpriced) == [unpriceable]
    assert list(prices) == [SYMBOL]
