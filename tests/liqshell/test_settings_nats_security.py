"""``[nats]`` security settings against a real nats-server: mutual TLS (``tls_ca``,
``tls_cert``, ``tls_key``) and an nkey user (``nkey_seed``), each shown to connect and
carry a request/reply round trip, and each refused with a clear error when it is missing or
wrong."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from liqcore import MarginMode
from liqshell.adapters import ServiceUnavailable
from liqshell.adapters.nats import NatsConnector
from liqshell.adapters.nats_exchange import NatsExchange, serve_exchange
from liqshell.ports import MarginReport
from liqshell.settings import Settings, nats_options, parse_settings
from liqshell.testing import FakeExchange
from tests.liqshell.certs import Certificates, make_certificates
from tests.liqshell.services import NatsServer, start_nats

pytestmark = pytest.mark.services

REPORT = MarginReport(
    margin_mode=MarginMode.STANDARD,
    equity=Decimal(100),
    mm_required=Decimal(300),
    is_liquidatable=True,
)


def _connector(settings: Settings) -> NatsConnector:
    assert settings.nats is not None
    return NatsConnector(
        list(settings.nats.servers), connect_timeout_ms=1_500, options=nats_options(settings)
    )


async def _round_trip(client: Settings, exchange_side: Settings) -> None:
    """The NATS exchange adapter asks, over connections made from ``client`` and
    ``exchange_side``, for a margin report the exchange serves; it arrives equal."""
    exchange = FakeExchange()
    exchange.set_margin("0xaa", REPORT)
    async with _connector(exchange_side) as served, _connector(client) as asking:
        responder = await serve_exchange(
            served,
            portfolios=exchange,
            margin=exchange,
            quotes=exchange,
            orders=exchange,
            margin_subject="sec.margin",
        )
        try:
            assert (
                await NatsExchange(asking, margin_subject="sec.margin").margin("0xaa", None)
                == REPORT
            )
        finally:
            await responder.stop()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_server(certificates: Certificates) -> Iterator[NatsServer]:
    """A nats-server requiring TLS and a client certificate signed by the test CA."""
    server = start_nats(
        ["--tlsverify", "--tlscacert", str(certificates.ca),
         "--tlscert", str(certificates.server_cert), "--tlskey", str(certificates.server_key)]
    )  # fmt: skip
    try:
        yield server
    finally:
        server.remove()


def _tls_settings(server: NatsServer, **nats: str) -> Settings:
    return parse_settings({"nats": {"servers": [server.url], **nats}}, source="tls.toml")


async def test_mutual_tls_settings_connect_and_carry_a_round_trip(
    tls_server: NatsServer, certificates: Certificates
) -> None:
    """``tls_ca`` + ``tls_cert`` + ``tls_key`` (set through the environment, as a deployment
    would) connect to a server that requires client certificates; the wire protocol's round
    trip works over it."""
    settings = parse_settings(
        {"nats": {"servers": [tls_server.url]}},
        environ={
            "LIQSHELL_NATS__TLS_CA": str(certificates.ca),
            "LIQSHELL_NATS__TLS_CERT": str(certificates.client_cert),
            "LIQSHELL_NATS__TLS_KEY": str(certificates.client_key),
        },
    )
    await _round_trip(settings, settings)


async def test_missing_client_certificate_is_refused_clearly(
    tls_server: NatsServer, certificates: Certificates
) -> None:
    """Only ``tls_ca``: the server refuses the handshake, and the error says a client
    certificate is required (``tls_cert``/``tls_key``) instead of a bare timeout."""
    settings = _tls_settings(tls_server, tls_ca=str(certificates.ca))
    with pytest.raises(ServiceUnavailable) as raised:
        async with _connector(settings) as connector:
            await connector.client()
    message = str(raised.value)
    assert message.startswith(f"cannot connect to NATS at {tls_server.url}: ")
    assert "client certificate" in message
    assert "tls_cert" in message


async def test_untrusted_server_certificate_is_refused_clearly(
    tls_server: NatsServer, certificates: Certificates
) -> None:
    """A CA that did not sign the server's certificate (or none: the system's CAs): the
    error says the server's certificate failed verification and names ``tls_ca``."""
    for nats in (
        {"tls_ca": str(certificates.other_ca), "tls_cert": str(certificates.client_cert),
         "tls_key": str(certificates.client_key)},
        {},
    ):  # fmt: skip
        settings = _tls_settings(tls_server, **nats)
        with pytest.raises(ServiceUnavailable) as raised:
            async with _connector(settings) as connector:
                await connector.client()
        message = str(raised.value)
        assert "certificate verify failed" in message, message
        assert "tls_ca" in message, message


def _user_seed(tmp_path: Path, name: str, raw: bytes) -> tuple[Path, str]:
    """An nkey user seed file (with the trailing newline seed files have) and its public
    key. ``nkeys`` is a dependency of the ``nats`` extra: imported, never skipped."""
    import nkeys

    seed = nkeys.encode_seed(raw, nkeys.PREFIX_BYTE_USER)
    path = tmp_path / f"{name}.nk"
    path.write_bytes(seed + b"\n")
    public: bytes = nkeys.from_seed(bytearray(seed)).public_key
    return path, public.decode()


async def test_nkey_seed_authenticates_an_nkey_user(tmp_path: Path) -> None:
    """A nats-server whose only user is an nkey: ``nkey_seed`` naming that user's seed file
    connects and carries a round trip; another seed, or none, is refused."""
    seed, public = _user_seed(tmp_path, "user", bytes(range(32)))
    stranger, _ = _user_seed(tmp_path, "stranger", bytes(range(1, 33)))
    config = tmp_path / "nkeys.conf"
    config.write_text(f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}\n')
    server = start_nats(["-c", str(config)])
    try:
        settings = parse_settings(
            {"nats": {"servers": [server.url]}},
            environ={"LIQSHELL_NATS__NKEY_SEED": str(seed)},
        )
        await _round_trip(settings, settings)
        for nats in ({"nkey_seed": str(stranger)}, {}):
            refused = parse_settings({"nats": {"servers": [server.url], **nats}})
            with pytest.raises(ServiceUnavailable, match=r"[Aa]uthorization.*\[nats\] credentials"):
                async with _connector(refused) as connector:
                    await connector.client()
    finally:
        server.remove()
