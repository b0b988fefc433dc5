"""liqshell.logs and the package's logger: a library user who configured no logging sees
nothing on stderr; one who did sees the shell's records."""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from liqcore import __version__
from liqshell.cli import _parser, main
from liqshell.logs import JsonFormatter, fields
from tests.liqshell.services import start_nats

SCRIPT = textwrap.dedent(
    """
    import asyncio, logging, sys
    from liqshell import Watcher
    from liqshell.testing import FakeExchange, Fault, MemorySink, MemoryStore, VirtualClock

    if sys.argv[1] == "configured":
        logging.basicConfig(level=logging.WARNING)

    async def main():
        clock = VirtualClock(10_000)
        exchange = FakeExchange(clock=clock)
        exchange.inject("portfolios", Fault.raising(OSError("exchange down")))
        store = MemoryStore()
        watcher = Watcher(
            portfolios=exchange, margin=exchange, quotes=exchange, orders=exchange,
            gateway=exchange, auctions=exchange, store=store, sink=MemorySink(),
            recorder=store, clock=clock,
        )
        report = await clock.drive(watcher.run_once())
        print(report.stepped, report.skipped)

    asyncio.run(main())
    """
)


def _run(mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True
    )


def test_library_user_without_logging_config_sees_nothing_on_stderr() -> None:
    """A poll that logs a warning (the portfolio listing failed) prints nothing on stderr when
    the application configured no logging: ``liqshell`` carries a NullHandler, so Python's
    last-resort handler stays silent."""
    out = _run("plain")
    assert out.stdout.strip() == "0 0"
    assert out.stderr == ""


def test_application_that_configures_logging_sees_the_shell_warnings() -> None:
    """The NullHandler hides nothing from an application that configured logging."""
    out = _run("configured")
    assert "poll skipped: listing portfolios failed" in out.stderr


# --------------------------------------------------------------------------- JSON logs


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    logger = logging.getLogger("liqshell.test")
    return logger.makeRecord(
        "liqshell.test", logging.WARNING, __file__, 1, message, args, None, extra=extra
    )


def test_json_formatter_one_object_with_the_structured_fields() -> None:
    """Each record is one JSON line with time, level, logger, message, wallet, phase,
    request_id, version (the library's), state_version (the ``version`` the record gives) and
    the record's other fields."""
    record = _record(
        "wallet %s: %s",
        "0xa",
        "submitted",
        **fields(wallet="0xa", phase="pre", code="X", version=7),
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["time"].endswith("Z")
    assert {k: data[k] for k in data if k != "time"} == {
        "level": "warning",
        "logger": "liqshell.test",
        "message": "wallet 0xa: submitted",
        "wallet": "0xa",
        "phase": "pre",
        "request_id": None,
        "version": __version__,
        "state_version": 7,
        "code": "X",
    }


def test_json_formatter_redacts_and_keeps_unserializable_values_readable() -> None:
    """Credentials in messages and tracebacks are redacted; a value JSON cannot hold is
    written as its repr; a record without the structured fields has them as null."""
    try:
        raise OSError("cannot reach postgresql://liq:pw@db/liq")
    except OSError:
        record = _record("store %s", "nats://u:pw@n:4222", cursor=Decimal(3))
        record.exc_info = sys.exc_info()
    data = json.loads(JsonFormatter().format(record))
    assert data["message"] == "store nats://***@n:4222"
    assert data["cursor"] == "Decimal('3')"
    assert "pw" not in data["exception"]
    assert "OSError" in data["exception"]
    assert (data["wallet"], data["phase"], data["request_id"]) == (None, None, None)


# ------------------------------------------------ --log-format / --log-level, every command


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    """The ``liqshell`` subcommands, from the parser itself (a new one is covered at once)."""
    (action,) = (a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recording (``rec.jsonl``) of a short simulated run, a configuration for ``run``
    against the in-process simulated exchange (``run.toml``) and one to check
    (``check.toml``)."""
    root = tmp_path_factory.mktemp("logs")
    status = main(
        ["simulate", "--accounts", "4", "--minutes", "2", "--quiet",
         "--record", str(root / "rec.jsonl"), "--record-mode", "all"]
    )  # fmt: skip
    assert status == 0
    (root / "check.toml").write_text('[exchange]\nsource = "sim"\n')
    (root / "run.toml").write_text(
        f'[store]\nkind = "sqlite"\npath = "{root / "run.sqlite"}"\n'
        '[exchange]\nsource = "sim"\n[metrics]\nenabled = false\n[sim]\naccounts = 3\n'
    )
    return root


def _in_process(argv: list[str]) -> Callable[[Path, list[str], pytest.CaptureFixture[str]], str]:
    """Run ``liqshell ARGV OPTIONS`` with ``main`` (``{dir}`` in ``argv`` is the work
    directory); exit 0 required; its stderr."""

    def run(root: Path, options: list[str], capsys: pytest.CaptureFixture[str]) -> str:
        capsys.readouterr()
        command = [part.replace("{dir}", str(root)) for part in argv]
        status = main([*command, *options])
        err = capsys.readouterr().err
        assert status == 0, err
        return err

    return run


def _until_logged(
    argv: list[str], marker: str
) -> Callable[[Path, list[str], pytest.CaptureFixture[str]], str]:
    """Run ``python -m liqshell ARGV OPTIONS`` (a command that runs until stopped) until its
    stderr has a line containing ``marker``, then SIGTERM it; its stderr. A process that
    exits first, or never logs the marker within a minute, fails the test."""

    def run(root: Path, options: list[str], capsys: pytest.CaptureFixture[str]) -> str:
        command = [part.replace("{dir}", str(root)) for part in argv]
        server = start_nats() if "{nats}" in " ".join(command) else None
        if server is not None:
            config = root / "nats.toml"
            config.write_text(f'[nats]\nservers = ["{server.url}"]\n[sim]\naccounts = 3\n')
            command = [part.replace("{nats}", str(config)) for part in command]
        process = subprocess.Popen(
            [sys.executable, "-m", "liqshell", *command, *options],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=root,
        )  # fmt: skip
        lines: list[str] = []
        try:
            assert process.stderr is not None
            reader = threading.Timer(60, process.kill)  # a hang fails, it does not block
            reader.start()
            for line in process.stderr:
                lines.append(line)
                if marker in line:
                    break
            reader.cancel()
            assert any(marker in line for line in lines), "".join(lines)
            process.send_signal(signal.SIGTERM)
            _, rest = process.communicate(timeout=60)
            assert process.returncode == 0, rest
            return "".join(lines) + rest
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            if server is not None:
                server.remove()

    return run


INVOCATIONS = {
    "simulate": _in_process(
        ["simulate", "--accounts", "3", "--minutes", "1", "--quiet", "--store", "{dir}/s.sqlite"]
    ),
    "check-config": _in_process(["check-config", "{dir}/check.toml"]),
    "replay": _in_process(["replay", "{dir}/rec.jsonl"]),
    "report": _in_process(["report", "{dir}/rec.jsonl"]),
    "explain": _in_process(["explain", "{dir}/rec.jsonl", "--wallet", "0xsim0002"]),
    "calibrate": _in_process(["calibrate", "{dir}/rec.jsonl"]),
    "run": _until_logged(["run", "--config", "{dir}/run.toml"], "started with"),
    "sim-exchange": _until_logged(["sim-exchange", "--config", "{nats}"], "serving on"),
}
"""How each subcommand is run for the log test (a new subcommand must be added here)."""
NEEDS_SERVICES = {"sim-exchange"}
LOGS_WALLETS = {"simulate"}
"""Commands whose debug logs include the commands a decision sent."""

KEYS = {"time", "level", "logger", "message", "wallet", "phase", "request_id", "version"}
ORDER = ("debug", "info", "warning", "error", "critical")


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(name, marks=[pytest.mark.services] if name in NEEDS_SERVICES else [])
        for name in sorted(_subcommands())
    ],
)
def test_every_subcommand_logs_json_lines_at_the_level_asked(
    command: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every subcommand of the parser takes ``--log-level`` (debug … error) and
    ``--log-format`` (text, json); run with ``--log-format json --log-level debug`` it logs
    on stderr, and every stderr line is one JSON object with time (UTC, ms), level, logger,
    message, wallet, phase, request_id and the library version; in ``simulate``'s every
    record of a command sent (a request id) the wallet, the phase and the state version the
    decision left are filled in. Run in-process at ``--log-level
    error`` the same command logs nothing below error."""
    options = {
        option: action
        for action in _subcommands()[command]._actions
        for option in action.option_strings
    }
    assert set(ORDER[:4]) <= set(options["--log-level"].choices or ())
    assert set(options["--log-format"].choices or ()) == {"text", "json"}
    if command not in INVOCATIONS:
        pytest.fail(f"no invocation for the subcommand {command!r}: add one to INVOCATIONS")
    run = INVOCATIONS[command]
    err = run(workdir, ["--log-format", "json", "--log-level", "debug"], capsys)
    records = [json.loads(line) for line in err.splitlines()]
    assert records, f"{command} logged nothing at debug"
    for data in records:
        assert isinstance(data, dict)
        assert set(data) >= KEYS, data
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["time"])
        assert data["level"] in ORDER
        assert data["logger"].startswith("liqshell")
        assert data["message"]
        assert data["version"] == __version__
    if command in LOGS_WALLETS:
        sent = [d for d in records if d["request_id"]]
        assert sent, records
        for data in sent:  # a command sent: its wallet, the phase and version it decided
            assert data["wallet"], data
            assert data["phase"], data
            assert isinstance(data["state_version"], int), data
    if run.__qualname__.startswith("_in_process"):
        err = run(workdir, ["--log-format", "json", "--log-level", "error"], capsys)
        levels = [json.loads(line)["level"] for line in err.splitlines()]
        assert set(levels) <= {"error", "critical"}, err
