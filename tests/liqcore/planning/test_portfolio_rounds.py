"""liqcore.planning.portfolio's rounds: the traced closes made tradeable (whole lots up, or
down first), which shorts a round may close, when a round is traced again, and when the
rounds stop — on the short strangle of tests/liqcore/planning/books.py under the portfolio
model."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import NamedTuple

import pytest

from liqcore.config import Config
from liqcore.inputs import Portfolio, Position, Quote
from liqcore.instruments import InstrumentSpec, OptionSymbol
from liqcore.margin.base import MarginFacts
from liqcore.numbers import BPS, CONTEXT, MIN_SIZE, ZERO, bps_fraction
from liqcore.planning import execution_prices, lots
from liqcore.planning import portfolio as programme
from liqcore.planning.orders import OrderPlan
from liqcore.planning.simulation import _Simulation
from liqcore.targets import required_mm_relief
from tests.liqcore.planning.books import PM, PM_NOW, STRANGLE_CALL, STRANGLE_PUT, strangle

D = Decimal

LOTS = Config(instruments={"BTC": InstrumentSpec(size_step=D("0.1"))})
"""BTC options in lots of 0.1, no minimum order."""


ETH_CALL = "ETH-20261231-4000-C"


def sized(plans: tuple[OrderPlan, ...]) -> list[tuple[str, Decimal]]:
    return [(p.symbol, p.close_size) for p in plans]


def relief_needed(start: _Simulation, need: Decimal) -> Callable[[MarginFacts], Decimal]:
    """Health's required relief (buffer 500 bps), anchored so that it is ``need`` at
    ``start``: what the rounds are given."""
    equity = (start.facts.mm_required - need) * bps_fraction(500)

    def required_at(facts: MarginFacts) -> Decimal:
        moved = equity + facts.equity - start.facts.equity
        return required_mm_relief(moved, facts.mm_required, 500)

    return required_at


def relief_exactly(
    start: _Simulation, need: Decimal, at: MarginFacts, value: Decimal
) -> Callable[[MarginFacts], Decimal]:
    """:func:`relief_needed` with the margin required moved by a constant so that the
    required relief at ``at`` is exactly ``value``."""
    equity = (start.facts.mm_required - need) * bps_fraction(500)

    def moved(facts: MarginFacts) -> Decimal:
        return equity + facts.equity - start.facts.equity

    reachable = CONTEXT.divide(CONTEXT.multiply(moved(at), D(BPS)), D(BPS + 500))
    shift = value - (at.mm_required - reachable)

    def required_at(facts: MarginFacts) -> Decimal:
        return required_mm_relief(moved(facts), facts.mm_required + shift, 500)

    assert required_at(at) == value
    return required_at


def strangle_start() -> tuple[Portfolio, dict[str, Quote], _Simulation]:
    book, quotes = strangle()
    return book, quotes, _Simulation.of(PM, book, PM_NOW, [0])


def round_of(
    need: Decimal,
    config: Config,
    *,
    down: bool,
    available: Mapping[str, Decimal] | None = None,
    required_at: Callable[[MarginFacts], Decimal] | None = None,
    book: Portfolio | None = None,
    prices: Mapping[str, Decimal] | None = None,
    now: int = PM_NOW,
    required: Decimal | None = None,
) -> tuple[tuple[OrderPlan, ...], _Simulation]:
    """One round on the strangle (or ``book``) for ``need``."""
    if book is None:
        book, quotes, start = strangle_start()
    else:
        quotes, start = {}, _Simulation.of(PM, book, now, [0])
    if prices is None:
        prices, _ = execution_prices(book, quotes, 100, config, PM_NOW)
    at = relief_needed(start, need) if required_at is None else required_at
    return programme._scenario_round(
        simulation=start,
        model=PM,
        prices=prices,
        available=(
            {s: -p.amount for s, p in book.positions.items()} if available is None else available
        ),
        required=at(start.facts) if required is None else required,
        required_at=at,
        down=down,
        config=config,
        now=now,
    )


def test_rounded_up_to_the_step_with_a_whole_step_of_allowance() -> None:
    """0.15 traced in lots of 0.1 is 0.2; what rounding may cost is at least a whole step
    (0.1, not the 0.05 added) times the steepness."""
    sizes = {STRANGLE_CALL: (D(3), D(120), D(100))}
    plans, allowance = programme._rounded(
        [(STRANGLE_CALL, D("0.15"), D(7))],
        sizes=sizes,
        prices={STRANGLE_CALL: D(120)},
        config=LOTS,
        down=False,
    )
    assert sized(plans) == [(STRANGLE_CALL, D("0.2"))]
    assert plans[0].limit_price == D(120)
    assert allowance == D("0.7")


def test_rounded_up_to_the_minimum_order_with_what_was_raised_as_allowance() -> None:
    """0.15 traced, minimum order 0.5: the order is 0.5, and what was raised (0.35) counts."""
    spec = InstrumentSpec(size_step=D("0.1"), min_size=D("0.5"))
    plans, allowance = programme._rounded(
        [(STRANGLE_CALL, D("0.15"), D(2))],
        sizes={STRANGLE_CALL: (D(3), D(120), D(100))},
        prices={STRANGLE_CALL: D(120)},
        config=Config(instruments={"BTC": spec}),
        down=False,
    )
    assert sized(plans) == [(STRANGLE_CALL, D("0.5"))]
    assert allowance == D("0.70")


def test_rounded_up_closes_a_remainder_below_the_minimum_order() -> None:
    """1.0 traced of 1.05 held, minimum order 0.1: the 0.05 left could not be traded, so
    the whole 1.05 is closed (the position, not the price, bounds the order)."""
    spec = InstrumentSpec(size_step=D("0.1"), min_size=D("0.1"))
    plans, _ = programme._rounded(
        [(STRANGLE_CALL, D(1), D(2))],
        sizes={STRANGLE_CALL: (D("1.05"), D(20), D(10))},
        prices={STRANGLE_CALL: D(20)},
        config=Config(instruments={"BTC": spec}),
        down=False,
    )
    assert sized(plans) == [(STRANGLE_CALL, D("1.05"))]


def test_rounded_down_drops_what_is_below_a_lot_and_keeps_the_rest() -> None:
    """Rounding down: 0.05 of the put is below a lot and dropped (the call after it is still
    planned, 0.37 down to 0.3); the ETH call, which has no lots, is rounded up to MIN_SIZE
    as ever."""
    spec = InstrumentSpec(size_step=D("0.1"), min_size=D("0.1"))
    sizes = {
        STRANGLE_PUT: (D(1), D(20), D(10)),
        STRANGLE_CALL: (D(1), D(20), D(10)),
        ETH_CALL: (D(1), D(20), D(10)),
    }
    plans, allowance = programme._rounded(
        [
            (STRANGLE_PUT, D("0.05"), D(1)),
            (STRANGLE_CALL, D("0.37"), D(1)),
            (ETH_CALL, D("0.15"), D(1)),
        ],
        sizes=sizes,
        prices={s: D(20) for s in sizes},
        config=Config(instruments={"BTC": spec}),
        down=True,
    )
    assert sized(plans) == [(STRANGLE_CALL, D("0.3")), (ETH_CALL, D("0.15"))]
    assert allowance == D("0.1") + MIN_SIZE


def test_scenario_plans_round_down_first_only_with_lots() -> None:
    """A need of 1 000 on the strangle is met by 0.13… of the call. Without lots there is one
    plan; in lots of 0.1 a second one rounds down first (0.1, short) and covers the rest in a
    second round (0.2 in all)."""
    book, quotes, start = strangle_start()
    required_at = relief_needed(start, D(1_000))
    found = {}
    for name, config in (("plain", Config()), ("lots", LOTS)):
        prices, _ = execution_prices(book, quotes, 100, config, PM_NOW)
        found[name] = [
            (sized(plans), rounds)
            for plans, rounds in programme._scenario_plans(
                start=start,
                model=PM,
                prices=prices,
                required_at=required_at,
                config=config,
                now=PM_NOW,
            )
        ]
    ((plain, plain_rounds),) = found["plain"]
    assert plain_rounds == 1
    assert [s for s, _ in plain] == [STRANGLE_CALL]
    assert found["lots"] == [([(STRANGLE_CALL, D("0.2"))], 1), ([(STRANGLE_CALL, D("0.2"))], 2)]


def test_scenario_round_down_is_rounded_down_and_not_traced_again() -> None:
    """Rounded down, the round closes 0.1 of the call and leaves the rest short for the next
    round (it is not traced again and rounded up within the round)."""
    plans, after = round_of(D(1_000), LOTS, down=True)
    assert sized(plans) == [(STRANGLE_CALL, D("0.1"))]
    _, _, start = strangle_start()
    assert relief_needed(start, D(1_000))(after.facts) > MIN_SIZE


def test_scenario_round_skips_what_cannot_be_closed() -> None:
    """Of the prices given, a round traces only options still held, not expired at ``now``,
    with more than MIN_SIZE left (none without an entry in ``available``): not a perp, not
    an option it does not hold, not one expiring at ``now`` exactly, not one with MIN_SIZE
    or no entry left — and the put, with nothing left after an earlier round, is skipped
    without ending the walk (the call is closed)."""
    expiring = "BTC-20260301-100000-C"
    now = OptionSymbol.parse(expiring).expires_at
    book, _ = strangle()
    extra = {
        "BTC-PERP": D(100_000),
        "BTC-20261231-120000-C": D(5_000),
        "BTC-20261231-130000-C": D(4_000),
        expiring: D(2_000),
    }
    held = {
        **book.positions,
        **{s: Position(symbol=s, amount=D(-1), entry_price=price) for s, price in extra.items()},
    }
    book = Portfolio(cash=book.cash, positions=held, spot=book.spot)
    prices = {
        "BTC-20261230-100000-C": D(9_000),  # not held
        **extra,
        STRANGLE_PUT: book.positions[STRANGLE_PUT].mark_price,
        STRANGLE_CALL: book.positions[STRANGLE_CALL].mark_price,
    }
    available = {s: D(1) for s in prices}
    available["BTC-20261231-120000-C"] = MIN_SIZE
    del available["BTC-20261231-130000-C"]  # nothing left of it either
    available[STRANGLE_PUT] = ZERO
    plans, _ = round_of(
        D(500), Config(), down=False, available=available, book=book, prices=prices, now=now
    )
    assert [p.symbol for p in plans] == [STRANGLE_CALL]


TIED_CALL, TIED_PUT = "BTC-20260925-160000-C", "BTC-20260925-75000-P"


TIED_NOW = 1_788_220_800_000  # 2026-09-01T00:00:00Z


TIED_LOTS = InstrumentSpec(size_step=D("0.1"), price_tick=D(5), min_size=D("0.5"))


class TiedRound(NamedTuple):
    plans: tuple[OrderPlan, ...]
    after: _Simulation
    required_at: Callable[[MarginFacts], Decimal]
    rounded: tuple[OrderPlan, ...]
    """The traced closes merely rounded up."""
    again: list[tuple[str, Decimal, Decimal]]
    """The closes traced again for the need plus the most rounding may cost."""


def tied_strangle_round() -> TiedRound:
    """A BTC strangle whose shock scenarios bind together, in lots of 0.1 (minimum order
    0.5), one round rounding up."""
    book = Portfolio(
        cash=D("17904.4085"),
        positions={
            TIED_CALL: Position(symbol=TIED_CALL, amount=D("-9.4"), entry_price=D("430.79")),
            TIED_PUT: Position(symbol=TIED_PUT, amount=D("-5.7"), entry_price=D("197.78")),
        },
        spot={"BTC": D(105_000)},
    )
    quotes = {
        TIED_CALL: Quote(best_ask=D("444.6805"), theo=D("426.7818")),
        TIED_PUT: Quote(best_ask=D("200.5580")),
    }
    config = Config(instruments={"BTC": TIED_LOTS})
    start = _Simulation.of(PM, book, TIED_NOW, [0])
    anchor = MarginFacts(equity=D("6663.4365"), mm_required=D("10794.70"))

    def required_at(facts: MarginFacts) -> Decimal:
        return required_mm_relief(
            anchor.equity + facts.equity - start.facts.equity,
            anchor.mm_required + facts.mm_required - start.facts.mm_required,
            500,
        )

    prices, _ = execution_prices(book, quotes, 931, config, TIED_NOW)
    available = {s: -p.amount for s, p in book.positions.items()}
    sizes = {s: (available[s], prices[s], book.positions[s].mark_price) for s in prices}
    traced = programme._cheapest_closes(
        simulation=start,
        model=PM,
        sizes=sizes,
        required=required_at(start.facts),
        weight=D(10_000) / D(10_500),
    )
    rounded, allowance = programme._rounded(
        traced, sizes=sizes, prices=prices, config=config, down=False
    )
    assert required_at(start.after(rounded).facts) > MIN_SIZE  # rounding alone falls short
    again = programme._cheapest_closes(
        simulation=start,
        model=PM,
        sizes=sizes,
        required=required_at(start.facts) + allowance,
        weight=D(10_000) / D(10_500),
    )
    plans, after = programme._scenario_round(
        simulation=start,
        model=PM,
        prices=prices,
        available=available,
        required=required_at(start.facts),
        required_at=required_at,
        down=False,
        config=config,
        now=TIED_NOW,
    )
    return TiedRound(plans, after, required_at, rounded, again)


def test_scenario_round_up_short_after_rounding_is_repaired_in_the_round() -> None:
    """The tied strangle's traced call and put rounded up move the scenarios apart and
    leave the round short; one lot more covers the rest within the round (not tracing again
    for more, which would close more of both)."""
    plans, after, required_at, rounded, _ = tied_strangle_round()
    assert required_at(after.facts) <= MIN_SIZE
    first = dict(sized(rounded))
    added = [size - first[symbol] for symbol, size in sized(plans)]
    assert sorted(added) == [ZERO, TIED_LOTS.size_step]  # one lot more of one of them


def test_scenario_round_on_target_at_min_size_is_not_traced_again() -> None:
    """A round whose rounded plan leaves exactly MIN_SIZE of the need is on target: it is
    kept, not traced again for more (which would leave less)."""
    _, _, start = strangle_start()
    first, after = round_of(D(1_000), Config(), down=False)
    required_at = relief_exactly(start, D(1_000), after.facts, MIN_SIZE)
    plans, _ = round_of(D(1_000), Config(), down=False, required_at=required_at, required=D(1_000))
    assert plans == first


def test_scenario_round_keeps_its_plan_when_tracing_again_leaves_no_less() -> None:
    """A need the closes do not move (always 5): the round is short, traces again for the
    need plus what rounding may cost, and keeps its first plan, since the second leaves no
    less of the need."""
    first, _ = round_of(D(1_000), Config(), down=False)
    plans, _ = round_of(
        D(1_000), Config(), down=False, required_at=lambda facts: D(5), required=D(1_000)
    )
    assert plans == first


def test_scenario_round_without_repairs_traces_again_and_rounds_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no whole-lot repair allowed, the tied strangle's round, short after rounding, is
    traced again for the need plus the allowance and those closes are rounded up: on
    target."""
    monkeypatch.setattr(lots, "_REPAIRS", 0)
    plans, after, required_at, _, again = tied_strangle_round()
    assert required_at(after.facts) <= MIN_SIZE
    traced = {symbol: size for symbol, size, _ in again}
    assert [p.symbol for p in plans] == list(traced)
    for plan in plans:  # the closes traced again, each rounded up to its lot
        assert traced[plan.symbol] <= plan.close_size < traced[plan.symbol] + TIED_LOTS.size_step
        assert plan.close_size % TIED_LOTS.size_step == 0


def rounds_of(
    required_at: Callable[[MarginFacts], Decimal], start: _Simulation, book: Portfolio
) -> tuple[list[tuple[str, Decimal]], int]:
    _, quotes = strangle()
    prices, _ = execution_prices(book, quotes, 100, Config(), PM_NOW)
    plans, rounds = programme._scenario_rounds(
        start=start,
        model=PM,
        prices=prices,
        required_at=required_at,
        config=Config(),
        now=PM_NOW,
        down_first=False,
    )
    return sized(plans), rounds


def test_scenario_rounds_none_for_a_need_of_exactly_min_size() -> None:
    """A required relief of exactly MIN_SIZE is on target: no round, no order."""
    book, _, start = strangle_start()
    required_at = relief_exactly(start, D(1_000), start.facts, MIN_SIZE)
    assert rounds_of(required_at, start, book) == ([], 0)
    more = relief_exactly(start, D(1_000), start.facts, 2 * MIN_SIZE)
    plans, rounds = rounds_of(more, start, book)
    assert rounds == 1
    assert [s for s, _ in plans] == [STRANGLE_CALL]


def test_scenario_rounds_stop_when_a_round_does_not_lower_the_need() -> None:
    """A need the closes do not move (always 5): the first round's plan leaves as much as
    before, so it is not kept and no more rounds are tried."""
    book, _, start = strangle_start()
    assert rounds_of(lambda facts: D(5), start, book) == ([], 0)
