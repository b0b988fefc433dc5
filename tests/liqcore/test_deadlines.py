"""liqcore.deadlines: overstay, the stuck-state detector, and step's STUCK alert."""

from __future__ import annotations

from decimal import Decimal

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import liqcore
from liqcore import strategies as lst
from liqcore.commands import Alert, AlertCode
from liqcore.config import Config
from liqcore.deadlines import Overstay, OverstayKind, overstay
from liqcore.errors import InvalidInput
from liqcore.inputs import MarginMode
from liqcore.state import AccountState, Healthy, InLiquidation, Liquidated, Phase, PreLiquidation

CONFIG = Config(full_escalation_timeout_ms=60_000, chain_start_timeout_ms=30_000)


def account(phase: Phase, *, equity: str = "100", mm: str = "300") -> AccountState:
    return AccountState(
        wallet="W",
        margin_mode=MarginMode.STANDARD,
        phase=phase,
        equity=Decimal(equity),
        mm_required=Decimal(mm),
        updated_at=0,
    )


def pre(**fields: object) -> PreLiquidation:
    values: dict[str, object] = {
        "entered_at": 0,
        "mm_shortfall": Decimal(200),
        "target_equity": Decimal(315),
        "escalation_deadline": 60_000,
        "bonus_bps": 50,
        **fields,
    }
    return PreLiquidation(**values)  # type: ignore[arg-type]


# (phase, deadline, kind): the deadline is the last instant that does not overstay.
CASES = [
    (pre(), 60_000, OverstayKind.ESCALATION_OVERDUE),
    (
        pre(pending_full_request_id="r", pending_full_requested_at=10_000),
        70_000,
        OverstayKind.REQUEST_STALE,
    ),
    (
        pre(
            pending_full_request_id="r",
            pending_full_requested_at=10_000,
            pending_full_auction_id="A",
        ),
        70_000,
        OverstayKind.REQUEST_STALE,
    ),
    (InLiquidation(auction_id="A", entered_at=5_000), 35_000, OverstayKind.CHAIN_START_MISSING),
    (
        InLiquidation(
            auction_id="A",
            entered_at=0,
            chain_start_time=1,
            stop_request_id="s",
            stop_requested_at=2_000,
        ),
        62_000,
        OverstayKind.STOP_STALE,
    ),
]


@pytest.mark.parametrize(("phase", "deadline", "kind"), CASES)
def test_overstay_fires_strictly_after_the_deadline_naming_kind_and_since(
    phase: Phase, deadline: int, kind: OverstayKind
) -> None:
    """Nothing overstays up to the deadline; one ms later the kind and the deadline are told."""
    state = account(phase)
    assert overstay(state, deadline, CONFIG) is None
    assert overstay(state, deadline + 1, CONFIG) == Overstay(kind=kind, since=deadline)
    assert overstay(state, 10**12, CONFIG) == Overstay(kind=kind, since=deadline)


@pytest.mark.parametrize(
    "phase",
    [
        Healthy(),
        Liquidated(auction_id="A", liquidated_at=0),
        InLiquidation(auction_id="A", entered_at=0, chain_start_time=1),
    ],
)
def test_overstay_of_phases_without_a_deadline_is_none(phase: Phase) -> None:
    """Healthy, Liquidated and a running auction with no stop wait for nothing."""
    assert not overstay(account(phase), 10**12, CONFIG)


def test_overstay_of_pre_liquidation_at_or_above_maintenance_is_none() -> None:
    """Past the deadline, an account no longer below maintenance is not due to escalate."""
    assert overstay(account(pre(), equity="300", mm="300"), 10**9, CONFIG) is None


def test_overstay_of_pre_liquidation_with_no_maintenance_requirement_is_none() -> None:
    """Past the deadline, an account with no requirement left (no position needs margin)
    and a negative equity has nothing to auction: the engine calls it not liquidatable and
    it is not due to escalate (DST seed 6998: a stale portfolio still showed the short the
    account had closed, so the step could not recover it yet, and STUCK fired)."""
    assert overstay(account(pre(), equity="-336.5", mm="0"), 10**9, CONFIG) is None
    assert overstay(account(pre(), equity="-336.5", mm="0.01"), 10**9, CONFIG)


def test_overstay_describe_says_kind_since_and_for_how_long() -> None:
    """The alert text names the kind, the deadline and how long ago it passed."""
    found = Overstay(kind=OverstayKind.STOP_STALE, since=1_000)
    assert found.describe(1_500) == "stop_stale since 1000 (500 ms)"


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((None, 0, CONFIG), "state"),
        ((account(Healthy()), 1.0, CONFIG), "now"),
        ((account(Healthy()), 0, None), "config"),
    ],
)
def test_overstay_bad_arguments_raise_invalid_input(args: tuple[object, ...], name: str) -> None:
    """Broken contracts are refused, naming the argument."""
    with pytest.raises(InvalidInput, match=f"overstay {name}"):
        overstay(*args)  # type: ignore[arg-type]


def test_overstay_is_exported_at_the_top_level() -> None:
    """liqcore.overstay, liqcore.Overstay and liqcore.OverstayKind are the public names."""
    assert liqcore.overstay is overstay
    assert liqcore.Overstay is Overstay
    assert liqcore.OverstayKind is OverstayKind


@given(state=lst.account_states(), now=st.integers(-(10**13), 10**13), config=lst.configs())
def test_overstay_is_monotone_in_time(state: AccountState, now: int, config: Config) -> None:
    """Once a state overstays it keeps overstaying the same deadline as time passes."""
    found = overstay(state, now, config)
    later = overstay(state, now + 1, config)
    if found:
        assert later == found
    if later and not found:
        assert later.since == now


@given(
    state=lst.account_states(),
    health=lst.healths(wallet="W"),
    now=st.integers(0, 10**13),
    config=lst.configs(),
)
def test_step_alerts_stuck_exactly_when_its_new_state_overstays(
    state: AccountState, health: liqcore.Health, now: int, config: Config
) -> None:
    """step raises one STUCK alert iff the state it leaves overstays at now."""
    state = attrs.evolve(state, wallet="W")
    new, commands = liqcore.step(state, health, (), now, config)
    stuck = [c for c in commands if isinstance(c, Alert) and c.code is AlertCode.STUCK]
    found = overstay(new, now, config)
    assert len(stuck) == (1 if found else 0)
    if found:
        assert stuck[0].message == found.describe(now)
