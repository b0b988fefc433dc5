"""liqcore.state: phases, their invariants, material_change and the transition table."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from liqcore.errors import InvalidInput
from liqcore.inputs import MarginMode
from liqcore.numbers import ZERO
from liqcore.state import (
    PHASE_TAGS,
    TRANSITIONS,
    AccountState,
    Healthy,
    InLiquidation,
    Liquidated,
    Phase,
    PreLiquidation,
    _account_state_of_valid,
    liquidation_mode,
    material_change,
    phase_tag,
)
from liqcore.strategies import account_states, phases

_PRE = PreLiquidation(
    entered_at=10_000,
    mm_shortfall=Decimal(200),
    target_equity=Decimal(315),
    escalation_deadline=70_000,
    last_reprice_at=10_000,
    active_order_request_ids=("r-0", "r-1"),
    active_order_client_ids=("liq-W-10000-0", "liq-W-10000-1"),
    bonus_bps=50,
)
_IN = InLiquidation(auction_id="a-1", entered_at=5, chain_start_time=6)
_DONE = Liquidated(auction_id="a-1", liquidated_at=9)


def _pre(**fields: Any) -> PreLiquidation:
    return attrs.evolve(_PRE, **fields)


# --- material_change -----------------------------------------------------------------------


@given(phase=phases())
def test_material_change_same_phase_is_not_material(phase: Phase) -> None:
    """A phase compared with itself (or an equal copy) never counts as a change."""
    assert not material_change(phase, phase)
    assert not material_change(phase, attrs.evolve(phase))


@given(previous=phases(), new=phases())
def test_material_change_another_kind_is_material_and_symmetric(
    previous: Phase, new: Phase
) -> None:
    """A change of phase kind is always material; the relation is symmetric."""
    if type(previous) is not type(new):
        assert material_change(previous, new)
    assert material_change(previous, new) == material_change(new, previous)


@pytest.mark.parametrize(
    "changes",
    [
        {"bonus_bps": 51},
        {"active_order_request_ids": ("r-0",), "active_order_client_ids": ("liq-W-10000-0",)},
        {"active_order_request_ids": ("r-0", "r-2"), "active_order_client_ids": ("c", "d")},
        {"pending_full_request_id": "s-1", "pending_full_requested_at": 11_000},
        {"pending_full_auction_id": "a-9"},
        {"pending_full_tx_hash": "0xab"},
        {"pending_full_margin_needed": Decimal(3)},
    ],
)
def test_material_change_pre_liquidation_material_fields(changes: dict[str, object]) -> None:
    """Bonus, the set of active client ids and pending-full ids/hash/margin are material."""
    assert material_change(_PRE, _pre(**changes))


@pytest.mark.parametrize(
    "changes",
    [
        {"entered_at": 1},
        {"escalation_deadline": 1},
        {"last_reprice_at": 20_000},
        {"last_reprice_at": None},
        {"mm_shortfall": Decimal(1)},
        {"target_equity": Decimal(1)},
        {"active_order_request_ids": ("r-9", "r-8")},
        {
            "active_order_request_ids": ("r-1", "r-0"),
            "active_order_client_ids": ("liq-W-10000-1", "liq-W-10000-0"),
        },
    ],
)
def test_material_change_pre_liquidation_timestamps_and_refreshes_are_not(
    changes: dict[str, object],
) -> None:
    """Timestamps, refreshed shortfall/target, request ids and id order alone are not material."""
    assert not material_change(_PRE, _pre(**changes))


def test_material_change_pending_requested_at_alone_is_not_material() -> None:
    """Only the timestamp of a pending full request moving is not material."""
    pending = _pre(pending_full_request_id="s-1", pending_full_requested_at=11_000)
    assert not material_change(pending, attrs.evolve(pending, pending_full_requested_at=12_000))


@pytest.mark.parametrize(
    ("changes", "material"),
    [
        ({"auction_id": "a-2"}, True),
        ({"chain_start_time": None}, True),
        ({"chain_start_time": 7}, True),
        ({"stop_request_id": "x", "stop_requested_at": 8}, True),
        ({"entered_at": 1}, False),
    ],
)
def test_material_change_in_liquidation_rules(changes: dict[str, Any], material: bool) -> None:
    """Auction id, chain start and stop request id are material; entered_at is not."""
    assert material_change(_IN, attrs.evolve(_IN, **changes)) is material


def test_material_change_stop_requested_at_alone_is_not_material() -> None:
    """A stop's timestamp moving alone is not material."""
    stopping = attrs.evolve(_IN, stop_request_id="x", stop_requested_at=8)
    assert not material_change(stopping, attrs.evolve(stopping, stop_requested_at=9))


def test_material_change_liquidated_rules() -> None:
    """Another auction id is material; a different liquidated_at is not."""
    assert material_change(_DONE, attrs.evolve(_DONE, auction_id="a-2"))
    assert not material_change(_DONE, attrs.evolve(_DONE, liquidated_at=1))
    assert not material_change(Healthy(), Healthy())


# --- invariants ----------------------------------------------------------------------------


@given(phase=phases(kinds=("pre_liquidation",)))
def test_pre_liquidation_strategy_ids_are_parallel(phase: Phase) -> None:
    """Generated pre-liquidations keep the two id tuples the same length."""
    assert isinstance(phase, PreLiquidation)
    assert len(phase.active_order_request_ids) == len(phase.active_order_client_ids)


@pytest.mark.parametrize(
    ("requests", "clients"),
    [(("r-0",), ()), ((), ("c-0",)), (("r-0", "r-1"), ("c-0",))],
)
def test_pre_liquidation_unparallel_ids_raise_invalid_input(
    requests: tuple[str, ...], clients: tuple[str, ...]
) -> None:
    """Request and client ids pair index by index: different lengths are refused."""
    with pytest.raises(InvalidInput, match="must be parallel"):
        _pre(active_order_request_ids=requests, active_order_client_ids=clients)


def test_pre_liquidation_pending_request_needs_its_timestamp() -> None:
    """pending_full_requested_at is set exactly when pending_full_request_id is."""
    with pytest.raises(InvalidInput, match="pending_full_requested_at"):
        _pre(pending_full_request_id="s-1")
    with pytest.raises(InvalidInput, match="pending_full_requested_at"):
        _pre(pending_full_requested_at=5)


def test_in_liquidation_stop_request_needs_its_timestamp() -> None:
    """stop_requested_at is set exactly when stop_request_id is."""
    with pytest.raises(InvalidInput, match="stop_requested_at"):
        InLiquidation(auction_id="a", entered_at=1, stop_request_id="x")
    with pytest.raises(InvalidInput, match="stop_requested_at"):
        InLiquidation(auction_id="a", entered_at=1, stop_requested_at=2)


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"entered_at": 1.0}, "PreLiquidation.entered_at"),
        ({"mm_shortfall": Decimal(-1)}, "PreLiquidation.mm_shortfall"),
        ({"mm_shortfall": 200.0}, "PreLiquidation.mm_shortfall"),
        ({"target_equity": Decimal("NaN")}, "PreLiquidation.target_equity"),
        ({"escalation_deadline": "70000"}, "PreLiquidation.escalation_deadline"),
        ({"last_reprice_at": True}, "PreLiquidation.last_reprice_at"),
        ({"bonus_bps": -1}, "PreLiquidation.bonus_bps"),
        (
            {"active_order_request_ids": ["r-0", "r-1"]},
            "PreLiquidation.active_order_request_ids",
        ),
        ({"active_order_client_ids": ("", "x")}, "PreLiquidation.active_order_client_ids"),
        ({"pending_full_auction_id": ""}, "PreLiquidation.pending_full_auction_id"),
        ({"pending_full_margin_needed": 1.5}, "PreLiquidation.pending_full_margin_needed"),
    ],
)
def test_pre_liquidation_bad_field_raises_invalid_input_naming_it(
    changes: dict[str, object], name: str
) -> None:
    """Every PreLiquidation field is validated and named."""
    with pytest.raises(InvalidInput, match=name.replace(".", r"\.")):
        _pre(**changes)


@pytest.mark.parametrize(
    ("cls", "fields", "name"),
    [
        (InLiquidation, {"auction_id": "", "entered_at": 1}, "InLiquidation.auction_id"),
        (InLiquidation, {"auction_id": "a", "entered_at": 1.5}, "InLiquidation.entered_at"),
        (
            InLiquidation,
            {"auction_id": "a", "entered_at": 1, "chain_start_time": "2"},
            "InLiquidation.chain_start_time",
        ),
        (Liquidated, {"auction_id": None, "liquidated_at": 1}, "Liquidated.auction_id"),
        (Liquidated, {"auction_id": "a", "liquidated_at": "1"}, "Liquidated.liquidated_at"),
    ],
)
def test_other_phases_bad_field_raises_invalid_input_naming_it(
    cls: Any, fields: dict[str, object], name: str
) -> None:
    """InLiquidation and Liquidated validate and name their fields."""
    with pytest.raises(InvalidInput, match=name.replace(".", r"\.")):
        cls(**fields)


# --- tags, modes, transitions --------------------------------------------------------------


def test_phase_tag_and_liquidation_mode_of_each_phase() -> None:
    """Tags are the table's; modes are partial for PreLiquidation, full for InLiquidation."""
    expected: list[tuple[Phase, str, str | None]] = [
        (Healthy(), "healthy", None),
        (_PRE, "pre_liquidation", "partial"),
        (_IN, "in_liquidation", "full"),
        (_DONE, "liquidated", None),
    ]
    for phase, tag, mode in expected:
        assert phase_tag(phase) == tag
        assert liquidation_mode(phase) == mode


def test_transitions_have_no_duplicates_and_only_known_tags() -> None:
    """One row per (source, target), both known phase tags, never a self-loop, a cause given."""
    pairs = [(t.source, t.target) for t in TRANSITIONS]
    assert len(pairs) == len(set(pairs))
    tags = set(PHASE_TAGS.values())
    for transition in TRANSITIONS:
        assert transition.source in tags
        assert transition.target in tags
        assert transition.source != transition.target
        assert transition.cause.startswith(("step:", "apply:"))


def test_transitions_connect_every_phase() -> None:
    """Every phase can be entered and left; Healthy → PreLiquidation is the step's entry."""
    tags = set(PHASE_TAGS.values())
    assert {t.source for t in TRANSITIONS} == tags
    assert {t.target for t in TRANSITIONS} == tags
    assert ("healthy", "pre_liquidation") in {(t.source, t.target) for t in TRANSITIONS}


# --- AccountState --------------------------------------------------------------------------


def test_account_state_defaults_and_seed_numbers() -> None:
    """Defaults: Healthy, zero equity and mm, no closed auction; derived margins as spec."""
    state = AccountState(wallet="W", margin_mode=MarginMode.STANDARD, updated_at=1)
    assert state.phase == Healthy()
    assert (state.equity, state.mm_required, state.last_closed_auction_id) == (ZERO, ZERO, None)
    seed = attrs.evolve(state, equity=Decimal(100), mm_required=Decimal(300), phase=_PRE)
    assert seed.maintenance_margin == Decimal(-200)
    assert seed.shortfall == Decimal(200)
    assert seed.liquidation_mode == "partial"


@given(state=account_states())
def test_account_state_shortfall_is_positive_part_of_minus_maintenance_margin(
    state: AccountState,
) -> None:
    """shortfall == max(0, mm − equity); maintenance_margin == equity − mm."""
    assert state.maintenance_margin == state.equity - state.mm_required
    assert state.shortfall == max(ZERO, state.mm_required - state.equity)
    assert state.liquidation_mode == liquidation_mode(state.phase)


@given(data=st.data(), wallet=st.text(min_size=1, max_size=8))
def test_account_states_strategy_honours_the_wallet(data: st.DataObject, wallet: str) -> None:
    """account_states(wallet=…) is built for that wallet, its liquidation ids too."""
    state = data.draw(account_states(wallet=wallet))
    assert state.wallet == wallet
    if isinstance(state.phase, PreLiquidation):
        for client_id in state.phase.active_order_client_ids:
            assert client_id.startswith(f"liq-{wallet}-")


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"wallet": ""}, "AccountState.wallet"),
        ({"margin_mode": "standard"}, "AccountState.margin_mode"),
        ({"phase": "healthy"}, "AccountState.phase"),
        ({"phase": None}, "AccountState.phase"),
        ({"equity": 1.0}, "AccountState.equity"),
        ({"mm_required": Decimal(-1)}, "AccountState.mm_required"),
        ({"updated_at": 1.0}, "AccountState.updated_at"),
        ({"last_closed_auction_id": ""}, "AccountState.last_closed_auction_id"),
    ],
)
def test_account_state_bad_field_raises_invalid_input_naming_it(
    fields: dict[str, object], name: str
) -> None:
    """Wrong types, unknown phases and negative mm are refused, naming the field."""
    base: dict[str, object] = {"wallet": "W", "margin_mode": MarginMode.STANDARD, "updated_at": 1}
    with pytest.raises(InvalidInput, match=name.replace(".", r"\.")):
        AccountState(**{**base, **fields})  # type: ignore[arg-type]


@given(state=account_states())
def test_account_state_of_valid_equals_validated_construction(state: AccountState) -> None:
    """Built from valid values without re-running validators, an AccountState equals the
    validated one field by field (it takes exactly AccountState's fields: a field added to
    the class but not to the builder fails here)."""
    fields = {a.name: getattr(state, a.name) for a in attrs.fields(AccountState)}
    built = _account_state_of_valid(**fields)
    assert type(built) is AccountState
    assert built == AccountState(**fields)
    assert attrs.asdict(built, recurse=False) == fields
    assert hash(built) == hash(state)
    assert repr(built) == repr(state)


# --- exact answers and messages (issue 9: each kills a mutant `nox -s mutate` found) -----


def test_material_change_between_two_healthy_is_false_not_none() -> None:
    assert material_change(Healthy(), Healthy()) is False


def _bare_pre(**fields: Any) -> PreLiquidation:
    base: dict[str, Any] = {
        "entered_at": 0,
        "mm_shortfall": Decimal(0),
        "target_equity": Decimal(0),
        "escalation_deadline": 1,
        "bonus_bps": 0,
    }
    return PreLiquidation(**{**base, **fields})


def test_pre_liquidation_invariant_messages_name_the_fields() -> None:
    with pytest.raises(InvalidInput) as unequal:
        _bare_pre(active_order_request_ids=("r",))
    assert str(unequal.value) == (
        "PreLiquidation.active_order_request_ids and active_order_client_ids must be "
        "parallel, had 1 and 0 entries"
    )
    with pytest.raises(InvalidInput) as pending:
        _bare_pre(pending_full_request_id="r")
    assert str(pending.value) == (
        "PreLiquidation.pending_full_requested_at must be set exactly when "
        "pending_full_request_id is"
    )


def test_in_liquidation_invariant_message_names_the_fields() -> None:
    with pytest.raises(InvalidInput) as stop:
        InLiquidation(auction_id="a", entered_at=0, stop_request_id="s")
    assert str(stop.value) == (
        "InLiquidation.stop_requested_at must be set exactly when stop_request_id is"
    )
