"""liqcore.reasons: the reasons of a decision, from step's inputs and outputs."""

from __future__ import annotations

from decimal import Decimal

from liqcore import Config, Health, MarginMode
from liqcore.machine import step
from liqcore.reasons import ReasonCode, explain

NOW = 1_700_000_000_000


def _health(equity: str, mm: str, *, liquidatable: bool = True) -> Health:
    return Health(
        wallet="0xw",
        margin_mode=MarginMode.STANDARD,
        equity=Decimal(equity),
        mm_required=Decimal(mm),
        is_liquidatable=liquidatable,
    )


def test_negative_equity_enters_and_escalates_saying_why() -> None:
    config = Config()
    health = _health("-5", "100")
    state, commands = step(None, health, (), NOW, config)
    found = explain(None, health, (), NOW, config, state, commands)
    assert found.transition == "healthy -> pre_liquidation"
    codes = [reason.code for reason in found.reasons]
    assert codes[:2] == [ReasonCode.ENTERED, ReasonCode.ESCALATED]
    assert "shortfall 105.00" in found.reasons[0].text
    assert "equity -5.00 is below zero" in found.reasons[1].text


def test_a_shortfall_below_the_threshold_leaves_the_account_healthy_saying_so() -> None:
    config = Config(min_shortfall_threshold=Decimal(50))
    health = _health("90", "100")
    state, commands = step(None, health, (), NOW, config)
    found = explain(None, health, (), NOW, config, state, commands)
    assert found.transition is None
    assert [reason.code for reason in found.reasons] == [ReasonCode.NOT_ENTERED]
    assert "below the threshold 50.00" in found.reasons[0].text


def test_explain_is_deterministic() -> None:
    config = Config()
    health = _health("-5", "100")
    state, commands = step(None, health, (), NOW, config)
    assert explain(None, health, (), NOW, config, state, commands) == explain(
        None, health, (), NOW, config, state, commands
    )
