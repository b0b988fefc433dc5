"""Instrument symbols and per-underlying trading steps.

Options are ``UNDERLYING-YYYYMMDD-STRIKE-C|P`` (``BTC-20261231-100000-C``) and expire at
08:00 UTC of their date; perpetuals are ``UNDERLYING-PERP``. Anything else is neither.
"""

from __future__ import annotations

import datetime
import enum
import functools
from decimal import Decimal, InvalidOperation

import attrs

from liqcore import _validators as v
from liqcore.errors import InvalidSymbol
from liqcore.numbers import MIN_SIZE, ZERO, tidy

__all__ = [
    "InstrumentSpec",
    "OptionKind",
    "OptionSymbol",
    "is_perp_symbol",
    "option_symbol",
    "underlying_of",
]

_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_DAY_MS = 86_400_000
_EXPIRY_HOUR_MS = 8 * 3_600_000


class OptionKind(enum.Enum):
    """Call or put; the value is the symbol's last segment."""

    CALL = "C"
    PUT = "P"


def _underlying(inst: OptionSymbol, attribute: attrs.Attribute[str], value: object) -> None:
    v.text(inst, attribute, value)
    assert isinstance(value, str)
    if not value.isalnum():
        raise InvalidSymbol(f"OptionSymbol.underlying must be alphanumeric, was {value!r}")


@attrs.frozen(kw_only=True)
class OptionSymbol:
    """A parsed option symbol. ``format()`` round-trips with the strike normalised."""

    underlying: str = attrs.field(validator=_underlying)
    expiry: datetime.date = attrs.field(validator=v.instance_of(datetime.date))
    strike: Decimal = attrs.field(validator=v.positive)
    kind: OptionKind = attrs.field(validator=v.instance_of(OptionKind))

    @staticmethod
    def parse(text: str) -> OptionSymbol:
        """Parse ``UNDERLYING-YYYYMMDD-STRIKE-C|P`` or raise :class:`InvalidSymbol`."""
        if type(text) is not str:
            raise InvalidSymbol(f"option symbol must be a str, was {text!r}")
        return _parse(text)

    def format(self) -> str:
        """The canonical text of this symbol."""
        return f"{self.underlying}-{self.expiry:%Y%m%d}-{tidy(self.strike):f}-{self.kind.value}"

    @property
    def expires_at(self) -> int:
        """Expiry instant, ms since the Unix epoch (08:00 UTC of the expiry date)."""
        return (self.expiry.toordinal() - _EPOCH_ORDINAL) * _DAY_MS + _EXPIRY_HOUR_MS

    @property
    def is_call(self) -> bool:
        """True for a call."""
        return self.kind is OptionKind.CALL


@functools.lru_cache(maxsize=65_536)
def _parse(text: str) -> OptionSymbol:
    parts = text.split("-")
    if len(parts) != 4:
        raise InvalidSymbol(f"not an option symbol (UNDERLYING-YYYYMMDD-STRIKE-C|P): {text!r}")
    underlying, date_text, strike_text, kind_text = parts
    if not underlying or not underlying.isalnum():
        raise InvalidSymbol(f"option symbol {text!r}: bad underlying {underlying!r}")
    if len(date_text) != 8 or not date_text.isdigit():
        raise InvalidSymbol(f"option symbol {text!r}: expiry must be YYYYMMDD")
    try:
        expiry = datetime.date(int(date_text[:4]), int(date_text[4:6]), int(date_text[6:]))
    except ValueError:
        raise InvalidSymbol(f"option symbol {text!r}: no such date {date_text}") from None
    try:
        strike = Decimal(strike_text)
    except InvalidOperation:
        raise InvalidSymbol(f"option symbol {text!r}: bad strike {strike_text!r}") from None
    if not strike_text or not strike.is_finite() or strike <= 0 or not _is_plain(strike_text):
        raise InvalidSymbol(f"option symbol {text!r}: bad strike {strike_text!r}")
    try:
        kind = OptionKind(kind_text)
    except ValueError:
        raise InvalidSymbol(f"option symbol {text!r}: kind must be C or P") from None
    return OptionSymbol(underlying=underlying, expiry=expiry, strike=strike, kind=kind)


def _is_plain(number: str) -> bool:
    head, _, tail = number.partition(".")
    return head.isdigit() and (not tail or tail.isdigit())


def option_symbol(symbol: str) -> OptionSymbol | None:
    """The parsed option, or ``None`` when ``symbol`` is not an option (a perp, anything else)."""
    try:
        return _parse(symbol)
    except InvalidSymbol:
        return None


def is_perp_symbol(symbol: str) -> bool:
    """``UNDERLYING-PERP``."""
    head, sep, tail = symbol.rpartition("-")
    return bool(sep) and tail == "PERP" and bool(head) and "-" not in head


def underlying_of(symbol: str) -> str:
    """The underlying of an option or a perp; raises :class:`InvalidSymbol` for anything else."""
    if is_perp_symbol(symbol):
        return symbol[: -len("-PERP")]
    return OptionSymbol.parse(symbol).underlying


@attrs.frozen(kw_only=True)
class InstrumentSpec:
    """Trading steps of one underlying's options.

    ``size_step``: plan sizes round **up** to it (never above the position);
    ``price_tick``: limit prices round **up** to it; ``min_size``: the exchange's minimum
    order size — a plan that would leave a smaller remainder closes the position whole
    (0: no minimum).
    """

    size_step: Decimal = attrs.field(default=MIN_SIZE, validator=v.positive)
    price_tick: Decimal = attrs.field(default=MIN_SIZE, validator=v.positive)
    min_size: Decimal = attrs.field(default=ZERO, validator=v.non_negative)
