"""JSON Lines recorder and event sink: round trips, torn lines, durability, concurrency."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
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
from liqshell.adapters import (
    ForeignFile,
    RecordingHeader,
    header_to_json,
    jsonl,
    read_records,
    record_from_json,
    record_to_json,
)
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


@pytest.mark.parametrize(("fsync", "expected"), [(True, 4), (False, 0)])
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


# --------------------------------------------------------------------------- foreign files


def _sqlite_file(path: Path) -> bytes:
    """Another program's SQLite file of 5,000 rows; its bytes."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (a INTEGER)")
        db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(5_000)])
    db.close()
    return path.read_bytes()


FOREIGN = {
    "text": b"keep me",
    "text-lines": b"keep me\nand me\n",
    "json-not-ours": b'{"name": "x"}\n{"name": "y"}',
    "newer-schema": b'{"format":"liqshell-recording","library":"0.1.0","schema":7}\n',
    "newer-library": b'{"format":"liqshell-recording","library":"99.0.0","schema":1}\n',
}


@pytest.mark.parametrize("content", FOREIGN.values(), ids=FOREIGN.keys())
async def test_jsonl_recorder_refuses_a_file_it_did_not_write_and_leaves_it_alone(
    tmp_path: Path, content: bytes
) -> None:
    """A text file, JSON of another program, or a recording of a schema or library this
    liqshell does not write is refused with ForeignFile when the recorder is made — before
    anything is written — and its bytes stay as they were (no torn-line repair either)."""
    path = tmp_path / "n.txt"
    path.write_bytes(content)
    with pytest.raises(ForeignFile, match="not a liqshell recording"):
        JsonlRecorder(path)
    with pytest.raises(ForeignFile):
        jsonl.check_file(path)
    assert path.read_bytes() == content


async def test_jsonl_recorder_and_sink_refuse_a_sqlite_database(tmp_path: Path) -> None:
    """A 5,000-row SQLite file given as a recording or a change log is refused, untouched."""
    path = tmp_path / "data.db"
    before = _sqlite_file(path)
    with pytest.raises(ForeignFile):
        JsonlRecorder(path)
    with pytest.raises(ForeignFile, match="state-change log"):
        JsonlEventSink(path)
    assert path.read_bytes() == before


async def test_jsonl_recorder_appends_to_its_own_recording_under_one_header(
    tmp_path: Path,
) -> None:
    """A new recording starts with a header; reopened, it is appended to (one header)."""
    path = tmp_path / "log.jsonl"
    first, second = decision(state_of("0xa", 1), 1), decision(state_of("0xa", 2), 2)
    for record in (first, second):
        recorder = JsonlRecorder(path)
        await recorder.append(record)
        await recorder.close()
    lines = path.read_text().splitlines()
    assert lines[0] == header_to_json(RecordingHeader())
    assert jsonl.read_header(path) == RecordingHeader()
    assert len(lines) == 3
    assert list(jsonl.read_records(path)) == [first, second]


async def test_jsonl_recorder_appends_to_a_recording_from_before_headers(tmp_path: Path) -> None:
    """A header-less recording (written before headers) is ours: appended to, as it is."""
    path = tmp_path / "old.jsonl"
    first = decision(state_of("0xa", 1), 1)
    path.write_text(record_to_json(first) + "\n")
    recorder = JsonlRecorder(path)
    second = decision(state_of("0xa", 2), 2)
    await recorder.append(second)
    await recorder.close()
    assert jsonl.read_header(path) is None
    assert list(jsonl.read_records(path)) == [first, second]


async def test_jsonl_recorder_starts_afresh_over_a_torn_header_only(tmp_path: Path) -> None:
    """A file holding only the torn start of a header (a crash while a recording was
    being created) is ours: started again with a whole header."""
    path = tmp_path / "log.jsonl"
    path.write_text(header_to_json(RecordingHeader())[:20])
    recorder = JsonlRecorder(path)
    record = decision(state_of("0xa", 1), 1)
    await recorder.append(record)
    await recorder.close()
    assert jsonl.read_header(path) == RecordingHeader()
    assert list(jsonl.read_records(path)) == [record]


def test_jsonl_reader_refuses_an_unknown_schema_or_library_naming_it(tmp_path: Path) -> None:
    """A recording whose header or records carry a schema, or whose header a library
    version, this liqshell does not read is refused, naming the value."""
    path = tmp_path / "log.jsonl"
    path.write_text(FOREIGN["newer-schema"].decode())
    with pytest.raises(InvalidInput, match="schema 7"):
        list(jsonl.read_records(path))
    path.write_text(FOREIGN["newer-library"].decode())
    with pytest.raises(InvalidInput, match=r"99\.0\.0"):
        list(jsonl.read_records(path))
    data = json.loads(record_to_json(decision(state_of("0xa", 1), 1)))
    data["schema"] = 9
    path.write_text(json.dumps(data) + "\n")
    with pytest.raises(InvalidInput, match=r"Record\.schema 9"):
        list(jsonl.read_records(path))


def test_jsonl_reader_of_deeply_nested_json_raises_invalid_input(tmp_path: Path) -> None:
    """Deep nesting is a bad line (InvalidInput), never a RecursionError."""
    path = tmp_path / "deep.jsonl"
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(InvalidInput, match="nested too deeply"):
        list(jsonl.read_records(path))
    path.write_text('{"kind":' * 50_000 + "1" + "}" * 50_000 + "\n")
    with pytest.raises(InvalidInput, match="nested too deeply"):
        list(jsonl.read_records(path))
