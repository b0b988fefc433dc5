"""Throwaway NATS decentralized-auth material for the credentials-file tests: an operator,
accounts and users as nkeys, their JWTs, ``.creds`` files and a nats-server configuration in
operator mode with a memory resolver.

A NATS JWT is ``header.claims.signature``, each part base64url without padding; the header
is ``{"typ": "JWT", "alg": "ed25519-nkey"}`` and the signature is the issuer's ed25519
signature (an nkey) of ``header.claims``. The operator signs itself and the accounts, an
account signs its users. ``nkeys`` is a dependency of the ``nats`` extra: imported, never
skipped.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import attrs
import nkeys

__all__ = ["Key", "Operator", "account_claims", "creds_file", "key", "user_claims"]

_UNLIMITED = -1


@attrs.frozen
class Key:
    """An nkey: its seed (``S…``, the secret) and its public key."""

    seed: str
    public: str
    pair: Any = attrs.field(repr=False)

    def sign_jwt(self, subject: str, name: str, nats: dict[str, object]) -> str:
        """A JWT of ``nats`` claims about ``subject``, issued and signed by this key."""
        claims: dict[str, object] = {
            "jti": "",
            "iat": int(time.time()),
            "iss": self.public,
            "name": name,
            "sub": subject,
            "nats": nats,
        }
        digest = hashlib.sha256(_json(claims)).digest()
        claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
        signed = f"{_b64(_json({'typ': 'JWT', 'alg': 'ed25519-nkey'}))}.{_b64(_json(claims))}"
        return f"{signed}.{_b64(self.pair.sign(signed.encode()))}"


def key(prefix: int, raw: bytes) -> Key:
    """The nkey of ``prefix`` (``nkeys.PREFIX_BYTE_OPERATOR``/``ACCOUNT``/``USER``) made from
    the 32 bytes ``raw`` (deterministic: tests name their keys by their bytes)."""
    seed = nkeys.encode_seed(raw, prefix)
    pair = nkeys.from_seed(bytearray(seed))
    public: bytes = pair.public_key
    return Key(seed.decode(), public.decode(), pair)


def account_claims() -> dict[str, object]:
    """An account without limits (an omitted limit is 0 in operator mode: nothing allowed)."""
    limits = dict.fromkeys(("subs", "data", "payload", "imports", "exports", "conn", "leaf"), -1)
    return {
        "limits": {**limits, "wildcards": True},
        "default_permissions": {"pub": {}, "sub": {}},
        "type": "account",
        "version": 2,
    }


def user_claims() -> dict[str, object]:
    """A user without limits or permission rules."""
    return {
        "pub": {},
        "sub": {},
        "subs": _UNLIMITED,
        "data": _UNLIMITED,
        "payload": _UNLIMITED,
        "type": "user",
        "version": 2,
    }


def creds_file(path: Path, user_jwt: str, user_seed: str) -> Path:
    """A ``.creds`` file as ``nsc`` writes it: the user JWT and the user's nkey seed."""
    path.write_text(
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user_seed}\n"
        "------END USER NKEY SEED------\n",
        encoding="ascii",
    )
    return path


@attrs.frozen
class Operator:
    """An operator, its system account and the accounts it signed, all preloaded into a
    memory resolver (JetStream, which the test servers run, needs the system account)."""

    key: Key
    system: Key
    accounts: tuple[tuple[Key, str], ...]
    """Each account's key and JWT."""

    def server_config(self, directory: Path) -> Path:
        """A nats-server configuration trusting this operator (its JWT in a file) and
        resolving its accounts from memory."""
        operator_jwt = self.key.sign_jwt(
            self.key.public,
            "test-operator",
            {"type": "operator", "version": 2, "system_account": self.system.public},
        )
        (directory / "operator.jwt").write_text(operator_jwt, encoding="ascii")
        system_jwt = self.key.sign_jwt(self.system.public, "SYS", account_claims())
        accounts = [(self.system, system_jwt), *self.accounts]
        preload = "\n".join(f'  {account.public}: "{jwt}"' for account, jwt in accounts)
        config = directory / "operator.conf"
        config.write_text(
            f'operator: "{directory / "operator.jwt"}"\n'
            f"system_account: {self.system.public}\n"
            "resolver: MEMORY\n"
            f"resolver_preload: {{\n{preload}\n}}\n",
            encoding="ascii",
        )
        return config


def _json(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
