"""liqcore.planning.greedy: candidates, the greedy plan, and the rounds under standard margin
and under any other model (searched sizes) (SPEC §6)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from liqcore.config import Config
from liqcore.errors import PlanningError
from liqcore.inputs import MarginMode, Portfolio, Quote
from liqcore.instruments import InstrumentSpec, OptionSymbol
from liqcore.margin.base import MarginFacts
from liqcore.margin.standard import StandardMargin
from liqcore.numbers import CONTEXT, MIN_SIZE, bps_fraction
from liqcore.planning import (
    PLAN_MAX_ROUNDS,
    OrderPlan,
    SliceCandidate,
    execution_prices,
    greedy_plan,
    plan_partial_orders,
    slice_candidates,
)
from liqcore.strategies import decimals
from liqcore.targets import required_mm_relief
from tests.liqcore.planning.books import (
    NOW,
    SEED_ANCHOR,
    SEED_CONFIG,
    STANDARD,
    SYMBOL,
    TODAY,
    UNDERLYINGS,
    VShapedMargin,
    accounts,
    bonuses,
    closes_of,
    configs,
    plan_of,
    portfolio,
    position,
    premium,
    seed_plan,
    user_plan,
)


def candidate(
    symbol: str, relief: str, cost: str, size: str = "1", price: str = "10"
) -> SliceCandidate:
    return SliceCandidate(
        symbol=symbol,
        max_close_size=Decimal(size),
        expected_fill_price=Decimal(price),
        mm_relief_per_unit=Decimal(relief),
        equity_cost_per_unit=Decimal(cost),
    )


def test_slice_candidates_seed_values() -> None:
    """Seed: one candidate, all 4 closable, 10 500 relief and 20.6 cost per unit."""
    prices = {SYMBOL: Decimal("120.6")}
    assert slice_candidates(portfolio(position()), prices, STANDARD, NOW, 500) == (
        SliceCandidate(
            symbol=SYMBOL,
            max_close_size=Decimal(4),
            expected_fill_price=Decimal("120.6"),
            mm_relief_per_unit=Decimal(10_500),
            equity_cost_per_unit=Decimal("20.6"),
        ),
    )


def test_slice_candidates_in_symbol_order() -> None:
    """Candidates come in symbol order whatever the order of the prices given."""
    symbols = ["BTC-20261231-130000-C", "BTC-20261231-110000-C", "BTC-20261231-120000-P"]
    book = portfolio(*(position(s) for s in symbols))
    prices = {s: Decimal(100) for s in symbols}
    found = slice_candidates(book, prices, STANDARD, NOW, 500)
    assert [c.symbol for c in found] == sorted(symbols)


def test_slice_candidates_no_harm_boundary() -> None:
    """A cost per unit of (1 + buffer) × relief is dropped; a hair less is kept."""
    boundary = Decimal(100) + Decimal(10_500) * Decimal("1.05")  # mark + 1.05 × relief
    book = portfolio(position())
    assert slice_candidates(book, {SYMBOL: boundary}, STANDARD, NOW, 500) == ()
    kept = slice_candidates(book, {SYMBOL: boundary - MIN_SIZE}, STANDARD, NOW, 500)
    assert [c.symbol for c in kept] == [SYMBOL]


def test_slice_candidates_fractional_short_steps_by_its_size() -> None:
    """A short below one unit is measured over its own size; relief per unit is the same."""
    (only,) = slice_candidates(
        portfolio(position(amount="-0.4")), {SYMBOL: Decimal(120)}, STANDARD, NOW, 500
    )
    assert only.max_close_size == Decimal("0.4")
    assert only.mm_relief_per_unit == Decimal(10_500)


def test_slice_candidates_skip_what_cannot_or_need_not_be_closed() -> None:
    """Longs, perps, unpriced, expired and zero-relief shorts are no candidates."""
    expired = "BTC-20240105-90000-P"
    book = portfolio(
        position("BTC-20261231-90000-P", amount="2"),
        position("BTC-PERP", amount="-1"),
        position("BTC-20261231-95000-C"),
        position(expired),
    )
    prices = {s: Decimal(100) for s in ("BTC-20261231-90000-P", "BTC-PERP", expired, "BTC-X")}
    assert slice_candidates(book, prices, STANDARD, OptionSymbol.parse(expired).expires_at, 0) == ()
    free = StandardMargin(rate=Decimal(0), floor_rate=Decimal(0), perp_rate=Decimal(0))
    assert slice_candidates(book, {"BTC-20261231-95000-C": Decimal(1)}, free, NOW, 0) == ()


def test_slice_candidates_missing_spot_raises_planning_error() -> None:
    """The model cannot value a portfolio without spot: PlanningError."""
    with pytest.raises(PlanningError):
        slice_candidates(portfolio(position(), spot={}), {SYMBOL: Decimal(1)}, STANDARD, NOW, 0)


def test_greedy_plan_best_relief_per_equity_first() -> None:
    """B frees 50 per unit of cost, A 10: B is closed fully first, A covers the rest."""
    a = candidate("A-20261231-1-C", relief="100", cost="10")
    b = candidate("B-20261231-1-C", relief="50", cost="1")
    plans = greedy_plan([a, b], Decimal(75))
    assert plans == (
        OrderPlan(
            symbol=b.symbol,
            close_size=Decimal(1),
            limit_price=Decimal(10),
            expected_mm_relief=Decimal(50),
        ),
        OrderPlan(
            symbol=a.symbol,
            close_size=Decimal("0.25"),
            limit_price=Decimal(10),
            expected_mm_relief=Decimal(25),
        ),
    )


def test_greedy_plan_free_closes_first_by_relief() -> None:
    """A close that costs nothing (or pays) ranks first, the larger relief before."""
    paying = candidate("A-20261231-1-C", relief="5", cost="-1")
    free = candidate("B-20261231-1-C", relief="8", cost="0")
    efficient = candidate("C-20261231-1-C", relief="1000", cost="1")
    plans = greedy_plan([efficient, paying, free], Decimal(1_000))
    assert [p.symbol for p in plans] == [free.symbol, paying.symbol, efficient.symbol]


def test_greedy_plan_ties_broken_by_symbol() -> None:
    """Equal ranks are taken in symbol order."""
    later = candidate("B-20261231-1-C", relief="10", cost="1")
    earlier = candidate("A-20261231-1-C", relief="10", cost="1")
    assert [p.symbol for p in greedy_plan([later, earlier], Decimal(15))] == [
        earlier.symbol,
        later.symbol,
    ]


def test_greedy_plan_rounds_up_to_size_step_never_above_max() -> None:
    """0.25 rounds up to the 0.1 step (0.3); a step above the position is capped at it."""
    specs = {
        "A": InstrumentSpec(size_step=Decimal("0.1")),
        "B": InstrumentSpec(size_step=Decimal(5)),
    }
    a = candidate("A-20261231-1-C", relief="100", cost="1")
    assert greedy_plan([a], Decimal(25), specs)[0].close_size == Decimal("0.3")
    b = candidate("B-20261231-1-C", relief="100", cost="1", size="2")
    assert greedy_plan([b], Decimal(25), specs)[0].close_size == Decimal(2)


def test_greedy_plan_nothing_required_plans_nothing() -> None:
    """A required relief of zero (or less) plans nothing."""
    a = candidate("A-20261231-1-C", relief="100", cost="1")
    assert greedy_plan([a], Decimal(0)) == ()
    assert greedy_plan([], Decimal(10)) == ()


def test_plan_partial_orders_costly_close_reaches_target_in_one_round() -> None:
    """A fill 10 000 over the mark eats most of the 10 500 it frees; sizing by relief alone
    would leave ~75 % of the need after three rounds, sizing by gain meets it at once."""
    quote = Quote(best_ask=Decimal(10_100), theo=Decimal(10_100))
    plan = plan_partial_orders(
        portfolio(position()),
        {SYMBOL: quote},
        0,
        SEED_CONFIG,
        MarginMode.STANDARD,
        NOW,
        anchor=SEED_ANCHOR,
    )
    (order,) = plan.orders
    assert plan.rounds == 1
    equity = Decimal(100) - order.close_size * 10_000
    mm = Decimal(300) - order.close_size * 10_500
    assert required_mm_relief(equity, mm, 500) == 0


def test_plan_generic_model_stops_where_closing_stops_helping() -> None:
    """Needing more than the model can give, the close stops at the MM minimum (2 of 4)."""
    plan = user_plan(VShapedMargin(), MarginFacts(equity=Decimal(100), mm_required=Decimal(10_000)))
    (order,) = plan.orders
    assert Decimal("1.9999") <= order.close_size <= Decimal(2)
    assert plan.evaluations < 300


def test_plan_generic_model_meets_need_with_smallest_size() -> None:
    """Needing 150 − 100/1.05 with 100 − 20.6 × 20/21 gained per unit before the kink: the
    smallest size in MIN_SIZE steps that meets it, as computed by hand."""
    plan = user_plan(VShapedMargin(), MarginFacts(equity=Decimal(100), mm_required=Decimal(150)))
    needed = Fraction(150) - Fraction(100) * Fraction(20, 21)
    per_unit = Fraction(100) - Fraction(412, 21)
    units = -(-needed / per_unit * 10**8 // 1)  # ceiling
    assert plan.orders[0].close_size == Decimal(int(units)) / 10**8


@attrs.frozen
class CentsStandard:
    """Standard margin as an engine reports it: equity and MM rounded to cents."""

    def evaluate(self, portfolio: Portfolio, now: int) -> MarginFacts:
        facts = STANDARD.evaluate(portfolio, now)
        cent = Decimal("0.01")
        return MarginFacts(
            equity=facts.equity.quantize(cent, context=CONTEXT),
            mm_required=facts.mm_required.quantize(cent, context=CONTEXT),
        )


def test_plan_generic_model_rounding_to_cents_still_plans() -> None:
    """A model that rounds to cents (a tiny close changes nothing it reports) still gets
    the fast path's size, to the cent of relief it can tell apart."""
    plan = user_plan(CentsStandard(), SEED_ANCHOR)
    (order,) = plan.orders
    (fast,) = seed_plan().orders
    assert abs(order.close_size - fast.close_size) <= Decimal("0.000002")
    assert plan.evaluations < 200


@attrs.frozen
class ZeroMarkVShaped:
    """The V-shaped model, valuing the option at 0: a buy-back costs its whole price in
    equity, more than the 100 per unit of margin it frees."""

    def evaluate(self, portfolio: Portfolio, now: int) -> MarginFacts:
        return attrs.evolve(VShapedMargin().evaluate(portfolio, now), equity=portfolio.cash)


def test_plan_generic_model_where_no_close_helps_plans_nothing() -> None:
    """When every size costs more equity than the margin it frees, nothing is planned."""
    plan = user_plan(ZeroMarkVShaped(), SEED_ANCHOR)
    assert plan.orders == ()
    assert plan.rounds == 0


def test_plan_generic_model_forced_past_its_help_plans_nothing() -> None:
    """When the minimum order forces a close past where it helps (the V bottoms at 2, the
    minimum of 3 leaves 1, so the whole 4 goes), it is not planned."""
    spec = InstrumentSpec(min_size=Decimal(3))
    config = attrs.evolve(SEED_CONFIG, standard_margin=VShapedMargin(), instruments={"BTC": spec})
    anchor = MarginFacts(equity=Decimal(100), mm_required=Decimal(150))
    assert seed_plan(config, anchor).orders == ()


@attrs.define
class RequotingStandard:
    """Standard margin from an engine that adds 1 000 to the MM of a portfolio each time it
    is asked about it again: every round finds more to do."""

    asked: dict[tuple[Decimal, tuple[tuple[str, Decimal], ...]], int] = attrs.field(factory=dict)

    def evaluate(self, portfolio: Portfolio, now: int) -> MarginFacts:
        key = (portfolio.cash, tuple(sorted((s, p.amount) for s, p in portfolio.positions.items())))
        self.asked[key] = self.asked.get(key, -1) + 1
        facts = STANDARD.evaluate(portfolio, now)
        return attrs.evolve(facts, mm_required=facts.mm_required + 1_000 * self.asked[key])


def test_plan_partial_orders_stops_after_max_rounds() -> None:
    """However much more each round finds needed, planning stops after PLAN_MAX_ROUNDS."""
    plan = user_plan(RequotingStandard(), SEED_ANCHOR)
    assert plan.rounds == PLAN_MAX_ROUNDS
    assert len(plan.orders) == 1


@given(accounts(), bonuses, configs)
def test_slice_candidates_never_harmful(
    account: tuple[Portfolio, dict[str, Quote], MarginFacts], bonus: int, config: Config
) -> None:
    """No candidate costs (1 + buffer) × its relief per unit or more; every relief is positive."""
    book, quotes, _ = account
    prices, _ = execution_prices(book, quotes, bonus, config, TODAY)
    buffer = config.partial_target_buffer_bps
    for c in slice_candidates(book, prices, STANDARD, TODAY, buffer):
        assert c.mm_relief_per_unit > 0
        assert c.equity_cost_per_unit < bps_fraction(buffer) * c.mm_relief_per_unit


@st.composite
def candidate_lists(draw: st.DrawFn) -> list[SliceCandidate]:
    count = draw(st.integers(0, 5))
    return [
        SliceCandidate(
            symbol=f"{underlying}-20261231-{index + 1}-C",
            max_close_size=draw(decimals(min_value="0.01", max_value=50, places=4)),
            expected_fill_price=draw(decimals(min_value="0.01", max_value=1_000, places=2)),
            mm_relief_per_unit=draw(decimals(min_value="0.01", max_value=10_000, places=2)),
            equity_cost_per_unit=draw(decimals(min_value=-100, max_value=1_000, places=2)),
        )
        for index, underlying in enumerate(
            draw(st.lists(st.sampled_from(UNDERLYINGS), min_size=count, max_size=count))
        )
    ]


steps = st.sampled_from([None, Decimal("0.01"), Decimal("0.5"), Decimal(1)])


@given(candidate_lists(), decimals(min_value=0, max_value=10**6, places=4), steps)
def test_greedy_plan_bounded_and_covers_what_is_available(
    candidates: list[SliceCandidate], required: Decimal, step: Decimal | None
) -> None:
    """No size exceeds its candidate's max; the reliefs cover min(required, all there is)."""
    instruments = {} if step is None else {u: InstrumentSpec(size_step=step) for u in UNDERLYINGS}
    plans = greedy_plan(candidates, required, instruments)
    by_symbol = {c.symbol: c for c in candidates}
    for p in plans:
        c = by_symbol[p.symbol]
        assert 0 < p.close_size <= c.max_close_size
        assert p.expected_mm_relief == p.close_size * c.mm_relief_per_unit
        if step is not None and p.close_size != c.max_close_size:
            assert p.close_size % step == 0
    available = sum((c.max_close_size * c.mm_relief_per_unit for c in candidates), Decimal(0))
    covered = sum((p.expected_mm_relief for p in plans), Decimal(0))
    assert covered >= min(required, available) - Decimal("1e-20")


@given(accounts(), bonuses, configs)
def test_plan_standard_margin_pays_least_premium(
    account: tuple[Portfolio, dict[str, Quote], MarginFacts], bonus: int, config: Config
) -> None:
    """Least cost: under standard margin (linear per position) the cheapest plan meeting a
    need is the fractional knapsack by gain per unit of premium, computed here exactly with
    fractions; the plan pays no more than it (up to MIN_SIZE rounding per order)."""
    book, quotes, anchor = account
    buffer = config.partial_target_buffer_bps
    prices, _ = execution_prices(book, quotes, bonus, config, TODAY)
    weight = Fraction(10_000, 10_000 + buffer)
    items = []
    for c in slice_candidates(book, prices, STANDARD, TODAY, buffer):
        gain = Fraction(c.mm_relief_per_unit) - weight * Fraction(c.equity_cost_per_unit)
        cost = max(Fraction(0), Fraction(c.equity_cost_per_unit))
        items.append((cost / gain, gain, Fraction(c.max_close_size), cost))
    need = Fraction(required_mm_relief(anchor.equity, anchor.mm_required, buffer))
    cheapest = Fraction(0)
    for _, gain, size, cost in sorted(items):
        if need <= 0:
            break
        taken = min(size, need / gain)
        cheapest += taken * cost
        need -= taken * gain
    plan = plan_of(account, bonus, config)
    slack = Fraction(MIN_SIZE) * sum((Fraction(c[3]) for c in items), Fraction(0)) * 2
    assert Fraction(premium(book, closes_of(plan))) <= cheapest + slack
