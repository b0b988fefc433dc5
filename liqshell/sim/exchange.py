"""The simulated exchange behind every port the watcher needs.

One :class:`SimExchange` is the ``PortfolioSource``, ``MarginSource``, ``QuoteSource``,
``OrderSnapshot``, ``OrderGateway``, ``AuctionExecutor``, ``AuctionFeed`` and ``EventSink``
of a simulation, with the optional batch methods (``portfolios_of``, ``margins``,
``open_orders_many``) the watcher observes a chunk of wallets with. Reads are answered
from the world; every write is journaled first (when a
:class:`~liqshell.sim.persistence.WorldStore` is attached) and then applied by
:meth:`SimExchange.perform`, the one function a resumed run also replays the journal with.
The sink counts entries into and recoveries from pre-liquidation for the summary,
deduplicating by the publish key (at-least-once delivery).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from decimal import Decimal

from liqcore import (
    CancelOrder,
    Config,
    OpenOrder,
    PlanningError,
    Portfolio,
    Quote,
    StartAuction,
    StateChange,
    StopAuction,
    SubmitOrder,
    codec,
)
from liqcore.numbers import CONTEXT, ZERO
from liqshell.ports import AuctionReceipt, Cursor, FeedItem, MarginReport, NotSent, OrderAnswer
from liqshell.sim import auctions, engine
from liqshell.sim.margin import margin_report
from liqshell.sim.market import UNDERLYINGS, jump_factor, next_spot, quantize
from liqshell.sim.persistence import WorldStore
from liqshell.sim.world import (
    Market,
    World,
    account_portfolio,
    open_orders_by_wallet,
    open_orders_of,
)

__all__ = ["SimExchange"]

_PUBLISH_KEY_SPAN = 1_000_000
CENT = Decimal("0.01")


class SimExchange:
    """The simulated exchange (see the module docs); ``store`` persists its actions."""

    def __init__(
        self, world: World, *, config: Config, store: WorldStore | None = None,
        market: Market | None = None,
    ) -> None:  # fmt: skip
        self.world = world
        self.config = config
        self.store = store
        self.market = market or Market(world.params)
        # Observations are cached until the world changes (a poll reads each account
        # three times: the listing, its portfolio, its margin).
        self._portfolios: dict[str, Portfolio] = {}
        self._margins: dict[str, MarginReport] = {}

    def _changed(self) -> None:
        self._portfolios.clear()
        self._margins.clear()

    def _portfolio(self, wallet: str) -> Portfolio:
        cached = self._portfolios.get(wallet)
        if cached is None:
            account = self.world.accounts[wallet]
            cached = self._portfolios[wallet] = account_portfolio(self.world, self.market, account)
        return cached

    # --- time ------------------------------------------------------------------------------

    def advance(self) -> None:
        """Move the world to its next tick: prices, then fills, then the chain."""
        self._changed()
        world = self.world
        params = world.params
        world.tick += 1
        world.now = params.start_ms + world.tick * params.tick_ms
        for spec in UNDERLYINGS:
            world.base[spec.name] = next_spot(
                world.base[spec.name],
                volatility=spec.volatility,
                dt_ms=params.tick_ms,
                seed=params.seed,
                underlying=spec.name,
                tick=world.tick,
            )
            factor = jump_factor(
                world.now,
                shock_at=params.shock_time,
                shock=float(params.shock_pct) / 100 * spec.shock_beta,
                rebound=float(params.rebound),
                rebound_ms=params.rebound_ms,
            )
            spot = quantize(float(world.base[spec.name]) * max(factor, 0.01), CENT)
            world.spot[spec.name] = max(spot, CENT)
        engine.match(world, self.market)
        auctions.advance(world, self.market)

    # --- writes ----------------------------------------------------------------------------

    def perform(self, entry: Mapping[str, object]) -> object:
        """Apply one journaled action to the world and return its answer.

        No action changes a book or its cash (orders fill, auctions settle, prices move
        only in :meth:`advance`), so the cached observations stay valid.
        """
        op = entry["op"]
        data = entry["command"]
        if op == "submit":
            return engine.submit(self.world, self.market, codec.structure(data, SubmitOrder))
        if op == "cancel":
            return engine.cancel(self.world, codec.structure(data, CancelOrder))
        if op == "start":
            command = codec.structure(data, StartAuction)
            try:
                report = margin_report(self.world, self.market, self.config, command.wallet)
            except PlanningError:  # the chain does not need the figure to start
                needed = ZERO
            else:
                needed = max(ZERO, CONTEXT.subtract(report.mm_required, report.equity))
            return auctions.start(self.world, command, needed)
        if op == "stop":
            auctions.stop(self.world, codec.structure(data, StopAuction))
            return None
        if op == "publish":
            self._count(codec.structure(data, StateChange), entry["key"])
            return None
        raise ValueError(f"unknown journal entry {op!r}")

    def _write(self, op: str, command: object, **extra: object) -> object:
        entry: dict[str, object] = {"op": op, "command": codec.unstructure(command), **extra}
        if self.store is not None:
            self.store.journal(entry)
        return self.perform(entry)

    def replay(self, journal: Sequence[Mapping[str, object]]) -> None:
        """Re-apply the actions journaled after the last snapshot (on resume)."""
        for entry in journal:
            self.perform(entry)

    def _count(self, change: StateChange, key: object) -> None:
        stats = self.world.stats
        if not isinstance(key, list) or len(key) != 3:
            raise ValueError(f"bad publish key {key!r}")
        wallet, version, index = key
        if not (isinstance(wallet, str) and isinstance(version, int) and isinstance(index, int)):
            raise ValueError(f"bad publish key {key!r}")
        order = version * _PUBLISH_KEY_SPAN + index
        if order <= stats.published_keys.get(wallet, -1):
            return  # a redelivery
        stats.published_keys[wallet] = order
        stats.publishes += 1
        if change.previous_phase == "healthy" and change.new_phase == "pre_liquidation":
            stats.entries += 1
            stats.entered[change.wallet] = stats.entered.get(change.wallet, 0) + 1
        elif change.previous_phase == "pre_liquidation" and change.new_phase == "healthy":
            stats.recoveries += 1
            stats.recovered[change.wallet] = stats.recovered.get(change.wallet, 0) + 1

    # --- ports -----------------------------------------------------------------------------

    async def portfolios(self) -> Mapping[str, Portfolio]:
        """Every account's portfolio."""
        return {wallet: self._portfolio(wallet) for wallet in sorted(self.world.accounts)}

    async def portfolio(self, wallet: str) -> Portfolio | None:
        """One account's portfolio (``None`` for an unknown wallet)."""
        return self._portfolio(wallet) if wallet in self.world.accounts else None

    async def margin(self, wallet: str, portfolio: Portfolio | None) -> MarginReport:
        """The margin engine's verdict (computed from the exchange's own books)."""
        cached = self._margins.get(wallet)
        if cached is None:
            cached = self._margins[wallet] = margin_report(
                self.world, self.market, self.config, wallet
            )
        return cached

    async def portfolios_of(self, wallets: Sequence[str]) -> Mapping[str, Portfolio | None]:
        """:meth:`portfolio` of each of ``wallets`` in one call (``None`` for an unknown one)."""
        accounts = self.world.accounts
        return {w: self._portfolio(w) if w in accounts else None for w in wallets}

    async def margins(
        self, portfolios: Mapping[str, Portfolio | None]
    ) -> Mapping[str, MarginReport]:
        """:meth:`margin` of each wallet of ``portfolios`` in one call; a wallet the engine
        cannot value (unknown, or a model that cannot plan it) is left out: it fails alone."""
        reports: dict[str, MarginReport] = {}
        for wallet in portfolios:
            try:
                reports[wallet] = await self.margin(wallet, portfolios[wallet])
            except (KeyError, PlanningError):
                continue
        return reports

    async def open_orders_many(self, wallets: Sequence[str]) -> Mapping[str, Sequence[OpenOrder]]:
        """:meth:`open_orders` of each of ``wallets`` in one pass over the order book."""
        return open_orders_by_wallet(self.world, wallets)

    async def quotes(self, symbols: Sequence[str]) -> Mapping[str, Quote]:
        """Books of the listed ``symbols`` (unknown ones are left out)."""
        return {
            symbol: self.market.quote(self.world, symbol)
            for symbol in sorted(set(symbols))
            if symbol in self.market.instruments
        }

    async def open_orders(self, wallet: str) -> Sequence[OpenOrder]:
        """The wallet's open orders."""
        return open_orders_of(self.world, wallet)

    async def submit(self, command: SubmitOrder) -> OrderAnswer:
        """Ack or reject an order (engine-enforced reduce-only)."""
        answer = self._write("submit", command)
        assert isinstance(answer, OrderAnswer)
        return answer

    async def cancel(self, command: CancelOrder) -> OrderAnswer:
        """Cancel an order."""
        answer = self._write("cancel", command)
        assert isinstance(answer, OrderAnswer)
        return answer

    async def start(self, command: StartAuction) -> AuctionReceipt:
        """Request the wallet's auction (idempotent per wallet); ``NotSent`` for a wallet the
        exchange does not know (nothing happened)."""
        if command.wallet not in self.world.accounts:
            raise NotSent(f"unknown account {command.wallet}")
        receipt = self._write("start", command)
        assert isinstance(receipt, AuctionReceipt)
        return receipt

    async def stop(self, command: StopAuction) -> None:
        """Stop the wallet's auction."""
        self._write("stop", command)

    async def events(self, after: Cursor | None) -> AsyncIterator[FeedItem]:
        """Chain events after ``after`` that the chain has published by now."""
        for item in auctions.feed_items(self.world, after):
            yield item

    async def publish(self, change: StateChange, *, key: tuple[str, int, int]) -> None:
        """Count a state change for the summary (deduplicated by ``key``)."""
        self._write("publish", change, key=list(key))
