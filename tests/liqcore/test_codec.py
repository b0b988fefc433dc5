"""liqcore.codec: round trips, stable tags, strict structuring, deterministic bytes."""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator
from decimal import Decimal

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liqcore import strategies as lst
from liqcore.codec import (
    COMMAND_TAGS,
    EVENT_TAGS,
    MARGIN_MODEL_TAGS,
    TAG_KEY,
    command_from_json,
    event_from_json,
    fast_structure,
    from_json,
    phase_from_json,
    strict_structure,
    structure,
    to_json,
    unstructure,
)
from liqcore.commands import Command, SubmitOrder
from liqcore.config import Config
from liqcore.errors import InvalidConfig, InvalidInput
from liqcore.events import AccountReset, AuctionStarted, Event
from liqcore.inputs import Health, MarginMode, Portfolio, Position, Quote, Side, TimeInForce
from liqcore.instruments import InstrumentSpec, OptionSymbol
from liqcore.margin.base import MarginFacts
from liqcore.margin.portfolio import PortfolioMargin
from liqcore.margin.standard import StandardMargin
from liqcore.planning import OrderPlan, PartialPlan, SliceCandidate
from liqcore.reduce_only import CancelTarget
from liqcore.state import (
    PHASE_TAGS,
    TRANSITIONS,
    AccountState,
    Healthy,
    InLiquidation,
    Liquidated,
    Phase,
    PreLiquidation,
)

# --- strategies for every public type ------------------------------------------------------

_order_plans = st.builds(
    OrderPlan,
    symbol=lst.option_symbols(),
    close_size=lst.sizes(),
    limit_price=lst.prices(),
    expected_mm_relief=lst.money(min_value=0),
)

CASES: dict[str, st.SearchStrategy[object]] = {
    "Position": lst.positions(),
    "Portfolio": lst.portfolios(),
    "Quote": lst.quotes(),
    "Quote(odd)": lst.quotes(odd=True),
    "OpenOrder": lst.open_orders(wallet="0xabc"),
    "Health": lst.healths(),
    "OptionSymbol": lst.option_symbols().map(OptionSymbol.parse),
    "InstrumentSpec": lst.instrument_specs(),
    "StandardMargin": lst.standard_margins(),
    "PortfolioMargin": lst.portfolio_margins(),
    "MarginFacts": lst.margin_facts(),
    "Config": lst.configs(),
    "Phase": lst.phases(),
    "AccountState": lst.account_states(),
    "StateChange": lst.state_changes(),
    "Command": lst.commands(),
    "Event": lst.events(),
    "Transition": st.sampled_from(TRANSITIONS),
    "SliceCandidate": st.builds(
        SliceCandidate,
        symbol=lst.option_symbols(),
        max_close_size=lst.sizes(),
        expected_fill_price=lst.prices(),
        mm_relief_per_unit=lst.prices(),
        equity_cost_per_unit=lst.money(),
    ),
    "OrderPlan": _order_plans,
    "PartialPlan": st.builds(
        PartialPlan,
        orders=st.lists(_order_plans, max_size=3).map(tuple),
        unpriced=st.dictionaries(lst.option_symbols(), st.text(max_size=20), max_size=3),
        model_facts=lst.margin_facts(),
        rounds=st.integers(min_value=0, max_value=3),
        evaluations=st.integers(min_value=0, max_value=100),
    ),
    "CancelTarget": st.builds(
        CancelTarget,
        order_id=st.integers(min_value=0, max_value=10**9),
        client_id=st.one_of(st.none(), st.text(min_size=1, max_size=20)),
    ),
}
"""One strategy per public type (unions cover each of their members)."""


# The heaviest properties run on a quarter of the profile's examples (still 75 in CI).
_PROFILE = settings.default
assert _PROFILE is not None
_HEAVY = settings(max_examples=max(10, _PROFILE.max_examples // 4))


def _required_fields(cls: type) -> list[str]:
    return [a.name for a in attrs.fields(cls) if a.default is attrs.NOTHING and a.init]


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
@given(data=st.data())
def test_from_json_of_to_json_every_public_type_is_identity(case: str, data: st.DataObject) -> None:
    """from_json(to_json(x), type(x)) == x with stable bytes; unstructure(x) is the JSON data
    and structure inverts it."""
    value = data.draw(CASES[case])
    text = to_json(value)
    again = from_json(text, type(value))
    assert again == value
    assert to_json(again) == text
    plain = unstructure(value)
    assert json.loads(text) == plain
    assert structure(plain, type(value)) == value


@given(phase=lst.phases())
def test_phase_from_json_any_phase_round_trips_through_the_union(phase: Phase) -> None:
    """A phase comes back from its JSON through the Phase union, typed or untyped."""
    text = to_json(phase)
    assert phase_from_json(text) == phase
    assert from_json(text, Phase) == phase


@given(command=lst.commands())
def test_command_from_json_any_command_round_trips_through_the_union(command: Command) -> None:
    """A command comes back from its JSON through the Command union (str or bytes)."""
    text = to_json(command)
    assert command_from_json(text) == command
    assert from_json(text.encode(), Command) == command


@given(event=lst.events())
def test_event_from_json_any_event_round_trips_through_the_union(event: Event) -> None:
    """An event comes back from its JSON through the Event union."""
    text = to_json(event)
    assert event_from_json(text) == event
    assert from_json(text, Event) == event


# --- tags ----------------------------------------------------------------------------------


def test_tag_tables_cover_every_member_of_their_unions() -> None:
    """Every member of Phase, Command and Event has a tag, and nothing else does."""
    assert set(PHASE_TAGS) == set(typing.get_args(Phase))
    assert set(COMMAND_TAGS) == set(typing.get_args(Command))
    assert set(EVENT_TAGS) == set(typing.get_args(Event))


def test_tag_tables_are_exactly_the_published_wire_tags() -> None:
    """The wire tags are fixed text (a rename of a class or a tag must fail here)."""
    assert {cls.__name__: tag for cls, tag in COMMAND_TAGS.items()} == {
        "CancelOrder": "cancel_order",
        "SubmitOrder": "submit_order",
        "StartAuction": "start_auction",
        "StopAuction": "stop_auction",
        "PublishStateChange": "publish_state_change",
        "Alert": "alert",
    }
    assert {cls.__name__: tag for cls, tag in EVENT_TAGS.items()} == {
        "OrderRejected": "order_rejected",
        "OrderFailed": "order_failed",
        "AuctionRequested": "auction_requested",
        "AuctionRequestFailed": "auction_request_failed",
        "AuctionStarted": "auction_started",
        "StopRequestFailed": "stop_request_failed",
        "AuctionStopped": "auction_stopped",
        "AuctionSettled": "auction_settled",
        "AccountReset": "account_reset",
    }
    assert {cls.__name__: tag for cls, tag in PHASE_TAGS.items()} == {
        "Healthy": "healthy",
        "PreLiquidation": "pre_liquidation",
        "InLiquidation": "in_liquidation",
        "Liquidated": "liquidated",
    }
    assert {cls.__name__: tag for cls, tag in MARGIN_MODEL_TAGS.items()} == {
        "StandardMargin": "standard",
        "PortfolioMargin": "portfolio",
    }


@pytest.mark.parametrize(
    "table", [PHASE_TAGS, COMMAND_TAGS, EVENT_TAGS, MARGIN_MODEL_TAGS], ids=lambda t: str(len(t))
)
def test_tag_tables_tags_are_unique_and_no_tagged_class_has_a_type_field(
    table: typing.Mapping[type, str],
) -> None:
    """Tags within a union are distinct, and no tagged class has a field the tag would shadow."""
    assert len(set(table.values())) == len(table)
    for cls in table:
        assert TAG_KEY not in {a.name for a in attrs.fields(cls)}


def test_to_json_pre_liquidation_is_exactly_the_published_bytes() -> None:
    """A hand-built PreLiquidation serializes to these exact bytes (tag, field names, Decimals)."""
    phase = PreLiquidation(
        entered_at=10_000,
        mm_shortfall=Decimal("200"),
        target_equity=Decimal("315.00"),
        escalation_deadline=70_000,
        last_reprice_at=10_000,
        active_order_request_ids=("r-1",),
        active_order_client_ids=("liq-W-10000-0",),
        bonus_bps=50,
        pending_full_request_id="start-1",
        pending_full_requested_at=12_000,
        pending_full_margin_needed=Decimal("1.50"),
    )
    assert to_json(phase) == (
        '{"active_order_client_ids":["liq-W-10000-0"],"active_order_request_ids":["r-1"],'
        '"bonus_bps":50,"entered_at":10000,"escalation_deadline":70000,"last_reprice_at":10000,'
        '"mm_shortfall":"200","pending_full_auction_id":null,"pending_full_margin_needed":"1.5",'
        '"pending_full_request_id":"start-1","pending_full_requested_at":12000,'
        '"pending_full_tx_hash":null,"target_equity":"315","type":"pre_liquidation"}'
    )


def test_to_json_submit_order_is_exactly_the_published_bytes() -> None:
    """A hand-built SubmitOrder serializes to these exact bytes (enums by value)."""
    order = SubmitOrder(
        wallet="W",
        symbol="BTC-20261231-100000-C",
        price=Decimal("120.60"),
        size=Decimal("0.00000001"),
        client_id="liq-W-10000-0",
        request_id="req-0",
    )
    assert to_json(order) == (
        '{"client_id":"liq-W-10000-0","price":"120.6","reduce_only":true,"request_id":"req-0",'
        '"side":"buy","size":"0.00000001","symbol":"BTC-20261231-100000-C","tif":"gtc",'
        '"type":"submit_order","wallet":"W"}'
    )


def test_to_json_account_state_nests_the_tagged_phase() -> None:
    """A phase inside an AccountState carries its tag, and the default phase may be omitted."""
    state = AccountState(
        wallet="W",
        margin_mode=MarginMode.PORTFOLIO,
        phase=InLiquidation(auction_id="a-1", entered_at=5),
        updated_at=7,
    )
    data = json.loads(to_json(state))
    assert data["phase"]["type"] == "in_liquidation"
    assert data["margin_mode"] == "portfolio"
    minimal = '{"wallet":"W","margin_mode":"standard","updated_at":1}'
    assert from_json(minimal, AccountState).phase == Healthy()


def test_to_json_field_less_members_are_just_their_tag() -> None:
    """Healthy and AccountReset have no fields: their JSON is the tag alone."""
    assert to_json(Healthy()) == '{"type":"healthy"}'
    assert to_json(AccountReset()) == '{"type":"account_reset"}'


def test_to_json_config_carries_tagged_margin_models_and_sorted_instruments() -> None:
    """Config's models travel tagged; instrument specs as an object with sorted keys."""
    config = Config(
        standard_margin=PortfolioMargin(),
        instruments={"ETH": InstrumentSpec(), "BTC": InstrumentSpec(size_step=Decimal("0.1"))},
    )
    text = to_json(config)
    data = json.loads(text)
    assert data["standard_margin"]["type"] == "portfolio"
    assert data["portfolio_margin"]["type"] == "portfolio"
    assert text.index('"BTC"') < text.index('"ETH"')
    assert from_json(text, Config) == config


# --- determinism ---------------------------------------------------------------------------


@given(value=lst.decimals(min_value=-(10**9), max_value=10**9, places=12), extra=st.integers(0, 6))
def test_to_json_equal_decimals_of_any_scale_give_identical_bytes(
    value: Decimal, extra: int
) -> None:
    """Decimals equal in value (1.5, 1.50, 15E-1) serialize identically, and read back equal."""
    rescaled = value.quantize(Decimal(1).scaleb(-(12 + extra)))
    assert rescaled == value
    first, second = Quote(best_bid=value), Quote(best_bid=rescaled)
    assert to_json(first) == to_json(second)
    assert "E" not in to_json(first)
    assert from_json(to_json(first), Quote) == first


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("1E+2"), '"100"'),
        (Decimal("-0"), '"0"'),
        (Decimal("0E-8"), '"0"'),
        (Decimal("1.500"), '"1.5"'),
        (Decimal("-0.00000001"), '"-0.00000001"'),
        (Decimal("1E+60"), '"1E+60"'),
        (Decimal("1.25E-60"), '"1.25E-60"'),
    ],
)
def test_to_json_decimal_is_written_canonically(value: Decimal, text: str) -> None:
    """Decimal text has no trailing zeros, no -0, and an exponent only for extreme magnitudes."""
    encoded = to_json(Quote(theo=value))
    assert f'"theo":{text}' in encoded
    assert from_json(encoded, Quote).theo == value


@_HEAVY
@given(portfolio=lst.portfolios())
def test_to_json_portfolio_insertion_order_does_not_change_bytes(portfolio: Portfolio) -> None:
    """Mappings built in any order give the same bytes (keys sorted, separators compact)."""
    reordered = Portfolio(
        cash=portfolio.cash,
        positions=dict(reversed(list(portfolio.positions.items()))),
        spot=dict(reversed(list(portfolio.spot.items()))),
    )
    assert reordered == portfolio
    text = to_json(portfolio)
    assert to_json(reordered) == text
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


# --- rejections ----------------------------------------------------------------------------

_QUOTE = '{"best_bid":"1","best_ask":"2","mid":"1.5","theo":"1.4"}'


@pytest.mark.parametrize(
    ("field_json", "words"),
    [
        ("1.5", "decimal string"),
        ("1", "decimal string"),
        ("true", "decimal string"),
        ('"NaN"', "finite"),
        ('"nan"', "finite"),
        ('"sNaN"', "finite"),
        ('"Infinity"', "finite"),
        ('"-Infinity"', "finite"),
        ('"inf"', "finite"),
        ('"1e5e"', "decimal string"),
        ('"1_000"', "decimal string"),
        ('" 1"', "decimal string"),
        ('""', "decimal string"),
        ("[]", "decimal string"),
    ],
)
def test_from_json_bad_decimal_raises_invalid_input_naming_the_field(
    field_json: str, words: str
) -> None:
    """A Decimal field given a JSON number, a non-finite or malformed string is refused."""
    with pytest.raises(InvalidInput, match=rf"Quote\.best_bid: .*{words}"):
        from_json(f'{{"best_bid":{field_json}}}', Quote)


def test_from_json_json_nan_literal_raises_invalid_input() -> None:
    """The non-standard NaN / Infinity literals Python's json accepts are refused."""
    for literal in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(InvalidInput, match=literal):
            from_json(f'{{"best_bid":{literal}}}', Quote)


def test_from_json_unknown_field_raises_invalid_input_naming_it() -> None:
    """An extra key is refused, naming the key and the class."""
    with pytest.raises(InvalidInput, match=r"Quote: unknown field\(s\) 'spread'"):
        from_json(_QUOTE[:-1] + ',"spread":"1"}', Quote)


def test_from_json_unknown_field_in_nested_object_names_the_path() -> None:
    """An extra key deep inside is reported with its full path."""
    text = (
        '{"wallet":"W","margin_mode":"standard","equity":"1","mm_required":"1",'
        '"is_liquidatable":false,"portfolio":{"cash":"0","positions":{"BTC-PERP":'
        '{"symbol":"BTC-PERP","amount":"1","entry_price":"1","leverage":"3"}}}}'
    )
    with pytest.raises(
        InvalidInput, match=r"Health\.portfolio\.positions\['BTC-PERP'\]: .*leverage"
    ):
        from_json(text, Health)


def test_from_json_missing_required_field_raises_invalid_input_naming_it() -> None:
    """A missing required field is named; fields with defaults may be omitted."""
    with pytest.raises(InvalidInput, match=r"Position\.entry_price: missing required field"):
        from_json('{"symbol":"BTC-PERP","amount":"1"}', Position)
    assert from_json('{"symbol":"BTC-PERP","amount":"1","entry_price":"2"}', Position) == Position(
        symbol="BTC-PERP", amount=Decimal(1), entry_price=Decimal(2)
    )


def test_from_json_unknown_tag_raises_invalid_input_listing_known_tags() -> None:
    """An unknown union tag is refused, for the union and for a nested phase."""
    with pytest.raises(InvalidInput, match=r"unknown Command type 'launch_rocket'.*submit_order"):
        from_json('{"type":"launch_rocket"}', Command)
    with pytest.raises(InvalidInput, match=r"unknown Event type 'AuctionStarted'"):
        event_from_json('{"type":"AuctionStarted","auction_id":"a"}')
    state = '{"wallet":"W","margin_mode":"standard","updated_at":1,"phase":{"type":"sick"}}'
    with pytest.raises(InvalidInput, match=r"AccountState\.phase: unknown Phase type 'sick'"):
        from_json(state, AccountState)


def test_from_json_missing_or_wrong_tag_raises_invalid_input() -> None:
    """A tagged class needs its own tag, also when read directly as that class."""
    with pytest.raises(InvalidInput, match="missing the 'type' tag"):
        from_json('{"auction_id":"a"}', AuctionStarted)
    with pytest.raises(
        InvalidInput, match="'type' must be 'auction_started', was 'auction_stopped'"
    ):
        from_json('{"type":"auction_stopped","auction_id":"a"}', AuctionStarted)
    with pytest.raises(InvalidInput, match="missing the 'type' tag of a Phase"):
        phase_from_json("{}")
    with pytest.raises(InvalidInput, match="unknown Phase type 7"):
        phase_from_json('{"type":7}')


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('{"margin_mode":"cross"}', "AccountState.margin_mode"),
        ('{"margin_mode":"STANDARD"}', "AccountState.margin_mode"),
        ('{"margin_mode":1}', "AccountState.margin_mode"),
        ('{"updated_at":"1"}', "AccountState.updated_at"),
        ('{"updated_at":1.0}', "AccountState.updated_at"),
        ('{"updated_at":true}', "AccountState.updated_at"),
        ('{"wallet":5}', "AccountState.wallet"),
        ('{"last_closed_auction_id":["a"]}', "AccountState.last_closed_auction_id"),
        ('{"phase":"healthy"}', "AccountState.phase"),
    ],
)
def test_from_json_wrong_type_or_enum_raises_invalid_input_naming_the_field(
    text: str, path: str
) -> None:
    """Wrong JSON types and unknown enum values are refused, never coerced."""
    base = {"wallet": "W", "margin_mode": "standard", "updated_at": 1}
    data = {**base, **json.loads(text)}
    with pytest.raises(InvalidInput, match=rf"{path}: "):
        from_json(json.dumps(data), AccountState)


def test_from_json_bool_field_refuses_integers_and_strings() -> None:
    """A bool travels as true/false only."""
    for raw in ("1", '"true"', "null"):
        with pytest.raises(InvalidInput, match=r"Config\.enabled"):
            from_json(f'{{"enabled":{raw}}}', Config)


def test_from_json_bad_dates_and_containers_raise_invalid_input() -> None:
    """Dates are ISO text; tuples are arrays; mappings are objects."""
    option = '{"underlying":"BTC","expiry":%s,"strike":"100","kind":"C"}'
    for bad in ('"20261231"', '"2026-02-30"', "20261231", '"2026-12-31T08:00"'):
        with pytest.raises(InvalidInput, match=r"OptionSymbol\.expiry: must be an ISO date"):
            from_json(option % bad, OptionSymbol)
    with pytest.raises(InvalidInput, match=r"PortfolioMargin\.spot_shocks: must be an array"):
        from_json('{"type":"portfolio","spot_shocks":"-0.1"}', PortfolioMargin)
    with pytest.raises(InvalidInput, match=r"spot_shocks\[1\]: must be a decimal string"):
        from_json('{"type":"portfolio","spot_shocks":["-0.1",0.1]}', PortfolioMargin)
    with pytest.raises(InvalidInput, match=r"Portfolio\.spot: must be an object"):
        from_json('{"spot":[["BTC","1"]]}', Portfolio)


def test_from_json_malformed_text_raises_invalid_input() -> None:
    """Text that is not JSON, duplicate keys and non-objects are refused."""
    with pytest.raises(InvalidInput, match="not valid JSON"):
        from_json('{"best_bid":', Quote)
    with pytest.raises(InvalidInput, match="duplicate keys"):
        from_json('{"best_bid":"1","best_bid":"2"}', Quote)
    with pytest.raises(InvalidInput, match="Quote: must be an object"):
        from_json("[]", Quote)
    with pytest.raises(InvalidInput, match="must be str or bytes"):
        from_json(12, Quote)  # type: ignore[call-overload]


def test_from_json_validator_error_keeps_its_class_and_names_the_field() -> None:
    """A constructor's InvalidConfig stays an InvalidConfig; nested ones gain their path."""
    with pytest.raises(InvalidConfig, match=r"Config\.poll_interval_ms must be > 0"):
        from_json('{"poll_interval_ms":0}', Config)
    with pytest.raises(InvalidConfig, match="partial_bonus_max_bps"):
        from_json('{"partial_bonus_start_bps":100,"partial_bonus_max_bps":10}', Config)
    mismatch = '{"positions":{"X":{"symbol":"Y","amount":"1","entry_price":"1"}}}'
    with pytest.raises(InvalidInput, match=r"Portfolio\.positions key 'X' differs"):
        from_json(mismatch, Portfolio)
    with pytest.raises(
        InvalidInput, match=r"Config\.instruments\['BTC'\]: InstrumentSpec\.size_step"
    ):
        from_json('{"instruments":{"BTC":{"size_step":"0"}}}', Config)


def test_from_json_unknown_margin_model_tag_raises_invalid_input() -> None:
    """A margin model needs a known tag."""
    with pytest.raises(
        InvalidInput, match=r"Config\.standard_margin: unknown MarginModel type 'span'"
    ):
        from_json('{"standard_margin":{"type":"span"}}', Config)
    with pytest.raises(InvalidInput, match=r"Config\.portfolio_margin: missing the 'type' tag"):
        from_json('{"portfolio_margin":{}}', Config)


def test_to_json_foreign_margin_model_raises_invalid_input() -> None:
    """A user's own MarginModel has no wire form: serializing its Config says so clearly."""

    class EngineModel:
        def evaluate(self, portfolio: Portfolio, now: int) -> MarginFacts:
            return MarginFacts(equity=Decimal(0), mm_required=Decimal(0))

    config = Config(portfolio_margin=EngineModel())
    with pytest.raises(InvalidInput, match="cannot serialize the margin model"):
        to_json(config)
    with pytest.raises(InvalidInput, match="only the reference models"):
        unstructure(config)


def test_to_json_unsupported_value_raises_invalid_input() -> None:
    """An object without a wire form is refused with InvalidInput, not a TypeError."""
    with pytest.raises(InvalidInput, match="cannot serialize"):
        to_json(object())


def test_from_json_unknown_target_type_raises_invalid_input() -> None:
    """Asking for a type the codec cannot build is refused with InvalidInput."""
    with pytest.raises(InvalidInput):
        from_json("{}", object)


@_HEAVY
@given(data=st.data())
def test_from_json_any_missing_required_field_is_named(data: st.DataObject) -> None:
    """Dropping any required field of any top-level object is refused, naming that field."""
    value = data.draw(st.one_of(lst.commands(), lst.events(), lst.account_states(), lst.healths()))
    plain = unstructure(value)
    assert isinstance(plain, dict)
    required = _required_fields(type(value))
    if not required:
        return
    name = data.draw(st.sampled_from(required))
    del plain[name]
    with pytest.raises(InvalidInput, match=rf"{type(value).__name__}\.{name}: missing required"):
        structure(plain, type(value))


@_HEAVY
@given(data=st.data(), key=st.text(min_size=1, max_size=10))
def test_from_json_any_extra_key_is_refused(data: st.DataObject, key: str) -> None:
    """Adding a key that is not a field of any top-level object is refused, naming the key."""
    value = data.draw(st.one_of(lst.commands(), lst.events(), lst.configs(), lst.portfolios()))
    plain = unstructure(value)
    assert isinstance(plain, dict)
    if key in plain:
        return
    plain[key] = "1"
    with pytest.raises(InvalidInput, match="unknown field"):
        structure(plain, type(value))


@_HEAVY
@given(health=lst.healths(portfolio=lst.portfolios(min_shorts=1)))
def test_from_json_float_anywhere_for_a_decimal_is_refused(health: Health) -> None:
    """A JSON number in place of a nested Decimal (a position's amount) is refused."""
    plain = json.loads(to_json(health))
    positions = plain["portfolio"]["positions"]
    symbol = sorted(positions)[0]
    positions[symbol]["amount"] = float(positions[symbol]["amount"])
    with pytest.raises(InvalidInput, match=rf"Health\.portfolio\.positions\['{symbol}'\]\.amount"):
        structure(plain, Health)


def test_structure_reports_several_errors_at_once() -> None:
    """Every bad field of an object is reported, not only the first."""
    with pytest.raises(InvalidInput) as error:
        structure({"type": "submit_order", "side": "sideways", "price": 1.5}, SubmitOrder)
    message = str(error.value)
    for field in ("wallet", "symbol", "side", "price", "client_id", "request_id"):
        assert f"SubmitOrder.{field}" in message


def test_structure_accepts_side_and_tif_defaults_by_value() -> None:
    """Enums travel by value and defaulted enum fields may be omitted."""
    order = structure(
        {
            "type": "submit_order",
            "wallet": "W",
            "symbol": "BTC-20261231-100000-C",
            "price": "1",
            "size": "1",
            "client_id": "c",
            "request_id": "r",
        },
        SubmitOrder,
    )
    assert order.side is Side.BUY
    assert order.tif is TimeInForce.GTC


def test_structure_liquidated_and_standard_margin_by_tag() -> None:
    """Tagged data of each union member builds that member."""
    assert structure({"type": "liquidated", "auction_id": "a", "liquidated_at": 3}, Phase) == (
        Liquidated(auction_id="a", liquidated_at=3)
    )
    assert structure({"type": "standard", "rate": "0.2"}, StandardMargin) == StandardMargin(
        rate=Decimal("0.2")
    )


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-32-le"])
@given(state=lst.account_states())
@settings(max_examples=20)
def test_from_json_reads_bytes_in_any_json_encoding(encoding: str, state: AccountState) -> None:
    """Bytes are decoded as json.loads decodes them (UTF-8, -16 or -32, detected)."""
    assert from_json(to_json(state).encode(encoding), AccountState) == state


def test_from_json_text_with_a_byte_order_mark_raises_invalid_input() -> None:
    """A str that starts with a BOM is not JSON (as json.loads says), refused cleanly."""
    with pytest.raises(InvalidInput, match="not valid JSON"):
        from_json("\ufeff" + to_json(AccountReset()), AccountReset)


# --- the fast path agrees with the strict one ------------------------------------------------


def _strict_or_error(plain: object, cls: object) -> object:
    try:
        return strict_structure(plain, cls)
    except InvalidInput as error:
        return ("error", type(error), str(error))


@pytest.mark.parametrize("case", sorted(CASES))
@given(data=st.data())
def test_fast_structure_of_any_value_equals_the_strict_path(case: str, data: st.DataObject) -> None:
    """On valid data the fast path builds the very value the strict path builds (twice: the
    second time a memoized class comes from the memo), byte for byte."""
    value = data.draw(CASES[case])
    plain = json.loads(to_json(value))
    strict = strict_structure(plain, type(value))
    for _ in range(2):
        fast = fast_structure(plain, type(value))
        assert fast == strict == value
        assert to_json(fast) == to_json(strict)


_JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=False, allow_infinity=False, width=16),
    st.sampled_from(["", "1", "-0", "1e3", "x", "NaN", "healthy", "buy", "standard", "0xabc"]),
)
_JSON_VALUES = st.one_of(
    _JSON_SCALARS,
    st.lists(_JSON_SCALARS, max_size=2),
    st.dictionaries(st.sampled_from(["type", "x", "symbol"]), _JSON_SCALARS, max_size=2),
)


def _places(plain: object, path: tuple[object, ...] = ()) -> Iterator[tuple[object, ...]]:
    yield path
    if isinstance(plain, dict):
        for key, item in plain.items():
            yield from _places(item, (*path, key))
    elif isinstance(plain, list):
        for index, item in enumerate(plain):
            yield from _places(item, (*path, index))


def _damaged(plain: object, path: tuple[object, ...], how: str, new: object) -> object:
    """``plain`` with the value at ``path`` replaced by ``new``, or (``how="drop"``) its key
    removed, or (``how="add"``) a key ``"x"`` added beside it."""
    if not path:
        return new
    copy = json.loads(json.dumps(plain))
    parent = copy
    for step in path[:-1]:
        parent = parent[step]  # type: ignore[index]
    last = path[-1]
    if how == "drop" and isinstance(parent, dict):
        del parent[last]
    elif how == "add" and isinstance(parent, dict):
        parent.setdefault("x", new)
    else:
        parent[last] = new  # type: ignore[index]
    return copy


@_HEAVY
@given(
    data=st.data(),
    case=st.sampled_from(["Health", "AccountState", "Command", "Event", "OpenOrder", "Phase"]),
    how=st.sampled_from(["replace", "drop", "add"]),
    new=_JSON_VALUES,
)
def test_fast_structure_of_damaged_data_is_never_looser_than_the_strict_path(
    data: st.DataObject, case: str, how: str, new: object
) -> None:
    """Any one value replaced (by any JSON value: a bool for an int, a number for a decimal
    string, an object for a string...), any key dropped or added: where the fast path
    takes the data, the strict path takes it too and builds the same value; structure()
    gives what the strict path gives, value or error."""
    value = data.draw(CASES[case])
    cls = typing.cast(type, Phase if case == "Phase" else Command if case == "Command" else
                      Event if case == "Event" else type(value))  # fmt: skip
    plain = json.loads(to_json(value))
    fast_structure(plain, cls)  # fills the memos with the valid value
    path = data.draw(st.sampled_from(list(_places(plain))))
    damaged = _damaged(plain, path, how, new)
    expected = _strict_or_error(damaged, cls)
    try:
        fast = fast_structure(damaged, cls)
    except InvalidInput:
        pass
    else:
        assert fast == expected
    try:
        combined: object = structure(damaged, cls)
    except InvalidInput as error:
        combined = ("error", type(error), str(error))
    assert combined == expected


def test_fast_structure_memo_tells_an_int_from_a_bool_and_a_float() -> None:
    """``1 == True == 1.0`` in Python, yet a memoized state is not handed out for data that
    differs only so: the strict path refuses it, naming the field."""
    state = AccountState(wallet="0xabc", margin_mode=MarginMode.STANDARD, updated_at=1)
    plain = unstructure(state)
    assert isinstance(plain, dict)
    assert structure(plain, AccountState) == state
    for bad in (True, 1.0):
        with pytest.raises(InvalidInput, match=r"AccountState\.updated_at: must be an integer"):
            structure({**plain, "updated_at": bad}, AccountState)


def test_fast_structure_memo_of_a_textual_class_keys_by_the_items_type_for_type() -> None:
    """A quote (every field a decimal string) is memoized by its items as they are: the
    same text again is the same value; a number, a list or an object where the memoized
    quote had text is not looked up but refused by the strict path, naming the field."""
    quote = Quote(best_bid=Decimal("1"), best_ask=Decimal("2"))
    plain = unstructure(quote)
    assert isinstance(plain, dict)
    first = structure(plain, Quote)
    assert first == quote
    assert structure(dict(plain), Quote) is first  # from the memo
    for bad in (1, 1.0, True, ["1"], {"x": "1"}):
        with pytest.raises(InvalidInput, match=r"Quote\.best_bid"):
            structure({**plain, "best_bid": bad}, Quote)


def test_fast_structure_memo_of_a_complete_state_keys_each_field_type_for_type() -> None:
    """A state with every field present is memoized by a compiled key (text as it is, the
    other fields typed): a phase whose int became a bool or a float, or a state missing a
    field, is not handed the memoized value."""
    state = AccountState(
        wallet="0xabc",
        margin_mode=MarginMode.STANDARD,
        phase=PreLiquidation(
            entered_at=5,
            mm_shortfall=Decimal("1"),
            target_equity=Decimal("2"),
            escalation_deadline=9,
            bonus_bps=1,
        ),
        updated_at=1,
    )
    plain = unstructure(state)
    assert isinstance(plain, dict)
    assert structure(plain, AccountState) is structure(plain, AccountState) == state
    phase = plain["phase"]
    assert isinstance(phase, dict)
    for bad in (True, 1.0):
        with pytest.raises(InvalidInput, match=r"AccountState\.phase"):
            structure({**plain, "phase": {**phase, "bonus_bps": bad}}, AccountState)
    shorter = {key: item for key, item in plain.items() if key != "last_closed_auction_id"}
    assert structure(shorter, AccountState) == state
    assert strict_structure(shorter, AccountState) == state


def test_fast_structure_refuses_what_it_does_not_take_without_a_path() -> None:
    """The fast path alone refuses bad data (structure() then names the path)."""
    with pytest.raises(InvalidInput, match="fast path"):
        fast_structure({"wallet": 1}, AccountState)
    with pytest.raises(InvalidInput, match=r"AccountState\.wallet: must be a string"):
        structure({"wallet": 1, "margin_mode": "standard", "updated_at": 1}, AccountState)
