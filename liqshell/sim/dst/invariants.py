"""The invariants a DST run checks, from SPEC and ``docs/state-machine.md``.

Checked as things happen — at every request that reaches the exchange, every commit that
takes effect, after every tick — and once more over the whole replay log at the end:

``commit_before_act``
    Nothing reaches the exchange that is not a command of a committed decision.
``reduce_only``
    Every submit is a reduce-only BUY of a short the decision saw, never larger than it.
``no_submit_above_target``
    No submit was decided for an account at or above its partial target.
``one_live_set``
    At most one set of liquidation orders (one ``liq-{wallet}-{now}-`` prefix) is live at
    the exchange per wallet.
``auction_requests``
    A StartAuction reaches the exchange only for the wallet's current pending request
    (a StopAuction for its current stop request), and at most one auction per wallet is
    live at the exchange.
``recovery_with_open_order``
    A step takes an account from pre-liquidation to healthy only while the exchange holds
    no liquidation order of it.
``request_id_reused``
    A request id always names the same command.
``reached_or_reported``
    Every command of a committed decision reached the exchange, or was sent with an
    unknown outcome (it then stays unfinished in the store until a later decision, on a
    fresh snapshot, supersedes it), or was reported failed or unfinished (an outcomes
    record, a restart or reload report).
``serialisable`` / ``replay``
    Every committed state survives a codec round trip; every decision replays through
    ``step`` to the same state and commands.
``no_stuck``
    No step raised ``Alert(STUCK)``.
``crash_equivalence``
    A wallet for which the exchange saw the same requests, and ended with the same book,
    in the run with crashes and in the same seed's run without, ends in the same phase.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

import attrs

from liqcore import (
    AccountState,
    Alert,
    AlertCode,
    CancelOrder,
    Command,
    Config,
    Healthy,
    InLiquidation,
    PreLiquidation,
    PublishStateChange,
    Side,
    StartAuction,
    StateChange,
    StopAuction,
    SubmitOrder,
    codec,
)
from liqcore.machine import step
from liqcore.targets import is_above_partial_target
from liqshell.ports import Record, RecordKind
from liqshell.sim.world import World

__all__ = ["INVARIANTS", "Checker", "Violation"]

INVARIANTS = (
    "commit_before_act",
    "reduce_only",
    "no_submit_above_target",
    "one_live_set",
    "auction_requests",
    "recovery_with_open_order",
    "request_id_reused",
    "reached_or_reported",
    "serialisable",
    "replay",
    "no_stuck",
    "crash_equivalence",
)
"""Every invariant, by name."""

_LIVE = ("pending", "running", "stopping")


@attrs.frozen(kw_only=True)
class Violation:
    """One broken invariant: which, for which wallet, at which tick, and how."""

    invariant: str
    wallet: str
    tick: int
    detail: str

    def __str__(self) -> str:
        return f"[{self.invariant}] tick {self.tick} {self.wallet}: {self.detail}"


def _request_key(command: Command) -> str | None:
    match command:
        case SubmitOrder() | CancelOrder() | StartAuction() | StopAuction():
            return command.request_id
        case _:
            return None


def live_sets(world: World, wallet: str) -> set[str]:
    """The ``now`` parts of the wallet's live liquidation orders' client ids."""
    prefix = f"liq-{wallet}-"
    return {
        order.client_id.rsplit("-", 1)[0]
        for order in world.orders.values()
        if order.wallet == wallet
        and order.status == "open"
        and order.client_id is not None
        and order.client_id.startswith(prefix)
    }


class Checker:
    """Collects the checks and violations of one run (see the module docs)."""

    def __init__(self, world: World, config: Config) -> None:
        self.world = world
        self.config = config
        self.checks: Counter[str] = Counter()
        self.violations: list[Violation] = []
        self.commands: dict[str, Command] = {}
        self.decided_by: dict[str, Record] = {}
        self.publish_keys: set[tuple[str, int, int]] = set()
        self.latest: dict[str, AccountState] = {}
        self.reached: dict[str, list[str]] = {}
        """Per wallet, the request ids that reached the exchange, in first-reach order."""
        self._reached_ids: set[str] = set()
        self._sent_ids: set[str] = set()
        self._reached_publishes: set[tuple[str, int, int]] = set()
        self.stuck_alerts = 0

    # --- helpers -------------------------------------------------------------------------

    def _fail(self, invariant: str, wallet: str, detail: str) -> None:
        self.violations.append(
            Violation(invariant=invariant, wallet=wallet, tick=self.world.tick, detail=detail)
        )

    def _check(self, invariant: str, ok: bool, wallet: str, detail: str) -> None:
        self.checks[invariant] += 1
        if not ok:
            self._fail(invariant, wallet, detail)

    # --- as things happen ----------------------------------------------------------------

    def committed(self, wallet: str, state: AccountState, record: Record) -> None:
        """A commit took effect (``record.version`` is the version it created)."""
        self.latest[wallet] = state
        round_trip = codec.from_json(codec.to_json(state), AccountState)
        self._check("serialisable", round_trip == state, wallet, f"v{record.version} changed")
        if record.kind is RecordKind.FEED:
            # A transition applied from the feed is published under the feed record's key.
            for index, command in enumerate(record.commands):
                if isinstance(command, PublishStateChange):
                    self.publish_keys.add((wallet, record.version, index))
            return
        if record.kind is not RecordKind.DECISION:
            return
        self._decision(wallet, record)

    def _decision(self, wallet: str, record: Record) -> None:
        for index, command in enumerate(record.commands):
            key = _request_key(command)
            if key is not None:
                seen = self.commands.get(key)
                self._check(
                    "request_id_reused",
                    seen is None or seen == command,
                    wallet,
                    f"{key} names {seen!r} and {command!r}",
                )
                self.commands.setdefault(key, command)
                self.decided_by.setdefault(key, record)
            elif isinstance(command, PublishStateChange):
                self.publish_keys.add((wallet, record.version, index))
            if isinstance(command, Alert) and command.code is AlertCode.STUCK:
                self.stuck_alerts += 1
                self._fail("no_stuck", wallet, command.message)
        self.checks["no_stuck"] += 1
        previous = record.previous
        if (
            previous is not None
            and isinstance(previous.phase, PreLiquidation)
            and record.state is not None
            and isinstance(record.state.phase, Healthy)
        ):
            live = live_sets(self.world, wallet)
            self._check(
                "recovery_with_open_order",
                not live,
                wallet,
                f"recovered at {record.now} with liquidation orders open: {sorted(live)}",
            )

    def sent(self, command: object) -> None:
        """The watcher sent a request (it may never arrive)."""
        request = getattr(command, "request_id", None)
        if isinstance(request, str):
            self._sent_ids.add(request)

    def reach(self, kind: str, command: object) -> None:
        """A request reached the exchange."""
        if kind == "publish":
            assert isinstance(command, tuple)
            change, key = command
            assert isinstance(change, StateChange)
            self._check(
                "commit_before_act",
                key in self.publish_keys,
                change.wallet,
                f"publish {key} of no committed decision",
            )
            self._reached_publishes.add(key)
            return
        assert isinstance(command, SubmitOrder | CancelOrder | StartAuction | StopAuction)
        wallet = command.wallet
        request = command.request_id
        committed = self.commands.get(request)
        self._check(
            "commit_before_act",
            committed == command,
            wallet,
            f"{type(command).__name__} {request} reached the exchange; committed: {committed!r}",
        )
        if request not in self._reached_ids:
            self._reached_ids.add(request)
            self.reached.setdefault(wallet, []).append(request)
        match command:
            case SubmitOrder():
                self._submit(command)
            case StartAuction():
                latest = self.latest.get(wallet)
                phase = None if latest is None else latest.phase
                self._check(
                    "auction_requests",
                    isinstance(phase, PreLiquidation) and phase.pending_full_request_id == request,
                    wallet,
                    f"StartAuction {request} while the committed phase is {phase!r}",
                )
            case StopAuction():
                latest = self.latest.get(wallet)
                phase = None if latest is None else latest.phase
                self._check(
                    "auction_requests",
                    isinstance(phase, InLiquidation) and phase.stop_request_id == request,
                    wallet,
                    f"StopAuction {request} while the committed phase is {phase!r}",
                )
            case _:
                pass

    def _submit(self, command: SubmitOrder) -> None:
        wallet = command.wallet
        record = self.decided_by.get(command.request_id)
        health = None if record is None else record.health
        position = None
        if health is not None and health.portfolio is not None:
            held = health.portfolio.positions.get(command.symbol)
            position = None if held is None else held.amount
        self._check(
            "reduce_only",
            command.side is Side.BUY
            and command.reduce_only
            and position is not None
            and position < 0
            and command.size <= -position,
            wallet,
            f"submit {command.side.value} {command.size} {command.symbol} "
            f"(reduce_only={command.reduce_only}); the decision saw {position}",
        )
        if health is not None:
            above = is_above_partial_target(
                health.equity, health.mm_required, self.config.partial_target_buffer_bps
            )
            self._check(
                "no_submit_above_target",
                not above,
                wallet,
                f"submit decided at equity {health.equity}, mm {health.mm_required}",
            )

    def tick(self) -> None:
        """After a tick: the exchange holds one live set and one live auction per wallet."""
        world = self.world
        live_auctions = Counter(a.wallet for a in world.auctions.values() if a.status in _LIVE)
        for wallet in world.accounts:
            sets = live_sets(world, wallet)
            self._check(
                "one_live_set", len(sets) <= 1, wallet, f"live liquidation sets {sorted(sets)}"
            )
            self._check(
                "auction_requests",
                live_auctions[wallet] <= 1,
                wallet,
                f"{live_auctions[wallet]} live auctions",
            )

    # --- at the end ----------------------------------------------------------------------

    def log(self, records: Iterable[Record], config: Config) -> None:
        """The whole replay log: commands accounted for, decisions replayed."""
        accounted: set[str] = set()
        accounted_publishes: set[tuple[str, int, int]] = set()
        decisions: list[Record] = []
        feed_publishes: list[Record] = []
        for record in records:
            if record.kind is RecordKind.DECISION and record.commits_version:
                decisions.append(record)
            if record.kind is RecordKind.FEED and record.commits_version and record.commands:
                feed_publishes.append(record)
            if record.kind is RecordKind.RESTART:
                for command in record.commands:
                    key = _request_key(command)
                    if key is not None:
                        accounted.add(key)
            elif record.kind is RecordKind.OUTCOMES:
                statuses = record.note.split()
                for command, status in zip(record.commands, statuses, strict=False):
                    key = _request_key(command)
                    if key is not None and status in ("failed", "unknown"):
                        accounted.add(key)
            for entry in record.pending:
                if (
                    record.kind in (RecordKind.DECISION, RecordKind.FEED)
                    and entry.version == record.version
                ):
                    continue  # a record's own commands are not a report about them
                key = _request_key(entry.command)
                if key is not None:
                    accounted.add(key)
                elif isinstance(entry.command, PublishStateChange):
                    accounted_publishes.add((record.wallet, entry.version, entry.index))
        for record in decisions:
            self._replay(record, config)
            for index, command in enumerate(record.commands):
                key = _request_key(command)
                if key is not None:
                    self._check(
                        "reached_or_reported",
                        key in self._reached_ids or key in self._sent_ids or key in accounted,
                        record.wallet,
                        f"{type(command).__name__} {key} of v{record.version} at {record.now} "
                        "was never sent and never reported",
                    )
                elif isinstance(command, PublishStateChange):
                    publish = (record.wallet, record.version, index)
                    self._check(
                        "reached_or_reported",
                        publish in self._reached_publishes or publish in accounted_publishes,
                        record.wallet,
                        f"publish {publish} never reached the sink and was never reported",
                    )

        for record in feed_publishes:
            for index in range(len(record.commands)):
                publish = (record.wallet, record.version, index)
                self._check(
                    "reached_or_reported",
                    publish in self._reached_publishes or publish in accounted_publishes,
                    record.wallet,
                    f"publish {publish} of a feed item never reached the sink and was never "
                    "reported",
                )

    def _replay(self, record: Record, config: Config) -> None:
        assert record.health is not None
        state, commands = step(record.previous, record.health, record.orders, record.now, config)
        self._check(
            "replay",
            state == record.state and commands == record.commands,
            record.wallet,
            f"v{record.version} at {record.now} does not replay through step",
        )

    def equivalence(
        self,
        *,
        phases: Mapping[str, str],
        twin_phases: Mapping[str, str],
        twin_reached: Mapping[str, list[str]],
        books: Mapping[str, object],
        twin_books: Mapping[str, object],
    ) -> int:
        """Compare with the run without crashes; returns how many wallets were compared."""
        compared = 0
        for wallet in sorted(phases):
            if self.reached.get(wallet, []) != twin_reached.get(wallet, []):
                continue
            if books.get(wallet) != twin_books.get(wallet):
                continue
            compared += 1
            self._check(
                "crash_equivalence",
                phases[wallet] == twin_phases.get(wallet),
                wallet,
                f"ends {phases[wallet]} with crashes, {twin_phases.get(wallet)} without",
            )
        return compared
