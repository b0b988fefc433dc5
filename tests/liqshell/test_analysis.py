"""liqshell.analysis: self-describing recordings, replay with the recorded config, what-if,
sweeps, and clear errors for recordings that cannot be read."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import sqlite3
import tempfile
import typing
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import attrs
import pytest

from liqcore import Config, PreLiquidation, StandardMargin, codec
from liqcore.errors import InvalidConfig
from liqshell import analysis
from liqshell.adapters import (
    header_data,
    header_from_data,
    header_to_json,
    read_entries,
    recording_header,
)
from liqshell.adapters.sqlite import SqliteStore
from liqshell.cli import main
from liqshell.ports import RECORD_SCHEMA, Record, RecordingHeader, RecordKind, WatcherSettings
from liqshell.sim import SimParams, simulate

SMALL = SimParams(accounts=8, minutes=3, seed=3)
"""Three simulated minutes: a shock, accounts entering pre-liquidation and repricing."""

RAMP_300 = Config(partial_bonus_max_bps=300)


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    """A scratch folder on tmpfs when available (SQLite fsyncs are slow on disk)."""
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="liqshell-analysis-", dir=base) as name:
        yield Path(name)


def _run(folder: Path, name: str, params: SimParams, config: Config) -> tuple[Path, Path]:
    store, record = folder / f"{name}.sqlite", folder / f"{name}.jsonl"
    asyncio.run(simulate(params, config=config, store=store, record=record))
    return store, record


@pytest.fixture(scope="module")
def default_run(folder: Path) -> tuple[Path, Path]:
    """A small simulation with the default config: its SQLite store and JSON Lines log."""
    return _run(folder, "default", SMALL, Config())


@pytest.fixture(scope="module")
def ramp_run(folder: Path) -> tuple[Path, Path]:
    """The same simulation with ``partial_bonus_max_bps=300``."""
    return _run(folder, "ramp", SMALL, RAMP_300)


# --------------------------------------------------------------------------- headers


def test_header_round_trips_with_the_full_config() -> None:
    """The header carries the full Config (margin models, instruments), the watcher's
    settings and the start time, and reads back equal."""
    config = Config(
        partial_bonus_max_bps=300,
        min_shortfall_threshold=Decimal("12.5"),
        standard_margin=StandardMargin(rate=Decimal("0.2")),
    )
    header = recording_header(
        config, watcher=WatcherSettings(concurrency=4, shadow=True), started=1_000
    )
    data = json.loads(header_to_json(header))
    assert data["schema"] == RECORD_SCHEMA == 3
    assert data["config"]["partial_bonus_max_bps"] == 300
    assert data["config"]["standard_margin"]["rate"] == "0.2"
    assert header_from_data(data) == header


def test_header_of_a_custom_margin_model_says_the_config_is_not_recorded() -> None:
    """A config the codec cannot write is left out, with the reason, never half-written."""

    @attrs.frozen
    class Custom:
        def evaluate(self, *args: object) -> object:
            raise NotImplementedError

    header = recording_header(Config(standard_margin=Custom()))  # type: ignore[arg-type]
    assert header.config is None
    assert "margin model" in header.config_note
    assert header_from_data(header_data(header)) == header


def test_a_schema_1_header_still_reads() -> None:
    """A recording of before this schema reads, with no config."""
    header = header_from_data({"format": "liqshell-recording", "library": "0.1.0", "schema": 1})
    assert header == RecordingHeader(schema=1, library="0.1.0")


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"format": "liqshell-recording", "library": "0.1.0", "schema": 4}, "schema 4"),
        ({"format": "liqshell-recording", "library": "0.1.0", "schema": "2"}, "schema '2'"),
        (
            {"format": "liqshell-recording", "library": "0.1.0", "schema": 1, "config": {}},
            "unknown field(s) config",
        ),
        (
            {"format": "liqshell-recording", "library": "0.1.0", "schema": 2, "started": "x"},
            "started",
        ),
        (
            {
                "format": "liqshell-recording",
                "library": "0.1.0",
                "schema": 2,
                "config": {"partial_bonus_max_bps": -1},
            },
            "partial_bonus_max_bps",
        ),
    ],
)
def test_a_bad_header_is_refused_naming_what(data: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match="recording") as raised:
        header_from_data(data)
    assert named in str(raised.value)


def test_each_run_writes_its_header_in_the_jsonl_log_and_the_sqlite_store(
    default_run: tuple[Path, Path],
) -> None:
    """The watcher's start header opens the JSON Lines log and is a row of the store's
    log; the store's history never returns it."""
    store, record = default_run
    for path in (store, record):
        entries = list(read_entries(path))
        assert isinstance(entries[0], RecordingHeader)
        assert entries[0].config == Config()
        assert entries[0].watcher is not None
        assert entries[0].started == SMALL.start_ms
    first_wallet = next(r.wallet for r in read_entries(store) if isinstance(r, Record))

    async def history() -> tuple[Record, ...]:
        sqlite = SqliteStore(str(store))
        try:
            return await sqlite.history(first_wallet, after_version=0)
        finally:
            await sqlite.close()

    assert all(isinstance(r, Record) for r in asyncio.run(history()))


# --------------------------------------------------------------------------- replay


@pytest.mark.parametrize("which", ["default", "ramp"])
@pytest.mark.parametrize("kind", ["jsonl", "sqlite"])
def test_replay_uses_the_recorded_config_and_finds_no_mismatch(
    default_run: tuple[Path, Path], ramp_run: tuple[Path, Path], which: str, kind: str
) -> None:
    """simulate → record → replay: 0 mismatches, without being told the config."""
    store, record = default_run if which == "default" else ramp_run
    recording = analysis.load(record if kind == "jsonl" else store)
    trace = analysis.replay(recording)
    assert trace.mismatches == ()
    assert trace.config_notes == ()
    assert len(trace.decisions) == sum(1 for _ in recording.decisions()) > 50


@pytest.mark.parametrize("seed", [7, 11])
def test_replay_of_other_seeds_and_configs_finds_no_mismatch(folder: Path, seed: int) -> None:
    config = Config(partial_reprice_interval_ms=10_000, partial_target_buffer_bps=900)
    params = SimParams(accounts=6, minutes=2, seed=seed, shock_pct=Decimal(-25))
    _, record = _run(folder, f"seed{seed}", params, config)
    recording = analysis.load(record)
    assert recording.config == config
    assert analysis.replay(recording).mismatches == ()


def test_replay_with_another_config_names_the_fields_and_the_first_mismatch(
    ramp_run: tuple[Path, Path],
) -> None:
    """Replaying a max-300 run with the defaults is a what-if: the note names the field with
    both values, each mismatch the wallet, time, field and values."""
    _, record = ramp_run
    trace = analysis.replay(analysis.load(record), Config())
    assert len(trace.config_notes) == 1
    assert "partial_bonus_max_bps: recorded 300, given 1000" in trace.config_notes[0]
    assert trace.mismatches
    first = trace.mismatches[0]
    assert first.field == "state.phase.bonus_bps"
    assert first.wallet.startswith("0xsim")
    assert first.now > SMALL.start_ms
    assert (first.recorded, first.replayed) != ("", "")


def test_replay_of_a_recording_without_config_says_so(folder: Path) -> None:
    """A recording of before headers is replayed with the config given or the defaults,
    and says the recording carries none."""
    _, record = _run(folder, "headless", SimParams(accounts=3, minutes=1, seed=2), Config())
    lines = [line for line in record.read_text().splitlines() if '"format"' not in line]
    old = folder / "old.jsonl"
    old.write_text("\n".join(lines) + "\n")
    trace = analysis.replay(analysis.load(old))
    assert trace.mismatches == ()
    assert "carries no config" in trace.config_notes[0]


def test_a_config_change_mid_run_is_a_new_header_and_each_part_replays_with_its_own(
    folder: Path,
) -> None:
    """Two runs appended to one log with different configs: two headers, and replay uses
    each run's config for its records (0 mismatches), where one config would not."""
    record = folder / "two-configs.jsonl"
    params = SimParams(accounts=6, minutes=2, seed=4)
    asyncio.run(simulate(params, config=Config(), store=folder / "a.sqlite", record=record))
    asyncio.run(simulate(params, config=RAMP_300, store=folder / "b.sqlite", record=record))
    recording = analysis.load(record)
    assert [h.config for h in recording.headers] == [Config(), RAMP_300]
    assert analysis.replay(recording).mismatches == ()
    assert analysis.replay(recording, Config()).mismatches


@pytest.mark.services
def test_replay_of_a_recording_in_postgresql_finds_no_mismatch(
    default_run: tuple[Path, Path], postgres_dsn: str, pg_schema: str
) -> None:
    """A PostgreSQL store's log (headers and records) loads from its DSN and replays."""
    from liqshell.adapters.postgres import PostgresStore

    _, record = default_run

    async def copy() -> None:
        store = PostgresStore(postgres_dsn, schema=pg_schema)
        try:
            for entry in read_entries(record):
                if isinstance(entry, RecordingHeader):
                    await store.begin(entry)
                else:
                    await store.append(entry)
        finally:
            await store.close()

    asyncio.run(copy())
    recording = analysis.load(postgres_dsn, schema=pg_schema)
    assert recording.records == analysis.load(record).records
    assert recording.config == Config()
    assert analysis.replay(recording).mismatches == ()


# --------------------------------------------------------------------------- bad recordings


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('{"format":"liqshell-recording","library":"0.1.0","schema":2}\n{"kind": 1}\n', "line 2"),
        ("hello\n", "line 1"),
        ('{"format":"liqshell-recording","library":"0.1.0","schema":9}\n', "schema 9"),
        ('{"format":"liqshell-recording","library":"0.1.0","schema":2}\n[1, 2]\n', "line 2"),
    ],
    ids=["bad-record", "text", "unknown-schema", "foreign-json"],
)
def test_a_bad_recording_fails_with_one_error_naming_the_line(
    tmp_path: Path, text: str, named: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(analysis.RecordingError) as raised:
        analysis.load(path)
    message = str(raised.value)
    assert named in message
    assert "\n" not in message


def test_a_truncated_recording_drops_only_the_torn_last_line(
    default_run: tuple[Path, Path], tmp_path: Path
) -> None:
    """A crash mid-write tears the last line: the complete lines still load."""
    _, record = default_run
    text = record.read_text()
    torn = tmp_path / "torn.jsonl"
    torn.write_text(text[: len(text) - 40])
    assert len(analysis.load(torn)) == len(analysis.load(record)) - 1


def test_load_of_a_missing_file_or_a_folder_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(analysis.RecordingError, match="no such file"):
        analysis.load(tmp_path / "missing.jsonl")
    with pytest.raises(analysis.RecordingError, match="is a directory"):
        analysis.load(tmp_path)


# --------------------------------------------------------------------------- what-if


def test_what_if_with_no_change_reproduces_the_recorded_run(
    default_run: tuple[Path, Path],
) -> None:
    """Carrying its own state with the recorded answers folded in, a what-if without
    overrides decides exactly what the run decided."""
    recording = analysis.load(default_run[1])
    comparison = analysis.what_if(recording)
    assert comparison.divergences == {}
    assert comparison.what_if == comparison.baseline


def test_what_if_a_lower_max_bonus_diverges_at_the_first_reprice(
    default_run: tuple[Path, Path],
) -> None:
    """Hand-checked: the ramp starts at 50 bps for both; 5 s after entry (the first
    reprice) the default ramp offers 50 + 950 × 5/300 = 65 bps, the 300-bps ramp
    50 + 250 × 5/300 = 54 bps. Every wallet whose bonus ramped diverges there first (one
    escalated to an auction before its first reprice does not diverge at all), and less
    bonus is offered in total."""
    recording = analysis.load(default_run[1])
    comparison = analysis.what_if(recording, partial_bonus_max_bps=300)
    entered: dict[str, int] = {}
    ramped: set[str] = set()
    for _, record in recording.decisions():
        phase = record.state.phase if record.state is not None else None
        if type(phase) is PreLiquidation:
            entered.setdefault(record.wallet, phase.entered_at)
            if phase.bonus_bps > Config().partial_bonus_start_bps:
                ramped.add(record.wallet)
    assert ramped
    assert set(comparison.divergences) == ramped
    for wallet, mismatch in comparison.divergences.items():
        assert mismatch.now == entered[wallet] + Config().partial_reprice_interval_ms
        assert (mismatch.field, mismatch.recorded, mismatch.replayed) == (
            "state.phase.bonus_bps",
            "65",
            "54",
        )
    assert comparison.what_if.total.bonus_offered < comparison.baseline.total.bonus_offered
    assert "partial_bonus_max_bps=300" in comparison.render()


def test_what_if_refuses_an_unknown_field_naming_it(default_run: tuple[Path, Path]) -> None:
    recording = analysis.load(default_run[1])
    with pytest.raises(InvalidConfig, match="partial_bonus_maximum"):
        analysis.what_if(recording, partial_bonus_maximum=300)
    with pytest.raises(InvalidConfig, match="partial_bonus_max_bps"):
        analysis.what_if(recording, partial_bonus_max_bps="lots")


def test_sweep_covers_the_grid_in_order_with_a_progress_bar(
    default_run: tuple[Path, Path],
) -> None:
    recording = analysis.load(default_run[1])
    stream = io.StringIO()
    grid = {"partial_bonus_max_bps": [300, 1000], "partial_reprice_interval_ms": [5000, 10000]}
    results = analysis.sweep(recording, grid, progress=stream)
    assert [point for point, _ in results] == [
        {"partial_bonus_max_bps": 300, "partial_reprice_interval_ms": 5000},
        {"partial_bonus_max_bps": 300, "partial_reprice_interval_ms": 10000},
        {"partial_bonus_max_bps": 1000, "partial_reprice_interval_ms": 5000},
        {"partial_bonus_max_bps": 1000, "partial_reprice_interval_ms": 10000},
    ]
    assert results[2][1] == analysis.what_if(recording).baseline
    assert "4/4" in stream.getvalue()


def test_sweep_against_the_simulator_runs_each_point_closed_loop(
    default_run: tuple[Path, Path],
) -> None:
    """``simulate=True`` runs the simulation per point: the default point reproduces the
    recorded simulation exactly."""
    recording = analysis.load(default_run[1])
    results = analysis.sweep(
        recording, {"partial_bonus_max_bps": [1000]}, simulate=True, params=SMALL
    )
    assert results[0][1] == analysis.what_if(recording).baseline


# --------------------------------------------------------------------------- the CLI


def test_cli_replay_uses_the_recorded_config(
    ramp_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(ramp_run[1])]) == 0
    assert ": 0 mismatches" in capsys.readouterr().out


def test_cli_replay_set_is_a_what_if_saying_the_config_differs(
    default_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(default_run[1]), "--set", "partial_bonus_max_bps=300"]) == 1
    out = capsys.readouterr().out
    assert "partial_bonus_max_bps: recorded 1000, given 300" in out
    assert "mismatch: record" in out
    assert "phase.bonus_bps: recorded 65, replayed 54" in out
    assert "with the config given, not the recorded one" in out


def test_cli_replay_set_of_an_unknown_field_is_one_line(
    default_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(default_run[1]), "--set", "bonus=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("liqshell: error: --set: Config has no field 'bonus'")
    assert len(err.splitlines()) == 1


def test_records_of_a_recording_are_counted_by_kind(default_run: tuple[Path, Path]) -> None:
    recording = analysis.load(default_run[0])
    report = analysis.summarize(recording.records)
    assert report.by_kind[RecordKind.DECISION.value] == sum(1 for _ in recording.decisions())
    assert report.wallets == len(recording.wallets)


# --------------------------------------------------------------------------- explain


def test_explain_tells_the_hand_known_story_of_one_account(
    default_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Seed 3, wallet 0xsim0001: the shock at +30 s leaves it 10,144.05 short; it enters
    pre-liquidation and places one order at the starting 50 bps; 5 s later the order is
    cancelled and replaced at 65 bps (the ramp); at +40 s it is above its partial target
    and recovers, 10 s after entry."""
    assert main(["explain", str(default_run[1]), "--wallet", "0xsim0001"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("wallet 0xsim0001 (standard margin)")
    assert lines[0].endswith("final phase: healthy")
    story = [line for line in lines if not line.startswith("    ")]
    assert story[1:] == [
        "2026-03-02 00:00:30 UTC (+30 s)  healthy -> pre_liquidation",
        "2026-03-02 00:00:35 UTC (+35 s)",
        "2026-03-02 00:00:35 UTC (+35 s)",
        "2026-03-02 00:00:40 UTC (+40 s)  pre_liquidation -> healthy",
    ]
    assert "shortfall 10,144.05" in out
    assert "placed the first liquidation orders at a bonus of 50 bps" in out
    assert "repriced the liquidation orders at a bonus of 65 bps" in out
    assert "recovered after 10 s" in out


def test_explain_of_an_unknown_wallet_is_one_line(
    default_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["explain", str(default_run[1]), "--wallet", "0xnobody"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no records of wallet '0xnobody'" in err
    assert len(err.splitlines()) == 1


# --------------------------------------------------------------------------- fills


@pytest.mark.parametrize("seed", [3, 8])
def test_derived_fills_match_the_simulated_exchange(folder: Path, seed: int) -> None:
    """The fills estimated from the order snapshots add up to the contracts the simulated
    exchange filled, and every one is marked derived."""
    from liqshell.analysis.fills import derived_fills

    store = folder / f"fills{seed}.sqlite"
    params = SimParams(accounts=8, minutes=3, seed=seed, shock_pct=Decimal(-20))
    summary = asyncio.run(simulate(params, config=Config(), store=store))
    fills = derived_fills(analysis.load(store))
    assert summary.filled_size > 0
    assert sum(fill.size for fill in fills) == summary.filled_size
    assert all(fill.derived for fill in fills)
    assert {fill.how for fill in fills} <= {"remaining dropped", "vanished"}


def test_a_cancelled_or_rejected_order_is_not_a_fill() -> None:
    """An order that vanished after our cancel, or that the engine rejected, filled
    nothing; one that vanished otherwise filled what remained, at its bonus (11 over a
    theo of 10, 2 contracts: 2 USD)."""
    from liqcore import Health, MarginMode, OpenOrder, OrderRejected, Quote, Side
    from liqcore.commands import CancelOrder, SubmitOrder
    from liqshell.analysis.fills import derived_fills

    health = Health(
        wallet="0xw",
        margin_mode=MarginMode.STANDARD,
        equity=Decimal(1),
        mm_required=Decimal(2),
        is_liquidatable=True,
        quotes={"S": Quote(theo=Decimal(10))},
    )

    def submit(client: str) -> SubmitOrder:
        return SubmitOrder(
            wallet="0xw",
            symbol="S",
            price=Decimal(11),
            size=Decimal(2),
            client_id=client,
            request_id=f"r-{client}",
        )

    still_open = OpenOrder(
        order_id=7,
        symbol="S",
        side=Side.BUY,
        price=Decimal(11),
        original_size=Decimal(2),
        remaining_size=Decimal(2),
        client_id="a",
        created_at=1,
    )
    decision = RecordKind.DECISION
    records = [
        Record(kind=decision, wallet="0xw", now=1, health=health,
               commands=(submit("a"), submit("b"), submit("c"))),
        Record(kind=RecordKind.OUTCOMES, wallet="0xw", now=2,
               events=(OrderRejected(client_id="b", reason="no"),)),
        Record(kind=decision, wallet="0xw", now=3, health=health, orders=(still_open,),
               commands=(CancelOrder(wallet="0xw", order_id=7, client_id="a", request_id="x"),)),
        Record(kind=decision, wallet="0xw", now=4, health=health),
    ]  # fmt: skip
    fills = derived_fills(analysis.from_entries(records))
    assert [(f.client_id, f.size, f.how, f.bonus_paid) for f in fills] == [
        ("c", Decimal(2), "vanished", Decimal(2))
    ]


def test_outcome_records_carry_each_answer(default_run: tuple[Path, Path]) -> None:
    """Every OUTCOMES record holds an answer per command: an acked submit its order id,
    an auction request its auction id, each its request id and outcome."""
    from liqcore.commands import StartAuction, SubmitOrder

    recording = analysis.load(default_run[1])
    outcomes = [r for r in recording.records if r.kind is RecordKind.OUTCOMES]
    assert outcomes
    submits = starts = 0
    for record in outcomes:
        assert len(record.answers) == len(record.commands)
        for answer, command in zip(record.answers, record.commands, strict=True):
            assert answer.request_id == getattr(command, "request_id", "")
            assert answer.outcome in {"confirmed", "failed", "unknown"}
            if type(command) is SubmitOrder and answer.answer == "acked":
                submits += 1
                assert answer.order_id is not None
            if type(command) is StartAuction and answer.outcome == "confirmed":
                starts += 1
                assert answer.auction_id is not None
    assert submits == 2
    assert starts == 2


def test_records_of_no_wallet_are_not_counted_as_a_wallet() -> None:
    """A record of no wallet (a poll summary) is kept, but is no wallet of the recording."""
    records = [
        Record(kind=RecordKind.FEED, wallet="", now=1, note="summary"),
        Record(kind=RecordKind.FEED, wallet="0xa", now=2, note="unknown wallet"),
    ]
    recording = analysis.from_entries(records)
    assert recording.wallets == ("0xa",)
    assert analysis.summarize(recording.records).wallets == 1
    assert len(recording) == 2


# --------------------------------------------------------------------------- fast decoding


def _strict_record(data: dict[str, object]) -> Record:
    """A record built by the codec's strict path only, field by field (as before the fast
    path existed)."""
    hints = typing.get_type_hints(Record)
    values = {
        name: value if name == "cursor" else codec.strict_structure(value, hints[name])
        for name, value in data.items()
        if name != "digest"  # schema 3: the record's digest is not one of its fields
    }
    return Record(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("which", ["default", "ramp"])
def test_load_decodes_every_record_as_the_strict_path_does(
    default_run: tuple[Path, Path], ramp_run: tuple[Path, Path], which: str
) -> None:
    """The fast decode of load() gives, record for record, the values and the bytes the
    strict path gives, for the JSON Lines log and the SQLite store of a simulated run."""
    store, record = default_run if which == "default" else ramp_run
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    with contextlib.closing(sqlite3.connect(store)) as db:
        rows = db.execute("SELECT kind, body_json FROM records ORDER BY seq").fetchall()
    bodies = {
        record: [data for data in lines if "format" not in data],
        store: [json.loads(body) for kind, body in rows if kind != "header"],
    }
    for source, datas in bodies.items():
        expected = [_strict_record(data) for data in datas]
        recording = analysis.load(source)
        assert len(recording.records) == len(expected) > 50
        assert list(recording.records) == expected
        assert [codec.to_json(r) for r in recording.records] == [codec.to_json(r) for r in expected]


def test_a_bad_field_deep_in_a_record_is_named_by_the_fast_decode(
    default_run: tuple[Path, Path], tmp_path: Path
) -> None:
    """Bad input still fails with one error naming the line and the field (a JSON number
    where a position's amount belongs)."""
    _, record = default_run
    lines = record.read_text().splitlines()
    number = next(
        i
        for i, line in enumerate(lines)
        if '"kind":"decision"' in line and json.loads(line)["health"]["portfolio"]["positions"]
    )
    data = json.loads(lines[number])
    symbol = sorted(data["health"]["portfolio"]["positions"])[0]
    data["health"]["portfolio"]["positions"][symbol]["amount"] = 1.5
    lines[number] = json.dumps(data, sort_keys=True, separators=(",", ":"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(analysis.RecordingError) as caught:
        analysis.load(bad)
    message = str(caught.value)
    assert f"line {number + 1}:" in message
    assert f"positions['{symbol}'].amount: must be a decimal string" in message
    assert "\n" not in message
