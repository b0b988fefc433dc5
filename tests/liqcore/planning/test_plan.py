"""liqcore.planning.plan: plan_partial_orders end to end and PartialPlan (SPEC §6)."""

from __future__ import annotations

import decimal
import random
from decimal import Decimal
from fractions import Fraction

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liqcore.config import Config
from liqcore.errors import InvalidInput, PlanningError
from liqcore.inputs import MarginMode, Portfolio, Position, Quote
from liqcore.instruments import InstrumentSpec, option_symbol
from liqcore.margin.base import MarginFacts
from liqcore.numbers import MIN_SIZE, ONE, bps_fraction
from liqcore.planning import (
    PLAN_MAX_ROUNDS,
    OrderPlan,
    PartialPlan,
    close_short,
    execution_prices,
    plan_partial_orders,
    slice_candidates,
)
from liqcore.targets import required_mm_relief
from tests.liqcore.planning.books import (
    BOOK_EXAMPLES,
    LOTS,
    MIN_LOTS,
    NOW,
    PM,
    PM_NOW,
    PM_SPOT,
    SEED_ANCHOR,
    SEED_CONFIG,
    SEED_QUOTE,
    STANDARD,
    SYMBOL,
    TODAY,
    VShapedMargin,
    accounts,
    bonuses,
    closes_of,
    configs,
    model_equity,
    modes,
    plan_of,
    portfolio,
    position,
    premium,
    reachable_accounts,
    reachable_plan,
    required_after,
    seed_plan,
    strangle,
    user_plan,
)


def test_plan_partial_orders_seed_hand_example() -> None:
    """Seed: needs 4300/21 of relief; each unit frees 10 500 and costs 20.6 × 20/21 of it, so
    ⌈(4300/21) / (10 500 − 412/21)⌉ = ⌈4300/220088⌉ = 0.01953764 at 120.6, in one round."""
    plan = seed_plan()
    exact = Fraction(4300, 21) / (Fraction(10_500) - Fraction(412, 21))
    assert exact == Fraction(4300, 220_088)
    assert plan.orders == (
        OrderPlan(
            symbol=SYMBOL,
            close_size=Decimal("0.01953764"),
            limit_price=Decimal("120.60"),
            expected_mm_relief=Decimal("0.01953764") * 10_500,
        ),
    )
    assert Fraction(plan.orders[0].close_size) - exact < Fraction(1, 10**8)
    assert plan.rounds == 1
    assert plan.evaluations == 2  # the original, and the simulated one at round 2
    assert plan.model_facts == MarginFacts(equity=Decimal(100), mm_required=Decimal(42_000))
    assert dict(plan.unpriced) == {}


def test_plan_partial_orders_seed_reaches_target_just() -> None:
    """After the seed plan, Health's numbers moved by the model's change are on target."""
    size = seed_plan().orders[0].close_size
    equity = Decimal(100) - size * Decimal("20.6")
    mm = Decimal(300) - size * 10_500
    assert required_mm_relief(equity, mm, 500) == 0
    smaller = size - MIN_SIZE
    assert required_mm_relief(100 - smaller * Decimal("20.6"), 300 - smaller * 10_500, 500) > 0


def test_plan_partial_orders_above_target_plans_nothing() -> None:
    """An account on target needs no orders and no rounds."""
    plan = seed_plan(anchor=MarginFacts(equity=Decimal(315), mm_required=Decimal(300)))
    assert plan.orders == ()
    assert plan.rounds == 0


def test_plan_partial_orders_unpriced_named_others_planned() -> None:
    """A short without a usable price is named; the priced one is still planned."""
    unpriceable = "BTC-20261231-120000-C"
    book = portfolio(position(), position(unpriceable, entry="1", pnl="8"))
    plan = plan_partial_orders(
        book, {SYMBOL: SEED_QUOTE}, 50, SEED_CONFIG, MarginMode.STANDARD, NOW, anchor=SEED_ANCHOR
    )
    assert [o.symbol for o in plan.orders] == [SYMBOL]
    assert list(plan.unpriced) == [unpriceable]


def test_plan_partial_orders_missing_spot_raises_planning_error() -> None:
    """The model cannot value the portfolio: the plan as a whole fails."""
    book = portfolio(position(), spot={})
    with pytest.raises(PlanningError):
        plan_partial_orders(
            book,
            {SYMBOL: SEED_QUOTE},
            50,
            SEED_CONFIG,
            MarginMode.STANDARD,
            NOW,
            anchor=SEED_ANCHOR,
        )


def test_plan_partial_orders_independent_of_caller_decimal_context() -> None:
    """A caller's coarse decimal context (3 digits, rounding down, Inexact trapped) changes
    nothing: liqcore computes in its own context."""
    expected = seed_plan()
    generic = user_plan(VShapedMargin(), MarginFacts(equity=Decimal(100), mm_required=Decimal(150)))
    with decimal.localcontext() as context:
        context.prec = 3
        context.rounding = decimal.ROUND_DOWN
        context.traps[decimal.Inexact] = True
        assert seed_plan() == expected
        assert (
            user_plan(VShapedMargin(), MarginFacts(equity=Decimal(100), mm_required=Decimal(150)))
            == generic
        )


def test_partial_plan_validates_its_fields() -> None:
    """PartialPlan refuses orders that are not a tuple of OrderPlan and a non-mapping."""
    facts = MarginFacts(equity=Decimal(0), mm_required=Decimal(0))
    with pytest.raises(InvalidInput, match=r"PartialPlan\.orders"):
        PartialPlan(orders=[], model_facts=facts, rounds=0, evaluations=0)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=r"PartialPlan\.orders"):
        PartialPlan(orders=("x",), model_facts=facts, rounds=0, evaluations=0)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=r"PartialPlan\.unpriced"):
        PartialPlan(orders=(), unpriced=[], model_facts=facts, rounds=0, evaluations=0)  # type: ignore[arg-type]
    plan = PartialPlan(
        orders=(), unpriced={"B": "b", "A": "a"}, model_facts=facts, rounds=0, evaluations=1
    )
    assert list(plan.unpriced) == ["A", "B"]


def anchored_required(
    book: Portfolio, after: Portfolio, anchor: MarginFacts, buffer_bps: int
) -> Decimal:
    before_facts, after_facts = STANDARD.evaluate(book, TODAY), STANDARD.evaluate(after, TODAY)
    return required_mm_relief(
        anchor.equity + after_facts.equity - before_facts.equity,
        anchor.mm_required + after_facts.mm_required - before_facts.mm_required,
        buffer_bps,
    )


@given(accounts(), bonuses, configs)
def test_plan_orders_are_live_shorts_within_position(
    account: tuple[Portfolio, dict[str, Quote], MarginFacts], bonus: int, config: Config
) -> None:
    """Every order closes a live short option, once per symbol, in (MIN_SIZE, |amount|]."""
    book = account[0]
    plan = plan_of(account, bonus, config)
    assert len({o.symbol for o in plan.orders}) == len(plan.orders)
    assert plan.rounds <= PLAN_MAX_ROUNDS
    for order in plan.orders:
        held = book.positions[order.symbol]
        assert MIN_SIZE < order.close_size <= -held.amount
        remainder = -held.amount - order.close_size
        assert remainder == 0 or remainder > MIN_SIZE
        option = option_symbol(order.symbol)
        assert option is not None
        assert option.expires_at > TODAY


@given(accounts(), bonuses, configs, st.randoms(use_true_random=False))
def test_plan_independent_of_mapping_order(
    account: tuple[Portfolio, dict[str, Quote], MarginFacts],
    bonus: int,
    config: Config,
    rng: random.Random,
) -> None:
    """Shuffling the portfolio's positions and the quotes never changes the plan."""
    book, quotes, anchor = account
    items = list(book.positions.items())
    rng.shuffle(items)
    quote_items = list(quotes.items())
    rng.shuffle(quote_items)
    shuffled = Portfolio(
        cash=book.cash, positions=dict(items), spot=dict(reversed(list(book.spot.items())))
    )
    assert plan_of((shuffled, dict(quote_items), anchor), bonus, config) == plan_of(
        account, bonus, config
    )


@given(accounts(), bonuses, configs)
def test_plan_reaches_target_whenever_closing_all_shorts_would(
    account: tuple[Portfolio, dict[str, Quote], MarginFacts], bonus: int, config: Config
) -> None:
    """If buying back every priced short would put the account on target, the plan does
    too (up to one MIN_SIZE of the best relief, the smallest size there is)."""
    book, quotes, anchor = account
    buffer = config.partial_target_buffer_bps
    prices, _ = execution_prices(book, quotes, bonus, config, TODAY)
    everything = book
    for symbol, price in prices.items():
        everything = close_short(everything, symbol, -book.positions[symbol].amount, price)
    plan = plan_of(account, bonus, config)
    after = book
    for order in plan.orders:
        after = close_short(after, order.symbol, order.close_size, order.limit_price)
    best = max(
        (c.mm_relief_per_unit for c in slice_candidates(book, prices, STANDARD, TODAY, buffer)),
        default=Decimal(0),
    )
    if anchored_required(book, everything, anchor, buffer) <= 0:
        assert anchored_required(book, after, anchor, buffer) <= MIN_SIZE * (1 + best)


@settings(max_examples=BOOK_EXAMPLES)
@given(st.data(), modes, st.booleans(), MIN_LOTS)
def test_plan_reaches_target_and_no_order_harms(
    data: st.DataObject, mode: MarginMode, lots: bool, min_size: Decimal
) -> None:
    """When closing every short would reach the target, the plan reaches it (under either
    model, with or without whole lots); and no order harms: with the others filled, the
    required relief without it would be no smaller."""
    account = data.draw(reachable_accounts(mode=mode))
    book, _, anchor, _ = account
    instruments = {"BTC": attrs.evolve(LOTS, min_size=min_size)} if lots else {}
    config = Config(instruments=instruments)
    model = config.margin_model(mode)
    plan, left = reachable_plan(mode, account, config)
    assert left <= MIN_SIZE
    assert plan.rounds <= PLAN_MAX_ROUNDS
    closes = closes_of(plan)
    for index in range(len(closes)):
        without = closes[:index] + closes[index + 1 :]
        assert left <= required_after(model, book, without, anchor, 500, PM_NOW) + MIN_SIZE


def test_plan_leaves_out_a_close_whole_lots_make_dear() -> None:
    """Whole lots make planning a knapsack: the better put per unit of premium can only be
    closed whole (0.9 with a minimum order of 0.5 strands any part), which leaves a need the
    other put's minimum order over-covers; closing 1.1 of the other put alone is cheaper.
    The plan finds it (every pair of tradeable lot counts tried)."""
    better, other = "BTC-20270326-90000-P", "BTC-20270625-75000-P"
    book = portfolio(
        position(better, amount="-0.9", entry="16548.86"),
        position(other, amount="-2.8", entry="14280.06"),
        cash="71730.1485",
    )
    quotes = {
        better: Quote(best_ask=Decimal("17102.924")),
        other: Quote(best_ask=Decimal("15279.9985"), theo=Decimal("14012.1743")),
    }
    spec = InstrumentSpec(size_step=Decimal("0.1"), price_tick=Decimal(5), min_size=Decimal("0.5"))
    config = Config(instruments={"BTC": spec})
    anchor = MarginFacts(equity=Decimal("16852.0065"), mm_required=Decimal("19425.00"))
    plan = plan_partial_orders(book, quotes, 758, config, MarginMode.STANDARD, NOW, anchor=anchor)
    prices, _ = execution_prices(book, quotes, 758, config, NOW)

    def tradeable(lots: int, available: int) -> bool:
        return lots in {0, available} or (lots >= 5 and available - lots >= 5)

    best = min(
        premium(book, trial)
        for a in range(10)
        for b in range(29)
        if tradeable(a, 9)
        and tradeable(b, 28)
        and required_after(
            STANDARD,
            book,
            trial := [
                (better, Decimal(a) / 10, prices[better]),
                (other, Decimal(b) / 10, prices[other]),
            ],
            anchor,
            500,
            NOW,
        )
        <= MIN_SIZE
    )
    assert premium(book, closes_of(plan)) == best
    assert [(o.symbol, o.close_size) for o in plan.orders] == [(other, Decimal("1.1"))]


def test_plan_trim_may_leave_exactly_min_size_of_required_relief() -> None:
    """Standard margin, buffer 0, lots of 0.1 with a minimum order of 1: all 3.5 of the
    cheap short (5 249 of gain a unit) fall 521.9 short, and the dear one's minimum order
    (10 495) over-covers; the trim then cuts the cheap close back to 1.6, which leaves
    exactly MIN_SIZE of required relief — on target, like the planner's own stop (1.7, one
    lot more, would pay for nothing)."""
    cheap, dear = "BTC-20261231-150000-C", "BTC-20261231-90000-C"
    book = portfolio(
        position(cheap, amount="-3.5", entry="10"),
        position(dear, amount="-2", entry="50"),
        cash="0",
    )
    quotes = {cheap: Quote(theo=Decimal(10)), dear: Quote(theo=Decimal(50))}
    spec = InstrumentSpec(size_step=Decimal("0.1"), min_size=Decimal(1))
    config = Config(instruments={"BTC": spec}, reference_band_bps=0, partial_target_buffer_bps=0)
    need = Decimal(10_495) + Decimal("1.6") * 5_249 + MIN_SIZE
    mm = Decimal(50_000)
    anchor = MarginFacts(equity=mm - need, mm_required=mm)
    plan = plan_partial_orders(book, quotes, 1_000, config, MarginMode.STANDARD, NOW, anchor=anchor)
    assert {o.symbol: o.close_size for o in plan.orders} == {cheap: Decimal("1.6"), dear: ONE}
    assert required_after(STANDARD, book, closes_of(plan), anchor, 0, NOW) == MIN_SIZE


@attrs.frozen
class GatedMargin:
    """MM = ``spare`` × (1 − a) + 1 000 × a × (b + c), with a, b, c the shorts of GATE, B and
    C (a model, not a market): B and C need margin only while GATE is open, so once GATE is
    closed, closing them frees nothing. Equity is cash + Σ amount × mark."""

    spare: Decimal

    GATE, B, C = "BTC-20261231-90000-C", "BTC-20261231-100000-C", "BTC-20261231-110000-C"

    def evaluate(self, portfolio: Portfolio, now: int) -> MarginFacts:
        def short(symbol: str) -> Decimal:
            held = portfolio.positions.get(symbol)
            return -held.amount if held is not None else Decimal(0)

        a = short(self.GATE)
        mm = self.spare * (1 - a) + 1_000 * a * (short(self.B) + short(self.C))
        return MarginFacts(equity=model_equity(portfolio), mm_required=mm)


def gated_plan(
    model: GatedMargin, amounts: dict[str, str], quotes: dict[str, Quote], need: Decimal
) -> PartialPlan:
    """The plan of shorts ``amounts`` (entry 100, so marked at 100) under ``model``, in lots
    of 0.1, buffer 0, no bonus: Health's required relief is ``need``."""
    book = portfolio(*(position(s, amount=a, entry="100") for s, a in amounts.items()), cash="0")
    config = Config(
        instruments={"BTC": InstrumentSpec(size_step=Decimal("0.1"))},
        partial_target_buffer_bps=0,
        reference_band_bps=0,
        standard_margin=model,
    )
    anchor = MarginFacts(equity=10_000 - need, mm_required=Decimal(10_000))
    return plan_partial_orders(book, quotes, 0, config, MarginMode.STANDARD, NOW, anchor=anchor)


def test_plan_within_min_size_of_target_counts_as_on_target_when_plans_are_compared() -> None:
    """Closing GATE (free: priced at its mark) frees 1 900 where 1 900 + MIN_SIZE is needed,
    and then B frees nothing: the plan stops MIN_SIZE short, which is on target. Planned
    without GATE, B alone covers the need for a premium of 2 (two units, one over the mark
    each). Compared, both are on target and GATE's plan pays less: it is kept."""
    model = GatedMargin(spare=Decimal(100))
    gate, b = GatedMargin.GATE, GatedMargin.B
    quotes = {gate: Quote(theo=Decimal(100)), b: Quote(theo=Decimal(101))}
    plan = gated_plan(model, {gate: "-1", b: "-2"}, quotes, Decimal(1_900) + MIN_SIZE)
    assert [(o.symbol, o.close_size) for o in plan.orders] == [(gate, ONE)]


def test_plan_without_a_dearest_order_keeps_every_other_priced_short() -> None:
    """Closing GATE first frees the most (1 500 of the 1 800 needed) but leaves B and C
    freeing nothing, so that plan stays 300 short. Planned again without GATE, B and C
    together cover the need (1 of B, then 0.8 of C): that plan is kept."""
    model = GatedMargin(spare=Decimal(500))
    gate, b, c = GatedMargin.GATE, GatedMargin.B, GatedMargin.C
    quotes = {s: Quote(theo=Decimal(100)) for s in (gate, b, c)}
    plan = gated_plan(model, {gate: "-1", b: "-1", c: "-1"}, quotes, Decimal(1_800))
    assert [(o.symbol, o.close_size) for o in plan.orders] == [(b, ONE), (c, Decimal("0.8"))]


def test_plan_tie_between_alike_shorts_keeps_the_first_by_symbol() -> None:
    """Two shorts alike in all but expiry (standard margin ignores it): the plan closes the
    first by symbol, and the plan made without it (the other, for the same premium) loses
    the tie to the plan found first."""
    first, second = "BTC-20261231-100000-C", "BTC-20270326-100000-C"
    book = portfolio(position(first), position(second))
    config = attrs.evolve(
        SEED_CONFIG, instruments={"BTC": InstrumentSpec(size_step=Decimal("0.01"))}
    )
    quotes = {first: SEED_QUOTE, second: SEED_QUOTE}
    plan = plan_partial_orders(
        book, quotes, 50, config, MarginMode.STANDARD, NOW, anchor=SEED_ANCHOR
    )
    assert [(o.symbol, o.close_size) for o in plan.orders] == [(first, Decimal("0.02"))]


def test_plan_portfolio_margin_lots_free_plans_tied_keep_the_rounded_up_one() -> None:
    """Priced at its mark (no bonus), any close of the deep put is free, so the plan that
    rounds whole lots up (1 in one round) and the one that rounds down first and covers the
    rest in a second round (0.9, then the minimum order of 0.5) tie on premium: the first
    found, rounded up, is kept."""
    put = "BTC-20260626-140000-P"
    book = Portfolio(
        cash=Decimal(0),
        positions={put: Position(symbol=put, amount=Decimal("-4.4"), entry_price=Decimal(52_896))},
        spot={"BTC": PM_SPOT},
    )
    quotes = {put: Quote(theo=Decimal(52_896))}
    spec = InstrumentSpec(size_step=Decimal("0.1"), price_tick=ONE, min_size=Decimal("0.5"))
    config = Config(instruments={"BTC": spec})
    mm = PM.evaluate(book, PM_NOW).mm_required
    anchor = MarginFacts(equity=(mm - 4_700) * bps_fraction(500), mm_required=mm)
    plan = plan_partial_orders(book, quotes, 0, config, MarginMode.PORTFOLIO, PM_NOW, anchor=anchor)
    assert [(o.symbol, o.close_size) for o in plan.orders] == [(put, ONE)]
    assert plan.rounds == 1
    assert required_after(PM, book, closes_of(plan), anchor, 500, PM_NOW) <= MIN_SIZE


def test_plan_portfolio_margin_is_planned_on_its_scenarios() -> None:
    """Portfolio margin is planned on its scenarios, not searched close by close: the short
    strangle's legs, which only help together at this need, are both closed, in one round,
    the portfolio valued once (every close recombined from its cached scenario losses)."""
    book, quotes = strangle()
    mm = PM.evaluate(book, PM_NOW).mm_required
    anchor = MarginFacts(equity=(mm - 2_700) * bps_fraction(500), mm_required=mm)
    plan = plan_partial_orders(
        book, quotes, 100, Config(), MarginMode.PORTFOLIO, PM_NOW, anchor=anchor
    )
    assert {o.symbol for o in plan.orders} == set(book.positions)
    assert required_after(PM, book, closes_of(plan), anchor, 500, PM_NOW) <= MIN_SIZE
    assert plan.evaluations == 1


def test_plan_target_buffer_of_10_000_bps_is_planned_like_any_other() -> None:
    """The target buffer has no upper bound: at 10 000 bps (equity must reach twice the
    margin) the seed still gets the one close that puts it on target."""
    config = attrs.evolve(SEED_CONFIG, partial_target_buffer_bps=10_000)
    plan = seed_plan(config)
    (order,) = plan.orders
    assert order.symbol == SYMBOL
    book = portfolio(position())
    assert required_after(STANDARD, book, closes_of(plan), SEED_ANCHOR, 10_000, NOW) == 0
