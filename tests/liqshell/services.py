"""Throwaway PostgreSQL and NATS servers for the adapter tests.

Each server runs from a fresh temporary directory on a free loopback port (never the
machine's own 5432/4222), is stopped and deleted at the end, and can be restarted in the
middle of a test on the same data directory and port. Only the binaries are needed:
``initdb``/``pg_ctl`` (on ``PATH`` or under ``/usr/lib/postgresql/*/bin``) and
``nats-server``. A missing binary skips the tests, or fails them under CI (``CI`` set).

PostgreSQL refuses to run as root; when the tests run as root the cluster is created and
run as the ``postgres`` system user (else ``nobody``) with the directory handed to it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import pytest

__all__ = [
    "NatsServer",
    "PostgresServer",
    "free_port",
    "running_nats",
    "running_postgres",
    "start_nats",
    "start_postgres",
    "unavailable",
]

START_TIMEOUT_S = 30.0


def unavailable(reason: str) -> NoReturn:
    """Skip (or, under CI, fail) a test whose service cannot be started."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _find_binary(name: str, extra_dirs: Sequence[str] = ()) -> Path | None:
    found = shutil.which(name)
    if found:
        return Path(found)
    for pattern in extra_dirs:
        candidates = sorted(
            Path("/").glob(pattern.lstrip("/")),
            key=lambda p: [int(x) if x.isdigit() else x for x in p.parts],
        )
        for directory in reversed(candidates):
            if (directory / name).is_file():
                return directory / name
    return None


def _service_user() -> str | None:
    """The unprivileged user to run PostgreSQL as, or None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    unavailable("running as root and neither a 'postgres' nor a 'nobody' user exists")


def _reachable_tmp(entry: pwd.struct_passwd) -> str:
    """A temporary folder the service user can reach: the usual one, unless a folder above
    it is closed to that user (a ``TMPDIR`` inside a root-only folder, as nox's session
    ``tmp`` in a clone under ``mktemp -d``), then ``/tmp`` or ``/var/tmp``."""
    for candidate in (tempfile.gettempdir(), "/tmp", "/var/tmp"):
        path = Path(candidate).resolve()
        if path.is_dir() and all(_enterable(p, entry) for p in (path, *path.parents)):
            return str(path)
    unavailable(f"no temporary folder that the user {entry.pw_name!r} can enter")


def _enterable(path: Path, entry: pwd.struct_passwd) -> bool:
    """Whether ``entry``'s user may pass through the folder ``path`` (its x bit)."""
    info = path.stat()
    if info.st_uid == entry.pw_uid:
        return bool(info.st_mode & 0o100)
    if info.st_gid == entry.pw_gid:
        return bool(info.st_mode & 0o010)
    return bool(info.st_mode & 0o001)


class PostgresServer:
    """A PostgreSQL cluster in a temporary directory, on a free loopback port."""

    def __init__(self, bindir: Path, root: Path, port: int, user: str | None) -> None:
        self.bindir = bindir
        self.root = root
        self.port = port
        self.user = user
        self.data = root / "data"
        self.log = root / "server.log"
        self._databases = itertools.count(1)

    @property
    def superuser(self) -> str:
        """The cluster's superuser (trust authentication on loopback)."""
        return "liq"

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq connection string for ``dbname``."""
        return (
            f"host=127.0.0.1 port={self.port} user={self.superuser} dbname={dbname} "
            "connect_timeout=3"
        )

    def _run(self, *args: str, timeout: float = START_TIMEOUT_S) -> None:
        # Output goes to a file, never a pipe: a server started by pg_ctl would inherit the
        # pipe and keep it open, and we would wait for EOF forever.
        with (self.root / "pg_ctl.out").open("ab") as out:
            result = subprocess.run(
                [str(self.bindir / args[0]), *args[1:]],
                user=self.user,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
                cwd=self.root,
            )
        if result.returncode != 0:
            output = (self.root / "pg_ctl.out").read_text(errors="replace")[-2000:]
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} {args[1:]} failed:\n{output}\n{log}")

    def init(self) -> None:
        """Create the cluster (initdb)."""
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            self.superuser,
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=60"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: clean; ``immediate``: like a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-m", mode, "stop")

    def restart(self, mode: str = "fast") -> None:
        """Stop and start again on the same data directory and port."""
        self.stop(mode)
        self.start()

    def running(self) -> bool:
        """Whether the server accepts TCP connections."""
        return _port_open(self.port)

    def require_password(self, role: str, password: str, *, database: str | None = None) -> str:
        """Make ``role`` a login role that must give ``password`` (``scram-sha-256`` on
        loopback: a ``pg_hba.conf`` line before the trust ones, for this role alone), with the
        database ``database`` (default: the role's name) owned by it. Returns its DSN without
        the password."""
        database = role if database is None else database
        hba = self.data / "pg_hba.conf"
        rule = f"host all {role} 127.0.0.1/32 scram-sha-256\n"
        if rule not in hba.read_text():
            hba.write_text(rule + hba.read_text())
            if self.running():
                self._run("pg_ctl", "-D", str(self.data), "reload")
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(database)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(database), sql.Identifier(role)
                )
            )
        return f"host=127.0.0.1 port={self.port} user={role} dbname={database} connect_timeout=3"

    def create_database(self) -> str:
        """A new empty database; returns its DSN."""
        import psycopg

        name = f"test_{os.getpid()}_{next(self._databases)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def remove(self) -> None:
        """Stop the server if it runs and delete its directory."""
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(password_roles: Mapping[str, str] | None = None) -> PostgresServer:
    """Create and start a throwaway cluster (skips/fails when the binaries are missing);
    each role of ``password_roles`` must log in with its password and owns a database of
    its name (:meth:`PostgresServer.require_password`)."""
    initdb = _find_binary("initdb", ["/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin"])
    if initdb is None:
        unavailable(
            "PostgreSQL binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql"
        )
    bindir = initdb.parent
    if not (bindir / "pg_ctl").is_file():
        unavailable(f"pg_ctl not found next to {initdb}")
    user = _service_user()
    if user is None:
        root = Path(tempfile.mkdtemp(prefix="liqshell-pg-"))
    else:
        entry = pwd.getpwnam(user)
        root = Path(tempfile.mkdtemp(prefix="liqshell-pg-", dir=_reachable_tmp(entry)))
        os.chown(root, entry.pw_uid, entry.pw_gid)
    server = PostgresServer(bindir, root, free_port(), user)
    try:
        server.init()
        server.start()
        for role, password in (password_roles or {}).items():
            server.require_password(role, password)
    except BaseException:
        server.remove()
        raise
    return server


class NatsServer:
    """A ``nats-server -js`` in a temporary directory, on a free loopback port."""

    def __init__(self, binary: Path, root: Path, port: int, extra: Sequence[str] = ()) -> None:
        self.binary = binary
        self.root = root
        self.port = port
        self.extra = tuple(extra)
        self.store = root / "jetstream"
        self.log = root / "server.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client URL."""
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        with self.log.open("ab") as out:
            self._process = subprocess.Popen(
                [
                    str(self.binary),
                    "-js",
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-sd",
                    str(self.store),
                    *self.extra,
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _port_open(self.port):
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"nats-server exited with {self._process.returncode}:\n"
                    + self.log.read_text(errors="replace")[-2000:]
                )
            if time.monotonic() > deadline:
                raise RuntimeError("nats-server did not start in time")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and wait for it."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def restart(self) -> None:
        """Stop and start again on the same store directory and port."""
        self.stop()
        self.start()

    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def remove(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_nats(extra: Sequence[str] = ()) -> NatsServer:
    """Start a throwaway JetStream server (skips/fails when the binary is missing); ``extra``
    are more command-line options (``["--auth", "token"]``)."""
    binary = _find_binary("nats-server")
    if binary is None:
        unavailable("nats-server not found on PATH")
    root = Path(tempfile.mkdtemp(prefix="liqshell-nats-"))
    server = NatsServer(binary, root, free_port(), extra)
    try:
        server.start()
    except BaseException:
        server.remove()
        raise
    return server


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A throwaway cluster for the duration of the block."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.remove()


@contextlib.contextmanager
def running_nats() -> Iterator[NatsServer]:
    """A throwaway nats-server for the duration of the block."""
    server = start_nats()
    try:
        yield server
    finally:
        server.remove()
