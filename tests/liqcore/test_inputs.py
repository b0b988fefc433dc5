"""liqcore.inputs: validated observations (positions, portfolios, quotes, orders, health)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liqcore import strategies as lst
from liqcore.errors import InvalidInput, LiqcoreError
from liqcore.inputs import (
    Health,
    MarginMode,
    OpenOrder,
    Portfolio,
    Position,
    Quote,
    Side,
    TimeInForce,
)
from liqcore.instruments import is_perp_symbol, option_symbol
from liqcore.numbers import MIN_SIZE, ZERO

# Properties of the strategies themselves (not of liqcore) run on a quarter of the examples.
_PROFILE = settings.default
assert _PROFILE is not None
_STRATEGY_CHECK = settings(max_examples=max(10, _PROFILE.max_examples // 4))

_PERP = "BTC-PERP"
_CALL = "BTC-20261231-100000-C"


def _health(**fields: Any) -> Health:
    base: dict[str, Any] = {
        "wallet": "W",
        "margin_mode": MarginMode.STANDARD,
        "equity": Decimal(100),
        "mm_required": Decimal(300),
        "is_liquidatable": True,
    }
    return Health(**{**base, **fields})


def _position(**fields: Any) -> Position:
    base: dict[str, Any] = {"symbol": _CALL, "amount": Decimal(-4), "entry_price": Decimal(100)}
    return Position(**{**base, **fields})


def _order(**fields: Any) -> OpenOrder:
    base: dict[str, Any] = {
        "order_id": 7,
        "symbol": _CALL,
        "side": Side.SELL,
        "price": Decimal(95),
        "original_size": Decimal(1),
        "remaining_size": Decimal(1),
        "client_id": "risk-increasing",
        "created_at": 1,
    }
    return OpenOrder(**{**base, **fields})


def test_enums_travel_by_their_spec_values() -> None:
    """MarginMode, Side and TimeInForce have the documented members and values."""
    assert [m.value for m in MarginMode] == ["standard", "portfolio"]
    assert [s.value for s in Side] == ["buy", "sell"]
    assert [t.value for t in TimeInForce] == ["gtc"]


# --- Position ------------------------------------------------------------------------------


def test_position_defaults_are_zero() -> None:
    """PnL and posted margin default to zero."""
    position = _position()
    assert (position.unrealized_pnl, position.realized_pnl, position.margin_posted) == (ZERO,) * 3


def test_position_mark_price_seed_formula() -> None:
    """mark = entry + unrealized / amount: short 4 @ 100 with PnL -80 marks at 120."""
    assert _position(unrealized_pnl=Decimal(-80)).mark_price == Decimal(120)


@given(position=lst.positions())
def test_position_mark_price_times_amount_recovers_the_pnl(position: Position) -> None:
    """(mark − entry) × amount == unrealized_pnl for any position with a real amount."""
    mark = position.mark_price
    assert mark > 0
    assert (mark - position.entry_price) * position.amount == position.unrealized_pnl


@pytest.mark.parametrize("amount", [ZERO, MIN_SIZE, -MIN_SIZE])
def test_position_mark_price_of_dust_raises_invalid_input(amount: Decimal) -> None:
    """|amount| ≤ MIN_SIZE has no mark price: InvalidInput naming Position.amount."""
    with pytest.raises(InvalidInput, match=r"Position\.amount"):
        _ = _position(amount=amount).mark_price


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"amount": 1.5}, "Position.amount"),
        ({"amount": Decimal("NaN")}, "Position.amount"),
        ({"amount": Decimal("-Infinity")}, "Position.amount"),
        ({"amount": 3}, "Position.amount"),
        ({"entry_price": Decimal(-1)}, "Position.entry_price"),
        ({"entry_price": "100"}, "Position.entry_price"),
        ({"unrealized_pnl": float("nan")}, "Position.unrealized_pnl"),
        ({"realized_pnl": Decimal("sNaN")}, "Position.realized_pnl"),
        ({"margin_posted": 0.0}, "Position.margin_posted"),
        ({"symbol": ""}, "Position.symbol"),
        ({"symbol": None}, "Position.symbol"),
    ],
)
def test_position_bad_field_raises_invalid_input_naming_it(
    fields: dict[str, object], name: str
) -> None:
    """Floats, non-finite, negative prices and empty symbols are refused, naming the field."""
    with pytest.raises(InvalidInput, match=name.replace(".", r"\.")) as error:
        _position(**fields)
    assert isinstance(error.value, LiqcoreError)


# --- Portfolio -----------------------------------------------------------------------------


def test_portfolio_defaults_are_empty() -> None:
    """An empty portfolio: no cash, no positions, no spot."""
    portfolio = Portfolio()
    assert portfolio.cash == 0
    assert dict(portfolio.positions) == {}
    assert dict(portfolio.spot) == {}


def test_portfolio_mappings_are_read_only_copies() -> None:
    """Mutating the caller's dict afterwards cannot change the portfolio; the view is read-only."""
    positions = {_PERP: _position(symbol=_PERP)}
    spot = {"BTC": Decimal(105_000)}
    portfolio = Portfolio(positions=positions, spot=spot)
    positions.clear()
    spot["BTC"] = Decimal(1)
    assert list(portfolio.positions) == [_PERP]
    assert portfolio.spot["BTC"] == Decimal(105_000)
    with pytest.raises(TypeError):
        portfolio.spot["BTC"] = Decimal(2)  # type: ignore[index]


class _Quotes(Mapping[str, Quote]):
    """A mapping that is not a dict (the converter's general path)."""

    def __init__(self, items: dict[str, Quote]) -> None:
        self._items = items

    def __getitem__(self, key: str) -> Quote:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


class _Dict(dict[str, Quote]):
    """A dict subclass (not the exact-dict fast path)."""


@pytest.mark.parametrize("kind", [dict, _Dict, OrderedDict, _Quotes])
def test_health_quotes_are_read_only_copies_of_any_mapping(kind: Any) -> None:
    """Whatever mapping the quotes come in, the health holds a read-only copy: mutating the
    caller's mapping afterwards changes nothing; a read-only view is kept as it is."""
    quote = Quote(best_bid=Decimal(1), best_ask=Decimal(2), mid=Decimal("1.5"))
    items = {_PERP: quote}
    health = Health(
        wallet="w",
        margin_mode=MarginMode.STANDARD,
        equity=Decimal(1),
        mm_required=ZERO,
        is_liquidatable=False,
        quotes=kind(items) if kind is not _Quotes else _Quotes(items),
    )
    items.clear()
    assert type(health.quotes) is MappingProxyType
    assert dict(health.quotes) == {_PERP: quote}
    with pytest.raises(TypeError):
        health.quotes[_PERP] = quote  # type: ignore[index]
    assert attrs.evolve(health, equity=Decimal(2)).quotes is health.quotes


def test_portfolio_accepts_non_positive_spot_as_market_data() -> None:
    """A zero or negative spot is an observation, not a broken contract."""
    assert Portfolio(spot={"BTC": ZERO, "ETH": Decimal(-1)}).spot["ETH"] == -1


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"positions": {"X": _position(symbol=_PERP)}}, r"Portfolio\.positions key 'X'"),
        ({"positions": {_PERP: "not a position"}}, r"Portfolio\.positions\['BTC-PERP'\]"),
        ({"positions": [_position()]}, r"Portfolio\.positions must be a mapping"),
        ({"spot": "BTC"}, r"Portfolio\.spot must be a mapping"),
        ({"spot": {"BTC": 105_000.0}}, r"Portfolio\.spot\['BTC'\]"),
        ({"spot": {"BTC": Decimal("NaN")}}, r"Portfolio\.spot\['BTC'\]"),
        ({"spot": {"": Decimal(1)}}, r"Portfolio\.spot key"),
        ({"spot": {1: Decimal(1)}}, r"Portfolio\.spot key"),
        ({"cash": 1.5}, r"Portfolio\.cash"),
        ({"cash": Decimal("Infinity")}, r"Portfolio\.cash"),
    ],
)
def test_portfolio_bad_field_raises_invalid_input_naming_it(
    fields: dict[str, object], words: str
) -> None:
    """Mismatched keys, non-positions, float or non-finite spot and cash are refused."""
    with pytest.raises(InvalidInput, match=words):
        Portfolio(**fields)  # type: ignore[arg-type]


@_STRATEGY_CHECK
@given(data=st.data(), min_shorts=st.integers(min_value=0, max_value=3))
def test_portfolios_strategy_honours_min_shorts_and_spot(
    data: st.DataObject, min_shorts: int
) -> None:
    """portfolios() gives ≥ min_shorts short options, a spot for every underlying, sorted keys."""
    portfolio = data.draw(lst.portfolios(min_shorts=min_shorts, underlyings=("BTC", "SOL")))
    shorts = [
        p for p in portfolio.positions.values() if option_symbol(p.symbol) and p.amount < -MIN_SIZE
    ]
    assert len(shorts) >= min_shorts
    assert sorted(portfolio.spot) == ["BTC", "SOL"]
    assert all(price > 0 for price in portfolio.spot.values())
    assert list(portfolio.positions) == sorted(portfolio.positions)
    for position in portfolio.positions.values():
        assert option_symbol(position.symbol) is not None or is_perp_symbol(position.symbol)
        assert abs(position.amount) > MIN_SIZE


# --- Quote ---------------------------------------------------------------------------------


@given(quote=lst.quotes(odd=True))
def test_quote_accepts_missing_zero_negative_and_crossed_sides(quote: Quote) -> None:
    """Odd market data constructs fine (it means "no price", never an exception)."""
    assert quote == Quote(
        best_bid=quote.best_bid, best_ask=quote.best_ask, mid=quote.mid, theo=quote.theo
    )


@_STRATEGY_CHECK
@given(quote=lst.quotes())
def test_quotes_strategy_sane_book_is_ordered(quote: Quote) -> None:
    """quotes() without odd gives 0 < bid ≤ mid ≤ ask and a positive theo."""
    assert quote.best_bid is not None
    assert quote.best_ask is not None
    assert quote.mid is not None
    assert quote.theo is not None
    assert 0 < quote.best_bid <= quote.mid <= quote.best_ask
    assert quote.theo > 0


@pytest.mark.parametrize("field", ["best_bid", "best_ask", "mid", "theo"])
@pytest.mark.parametrize("value", [1.0, Decimal("NaN"), Decimal("Infinity"), "1", 1])
def test_quote_non_decimal_or_non_finite_raises_invalid_input(field: str, value: object) -> None:
    """Floats, ints, text and non-finite values are refused, naming the side."""
    with pytest.raises(InvalidInput, match=rf"Quote\.{field}"):
        Quote(**{field: value})  # type: ignore[arg-type]


# --- OpenOrder -----------------------------------------------------------------------------


@_STRATEGY_CHECK
@given(order=lst.open_orders(wallet="0xabc"))
def test_open_orders_strategy_is_consistent(order: OpenOrder) -> None:
    """Generated orders have remaining ≤ original and is_perp matching the symbol."""
    assert order.remaining_size <= order.original_size
    assert order.is_perp == is_perp_symbol(order.symbol)
    if order.client_id is not None and order.client_id.startswith("liq-"):
        assert order.client_id.startswith("liq-0xabc-")


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"order_id": -1}, "OpenOrder.order_id"),
        ({"order_id": True}, "OpenOrder.order_id"),
        ({"order_id": 7.0}, "OpenOrder.order_id"),
        ({"symbol": ""}, "OpenOrder.symbol"),
        ({"side": "buy"}, "OpenOrder.side"),
        ({"price": Decimal(-95)}, "OpenOrder.price"),
        ({"original_size": Decimal(-1)}, "OpenOrder.original_size"),
        ({"remaining_size": 1.0}, "OpenOrder.remaining_size"),
        ({"remaining_size": Decimal("NaN")}, "OpenOrder.remaining_size"),
        ({"client_id": ""}, "OpenOrder.client_id"),
        ({"client_id": 5}, "OpenOrder.client_id"),
        ({"created_at": 1.5}, "OpenOrder.created_at"),
        ({"created_at": "1"}, "OpenOrder.created_at"),
        ({"is_perp": 1}, "OpenOrder.is_perp"),
    ],
)
def test_open_order_bad_field_raises_invalid_input_naming_it(
    fields: dict[str, object], name: str
) -> None:
    """Negative sizes, float prices, bool ids, unknown sides and bad times are refused."""
    with pytest.raises(InvalidInput, match=name.replace(".", r"\.")):
        _order(**fields)


def test_open_order_client_id_defaults_to_none_and_is_not_perp() -> None:
    """client_id may be omitted (None); is_perp defaults to False."""
    order = OpenOrder(
        order_id=1,
        symbol=_PERP,
        side=Side.BUY,
        price=Decimal(1),
        original_size=Decimal(1),
        remaining_size=Decimal(0),
        created_at=0,
    )
    assert order.client_id is None
    assert order.is_perp is False


# --- Health --------------------------------------------------------------------------------


def test_health_seed_numbers() -> None:
    """Equity 100, mm 300: maintenance margin −200, shortfall 200."""
    health = _health()
    assert health.maintenance_margin == Decimal(-200)
    assert health.shortfall == Decimal(200)
    assert health.portfolio is None
    assert dict(health.quotes) == {}


@given(health=lst.healths(portfolio=st.none()))
def test_health_shortfall_is_the_positive_part_of_minus_maintenance_margin(health: Health) -> None:
    """shortfall == max(0, −maintenance_margin) and is_liquidatable iff equity < mm (strategy)."""
    assert health.shortfall == max(ZERO, -health.maintenance_margin)
    assert health.maintenance_margin == health.equity - health.mm_required
    assert health.is_liquidatable == (health.equity < health.mm_required)


@_STRATEGY_CHECK
@given(health=lst.healths(liquidatable=True, wallet="W", margin_mode=MarginMode.PORTFOLIO))
def test_healths_strategy_fixed_parameters_are_honoured(health: Health) -> None:
    """healths(wallet=…, liquidatable=True, margin_mode=…) fixes those fields."""
    assert health.wallet == "W"
    assert health.is_liquidatable
    assert health.shortfall > 0
    assert health.margin_mode is MarginMode.PORTFOLIO
    if health.portfolio is not None:
        assert set(health.quotes) <= set(health.portfolio.positions)


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"margin_mode": "standard"}, "Health.margin_mode"),
        ({"margin_mode": "cross"}, "Health.margin_mode"),
        ({"wallet": ""}, "Health.wallet"),
        ({"equity": 100.0}, "Health.equity"),
        ({"equity": Decimal("NaN")}, "Health.equity"),
        ({"mm_required": Decimal(-1)}, "Health.mm_required"),
        ({"mm_required": Decimal("Infinity")}, "Health.mm_required"),
        ({"is_liquidatable": 1}, "Health.is_liquidatable"),
        ({"portfolio": {}}, "Health.portfolio"),
        ({"quotes": {_CALL: (1, 2)}}, r"Health\.quotes\['BTC-20261231-100000-C'\]"),
        ({"quotes": "x"}, r"Health\.quotes must be a mapping"),
    ],
)
def test_health_bad_field_raises_invalid_input_naming_it(
    fields: dict[str, object], name: str
) -> None:
    """Unknown margin modes, NaN, negative mm and wrong types are refused, naming the field."""
    pattern = name if "\\" in name else name.replace(".", r"\.")
    with pytest.raises(InvalidInput, match=pattern):
        _health(**fields)
