"""liqshell.redaction: no credential of a URL or DSN reaches any output — check-config, the
one-line errors of ``run``, settings errors, adapter errors and reprs, and the log records
(the NATS reconnect callbacks included)."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from liqshell.adapters import ServiceUnavailable, StoreUnavailable
from liqshell.adapters.nats import NatsConnector
from liqshell.adapters.postgres import PostgresStore
from liqshell.cli import main
from liqshell.redaction import RedactingFormatter, redact
from liqshell.settings import SettingsError, parse_settings
from tests.liqshell.services import NatsServer

NATS_SECRET = "NatsPass77"
PG_SECRET = "PgSecret88"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"nats://user:{NATS_SECRET}@127.0.0.1:1", "nats://***@127.0.0.1:1"),
        (f"postgresql://u:{PG_SECRET}@h:5432/db?sslmode=require", "postgresql://***@h:5432/db?"),
        (f"host=h password={PG_SECRET} user=u", "host=h password=*** user=u"),
        (f"dbname=x password='{PG_SECRET} x'", "password=***"),
        (f'{{"token": "{NATS_SECRET}"}}', '{"token": ***}'),
        (f"tls://{NATS_SECRET}@host:4222", "tls://***@host:4222"),
        (f"wss://h/x?auth_token={NATS_SECRET}&a=1", "auth_token=***&a=1"),
    ],
)
def test_redact_hides_userinfo_and_secret_values(text: str, shown: str) -> None:
    """URL userinfo and password-, token- and secret-like values become ***; the rest stays."""
    redacted = redact(text)
    assert NATS_SECRET not in redacted
    assert PG_SECRET not in redacted
    assert shown in redacted


def test_redact_leaves_plain_text_alone() -> None:
    """Text without credentials is unchanged (hosts, ports, paths, plain words)."""
    text = "cannot connect to NATS at nats://127.0.0.1:4222: password authentication failed"
    assert redact(text) == text


def _config(tmp_path: Path, *, nats_port: int, pg: bool = False) -> Path:
    path = tmp_path / "secret.toml"
    store = (
        f'kind = "postgres"\ndsn = "postgresql://liq:{PG_SECRET}@127.0.0.1:{free_port()}/x"\n'
        "timeout_ms = 500\n"
        if pg
        else f'path = "{tmp_path / "s.sqlite"}"\n'
    )
    path.write_text(
        f'[store]\n{store}[exchange]\nsource = "sim"\n'
        f'[nats]\nservers = ["nats://user:{NATS_SECRET}@127.0.0.1:{nats_port}"]\n'
        "connect_timeout_ms = 300\n"
    )
    return path


def _no_secret(*outputs: str) -> None:
    for output in outputs:
        assert NATS_SECRET not in output
        assert PG_SECRET not in output


def test_check_config_and_run_errors_never_show_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """check-config describes the NATS servers and the PostgreSQL DSN without their
    passwords; ``run`` against an unreachable NATS or PostgreSQL with credentials fails in one
    line that shows neither, and no log record does."""
    caplog.set_level(logging.DEBUG)
    config = _config(tmp_path, nats_port=free_port(), pg=True)
    assert main(["check-config", str(config)]) == 0
    out = capsys.readouterr()
    assert "nats://***@127.0.0.1" in out.out
    assert "postgresql://***@127.0.0.1" in out.out
    _no_secret(out.out, out.err)
    assert main(["run", "--config", str(config)]) == 1  # PostgreSQL is not there
    out = capsys.readouterr()
    assert "service unavailable" in out.err
    _no_secret(out.out, out.err, caplog.text)
    sqlite_config = _config(tmp_path, nats_port=free_port())
    assert main(["run", "--config", str(sqlite_config)]) == 1  # NATS is not there
    out = capsys.readouterr()
    assert "cannot connect to NATS at nats://***@127.0.0.1" in out.err
    _no_secret(out.out, out.err, caplog.text)


def test_settings_error_about_a_server_never_shows_its_credentials() -> None:
    """A malformed server entry is named without its password."""
    with pytest.raises(SettingsError) as raised:
        parse_settings({"nats": {"servers": [f"user:{NATS_SECRET}@host:4222"]}})
    _no_secret(str(raised.value))


async def test_adapter_errors_and_reprs_never_show_credentials() -> None:
    """The connector's repr and its ServiceUnavailable, and the PostgreSQL store's
    StoreUnavailable, hold no password."""
    connector = NatsConnector(
        [f"nats://user:{NATS_SECRET}@127.0.0.1:{free_port()}"], connect_timeout_ms=300
    )
    _no_secret(repr(connector))
    with pytest.raises(ServiceUnavailable) as unreachable:
        await connector.client()
    _no_secret(str(unreachable.value))
    store = PostgresStore(f"postgresql://liq:{PG_SECRET}@127.0.0.1:{free_port()}/x", timeout_ms=500)
    with pytest.raises(StoreUnavailable) as down:
        await store.load()
    await store.close()
    _no_secret(str(down.value), repr(store))


def test_redacting_formatter_hides_secrets_in_messages_arguments_and_tracebacks() -> None:
    """The ``liqshell`` command's log formatter redacts whatever a library logs."""
    formatter = RedactingFormatter("%(message)s")
    try:
        raise OSError(f"failed on nats://u:{NATS_SECRET}@h:1")
    except OSError:
        import sys

        record = logging.LogRecord(
            "nats.aio.client", logging.ERROR, __file__, 1, "connect to %s failed",
            (f"postgresql://u:{PG_SECRET}@h/db",), sys.exc_info(),
        )  # fmt: skip
    text = formatter.format(record)
    assert "connect to postgresql://***@h/db failed" in text
    _no_secret(text)


@pytest.mark.services
async def test_nats_reconnect_logs_never_show_credentials(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The disconnected and reconnected callbacks (a NATS restart) log the servers without
    their credentials."""
    caplog.set_level(logging.DEBUG)
    url = nats_server.url.replace("nats://", f"nats://user:{NATS_SECRET}@")
    connector = NatsConnector([url], connect_timeout_ms=2_000)
    client = await connector.client()
    try:
        await asyncio.to_thread(nats_server.stop)
        try:
            for _ in range(200):
                if not client.is_connected:
                    break
                await asyncio.sleep(0.02)
        finally:
            await asyncio.to_thread(nats_server.start)
        for _ in range(500):
            if client.is_connected:
                break
            await asyncio.sleep(0.02)
        assert client.is_connected
        for _ in range(100):
            if "reconnected" in caplog.text:
                break
            await asyncio.sleep(0.02)
    finally:
        await connector.close()
    assert "nats: disconnected from nats://***@" in caplog.text
    assert "nats: reconnected to nats://***@" in caplog.text
    _no_secret(caplog.text)
