"""``async with`` on the adapters (:class:`liqshell.adapters.AsyncClosing`)."""

from __future__ import annotations

from pathlib import Path

from liqshell.adapters.jsonl import JsonlEventSink, JsonlRecorder
from liqshell.adapters.nats import NatsConnector
from liqshell.adapters.sqlite import SqliteStore


class CountedStore(SqliteStore):
    closed = 0

    async def close(self) -> None:
        self.closed += 1
        await super().close()


async def test_store_async_with_closes_on_exit_and_stays_usable(tmp_path: Path) -> None:
    """The store is its own context manager: closed on exit, reopened by the next call."""
    async with CountedStore(tmp_path / "s.sqlite") as store:
        assert await store.cursor() is None
        assert store.closed == 0
    assert store.closed == 1
    assert await store.cursor() is None
    await store.close()


async def test_files_and_connector_are_async_context_managers(tmp_path: Path) -> None:
    """The JSON Lines files and the NATS connector return themselves and close on exit
    (closing what was never opened is fine)."""
    recorder = JsonlRecorder(tmp_path / "r.jsonl")
    async with recorder as entered:
        assert entered is recorder
    sink = JsonlEventSink(tmp_path / "c.jsonl")
    async with sink as entered_sink:
        assert entered_sink is sink
    connector = NatsConnector("nats://127.0.0.1:1")
    async with connector as entered_connector:
        assert entered_connector is connector
