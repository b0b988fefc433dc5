"""Hypothesis profiles and the Decimal strategy for the whole suite; the fixtures of
liqshell's pytest plugin even where the installed metadata predates its entry point.

Profiles: ``ci`` (derandomized, no example database, loaded whenever ``CI`` is set),
``dev`` (the default: quick), ``nightly`` (long) and ``mutate`` (``ci`` without shrinking,
for ``nox -s mutate``: the same examples, so the same mutants killed, but a killed mutant
is not then shrunk for minutes). ``HYPOTHESIS_PROFILE`` picks one explicitly. Tests
that are heavy per example lower their own ``max_examples`` with ``@settings``.
"""

from __future__ import annotations

import os
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from liqcore.strategies import decimals
from tests.installed import stale_entry_point

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    max_examples=300,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "mutate",
    settings.get_profile("ci"),
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile("nightly", max_examples=5_000, deadline=None)

# Bare st.from_type(Decimal) would generate NaN and Infinity, which no liqcore field accepts.
st.register_type_strategy(Decimal, decimals())


def _profile() -> str:
    explicit = os.environ.get("HYPOTHESIS_PROFILE")
    if explicit:
        return explicit
    return "ci" if os.environ.get("CI") else "dev"


settings.load_profile(_profile())


def pytest_configure(config: pytest.Config) -> None:
    """Load liqshell's plugin by module when a stale editable install has no ``pytest11``
    entry point for it (so the suite still finds its fixtures), unless ``-p no:liqshell``."""
    manager = config.pluginmanager
    if (
        stale_entry_point("pytest11", "liqshell") is not None
        and not manager.is_blocked("liqshell")
        and not manager.has_plugin("liqshell")
    ):
        manager.import_plugin("liqshell.pytest_plugin")
