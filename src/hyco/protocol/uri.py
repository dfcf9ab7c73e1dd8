"""Hybrid Connections addresses and request targets (protocol.md 1).

Two directions live here, both pure functions over strings:

* the **client side** turns a user's address (``sb://host[:port]/path``, ``wss://``, ``ws://``, ``https://``,
  ``http://``) into a :class:`RelayAddress` and builds the ``/$hc/...?sb-hc-action=...`` URLs the SDKs dial;
* the **relay side** turns the raw path and query of an incoming request into a :class:`WebSocketTarget` and
  builds rendezvous addresses.

Query strings are handled as raw text: the stripping rule of protocol.md 1.3 keeps everything that is not an
``sb-hc-`` pair byte-for-byte, so nothing here re-encodes an application's query.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from urllib.parse import quote, unquote, unquote_plus, urlsplit

from hyco.exceptions import InvalidURI

__all__ = [
    "HC_PREFIX",
    "Action",
    "RelayAddress",
    "WebSocketTarget",
    "build_rendezvous_address",
    "normalize_audience",
    "parse_address",
    "parse_websocket_target",
    "query_params",
    "strip_sb_hc_params",
]

#: First path segment of every WebSocket URL (.NET ``HybridConnectionRequestUri``), protocol.md 1.2.
HC_PREFIX = "/$hc/"

_SB_HC = "sb-hc-"
_TLS_SCHEMES = {"sb": True, "wss": True, "https": True, "ws": False, "http": False}
#: Longest tracking id we accept from a client; real SDKs send a 36-character GUID.
MAX_ID_LENGTH = 128


class Action(enum.StrEnum):
    """Values of ``sb-hc-action`` (protocol.md 1.3)."""

    LISTEN = "listen"
    CONNECT = "connect"
    ACCEPT = "accept"
    REQUEST = "request"


def _split_pairs(raw_query: str) -> list[str]:
    return raw_query.split("&") if raw_query else []


def strip_sb_hc_params(raw_query: str) -> str:
    """Remove every ``sb-hc-*`` pair from a raw query, keeping the rest byte-for-byte.

    protocol.md 1.3: a pair is removed when its key starts with ``sb-hc-`` (any case) *and* it contains ``=``;
    a bare ``sb-hc-undefined`` is kept, as are empty pairs, ordering and the original escapes.

    Args:
        raw_query: the query without its leading ``?``.

    Returns:
        The remaining query without a leading ``?`` (may be empty).
    """
    return "&".join(p for p in _split_pairs(raw_query) if not _is_sb_hc_pair(p))


def _is_small_int(text: str) -> bool:
    # ASCII digits only (str.isdigit() also accepts '²', which int() refuses) and short enough that int()
    # cannot hit the interpreter's 4300-digit conversion limit.
    return text.isascii() and text.isdigit() and len(text) <= 15


def _is_sb_hc_pair(pair: str) -> bool:
    # The key is compared decoded, as query_params() reads it: a percent-encoded ``sb%2Dhc-token=...`` that
    # the relay would take as the token must not be forwarded to the listener either.
    key, sep, _ = pair.partition("=")
    return bool(sep) and unquote_plus(key)[:6].lower() == _SB_HC


def query_params(raw_query: str) -> dict[str, str]:
    """Decode a raw query into a dict, first occurrence wins, keys lower-cased.

    Values are decoded with form rules (``+`` is a space), which is how ``sb-hc-token`` and
    ``sb-hc-statusDescription`` are encoded by the official SDKs (protocol.md 5.2, 3.3).
    """
    params: dict[str, str] = {}
    for pair in _split_pairs(raw_query):
        key, sep, value = pair.partition("=")
        if not sep:
            continue
        name = unquote_plus(key).lower()
        params.setdefault(name, unquote_plus(value))
    return params


@dataclass(frozen=True, slots=True)
class WebSocketTarget:
    """What the relay learns from the path and query of a ``/$hc/`` request (protocol.md 1.2, 1.3).

    Attributes:
        path: the raw path after ``/$hc/`` (entity path plus any suffix), without a trailing query.
        action: the ``sb-hc-action`` (``connect`` when absent, as the emulator does).
        id: the client's ``sb-hc-id``, or None.
        token: the ``sb-hc-token`` value, form-decoded, or None.
        app_query: the query minus every ``sb-hc-`` pair, raw, without ``?``.
        status_code: the reject status on an accept address (``sb-hc-statusCode`` or Node's ``statusCode``).
        status_description: the reject reason, decoded, or None.
    """

    path: str
    action: Action
    id: str | None
    token: str | None
    app_query: str
    status_code: int | None = None
    status_description: str | None = None


def parse_websocket_target(raw_path: str, raw_query: str) -> WebSocketTarget:
    """Parse a ``/$hc/{path}?...`` request target received by the relay.

    Args:
        raw_path: the raw (still percent-encoded) request path, starting with ``/$hc/``.
        raw_query: the raw query without ``?``.

    Raises:
        InvalidURI: the path does not start with ``/$hc/``, names no entity, the action is unknown, the id is
            too long, or a reject status code is not an integer in 100-999.
    """
    if not raw_path.startswith(HC_PREFIX):
        raise InvalidURI(raw_path, "WebSocket requests must use a path starting with /$hc/")
    path = raw_path[len(HC_PREFIX) :].strip("/")
    if not path:
        raise InvalidURI(raw_path, "no hybrid connection path after /$hc/")
    params = query_params(raw_query)
    action_text = params.get("sb-hc-action", Action.CONNECT.value)
    try:
        action = Action(action_text)
    except ValueError:
        raise InvalidURI(raw_path, f"unknown sb-hc-action {action_text[:32]!r}") from None
    ident = params.get("sb-hc-id")
    if ident is not None and len(ident) > MAX_ID_LENGTH:
        raise InvalidURI(raw_path, f"sb-hc-id is longer than {MAX_ID_LENGTH} characters")
    status_code: int | None = None
    description: str | None = None
    # A reject status only means something on an accept address (protocol.md 3.3); on other actions an
    # unprefixed ``statusCode`` is the application's own query parameter.
    if action is Action.ACCEPT:
        # Node listeners reject with unprefixed names (protocol.md 8, item 8): accept both spellings.
        status_text = params.get("sb-hc-statuscode", params.get("statuscode"))
        description = params.get("sb-hc-statusdescription", params.get("statusdescription"))
        if status_text is not None:
            if not (_is_small_int(status_text) and 100 <= int(status_text) <= 999):
                raise InvalidURI(raw_path, "the reject status code must be an integer from 100 to 999")
            status_code = int(status_text)
    return WebSocketTarget(
        path=path,
        action=action,
        id=ident,
        token=params.get("sb-hc-token"),
        app_query=strip_sb_hc_params(raw_query),
        status_code=status_code,
        status_description=description,
    )


def build_rendezvous_address(base_url: str, path: str, app_query: str, action: Action, ident: str) -> str:
    """Build a rendezvous address the listener dials (protocol.md 1.6).

    Args:
        base_url: the relay's public WebSocket base, e.g. ``wss://relay.example:443`` (no trailing slash).
        path: entity path plus the sender's suffix, raw.
        app_query: the sender's query minus ``sb-hc-`` pairs, raw; it precedes the ``sb-hc-`` parameters.
        action: ``accept`` or ``request``.
        ident: the rendezvous id (secret; the address is the capability).
    """
    query = f"{app_query}&" if app_query else ""
    return (
        f"{base_url.rstrip('/')}{HC_PREFIX}{path}?{query}"
        f"sb-hc-action={action.value}&sb-hc-id={quote(ident, safe='')}"
    )


@dataclass(frozen=True, slots=True)
class RelayAddress:
    """A hybrid connection address as a user writes it: ``sb://host[:port]/path``.

    ``sb``, ``wss`` and ``https`` mean TLS (Azure speaks nothing else); ``ws`` and ``http`` mean plain, for a
    local or TLS-terminated hyco relay (design.md).

    Attributes:
        tls: whether to use TLS.
        host: the host name or IP (lower-cased, IPv6 without brackets).
        port: the port, or None for the scheme's default.
        path: the hybrid connection path without leading or trailing ``/`` (may contain inner ``/``).
        query: an application query carried along (raw, without ``?``), possibly empty.
    """

    tls: bool
    host: str
    port: int | None
    path: str
    query: str = ""

    @property
    def url_path(self) -> str:
        """:attr:`path` as it goes into a URL: percent-encoded, so a ``?``, ``#`` or ``%`` stays in the path.

        Valid entity names (letters, digits, ``.``, ``-``, ``_``) are unchanged.
        """
        return quote(self.path, safe="/")

    @property
    def netloc(self) -> str:
        """``host[:port]`` with IPv6 hosts bracketed."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.port is not None else host

    def websocket_url(self, action: Action, ident: str | None = None, token: str | None = None) -> str:
        """The ``ws(s)://host/$hc/path?...&sb-hc-action=...`` URL to dial (protocol.md 1.2).

        ``sb-`` parameters come after the application query, as every official SDK does.
        """
        scheme = "wss" if self.tls else "ws"
        params = [f"sb-hc-action={action.value}"]
        if ident is not None:
            params.append(f"sb-hc-id={quote(ident, safe='')}")
        if token is not None:
            params.append(f"sb-hc-token={quote(token, safe='')}")
        query = "&".join(([self.query] if self.query else []) + params)
        return f"{scheme}://{self.netloc}{HC_PREFIX}{self.url_path}?{query}"

    def http_url(self, suffix: str = "") -> str:
        """The plain HTTP(S) URL of the hybrid connection (protocol.md 1.7), plus an optional path suffix."""
        scheme = "https" if self.tls else "http"
        query = f"?{self.query}" if self.query else ""
        return f"{scheme}://{self.netloc}/{self.url_path}{suffix}{query}"

    @property
    def audience(self) -> str:
        """The token audience the .NET SDK computes: ``http://host/path/`` (protocol.md 5.3)."""
        return _audience(self.host, self.path)

    def __str__(self) -> str:
        scheme = "sb" if self.tls else "ws"
        return f"{scheme}://{self.netloc}/{self.url_path}"


def _entity_part(path: str) -> str:
    # The same for a path inside the address and one given apart: '/$hc/' tolerated, outer '/' dropped.
    path = "/" + path.lstrip("/")
    if path.startswith(HC_PREFIX):
        path = path[len(HC_PREFIX) :]
    return path.strip("/")


def _audience(host: str, path: str) -> str:
    # .NET NormalizeAudience: http, no port, IPv6 bracketed, one trailing slash (protocol.md 5.3).
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}/{path}/" if path else f"http://{host}/"


def normalize_audience(uri: str) -> str:
    """The audience the .NET SDK puts in ``sr`` for ``uri`` (protocol.md 5.3, ``NormalizeAudience``).

    Scheme forced to ``http``, host lower-cased, port, query, fragment and ``/$hc`` removed, trailing ``/``
    added: ``sb://NS.example:8443/$hc/echo?x=1`` → ``http://ns.example/echo/``.

    Raises:
        InvalidURI: the text has no host.
    """
    parts = urlsplit(uri.strip())
    if not parts.hostname:
        raise InvalidURI(uri, "not an absolute URI with a host")
    path = parts.path.strip("/")
    if path.lower().startswith("$hc/") or path.lower() == "$hc":
        path = path[4:]
    return _audience(parts.hostname, path)


def parse_address(address: str, path: str | None = None) -> RelayAddress:
    """Parse a user-supplied hybrid connection address.

    Args:
        address: ``sb://``, ``wss://``, ``https://``, ``ws://`` or ``http://`` URL. A ``/$hc/`` prefix in the
            path is tolerated and removed.
        path: the entity path when ``address`` names only the namespace; it must then have no path of its own.
            A ``$hc/`` prefix is removed here too.

    Raises:
        InvalidURI: unknown scheme, no host, bad port, no entity path, two entity paths, or text that is not
            valid Unicode (a lone surrogate cannot go into a URL).
    """
    for text in (address, path or ""):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidURI(address, "it contains a lone surrogate, which no URL can carry") from None
    try:
        parts = urlsplit(address.strip())
        port = parts.port
    except ValueError as exc:
        raise InvalidURI(address, str(exc)) from None
    scheme = parts.scheme.lower()
    if scheme not in _TLS_SCHEMES:
        raise InvalidURI(address, "use sb://, wss://, https://, ws:// or http://")
    if not parts.hostname:
        raise InvalidURI(address, "no host name")
    own_path = _entity_part(unquote(parts.path))
    if path is not None:
        if own_path:
            raise InvalidURI(address, "the address already names a hybrid connection; pass no path")
        own_path = _entity_part(path)
    if not own_path:
        raise InvalidURI(address, "no hybrid connection path (sb://host/PATH)")
    return RelayAddress(
        tls=_TLS_SCHEMES[scheme],
        host=parts.hostname.lower(),
        port=port,
        path=own_path,
        query=parts.query,
    )
