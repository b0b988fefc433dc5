"""liqshell.cli: every command works, and every expected failure is one line, never a traceback."""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from liqshell.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "liqshell.toml"
SMALL = ["--accounts", "8", "--minutes", "2", "--seed", "5", "--quiet"]


@pytest.fixture(scope="module")
def fast_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A scratch folder on tmpfs when available (SQLite fsyncs are slow on disk)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        with tempfile.TemporaryDirectory(prefix="liqshell-cli-", dir=shm) as folder:
            yield Path(folder)
    else:
        yield tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def recorded(fast_dir: Path) -> tuple[Path, Path, str]:
    """A small simulation run through ``main``: its store, its JSON Lines log and its stdout."""
    store, record = fast_dir / "run.sqlite", fast_dir / "run.jsonl"
    stdout = fast_dir / "stdout.txt"
    saved = sys.stdout
    with stdout.open("w") as out:
        sys.stdout = out
        try:
            status = main(["simulate", *SMALL, "--store", str(store), "--record", str(record)])
        finally:
            sys.stdout = saved
    assert status == 0
    return store, record, stdout.read_text()


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The captured stderr, asserted to be exactly one error line without a traceback."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("liqshell: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_simulate_small_run_prints_summary_table(recorded: tuple[Path, Path, str]) -> None:
    """``simulate`` ends with the summary: accounts, orders, bonus, final phases."""
    out = recorded[2]
    assert out.startswith("simulated 8 accounts for 2 min (seed 5")
    for label in (
        "entered pre-liquidation",
        "auctioned",
        "submitted",
        "bonus paid",
        "final phases",
    ):
        assert label in out


def test_simulate_progress_bar_written_to_stderr(
    fast_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --quiet a plain-text progress bar goes to stderr, the summary to stdout."""
    status = main(
        ["simulate", "--accounts", "2", "--minutes", "1", "--store", str(fast_dir / "p.db")]
    )
    captured = capsys.readouterr()
    assert status == 0
    assert "100%" in captured.err
    assert "[" in captured.err
    assert "#" in captured.err
    assert "100%" not in captured.out
    assert "final phases" in captured.out


def test_replay_recorded_run_zero_mismatches(
    recorded: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Every decision of a simulated run replays identically, from JSON Lines and from SQLite."""
    store, record, _ = recorded
    for recording in (record, store):
        assert main(["replay", str(recording)]) == 0
        out = capsys.readouterr().out
        assert out.rstrip().endswith(": 0 mismatches")
        assert "replayed 0 decisions" not in out


def test_replay_tampered_recording_reports_mismatch_and_fails(
    recorded: tuple[Path, Path, str], fast_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A decision that step no longer reproduces is reported, and the exit status is 1."""
    lines = recorded[1].read_text().splitlines()
    tampered = []
    changed = False
    for line in lines:
        data = json.loads(line)
        if not changed and data.get("kind") == "decision" and data["commands"]:
            data["commands"] = data["commands"][:-1]
            changed = True
        tampered.append(json.dumps(data))
    assert changed
    path = fast_dir / "tampered.jsonl"
    path.write_text("\n".join(tampered) + "\n")
    assert main(["replay", str(path)]) == 1
    out = capsys.readouterr().out
    assert "mismatch: record" in out
    assert out.rstrip().endswith(": 1 mismatches")


def test_report_recorded_run_summarizes_it(
    recorded: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``report`` counts records, commands and phase transitions of a recording."""
    assert main(["report", str(recorded[1])]) == 0
    out = capsys.readouterr().out
    assert "up to 8 wallets stepped a poll" in out
    for section in ("records by kind", "commands", "phase transitions", "final phases"):
        assert f"{section}:" in out
    assert "healthy -> pre_liquidation" in out
    assert "submit_order" in out


def test_check_config_example_ok(capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped example validates."""
    assert main(["check-config", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out.startswith(f"{EXAMPLE}: ok (")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[liqcore]\npoll_interval_ms = -5\n", "poll_interval_ms"),
        ("[liqcore]\nbogus = 1\n", "bogus: unknown key"),
        ("[store]\nkind = 'postgres'\n", "dsn"),
        ("[nats\n", "invalid TOML"),
        ("[weird]\n", "unknown section"),
    ],
)
def test_check_config_bad_file_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, fragment: str
) -> None:
    """A bad configuration: one clear line on stderr, exit status 2."""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert main(["check-config", str(path)]) == 2
    assert fragment in one_line_error(capsys)


@pytest.mark.parametrize(
    "argv",
    [
        ["check-config", "/nonexistent/liqshell.toml"],
        ["simulate", "--store", "/nonexistent/dir/sim.sqlite"],
        ["simulate", "--record", "/nonexistent/dir/run.jsonl"],
        ["replay", "/nonexistent/run.jsonl"],
        ["report", "/"],
        ["run", "--config", "/nonexistent.toml"],
        ["simulate", "--accounts", "0"],
        ["simulate", "--shock", "-99"],
        ["frobnicate"],
    ],
)
def test_bad_path_or_argument_one_line_nonzero(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad paths and arguments: one line on stderr and a non-zero exit, no traceback."""
    assert main(argv) != 0
    one_line_error(capsys)


def test_replay_not_a_recording_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that is not a recording is named with its line, not a traceback."""
    junk = tmp_path / "junk.jsonl"
    junk.write_text('{"kind": "decision"}\nnot json\n')
    assert main(["replay", str(junk)]) == 2
    assert str(junk) in one_line_error(capsys)
    text = tmp_path / "store.sqlite"
    text.write_text("plain text, not SQLite")
    assert main(["simulate", "--store", str(text), "--quiet"]) == 2
    assert "not a SQLite file" in one_line_error(capsys)


def test_simulate_store_of_other_parameters_one_line(
    recorded: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Resuming a store with other parameters is refused in one line."""
    assert main(["simulate", "--accounts", "9", "--minutes", "2", "--seed", "5",
                 "--quiet", "--store", str(recorded[0])]) == 2  # fmt: skip
    assert "other parameters" in one_line_error(capsys)


def test_module_entry_point_bad_config_no_traceback(tmp_path: Path) -> None:
    """``python -m liqshell`` (the console script's code path) fails in one line."""
    path = tmp_path / "bad.toml"
    path.write_text("[liqcore]\npartial_bonus_start_bps = 9\npartial_bonus_max_bps = 1\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "liqshell", "check-config", str(path)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "partial_bonus_max_bps" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_without_exchange_source_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``run`` on a config without [exchange]: one line naming it."""
    path = tmp_path / "run.toml"
    path.write_text(f'[store]\npath = "{tmp_path / "s.sqlite"}"\n')
    assert main(["run", "--config", str(path)]) == 2
    assert "[exchange] source" in one_line_error(capsys)


def test_run_unreachable_nats_one_line_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``run`` with a NATS server that is not there: one line, exit 1, no log noise."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = tmp_path / "run.toml"
    path.write_text(
        f'[store]\npath = "{tmp_path / "s.sqlite"}"\n[exchange]\nsource = "sim"\n'
        f'[nats]\nservers = ["nats://127.0.0.1:{port}"]\nconnect_timeout_ms = 300\n'
    )
    assert main(["run", "--config", str(path)]) == 1
    assert "cannot connect to NATS" in one_line_error(capsys)


def test_check_config_describes_what_run_builds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config names the store, NATS, metrics and exchange it validated."""
    path = tmp_path / "ok.toml"
    path.write_text(
        '[store]\nkind = "postgres"\ndsn = "postgresql://x@y/z"\n'
        '[nats]\nservers = ["nats://n:4222"]\n[metrics]\nenabled = true\nport = 9999\n'
        '[exchange]\nsource = "sim"\n'
    )
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    for part in ("store postgres", "nats nats://n:4222", "metrics 127.0.0.1:9999", "exchange sim"):
        assert part in out


def test_main_in_process_leaves_logging_as_it_found_it(fast_dir: Path) -> None:
    """main() configures its log output for the command only (tests and apps call it)."""
    logger = logging.getLogger("liqshell")
    before = (list(logger.handlers), logger.propagate, logger.level)
    assert main(["simulate", "--accounts", "1", "--minutes", "1", "--quiet",
                 "--store", str(fast_dir / "log.sqlite")]) == 0  # fmt: skip
    assert (list(logger.handlers), logger.propagate, logger.level) == before


# --------------------------------------------------------------------------- foreign files


def _other_programs_database(path: Path, *, states: bool) -> bytes:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (a INTEGER)")
        if states:
            db.execute("CREATE TABLE states (wallet TEXT PRIMARY KEY, version INTEGER)")
        db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(5_000)])
    db.close()
    return path.read_bytes()


@pytest.mark.parametrize("states", [False, True], ids=["tables", "clashing-states"])
def test_simulate_refuses_another_programs_file_as_store_or_record_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], states: bool
) -> None:
    """``--record`` on a text file and ``--store`` or ``--record`` on another program's
    SQLite file exit 2 in one line, and the file is byte for byte as it was (nothing
    written into it first, not even the simulator's tables)."""
    text = tmp_path / "n.txt"
    text.write_bytes(b"keep me")
    assert main(["simulate", *SMALL, "--minutes", "1", "--record", str(text)]) == 2
    assert "not a liqshell recording" in one_line_error(capsys)
    assert text.read_bytes() == b"keep me"
    database = tmp_path / "other.db"
    before = _other_programs_database(database, states=states)
    for option in ("--store", "--record"):
        assert main(["simulate", *SMALL, "--minutes", "1", option, str(database)]) == 2
        assert "not a liqshell" in one_line_error(capsys)
        assert database.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.txt", "other.db"]


def test_simulate_record_appends_to_its_own_recording(
    fast_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A recording liqshell wrote is appended to: the first run's records kept, and each
    run opens with its own header (the first line of the file, then a line before the
    second run's records)."""
    from liqshell.adapters.jsonl import read_records as jsonl_records

    path = fast_dir / "twice.jsonl"
    args = ["simulate", "--accounts", "4", "--minutes", "1", "--quiet", "--record", str(path)]
    assert main([*args, "--seed", "1"]) == 0
    first = list(jsonl_records(path))
    assert main([*args, "--seed", "2"]) == 0
    capsys.readouterr()
    both = list(jsonl_records(path))
    assert both[: len(first)] == first
    assert len(both) > len(first)
    lines = path.read_text().splitlines()
    headers = [i for i, line in enumerate(lines) if '"format":"liqshell-recording"' in line]
    assert headers == [0, len(first) + 1]


# --------------------------------------------------------------------------- bad recordings


@pytest.mark.parametrize(
    "content",
    [
        "",
        "\n \n\n",
        '{"commands":[],"kind":"deci',
        '{"format":"liqshell-recording","library":"0.1.0","schema":1}\n',
    ],
    ids=["empty", "blank", "torn-only", "header-only"],
)
def test_replay_of_a_recording_without_records_fails_saying_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    """An empty, blank, torn-only or header-only file is not a recording to replay: exit 2
    and one line saying there are no records."""
    path = tmp_path / "nothing.jsonl"
    path.write_text(content)
    assert main(["replay", str(path)]) == 2
    assert "no records" in one_line_error(capsys)


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ('{"format":"liqshell-recording","library":"0.1.0","schema":7}\n', "schema 7"),
        ('{"format":"liqshell-recording","library":"42.1.0","schema":1}\n', "42.1.0"),
        ("[" * 100_000 + "]" * 100_000 + "\n", "nested too deeply"),
    ],
    ids=["schema", "library", "deep-nesting"],
)
def test_replay_refuses_an_unreadable_recording_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, named: str
) -> None:
    """An unknown schema or library version is refused naming it; deep nesting is the usual
    one-line error: exit 2, never a RecursionError."""
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    assert main(["replay", str(path)]) == 2
    line = one_line_error(capsys)
    assert named in line
    assert f"{path}: line 1: not a liqshell recording: " in line


def test_replay_bad_line_names_it_with_a_space(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The bad line's number reads ``PATH: line N: not a liqshell recording: …``."""
    path = tmp_path / "junk.jsonl"
    path.write_text('{"format":"liqshell-recording","library":"0.1.0","schema":1}\n{"kind": 1}\n')
    assert main(["replay", str(path)]) == 2
    assert f"{path}: line 2: not a liqshell recording: Record" in one_line_error(capsys)


def test_replay_mismatch_shows_the_recorded_and_the_replayed_value(
    recorded: tuple[Path, Path, str], fast_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mismatch line names the field and shows both values, recorded and replayed."""
    lines = recorded[1].read_text().splitlines()
    tampered, changed = [], False
    for line in lines:
        data = json.loads(line)
        if not changed and data.get("kind") == "decision" and data["state"]:
            data["state"]["equity"] = "12345.678"
            changed = True
        tampered.append(json.dumps(data))
    assert changed
    path = fast_dir / "tampered-state.jsonl"
    path.write_text("\n".join(tampered) + "\n")
    assert main(["replay", str(path)]) == 1
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("mismatch:")]
    assert "state differs in equity: recorded 12345.678, replayed " in line


# --------------------------------------------------------------------------- run's checks


def test_check_config_refuses_os_system_as_exchange_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``source = "os:system"`` fails check-config (imported and checked, never called) and
    run, in one line, exit 2."""
    path = tmp_path / "evil.toml"
    path.write_text(
        f'[store]\npath = "{tmp_path / "s.sqlite"}"\n[exchange]\nsource = "os:system"\n'
    )
    assert main(["check-config", str(path)]) == 2
    assert "not marked as a liqshell exchange factory" in one_line_error(capsys)
    assert main(["run", "--config", str(path)]) == 2
    assert "not marked" in one_line_error(capsys)
    assert not (tmp_path / "s.sqlite").exists()


def test_run_with_an_empty_config_fails_before_creating_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run --config empty.toml`` fails (no exchange source) and leaves no liqshell.sqlite."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.toml").write_text("")
    assert main(["run", "--config", "empty.toml"]) == 2
    assert "[exchange] source" in one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.toml"]


def test_run_refuses_a_foreign_record_or_changes_file_before_creating_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``[store] record`` or ``changes`` file that is not liqshell's is refused, exit 2,
    before the store is created."""
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    for key in ("record", "changes"):
        path = tmp_path / f"{key}.toml"
        path.write_text(
            f'[store]\npath = "{tmp_path / "s.sqlite"}"\n{key} = "{notes}"\n'
            '[exchange]\nsource = "sim"\n'
        )
        assert main(["run", "--config", str(path)]) == 2
        assert f"[store] {key}" in one_line_error(capsys)
    assert notes.read_text() == "keep me"
    assert not (tmp_path / "s.sqlite").exists()
