"""liqshell.cli: every command works, and every expected failure is one line, never a traceback."""

from __future__ import annotations

import json
import logging
import os
import socket
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
        if not changed and data["kind"] == "decision" and data["commands"]:
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
    assert "8 wallets" in out
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
