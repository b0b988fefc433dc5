"""Books, models and strategies the planning tests share (tests/liqcore/planning/)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from decimal import Decimal

import attrs
from hypothesis import assume, settings
from hypothesis import strategies as st

from liqcore.config import Config
from liqcore.inputs import MarginMode, Portfolio, Position, Quote
from liqcore.instruments import InstrumentSpec, OptionSymbol
from liqcore.margin.base import MarginFacts, MarginModel
from liqcore.margin.portfolio import YEAR_MS, PortfolioMargin, black_scholes
from liqcore.margin.standard import StandardMargin
from liqcore.numbers import CONTEXT, bps_fraction
from liqcore.planning import PartialPlan, close_short, execution_prices, plan_partial_orders
from liqcore.strategies import decimals
from liqcore.targets import required_mm_relief

SYMBOL = "BTC-20261231-100000-C"


NOW = 10_000


SEED_QUOTE = Quote(best_bid=Decimal(149), best_ask=Decimal(150), mid=Decimal("149.5"))


SEED_ANCHOR = MarginFacts(equity=Decimal(100), mm_required=Decimal(300))


SEED_CONFIG = Config(
    partial_target_buffer_bps=500,
    partial_bonus_start_bps=50,
    partial_bonus_max_bps=500,
    partial_bonus_ramp_ms=60_000,
)


STANDARD = StandardMargin()


def position(
    symbol: str = SYMBOL, amount: str = "-4", entry: str = "100", pnl: str = "0"
) -> Position:
    return Position(
        symbol=symbol,
        amount=Decimal(amount),
        entry_price=Decimal(entry),
        unrealized_pnl=Decimal(pnl),
    )


def portfolio(
    *positions: Position, cash: str = "500", spot: Mapping[str, Decimal] | None = None
) -> Portfolio:
    return Portfolio(
        cash=Decimal(cash),
        positions={p.symbol: p for p in positions},
        spot={"BTC": Decimal(105_000)} if spot is None else dict(spot),
    )


def seed_plan(
    config: Config = SEED_CONFIG, anchor: MarginFacts = SEED_ANCHOR, amount: str = "-4"
) -> PartialPlan:
    return plan_partial_orders(
        portfolio(position(amount=amount)),
        {SYMBOL: SEED_QUOTE},
        50,
        config,
        MarginMode.STANDARD,
        NOW,
        anchor=anchor,
    )


def model_equity(portfolio: Portfolio) -> Decimal:
    equity = portfolio.cash
    for p in portfolio.positions.values():
        equity = CONTEXT.add(equity, CONTEXT.multiply(p.amount, p.mark_price))
    return equity


@attrs.frozen
class VShapedMargin:
    """MM = 100 × |short − 2| + 10 on SYMBOL: closing helps until 2 remain, then hurts."""

    def evaluate(self, portfolio: Portfolio, now: int) -> MarginFacts:
        held = portfolio.positions.get(SYMBOL)
        short = held.amount.copy_negate() if held is not None else Decimal(0)
        distance = CONTEXT.subtract(short, Decimal(2)).copy_abs()
        mm = CONTEXT.add(CONTEXT.multiply(Decimal(100), distance), Decimal(10))
        return MarginFacts(equity=model_equity(portfolio), mm_required=mm)


@attrs.define
class CountingStandard:
    """Standard margin behind an opaque class (the generic path), counting evaluations."""

    calls: int = 0

    def evaluate(self, portfolio: Portfolio, now: int) -> MarginFacts:
        self.calls += 1
        return STANDARD.evaluate(portfolio, now)


def user_plan(model: MarginModel, anchor: MarginFacts) -> PartialPlan:
    config = attrs.evolve(SEED_CONFIG, standard_margin=model)
    return seed_plan(config, anchor)


TODAY = 1_735_689_600_000  # 2025-01-01T00:00:00Z


UNDERLYINGS = ("BTC", "ETH")


@st.composite
def short_options(draw: st.DrawFn) -> Position:
    underlying = draw(st.sampled_from(UNDERLYINGS))
    expiry = draw(
        st.dates(min_value=datetime.date(2024, 12, 1), max_value=datetime.date(2027, 12, 31))
    )
    strike = draw(decimals(min_value=1_000, max_value=150_000, places=0))
    kind = draw(st.sampled_from("CP"))
    symbol = f"{underlying}-{expiry:%Y%m%d}-{strike}-{kind}"
    amount = draw(decimals(min_value="0.00000002", max_value=20, places=8))
    entry = draw(decimals(min_value="0.01", max_value=20_000, places=2))
    mark = draw(decimals(min_value="0.01", max_value=20_000, places=2))
    return Position(
        symbol=symbol,
        amount=-amount,
        entry_price=entry,
        unrealized_pnl=CONTEXT.multiply(mark - entry, -amount),
    )


@st.composite
def accounts(draw: st.DrawFn) -> tuple[Portfolio, dict[str, Quote], MarginFacts]:
    """Portfolios of short options on two underlyings (with a long option or a perp that
    the planner must leave alone), quotes for some shorts, and Health's facts."""
    shorts = draw(st.lists(short_options(), min_size=1, max_size=4, unique_by=lambda p: p.symbol))
    others = draw(
        st.lists(
            st.builds(
                Position,
                symbol=st.sampled_from(["BTC-20261231-50000-C", "ETH-PERP"]),
                amount=st.sampled_from([Decimal(-2), Decimal("0.5"), Decimal(3)]),
                entry_price=decimals(min_value="0.01", max_value=5_000, places=2),
            ).filter(lambda p: p.symbol.endswith("PERP") or p.amount > 0),
            max_size=2,
            unique_by=lambda p: p.symbol,
        )
    )
    spot = {u: draw(decimals(min_value=1_000, max_value=120_000, places=2)) for u in UNDERLYINGS}
    book = Portfolio(
        cash=draw(decimals(min_value=-(10**6), max_value=10**6, places=2)),
        positions={p.symbol: p for p in (*others, *shorts)},
        spot=spot,
    )
    quotes = {}
    for p in shorts:
        if draw(st.booleans()):
            bid = draw(decimals(min_value="0.01", max_value=20_000, places=2))
            ask = bid + draw(decimals(min_value=0, max_value=500, places=2))
            theo = draw(st.none() | decimals(min_value="0.01", max_value=20_000, places=2))
            quotes[p.symbol] = Quote(best_bid=bid, best_ask=ask, mid=(bid + ask) / 2, theo=theo)
    mm = draw(decimals(min_value=1, max_value=10**6, places=2))
    equity = draw(decimals(min_value=-(10**5), max_value=mm, places=2))
    return book, quotes, MarginFacts(equity=equity, mm_required=mm)


configs = st.builds(
    Config,
    partial_target_buffer_bps=st.integers(0, 2_000),
    reference_band_bps=st.integers(0, 5_000),
    partial_bonus_start_bps=st.just(0),
)


bonuses = st.integers(0, 1_000)


def plan_of(
    account: tuple[Portfolio, dict[str, Quote], MarginFacts], bonus: int, config: Config
) -> PartialPlan:
    book, quotes, anchor = account
    return plan_partial_orders(
        book, quotes, bonus, config, MarginMode.STANDARD, TODAY, anchor=anchor
    )


specs = st.builds(
    InstrumentSpec,
    size_step=st.sampled_from([Decimal("0.01"), Decimal("0.1"), Decimal(1)]),
    price_tick=st.sampled_from([Decimal("0.01"), Decimal("0.5"), Decimal(5)]),
    min_size=st.sampled_from([Decimal(0), Decimal("0.1"), Decimal(1)]),
)


BOOK_EXAMPLES = max(20, (settings.default or settings()).max_examples // 4)
"""Tests that plan realistic books under both models run a quarter of the profile's
examples (at least 20): ci 75, nightly 1 250."""


PM = PortfolioMargin()


PM_NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z


PM_SPOT = Decimal(100_000)


STRANGLE_PUT, STRANGLE_CALL = "BTC-20261231-100000-P", "BTC-20261231-150000-C"


def model_value(symbol: str) -> Decimal:
    """The portfolio model's own value of one unit (so the base scenario loses nothing)."""
    option = OptionSymbol.parse(symbol)
    return black_scholes(
        is_call=option.is_call,
        spot=PM_SPOT,
        strike=option.strike,
        years=Decimal(option.expires_at - PM_NOW) / YEAR_MS,
        rate=PM.risk_free_rate,
        volatility=PM.base_volatility,
    )


def strangle() -> tuple[Portfolio, dict[str, Quote]]:
    book = Portfolio(
        cash=Decimal(0),
        positions={
            s: Position(symbol=s, amount=Decimal(-1), entry_price=model_value(s).quantize(CENT))
            for s in (STRANGLE_PUT, STRANGLE_CALL)
        },
        spot={"BTC": PM_SPOT},
    )
    return book, {s: Quote(theo=book.positions[s].mark_price) for s in book.positions}


CENT = Decimal("0.01")


def required_after(
    model: MarginModel,
    book: Portfolio,
    orders: Sequence[tuple[str, Decimal, Decimal]],
    anchor: MarginFacts,
    buffer_bps: int,
    now: int,
) -> Decimal:
    """Health's required relief once ``orders`` (symbol, size, price) have filled, the
    model's change added to the anchor."""
    after = book
    for symbol, size, price in orders:
        after = close_short(after, symbol, size, price)
    before_facts, after_facts = model.evaluate(book, now), model.evaluate(after, now)
    return required_mm_relief(
        anchor.equity + after_facts.equity - before_facts.equity,
        anchor.mm_required + after_facts.mm_required - before_facts.mm_required,
        buffer_bps,
    )


def closes_of(plan: PartialPlan) -> list[tuple[str, Decimal, Decimal]]:
    return [(o.symbol, o.close_size, o.limit_price) for o in plan.orders]


@st.composite
def reachable_accounts(
    draw: st.DrawFn, *, mode: MarginMode
) -> tuple[Portfolio, dict[str, Quote], MarginFacts, int]:
    """1–4 short BTC options in whole 0.1 lots (and maybe a long one), marked near the
    portfolio model's value, quoted a little above; Health's need a share of what closing
    one short, or every short that helps alone, would gain — so the target can be reached.
    Also the bonus."""
    count = draw(st.integers(1, 4))
    symbols = draw(
        st.lists(
            st.builds(
                "BTC-{}-{}-{}".format,
                st.sampled_from(["20260327", "20260626", "20261231"]),
                st.integers(12, 32).map(lambda k: k * 5_000),
                st.sampled_from("CP"),
            ),
            min_size=count + 1,
            max_size=count + 1,
            unique=True,
        )
    )
    long_one = draw(st.booleans())
    positions = {}
    for index, symbol in enumerate(symbols if long_one else symbols[:-1]):
        lots = draw(st.integers(1, 50))
        mark = max(
            Decimal(1), (model_value(symbol) * draw(st.sampled_from(MARK_FACTORS))).quantize(CENT)
        )
        amount = Decimal(lots) / 10 * (1 if index == count else -1)
        positions[symbol] = Position(symbol=symbol, amount=amount, entry_price=mark)
    book = Portfolio(cash=Decimal(0), positions=positions, spot={"BTC": PM_SPOT})
    quotes = {
        s: Quote(
            best_ask=(p.mark_price * (1 + Decimal(draw(st.integers(0, 50))) / 1_000)).quantize(
                CENT
            ),
            theo=p.mark_price,
        )
        for s, p in positions.items()
        if p.amount < 0
    }
    bonus = draw(st.integers(0, 300))
    model = Config().margin_model(mode)
    prices, _ = execution_prices(book, quotes, bonus, Config(), PM_NOW)
    mm = model.evaluate(book, PM_NOW).mm_required
    broke = MarginFacts(equity=ZERO_D, mm_required=mm)  # then gain = need − what is left

    def gain(closes: list[tuple[str, Decimal, Decimal]]) -> Decimal:
        return mm - required_after(model, book, closes, broke, 500, PM_NOW)

    whole = {s: [(s, -book.positions[s].amount, price)] for s, price in prices.items()}
    helpful = [close for closes in whole.values() if gain(closes) > 0 for close in closes]
    most = max([gain(helpful), *(gain(closes) for closes in whole.values())])
    assume(most > 1)
    need = most * Decimal(draw(st.integers(5, 95))) / 100
    anchor = MarginFacts(equity=(mm - need) * bps_fraction(500), mm_required=mm)
    return book, quotes, anchor, bonus


ZERO_D = Decimal(0)


MARK_FACTORS = [Decimal(f) / 100 for f in range(90, 111, 5)]


LOTS = InstrumentSpec(size_step=Decimal("0.1"), price_tick=Decimal("0.5"), min_size=Decimal(0))


MIN_LOTS = st.sampled_from([Decimal("0.1"), Decimal("0.5"), Decimal(1)])


def reachable_plan(
    mode: MarginMode,
    account: tuple[Portfolio, dict[str, Quote], MarginFacts, int],
    config: Config,
) -> tuple[PartialPlan, Decimal]:
    """The plan and the required relief it leaves."""
    book, quotes, anchor, bonus = account
    plan = plan_partial_orders(book, quotes, bonus, config, mode, PM_NOW, anchor=anchor)
    model = config.margin_model(mode)
    left = required_after(model, book, closes_of(plan), anchor, 500, PM_NOW)
    return plan, left


def premium(book: Portfolio, orders: Sequence[tuple[str, Decimal, Decimal]]) -> Decimal:
    """What the orders pay above the marks (negative costs count as free)."""
    return sum(
        (
            max(Decimal(0), size * (price - book.positions[s].mark_price))
            for s, size, price in orders
        ),
        Decimal(0),
    )


modes = st.sampled_from([MarginMode.STANDARD, MarginMode.PORTFOLIO])


BENCH_NOW = 1_788_220_800_000  # 2026-09-01T00:00:00Z
