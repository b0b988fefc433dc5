"""The simulated exchange's whole state, and how a new one is generated from a seed.

The world is mutable (it is the exchange, not a decision), made of attrs classes that
:mod:`liqcore.codec` serializes exactly: Decimals as strings, events by their stable tags.
:mod:`liqshell.sim.persistence` stores it; :mod:`liqshell.sim.engine` and
:mod:`liqshell.sim.auctions` change it. Ids are per wallet (``order_id`` = wallet number ×
1 000 000 + sequence, ``auction-<wallet>-<n>``), so concurrently stepped wallets get the same
ids whatever order the watcher's tasks run in.
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Literal, TypeAlias

import attrs

from liqcore import (
    Config,
    Event,
    MarginMode,
    OpenOrder,
    PlanningError,
    Portfolio,
    Position,
    Quote,
    Side,
)
from liqcore.instruments import option_symbol
from liqcore.numbers import CONTEXT
from liqshell.sim.market import (
    UNDERLYINGS,
    Instrument,
    instruments,
    quantize,
    quote,
    rng,
    theo,
)

__all__ = [
    "DEFAULT_START_MS",
    "Account",
    "Auction",
    "AuctionStatus",
    "FeedEntry",
    "Holding",
    "Market",
    "OrderStatus",
    "SimOrder",
    "SimParams",
    "SimStats",
    "World",
    "account_portfolio",
    "new_world",
    "open_orders_by_wallet",
    "open_orders_of",
    "wallet_name",
]

DEFAULT_START_MS = int(datetime.datetime(2026, 3, 2, tzinfo=datetime.UTC).timestamp() * 1000)
"""Virtual start of every simulation: 2026-03-02 00:00 UTC (never the wall clock)."""

ORDER_ID_BLOCK = 1_000_000

OrderStatus: TypeAlias = Literal["open", "filled", "cancelled"]
AuctionStatus: TypeAlias = Literal["pending", "running", "stopping", "stopped", "settled"]


def _positive_int(inst: object, attribute: attrs.Attribute[int], value: object) -> None:
    if type(value) is not int or value <= 0:
        raise ValueError(f"{attribute.name} must be a positive integer, was {value!r}")


def _non_negative_int(inst: object, attribute: attrs.Attribute[int], value: object) -> None:
    if type(value) is not int or value < 0:
        raise ValueError(f"{attribute.name} must be an integer ≥ 0, was {value!r}")


def _optional_non_negative_int(
    inst: object, attribute: attrs.Attribute[int | None], value: object
) -> None:
    if value is not None:
        _non_negative_int(inst, attribute, value)  # type: ignore[arg-type]


def _fraction(inst: object, attribute: attrs.Attribute[Decimal], value: object) -> None:
    if type(value) is not Decimal or not value.is_finite() or not 0 <= value <= 1:
        raise ValueError(f"{attribute.name} must be a number in [0, 1], was {value!r}")


def _shock(inst: object, attribute: attrs.Attribute[Decimal], value: object) -> None:
    if type(value) is not Decimal or not value.is_finite() or not -80 <= value <= 200:
        raise ValueError(f"{attribute.name} must be a percentage in [-80, 200], was {value!r}")


@attrs.frozen(kw_only=True)
class SimParams:
    """What a simulation is made of; a resumed run must be given the same."""

    accounts: int = attrs.field(default=24, validator=_positive_int)
    minutes: int = attrs.field(default=6, validator=_positive_int)
    shock_pct: Decimal = attrs.field(default=Decimal(-15), validator=_shock)
    """Move of the underlyings at the shock, in percent (ETH moves 1.2 ×)."""
    seed: int = attrs.field(default=1, validator=_non_negative_int)
    tick_ms: int = attrs.field(default=5_000, validator=_positive_int)
    start_ms: int = attrs.field(default=DEFAULT_START_MS, validator=_non_negative_int)
    shock_at_ms: int | None = attrs.field(default=None, validator=_optional_non_negative_int)
    """Offset of the shock from the start; ``None``: 15 % of the run, at most 90 s."""
    rebound: Decimal = attrs.field(default=Decimal("0.5"), validator=_fraction)
    """Fraction of the shock the market takes back afterwards."""
    rebound_ms: int = attrs.field(default=150_000, validator=_positive_int)
    auction_delay_ms: int = attrs.field(default=3_000, validator=_positive_int)
    """Typical time from an auction request to its start on chain."""
    auction_ms: int = attrs.field(default=90_000, validator=_positive_int)
    """Typical time from an auction's start to its settlement."""
    liquidator_discount: Decimal = attrs.field(default=Decimal("0.05"), validator=_fraction)
    """What the liquidator takes, as a fraction of the book's gross value at marks."""
    portfolio_share: Decimal = attrs.field(default=Decimal("0.25"), validator=_fraction)
    """Share of accounts on portfolio margin."""

    @property
    def duration_ms(self) -> int:
        """Length of the run."""
        return self.minutes * 60_000

    @property
    def ticks(self) -> int:
        """Number of ticks after the start (the world is also polled at tick 0)."""
        return -(-self.duration_ms // self.tick_ms)

    @property
    def shock_time(self) -> int:
        """Instant of the shock (ms since the epoch)."""
        offset = self.shock_at_ms
        if offset is None:
            offset = min(90_000, max(self.tick_ms, self.duration_ms * 15 // 100))
        return self.start_ms + offset


@attrs.define(kw_only=True)
class Holding:
    """An executed position: signed amount and average entry price."""

    amount: Decimal
    entry_price: Decimal


@attrs.define(kw_only=True)
class Account:
    """A wallet of the exchange."""

    wallet: str
    number: int
    profile: str
    margin_mode: MarginMode
    cash: Decimal
    holdings: dict[str, Holding] = attrs.Factory(dict)
    order_seq: int = 0
    auction_seq: int = 0


@attrs.define(kw_only=True)
class SimOrder:
    """An order of the order engine, open or closed."""

    order_id: int
    wallet: str
    symbol: str
    side: Side
    price: Decimal
    original_size: Decimal
    remaining_size: Decimal
    client_id: str | None
    created_at: int
    reduce_only: bool
    status: OrderStatus = "open"
    by_watcher: bool = False


@attrs.define(kw_only=True)
class Auction:
    """A full auction of one account on the simulated chain."""

    auction_id: str
    wallet: str
    request_id: str
    tx_hash: str
    margin_needed: Decimal
    requested_at: int
    start_at: int
    settle_at: int
    status: AuctionStatus = "pending"
    started: bool = False
    stop_at: int | None = None


@attrs.define(kw_only=True)
class FeedEntry:
    """A published feed item; its cursor is its position (1-based) in :attr:`World.feed`."""

    at: int
    wallet: str
    event_id: str
    event: Event


@attrs.define(kw_only=True)
class SimStats:
    """Counters of the run (persisted with the world, so a resumed run reports the whole)."""

    submitted: int = 0
    rejected: int = 0
    cancelled: int = 0
    cancel_rejected: int = 0
    engine_cancelled: int = 0
    fills: int = 0
    filled_orders: int = 0
    filled_size: Decimal = Decimal(0)
    bonus_paid: Decimal = Decimal(0)
    auctions_requested: int = 0
    auctions_started: int = 0
    auctions_stopped: int = 0
    auctions_settled: int = 0
    liquidator_take: Decimal = Decimal(0)
    entries: int = 0
    recoveries: int = 0
    publishes: int = 0
    entered: dict[str, int] = attrs.Factory(dict)
    recovered: dict[str, int] = attrs.Factory(dict)
    auctioned: dict[str, int] = attrs.Factory(dict)
    published_keys: dict[str, int] = attrs.Factory(dict)
    """Last published (version, index) per wallet, as ``version × 1_000_000 + index``: dedupe."""


@attrs.define(kw_only=True)
class World:
    """The simulated exchange at tick ``tick`` (virtual time ``now``)."""

    params: SimParams
    tick: int
    now: int
    base: dict[str, Decimal]
    """Each underlying's price path without the shock (geometric Brownian motion)."""
    spot: dict[str, Decimal]
    accounts: dict[str, Account]
    orders: dict[str, SimOrder] = attrs.Factory(dict)
    """Every order by ``str(order_id)``."""
    auctions: dict[str, Auction] = attrs.Factory(dict)
    feed: list[FeedEntry] = attrs.Factory(list)
    stats: SimStats = attrs.Factory(SimStats)
    done: bool = False


class Market:
    """The listed instruments of a run (derived from its parameters, never persisted)."""

    def __init__(self, params: SimParams) -> None:
        self.params = params
        self.instruments: Mapping[str, Instrument] = instruments(params.seed, params.start_ms)
        self._theo: dict[tuple[str, int, Decimal], Decimal] = {}
        self._quotes: dict[tuple[str, int], Quote] = {}

    def theo(self, symbol: str, spot: Decimal, now: int) -> Decimal:
        """Fair value of ``symbol`` (cached per instant and spot)."""
        key = (symbol, now, spot)
        value = self._theo.get(key)
        if value is None:
            if len(self._theo) > 100_000:
                self._theo.clear()
            value = self._theo[key] = theo(self.instruments[symbol], spot, now)
        return value

    def quote(self, world: World, symbol: str) -> Quote:
        """The book of ``symbol`` at the world's current tick."""
        key = (symbol, world.tick)
        value = self._quotes.get(key)
        if value is None:
            if len(self._quotes) > 100_000:
                self._quotes.clear()
            instrument = self.instruments[symbol]
            value = self._quotes[key] = quote(
                instrument,
                world.spot[instrument.underlying],
                world.now,
                seed=self.params.seed,
                tick=world.tick,
            )
        return value

    def mark(self, world: World, symbol: str) -> Decimal:
        """The mark of ``symbol`` now: its theo."""
        instrument = self.instruments[symbol]
        return self.theo(symbol, world.spot[instrument.underlying], world.now)


def wallet_name(number: int) -> str:
    """The wallet address of account ``number`` (stable, sortable)."""
    return f"0xsim{number:04d}"


def account_portfolio(world: World, market: Market, account: Account) -> Portfolio:
    """The account as the exchange reports it: positions marked at theo, cash, spot."""
    positions: dict[str, Position] = {}
    for symbol in sorted(account.holdings):
        holding = account.holdings[symbol]
        if not holding.amount:
            continue
        mark = market.mark(world, symbol)
        pnl = CONTEXT.multiply(holding.amount, CONTEXT.subtract(mark, holding.entry_price))
        positions[symbol] = Position(
            symbol=symbol,
            amount=holding.amount,
            entry_price=holding.entry_price,
            unrealized_pnl=pnl,
        )
    spot = dict(sorted(world.spot.items()))
    return Portfolio(cash=account.cash, positions=positions, spot=spot)  # type: ignore[arg-type, unused-ignore]


def open_orders_of(world: World, wallet: str) -> tuple[OpenOrder, ...]:
    """The wallet's open orders as the engine reports them, by ``(created_at, order_id)``."""
    return open_orders_by_wallet(world, [wallet])[wallet]


def open_orders_by_wallet(world: World, wallets: Iterable[str]) -> dict[str, tuple[OpenOrder, ...]]:
    """:func:`open_orders_of` each of ``wallets``, in one pass over the orders."""
    mine: dict[str, list[SimOrder]] = {wallet: [] for wallet in wallets}
    for order in world.orders.values():
        if order.status == "open":
            found = mine.get(order.wallet)
            if found is not None:
                found.append(order)
    return {wallet: _reported(orders) for wallet, orders in mine.items()}


def _reported(orders: list[SimOrder]) -> tuple[OpenOrder, ...]:
    orders.sort(key=lambda o: (o.created_at, o.order_id))
    return tuple(
        OpenOrder(
            order_id=o.order_id,
            symbol=o.symbol,
            side=o.side,
            price=o.price,
            original_size=o.original_size,
            remaining_size=o.remaining_size,
            client_id=o.client_id,
            created_at=o.created_at,
            is_perp=option_symbol(o.symbol) is None,
        )
        for o in orders
    )


# --- generation ----------------------------------------------------------------------------

PROFILES = ("steady", "stretched", "fragile", "steady", "stretched", "levered", "steady", "hedged")
"""Account archetypes, dealt in turn so that every run of ≥ 8 accounts has each of them:
``steady`` (well margined), ``stretched`` (the shock pushes it below maintenance margin,
partial liquidation brings it back), ``fragile`` (the shock wipes its equity out: auction),
``levered`` (a perp book with no short options: nothing to close, auction unless the
market rebounds), ``hedged`` (short options with protective longs)."""

_RATIO: Mapping[str, tuple[float, float]] = {
    "steady": (3.0, 6.0),
    "stretched": (1.9, 2.6),
    "fragile": (1.05, 1.2),
    "levered": (4.0, 4.6),
    "hedged": (1.5, 2.2),
}
"""Initial equity / maintenance margin per profile."""

_SHALLOW_LEVERED = (5.0, 5.6)


def _pick(symbols: list[str], draw: random.Random) -> str:
    return draw.choice(symbols)


def _option_symbols(
    market: Market, underlying: str, *, kind: str, moneyness: tuple[float, float]
) -> list[str]:
    spec = next(u for u in UNDERLYINGS if u.name == underlying)
    chosen = []
    for symbol, instrument in market.instruments.items():
        option = instrument.option
        if option is None or option.underlying != underlying or option.kind.value != kind:
            continue
        ratio = float(option.strike / spec.spot)
        if moneyness[0] <= ratio <= moneyness[1]:
            chosen.append(symbol)
    return chosen


def _book(market: Market, profile: str, seed: int, number: int) -> dict[str, Decimal]:
    """Signed amounts by symbol for a new account of ``profile``."""
    draw = rng(seed, f"book|{number}")
    underlying = "BTC" if draw.random() < 0.6 else "ETH"
    unit = Decimal(1) if underlying == "BTC" else Decimal(20)
    book: dict[str, Decimal] = {}

    def add(symbol: str, amount: Decimal) -> None:
        book[symbol] = book.get(symbol, Decimal(0)) + amount

    def size(low: float, high: float) -> Decimal:
        return quantize(Decimal(draw.uniform(low, high)) * unit, Decimal("0.1"))

    if profile == "levered":
        add(f"{underlying}-PERP", size(3, 8))
        add(_pick(_option_symbols(market, underlying, kind="C", moneyness=(1.05, 1.25)), draw),
            size(0.5, 2))  # fmt: skip
        return book
    legs = draw.randint(2, 4)
    for _ in range(legs):
        if profile in ("stretched", "fragile") or draw.random() < 0.7:
            symbol = _pick(
                _option_symbols(market, underlying, kind="P", moneyness=(0.8, 1.0)), draw
            )
        else:
            symbol = _pick(
                _option_symbols(market, underlying, kind="C", moneyness=(1.0, 1.3)), draw
            )
        add(symbol, -size(1, 4) if profile != "fragile" else -size(3, 8))
    if profile == "hedged":
        add(_pick(_option_symbols(market, underlying, kind="P", moneyness=(0.7, 0.8)), draw),
            size(1, 3))  # fmt: skip
    if profile != "fragile" and draw.random() < 0.3:
        add(f"{underlying}-PERP", size(-1, 1))
    return {s: a for s, a in sorted(book.items()) if a}


def new_world(params: SimParams, config: Config, market: Market | None = None) -> World:
    """A fresh world for ``params``: spot at the underlyings' reference prices, and
    ``params.accounts`` accounts whose cash puts them at their profile's margin ratio."""
    market = market or Market(params)
    world = World(
        params=params,
        tick=0,
        now=params.start_ms,
        base={u.name: u.spot for u in UNDERLYINGS},
        spot={u.name: u.spot for u in UNDERLYINGS},
        accounts={},
    )
    for number in range(params.accounts):
        profile = PROFILES[number % len(PROFILES)]
        draw = rng(params.seed, f"account|{number}")
        book = _book(market, profile, params.seed, number)
        mode = (
            MarginMode.PORTFOLIO
            if draw.random() < float(params.portfolio_share)
            else MarginMode.STANDARD
        )
        account = Account(
            wallet=wallet_name(number),
            number=number,
            profile=profile,
            margin_mode=mode,
            cash=Decimal(0),
            holdings={
                symbol: Holding(
                    amount=amount,
                    entry_price=market.mark(world, symbol),
                )
                for symbol, amount in book.items()
            },
        )
        low, high = _RATIO[profile]
        if profile == "levered" and (number // len(PROFILES)) % 2 == 1:
            low, high = _SHALLOW_LEVERED  # recovers when the market rebounds: auction stopped
        ratio = Decimal(draw.uniform(low, high))
        try:
            facts = config.margin_model(mode).evaluate(
                account_portfolio(world, market, account), world.now
            )
        except PlanningError:
            account.margin_mode = mode = MarginMode.STANDARD
            facts = config.margin_model(mode).evaluate(
                account_portfolio(world, market, account), world.now
            )
        target = CONTEXT.multiply(ratio, facts.mm_required)
        account.cash = quantize(CONTEXT.subtract(target, facts.equity), Decimal("0.01"))
        world.accounts[account.wallet] = account
        _user_orders(world, market, account, draw.random())
    return world


def _user_orders(world: World, market: Market, account: Account, roll: float) -> None:
    """Some accounts rest a user order: a far-away SELL (risk-increasing) or a reduce-only BUY
    below the market — what the watcher must cancel or leave alone."""
    shorts = [s for s, h in sorted(account.holdings.items()) if h.amount < 0]
    if not shorts or roll > 0.5:
        return
    symbol = shorts[0]
    mark = market.mark(world, symbol)
    account.order_seq += 1
    order_id = account.number * ORDER_ID_BLOCK + account.order_seq
    if roll < 0.25:
        side, price, reduce_only = Side.SELL, quantize(mark * 3), False
        size = quantize(abs(account.holdings[symbol].amount) / 4, Decimal("0.1")) or Decimal("0.1")
    else:
        side, price, reduce_only = Side.BUY, quantize(mark / 3), True
        size = quantize(abs(account.holdings[symbol].amount) / 2, Decimal("0.1")) or Decimal("0.1")
    world.orders[str(order_id)] = SimOrder(
        order_id=order_id,
        wallet=account.wallet,
        symbol=symbol,
        side=side,
        price=max(price, Decimal("0.1")),
        original_size=size,
        remaining_size=size,
        client_id=f"user-{account.wallet}-{account.order_seq}",
        created_at=world.now - 60_000,
        reduce_only=reduce_only,
    )
