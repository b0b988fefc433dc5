"""The simulated market: instruments, seeded price paths with a shock, Black–Scholes quotes.

Everything here is a pure function of the simulation parameters, the tick index and the
spot prices kept in the world, so a resumed simulation quotes exactly what the killed one
would have quoted. Randomness comes from :func:`rng`, a ``random.Random`` seeded from
the run's seed and a label (``"path|BTC|17"``): no generator state needs persisting, and
the draws of one instrument never depend on the order others were asked for.

Floats are used only inside the pricing formulas; every price that leaves this module is a
``Decimal`` quantized to its tick, so the world's state is exact and serializes exactly.
"""

from __future__ import annotations

import datetime
import math
import random
from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal

import attrs

from liqcore import OptionKind, OptionSymbol, Quote

__all__ = [
    "DAY_MS",
    "PRICE_TICK",
    "YEAR_MS",
    "Instrument",
    "UnderlyingSpec",
    "black_scholes",
    "instruments",
    "jump_factor",
    "next_spot",
    "quantize",
    "quote",
    "rng",
    "theo",
]

DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS
PRICE_TICK = Decimal("0.1")
RISK_FREE_RATE = 0.05


def rng(seed: int, label: str) -> random.Random:
    """A generator for one named draw of the run (``random.Random`` seeds strings by SHA-512)."""
    return random.Random(f"{seed}|{label}")


def quantize(value: float | Decimal, step: Decimal = PRICE_TICK) -> Decimal:
    """``value`` rounded half-even to a multiple of ``step`` (an exact, short Decimal)."""
    exact = value if isinstance(value, Decimal) else Decimal(value)
    units = (exact / step).to_integral_value(rounding=ROUND_HALF_EVEN)
    return (units * step).quantize(step)


@attrs.frozen(kw_only=True)
class UnderlyingSpec:
    """An underlying of the simulated exchange."""

    name: str
    spot: Decimal
    volatility: float
    shock_beta: float
    strike_step: Decimal


UNDERLYINGS: tuple[UnderlyingSpec, ...] = (
    UnderlyingSpec(
        name="BTC", spot=Decimal(60_000), volatility=0.6, shock_beta=1.0, strike_step=Decimal(1000)
    ),
    UnderlyingSpec(
        name="ETH", spot=Decimal(3_000), volatility=0.75, shock_beta=1.2, strike_step=Decimal(50)
    ),
)
"""The simulated underlyings: BTC and ETH (ETH moves 1.2 × the shock)."""

EXPIRY_DAYS = (7, 28, 91)
MONEYNESS = (Decimal("0.7"), Decimal("0.8"), Decimal("0.9"), Decimal(1), Decimal("1.1"),
             Decimal("1.2"), Decimal("1.3"))  # fmt: skip


@attrs.frozen(kw_only=True)
class Instrument:
    """A listed option or perpetual; ``half_spread`` is a fraction of the theo price."""

    symbol: str
    underlying: str
    volatility: float
    half_spread: float
    depth: Decimal
    """Size offered at the ask per tick (liquidity for closing orders)."""
    option: OptionSymbol | None = None

    @property
    def is_perp(self) -> bool:
        """A perpetual (no expiry, priced at spot)."""
        return self.option is None


def instruments(seed: int, start_ms: int) -> Mapping[str, Instrument]:
    """Every listed instrument, by symbol (sorted): strikes around the initial spot, three
    expiries after ``start_ms``, calls and puts, and one perpetual per underlying."""
    listed: dict[str, Instrument] = {}
    start_day = datetime.datetime.fromtimestamp(start_ms / 1000, tz=datetime.UTC).date()
    for spec in UNDERLYINGS:
        unit = Decimal(1) if spec.name == "BTC" else Decimal(10)
        perp = f"{spec.name}-PERP"
        listed[perp] = Instrument(
            symbol=perp,
            underlying=spec.name,
            volatility=spec.volatility,
            half_spread=0.0002,
            depth=unit * 50,
        )
        for days in EXPIRY_DAYS:
            expiry = start_day + datetime.timedelta(days=days)
            for moneyness in MONEYNESS:
                strike = quantize(spec.spot * moneyness, spec.strike_step)
                for kind in OptionKind:
                    option = OptionSymbol(
                        underlying=spec.name, expiry=expiry, strike=strike, kind=kind
                    )
                    symbol = option.format()
                    draw = rng(seed, f"instrument|{symbol}")
                    listed[symbol] = Instrument(
                        symbol=symbol,
                        underlying=spec.name,
                        volatility=spec.volatility * draw.uniform(0.95, 1.15),
                        half_spread=draw.uniform(0.01, 0.04),
                        depth=quantize(Decimal(draw.uniform(1.0, 4.0)) * unit, Decimal("0.1")),
                        option=option,
                    )
    return dict(sorted(listed.items()))


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def black_scholes(
    *, spot: float, strike: float, years: float, volatility: float, is_call: bool
) -> float:
    """The Black–Scholes price (risk-free rate 5 %); intrinsic value at or after expiry."""
    if years <= 0 or volatility <= 0:
        return max(0.0, spot - strike) if is_call else max(0.0, strike - spot)
    root = volatility * math.sqrt(years)
    d1 = (math.log(spot / strike) + (RISK_FREE_RATE + volatility * volatility / 2) * years) / root
    d2 = d1 - root
    discount = strike * math.exp(-RISK_FREE_RATE * years)
    if is_call:
        return spot * _norm_cdf(d1) - discount * _norm_cdf(d2)
    return discount * _norm_cdf(-d2) - spot * _norm_cdf(-d1)


def theo(instrument: Instrument, spot: Decimal, now: int) -> Decimal:
    """Fair value: Black–Scholes for an option (at least one tick), the spot for a perp."""
    option = instrument.option
    if option is None:
        return quantize(spot)
    value = black_scholes(
        spot=float(spot),
        strike=float(option.strike),
        years=(option.expires_at - now) / YEAR_MS,
        volatility=instrument.volatility,
        is_call=option.is_call,
    )
    return max(PRICE_TICK, quantize(value))


def quote(instrument: Instrument, spot: Decimal, now: int, *, seed: int, tick: int) -> Quote:
    """Bid/ask around theo: each side's distance is the instrument's half spread scaled by
    a fresh draw in [0.3, 1.7] every tick — so a resting bid is sometimes reached."""
    fair = theo(instrument, spot, now)
    draw = rng(seed, f"quote|{instrument.symbol}|{tick}")
    ask_gap = max(
        PRICE_TICK, quantize(float(fair) * instrument.half_spread * draw.uniform(0.3, 1.7))
    )
    bid_gap = max(
        PRICE_TICK, quantize(float(fair) * instrument.half_spread * draw.uniform(0.3, 1.7))
    )
    ask = fair + ask_gap
    bid = fair - bid_gap
    if bid <= 0:
        bid = Decimal(0)
    mid = quantize((ask + bid) / 2) if bid > 0 else ask
    return Quote(best_bid=bid, best_ask=ask, mid=mid, theo=fair)


def jump_factor(now: int, *, shock_at: int, shock: float, rebound: float, rebound_ms: int) -> float:
    """The shock's multiplicative effect on spot at ``now``: 1 before ``shock_at``, then
    ``1 + shock`` recovering a ``rebound`` fraction of the move with time constant
    ``rebound_ms``."""
    if now < shock_at:
        return 1.0
    recovered = rebound * (1.0 - math.exp(-(now - shock_at) / max(1, rebound_ms)))
    return 1.0 + shock * (1.0 - recovered)


def next_spot(
    base: Decimal, *, volatility: float, dt_ms: int, seed: int, underlying: str, tick: int
) -> Decimal:
    """One step of the geometric Brownian motion (no drift) of ``base`` over ``dt_ms``."""
    draw = rng(seed, f"path|{underlying}|{tick}").gauss(0.0, 1.0)
    dt = dt_ms / YEAR_MS
    growth = math.exp(volatility * math.sqrt(dt) * draw - volatility * volatility * dt / 2)
    return quantize(float(base) * growth, Decimal("0.01"))
