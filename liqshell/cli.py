"""The ``liqshell`` command.

``simulate`` runs the real watcher against the simulated exchange on a virtual clock;
``run`` runs it against live adapters chosen by a configuration file; ``check-config``
validates such a file without connecting; ``replay`` re-runs every decision of a
recording through ``liqcore.step`` and reports mismatches; ``report`` summarizes a
recording; ``sim-exchange`` serves the simulated exchange over NATS (the wire
protocol's reference responder). Every expected failure — a bad configuration, an
unreachable service, a bad path — is one line on stderr and a non-zero exit status, never
a traceback (``LIQSHELL_DEBUG=1`` shows the traceback of an unexpected error).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import NoReturn, TextIO

import attrs

from liqcore import Config, __version__, codec
from liqcore.errors import LiqcoreError
from liqcore.state import phase_tag
from liqshell.adapters import ForeignFile, ServiceUnavailable
from liqshell.logs import JsonFormatter
from liqshell.ports import Record, RecordKind
from liqshell.redaction import RedactingFormatter, redact
from liqshell.settings import Settings, SettingsError, load_settings

__all__ = ["CliError", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
"""A command ran and found a problem (replay mismatches, a failed run)."""
EXIT_USAGE = 2
"""Bad arguments, configuration or paths."""

_log = logging.getLogger("liqshell.cli")


class CliError(Exception):
    """An expected failure: reported as one line; ``status`` is the exit status."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and goes through :class:`CliError`)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see '{self.prog} --help')")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, was {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, was {text!r}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer ≥ 0, was {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer ≥ 0, was {text!r}")
    return value


def _percent(text: str) -> Decimal:
    try:
        value = Decimal(text.strip().removesuffix("%"))
    except ArithmeticError:
        raise argparse.ArgumentTypeError(
            f"must be a percentage such as -15, was {text!r}"
        ) from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"must be a finite percentage, was {text!r}")
    return value


def _parser() -> _Parser:
    parser = _Parser(
        prog="liqshell",
        description="Liquidation watcher: simulate, run, check a config, replay or report.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    logs = {name: _log_options(default) for name, default in _DEFAULT_LEVELS.items()}
    commands.required = True

    sim = commands.add_parser(
        "simulate",
        parents=[logs["simulate"]],
        help="run the watcher against a simulated exchange on a virtual clock",
        description="Run the real watcher against a seeded simulated exchange (virtual time, "
        "SQLite) and print a summary. With --store, a killed run resumes where it stopped.",
    )
    sim.add_argument("--accounts", type=_positive, help="number of accounts (default 24)")
    sim.add_argument("--minutes", type=_positive, help="simulated minutes (default 6)")
    sim.add_argument(
        "--shock", type=_percent, metavar="PCT", help="market move at the shock, %% (default -15)"
    )
    sim.add_argument("--seed", type=_non_negative, help="random seed (default 1)")
    sim.add_argument("--store", metavar="PATH", help="SQLite file (resumes a run stored there)")
    sim.add_argument("--record", metavar="PATH", help="also write a JSON Lines replay log")
    sim.add_argument("--config", metavar="FILE", help="TOML file: [liqcore] and [sim] defaults")
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sim.set_defaults(handler=_simulate)

    run = commands.add_parser(
        "run", parents=[logs["run"]], help="run the watcher against live adapters"
    )
    run.add_argument("--config", metavar="FILE", required=True, help="TOML configuration")
    run.set_defaults(handler=_run)

    serve = commands.add_parser(
        "sim-exchange",
        parents=[logs["sim-exchange"]],
        help="serve the simulated exchange over NATS (the wire protocol's reference)",
        description="Run the simulated exchange ([sim], [liqcore], [exchange] speed) as a NATS "
        "service on [nats]: it answers the observation, order and auction subjects and "
        "publishes chain events, so 'liqshell run' with [exchange] source = \"nats\" can "
        "run against it. Ctrl-C or SIGTERM stops it.",
    )
    serve.add_argument("--config", metavar="FILE", required=True, help="TOML configuration")
    serve.set_defaults(handler=_sim_exchange)

    check = commands.add_parser(
        "check-config", parents=[logs["check-config"]], help="validate a configuration file"
    )
    check.add_argument("file", metavar="FILE")
    check.set_defaults(handler=_check_config)

    replay = commands.add_parser(
        "replay",
        parents=[logs["replay"]],
        help="re-run a recording's decisions through liqcore.step",
    )
    replay.add_argument("recording", metavar="RECORDING", help="JSON Lines or SQLite recording")
    replay.add_argument("--config", metavar="FILE", help="the [liqcore] the run used")
    replay.add_argument("--show", type=_non_negative, default=10, help="mismatches to print")
    replay.set_defaults(handler=_replay)

    report = commands.add_parser("report", parents=[logs["report"]], help="summarize a recording")
    report.add_argument("recording", metavar="RECORDING", help="JSON Lines or SQLite recording")
    report.set_defaults(handler=_report)
    return parser


_LEVELS = ("debug", "info", "warning", "error")
_DEFAULT_LEVELS = {
    "simulate": "error",  # the progress bar and summary are the output
    "run": "info",
    "check-config": "warning",
    "replay": "warning",
    "report": "warning",
    "sim-exchange": "info",
}


def _log_options(default: str) -> _Parser:
    """``--log-level`` and ``--log-format``, which every subcommand takes."""
    options = _Parser(add_help=False)
    options.add_argument(
        "--log-level", default=default, choices=_LEVELS, help=f"default: {default}"
    )
    options.add_argument(
        "--log-format",
        default="text",
        choices=("text", "json"),
        help="text, or json: one object per line on stderr (time, level, logger, message, "
        "wallet, phase, request_id, version, …); default: text",
    )
    return options


_LOGGERS = ("liqshell", "nats", "psycopg")
"""Ours, and those of the client libraries the adapters use (the root logger is left alone)."""


def _set_handler(handler: logging.Handler, level: str) -> None:
    """Send the loggers of :data:`_LOGGERS` to ``handler`` only: ``liqshell.*`` at ``level``,
    the client libraries at ``level`` but never below warning."""
    handler._liqshell_cli = True  # type: ignore[attr-defined]
    ours = logging.getLevelName(level.upper())
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            if getattr(old, "_liqshell_cli", False):
                logger.removeHandler(old)
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(ours if name == "liqshell" else max(ours, logging.WARNING))


def _configure_logging(level: str, stream: TextIO, form: str = "text") -> None:
    """Log ``liqshell.*`` at ``level`` (client libraries at warning or above) to ``stream``,
    as text or as one JSON object per line (``form="json"``); either way redacted."""
    handler = logging.StreamHandler(stream)
    if form == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    _set_handler(handler, level)


def _quiet_logging() -> None:
    """No log output at all (not even Python's last-resort handler)."""
    _set_handler(logging.NullHandler(), "error")


@contextlib.contextmanager
def _logging_restored() -> Iterator[None]:
    """Put the loggers :func:`_set_handler` touches back as they were (``main`` can be called
    in-process, by tests or an application, without leaving its handlers behind)."""
    saved = []
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.propagate, logger.level))
    try:
        yield
    finally:
        for logger, handlers, propagate, level in saved:
            logger.handlers[:] = handlers
            logger.propagate = propagate
            logger.setLevel(level)


# --- paths ---------------------------------------------------------------------------------


def _writable_file(path: str, option: str) -> Path:
    """A path a file can be created or opened at, or a :class:`CliError` naming it."""
    target = Path(path)
    if target.is_dir():
        raise CliError(f"{option} {path}: is a directory")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.exists():
        raise CliError(f"{option} {path}: directory {parent} does not exist")
    if not parent.is_dir():
        raise CliError(f"{option} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise CliError(f"{option} {path}: not writable")
    return target


def _ours(path: Path, option: str, kind: str) -> None:
    """An existing ``--store`` (``kind="store"``) or ``--record`` must be a file liqshell
    wrote: another program's file is refused before anything is written into it."""
    from liqshell.adapters.jsonl import check_file
    from liqshell.adapters.sqlite import check_store_file

    try:
        if kind == "store":
            check_store_file(path)
        else:
            check_file(path)
    except ForeignFile as error:
        raise CliError(f"{option} {_first_line(error)}") from None
    except sqlite3.DatabaseError as error:
        raise CliError(f"{option} {path}: cannot read it: {error}") from None


# --- simulate ------------------------------------------------------------------------------


def _simulate(args: argparse.Namespace) -> int:
    from liqshell.sim import ProgressBar, SimParams, SimStateError, render_summary, simulate
    from liqshell.sim.runner import wall_timer

    settings = load_settings(args.config) if args.config else Settings()
    overrides: dict[str, object] = {}
    for option, field in (
        ("accounts", "accounts"),
        ("minutes", "minutes"),
        ("shock", "shock_pct"),
        ("seed", "seed"),
    ):
        value = getattr(args, option)
        if value is not None:
            overrides[field] = value
    try:
        params: SimParams = attrs.evolve(settings.sim, **overrides)  # type: ignore[arg-type]
    except ValueError as error:
        raise CliError(f"simulate: {error}") from None
    store = _writable_file(args.store, "--store") if args.store else None
    if store is not None:
        _ours(store, "--store", "store")
    record = _writable_file(args.record, "--record") if args.record else None
    if record is not None:
        _ours(record, "--record", "recording")
    _configure_logging(args.log_level, sys.stderr, args.log_format)
    progress = None if args.quiet else ProgressBar(params.ticks, sys.stderr)
    elapsed = wall_timer()
    try:
        summary = asyncio.run(
            simulate(params, config=settings.config, store=store, record=record, progress=progress)
        )
    except SimStateError as error:
        raise CliError(str(error)) from None
    except sqlite3.DatabaseError as error:
        raise CliError(f"--store {args.store}: {error}") from None
    print(render_summary(summary, elapsed_s=elapsed()))
    return EXIT_OK


# --- run -----------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    from liqshell.settings import run_watcher

    settings = load_settings(args.config)
    # Quiet until everything is connected: a failure to start is one line, not log noise.
    _quiet_logging()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Unix
                loop.add_signal_handler(sig, stop.set)
        await run_watcher(
            settings,
            stop,
            on_ready=lambda _: _configure_logging(args.log_level, sys.stderr, args.log_format),
        )

    asyncio.run(main())
    return EXIT_OK


def _sim_exchange(args: argparse.Namespace) -> int:
    from liqshell.sim.responder import run_reference_exchange

    settings = load_settings(args.config)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Unix
                loop.add_signal_handler(sig, stop.set)
        await run_reference_exchange(settings, stop)

    asyncio.run(main())
    return EXIT_OK


# --- check-config --------------------------------------------------------------------------


def _check_config(args: argparse.Namespace) -> int:
    from liqshell.settings import nats_options, redacted_settings, resolve_exchange

    settings = load_settings(args.file)
    resolve_exchange(settings)  # imported and checked, never called
    nats_options(settings)  # credential and TLS files readable, certificates load
    print(f"{args.file}: ok ({describe(settings)})")
    print("# the effective configuration: file, LIQSHELL_* environment and defaults")
    print(redacted_settings(settings), end="")
    return EXIT_OK


def describe(settings: Settings) -> str:
    """A one-line description of what ``liqshell run`` would build from ``settings``."""
    store = settings.store
    parts = [
        f"store {store.kind} {store.path if store.kind == 'sqlite' else store.dsn}",
        f"record {store.record}" if store.record else "no JSON Lines log",
        f"nats {', '.join(settings.nats.servers)}" if settings.nats else "no nats",
        f"metrics {settings.metrics.host}:{settings.metrics.port}"
        if settings.metrics.enabled
        else "metrics off",
        "watcher enabled" if settings.config.enabled else "shadow mode",
        f"exchange {settings.exchange.source}" if settings.exchange.source else "no [exchange]",
    ]
    return redact(", ".join(parts))


# --- recordings ----------------------------------------------------------------------------


def _recording_path(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise CliError(f"{text}: no such file")
    if path.is_dir():
        raise CliError(f"{text}: is a directory, not a recording")
    if not os.access(path, os.R_OK):
        raise CliError(f"{text}: not readable")
    return path


def read_records(path: Path) -> Iterator[Record]:
    """The records of a JSON Lines recording or of a SQLite store's log, in order.

    Raises :class:`CliError` (one line, naming the line of a bad record).
    """
    from liqshell.adapters import read_records as adapter_records

    try:
        yield from adapter_records(path)
    except sqlite3.DatabaseError as error:
        raise CliError(f"{path}: cannot read the SQLite recording: {error}") from None
    except UnicodeDecodeError:
        raise CliError(f"{path}: not a recording (JSON Lines or SQLite expected)") from None
    except RecursionError:
        raise CliError(f"{path}: not a liqshell recording: nested too deeply") from None
    except (ValueError, LiqcoreError) as error:
        detail = _first_line(error).removeprefix(f"{path}:")
        number, colon, rest = detail.partition(": ")
        where = f"{path}: line {number}" if colon and number.isdigit() else f"{path}"
        text = rest if colon and number.isdigit() else detail.strip()
        raise CliError(f"{where}: not a liqshell recording: {text}") from None
    except OSError as error:
        raise CliError(f"{path}: cannot read: {error.strerror or error}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    message = text[0] if text else type(error).__name__
    return message if len(message) <= 300 else message[:297] + "..."


@attrs.frozen(kw_only=True)
class Mismatch:
    """A decision that ``step`` no longer reproduces."""

    index: int
    wallet: str
    now: int
    what: str


def replay_records(records: Iterator[Record], config: Config) -> tuple[int, list[Mismatch]]:
    """Re-run every ``DECISION`` record through ``step``: (decisions, mismatches)."""
    from liqcore.machine import step

    decisions = 0
    mismatches: list[Mismatch] = []
    for index, record in enumerate(records):
        if record.kind is not RecordKind.DECISION:
            continue
        decisions += 1
        if record.health is None:
            what = "the record holds no Health"
            mismatches.append(
                Mismatch(index=index, wallet=record.wallet, now=record.now, what=what)
            )
            continue
        try:
            state, commands = step(
                record.previous, record.health, record.orders, record.now, config
            )
        except LiqcoreError as error:
            what = f"step raised {type(error).__name__}: {error}"
            mismatches.append(
                Mismatch(index=index, wallet=record.wallet, now=record.now, what=what)
            )
            continue
        problems = []
        if state != record.state:
            problems.append(_state_difference(record.state, state))
        if commands != record.commands:
            problems.append(_commands_difference(record.commands, commands))
        if problems:
            mismatches.append(
                Mismatch(
                    index=index, wallet=record.wallet, now=record.now, what="; ".join(problems)
                )
            )
    return decisions, mismatches


_SHOWN = 160
"""How much of a recorded and a replayed value a mismatch line shows."""


def _shown(value: object) -> str:
    text = value if isinstance(value, str) else codec_text(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def codec_text(value: object) -> str:
    """``value`` as compact JSON in the codec's encoding (Decimals as strings)."""
    import json

    return json.dumps(codec.unstructure(value), sort_keys=True, separators=(",", ":"))


def _differences(left: Mapping[str, object], right: Mapping[str, object]) -> str:
    keys = sorted(k for k in set(left) | set(right) if left.get(k) != right.get(k))
    return "; ".join(
        f"{key}: recorded {_shown(left.get(key))}, replayed {_shown(right.get(key))}"
        for key in keys
    )


def _state_difference(recorded: object, replayed: object) -> str:
    if recorded is None:
        return "the record holds no new state"
    left = codec.unstructure(recorded)
    right = codec.unstructure(replayed)
    if not isinstance(left, dict) or not isinstance(right, dict):
        return f"state: recorded {_shown(left)}, replayed {_shown(right)}"
    return f"state differs in {_differences(left, right)}"


def _commands_difference(recorded: tuple[object, ...], replayed: tuple[object, ...]) -> str:
    if len(recorded) != len(replayed):
        return (
            f"{len(recorded)} commands recorded ({_kinds(recorded)}), "
            f"{len(replayed)} replayed ({_kinds(replayed)})"
        )
    for i, (a, b) in enumerate(zip(recorded, replayed, strict=True)):
        if a == b:
            continue
        if type(a) is not type(b):
            return f"command {i} is a {type(b).__name__}, was a {type(a).__name__}"
        left, right = codec.unstructure(a), codec.unstructure(b)
        if isinstance(left, dict) and isinstance(right, dict):
            return f"command {i} ({type(a).__name__}) differs in {_differences(left, right)}"
        return f"command {i} ({type(a).__name__}): recorded {_shown(a)}, replayed {_shown(b)}"
    return "commands differ"


def _kinds(commands: tuple[object, ...]) -> str:
    return ", ".join(type(command).__name__ for command in commands) or "none"


class _Tracked:
    """An iterator of records that counts them and collects, per wallet, the versions of
    the records committed with a state."""

    def __init__(self, records: Iterator[Record]) -> None:
        self._records = records
        self.count = 0
        self.versions: dict[str, set[int]] = {}

    def __iter__(self) -> Iterator[Record]:
        for record in self._records:
            self.count += 1
            if record.commits_version:
                self.versions.setdefault(record.wallet, set()).add(record.version)
            yield record


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


def _starts_at_one(path: Path) -> bool:
    """Whether the log at ``path`` holds every wallet's history from version 1: a store's
    log, or a recording with a header (its recorder is completed from the store)."""
    from liqshell.adapters import SQLITE_MAGIC
    from liqshell.adapters.jsonl import read_header

    with path.open("rb") as handle:
        if handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC:
            return True
    return read_header(path) is not None


def _replay(args: argparse.Namespace) -> int:
    path = _recording_path(args.recording)
    config = load_settings(args.config).config if args.config else Config()
    tracked = _Tracked(read_records(path))
    decisions, mismatches = replay_records(iter(tracked), config)
    if tracked.count == 0:
        raise CliError(f"{path}: no records (an empty recording, or only a torn line)")
    gaps = version_gaps(tracked.versions, from_one=_starts_at_one(path))
    for mismatch in mismatches[: args.show]:
        print(
            f"mismatch: record {mismatch.index} wallet {mismatch.wallet} now {mismatch.now}: "
            f"{mismatch.what}"
        )
    for wallet, missing in list(gaps.items())[: args.show]:
        print(f"gap: wallet {wallet}: versions {_ranges(missing)} missing from the log")
    summary = f"replayed {decisions} decisions from {path}: {len(mismatches)} mismatches"
    if gaps:
        summary += f", {len(gaps)} wallets with versions missing (the log is incomplete)"
    print(summary)
    if decisions == 0:
        print(f"liqshell: warning: {path} holds no decision records", file=sys.stderr)
    return EXIT_FAILURE if mismatches or gaps else EXIT_OK


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


def summarize(records: Iterator[Record]) -> RecordingReport:
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
    for record in records:
        count += 1
        by_kind[record.kind.value] += 1
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
            before = "untracked" if record.previous is None else phase_tag(record.previous.phase)
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


def _report(args: argparse.Namespace) -> int:
    path = _recording_path(args.recording)
    report = summarize(read_records(path))
    print(render_report(report, path))
    return EXIT_OK


# --- entry point ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``liqshell`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit
    status."""
    try:
        args = _parser().parse_args(argv)
        with _logging_restored():
            if args.command in ("check-config", "replay", "report", "sim-exchange"):
                _configure_logging(args.log_level, sys.stderr, args.log_format)
            status: int = args.handler(args)
    except CliError as error:
        return _fail(str(error), error.status)
    except SettingsError as error:
        return _fail(str(error), EXIT_USAGE)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:  # the reader went away (``liqshell report … | head``)
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except ForeignFile as error:
        return _fail(_first_line(error), EXIT_USAGE)
    except ServiceUnavailable as error:
        return _fail(f"service unavailable: {_first_line(error)}", EXIT_FAILURE)
    except Exception as error:
        if os.environ.get("LIQSHELL_DEBUG"):
            raise
        return _fail(f"{type(error).__name__}: {_first_line(error)}", EXIT_FAILURE)
    return status


def _fail(message: str, status: int) -> int:
    print(f"liqshell: error: {redact(message)}", file=sys.stderr)
    return status
