"""liqcore.planning.greedy's searches for a size under a non-linear margin model: the
golden-section search for the peak of a concave gain (``_peak_unit``) and the search for the
smallest size meeting a need (``_searched_size``), checked directly against brute force."""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_CEILING, Decimal
from itertools import product

import pytest

from liqcore.numbers import CONTEXT, MIN_SIZE
from liqcore.planning.greedy import _peak_unit, _searched_size

Gain = Callable[[int], Decimal]


def concave(peak: int, plateau: int, up: Decimal, down: Decimal, offset: Decimal) -> Gain:
    """Rises by ``up`` a unit up to ``peak``, stays flat for ``plateau`` units, then falls
    by ``down`` a unit; ``offset`` lower everywhere."""

    def gain(unit: int) -> Decimal:
        rise = up * min(unit, peak)
        fall = down * max(0, unit - peak - plateau)
        return rise - fall - offset

    return gain


SLOPES = [
    (Decimal(2), Decimal(1)),
    (Decimal(1), Decimal(3)),
    (Decimal("0.5"), Decimal("0.5")),  # falls as fast as it rose: a tie across the peak
]


def recorded(gain: Gain) -> tuple[Gain, list[int]]:
    probes: list[int] = []

    def at(unit: int) -> Decimal:
        probes.append(unit)
        return gain(unit)

    return at, probes


def test_peak_unit_is_the_smallest_highest_unit_of_a_concave_gain() -> None:
    """Every bracket up to 30 units wide, every peak in it, plateaus of 0 to 2 units (the
    smallest unit of a plateau wins), rising or falling at either end."""
    for low, width, plateau, (up, down) in product((0, 1, 7), range(31), range(3), SLOPES):
        high = low + width
        for peak in range(low, high + 1):
            gain = concave(peak, plateau, up, down, Decimal(0))
            assert _peak_unit(gain, low, high) == peak, (low, high, peak, plateau, up, down)


@pytest.mark.parametrize("width", [100, 1_000, 10**6, 10**12])
def test_peak_unit_finds_the_peak_of_wide_brackets(width: int) -> None:
    """Peaks at either end, next to either end, at the middle, and on a plateau."""
    low = 1
    high = low + width
    for peak, plateau in product(
        (low, low + 1, low + 2, (low + high) // 2, high - 2, high - 1, high), (0, 1, 2)
    ):
        gain = concave(peak, plateau, Decimal(1), Decimal(2), Decimal(0))
        assert _peak_unit(gain, low, high) == peak, (peak, plateau)


def test_peak_unit_probes_keep_the_golden_section_of_the_bracket() -> None:
    """Each evaluation keeps 0.618034 of the bracket: on [10**6, 2·10**6] the first probes
    are at 0.381966 and 0.618034 of it; a gain still rising there moves the bracket to
    [1 381 966, 2·10**6] and probes 0.618034 of that (1 763 932), one still falling moves it
    to [10**6, 1 618 034] and probes 0.381966 of that (1 236 068)."""
    low, high = 10**6, 2 * 10**6
    rising, probes = recorded(Decimal)
    assert _peak_unit(rising, low, high) == high
    assert probes[:4] == [1_381_966, 1_618_034, 1_618_034, 1_763_932]
    falling, probes = recorded(lambda unit: Decimal(-unit))
    assert _peak_unit(falling, low, high) == low
    assert probes[:4] == [1_381_966, 1_618_034, 1_236_068, 1_381_966]


def test_peak_unit_evaluations_grow_with_the_logarithm_of_the_bracket() -> None:
    """A million units are searched with about 2 × 28 evaluations (0.618**28 × 10**6 < 3),
    then the last few units are scanned: far from the 64 steps the search is bounded by."""
    at, probes = recorded(concave(123_457, 0, Decimal(1), Decimal(1), Decimal(0)))
    assert _peak_unit(at, 1, 10**6 + 1) == 123_457
    assert len(probes) <= 2 * 28 + 2 * 7


def units_of(size: Decimal, step: Decimal) -> int:
    return int((size / step).to_integral_value(rounding=ROUND_CEILING))


def brute_force(gain: Gain, units: int, tail: int, needed: Decimal) -> int | None:
    """The smallest unit whose gain meets ``min(needed, best)``; ``best`` is the gain of the
    whole position when leaving ``tail`` units (more than MIN_SIZE) would help less, else
    the highest gain. ``None`` when ``best <= 0``."""
    gains = {unit: gain(unit) for unit in range(1, units + 1)}
    if units > tail and gains[units - tail] < gains[units]:
        best = gains[units]
    else:
        best = max(gains.values())
    if best <= 0:
        return None
    wanted = min(needed, best)
    return min(unit for unit, value in gains.items() if value >= wanted)


NEEDS = [Decimal(v) for v in ("0.5", "1", "1.5", "3", "100")]


@pytest.mark.parametrize(
    ("step", "fraction", "tail"),
    [
        (Decimal(1), Decimal(0), 1),
        (Decimal(1), Decimal("0.5"), 1),
        (MIN_SIZE, Decimal(0), 2),
        (Decimal(2) * MIN_SIZE, Decimal(0), 1),
    ],
)
def test_searched_size_is_the_smallest_meeting_the_need_or_the_best(
    step: Decimal, fraction: Decimal, tail: int
) -> None:
    """Positions of 1 to 7 steps (the last one partial when ``fraction``), concave gains with
    every peak, plateau and offset, needs met exactly or not at all: the smallest size whose
    gain meets the need, else the smallest with the highest gain (with MIN_SIZE steps the
    whole position is compared with two steps less, one would leave dust), None when no size
    gains anything."""
    for units, plateau, (up, down), offset in product(
        range(1, 8), range(3), SLOPES, (Decimal(0), Decimal(1))
    ):
        available = units * step - fraction * step
        for peak in range(units + 1):
            by_unit = concave(peak, plateau, up, down, offset)

            def gain(size: Decimal, by_unit: Gain = by_unit) -> Decimal:
                return by_unit(units_of(size, step))

            for needed in NEEDS:
                expected = brute_force(by_unit, units, tail, needed)
                found = _searched_size(gain, available, step, needed)
                case = (units, peak, plateau, up, down, offset, needed)
                if expected is None:
                    assert found is None, case
                else:
                    assert found == min(expected * step, available), case


def test_searched_size_meets_a_need_exactly_in_a_huge_position() -> None:
    """10 000 units in MIN_SIZE steps (10**12 steps, more than 32 halvings tell apart): a
    linear gain is met at exactly its size by false position, a gain with a kink just past
    it, a logarithmic gain (e**7.3 − 1 to the step), the peak of one that falls after 7 000,
    and the smallest size of the best gain when
    the last step gains nothing more."""

    def linear(size: Decimal) -> Decimal:
        return size

    available = Decimal(10_000)
    needed = Decimal("3123.45678901")
    assert _searched_size(linear, available, MIN_SIZE, needed) == needed
    assert _searched_size(linear, available, MIN_SIZE, Decimal(20_000)) == available

    def kinked(size: Decimal) -> Decimal:
        return 3 * min(size, Decimal(1_000)) + max(Decimal(0), size - 1_000)

    assert _searched_size(kinked, available, MIN_SIZE, Decimal("4567.89012345")) == Decimal(
        "2567.89012345"
    )

    def peaked(size: Decimal) -> Decimal:
        return min(size, Decimal(7_000)) - 2 * max(Decimal(0), size - 7_000)

    assert _searched_size(peaked, available, MIN_SIZE, Decimal(20_000)) == Decimal(7_000)

    def logarithmic(size: Decimal) -> Decimal:
        return CONTEXT.ln(1 + size)

    expected = CONTEXT.subtract(CONTEXT.exp(Decimal("7.3")), Decimal(1))
    assert _searched_size(logarithmic, available, MIN_SIZE, Decimal("7.3")) == expected.quantize(
        MIN_SIZE, rounding=ROUND_CEILING
    )

    def flat_at_the_end(size: Decimal) -> Decimal:
        return min(size, available - MIN_SIZE)

    assert _searched_size(flat_at_the_end, available, MIN_SIZE, Decimal(20_000)) == (
        available - MIN_SIZE
    )
    assert _searched_size(peaked, available, MIN_SIZE, Decimal("6999.99999999")) == Decimal(
        "6999.99999999"
    )


def test_searched_size_compares_the_whole_with_one_step_less_above_min_size() -> None:
    """Whole-unit steps, a gain of −1, 0.5, −0.5 for 1, 2, 3 units: one step less than the
    whole gains more, so the peak (2) is searched for and planned, though the whole gains
    more than two steps less and gains nothing itself."""
    gains = {1: Decimal(-1), 2: Decimal("0.5"), 3: Decimal("-0.5")}

    def gain(size: Decimal) -> Decimal:
        return gains[units_of(size, Decimal(1))]

    assert _searched_size(gain, Decimal(3), Decimal(1), Decimal(10)) == Decimal(2)
