"""Decimal helpers: the one numeric context, conversions at the boundary, rounding to steps.

liqcore never uses the caller's decimal context: every computation that can round runs in
:data:`CONTEXT` (28 digits, ROUND_HALF_EVEN), so results are identical on every machine and
whatever the embedding application did to ``decimal.getcontext()``.
"""

from __future__ import annotations

import decimal
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

from liqcore.errors import InvalidInput

__all__ = [
    "BPS",
    "CONTEXT",
    "MIN_SIZE",
    "ONE",
    "ZERO",
    "bps_fraction",
    "quantize_down",
    "quantize_up",
    "tidy",
    "to_decimal",
]

BPS = 10_000
"""Basis points in one whole."""

MIN_SIZE = Decimal("0.00000001")
"""Sizes at or below this are treated as zero (seed ``PARTIAL_LIQ_MIN_SIZE``)."""

ZERO = Decimal(0)
ONE = Decimal(1)

CONTEXT = decimal.Context(
    prec=28,
    rounding=ROUND_HALF_EVEN,
    Emin=-999_999,
    Emax=999_999,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)
"""The local context of every liqcore computation."""

_BPS = Decimal(BPS)


def to_decimal(value: int | str | float | Decimal, field: str) -> Decimal:
    """Convert a boundary value to a finite Decimal, or raise ``InvalidInput`` naming ``field``.

    Floats go through ``repr`` (``0.1`` becomes ``Decimal("0.1")``, not its binary
    expansion). NaN, infinities, booleans and unparsable strings are refused — the seed
    clamps non-finite values to zero, which can silently liquidate or spare an account.
    """
    if isinstance(value, bool):
        raise InvalidInput(f"{field} must be a number, was {value!r}")
    try:
        if isinstance(value, Decimal):
            result = value
        elif isinstance(value, int):
            result = Decimal(value)
        elif isinstance(value, float):
            result = Decimal(repr(value))
        elif isinstance(value, str):
            result = Decimal(value.strip())
        else:
            raise InvalidInput(f"{field} must be a number, was {value!r}")
    except decimal.InvalidOperation:
        raise InvalidInput(f"{field} is not a number: {value!r}") from None
    if not result.is_finite():
        raise InvalidInput(f"{field} must be finite, was {value!r}")
    return result


def bps_fraction(bps: int) -> Decimal:
    """``1 + bps / 10_000`` as an exact Decimal."""
    return CONTEXT.add(ONE, CONTEXT.divide(Decimal(bps), _BPS))


def quantize_up(value: Decimal, step: Decimal) -> Decimal:
    """The smallest multiple of ``step`` that is ≥ ``value`` (``step`` > 0)."""
    units = CONTEXT.divide(value, step).to_integral_value(rounding=ROUND_CEILING)
    return tidy(CONTEXT.multiply(units, step))


def quantize_down(value: Decimal, step: Decimal) -> Decimal:
    """The largest multiple of ``step`` that is ≤ ``value`` (``step`` > 0)."""
    units = CONTEXT.divide(value, step).to_integral_value(rounding=ROUND_FLOOR)
    return tidy(CONTEXT.multiply(units, step))


def tidy(value: Decimal) -> Decimal:
    """The same number without trailing zeros and without a positive exponent (``100``, not
    ``1E+2``). Print it with ``format(value, "f")``: ``str`` of any Decimal below 1e-6 is in
    exponent form whatever its exponent."""
    if not value:
        return ZERO
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    # Exact (no rounding to the context's precision, unlike Decimal.normalize).
    while exponent < 0 and digits[-1] == 0:
        digits = digits[:-1]
        exponent += 1
    if exponent > 0:
        digits, exponent = digits + (0,) * exponent, 0
    return Decimal((sign, digits, exponent))
