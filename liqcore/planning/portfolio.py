"""Portfolio margin: the cheapest closes, exactly, by a linear programme.

Scenario margin is a maximum of losses that are linear in the closed sizes, so the cheapest
closes meeting a need solve a linear programme, traced from no need upwards by a parametric
dual simplex (``_cheapest_closes``). Owns that programme, the rounds of
:func:`~liqcore.planning.plan.plan_partial_orders` under
:class:`~liqcore.margin.portfolio.PortfolioMargin` (the traced closes rounded to whole lots
up, or down first with the rest covered by the next round) and their rounding allowance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, localcontext

from liqcore.config import Config
from liqcore.instruments import option_symbol
from liqcore.margin.base import MarginFacts
from liqcore.margin.portfolio import PortfolioMargin, PreparedPortfolioMargin
from liqcore.numbers import BPS, CONTEXT, MIN_SIZE, ONE, ZERO
from liqcore.planning.lots import _linear_size, _repaired, _spec, _tradeable_down, _tradeable_size
from liqcore.planning.orders import PLAN_MAX_ROUNDS, OrderPlan, merge_plan
from liqcore.planning.simulation import _attributed, _Simulation

__all__: list[str] = []


# Scenario margin is a maximum of losses that are linear in the closed sizes, so the cheapest
# closes meeting a need solve a linear programme: for each underlying u and scenario j,
#     t_u ≥ L_uj + Σ_i x_i D_ij,   t_u ≥ 0            (t_u: the underlying's risk)
#     Σ_u t_u + Σ_i x_i (w c_i − κ_i) ≤ T − R          (the need R is met)
#     0 ≤ x_i ≤ available_i,   minimise Σ_i x_i max(c_i, 0)
# (D_ij: what one unit bought back adds to scenario j's loss, c_i: equity cost per unit,
# κ_i: contingency per unit, w = 10 000 / (10 000 + buffer), T = Σ_u max(0, max_j L_uj)).
# It is traced from R = 0 upwards by a parametric dual simplex: at every point on the way
# the current closes are the cheapest for the need reached so far. Each pivot is one of the
# greedy's natural steps — take the close with the least cost per unit of gain until it is
# used up or another scenario starts to bind; when two scenarios bind together, the next
# step is the cheapest *combination* of closes that lowers both (a strangle's call and put),
# which no single close can do. A pivot costs O(candidates × scenarios); pivots are bounded.

_TOLERANCE = Decimal("1e-18")
"""Pivot elements and rates at or below it count as zero (values are O(1)–O(1e7) and carry
28 digits, so round-off stays near 1e-21)."""


_NOISE = Decimal("1e-12")
"""A traced size at or below it is round-off, not a close."""


_PIVOTS_PER_COLUMN = 4


_PIVOTS_FLOOR = 64


_Column = tuple[Decimal, Decimal | None, tuple[tuple[int, Decimal], ...]]
"""(cost, upper bound or None, (row, coefficient) entries)."""


def _inverse(matrix: list[list[Decimal]]) -> list[list[Decimal]]:
    """Gauss–Jordan inverse of the starting basis, without pivoting: its columns are slacks
    (one 1 on the diagonal) and risks (−1 on the diagonal, in the worst scenario's row, and
    elsewhere only in rows whose own diagonal is a slack's), so no pivot is ever zero."""
    size = len(matrix)
    rows = [[*row, *(ONE if i == j else ZERO for j in range(size))] for i, row in enumerate(matrix)]
    for column in range(size):
        lead = rows[column][column]
        rows[column] = [value / lead for value in rows[column]]
        for other in range(size):
            factor = rows[other][column]
            if other != column and factor != 0:
                rows[other] = [
                    a - factor * b for a, b in zip(rows[other], rows[column], strict=True)
                ]
    return [row[size:] for row in rows]


def _trace(
    columns: Sequence[_Column], rhs: Sequence[Decimal], basis: list[int], target: Decimal
) -> tuple[list[Decimal], list[int]]:
    """Values of ``columns`` minimising cost for ``A v = rhs − θ e_last`` at ``θ = target`` (or
    the largest θ reachable), and the order in which columns first left zero.

    ``basis`` (one column per row) must be feasible and dual feasible at ``θ = 0``; every
    other column starts at zero. Call inside ``localcontext(CONTEXT)``.
    """
    rows = len(rhs)
    binv = _inverse([[_entry(columns[col], row) for col in basis] for row in range(rows)])
    position = {col: p for p, col in enumerate(basis)}
    at_upper: set[int] = set()
    shifted = list(rhs)
    theta = ZERO
    entered: list[int] = []
    for _ in range(_PIVOTS_PER_COLUMN * len(columns) + _PIVOTS_FLOOR):
        current = _basic_values(binv, shifted, theta)
        block = _blocking(columns, basis, binv, current)
        if block is None or theta + block[0] >= target:
            theta = target
            break
        distance, leaving_row, to_upper = block
        theta += distance
        entering = _entering(
            columns,
            basis,
            binv=binv,
            position=position,
            at_upper=at_upper,
            leaving_row=leaving_row,
            to_upper=to_upper,
        )
        if entering is None:
            break  # no close can add more gain: θ is the most that can be reached
        leaving = basis[leaving_row]
        _pivot(binv, columns[entering], leaving_row)
        del position[leaving]
        basis[leaving_row], position[entering] = entering, leaving_row
        if to_upper:  # a close used up (it entered the basis before, so it is listed)
            at_upper.add(leaving)
            _shift(shifted, columns[leaving], -1)
        if entering in at_upper:
            at_upper.remove(entering)
            _shift(shifted, columns[entering], 1)
        if entering not in entered:
            entered.append(entering)
    current = _basic_values(binv, shifted, theta)
    values = [ZERO] * len(columns)
    for col in at_upper:
        upper = columns[col][1]
        assert upper is not None
        values[col] = upper
    for p, col in enumerate(basis):
        upper = columns[col][1]
        value = max(ZERO, current[p])
        values[col] = value if upper is None else min(value, upper)
    return values, entered


def _entry(column: _Column, row: int) -> Decimal:
    return next((value for r, value in column[2] if r == row), ZERO)


def _basic_values(
    binv: list[list[Decimal]], shifted: list[Decimal], theta: Decimal
) -> list[Decimal]:
    last = len(shifted) - 1
    return [
        sum((a * b for a, b in zip(row, shifted, strict=True)), ZERO) - theta * row[last]
        for row in binv
    ]


def _blocking(
    columns: Sequence[_Column],
    basis: list[int],
    binv: list[list[Decimal]],
    current: list[Decimal],
) -> tuple[Decimal, int, bool] | None:
    """``(Δθ, row, to_upper)`` of the first basic value to reach a bound as θ grows."""
    last = len(binv) - 1
    best: tuple[Decimal, int, int, bool] | None = None
    for p, col in enumerate(basis):
        rate = -binv[p][last]  # d value / dθ
        upper = columns[col][1]
        if rate < -_TOLERANCE:
            distance, to_upper = max(ZERO, current[p]) / -rate, False
        elif rate > _TOLERANCE and upper is not None:
            distance, to_upper = max(ZERO, upper - current[p]) / rate, True
        else:
            continue
        if best is None or (distance, col) < (best[0], best[1]):
            best = (distance, col, p, to_upper)
    return None if best is None else (best[0], best[2], best[3])


def _entering(
    columns: Sequence[_Column],
    basis: list[int],
    *,
    binv: list[list[Decimal]],
    position: Mapping[int, int],
    at_upper: set[int],
    leaving_row: int,
    to_upper: bool,
) -> int | None:
    """The dual ratio test: the column whose move keeps every reduced cost's sign; the
    smallest index on ties (Bland's rule against cycling; the pivots are bounded anyway)."""
    row = binv[leaving_row]
    duals = [
        sum((columns[col][0] * binv[p][r] for p, col in enumerate(basis)), ZERO)
        for r in range(len(row))
    ]
    best: tuple[Decimal, int] | None = None
    for index, column in enumerate(columns):
        if index in position:
            continue
        alpha = sum((row[r] * value for r, value in column[2]), ZERO)
        wanted = alpha > _TOLERANCE if to_upper else alpha < -_TOLERANCE
        if index in at_upper:
            wanted = alpha < -_TOLERANCE if to_upper else alpha > _TOLERANCE
        if not wanted:
            continue
        reduced = column[0] - sum((duals[r] * value for r, value in column[2]), ZERO)
        ratio = abs(reduced) / abs(alpha)
        if best is None or ratio < best[0]:
            best = (ratio, index)
    return None if best is None else best[1]


def _pivot(binv: list[list[Decimal]], column: _Column, row: int) -> None:
    moved = [sum((line[r] * value for r, value in column[2]), ZERO) for line in binv]
    pivot_row = [value / moved[row] for value in binv[row]]
    for index, line in enumerate(binv):
        if index != row and moved[index] != 0:
            factor = moved[index]
            binv[index] = [a - factor * b for a, b in zip(line, pivot_row, strict=True)]
    binv[row] = pivot_row


def _shift(shifted: list[Decimal], column: _Column, sign: int) -> None:
    upper = column[1]
    assert upper is not None
    for row, value in column[2]:
        shifted[row] += sign * value * upper


def _unit_losses(prepared: PreparedPortfolioMargin, symbol: str) -> tuple[Decimal, ...]:
    """One candidate's linear effect on its underlying's scenario losses (per unit closed)."""
    return prepared.unit_losses(symbol)


def _cheapest_closes(
    *,
    simulation: _Simulation,
    model: PortfolioMargin,
    sizes: Mapping[str, tuple[Decimal, Decimal, Decimal]],
    required: Decimal,
    weight: Decimal,
) -> list[tuple[str, Decimal, Decimal]]:
    """The cheapest closes whose gain meets ``required`` (or the most gain there is), in the
    order the trace took them up, unrounded: ``(symbol, size, steepness)``, where steepness
    bounds how fast the gain can change with the size (for a rounding allowance).

    ``sizes``: ``symbol → (available, limit price, mark)`` of the shorts that may be closed.
    """
    prepared = simulation.prepared
    assert prepared is not None
    spot = simulation.portfolio.spot
    underlyings = sorted({_underlying(symbol) for symbol in sizes})
    with localcontext(CONTEXT):
        losses = {u: prepared.scenario_losses(u) for u in underlyings}
        first_row: dict[str, int] = {}
        rows = 0
        for u in underlyings:
            first_row[u] = rows
            rows += len(losses[u])
        budget = rows  # the row of the need
        columns: list[_Column] = []
        symbols = sorted(sizes)
        for symbol in symbols:
            available, price, mark = sizes[symbol]
            u = _underlying(symbol)
            unit = _unit_losses(prepared, symbol)
            cost = price - mark
            relief = model.short_option_contingency * spot[u]
            entries = [(first_row[u] + j, value) for j, value in enumerate(unit) if value != 0]
            entries.append((budget, weight * cost - relief))
            columns.append((max(cost, ZERO), available, tuple(entries)))
        basis: list[int] = [0] * (rows + 1)
        rhs = [ZERO] * (rows + 1)
        total = ZERO
        for u in underlyings:
            scenario = losses[u]
            risk_column = len(columns)
            columns.append(
                (
                    ZERO,
                    None,
                    (*((first_row[u] + j, -ONE) for j in range(len(scenario))), (budget, ONE)),
                )
            )
            worst = max(range(len(scenario)), key=lambda j: (scenario[j], -j))
            for j, loss in enumerate(scenario):
                row = first_row[u] + j
                rhs[row] = -loss
                columns.append((ZERO, None, ((row, ONE),)))
                basis[row] = len(columns) - 1
            if scenario[worst] >= 0:
                basis[first_row[u] + worst] = risk_column
                total += scenario[worst]
        columns.append((ZERO, None, ((budget, ONE),)))
        basis[budget] = len(columns) - 1
        rhs[budget] = total
        values, entered = _trace(columns, rhs, basis, required)
        return [
            (
                symbols[index],
                values[index],
                sum((abs(value) for _, value in columns[index][2]), ZERO),
            )
            for index in entered
            if index < len(symbols) and values[index] > _NOISE
        ]


def _underlying(symbol: str) -> str:
    option = option_symbol(symbol)
    assert option is not None
    return option.underlying


def _scenario_round(
    *,
    simulation: _Simulation,
    model: PortfolioMargin,
    prices: Mapping[str, Decimal],
    available: Mapping[str, Decimal],
    required: Decimal,
    required_at: Callable[[MarginFacts], Decimal],
    down: bool,
    config: Config,
    now: int,
) -> tuple[tuple[OrderPlan, ...], _Simulation]:
    """One round under portfolio margin: the exact cheapest closes, made tradeable (whole
    lots rounded ``down``, or up)."""
    weight = CONTEXT.divide(Decimal(BPS), Decimal(BPS + config.partial_target_buffer_bps))
    sizes: dict[str, tuple[Decimal, Decimal, Decimal]] = {}
    for symbol in sorted(prices):
        option = option_symbol(symbol)
        position = simulation.portfolio.positions.get(symbol)
        left = available.get(symbol, ZERO)
        if option is None or position is None or option.expires_at <= now or left <= MIN_SIZE:
            continue
        sizes[symbol] = (left, prices[symbol], position.mark_price)
    if not sizes:
        return (), simulation
    closes = _cheapest_closes(
        simulation=simulation, model=model, sizes=sizes, required=required, weight=weight
    )
    plans, allowance = _rounded(closes, sizes=sizes, prices=prices, config=config, down=down)
    after = simulation.after(plans)
    if not down and required_at(after.facts) > MIN_SIZE and config.instruments:
        plans, after = _repaired(
            plans, after=after, sizes=sizes, prices=prices, required_at=required_at, config=config
        )
    if not down and required_at(after.facts) > MIN_SIZE and allowance > 0:
        # Rounding sizes up can cost gain where scenarios bind together (the call and put of
        # a tie move apart): trace again for the need plus the most rounding can cost. The
        # trim takes back what this over-covers.
        closes = _cheapest_closes(
            simulation=simulation,
            model=model,
            sizes=sizes,
            required=CONTEXT.add(required, allowance),
            weight=weight,
        )
        again, _ = _rounded(closes, sizes=sizes, prices=prices, config=config, down=False)
        again_after = simulation.after(again)
        if required_at(again_after.facts) < required_at(after.facts):
            plans, after = again, again_after
    return plans, after


def _rounded(
    closes: Sequence[tuple[str, Decimal, Decimal]],
    *,
    sizes: Mapping[str, tuple[Decimal, Decimal, Decimal]],
    prices: Mapping[str, Decimal],
    config: Config,
    down: bool,
) -> tuple[tuple[OrderPlan, ...], Decimal]:
    """The traced closes as tradeable orders, and the most rounding them up can cost in gain
    (at least a whole step of each: a plan traced again rounds differently).

    Up: rounded up to the size step, raised to the minimum order, a stranded remainder
    closed too. Down (only for underlyings with an :class:`InstrumentSpec`): rounded down to
    the step, below the minimum order dropped, never leaving a stranded remainder.
    """
    plans: list[OrderPlan] = []
    allowance = ZERO
    for symbol, size, steepness in closes:
        spec = _spec(symbol, config.instruments)
        left = sizes[symbol][0]
        if down and spec is not None:
            tradeable = _tradeable_down(size, left, spec)
        else:
            step = spec.size_step if spec is not None else MIN_SIZE
            tradeable = _tradeable_size(_linear_size(left, size, step), left, spec)
        if tradeable <= 0:
            continue
        # Whatever the rounding of a re-traced plan: a whole step, or what was raised.
        step = spec.size_step if spec is not None else MIN_SIZE
        raised = max(step, CONTEXT.subtract(tradeable, size))
        allowance = CONTEXT.add(allowance, CONTEXT.multiply(raised, steepness))
        plans.append(
            OrderPlan(
                symbol=symbol,
                close_size=tradeable,
                limit_price=prices[symbol],
                expected_mm_relief=ZERO,
            )
        )
    return tuple(plans), allowance


def _scenario_plans(
    *,
    start: _Simulation,
    model: PortfolioMargin,
    prices: Mapping[str, Decimal],
    required_at: Callable[[MarginFacts], Decimal],
    config: Config,
    now: int,
) -> list[tuple[tuple[OrderPlan, ...], int]]:
    """Plans under portfolio margin: rounding whole lots up, and — when some underlying has
    whole lots — rounding them down first and covering the rest in the next round."""
    lots = any(_spec(symbol, config.instruments) is not None for symbol in prices)
    return [
        _scenario_rounds(
            start=start,
            model=model,
            prices=prices,
            required_at=required_at,
            config=config,
            now=now,
            down_first=down_first,
        )
        for down_first in ((False, True) if lots else (False,))
    ]


def _scenario_rounds(
    *,
    start: _Simulation,
    model: PortfolioMargin,
    prices: Mapping[str, Decimal],
    required_at: Callable[[MarginFacts], Decimal],
    config: Config,
    now: int,
    down_first: bool,
) -> tuple[tuple[OrderPlan, ...], int]:
    """Rounds under portfolio margin; a later round only covers what rounding left short."""
    available = {
        symbol: position.amount.copy_negate()
        for symbol, position in start.portfolio.positions.items()
        if symbol in prices
    }
    simulation = start
    plans: list[OrderPlan] = []
    rounds = 0
    for _ in range(PLAN_MAX_ROUNDS):
        required = required_at(simulation.facts)
        if required <= MIN_SIZE:
            break
        round_plans, after = _scenario_round(
            simulation=simulation,
            model=model,
            prices=prices,
            available=available,
            required=required,
            required_at=required_at,
            down=down_first and rounds == 0,
            config=config,
            now=now,
        )
        if not round_plans or required_at(after.facts) >= required:
            break  # nothing tradeable helps
        rounds += 1
        simulation = after
        for plan in round_plans:
            available[plan.symbol] = CONTEXT.subtract(available[plan.symbol], plan.close_size)
            plans.append(plan)
    merged: tuple[OrderPlan, ...] = ()
    for plan in plans:
        merged = merge_plan(merged, plan)
    return _attributed(merged, start), rounds
