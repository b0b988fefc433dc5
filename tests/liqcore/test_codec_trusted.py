"""The trusted path of liqcore.codec: on data to_json wrote from valid values it builds the
very value the validated path builds, field for field and type for type."""

from __future__ import annotations

import json
import typing
from decimal import Decimal
from types import MappingProxyType

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from liqcore.codec import strict_structure, to_json, trusted_structure
from liqcore.commands import Command
from liqcore.errors import InvalidInput
from liqcore.events import Event
from liqcore.state import AccountState, Phase
from tests.liqcore.test_codec import CASES


def assert_same(a: object, b: object, path: str = "value") -> None:
    """Equal and of the same type at every level (a Decimal by its exact text, a mapping
    view as a view)."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} vs {type(b).__name__}"
    if attrs.has(type(a)):
        for field in attrs.fields(type(a)):
            assert_same(getattr(a, field.name), getattr(b, field.name), f"{path}.{field.name}")
    elif isinstance(a, dict | MappingProxyType):
        assert list(a) == list(typing.cast(dict[object, object], b)), path
        for key in a:
            assert_same(a[key], typing.cast(dict[object, object], b)[key], f"{path}[{key!r}]")
    elif isinstance(a, tuple):
        assert len(a) == len(typing.cast(tuple[object, ...], b)), path
        for i, (x, y) in enumerate(zip(a, typing.cast(tuple[object, ...], b), strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, Decimal):
        assert str(a) == str(b), path
    else:
        assert a == b, path


@pytest.mark.parametrize("case", sorted(CASES))
@given(data=st.data())
def test_trusted_structure_of_any_value_equals_the_validated_path(
    case: str, data: st.DataObject
) -> None:
    """Twice (the second time from the trusted memos): equal field for field, type for type."""
    value = data.draw(CASES[case])
    plain = json.loads(to_json(value))
    strict = strict_structure(plain, type(value))
    for _ in range(2):
        trusted = trusted_structure(json.loads(to_json(value)), type(value))
        assert_same(trusted, strict)
        assert trusted == value
        assert to_json(trusted) == to_json(value)


@given(data=st.data(), union=st.sampled_from(["Phase", "Command", "Event"]))
def test_trusted_structure_of_a_union_member_equals_the_validated_path(
    data: st.DataObject, union: str
) -> None:
    cls = {"Phase": Phase, "Command": Command, "Event": Event}[union]
    value = data.draw(CASES[union])
    plain = json.loads(to_json(value))
    assert_same(trusted_structure(plain, cls), strict_structure(plain, cls))


def test_trusted_structure_refuses_an_object_missing_a_field_or_with_one_more() -> None:
    state = {"wallet": "0xa", "margin_mode": "standard", "updated_at": 1}
    with pytest.raises(InvalidInput, match="trusted path"):
        trusted_structure(state, AccountState)
    full = json.loads(to_json(strict_structure(state, AccountState)))
    with pytest.raises(InvalidInput, match="trusted path"):
        trusted_structure({**full, "x": 1}, AccountState)
