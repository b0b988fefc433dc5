"""liqshell.sim.world: seeded generation, every profile dealt, accounts start healthy."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liqcore import Config, codec
from liqcore.instruments import option_symbol
from liqshell.sim.margin import margin_report
from liqshell.sim.world import PROFILES, Market, SimParams, World, new_world, open_orders_of


@settings(max_examples=10)
@given(seed=st.integers(0, 10_000))
def test_new_world_same_seed_identical(seed: int) -> None:
    """Generation is a function of the parameters: same seed, byte-identical world."""
    params = SimParams(accounts=6, seed=seed)
    assert codec.to_json(new_world(params, Config())) == codec.to_json(new_world(params, Config()))


def test_new_world_other_seed_differs() -> None:
    """Another seed gives other books."""
    one = new_world(SimParams(accounts=6, seed=1), Config())
    two = new_world(SimParams(accounts=6, seed=2), Config())
    assert codec.to_json(one.accounts) != codec.to_json(two.accounts)


@settings(max_examples=10)
@given(seed=st.integers(0, 10_000))
def test_new_world_every_account_starts_above_maintenance(seed: int) -> None:
    """No account is liquidatable before the market moves; all profiles are dealt."""
    params = SimParams(accounts=len(PROFILES), seed=seed)
    world = new_world(params, Config())
    market = Market(params)
    assert {a.profile for a in world.accounts.values()} == set(PROFILES)
    for wallet, account in world.accounts.items():
        report = margin_report(world, market, Config(), wallet)
        assert not report.is_liquidatable, (wallet, account.profile)
        assert report.mm_required > 0


def test_new_world_books_hold_short_options_and_perps() -> None:
    """The books are options books (short and long) with some perps, on BTC and ETH."""
    world = new_world(SimParams(accounts=24, seed=1), Config())
    symbols = [(s, h.amount) for a in world.accounts.values() for s, h in a.holdings.items()]
    assert any(option_symbol(s) is not None and amount < 0 for s, amount in symbols)
    assert any(option_symbol(s) is not None and amount > 0 for s, amount in symbols)
    assert any(s.endswith("-PERP") for s, _ in symbols)
    assert {s.split("-")[0] for s, _ in symbols} == {"BTC", "ETH"}


def test_open_orders_of_sorted_by_age_and_id() -> None:
    """The engine's snapshot is in (created_at, order_id) order."""
    world = new_world(SimParams(accounts=24, seed=1), Config())
    for wallet in world.accounts:
        orders = open_orders_of(world, wallet)
        assert list(orders) == sorted(orders, key=lambda o: (o.created_at, o.order_id))


def test_world_codec_round_trip_equal() -> None:
    """The world serializes exactly (Decimals as text, events tagged)."""
    world = new_world(SimParams(accounts=8, seed=3), Config())
    assert codec.structure(codec.unstructure(world), World) == world


@pytest.mark.parametrize(
    ("field", "value"),
    [("accounts", 0), ("minutes", -1), ("shock_pct", Decimal(-95)), ("rebound", Decimal(2))],
)
def test_sim_params_bad_value_raises_naming_field(field: str, value: object) -> None:
    """Invalid parameters are refused with the field's name."""
    with pytest.raises(ValueError, match=field):
        SimParams(**{field: value})  # type: ignore[arg-type]
