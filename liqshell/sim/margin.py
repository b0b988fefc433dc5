"""The simulated exchange's margin engine: liqcore's reference models, as configured.

Each account is valued by ``config.margin_model(account.margin_mode)`` — the same model
the watcher plans with, so ``MARGIN_MODEL_MISMATCH`` never fires in a simulation unless a
run deliberately configures the two differently.
"""

from __future__ import annotations

from decimal import Decimal

from liqcore import Config
from liqshell.ports import MarginReport
from liqshell.sim.world import Market, World, account_portfolio

__all__ = ["margin_report"]


def margin_report(world: World, market: Market, config: Config, wallet: str) -> MarginReport:
    """Equity, maintenance margin and the verdict for ``wallet`` now.

    Raises ``KeyError`` for an unknown wallet and :class:`~liqcore.PlanningError` when the
    model cannot value the account.
    """
    account = world.accounts[wallet]
    portfolio = account_portfolio(world, market, account)
    facts = config.margin_model(account.margin_mode).evaluate(portfolio, world.now)
    mm_required = max(Decimal(0), facts.mm_required)
    return MarginReport(
        margin_mode=account.margin_mode,
        equity=facts.equity,
        mm_required=mm_required,
        is_liquidatable=mm_required > 0 and facts.equity < mm_required,
    )
