"""JSON for every public liqcore type — the one module that imports cattrs.

Wire rules (a recorded log must stay readable across releases):

* Decimals travel as strings both ways (``"120.6"``), written without trailing zeros and
  without exponent for ordinary magnitudes, so equal values give identical bytes. A JSON
  number, ``"NaN"`` or ``"Infinity"`` for a Decimal field is refused.
* Phases, commands, events and the reference margin models are tagged objects
  ``{"type": "<tag>", ...}``; the tags come from the explicit tables below
  (:data:`~liqcore.state.PHASE_TAGS`, :data:`COMMAND_TAGS`, :data:`EVENT_TAGS`,
  :data:`MARGIN_MODEL_TAGS`), never from class names, so a rename cannot break a log. A
  member of such a union carries its tag also when serialized on its own.
* Enums travel by value, dates as ISO text (``"2026-12-31"``), mappings as JSON objects,
  tuples as arrays. :func:`to_json` sorts keys and uses compact separators: its output is
  deterministic byte for byte.
* Structuring is strict: unknown fields, unknown tags, missing required fields, wrong JSON
  types (a string for an int, an int for a bool, …) raise :class:`InvalidInput` whose
  message names the path (``Health.portfolio.positions['BTC-PERP'].amount: …``). A
  validator's error from a constructor keeps its class (an ``InvalidConfig`` stays one) and
  gains the path. Fields with defaults may be omitted.

cattrs' errors are translated here, at this one boundary; nothing else in liqcore sees them.

Speed: :func:`structure` first tries a fast path compiled per type (the same checks,
without cattrs' error bookkeeping; values that recur in recordings — states, quotes,
commands — and decimal texts are built once and shared, being frozen; a complete object
is read by a constructor call and a memo key compiled per class); anything it does not
take goes to the strict path, which gives the same value or the error naming the path.
"""

from __future__ import annotations

import collections.abc
import datetime
import enum
import json
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from types import MappingProxyType, UnionType
from typing import Literal, TypeAlias, TypeVar, cast, get_args, get_origin, overload

import attrs
import cattrs
from cattrs.cols import homogenous_tuple_structure_factory, mapping_structure_factory
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    StructureHandlerNotFoundError,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn

from liqcore import inputs
from liqcore.commands import (
    Alert,
    CancelOrder,
    Command,
    PublishStateChange,
    StartAuction,
    StopAuction,
    SubmitOrder,
)
from liqcore.errors import InvalidInput
from liqcore.events import (
    AccountReset,
    AuctionRequested,
    AuctionRequestFailed,
    AuctionSettled,
    AuctionStarted,
    AuctionStopped,
    Event,
    OrderFailed,
    OrderRejected,
    StopRequestFailed,
)
from liqcore.inputs import Quote
from liqcore.margin.base import MarginModel
from liqcore.margin.portfolio import PortfolioMargin
from liqcore.margin.standard import StandardMargin
from liqcore.state import PHASE_TAGS, AccountState, Phase

__all__ = [
    "COMMAND_TAGS",
    "EVENT_TAGS",
    "MARGIN_MODEL_TAGS",
    "TAG_KEY",
    "JSONValue",
    "command_from_json",
    "converter",
    "event_from_json",
    "from_json",
    "phase_from_json",
    "structure",
    "to_json",
    "unstructure",
]

T = TypeVar("T")

JSONValue: TypeAlias = "dict[str, JSONValue] | list[JSONValue] | str | int | bool | None"
"""What :func:`unstructure` returns and :func:`structure` reads: plain JSON data."""

TAG_KEY = "type"
"""The key of the tag in a tagged object."""

COMMAND_TAGS: Mapping[type[Command], str] = MappingProxyType(
    {
        CancelOrder: "cancel_order",
        SubmitOrder: "submit_order",
        StartAuction: "start_auction",
        StopAuction: "stop_auction",
        PublishStateChange: "publish_state_change",
        Alert: "alert",
    }
)
"""Stable wire tags of the commands."""

EVENT_TAGS: Mapping[type[Event], str] = MappingProxyType(
    {
        OrderRejected: "order_rejected",
        OrderFailed: "order_failed",
        AuctionRequested: "auction_requested",
        AuctionRequestFailed: "auction_request_failed",
        AuctionStarted: "auction_started",
        StopRequestFailed: "stop_request_failed",
        AuctionStopped: "auction_stopped",
        AuctionSettled: "auction_settled",
        AccountReset: "account_reset",
    }
)
"""Stable wire tags of the events."""

MARGIN_MODEL_TAGS: Mapping[type, str] = MappingProxyType(
    {StandardMargin: "standard", PortfolioMargin: "portfolio"}
)
"""Stable wire tags of the reference margin models (a user's own model has none)."""

# Every tagged class, and per union the class of each tag.
_TAG_OF: dict[type, str] = {
    **PHASE_TAGS,
    **COMMAND_TAGS,
    **EVENT_TAGS,
    **MARGIN_MODEL_TAGS,
}
_UNIONS: dict[object, tuple[str, dict[str, type]]] = {
    Phase: ("Phase", {tag: cls for cls, tag in PHASE_TAGS.items()}),
    Command: ("Command", {tag: cls for cls, tag in COMMAND_TAGS.items()}),
    Event: ("Event", {tag: cls for cls, tag in EVENT_TAGS.items()}),
    MarginModel: ("MarginModel", {tag: cls for cls, tag in MARGIN_MODEL_TAGS.items()}),
}


class _WireError(InvalidInput):
    """A wire value of the wrong shape; reported with its path (as plain InvalidInput)."""


converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
"""The configured cattrs converter (hooks for every liqcore type; see the module docs)."""


# --- scalars -------------------------------------------------------------------------------

_DECIMAL_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,6})?", re.ASCII)
_NON_FINITE = re.compile(r"\s*[+-]?(?:s?nan\d*|inf|infinity)\s*", re.IGNORECASE)
_DATE_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_PLAIN_LIMIT = 40  # beyond 10**±40 a Decimal is written in exponent form (bounded size)


def _kind(value: object) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _decimal_text(value: Decimal) -> str:
    """The canonical text of a finite Decimal: equal values give equal text.

    No trailing zeros, no ``-0``, plain notation unless the magnitude is extreme.
    """
    text = str(value)
    if "E" not in text and (("." not in text) or text[-1] != "0") and text != "-0":
        return text  # the common case: already canonical
    if not value:
        return "0"
    if not value.is_finite():
        raise InvalidInput(f"a Decimal must be finite to be serialized, was {value!r}")
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    end = len(digits)
    while digits[end - 1] == 0:
        end -= 1
    exponent += len(digits) - end
    normal = Decimal((sign, digits[:end], exponent))
    if exponent >= -_PLAIN_LIMIT and normal.adjusted() <= _PLAIN_LIMIT:
        return format(normal, "f")
    return str(normal)


def _structure_decimal(value: object, _: object) -> Decimal:
    if type(value) is str:
        if _DECIMAL_TEXT.fullmatch(value) is not None:
            return Decimal(value)
        if _NON_FINITE.fullmatch(value) is not None:
            raise _WireError(f"must be a finite decimal string, was {value!r}")
        raise _WireError(f'must be a decimal string such as "12.5", was {value!r}')
    if type(value) is Decimal and value.is_finite():
        return value
    raise _WireError(
        f"must be a decimal string (Decimals never travel as JSON numbers), "
        f"was {_kind(value)} {value!r}"
    )


def _structure_str(value: object, _: object) -> str:
    if type(value) is str:
        return value
    raise _WireError(f"must be a string, was {_kind(value)} {value!r}")


def _structure_int(value: object, _: object) -> int:
    if type(value) is int:
        return value
    raise _WireError(f"must be an integer, was {_kind(value)} {value!r}")


def _structure_bool(value: object, _: object) -> bool:
    if type(value) is bool:
        return value
    raise _WireError(f"must be true or false, was {_kind(value)} {value!r}")


def _structure_date(value: object, _: object) -> datetime.date:
    if type(value) is str and _DATE_TEXT.fullmatch(value) is not None:
        try:
            return datetime.date.fromisoformat(value)
        except ValueError:
            pass
    raise _WireError(f"must be an ISO date YYYY-MM-DD, was {value!r}")


def _unstructure_date(value: datetime.date) -> str:
    return value.isoformat()


def _is_enum(t: object) -> bool:
    return isinstance(t, type) and issubclass(t, enum.Enum)


def _enum_structure_factory(t: type[enum.Enum]) -> Callable[[object, object], enum.Enum]:
    members = {member.value: member for member in t}
    allowed = ", ".join(repr(v) for v in members)

    def structure_enum(value: object, _: object) -> enum.Enum:
        if type(value) is str or type(value) is int:
            member = members.get(value)
            if member is not None and type(member.value) is type(value):
                return member
        raise _WireError(f"must be one of {allowed}, was {value!r}")

    return structure_enum


def _is_literal(t: object) -> bool:
    return get_origin(t) is Literal


def _literal_structure_factory(t: object) -> Callable[[object, object], object]:
    values = get_args(t)
    allowed = ", ".join(repr(v) for v in values)

    def structure_literal(value: object, _: object) -> object:
        for candidate in values:
            if type(candidate) is type(value) and candidate == value:
                return candidate
        raise _WireError(f"must be one of {allowed}, was {value!r}")

    return structure_literal


# --- containers ----------------------------------------------------------------------------


def _is_homogeneous_tuple(t: object) -> bool:
    args = get_args(t)
    return get_origin(t) is tuple and len(args) == 2 and args[1] is Ellipsis


def _tuple_structure_factory(t: object) -> Callable[[object, object], tuple[object, ...]]:
    inner = homogenous_tuple_structure_factory(cast(type, t), converter)

    def structure_tuple(value: object, _: object) -> tuple[object, ...]:
        if type(value) is not list and type(value) is not tuple:
            raise _WireError(f"must be an array, was {_kind(value)} {value!r}")
        result: tuple[object, ...] = inner(value, t)
        return result

    return structure_tuple


def _tuple_unstructure_factory(t: object) -> Callable[[tuple[object, ...]], list[object]]:
    element: Callable[[object], object] = converter.get_unstructure_hook(get_args(t)[0])

    def unstructure_tuple(value: tuple[object, ...]) -> list[object]:
        return [element(item) for item in value]

    return unstructure_tuple


def _is_mapping(t: object) -> bool:
    return get_origin(t) in (collections.abc.Mapping, dict) and len(get_args(t)) == 2


def _mapping_structure_factory(t: object) -> Callable[[object, object], dict[object, object]]:
    inner = mapping_structure_factory(cast("type[dict[object, object]]", t), converter)

    def structure_mapping(value: object, _: object) -> dict[object, object]:
        if type(value) is not dict:
            raise _WireError(f"must be an object, was {_kind(value)} {value!r}")
        result: dict[object, object] = inner(value, t)
        return result

    return structure_mapping


def _mapping_unstructure_factory(
    t: object,
) -> Callable[[Mapping[str, object]], dict[str, object]]:
    item: Callable[[object], object] = converter.get_unstructure_hook(get_args(t)[1])

    def unstructure_mapping(value: Mapping[str, object]) -> dict[str, object]:
        return {key: item(value[key]) for key in sorted(value)}

    return unstructure_mapping


# --- attrs classes and tagged unions -------------------------------------------------------


def _is_attrs(t: object) -> bool:
    return isinstance(t, type) and attrs.has(t)


def _attrs_structure_factory(cls: type[T]) -> Callable[[object, object], T]:
    inner = make_dict_structure_fn(cls, converter, _cattrs_forbid_extra_keys=False)
    tag = _TAG_OF.get(cls)
    fields = frozenset(a.name for a in attrs.fields(cast(type[attrs.AttrsInstance], cls)) if a.init)
    allowed = fields if tag is None else fields | {TAG_KEY}

    def structure_attrs(value: object, _: object) -> T:
        if type(value) is not dict:
            raise _WireError(f"must be an object, was {_kind(value)} {value!r}")
        if tag is not None and value.get(TAG_KEY) != tag:
            if TAG_KEY not in value:
                raise _WireError(f"missing the {TAG_KEY!r} tag {tag!r}")
            raise _WireError(f"{TAG_KEY!r} must be {tag!r}, was {value[TAG_KEY]!r}")
        if not allowed.issuperset(value):
            extra = ", ".join(sorted(repr(k) for k in value if k not in allowed))
            raise _WireError(f"unknown field(s) {extra}")
        return inner(value, cls)

    return structure_attrs


def _attrs_unstructure_factory(cls: type[T]) -> Callable[[T], dict[str, object]]:
    inner: Callable[[T], dict[str, object]] = make_dict_unstructure_fn(cls, converter)
    tag = _TAG_OF.get(cls)
    if tag is None:
        return inner

    def unstructure_tagged(value: T) -> dict[str, object]:
        return {TAG_KEY: tag, **inner(value)}

    return unstructure_tagged


def _is_tagged_union(t: object) -> bool:
    try:
        return t in _UNIONS
    except TypeError:  # unhashable type objects
        return False


def _union_structure_factory(t: object) -> Callable[[object, object], object]:
    name, by_tag = _UNIONS[t]
    expected = ", ".join(repr(tag) for tag in by_tag)
    hooks: dict[str, Callable[[object, type], object]] = {}

    def structure_union(value: object, _: object) -> object:
        if type(value) is not dict:
            raise _WireError(f"must be an object, was {_kind(value)} {value!r}")
        tag = value.get(TAG_KEY)
        if not isinstance(tag, str) or tag not in by_tag:
            if TAG_KEY not in value:
                raise _WireError(f"missing the {TAG_KEY!r} tag of a {name} ({expected})")
            raise _WireError(f"unknown {name} {TAG_KEY} {tag!r}; expected one of {expected}")
        cls = by_tag[tag]
        hook = hooks.get(tag)
        if hook is None:
            hook = hooks[tag] = converter.get_structure_hook(cls)
        return hook(value, cls)

    return structure_union


def _margin_model_unstructure(value: object) -> object:
    cls = type(value)
    if cls not in MARGIN_MODEL_TAGS:
        raise InvalidInput(
            f"cannot serialize the margin model {value!r}: only the reference models "
            f"({', '.join(c.__name__ for c in MARGIN_MODEL_TAGS)}) have wire tags; "
            "keep a custom model out of the serialized Config"
        )
    return converter.unstructure(value, cls)


converter.register_structure_hook(Decimal, _structure_decimal)
converter.register_unstructure_hook(Decimal, _decimal_text)
converter.register_structure_hook(str, _structure_str)
converter.register_structure_hook(int, _structure_int)
converter.register_structure_hook(bool, _structure_bool)
converter.register_structure_hook(datetime.date, _structure_date)
converter.register_unstructure_hook(datetime.date, _unstructure_date)
converter.register_structure_hook_factory(_is_enum, _enum_structure_factory)
converter.register_structure_hook_factory(_is_literal, _literal_structure_factory)
converter.register_structure_hook_factory(_is_homogeneous_tuple, _tuple_structure_factory)
converter.register_unstructure_hook_factory(_is_homogeneous_tuple, _tuple_unstructure_factory)
converter.register_structure_hook_factory(_is_mapping, _mapping_structure_factory)
converter.register_unstructure_hook_factory(_is_mapping, _mapping_unstructure_factory)
converter.register_structure_hook_factory(_is_attrs, _attrs_structure_factory)
converter.register_unstructure_hook_factory(_is_attrs, _attrs_unstructure_factory)
converter.register_structure_hook_factory(_is_tagged_union, _union_structure_factory)
converter.register_unstructure_hook_func(lambda t: t is MarginModel, _margin_model_unstructure)


# --- error translation ---------------------------------------------------------------------

_MAX_REPORTED = 8


def _leaves(error: BaseException, path: str) -> Iterator[tuple[str, BaseException]]:
    """Each underlying error with the path of the value it is about."""
    if isinstance(error, ClassValidationError):
        with_notes, without = error.group_exceptions()
        for sub, note in with_notes:
            yield from _leaves(sub, f"{path}.{note.name}")
        for sub in without:
            yield from _leaves(sub, path)
    elif isinstance(error, IterableValidationError):
        items, others = error.group_exceptions()
        for sub, item_note in items:
            yield from _leaves(sub, f"{path}[{item_note.index!r}]")
        for sub in others:
            yield from _leaves(sub, path)
    else:
        yield path, error


def _describe(path: str, error: BaseException, root: str) -> str:
    if isinstance(error, _WireError):
        return f"{path}: {error}"
    if isinstance(error, InvalidInput):  # a constructor's validator: it names its field
        return str(error) if path == root else f"{path}: {error}"
    if isinstance(error, KeyError):
        return f"{path}: missing required field"
    if isinstance(error, ForbiddenExtraKeysError):
        return f"{path}: unknown field(s) {', '.join(sorted(error.extra_fields))}"
    if isinstance(error, RecursionError):
        return f"{path}: nested too deeply"
    return f"{path}: {type(error).__name__}: {error}"


def _translate(error: BaseException, root: str) -> InvalidInput:
    leaves = list(_leaves(error, root))
    kinds = {type(leaf) for _, leaf in leaves}
    kind: type[InvalidInput] = InvalidInput
    if len(kinds) == 1:
        only = kinds.pop()
        if issubclass(only, InvalidInput) and only is not _WireError:
            kind = only
    messages = [_describe(path, leaf, root) for path, leaf in leaves[:_MAX_REPORTED]]
    if len(leaves) > _MAX_REPORTED:
        messages.append(f"and {len(leaves) - _MAX_REPORTED} more")
    return kind("; ".join(messages))


def _root_name(cls: object, data: object) -> str:
    entry = _UNIONS.get(cls) if _is_tagged_union(cls) else None
    if entry is not None:
        name, by_tag = entry
        tag = data.get(TAG_KEY) if isinstance(data, dict) else None
        member = by_tag.get(tag) if type(tag) is str else None
        return member.__name__ if member is not None else name
    return getattr(cls, "__name__", None) or repr(cls)


# --- the fast path -------------------------------------------------------------------------
#
# structure() first runs a structuring function compiled here per type, which makes the
# same checks as the hooks above (the same type tests, the same decimal and date syntax,
# the same tags, unknown and missing keys, and every constructor with its validators) but
# without cattrs' error bookkeeping. Whatever it does not handle, or any failure at all,
# goes to the strict path above, which builds the same value or raises the error naming the
# path. So the fast path never decides what is accepted: it may only be stricter, never
# looser (tests/liqcore/test_codec.py checks both paths agree, value for value, on random
# data and on damaged data).

_Fast: TypeAlias = "Callable[[object], object]"


class _NotFast(Exception):
    """The fast path does not take this value; the strict path decides."""


_FAST: dict[object, _Fast] = {}
_MEMOIZED: frozenset[type] = frozenset(
    {AccountState, Quote, PublishStateChange, SubmitOrder, CancelOrder}
)
"""The classes whose values recur in recordings (see :func:`_memoized`): a wallet's state
is the next record's ``previous``; the wallets of a poll share its quotes; an outcomes
record repeats the commands of the decision before it."""
_CACHE_LIMIT = 1 << 16
_DECIMALS: dict[str, Decimal] = {}
"""Decimal text already parsed (Decimals are immutable: equal text gives an equal value)."""


def _fast_decimal(value: object) -> Decimal:
    if type(value) is not str:
        raise _NotFast
    found = _DECIMALS.get(value)
    if found is not None:
        return found
    if _DECIMAL_TEXT.fullmatch(value) is None:
        raise _NotFast
    if len(_DECIMALS) >= _CACHE_LIMIT:
        _DECIMALS.clear()
    result = _DECIMALS[value] = Decimal(value)
    return result


def _fast_exact(kind: type) -> _Fast:
    def fast_exact(value: object) -> object:
        if type(value) is not kind:
            raise _NotFast
        return value

    return fast_exact


def _fast_optional(inner: _Fast) -> _Fast:
    def fast_optional(value: object) -> object:
        return None if value is None else inner(value)

    return fast_optional


def _fast_enum(t: type[enum.Enum]) -> _Fast:
    members = {(type(m.value), m.value): m for m in t}

    def fast_enum(value: object) -> object:
        kind = type(value)
        if kind is not str and kind is not int:
            raise _NotFast
        return members[kind, value]

    return fast_enum


def _fast_literal(t: object) -> _Fast:
    values = {(type(v), v): v for v in get_args(t)}

    def fast_literal(value: object) -> object:
        try:
            return values[type(value), value]
        except (KeyError, TypeError):
            raise _NotFast from None

    return fast_literal


def _fast_tuple(inner: _Fast) -> _Fast:
    def fast_tuple(value: object) -> object:
        if type(value) is not list:
            raise _NotFast
        return tuple([inner(item) for item in value])

    return fast_tuple


def _fast_mapping(key: _Fast, item: _Fast) -> _Fast:
    def fast_mapping(value: object) -> object:
        if type(value) is not dict:
            raise _NotFast
        return {key(k): item(v) for k, v in value.items()}

    return fast_mapping


def _memo_key(value: dict[str, object]) -> tuple[object, ...]:
    """A key equal for two JSON objects only if they are the same, type for type (``1``,
    ``1.0`` and ``True`` are equal in Python, so a non-string scalar carries its type):
    strings, ``None``, integers, booleans, objects and arrays of strings; anything else
    raises :class:`_NotFast` (no key: the value is built, not looked up)."""
    parts: list[object] = []
    for key, item in value.items():
        kind = type(item)
        if kind is str or item is None:
            parts.append((key, item))
        elif kind is dict:
            parts.append((key, _memo_key(cast("dict[str, object]", item))))
        elif kind is int or kind is bool:
            parts.append((key, kind, item))
        elif kind is list and {type(x) for x in cast("list[object]", item)} <= {str}:
            parts.append((key, list, tuple(cast("list[str]", item))))
        else:
            raise _NotFast
    return tuple(parts)


_MEMOS: dict[type, dict[object, object]] = {}
"""Per class, values already built from a JSON object (frozen, so they may be shared)."""


def _typed_key(item: object) -> object:
    """One JSON value as a memo key component, as :func:`_memo_key` keys it."""
    kind = type(item)
    if kind is str or item is None:
        return item
    if kind is dict:
        return _memo_key(cast("dict[str, object]", item))
    if kind is int or kind is bool:
        return (kind, item)
    if kind is list and {type(x) for x in cast("list[object]", item)} <= {str}:
        return (list, tuple(cast("list[str]", item)))
    raise _NotFast


_COMPLETE = object()
"""The first item of a compiled key: it never equals a :func:`_memo_key` pair."""


def _field_key(cls: type, textual: dict[str, bool]) -> Callable[[dict[str, object]], object]:
    """The memo key of a complete ``cls`` object (every field present, no unknown key),
    compiled: a textual field's value as it is (only a string equals a string), any other
    through :func:`_typed_key`; otherwise (an object missing a field) :func:`_memo_key`.
    The component of a field sits at a fixed place, so two keys are equal only if each
    field's values are the same JSON, type for type."""
    names = list(textual)
    tag = _TAG_OF.get(cls)
    parts = ", ".join(
        f"value[{name!r}]" if textual[name] else f"_typed(value[{name!r}])" for name in names
    )
    source = (
        "def field_key(value):\n"
        f"    if len(value) == {len(names) + (tag is not None)} and _allowed.issuperset(value):\n"
        f"        return (_COMPLETE, {parts})\n"
        "    return _memo_key(value)\n"
    )
    namespace: dict[str, object] = {
        "_typed": _typed_key,
        "_COMPLETE": _COMPLETE,
        "_memo_key": _memo_key,
        "_allowed": frozenset(names) | ({TAG_KEY} if tag else set()),
    }
    exec(compile(source, f"<liqcore.codec key {cls.__name__}>", "exec"), namespace)
    return cast("Callable[[dict[str, object]], object]", namespace["field_key"])


def _memoized(cls: type, build: _Fast, textual: bool) -> _Fast:
    """``build`` with a bounded memo: recordings repeat values — a wallet's state is the
    next record's ``previous``, every wallet of a poll carries the same quotes.

    ``textual``: every field of ``cls`` is built only from a string (or ``null``, where
    optional), so the object's items themselves are a key: a memoized value was built from
    strings and ``null``s, and only a string equals a string, only ``null`` equals ``null``
    — equal items are then the same JSON, type for type (no :func:`_memo_key` needed). An
    unhashable item (a damaged value) is built, not looked up.
    """
    memo = _MEMOS.setdefault(cls, {})
    hints = typing.get_type_hints(cls)
    fields = attrs.fields(cast(type[attrs.AttrsInstance], cls))
    field_key = _field_key(cls, {a.name: _is_textual(hints[a.name]) for a in fields if a.init})

    def fast_memoized(value: object) -> object:
        if type(value) is not dict:
            raise _NotFast
        try:
            key = tuple(value.items()) if textual else field_key(value)
            found = memo.get(key)
        except (_NotFast, TypeError):
            return build(value)
        if found is None:
            if len(memo) >= _CACHE_LIMIT:
                memo.clear()
            found = memo[key] = build(value)
        return found

    return fast_memoized


def _fast_attrs(cls: type) -> _Fast:
    built = _fast_attrs_build(cls)
    if cls not in _MEMOIZED:
        return built
    hints = typing.get_type_hints(cls)
    fields = attrs.fields(cast(type[attrs.AttrsInstance], cls))
    textual = all(_is_textual(hints[a.name]) for a in fields if a.init)
    return _memoized(cls, built, textual)


def _is_textual(t: object) -> bool:
    """Whether the fast path builds a ``t`` only from a JSON string (or ``null`` for an
    optional ``t``): a decimal, a string, an enum or literal whose values are all strings."""
    if t is Decimal or t is str:
        return True
    if _is_enum(t):
        return all(type(m.value) is str for m in cast("type[enum.Enum]", t))
    if _is_literal(t):
        return all(type(v) is str for v in get_args(t))
    args = get_args(t)
    if get_origin(t) in (typing.Union, UnionType) and len(args) == 2 and type(None) in args:
        other = args[0] if args[1] is type(None) else args[1]
        return _is_textual(other)
    return False


def _fast_attrs_build(cls: type) -> _Fast:
    hints = typing.get_type_hints(cls)
    fields = [a for a in attrs.fields(cast(type[attrs.AttrsInstance], cls)) if a.init]
    plan = [
        (a.name, a.alias, _fast_hook(hints[a.name]), a.default is attrs.NOTHING) for a in fields
    ]
    required = frozenset(name for name, _, _, needed in plan if needed)
    tag = _TAG_OF.get(cls)
    allowed = frozenset(name for name, _, _, _ in plan) | ({TAG_KEY} if tag else set())
    complete = len(allowed)

    def fast_attrs(value: object) -> object:
        if type(value) is not dict:
            raise _NotFast
        if tag is not None and value.get(TAG_KEY) != tag:
            raise _NotFast
        if not allowed.issuperset(value) or not required.issubset(value):
            raise _NotFast
        kwargs = {alias: hook(value[name]) for name, alias, hook, _ in plan if name in value}
        return cls(**kwargs)

    # The common case compiled: every field present (as many keys as allowed names, none
    # unknown), so each is read by name and passed straight to the constructor — the same
    # checks and the same call as fast_attrs, without building the keyword dict.
    names = {f"_h{i}": hook for i, (_, _, hook, _) in enumerate(plan)}
    call = ", ".join(
        f"{alias}=_h{i}(value[{name!r}])" for i, (name, alias, _, _) in enumerate(plan)
    )
    tag_check = "" if tag is None else f" or value.get({TAG_KEY!r}) != {tag!r}"
    source = (
        "def fast_attrs_complete(value):\n"
        "    if type(value) is not dict:\n"
        "        raise _NotFast\n"
        f"    if len(value) != {complete} or not _allowed.issuperset(value){tag_check}:\n"
        "        return _general(value)\n"
        f"    return _cls({call})\n"
    )
    namespace: dict[str, object] = {
        **names,
        "_NotFast": _NotFast,
        "_allowed": allowed,
        "_general": fast_attrs,
        "_cls": cls,
    }
    exec(compile(source, f"<liqcore.codec fast {cls.__name__}>", "exec"), namespace)
    return cast(_Fast, namespace["fast_attrs_complete"])


def _fast_union(t: object) -> _Fast:
    _, by_tag = _UNIONS[t]
    hooks = {tag: _fast_hook(cls) for tag, cls in by_tag.items()}

    def fast_union(value: object) -> object:
        if type(value) is not dict:
            raise _NotFast
        tag = value.get(TAG_KEY)
        if type(tag) is not str or tag not in hooks:
            raise _NotFast
        return hooks[tag](value)

    return fast_union


def _fast_strict(t: object) -> _Fast:
    """A type the fast path does not compile: its strict hook (looked up when first used:
    the strict path reports a type it cannot build)."""

    def fast_strict(value: object) -> object:
        return converter.get_structure_hook(t)(value, t)

    return fast_strict


def _fast_hook(t: object) -> _Fast:
    """The fast structuring function of ``t`` (built once, then cached)."""
    try:
        found = _FAST.get(t)
    except TypeError:  # an unhashable type object
        return _fast_strict(t)
    if found is not None:
        return found

    # A placeholder first: a recursive type refers to itself while it is being built.
    def placeholder(value: object) -> object:
        return _FAST[t](value)

    _FAST[t] = placeholder
    _FAST[t] = built = _build_fast(t)
    return built


def _build_fast(t: object) -> _Fast:
    if t is Decimal:
        return _fast_decimal
    if t is str or t is int or t is bool:
        return _fast_exact(cast(type, t))
    if _is_enum(t):
        return _fast_enum(cast("type[enum.Enum]", t))
    if _is_literal(t):
        return _fast_literal(t)
    if _is_tagged_union(t):
        return _fast_union(t)
    args = get_args(t)
    if get_origin(t) in (typing.Union, UnionType) and len(args) == 2 and type(None) in args:
        other = args[0] if args[1] is type(None) else args[1]
        return _fast_optional(_fast_hook(other))
    if _is_homogeneous_tuple(t):
        return _fast_tuple(_fast_hook(args[0]))
    if _is_mapping(t):
        return _fast_mapping(_fast_hook(args[0]), _fast_hook(args[1]))
    if _is_attrs(t):
        return _fast_attrs(cast(type, t))
    return _fast_strict(t)


def fast_structurer(cls: object) -> Callable[[object], object]:
    """The fast path of :func:`structure` for ``cls``, for a caller that structures many
    values: it returns the value :func:`structure` would return, or raises *some*
    exception (not necessarily :class:`InvalidInput`, and without a path) for anything it
    does not take — then call :func:`structure` for the value or the error naming the path.
    """
    return _fast_hook(cls)


def fast_structure(data: object, cls: object) -> object:
    """:func:`structure` by the fast path only: the value, or :class:`InvalidInput` without
    a path when the fast path does not take ``data`` (then :func:`structure` says why).

    For tests and benchmarks; :func:`structure` is what callers use.
    """
    try:
        return _fast_hook(cls)(data)
    except Exception as error:
        raise InvalidInput(f"the fast path does not take this {cls!r}") from error


def strict_structure(data: object, cls: object) -> object:
    """:func:`structure` by the strict path only (cattrs with detailed validation), as it
    was before the fast path: for tests that compare the two."""
    try:
        hook = converter.get_structure_hook(cls)
        return hook(data, cls)
    except StructureHandlerNotFoundError:
        raise InvalidInput(f"liqcore.codec cannot build a {cls!r}") from None
    except Exception as error:
        raise _translate(error, _root_name(cls, data)) from error


# --- the trusted path ----------------------------------------------------------------------
#
# For data this library's own to_json wrote from valid values, which the caller has verified
# is intact (liqshell keeps a digest of each record's bytes): the same frozen objects, built
# without running validators again — no type checks, no validators, no ``__attrs_post_init__``
# (liqcore's only validate) — each field set on a new instance by a builder compiled per
# class. Converters still run (the read-only mapping views), so a value equals the validated
# one field for field and type for type. Anything of an unexpected shape (a missing field, a
# key more, a type this path does not compile) raises: the caller then takes structure().
# Separate caches from the fast path's: a trusted value never answers validated decoding.

_TRUSTED: dict[object, _Fast] = {}
_TRUSTED_DECIMALS: dict[str, Decimal] = {}
_TRUSTED_MEMOS: dict[type, dict[object, object]] = {}


class _DecimalMemo(dict[str, Decimal]):
    """Decimal text already parsed: a hit is a plain subscript (no call)."""

    def __missing__(self, key: object) -> Decimal:
        if type(key) is not str:
            raise _NotFast
        if len(self) >= _CACHE_LIMIT:
            self.clear()
        value = self[key] = Decimal(key)
        return value


_TRUSTED_DECIMALS = _DecimalMemo()


_READ_ONLY_VIEWS: frozenset[object] = frozenset({inputs._positions, inputs._spot, inputs._quotes})
"""Converters that make a read-only view of a copy of a dict (``MappingProxyType``): the
trusted path wraps the dict it has just built directly, with the same result."""


def _trusted_same(value: object) -> object:
    return value


class _Source:
    """The source of a compiled trusted builder: one expression per value, so a decimal, an
    enum, an optional, a tuple or a mapping is read inline, without a call of its own."""

    def __init__(self) -> None:
        self.namespace: dict[str, object] = {"_D": _TRUSTED_DECIMALS}
        self.count = 0

    def name(self, prefix: str, value: object | None = None) -> str:
        self.count += 1
        name = f"{prefix}{self.count}"
        if value is not None:
            self.namespace[name] = value
        return name

    def expr(self, t: object, src: str) -> str:
        """The expression building a ``t`` from the JSON value ``src`` (a name or a
        subscript, evaluated once)."""
        if t is Decimal:
            return f"_D[{src}]"
        if t is str or t is int or t is bool or _is_literal(t) or _is_scalar_union(t):
            return src
        if _is_enum(t):
            members = {m.value: m for m in cast("type[enum.Enum]", t)}
            return f"{self.name('_e', members)}[{src}]"
        args = get_args(t)
        if get_origin(t) in (typing.Union, UnionType) and len(args) == 2 and type(None) in args:
            other = args[0] if args[1] is type(None) else args[1]
            temp = self.name("_t")
            inner = self.expr(other, temp)
            if inner == temp:
                return src
            return f"(None if ({temp} := {src}) is None else {inner})"
        if _is_homogeneous_tuple(t):
            item = self.name("_x")
            inner = self.expr(args[0], item)
            if inner == item:
                return f"tuple({src})"
            return f"tuple([{inner} for {item} in {src}])"
        if _is_mapping(t):
            key, item = self.name("_k"), self.name("_v")
            key_expr, item_expr = self.expr(args[0], key), self.expr(args[1], item)
            if key_expr == key and item_expr == item:
                return f"dict({src})"
            return f"{{{key_expr}: {item_expr} for {key}, {item} in {src}.items()}}"
        if t is datetime.date:
            return f"{self.name('_f', datetime.date.fromisoformat)}({src})"
        if _is_tagged_union(t) or _is_attrs(t):
            return f"{self.name('_h', _trusted_hook(t))}({src})"
        return f"{self.name('_h', _trusted_validated(t))}({src})"


def _is_scalar_union(t: object) -> bool:
    """``int | str`` and the like: JSON scalars kept as they are (a feed cursor)."""
    args = get_args(t)
    return (
        get_origin(t) in (typing.Union, UnionType)
        and len(args) > 1
        and all(arg in (int, str, type(None)) for arg in args)
    )


def _trusted_union(t: object) -> _Fast:
    _, by_tag = _UNIONS[t]
    hooks = {tag: _trusted_hook(cls) for tag, cls in by_tag.items()}

    def trusted_union(value: object) -> object:
        return hooks[cast("dict[str, str]", value)[TAG_KEY]](value)

    return trusted_union


def _trusted_validated(t: object) -> _Fast:
    """A type the trusted path does not compile: :func:`structure` (validated)."""

    def trusted_validated(value: object) -> object:
        return structure(value, t)  # type: ignore[call-overload]

    return trusted_validated


def _trusted_attrs(cls: type) -> _Fast:
    """The builder of a complete ``cls`` object (every field present, as :func:`to_json`
    writes it): a new instance with each field set, converters applied, validators not run.
    A class with a field outside ``__init__`` is built by its constructor (validated)."""
    every = attrs.fields(cast(type[attrs.AttrsInstance], cls))
    if any(not a.init for a in every):
        return _trusted_validated(cls)
    hints = typing.get_type_hints(cls)
    tag = _TAG_OF.get(cls)
    code = _Source()
    lines = []
    for a in every:
        read = code.expr(hints[a.name], f"value[{a.name!r}]")
        if a.converter in _READ_ONLY_VIEWS and read.startswith(("{", "dict(")):
            # The converter's own result for a fresh dict: a read-only view of it (the
            # dict just built is not shared, so it need not be copied first).
            read = f"_view({read})"
        elif a.converter is not None:
            if not callable(a.converter) or isinstance(a.converter, attrs.Converter):
                return _trusted_validated(cls)
            read = f"{code.name('_c', a.converter)}({read})"
        slot = getattr(cls, a.name, None)
        if type(slot) is types.MemberDescriptorType:  # a slot: set through its descriptor
            lines.append(f"    {code.name('_s', slot.__set__)}(obj, {read})\n")
        else:
            lines.append(f"    _set(obj, {a.name!r}, {read})\n")
    tag_check = "" if tag is None else f" or value[{TAG_KEY!r}] != {tag!r}"
    source = (
        "def trusted_attrs(value):\n"
        f"    if len(value) != {len(every) + (tag is not None)}{tag_check}:\n"
        "        raise _NotFast\n"
        "    obj = _new(_cls)\n" + "".join(lines) + "    return obj\n"
    )
    namespace = code.namespace
    namespace.update(
        _NotFast=_NotFast,
        _cls=cls,
        _new=object.__new__,
        _set=object.__setattr__,
        _view=MappingProxyType,
    )
    exec(compile(source, f"<liqcore.codec trusted {cls.__name__}>", "exec"), namespace)
    built = cast(_Fast, namespace["trusted_attrs"])
    if cls not in _MEMOIZED or not all(_is_textual(hints[a.name]) for a in every):
        return built
    # A class built from strings only (a quote): its items are the key, as in _memoized.
    memo = _TRUSTED_MEMOS.setdefault(cls, {})

    def trusted_memoized(value: object) -> object:
        key = tuple(cast("dict[str, object]", value).items())
        found = memo.get(key)
        if found is None:
            if len(memo) >= _CACHE_LIMIT:
                memo.clear()
            found = memo[key] = built(value)
        return found

    return trusted_memoized


def _trusted_hook(t: object) -> _Fast:
    """The trusted builder of ``t`` (built once, then cached)."""
    try:
        found = _TRUSTED.get(t)
    except TypeError:  # an unhashable type object
        return _trusted_validated(t)
    if found is not None:
        return found

    def placeholder(value: object) -> object:  # a recursive type refers to itself
        return _TRUSTED[t](value)

    _TRUSTED[t] = placeholder
    _TRUSTED[t] = built = _build_trusted(t)
    return built


def _build_trusted(t: object) -> _Fast:
    if _is_tagged_union(t):
        return _trusted_union(t)
    if _is_attrs(t):
        return _trusted_attrs(cast(type, t))
    code = _Source()
    body = code.expr(t, "value")
    if body == "value":
        return _trusted_same
    if body == "_D[value]":
        return cast(_Fast, _TRUSTED_DECIMALS.__getitem__)
    source = f"def trusted_value(value):\n    return {body}\n"
    exec(compile(source, f"<liqcore.codec trusted {t!r}>", "exec"), code.namespace)
    return cast(_Fast, code.namespace["trusted_value"])


def trusted_structurer(cls: object) -> Callable[[object], object]:
    """A builder of ``cls`` values from JSON data that :func:`to_json` wrote from valid
    values and that the caller has verified is intact (liqshell keeps a digest of each
    record's bytes): the value :func:`structure` would build, equal field for field and type
    for type, but without running the validators again — several times faster.

    Never give it data of unknown origin: it does not check what it builds (a wrong type or
    an invalid value could pass). For data of an unexpected shape it raises *some* exception
    (without a path); then call :func:`structure`, which decides and names the path.
    """
    return _trusted_hook(cls)


def trusted_structure(data: object, cls: object) -> object:
    """:func:`trusted_structurer` ``(cls)(data)``, or :class:`InvalidInput` without a path
    when it does not take ``data``. For tests and benchmarks."""
    try:
        return _trusted_hook(cls)(data)
    except Exception as error:
        raise InvalidInput(f"the trusted path does not take this {cls!r}") from error


# --- public API ----------------------------------------------------------------------------


def unstructure(obj: object) -> JSONValue:
    """``obj`` as plain JSON data (dicts with str keys, lists, str, int, bool, None).

    Raises :class:`InvalidInput` for a value that has no wire form (a custom margin model).
    """
    return cast("JSONValue", converter.unstructure(obj))


@overload
def structure(data: object, cls: type[T]) -> T: ...
@overload
def structure(data: object, cls: UnionType) -> object: ...
def structure(data: object, cls: type[T] | UnionType) -> T | object:
    """Build a ``cls`` from plain JSON data, or raise :class:`InvalidInput` naming the path.

    ``cls`` may also be one of the unions :data:`~liqcore.state.Phase`,
    :data:`~liqcore.commands.Command` or :data:`~liqcore.events.Event` (then the result is
    typed ``object``; :func:`phase_from_json` and friends are typed precisely).

    A fast path compiled per type builds the value when it can (see the module docs);
    whatever it does not take is structured by the strict path, which names the path of
    an error.
    """
    try:
        return _fast_hook(cls)(data)
    except Exception:  # the strict path below decides, and says why
        pass
    try:
        hook = converter.get_structure_hook(cls)
        result: T | object = hook(data, cls)
    except StructureHandlerNotFoundError:
        raise InvalidInput(f"liqcore.codec cannot build a {cls!r}") from None
    except Exception as error:
        raise _translate(error, _root_name(cls, data)) from error
    return result


def to_json(obj: object) -> str:
    """Compact JSON with sorted keys: equal inputs give identical text."""
    data = unstructure(obj)
    try:
        return _ENCODER.encode(data)
    except (TypeError, ValueError) as error:
        raise InvalidInput(f"cannot serialize {type(obj).__name__}: {error}") from None


# Built once: json.dumps/json.loads with options build a new encoder/decoder per call.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)


def _reject_constant(name: str) -> object:
    raise InvalidInput(f"JSON must not contain {name}")


def _unique_object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        counts = collections.Counter(key for key, _ in pairs)
        duplicates = sorted(key for key, count in counts.items() if count > 1)
        raise InvalidInput(f"JSON object has duplicate keys {duplicates}")
    return result


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_unique_object)


def _loads(text: str | bytes) -> object:
    if not isinstance(text, str | bytes | bytearray):
        raise InvalidInput(f"JSON text must be str or bytes, was {type(text).__name__}")
    try:
        if not isinstance(text, str):
            text = text.decode(json.detect_encoding(text), "surrogatepass")  # as json.loads
        data: object = _DECODER.decode(text)
    except RecursionError:
        raise InvalidInput("JSON nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, huge ints
        if isinstance(error, InvalidInput):
            raise
        raise InvalidInput(f"not valid JSON: {error}") from None
    return data


@overload
def from_json(text: str | bytes, cls: type[T]) -> T: ...
@overload
def from_json(text: str | bytes, cls: UnionType) -> object: ...
def from_json(text: str | bytes, cls: type[T] | UnionType) -> T | object:
    """Parse ``text`` into a ``cls``: the inverse of :func:`to_json`.

    Raises :class:`InvalidInput` (or the validator's subclass of it) naming the path.
    """
    return structure(_loads(text), cls)


def phase_from_json(text: str | bytes) -> Phase:
    """Parse a tagged phase (``{"type": "pre_liquidation", ...}``)."""
    return typing.cast(Phase, from_json(text, Phase))


def command_from_json(text: str | bytes) -> Command:
    """Parse a tagged command (``{"type": "submit_order", ...}``)."""
    return typing.cast(Command, from_json(text, Command))


def event_from_json(text: str | bytes) -> Event:
    """Parse a tagged event (``{"type": "auction_started", ...}``)."""
    return typing.cast(Event, from_json(text, Event))
