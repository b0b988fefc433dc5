"""Developer and CI sessions. Each installs the project as a wheel into its own venv."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.download_python = "never"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lowest", "typecheck", "lint", "docs"]

PACKAGES = ["liqcore", "liqshell"]
EXAMPLES = ["examples/embedding.py"]
"""Typed examples checked with the packages (the README shows embedding.py verbatim)."""


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite, with branch coverage of liqcore."""
    session.install(".[tests]")
    session.run(
        "pytest",
        "--cov",
        "--cov-branch",
        "--cov-report=term",
        *session.posargs,
        env={"CI": os.environ.get("CI", "")},
    )


LOWEST_EXTRAS = ("testing", "shell", "postgres", "nats")
"""The extras whose floors the ``lowest`` session pins (with the core dependencies)."""


def lowest_pins() -> list[str]:
    """``name==floor`` for every runtime dependency pyproject.toml declares, core and the
    :data:`LOWEST_EXTRAS` — the floor being the ``>=`` bound, the one place it is written.
    psycopg's binary build is pinned to psycopg's floor too (the tests need a libpq)."""
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in LOWEST_EXTRAS:
        declared += project["optional-dependencies"][extra]
    pins = []
    for requirement in declared:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?>=([^,;\s]+)", requirement)
        if match is None:
            raise ValueError(f"{requirement!r} has no >= floor to pin")
        name, _, floor = match.groups()
        pins.append(f"{name}=={floor}")
        if name == "psycopg":
            pins.append(f"psycopg-binary=={floor}")
    return pins


@nox.session
def lowest(session: nox.Session) -> None:
    """The tests not marked slow against the lowest versions pyproject.toml declares, each
    installed pinned: a floor that does not really work fails here."""
    pins = lowest_pins()
    constraints = Path(session.create_tmp()) / "lowest.txt"
    constraints.write_text("\n".join(pins) + "\n")
    session.install(*pins)
    session.install("--no-deps", ".")
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    tools = [
        r
        for r in project["optional-dependencies"]["tests"]
        if not r.startswith(("liqcore", "psycopg"))
    ]
    session.install("-c", str(constraints), *tools)
    session.run("python", "-m", "pip", "freeze")
    session.run(
        "pytest", "-m", "not slow", "-p", "no:cacheprovider", *session.posargs,
        env={"CI": os.environ.get("CI", "")},
    )  # fmt: skip


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on both packages and the typed examples."""
    session.install(".[typecheck]")
    session.run("mypy", *PACKAGES, *EXAMPLES)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the Sphinx site with warnings as errors."""
    session.install(".[docs]")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session
def bench(session: nox.Session) -> None:
    """Throughput benchmarks: writes docs/benchmarks/throughput.md and its plots."""
    session.install(".[bench]")
    session.run("python", "-m", "bench.throughput", *session.posargs)


@nox.session(name="bench-plan")
def bench_plan(session: nox.Session) -> None:
    """Plan quality against the optimum: writes docs/benchmarks/planning.md."""
    session.install(".[bench]")
    session.run("python", "-m", "bench.planning", *session.posargs)


@nox.session(name="bench-watcher")
def bench_watcher(session: nox.Session) -> None:
    """The watcher's sweep end to end (memory, SQLite, PostgreSQL at 1k/10k/100k accounts):
    writes docs/benchmarks/watcher.md. The PostgreSQL server comes from the tests' services
    module, which needs pytest (the tests extra)."""
    session.install(".[bench,tests]")
    session.run("python", "-m", "bench.watcher", *session.posargs)


@nox.session(name="bench-cluster")
def bench_cluster(session: nox.Session) -> None:
    """Many instances on one PostgreSQL store: accounts swept per second by 1, 2 and 3
    instance processes and the failover time over ≥ 20 SIGKILLs, fenced commits and
    duplicate sends: writes docs/benchmarks/cluster.md. The PostgreSQL server comes from the
    tests' services module (the tests extra)."""
    session.install(".[bench,tests]")
    session.run("python", "-m", "bench.cluster", *session.posargs)


@nox.session(name="bench-replay")
def bench_replay(session: nox.Session) -> None:
    """Replay throughput on ≥ 100k records, one core and a 2-worker Dask LocalCluster:
    writes docs/benchmarks/replay.md."""
    session.install(".[bench,dask]")
    session.run("python", "-m", "bench.replay", *session.posargs)


@nox.session
def dst(session: nox.Session) -> None:
    """Deterministic simulation of the whole watcher: 2,000 seeds by default (about five
    minutes on two cores); ``nox -s dst -- --seeds 10000 --start 0`` for a long run."""
    session.install(".[tests]")
    args = session.posargs or ["--seeds", "2000"]
    session.run(
        "python", "-m", "liqshell.sim.dst", "--jobs", "2", "--progress",
        "--report", "dst-report.json", *args,
    )  # fmt: skip


MUTMUT = "mutmut==3.8.1"
"""mutmut 3 (trampolines, a fork per mutant, tests chosen by coverage); configured per
module by bench.mutate in a scratch copy, so pyproject.toml has no [tool.mutmut]."""


@nox.session
def mutate(session: nox.Session) -> None:
    """Mutation testing of liqcore, one module at a time with its mirrored tests:
    updates bench/mutation-report.json (``nox -s mutate -- --module targets`` for one
    module), then writes docs/mutation.md from it."""
    session.install(".[tests]", MUTMUT)
    session.run("python", "-m", "bench.mutate", *session.posargs)
    session.run("python", "-m", "bench.mutate", "--markdown", "docs/mutation.md")
