"""Hypothesis profiles and the Decimal strategy for the whole suite.

Profiles: ``ci`` (derandomized, no example database, loaded whenever ``CI`` is set),
``dev`` (the default: quick) and ``nightly`` (long). ``HYPOTHESIS_PROFILE`` picks one
explicitly when ``CI`` is unset. Tests that are heavy per example lower their own
``max_examples`` with ``@settings``.
"""

from __future__ import annotations

import os
from decimal import Decimal

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from liqcore.strategies import decimals

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    max_examples=300,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile("nightly", max_examples=5_000, deadline=None)

# Bare st.from_type(Decimal) would generate NaN and Infinity, which no liqcore field accepts.
st.register_type_strategy(Decimal, decimals())


def _profile() -> str:
    if os.environ.get("CI"):
        return "ci"
    return os.environ.get("HYPOTHESIS_PROFILE") or "dev"


settings.load_profile(_profile())
