"""Fixtures of the shell's tests: throwaway PostgreSQL and NATS servers (session scope).

``postgres_server`` and ``nats_server`` start their server once per session on a free
loopback port (see :mod:`tests.liqshell.services`); ``postgres_dsn`` and ``pg_schema`` give
each test a fresh PostgreSQL schema name; ``restart_postgres`` / ``restart_nats`` restart a
server in the middle of a test on the same data directory and port; ``stores`` collects the
PostgreSQL stores a test opens and closes them after it. Tests using them are
marked ``@pytest.mark.services``; without the binaries they skip (fail under ``CI``).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from tests.liqshell.services import NatsServer, PostgresServer, start_nats, start_postgres

if TYPE_CHECKING:
    from liqshell.adapters.postgres import PostgresStore

_schemas = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of our own for the session."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """The DSN of the session's PostgreSQL (the server is up when the test starts)."""
    if not postgres_server.running():
        postgres_server.start()
    return postgres_server.dsn()


@pytest.fixture
def pg_schema() -> str:
    """A PostgreSQL schema name no other test uses."""
    return f"t{next(_schemas)}"


@pytest.fixture
def restart_postgres(postgres_server: PostgresServer) -> Callable[..., None]:
    """Restart the session's PostgreSQL (``mode="fast"`` or ``"immediate"``)."""

    def restart(mode: str = "fast") -> None:
        postgres_server.restart(mode)

    return restart


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """A ``nats-server -js`` of our own for the session."""
    server = start_nats()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    """The URL of the session's NATS server (up when the test starts)."""
    if not nats_server.running():
        nats_server.start()
    return nats_server.url


@pytest.fixture
def restart_nats(nats_server: NatsServer) -> Callable[[], None]:
    """Restart the session's NATS server on the same store directory and port."""
    return nats_server.restart


@pytest.fixture
async def stores() -> AsyncIterator[list[PostgresStore]]:
    """A list a test appends the PostgreSQL stores it opens to; each is closed after it."""
    made: list[PostgresStore] = []
    try:
        yield made
    finally:
        for store in made:
            await store.close()
