"""liqcore.planning.greedy's planning rounds at their boundaries: where a round stops, which
closes it skips, the steps it sizes in, and what it counts and asks the model."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from fractions import Fraction

import attrs

from liqcore.config import Config
from liqcore.inputs import MarginMode, Portfolio, Quote
from liqcore.instruments import InstrumentSpec
from liqcore.margin.base import MarginFacts, MarginModel
from liqcore.numbers import CONTEXT, MIN_SIZE
from liqcore.planning import OrderPlan, SliceCandidate, plan_partial_orders, slice_candidates
from liqcore.planning.greedy import _plan_round
from liqcore.planning.simulation import _Memo
from tests.liqcore.planning.books import (
    NOW,
    PM,
    PM_NOW,
    SEED_CONFIG,
    SEED_QUOTE,
    STANDARD,
    STRANGLE_CALL,
    SYMBOL,
    TODAY,
    CountingStandard,
    VShapedMargin,
    model_equity,
    portfolio,
    position,
    seed_plan,
    strangle,
    user_plan,
)

ETH_CALL = "ETH-20261231-3000-C"
SPOT = {"BTC": Decimal(105_000), "ETH": Decimal(3_000)}


@attrs.define
class VAndLinear:
    """VShapedMargin on SYMBOL (closing helps until 2 remain) plus 50 per unit of the
    ETH_CALL short, behind a class of its own (the searched path); it counts its
    evaluations and records the time it is asked at."""

    calls: int = 0
    times: set[int] = attrs.field(factory=set)

    def evaluate(self, book: Portfolio, now: int) -> MarginFacts:
        self.calls += 1
        self.times.add(now)
        v_shaped = VShapedMargin().evaluate(book, now).mm_required
        held = book.positions.get(ETH_CALL)
        short = held.amount.copy_negate() if held is not None else Decimal(0)
        mm = CONTEXT.add(v_shaped, CONTEXT.multiply(Decimal(50), short))
        return MarginFacts(equity=model_equity(book), mm_required=mm)


def two_shorts() -> Portfolio:
    return portfolio(position(SYMBOL), position(ETH_CALL, amount="-10"), spot=SPOT)


def at_mark(symbol: str, relief: str, size: str) -> SliceCandidate:
    """A candidate filled at its mark (entry 100, no PnL): it costs no equity."""
    return SliceCandidate(
        symbol=symbol,
        max_close_size=Decimal(size),
        expected_fill_price=Decimal(100),
        mm_relief_per_unit=Decimal(relief),
        equity_cost_per_unit=Decimal(0),
    )


def one_round(
    candidates: list[SliceCandidate],
    required: Decimal,
    book: Portfolio,
    model: MarginModel,
    config: Config = SEED_CONFIG,
) -> tuple[OrderPlan, ...]:
    plans, _, _ = _plan_round(
        candidates=candidates,
        required=required,
        portfolio=book,
        facts=model.evaluate(book, NOW),
        model=model,
        config=attrs.evolve(config, standard_margin=model),
        now=NOW,
        memo=_Memo(model, book.spot),
    )
    return plans


def test_plan_evaluations_are_the_models_evaluations_at_the_planning_time() -> None:
    """Two closes searched under a model of the user's, over two rounds: the plan reports
    exactly as many evaluations as the model made, every one at the planning time."""
    model = VAndLinear()
    quotes = {SYMBOL: SEED_QUOTE, ETH_CALL: Quote(best_ask=Decimal(101), theo=Decimal(100))}
    plan = plan_partial_orders(
        two_shorts(),
        quotes,
        0,
        attrs.evolve(SEED_CONFIG, standard_margin=model),
        MarginMode.STANDARD,
        NOW,
        anchor=MarginFacts(equity=Decimal(100), mm_required=Decimal(10_000)),
    )
    assert {o.symbol for o in plan.orders} == {SYMBOL, ETH_CALL}
    assert plan.rounds >= 1
    assert plan.evaluations == model.calls
    assert model.times == {NOW}


def test_round_values_each_close_on_what_the_earlier_ones_leave() -> None:
    """Under a model of the user's, the V-shaped close stops where it bottoms (2 of 4) and
    the next close is valued after it: both planned in one round, each with its own relief."""
    book = two_shorts()
    candidates = [at_mark(SYMBOL, "100", "4"), at_mark(ETH_CALL, "50", "10")]
    plans = one_round(candidates, Decimal(10_000), book, VAndLinear())
    assert [(p.symbol, p.close_size, p.expected_mm_relief) for p in plans] == [
        (SYMBOL, Decimal(2), Decimal(200)),
        (ETH_CALL, Decimal(10), Decimal(500)),
    ]


def test_round_skips_a_close_forced_past_its_help_and_plans_the_next() -> None:
    """A minimum order of 3 forces the V-shaped close to the whole 4 (it frees nothing):
    skipped, and the ETH close ranked after it is still planned."""
    book = two_shorts()
    config = attrs.evolve(SEED_CONFIG, instruments={"BTC": InstrumentSpec(min_size=Decimal(3))})
    candidates = [at_mark(SYMBOL, "100", "4"), at_mark(ETH_CALL, "50", "10")]
    plans = one_round(candidates, Decimal(10_000), book, VAndLinear(), config)
    assert [(p.symbol, p.close_size) for p in plans] == [(ETH_CALL, Decimal(10))]


def test_round_does_not_plan_a_close_freeing_no_margin_however_much_equity_it_brings() -> None:
    """Marked at 200 and filled at 1, closing the whole V-shaped short (back to the MM it
    started at) gains the most: it frees no margin, so it is not planned."""
    book = portfolio(position(entry="200"), spot=SPOT)
    candidate = attrs.evolve(
        at_mark(SYMBOL, "100", "4"),
        expected_fill_price=Decimal(1),
        equity_cost_per_unit=Decimal(-199),
    )
    assert one_round([candidate], Decimal(10_000), book, VAndLinear()) == ()


def test_round_does_not_plan_a_close_gaining_exactly_nothing() -> None:
    """5 short of the V (MM 310), filled 20 over the mark, no buffer: the minimum order of
    2.5 forces the best close (3) to the whole 5, which frees 100 and costs exactly 100."""
    book = portfolio(position(amount="-5"), spot=SPOT)
    config = attrs.evolve(
        SEED_CONFIG,
        partial_target_buffer_bps=0,
        instruments={"BTC": InstrumentSpec(min_size=Decimal("2.5"))},
    )
    candidate = attrs.evolve(
        at_mark(SYMBOL, "100", "5"),
        expected_fill_price=Decimal(120),
        equity_cost_per_unit=Decimal(20),
    )
    assert one_round([candidate], Decimal(10_000), book, VAndLinear(), config) == ()


def standard_candidates(book: Portfolio, cost: str = "0") -> list[SliceCandidate]:
    """The seed short (10 500 of MM per unit) and the ETH call (300 per unit, 10 % of
    spot), filled ``cost`` over their mark of 100."""
    price = Decimal(100) + Decimal(cost)
    return [
        SliceCandidate(
            symbol=p.symbol,
            max_close_size=p.amount.copy_negate(),
            expected_fill_price=price,
            mm_relief_per_unit=STANDARD.position_mm(attrs.evolve(p, amount=Decimal(-1)), SPOT),
            equity_cost_per_unit=Decimal(cost),
        )
        for p in book.positions.values()
    ]


def test_standard_round_stops_once_the_need_is_exactly_met() -> None:
    """One unit of the seed short gains exactly the 10 500 needed: nothing else is planned."""
    book = two_shorts()
    plans = one_round(standard_candidates(book), Decimal(10_500), book, STANDARD)
    assert [(p.symbol, p.close_size) for p in plans] == [(SYMBOL, Decimal(1))]


def test_standard_round_covers_a_remainder_below_one() -> None:
    """One unit short of the seed (10 500) leaves 0.5 of the need: the ETH call covers it."""
    book = portfolio(position(amount="-1"), position(ETH_CALL, amount="-10"), spot=SPOT)
    plans = one_round(standard_candidates(book), Decimal("10500.5"), book, STANDARD)
    assert [p.symbol for p in plans] == [SYMBOL, ETH_CALL]
    assert plans[1].close_size == Decimal("0.00166667")  # 0.5 / 300, rounded up


def test_standard_round_sizes_in_the_instruments_steps() -> None:
    """With a 0.1 size step, 15 000 of need at 10 500 a unit is 1.43 rounded up to 1.5."""
    book = portfolio(position(), spot=SPOT)
    config = attrs.evolve(
        SEED_CONFIG, instruments={"BTC": InstrumentSpec(size_step=Decimal("0.1"))}
    )
    plans = one_round(standard_candidates(book)[:1], Decimal(15_000), book, STANDARD, config)
    assert [p.close_size for p in plans] == [Decimal("1.5")]


def test_standard_round_skips_a_close_gaining_nothing_per_unit() -> None:
    """No buffer, a fill 10 500 over the mark: each unit frees as much as it costs, nothing
    is planned (and nothing is divided by a zero gain); 0.5 less and it is planned."""
    book = portfolio(position(), spot=SPOT)
    config = attrs.evolve(SEED_CONFIG, partial_target_buffer_bps=0)
    (even,) = standard_candidates(book, cost="10500")
    assert one_round([even], Decimal(100), book, STANDARD, config) == ()
    (gaining,) = standard_candidates(book, cost="10499.5")
    plans = one_round([gaining], Decimal(1), book, STANDARD, config)
    assert [p.close_size for p in plans] == [Decimal(2)]  # 1 / 0.5 a unit
    assert plans[0].close_size > MIN_SIZE


def test_standard_round_sizes_a_close_in_closed_form() -> None:
    """Under standard margin a close is the need over its gain per unit (relief − cost ×
    10 000 / 10 500, in liqcore's context) rounded up to the step, not a search over each
    size's rounded gain: a need one 28th digit above what 0.00100001 or 0.00300003 units
    gain exactly (which their rounded gain already meets) takes one step more."""
    book = portfolio(position(), spot=SPOT)
    (candidate,) = standard_candidates(book, cost="20.6")
    exact_per_unit = Fraction(10_500) - Fraction("20.6") * Fraction(10_000, 10_500)
    weight = CONTEXT.divide(Decimal(10_000), Decimal(10_500))
    per_unit = CONTEXT.subtract(Decimal(10_500), CONTEXT.multiply(Decimal("20.6"), weight))
    for size in (Decimal("0.00100001"), Decimal("0.00300003")):
        exact = Fraction(size) * exact_per_unit
        need = CONTEXT.divide(Decimal(exact.numerator), Decimal(exact.denominator))
        if Fraction(need) <= exact:
            need = CONTEXT.next_plus(need)
        (plan,) = one_round([candidate], need, book, STANDARD)
        units = CONTEXT.divide(CONTEXT.divide(need, per_unit), MIN_SIZE)
        assert plan.close_size == units.to_integral_value(ROUND_CEILING) * MIN_SIZE
        assert plan.close_size == size + MIN_SIZE


def test_plan_generic_model_closes_a_short_helping_to_the_end_without_a_peak_search() -> None:
    """Standard margin behind an opaque class, needing more than the whole short frees:
    every unit closed helps, so the whole 4 is closed after comparing it with two MIN_SIZE
    steps less (one step less would leave dust, closed too, for less): a handful of
    evaluations, not a golden-section search for a peak."""
    model = CountingStandard()
    plan = user_plan(model, MarginFacts(equity=Decimal(100), mm_required=Decimal(100_000)))
    assert [o.close_size for o in plan.orders] == [Decimal(4)]
    assert plan.evaluations == model.calls < 16


def test_plan_stops_when_exactly_min_size_is_needed() -> None:
    """A required relief of exactly MIN_SIZE (no equity, that much MM) plans nothing; a hair
    more plans a close."""
    assert seed_plan(anchor=MarginFacts(equity=Decimal(0), mm_required=MIN_SIZE)).orders == ()
    above = MarginFacts(equity=Decimal(0), mm_required=2 * MIN_SIZE)
    assert [o.symbol for o in seed_plan(anchor=above).orders] == [SYMBOL]


def test_slice_candidates_ask_a_users_model_at_the_planning_time() -> None:
    """Under a model of the user's each candidate's relief is the model's (100 a unit for
    the V-shaped short, 50 for the ETH call), valued from the portfolio's own evaluation,
    every evaluation at the time given."""
    model = VAndLinear()
    prices = {SYMBOL: Decimal(100), ETH_CALL: Decimal(100)}
    found = slice_candidates(two_shorts(), prices, model, NOW, 500)
    assert [(c.symbol, c.mm_relief_per_unit) for c in found] == [
        (SYMBOL, Decimal(100)),
        (ETH_CALL, Decimal(50)),
    ]
    assert model.times == {NOW}


@attrs.frozen
class OpaquePortfolioMargin:
    """Portfolio margin behind a class of its own: every close evaluated in full."""

    def evaluate(self, book: Portfolio, now: int) -> MarginFacts:
        return PM.evaluate(book, now)


def test_slice_candidates_under_portfolio_margin_equal_evaluating_each_close() -> None:
    """A short call's candidate under portfolio margin (from its prepared scenario values)
    is the one its full evaluation of the close gives, digit for digit."""
    strangled, _ = strangle()
    book = attrs.evolve(strangled, positions={STRANGLE_CALL: strangled.positions[STRANGLE_CALL]})
    prices = {
        STRANGLE_CALL: CONTEXT.multiply(book.positions[STRANGLE_CALL].mark_price, Decimal("1.01"))
    }
    found = slice_candidates(book, prices, PM, PM_NOW, 500)
    assert found
    assert found == slice_candidates(book, prices, OpaquePortfolioMargin(), PM_NOW, 500)


@attrs.frozen
class PerSymbolLinear:
    """MM of ``rate`` per unit short of each symbol, behind a class of its own."""

    rates: dict[str, Decimal]

    def evaluate(self, book: Portfolio, now: int) -> MarginFacts:
        mm = Decimal(0)
        for symbol, held in book.positions.items():
            if held.amount < 0:
                rate = self.rates.get(symbol, Decimal(0))
                mm = CONTEXT.add(mm, CONTEXT.multiply(rate, held.amount.copy_negate()))
        return MarginFacts(equity=model_equity(book), mm_required=mm)


def test_slice_candidates_skip_each_unfit_symbol_and_go_on() -> None:
    """In symbol order: an expired short, a long, a short freeing nothing, a harmful one
    (1 000 over its mark for 50 of relief) — each skipped, and the shorts after them, one
    freeing only 0.5 a unit, are still candidates."""
    expired, long, frees_nothing, harmful, small, large = (
        "BTC-20240105-90000-P",
        "BTC-20261231-1000-C",
        "BTC-20261231-2000-C",
        "BTC-20261231-3000-C",
        "BTC-20261231-4000-C",
        "BTC-20261231-5000-C",
    )
    book = portfolio(
        position(expired, amount="-1"),
        position(long, amount="2"),
        *(position(s, amount="-1") for s in (frees_nothing, harmful, small, large)),
    )
    rates = {harmful: Decimal(50), small: Decimal("0.5"), large: Decimal(50)}
    prices = {s: Decimal(100) for s in (expired, long, frees_nothing, small, large)}
    prices[harmful] = Decimal(1_100)
    found = slice_candidates(book, prices, PerSymbolLinear(rates), TODAY, 500)
    assert [(c.symbol, c.mm_relief_per_unit) for c in found] == [
        (small, Decimal("0.5")),
        (large, Decimal(50)),
    ]
