"""liqshell.settings for production: environment overrides, ``${VAR}``, ``*_file`` secrets,
``[exchange.options]``, NATS credentials and TLS, the effective configuration redacted."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liqcore import InstrumentSpec
from liqshell.adapters import ServiceUnavailable
from liqshell.adapters.nats import NatsConnector
from liqshell.cli import main
from liqshell.settings import (
    Settings,
    SettingsError,
    apply_environment,
    load_settings,
    nats_options,
    parse_settings,
    redacted_settings,
)
from tests.liqshell.services import start_nats

PRODUCTION = Path(__file__).parents[2] / "examples" / "production.toml"


def test_environment_overrides_every_kind_of_setting() -> None:
    """``LIQSHELL_SECTION__KEY`` reaches integers, booleans, numbers, lists, nested tables
    and instruments (underlying kept as written), and overrides the file."""
    environ = {
        "LIQSHELL_METRICS__PORT": "9200",
        "LIQSHELL_METRICS__ENABLED": "true",
        "LIQSHELL_NATS__SERVERS": "nats://a:4222, nats://b:4222",
        "LIQSHELL_NATS__REQUEST_TIMEOUT_MS": "1_500",
        "LIQSHELL_LIQCORE__STANDARD_MARGIN__RATE": "0.2",
        "LIQSHELL_LIQCORE__PORTFOLIO_MARGIN__SPOT_SHOCKS": "-0.2,0,0.2",
        "LIQSHELL_LIQCORE__INSTRUMENTS__ETH__SIZE_STEP": "0.1",
        "LIQSHELL_LIQCORE__ENABLED": "false",
        "LIQSHELL_STORE__PATH": "from-env.sqlite",
        "LIQSHELL_DEBUG": "1",  # not a setting: no "__"
        "HOME": "/root",
    }
    document = {"store": {"path": "from-file.sqlite"}, "metrics": {"port": 1}}
    settings = parse_settings(document, environ=environ)
    assert settings.metrics.port == 9200
    assert settings.metrics.enabled is True
    assert settings.nats is not None
    assert settings.nats.servers == ("nats://a:4222", "nats://b:4222")
    assert settings.nats.request_timeout_ms == 1500
    assert settings.config.standard_margin.rate == Decimal("0.2")
    assert settings.config.portfolio_margin.spot_shocks == (
        Decimal("-0.2"),
        Decimal(0),
        Decimal("0.2"),
    )
    assert settings.config.instruments["ETH"] == InstrumentSpec(size_step=Decimal("0.1"))
    assert settings.config.enabled is False
    assert settings.store.path == "from-env.sqlite"


@given(port=st.integers(min_value=0, max_value=65_535), enabled=st.booleans())
def test_environment_value_equals_the_same_value_in_the_file(port: int, enabled: bool) -> None:
    """A setting from the environment is the setting the file would give."""
    from_file = parse_settings({"metrics": {"port": port, "enabled": enabled}})
    from_env = parse_settings(
        {},
        environ={
            "LIQSHELL_METRICS__PORT": str(port),
            "LIQSHELL_METRICS__ENABLED": str(enabled).lower(),
        },
    )
    assert from_env.metrics == from_file.metrics


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"LIQSHELL_METRICS__PORT": "lots"},
            "[metrics] port (from LIQSHELL_METRICS__PORT): must be an integer, was 'lots'",
        ),
        (
            {"LIQSHELL_METRICS__ENABLED": "maybe"},
            "[metrics] enabled (from LIQSHELL_METRICS__ENABLED): must be true or false",
        ),
        (
            {"LIQSHELL_STORE__DNS": "x"},
            "[store] dns (from LIQSHELL_STORE__DNS): unknown key (did you mean 'dsn'?)",
        ),
        ({"LIQSHELL_STOR__PATH": "x"}, "environment LIQSHELL_STOR__PATH: unknown section [stor]"),
        ({"LIQSHELL_STORE__": "x"}, "environment LIQSHELL_STORE__: expected LIQSHELL_<SECTION>"),
        (
            {"LIQSHELL_LIQCORE__STANDARD_MARGIN__RATE": "-1"},
            "[liqcore.standard_margin]",
        ),
    ],
)
def test_environment_errors_name_the_variable(environ: dict[str, str], message: str) -> None:
    """A bad override is one line naming the setting and the variable it came from."""
    with pytest.raises(SettingsError) as raised:
        parse_settings({}, source="f.toml", environ=environ)
    assert message in str(raised.value)


def test_apply_environment_does_not_touch_the_document() -> None:
    """Overrides go into a copy."""
    document: dict[str, object] = {"store": {"path": "a"}}
    changed = apply_environment(document, {"LIQSHELL_STORE__PATH": "b"})
    assert document == {"store": {"path": "a"}}
    assert changed == {"store": {"path": "b"}}


def test_variable_references_are_interpolated_and_missing_ones_named() -> None:
    """``${VAR}`` in any string is replaced; ``$${`` is a literal; an unset one is an error
    naming the setting and the variable."""
    document = {
        "store": {"kind": "postgres", "dsn": "postgresql://liq:${PGPASSWORD}@db/liq"},
        "exchange": {"source": "sim", "options": {"note": "costs $${PRICE}", "n": 3}},
    }
    settings = parse_settings(document, environ={"PGPASSWORD": "s3cret"})
    assert settings.store.dsn == "postgresql://liq:s3cret@db/liq"
    assert dict(settings.exchange.options) == {"note": "costs ${PRICE}", "n": 3}
    with pytest.raises(SettingsError, match=r"f.toml: \[store\] dsn: environment variable "):
        parse_settings(document, source="f.toml", environ={})


def test_variable_references_may_have_defaults() -> None:
    """``${VAR:-default}`` is ``VAR`` when it is set and not empty, else ``default`` (which may
    be empty); ``${VAR:-x}`` and ``${VAR}`` may share a string; a bad name is still an
    error naming the setting."""
    document = {
        "store": {
            "kind": "postgres",
            "dsn": "postgresql://liq:${PW}@${DB_HOST:-db.internal}:${DB_PORT:-5432}/liq${SFX:-}",
        }
    }
    settings = parse_settings(document, environ={"PW": "s3cret"})
    assert settings.store.dsn == "postgresql://liq:s3cret@db.internal:5432/liq"
    settings = parse_settings(
        document, environ={"PW": "s3cret", "DB_HOST": "127.0.0.1", "DB_PORT": "", "SFX": "_2"}
    )
    assert settings.store.dsn == "postgresql://liq:s3cret@127.0.0.1:5432/liq_2"
    with pytest.raises(SettingsError, match=r"\[store\] dsn: environment variable PW "):
        parse_settings(document, environ={"DB_HOST": "h"})
    with pytest.raises(SettingsError, match=r"\[store\] path: \$\{1X:-a\} is not a variable"):
        parse_settings({"store": {"path": "${1X:-a}"}}, environ={})


def test_secret_from_file(tmp_path: Path) -> None:
    """``dsn_file``/``token_file``/``password_file`` read the secret from a file (trailing
    newline dropped); both forms, or an unreadable or empty file, are errors."""
    dsn = tmp_path / "dsn"
    dsn.write_text("postgresql://liq:pw@db/liq\n")
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    settings = parse_settings(
        {
            "store": {"kind": "postgres", "dsn_file": str(dsn)},
            "nats": {"token_file": str(token)},
        }
    )
    assert settings.store.dsn == "postgresql://liq:pw@db/liq"
    assert settings.nats is not None
    assert settings.nats.token == "t0ken"
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for store, fragment in [
        ({"dsn": "x", "dsn_file": str(dsn)}, "give dsn or dsn_file, not both"),
        ({"dsn_file": str(tmp_path / "missing")}, "cannot read"),
        ({"dsn_file": str(empty)}, "is empty"),
    ]:
        with pytest.raises(SettingsError, match=r"\[store\] dsn_file: .*" + fragment):
            parse_settings({"store": {"kind": "postgres", **store}})


def test_exchange_options_reach_the_settings_with_overrides() -> None:
    """``[exchange.options]`` is kept as given (a factory reads it from the settings it is
    called with); the environment overrides or adds options."""
    settings = parse_settings(
        {"exchange": {"source": "sim", "options": {"url": "https://x", "retries": 3}}},
        environ={"LIQSHELL_EXCHANGE__OPTIONS__API_KEY": "k-123"},
    )
    assert dict(settings.exchange.options) == {
        "url": "https://x",
        "retries": 3,
        "api_key": "k-123",
    }
    assert type(settings.exchange.options["api_key"]) is str


def test_nats_options_map_credentials_and_tls(tmp_path: Path) -> None:
    """Credentials file, nkey seed, token, user/password go to ``nats.connect``; a TLS CA
    that does not load, a missing file, or a key without a certificate are errors."""
    creds = tmp_path / "user.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n")
    seed = tmp_path / "seed.nk"
    seed.write_text("SUAAA\n")
    settings = parse_settings(
        {
            "nats": {
                "credentials": str(creds),
                "nkey_seed": str(seed),
                "user": "liq",
                "password": "pw",
            }
        }
    )
    assert nats_options(settings) == {
        "user_credentials": str(creds),
        "nkeys_seed_str": "SUAAA",
        "user": "liq",
        "password": "pw",
    }
    assert nats_options(Settings()) == {}
    bad_ca = tmp_path / "ca.pem"
    bad_ca.write_text("not a certificate\n")
    with pytest.raises(SettingsError, match=r"\[nats\] tls: cannot load"):
        nats_options(parse_settings({"nats": {"tls_ca": str(bad_ca)}}))
    with pytest.raises(SettingsError, match=r"\[nats\] credentials: .* is not a file"):
        nats_options(parse_settings({"nats": {"credentials": str(tmp_path / "none")}}))
    with pytest.raises(SettingsError, match=r"\[nats\] tls_key: needs tls_cert"):
        parse_settings({"nats": {"tls_key": str(seed)}})
    with pytest.raises(SettingsError, match=r"\[nats\] password: needs user"):
        parse_settings({"nats": {"password": "pw"}})


@pytest.mark.services
async def test_nats_token_from_the_environment_authenticates(tmp_path: Path) -> None:
    """Against a nats-server requiring a token: the token from ``LIQSHELL_NATS__TOKEN``
    connects; without it the connection is refused (ServiceUnavailable)."""
    server = start_nats(["--auth", "s3cret-token"])
    try:
        config = tmp_path / "n.toml"
        config.write_text(f'[nats]\nservers = ["{server.url}"]\n')
        settings = load_settings(config, environ={"LIQSHELL_NATS__TOKEN": "s3cret-token"})
        assert settings.nats is not None
        connector = NatsConnector(list(settings.nats.servers), options=nats_options(settings))
        async with connector:
            assert (await connector.client()).is_connected
        anonymous = NatsConnector(list(settings.nats.servers))
        with pytest.raises(ServiceUnavailable):
            await anonymous.client()
    finally:
        server.remove()


def test_redacted_settings_hide_every_secret(tmp_path: Path) -> None:
    """The effective configuration shows overrides and defaults but no secret: not the DSN
    password, not the NATS token or password, not a secret-looking option."""
    settings = parse_settings(
        {
            "store": {"kind": "postgres", "dsn": "postgresql://liq:pg-pw@db/liq"},
            "nats": {"servers": ["nats://u:url-pw@n:4222"], "user": "liq", "password": "n-pw"},
            "exchange": {"source": "sim", "options": {"url": "https://x", "api_key": "k-1"}},
        },
        environ={"LIQSHELL_NATS__TOKEN": "tok-1", "LIQSHELL_METRICS__PORT": "9300"},
    )
    text = redacted_settings(settings)
    for secret in ("pg-pw", "url-pw", "n-pw", "tok-1", "k-1"):
        assert secret not in text
    for shown in (
        'dsn = "postgresql://***@db/liq"',
        'token = "***"',
        'password = "***"',
        'api_key = "***"',
        'url = "https://x"',
        "port = 9300",
        "poll_interval_ms = 5000",
        "[liqcore.standard_margin]",
    ):
        assert shown in text


def test_check_config_prints_the_effective_configuration_redacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``check-config`` prints the ok line, then the effective configuration with the
    environment's values and without its secrets."""
    monkeypatch.setenv("LIQSHELL_STORE__DSN", "postgresql://liq:env-pw@db/liq")
    monkeypatch.setenv("LIQSHELL_STORE__KIND", "postgres")
    path = tmp_path / "c.toml"
    path.write_text('[exchange]\nsource = "sim"\n')
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: ok (store postgres postgresql://***@db/liq")
    assert 'kind = "postgres"' in out
    assert "env-pw" not in out


def test_production_example_checks_with_secrets_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/production.toml takes its secrets from the environment only."""
    monkeypatch.setenv("LIQSHELL_DB_PASSWORD", "db-pw")
    monkeypatch.setenv("LIQSHELL_NATS__TOKEN", "nats-tok")
    assert main(["check-config", str(PRODUCTION)]) == 0
    out = capsys.readouterr().out
    assert "db-pw" not in out
    assert "nats-tok" not in out


async def test_nats_source_requires_nats_before_creating_anything(tmp_path: Path) -> None:
    """``source = "nats"`` without ``[nats]`` is a settings error naming both, and no store
    file is created."""
    import asyncio

    from liqshell.settings import run_watcher

    store = tmp_path / "w.sqlite"
    settings = parse_settings(
        {"store": {"path": str(store)}, "exchange": {"source": "nats"}}, source="p.toml"
    )
    with pytest.raises(SettingsError, match=r'p.toml: \[exchange\] source: "nats" .*\[nats\]'):
        await run_watcher(settings, asyncio.Event())
    assert not store.exists()


def test_sim_exchange_command_requires_nats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``liqshell sim-exchange`` without ``[nats]`` is one line and exit status 2."""
    path = tmp_path / "s.toml"
    path.write_text("[sim]\naccounts = 2\n")
    assert main(["sim-exchange", "--config", str(path)]) == 2
    assert "[nats]: required by the reference exchange" in capsys.readouterr().err
