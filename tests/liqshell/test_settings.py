"""liqshell.settings: strict TOML → typed settings; every problem is one named line."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liqcore import Config, InstrumentSpec, PortfolioMargin, StandardMargin
from liqshell.settings import (
    MetricsSettings,
    Settings,
    SettingsError,
    StoreSettings,
    load_settings,
    parse_settings,
)
from liqshell.sim import SimParams

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "liqshell.toml"


def write(tmp_path: Path, text: str) -> Path:
    """A config file holding ``text``."""
    path = tmp_path / "liqshell.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_settings_example_file_parses_with_its_values() -> None:
    """The shipped example is valid and says what it means."""
    settings = load_settings(EXAMPLE)
    assert settings.config.poll_interval_ms == 5_000
    assert settings.config.instruments["BTC"] == InstrumentSpec(
        size_step=Decimal("0.01"), price_tick=Decimal("0.5"), min_size=Decimal("0.01")
    )
    assert settings.config.standard_margin == StandardMargin()
    assert settings.config.portfolio_margin == PortfolioMargin()
    assert settings.store == StoreSettings()
    assert settings.nats is not None
    assert settings.nats.servers == ("nats://127.0.0.1:4222",)
    assert settings.sim == SimParams()


def test_load_settings_empty_file_gives_defaults(tmp_path: Path) -> None:
    """Every section is optional."""
    settings = load_settings(write(tmp_path, ""))
    assert settings.config == Config()
    assert settings.store == StoreSettings()
    assert settings.nats is None
    assert settings.metrics == MetricsSettings()
    assert settings == Settings(source=str(tmp_path / "liqshell.toml"))


@given(
    poll=st.integers(1, 10**9),
    escalation=st.integers(0, 10**9),
    start=st.integers(0, 5_000),
    extra=st.integers(0, 5_000),
    threshold=st.decimals(0, 10**6, places=4, allow_nan=False, allow_infinity=False),
)
def test_parse_settings_liqcore_values_reach_config(
    poll: int, escalation: int, start: int, extra: int, threshold: Decimal
) -> None:
    """Whatever valid values [liqcore] holds, the Config carries exactly them."""
    settings = parse_settings(
        {
            "liqcore": {
                "poll_interval_ms": poll,
                "full_escalation_timeout_ms": escalation,
                "partial_bonus_start_bps": start,
                "partial_bonus_max_bps": start + extra,
                "min_shortfall_threshold": str(threshold),
            }
        }
    )
    assert settings.config.poll_interval_ms == poll
    assert settings.config.full_escalation_timeout_ms == escalation
    assert settings.config.partial_bonus_max_bps == start + extra
    assert settings.config.min_shortfall_threshold == threshold


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            "[liqcore]\npoll_intervall_ms = 5\n",
            "[liqcore] poll_intervall_ms: unknown key (did you mean 'poll_interval_ms'?)",
        ),
        ("[liqcore]\npoll_interval_ms = 0\n", "poll_interval_ms"),
        ("[liqcore]\npoll_interval_ms = '5'\n", "must be an integer"),
        (
            "[liqcore]\npartial_bonus_start_bps = 10\npartial_bonus_max_bps = 5\n",
            "partial_bonus_max_bps",
        ),
        ("[liqcore]\nmin_shortfall_threshold = 'lots'\n", "min_shortfall_threshold"),
        ("[liqcore]\nmin_shortfall_threshold = nan\n", "min_shortfall_threshold"),
        ("[liqcore]\nenabled = 'yes'\n", "true or false"),
        ("[liqcore.standard_margin]\nrate = -1\n", "[liqcore.standard_margin]"),
        ("[liqcore.portfolio_margin]\nspot_shocks = []\n", "spot_shocks"),
        ("[liqcore.instruments.BTC]\nsize_step = 0\n", "[liqcore.instruments.BTC]"),
        ("[liqcore.instruments]\nBTC = 3\n", "must be a table"),
        ("[store]\nkind = 'redis'\n", "[store] kind"),
        ("[store]\nkind = 'postgres'\n", "[store] dsn: is required"),
        ("[nats]\nservers = ['localhost']\n", "not a URL"),
        ("[nats]\nrequest_timeout_ms = 0\n", "request_timeout_ms"),
        ("[metrics]\nport = 70000\n", "[metrics] port"),
        ("[sim]\naccounts = 0\n", "[sim]"),
        ("[sim]\nshock_pct = -99\n", "shock_pct"),
        ("[simulation]\naccounts = 3\n", "[simulation]: unknown section"),
        ("liqcore = 3\n", "[liqcore]: must be a table"),
        ("[liqcore\n", "invalid TOML"),
    ],
)
def test_load_settings_bad_file_one_line_naming_the_place(
    tmp_path: Path, text: str, fragment: str
) -> None:
    """A bad value, key or section: one SettingsError line naming the file and the key."""
    path = write(tmp_path, text)
    with pytest.raises(SettingsError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert fragment in message
    assert message.startswith(str(path))
    assert "\n" not in message


def test_load_settings_missing_or_directory_or_binary_clear_error(tmp_path: Path) -> None:
    """Bad paths are named, never a traceback from the OS or the TOML parser."""
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(tmp_path / "absent.toml")
    with pytest.raises(SettingsError, match="is a directory"):
        load_settings(tmp_path)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SettingsError, match="UTF-8"):
        load_settings(binary)


def test_parse_settings_float_money_read_through_its_text() -> None:
    """A TOML float for money is read as its text (0.1 is 0.1, not 0.1000000000000000055…)."""
    settings = parse_settings({"liqcore": {"standard_margin": {"rate": 0.1}}})
    standard = settings.config.standard_margin
    assert isinstance(standard, StandardMargin)
    assert standard.rate == Decimal("0.1")
