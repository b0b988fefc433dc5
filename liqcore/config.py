"""The watcher's configuration; defaults are the seed's ``LiquidationWatcherConfig::default()``."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType

import attrs

from liqcore.errors import InvalidConfig, InvalidInput
from liqcore.inputs import MarginMode
from liqcore.instruments import InstrumentSpec
from liqcore.margin.base import MarginModel
from liqcore.margin.portfolio import PortfolioMargin
from liqcore.margin.standard import StandardMargin
from liqcore.numbers import ZERO, to_decimal

__all__ = ["Config"]


def _ms(inst: Config, attribute: attrs.Attribute[int], value: object) -> None:
    if type(value) is not int:
        raise InvalidConfig(f"Config.{attribute.name} must be an int (ms), was {value!r}")
    if value < 0:
        raise InvalidConfig(f"Config.{attribute.name} must be ≥ 0 ms, was {value}")


def _positive_ms(inst: Config, attribute: attrs.Attribute[int], value: object) -> None:
    _ms(inst, attribute, value)
    if value == 0:
        raise InvalidConfig(f"Config.{attribute.name} must be > 0 ms, was 0")


def _bps(inst: Config, attribute: attrs.Attribute[int], value: object) -> None:
    if type(value) is not int:
        raise InvalidConfig(f"Config.{attribute.name} must be an int (bps), was {value!r}")
    if value < 0:
        raise InvalidConfig(f"Config.{attribute.name} must be ≥ 0 bps, was {value}")


def _threshold(inst: Config, attribute: attrs.Attribute[Decimal], value: object) -> None:
    if type(value) is not Decimal or not value.is_finite() or value < 0:
        raise InvalidConfig(f"Config.{attribute.name} must be a finite Decimal ≥ 0, was {value!r}")


def _enabled(inst: Config, attribute: attrs.Attribute[bool], value: object) -> None:
    if type(value) is not bool:
        raise InvalidConfig(f"Config.enabled must be a bool, was {value!r}")


def _model(inst: Config, attribute: attrs.Attribute[MarginModel], value: object) -> None:
    if not callable(getattr(value, "evaluate", None)):
        raise InvalidConfig(
            f"Config.{attribute.name} must be a MarginModel (has evaluate()), was {value!r}"
        )


def _instruments(value: Mapping[str, InstrumentSpec]) -> Mapping[str, InstrumentSpec]:
    if not isinstance(value, Mapping):
        raise InvalidConfig(f"Config.instruments must be a mapping, was {value!r}")
    for underlying, spec in value.items():
        if type(underlying) is not str or not underlying:
            raise InvalidConfig(f"Config.instruments key must be an underlying, was {underlying!r}")
        if not isinstance(spec, InstrumentSpec):
            raise InvalidConfig(f"Config.instruments[{underlying!r}] must be an InstrumentSpec")
    return MappingProxyType(dict(sorted(value.items())))


@attrs.frozen(kw_only=True)
class Config:
    """Everything ``step`` and the shell are tuned by. See SPEC §3 for each field."""

    poll_interval_ms: int = attrs.field(default=5_000, validator=_positive_ms)
    full_escalation_timeout_ms: int = attrs.field(default=60_000, validator=_ms)
    min_shortfall_threshold: Decimal = attrs.field(default=ZERO, validator=_threshold)
    partial_target_buffer_bps: int = attrs.field(default=500, validator=_bps)
    partial_reprice_interval_ms: int = attrs.field(default=5_000, validator=_positive_ms)
    partial_bonus_start_bps: int = attrs.field(default=50, validator=_bps)
    partial_bonus_max_bps: int = attrs.field(default=1_000, validator=_bps)
    partial_bonus_ramp_ms: int = attrs.field(default=300_000, validator=_ms)
    engine_response_timeout_ms: int = attrs.field(default=10_000, validator=_positive_ms)
    reference_band_bps: int = attrs.field(default=2_000, validator=_bps)
    chain_start_timeout_ms: int = attrs.field(default=60_000, validator=_positive_ms)
    """How long an account may be InLiquidation without the chain's start time before
    ``step`` raises a ``STUCK`` alert (not in SPEC; see :func:`liqcore.overstay`)."""
    enabled: bool = attrs.field(default=True, validator=_enabled)
    standard_margin: MarginModel = attrs.field(factory=StandardMargin, validator=_model)
    portfolio_margin: MarginModel = attrs.field(factory=PortfolioMargin, validator=_model)
    instruments: Mapping[str, InstrumentSpec] = attrs.field(factory=dict, converter=_instruments)

    def __attrs_post_init__(self) -> None:
        if self.partial_bonus_max_bps < self.partial_bonus_start_bps:
            raise InvalidConfig(
                "Config.partial_bonus_max_bps must be ≥ partial_bonus_start_bps, was "
                f"{self.partial_bonus_max_bps} < {self.partial_bonus_start_bps}"
            )

    def margin_model(self, mode: MarginMode) -> MarginModel:
        """The model that values accounts of ``mode`` (a reference model unless replaced)."""
        if mode is MarginMode.PORTFOLIO:
            return self.portfolio_margin
        return self.standard_margin

    @classmethod
    def from_runtime(cls, runtime: Mapping[str, object]) -> Config:
        """Build from the seed's runtime keys (``health_poll_interval_ms``, …).

        Unknown keys such as ``full_target_buffer_bps`` or ``chain_observer_*`` are accepted
        and ignored; missing keys keep their defaults; ``enabled`` is read.
        """
        kwargs: dict[str, object] = {}
        for key, field in _RUNTIME_KEYS.items():
            if key in runtime:
                kwargs[field] = runtime[key]
        if "min_shortfall_threshold" in kwargs:
            raw = kwargs["min_shortfall_threshold"]
            if not isinstance(raw, int | str | float | Decimal):
                raise InvalidConfig(f"Config.min_shortfall_threshold is not a number: {raw!r}")
            try:
                kwargs["min_shortfall_threshold"] = to_decimal(
                    raw, "Config.min_shortfall_threshold"
                )
            except InvalidInput as error:
                raise InvalidConfig(str(error)) from None
        return cls(**kwargs)  # type: ignore[arg-type]


_RUNTIME_KEYS = {
    "health_poll_interval_ms": "poll_interval_ms",
    "full_escalation_timeout_ms": "full_escalation_timeout_ms",
    "min_shortfall_threshold": "min_shortfall_threshold",
    "partial_target_buffer_bps": "partial_target_buffer_bps",
    "partial_reprice_interval_ms": "partial_reprice_interval_ms",
    "partial_bonus_start_bps": "partial_bonus_start_bps",
    "partial_bonus_max_bps": "partial_bonus_max_bps",
    "partial_bonus_ramp_ms": "partial_bonus_ramp_ms",
    "chain_start_timeout_ms": "chain_start_timeout_ms",
    "enabled": "enabled",
}
