"""liqcore.planning.portfolio's linear programme, piece by piece: the starting inverse, the
ratio tests, the pivot, and the cheapest closes traced on small programmes whose optimum is
worked out by hand (a stand-in for the prepared model gives exact scenario losses)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, localcontext
from typing import cast

import attrs

from liqcore.margin.portfolio import PortfolioMargin
from liqcore.numbers import CONTEXT, ONE, ZERO
from liqcore.planning import portfolio as programme
from liqcore.planning.simulation import _Simulation

D = Decimal


def test_inverse_of_a_basis_with_pivots_other_than_one() -> None:
    """Gauss–Jordan divides each pivot row by its pivot: the inverse times the matrix is
    the identity, for pivots 2 and −4 too."""
    matrix = [[D(2), D(1)], [D(0), D(-4)]]
    inverse = programme._inverse(matrix)
    assert inverse == [[D("0.5"), D("0.125")], [D(0), D("-0.25")]]
    for i in range(2):
        for j in range(2):
            product = sum((inverse[i][k] * matrix[k][j] for k in range(2)), ZERO)
            assert product == (ONE if i == j else ZERO)


def free(count: int, uppers: Mapping[int, Decimal] | None = None) -> list[programme._Column]:
    """``count`` columns without entries, each with its upper bound from ``uppers``."""
    bounds = uppers or {}
    return [(ZERO, bounds.get(index), ()) for index in range(count)]


def test_blocking_takes_the_smallest_distance_not_the_smallest_column() -> None:
    """Column 5 reaches zero after Δθ = 1, column 0 after 2: column 5's row blocks."""
    binv = [[D(0), D(1)], [D(0), D(1)]]  # both values fall at rate 1
    block = programme._blocking(free(6), [5, 0], binv, [D(1), D(2)])
    assert block == (D(1), 0, False)


def test_blocking_breaks_a_tie_by_the_smallest_column() -> None:
    """Two values reach zero together: the row of the smaller column index blocks (Bland)."""
    binv = [[D(0), D(1)], [D(0), D(1)]]
    assert programme._blocking(free(4), [3, 1], binv, [D(1), D(1)]) == (D(1), 1, False)


def test_blocking_none_when_no_value_moves() -> None:
    binv = [[D(1), D(0)], [D(0), D(1)]]
    binv[1][1] = ZERO  # no value depends on θ
    assert programme._blocking(free(2), [0, 1], binv, [D(1), D(1)]) is None


def test_blocking_rates_at_the_tolerance_count_as_zero() -> None:
    """A value falling (or, below its upper bound, rising) at exactly 1e-18 per unit of θ
    does not move; one moving at 2e-18 does."""
    tolerance = programme._TOLERANCE
    uppers = {0: D(5)}
    for rate in (tolerance, -tolerance):
        assert programme._blocking(free(1, uppers), [0], [[-rate]], [D(1)]) is None
    assert programme._blocking(free(1, uppers), [0], [[2 * tolerance]], [D(1)]) is not None
    rising = programme._blocking(free(1, uppers), [0], [[-2 * tolerance]], [D(1)])
    assert rising is not None
    assert rising[2] is True


def test_blocking_distance_to_an_upper_bound_is_what_is_left_below_it() -> None:
    """A value of 2 rising at rate 1 towards its upper bound 5 blocks after Δθ = 3."""
    assert programme._blocking(free(1, {0: D(5)}), [0], [[D(-1)]], [D(2)]) == (D(3), 0, True)


def entering(
    columns: list[programme._Column],
    *,
    at_upper: set[int] | None = None,
    to_upper: bool = False,
) -> int | None:
    """The dual ratio test on a one-row programme whose basic column is column 0."""
    return programme._entering(
        columns,
        [0],
        binv=[[ONE]],
        position={0: 0},
        at_upper=set() if at_upper is None else at_upper,
        leaving_row=0,
        to_upper=to_upper,
    )


def test_entering_below_a_lower_bound_wants_a_negative_alpha() -> None:
    """The leaving value falls to its lower bound: only a column at zero whose alpha is
    negative can enter (by more than the tolerance), or one at its upper bound whose alpha
    is positive."""
    tolerance = programme._TOLERANCE
    basic: programme._Column = (ZERO, None, ((0, ONE),))
    assert entering([basic, (ONE, D(9), ((0, -tolerance),))]) is None
    assert entering([basic, (ONE, D(9), ((0, ONE),))]) is None
    assert entering([basic, (ONE, D(9), ((0, -ONE),))]) == 1
    assert entering([basic, (ONE, D(9), ((0, ONE),))], at_upper={1}) == 1
    assert entering([basic, (ONE, D(9), ((0, tolerance),))], at_upper={1}) is None
    assert entering([basic, (ONE, D(9), ((0, -ONE),))], at_upper={1}) is None


def test_entering_past_an_upper_bound_wants_a_positive_alpha() -> None:
    """The leaving value rises to its upper bound: the signs turn over."""
    tolerance = programme._TOLERANCE
    basic: programme._Column = (ZERO, D(9), ((0, ONE),))
    assert (
        entering([basic, (ONE, D(9), ((0, -ONE),)), (ONE, D(9), ((0, ONE),))], to_upper=True) == 2
    )
    assert entering([basic, (ONE, D(9), ((0, tolerance),))], to_upper=True) is None
    assert entering([basic, (ONE, D(9), ((0, -ONE),))], at_upper={1}, to_upper=True) == 1
    assert entering([basic, (ONE, D(9), ((0, ONE),))], at_upper={1}, to_upper=True) is None
    assert entering([basic, (ONE, D(9), ((0, -tolerance),))], at_upper={1}, to_upper=True) is None
    assert (
        entering([basic, (ONE, D(9), ((0, tolerance / 10),))], at_upper={1}, to_upper=True) is None
    )


def test_entering_least_reduced_cost_per_alpha_against_the_duals() -> None:
    """The basic column costs 2, so the row's dual is 2: the reduced costs are 1 − 2 × (−1)
    = 3 (ratio 3) and 3 − 2 × (−2) = 7 (ratio 3.5). The first enters."""
    basic: programme._Column = (D(2), None, ((0, ONE),))
    columns = [basic, (ONE, D(9), ((0, D(-1)),)), (D(3), D(9), ((0, D(-2)),))]
    assert entering(columns) == 1


def test_entering_ties_go_to_the_smallest_index() -> None:
    basic: programme._Column = (ZERO, None, ((0, ONE),))
    columns = [basic, (D(2), D(9), ((0, D(-1)),)), (D(4), D(9), ((0, D(-2)),))]
    assert entering(columns) == 1


def test_pivot_leaves_the_inverse_of_the_new_basis() -> None:
    """The identity basis with its first column replaced by (1, 1): every other row with a
    non-zero entry in the entering column is eliminated, one whose entry is 1 included."""
    binv = [[ONE, ZERO], [ZERO, ONE]]
    programme._pivot(binv, (ZERO, None, ((0, ONE), (1, ONE))), 0)
    assert binv == [[ONE, ZERO], [D(-1), ONE]]


def test_shift_adds_a_bounded_column_at_its_upper_bound() -> None:
    shifted = [D(5), D(7)]
    programme._shift(shifted, (ZERO, D(2), ((0, D(3)),)), -1)
    assert shifted == [D(-1), D(7)]
    programme._shift(shifted, (ZERO, D(2), ((1, D(3)),)), 1)
    assert shifted == [D(-1), D(13)]


@attrs.frozen
class Scenarios:
    """Stands in for the prepared portfolio model: given scenario losses per underlying and
    unit losses per symbol (what buying back one unit adds to each scenario's loss)."""

    losses: Mapping[str, tuple[Decimal, ...]]
    units: Mapping[str, tuple[Decimal, ...]]

    def scenario_losses(self, underlying: str) -> tuple[Decimal, ...]:
        return self.losses[underlying]

    def unit_losses(self, symbol: str) -> tuple[Decimal, ...]:
        return self.units[symbol]


@attrs.frozen
class Book:
    spot: Mapping[str, Decimal]


@attrs.frozen
class Traced:
    """What :func:`programme._cheapest_closes` reads of a simulation."""

    prepared: Scenarios
    portfolio: Book


SPOT = Decimal(1_000)


CALL, PUT, OTHER = "BTC-20261231-150000-C", "BTC-20261231-100000-P", "BTC-20261231-90000-P"


def cheapest(
    losses: tuple[Decimal, ...],
    closes: Mapping[str, tuple[tuple[Decimal, ...], Decimal, Decimal]],
    required: Decimal,
    *,
    weight: Decimal = ONE,
    contingency: Decimal = ZERO,
    spot: Decimal = SPOT,
) -> list[tuple[str, Decimal, Decimal]]:
    """The cheapest closes of BTC options: ``closes`` maps a symbol to (unit losses,
    available, cost per unit) — price and mark set so that price − mark is the cost."""
    traced = Traced(
        prepared=Scenarios(
            losses={"BTC": losses}, units={s: unit for s, (unit, _, _) in closes.items()}
        ),
        portfolio=Book(spot={"BTC": spot}),
    )
    return programme._cheapest_closes(
        simulation=cast(_Simulation, traced),
        model=PortfolioMargin(short_option_contingency=contingency),
        sizes={s: (left, D(100) + cost, D(100)) for s, (_, left, cost) in closes.items()},
        required=required,
        weight=weight,
    )


def test_cheapest_closes_use_up_the_cheapest_then_take_the_next() -> None:
    """The loss of 100 falls by 10 a unit closed of either call; the first costs 1 a unit
    (gains 9) and has 3 units, the second costs 2 (gains 8). A need of 40 takes all 3 of the
    first (27) and 13 / 8 of the second."""
    closes = {CALL: ((D(-10), D(0)), D(3), D(1)), OTHER: ((D(-10), D(0)), D(10), D(2))}
    found = cheapest((D(100), D(0)), closes, D(40))
    assert [(s, size) for s, size, _ in found] == [(CALL, D(3)), (OTHER, D(13) / 8)]
    assert [steepness for _, _, steepness in found] == [D(11), D(12)]


def test_cheapest_closes_weigh_cost_and_count_the_contingency_per_spot() -> None:
    """A close that moves no scenario still frees its contingency, 0.01 × spot 1 000 = 10 a
    unit, less its cost 2 weighted by 0.5: it gains 9 a unit."""
    closes = {CALL: ((D(0), D(0)), D(10), D(2))}
    found = cheapest(
        (D(100), D(0)), closes, D(18), weight=D("0.5"), contingency=D("0.01"), spot=D(1_000)
    )
    assert [(s, size) for s, size, _ in found] == [(CALL, D(2))]


def test_cheapest_closes_count_a_unit_loss_of_exactly_one() -> None:
    """Every loss is below zero; closing the put gains 10 a unit of equity and adds 1 a unit
    to the first scenario's loss: 10 units gain 100 and bring that loss to 0, past which a
    unit gains 10 − 1 = 9. A need of 109 takes 11 units; the risk column that entered on
    the way is no close."""
    closes = {PUT: ((D(1), D(0)), D(20), D(-10))}
    found = cheapest((D(-10), D(-20)), closes, D(109))
    assert [(s, size) for s, size, _ in found] == [(PUT, D(11))]


def test_cheapest_closes_drop_a_traced_size_at_the_noise() -> None:
    """A close gaining 1 a unit, for a need of 1e-12: the traced 1e-12 is round-off, no
    close; for 2e-12 it is one."""
    closes = {CALL: ((D(-2),), D(5), D(1))}
    assert cheapest((D(10),), closes, programme._NOISE) == []
    found = cheapest((D(10),), closes, 2 * programme._NOISE)
    assert [(s, size) for s, size, _ in found] == [(CALL, 2 * programme._NOISE)]


def test_cheapest_closes_in_the_library_context_whatever_the_callers() -> None:
    """A close gaining 3 a unit for a need of 1: a third, to 28 digits even when the caller's
    decimal context has 3."""
    closes = {CALL: ((D(-4),), D(5), D(1))}
    with localcontext(prec=3):
        found = cheapest((D(10),), closes, ONE)
    assert [(s, size) for s, size, _ in found] == [(CALL, CONTEXT.divide(ONE, D(3)))]


def gain_of(
    losses: tuple[Decimal, ...],
    closes: Mapping[str, tuple[tuple[Decimal, ...], Decimal, Decimal]],
    found: list[tuple[str, Decimal, Decimal]],
) -> Decimal:
    """What the closes ``found`` gain (weight 1, no contingency): the fall in the worst loss
    (floored at 0) less what they cost."""
    sizes = {s: size for s, size, _ in found}
    after = [
        loss + sum((unit[j] * sizes.get(s, ZERO) for s, (unit, _, _) in closes.items()), ZERO)
        for j, loss in enumerate(losses)
    ]
    cost = sum((sizes.get(s, ZERO) * c for s, (_, _, c) in closes.items()), ZERO)
    return max(ZERO, *losses) - max(ZERO, *after) - cost


def test_cheapest_closes_go_on_past_a_close_used_up() -> None:
    """Three free closes (each pays the account to close) on one scenario: the ratio test
    after a close is used up looks for a column that moves the other way, and the need of 22
    is met (all three used up gain 25)."""
    closes = {
        PUT: ((D(3),), D(3), D(-2)),
        OTHER: ((D(-2),), D(3), D(-3)),
        CALL: ((D(-3),), D(5), D(-2)),
    }
    found = cheapest((D(-2),), closes, D(22))
    assert gain_of((D(-2),), closes, found) >= D(22) - Decimal("1e-20")
    assert all(size <= closes[s][1] for s, size, _ in found)


def test_cheapest_closes_never_trace_more_than_is_available() -> None:
    """The need is what the whole of the one close gains (0.67… units, 18 a unit): the
    traced value, rounded on the way, is clamped to what is available, not a digit above."""
    available = CONTEXT.divide(D(583), D(868))
    closes = {CALL: ((D(-19),), available, ONE)}
    found = cheapest((D(1_000),), closes, CONTEXT.multiply(available, D(18)))
    assert [(s, size) for s, size, _ in found] == [(CALL, available)]


def test_cheapest_closes_tie_between_free_closes_goes_to_the_first_symbol() -> None:
    """The worst loss is exactly 0 (so it binds from the start). The put pays 3 a unit and
    raises it by 1, the call pays 2 and leaves it: both gain 2 a unit for free; the first
    symbol, the put, is the one closed."""
    closes = {PUT: ((D(1),), D(5), D(-3)), CALL: ((D(0),), D(5), D(-2))}
    found = cheapest((D(0),), closes, ONE)
    assert [(s, size) for s, size, _ in found] == [(PUT, D("0.5"))]


def test_cheapest_closes_tie_between_tied_scenarios_goes_to_the_first_symbol() -> None:
    """Two scenarios tie at 5; each free close pays 1 a unit and lowers one of them. One
    unit of the first symbol, the put, meets a need of 1 (not a third of each)."""
    closes = {CALL: ((D(-1), D(0)), D(5), D(-1)), PUT: ((D(0), D(-1)), D(5), D(-1))}
    found = cheapest((D(5), D(5)), closes, ONE)
    assert [(s, size) for s, size, _ in found] == [(PUT, ONE)]


def test_cheapest_closes_add_up_the_risk_of_every_underlying() -> None:
    """BTC's worst loss of 50 and ETH's of 30 both count in what is at risk: an ETH call
    cutting ETH's loss by 3 a unit for a cost of 1 gains 2 a unit, so a need of 10 takes 5
    units (wherever the underlyings sort)."""
    eth_call = "ETH-20261231-4000-C"
    traced = Traced(
        prepared=Scenarios(
            losses={"BTC": (D(50), D(0)), "ETH": (D(30), D(0))},
            units={CALL: (D(-1), D(0)), eth_call: (D(-3), D(0))},
        ),
        portfolio=Book(spot={"BTC": SPOT, "ETH": SPOT}),
    )
    found = programme._cheapest_closes(
        simulation=cast(_Simulation, traced),
        model=PortfolioMargin(),
        sizes={CALL: (D(9), D(200), D(100)), eth_call: (D(9), D(101), D(100))},
        required=D(10),
        weight=ONE,
    )
    assert [(s, size) for s, size, _ in found] == [(eth_call, D(5))]
