"""liqcore.planning.portfolio: the cheapest closes under portfolio margin (the traced linear
programme) and its rounds."""

from __future__ import annotations

import random
from decimal import Decimal

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liqcore.config import Config
from liqcore.inputs import MarginMode, Portfolio, Position, Quote
from liqcore.margin.base import MarginFacts, MarginModel
from liqcore.numbers import MIN_SIZE, bps_fraction
from liqcore.planning import PartialPlan, execution_prices, plan_partial_orders, slice_candidates
from liqcore.planning import portfolio as programme
from tests.liqcore.planning.books import (
    BENCH_NOW,
    BOOK_EXAMPLES,
    PM,
    PM_NOW,
    STRANGLE_CALL,
    STRANGLE_PUT,
    TODAY,
    accounts,
    bonuses,
    closes_of,
    configs,
    premium,
    reachable_accounts,
    reachable_plan,
    required_after,
    strangle,
)


def test_plan_portfolio_margin_closes_tied_strangle_legs_together() -> None:
    """In a short strangle the call's loss binds until closing it makes the put's binding
    too; past that no close of either leg alone helps (each raises the other scenario), and
    none alone reaches this need. The plan closes both together and reaches the target."""
    book, quotes = strangle()
    config = Config()
    facts = PM.evaluate(book, PM_NOW)
    need = Decimal(2_700)
    anchor = MarginFacts(
        equity=(facts.mm_required - need) * bps_fraction(500), mm_required=facts.mm_required
    )
    prices, _ = execution_prices(book, quotes, 100, config, PM_NOW)
    for leg in (STRANGLE_PUT, STRANGLE_CALL):  # no size of one leg alone is enough
        best = min(
            required_after(PM, book, [(leg, Decimal(k) / 100, prices[leg])], anchor, 500, PM_NOW)
            for k in range(1, 101)
        )
        assert best > Decimal(100)
    plan = plan_partial_orders(
        book, quotes, 100, config, MarginMode.PORTFOLIO, PM_NOW, anchor=anchor
    )
    assert {o.symbol for o in plan.orders} == {STRANGLE_PUT, STRANGLE_CALL}
    assert required_after(PM, book, closes_of(plan), anchor, 500, PM_NOW) <= MIN_SIZE
    assert plan.rounds == 1
    assert plan.evaluations == 1  # valued once, every close recombined from cached scenarios


def test_plan_portfolio_margin_closes_part_of_a_leg_where_a_whole_unit_raises_margin() -> None:
    """Closing one whole leg raises the strangle's margin (so no one-unit probe is a
    candidate), but a part of the call helps: a small need is met with part of the call."""
    book, quotes = strangle()
    prices, _ = execution_prices(book, quotes, 100, Config(), PM_NOW)
    assert slice_candidates(book, prices, PM, PM_NOW, 500) == ()
    facts = PM.evaluate(book, PM_NOW)
    need = Decimal(1_000)
    anchor = MarginFacts(
        equity=(facts.mm_required - need) * bps_fraction(500), mm_required=facts.mm_required
    )
    plan = plan_partial_orders(
        book, quotes, 100, Config(), MarginMode.PORTFOLIO, PM_NOW, anchor=anchor
    )
    (order,) = plan.orders
    assert order.symbol == STRANGLE_CALL
    assert order.close_size < 1
    assert required_after(PM, book, closes_of(plan), anchor, 500, PM_NOW) <= MIN_SIZE


@attrs.frozen
class OpaquePortfolioMargin:
    """Portfolio margin behind an opaque class: the planner can only search it."""

    def evaluate(self, portfolio: Portfolio, now: int) -> MarginFacts:
        return PM.evaluate(portfolio, now)


def pm_plan_of(
    account: tuple[Portfolio, dict[str, Quote], MarginFacts],
    bonus: int,
    config: Config,
    model: MarginModel = PM,
) -> PartialPlan:
    book, quotes, anchor = account
    config = attrs.evolve(config, portfolio_margin=model)
    return plan_partial_orders(
        book, quotes, bonus, config, MarginMode.PORTFOLIO, TODAY, anchor=anchor
    )


@settings(max_examples=BOOK_EXAMPLES)
@given(accounts(), bonuses, configs)
def test_plan_portfolio_margin_never_dearer_than_searching_the_model(
    account: tuple[Portfolio, dict[str, Quote], MarginFacts], bonus: int, config: Config
) -> None:
    """The exact plan reaches the target whenever searching the model close by close does,
    and never pays more premium above the marks (up to rounding to MIN_SIZE)."""
    book, _, anchor = account
    buffer = config.partial_target_buffer_bps
    exact = pm_plan_of(account, bonus, config)
    searched = pm_plan_of(account, bonus, config, OpaquePortfolioMargin())
    searched_left = required_after(PM, book, closes_of(searched), anchor, buffer, TODAY)
    exact_left = required_after(PM, book, closes_of(exact), anchor, buffer, TODAY)
    assert exact_left <= max(searched_left, MIN_SIZE) + Decimal("0.000001")
    if searched_left <= MIN_SIZE:
        slack = Decimal("0.001") + premium(book, closes_of(searched)) * Decimal("1e-9")
        assert premium(book, closes_of(exact)) <= premium(book, closes_of(searched)) + slack


@settings(max_examples=BOOK_EXAMPLES)
@given(st.data())
def test_plan_portfolio_margin_never_dearer_than_searching_realistic_books(
    data: st.DataObject,
) -> None:
    """On realistic books too, the exact plan never pays more than searching the model."""
    account = data.draw(reachable_accounts(mode=MarginMode.PORTFOLIO))
    book, quotes, anchor, bonus = account
    exact, exact_left = reachable_plan(MarginMode.PORTFOLIO, account, Config())
    opaque = Config(portfolio_margin=OpaquePortfolioMargin())
    searched = plan_partial_orders(
        book, quotes, bonus, opaque, MarginMode.PORTFOLIO, PM_NOW, anchor=anchor
    )
    searched_left = required_after(PM, book, closes_of(searched), anchor, 500, PM_NOW)
    assert exact_left <= MIN_SIZE
    if searched_left <= MIN_SIZE:
        slack = Decimal("0.001") + premium(book, closes_of(searched)) * Decimal("1e-9")
        assert premium(book, closes_of(exact)) <= premium(book, closes_of(searched)) + slack


@settings(max_examples=BOOK_EXAMPLES)
@given(accounts(), bonuses, configs, st.randoms(use_true_random=False))
def test_plan_portfolio_margin_independent_of_mapping_order(
    account: tuple[Portfolio, dict[str, Quote], MarginFacts],
    bonus: int,
    config: Config,
    rng: random.Random,
) -> None:
    """Under portfolio margin too, shuffling positions and quotes never changes the plan."""
    book, quotes, anchor = account
    items = list(book.positions.items())
    rng.shuffle(items)
    shuffled = Portfolio(cash=book.cash, positions=dict(items), spot=dict(book.spot))
    quote_items = list(quotes.items())
    rng.shuffle(quote_items)
    assert pm_plan_of((shuffled, dict(quote_items), anchor), bonus, config) == pm_plan_of(
        account, bonus, config
    )


def test_plan_portfolio_margin_trace_work_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trace stops after its pivot budget: with none at all it plans nothing (it never
    loops or plans a close it has not valued)."""
    monkeypatch.setattr(programme, "_PIVOTS_FLOOR", 0)
    monkeypatch.setattr(programme, "_PIVOTS_PER_COLUMN", 0)
    book, quotes = strangle()
    facts = PM.evaluate(book, PM_NOW)
    anchor = MarginFacts(equity=Decimal(0), mm_required=facts.mm_required)
    plan = plan_partial_orders(
        book, quotes, 100, Config(), MarginMode.PORTFOLIO, PM_NOW, anchor=anchor
    )
    assert plan.orders == ()


def test_plan_portfolio_margin_near_the_most_it_can_gain() -> None:
    """Needing most of what can be gained, the cheapest closes change on the way (a call
    closed whole is partly given back for a cheaper one): the plan is on target, no order
    can be cut by 1e-6 and keep it there. Searching the model close by close stops short."""
    calls = ("BTC-20270625-160000-C", "BTC-20270625-115000-C")
    put = "BTC-20261030-110000-P"
    book = Portfolio(
        cash=Decimal("534433.791"),
        positions={
            calls[0]: Position(
                symbol=calls[0], amount=Decimal("-9.2"), entry_price=Decimal("12884.20")
            ),
            calls[1]: Position(
                symbol=calls[1], amount=Decimal("-9.1"), entry_price=Decimal("27561.82")
            ),
            put: Position(symbol=put, amount=Decimal("-6.9"), entry_price=Decimal("15047.10")),
        },
        spot={"BTC": Decimal(105_000)},
    )
    quotes = {
        put: Quote(best_ask=Decimal("16314.2491"), theo=Decimal("15249.3088")),
        calls[1]: Quote(best_ask=Decimal("27809.0219"), theo=Decimal("27070.0800")),
        calls[0]: Quote(best_ask=Decimal("24851.6173"), theo=Decimal("12853.4741")),
    }
    anchor = MarginFacts(equity=Decimal("61261.599"), mm_required=Decimal("162208.59"))
    plan = plan_partial_orders(
        book, quotes, 73, Config(), MarginMode.PORTFOLIO, BENCH_NOW, anchor=anchor
    )
    closes = closes_of(plan)
    assert required_after(PM, book, closes, anchor, 500, BENCH_NOW) <= MIN_SIZE
    for index, (symbol, size, price) in enumerate(closes):
        cut = [*closes[:index], (symbol, size - Decimal("0.000001"), price), *closes[index + 1 :]]
        assert required_after(PM, book, cut, anchor, 500, BENCH_NOW) > MIN_SIZE
    searched = plan_partial_orders(
        book,
        quotes,
        73,
        Config(portfolio_margin=OpaquePortfolioMargin()),
        MarginMode.PORTFOLIO,
        BENCH_NOW,
        anchor=anchor,
    )
    searched_left = required_after(PM, book, closes_of(searched), anchor, 500, BENCH_NOW)
    assert searched_left > MIN_SIZE  # searching the model close by close stops short here
