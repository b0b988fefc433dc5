"""Hypothesis strategies for liqcore's data (needs the ``testing`` extra).

Plural names and keyword-only arguments, as Hypothesis' own strategies. Every strategy is
built from small parts (integers scaled to Decimals, sampled symbols, …) so failing examples
shrink to short, readable values; none ever generates NaN or an infinity. Values are
realistic: spot and strikes between 1e3 and 1e5, sizes up to 100 with 8 decimal places,
prices with at most 8 decimal places, times in ms between 2020 and 2035. Mappings are
built in sorted key order, so an example prints and iterates deterministically.

Importing this module registers nothing globally. :func:`register_type_strategies` registers
a strategy for each of liqcore's data types with ``st.register_type_strategy`` (Hypothesis
calls it through liqcore's ``hypothesis`` entry point when liqcore is installed), so
``st.from_type(Portfolio)`` and ``st.builds`` over annotated arguments draw valid values.
``Decimal`` is not registered: tests register :func:`decimals` for it in their own
``conftest.py`` if they want ``st.from_type(Decimal)`` to avoid NaN.
"""

from __future__ import annotations

import datetime
import fractions
import functools
import math
from collections.abc import Sequence
from decimal import Decimal
from typing import TypeAlias, assert_never

from hypothesis import strategies as st

from liqcore.commands import (
    Alert,
    AlertCode,
    CancelOrder,
    Command,
    PublishStateChange,
    StartAuction,
    StateChange,
    StopAuction,
    SubmitOrder,
)
from liqcore.config import Config
from liqcore.events import (
    AccountReset,
    AuctionRequested,
    AuctionRequestFailed,
    AuctionSettled,
    AuctionStarted,
    AuctionStopped,
    Event,
    OrderFailed,
    OrderRejected,
    StopRequestFailed,
)
from liqcore.inputs import Health, MarginMode, OpenOrder, Portfolio, Position, Quote, Side
from liqcore.instruments import InstrumentSpec, OptionKind, OptionSymbol, is_perp_symbol
from liqcore.margin.base import MarginFacts
from liqcore.margin.portfolio import PortfolioMargin
from liqcore.margin.standard import StandardMargin
from liqcore.numbers import CONTEXT, MIN_SIZE, ZERO
from liqcore.state import (
    AccountState,
    Healthy,
    InLiquidation,
    Liquidated,
    Phase,
    PhaseTag,
    PreLiquidation,
    liquidation_mode,
    phase_tag,
)

__all__ = [
    "account_states",
    "commands",
    "configs",
    "decimals",
    "events",
    "healths",
    "instrument_specs",
    "margin_facts",
    "money",
    "open_orders",
    "option_symbols",
    "perp_symbols",
    "phases",
    "portfolio_margins",
    "portfolios",
    "positions",
    "prices",
    "quotes",
    "register_type_strategies",
    "sizes",
    "standard_margins",
    "state_changes",
    "type_strategies",
    "wallets",
]

Number: TypeAlias = Decimal | int | str
"""A bound given to a strategy: a Decimal, an int or decimal text."""

DEFAULT_UNDERLYINGS: tuple[str, ...] = ("BTC", "ETH")
_MIN_EXPIRY = datetime.date(2024, 1, 1)
_MAX_EXPIRY = datetime.date(2030, 12, 31)
_MIN_TIME = 1_577_836_800_000  # 2020-01-01T00:00:00Z
_MAX_TIME = 2_051_222_400_000  # 2035-01-01T00:00:00Z
_PHASE_TAG_ORDER: tuple[PhaseTag, ...] = (
    "healthy",
    "pre_liquidation",
    "in_liquidation",
    "liquidated",
)


def _bound(value: Number, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise TypeError(f"{name} must be a Decimal, an int or decimal text, was {value!r}")
    result = value if isinstance(value, Decimal) else Decimal(value)
    if not result.is_finite():
        raise ValueError(f"{name} must be finite, was {value!r}")
    return result


def _units_to_decimal(units: int, places: int) -> Decimal:
    """``units × 10**-places`` exactly, without trailing zeros."""
    while places > 0 and units % 10 == 0:
        units //= 10
        places -= 1
    return Decimal(f"{units}E-{places}") if places else Decimal(units)


# --- numbers -------------------------------------------------------------------------------


def decimals(
    *, min_value: Number = -1_000_000, max_value: Number = 1_000_000, places: int = 8
) -> st.SearchStrategy[Decimal]:
    """Finite Decimals in ``[min_value, max_value]`` with at most ``places`` decimal places.

    Drawn as an integer number of ``10**-places`` units, so they shrink towards zero (or the
    bound nearest to it) and never are NaN or infinite.
    """
    if type(places) is not int or places < 0:
        raise ValueError(f"places must be an int ≥ 0, was {places!r}")
    low, high = _bound(min_value, "min_value"), _bound(max_value, "max_value")
    scale = 10**places  # exact rational arithmetic: no decimal context involved
    low_units = math.ceil(fractions.Fraction(low) * scale)
    high_units = math.floor(fractions.Fraction(high) * scale)
    if low_units > high_units:
        raise ValueError(f"no Decimal with {places} places lies in [{min_value}, {max_value}]")
    return _scaled_integers(low_units, high_units, places)


@functools.lru_cache(maxsize=256)
def _scaled_integers(low_units: int, high_units: int, places: int) -> st.SearchStrategy[Decimal]:
    # Cached: Hypothesis validates each new strategy object, which dominates generation time
    # when composites ask for the same number strategies on every draw.
    return st.integers(min_value=low_units, max_value=high_units).map(
        functools.partial(_units_to_decimal, places=places)
    )


def money(
    *, min_value: Number = -1_000_000, max_value: Number = 1_000_000, places: int = 8
) -> st.SearchStrategy[Decimal]:
    """Amounts of money (cash, equity, PnL, margin), negative allowed by default."""
    return decimals(min_value=min_value, max_value=max_value, places=places)


def sizes(
    *, min_value: Number = MIN_SIZE * 2, max_value: Number = 100, places: int = 8
) -> st.SearchStrategy[Decimal]:
    """Positive sizes strictly above ``MIN_SIZE`` (which counts as zero), up to 100."""
    return decimals(min_value=min_value, max_value=max_value, places=places)


def prices(
    *, min_value: Number = "0.01", max_value: Number = 100_000, places: int = 8
) -> st.SearchStrategy[Decimal]:
    """Positive prices (option premiums, limit prices, marks)."""
    return decimals(min_value=min_value, max_value=max_value, places=places)


@functools.cache
def _spot_prices() -> st.SearchStrategy[Decimal]:
    return decimals(min_value=1_000, max_value=100_000, places=2)


@functools.cache
def _strikes() -> st.SearchStrategy[Decimal]:
    return decimals(min_value=1_000, max_value=100_000, places=2)


@functools.cache
def _instants() -> st.SearchStrategy[int]:
    return st.integers(min_value=_MIN_TIME, max_value=_MAX_TIME)


def _durations(max_value: int = 600_000) -> st.SearchStrategy[int]:
    return st.integers(min_value=0, max_value=max_value)


# --- identifiers and symbols ---------------------------------------------------------------


def wallets() -> st.SearchStrategy[str]:
    """Wallet addresses such as ``0x3f9a``."""
    return st.text(alphabet="0123456789abcdef", min_size=1, max_size=12).map(
        lambda digits: f"0x{digits}"
    )


def _wallet(wallet: str | None) -> st.SearchStrategy[str]:
    return wallets() if wallet is None else st.just(wallet)


@functools.cache
def _request_ids() -> st.SearchStrategy[str]:
    return st.uuids().map(str)


@functools.cache
def _auction_ids() -> st.SearchStrategy[str]:
    return st.integers(min_value=0, max_value=10**9).map(lambda n: f"auction-{n}")


@functools.cache
def _tx_hashes() -> st.SearchStrategy[str]:
    return st.binary(min_size=32, max_size=32).map(lambda raw: f"0x{raw.hex()}")


@functools.cache
def _reasons() -> st.SearchStrategy[str]:
    return st.text(max_size=40)


def _option_symbol_values(
    *,
    underlyings: Sequence[str] = DEFAULT_UNDERLYINGS,
    min_expiry: datetime.date = _MIN_EXPIRY,
    max_expiry: datetime.date = _MAX_EXPIRY,
    strikes: st.SearchStrategy[Decimal] | None = None,
    kinds: Sequence[OptionKind] = (OptionKind.CALL, OptionKind.PUT),
) -> st.SearchStrategy[OptionSymbol]:
    return st.builds(
        OptionSymbol,
        underlying=st.sampled_from(tuple(underlyings)),
        expiry=st.dates(min_value=min_expiry, max_value=max_expiry),
        strike=_strikes() if strikes is None else strikes,
        kind=st.sampled_from(tuple(kinds)),
    )


def option_symbols(
    *,
    underlyings: Sequence[str] = DEFAULT_UNDERLYINGS,
    min_expiry: datetime.date = _MIN_EXPIRY,
    max_expiry: datetime.date = _MAX_EXPIRY,
    strikes: st.SearchStrategy[Decimal] | None = None,
    kinds: Sequence[OptionKind] = (OptionKind.CALL, OptionKind.PUT),
) -> st.SearchStrategy[str]:
    """Canonical option symbols ``UNDERLYING-YYYYMMDD-STRIKE-C|P`` (text)."""
    return _option_symbol_values(
        underlyings=underlyings,
        min_expiry=min_expiry,
        max_expiry=max_expiry,
        strikes=strikes,
        kinds=kinds,
    ).map(OptionSymbol.format)


def perp_symbols(*, underlyings: Sequence[str] = DEFAULT_UNDERLYINGS) -> st.SearchStrategy[str]:
    """Perpetual symbols ``UNDERLYING-PERP``."""
    return st.sampled_from(tuple(underlyings)).map(lambda underlying: f"{underlying}-PERP")


# --- inputs --------------------------------------------------------------------------------


@st.composite
def _positions(
    draw: st.DrawFn,
    symbols: st.SearchStrategy[str],
    short: bool | None,
    max_size: Number,
) -> Position:
    symbol = draw(symbols)
    size = draw(sizes(max_value=max_size))
    is_short = draw(st.booleans()) if short is None else short
    amount = -size if is_short else size
    entry = draw(prices())
    mark = draw(prices())
    # The mark is drawn, the PnL derived: mark_price = entry + pnl / amount comes out exact.
    unrealized = CONTEXT.multiply(CONTEXT.subtract(mark, entry), amount) if mark != entry else ZERO
    return Position(
        symbol=symbol,
        amount=amount,
        entry_price=entry,
        unrealized_pnl=unrealized,
        realized_pnl=draw(money(min_value=-100_000, max_value=100_000)),
        margin_posted=draw(money(min_value=0, max_value=1_000_000)),
    )


def positions(
    *,
    symbols: st.SearchStrategy[str] | None = None,
    short: bool | None = None,
    max_size: Number = 100,
) -> st.SearchStrategy[Position]:
    """Positions of ``|amount|`` in ``(MIN_SIZE, max_size]``; ``short`` fixes the sign.

    The unrealized PnL is derived from a drawn positive mark, so ``mark_price`` is positive
    and exact. Symbols default to options and perps of the default underlyings.
    """
    if symbols is None:
        symbols = st.one_of(option_symbols(), perp_symbols())
    return _positions(symbols, short, max_size)


@st.composite
def _portfolios(
    draw: st.DrawFn,
    *,
    underlyings: tuple[str, ...],
    min_shorts: int,
    max_shorts: int,
    max_longs: int,
    max_perps: int,
    min_expiry: datetime.date,
    max_expiry: datetime.date,
) -> Portfolio:
    options = option_symbols(underlyings=underlyings, min_expiry=min_expiry, max_expiry=max_expiry)
    shorts = draw(
        st.lists(
            positions(symbols=options, short=True),
            min_size=min_shorts,
            max_size=max_shorts,
            unique_by=lambda p: p.symbol,
        )
    )
    longs = draw(
        st.lists(
            positions(symbols=options, short=False),
            max_size=max_longs,
            unique_by=lambda p: p.symbol,
        )
    )
    perps = draw(
        st.lists(
            positions(symbols=perp_symbols(underlyings=underlyings)),
            max_size=max_perps,
            unique_by=lambda p: p.symbol,
        )
    )
    by_symbol: dict[str, Position] = {}
    for position in (*perps, *longs, *shorts):  # shorts win a symbol clash
        by_symbol[position.symbol] = position
    spot = {underlying: draw(_spot_prices()) for underlying in sorted(underlyings)}
    return Portfolio(
        cash=draw(money(min_value=-100_000, max_value=1_000_000)),
        positions=dict(sorted(by_symbol.items())),
        spot=spot,
    )


def portfolios(
    *,
    underlyings: Sequence[str] = DEFAULT_UNDERLYINGS,
    min_shorts: int = 0,
    max_shorts: int = 4,
    max_longs: int = 2,
    max_perps: int = 2,
    min_expiry: datetime.date = _MIN_EXPIRY,
    max_expiry: datetime.date = _MAX_EXPIRY,
) -> st.SearchStrategy[Portfolio]:
    """Portfolios with a spot for every underlying, short and long options and perps.

    At least ``min_shorts`` short option positions (distinct symbols); positions keyed by
    symbol in sorted order.
    """
    if not 0 <= min_shorts <= max_shorts:
        raise ValueError(f"need 0 ≤ min_shorts ≤ max_shorts, were {min_shorts}, {max_shorts}")
    return _portfolios(
        underlyings=tuple(underlyings),
        min_shorts=min_shorts,
        max_shorts=max_shorts,
        max_longs=max_longs,
        max_perps=max_perps,
        min_expiry=min_expiry,
        max_expiry=max_expiry,
    )


@functools.cache
def _odd_prices() -> st.SearchStrategy[Decimal | None]:
    return st.one_of(
        st.none(),
        st.just(ZERO),
        decimals(min_value=-1_000, max_value=-MIN_SIZE),
        prices(),
    )


@st.composite
def _book_quotes(draw: st.DrawFn) -> Quote:
    bid = draw(prices(max_value=50_000, places=2))
    ask = CONTEXT.add(bid, draw(decimals(min_value=0, max_value=100, places=2)))
    mid = CONTEXT.divide(CONTEXT.add(bid, ask), Decimal(2))
    return Quote(best_bid=bid, best_ask=ask, mid=mid, theo=draw(prices(max_value=50_000)))


def quotes(*, odd: bool = False) -> st.SearchStrategy[Quote]:
    """Quotes of a sane book (0 < bid ≤ mid ≤ ask, positive theo).

    With ``odd=True`` each side may also be missing, zero, negative or crossed — market data
    the core must accept and treat as "no price".
    """
    if odd:
        return st.builds(
            Quote,
            best_bid=_odd_prices(),
            best_ask=_odd_prices(),
            mid=_odd_prices(),
            theo=_odd_prices(),
        )
    return _book_quotes()


@st.composite
def _open_orders(draw: st.DrawFn, wallet: str | None, symbols: st.SearchStrategy[str]) -> OpenOrder:
    symbol = draw(symbols)
    original = draw(sizes())
    remaining = draw(st.one_of(st.just(original), sizes(max_value=original), st.just(ZERO)))
    created_at = draw(_instants())
    user_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
    client_ids: st.SearchStrategy[str | None] = st.one_of(st.none(), user_ids)
    if wallet is not None:
        liquidation_ids = st.integers(min_value=0, max_value=9).map(
            lambda index: f"liq-{wallet}-{created_at}-{index}"
        )
        client_ids = st.one_of(client_ids, liquidation_ids)
    return OpenOrder(
        order_id=draw(st.integers(min_value=0, max_value=10**9)),
        symbol=symbol,
        side=draw(st.sampled_from(Side)),
        price=draw(prices()),
        original_size=original,
        remaining_size=remaining,
        client_id=draw(client_ids),
        created_at=created_at,
        is_perp=is_perp_symbol(symbol),
    )


def open_orders(
    *,
    wallet: str | None = None,
    symbols: st.SearchStrategy[str] | Sequence[str] | None = None,
) -> st.SearchStrategy[OpenOrder]:
    """Resting orders; with ``wallet`` some carry that wallet's liquidation client ids
    (``liq-{wallet}-{created_at}-{i}``). ``symbols`` is a strategy or a list to pick from."""
    if symbols is None:
        symbol_strategy: st.SearchStrategy[str] = st.one_of(option_symbols(), perp_symbols())
    elif isinstance(symbols, st.SearchStrategy):
        symbol_strategy = symbols
    else:
        symbol_strategy = st.sampled_from(tuple(symbols))
    return _open_orders(wallet, symbol_strategy)


@st.composite
def _healths(
    draw: st.DrawFn,
    *,
    wallet: st.SearchStrategy[str],
    liquidatable: bool | None,
    margin_mode: MarginMode | None,
    portfolio: st.SearchStrategy[Portfolio | None],
    odd_quotes: bool,
) -> Health:
    snapshot = draw(portfolio)
    quote_map: dict[str, Quote] = {}
    if snapshot is not None:
        for symbol in sorted(snapshot.positions):
            if not is_perp_symbol(symbol) and draw(st.booleans()):
                quote_map[symbol] = draw(quotes(odd=odd_quotes))
    mm_required = draw(money(min_value=0, max_value=1_000_000))
    is_liquidatable = draw(st.booleans()) if liquidatable is None else liquidatable
    gap = draw(money(min_value=0, max_value=1_000_000))
    if is_liquidatable:
        gap = max(gap, MIN_SIZE)
        equity = CONTEXT.subtract(mm_required, gap)
    else:
        equity = CONTEXT.add(mm_required, gap)
    return Health(
        wallet=draw(wallet),
        margin_mode=draw(st.sampled_from(MarginMode)) if margin_mode is None else margin_mode,
        equity=equity,
        mm_required=mm_required,
        is_liquidatable=is_liquidatable,
        portfolio=snapshot,
        quotes=quote_map,
    )


def healths(
    *,
    wallet: str | None = None,
    liquidatable: bool | None = None,
    margin_mode: MarginMode | None = None,
    portfolio: st.SearchStrategy[Portfolio | None] | None = None,
    odd_quotes: bool = False,
) -> st.SearchStrategy[Health]:
    """Margin-engine verdicts: ``is_liquidatable`` iff equity < mm_required.

    ``liquidatable`` fixes the verdict; ``portfolio`` defaults to a portfolio or ``None``
    (snapshot unavailable); quotes cover some of the portfolio's options.
    """
    snapshots: st.SearchStrategy[Portfolio | None] = (
        st.one_of(st.none(), portfolios()) if portfolio is None else portfolio
    )
    return _healths(
        wallet=_wallet(wallet),
        liquidatable=liquidatable,
        margin_mode=margin_mode,
        portfolio=snapshots,
        odd_quotes=odd_quotes,
    )


# --- configuration -------------------------------------------------------------------------


def instrument_specs() -> st.SearchStrategy[InstrumentSpec]:
    """Per-underlying trading steps (size step, price tick, minimum order size)."""
    steps = st.sampled_from(
        tuple(Decimal(text) for text in ("0.00000001", "0.0001", "0.001", "0.01", "0.1", "1"))
    )
    return st.builds(
        InstrumentSpec,
        size_step=steps,
        price_tick=steps,
        min_size=st.one_of(st.just(ZERO), steps),
    )


def standard_margins() -> st.SearchStrategy[StandardMargin]:
    """Standard-margin parameters (rates between 0 and 0.5)."""
    rates = decimals(min_value=0, max_value="0.5", places=4)
    return st.builds(StandardMargin, rate=rates, floor_rate=rates, perp_rate=rates)


def portfolio_margins() -> st.SearchStrategy[PortfolioMargin]:
    """Portfolio-margin scenario grids (shocks in (-1, 1)) and model parameters."""
    shocks = st.lists(
        decimals(min_value="-0.9", max_value="0.9", places=2), min_size=1, max_size=5
    ).map(lambda values: tuple(sorted(set(values))))
    return st.builds(
        PortfolioMargin,
        spot_shocks=shocks,
        vol_shocks=shocks,
        base_volatility=decimals(min_value="0.05", max_value=3, places=2),
        risk_free_rate=decimals(min_value="-0.05", max_value="0.2", places=3),
        short_option_contingency=decimals(min_value=0, max_value="0.1", places=3),
    )


def margin_facts() -> st.SearchStrategy[MarginFacts]:
    """A model's (or the exchange's) equity and mm_required."""
    return st.builds(
        MarginFacts, equity=money(), mm_required=money(min_value=0, max_value=1_000_000)
    )


@st.composite
def _configs(draw: st.DrawFn, underlyings: tuple[str, ...]) -> Config:
    bonus_start = draw(st.integers(min_value=0, max_value=1_000))
    chosen = draw(st.lists(st.sampled_from(underlyings), unique=True)) if underlyings else []
    return Config(
        poll_interval_ms=draw(st.integers(min_value=1, max_value=60_000)),
        full_escalation_timeout_ms=draw(_durations()),
        min_shortfall_threshold=draw(money(min_value=0, max_value=10_000)),
        partial_target_buffer_bps=draw(st.integers(min_value=0, max_value=5_000)),
        partial_reprice_interval_ms=draw(st.integers(min_value=1, max_value=60_000)),
        partial_bonus_start_bps=bonus_start,
        partial_bonus_max_bps=draw(st.integers(min_value=bonus_start, max_value=5_000)),
        partial_bonus_ramp_ms=draw(_durations()),
        engine_response_timeout_ms=draw(st.integers(min_value=1, max_value=60_000)),
        reference_band_bps=draw(st.integers(min_value=0, max_value=10_000)),
        chain_start_timeout_ms=draw(st.integers(min_value=1, max_value=600_000)),
        enabled=draw(st.booleans()),
        standard_margin=draw(standard_margins()),
        portfolio_margin=draw(portfolio_margins()),
        instruments={underlying: draw(instrument_specs()) for underlying in sorted(chosen)},
    )


def configs(*, underlyings: Sequence[str] = DEFAULT_UNDERLYINGS) -> st.SearchStrategy[Config]:
    """Valid configurations (bonus max ≥ start, positive poll/reprice/engine intervals),
    with instrument specs for some of ``underlyings``."""
    return _configs(tuple(underlyings))


# --- state ---------------------------------------------------------------------------------


@st.composite
def _pre_liquidations(draw: st.DrawFn, wallet: st.SearchStrategy[str]) -> PreLiquidation:
    entered_at = draw(_instants())
    owner = draw(wallet)
    indices = draw(st.lists(st.integers(min_value=0, max_value=20), unique=True, max_size=4))
    reprice_at = draw(st.one_of(st.none(), st.integers(entered_at, entered_at + 600_000)))
    request_ids = tuple(draw(_request_ids()) for _ in indices)
    placed_at = entered_at if reprice_at is None else reprice_at
    client_ids = tuple(f"liq-{owner}-{placed_at}-{i}" for i in indices)
    pending = draw(st.booleans())
    receipt = pending and draw(st.booleans())
    return PreLiquidation(
        entered_at=entered_at,
        mm_shortfall=draw(money(min_value=0, max_value=1_000_000)),
        target_equity=draw(money(min_value=0, max_value=1_000_000)),
        escalation_deadline=entered_at + draw(_durations()),
        last_reprice_at=reprice_at,
        active_order_request_ids=request_ids,
        active_order_client_ids=client_ids,
        bonus_bps=draw(st.integers(min_value=0, max_value=5_000)),
        pending_full_auction_id=draw(_auction_ids()) if receipt else None,
        pending_full_request_id=draw(_request_ids()) if pending else None,
        pending_full_requested_at=entered_at + draw(_durations()) if pending else None,
        pending_full_tx_hash=draw(st.one_of(st.none(), _tx_hashes())) if receipt else None,
        pending_full_margin_needed=(
            draw(st.one_of(st.none(), money(min_value=0))) if receipt else None
        ),
    )


@st.composite
def _in_liquidations(draw: st.DrawFn) -> InLiquidation:
    entered_at = draw(_instants())
    chain_start = draw(st.one_of(st.none(), st.integers(entered_at, entered_at + 600_000)))
    stopping = chain_start is not None and draw(st.booleans())
    return InLiquidation(
        auction_id=draw(_auction_ids()),
        entered_at=entered_at,
        chain_start_time=chain_start,
        stop_request_id=draw(_request_ids()) if stopping else None,
        stop_requested_at=entered_at + draw(_durations()) if stopping else None,
    )


_PHASE_TYPES: dict[PhaseTag, type[Phase]] = {
    "healthy": Healthy,
    "pre_liquidation": PreLiquidation,
    "in_liquidation": InLiquidation,
    "liquidated": Liquidated,
}


def _phase_strategy(tag: PhaseTag, wallet: st.SearchStrategy[str]) -> st.SearchStrategy[Phase]:
    if tag == "healthy":
        return st.just(Healthy())
    if tag == "pre_liquidation":
        return _pre_liquidations(wallet)
    if tag == "in_liquidation":
        return _in_liquidations()
    return st.builds(Liquidated, auction_id=_auction_ids(), liquidated_at=_instants())


def phases(
    *, kinds: Sequence[PhaseTag] = _PHASE_TAG_ORDER, wallet: str | None = None
) -> st.SearchStrategy[Phase]:
    """Phases of the given kinds (phase tags), internally consistent: parallel id tuples,
    a pending full request with its timestamp, a stop only after the chain started."""
    owner = _wallet(wallet)
    return st.one_of(*(_phase_strategy(tag, owner) for tag in kinds))


@st.composite
def _account_states(
    draw: st.DrawFn,
    wallet: st.SearchStrategy[str],
    phase: st.SearchStrategy[Phase] | None,
) -> AccountState:
    owner = draw(wallet)
    current = draw(phases(wallet=owner) if phase is None else phase)
    return AccountState(
        wallet=owner,
        margin_mode=draw(st.sampled_from(MarginMode)),
        phase=current,
        equity=draw(money()),
        mm_required=draw(money(min_value=0, max_value=1_000_000)),
        updated_at=draw(_instants()),
        last_closed_auction_id=draw(st.one_of(st.none(), _auction_ids())),
    )


def account_states(
    *, wallet: str | None = None, phases: st.SearchStrategy[Phase] | None = None
) -> st.SearchStrategy[AccountState]:
    """Account states of ``wallet`` (drawn when ``None``) in any (or the given) phase."""
    return _account_states(_wallet(wallet), phases)


# --- events and commands -------------------------------------------------------------------


def _event_strategies() -> dict[type[Event], st.SearchStrategy[Event]]:
    return {
        OrderRejected: st.builds(OrderRejected, client_id=_request_ids(), reason=_reasons()),
        OrderFailed: st.builds(OrderFailed, client_id=_request_ids(), reason=_reasons()),
        AuctionRequested: st.builds(
            AuctionRequested,
            request_id=_request_ids(),
            auction_id=_auction_ids(),
            tx_hash=st.one_of(st.none(), _tx_hashes()),
            margin_needed=st.one_of(st.none(), money(min_value=0)),
        ),
        AuctionRequestFailed: st.builds(
            AuctionRequestFailed, request_id=_request_ids(), reason=_reasons()
        ),
        AuctionStarted: st.builds(
            AuctionStarted,
            auction_id=_auction_ids(),
            chain_start_time=st.one_of(st.none(), _instants()),
        ),
        StopRequestFailed: st.builds(
            StopRequestFailed, request_id=_request_ids(), reason=_reasons()
        ),
        AuctionStopped: st.builds(AuctionStopped, auction_id=_auction_ids()),
        AuctionSettled: st.builds(AuctionSettled, auction_id=_auction_ids()),
        AccountReset: st.just(AccountReset()),
    }


def events() -> st.SearchStrategy[Event]:
    """Every kind of event the shell feeds back."""
    return st.one_of(*_event_strategies().values())


def _auction_of(phase: Phase) -> str | None:
    match phase:
        case InLiquidation(auction_id=auction_id) | Liquidated(auction_id=auction_id):
            return auction_id
        case PreLiquidation(pending_full_auction_id=auction_id):
            return auction_id
        case Healthy():
            return None
        case _:
            assert_never(phase)


@st.composite
def _state_changes(draw: st.DrawFn, wallet: st.SearchStrategy[str]) -> StateChange:
    state = draw(account_states(wallet=draw(wallet)))
    previous = draw(phases(wallet=state.wallet))
    previous_auction = _auction_of(previous)
    return StateChange(
        wallet=state.wallet,
        previous_phase=phase_tag(previous),
        new_phase=phase_tag(state.phase),
        previous_mode=liquidation_mode(previous),
        mode=liquidation_mode(state.phase),
        margin_mode=state.margin_mode,
        equity=state.equity,
        mm_required=state.mm_required,
        maintenance_margin=state.maintenance_margin,
        shortfall=state.shortfall,
        previous_auction_id=previous_auction,
        auction_id=_auction_of(state.phase) or previous_auction,
        projection_changed=draw(st.booleans()),
        state=state,
        timestamp=state.updated_at,
    )


def state_changes(*, wallet: str | None = None) -> st.SearchStrategy[StateChange]:
    """Projections of a state change, consistent with the new state they carry."""
    return _state_changes(_wallet(wallet))


def _command_strategies(
    owner: st.SearchStrategy[str],
) -> dict[type[Command], st.SearchStrategy[Command]]:
    return {
        CancelOrder: st.builds(
            CancelOrder,
            wallet=owner,
            order_id=st.integers(min_value=0, max_value=10**9),
            client_id=st.one_of(st.none(), _request_ids()),
            request_id=_request_ids(),
        ),
        SubmitOrder: st.builds(
            SubmitOrder,
            wallet=owner,
            symbol=option_symbols(),
            price=prices(),
            size=sizes(),
            client_id=_request_ids(),
            request_id=_request_ids(),
        ),
        StartAuction: st.builds(StartAuction, wallet=owner, request_id=_request_ids()),
        StopAuction: st.builds(
            StopAuction,
            wallet=owner,
            auction_id=_auction_ids(),
            chain_start_time=_instants(),
            request_id=_request_ids(),
        ),
        PublishStateChange: st.builds(PublishStateChange, change=_state_changes(owner)),
        Alert: st.builds(
            Alert,
            wallet=owner,
            code=st.sampled_from(AlertCode),
            message=st.text(min_size=1, max_size=60),
        ),
    }


def commands(*, wallet: str | None = None) -> st.SearchStrategy[Command]:
    """Every kind of command ``step`` emits, for ``wallet`` (drawn when ``None``)."""
    return st.one_of(*_command_strategies(_wallet(wallet)).values())


# --- st.from_type --------------------------------------------------------------------------


def type_strategies() -> dict[type[object], st.SearchStrategy[object]]:
    """The strategy :func:`register_type_strategies` registers for each of liqcore's data
    types: inputs, configuration and margin models, phases and states, events and commands.

    Values the core *computes* (plans, explanations, cancel targets, overstays) have none:
    a test derives them from drawn inputs.
    """
    table: dict[type[object], st.SearchStrategy[object]] = {
        OptionSymbol: _option_symbol_values(),
        InstrumentSpec: instrument_specs(),
        Position: positions(),
        Portfolio: portfolios(),
        Quote: quotes(),
        OpenOrder: open_orders(),
        Health: healths(),
        StandardMargin: standard_margins(),
        PortfolioMargin: portfolio_margins(),
        MarginFacts: margin_facts(),
        Config: configs(),
        AccountState: account_states(),
        StateChange: state_changes(),
    }
    owner = wallets()
    for tag in _PHASE_TAG_ORDER:
        kind = _PHASE_TYPES[tag]
        table[kind] = _phase_strategy(tag, owner)
    # items() as pairs: tuples are covariant, so Event's table extends the object table
    table.update(tuple(_event_strategies().items()))
    table.update(tuple(_command_strategies(owner).items()))
    return table


def register_type_strategies() -> None:
    """Register :func:`type_strategies` with ``st.register_type_strategy``, so that
    ``st.from_type(Portfolio)``, ``st.builds(f)`` over annotated arguments and
    ``st.from_type(Event)`` (a union: any event) draw valid liqcore values.

    Idempotent. liqcore also declares a ``hypothesis`` entry point that registers the same
    table (lazily) when Hypothesis is imported, unless ``HYPOTHESIS_NO_PLUGINS`` is set;
    call this yourself where entry points are not installed. ``Decimal`` itself is left
    alone: register :func:`decimals` for it in a ``conftest.py`` if bare
    ``st.from_type(Decimal)`` must not draw NaN.
    """
    for kind, strategy in type_strategies().items():
        st.register_type_strategy(kind, strategy)
