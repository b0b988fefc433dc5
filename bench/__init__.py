"""Benchmarks (run by ``nox -s bench`` and ``nox -s bench-plan``); not part of the package."""
