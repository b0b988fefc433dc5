"""replay(path) of a SQLite store decodes as it replays: an intact decision is read by the
fast path (only what step is given and returned; a wallet's previous state taken from its
last recorded state when the bytes are the same) and gives the trace replay(load(path))
gives. A recorded output or input changed by one digit is still found."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import typing
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from liqcore import Config
from liqshell import analysis
from liqshell.sim import SimParams, simulate

PARAMS = SimParams(accounts=6, minutes=2, seed=5, shock_pct=Decimal(-25))
"""A shock: accounts go into pre-liquidation, so some decisions carry commands."""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store of a small simulation, every decision recorded."""
    path = tmp_path_factory.mktemp("replay-stream") / "run.sqlite"
    asyncio.run(simulate(PARAMS, config=Config(), store=path, record_mode="all"))
    return path


@pytest.fixture
def copy(store: Path, tmp_path: Path) -> Path:
    """A copy of the store to change."""
    target = tmp_path / "copy.sqlite"
    with sqlite3.connect(store) as source, sqlite3.connect(target) as into:
        source.backup(into)
    return target


def _rows(path: Path) -> Iterator[tuple[int, dict[str, typing.Any]]]:
    """``(seq, parsed body)`` of each decision row, in order."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT seq, body_json FROM records ORDER BY seq").fetchall()
    for seq, body in rows:
        data = json.loads(body)
        if data.get("kind") == "decision":
            yield seq, data


def _rewrite(path: Path, seq: int, data: dict[str, typing.Any]) -> None:
    """Write ``data`` as row ``seq``'s body, canonical and with a matching digest (intact:
    the fast path reads it)."""
    data = {key: value for key, value in data.items() if key != "digest"}
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    digest = hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()
    body = f'{canonical[:-1]},"digest":"{digest}"}}'
    with sqlite3.connect(path) as db:
        db.execute("UPDATE records SET body_json = ? WHERE seq = ?", (body, seq))


def _one_digit(text: str) -> str:
    """``text`` (a decimal) with its last digit changed (never to a trailing zero)."""
    return text[:-1] + ("2" if text[-1] != "2" else "3")


def _same_traces(path: Path, config: Config | None = None) -> analysis.Trace:
    """replay(path) — the fast path — after checking it equals replay(load(path))."""
    streamed = analysis.replay(path, config)
    loaded = analysis.replay(analysis.load(path), config)
    assert streamed.decisions == loaded.decisions
    assert streamed.mismatches == loaded.mismatches
    assert streamed.config_notes == loaded.config_notes
    assert streamed.source == loaded.source == str(path)
    return streamed


def test_replay_of_a_store_takes_the_fast_path_and_equals_the_replay_of_its_recording(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole: list[int] = []
    original = analysis._replay_one
    monkeypatch.setattr(
        analysis, "_replay_one", lambda index, *rest: whole.append(index) or original(index, *rest)
    )
    trace = _same_traces(store)
    monkeypatch.undo()
    assert trace.mismatches == ()
    assert len(trace.decisions) == sum(1 for _ in _rows(store)) > 100
    # replay(load) called _replay_one for each decision; the streamed replay for none.
    assert len(whole) == len(trace.decisions)


def test_a_what_if_through_the_fast_path_reports_the_same_mismatches(store: Path) -> None:
    """Under another config step decides otherwise: each record that differs falls back to
    the whole record, and the mismatches are those of replay(load(path))."""
    trace = _same_traces(store, Config(partial_bonus_start_bps=200))
    assert trace.mismatches
    assert trace.config_notes
    kept_none = analysis.replay(store, Config(partial_bonus_start_bps=200), keep=False)
    assert kept_none.decisions == ()
    assert kept_none.mismatches == trace.mismatches


def test_a_recorded_state_changed_by_one_digit_is_a_mismatch(copy: Path) -> None:
    seq, data = next((s, d) for s, d in _rows(copy) if d["previous"] is not None)
    data["state"]["equity"] = _one_digit(data["state"]["equity"])
    _rewrite(copy, seq, data)
    trace = _same_traces(copy)
    assert [(m.field, m.recorded) for m in trace.mismatches] == [
        ("state.equity", data["state"]["equity"])
    ]


def test_a_recorded_command_changed_by_one_digit_is_a_mismatch(copy: Path) -> None:
    seq, data = next(
        (s, d) for s, d in _rows(copy) if any(c["type"] == "submit_order" for c in d["commands"])
    )
    at = next(i for i, c in enumerate(data["commands"]) if c["type"] == "submit_order")
    data["commands"][at]["price"] = _one_digit(data["commands"][at]["price"])
    _rewrite(copy, seq, data)
    trace = _same_traces(copy)
    assert len(trace.mismatches) == 1
    assert trace.mismatches[0].field.startswith(f"commands[{at}]")


def test_a_previous_that_is_not_the_last_recorded_state_is_built_from_its_own_bytes(
    copy: Path,
) -> None:
    """The chain takes a wallet's last recorded state only for the very same bytes: a
    previous state changed by one digit is the changed one in the trace."""
    last: dict[str, str] = {}
    chosen = None
    for seq, data in _rows(copy):
        state = json.dumps(data["previous"], sort_keys=True, separators=(",", ":"))
        if chosen is None and data["previous"] is not None and last.get(data["wallet"]) == state:
            chosen = seq, data
        if data["state"] is not None:
            last[data["wallet"]] = json.dumps(data["state"], sort_keys=True, separators=(",", ":"))
    assert chosen is not None
    seq, data = chosen
    recorded = data["previous"]["equity"]
    data["previous"]["equity"] = _one_digit(recorded)
    _rewrite(copy, seq, data)
    trace = _same_traces(copy)
    index = next(
        i
        for i, d in enumerate(trace.decisions)
        if d.now == data["now"] and d.wallet == data["wallet"]
    )
    previous = trace.decisions[index].previous
    assert previous is not None
    assert previous.equity == Decimal(_one_digit(recorded)) != Decimal(recorded)


def test_each_recorded_state_is_built_once_along_a_wallets_chain(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A previous state with the bytes of the wallet's last recorded state is not built
    again: states built = recorded states + previous states that do not chain."""
    expected = 0
    last: dict[str, str] = {}
    for _, data in _rows(store):
        text = json.dumps(data["previous"], sort_keys=True, separators=(",", ":"))
        if data["previous"] is not None and last.get(data["wallet"]) != text:
            expected += 1
        if data["state"] is not None:
            expected += 1
            last[data["wallet"]] = json.dumps(data["state"], sort_keys=True, separators=(",", ":"))
    built: list[object] = []
    original = analysis._STATE
    monkeypatch.setattr(analysis, "_STATE", lambda value: built.append(value) or original(value))
    assert analysis.replay(store, keep=False).mismatches == ()
    assert len(built) == expected < 2 * sum(1 for _ in _rows(store))
