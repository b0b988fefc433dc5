"""Target equity, required relief and the bonus ramp (SPEC §5)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from liqcore.numbers import CONTEXT
from liqcore.strategies import decimals
from liqcore.targets import (
    is_above_partial_target,
    partial_bonus_bps,
    required_mm_relief,
    target_equity_from_mm,
)

START, MAX, RAMP, ENTERED = 50, 500, 60_000, 1_000

margins = decimals(min_value=0, max_value=10_000_000, places=8)
equities = decimals(min_value=-10_000_000, max_value=10_000_000, places=8)
buffers = st.integers(min_value=0, max_value=20_000)


def test_target_equity_seed_value_is_315() -> None:
    """mm 300 with a 500 bps buffer targets 315.00 (SPEC §5, seed harness)."""
    assert target_equity_from_mm(Decimal(300), 500) == Decimal("315.00")


def test_target_equity_zero_buffer_is_mm() -> None:
    """Without a buffer the target is the maintenance margin itself."""
    assert target_equity_from_mm(Decimal("123.45"), 0) == Decimal("123.45")


def test_is_above_partial_target_boundary_is_inclusive() -> None:
    """Equity exactly on target counts as above it; a cent below does not."""
    assert is_above_partial_target(Decimal(315), Decimal(300), 500)
    assert not is_above_partial_target(Decimal("314.99"), Decimal(300), 500)


def test_required_mm_relief_seed_value_hand_computed() -> None:
    """300 − 100 × 10000 / 10500 = 4300/21, to CONTEXT's 28 significant digits."""
    relief = required_mm_relief(Decimal(100), Decimal(300), 500)
    assert relief == Decimal("204.7619047619047619047619048")
    assert abs(Fraction(relief) - Fraction(4300, 21)) < Fraction(1, 10**24)


def test_required_mm_relief_above_target_is_zero() -> None:
    """An account already on or above target needs no relief."""
    assert required_mm_relief(Decimal(315), Decimal(300), 500) == 0
    assert required_mm_relief(Decimal(1_000), Decimal(300), 500) == 0


def test_required_mm_relief_negative_equity_needs_more_than_all_mm() -> None:
    """With negative equity even cutting MM to zero is not enough: relief exceeds MM."""
    assert required_mm_relief(Decimal(-105), Decimal(300), 500) == Decimal(400)


def test_partial_bonus_at_entry_is_start() -> None:
    """At the entry instant the bonus is the start value."""
    assert partial_bonus_bps(START, MAX, RAMP, ENTERED, ENTERED) == START


def test_partial_bonus_half_ramp_is_midpoint() -> None:
    """Half way through the ramp the bonus is half way between start and max."""
    assert partial_bonus_bps(START, MAX, RAMP, ENTERED, ENTERED + RAMP // 2) == 275


def test_partial_bonus_is_floored() -> None:
    """One ms into a 60 s ramp of 450 bps is still the start (450 × 1 // 60000 = 0)."""
    assert partial_bonus_bps(START, MAX, RAMP, ENTERED, ENTERED + 1) == START
    assert partial_bonus_bps(START, MAX, RAMP, ENTERED, ENTERED + 134) == START + 1


def test_partial_bonus_full_ramp_is_max() -> None:
    """At the end of the ramp the bonus is the max."""
    assert partial_bonus_bps(START, MAX, RAMP, ENTERED, ENTERED + RAMP) == MAX


def test_partial_bonus_past_ramp_stays_max() -> None:
    """Long after the ramp the bonus stays at the max."""
    assert partial_bonus_bps(START, MAX, RAMP, ENTERED, ENTERED + 10 * RAMP) == MAX


def test_partial_bonus_zero_ramp_is_max() -> None:
    """A zero-length ramp jumps straight to the max."""
    assert partial_bonus_bps(START, MAX, 0, ENTERED, ENTERED) == MAX


def test_partial_bonus_before_entry_is_start() -> None:
    """A clock before the entry instant gives the start value."""
    assert partial_bonus_bps(START, MAX, RAMP, ENTERED, ENTERED - 5_000) == START


@st.composite
def ramps(draw: st.DrawFn) -> tuple[int, int, int, int]:
    start = draw(st.integers(min_value=0, max_value=5_000))
    maximum = draw(st.integers(min_value=start, max_value=10_000))
    ramp = draw(st.integers(min_value=0, max_value=10_000_000))
    entered = draw(st.integers(min_value=0, max_value=2**45))
    return start, maximum, ramp, entered


@given(ramps(), st.integers(min_value=-(2**46), max_value=2**46))
def test_partial_bonus_any_time_within_start_and_max(
    ramp: tuple[int, int, int, int], offset: int
) -> None:
    """The bonus always lies in [start, max]."""
    start, maximum, ramp_ms, entered = ramp
    assert start <= partial_bonus_bps(start, maximum, ramp_ms, entered, entered + offset) <= maximum


@given(
    ramps(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.integers(min_value=0, max_value=2**40),
)
def test_partial_bonus_later_time_never_lower(
    ramp: tuple[int, int, int, int], offset: int, later: int
) -> None:
    """The bonus is non-decreasing in now."""
    start, maximum, ramp_ms, entered = ramp
    now = entered + offset
    earlier_bonus = partial_bonus_bps(start, maximum, ramp_ms, entered, now)
    assert earlier_bonus <= partial_bonus_bps(start, maximum, ramp_ms, entered, now + later)


@given(equities, margins, buffers)
def test_required_mm_relief_above_target_iff_zero(
    equity: Decimal, mm: Decimal, buffer_bps: int
) -> None:
    """No relief is needed exactly when the account is on or above target."""
    relief = required_mm_relief(equity, mm, buffer_bps)
    assert relief >= 0
    if is_above_partial_target(equity, mm, buffer_bps):
        assert relief == 0
    else:
        assert relief > 0


@given(equities, margins, buffers)
def test_required_mm_relief_cut_puts_equity_on_target(
    equity: Decimal, mm: Decimal, buffer_bps: int
) -> None:
    """Cutting MM by the required relief makes the target equal the equity (to 1e-18)."""
    relief = required_mm_relief(equity, mm, buffer_bps)
    if relief > 0:
        target = target_equity_from_mm(CONTEXT.subtract(mm, relief), buffer_bps)
        scale = max(Decimal(1), abs(equity), mm)
        assert abs(target - equity) <= Decimal("1e-18") * scale


# --- the ramp's boundaries (issue 9: each kills a comparison mutant) ------------------------


def test_partial_bonus_one_ms_after_entry_is_on_the_ramp() -> None:
    """Elapsed 1 of a 2 ms ramp from 0 to 10 000 is half-way (kills ``elapsed <= 1``); at
    elapsed 0 it is the start (kills ``elapsed < 0`` only together with the formula)."""
    assert partial_bonus_bps(0, 10_000, 2, ENTERED, ENTERED) == 0
    assert partial_bonus_bps(0, 10_000, 2, ENTERED, ENTERED + 1) == 5_000
    assert partial_bonus_bps(0, 10_000, 2, ENTERED, ENTERED + 2) == 10_000


def test_partial_bonus_at_exactly_ramp_ms_is_max() -> None:
    assert partial_bonus_bps(START, MAX, RAMP, ENTERED, ENTERED + RAMP - 1) == MAX - 1
    assert partial_bonus_bps(START, MAX, RAMP, ENTERED, ENTERED + RAMP) == MAX


def test_partial_bonus_ramp_of_one_ms() -> None:
    """``ramp_ms == 1`` is a ramp, not the ``ramp_ms <= 0`` shortcut: start at entry, max
    one ms later (kills ``ramp_ms <= 1``)."""
    assert partial_bonus_bps(START, MAX, 1, ENTERED, ENTERED) == START
    assert partial_bonus_bps(START, MAX, 1, ENTERED, ENTERED + 1) == MAX
    assert partial_bonus_bps(START, MAX, 1, ENTERED, ENTERED - 1) == START


def test_partial_bonus_zero_ramp_is_max_before_at_and_after_entry() -> None:
    """``ramp_ms == 0`` gives max whatever ``now`` (kills ``ramp_ms < 0``)."""
    for now in (ENTERED - 1, ENTERED, ENTERED + 1):
        assert partial_bonus_bps(START, MAX, 0, ENTERED, now) == MAX


def test_partial_bonus_is_floored_to_an_int() -> None:
    """10 × 1 / 3 floors to 3, an int (kills ``/`` for ``//``)."""
    bonus = partial_bonus_bps(0, 10, 3, ENTERED, ENTERED + 1)
    assert type(bonus) is int
    assert bonus == 3
