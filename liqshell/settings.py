"""The configuration file (TOML) → typed, validated settings → adapters (composition root).

A file has these optional sections::

    [liqcore]   Config fields (SPEC §3), plus [liqcore.standard_margin],
                [liqcore.portfolio_margin] and [liqcore.instruments.<UNDERLYING>]
    [store]     kind = "sqlite" (path) | "postgres" (dsn); record = JSON Lines replay log;
                changes = JSON Lines state-change log (the event sink when there is no NATS);
                record_mode; retention of the store's log: keep_days, keep_records,
                prune_interval_ms
    [nats]      servers, subjects and streams of the NATS adapters
    [metrics]   Prometheus endpoint (host, port)
    [sim]       parameters of the simulated exchange (SimParams fields)
    [exchange]  what ``liqshell run`` observes: source = "sim" (the simulated exchange on
                wall-clock time, ``speed`` × faster), the name of an entry point of the
                group ``liqshell.exchanges``, or "package.module:factory" naming a callable
                marked with :func:`exchange_factory`

Every setting can also come from the environment: ``LIQSHELL_<SECTION>__<KEY>`` (``__``
between levels, case-insensitive: ``LIQSHELL_STORE__DSN``, ``LIQSHELL_NATS__SERVERS`` as a
comma-separated list, ``LIQSHELL_LIQCORE__STANDARD_MARGIN__RATE``,
``LIQSHELL_EXCHANGE__OPTIONS__API_KEY``) and overrides the file. A string value in the file
may name environment variables as ``${VAR}``, or ``${VAR:-default}`` for a value used when
``VAR`` is unset or empty (``$${`` is a literal ``${``), and the secrets
(``[store] dsn``, ``[nats] user``, ``password``, ``token``) may be read from a file instead:
``dsn_file = "/run/secrets/dsn"``. :func:`redacted_settings` renders the effective
configuration with every secret replaced by ``***``.

Parsing is strict — unknown sections and keys, wrong types and invalid values are errors —
and never connects to anything. ``liqshell check-config`` is :func:`load_settings` and
:func:`resolve_exchange`, which imports the exchange factory and type-checks it (signature,
return annotation) without calling it.
Every problem is one :class:`SettingsError` whose message names the file, the section and
the key. :func:`build` turns settings into the adapters of ``liqshell run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import importlib
import importlib.metadata
import inspect
import logging
import os
import re
import socket
import ssl
import tomllib
import typing
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import attrs

from liqcore import Config, InstrumentSpec, PortfolioMargin, StandardMargin, StateChange
from liqcore.errors import InvalidConfig, InvalidInput, LiqcoreError
from liqcore.numbers import to_decimal
from liqshell.clock import SystemClock
from liqshell.ports import (
    AuctionExecutor,
    AuctionFeed,
    Clock,
    EventSink,
    FeedItem,
    OrderGateway,
    Recorder,
    StateStore,
)
from liqshell.redaction import REDACTED, redact, redact_url
from liqshell.sim.world import SimParams

if TYPE_CHECKING:
    from liqshell.adapters import Retention
    from liqshell.sim.persistence import WorldStore
    from liqshell.watcher import Watcher

__all__ = [
    "ENV_PREFIX",
    "EXCHANGE_GROUP",
    "ClusterSettings",
    "ExchangeSettings",
    "MetricsSettings",
    "NatsSettings",
    "Settings",
    "SettingsError",
    "StoreSettings",
    "apply_environment",
    "chain_key",
    "exchange_factory",
    "load_settings",
    "nats_options",
    "parse_settings",
    "redacted_settings",
    "resolve_exchange",
    "retention_of",
    "run_watcher",
]

_log = logging.getLogger("liqshell.settings")


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
    changes: str | None = None
    timeout_ms: int = 10_000
    """How long a store call waits for the database (a lock, a connection) before failing."""
    record_mode: str = "changes"
    """``"changes"``: healthy no-op decisions are counted in one ``POLL`` summary a poll,
    not committed or recorded one by one; ``"all"``: every decision (the full log)."""
    keep_days: int | None = None
    """Retention of the store's log: keep the records of the last that many days (of the
    log's own clock); ``None``: no limit (see :class:`~liqshell.adapters.Retention`)."""
    keep_records: int | None = None
    """Retention of the store's log: keep the newest that many records; ``None``: no limit."""
    prune_interval_ms: int = 60_000
    """How often, at most, a background pruning pass starts (with a limit set)."""


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
    portfolios_subject: str = "liq.exchange.portfolios"
    """The observation subjects of the wire protocol (``[exchange] source = "nats"``)."""
    margin_subject: str = "liq.exchange.margin"
    quotes_subject: str = "liq.exchange.quotes"
    open_orders_subject: str = "liq.exchange.open_orders"
    stream: str | None = None
    """JetStream stream for state changes (plain publish when unset)."""
    chain_stream: str | None = None
    """JetStream stream the chain events are read from (replayable from the cursor)."""
    chain_key_file: str | None = None
    """A file holding the key chain events are signed with (HMAC-SHA256, header
    ``Liq-Signature``): with it, an event without a valid signature is rejected."""
    request_timeout_ms: int = 5_000
    connect_timeout_ms: int = 2_000
    credentials: str | None = None
    """A NATS credentials file (``.creds``: user JWT and nkey seed)."""
    nkey_seed: str | None = None
    """A file holding an nkey seed (``SU…``) to sign the server's challenge with."""
    token: str | None = attrs.field(default=None, repr=False)
    """An authentication token (or ``token_file``)."""
    user: str | None = None
    """A user name (with ``password`` or ``password_file``)."""
    password: str | None = attrs.field(default=None, repr=False)
    tls_ca: str | None = None
    """A CA bundle (PEM) to verify the server with: turns TLS on."""
    tls_cert: str | None = None
    """A client certificate (PEM) for mutual TLS, with ``tls_key``."""
    tls_key: str | None = None
    tls_hostname: str | None = None
    """The name to verify the server's certificate against (default: the URL's host)."""


@attrs.frozen(kw_only=True)
class MetricsSettings:
    """The Prometheus endpoint (off unless ``enabled``)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9108


@attrs.frozen(kw_only=True)
class ExchangeSettings:
    """Where ``liqshell run`` observes accounts: ``"sim"``, the name of an entry point of the
    group :data:`EXCHANGE_GROUP`, or ``"package.module:factory"`` naming a callable marked
    with :func:`exchange_factory` (any other callable — ``os:system`` — is refused).

    A factory is called with the :class:`Settings` and returns one object serving
    ``PortfolioSource``, ``MarginSource``, ``QuoteSource`` and ``OrderSnapshot`` (and, without
    ``[nats]``, ``OrderGateway``, ``AuctionExecutor`` and ``AuctionFeed`` too); it finds its own
    parameters (URL, API key, …) in ``options``. ``speed``
    scales the simulated exchange's time (1: real time).
    """

    source: str | None = None
    speed: Decimal = Decimal(1)
    options: Mapping[str, object] = attrs.field(factory=dict, converter=MappingProxyType)
    """The ``[exchange.options]`` table, as TOML gave it (after ``${VAR}`` and environment
    overrides): a factory reads its URL, API key, … from ``settings.exchange.options``."""


@attrs.frozen(kw_only=True)
class ClusterSettings:
    """Many instances sharing one PostgreSQL store (``docs/shell.md``, "Many instances"):
    each steps the wallets of the shards it holds a lease of."""

    instance_id: str | None = None
    """This instance's id among the members, unique per running process (default: the
    host name and process id). A restart with the same id fences its predecessor."""
    shards: int = 16
    """How many shards the wallets are spread over: fixed for the life of a store."""
    lease_ttl_ms: int = 10_000
    """How long a lease (and a member's heartbeat) lasts unrenewed: a dead instance's
    shards are owned again within it and one renewal."""
    renew_interval_ms: int | None = None
    """How often leases are renewed and the assignment recomputed (default: a third of
    ``lease_ttl_ms``); less than ``lease_ttl_ms``."""


@attrs.frozen(kw_only=True)
class Settings:
    """A parsed configuration file."""

    config: Config = attrs.Factory(Config)
    store: StoreSettings = attrs.Factory(StoreSettings)
    nats: NatsSettings | None = None
    metrics: MetricsSettings = attrs.Factory(MetricsSettings)
    sim: SimParams = attrs.Factory(SimParams)
    exchange: ExchangeSettings = attrs.Factory(ExchangeSettings)
    cluster: ClusterSettings | None = None
    source: str = "<defaults>"


# --- reading values ------------------------------------------------------------------------

ENV_PREFIX = "LIQSHELL_"
"""Environment variables ``LIQSHELL_<SECTION>__<KEY>`` override the file's settings."""


class _EnvText(str):
    """A value from the environment: text, converted to what its key expects when read."""

    variable: str = ""


def _env_text(value: str, variable: str) -> _EnvText:
    text = _EnvText(value)
    text.variable = variable
    return text


def apply_environment(
    document: Mapping[str, object], environ: Mapping[str, str], *, source: str = "<config>"
) -> dict[str, object]:
    """``document`` with the overrides of ``environ``: ``LIQSHELL_STORE__DSN=…`` sets
    ``[store] dsn`` (``__`` separates levels; names are lower-cased, except the underlying of
    ``[liqcore.instruments.<UNDERLYING>]``). A value is text, read as the key expects: an
    integer, a number, ``true``/``false``, or a comma-separated list. Variables of the prefix
    without ``__`` (``LIQSHELL_DEBUG``) are not settings."""
    result = _copy(document)
    for variable in sorted(environ):
        if not variable.upper().startswith(ENV_PREFIX) or "__" not in variable:
            continue
        parts = variable[len(ENV_PREFIX) :].split("__")
        if any(not part for part in parts) or len(parts) < 2:
            raise SettingsError(
                f"environment {variable}: expected {ENV_PREFIX}<SECTION>__<KEY>, "
                "with __ between levels"
            )
        path = [
            part if index > 0 and parts[index - 1].lower() == "instruments" else part.lower()
            for index, part in enumerate(parts)
        ]
        if path[0] not in SECTIONS:
            raise SettingsError(
                f"environment {variable}: unknown section [{path[0]}]"
                + _hint(path[0], SECTIONS)
                + f"; expected {', '.join(f'[{s}]' for s in SECTIONS)}"
            )
        table: dict[str, object] = result
        for depth, part in enumerate(path[:-1]):
            inner = table.setdefault(part, {})
            if not isinstance(inner, dict):
                where = ".".join(path[: depth + 1])
                raise SettingsError(
                    f"{source}: environment {variable}: [{where}] is not a table in the file"
                )
            table = inner
        table[path[-1]] = _env_text(environ[variable], variable)
    return result


def _copy(value: Mapping[str, object]) -> dict[str, object]:
    return {k: _copy(v) if isinstance(v, dict) else v for k, v in value.items()}


_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _interpolate(
    value: object, environ: Mapping[str, str], source: str, where: list[str]
) -> object:
    """``value`` with every ``${VAR}`` of its strings replaced from ``environ``."""
    if isinstance(value, dict):
        return {k: _interpolate(v, environ, source, [*where, k]) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, environ, source, where) for item in value]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name, default, fallback = match.group(1).partition(":-")
        place = f"[{'.'.join(where[:-1])}] {where[-1]}" if len(where) > 1 else f"[{where[0]}]"
        if _VARIABLE.fullmatch(name) is None:
            raise SettingsError(
                f"{source}: {place}: ${{{match.group(1)}}} is not a variable name "
                "(${VAR} or ${VAR:-default})"
            )
        if default and not environ.get(name):
            return fallback
        if name not in environ:
            raise SettingsError(f"{source}: {place}: environment variable {name} is not set")
        return environ[name]

    return _REFERENCE.sub(replace, value)


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
        value = None if key is None else self.table.get(key)
        if isinstance(value, _EnvText):
            where += f" (from {value.variable})"
        return SettingsError(f"{self.source}: {where}: {message}")

    def has(self, key: str) -> bool:
        return key in self.table

    def raw(self, key: str) -> object:
        self.read.add(key)
        return self.table[key]

    def integer(self, key: str, *, minimum: int | None = None) -> int:
        value = self.raw(key)
        if isinstance(value, _EnvText):
            try:
                value = int(value.replace("_", ""))
            except ValueError:
                raise self.error(key, f"must be an integer, was {str(value)!r}") from None
        if type(value) is not int:
            raise self.error(key, f"must be an integer, was {_kind(value)} {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be ≥ {minimum}, was {value}")
        return value

    def boolean(self, key: str) -> bool:
        value = self.raw(key)
        if isinstance(value, _EnvText):
            words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
            if value.strip().lower() not in words:
                raise self.error(key, f"must be true or false, was {str(value)!r}")
            return words[value.strip().lower()]
        if type(value) is not bool:
            raise self.error(key, f"must be true or false, was {_kind(value)} {value!r}")
        return value

    def text(self, key: str) -> str:
        value = self.raw(key)
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be a non-empty string, was {_kind(value)} {value!r}")
        return str(value)

    def number(self, key: str) -> Decimal:
        value = self.raw(key)
        if isinstance(value, _EnvText):
            value = str(value)
        if type(value) not in (int, float, str):
            raise self.error(key, f"must be a number, was {_kind(value)} {value!r}")
        assert isinstance(value, int | float | str)
        try:
            return to_decimal(value, key)
        except InvalidInput as error:
            raise self.error(key, str(error)) from None

    def numbers(self, key: str) -> tuple[Decimal, ...]:
        value = self.raw(key)
        if isinstance(value, _EnvText):
            value = [item.strip() for item in value.split(",")]
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
        if isinstance(value, _EnvText):
            value = [item.strip() for item in value.split(",")]
        if not isinstance(value, list) or not value:
            raise self.error(key, f"must be a non-empty array of strings, was {value!r}")
        for item in value:
            if type(item) is not str or not item.strip():
                raise self.error(key, f"must hold non-empty strings, had {item!r}")
        return tuple(value)

    def secret(self, key: str) -> str | None:
        """``key``'s text, or the content of the file ``<key>_file`` names (without its
        trailing newline); ``None`` when neither is given."""
        file_key = f"{key}_file"
        if self.has(key) and self.has(file_key):
            raise self.error(file_key, f"give {key} or {file_key}, not both")
        if self.has(key):
            return self.text(key)
        if not self.has(file_key):
            return None
        path = self.text(file_key)
        try:
            content = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
            raise self.error(file_key, f"cannot read {path}: {reason or error}") from None
        if not content.strip():
            raise self.error(file_key, f"{path} is empty")
        return content

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
    "chain_start_timeout_ms",
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
    section.known = (
        "kind",
        "path",
        "dsn",
        "record",
        "changes",
        "timeout_ms",
        "record_mode",
        "keep_days",
        "keep_records",
        "prune_interval_ms",
    )
    kwargs: dict[str, object] = {}
    if section.has("kind"):
        kind = section.text("kind")
        if kind not in ("sqlite", "postgres"):
            raise section.error("kind", f'must be "sqlite" or "postgres", was {kind!r}')
        kwargs["kind"] = kind
    section.known = (*section.known, "dsn_file")
    for key in ("path", "record", "changes"):
        if section.has(key):
            kwargs[key] = section.text(key)
    dsn = section.secret("dsn")
    if dsn is not None:
        kwargs["dsn"] = dsn
    if section.has("timeout_ms"):
        kwargs["timeout_ms"] = section.integer("timeout_ms", minimum=1)
    if section.has("record_mode"):
        mode = section.text("record_mode")
        if mode not in ("changes", "all"):
            raise section.error("record_mode", f'must be "changes" or "all", was {mode!r}')
        kwargs["record_mode"] = mode
    for key in ("keep_days", "keep_records", "prune_interval_ms"):
        if section.has(key):
            kwargs[key] = section.integer(key, minimum=1)
    section.finish()
    settings = StoreSettings(**kwargs)  # type: ignore[arg-type]
    if settings.kind == "postgres" and settings.dsn is None:
        raise section.error("dsn", 'is required when kind = "postgres"')
    return settings


_NATS_SECRETS = ("user", "password", "token")


def _nats(section: _Section) -> NatsSettings:
    fields = attrs.fields(NatsSettings)
    section.known = (*(f.name for f in fields), *(f"{name}_file" for name in _NATS_SECRETS))
    kwargs: dict[str, object] = {}
    if section.has("servers"):
        servers = section.texts("servers")
        for server in servers:
            if "://" not in server:
                raise section.error(
                    "servers", f"{redact_url(server)!r} is not a URL (nats://host:port)"
                )
        kwargs["servers"] = servers
    for field in fields:
        name = field.name
        if name in _NATS_SECRETS:
            secret = section.secret(name)
            if secret is not None:
                kwargs[name] = secret
            continue
        if name == "servers" or not section.has(name):
            continue
        if name.endswith("_ms"):
            kwargs[name] = section.integer(name, minimum=1)
        else:
            kwargs[name] = section.text(name)
    section.finish()
    if "tls_key" in kwargs and "tls_cert" not in kwargs:
        raise section.error("tls_key", "needs tls_cert (the client certificate)")
    if "password" in kwargs and "user" not in kwargs:
        raise section.error("password", "needs user")
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


_ENTRY_POINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _exchange(section: _Section) -> ExchangeSettings:
    section.known = ("source", "speed", "options")
    kwargs: dict[str, object] = {}
    if section.has("options"):
        options = section.sub("options")
        kwargs["options"] = {
            key: str(value) if isinstance(value, _EnvText) else value
            for key, value in options.table.items()
        }
    if section.has("source"):
        source = section.text("source")
        module, colon, name = source.partition(":")
        if colon:
            valid = bool(module) and name.isidentifier()
            valid = valid and all(p.isidentifier() for p in module.split("."))
        else:
            valid = _ENTRY_POINT_NAME.fullmatch(source) is not None
        if not valid:
            raise section.error(
                "source",
                'must be "sim", an entry point name of the group "liqshell.exchanges" or '
                f'"package.module:factory", was {source!r}',
            )
        kwargs["source"] = source
    if section.has("speed"):
        speed = section.number("speed")
        if speed <= 0:
            raise section.error("speed", f"must be > 0, was {speed}")
        kwargs["speed"] = speed
    section.finish()
    return ExchangeSettings(**kwargs)  # type: ignore[arg-type]


def _cluster(section: _Section) -> ClusterSettings:
    section.known = ("instance_id", "shards", "lease_ttl_ms", "renew_interval_ms")
    kwargs: dict[str, object] = {}
    if section.has("instance_id"):
        kwargs["instance_id"] = section.text("instance_id")
    for key in ("shards", "lease_ttl_ms", "renew_interval_ms"):
        if section.has(key):
            kwargs[key] = section.integer(key, minimum=1)
    section.finish()
    settings = ClusterSettings(**kwargs)  # type: ignore[arg-type]
    if settings.renew_interval_ms is not None and settings.renew_interval_ms >= (
        settings.lease_ttl_ms
    ):
        raise section.error(
            "renew_interval_ms",
            f"must be less than lease_ttl_ms ({settings.lease_ttl_ms}), "
            f"was {settings.renew_interval_ms}",
        )
    return settings


SECTIONS = ("liqcore", "store", "nats", "metrics", "sim", "exchange", "cluster")


def parse_settings(
    document: Mapping[str, object],
    *,
    source: str = "<config>",
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Validate a parsed TOML document into :class:`Settings` (raises :class:`SettingsError`),
    its ``${VAR}`` references and ``LIQSHELL_<SECTION>__<KEY>`` overrides taken from
    ``environ`` (none when ``None``)."""
    environ = {} if environ is None else environ
    interpolated = _interpolate(dict(document), environ, source, [])
    assert isinstance(interpolated, dict)
    document = apply_environment(interpolated, environ, source=source)
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
    if "exchange" in document:
        kwargs["exchange"] = _exchange(_Section(source, "exchange", document["exchange"]))
    if "cluster" in document:
        section = _Section(source, "cluster", document["cluster"])
        kwargs["cluster"] = _cluster(section)
        store = kwargs.get("store", StoreSettings())
        assert isinstance(store, StoreSettings)
        if store.kind != "postgres":
            raise section.error(
                None,
                f'needs [store] kind = "postgres" (leases with fencing), was "{store.kind}": '
                "SQLite and the in-memory stores are single-instance",
            )
    return Settings(**kwargs)  # type: ignore[arg-type]


def load_settings(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the TOML file at ``path`` without connecting to anything, with the
    ``${VAR}`` references and ``LIQSHELL_<SECTION>__<KEY>`` overrides of ``environ``
    (default: ``os.environ``)."""
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
    return parse_settings(
        document, source=source, environ=os.environ if environ is None else environ
    )


# --- composition root ----------------------------------------------------------------------


class _LogSink:
    """The event sink when none is configured: each state change is logged at debug."""

    async def publish(self, change: StateChange, *, key: tuple[str, int, int]) -> None:
        _log.debug(
            "state change %s -> %s", change.previous_phase, change.new_phase,
            extra={"wallet": change.wallet, "phase": change.new_phase, "request_id": None,
                   "key": key},
        )  # fmt: skip


_OBSERVATION_METHODS = ("portfolios", "portfolio", "margin", "quotes", "open_orders")
_EFFECT_METHODS = ("submit", "cancel", "start", "stop", "events")


def _problem(settings: Settings, where: str, message: str) -> SettingsError:
    return SettingsError(f"{settings.source}: {where}: {message}")


def _file_setting(settings: Settings, where: str, path: str) -> Path:
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise _problem(settings, where, f"{path} is a directory")
    if not parent.is_dir():
        raise _problem(settings, where, f"directory {parent} of {path} does not exist")
    if not os.access(parent, os.W_OK):
        raise _problem(settings, where, f"{path} is not writable")
    return target


EXCHANGE_GROUP = "liqshell.exchanges"
"""The entry-point group of exchange factories: a package declares
``[project.entry-points."liqshell.exchanges"] myexchange = "mypkg.exchange:build"`` and a
configuration names it as ``source = "myexchange"``."""

_MARK = "__liqshell_exchange_factory__"

_F = TypeVar("_F", bound=Callable[..., object])


def exchange_factory(factory: _F) -> _F:
    """Mark ``factory`` as a liqshell exchange factory, so ``[exchange] source =
    "package.module:name"`` may call it (an unmarked callable is refused: a configuration
    file must not be able to call ``os:system``). An entry point of the group
    :data:`EXCHANGE_GROUP` needs no mark: the package that declares it vouches for it."""
    setattr(factory, _MARK, True)
    return factory


def resolve_exchange(settings: Settings) -> Callable[[Settings], object] | None:
    """The exchange factory ``[exchange] source`` names, imported and checked but not called
    (``None`` for ``"sim"`` or no source). Raises :class:`SettingsError` when it cannot be
    imported, is not callable, is a ``module:name`` callable not marked with
    :func:`exchange_factory`, or does not type-check: a coroutine function, a signature that
    does not bind ``factory(settings)``, or a return annotation that resolves to something
    other than ``object``/``Any`` or a class with the methods of the ports it is to serve."""
    source = settings.exchange.source
    if source is None or source in ("sim", "nats"):
        return None
    where = "[exchange] source"
    if ":" not in source:
        found = [
            point
            for point in importlib.metadata.entry_points(group=EXCHANGE_GROUP)
            if point.name == source
        ]
        if not found:
            known = sorted({p.name for p in importlib.metadata.entry_points(group=EXCHANGE_GROUP)})
            raise _problem(
                settings,
                where,
                f"no exchange {source!r} in the entry points of {EXCHANGE_GROUP!r}"
                + (f" (installed: {', '.join(known)})" if known else " (none installed)"),
            )
        try:
            loaded: object = found[0].load()
        except Exception as error:
            raise _problem(
                settings, where, f"cannot load entry point {source!r}: {error}"
            ) from None
    else:
        module_name, _, attribute = source.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise _problem(settings, where, f"cannot import {module_name}: {error}") from None
        loaded = getattr(module, attribute, None)
        if loaded is None:
            raise _problem(settings, where, f"{module_name} has no {attribute!r}")
        if getattr(loaded, _MARK, False) is not True:
            raise _problem(
                settings,
                where,
                f"{source} is not marked as a liqshell exchange factory (decorate it with "
                f"liqshell.settings.exchange_factory, or declare it as an entry point of "
                f"{EXCHANGE_GROUP!r})",
            )
    if not callable(loaded):
        raise _problem(settings, where, f"{source} is not a callable")
    _check_factory_signature(settings, source, loaded)
    return loaded


def _check_factory_signature(settings: Settings, source: str, factory: object) -> None:
    """Type-check ``factory`` without calling it: it is called as ``factory(settings)``, not
    awaited, so it must not be a coroutine function and its signature must bind one
    positional argument; a return annotation that resolves must be ``object``/``Any`` or a
    class with the methods of the ports it is to serve (the four observation ports, and
    without ``[nats]`` the order, auction and feed ports too). A callable without an
    inspectable signature, or an annotation that does not resolve at run time (an import
    under ``TYPE_CHECKING``), is not held against it."""
    where = "[exchange] source"
    target: Any = factory
    if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 — a callable instance's method
    ):
        raise _problem(
            settings,
            where,
            f"{source} is a coroutine function: a factory is called as factory(settings) "
            "and must return the exchange, not a coroutine",
        )
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(settings)
    except TypeError as error:
        raise _problem(
            settings,
            where,
            f"{source} cannot be called as factory(settings): {error}",
        ) from None
    if inspect.isclass(target):
        returned: object = target
    else:
        function = target if inspect.isroutine(target) else getattr(target, "__call__", None)  # noqa: B004
        try:
            hints = typing.get_type_hints(function)
        except Exception:
            return
        if "return" not in hints:
            return
        returned = hints["return"]
    if returned is object or returned is Any:
        return
    shown = "None" if returned is type(None) else getattr(returned, "__qualname__", None)
    shown = shown or repr(returned)
    if not isinstance(returned, type) or returned is type(None):
        raise _problem(
            settings,
            where,
            f"{source} is annotated to return {shown}, not an exchange: annotate it with "
            "a class serving PortfolioSource, MarginSource, QuoteSource and OrderSnapshot "
            "(or object)",
        )
    needed = list(_OBSERVATION_METHODS)
    if settings.nats is None:
        needed += _EFFECT_METHODS
    missing = [m for m in needed if not callable(getattr(returned, m, None))]
    if missing:
        without_nats = " (without [nats] it serves orders, auctions and events too)"
        raise _problem(
            settings,
            where,
            f"{source} is annotated to return {shown}, which has no "
            f"{', '.join(missing)}" + (without_nats if set(missing) & set(_EFFECT_METHODS) else ""),
        )


def _factory(settings: Settings, source: str) -> object:
    factory = resolve_exchange(settings)
    assert factory is not None
    try:
        exchange: object = factory(settings)
    except Exception as error:
        raise _problem(
            settings, "[exchange] source", f"{source}() failed: {type(error).__name__}: {error}"
        ) from None
    missing = [m for m in _OBSERVATION_METHODS if not callable(getattr(exchange, m, None))]
    if missing:
        raise _problem(
            settings,
            "[exchange] source",
            f"{source}() returned an object without {', '.join(missing)}",
        )
    return exchange


async def _quietly(close: Callable[[], Awaitable[object]]) -> None:
    with contextlib.suppress(Exception):
        await close()


async def run_watcher(
    settings: Settings,
    stop: asyncio.Event,
    *,
    on_ready: Callable[[Watcher], object] | None = None,
) -> None:
    """Build the adapters ``settings`` name, run the watcher until ``stop`` is set, release
    everything.

    Fails fast, before the first poll: :class:`SettingsError` for a setting that cannot
    work (a path in a missing directory, an unknown factory, a port in use) and
    :class:`~liqshell.adapters.ServiceUnavailable` for a store or NATS that cannot be
    reached. ``on_ready`` is called with the watcher once everything is connected.
    """
    async with contextlib.AsyncExitStack() as stack:
        watcher, background = await _compose(settings, stop, stack)
        if on_ready is not None:
            on_ready(watcher)
        tasks = [asyncio.create_task(watcher.run(stop))]
        tasks += [asyncio.create_task(job) for job in background]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    stop.set()
        finally:
            stop.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result


def nats_options(settings: Settings) -> dict[str, Any]:
    """The ``nats.connect`` options of ``[nats]``'s credentials and TLS settings (credentials
    file, nkey seed read from its file, token, user and password; a TLS context verifying the
    server with ``tls_ca`` and presenting ``tls_cert``/``tls_key``). Raises
    :class:`SettingsError` for a file that cannot be read or a certificate that does not
    load."""
    nats = settings.nats
    if nats is None:
        return {}
    options: dict[str, Any] = {}
    if nats.credentials is not None:
        _readable(settings, "[nats] credentials", nats.credentials)
        options["user_credentials"] = nats.credentials
    if nats.nkey_seed is not None:
        # Read here and passed stripped: nats-py before 2.11 reads the whole file as the
        # seed, so the trailing newline every seed file has makes it "invalid seed".
        _readable(settings, "[nats] nkey_seed", nats.nkey_seed)
        try:
            seed = Path(nats.nkey_seed).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise _problem(settings, "[nats] nkey_seed", f"cannot read: {error}") from None
        options["nkeys_seed_str"] = seed
    if nats.token is not None:
        options["token"] = nats.token
    if nats.user is not None:
        options["user"] = nats.user
    if nats.password is not None:
        options["password"] = nats.password
    if nats.tls_ca is not None or nats.tls_cert is not None:
        for key in ("tls_ca", "tls_cert", "tls_key"):
            path = getattr(nats, key)
            if path is not None:
                _readable(settings, f"[nats] {key}", path)
        try:
            context = ssl.create_default_context(cafile=nats.tls_ca)
            if nats.tls_cert is not None:
                context.load_cert_chain(nats.tls_cert, nats.tls_key)
        except (ssl.SSLError, OSError, ValueError) as error:
            raise _problem(settings, "[nats] tls", f"cannot load: {error}") from None
        options["tls"] = context
        if nats.tls_hostname is not None:
            options["tls_hostname"] = nats.tls_hostname
    return options


def _readable(settings: Settings, where: str, path: str) -> None:
    target = Path(path)
    if not target.is_file():
        raise _problem(settings, where, f"{path} is not a file")
    if not os.access(target, os.R_OK):
        raise _problem(settings, where, f"{path} is not readable")


def chain_key(settings: Settings) -> bytes | None:
    """The chain events' signing key from ``[nats] chain_key_file`` (``None``: unsigned)."""
    path = None if settings.nats is None else settings.nats.chain_key_file
    if path is None:
        return None
    try:
        key = Path(path).read_bytes().strip()
    except OSError as error:
        raise _problem(
            settings, "[nats] chain_key_file", f"cannot read {path}: {error.strerror or error}"
        ) from None
    if not key:
        raise _problem(settings, "[nats] chain_key_file", f"{path} is empty")
    return key


def _validate(settings: Settings) -> None:
    """What ``run`` can check without creating or connecting anything: the exchange source
    (imported, not called), and every file it would write — its folder exists and is
    writable, and an existing file is liqshell's."""
    from liqshell.adapters import ForeignFile
    from liqshell.adapters.jsonl import check_file
    from liqshell.adapters.sqlite import check_store_file

    if settings.exchange.source is None:
        raise _problem(
            settings,
            "[exchange] source",
            'required by "liqshell run": "sim", an entry point name of the group '
            f'"{EXCHANGE_GROUP}" or "package.module:factory"',
        )
    resolve_exchange(settings)
    if settings.exchange.source == "nats" and settings.nats is None:
        raise _problem(
            settings,
            "[exchange] source",
            '"nats" observes the exchange over NATS: [nats] is required',
        )
    chain_key(settings)
    nats_options(settings)
    stored = settings.store
    files: list[tuple[str, str, Callable[[Path], None]]] = []
    if stored.kind == "sqlite":
        files.append(("[store] path", stored.path, check_store_file))
    if stored.record is not None:
        files.append(("[store] record", stored.record, check_file))
    if stored.changes is not None:
        files.append(("[store] changes", stored.changes, lambda p: check_file(p, kind="changes")))
    for where, path, check in files:
        target = _file_setting(settings, where, path)
        try:
            check(target)
        except ForeignFile as error:
            raise _problem(settings, where, str(error)) from None


def retention_of(stored: StoreSettings) -> Retention:
    """The :class:`~liqshell.adapters.Retention` of ``[store]`` (keeps everything unless
    ``keep_days`` or ``keep_records`` is set)."""
    from liqshell.adapters import Retention

    return Retention(
        keep_days=stored.keep_days,
        keep_records=stored.keep_records,
        interval_ms=stored.prune_interval_ms,
    )


async def _compose(
    settings: Settings, stop: asyncio.Event, stack: contextlib.AsyncExitStack
) -> tuple[Watcher, list[Coroutine[object, object, None]]]:
    from liqshell.adapters.jsonl import JsonlEventSink, JsonlRecorder
    from liqshell.watcher import Watcher

    _validate(settings)  # everything that can be checked, before anything is created
    config = settings.config
    stored = settings.store
    store: StateStore
    if stored.kind == "sqlite":
        from liqshell.adapters.sqlite import SqliteStore

        path = _file_setting(settings, "[store] path", stored.path)
        store = SqliteStore(path, timeout_ms=stored.timeout_ms, retention=retention_of(stored))
    else:
        from liqshell.adapters.postgres import PostgresStore

        assert stored.dsn is not None
        store = PostgresStore(
            stored.dsn, timeout_ms=stored.timeout_ms, retention=retention_of(stored)
        )
    stack.push_async_callback(_quietly, store.close)
    await store.cursor()  # reach the store now: an unreachable one fails before any poll
    recorder: Recorder = store
    if stored.record is not None:
        jsonl = JsonlRecorder(_file_setting(settings, "[store] record", stored.record))
        stack.push_async_callback(_quietly, jsonl.close)
        recorder = jsonl

    source = settings.exchange.source
    assert source is not None  # _validate
    background: list[Coroutine[object, object, None]] = []
    registry = None  # the watcher's and the feed's metrics; served below
    if settings.metrics.enabled:
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry()
    exchange: Any
    worlds: WorldStore | None = None
    clock: Clock
    if source == "sim":
        from liqshell.sim import SimExchange, WorldStore, new_world
        from liqshell.sim.live import ScaledClock

        if stored.kind == "sqlite":
            worlds = WorldStore(stored.path)
            stack.callback(worlds.close)
        loaded = worlds.load() if worlds is not None else None
        if loaded is None:
            world, journal = new_world(settings.sim, config), list[dict[str, object]]()
        else:
            world, journal = loaded
            if world.params != settings.sim:
                raise _problem(
                    settings, "[sim]", f"{stored.path} holds a simulation with other parameters"
                )
        exchange = SimExchange(world, config=config, store=worlds)
        exchange.replay(journal)
        if worlds is not None:
            worlds.save(world)
        clock = ScaledClock(world.now, float(settings.exchange.speed))
    elif source == "nats":
        exchange = None  # the wire protocol's client, made once NATS is connected below
        clock = SystemClock()
    else:
        exchange = _factory(settings, source)
        clock = SystemClock()

    gateway: OrderGateway
    auctions: AuctionExecutor
    feed: AuctionFeed
    sink: EventSink
    publish: Callable[[FeedItem], Awaitable[None]] | None = None
    nats_settings = settings.nats
    if nats_settings is not None:
        from liqshell.adapters import nats as nats_adapters

        connector = nats_adapters.NatsConnector(
            list(nats_settings.servers),
            connect_timeout_ms=nats_settings.connect_timeout_ms,
            options=nats_options(settings),
        )
        stack.push_async_callback(_quietly, connector.close)
        await connector.client()  # fail fast: ServiceUnavailable names the servers
        for stream, subject in (
            (nats_settings.stream, nats_settings.state_subject),
            (nats_settings.chain_stream, nats_settings.chain_subject),
        ):
            if stream is not None:
                await nats_adapters.ensure_stream(connector, stream, [subject])
        timeout = nats_settings.request_timeout_ms
        if source == "nats":
            from liqshell.adapters.nats_exchange import NatsExchange

            exchange = NatsExchange(
                connector,
                portfolios_subject=nats_settings.portfolios_subject,
                margin_subject=nats_settings.margin_subject,
                quotes_subject=nats_settings.quotes_subject,
                open_orders_subject=nats_settings.open_orders_subject,
                timeout_ms=timeout,
            )
        gateway = nats_adapters.NatsOrderGateway(
            connector,
            submit_subject=nats_settings.submit_subject,
            cancel_subject=nats_settings.cancel_subject,
            timeout_ms=timeout,
        )
        auctions = nats_adapters.NatsAuctionExecutor(
            connector,
            start_subject=nats_settings.auction_start_subject,
            stop_subject=nats_settings.auction_stop_subject,
            timeout_ms=timeout,
        )
        sink = nats_adapters.NatsEventSink(
            connector, subject=nats_settings.state_subject, stream=nats_settings.stream,
            timeout_ms=timeout,
        )  # fmt: skip
        chain_key_value = chain_key(settings)
        feed = nats_adapters.NatsAuctionFeed(
            connector, subject=nats_settings.chain_subject, stream=nats_settings.chain_stream,
            timeout_ms=timeout,
            verify=None if chain_key_value is None else nats_adapters.hmac_verifier(
                chain_key_value
            ),
            metrics=registry,
        )  # fmt: skip
        if source == "sim":
            # The simulated exchange answers on NATS, as the real one would.
            from liqshell.sim.responder import serve_simulation

            responders, publish = await serve_simulation(
                connector, exchange, nats_settings, key=chain_key_value
            )
            for responder in responders:
                stack.push_async_callback(_quietly, responder.stop)
    else:
        missing = [m for m in _EFFECT_METHODS if not callable(getattr(exchange, m, None))]
        if missing:
            raise _problem(
                settings,
                "[nats]",
                f"required: the exchange source has no {', '.join(missing)} of its own",
            )
        gateway = auctions = feed = exchange
        sink = exchange if callable(getattr(exchange, "publish", None)) else _LogSink()
    if stored.changes is not None:
        changes = JsonlEventSink(_file_setting(settings, "[store] changes", stored.changes))
        stack.push_async_callback(_quietly, changes.close)
        sink = changes if nats_settings is None else sink

    metrics: object = None
    if registry is not None:
        from prometheus_client import start_http_server

        host, port = settings.metrics.host, settings.metrics.port
        try:
            server, thread = start_http_server(port, addr=host, registry=registry)
        except OSError as error:
            raise _problem(
                settings, "[metrics]", f"cannot listen on {host}:{port}: {error.strerror or error}"
            ) from None
        stack.callback(thread.join, 5)
        stack.callback(server.server_close)
        stack.callback(server.shutdown)
        metrics = registry

    if source == "sim":
        background.append(_drive(exchange, clock, stop, worlds, publish))
    owner = None
    cluster = settings.cluster
    if cluster is not None and config.enabled:
        from liqshell.adapters.postgres import PostgresStore
        from liqshell.ownership import ShardOwner

        assert isinstance(store, PostgresStore)  # parse_settings
        owner = ShardOwner(
            store,
            instance_id=cluster.instance_id or f"{socket.gethostname()}-{os.getpid()}",
            shards=cluster.shards,
            lease_ttl_ms=cluster.lease_ttl_ms,
        )
    watcher = Watcher(
        portfolios=exchange,
        margin=exchange,
        quotes=exchange,
        orders=exchange,
        gateway=gateway,
        auctions=auctions,
        feed=feed,
        store=store,
        sink=sink,
        recorder=recorder,
        clock=clock,
        config=config,
        metrics=metrics,
        record=settings.store.record_mode,
        owner=owner,
        renew_interval_ms=None if cluster is None else cluster.renew_interval_ms,
    )
    return watcher, background


async def _drive(
    exchange: Any,
    clock: Any,
    stop: asyncio.Event,
    worlds: WorldStore | None,
    publish: Callable[[FeedItem], Awaitable[None]] | None,
) -> None:
    from liqshell.sim.live import drive

    await drive(exchange, clock, stop, worlds=worlds, publish=publish)


# --- the effective configuration, shown ----------------------------------------------------

_SECRET_NAME = re.compile(r"password|passwd|token|secret|key|credential|dsn|seed|auth", re.I)
_SECRET_FIELDS = frozenset({("store", "dsn"), ("nats", "password"), ("nats", "token")})


def redacted_settings(settings: Settings) -> str:
    """The effective configuration — file, environment overrides and defaults — as TOML, with
    every secret shown as ``***``: the DSN's password, the NATS token and password, URL
    userinfo, and every ``[exchange.options]`` value whose name looks secret (``api_key``,
    ``token``, ``password``, …). File paths (``credentials``, ``nkey_seed``, ``*_file``) are
    shown: they are not the secret."""
    lines: list[str] = []
    sections: list[tuple[str, object]] = [
        ("liqcore", settings.config),
        ("store", settings.store),
        ("nats", settings.nats),
        ("metrics", settings.metrics),
        ("sim", settings.sim),
        ("exchange", settings.exchange),
        ("cluster", settings.cluster),
    ]
    for name, value in sections:
        if value is not None:
            _render_table(lines, name, value)
    return "\n".join(lines).strip() + "\n"


def _render_table(lines: list[str], name: str, value: object) -> None:
    scalars: list[str] = []
    tables: list[tuple[str, object]] = []
    if attrs.has(type(value)):
        fields: Any = attrs.fields(type(value))  # type: ignore[arg-type]
        items = [(f.name, getattr(value, f.name)) for f in fields]
    else:
        assert isinstance(value, Mapping)
        items = sorted((str(k), v) for k, v in value.items())
    section = name.split(".", maxsplit=1)[0]
    for key, item in items:
        if item is None:
            continue
        if attrs.has(type(item)) or isinstance(item, Mapping):
            tables.append((f"{name}.{key}", item))
            continue
        secret = (section, key) in _SECRET_FIELDS or (
            name == "exchange.options" and _SECRET_NAME.search(key) is not None
        )
        if secret and (section, key) == ("store", "dsn"):
            scalars.append(f"{key} = {_toml(redact_url(str(item)))}")
        elif secret:
            scalars.append(f"{key} = {_toml(REDACTED)}")
        else:
            scalars.append(f"{key} = {_toml(item)}")
    if scalars or not tables:
        lines.append(f"[{name}]")
        lines.extend(scalars)
        lines.append("")
    for sub_name, sub_value in tables:
        _render_table(lines, sub_name, sub_value)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, Decimal):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, enum.Enum):
        return _toml(value.value)
    text = redact(str(value))
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
