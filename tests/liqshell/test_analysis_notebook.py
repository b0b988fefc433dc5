"""liqshell.analysis frames, plots (headless, Agg) and the HTML report, opened in headless
Chromium."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from liqcore import Config
from liqshell import analysis
from liqshell.analysis import plots
from liqshell.analysis.report import money, write_html
from liqshell.cli import main
from liqshell.sim import SimParams, simulate

plots.use_agg()

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--hide-scrollbars",
)


@pytest.fixture(scope="module")
def recording() -> Iterator[analysis.Recording]:
    """Seed 3, 8 accounts, 3 minutes: one account repriced and recovered, two auctioned."""
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="liqshell-notebook-", dir=base) as name:
        store = Path(name) / "run.sqlite"
        asyncio.run(
            simulate(SimParams(accounts=8, minutes=3, seed=3), config=Config(), store=store)
        )
        yield analysis.load(store)


def test_recording_frame_is_tidy_with_floats_timestamps_and_categorical_phases(
    recording: analysis.Recording,
) -> None:
    import pandas as pd

    frame = recording.to_frame()
    assert len(frame) == sum(1 for _ in recording.decisions())
    assert {"wallet", "time", "phase", "equity", "mm_required", "target", "bonus_offered"} <= set(
        frame.columns
    )
    assert str(frame["time"].dtype).startswith("datetime64")
    assert str(frame["time"].dt.tz) == "UTC"
    assert isinstance(frame["phase"].dtype, pd.CategoricalDtype)
    assert list(frame["phase"].cat.categories) == list(plots.PHASES)
    assert frame["equity"].dtype == "float64"
    entered = frame[(frame["previous_phase"] == "healthy") & (frame["phase"] == "pre_liquidation")]
    assert set(entered["wallet"]) == {"0xsim0001", "0xsim0002", "0xsim0005"}


def test_trace_and_comparison_frames(recording: analysis.Recording) -> None:
    trace_frame = analysis.replay(recording).to_frame()
    assert trace_frame.drop(columns=["executed"]).equals(
        recording.to_frame().drop(columns=["executed"])
    )
    comparison = analysis.what_if(recording, partial_bonus_max_bps=300).to_frame()
    total = comparison[comparison["wallet"] == "total"].iloc[0]
    assert total["bonus_offered_what_if"] < total["bonus_offered_recorded"]


def test_plots_run_headless_and_write_files(recording: analysis.Recording, tmp_path: Path) -> None:
    comparison = analysis.what_if(recording, partial_bonus_max_bps=300)
    made = {
        "account.png": lambda p: plots.plot_account(recording, "0xsim0001", path=p),
        "bonus.png": lambda p: plots.plot_bonus(recording, "0xsim0001", path=p),
        "timeline.png": lambda p: plots.plot_timeline(recording, path=p),
        "comparison.svg": lambda p: plots.plot_comparison(comparison, path=p),
    }
    for name, draw in made.items():
        draw(tmp_path / name)
        assert (tmp_path / name).stat().st_size > 5_000, name
    with pytest.raises(KeyError):
        plots.plot_account(recording, "0xnobody")


def test_money_sums_the_orders_per_wallet_and_in_total(recording: analysis.Recording) -> None:
    rows = money(recording)
    assert [row.wallet for row in rows] == ["0xsim0001", "0xsim0002", "0xsim0005", "total"]
    assert rows[-1].orders == sum(row.orders for row in rows[:-1]) == 2
    assert rows[-1].notional == sum(row.notional for row in rows[:-1])
    assert rows[-1].auctions == 2
    assert rows[0].bonus_offered > 0


def _chromium() -> str:
    """The Chromium binary; installed with apt-get when missing and root (never skipped)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env, timeout=900
        )
        found = shutil.which("chromium")
        if found:
            return found
    pytest.fail("headless Chromium is needed for the HTML report test (apt-get install chromium)")


def test_html_report_opens_in_headless_chromium_with_its_plots_visible(
    recording: analysis.Recording, tmp_path: Path
) -> None:
    """The report is one self-contained file; a screenshot of it is far from blank: most
    of the page is drawn, in the plots' colours."""
    from matplotlib import image

    report = tmp_path / "report.html"
    write_html(recording, report)
    text = report.read_text()
    assert "http://" not in text
    assert "https://" not in text
    assert text.count("data:image/png;base64,") >= 5
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            _chromium(),
            *CHROMIUM_FLAGS,
            "--window-size=1200,1600",
            f"--screenshot={shot}",
            report.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pixels = image.imread(str(shot))[:, :, :3]
    drawn = (pixels.min(axis=2) < 0.9).mean()
    coloured = ((pixels.max(axis=2) - pixels.min(axis=2)) > 0.25).mean()
    assert drawn > 0.05
    assert coloured > 0.02


def test_cli_report_html_writes_the_report_and_prints_money(
    recording: analysis.Recording, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "r.html"
    assert main(["report", recording.source, "--html", str(target)]) == 0
    out = capsys.readouterr().out
    assert "bonus offered USD" in out
    assert "bonus paid USD*" in out
    assert any(line.startswith("total ") for line in out.splitlines())
    assert "* derived: fills estimated" in out
    assert target.read_text().startswith("<!DOCTYPE html>")
