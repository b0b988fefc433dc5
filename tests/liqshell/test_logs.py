"""liqshell.logs and the package's logger: a library user who configured no logging sees
nothing on stderr; one who did sees the shell's records."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from liqcore import __version__
from liqshell.cli import main
from liqshell.logs import JsonFormatter, fields

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
    request_id, version and the record's other fields."""
    record = _record(
        "wallet %s: %s", "0xa", "submitted", **fields(wallet="0xa", phase="pre", code="X")
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


def test_every_command_takes_log_level_and_log_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--log-level`` and ``--log-format`` are accepted by every subcommand, and with
    ``json`` every line the command logs on stderr is a JSON object."""
    config = tmp_path / "c.toml"
    config.write_text('[exchange]\nsource = "sim"\n')
    assert main(["check-config", str(config), "--log-format", "json", "--log-level", "debug"]) == 0
    status = main(
        ["simulate", "--accounts", "3", "--minutes", "1", "--quiet", "--store",
         str(tmp_path / "s.sqlite"), "--log-level", "info", "--log-format", "json"]
    )  # fmt: skip
    assert status == 0
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines, "simulate logged nothing at info"
    for line in lines:
        data = json.loads(line)
        assert {"time", "level", "message", "wallet", "phase", "request_id", "version"} <= set(data)
    for command in (["report", "x"], ["replay", "x"], ["run", "--config", "x"]):
        with pytest.raises(SystemExit):
            main([*command, "--log-format", "json", "--help"])
        assert "--log-format {text,json}" in capsys.readouterr().out
