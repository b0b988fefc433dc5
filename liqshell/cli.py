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
import contextlib
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

import attrs

from liqcore import Config, __version__
from liqcore.errors import LiqcoreError
from liqshell.adapters import ForeignFile, ServiceUnavailable
from liqshell.logs import JsonFormatter, fields
from liqshell.redaction import RedactingFormatter, redact
from liqshell.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from liqshell.analysis import Recording

__all__ = ["CliError", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
"""A command ran and found a problem (replay mismatches, a failed run)."""
EXIT_USAGE = 2
"""Bad arguments, configuration or paths."""

_log = logging.getLogger("liqshell.cli")
"""At debug, what a command read (the read-only commands log nothing else)."""


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
    sim.add_argument(
        "--record-mode",
        choices=("changes", "all"),
        default="changes",
        help='"changes" (default): healthy no-ops only counted per poll; "all": every decision',
    )
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
    replay.add_argument(
        "--config",
        metavar="FILE",
        help="what-if: replay with this file's [liqcore] instead of the recorded config",
    )
    replay.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        type=_assignment,
        help="what-if: replay with a Config field changed (repeatable), "
        "e.g. --set partial_bonus_max_bps=300",
    )
    replay.add_argument("--show", type=_non_negative, default=10, help="mismatches to print")
    replay.set_defaults(handler=_replay)

    explain = commands.add_parser(
        "explain",
        parents=[logs["explain"]],
        help="tell one account's story: why each transition and command",
    )
    explain.add_argument("recording", metavar="RECORDING", help="JSON Lines or SQLite recording")
    explain.add_argument("--wallet", required=True, metavar="W", help="the account")
    explain.set_defaults(handler=_explain)

    calibrate = commands.add_parser(
        "calibrate",
        parents=[logs["calibrate"]],
        help="compare the margin model with a recording's Health and suggest parameters",
        description="Value every recorded portfolio with the margin model the run was "
        "configured with (or --config's), print per margin mode the distribution of the "
        "relative gaps to the exchange's equity and mm_required, and suggest "
        "StandardMargin / PortfolioMargin parameters that match the exchange's engine.",
    )
    calibrate.add_argument("recording", metavar="RECORDING", help="JSON Lines or SQLite recording")
    calibrate.add_argument(
        "--config", metavar="FILE", help="compare with this file's [liqcore] margin models"
    )
    calibrate.add_argument(
        "--no-fit", action="store_true", help="only the gaps, no suggested parameters"
    )
    calibrate.set_defaults(handler=_calibrate)

    report = commands.add_parser("report", parents=[logs["report"]], help="summarize a recording")
    report.add_argument("recording", metavar="RECORDING", help="JSON Lines or SQLite recording")
    report.add_argument(
        "--html",
        metavar="FILE",
        help="also write a self-contained HTML report with plots (the notebook extra)",
    )
    report.set_defaults(handler=_report)
    return parser


_LEVELS = ("debug", "info", "warning", "error")
_DEFAULT_LEVELS = {
    "simulate": "error",  # the progress bar and summary are the output
    "run": "info",
    "check-config": "warning",
    "replay": "warning",
    "report": "warning",
    "explain": "warning",
    "calibrate": "warning",
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
            simulate(
                params,
                config=settings.config,
                store=store,
                record=record,
                progress=progress,
                record_mode=args.record_mode,
            )
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
    factory = resolve_exchange(settings)  # imported and checked, never called
    nats_options(settings)  # credential and TLS files readable, certificates load
    _log.debug(
        "%s: settings read; exchange %s checked without calling it",
        args.file,
        settings.exchange.source if factory is None else f"factory {factory!r}",
    )
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


def _load(text: str) -> Recording:
    """The recording at ``text`` (a path, or a PostgreSQL DSN), or a one-line CliError."""
    from liqshell.analysis import RecordingError, is_dsn, load

    if not is_dsn(text):
        _recording_path(text)
    try:
        recording = load(text)
    except RecordingError as error:
        raise CliError(str(error)) from None
    _log.debug(
        "read %s: %d records of %d wallets, %d headers%s",
        redact(text),
        len(recording.records),
        len(recording.wallets),
        len(recording.headers),
        f", {recording.pruned.records} pruned" if recording.pruned.records else "",
        extra=fields(records=len(recording.records)),
    )
    return recording


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    message = text[0] if text else type(error).__name__
    return message if len(message) <= 300 else message[:297] + "..."


def _assignment(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name.strip():
        raise argparse.ArgumentTypeError(f"must be key=value, was {text!r}")
    return name.strip(), value.strip()


def _replay_config(args: argparse.Namespace, recorded: Config | None) -> Config | None:
    """The config a what-if replay uses (``None``: the recorded one): ``--config``'s
    ``[liqcore]``, or the recorded config (else the defaults), with ``--set`` applied."""
    from liqshell.analysis import with_overrides

    if args.config is None and not args.set:
        return None
    base = load_settings(args.config).config if args.config else None
    if base is None:
        base = recorded or Config()
    try:
        return with_overrides(base, **dict(args.set or ()))
    except LiqcoreError as error:
        raise CliError(f"--set: {_first_line(error)}") from None


def _replay(args: argparse.Namespace) -> int:
    from liqshell.analysis import replay, version_gaps

    recording = _load(args.recording)
    config = _replay_config(args, recording.config)
    trace = replay(recording, config, keep=False)
    if not recording.records:
        raise CliError(f"{args.recording}: no records (only a header)")
    versions: dict[str, set[int]] = {}
    for record in recording.records:
        if record.commits_version:
            versions.setdefault(record.wallet, set()).add(record.version)
    # A pruned log starts after each wallet's first versions: only holes count as gaps.
    gaps = version_gaps(versions, from_one=bool(recording.headers) and not recording.pruned.records)
    for note in trace.config_notes:
        print(f"config: {note}")
    if recording.pruned.records:
        print(
            f"pruned: retention removed the oldest {recording.pruned.records} records "
            f"(the newest of them at now = {recording.pruned.through_now} ms); replayed what "
            "remains"
        )
    for mismatch in trace.mismatches[: args.show]:
        print(f"mismatch: {mismatch}")
    for wallet, missing in list(gaps.items())[: args.show]:
        print(f"gap: wallet {wallet}: versions {_ranges(missing)} missing from the log")
    decisions = sum(1 for _ in recording.decisions())
    summary = (
        f"replayed {decisions} decisions from {args.recording}: {len(trace.mismatches)} mismatches"
    )
    if config is not None:
        summary += " (with the config given, not the recorded one)"
    if gaps:
        summary += f", {len(gaps)} wallets with versions missing (the log is incomplete)"
    print(summary)
    if decisions == 0:
        print(f"liqshell: warning: {args.recording} holds no decision records", file=sys.stderr)
    return EXIT_FAILURE if trace.mismatches or gaps else EXIT_OK


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


def _explain(args: argparse.Namespace) -> int:
    from liqshell.analysis import render_story

    recording = _load(args.recording)
    if args.wallet not in set(recording.wallets):
        raise CliError(
            f"{args.recording}: no records of wallet {args.wallet!r} "
            f"({len(recording.wallets)} wallets recorded)"
        )
    print(render_story(recording, args.wallet))
    return EXIT_OK


def _calibrate(args: argparse.Namespace) -> int:
    from liqshell.analysis.calibration import calibrate

    recording = _load(args.recording)
    config = load_settings(args.config).config if args.config else None
    result = calibrate(recording, config, fit=not args.no_fit)
    print(result.render())
    if not result.modes:
        print(
            f"liqshell: warning: {args.recording} holds no verdict with a portfolio",
            file=sys.stderr,
        )
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from liqshell.analysis import render_report, summarize
    from liqshell.analysis.report import money, render_money

    recording = _load(args.recording)
    target = _writable_file(args.html, "--html") if args.html else None
    print(render_report(summarize(recording.records), Path(args.recording)))
    print("money (what the decisions asked for, and the fills derived from the snapshots):")
    print(render_money(money(recording)))
    if target is not None:
        from liqshell.analysis.report import write_html

        try:
            write_html(recording, target)
        except ImportError as error:
            raise CliError(f"--html: {error}") from None
        print(f"wrote {target}")
    return EXIT_OK


# --- entry point ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``liqshell`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit
    status."""
    try:
        args = _parser().parse_args(argv)
        with _logging_restored():
            if args.command in (
                "check-config",
                "replay",
                "report",
                "explain",
                "calibrate",
                "sim-exchange",
            ):
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
