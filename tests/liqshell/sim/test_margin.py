"""liqshell.sim.margin: the exchange's verdict is the configured reference model's."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from liqcore import Config, StandardMargin
from liqshell.sim.margin import margin_report
from liqshell.sim.world import Market, SimParams, account_portfolio, new_world

PARAMS = SimParams(accounts=8, seed=11)
MARKET = Market(PARAMS)


@settings(max_examples=20)
@given(cash_shift=st.integers(-(10**6), 10**6))
def test_margin_report_any_cash_liquidatable_iff_equity_below_mm(cash_shift: int) -> None:
    """equity and mm come from the model of the account's mode; liquidatable ⟺ equity < mm."""
    config = Config()
    world = new_world(PARAMS, config, MARKET)
    for wallet, account in sorted(world.accounts.items()):
        account.cash += Decimal(cash_shift)
        report = margin_report(world, MARKET, config, wallet)
        facts = config.margin_model(account.margin_mode).evaluate(
            account_portfolio(world, MARKET, account), world.now
        )
        assert (report.equity, report.mm_required) == (facts.equity, facts.mm_required)
        assert report.margin_mode is account.margin_mode
        assert report.is_liquidatable == (report.equity < report.mm_required)


def test_margin_report_follows_the_configured_model() -> None:
    """A stricter standard model asks more margin of the same account."""
    world = new_world(PARAMS, Config(), MARKET)
    wallet = next(w for w, a in sorted(world.accounts.items()) if a.margin_mode.value == "standard")
    loose = margin_report(world, MARKET, Config(), wallet)
    strict = margin_report(
        world, MARKET, Config(standard_margin=StandardMargin(rate=Decimal("0.5"))), wallet
    )
    assert strict.mm_required > loose.mm_required
    assert strict.equity == loose.equity
