"""Developer and CI sessions. Each installs the project as a wheel into its own venv."""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.download_python = "never"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "typecheck", "lint", "docs"]

PACKAGES = ["liqcore", "liqshell"]


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


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on both packages."""
    session.install(".[typecheck]")
    session.run("mypy", *PACKAGES)


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
