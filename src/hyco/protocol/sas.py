"""Shared access signature tokens: build, parse, verify (protocol.md 5).

A token looks like::

    SharedAccessSignature sr=<urlenc resource>&sig=<urlenc base64 HMAC>&se=<unix secs>&skn=<urlenc key name>

The signature is ``HMAC-SHA256(key=UTF-8 of the key *text*, msg=<sr as in the token> + "\\n" + se)``.
Every official client builds a different resource (``sr``) for the same hybrid connection, so the relay checks
the audience leniently (5.3). Nothing in this module does I/O or reads the clock: callers pass ``now``.
"""

from __future__ import annotations

import base64
import enum
import functools
import hashlib
import hmac
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

from hyco.exceptions import InvalidToken

__all__ = [
    "MAX_EXPIRY",
    "SAS_PREFIX",
    "Right",
    "SasToken",
    "audience_covers",
    "create_token",
    "parse_token",
    "verify_signature",
]

SAS_PREFIX = "SharedAccessSignature"
#: protocol.md 5.1: key names and keys are at most 256 characters.
MAX_KEY_NAME_LENGTH = 256
MAX_KEY_LENGTH = 256
#: A token longer than this is garbage, not a SAS; refuse before doing any work on it.
MAX_TOKEN_LENGTH = 4096
#: Latest ``se`` accepted: 9999-12-31T23:59:59Z, the end of .NET's DateTime (and of Python's datetime). A
#: larger one cannot be a real client's token, and ~10**309 does not even fit a float (issue 13, defect 9).
MAX_EXPIRY = 253_402_300_799


class Right(enum.StrEnum):
    """Rights a SAS rule grants (protocol.md 5.4). Manage implies Listen and Send."""

    LISTEN = "Listen"
    SEND = "Send"
    MANAGE = "Manage"


@dataclass(frozen=True, slots=True)
class SasToken:
    """A parsed SAS token.

    Attributes:
        resource: the ``sr`` value exactly as in the token (still URL-encoded): it is what was signed.
        signature: the decoded base64 signature text.
        expiry: ``se``, seconds since the epoch.
        key_name: the decoded ``skn``, the name of the rule whose key signed the token.
    """

    resource: str
    signature: str = field(repr=False)
    expiry: int
    key_name: str

    @property
    def audience(self) -> str:
        """The decoded resource URI."""
        return unquote(self.resource)

    def expired(self, now: float, grace: float = 0.0) -> bool:
        """Whether the token is past ``se`` (plus ``grace`` seconds) at time ``now``."""
        # Compared as now - grace (floats) against the integer expiry: Python compares int and float exactly,
        # whereas expiry + grace would convert a huge expiry to float and overflow.
        return now - grace > self.expiry


def _signature(resource: str, expiry: int, key: str) -> str:
    message = f"{resource}\n{expiry}".encode()
    digest = hmac.new(key.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def create_token(audience: str, key_name: str, key: str, expiry: int) -> str:
    """Sign a token the way the .NET SDK does (``WebUtility.UrlEncode`` of the audience, upper-case hex).

    Args:
        audience: the resource URI, e.g. ``http://relay.example/echo/``.
        key_name: the rule name (``skn``).
        key: the rule's key, used as text (protocol.md 5.2).
        expiry: absolute expiry in seconds since the epoch.

    Raises:
        InvalidToken: the audience is empty, or the key name or key is empty or longer than 256 characters.
    """
    if not audience:
        raise InvalidToken("the audience must not be empty (a token for nothing cannot be parsed back)")
    if not key_name or len(key_name) > MAX_KEY_NAME_LENGTH:
        raise InvalidToken("the key name must be 1 to 256 characters")
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidToken("the key must be 1 to 256 characters")
    resource = quote(audience, safe="")
    sig = _signature(resource, expiry, key)
    return f"{SAS_PREFIX} sr={resource}&sig={quote(sig, safe='')}&se={expiry}&skn={quote(key_name, safe='')}"


def parse_token(text: str) -> SasToken:
    """Parse a SAS token; field names are matched case-insensitively and in any order (protocol.md 5.1).

    Raises:
        InvalidToken: not a ``SharedAccessSignature`` token, a field missing or repeated, or ``se`` not an
            integer or after :data:`MAX_EXPIRY`. The message never contains the token.
    """
    if len(text) > MAX_TOKEN_LENGTH:
        raise InvalidToken(f"the token is longer than {MAX_TOKEN_LENGTH} characters")
    prefix, _, body = text.strip().partition(" ")
    if prefix.lower() != SAS_PREFIX.lower() or not body:
        raise InvalidToken(
            "the token is not a shared access signature (expected 'SharedAccessSignature sr=...')"
        )
    fields: dict[str, str] = {}
    for pair in body.strip().split("&"):
        name, sep, value = pair.partition("=")
        name = name.strip().lower()
        if not sep or name not in ("sr", "sig", "se", "skn"):
            continue
        if name in fields:
            raise InvalidToken(f"the token has more than one {name!r} field")
        fields[name] = value
    missing = [n for n in ("sr", "sig", "se", "skn") if not fields.get(n)]
    if missing:
        raise InvalidToken(f"the token has no {', '.join(missing)} field")
    expiry_text = unquote(fields["se"])
    if not (expiry_text.isascii() and expiry_text.isdigit()):  # isdigit() alone accepts '²'; int() does not
        raise InvalidToken("the token's 'se' (expiry) is not an integer number of seconds")
    # Length first: int() of thousands of digits is slow, and beyond 4300 digits it raises.
    if len(expiry_text.lstrip("0")) > len(str(MAX_EXPIRY)) or int(expiry_text) > MAX_EXPIRY:
        raise InvalidToken("the token's 'se' (expiry) is after the year 9999")
    # sig/se/skn are percent-decoded without turning '+' into a space: a base64 '+' may be left raw.
    return SasToken(
        resource=fields["sr"],
        signature=unquote(fields["sig"]),
        expiry=int(expiry_text),
        key_name=unquote(fields["skn"]),
    )


def verify_signature(token: SasToken, key: str) -> bool:
    """Check the token's signature against ``key`` in constant time.

    The signature covers the raw ``sr`` (5.2). As a fallback for clients that re-encode, the decoded resource
    re-encoded with upper-case escapes is tried too.
    """
    candidates = {token.resource, quote(token.audience, safe="")}
    given = token.signature.encode()
    ok = False
    for resource in candidates:
        # Evaluate every candidate so timing does not reveal which one matched.
        ok |= hmac.compare_digest(_signature(resource, token.expiry, key).encode(), given)
    return ok


@functools.lru_cache(maxsize=1024)  # every relayed HTTP request checks the audience of a reused token
def _split_audience(audience: str) -> tuple[str, str] | None:
    try:
        parts = urlsplit(audience.strip())
        host = parts.hostname
    except ValueError:
        return None
    if not host or parts.scheme.lower() not in ("http", "https", "sb", "ws", "wss"):
        return None
    path = parts.path.strip("/")
    if path.lower().startswith("$hc/"):
        path = path[4:]
    return host.lower(), path.lower()


def audience_covers(token: SasToken, hosts: set[str], requested_path: str) -> bool:
    """Whether the token's audience covers ``requested_path`` on one of ``hosts`` (protocol.md 5.3).

    Lenient about form as Azure must be: any of the http/https/sb/ws/wss schemes, port ignored, host and path
    compared case-insensitively, trailing ``/`` ignored. Strict about scope: the token's path must be empty
    (the namespace), equal to the requested path, or a segment-prefix of it. Never the other way round: a
    token for ``team/secret`` does not cover ``team``, and one for ``team`` does not cover ``team2``.

    Args:
        token: the parsed token.
        hosts: host names (lower-case, no port) under which the relay is reached.
        requested_path: what the client asks for: the hybrid connection path for a listener, that path plus
            the sender's suffix for a connect or an HTTP request (Node signs the URI it dials, suffix
            included, so its token covers exactly that).
    """
    parsed = _split_audience(token.audience)
    if parsed is None:
        return False
    host, path = parsed
    if host not in hosts:
        return False
    target = requested_path.strip("/").lower()
    return not path or path == target or target.startswith(path + "/")
