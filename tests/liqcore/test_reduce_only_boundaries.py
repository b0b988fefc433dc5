"""liqcore.reduce_only.is_position_reduce_only at its boundaries (issue 9).

The hand cases in test_reduce_only.py use positions of ±1 and more; these use longs and
shorts between 0 and 1 and a new amount of exactly 0, where ``current > 1`` for
``current > 0`` or ``new <= 0`` for ``new < 0`` would answer differently.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from liqcore.reduce_only import is_position_reduce_only


@pytest.mark.parametrize(
    ("current", "new", "expected"),
    [
        ("0.5", "0.25", True),  # a long below 1 shrinks
        ("0.5", "0", True),  # closed exactly
        ("0.5", "-0.1", False),  # crosses zero
        ("0.5", "-0.5", False),  # crosses zero to the same size
        ("0.5", "0.5", False),  # no change
        ("0.5", "0.75", False),  # grows
        ("0.00000001", "0", True),  # the smallest long, closed
        ("-0.5", "0", True),  # a short below 1 closed exactly
        ("-0.5", "-0.25", True),
        ("-0.5", "0.1", False),  # crosses zero
        ("-0.5", "-0.5", False),
        ("0", "0", False),  # nothing to reduce
        ("0", "-0.5", False),
        ("0", "0.5", False),
        ("0.0", "-0.0", False),  # a zero of either sign is zero
    ],
)
def test_is_position_reduce_only_between_zero_and_one(
    current: str, new: str, expected: bool
) -> None:
    assert is_position_reduce_only(Decimal(current), Decimal(new)) is expected
