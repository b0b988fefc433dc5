"""Crash safety (SPEC §9): ``liqshell simulate`` killed with SIGKILL at seeded random instants.

The simulation runs as a subprocess on one SQLite store (the watcher's states and the
simulated exchange's world share the file). It is killed with SIGKILL at seeded random
instants — in start-up, a few milliseconds after a decision with effects was committed (so
the kill lands while its commands execute, or just after), or somewhere inside a tick —
and after each kill the test:

1. reads the committed states: no wallet lost, no version went down, no committed state
   was changed without a new version or replaced by an older one;
2. restarts the simulation *in-process* on the same store and stops it right after the
   first poll of that restarted run (``simulate(on_tick=…)``), where it checks the exchange
   and the store: at most one set of live liquidation orders per wallet (one ``now`` in
   the ``liq-{wallet}-{now}-{i}`` client ids), every tracked client id known to the
   exchange, no unfinished commands left, no auction request or stop pending past its
   timeout, and every auction a state waits for alive on the simulated chain;
3. starts the subprocess again (it resumes) for the next kill.

At the end the run completes; the replay log — the store's, and the JSON Lines log the run
also writes (``--record``), completed from the store at each restart — must hold each
wallet's committed versions 1…N with no gap or repeat, every state seen between kills at
its version, and no request id in two decisions (nothing was decided twice).

Sends are counted *at the simulated exchange* (every request it received, kept across
resumes in ``sim_requests``): every committed request reached it at least once, except the
submits and cancels a restart reported unfinished (superseded by the next step, by design)
and auction requests no longer the wallet's latest; submits and cancels reached it at most
once and no client id became two orders; re-sent auction requests never opened a second
auction. The final phases must equal those of an uninterrupted run of the same seed: no
wallet may end elsewhere (a StartAuction or StopAuction lost to a kill is sent again at the
restart). Wallets whose decisions differ are printed with where they part and why.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path

import attrs
import pytest

from liqcore import (
    AccountState,
    CancelOrder,
    Command,
    Config,
    Healthy,
    InLiquidation,
    Liquidated,
    MarginMode,
    PlanningError,
    Portfolio,
    Position,
    PreLiquidation,
    PublishStateChange,
    Quote,
    StartAuction,
    StopAuction,
    SubmitOrder,
    codec,
)
from liqcore.state import phase_tag
from liqshell import Watcher
from liqshell.adapters.jsonl import read_records as read_jsonl
from liqshell.adapters.sqlite import read_records
from liqshell.ports import MarginReport, Record, RecordKind, Unfinished
from liqshell.sim import SimExchange, SimParams, WorldStore, simulate
from liqshell.sim.margin import margin_report
from liqshell.sim.world import Market, World
from liqshell.testing import FakeExchange, Fault, MemorySink, MemoryStore, VirtualClock

ROOT = Path(__file__).resolve().parents[2]
PARAMS = SimParams(accounts=24, minutes=8, seed=4)
CLI_ARGS = ("--accounts", "24", "--minutes", "8", "--seed", "4")
KILL_SEED = 20260302
KILLS = 30
MIN_KILLS = 20
CONFIG = Config()
LIVE = ("pending", "running", "stopping")
SEGMENT_TIMEOUT_S = 60.0
POLL_S = 0.001

MODES = ("start-up", "effect", "tick")
MODE_WEIGHTS = (0.2, 0.5, 0.3)
"""Where the kills are aimed: at a seeded instant of the start-up (imports, opening the
store, the restart's reconciliation), its first commit at the latest; a few milliseconds
after the run commits a decision with effects (while its commands execute, or just after);
a seeded number of ticks into the run, at a seeded instant inside the tick."""
# Each kill after the first waits for the world to reach its share of the run
# (Killer.run's ``after_tick``): without it every restart re-steps the wallets in
# pre-liquidation at once, the next kill lands in the same tick, and the kills pile up early
# in the run while its auctions and recoveries run uninterrupted.
EFFECT_WINDOW_S = 0.006
TICK_WINDOW_S = 0.04
EFFECT_TICKS = 5
"""An effect kill waits at most this many ticks for a decision with effects."""
EFFECTS = (
    "SELECT max(seq) FROM records WHERE seq > {seq} AND kind = 'decision' "
    "AND body_json NOT LIKE '{{\"commands\":[],%'"
)

# --------------------------------------------------------------------------- reading the store


@attrs.frozen(kw_only=True)
class Committed:
    """One wallet's row of the watcher's ``states`` table."""

    version: int
    state: str
    unfinished: str
    updated_at: int


def _query(store: Path, sql: str) -> list[tuple[object, ...]]:
    """Rows of ``sql`` on a connection of its own; none while the file or table is missing."""
    if not store.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(store, timeout=30)) as db:
            return list(db.execute(sql).fetchall())
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):
            return []
        raise


def read_committed(store: Path) -> dict[str, Committed]:
    """The committed states by wallet."""
    rows = _query(
        store, "SELECT wallet, version, state_json, unfinished_json, updated_at FROM states"
    )
    return {
        str(wallet): Committed(
            version=int(str(version)),
            state=str(state),
            unfinished=str(unfinished),
            updated_at=int(str(updated)),
        )
        for wallet, version, state, unfinished, updated in rows
    }


def _scalar(store: Path, sql: str) -> int:
    try:
        rows = _query(store, sql)
    except sqlite3.Error:  # mid-recovery after a kill: look again
        return -1
    value = rows[0][0] if rows else None
    return -1 if value is None else int(str(value))


def world_tick(store: Path) -> int:
    """The tick of the stored world snapshot (−1 before the first)."""
    return _scalar(store, "SELECT tick FROM sim_world WHERE id = 1")


def last_seq(store: Path) -> int:
    """The sequence number of the last record in the replay log (−1 if none)."""
    return _scalar(store, "SELECT max(seq) FROM records")


def journal_length(store: Path) -> int:
    """Exchange actions journaled since the last world snapshot."""
    return _scalar(store, "SELECT count(*) FROM sim_journal")


def exchange_world(store: Path) -> World | None:
    """The exchange's world as a restart sees it: the snapshot with its journal replayed."""
    worlds = WorldStore(store)
    try:
        loaded = worlds.load()
    finally:
        worlds.close()
    if loaded is None:
        return None
    world, journal = loaded
    exchange = SimExchange(world, config=CONFIG, market=Market(world.params))
    exchange.replay(journal)
    return exchange.world


# --------------------------------------------------------------------------- invariants


@attrs.define
class Tracker:
    """Every committed state seen between kills, checked against the one seen before."""

    seen: dict[str, Committed] = attrs.Factory(dict)
    by_version: dict[str, dict[int, str]] = attrs.Factory(dict)
    checked: int = 0
    violations: list[str] = attrs.Factory(list)

    def observe(self, states: Mapping[str, Committed], where: str) -> None:
        """Check ``states`` against the last observation (module docs, 1)."""
        for wallet in sorted(set(self.seen) | set(states)):
            before, now = self.seen.get(wallet), states.get(wallet)
            if now is None:
                self.violations.append(f"{where}: {wallet} lost its committed state")
                continue
            self.checked += 1
            if before is not None:
                if now.version < before.version:
                    self.violations.append(
                        f"{where}: {wallet} rolled back from v{before.version} to v{now.version}"
                    )
                elif now.version == before.version and now.state != before.state:
                    self.violations.append(
                        f"{where}: {wallet} v{now.version} changed without a new version"
                    )
                elif now.updated_at < before.updated_at:
                    self.violations.append(
                        f"{where}: {wallet} v{now.version} is older than v{before.version}"
                    )
            logged = self.by_version.setdefault(wallet, {}).setdefault(now.version, now.state)
            if logged != now.state:
                self.violations.append(f"{where}: {wallet} has two states at v{now.version}")
            self.seen[wallet] = now


def liquidation_sets(world: World) -> dict[str, set[int]]:
    """Per wallet, the ``now`` of each set of live liquidation orders (``liq-{w}-{now}-{i}``)."""
    sets: dict[str, set[int]] = {}
    for order in world.orders.values():
        client = order.client_id or ""
        if order.status == "open" and client.startswith(f"liq-{order.wallet}-"):
            sets.setdefault(order.wallet, set()).add(int(client.rsplit("-", 2)[1]))
    return sets


def two_live_sets(world: World, where: str) -> list[str]:
    """Wallets with more than one live set of liquidation orders."""
    return [
        f"{where}: {wallet} has {len(nows)} live sets of liquidation orders {sorted(nows)}"
        for wallet, nows in sorted(liquidation_sets(world).items())
        if len(nows) > 1
    ]


@attrs.define
class Findings:
    """What the checks after a poll found: the violations."""

    problems: list[str] = attrs.Factory(list)


def converged(world: World, states: Mapping[str, Committed], where: str) -> Findings:
    """What must hold once a (restarted) run has completed a poll (module docs, 2)."""
    found = Findings(problems=two_live_sets(world, where))
    timeout = CONFIG.full_escalation_timeout_ms
    live = {a.auction_id for a in world.auctions.values() if a.status in LIVE}
    for wallet, committed in sorted(states.items()):
        state = codec.from_json(committed.state, AccountState)
        if codec.from_json(committed.unfinished, tuple[Unfinished, ...]):
            found.problems.append(f"{where}: {wallet} still has unfinished commands")
        known = {o.client_id for o in world.orders.values() if o.wallet == wallet}
        match state.phase:
            case PreLiquidation() as phase:
                unknown = sorted(set(phase.active_order_client_ids) - known)
                if unknown:
                    found.problems.append(
                        f"{where}: {wallet} tracks orders unknown to the exchange {unknown}"
                    )
                requested = phase.pending_full_requested_at
                if phase.pending_full_auction_id is not None:
                    if phase.pending_full_auction_id not in live:
                        found.problems.append(
                            f"{where}: {wallet} waits for auction {phase.pending_full_auction_id}"
                            ", which is not alive on the chain"
                        )
                elif requested is not None and world.now > requested + timeout:
                    found.problems.append(f"{where}: {wallet} auction request past its timeout")
            case InLiquidation() as phase:
                if phase.auction_id not in live:
                    found.problems.append(
                        f"{where}: {wallet} in auction {phase.auction_id}, which is not alive"
                    )
                asked = phase.stop_requested_at
                if asked is not None and world.now > asked + timeout and recovered(world, wallet):
                    found.problems.append(f"{where}: {wallet} stop request past its timeout")
            case Healthy() | Liquidated():
                pass
    return found


def recovered(world: World, wallet: str) -> bool:
    """Whether the exchange's margin engine calls the account not liquidatable now (a stop
    is only (re-)sent then)."""
    try:
        report = margin_report(world, Market(world.params), CONFIG, wallet)
    except PlanningError:
        return False
    return not report.is_liquidatable


class FirstPollDone(Exception):
    """Raised by :class:`FirstPoll` to stop the restarted run after its first poll."""


@attrs.define
class FirstPoll:
    """``on_tick`` of a restarted run: check :func:`converged` after its first poll, stop."""

    store: Path
    where: str
    found: Findings = attrs.Factory(Findings)
    states: dict[str, Committed] = attrs.Factory(dict)
    ran: bool = False

    def __call__(self, world: World) -> None:
        self.ran = True
        self.states = read_committed(self.store)
        self.found = converged(world, self.states, self.where)
        raise FirstPollDone


# --------------------------------------------------------------------------- killing


@attrs.frozen(kw_only=True)
class Kill:
    """Where one SIGKILL landed."""

    mode: str
    tick: int
    journaled: int
    """Exchange actions journaled since the world's last snapshot (the kill interrupted a
    tick after the exchange had acted in it)."""
    committed: bool
    """Whether the killed process had committed anything (else it died in start-up)."""


@attrs.define
class Killer:
    """Runs the simulation and SIGKILLs it at seeded instants (see :data:`MODES`)."""

    argv: Sequence[str]
    store: Path
    log: Path
    draw: random.Random
    startup_s: float = 0.8
    """The last measured time from spawn to the run's first commit."""

    def run(self, after_tick: int = -1) -> Kill | None:
        """One run, killed; ``None`` if it finished before the kill. An ``effect`` or
        ``tick`` kill is aimed only once the world has reached ``after_tick``."""
        mode = self.draw.choices(MODES, weights=MODE_WEIGHTS)[0]
        ticks = self.draw.randint(0, 2)
        fraction = self.draw.random()
        store = self.store
        seq = last_seq(store)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with self.log.open("ab") as err:
            process = subprocess.Popen(
                self.argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )
        started = time.monotonic()

        def wait(ready: Callable[[], bool]) -> bool:
            while process.poll() is None:
                if ready():
                    return True
                if time.monotonic() - started > SEGMENT_TIMEOUT_S:
                    raise AssertionError(
                        f"the simulation made no progress in {SEGMENT_TIMEOUT_S} s"
                    )
                time.sleep(POLL_S)
            return False

        try:
            if mode == "start-up":
                # At a seeded instant of the start-up, or at its first commit at the latest.
                limit = fraction * self.startup_s
                wait(lambda: time.monotonic() - started >= limit or last_seq(store) > seq)
            elif wait(lambda: last_seq(store) > seq):
                self.startup_s = time.monotonic() - started
                wait(lambda: world_tick(store) >= after_tick)
                seq, tick = last_seq(store), world_tick(store)
                if mode == "effect":
                    query = EFFECTS.format(seq=last_seq(store))
                    wait(
                        lambda: (
                            _scalar(store, query) > 0 or world_tick(store) >= tick + EFFECT_TICKS
                        )
                    )
                    time.sleep(fraction * EFFECT_WINDOW_S)
                else:
                    wait(lambda: world_tick(store) >= tick + ticks)
                    time.sleep(fraction * TICK_WINDOW_S)
            if process.poll() is not None:
                assert process.returncode == 0, self.log.read_text(errors="replace")[-3000:]
                return None
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
        return Kill(
            mode=mode,
            tick=world_tick(store),
            journaled=journal_length(store),
            committed=last_seq(store) > seq,
        )


# --------------------------------------------------------------------------- sends


def exchange_requests(store: Path) -> list[tuple[str, str, str, str | None]]:
    """Every request the simulated exchange received over the run: (op, wallet, request id,
    client id)."""
    worlds = WorldStore(store)
    try:
        return worlds.requests()
    finally:
        worlds.close()


def still_requested(state: AccountState | None, command: Command, now: int) -> bool:
    """Whether ``state`` still waits on the auction request ``command`` at ``now`` (no
    receipt yet, and at least a poll interval of its staleness window left)."""
    if state is None:
        return False
    phase = state.phase
    window = CONFIG.full_escalation_timeout_ms - CONFIG.poll_interval_ms
    if isinstance(command, StartAuction):
        return (
            isinstance(phase, PreLiquidation)
            and phase.pending_full_request_id == command.request_id
            and phase.pending_full_auction_id is None
            and phase.pending_full_requested_at is not None
            and now <= phase.pending_full_requested_at + window
        )
    if isinstance(command, StopAuction):
        return (
            isinstance(phase, InLiquidation)
            and phase.stop_request_id == command.request_id
            and phase.stop_requested_at is not None
            and now <= phase.stop_requested_at + window
        )
    return False


@attrs.frozen(kw_only=True)
class Sends:
    """What reached the exchange, against what was committed."""

    committed: int
    sent: int
    superseded: int
    resent: int
    """Auction requests a restart found unfinished and still the wallet's latest: sent again."""
    duplicates: int
    """Auction requests that reached the exchange more than once (idempotent per wallet)."""
    problems: tuple[str, ...]


@attrs.frozen(kw_only=True)
class Unreached:
    """Committed requests against what reached the exchange."""

    decided: dict[str, Command]
    """Every committed request id and its command."""
    superseded: frozenset[str]
    """Requests a restart found unfinished and superseded: a submit or cancel, or an
    auction request no longer the wallet's latest."""
    must_resend: frozenset[str]
    """Auction requests a restart found unfinished and still the wallet's latest."""
    lost: tuple[str, ...]
    """A line for each committed request that never reached the exchange though nothing
    superseded it."""


def unreached_requests(
    records: Sequence[Record], sent: Container[str], *, committed_only: bool = False
) -> Unreached:
    """Which committed requests never reached the exchange though no restart (or
    takeover) superseded them: the rule ``send_problems`` and the cluster tests share.
    ``committed_only`` counts only decisions whose commit took (a fenced one did not)."""
    decided: dict[str, Command] = {}
    for record in records:
        if record.kind is RecordKind.DECISION and (record.commits_version or not committed_only):
            for command in record.commands:
                request = getattr(command, "request_id", None)
                if request is not None:
                    decided[request] = command
    superseded: set[str] = set()
    must_resend: set[str] = set()
    for record in records:
        if record.kind is not RecordKind.RESTART:
            continue
        for command in record.commands:
            if isinstance(command, SubmitOrder | CancelOrder):
                superseded.add(command.request_id)
            elif isinstance(command, StartAuction | StopAuction):
                if still_requested(record.previous, command, record.now):
                    must_resend.add(command.request_id)
                else:
                    superseded.add(command.request_id)
    lost = tuple(
        f"committed {type(command).__name__} {request} never reached the exchange"
        for request, command in sorted(decided.items())
        if request not in sent and (request not in superseded or request in must_resend)
    )
    return Unreached(
        decided=decided,
        superseded=frozenset(superseded),
        must_resend=frozenset(must_resend),
        lost=lost,
    )


def send_problems(
    records: Sequence[Record], requests: Sequence[tuple[str, str, str, str | None]], world: World
) -> Sends:
    """Every committed request reached the exchange at least once unless a restart found it
    unfinished and superseded (a submit or cancel, or an auction request no longer the
    wallet's latest); submits and cancels at most once, one order per client id; every
    request at the exchange was committed; one auction per auction request id."""
    sent = collections.Counter(request for _, _, request, _ in requests)
    unreached = unreached_requests(records, sent)
    decided, superseded, must_resend = (
        unreached.decided,
        unreached.superseded,
        unreached.must_resend,
    )
    problems: list[str] = list(unreached.lost)
    problems += [
        f"request {r} reached it but was never committed" for r in sent if r not in decided
    ]
    for op, _, request, _ in requests:
        if op in ("submit", "cancel") and sent[request] > 1:
            problems.append(f"{op} {request} reached it {sent[request]} times")
    clients = collections.Counter(
        (wallet, client) for op, wallet, _, client in requests if op == "submit"
    )
    problems += [
        f"client id {c} of {w} submitted {n} times" for (w, c), n in clients.items() if n > 1
    ]
    orders = collections.Counter(
        (o.wallet, o.client_id) for o in world.orders.values() if o.client_id is not None
    )
    problems += [f"client id {c} of {w} is {n} orders" for (w, c), n in orders.items() if n > 1]
    auctions = collections.Counter(a.request_id for a in world.auctions.values())
    problems += [f"auction request {r} opened {n} auctions" for r, n in auctions.items() if n > 1]
    duplicates = sum(
        n - 1
        for (op, _, _, _), n in collections.Counter(requests).items()
        if op in ("start", "stop") and n > 1
    )
    return Sends(
        committed=len(decided),
        sent=len(sent),
        superseded=len(superseded - must_resend),
        resent=len(must_resend),
        duplicates=duplicates,
        problems=tuple(sorted(set(problems))),
    )


def auctions_by_wallet(world: World) -> dict[str, int]:
    """How many auctions each wallet had."""
    return dict(sorted(collections.Counter(a.wallet for a in world.auctions.values()).items()))


# --------------------------------------------------------------------------- the log


def committed_records(records: Sequence[Record]) -> dict[str, list[Record]]:
    """The records committed together with a state, by wallet, in log order."""
    by_wallet: dict[str, list[Record]] = {}
    for record in records:
        if record.commits_version:
            by_wallet.setdefault(record.wallet, []).append(record)
    return by_wallet


def log_problems(
    records: Sequence[Record], final: Mapping[str, Committed], tracker: Tracker
) -> list[str]:
    """Each wallet's log holds versions 1…N (N its committed version), every state seen
    between kills is the one logged at its version, and no request id is in two decisions."""
    problems = []
    logged = committed_records(records)
    for wallet, committed in sorted(final.items()):
        versions = [r.version for r in logged.get(wallet, [])]
        if versions != list(range(1, committed.version + 1)):
            problems.append(f"log of {wallet}: versions {versions} are not 1…{committed.version}")
        states = {r.version: codec.to_json(r.state) for r in logged.get(wallet, [])}
        for version, seen in sorted(tracker.by_version.get(wallet, {}).items()):
            if states.get(version) != seen:
                problems.append(f"log of {wallet}: v{version} is not the state seen between kills")
    requests = collections.Counter(
        request
        for record in records
        if record.kind is RecordKind.DECISION
        for command in record.commands
        if (request := getattr(command, "request_id", None)) is not None
    )
    problems += [f"request {r} decided {n} times" for r, n in sorted(requests.items()) if n > 1]
    return problems


@attrs.frozen(kw_only=True)
class Step:
    """One decision that did something, as compared between the two runs."""

    now: int
    phase: str
    commands: tuple[str, ...]


def histories(records: Sequence[Record]) -> dict[str, list[Step]]:
    """Per wallet, its decisions with commands besides publishing, or a phase change."""
    found: dict[str, list[Step]] = {}
    for record in records:
        if record.kind is not RecordKind.DECISION or record.state is None:
            continue
        commands = tuple(
            type(c).__name__ for c in record.commands if not isinstance(c, PublishStateChange)
        )
        previous = "none" if record.previous is None else phase_tag(record.previous.phase)
        current = phase_tag(record.state.phase)
        if commands or previous != current:
            found.setdefault(record.wallet, []).append(
                Step(now=record.now, phase=current, commands=commands)
            )
    return found


def parting(crashed: Sequence[Step], reference: Sequence[Step]) -> str:
    """Where two histories of one wallet part, in words."""

    def at(step: Step) -> str:
        return f"+{(step.now - PARAMS.start_ms) / 1000:g} s"

    for index, (ours, theirs) in enumerate(zip(crashed, reference, strict=False)):
        if (ours.phase, ours.commands) != (theirs.phase, theirs.commands):
            return (
                f"decision {index + 1}: {ours.phase} {list(ours.commands)} at {at(ours)}, "
                f"uninterrupted {theirs.phase} {list(theirs.commands)} at {at(theirs)}"
            )
    if len(crashed) != len(reference):
        return f"the same decisions, then {len(crashed)} vs {len(reference)} of them"
    for ours, theirs in zip(crashed, reference, strict=True):
        if ours != theirs:
            return f"the same decisions at other instants (first {at(ours)} vs {at(theirs)})"
    return "the same decisions at the same instants (what differs came after them)"


def why(wallet: str, records: Sequence[Record], world: World) -> str:
    """Why a wallet's history differs from the uninterrupted run's: what its restarts found
    unfinished (and whether it had reached the exchange), else the re-polls."""
    unfinished = [
        command
        for record in records
        if record.kind is RecordKind.RESTART and record.wallet == wallet
        for command in record.commands
        if not isinstance(command, PublishStateChange)
    ]
    requested = {a.request_id for a in world.auctions.values()}
    unsent = [c for c in unfinished if isinstance(c, StartAuction)]
    if any(c.request_id not in requested for c in unsent):
        return (
            "a kill came after its StartAuction was committed and before it was sent, and "
            "the restart found it stale (no longer the wallet's latest request)"
        )
    if unfinished:
        kinds = collections.Counter(type(c).__name__ for c in unfinished)
        text = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        return (
            f"kills interrupted {text} (unfinished at restart: auction requests still "
            "latest sent again, orders superseded); later polls re-decided from fresh "
            "snapshots"
        )
    return (
        "no command of it was interrupted; restarts re-polled it at the interrupted tick "
        "with now = updated_at + 1, which moved its reprice schedule, so its orders went "
        "out at other instants and prices"
    )


# --------------------------------------------------------------------------- the test


@contextlib.contextmanager
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A folder on memory-backed tmpfs when there is one (a SIGKILL loses exactly what it
    would on disk: the page cache survives the process), else pytest's tmp."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        with tempfile.TemporaryDirectory(prefix="liqshell-crash-", dir=shm) as folder:
            yield Path(folder)
    else:
        yield tmp_path


def reap(process: subprocess.Popen[str]) -> None:
    """Kill ``process`` if it still runs (a failed test leaves no child behind)."""
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)


def final_phases(states: Mapping[str, Committed]) -> dict[str, str]:
    """Each wallet's phase tag."""
    return {
        wallet: phase_tag(codec.from_json(c.state, AccountState).phase)
        for wallet, c in sorted(states.items())
    }


@pytest.mark.slow
def test_simulate_sigkilled_at_random_instants_loses_nothing_and_converges(
    tmp_path: Path,
) -> None:
    """Killed ≥ 20 times and resumed each time, the simulation never loses or rolls back a
    committed state nor decides a request twice, and after each restart's first poll no
    wallet has two live sets of liquidation orders, tracks an order the exchange does not
    know, keeps unfinished commands or waits on a request past its timeout."""
    with scratch(tmp_path) as folder, contextlib.ExitStack() as cleanup:
        store, reference_store = folder / "crash.sqlite", folder / "reference.sqlite"
        log = folder / "stderr.log"
        base = [sys.executable, "-m", "liqshell", "simulate", *CLI_ARGS, "--quiet", "--store"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        jsonl = folder / "crash.jsonl"
        reference = subprocess.Popen(
            [*base, str(reference_store)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        cleanup.callback(reap, reference)
        recording = ["--record", str(jsonl)]
        killer = Killer(
            argv=[*base, str(store), *recording],
            store=store,
            log=log,
            draw=random.Random(KILL_SEED),
        )
        tracker = Tracker()
        kills: list[Kill] = []
        found = Findings()
        at_kill_instants: list[str] = []
        first_polls = 0
        while len(kills) < KILLS:
            # The k-th kill is aimed at the k-th of KILLS + 1 equal shares of the run.
            kill = killer.run(after_tick=len(kills) * PARAMS.ticks // (KILLS + 1))
            if kill is None:
                break
            kills.append(kill)
            where = f"kill {len(kills)} (tick {kill.tick})"
            tracker.observe(read_committed(store), where)
            world = exchange_world(store)
            if world is not None:
                at_kill_instants += two_live_sets(world, where)
            check = FirstPoll(store, f"first poll after {where}")
            with contextlib.suppress(FirstPollDone):
                asyncio.run(simulate(PARAMS, store=store, on_tick=check))
            if check.ran:
                first_polls += 1
                found.problems += check.found.problems
                tracker.observe(check.states, check.where)
        finished = subprocess.run(
            [*base, str(store), *recording],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        reference_out, reference_err = reference.communicate(timeout=180)
        assert reference.returncode == 0, reference_err
        assert finished.returncode == 0, finished.stderr
        assert "Traceback" not in log.read_text(errors="replace")

        final = read_committed(store)
        tracker.observe(final, "end of the run")
        world = exchange_world(store)
        assert world is not None
        assert world.done
        end = converged(world, final, "end of the run")
        found.problems += end.problems
        records = list(read_records(store))
        found.problems += log_problems(records, final, tracker)
        logged = list(read_jsonl(jsonl))
        found.problems += [f"JSON Lines {p}" for p in log_problems(logged, final, tracker)]
        sends = send_problems(records, exchange_requests(store), world)
        found.problems += list(sends.problems)
        reference_records = list(read_records(reference_store))
        reference_final = read_committed(reference_store)
        reference_world = exchange_world(reference_store)
        assert reference_world is not None

    ours, theirs = final_phases(final), final_phases(reference_final)
    ours_h, theirs_h = histories(records), histories(reference_records)
    differing = sorted(w for w in theirs if ours.get(w) != theirs[w])
    parted = sorted(w for w in theirs_h.keys() | ours_h.keys() if ours_h.get(w) != theirs_h.get(w))
    restarts = [r for r in records if r.kind is RecordKind.RESTART]
    lost = collections.Counter(type(c).__name__ for r in restarts for c in r.commands)
    lines = [
        f"crash safety: {len(kills)} SIGKILLs of `liqshell simulate {' '.join(CLI_ARGS)}` "
        f"(kill seed {KILL_SEED}), each followed by a checked restart",
        "  kills aimed at start-up / just after a decision with effects / into a tick: "
        + " / ".join(str(sum(k.mode == m for k in kills)) for m in MODES),
        f"  killed before the run committed anything: {sum(not k.committed for k in kills)}; "
        f"with exchange actions of the interrupted tick journaled: "
        f"{sum(k.journaled > 0 for k in kills)}; ticks: {[k.tick for k in kills]}",
        f"  restarts that found a wallet's last decision unfinished: {len(restarts)} "
        f"(commands found: {dict(sorted(lost.items()))}; auction requests still latest, "
        f"sent again: {sends.resent}, of which had reached the exchange before: "
        f"{sends.duplicates})",
        f"  at the exchange: {sends.sent} distinct requests received of {sends.committed} "
        f"committed; {sends.superseded} superseded at a restart (never sent, by design); "
        f"problems: {len(sends.problems)}",
        f"  JSON Lines log: {sum(r.commits_version for r in logged)} committed records, "
        f"{len(logged)} in all",
        f"  committed states checked across kills: {tracker.checked}; first polls after a "
        f"restart checked: {first_polls}; decisions in the log: "
        f"{sum(r.kind is RecordKind.DECISION for r in records)}",
        f"  violations: {len(tracker.violations) + len(found.problems)}; two live sets at a "
        f"kill instant (before the restart's poll): {len(at_kill_instants)}",
        f"  final phases: crashed {dict(sorted(collections.Counter(ours.values()).items()))}, "
        f"uninterrupted {dict(sorted(collections.Counter(theirs.values()).items()))}",
        f"  wallets ending in another phase than the uninterrupted run: {len(differing)}",
    ]
    lines += [
        f"    {w}: {ours.get(w)} (uninterrupted: {theirs[w]}): {why(w, records, world)}; "
        f"first difference at "
        f"{parting(ours_h.get(w, []), theirs_h.get(w, []))}"
        for w in differing
    ]
    lines.append(f"  wallets whose decisions differ (same final phase included): {len(parted)}")
    lines += [
        f"    {w}: {parting(ours_h.get(w, []), theirs_h.get(w, []))}: {why(w, records, world)}"
        for w in parted
        if w not in differing
    ]
    print("\n".join(lines))
    print("crashed run:", finished.stdout, "uninterrupted run:", reference_out, sep="\n")
    assert len(kills) >= MIN_KILLS, "the run finished before 20 kills: make it longer"
    assert first_polls >= MIN_KILLS
    assert tracker.violations == []
    assert found.problems == []
    assert tracker.checked >= MIN_KILLS * PARAMS.accounts
    assert differing == [], "wallets ended in another phase than the uninterrupted run"
    assert auctions_by_wallet(world) == auctions_by_wallet(reference_world)


# ---------------------------------------------------------- a lost submit, then escalation

W = "W"
SYMBOL = "BTC-20261231-100000-C"
LIQUIDATABLE = MarginReport(
    margin_mode=MarginMode.STANDARD,
    equity=Decimal(100),
    mm_required=Decimal(300),
    is_liquidatable=True,
)


async def test_restart_after_lost_submit_then_escalation_tracks_only_known_orders() -> None:
    """A submit committed but lost to a crash is not tracked after the restart's first poll,
    even when that poll escalates to a full auction."""
    clock = VirtualClock(10_000)
    exchange = FakeExchange(clock=clock)
    position = Position(symbol=SYMBOL, amount=Decimal(-4), entry_price=Decimal(100))
    portfolio = Portfolio(
        cash=Decimal(500),
        positions={SYMBOL: position},  # type: ignore[arg-type, unused-ignore]
        spot={"BTC": Decimal(105_000)},  # type: ignore[arg-type, unused-ignore]
    )
    exchange.set_portfolio(W, portfolio)
    exchange.set_margin(W, LIQUIDATABLE)
    exchange.set_quote(
        SYMBOL, Quote(best_bid=Decimal(149), best_ask=Decimal(150), mid=Decimal("149.5"))
    )
    store = MemoryStore()

    def watcher() -> Watcher:
        return Watcher(
            portfolios=exchange,
            margin=exchange,
            quotes=exchange,
            orders=exchange,
            gateway=exchange,
            auctions=exchange,
            store=store,
            sink=MemorySink(),
            recorder=store,
            clock=clock,
        )

    # The decision with the submit is committed; the process dies before the submit leaves.
    exchange.inject("submit", Fault.outcome_unknown(reason="killed before sending"), times=None)
    await clock.drive(watcher().run_once())
    exchange.clear_faults()
    tracked = store.states[W].phase
    assert isinstance(tracked, PreLiquidation)
    assert tracked.active_order_client_ids
    assert exchange.open_orders_of(W) == ()

    # Restart: by now the account must be auctioned whole (negative equity).
    clock.advance(1)
    exchange.set_margin(W, attrs.evolve(LIQUIDATABLE, equity=Decimal(-5)))
    await clock.drive(watcher().run_once())
    phase = store.states[W].phase
    assert isinstance(phase, PreLiquidation)
    assert phase.pending_full_request_id is not None
    known = {o.client_id for o in exchange.open_orders_of(W)}
    assert set(phase.active_order_client_ids) <= known
