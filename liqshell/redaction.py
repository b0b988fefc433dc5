"""Secrets out of what the shell shows: one helper for every URL and DSN it prints or logs.

Connection strings carry credentials — ``nats://user:pass@host``, ``postgresql://user:pass@
host/db``, ``host=… password=…`` — and end up in configuration summaries, error lines and
log records (a client library's error may quote them too). :func:`redact` replaces the
userinfo of every URL (the user with it: it is half of the credential) and the value of
every ``password``/``token``/``secret``-like key by ``***``; the shell passes everything it
shows through it, and :class:`RedactingFormatter` does the same for the log records of the
``liqshell`` command (client libraries included).
"""

from __future__ import annotations

import logging
import re

__all__ = ["REDACTED", "RedactingFormatter", "redact", "redact_url"]

REDACTED = "***"

_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#@\s'\"]+)@")
_KEY_VALUE = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|pass|passphrase|token|auth_token|secret|sslpassword|"
    r"nkey|nkeys_seed|nkeys_seed_str|jwt|credentials|user_credentials)\b[\"']?\s*[=:]\s*)"
    r"(?P<value>'[^']*'|\"[^\"]*\"|[^\s&;,'\"}]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with URL userinfo and the values of password-, token- and secret-like keys
    replaced by ``***`` (``nats://***@host:4222``, ``password=***``)."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    return _KEY_VALUE.sub(lambda m: f"{m['key']}{REDACTED}", text)


def redact_url(url: str) -> str:
    """One URL or DSN as it may be shown: :func:`redact`, and a userinfo before the host is
    hidden even without a scheme (``user:pass@host:4222`` → ``***@host:4222``)."""
    scheme, separator, rest = url.rpartition("://")
    authority, at, host = rest.rpartition("@")
    if at and "/" not in authority:
        rest = f"{REDACTED}@{host}"
    return redact(f"{scheme}{separator}{rest}")


class RedactingFormatter(logging.Formatter):
    """A formatter whose output goes through :func:`redact` (message, arguments and any
    traceback alike)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record formatted as usual, then redacted."""
        return redact(super().format(record))
