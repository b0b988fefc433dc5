"""JSON Lines recorder and event sink: round trips, torn lines, durability, concurrency."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liqcore import StateChange
from liqcore.errors import InvalidInput
from liqcore.strategies import (
    account_states,
    commands,
    events,
    healths,
    open_orders,
    state_changes,
    wallets,
)
from liqshell.adapters import jsonl, read_records, record_from_json, record_to_json
from liqshell.adapters.jsonl import (
    JsonlEventSink,
    JsonlRecorder,
    read_state_changes,
)
from liqshell.adapters.sqlite import SqliteStore
from liqshell.ports import Record, RecordKind, Unfinished
from tests.liqshell.adapters.store_contract import decision, state_of


@st.composite
def records(draw: st.DrawFn) -> Record:
    """Replay-log records with every field drawn."""
    wallet = draw(wallets())
    version = draw(st.integers(0, 1_000))
    return Record(
        kind=draw(st.sampled_from(RecordKind)),
        wallet=wallet,
        now=draw(st.integers(0, 2**53)),
        version=version,
        previous=draw(st.none() | account_states(wallet=wallet)),
        health=draw(st.none() | healths(wallet=wallet)),
        orders=tuple(draw(st.lists(open_orders(wallet=wallet), max_size=2))),
        commands=tuple(draw(st.lists(commands(wallet=wallet), max_size=2))),
        state=draw(st.none() | account_states(wallet=wallet)),
        events=tuple(draw(st.lists(events(), max_size=2))),
        pending=tuple(
            Unfinished(version=version, index=i, command=command)
            for i, command in enumerate(draw(st.lists(commands(wallet=wallet), max_size=2)))
        ),
        event_id=draw(st.none() | st.text(max_size=10)),
        cursor=draw(st.none() | st.integers(-(2**63), 2**63) | st.text(max_size=10)),
        executed=draw(st.booleans()),
        note=draw(st.text(max_size=20)),
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=records())
def test_record_json_round_trips_any_record(record: Record) -> None:
    """Any record survives record_to_json / record_from_json unchanged, as one line."""
    text = record_to_json(record)
    assert "\n" not in text
    assert record_from_json(text) == record


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(written=st.lists(records(), max_size=3))
async def test_jsonl_recorder_reads_back_what_it_appended_in_order(written: list[Record]) -> None:
    """Records appended to a JSON Lines file read back equal and in order."""
    with tempfile.TemporaryDirectory(prefix="liqshell-test-") as folder:
        recorder = JsonlRecorder(Path(folder) / "log.jsonl", fsync=False)
        for record in written:
            await recorder.append(record)
        await recorder.close()
        assert list(recorder.records()) == written


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ('{"kind": "decision", "wallet": "0xa"}', "missing required field"),
        ('{"kind": "decision", "wallet": "0xa", "now": 1, "extra": 1}', "unknown field"),
        ('{"kind": "decision", "wallet": "0xa", "now": 1, "cursor": 1.5}', "Record.cursor"),
        ('{"kind": "nope", "wallet": "0xa", "now": 1}', "Record.kind"),
        ('{"kind": "decision", "wallet": "0xa", "now": NaN}', "NaN"),
        ("[1, 2]", "JSON object"),
        ("{", "not valid JSON"),
    ],
)
def test_record_from_json_with_bad_input_raises_invalid_input(record: str, message: str) -> None:
    """A line that is not a valid record raises InvalidInput naming what is wrong."""
    with pytest.raises(InvalidInput, match=message):
        record_from_json(record)


async def test_jsonl_reader_names_the_line_of_a_bad_record(tmp_path: Path) -> None:
    """A bad line in the middle of a recording raises InvalidInput with file and line."""
    path = tmp_path / "log.jsonl"
    good = record_to_json(decision(state_of("0xa", 1), 1))
    path.write_text(f'{good}\n\n{{"kind": 1}}\n{good}\n')
    with pytest.raises(InvalidInput, match=r"log\.jsonl:3: "):
        list(jsonl.read_records(path))


async def test_jsonl_reader_ignores_a_torn_last_line(tmp_path: Path) -> None:
    """A last line cut short by a crash mid-write is not a record, and not an error."""
    path = tmp_path / "log.jsonl"
    first = decision(state_of("0xa", 1), 1)
    whole = record_to_json(decision(state_of("0xa", 2), 2))
    path.write_text(f"{record_to_json(first)}\n{whole[: len(whole) // 2]}")
    assert list(jsonl.read_records(path)) == [first]


async def test_jsonl_recorder_reopened_after_a_torn_write_starts_a_clean_line(
    tmp_path: Path,
) -> None:
    """Appending to a file with a torn last line cuts the fragment, so the new record is
    whole; a complete last line without its newline is kept and ended."""
    path = tmp_path / "log.jsonl"
    first = decision(state_of("0xa", 1), 1)
    torn = record_to_json(decision(state_of("0xa", 2), 2))
    path.write_text(f"{record_to_json(first)}\n{torn[:40]}")
    recorder = JsonlRecorder(path)
    third = decision(state_of("0xa", 3), 3)
    await recorder.append(third)
    await recorder.close()
    assert list(jsonl.read_records(path)) == [first, third]

    unterminated = tmp_path / "unterminated.jsonl"
    unterminated.write_text(record_to_json(first))
    recorder = JsonlRecorder(unterminated)
    await recorder.append(third)
    await recorder.close()
    assert list(jsonl.read_records(unterminated)) == [first, third]


@pytest.mark.parametrize(("fsync", "expected"), [(True, 3), (False, 0)])
async def test_jsonl_recorder_fsyncs_each_append_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: bool, expected: int
) -> None:
    """fsync=True makes every append durable (one fsync each); fsync=False none."""
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    recorder = JsonlRecorder(tmp_path / "log.jsonl", fsync=fsync)
    for n in range(3):
        await recorder.append(decision(state_of("0xa", n), n + 1))
    await recorder.close()
    assert len(calls) == expected


async def test_jsonl_recorder_concurrent_appends_never_interleave(tmp_path: Path) -> None:
    """Many concurrent appends (two recorders on one file) each land as one whole line."""
    path = tmp_path / "log.jsonl"
    one, two = JsonlRecorder(path, fsync=False), JsonlRecorder(path, fsync=False)
    written = [decision(state_of(f"0x{n % 7}", n), n) for n in range(60)]
    await asyncio.gather(*((one if n % 2 else two).append(r) for n, r in enumerate(written)))
    await one.close()
    await two.close()
    read = list(jsonl.read_records(path))
    assert sorted(read, key=lambda r: r.version) == written


def test_jsonl_recorder_is_usable_from_several_event_loops(tmp_path: Path) -> None:
    """One recorder appends from one asyncio.run after another."""
    recorder = JsonlRecorder(tmp_path / "log.jsonl")
    written = [decision(state_of("0xa", n), n + 1) for n in range(3)]
    for record in written:
        asyncio.run(recorder.append(record))
    asyncio.run(recorder.close())
    assert list(recorder.records()) == written


async def test_read_records_tells_a_sqlite_store_from_a_jsonl_file(tmp_path: Path) -> None:
    """liqshell.adapters.read_records reads either kind of recording by its content."""
    written = [decision(state_of("0xa", n), n + 1) for n in range(3)]
    store = SqliteStore(tmp_path / "recording.bin")
    recorder = JsonlRecorder(tmp_path / "recording.sqlite")  # names do not decide
    for n, record in enumerate(written):
        assert record.state is not None
        await store.commit("0xa", record.state, record, expected_version=n)
        await recorder.append(record)
    await store.close()
    await recorder.close()
    assert list(read_records(tmp_path / "recording.bin")) == written
    assert list(read_records(tmp_path / "recording.sqlite")) == written


# --- the event sink --------------------------------------------------------------------------


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(state_changes(), max_size=4))
async def test_jsonl_sink_reads_back_each_change_with_its_key(changes: list[StateChange]) -> None:
    """Published changes read back equal, in order, each with the key it was given."""
    with tempfile.TemporaryDirectory(prefix="liqshell-test-") as folder:
        sink = JsonlEventSink(Path(folder) / "changes.jsonl", fsync=False)
        keyed = [((change.wallet, n + 1, n % 2), change) for n, change in enumerate(changes)]
        for key, change in keyed:
            await sink.publish(change, key=key)
        await sink.close()
        assert list(sink.changes()) == keyed


@pytest.mark.parametrize(
    "line",
    [
        '{"key": ["0xa", 1, 0]}',
        '{"change": {}, "key": ["0xa", "1", 0]}',
        '{"change": {}, "key": ["0xa", 1]}',
        '{"change": {"wallet": "0xa"}, "key": ["0xa", 1, 0]}',
        "[]",
    ],
)
def test_jsonl_sink_reader_with_a_bad_line_raises_invalid_input(tmp_path: Path, line: str) -> None:
    """A line that is not a keyed state change raises InvalidInput naming the line."""
    path = tmp_path / "changes.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(InvalidInput, match=r"changes\.jsonl:1"):
        list(read_state_changes(path))
