"""Done means: ``liqshell run --config examples/production.toml``, secrets from the
environment, runs against the reference responder over a real nats-server, with JSON logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from liqcore import AuctionRequestFailed, OrderFailed, StartAuction, SubmitOrder
from liqshell.adapters import read_records
from liqshell.ports import RecordKind
from liqshell.settings import parse_settings
from liqshell.sim import SimExchange
from liqshell.sim.responder import run_reference_exchange
from tests.liqshell.services import free_port, start_nats

pytestmark = pytest.mark.services

PRODUCTION = Path(__file__).parents[2] / "examples" / "production.toml"
TOKEN = "e2e-token-1f3a"
DB_PASSWORD = "e2e-db-password-9c2d"
DEADLINE_S = 90.0  # a bound on waiting for the first liquidation, not an assertion


def _records(path: Path) -> list[object]:
    try:
        return list(read_records(path))
    except (OSError, ValueError):
        return []


async def test_run_with_configuration_alone_against_the_reference_responder(
    tmp_path: Path,
) -> None:
    """The watcher, a subprocess configured by the production example and the environment
    alone (the NATS token and the database password from environment variables), observes
    the simulated exchange through the wire protocol, liquidates over NATS, logs JSON on
    stderr, serves its metrics and stops cleanly on SIGTERM. Chain events come back over a
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
        "LIQSHELL_DB_PASSWORD": DB_PASSWORD,
        "LIQSHELL_NATS__TOKEN": TOKEN,
        "LIQSHELL_NATS__SERVERS": server.url,
        "LIQSHELL_STORE__KIND": "sqlite",
        "LIQSHELL_STORE__PATH": str(tmp_path / "watcher.sqlite"),
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

    outcomes = [e for r in _records(record) for e in getattr(r, "events", ())]
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
