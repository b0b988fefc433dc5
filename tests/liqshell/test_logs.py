"""liqshell.logs and the package's logger: a library user who configured no logging sees
nothing on stderr; one who did sees the shell's records."""

from __future__ import annotations

import subprocess
import sys
import textwrap

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
