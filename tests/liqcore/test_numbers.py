"""liqcore.numbers: boundary conversion, the one context, rounding to steps, tidy text."""

from __future__ import annotations

import decimal
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liqcore.errors import InvalidInput, LiqcoreError
from liqcore.numbers import (
    BPS,
    CONTEXT,
    MIN_SIZE,
    ONE,
    ZERO,
    bps_fraction,
    quantize_down,
    quantize_up,
    tidy,
    to_decimal,
)
from liqcore.strategies import decimals

_STEPS = st.sampled_from(
    [Decimal(t) for t in ("0.00000001", "0.0001", "0.01", "0.05", "0.1", "0.25", "1", "5", "10")]
)


def test_constants_match_the_spec() -> None:
    """BPS, MIN_SIZE and the context are exactly as SPEC §2 fixes them."""
    assert BPS == 10_000
    assert Decimal("0.00000001") == MIN_SIZE
    assert ZERO == 0
    assert ONE == 1
    assert CONTEXT.prec == 28
    assert CONTEXT.rounding == decimal.ROUND_HALF_EVEN


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (5, Decimal(5)),
        ("1.50", Decimal("1.5")),
        (" 2 ", Decimal(2)),
        (0.1, Decimal("0.1")),
        (Decimal("-3.25"), Decimal("-3.25")),
    ],
)
def test_to_decimal_finite_values_convert_exactly(raw: object, expected: Decimal) -> None:
    """Ints, decimal text, floats (through repr) and Decimals convert to the same value."""
    assert to_decimal(raw, "X.field") == expected  # type: ignore[arg-type]


@given(value=decimals(min_value=-(10**9), max_value=10**9, places=8))
def test_to_decimal_decimal_text_round_trips(value: Decimal) -> None:
    """A finite Decimal and its text convert to the same Decimal."""
    assert to_decimal(value, "f") == value
    assert to_decimal(str(value), "f") == value


@given(value=st.floats(allow_nan=False, allow_infinity=False))
def test_to_decimal_float_goes_through_repr(value: float) -> None:
    """A float converts to the Decimal of its shortest repr, never its binary expansion."""
    assert to_decimal(value, "f") == Decimal(repr(value))


@pytest.mark.parametrize(
    "raw",
    [float("nan"), float("inf"), float("-inf"), "NaN", "Infinity", "-inf", "sNaN", Decimal("NaN")],
)
def test_to_decimal_non_finite_raises_invalid_input_naming_the_field(raw: object) -> None:
    """NaN and infinities are refused (the seed clamps them to zero), naming the field."""
    with pytest.raises(InvalidInput, match=r"Position\.amount"):
        to_decimal(raw, "Position.amount")  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", [True, False, "abc", "", "1,5", None, [1], b"1"])
def test_to_decimal_unparsable_or_wrong_type_raises_invalid_input(raw: object) -> None:
    """Booleans, junk text and non-numbers are refused with an InvalidInput naming the field."""
    with pytest.raises(InvalidInput, match=r"Quote\.theo") as error:
        to_decimal(raw, "Quote.theo")  # type: ignore[arg-type]
    assert isinstance(error.value, LiqcoreError)
    assert isinstance(error.value, ValueError)


@given(bps=st.integers(min_value=-BPS, max_value=100 * BPS))
def test_bps_fraction_is_exactly_one_plus_bps_over_ten_thousand(bps: int) -> None:
    """bps_fraction(b) == 1 + b / 10_000 exactly."""
    assert bps_fraction(bps) == 1 + Decimal(bps) / Decimal(BPS)
    assert bps_fraction(bps) * BPS == BPS + bps


def test_bps_fraction_seed_examples() -> None:
    """500 bps is 1.05; 0 bps is 1."""
    assert bps_fraction(500) == Decimal("1.05")
    assert bps_fraction(0) == 1


@given(value=decimals(min_value=-(10**6), max_value=10**6, places=10), step=_STEPS)
def test_quantize_up_is_the_smallest_multiple_at_or_above(value: Decimal, step: Decimal) -> None:
    """quantize_up gives a multiple of step, ≥ value, less than one step above it."""
    result = quantize_up(value, step)
    assert result % step == 0
    assert value <= result < value + step


@given(value=decimals(min_value=-(10**6), max_value=10**6, places=10), step=_STEPS)
def test_quantize_down_is_the_largest_multiple_at_or_below(value: Decimal, step: Decimal) -> None:
    """quantize_down gives a multiple of step, ≤ value, less than one step below it."""
    result = quantize_down(value, step)
    assert result % step == 0
    assert value - step < result <= value


@given(units=st.integers(min_value=-(10**6), max_value=10**6), step=_STEPS)
def test_quantize_multiples_of_the_step_are_fixed_points(units: int, step: Decimal) -> None:
    """A value already on the grid is returned unchanged by both directions."""
    value = units * step
    assert quantize_up(value, step) == value
    assert quantize_down(value, step) == value


def test_quantize_seed_like_examples() -> None:
    """120.600000001 rounds up to 120.60000001 at MIN_SIZE, down to 120.6."""
    assert quantize_up(Decimal("120.600000001"), MIN_SIZE) == Decimal("120.60000001")
    assert quantize_down(Decimal("120.600000001"), MIN_SIZE) == Decimal("120.6")
    assert str(quantize_up(Decimal("99.99"), Decimal(1))) == "100"


@given(value=decimals(min_value=-(10**12), max_value=10**12, places=12))
def test_tidy_keeps_the_value_and_drops_trailing_zeros(value: Decimal) -> None:
    """tidy(x) == x, with no trailing fractional zero and no positive exponent (100, not 1E+2)."""
    result = tidy(value)
    text = str(result)
    assert result == value
    assert "E+" not in text
    _, digits, exponent = result.as_tuple()
    assert isinstance(exponent, int)
    assert exponent >= 0 or digits[-1] != 0
    if abs(value) >= Decimal("0.000001") or not value:
        assert "E" not in text


def test_tidy_tiny_values_print_plainly_with_format_f() -> None:
    """As tidy's docstring says, format(tidy(x), "f") is plain even below 1e-6."""
    assert format(tidy(MIN_SIZE), "f") == "0.00000001"
    assert format(tidy(Decimal("1.2300E-10")), "f") == "0.000000000123"


def test_tidy_examples() -> None:
    """100 not 1E+2; 0 not -0 or 0E-8; 315.00 → 315."""
    assert str(tidy(Decimal("1E+2"))) == "100"
    assert str(tidy(Decimal("-0"))) == "0"
    assert str(tidy(Decimal("0E-8"))) == "0"
    assert str(tidy(Decimal("315.00"))) == "315"


@given(bps=st.integers(min_value=0, max_value=BPS), value=decimals(places=8))
def test_arithmetic_ignores_the_callers_decimal_context(bps: int, value: Decimal) -> None:
    """Results are the same whatever precision/rounding the caller set (liqcore's own CONTEXT)."""
    expected = (bps_fraction(bps), quantize_up(value, MIN_SIZE), tidy(value))
    with decimal.localcontext() as hostile:
        hostile.prec = 3
        hostile.rounding = decimal.ROUND_DOWN
        assert (bps_fraction(bps), quantize_up(value, MIN_SIZE), tidy(value)) == expected
