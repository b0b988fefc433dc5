"""Prices: what a liquidation buy starts from and what it bids.

Owns the reference price (the book, else theo, else the mark, capped at fair value plus
``reference_band_bps``: one resting ask far above fair value — a thin book, or a colluding
account — would otherwise set what the account pays) and the execution prices (the
reference plus the bonus, rounded **up** to the underlying's price tick), with the symbols
left unpriced and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType

from liqcore.config import Config
from liqcore.errors import PlanningError
from liqcore.inputs import Portfolio, Position, Quote
from liqcore.numbers import CONTEXT, MIN_SIZE, bps_fraction, quantize_up
from liqcore.planning.simulation import _is_short, _Memo

__all__ = ["execution_prices", "reference_price"]


def _positive(value: Decimal | None) -> Decimal | None:
    return value if value is not None and value > 0 else None


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
        # _positive of each, inline (four calls per priced symbol otherwise).
        ask, mid, bid, theo = quote.best_ask, quote.mid, quote.best_bid, quote.theo
        ask = ask if ask is not None and ask > 0 else None
        mid = mid if mid is not None and mid > 0 else None
        bid = bid if bid is not None and bid > 0 else None
        theo = theo if theo is not None and theo > 0 else None
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
