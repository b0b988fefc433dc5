"""liqcore.strategies: every data type of liqcore has a registered strategy that draws valid
values of that type, and Hypothesis registers them itself through liqcore's entry point."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import typing

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import liqcore
from liqcore import Command, Event
from liqcore._hypothesis_plugin import REGISTERED_TYPES
from liqcore.state import Phase
from liqcore.strategies import register_type_strategies, type_strategies
from tests.installed import stale_entry_point

# Values the core computes from its inputs: a test derives them, it does not draw them.
COMPUTED = {
    "CancelTarget",
    "Explanation",
    "OrderPlan",
    "Overstay",
    "PartialPlan",
    "Reason",
    "SliceCandidate",
}

TABLE = type_strategies()


def _data_types() -> dict[str, type]:
    return {
        name: value
        for name in liqcore.__all__
        if isinstance(value := getattr(liqcore, name), type) and attrs.has(value)
    }


def test_every_data_type_of_liqcore_has_a_strategy_but_the_computed_ones() -> None:
    """Each attrs class liqcore exports is in the table, unless it is a computed value; a
    new data type without a strategy fails here."""
    exported = _data_types()
    assert set(exported) >= COMPUTED, sorted(COMPUTED - set(exported))
    expected = {kind for name, kind in exported.items() if name not in COMPUTED}
    missing = sorted(kind.__name__ for kind in expected - set(TABLE))
    assert missing == []
    # the table holds nothing liqcore does not export either
    assert {kind.__name__ for kind in TABLE} <= set(exported)


@pytest.mark.parametrize("kind", sorted(TABLE, key=lambda kind: kind.__name__), ids=str)
@settings(max_examples=10)
@given(data=st.data())
def test_from_type_draws_valid_values_of_each_registered_type(
    kind: type, data: st.DataObject
) -> None:
    """After registration, ``st.from_type(T)`` draws instances of ``T`` (built through their
    validating constructors, so valid)."""
    register_type_strategies()
    value = data.draw(st.from_type(kind))
    assert type(value) is kind


@pytest.mark.parametrize("union", [Event, Command, Phase], ids=["Event", "Command", "Phase"])
def test_from_type_of_a_union_draws_every_member(union: object) -> None:
    """``st.from_type(Event)`` (a TypeAlias union) reaches every kind of event; the same for
    commands and phases."""
    register_type_strategies()
    members = set(typing.get_args(union))
    seen: set[type] = set()

    @settings(max_examples=300, database=None)
    @given(st.from_type(union))  # type: ignore[call-overload]
    def collect(value: object) -> None:
        seen.add(type(value))

    collect()
    assert seen == members


def test_builds_fills_annotated_arguments_from_the_registered_types() -> None:
    """``st.builds`` over a function annotated with liqcore types needs no arguments."""
    register_type_strategies()

    def spot_of(portfolio: liqcore.Portfolio, health: liqcore.Health) -> int:
        return len(portfolio.spot) + (health.portfolio is None)

    @settings(max_examples=20, database=None)
    @given(st.builds(spot_of))
    def check(count: int) -> None:
        assert count >= 1

    check()


def test_hypothesis_entry_point_registers_the_strategies_on_import() -> None:
    """liqcore declares a ``hypothesis`` entry point; in a fresh interpreter, importing
    Hypothesis registers the table (and ``HYPOTHESIS_NO_PLUGINS`` turns that off)."""
    reason = stale_entry_point("hypothesis", "liqcore")
    if reason is not None:
        pytest.skip(reason)
    (entry,) = [
        e for e in importlib.metadata.entry_points(group="hypothesis") if e.name == "liqcore"
    ]
    assert entry.value == "liqcore._hypothesis_plugin:setup"
    # The lookup table is Hypothesis' private state; reading it is the direct observation.
    # liqcore.strategies is imported first: it imports Hypothesis, which runs the hook in
    # the middle of that import (the cycle the hook module exists to avoid).
    probe = (
        "import liqcore.strategies\n"
        "from hypothesis import find, strategies as st\n"
        "from hypothesis.strategies._internal.types import _global_type_lookup\n"
        "from liqcore import Health, Portfolio\n"
        "print(Portfolio in _global_type_lookup, Health in _global_type_lookup)\n"
        "if Portfolio in _global_type_lookup:\n"
        "    print(type(find(st.from_type(Portfolio), lambda p: len(p.spot) > 0)).__name__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HYPOTHESIS_NO_PLUGINS"}
    on = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert on.stdout.split() == ["True", "True", "Portfolio"]
    off = subprocess.run(
        [sys.executable, "-c", probe],
        env={**env, "HYPOTHESIS_NO_PLUGINS": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert off.stdout.split() == ["False", "False"]


def test_the_hook_registers_exactly_the_table() -> None:
    """The entry point's type list (it cannot import the strategies when it runs) is the
    table's."""
    assert set(REGISTERED_TYPES) == set(TABLE)
    assert len(REGISTERED_TYPES) == len(TABLE)


def test_registering_twice_is_harmless() -> None:
    """The hook may run after a user's own call: the second registration replaces the first
    with an equal table."""
    register_type_strategies()
    register_type_strategies()
    assert set(type_strategies()) == set(TABLE)
