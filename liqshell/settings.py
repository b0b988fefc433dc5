"""The configuration file (TOML) → typed, validated settings → adapters (composition root).

A file has five optional sections::

    [liqcore]   Config fields (SPEC §3), plus [liqcore.standard_margin],
                [liqcore.portfolio_margin] and [liqcore.instruments.<UNDERLYING>]
    [store]     kind = "sqlite" (path) | "postgres" (dsn); record = optional JSON Lines log
    [nats]      servers and subjects of the NATS adapters
    [metrics]   Prometheus endpoint (host, port)
    [sim]       parameters of ``liqshell simulate`` (SimParams fields)

Parsing is strict — unknown sections and keys, wrong types and invalid values are errors —
and never connects to anything (``liqshell check-config`` is exactly :func:`load_settings`).
Every problem is one :class:`SettingsError` whose message names the file, the section and
the key. :func:`build` turns settings into the adapters of ``liqshell run``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Literal, TypeVar

import attrs

from liqcore import Config, InstrumentSpec, PortfolioMargin, StandardMargin
from liqcore.errors import InvalidConfig, InvalidInput, LiqcoreError
from liqcore.numbers import to_decimal
from liqshell.sim.world import SimParams

__all__ = [
    "MetricsSettings",
    "NatsSettings",
    "Settings",
    "SettingsError",
    "StoreSettings",
    "load_settings",
    "parse_settings",
]


_T = TypeVar("_T")


class SettingsError(Exception):
    """A configuration problem, as one line naming where it is."""


StoreKind = Literal["sqlite", "postgres"]


@attrs.frozen(kw_only=True)
class StoreSettings:
    """Where states and decisions are committed, and an optional JSON Lines replay log."""

    kind: StoreKind = "sqlite"
    path: str = "liqshell.sqlite"
    dsn: str | None = None
    record: str | None = None


@attrs.frozen(kw_only=True)
class NatsSettings:
    """Servers and subjects of the NATS adapters."""

    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    submit_subject: str = "liq.orders.submit"
    cancel_subject: str = "liq.orders.cancel"
    auction_start_subject: str = "liq.auctions.start"
    auction_stop_subject: str = "liq.auctions.stop"
    state_subject: str = "liq.state"
    chain_subject: str = "liq.chain.events"
    stream: str | None = None
    """JetStream stream for state changes (plain publish when unset)."""
    request_timeout_ms: int = 5_000
    connect_timeout_ms: int = 2_000


@attrs.frozen(kw_only=True)
class MetricsSettings:
    """The Prometheus endpoint (off unless ``enabled``)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9108


@attrs.frozen(kw_only=True)
class Settings:
    """A parsed configuration file."""

    config: Config = attrs.Factory(Config)
    store: StoreSettings = attrs.Factory(StoreSettings)
    nats: NatsSettings | None = None
    metrics: MetricsSettings = attrs.Factory(MetricsSettings)
    sim: SimParams = attrs.Factory(SimParams)
    source: str = "<defaults>"


# --- reading values ------------------------------------------------------------------------


class _Section:
    """One table of the file, read key by key; :meth:`finish` rejects what was not read."""

    def __init__(self, source: str, name: str, table: object) -> None:
        self.source = source
        self.name = name
        if not isinstance(table, dict):
            raise self.error(None, f"must be a table, was {_kind(table)}")
        self.table: dict[str, object] = table
        self.read: set[str] = set()

    def error(self, key: str | None, message: str) -> SettingsError:
        where = f"[{self.name}]" if key is None else f"[{self.name}] {key}"
        return SettingsError(f"{self.source}: {where}: {message}")

    def has(self, key: str) -> bool:
        return key in self.table

    def raw(self, key: str) -> object:
        self.read.add(key)
        return self.table[key]

    def integer(self, key: str, *, minimum: int | None = None) -> int:
        value = self.raw(key)
        if type(value) is not int:
            raise self.error(key, f"must be an integer, was {_kind(value)} {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be ≥ {minimum}, was {value}")
        return value

    def boolean(self, key: str) -> bool:
        value = self.raw(key)
        if type(value) is not bool:
            raise self.error(key, f"must be true or false, was {_kind(value)} {value!r}")
        return value

    def text(self, key: str) -> str:
        value = self.raw(key)
        if type(value) is not str or not value.strip():
            raise self.error(key, f"must be a non-empty string, was {_kind(value)} {value!r}")
        return value

    def number(self, key: str) -> Decimal:
        value = self.raw(key)
        if type(value) not in (int, float, str):
            raise self.error(key, f"must be a number, was {_kind(value)} {value!r}")
        assert isinstance(value, int | float | str)
        try:
            return to_decimal(value, key)
        except InvalidInput as error:
            raise self.error(key, str(error)) from None

    def numbers(self, key: str) -> tuple[Decimal, ...]:
        value = self.raw(key)
        if not isinstance(value, list) or not value:
            raise self.error(key, f"must be a non-empty array of numbers, was {value!r}")
        result = []
        for item in value:
            if type(item) not in (int, float, str):
                raise self.error(key, f"must hold numbers, had {_kind(item)} {item!r}")
            try:
                result.append(to_decimal(item, key))
            except InvalidInput as error:
                raise self.error(key, str(error)) from None
        return tuple(result)

    def texts(self, key: str) -> tuple[str, ...]:
        value = self.raw(key)
        if not isinstance(value, list) or not value:
            raise self.error(key, f"must be a non-empty array of strings, was {value!r}")
        for item in value:
            if type(item) is not str or not item.strip():
                raise self.error(key, f"must hold non-empty strings, had {item!r}")
        return tuple(value)

    def sub(self, key: str) -> _Section:
        self.read.add(key)
        return _Section(self.source, f"{self.name}.{key}", self.table[key])

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.read)
        if unknown:
            raise self.error(unknown[0], "unknown key" + _hint(unknown[0], self.known))

    known: tuple[str, ...] = ()


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _hint(key: str, known: tuple[str, ...]) -> str:
    import difflib

    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- sections ------------------------------------------------------------------------------

_CONFIG_INTS = (
    "poll_interval_ms",
    "full_escalation_timeout_ms",
    "partial_target_buffer_bps",
    "partial_reprice_interval_ms",
    "partial_bonus_start_bps",
    "partial_bonus_max_bps",
    "partial_bonus_ramp_ms",
    "engine_response_timeout_ms",
    "reference_band_bps",
)


def _config(section: _Section) -> Config:
    section.known = (
        *_CONFIG_INTS,
        "min_shortfall_threshold",
        "enabled",
        "standard_margin",
        "portfolio_margin",
        "instruments",
    )
    kwargs: dict[str, object] = {}
    for key in _CONFIG_INTS:
        if section.has(key):
            kwargs[key] = section.integer(key)
    if section.has("min_shortfall_threshold"):
        kwargs["min_shortfall_threshold"] = section.number("min_shortfall_threshold")
    if section.has("enabled"):
        kwargs["enabled"] = section.boolean("enabled")
    if section.has("standard_margin"):
        sub = section.sub("standard_margin")
        sub.known = ("rate", "floor_rate", "perp_rate")
        margin_args = {key: sub.number(key) for key in sub.known if sub.has(key)}
        sub.finish()
        kwargs["standard_margin"] = _build(sub, StandardMargin, margin_args)
    if section.has("portfolio_margin"):
        sub = section.sub("portfolio_margin")
        sub.known = (
            "spot_shocks",
            "vol_shocks",
            "base_volatility",
            "risk_free_rate",
            "short_option_contingency",
        )
        pm_args: dict[str, object] = {}
        for key in ("spot_shocks", "vol_shocks"):
            if sub.has(key):
                pm_args[key] = sub.numbers(key)
        for key in ("base_volatility", "risk_free_rate", "short_option_contingency"):
            if sub.has(key):
                pm_args[key] = sub.number(key)
        sub.finish()
        kwargs["portfolio_margin"] = _build(sub, PortfolioMargin, pm_args)
    if section.has("instruments"):
        table = section.sub("instruments")
        instruments: dict[str, InstrumentSpec] = {}
        for underlying in sorted(table.table):
            spec = table.sub(underlying)
            spec.known = ("size_step", "price_tick", "min_size")
            spec_args = {key: spec.number(key) for key in spec.known if spec.has(key)}
            spec.finish()
            instruments[underlying] = _build(spec, InstrumentSpec, spec_args)
        kwargs["instruments"] = instruments
    section.finish()
    return _build(section, Config, kwargs)


def _build(section: _Section, cls: Callable[..., _T], kwargs: Mapping[str, object]) -> _T:
    try:
        return cls(**kwargs)
    except (InvalidConfig, InvalidInput, LiqcoreError, ValueError, TypeError) as error:
        raise section.error(None, str(error)) from None


def _store(section: _Section) -> StoreSettings:
    section.known = ("kind", "path", "dsn", "record")
    kwargs: dict[str, object] = {}
    if section.has("kind"):
        kind = section.text("kind")
        if kind not in ("sqlite", "postgres"):
            raise section.error("kind", f'must be "sqlite" or "postgres", was {kind!r}')
        kwargs["kind"] = kind
    for key in ("path", "dsn", "record"):
        if section.has(key):
            kwargs[key] = section.text(key)
    section.finish()
    settings = StoreSettings(**kwargs)  # type: ignore[arg-type]
    if settings.kind == "postgres" and settings.dsn is None:
        raise section.error("dsn", 'is required when kind = "postgres"')
    return settings


def _nats(section: _Section) -> NatsSettings:
    fields = attrs.fields(NatsSettings)
    section.known = tuple(f.name for f in fields)
    kwargs: dict[str, object] = {}
    if section.has("servers"):
        servers = section.texts("servers")
        for server in servers:
            if "://" not in server:
                raise section.error("servers", f"{server!r} is not a URL (nats://host:port)")
        kwargs["servers"] = servers
    for field in fields:
        name = field.name
        if name == "servers" or not section.has(name):
            continue
        if name.endswith("_ms"):
            kwargs[name] = section.integer(name, minimum=1)
        else:
            kwargs[name] = section.text(name)
    section.finish()
    return NatsSettings(**kwargs)  # type: ignore[arg-type]


def _metrics(section: _Section) -> MetricsSettings:
    section.known = ("enabled", "host", "port")
    kwargs: dict[str, object] = {}
    if section.has("enabled"):
        kwargs["enabled"] = section.boolean("enabled")
    if section.has("host"):
        kwargs["host"] = section.text("host")
    if section.has("port"):
        port = section.integer("port", minimum=0)
        if port > 65_535:
            raise section.error("port", f"must be ≤ 65535, was {port}")
        kwargs["port"] = port
    section.finish()
    return MetricsSettings(**kwargs)  # type: ignore[arg-type]


_SIM_DECIMALS = ("shock_pct", "rebound", "liquidator_discount", "portfolio_share")


def _sim(section: _Section) -> SimParams:
    fields = attrs.fields(SimParams)
    section.known = tuple(f.name for f in fields)
    kwargs: dict[str, object] = {}
    for field in fields:
        name = field.name
        if not section.has(name):
            continue
        if name in _SIM_DECIMALS:
            kwargs[name] = section.number(name)
        else:
            kwargs[name] = section.integer(name, minimum=0)
    section.finish()
    return _build(section, SimParams, kwargs)


SECTIONS = ("liqcore", "store", "nats", "metrics", "sim")


def parse_settings(document: Mapping[str, object], *, source: str = "<config>") -> Settings:
    """Validate a parsed TOML document into :class:`Settings` (raises :class:`SettingsError`)."""
    for name in document:
        if name not in SECTIONS:
            raise SettingsError(
                f"{source}: [{name}]: unknown section"
                + _hint(name, SECTIONS)
                + f"; expected {', '.join(f'[{s}]' for s in SECTIONS)}"
            )
    kwargs: dict[str, object] = {"source": source}
    if "liqcore" in document:
        kwargs["config"] = _config(_Section(source, "liqcore", document["liqcore"]))
    if "store" in document:
        kwargs["store"] = _store(_Section(source, "store", document["store"]))
    if "nats" in document:
        kwargs["nats"] = _nats(_Section(source, "nats", document["nats"]))
    if "metrics" in document:
        kwargs["metrics"] = _metrics(_Section(source, "metrics", document["metrics"]))
    if "sim" in document:
        kwargs["sim"] = _sim(_Section(source, "sim", document["sim"]))
    return Settings(**kwargs)  # type: ignore[arg-type]


def load_settings(path: str | Path) -> Settings:
    """Read and validate the TOML file at ``path`` without connecting to anything."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise SettingsError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise SettingsError(f"{source}: is a directory, not a configuration file") from None
    except OSError as error:
        raise SettingsError(f"{source}: cannot read: {error.strerror or error}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"{source}: not UTF-8 text (a TOML file is expected)") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{source}: invalid TOML: {error}") from None
    return parse_settings(document, source=source)
