"""liqcore.config: seed defaults, from_runtime, and every InvalidConfig rule."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import attrs
import pytest
from hypothesis import given, settings

from liqcore.config import Config
from liqcore.errors import InvalidConfig, InvalidInput, LiqcoreError
from liqcore.inputs import MarginMode, Portfolio
from liqcore.instruments import InstrumentSpec
from liqcore.margin.base import MarginFacts
from liqcore.margin.portfolio import PortfolioMargin
from liqcore.margin.standard import StandardMargin
from liqcore.strategies import configs

# Properties of the strategies themselves (not of liqcore) run on a quarter of the examples.
_PROFILE = settings.default
assert _PROFILE is not None
_STRATEGY_CHECK = settings(max_examples=max(10, _PROFILE.max_examples // 4))

_MS_FIELDS = [
    "poll_interval_ms",
    "full_escalation_timeout_ms",
    "partial_reprice_interval_ms",
    "partial_bonus_ramp_ms",
    "engine_response_timeout_ms",
    "chain_start_timeout_ms",
]
_BPS_FIELDS = [
    "partial_target_buffer_bps",
    "partial_bonus_start_bps",
    "partial_bonus_max_bps",
    "reference_band_bps",
]


def _config(**fields: Any) -> Config:
    return Config(**fields)


class _EngineModel:
    """A user's own margin model (anything with evaluate)."""

    def evaluate(self, portfolio: Portfolio, now: int) -> MarginFacts:
        return MarginFacts(equity=portfolio.cash, mm_required=Decimal(0))


def test_config_defaults_are_exactly_the_seeds() -> None:
    """Config() has the seed's LiquidationWatcherConfig::default() values (SPEC §3)."""
    config = Config()
    assert config.poll_interval_ms == 5_000
    assert config.full_escalation_timeout_ms == 60_000
    assert config.min_shortfall_threshold == Decimal(0)
    assert type(config.min_shortfall_threshold) is Decimal
    assert config.partial_target_buffer_bps == 500
    assert config.partial_reprice_interval_ms == 5_000
    assert config.partial_bonus_start_bps == 50
    assert config.partial_bonus_max_bps == 1_000
    assert config.partial_bonus_ramp_ms == 300_000
    assert config.engine_response_timeout_ms == 10_000
    assert config.reference_band_bps == 2_000
    assert config.chain_start_timeout_ms == 60_000
    assert config.enabled is True
    assert config.standard_margin == StandardMargin()
    assert config.portfolio_margin == PortfolioMargin()
    assert dict(config.instruments) == {}


def test_config_has_exactly_the_spec_fields() -> None:
    """No field was added or dropped without the spec (or a documented addition:
    chain_start_timeout_ms, for liqcore.overstay) saying so."""
    assert [a.name for a in attrs.fields(Config)] == [
        "poll_interval_ms",
        "full_escalation_timeout_ms",
        "min_shortfall_threshold",
        "partial_target_buffer_bps",
        "partial_reprice_interval_ms",
        "partial_bonus_start_bps",
        "partial_bonus_max_bps",
        "partial_bonus_ramp_ms",
        "engine_response_timeout_ms",
        "reference_band_bps",
        "chain_start_timeout_ms",
        "enabled",
        "standard_margin",
        "portfolio_margin",
        "instruments",
    ]


def test_margin_model_defaults_are_the_spec_parameters() -> None:
    """StandardMargin(0.10, 0.05, 0.03); PortfolioMargin shocks ±15 %, vol 0.8, r 0.05 (§6)."""
    assert StandardMargin() == StandardMargin(
        rate=Decimal("0.10"), floor_rate=Decimal("0.05"), perp_rate=Decimal("0.03")
    )
    assert PortfolioMargin() == PortfolioMargin(
        spot_shocks=(Decimal("-0.15"), Decimal(0), Decimal("0.15")),
        vol_shocks=(Decimal(0),),
        base_volatility=Decimal("0.8"),
        risk_free_rate=Decimal("0.05"),
        short_option_contingency=Decimal(0),
    )


def test_from_runtime_seed_example() -> None:
    """The seed's runtime config maps field by field; extra keys are ignored."""
    runtime = {
        "enabled": True,
        "health_poll_interval_ms": 1_500,
        "partial_target_buffer_bps": 250,
        "partial_reprice_interval_ms": 2_500,
        "partial_bonus_start_bps": 75,
        "partial_bonus_max_bps": 500,
        "partial_bonus_ramp_ms": 120_000,
        "min_shortfall_threshold": Decimal(42),
        "full_escalation_timeout_ms": 9_000,
        "full_target_buffer_bps": 700,
        "chain_observer_poll_interval_ms": 1_000,
        "chain_observer_max_lag_blocks": 16,
    }
    config = Config.from_runtime(runtime)
    assert config.poll_interval_ms == 1_500
    assert config.full_escalation_timeout_ms == 9_000
    assert config.min_shortfall_threshold == Decimal(42)
    assert config.partial_target_buffer_bps == 250
    assert config.partial_reprice_interval_ms == 2_500
    assert config.partial_bonus_start_bps == 75
    assert config.partial_bonus_max_bps == 500
    assert config.partial_bonus_ramp_ms == 120_000
    assert config.enabled is True
    assert config.engine_response_timeout_ms == Config().engine_response_timeout_ms


def test_from_runtime_empty_mapping_gives_defaults_and_enabled_is_read() -> None:
    """Missing keys keep their defaults; enabled=false is honoured."""
    assert Config.from_runtime({}) == Config()
    assert Config.from_runtime({"enabled": False}).enabled is False


@pytest.mark.parametrize("raw", [42, "42", "42.0", 42.0, Decimal("42.00")])
def test_from_runtime_threshold_accepts_numbers_and_text(raw: object) -> None:
    """min_shortfall_threshold may come as int, text, float or Decimal."""
    assert Config.from_runtime({"min_shortfall_threshold": raw}).min_shortfall_threshold == 42


@pytest.mark.parametrize("raw", ["NaN", float("inf"), "abc", None, [42], True, "-1"])
def test_from_runtime_bad_threshold_raises_invalid_config(raw: object) -> None:
    """A non-finite, unparsable, wrong-typed or negative threshold is an InvalidConfig."""
    with pytest.raises(InvalidConfig, match=r"Config\.min_shortfall_threshold"):
        Config.from_runtime({"min_shortfall_threshold": raw})


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("health_poll_interval_ms", "poll_interval_ms"),
        ("partial_reprice_interval_ms", "partial_reprice_interval_ms"),
        ("partial_bonus_start_bps", "partial_bonus_start_bps"),
    ],
)
def test_from_runtime_text_for_an_int_raises_invalid_config(key: str, field: str) -> None:
    """Runtime values are not coerced: "1500" for an int field is refused, naming the field."""
    with pytest.raises(InvalidConfig, match=rf"Config\.{field}"):
        Config.from_runtime({key: "1500"})


@given(config=configs())
def test_from_runtime_of_a_configs_runtime_keys_rebuilds_it(config: Config) -> None:
    """from_runtime reads back every runtime field of any valid config."""
    runtime = {
        "health_poll_interval_ms": config.poll_interval_ms,
        "full_escalation_timeout_ms": config.full_escalation_timeout_ms,
        "min_shortfall_threshold": str(config.min_shortfall_threshold),
        "partial_target_buffer_bps": config.partial_target_buffer_bps,
        "partial_reprice_interval_ms": config.partial_reprice_interval_ms,
        "partial_bonus_start_bps": config.partial_bonus_start_bps,
        "partial_bonus_max_bps": config.partial_bonus_max_bps,
        "partial_bonus_ramp_ms": config.partial_bonus_ramp_ms,
        "chain_start_timeout_ms": config.chain_start_timeout_ms,
        "enabled": config.enabled,
    }
    rebuilt = Config.from_runtime(runtime)
    assert (
        attrs.evolve(
            config,
            engine_response_timeout_ms=rebuilt.engine_response_timeout_ms,
            reference_band_bps=rebuilt.reference_band_bps,
            standard_margin=rebuilt.standard_margin,
            portfolio_margin=rebuilt.portfolio_margin,
            instruments=rebuilt.instruments,
        )
        == rebuilt
    )


@_STRATEGY_CHECK
@given(config=configs())
def test_configs_strategy_keeps_the_bonus_ramp_ordered(config: Config) -> None:
    """Every generated config is valid: bonus max ≥ start, positive intervals."""
    assert config.partial_bonus_max_bps >= config.partial_bonus_start_bps
    assert config.poll_interval_ms > 0
    assert config.partial_reprice_interval_ms > 0
    assert list(config.instruments) == sorted(config.instruments)


@pytest.mark.parametrize("field", _MS_FIELDS)
def test_config_negative_duration_raises_invalid_config(field: str) -> None:
    """A negative duration is refused, naming the field."""
    with pytest.raises(InvalidConfig, match=rf"Config\.{field} must be ≥ 0 ms, was -1"):
        _config(**{field: -1})


@pytest.mark.parametrize(
    "field",
    [
        "poll_interval_ms",
        "partial_reprice_interval_ms",
        "engine_response_timeout_ms",
        "chain_start_timeout_ms",
    ],
)
def test_config_zero_interval_raises_invalid_config(field: str) -> None:
    """A zero poll, reprice, engine-response or chain-start interval is refused (it would
    spin, or call every auction stuck at once)."""
    with pytest.raises(InvalidConfig, match=rf"Config\.{field} must be > 0 ms"):
        _config(**{field: 0})


@pytest.mark.parametrize("field", ["full_escalation_timeout_ms", "partial_bonus_ramp_ms"])
def test_config_zero_timeout_or_ramp_is_allowed(field: str) -> None:
    """Escalating at once and a ramp of zero (bonus = max) are valid settings."""
    assert getattr(_config(**{field: 0}), field) == 0


@pytest.mark.parametrize("field", _BPS_FIELDS)
def test_config_negative_bps_raises_invalid_config(field: str) -> None:
    """Negative basis points (a negative buffer, bonus or band) are refused."""
    fields: dict[str, Any] = {field: -1}
    if field == "partial_bonus_start_bps":
        fields["partial_bonus_max_bps"] = 1_000
    with pytest.raises(InvalidConfig, match=rf"Config\.{field} must be ≥ 0 bps"):
        _config(**fields)


@pytest.mark.parametrize("field", [*_MS_FIELDS, *_BPS_FIELDS])
@pytest.mark.parametrize("value", [1.0, True, "5", None, Decimal(5)])
def test_config_non_int_raises_invalid_config(field: str, value: object) -> None:
    """Durations and bps are ints: floats, bools, text and Decimals are refused."""
    with pytest.raises(InvalidConfig, match=rf"Config\.{field} must be an int"):
        _config(**{field: value})


def test_config_bonus_max_below_start_raises_invalid_config() -> None:
    """partial_bonus_max_bps < partial_bonus_start_bps is refused, naming both."""
    with pytest.raises(InvalidConfig, match="partial_bonus_max_bps must be ≥ partial_bonus_start"):
        _config(partial_bonus_start_bps=100, partial_bonus_max_bps=99)
    assert _config(partial_bonus_start_bps=100, partial_bonus_max_bps=100).partial_bonus_max_bps


@pytest.mark.parametrize("value", [Decimal(-1), Decimal("NaN"), 1.0, 1, "1"])
def test_config_bad_threshold_raises_invalid_config(value: object) -> None:
    """The shortfall threshold is a finite Decimal ≥ 0."""
    with pytest.raises(InvalidConfig, match=r"Config\.min_shortfall_threshold"):
        _config(min_shortfall_threshold=value)


@pytest.mark.parametrize("value", [1, "true", None])
def test_config_non_bool_enabled_raises_invalid_config(value: object) -> None:
    """enabled is a bool."""
    with pytest.raises(InvalidConfig, match=r"Config\.enabled"):
        _config(enabled=value)


@pytest.mark.parametrize("field", ["standard_margin", "portfolio_margin"])
def test_config_model_without_evaluate_raises_invalid_config(field: str) -> None:
    """A margin model must have evaluate(); a user's own model is accepted."""
    with pytest.raises(InvalidConfig, match=rf"Config\.{field} must be a MarginModel"):
        _config(**{field: object()})
    assert isinstance(getattr(_config(**{field: _EngineModel()}), field), _EngineModel)


@pytest.mark.parametrize(
    ("instruments", "words"),
    [
        ([("BTC", InstrumentSpec())], "Config.instruments must be a mapping"),
        ({"": InstrumentSpec()}, "Config.instruments key"),
        ({1: InstrumentSpec()}, "Config.instruments key"),
        ({"BTC": {"size_step": "0.1"}}, r"Config.instruments\['BTC'\]"),
    ],
)
def test_config_bad_instruments_raise_invalid_config(instruments: object, words: str) -> None:
    """Instruments map non-empty underlyings to InstrumentSpecs."""
    with pytest.raises(InvalidConfig, match=words):
        _config(instruments=instruments)


def test_config_instruments_are_sorted_read_only_copies() -> None:
    """Instruments are copied, sorted by underlying, and read-only."""
    given_specs = {"ETH": InstrumentSpec(), "BTC": InstrumentSpec(size_step=Decimal("0.1"))}
    config = _config(instruments=given_specs)
    given_specs.clear()
    assert list(config.instruments) == ["BTC", "ETH"]
    with pytest.raises(TypeError):
        config.instruments["SOL"] = InstrumentSpec()  # type: ignore[index]


def test_margin_model_picks_the_model_of_the_mode() -> None:
    """margin_model(STANDARD) is standard_margin; PORTFOLIO is portfolio_margin."""
    standard, portfolio = (
        StandardMargin(rate=Decimal("0.2")),
        PortfolioMargin(base_volatility=Decimal(1)),
    )
    config = Config(standard_margin=standard, portfolio_margin=portfolio)
    assert config.margin_model(MarginMode.STANDARD) is standard
    assert config.margin_model(MarginMode.PORTFOLIO) is portfolio


def test_invalid_config_is_an_invalid_input_and_a_liqcore_error() -> None:
    """Callers can catch InvalidConfig as InvalidInput, LiqcoreError or ValueError."""
    assert issubclass(InvalidConfig, InvalidInput)
    assert issubclass(InvalidConfig, LiqcoreError)
    assert issubclass(InvalidConfig, ValueError)
