"""Replay and what-if analysis of recordings, for notebooks and scripts.

::

    from liqshell import analysis

    recording = analysis.load("run.jsonl")          # JSON Lines, SQLite, or a PostgreSQL DSN
    trace = analysis.replay(recording)              # with the config the run recorded
    assert not trace.mismatches                     # step reproduced every decision
    comparison = analysis.what_if(recording, partial_bonus_max_bps=300)
    print(comparison.render())
    grid = analysis.sweep(recording, {"partial_bonus_max_bps": [300, 600, 1000]})

:func:`load` reads a recording into a :class:`Recording`: its headers (the config each run
was decided with) and records in order. :func:`replay` re-runs every decision through
:func:`liqcore.step` — with the recorded config unless one is given — and compares each
with what was recorded (a :class:`Trace` with its :class:`Mismatch`\\ es). :func:`what_if`
re-runs the recording with changed :class:`~liqcore.Config` fields and compares the
outcome with the recorded run (:class:`Comparison`); :func:`sweep` does it over a grid.

**The limit of a what-if on a recording.** A recording's market does not react to
different orders: a what-if re-decides each observation the run made — the same health,
the same open orders, the same times, the same answers from the exchange (the recorded
outcomes and feed events are folded into the what-if's own state with
:func:`liqcore.apply`; an answer that does not match the what-if's state is a no-op) —
with the what-if's own state carried from decision to decision. It answers "what would
the watcher have asked for, given what it saw", not "what would then have happened": an
order the what-if submits at a higher bonus is not filled sooner, and the account does
not recover earlier. For such closed-loop questions, ``sweep(recording, grid,
simulate=True)`` runs each point of the grid against :mod:`liqshell.sim` (the market, the
order book and the auctions react), with the simulation parameters given.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import itertools
import json
import json.scanner
import os
import re
import sqlite3
import sys
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, TypeAlias

import attrs

from liqcore import (
    AccountState,
    Config,
    InLiquidation,
    PreLiquidation,
    StartAuction,
    SubmitOrder,
    codec,
)
from liqcore.errors import InvalidConfig, InvalidInput, LiqcoreError
from liqcore.inputs import Health, OpenOrder
from liqcore.machine import apply, step
from liqcore.reasons import Explanation, ReasonCode, explain_event
from liqcore.reasons import explain as explain_decision
from liqcore.state import phase_tag
from liqshell.adapters import Pruned, _loads, intact
from liqshell.ports import RECORD_SCHEMA, LiqshellError, Record, RecordingHeader, RecordKind

__all__ = [
    "Comparison",
    "Decision",
    "Mismatch",
    "Recording",
    "RecordingError",
    "RecordingReport",
    "Summary",
    "Trace",
    "WalletSummary",
    "config_differences",
    "diff",
    "explain",
    "from_entries",
    "is_dsn",
    "load",
    "redecide",
    "render_report",
    "render_story",
    "replay",
    "replay_bodies",
    "simulated",
    "summarize",
    "summarize_decisions",
    "sweep",
    "version_gaps",
    "what_if",
    "with_overrides",
    "without_cycle_collection",
]


class RecordingError(LiqshellError, ValueError):
    """A recording could not be read: missing, not a recording, corrupt, truncated, or of a
    schema this liqshell does not read. The message names the file and the line."""


# --------------------------------------------------------------------------- recordings


@attrs.frozen(kw_only=True, eq=False)
class Recording:
    """A recording read into memory: its headers and records in order.

    ``header_index[i]`` is the position in :attr:`headers` of the header that precedes
    ``records[i]`` (``-1``: none — a recording from before headers, or records before the
    first header). Use :meth:`config_at` for the config a record was decided with.
    ``pruned``: what the store's retention removed from the start of the log (its oldest
    whole decisions and polls, and the headers no record left needs): the recording then
    starts after a wallet's first version, and the header of its oldest record is kept.
    """

    source: str
    headers: tuple[RecordingHeader, ...]
    records: tuple[Record, ...]
    header_index: tuple[int, ...]
    pruned: Pruned = attrs.field(factory=Pruned)

    def __repr__(self) -> str:
        pruned = f", {self.pruned.records} pruned" if self.pruned.records else ""
        return (
            f"Recording({self.source!r}, {len(self.records)} records, "
            f"{len(self.headers)} headers, {len(self.wallets)} wallets{pruned})"
        )

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    @property
    def wallets(self) -> tuple[str, ...]:
        """The wallets of the records, sorted (records of no wallet — a poll summary — are
        left out)."""
        return tuple(sorted({record.wallet for record in self.records if record.wallet}))

    @property
    def config(self) -> Config | None:
        """The config of the last header (``None``: not recorded)."""
        return self.headers[-1].config if self.headers else None

    def header_at(self, index: int) -> RecordingHeader | None:
        """The header in force for ``records[index]``."""
        position = self.header_index[index]
        return None if position < 0 else self.headers[position]

    def config_at(self, index: int) -> Config | None:
        """The config ``records[index]`` was decided with (``None``: not recorded)."""
        header = self.header_at(index)
        return None if header is None else header.config

    def decisions(self) -> Iterator[tuple[int, Record]]:
        """``(index, record)`` of each ``DECISION`` record, in order."""
        for index, record in enumerate(self.records):
            if record.kind is RecordKind.DECISION:
                yield index, record

    def to_frame(self) -> Any:
        """A tidy pandas DataFrame, a row per recorded decision (the ``notebook`` extra;
        see :mod:`liqshell.analysis.frames`)."""
        from liqshell.analysis.frames import recording_frame

        return recording_frame(self)

    def of_wallet(self, wallet: str) -> Recording:
        """The part of the recording about ``wallet`` (with every header)."""
        keep = [i for i, record in enumerate(self.records) if record.wallet == wallet]
        return Recording(
            source=f"{self.source} (wallet {wallet})",
            headers=self.headers,
            records=tuple(self.records[i] for i in keep),
            header_index=tuple(self.header_index[i] for i in keep),
            pruned=self.pruned,
        )


def from_entries(
    entries: Iterable[RecordingHeader | Record],
    *,
    source: str = "<entries>",
    pruned: Pruned | None = None,
) -> Recording:
    """A :class:`Recording` from headers and records in order (a
    :class:`~liqshell.testing.MemoryRecorder`'s ``entries``, say); ``pruned``: what
    retention removed before them."""
    headers: list[RecordingHeader] = []
    records: list[Record] = []
    index: list[int] = []
    for entry in entries:
        if isinstance(entry, RecordingHeader):
            headers.append(entry)
        elif isinstance(entry, Record):
            records.append(entry)
            index.append(len(headers) - 1)
        else:
            raise InvalidInput(f"a recording entry must be a header or a Record, was {entry!r}")
    return Recording(
        source=source,
        headers=tuple(headers),
        records=tuple(records),
        header_index=tuple(index),
        pruned=pruned or Pruned(),
    )


def load(source: str | os.PathLike[str], *, schema: str = "liqshell") -> Recording:
    """Read a recording: a JSON Lines file, a SQLite store, or a PostgreSQL DSN
    (``postgresql://…``; ``schema`` is the PostgreSQL schema the store uses).

    Raises :class:`RecordingError` naming the file and the line of the first bad line, or
    saying why the file is not a recording (one line; old or unknown schema versions are
    named). A SQLite or PostgreSQL log that retention pruned says so in
    :attr:`Recording.pruned`.
    """
    text = os.fspath(source)
    if is_dsn(text):
        return _load_postgres(text, schema)
    path = Path(text)
    if not path.exists():
        raise RecordingError(f"{text}: no such file")
    if path.is_dir():
        raise RecordingError(f"{text}: is a directory, not a recording")
    with without_cycle_collection():
        recording = from_entries(read_entries(path), source=text, pruned=_pruned_file(path))
    if not recording.records and not recording.headers:
        raise RecordingError(f"{text}: no records (an empty recording, or only a torn line)")
    return recording


@contextlib.contextmanager
def without_cycle_collection() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a recording is decoded or replayed.

    Decoding builds millions of small frozen objects without reference cycles (reference
    counting frees them); the collector would scan them again and again as they pile up —
    about a quarter of the time of :func:`load` on a 100k-record recording. It is enabled
    again afterwards if it was before.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _pruned_file(path: Path) -> Pruned:
    """What retention removed from a SQLite store's log (a JSON Lines file is never pruned)."""
    from liqshell.adapters import SQLITE_MAGIC
    from liqshell.adapters.sqlite import read_pruned

    with path.open("rb") as handle:
        if handle.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            return Pruned()
    try:
        return read_pruned(path)
    except sqlite3.DatabaseError as error:
        raise RecordingError(f"{path}: cannot read the SQLite recording: {error}") from None


_DSN_KEY = re.compile(r"^\s*(host|hostaddr|port|dbname|user|service)\s*=")


def is_dsn(text: str) -> bool:
    """Whether ``text`` is a PostgreSQL DSN (a ``postgresql://`` URL or ``key=value``
    pairs such as ``host=… dbname=…``) rather than a path."""
    return text.startswith(("postgresql://", "postgres://")) or (
        _DSN_KEY.match(text) is not None and not Path(text).exists()
    )


def _is_sqlite(path: Path) -> bool:
    from liqshell.adapters import SQLITE_MAGIC

    try:
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def read_entries(path: Path) -> Iterator[RecordingHeader | Record]:
    """The headers and records of a JSON Lines or SQLite recording, in order; a bad file
    raises :class:`RecordingError` (one line, naming the line of a bad record)."""
    from liqshell.adapters import read_entries as adapter_entries

    with _reading(path):
        yield from adapter_entries(path)


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """An error while reading the recording at ``path`` as one :class:`RecordingError`."""
    try:
        yield
    except sqlite3.DatabaseError as error:
        raise RecordingError(f"{path}: cannot read the SQLite recording: {error}") from None
    except UnicodeDecodeError:
        raise RecordingError(f"{path}: not a recording (JSON Lines or SQLite expected)") from None
    except RecursionError:
        raise RecordingError(f"{path}: not a liqshell recording: nested too deeply") from None
    except (ValueError, LiqcoreError) as error:
        detail = _first_line(error).removeprefix(f"{path}:")
        number, colon, rest = detail.partition(": ")
        numbered = bool(colon) and number.isdigit()
        where = f"{path}: line {number}" if numbered else f"{path}"
        text = rest if numbered else detail.strip()
        raise RecordingError(f"{where}: not a liqshell recording: {text}") from None
    except OSError as error:
        raise RecordingError(f"{path}: cannot read: {error.strerror or error}") from None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    message = lines[0] if lines else type(error).__name__
    return message if len(message) <= 300 else message[:297] + "..."


def _load_postgres(dsn: str, schema: str) -> Recording:
    from liqshell.adapters.postgres import PostgresStore
    from liqshell.redaction import redact

    async def read() -> tuple[list[RecordingHeader | Record], Pruned]:
        store = PostgresStore(dsn, schema=schema)
        try:
            return [entry async for entry in store.entries()], await store.pruned_log()
        finally:
            await store.close()

    try:
        with without_cycle_collection():
            entries, pruned = asyncio.run(read())
    except (LiqcoreError, ValueError) as error:
        raise RecordingError(f"{redact(dsn)}: not a liqshell recording: {error}") from None
    recording = from_entries(entries, source=redact(dsn), pruned=pruned)
    if not recording.records and not recording.headers:
        raise RecordingError(f"{redact(dsn)}: no records in schema {schema!r}")
    return recording


# --------------------------------------------------------------------------- config


def with_overrides(config: Config, **overrides: object) -> Config:
    """``config`` with fields replaced; a value given as text (``"300"``, ``"0.5"``,
    ``"false"``) is converted to the field's type. Raises ``InvalidConfig`` naming the field
    of an unknown name or a bad value."""
    names = {field.name: field for field in attrs.fields(Config)}
    values: dict[str, object] = {}
    for name, value in overrides.items():
        if name not in names:
            known = ", ".join(sorted(n for n in names if n not in _NOT_SETTABLE))
            raise InvalidConfig(f"Config has no field {name!r} (fields: {known})")
        if name in _NOT_SETTABLE:
            raise InvalidConfig(f"Config.{name} cannot be set from text; pass a Config")
        values[name] = _converted(name, value, getattr(config, name))
    return attrs.evolve(config, **values)  # type: ignore[arg-type]


_NOT_SETTABLE = frozenset({"standard_margin", "portfolio_margin", "instruments"})


def _converted(name: str, value: object, current: object) -> object:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if isinstance(current, bool):
        if text.lower() in {"true", "1", "yes"}:
            return True
        if text.lower() in {"false", "0", "no"}:
            return False
        raise InvalidConfig(f"Config.{name} must be true or false, was {value!r}")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise InvalidConfig(f"Config.{name} must be an integer, was {value!r}") from None
    if isinstance(current, Decimal):
        try:
            return Decimal(text)
        except ArithmeticError:
            raise InvalidConfig(f"Config.{name} must be a number, was {value!r}") from None
    return value


def config_differences(recorded: Config, used: Config) -> list[tuple[str, object, object]]:
    """``(field, recorded value, used value)`` of every field in which ``used`` differs."""
    left, right = codec.unstructure(recorded), codec.unstructure(used)
    assert isinstance(left, dict)
    assert isinstance(right, dict)
    return [
        (name, getattr(recorded, name), getattr(used, name))
        for name in sorted(set(left) | set(right))
        if left.get(name) != right.get(name)
    ]


def _safe_unstructure(config: Config) -> object:
    try:
        return codec.unstructure(config)
    except InvalidInput:
        return None


# --------------------------------------------------------------------------- replay


@attrs.frozen(kw_only=True)
class Mismatch:
    """A decision ``step`` no longer reproduces: ``field`` (``state.<name>``, ``commands``,
    ``health``, ``step``) with the recorded and the replayed value as text."""

    index: int
    wallet: str
    now: int
    field: str
    recorded: str
    replayed: str
    what: str

    def __str__(self) -> str:
        return f"record {self.index} wallet {self.wallet} now {self.now}: {self.what}"


@attrs.frozen(kw_only=True)
class Decision:
    """One replayed decision: what ``step`` was given and what it returned now."""

    index: int
    wallet: str
    now: int
    previous: AccountState | None
    state: AccountState
    commands: tuple[Any, ...]
    health: Any
    orders: tuple[Any, ...]
    config: Config


@attrs.frozen(kw_only=True, eq=False)
class Trace:
    """The result of :func:`replay`: every decision replayed, the mismatches, and notes
    on the config used (``config_notes``: where it differs from the recorded one, or that
    the recording carries none)."""

    source: str
    decisions: tuple[Decision, ...]
    mismatches: tuple[Mismatch, ...]
    config_notes: tuple[str, ...]

    def __repr__(self) -> str:
        return (
            f"Trace({self.source!r}, {len(self.decisions)} decisions, "
            f"{len(self.mismatches)} mismatches)"
        )

    def to_frame(self) -> Any:
        """A tidy pandas DataFrame, a row per replayed decision (the ``notebook`` extra;
        see :mod:`liqshell.analysis.frames`)."""
        from liqshell.analysis.frames import trace_frame

        return trace_frame(self)


def replay(
    recording: Recording | str | os.PathLike[str],
    config: Config | None = None,
    *,
    keep: bool = True,
    client: Any = None,
) -> Trace:
    """Re-run every decision of ``recording`` through :func:`liqcore.step`, each from the
    state the recorded run was in, and compare with what was recorded.

    Each decision is replayed with the config of the header before it (the config the
    run recorded) unless ``config`` is given — then with ``config``, and
    :attr:`Trace.config_notes` names every field in which it differs from the recorded
    one. A recording that carries no config (written before headers, or a custom margin
    model) is replayed with ``config`` or the defaults, and a note says so. ``keep=False``
    keeps only the mismatches (less memory on long recordings). ``client``: a
    ``dask.distributed.Client`` to replay on, partitioned by wallet (see
    :mod:`liqshell.analysis.distributed`); the result equals the local one.

    ``recording`` may also be the path of a recording (``replay(load(path))``): with a
    ``client`` and a SQLite store, the workers decode the records themselves.
    """
    if not isinstance(recording, Recording):
        text = os.fspath(recording)
        if not is_dsn(text) and _is_sqlite(Path(text)):
            if client is not None:
                from liqshell.analysis.distributed import replay_store_on

                stored: Trace = replay_store_on(client, text, config, keep=keep)
                return stored
            return _replay_store(Path(text), config, keep=keep)
        recording = load(text)
    if client is not None:
        from liqshell.analysis.distributed import replay_on

        trace: Trace = replay_on(client, recording, config, keep=keep)
        return trace
    notes = _config_notes(recording, config)
    decisions: list[Decision] = []
    mismatches: list[Mismatch] = []
    configs = _configs(recording, config)
    with without_cycle_collection():
        for index, record in recording.decisions():
            used = configs[recording.header_index[index]]
            _collect(_replay_one(index, record, used), keep, decisions, mismatches)
    return Trace(
        source=recording.source,
        decisions=tuple(decisions),
        mismatches=tuple(mismatches),
        config_notes=notes,
    )


def _replay_store(path: Path, config: Config | None, *, keep: bool) -> Trace:
    """:func:`replay` of the SQLite store at ``path`` on this core, decoding as it goes:
    the same trace as ``replay(load(path))`` (and the same error for a bad store), without
    holding the decoded recording (see :func:`replay_bodies`)."""
    from liqshell.adapters import HEADER_KIND, header_from_json, record_from_json
    from liqshell.adapters.sqlite import read_rows

    headers: list[RecordingHeader] = []
    positions: list[int] = []
    configs: dict[int, Config] = {-1: config if config is not None else Config()}

    def bodies() -> Iterator[tuple[int, int, str, str]]:
        with _reading(path):
            for _, _, kind, body in read_rows(path):
                if kind == HEADER_KIND:
                    header = header_from_json(body)
                    configs[len(headers)] = _header_config(header, config)
                    headers.append(header)
                    continue
                positions.append(len(headers) - 1)
                yield len(positions) - 1, len(headers) - 1, kind, body

    def decode(_: int, body: str) -> Record:
        with _reading(path):
            return record_from_json(body)

    _pruned_file(path)  # as load() reads it: a store whose pruning record is unreadable fails
    with without_cycle_collection():
        decisions, mismatches = replay_bodies(
            bodies(), configs.__getitem__, keep=keep, decode=decode
        )
    if not positions and not headers:
        raise RecordingError(f"{path}: no records (an empty recording, or only a torn line)")
    outline = Recording(
        source=os.fspath(path), headers=tuple(headers), records=(), header_index=tuple(positions)
    )
    return Trace(
        source=os.fspath(path),
        decisions=tuple(decisions),
        mismatches=tuple(mismatches),
        config_notes=_config_notes(outline, config),
    )


def replay_bodies(
    rows: Iterable[tuple[int, int, str, str]],
    config_of: Callable[[int], Config],
    *,
    keep: bool,
    decode: Callable[[int, str], Record] | None = None,
) -> tuple[list[Decision], list[Mismatch]]:
    """Decode and replay records given as stored: ``(index, header position, kind, record
    JSON)`` in order (``kind``: the store's column, a hint — only a ``decision`` row is
    tried on the fast path), each decided with ``config_of(header position)``. The
    decisions (if ``keep``) and the mismatches, as :func:`replay` of the decoded records
    gives them.

    An intact decision (see :func:`liqshell.adapters.intact`) is read by
    :func:`_fast_decision`: only what ``step`` is given and what it returned are built, and
    a wallet's ``previous`` whose bytes are those of its last recorded ``state`` is that
    state, already built. Anything else — a record that is not an intact decision, a
    mismatch, ``step`` raising — is decoded whole (``decode(index, JSON)``, by default
    :func:`~liqshell.adapters.record_from_json` of the JSON) and replayed by :func:`_replay_one`, so
    what is reported, and any error, is the same as before.
    """
    from liqshell.adapters import record_from_json

    whole = decode or (lambda _, body: record_from_json(body))
    decisions: list[Decision] = []
    mismatches: list[Mismatch] = []
    chain: dict[str, tuple[str, AccountState]] = {}
    for index, position, kind, body in rows:
        config = config_of(position)
        fast = kind == _DECISION and _fast_decision(index, body, config, chain, keep)
        if fast is not False:
            if fast is not True:
                decisions.append(fast)
            continue
        record = whole(index, body)
        if record.kind is not RecordKind.DECISION:
            continue
        _collect(_replay_one(index, record, config), keep, decisions, mismatches)
    return decisions, mismatches


def _collect(
    result: Mismatch | tuple[Decision, Mismatch | None],
    keep: bool,
    decisions: list[Decision],
    mismatches: list[Mismatch],
) -> None:
    """Add what replaying one decision gave: its mismatch (a record that could not be
    replayed, or one replayed otherwise) and, with ``keep``, the decision."""
    if isinstance(result, Mismatch):
        mismatches.append(result)
        return
    decision, mismatch = result
    if keep:
        decisions.append(decision)
    if mismatch is not None:
        mismatches.append(mismatch)


def _record_builders() -> dict[str, Callable[[object], object]]:
    hints = typing.get_type_hints(Record)
    names = ("health", "orders", "commands", "events", "pending", "answers")
    built = {name: codec.trusted_structurer(hints[name]) for name in names}
    built["state"] = codec.trusted_structurer(AccountState)
    return built


_BUILD = _record_builders()
_HEALTH, _ORDERS, _COMMANDS = _BUILD["health"], _BUILD["orders"], _BUILD["commands"]
_EVENTS, _PENDING, _ANSWERS = _BUILD["events"], _BUILD["pending"], _BUILD["answers"]
_STATE = _BUILD["state"]
_RECORD_KEYS = frozenset(a.name for a in attrs.fields(Record)) | {"digest"}
_SCHEMA_MEMBER = f',"schema":{RECORD_SCHEMA}'
_STATE_KEY = ',"state":'
_DECISION = RecordKind.DECISION.value
_PREVIOUS_KEY = ',"previous":'
_SCAN = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
"""``(value, end)`` of the JSON value at an index (the C scanner of :mod:`json`)."""


def _fast_decision(
    index: int,
    body: str,
    config: Config,
    chain: dict[str, tuple[str, AccountState]],
    keep: bool,
) -> Decision | bool:
    """The replayed decision of an intact schema-3 decision record ``body`` when ``step``
    reproduces it (``True`` instead when not ``keep``: no :class:`Decision` is built);
    ``False`` for anything else (the caller then decodes it whole).

    It builds what the trusted record decoder would (every field that is not a scalar,
    empty arrays skipped), and compares as :func:`_replay_one` does, by value. ``chain``
    holds each wallet's last recorded state, as text and as built: a ``previous`` of the
    very same bytes is that object (the trusted builder gives equal objects for equal
    bytes); any other previous is built from its own text. The spans are exact on the
    canonical text: ``,"version":`` is the last member but the wallet and the digest (whose
    strings cannot hold ``,"``); the last ``,"state":`` before it is the record's own if the
    JSON value read after it ends right there (a key nested in the state would be followed
    by a value ending before the state's closing brace); ``,"schema":3`` must precede it,
    and the previous state — a complete JSON value — must end there, right after
    ``,"previous":`` (a complete value cannot end with a nested value's closing bracket).
    """
    if not intact(body):
        return False
    try:
        data = _loads(body)
        if (
            type(data) is not dict
            or data.keys() != _RECORD_KEYS
            or data["schema"] != RECORD_SCHEMA
            or data["kind"] != "decision"
            or data["health"] is None
        ):
            return False
        wallet, now = data["wallet"], data["now"]
        for name, build in (("events", _EVENTS), ("pending", _PENDING), ("answers", _ANSWERS)):
            if data[name]:
                build(data[name])
        health = typing.cast(Health, _HEALTH(data["health"]))
        orders = typing.cast("tuple[OpenOrder, ...]", _ORDERS(data["orders"]))
        recorded = data["state"]
        recorded_state = None if recorded is None else typing.cast(AccountState, _STATE(recorded))
        recorded_commands = data["commands"]
        previous: AccountState | None = None
        end = body.rfind(',"version":')
        key = body.rfind(_STATE_KEY, 0, end)
        stop = key - len(_SCHEMA_MEMBER)
        exact = (
            stop > 0
            and body.startswith(_SCHEMA_MEMBER, stop)
            and _SCAN(body, key + len(_STATE_KEY))[1] == end
        )
        if exact:
            held = chain.get(wallet)
            if held is not None:
                text, state = held
                start = stop - len(text)
                if body.startswith(text, start) and body.startswith(
                    _PREVIOUS_KEY, start - len(_PREVIOUS_KEY)
                ):
                    previous = state
            if recorded_state is not None:
                chain[wallet] = (body[key + len(_STATE_KEY) : end], recorded_state)
        if previous is None and data["previous"] is not None:
            previous = typing.cast(AccountState, _STATE(data["previous"]))
        state, commands = step(previous, health, orders, now, config)
        if state != recorded_state:
            return False
        if (commands or recorded_commands) and commands != _COMMANDS(recorded_commands):
            return False
    except Exception:  # the whole record decides (and raises what it would)
        return False
    if not keep:
        return True
    return Decision(
        index=index,
        wallet=wallet,
        now=now,
        previous=previous,
        state=state,
        commands=commands,
        health=health,
        orders=orders,
        config=config,
    )


def _configs(recording: Recording, config: Config | None) -> dict[int, Config]:
    """The config each header position (``-1``: none) replays with."""
    configs = {-1: config if config is not None else Config()}
    for position, header in enumerate(recording.headers):
        configs[position] = _header_config(header, config)
    return configs


def _header_config(header: RecordingHeader, config: Config | None) -> Config:
    """The config the records after ``header`` replay with: ``config`` if given, else the
    header's own, else the defaults."""
    if config is not None:
        return config
    return header.config or Config()


def _config_notes(recording: Recording, config: Config | None) -> tuple[str, ...]:
    notes: list[str] = []
    headers_used = sorted(set(recording.header_index))
    for position in headers_used:
        header = None if position < 0 else recording.headers[position]
        where = (
            "records before any header"
            if header is None
            else f"run started at {header.started}"
            if header.started is not None
            else f"header {position + 1}"
        )
        recorded = None if header is None else header.config
        if recorded is None:
            why = "" if header is None or not header.config_note else f" ({header.config_note})"
            if config is None:
                notes.append(
                    f"{where}: the recording carries no config{why}; replayed with the "
                    "defaults (pass the run's config)"
                )
            else:
                notes.append(
                    f"{where}: the recording carries no config{why}; replayed with the config given"
                )
            continue
        if config is None:
            continue
        differences = config_differences(recorded, config)
        if differences:
            shown = "; ".join(
                f"{name}: recorded {_text(old)}, given {_text(new)}"
                for name, old, new in differences
            )
            notes.append(f"{where}: the config given differs from the recorded one: {shown}")
    return tuple(notes)


def redecide(record: Record, config: Config) -> Mismatch | None:
    """Decide the recorded decision ``record`` again under ``config``: ``None`` when
    ``step`` returns the recorded state and commands, else what differs (``field``:
    ``state.…``, ``commands…``; ``health`` for a record without one; ``step`` when it
    raised). A shadow watcher compares each live decision it reads from the store with
    it (``docs/shell.md``, "Shadow mode")."""
    result = _replay_one(0, record, config)
    return result if isinstance(result, Mismatch) else result[1]


def _replay_one(
    index: int, record: Record, config: Config
) -> tuple[Decision, Mismatch | None] | Mismatch:
    def mismatch(field: str, recorded: str, replayed: str, what: str) -> Mismatch:
        return Mismatch(
            index=index,
            wallet=record.wallet,
            now=record.now,
            field=field,
            recorded=recorded,
            replayed=replayed,
            what=what,
        )

    if record.health is None:
        return mismatch("health", "", "", "the record holds no Health")
    try:
        state, commands = step(record.previous, record.health, record.orders, record.now, config)
    except LiqcoreError as error:
        what = f"step raised {type(error).__name__}: {error}"
        return mismatch("step", "", what, what)
    decision = Decision(
        index=index,
        wallet=record.wallet,
        now=record.now,
        previous=record.previous,
        state=state,
        commands=commands,
        health=record.health,
        orders=record.orders,
        config=config,
    )
    if state == record.state and commands == record.commands:
        return decision, None
    if state != record.state:
        field, left, right, what = _state_difference(record.state, state)
    else:
        field, left, right, what = _commands_difference(record.commands, commands)
    problems = [what]
    if state != record.state and commands != record.commands:
        problems.append(_commands_difference(record.commands, commands)[3])
    return decision, mismatch(field, left, right, "; ".join(problems))


_SHOWN = 160
"""How much of a recorded and a replayed value a mismatch line shows."""


def _text(value: object) -> str:
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(codec.unstructure(value), sort_keys=True, separators=(",", ":"))
        except (InvalidInput, TypeError):
            text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _state_difference(recorded: object, replayed: object) -> tuple[str, str, str, str]:
    if recorded is None:
        return "state", "", _text(replayed), "the record holds no new state"
    left, right = codec.unstructure(recorded), codec.unstructure(replayed)
    if not isinstance(left, dict) or not isinstance(right, dict):
        return (
            "state",
            _text(left),
            _text(right),
            f"state: recorded {_text(left)}, replayed {_text(right)}",
        )
    found = _leaf_differences(left, right, "") or [("", left, right)]
    shown = "; ".join(f"{key}: recorded {_text(a)}, replayed {_text(b)}" for key, a, b in found)
    first, a, b = found[0]
    return f"state.{first}", _text(a), _text(b), f"state differs in {shown}"


def _leaf_differences(left: object, right: object, path: str) -> list[tuple[str, object, object]]:
    """``(dotted path, left, right)`` of every differing leaf of two JSON values (objects
    are descended into when both sides are objects of the same ``type`` tag)."""
    if (
        isinstance(left, dict)
        and isinstance(right, dict)
        and left.get(codec.TAG_KEY) == right.get(codec.TAG_KEY)
    ):
        found: list[tuple[str, object, object]] = []
        for key in sorted(set(left) | set(right)):
            if left.get(key) != right.get(key):
                where = f"{path}.{key}" if path else str(key)
                found.extend(_leaf_differences(left.get(key), right.get(key), where))
        return found
    return [] if left == right else [(path, left, right)]


def _commands_difference(
    recorded: tuple[object, ...], replayed: tuple[object, ...]
) -> tuple[str, str, str, str]:
    if len(recorded) != len(replayed):
        return (
            "commands",
            _kinds(recorded),
            _kinds(replayed),
            f"{len(recorded)} commands recorded ({_kinds(recorded)}), "
            f"{len(replayed)} replayed ({_kinds(replayed)})",
        )
    for i, (a, b) in enumerate(zip(recorded, replayed, strict=True)):
        if a == b:
            continue
        if type(a) is not type(b):
            return (
                f"commands[{i}]",
                type(a).__name__,
                type(b).__name__,
                f"command {i} is a {type(b).__name__}, was a {type(a).__name__}",
            )
        left, right = codec.unstructure(a), codec.unstructure(b)
        if isinstance(left, dict) and isinstance(right, dict):
            found = _leaf_differences(left, right, "") or [("", left, right)]
            shown = "; ".join(
                f"{key}: recorded {_text(x)}, replayed {_text(y)}" for key, x, y in found[:4]
            )
            key, x, y = found[0]
            return (
                f"commands[{i}].{key}",
                _text(x),
                _text(y),
                f"command {i} ({type(a).__name__}) differs in {shown}",
            )
        return (
            f"commands[{i}]",
            _text(a),
            _text(b),
            f"command {i} ({type(a).__name__}): recorded {_text(a)}, replayed {_text(b)}",
        )
    return "commands", "", "", "commands differ"


def _kinds(commands: tuple[object, ...]) -> str:
    return ", ".join(type(command).__name__ for command in commands) or "none"


def diff(trace: Trace, other: Recording | Trace) -> list[Mismatch]:
    """Where ``trace`` differs from ``other``: a recording (the decisions recorded at the
    same positions) or another trace (decision by decision, matched by record index)."""
    mismatches: list[Mismatch] = []
    if isinstance(other, Recording):
        for decision in trace.decisions:
            record = other.records[decision.index] if decision.index < len(other) else None
            if record is None or record.kind is not RecordKind.DECISION:
                mismatches.append(
                    Mismatch(
                        index=decision.index,
                        wallet=decision.wallet,
                        now=decision.now,
                        field="record",
                        recorded="",
                        replayed="",
                        what="no decision recorded at this position",
                    )
                )
                continue
            found = _compare(
                decision.index,
                record.wallet,
                record.now,
                record.state,
                record.commands,
                decision.state,
                decision.commands,
            )
            if found is not None:
                mismatches.append(found)
        return mismatches
    by_index = {decision.index: decision for decision in other.decisions}
    for decision in trace.decisions:
        theirs = by_index.get(decision.index)
        if theirs is None:
            continue
        found = _compare(
            decision.index,
            decision.wallet,
            decision.now,
            theirs.state,
            theirs.commands,
            decision.state,
            decision.commands,
        )
        if found is not None:
            mismatches.append(found)
    return mismatches


def _compare(  # noqa: PLR0917
    index: int,
    wallet: str,
    now: int,
    left_state: object,
    left_commands: tuple[Any, ...],
    right_state: object,
    right_commands: tuple[Any, ...],
) -> Mismatch | None:
    if left_state == right_state and left_commands == right_commands:
        return None
    if left_state != right_state:
        field, left, right, what = _state_difference(left_state, right_state)
    else:
        field, left, right, what = _commands_difference(left_commands, right_commands)
    return Mismatch(
        index=index, wallet=wallet, now=now, field=field, recorded=left, replayed=right, what=what
    )


# --------------------------------------------------------------------------- what-if


@attrs.frozen(kw_only=True)
class WalletSummary:
    """What one wallet's decisions asked for: orders submitted, the bonus offered over the
    reference price (``theo``, else ``mid``) in money, time in pre-liquidation (ms),
    escalations (full auctions requested), auctions (full auctions the account was seen
    in), and the final phase."""

    wallet: str
    decisions: int = 0
    orders: int = 0
    contracts: Decimal = Decimal(0)
    bonus_offered: Decimal = Decimal(0)
    pre_liquidation_ms: int = 0
    escalations: int = 0
    auctions: int = 0
    final_phase: str = "healthy"


@attrs.frozen(kw_only=True)
class Summary:
    """Per-wallet :class:`WalletSummary` and their total."""

    wallets: Mapping[str, WalletSummary]
    total: WalletSummary


Steps: TypeAlias = list[tuple[Record, AccountState | None, AccountState, tuple[Any, ...]]]
"""``(record, previous, state, commands)`` of decisions in order."""


def summarize_decisions(
    steps: Iterable[tuple[Record, AccountState | None, AccountState, tuple[Any, ...]]],
) -> Summary:
    """A :class:`Summary` of ``(record, previous, state, commands)`` decisions in order."""
    acc: dict[str, dict[str, Any]] = {}
    for record, previous, state, commands in steps:
        entry = acc.setdefault(
            record.wallet,
            {
                "decisions": 0,
                "orders": 0,
                "contracts": Decimal(0),
                "bonus": Decimal(0),
                "pre_ms": 0,
                "escalations": 0,
                "auctions": 0,
                "final": "healthy",
                "pre_since": None,
                "last_phase": None,
            },
        )
        entry["decisions"] += 1
        before = previous.phase if previous is not None else None
        after = state.phase
        if type(before) is PreLiquidation and entry["pre_since"] is None:
            entry["pre_since"] = before.entered_at
        if type(after) is PreLiquidation and entry["pre_since"] is None:
            entry["pre_since"] = after.entered_at
        if type(after) is not PreLiquidation and entry["pre_since"] is not None:
            entry["pre_ms"] += max(0, record.now - entry["pre_since"])
            entry["pre_since"] = None
        if type(before) is InLiquidation and entry["last_phase"] is not InLiquidation:
            entry["auctions"] += 1
        entry["last_phase"] = type(after)
        for command in commands:
            if type(command) is SubmitOrder:
                entry["orders"] += 1
                entry["contracts"] += command.size
                quote = record.health.quotes.get(command.symbol) if record.health else None
                reference = None if quote is None else (quote.theo or quote.mid)
                if reference is not None and reference > 0:
                    entry["bonus"] += (command.price - reference) * command.size
            elif type(command) is StartAuction:
                entry["escalations"] += 1
        entry["final"] = phase_tag(after)
        entry["last_now"] = record.now
    wallets: dict[str, WalletSummary] = {}
    for wallet, entry in sorted(acc.items()):
        pre_ms = entry["pre_ms"]
        if entry["pre_since"] is not None:
            pre_ms += max(0, entry["last_now"] - entry["pre_since"])
        wallets[wallet] = WalletSummary(
            wallet=wallet,
            decisions=entry["decisions"],
            orders=entry["orders"],
            contracts=entry["contracts"],
            bonus_offered=entry["bonus"],
            pre_liquidation_ms=pre_ms,
            escalations=entry["escalations"],
            auctions=entry["auctions"],
            final_phase=entry["final"],
        )
    total = WalletSummary(
        wallet="total",
        decisions=sum(w.decisions for w in wallets.values()),
        orders=sum(w.orders for w in wallets.values()),
        contracts=sum((w.contracts for w in wallets.values()), Decimal(0)),
        bonus_offered=sum((w.bonus_offered for w in wallets.values()), Decimal(0)),
        pre_liquidation_ms=sum(w.pre_liquidation_ms for w in wallets.values()),
        escalations=sum(w.escalations for w in wallets.values()),
        auctions=sum(w.auctions for w in wallets.values()),
        final_phase="",
    )
    return Summary(wallets=wallets, total=total)


@attrs.frozen(kw_only=True, eq=False)
class Comparison:
    """A what-if against the recorded run: the overrides, the summaries of both, and per
    wallet the first decision where the what-if asked for something else."""

    overrides: Mapping[str, object]
    baseline: Summary
    what_if: Summary
    divergences: Mapping[str, Mismatch]

    def render(self) -> str:
        """The comparison as a plain-text table (total, then each wallet that changed)."""
        shown = ", ".join(f"{k}={_text(v)}" for k, v in self.overrides.items()) or "no change"
        lines = [f"what if {shown}:"]
        header = (
            f"  {'':<14} {'orders':>13} {'bonus offered':>27} {'pre-liq s':>17} "
            f"{'escalations':>11} {'auctions':>9}"
        )
        lines.append(header)

        def row(name: str, a: WalletSummary, b: WalletSummary) -> str:
            return (
                f"  {name:<14} {a.orders:>6}→{b.orders:<6} "
                f"{_money(a.bonus_offered):>13}→{_money(b.bonus_offered):<13} "
                f"{a.pre_liquidation_ms / 1000:>8.0f}→{b.pre_liquidation_ms / 1000:<8.0f} "
                f"{a.escalations:>5}→{b.escalations:<5} {a.auctions:>4}→{b.auctions:<4}"
            )

        lines.append(row("total", self.baseline.total, self.what_if.total))
        for wallet, base in self.baseline.wallets.items():
            other = self.what_if.wallets.get(wallet, base)
            if attrs.evolve(other, final_phase=base.final_phase) != base or (
                other.final_phase != base.final_phase
            ):
                lines.append(row(wallet[:14], base, other))
        lines.append(f"decisions that differ first: {len(self.divergences)} wallets")
        lines.extend(f"  {mismatch}" for mismatch in list(self.divergences.values())[:10])
        return "\n".join(lines)

    def to_frame(self) -> Any:
        """Per wallet and in total, the recorded and the what-if figures side by side as a
        pandas DataFrame (the ``notebook`` extra)."""
        from liqshell.analysis.frames import comparison_frame

        return comparison_frame(self)


def _money(value: Decimal) -> str:
    return f"{value:,.2f}"


def baseline(recording: Recording) -> Summary:
    """The :class:`Summary` of the recorded run."""
    return summarize_decisions(
        (record, record.previous, record.state, record.commands)
        for _, record in recording.decisions()
        if record.state is not None
    )


def run_what_if(
    recording: Recording, config_for: Callable[[int], Config]
) -> tuple[Steps, dict[str, Mismatch]]:
    """Re-decide the recording with its own state carried per wallet (see the module
    docs): the decisions, and per wallet the first one that differs from the record."""
    states: dict[str, AccountState | None] = {}
    steps: Steps = []
    first: dict[str, Mismatch] = {}
    for index, record in enumerate(recording.records):
        wallet = record.wallet
        if record.kind is RecordKind.DECISION:
            if record.health is None:
                continue
            previous = states.get(wallet, record.previous)
            config = config_for(recording.header_index[index])
            try:
                state, commands = step(previous, record.health, record.orders, record.now, config)
            except LiqcoreError:
                continue
            states[wallet] = state
            steps.append((record, previous, state, commands))
            if wallet not in first:
                found = _compare(
                    index, wallet, record.now, record.state, record.commands, state, commands
                )
                if found is not None:
                    first[wallet] = found
        elif record.kind is not RecordKind.RESTART:
            current = states.get(wallet)
            if current is None:
                if wallet in states or record.state is None:
                    continue
                states[wallet] = record.state
                continue
            for event in record.events:
                current = apply(current, event, record.now)
            states[wallet] = current
    return steps, first


def what_if(
    recording: Recording, config: Config | None = None, *, client: Any = None, **overrides: object
) -> Comparison:
    """Re-run ``recording`` with ``overrides`` of its recorded config (or with ``config``,
    and overrides on top) and compare with the recorded run; see the module docs for what a
    recording can and cannot answer. ``what_if(recording, partial_bonus_max_bps=300)``.
    ``client``: a ``dask.distributed.Client`` to run on, partitioned by wallet."""
    if client is not None:
        from liqshell.analysis.distributed import what_if_on

        comparison: Comparison = what_if_on(client, recording, config, overrides)
        return comparison
    configs = _configs(recording, config)
    resolved = {key: with_overrides(value, **overrides) for key, value in configs.items()}
    steps, first = run_what_if(recording, resolved.__getitem__)
    return Comparison(
        overrides=dict(overrides),
        baseline=baseline(recording),
        what_if=summarize_decisions(steps),
        divergences=dict(sorted(first.items())),
    )


def sweep(
    recording: Recording | None,
    grid: Mapping[str, Sequence[object]],
    *,
    simulate: bool = False,
    params: Any = None,
    config: Config | None = None,
    progress: bool | IO[str] | None = None,
    client: Any = None,
) -> list[tuple[dict[str, object], Summary]]:
    """Every combination of ``grid`` (``{"partial_bonus_max_bps": [300, 1000], ...}``) as
    a what-if of ``recording``: ``[(point, summary), ...]`` in grid order.

    ``simulate=True`` runs each point against :mod:`liqshell.sim` instead (closed loop:
    the simulated market and book react to the orders), with ``params`` (a
    :class:`~liqshell.sim.SimParams`, default the simulator's defaults) and the point
    applied to ``config`` (default: the recording's config, if any). A progress bar goes
    to stderr (or the stream given) when there are more than 4 points, unless
    ``progress=False``. ``client``: a ``dask.distributed.Client`` to run the points on
    (one task per point; not with ``simulate=True``).
    """
    names = list(grid)
    points = [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]
    stream: IO[str] | None
    if progress is False or (progress is None and len(points) <= 4):
        stream = None
    elif progress is None or progress is True:
        stream = sys.stderr
    else:
        stream = progress
    if client is not None and not simulate:
        from liqshell.analysis.distributed import sweep_on

        if recording is None:
            raise InvalidInput("sweep needs a recording unless simulate=True")
        distributed: list[tuple[dict[str, object], Summary]] = sweep_on(
            client, recording, config, points
        )
        return distributed
    results: list[tuple[dict[str, object], Summary]] = []
    for done, point in enumerate(points, start=1):
        if simulate:
            results.append((point, _simulate_point(recording, point, params, config)))
        else:
            if recording is None:
                raise InvalidInput("sweep needs a recording unless simulate=True")
            configs = _configs(recording, config)
            resolved = {key: with_overrides(value, **point) for key, value in configs.items()}
            steps, _ = run_what_if(recording, resolved.__getitem__)
            results.append((point, summarize_decisions(steps)))
        if stream is not None:
            _bar(stream, done, len(points))
    return results


def _bar(stream: IO[str], done: int, total: int) -> None:
    width = 30
    filled = width * done // total
    stream.write(f"\rsweep [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done == total:
        stream.write("\n")
    stream.flush()


def _simulate_point(
    recording: Recording | None, point: Mapping[str, object], params: Any, config: Config | None
) -> Summary:
    import tempfile

    from liqshell.sim import SimParams

    base = config or (recording.config if recording is not None else None) or Config()
    used = with_overrides(base, **point)
    sim_params = params if params is not None else SimParams()
    with tempfile.TemporaryDirectory(prefix="liqshell-sweep-") as folder:
        return baseline(simulated(sim_params, config=used, path=Path(folder) / "sim.sqlite"))


def simulated(
    params: Any = None, *, config: Config | None = None, path: str | os.PathLike[str] | None = None
) -> Recording:
    """Run :mod:`liqshell.sim` with ``params`` (a :class:`~liqshell.sim.SimParams`) and
    ``config``, and load its recording — the SQLite store at ``path`` (a temporary file when
    ``None``). Runs in a thread of its own, so it works in a notebook, whose kernel already
    runs an event loop."""
    import tempfile
    import threading

    from liqshell.sim import SimParams, simulate

    sim_params = params if params is not None else SimParams()
    failure: list[BaseException] = []

    def run(store: Path) -> None:
        try:
            asyncio.run(simulate(sim_params, config=config or Config(), store=store))
        except BaseException as error:
            failure.append(error)

    def in_thread(store: Path) -> Recording:
        worker = threading.Thread(target=run, args=(store,), name="liqshell-simulate")
        worker.start()
        worker.join()
        if failure:
            raise failure[0]
        return load(store)

    if path is not None:
        return in_thread(Path(path))
    with tempfile.TemporaryDirectory(prefix="liqshell-sim-") as folder:
        return in_thread(Path(folder) / "sim.sqlite")


def counts(records: Iterable[Record]) -> collections.Counter[str]:
    """Records by kind."""
    return collections.Counter(record.kind.value for record in records)


# --------------------------------------------------------------------------- reports


@attrs.frozen(kw_only=True)
class RecordingReport:
    """What :func:`summarize` finds in a recording."""

    records: int
    by_kind: dict[str, int]
    wallets: int
    first_now: int | None
    last_now: int | None
    executed: int
    shadow: int
    commands: dict[str, int]
    alerts: dict[str, int]
    transitions: dict[str, int]
    feed_events: dict[str, int]
    final_phases: dict[str, int]
    polls: int = 0
    """``POLL`` summaries (a compact recording, ``record = "changes"``)."""
    noops: int = 0
    """Healthy no-op decisions those summaries count (not recorded one by one)."""
    most_stepped: int = 0
    """The most wallets one summarized poll stepped."""


def poll_counts(note: str) -> dict[str, int]:
    """The counts of a ``POLL`` record's note (``stepped=8 noops=5 …``; the digest left out)."""
    found: dict[str, int] = {}
    for part in note.split():
        key, _, value = part.partition("=")
        if value.isdigit():
            found[key] = int(value)
    return found


def summarize(records: Iterable[Record]) -> RecordingReport:
    """Counts of a recording: records by kind, commands, alerts, phase transitions, …"""
    count = 0
    by_kind: collections.Counter[str] = collections.Counter()
    commands: collections.Counter[str] = collections.Counter()
    alerts: collections.Counter[str] = collections.Counter()
    transitions: collections.Counter[str] = collections.Counter()
    feed: collections.Counter[str] = collections.Counter()
    final: dict[str, str] = {}
    wallets: set[str] = set()
    first: int | None = None
    last: int | None = None
    executed = shadow = 0
    polls = noops = most_stepped = 0
    for record in records:
        count += 1
        by_kind[record.kind.value] += 1
        if record.kind is RecordKind.POLL:
            summary = poll_counts(record.note)
            polls += 1
            noops += summary.get("noops", 0)
            most_stepped = max(most_stepped, summary.get("stepped", 0))
        if record.wallet:
            wallets.add(record.wallet)
        first = record.now if first is None else min(first, record.now)
        last = record.now if last is None else max(last, record.now)
        if record.kind is RecordKind.DECISION:
            if record.executed:
                executed += 1
            else:
                shadow += 1
            for command in record.commands:
                commands[codec.COMMAND_TAGS[type(command)]] += 1
                code = getattr(command, "code", None)
                if code is not None:
                    alerts[code.value] += 1
            # An untracked wallet is healthy to step (and a compact recording never records
            # a healthy one before its first change).
            before = "healthy" if record.previous is None else phase_tag(record.previous.phase)
        else:
            before = None
        for event in record.events:
            if record.kind is RecordKind.FEED:
                feed[codec.EVENT_TAGS[type(event)]] += 1
        if record.state is not None:
            after = phase_tag(record.state.phase)
            if before is not None and before != after:
                transitions[f"{before} -> {after}"] += 1
            previous_final = final.get(record.wallet)
            if (
                record.kind is not RecordKind.DECISION
                and previous_final is not None
                and previous_final != after
            ):
                transitions[f"{previous_final} -> {after}"] += 1
            final[record.wallet] = after
    return RecordingReport(
        records=count,
        by_kind=dict(sorted(by_kind.items())),
        wallets=len(wallets),
        first_now=first,
        last_now=last,
        executed=executed,
        shadow=shadow,
        commands=dict(sorted(commands.items())),
        alerts=dict(sorted(alerts.items())),
        transitions=dict(sorted(transitions.items())),
        feed_events=dict(sorted(feed.items())),
        final_phases=dict(sorted(collections.Counter(final.values()).items())),
        polls=polls,
        noops=noops,
        most_stepped=most_stepped,
    )


def render_report(report: RecordingReport, path: Path) -> str:
    """A recording report as plain text."""
    span = ""
    if report.first_now is not None and report.last_now is not None:
        seconds = (report.last_now - report.first_now) / 1000
        span = f", spanning {seconds:,.1f} s"
    lines = [
        f"{path}: {report.records} records, {report.wallets} wallets{span}",
        f"decisions: {report.executed} executed, {report.shadow} shadow",
    ]
    if report.polls:
        lines.append(
            f"polls: {report.polls} summarized, up to {report.most_stepped} wallets stepped a "
            f"poll, {report.noops} healthy no-ops counted (not recorded one by one)"
        )

    def table(title: str, counts: dict[str, int]) -> None:
        lines.append(f"{title}:" + ("" if counts else " none"))
        width = max((len(k) for k in counts), default=0)
        lines.extend(f"  {key:<{width}}  {value}" for key, value in counts.items())

    table("records by kind", report.by_kind)
    table("commands", report.commands)
    table("alerts", report.alerts)
    table("phase transitions", report.transitions)
    table("feed events", report.feed_events)
    table("final phases", report.final_phases)
    return "\n".join(lines)


def version_gaps(versions: Mapping[str, set[int]], *, from_one: bool) -> dict[str, list[int]]:
    """Per wallet, the versions missing from a log that holds ``versions`` (committed
    versions are gapless in the store): the holes between the lowest and the highest, and
    below the lowest too when the log starts at version 1 (``from_one``)."""
    gaps: dict[str, list[int]] = {}
    for wallet, held in sorted(versions.items()):
        start = 1 if from_one else min(held)
        missing = [v for v in range(start, max(held) + 1) if v not in held]
        if missing:
            gaps[wallet] = missing
    return gaps


def _ranges(numbers: Sequence[int]) -> str:
    """``[3, 4, 5, 9]`` → ``"3-5, 9"``."""
    parts: list[str] = []
    start = previous = numbers[0]
    for number in [*numbers[1:], None]:
        if number is not None and number == previous + 1:
            previous = number
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if number is not None:
            start = previous = number
    return ", ".join(parts)


# --------------------------------------------------------------------------- explain


def explain(recording: Recording, wallet: str) -> list[Explanation]:
    """The reasons of every decision and event of ``wallet`` that changed something (a
    transition, a command other than a publish, an alert, an auction event), in order —
    computed by :func:`liqcore.reasons.explain` from the recorded inputs and outputs with
    the recorded config, so the same recording always tells the same story. Raises
    ``KeyError`` for a wallet the recording does not hold."""
    if wallet not in set(recording.wallets):
        raise KeyError(wallet)
    configs = _configs(recording, None)
    story: list[Explanation] = []
    last: AccountState | None = None
    quiet_since: str | None = None
    for index, record in enumerate(recording.records):
        if record.wallet != wallet:
            continue
        if record.kind is RecordKind.DECISION:
            if record.health is None or record.state is None:
                continue
            config = configs[recording.header_index[index]]
            found = explain_decision(
                record.previous,
                record.health,
                record.orders,
                record.now,
                config,
                record.state,
                record.commands,
            )
            last = record.state
            codes = {reason.code for reason in found.reasons}
            if found.transition is None and codes <= {ReasonCode.HOLDING, ReasonCode.NOT_ENTERED}:
                key = ",".join(sorted(code.value for code in codes))
                if not codes or key == quiet_since:
                    continue
                quiet_since = key
            else:
                quiet_since = None
            story.append(found)
        elif record.events and record.state is not None:
            before = record.previous or last
            if before is not None and before != record.state:
                for event in record.events:
                    found = explain_event(before, event, record.now, record.state)
                    if found.reasons:
                        story.append(found)
                        break
            last = record.state
    return story


def render_story(recording: Recording, wallet: str) -> str:
    """The account's story as text a support engineer can send to its owner."""
    story = explain(recording, wallet)
    records = [r for r in recording.records if r.wallet == wallet]
    # From the recording's start: a compact recording (record = "changes") holds no record
    # of a wallet's healthy no-op polls, but every poll observed it.
    first, final = recording.records[0], records[-1]
    states = [r.state for r in records if r.state is not None]
    mode = states[-1].margin_mode.value if states else "unknown"
    phase = phase_tag(states[-1].phase) if states else "unknown"
    lines = [
        f"wallet {wallet} ({mode} margin), observed from {_when(first.now)} to "
        f"{_when(final.now)}; final phase: {phase}",
    ]
    if not story:
        lines.append("nothing happened: the account stayed healthy")
    for item in story:
        offset = (item.now - first.now) / 1000
        head = f"{_when(item.now)} (+{offset:,.0f} s)"
        lines.append(head + (f"  {item.transition}" if item.transition else ""))
        lines.extend(f"    - {reason.text}" for reason in item.reasons)
    return "\n".join(lines)


def _when(ms: int) -> str:
    import datetime

    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
