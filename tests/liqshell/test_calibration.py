"""liqshell.analysis.calibration and ``liqshell calibrate``: the gaps between the margin
model and the recorded Health, per margin mode, and parameters that close them — tested on
simulator recordings whose exchange runs other margin parameters than the watcher."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import attrs
import pytest

from liqcore import (
    Config,
    Health,
    MarginMode,
    Portfolio,
    PortfolioMargin,
    Position,
    StandardMargin,
)
from liqshell import analysis
from liqshell.analysis.calibration import (
    TOLERANCE,
    Calibration,
    Gaps,
    Observation,
    calibrate,
    fit_standard,
    observations,
)
from liqshell.cli import main
from liqshell.ports import Record, RecordKind
from liqshell.sim.runner import simulate
from liqshell.sim.world import SimParams

PARAMS = SimParams(accounts=12, minutes=2, seed=3)
TRUE_STANDARD = StandardMargin(
    rate=Decimal("0.13"), floor_rate=Decimal("0.07"), perp_rate=Decimal("0.04")
)
TRUE_PORTFOLIO = PortfolioMargin(
    spot_shocks=(Decimal("-0.2"), Decimal(0), Decimal("0.2")), base_volatility=Decimal("1.1")
)
EXCHANGE = Config(standard_margin=TRUE_STANDARD, portfolio_margin=TRUE_PORTFOLIO)
WATCHER = Config()  # the defaults: rate 0.10, floor 0.05, perp 0.03; shocks ±15 %, vol 0.8


@pytest.fixture(scope="module")
def mis_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulator recording: the exchange's engine runs EXCHANGE, the watcher WATCHER."""
    path = tmp_path_factory.mktemp("calibration") / "mis-set.jsonl"
    asyncio.run(
        simulate(PARAMS, config=WATCHER, exchange_config=EXCHANGE, record=path, record_mode="all")
    )
    return path


@pytest.fixture(scope="module")
def calibration(mis_set: Path) -> Calibration:
    return calibrate(analysis.load(mis_set))


def test_mis_set_parameters_show_as_gaps_in_both_modes(calibration: Calibration) -> None:
    """Every verdict of either mode is off by well over the 1 % tolerance; equity (which no
    margin parameter changes) matches."""
    for mode in MarginMode:
        report = calibration.mode(mode)
        assert report is not None, mode
        assert report.count > 10
        assert report.skipped == 0
        assert report.mm_required.median > 0.2
        assert report.mm_required.over_tolerance >= report.count * 0.9
        assert report.equity.max == 0.0
        assert report.configured == WATCHER.margin_model(mode)


def test_the_suggested_standard_rates_are_the_exchanges(calibration: Calibration) -> None:
    report = calibration.mode(MarginMode.STANDARD)
    assert report is not None
    assert report.suggested == TRUE_STANDARD
    assert report.mm_required_after is not None
    assert report.mm_required_after.max < 1e-9


def test_the_suggested_portfolio_parameters_are_the_exchanges(calibration: Calibration) -> None:
    report = calibration.mode(MarginMode.PORTFOLIO)
    assert report is not None
    assert isinstance(report.suggested, PortfolioMargin)
    assert report.suggested.spot_shocks == TRUE_PORTFOLIO.spot_shocks
    assert report.suggested.base_volatility == TRUE_PORTFOLIO.base_volatility
    assert report.mm_required_after is not None
    assert report.mm_required_after.max < 1e-9


def test_with_the_exchanges_parameters_there_is_nothing_to_fix(mis_set: Path) -> None:
    """Calibrating against the true models: no gap, and the suggestion is what is set."""
    result = calibrate(analysis.load(mis_set), EXCHANGE)
    for mode in MarginMode:
        report = result.mode(mode)
        assert report is not None
        assert report.mm_required.max < 1e-9
        assert report.mm_required.over_tolerance == 0
    standard = result.mode(MarginMode.STANDARD)
    assert standard is not None
    assert standard.suggested == TRUE_STANDARD


def test_cli_prints_the_gaps_and_the_suggestion_as_toml(
    mis_set: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["calibrate", str(mis_set)]) == 0
    out = capsys.readouterr().out
    assert "standard margin:" in out
    assert "portfolio margin:" in out
    assert "mm_required gap: median" in out
    assert "[liqcore.standard_margin]" in out
    assert 'rate = "0.13"' in out
    assert 'floor_rate = "0.07"' in out
    assert 'perp_rate = "0.04"' in out
    assert 'base_volatility = "1.10"' in out


def test_cli_compares_with_a_config_file_and_can_skip_the_fit(
    mis_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "exchange.toml"
    config.write_text(
        '[liqcore.standard_margin]\nrate = "0.13"\nfloor_rate = "0.07"\nperp_rate = "0.04"\n'
    )
    assert main(["calibrate", str(mis_set), "--config", str(config), "--no-fit"]) == 0
    out = capsys.readouterr().out
    standard = out.split("standard margin:", 1)[1].split("portfolio margin:", 1)[0]
    assert "median 0.00%, p95 0.00%, max 0.00% (0 over 1%)" in standard
    assert "suggested" not in out


def test_cli_names_a_missing_recording(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", "/nonexistent/run.jsonl"]) != 0
    assert "/nonexistent/run.jsonl" in capsys.readouterr().err


# --------------------------------------------------------------------------- pieces


def test_gaps_summarise_median_p95_max_and_the_count_over_tolerance() -> None:
    gaps = Gaps.of([0.0, 0.005, 0.02, 0.03, 0.5])
    assert (gaps.count, gaps.median, gaps.max, gaps.over_tolerance) == (5, 0.02, 0.5, 3)
    assert gaps.p95 == pytest.approx(0.5 * 0.8 + 0.03 * 0.2)
    assert Gaps.of([]).count == 0
    assert TOLERANCE == 0.01


def _observation(amount: str, strike: int, mm: str, spot: int = 100_000) -> Observation:
    symbol = f"BTC-20301231-{strike}-C"
    position = Position(symbol=symbol, amount=Decimal(amount), entry_price=Decimal(100))
    portfolio = Portfolio(
        cash=Decimal(1_000), positions={symbol: position}, spot={"BTC": Decimal(spot)}
    )
    return Observation(
        wallet="W",
        now=0,
        margin_mode=MarginMode.STANDARD,
        portfolio=portfolio,
        equity=Decimal(0),
        mm_required=Decimal(mm),
    )


def test_fit_standard_solves_both_sides_of_the_max_and_keeps_unseen_perp_rate() -> None:
    """Short calls at and far out of the money, the exchange at rate 0.2 / floor 0.08: an
    at-the-money call needs 0.2 × S, one 30 % out of the money 0.08 × S (the floor)."""
    start = StandardMargin(perp_rate=Decimal("0.07"))
    observed = [
        _observation("-1", 100_000, "20000"),  # rate side: 0.2 × 100 000
        _observation("-2", 100_000, "40000"),
        _observation("-1", 130_000, "8000"),  # floor side: 0.08 × 100 000 > 20 000 − 30 000
        _observation("-3", 130_000, "24000"),
    ]
    fitted = fit_standard(observed, start=start)
    assert fitted == StandardMargin(
        rate=Decimal("0.2"), floor_rate=Decimal("0.08"), perp_rate=Decimal("0.07")
    )
    assert fit_standard([]) is None


def test_observations_take_decisions_with_a_portfolio_only() -> None:
    portfolio = Portfolio(cash=Decimal(1), positions={}, spot={})
    with_portfolio = Health(
        wallet="W",
        margin_mode=MarginMode.STANDARD,
        equity=Decimal(1),
        mm_required=Decimal(0),
        is_liquidatable=False,
        portfolio=portfolio,
    )
    records = [
        Record(kind=RecordKind.DECISION, wallet="W", now=5, version=1, health=with_portfolio),
        Record(
            kind=RecordKind.DECISION,
            wallet="V",
            now=6,
            version=1,
            health=attrs.evolve(with_portfolio, wallet="V", portfolio=None),
        ),
        Record(kind=RecordKind.OUTCOMES, wallet="W", now=7, version=2),
    ]
    recording = analysis.from_entries(records)
    (only,) = observations(recording)
    assert (only.wallet, only.now, only.portfolio) == ("W", 5, portfolio)


def test_a_compact_recording_is_named_as_such(tmp_path: Path) -> None:
    """A recording whose healthy no-ops were only counted (record_mode "changes") says so:
    calibrating on it compares only the accounts that changed."""
    path = tmp_path / "compact.jsonl"
    asyncio.run(simulate(PARAMS, config=WATCHER, exchange_config=EXCHANGE, record=path))
    found = calibrate(analysis.load(path), fit=False)
    assert found.compact
    assert 'record_mode = "all"' in found.render()
