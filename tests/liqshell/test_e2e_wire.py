"""Done means: ``liqshell run --config examples/production.toml``, secrets from the
environment, runs against the reference responder over a real nats-server, with JSON logs,
committing to PostgreSQL as a role that must give the password the environment holds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from liqcore import AuctionRequestFailed, OrderFailed, StartAuction, SubmitOrder
from liqshell.adapters import read_records
from liqshell.adapters.postgres import PostgresStore
from liqshell.ports import RecordKind
from liqshell.settings import parse_settings
from liqshell.sim import SimExchange
from liqshell.sim.responder import run_reference_exchange
from tests.liqshell.services import PostgresServer, free_port, start_nats, start_postgres

pytestmark = pytest.mark.services

PRODUCTION = Path(__file__).parents[2] / "examples" / "production.toml"
TOKEN = "e2e-token-1f3a"
DB_PASSWORD = "e2e-db-password-9c2d"
DEADLINE_S = 90.0  # a bound on waiting for the first liquidation, not an assertion
ROLE = "liqshell"  # the user and database of the production file's DSN


@pytest.fixture(scope="module")
def production_db() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL where the role ``liqshell`` must give ``DB_PASSWORD``
    (scram-sha-256) and owns the database ``liqshell``."""
    server = start_postgres({ROLE: DB_PASSWORD})
    try:
        yield server
    finally:
        server.remove()


def _database_environment(server: PostgresServer, password: str) -> dict[str, str]:
    """What a deployment sets to point the production file's DSN at ``server``: the password
    and the host and port its ``${…:-default}`` references take."""
    return {
        "LIQSHELL_DB_PASSWORD": password,
        "LIQSHELL_DB_HOST": "127.0.0.1",
        "LIQSHELL_DB_PORT": str(server.port),
    }


def _records(path: Path) -> list[object]:
    try:
        return list(read_records(path))
    except (OSError, ValueError):
        return []


async def test_run_with_configuration_alone_against_the_reference_responder(
    tmp_path: Path, production_db: PostgresServer
) -> None:
    """The watcher, a subprocess configured by the production example and the environment
    alone (the NATS token and the database password from environment variables), observes
    the simulated exchange through the wire protocol, liquidates over NATS, commits its
    states to PostgreSQL as the password-authenticated role of the DSN, logs JSON on stderr,
    serves its metrics and stops cleanly on SIGTERM. Chain events come back over a
    JetStream stream."""
    server = start_nats(["--auth", TOKEN])
    stop = asyncio.Event()
    ready: list[SimExchange] = []
    responder_settings = parse_settings(
        {
            "nats": {"servers": [server.url], "chain_stream": "LIQ_CHAIN"},
            "sim": {"accounts": 8, "minutes": 30, "seed": 3},
            "exchange": {"speed": 60},
        },
        environ={"LIQSHELL_NATS__TOKEN": TOKEN},
    )
    responder = asyncio.create_task(
        run_reference_exchange(responder_settings, stop, on_ready=ready.append)
    )
    record = tmp_path / "run.jsonl"
    metrics_port = free_port()
    env = {
        **os.environ,
        **_database_environment(production_db, DB_PASSWORD),
        "LIQSHELL_NATS__TOKEN": TOKEN,
        "LIQSHELL_NATS__SERVERS": server.url,
        "LIQSHELL_STORE__RECORD": str(record),
        "LIQSHELL_METRICS__HOST": "127.0.0.1",
        "LIQSHELL_METRICS__PORT": str(metrics_port),
        "LIQSHELL_LIQCORE__POLL_INTERVAL_MS": "300",
        "LIQSHELL_DEBUG": "1",
    }
    process = None
    try:
        while not ready:
            assert not responder.done(), responder
            await asyncio.sleep(0.05)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "liqshell", "run", "--config", str(PRODUCTION),
            "--log-format", "json",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + DEADLINE_S
        exchange = ready[0]
        while True:
            if process.returncode is not None:
                _, err = await process.communicate()
                raise AssertionError(
                    "liqshell run exited early: " + err.decode(errors="replace")[-2000:]
                )
            records = _records(record)
            acted = [
                c
                for r in records
                if r.kind is RecordKind.DECISION  # type: ignore[attr-defined]
                for c in r.commands  # type: ignore[attr-defined]
                if isinstance(c, SubmitOrder | StartAuction)
            ]
            fed = [r for r in records if r.kind is RecordKind.FEED]  # type: ignore[attr-defined]
            stats = exchange.world.stats
            if acted and fed and stats.submitted + stats.auctions_requested > 0:
                break
            assert time.monotonic() < deadline, "no liquidation reached the exchange"
            await asyncio.sleep(0.2)
        metrics = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read()
        )
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    finally:
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        stop.set()
        with contextlib.suppress(Exception):
            await responder
        server.remove()

    records = _records(record)
    outcomes = [e for r in records for e in getattr(r, "events", ())]
    assert not any(isinstance(e, OrderFailed | AuctionRequestFailed) for e in outcomes)
    assert b"liqshell_orders_total" in metrics
    lines = err.decode().splitlines()
    assert lines
    logged = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "message", "wallet", "version"} <= set(o) for o in logged)
    assert any(o["wallet"] is not None for o in logged)
    text = err.decode()
    assert TOKEN not in text
    assert DB_PASSWORD not in text

    # The states are in PostgreSQL, in a schema the password-authenticated role created.
    committed: dict[str, object] = {}
    for r in records:
        if getattr(r, "version", 0) > 0:
            committed[r.wallet] = r  # type: ignore[attr-defined]
    assert acted
    assert committed
    with psycopg.connect(production_db.dsn(ROLE), autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'liqshell'"
        ).fetchone()
    assert row == (ROLE,)
    async with PostgresStore(production_db.dsn(ROLE), timeout_ms=5_000) as store:
        stored = await store.load()
    for wallet, last in committed.items():
        assert wallet in stored, wallet
        assert stored[wallet].version >= last.version  # type: ignore[attr-defined]
        if stored[wallet].version == last.version:  # type: ignore[attr-defined]
            assert stored[wallet].state == last.state  # type: ignore[attr-defined]


def test_run_with_a_wrong_database_password_fails_with_one_clear_line(
    production_db: PostgresServer,
) -> None:
    """The production file with a wrong ``LIQSHELL_DB_PASSWORD``: one line on stderr saying
    the authentication failed (not that the server is down), no password, exit status 1,
    before anything else is reached."""
    env = {
        **os.environ,
        **_database_environment(production_db, "WrongPassword-77"),
        "LIQSHELL_NATS__TOKEN": TOKEN,
    }
    result = subprocess.run(
        [sys.executable, "-m", "liqshell", "run", "--config", str(PRODUCTION),
         "--log-format", "json"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("liqshell: error: service unavailable:"), lines[0]
    assert "authentication failed" in lines[0]
    assert "unreachable" not in lines[0]
    assert "WrongPassword-77" not in result.stderr
    assert DB_PASSWORD not in result.stderr
