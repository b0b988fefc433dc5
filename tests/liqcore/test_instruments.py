"""liqcore.instruments: option symbols, perps, expiry instants, instrument specs."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liqcore.errors import InvalidInput, InvalidSymbol, LiqcoreError
from liqcore.instruments import (
    InstrumentSpec,
    OptionKind,
    OptionSymbol,
    is_perp_symbol,
    option_symbol,
    underlying_of,
)
from liqcore.numbers import MIN_SIZE, ZERO
from liqcore.strategies import DEFAULT_UNDERLYINGS, option_symbols, perp_symbols

_UTC = datetime.UTC


@given(text=option_symbols())
def test_parse_then_format_canonical_symbol_is_identity(text: str) -> None:
    """A canonical option symbol formats back to exactly its text."""
    assert OptionSymbol.parse(text).format() == text
    assert option_symbol(text) == OptionSymbol.parse(text)


@given(
    underlying=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=6),
    expiry=st.dates(min_value=datetime.date(1970, 1, 1), max_value=datetime.date(9999, 12, 31)),
    units=st.integers(min_value=1, max_value=10**12),
    places=st.integers(min_value=0, max_value=12),
    kind=st.sampled_from(OptionKind),
)
def test_format_then_parse_any_option_is_identity(
    underlying: str, expiry: datetime.date, units: int, places: int, kind: OptionKind
) -> None:
    """Any option with an alphanumeric underlying survives format → parse unchanged."""
    strike = Decimal(units).scaleb(-places)
    option = OptionSymbol(underlying=underlying, expiry=expiry, strike=strike, kind=kind)
    assert OptionSymbol.parse(option.format()) == option


def test_format_then_parse_tiny_strike_is_identity() -> None:
    """A strike below 1e-6 is written plainly (never 1E-7) and survives format → parse."""
    option = OptionSymbol(
        underlying="BTC",
        expiry=datetime.date(2026, 12, 31),
        strike=Decimal("0.0000001"),
        kind=OptionKind.CALL,
    )
    assert option.format() == "BTC-20261231-0.0000001-C"
    assert OptionSymbol.parse(option.format()) == option


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("BTC-20261231-100000.50-C", "BTC-20261231-100000.5-C"),
        ("BTC-20261231-100000.00-P", "BTC-20261231-100000-P"),
        ("BTC-20261231-100000.-C", "BTC-20261231-100000-C"),
        ("ETH-20260101-0003500-P", "ETH-20260101-3500-P"),
        ("ETH-20260101-0.05-C", "ETH-20260101-0.05-C"),
    ],
)
def test_format_strike_is_normalised(text: str, canonical: str) -> None:
    """Trailing and leading zeros of the strike are dropped; the value is kept."""
    option = OptionSymbol.parse(text)
    assert option.format() == canonical
    assert OptionSymbol.parse(canonical) == option


def test_parse_seed_symbol_fields() -> None:
    """BTC-20261231-100000-C is a BTC call struck at 100000 expiring 2026-12-31."""
    option = OptionSymbol.parse("BTC-20261231-100000-C")
    assert option == OptionSymbol(
        underlying="BTC",
        expiry=datetime.date(2026, 12, 31),
        strike=Decimal(100000),
        kind=OptionKind.CALL,
    )
    assert option.is_call
    assert not OptionSymbol.parse("BTC-20261231-100000-P").is_call


def test_expires_at_seed_symbol_is_0800_utc_in_ms() -> None:
    """2026-12-31 expires at 2026-12-31T08:00:00Z = 1798704000000 ms."""
    assert OptionSymbol.parse("BTC-20261231-100000-C").expires_at == 1_798_704_000_000


@given(expiry=st.dates(min_value=datetime.date(1970, 1, 1), max_value=datetime.date(9999, 12, 31)))
def test_expires_at_any_date_is_0800_utc_of_that_date(expiry: datetime.date) -> None:
    """expires_at is 08:00 UTC of the expiry date, in ms since the epoch."""
    option = OptionSymbol(underlying="BTC", expiry=expiry, strike=Decimal(1), kind=OptionKind.PUT)
    instant = datetime.datetime(expiry.year, expiry.month, expiry.day, 8, tzinfo=_UTC)
    assert option.expires_at == int(instant.timestamp()) * 1000


@given(symbol=perp_symbols(underlyings=(*DEFAULT_UNDERLYINGS, "SOL", "X1")))
def test_perp_symbol_is_not_an_option_and_has_its_prefix_as_underlying(symbol: str) -> None:
    """UNDERLYING-PERP is a perp, not an option; its underlying is the prefix."""
    assert is_perp_symbol(symbol)
    assert option_symbol(symbol) is None
    assert underlying_of(symbol) == symbol.removesuffix("-PERP")
    with pytest.raises(InvalidSymbol):
        OptionSymbol.parse(symbol)


@given(text=option_symbols())
def test_underlying_of_option_is_its_first_segment(text: str) -> None:
    """The underlying of an option is the parsed underlying; an option is never a perp."""
    assert underlying_of(text) == text.split("-", maxsplit=1)[0]
    assert not is_perp_symbol(text)


@pytest.mark.parametrize("text", ["PERP", "-PERP", "BTC-ETH-PERP", "BTCPERP", "BTC-perp", ""])
def test_is_perp_symbol_malformed_perps_are_not_perps(text: str) -> None:
    """Only UNDERLYING-PERP with a dash-free, non-empty underlying is a perp."""
    assert not is_perp_symbol(text)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("BTC-PERP", "not an option symbol"),
        ("BTC", "not an option symbol"),
        ("BTC-20261231-100000", "not an option symbol"),
        ("BTC-20261231--100-C", "not an option symbol"),
        ("BTC-20261231-100000-C-X", "not an option symbol"),
        ("-20261231-100000-C", "bad underlying"),
        ("BT_C-20261231-100000-C", "bad underlying"),
        ("BTC-20261331-100000-C", "no such date"),
        ("BTC-20260230-100000-C", "no such date"),
        ("BTC-2026123-100000-C", "YYYYMMDD"),
        ("BTC-2026-12-31-100000-C", "not an option symbol"),
        ("BTC-20261231-0-C", "bad strike"),
        ("BTC-20261231-0.00-C", "bad strike"),
        ("BTC-20261231-1e5-C", "bad strike"),
        ("BTC-20261231-NaN-C", "bad strike"),
        ("BTC-20261231-Infinity-C", "bad strike"),
        ("BTC-20261231-+100-C", "bad strike"),
        ("BTC-20261231--C", "bad strike"),
        ("BTC-20261231-.5-C", "bad strike"),
        ("BTC-20261231-100000-X", "kind must be C or P"),
        ("BTC-20261231-100000-c", "kind must be C or P"),
        ("BTC-20261231-100000-CALL", "kind must be C or P"),
    ],
)
def test_parse_bad_symbol_raises_invalid_symbol_saying_why(text: str, words: str) -> None:
    """Malformed symbols raise InvalidSymbol (an InvalidInput) naming the symbol and the fault."""
    with pytest.raises(InvalidSymbol, match=words) as error:
        OptionSymbol.parse(text)
    assert isinstance(error.value, InvalidInput)
    assert isinstance(error.value, LiqcoreError)
    assert option_symbol(text) is None


@pytest.mark.parametrize("value", [None, 5, b"BTC-20261231-100000-C", ["BTC"]])
def test_parse_non_text_raises_invalid_symbol(value: object) -> None:
    """Parsing something that is not a str raises InvalidSymbol, not a TypeError."""
    with pytest.raises(InvalidSymbol, match="must be a str"):
        OptionSymbol.parse(value)  # type: ignore[arg-type]


def test_underlying_of_unknown_symbol_raises_invalid_symbol() -> None:
    """A symbol that is neither option nor perp has no underlying."""
    with pytest.raises(InvalidSymbol):
        underlying_of("BTC-SPOT")


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"strike": 100.5}, "OptionSymbol.strike"),
        ({"strike": Decimal("NaN")}, "OptionSymbol.strike"),
        ({"strike": Decimal(-1)}, "OptionSymbol.strike"),
        ({"strike": Decimal(0)}, "OptionSymbol.strike"),
        ({"expiry": "2026-12-31"}, "OptionSymbol.expiry"),
        ({"kind": "C"}, "OptionSymbol.kind"),
        ({"underlying": ""}, "OptionSymbol.underlying"),
    ],
)
def test_option_symbol_constructor_bad_field_raises_invalid_input(
    fields: dict[str, object], name: str
) -> None:
    """The constructor validates every field and names the bad one."""
    base: dict[str, object] = {
        "underlying": "BTC",
        "expiry": datetime.date(2026, 12, 31),
        "strike": Decimal(100),
        "kind": OptionKind.CALL,
    }
    with pytest.raises(InvalidInput, match=name.replace(".", r"\.")):
        OptionSymbol(**{**base, **fields})  # type: ignore[arg-type]


def test_instrument_spec_defaults_round_nothing_beyond_min_size() -> None:
    """Default steps are MIN_SIZE and there is no minimum order size."""
    spec = InstrumentSpec()
    assert spec.size_step == MIN_SIZE
    assert spec.price_tick == MIN_SIZE
    assert spec.min_size == ZERO


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"size_step": Decimal(0)}, "InstrumentSpec.size_step"),
        ({"size_step": 0.1}, "InstrumentSpec.size_step"),
        ({"price_tick": Decimal("-0.01")}, "InstrumentSpec.price_tick"),
        ({"price_tick": Decimal("Infinity")}, "InstrumentSpec.price_tick"),
        ({"min_size": Decimal(-1)}, "InstrumentSpec.min_size"),
        ({"min_size": "1"}, "InstrumentSpec.min_size"),
    ],
)
def test_instrument_spec_bad_step_raises_invalid_input(
    fields: dict[str, object], name: str
) -> None:
    """Steps must be positive finite Decimals, min_size a non-negative one."""
    with pytest.raises(InvalidInput, match=name.replace(".", r"\.")):
        InstrumentSpec(**fields)  # type: ignore[arg-type]
