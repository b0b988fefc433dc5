"""``[cluster]`` of the configuration file: parsed, overridden from the environment,
shown by check-config, refused without a PostgreSQL store (issue 13)."""

from __future__ import annotations

import pytest

from liqshell.settings import (
    ClusterSettings,
    SettingsError,
    parse_settings,
    redacted_settings,
)

POSTGRES = {"kind": "postgres", "dsn": "postgresql://liq:hunter2@db/liq"}


def test_cluster_settings_parse_with_defaults_and_environment_overrides() -> None:
    settings = parse_settings(
        {"store": POSTGRES, "cluster": {"instance_id": "w1", "shards": 8}},
        environ={"LIQSHELL_CLUSTER__LEASE_TTL_MS": "6_000"},
    )
    assert settings.cluster == ClusterSettings(instance_id="w1", shards=8, lease_ttl_ms=6_000)
    assert parse_settings({"store": POSTGRES}).cluster is None
    shown = redacted_settings(settings)
    assert '[cluster]\ninstance_id = "w1"\nshards = 8\nlease_ttl_ms = 6000\n' in shown
    assert "hunter2" not in shown


@pytest.mark.parametrize(
    ("document", "environ", "message"),
    [
        (
            {"cluster": {"shards": 4}},
            {},
            '[cluster]: needs [store] kind = "postgres" (leases with fencing), was "sqlite"',
        ),
        (
            {"store": POSTGRES, "cluster": {"shards": 0}},
            {},
            "[cluster] shards: must be ≥ 1, was 0",
        ),
        (
            {"store": POSTGRES, "cluster": {"lease_ttl_ms": 3_000}},
            {"LIQSHELL_CLUSTER__RENEW_INTERVAL_MS": "3000"},
            "[cluster] renew_interval_ms (from LIQSHELL_CLUSTER__RENEW_INTERVAL_MS): must be "
            "less than lease_ttl_ms (3000), was 3000",
        ),
        (
            {"store": POSTGRES, "cluster": {"instance": "w1"}},
            {},
            "[cluster] instance: unknown key",
        ),
        (
            {"store": POSTGRES, "cluster": {"instance_id": " "}},
            {},
            "[cluster] instance_id: must be a non-empty string",
        ),
    ],
)
def test_bad_cluster_settings_are_one_error_naming_the_key(
    document: dict[str, object], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        parse_settings(document, source="c.toml", environ=environ)
    assert str(raised.value).startswith(f"c.toml: {message}"), str(raised.value)
