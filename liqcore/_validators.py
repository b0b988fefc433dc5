"""attrs validators shared by the core data classes.

Each raises :class:`~liqcore.errors.InvalidInput` naming ``Class.field`` and the value, so a
bad observation is reported precisely at the boundary where it was built.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import TypeVar

import attrs

from liqcore.errors import InvalidInput

T = TypeVar("T")


def _name(inst: object, attribute: attrs.Attribute[T]) -> str:
    return f"{type(inst).__name__}.{attribute.name}"


def decimal(inst: object, attribute: attrs.Attribute[Decimal], value: object) -> None:
    """A finite Decimal (floats are refused: money never passes through binary floats)."""
    if type(value) is not Decimal or not value.is_finite():
        raise InvalidInput(f"{_name(inst, attribute)} must be a finite Decimal, was {value!r}")


def non_negative(inst: object, attribute: attrs.Attribute[Decimal], value: object) -> None:
    """A finite Decimal ≥ 0."""
    decimal(inst, attribute, value)
    assert isinstance(value, Decimal)
    if value < 0:
        raise InvalidInput(f"{_name(inst, attribute)} must be ≥ 0, was {value}")


def positive(inst: object, attribute: attrs.Attribute[Decimal], value: object) -> None:
    """A finite Decimal > 0."""
    decimal(inst, attribute, value)
    assert isinstance(value, Decimal)
    if value <= 0:
        raise InvalidInput(f"{_name(inst, attribute)} must be > 0, was {value}")


def optional_decimal(
    inst: object, attribute: attrs.Attribute[Decimal | None], value: object
) -> None:
    """``None`` or a finite Decimal."""
    if value is not None:
        decimal(inst, attribute, value)  # type: ignore[arg-type]


def optional_non_negative(
    inst: object, attribute: attrs.Attribute[Decimal | None], value: object
) -> None:
    """``None`` or a finite Decimal ≥ 0."""
    if value is not None:
        non_negative(inst, attribute, value)  # type: ignore[arg-type]


def integer(inst: object, attribute: attrs.Attribute[int], value: object) -> None:
    """An ``int`` (not a bool): milliseconds, ids, basis points."""
    if type(value) is not int:
        raise InvalidInput(f"{_name(inst, attribute)} must be an int, was {value!r}")


def non_negative_int(inst: object, attribute: attrs.Attribute[int], value: object) -> None:
    """An ``int`` ≥ 0."""
    integer(inst, attribute, value)
    assert isinstance(value, int)
    if value < 0:
        raise InvalidInput(f"{_name(inst, attribute)} must be ≥ 0, was {value}")


def optional_int(inst: object, attribute: attrs.Attribute[int | None], value: object) -> None:
    """``None`` or an ``int``."""
    if value is not None:
        integer(inst, attribute, value)  # type: ignore[arg-type]


def text(inst: object, attribute: attrs.Attribute[str], value: object) -> None:
    """A non-empty ``str``."""
    if type(value) is not str or not value:
        raise InvalidInput(f"{_name(inst, attribute)} must be a non-empty str, was {value!r}")


def any_text(inst: object, attribute: attrs.Attribute[str], value: object) -> None:
    """A ``str``, possibly empty (free-form reasons)."""
    if type(value) is not str:
        raise InvalidInput(f"{_name(inst, attribute)} must be a str, was {value!r}")


def optional_text(inst: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    """``None`` or a non-empty ``str``."""
    if value is not None:
        text(inst, attribute, value)  # type: ignore[arg-type]


def boolean(inst: object, attribute: attrs.Attribute[bool], value: object) -> None:
    """A ``bool``."""
    if type(value) is not bool:
        raise InvalidInput(f"{_name(inst, attribute)} must be a bool, was {value!r}")


def instance_of(
    cls: type[T] | tuple[type, ...],
) -> Callable[[object, attrs.Attribute[T], object], None]:
    """An instance of ``cls`` (enums, nested core classes)."""

    def check(inst: object, attribute: attrs.Attribute[T], value: object) -> None:
        if not isinstance(value, cls):
            names = cls.__name__ if isinstance(cls, type) else " | ".join(c.__name__ for c in cls)
            raise InvalidInput(f"{_name(inst, attribute)} must be {names}, was {value!r}")

    return check


def str_tuple(inst: object, attribute: attrs.Attribute[tuple[str, ...]], value: object) -> None:
    """A tuple of non-empty strings."""
    if type(value) is not tuple or not all(type(v) is str and v for v in value):
        raise InvalidInput(
            f"{_name(inst, attribute)} must be a tuple of non-empty str, was {value!r}"
        )
