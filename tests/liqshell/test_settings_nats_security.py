"""``[nats]`` security settings against a real nats-server: mutual TLS (``tls_ca``,
``tls_cert``, ``tls_key``), an nkey user (``nkey_seed``) and a credentials file
(``credentials``: a user JWT and seed, the server in operator mode), each shown to connect and
carry a request/reply round trip, and each refused with a clear error when it is missing or
wrong."""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from liqcore import MarginMode
from liqshell.adapters import ServiceUnavailable
from liqshell.adapters.nats import NatsConnector
from liqshell.adapters.nats_exchange import NatsExchange, serve_exchange
from liqshell.cli import main
from liqshell.ports import MarginReport
from liqshell.settings import Settings, nats_options, parse_settings
from liqshell.testing import FakeExchange
from tests.liqshell.certs import Certificates, make_certificates
from tests.liqshell.nats_jwts import Operator, account_claims, creds_file, key, user_claims
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


# ----------------------------------------------------------------- credentials file (JWT)


@pytest.fixture(scope="module")
def operator_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NatsServer, Path]]:
    """A nats-server in operator mode (decentralized JWT auth: it trusts the operator and
    resolves the one account it signed from memory), and a directory of ``.creds`` files:
    ``good.creds`` (a user the account signed, with its seed), ``stranger.creds`` (a user
    signed by an account the operator never signed), ``wrong-seed.creds`` (the good user's
    JWT with another user's seed)."""
    import nkeys

    directory = tmp_path_factory.mktemp("operator")
    operator = key(nkeys.PREFIX_BYTE_OPERATOR, bytes(range(32)))
    account = key(nkeys.PREFIX_BYTE_ACCOUNT, bytes(range(1, 33)))
    stranger_account = key(nkeys.PREFIX_BYTE_ACCOUNT, bytes(range(3, 35)))
    user = key(nkeys.PREFIX_BYTE_USER, bytes(range(2, 34)))
    other_user = key(nkeys.PREFIX_BYTE_USER, bytes(range(4, 36)))
    account_jwt = operator.sign_jwt(account.public, "liqshell", account_claims())
    user_jwt = account.sign_jwt(user.public, "watcher", user_claims())
    creds_file(directory / "good.creds", user_jwt, user.seed)
    creds_file(
        directory / "stranger.creds",
        stranger_account.sign_jwt(other_user.public, "stranger", user_claims()),
        other_user.seed,
    )
    creds_file(directory / "wrong-seed.creds", user_jwt, other_user.seed)
    system = key(nkeys.PREFIX_BYTE_ACCOUNT, bytes(range(5, 37)))
    config = Operator(operator, system, ((account, account_jwt),)).server_config(directory)
    server = start_nats(["-c", str(config)])
    try:
        yield server, directory
    finally:
        server.remove()


def _secrets_of(creds: Path) -> list[str]:
    """The JWT, its signature and the seed in a ``.creds`` file: none may be shown."""
    lines = [line.strip() for line in creds.read_text().splitlines()]
    jwt = lines[lines.index("-----BEGIN NATS USER JWT-----") + 1]
    seed = lines[lines.index("-----BEGIN USER NKEY SEED-----") + 1]
    return [jwt, jwt.rsplit(".", 1)[1], seed]


async def test_credentials_file_logs_in_to_an_operator_mode_server(
    operator_server: tuple[NatsServer, Path],
) -> None:
    """``credentials`` naming a ``.creds`` file (user JWT signed by the account the server's
    operator signed, and the user's nkey seed; given through the environment as a deployment
    would) connects and carries the wire protocol's round trip."""
    server, directory = operator_server
    settings = parse_settings(
        {"nats": {"servers": [server.url]}},
        environ={"LIQSHELL_NATS__CREDENTIALS": str(directory / "good.creds")},
    )
    await _round_trip(settings, settings)


@pytest.mark.parametrize("creds", ["stranger.creds", "wrong-seed.creds", None])
async def test_wrong_credentials_file_is_refused_in_one_line_without_the_secret(
    operator_server: tuple[NatsServer, Path], creds: str | None
) -> None:
    """A user of an account the operator did not sign, the right JWT with another seed, or
    no credentials at all: refused with one line that says the server refused the
    credentials and names ``[nats] credentials``; neither the JWT nor the seed is in it."""
    server, directory = operator_server
    nats = {"credentials": str(directory / creds)} if creds else {}
    settings = parse_settings({"nats": {"servers": [server.url], **nats}})
    with pytest.raises(ServiceUnavailable) as raised:
        async with _connector(settings) as connector:
            await connector.client()
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"cannot connect to NATS at {server.url}: ")
    assert re.search(r"[Aa]uthorization [Vv]iolation", message), message
    assert "the server refused the credentials: check [nats] credentials" in message
    for secret in _secrets_of(directory / (creds or "good.creds")):
        assert secret not in message


def test_run_with_a_wrong_credentials_file_fails_in_one_line(
    operator_server: tuple[NatsServer, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``liqshell run`` whose ``[nats] credentials`` the server refuses exits 1 with one line
    on stderr naming the cause, nothing on stdout and no secret of the file anywhere."""
    server, directory = operator_server
    creds = directory / "wrong-seed.creds"
    config = tmp_path / "run.toml"
    config.write_text(
        f'[store]\nkind = "sqlite"\npath = "{tmp_path / "s.sqlite"}"\n'
        f'[nats]\nservers = ["{server.url}"]\ncredentials = "{creds}"\n'
        'connect_timeout_ms = 1500\n[exchange]\nsource = "nats"\n[metrics]\nenabled = false\n'
    )
    assert main(["run", "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("liqshell: error: service unavailable: cannot connect to NATS")
    assert "[nats] credentials" in lines[0]
    for secret in _secrets_of(creds):
        assert secret not in err
