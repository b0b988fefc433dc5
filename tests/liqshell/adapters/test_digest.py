"""Schema 3: a record's digest. An intact record is built without validation (equal, type
for type, to the validated record); a damaged digest falls back to validation; a damaged
record fails as before, naming the field and the line."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liqcore.errors import InvalidInput
from liqshell import adapters
from liqshell.adapters import (
    DIGEST_KEY,
    intact,
    record_from_data,
    record_from_json,
    record_to_json,
)
from liqshell.adapters.jsonl import read_entries
from liqshell.ports import RECORD_SCHEMA, Record
from tests.liqcore.test_codec_trusted import assert_same
from tests.liqshell.adapters.store_contract import decision, state_of
from tests.liqshell.adapters.test_jsonl import records

_SLOW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _validated(text: str) -> Record:
    return record_from_data(json.loads(text))


@_SLOW
@given(record=records())
def test_an_intact_record_is_built_trusted_equal_type_for_type_to_the_validated_one(
    record: Record,
) -> None:
    text = record_to_json(record)
    assert intact(text)
    assert intact(text + "\n")
    data = json.loads(text)
    assert data["schema"] == RECORD_SCHEMA == 3
    assert len(data[DIGEST_KEY]) == 32
    assert text.startswith(record_to_json(record).split(f',"{DIGEST_KEY}"')[0])
    trusted = record_from_json(text)
    assert_same(trusted, _validated(text))
    assert trusted == record


def test_an_intact_record_skips_validation_and_a_damaged_digest_takes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The trusted path is taken (validation refused here still reads the record) only
    while the digest matches."""
    record = decision(state_of("0xa", 1), 1)
    text = record_to_json(record)

    def refuse(data: object) -> Record:
        raise InvalidInput("validated")

    monkeypatch.setattr(adapters, "record_from_data", refuse)
    assert record_from_json(text) == record
    flipped = text[:-3] + ("0" if text[-3] != "0" else "1") + text[-2:]
    assert not intact(flipped)
    with pytest.raises(InvalidInput, match="validated"):
        record_from_json(flipped)


@_SLOW
@given(record=records(), data=st.data())
def test_a_damaged_digest_or_none_falls_back_to_the_validated_record(
    record: Record, data: st.DataObject
) -> None:
    text = record_to_json(record)
    at = data.draw(st.integers(len(text) - 34, len(text) - 3))
    char = data.draw(st.sampled_from("0123456789abcdefX"))
    damaged = text[:at] + char + text[at + 1 :]
    if damaged != text:
        assert not intact(damaged)
    assert_same(record_from_json(damaged), _validated(text))
    bare = json.loads(text)
    del bare[DIGEST_KEY]
    plain = json.dumps(bare, sort_keys=True, separators=(",", ":"))
    assert not intact(plain)
    assert_same(record_from_json(plain), _validated(text))


def test_a_digest_that_is_not_a_string_is_refused_naming_it() -> None:
    data = json.loads(record_to_json(decision(state_of("0xa", 1), 1)))
    data[DIGEST_KEY] = 7
    with pytest.raises(InvalidInput, match=r"Record\.digest must be a string"):
        record_from_json(json.dumps(data))


def test_a_corrupted_record_fails_as_before_naming_the_field_and_the_line(
    tmp_path: Path,
) -> None:
    """A changed value no longer matches the digest: validated, and refused with the field
    (in a JSON Lines file, the line)."""
    first = record_to_json(decision(state_of("0xa", 1), 1))
    text = record_to_json(decision(state_of("0xa", 2), 2))
    corrupt = text.replace('"version":2', '"version":"2"', 1)
    assert corrupt != text
    assert not intact(corrupt)
    with pytest.raises(InvalidInput, match=r"Record\.version"):
        record_from_json(corrupt)
    path = tmp_path / "log.jsonl"
    path.write_text(f"{first}\n{corrupt}\n")
    with pytest.raises(InvalidInput, match=r"log\.jsonl:2: .*Record\.version"):
        list(read_entries(path))


def test_a_schema_2_record_without_a_digest_still_reads() -> None:
    record = decision(state_of("0xa", 1), 1)
    data = json.loads(record_to_json(record))
    del data[DIGEST_KEY]
    data["schema"] = 2
    old = typing.cast(Record, record_from_json(json.dumps(data, sort_keys=True)))
    assert old.schema == 2
    assert old.wallet == record.wallet
    assert old.state == record.state
