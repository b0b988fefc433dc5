"""liqshell.sim.market: seeded, exact prices — BS theo, quotes around it, the shock path."""

from __future__ import annotations

import itertools
import math
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from liqcore import OptionSymbol
from liqshell.sim.market import (
    DAY_MS,
    PRICE_TICK,
    black_scholes,
    instruments,
    jump_factor,
    next_spot,
    quantize,
    quote,
    rng,
    theo,
)
from liqshell.sim.world import DEFAULT_START_MS

INSTRUMENTS = instruments(1, DEFAULT_START_MS)
OPTIONS = sorted(s for s, i in INSTRUMENTS.items() if i.option is not None)


@given(
    spot=st.floats(100, 200_000),
    strike_ratio=st.floats(0.5, 1.5),
    days=st.integers(1, 400),
    vol=st.floats(0.1, 2.0),
)
def test_black_scholes_any_inputs_satisfies_put_call_parity(
    spot: float, strike_ratio: float, days: int, vol: float
) -> None:
    """call − put = S − K·e^(−rT) for any spot, strike, expiry and volatility."""
    strike = spot * strike_ratio
    years = days / 365
    call = black_scholes(spot=spot, strike=strike, years=years, volatility=vol, is_call=True)
    put = black_scholes(spot=spot, strike=strike, years=years, volatility=vol, is_call=False)
    assert math.isclose(
        call - put, spot - strike * math.exp(-0.05 * years), rel_tol=1e-9, abs_tol=1e-6
    )
    assert call >= max(0.0, spot - strike * math.exp(-0.05 * years)) - 1e-6


def test_black_scholes_expired_gives_intrinsic_value() -> None:
    """At or after expiry an option is worth its intrinsic value."""
    assert black_scholes(spot=110, strike=100, years=0, volatility=0.8, is_call=True) == 10
    assert black_scholes(spot=110, strike=100, years=-1, volatility=0.8, is_call=False) == 0


@given(symbol=st.sampled_from(OPTIONS), spot=st.integers(20, 200_000), tick=st.integers(0, 500))
def test_quote_any_option_brackets_theo_with_positive_ask(
    symbol: str, spot: int, tick: int
) -> None:
    """bid < theo < ask, ask > 0, every price a multiple of the tick."""
    instrument = INSTRUMENTS[symbol]
    book = quote(instrument, Decimal(spot), DEFAULT_START_MS, seed=1, tick=tick)
    assert book.theo is not None
    assert book.best_ask is not None
    assert book.best_bid is not None
    assert book.best_bid < book.theo < book.best_ask
    assert book.best_ask > 0
    for price in (book.best_bid, book.best_ask, book.theo):
        assert price % PRICE_TICK == 0


def test_quote_same_seed_and_tick_is_identical() -> None:
    """Quotes are a pure function of (seed, tick, spot, time)."""
    instrument = INSTRUMENTS[OPTIONS[0]]
    first = quote(instrument, Decimal(60_000), DEFAULT_START_MS, seed=5, tick=3)
    again = quote(instrument, Decimal(60_000), DEFAULT_START_MS, seed=5, tick=3)
    other = [quote(instrument, Decimal(60_000), DEFAULT_START_MS, seed=5, tick=t) for t in range(9)]
    assert first == again
    assert len({q.best_ask for q in other}) > 1


def test_theo_perp_is_spot_and_option_at_least_one_tick() -> None:
    """A perp's fair value is the spot; a far-OTM option is never priced below one tick."""
    assert theo(INSTRUMENTS["BTC-PERP"], Decimal("60000.04"), DEFAULT_START_MS) == Decimal(
        "60000.0"
    )
    far = next(s for s in OPTIONS if s.startswith("BTC") and s.endswith("-P"))
    assert theo(INSTRUMENTS[far], Decimal(10**7), DEFAULT_START_MS) == PRICE_TICK


def test_instruments_options_round_trip_and_expire_after_start() -> None:
    """Every listed option symbol parses back to itself and expires after the start."""
    assert sorted(OPTIONS) == OPTIONS
    for symbol in OPTIONS:
        parsed = OptionSymbol.parse(symbol)
        assert parsed.format() == symbol
        assert parsed.expires_at > DEFAULT_START_MS + DAY_MS
    assert {"BTC-PERP", "ETH-PERP"} <= set(INSTRUMENTS)


@given(
    shock=st.floats(-0.5, 0.5),
    rebound=st.floats(0, 1),
    offsets=st.lists(st.integers(0, 3_600_000), min_size=2, max_size=5),
)
def test_jump_factor_after_shock_moves_monotonically_back(
    shock: float, rebound: float, offsets: list[int]
) -> None:
    """1 before the shock, 1 + shock at it, then monotonically toward 1 + shock·(1 − rebound)."""
    at = 1_000_000
    assert jump_factor(at - 1, shock_at=at, shock=shock, rebound=rebound, rebound_ms=60_000) == 1
    assert math.isclose(
        jump_factor(at, shock_at=at, shock=shock, rebound=rebound, rebound_ms=60_000), 1 + shock
    )
    values = [
        jump_factor(at + o, shock_at=at, shock=shock, rebound=rebound, rebound_ms=60_000)
        for o in sorted(offsets)
    ]
    floor = 1 + shock * (1 - rebound)
    for a, b in itertools.pairwise(values):
        assert abs(b - floor) <= abs(a - floor) + 1e-12


def test_next_spot_same_label_is_deterministic_and_exact() -> None:
    """The price path is a function of (seed, underlying, tick) and quantized to cents."""
    one = next_spot(Decimal(60_000), volatility=0.6, dt_ms=5_000, seed=9, underlying="BTC", tick=4)
    two = next_spot(Decimal(60_000), volatility=0.6, dt_ms=5_000, seed=9, underlying="BTC", tick=4)
    other = next_spot(
        Decimal(60_000), volatility=0.6, dt_ms=5_000, seed=9, underlying="BTC", tick=5
    )
    assert one == two != other
    assert one == one.quantize(Decimal("0.01"))


def test_rng_same_label_same_draws() -> None:
    """Named generators repeat; different labels differ."""
    assert rng(3, "x").random() == rng(3, "x").random() != rng(3, "y").random()


@given(value=st.decimals(-(10**6), 10**6, allow_nan=False, allow_infinity=False, places=6))
def test_quantize_any_value_is_nearest_tick_multiple(value: Decimal) -> None:
    """quantize gives the nearest multiple of the step (within half a step)."""
    result = quantize(value)
    assert result % PRICE_TICK == 0
    assert abs(result - value) <= PRICE_TICK / 2
