"""Standard (per-position) margin: hand values and monotonicity (SPEC §6)."""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liqcore.errors import PlanningError
from liqcore.inputs import Portfolio, Position
from liqcore.margin.standard import StandardMargin, spot_of
from liqcore.strategies import decimals

SPOT = {"BTC": Decimal(105_000)}
MODEL = StandardMargin()


def short(symbol: str, amount: str = "-1", entry: str = "100", pnl: str = "0") -> Position:
    return Position(
        symbol=symbol,
        amount=Decimal(amount),
        entry_price=Decimal(entry),
        unrealized_pnl=Decimal(pnl),
    )


def portfolio(
    *positions: Position, cash: str = "0", spot: Mapping[str, Decimal] = SPOT
) -> Portfolio:
    return Portfolio(
        cash=Decimal(cash), positions={p.symbol: p for p in positions}, spot=dict(spot)
    )


@pytest.mark.parametrize(
    ("symbol", "amount", "expected"),
    [
        # ITM call, S 105 000 > K 100 000: OTM 0 → max(10 500 − 0, 5 250) = 10 500 per unit.
        ("BTC-20261231-100000-C", "-4", "42000"),
        # OTM call, K 110 000: OTM 5 000 → max(10 500 − 5 000, 5 250) = 5 500 per unit.
        ("BTC-20261231-110000-C", "-2", "11000"),
        # Far OTM call, K 150 000: the floor 0.05 × 105 000 = 5 250 applies.
        ("BTC-20261231-150000-C", "-1", "5250"),
        # OTM put, K 100 000 < S: OTM 5 000 → 5 500 per unit.
        ("BTC-20261231-100000-P", "-1", "5500"),
        # ITM put, K 110 000 > S: OTM 0 → 10 500 per unit.
        ("BTC-20261231-110000-P", "-0.5", "5250"),
        # Perp: |amount| × S × 0.03, short or long.
        ("BTC-PERP", "-2", "6300"),
        ("BTC-PERP", "2", "6300"),
        # A long option needs nothing.
        ("BTC-20261231-100000-C", "3", "0"),
    ],
)
def test_position_mm_hand_values(symbol: str, amount: str, expected: str) -> None:
    """Per-position maintenance margin matches the SPEC §6 formulas computed by hand."""
    assert MODEL.position_mm(short(symbol, amount), SPOT) == Decimal(expected)


def test_position_mm_dust_is_zero() -> None:
    """A position at or below MIN_SIZE is ignored."""
    assert MODEL.position_mm(short("BTC-20261231-100000-C", "-0.00000001"), SPOT) == 0


def test_evaluate_seed_portfolio_equity_and_mm() -> None:
    """Seed: cash 500 and −4 calls marked at 100 → equity 100; MM 4 × 10 500."""
    facts = MODEL.evaluate(portfolio(short("BTC-20261231-100000-C", "-4"), cash="500"), 0)
    assert facts.equity == Decimal(100)
    assert facts.mm_required == Decimal(42_000)


def test_evaluate_equity_uses_mark_not_entry() -> None:
    """Equity values positions at their mark: entry 100, PnL −40 on −4 → mark 110."""
    position = short("BTC-20261231-100000-C", "-4", pnl="-40")
    facts = MODEL.evaluate(portfolio(position, cash="500"), 0)
    assert facts.equity == Decimal(60)


def test_evaluate_dust_ignored_in_equity_and_mm() -> None:
    """Dust positions contribute neither equity nor margin."""
    dust = short("BTC-20261231-100000-C", "-0.000000005", entry="1000")
    facts = MODEL.evaluate(portfolio(dust, cash="7"), 0)
    assert facts.equity == Decimal(7)
    assert facts.mm_required == 0


def test_evaluate_missing_spot_raises_planning_error() -> None:
    """No spot for an underlying that needs one → PlanningError naming it."""
    eth = short("ETH-20261231-3000-C", "-1")
    with pytest.raises(PlanningError, match="ETH"):
        MODEL.evaluate(portfolio(eth), 0)


@pytest.mark.parametrize("spot", ["0", "-1"])
def test_evaluate_non_positive_spot_raises_planning_error(spot: str) -> None:
    """A zero or negative spot is not a usable price."""
    with pytest.raises(PlanningError):
        MODEL.evaluate(portfolio(short("BTC-PERP", "1"), spot={"BTC": Decimal(spot)}), 0)


def test_spot_of_returns_usable_spot() -> None:
    """A positive spot is returned as is."""
    assert spot_of(SPOT, "BTC") == Decimal(105_000)


def test_evaluate_unknown_instrument_raises_planning_error() -> None:
    """A symbol that is neither an option nor a perp cannot be valued."""
    with pytest.raises(PlanningError):
        MODEL.evaluate(portfolio(short("BTC-SPOT", "1")), 0)


def test_position_mm_independent_of_caller_context() -> None:
    """A low-precision caller context does not change the margin."""
    position = short("BTC-20261231-100000-C", "-1.2345")
    expected = MODEL.position_mm(position, SPOT)
    with decimal.localcontext() as context:
        context.prec = 3
        assert MODEL.position_mm(position, SPOT) == expected


# --- properties --------------------------------------------------------------------------

strikes = decimals(min_value=1_000, max_value=200_000, places=0)
spots = decimals(min_value=1_000, max_value=200_000, places=2)
amounts = decimals(min_value="0.00000002", max_value=100, places=8)
rates = decimals(min_value=0, max_value="0.5", places=4)


@given(
    strikes,
    st.sampled_from("CP"),
    spots,
    amounts,
    decimals(min_value=0, max_value=1, places=4),
    st.builds(StandardMargin, rate=rates, floor_rate=rates, perp_rate=rates),
)
def test_position_mm_closing_part_of_short_never_raises_mm(
    strike: Decimal,
    kind: str,
    spot: Decimal,
    amount: Decimal,
    share: Decimal,
    model: StandardMargin,
) -> None:
    """Buying back any part of a short option never raises its maintenance margin."""
    symbol = f"BTC-20261231-{strike}-{kind}"
    closed = (amount * share).quantize(Decimal("1e-8"))
    before = model.position_mm(short(symbol, str(-amount)), {"BTC": spot})
    after = model.position_mm(short(symbol, str(closed - amount)), {"BTC": spot})
    assert 0 <= after <= before


@given(
    st.lists(
        st.tuples(strikes, st.sampled_from("CP"), decimals(min_value=-50, max_value=50, places=4)),
        max_size=5,
        unique_by=lambda t: (t[0], t[1]),
    ),
    spots,
)
def test_evaluate_mm_is_the_sum_of_position_mm(
    legs: list[tuple[Decimal, str, Decimal]], spot: Decimal
) -> None:
    """Standard margin is additive: the portfolio's MM is the sum of its positions' MM."""
    positions = [short(f"BTC-20261231-{k}-{c}", str(a)) for k, c, a in legs if a != 0]
    facts = MODEL.evaluate(portfolio(*positions, spot={"BTC": spot}), 0)
    assert facts.mm_required == sum(
        (MODEL.position_mm(p, {"BTC": spot}) for p in positions), Decimal(0)
    )


# --- boundaries (issue 9: each kills a mutant `nox -s mutate` found alive) -----------------

CALL = "BTC-20261231-100000-C"


def test_spot_below_one_is_a_usable_spot() -> None:
    """Only a spot ≤ 0 is refused: 0.5 is a price (kills ``price <= 1``)."""
    assert spot_of({"DOGE": Decimal("0.5")}, "DOGE") == Decimal("0.5")


def test_evaluate_skips_a_position_of_exactly_min_size() -> None:
    """|amount| = MIN_SIZE is dust: no equity, no margin, and no mark price asked of it
    (kills ``< MIN_SIZE``, which would ask and raise)."""
    facts = MODEL.evaluate(portfolio(short(CALL, amount="-0.00000001"), cash="7"), 0)
    assert (facts.equity, facts.mm_required) == (Decimal(7), Decimal(0))


def test_evaluate_goes_on_after_a_dust_position() -> None:
    """A dust position is skipped, not the end of the walk (kills ``break``)."""
    dust = short("BTC-20261231-090000-P", amount="0.000000001")
    alone = MODEL.evaluate(portfolio(short(CALL), cash="7"), 0)
    behind_dust = MODEL.evaluate(portfolio(dust, short(CALL), cash="7"), 0)
    assert behind_dust == alone
    assert alone.mm_required > 0


def test_long_option_below_one_needs_no_margin() -> None:
    """A long option of 0.5 needs nothing (kills ``amount > 1``, which would value it as
    a short with a negative margin)."""
    assert MODEL.position_mm(short(CALL, amount="0.5"), SPOT) == 0


def test_unknown_instrument_is_named_in_the_planning_error() -> None:
    with pytest.raises(PlanningError, match=r"standard margin cannot value 'BTC-FUT'"):
        MODEL.position_mm(short("BTC-FUT"), SPOT)
