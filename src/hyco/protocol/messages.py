"""Control-channel commands as typed values (protocol.md 2.2-2.6).

Each command is one JSON object with one top-level key, sent in one WebSocket text message. The set is closed:

* :class:`Accept` (relay → listener): a WebSocket sender waits at ``address``.
* :class:`Request` (relay → listener): an HTTP request; a *stub* carries only ``address`` (2.4).
* :class:`Response` (listener → relay): the answer to a request, correlated by ``request_id``.
* :class:`RenewToken` (listener → relay): a fresh SAS token for the control channel.

:func:`encode` emits members in Azure's order with compact separators; :func:`decode` parses by key, tolerates
unknown members, and raises :class:`~hyco.exceptions.RemoteProtocolError` for anything else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hyco.exceptions import RelayError, RemoteProtocolError

__all__ = [
    "MAX_ACCEPT_SIZE",
    "MAX_INLINE_BODY",
    "MAX_INLINE_HEADERS",
    "MAX_STATUS_DESCRIPTION",
    "UNFORWARDED_HEADERS",
    "Accept",
    "Command",
    "RemoteEndpoint",
    "RenewToken",
    "Request",
    "Response",
    "check_accept_size",
    "check_deliverable_headers",
    "decode",
    "encode",
    "has_control_characters",
    "salvage_response",
    "status_description",
]

#: protocol.md 4.1, 4.2: an HTTP body travels inline on the control channel only when it is at most 64 KiB ...
MAX_INLINE_BODY = 65536
#: ... and its headers (the request's, or the response JSON) are at most 32 KB; else it takes a rendezvous.
MAX_INLINE_HEADERS = 32 * 1024
#: Longest status description hyco sends or passes on (characters); longer ones are cut.
MAX_STATUS_DESCRIPTION = 512
#: Headers of a relayed HTTP request or response that never travel in ``requestHeaders`` or
#: ``responseHeaders`` (protocol.md 4.1): the connection-level ones of RFC 9110 7.6.1, and the framing ones,
#: since every hop frames the body itself (lower case).
UNFORWARDED_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


@dataclass(frozen=True, slots=True)
class RemoteEndpoint:
    """The sender's IP address and port (``remoteEndpoint``; required by Java listeners, protocol.md 2.3)."""

    address: str
    port: int

    def to_json(self) -> dict[str, Any]:
        """The JSON object form."""
        return {"address": self.address, "port": self.port}


@dataclass(frozen=True, slots=True)
class Accept:
    """``accept``: a WebSocket sender waits; dial ``address`` to take it (protocol.md 2.3)."""

    address: str
    id: str
    connect_headers: Mapping[str, str] = field(default_factory=dict)
    remote_endpoint: RemoteEndpoint | None = None
    #: The JSON text once :func:`encode` made it: the relay's size check and its send share one encoding (an
    #: accept is never changed after it is made).
    _text: str | None = field(default=None, init=False, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Request:
    """``request``: an HTTP request for the listener (protocol.md 2.4).

    A stub (:attr:`is_stub`) has only ``address`` (and maybe ``id``): the listener must dial it to get the
    request. .NET and Java detect a stub by a missing ``body``, Node by a missing ``method``.
    """

    address: str
    id: str | None = None
    request_target: str | None = None
    method: str | None = None
    remote_endpoint: RemoteEndpoint | None = None
    request_headers: Mapping[str, str] | None = None
    body: bool | None = None

    @property
    def is_stub(self) -> bool:
        """Whether this is a rendezvous-only stub."""
        return self.method is None or self.body is None


@dataclass(frozen=True, slots=True)
class Response:
    """``response``: the listener's answer to request ``request_id`` (protocol.md 2.5)."""

    request_id: str
    status_code: int
    status_description: str | None = None
    response_headers: Mapping[str, str] | None = None
    body: bool = False


@dataclass(frozen=True, slots=True)
class RenewToken:
    """``renewToken``: replace the control channel's token (protocol.md 2.6)."""

    token: str = field(repr=False)


Command = Accept | Request | Response | RenewToken


def _headers_json(headers: Mapping[str, str]) -> dict[str, str]:
    return dict(headers)


def encode(command: Command) -> str:
    """Serialize a command to the JSON text the official clients expect (members in Azure's order)."""
    body: dict[str, Any]
    if isinstance(command, Accept):
        text = command._text
        if text is None:
            body = {"address": command.address, "id": command.id}
            body["connectHeaders"] = _headers_json(command.connect_headers)
            if command.remote_endpoint is not None:
                body["remoteEndpoint"] = command.remote_endpoint.to_json()
            text = json.dumps({"accept": body}, separators=(",", ":"), ensure_ascii=False)
            object.__setattr__(command, "_text", text)  # the frozen accept keeps its encoding (Accept._text)
        return text
    if isinstance(command, Request):
        body = {"address": command.address}
        optional: list[tuple[str, Any]] = [
            ("id", command.id),
            ("requestTarget", command.request_target),
            ("method", command.method),
            ("remoteEndpoint", command.remote_endpoint and command.remote_endpoint.to_json()),
            (
                "requestHeaders",
                None if command.request_headers is None else _headers_json(command.request_headers),
            ),
            ("body", command.body),
        ]
        body.update((k, v) for k, v in optional if v is not None)
        name = "request"
    elif isinstance(command, Response):
        # Java's member order (requestId first); .NET parses by key.
        body = {"requestId": command.request_id, "body": command.body}
        body["statusCode"] = command.status_code
        if command.status_description is not None:
            body["statusDescription"] = command.status_description
        if command.response_headers is not None:
            body["responseHeaders"] = _headers_json(command.response_headers)
        name = "response"
    else:
        body = {"token": command.token}
        name = "renewToken"
    return json.dumps({name: body}, separators=(",", ":"), ensure_ascii=False)


#: Largest ``accept`` the relay sends, in UTF-8 bytes: .NET and Java listeners read each control message into
#: a 64 KiB buffer and break on a larger one (protocol.md 2.2, 6). The accept carries every header of the
#: sender's upgrade request, so a sender could otherwise break the listener it connects to.
MAX_ACCEPT_SIZE = 64 * 1024

#: The status a sender gets when its request would make an oversize accept (RFC 6585 5).
_HEADERS_TOO_LARGE = 431


def check_accept_size(accept: Accept) -> None:
    """Refuse an ``accept`` that official listeners could not read (larger than :data:`MAX_ACCEPT_SIZE`).

    The sender is refused with 431 rather than its headers trimmed to fit: a trimmed accept would hand the
    listener a request that is not the one sent, and the sender can fix the cause (send fewer or smaller
    headers, or a shorter query) once told.

    Args:
        accept: the command about to go down a control channel.

    Raises:
        RelayError: 431 Request Header Fields Too Large, for the sender; the description gives the sizes.
    """
    text = encode(accept)  # kept with the accept: the send reuses it
    size = len(text) if text.isascii() else len(text.encode())
    if size > MAX_ACCEPT_SIZE:
        raise RelayError(
            f"RequestHeaderFieldsTooLarge: the request's headers, path and query make a {size}-byte accept "
            f"message; listeners read at most {MAX_ACCEPT_SIZE} bytes. Send fewer or smaller headers.",
            http_status=_HEADERS_TOO_LARGE,
        )


def _require(obj: Mapping[str, Any], key: str, kind: type, command: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        raise RemoteProtocolError(f"{command}.{key} is missing or not a {kind.__name__}")
    return value


def _optional(obj: Mapping[str, Any], key: str, kind: type, command: str) -> Any:
    if obj.get(key) is None:
        return None
    return _require(obj, key, kind, command)


#: RFC 9110 5.1: a field name is a token.
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: RFC 9110 5.5 / 15.1: field values and reason phrases carry no control characters but HTAB. A CR or LF would
#: split the HTTP response the relay writes (aiohttp refuses to write it, and the sender then waited for its
#: timeout: issue 13, defect 9); a lone surrogate cannot be encoded at all.
_FORBIDDEN_IN_VALUE = re.compile("[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")


def _headers(obj: Mapping[str, Any], key: str, command: str) -> dict[str, str] | None:
    value = _optional(obj, key, dict, command)
    if value is None:
        return None
    # Values are strings on the wire (2.2); tolerate numbers from lax peers by converting them.
    headers: dict[str, str] = {}
    for name, item in value.items():
        if not _FIELD_NAME.fullmatch(name):
            raise RemoteProtocolError(f"{command}.{key} has a header name that is not an HTTP token")
        if not isinstance(item, str | int | float) or isinstance(item, bool):
            raise RemoteProtocolError(f"{command}.{key}[{name[:64]!r}] is not a string")
        text = str(item)
        if has_control_characters(text):
            raise RemoteProtocolError(f"{command}.{key}[{name[:64]!r}] contains a control character")
        headers[name] = text
    return headers


def _reason_phrase(obj: Mapping[str, Any]) -> str | None:
    value: str | None = _optional(obj, "statusDescription", str, "response")
    if value is not None and has_control_characters(value):
        raise RemoteProtocolError("response.statusDescription contains a control character")
    return value


def _endpoint(obj: Mapping[str, Any], command: str) -> RemoteEndpoint | None:
    value = _optional(obj, "remoteEndpoint", dict, command)
    if value is None:
        return None
    address = _require(value, "address", str, f"{command}.remoteEndpoint")
    port = _require(value, "port", int, f"{command}.remoteEndpoint")
    return RemoteEndpoint(address, port)


def _status_code(value: Any) -> int:
    # protocol.md 8, item 2: SDKs send a number, Azure accepts a numeric string too.
    # ASCII digits only (isdigit() alone accepts '²', which int() refuses), and short: int() has a size limit.
    if isinstance(value, str) and (text := value.strip()).isascii() and text.isdigit() and len(text) <= 15:
        value = int(text)
    if not isinstance(value, int) or isinstance(value, bool) or not 100 <= value <= 999:
        raise RemoteProtocolError("response.statusCode must be an integer from 100 to 999")
    return value


def _load(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        # UnicodeDecodeError is a ValueError. Deep nesting ('[' * 100_000) makes the C scanner raise
        # RecursionError at the interpreter's recursion limit: a peer's bad JSON, not a relay failure.
        raise RemoteProtocolError(f"control message is not valid JSON: {exc.__class__.__name__}") from None


def salvage_response(text: str | bytes) -> tuple[str, bool] | None:
    """For a message :func:`decode` refused: a ``response``'s ``requestId`` and ``body`` flag, if readable.

    A malformed ``response`` should fail only its own request while the control channel goes on; this reads
    what that needs without the caller parsing the peer's text again (which is where deep nesting used to
    escape as a ``RecursionError``).

    Returns:
        ``(request_id, body)``, where ``body`` says whether a binary message follows and must be skipped; or
        None when the text is not JSON, not a ``response``, or has no string ``requestId``. Never raises.
    """
    try:
        data = _load(text)
    except RemoteProtocolError:
        return None
    body = data.get("response") if isinstance(data, dict) else None
    if not isinstance(body, dict) or not isinstance(request_id := body.get("requestId"), str):
        return None
    return request_id, body.get("body") is True


def decode(text: str | bytes) -> Command:
    """Parse one control-channel message.

    Raises:
        RemoteProtocolError: not JSON, not one object with exactly one known key, a member of the wrong
            type, or a header or reason phrase an HTTP message cannot carry (a CR, LF or other control
            character). The message never echoes a token.
    """
    data = _load(text)
    if not isinstance(data, dict) or len(data) != 1:
        raise RemoteProtocolError("control message must be a JSON object with exactly one command key")
    ((name, obj),) = data.items()
    if not isinstance(obj, dict):
        raise RemoteProtocolError(f"command {name[:32]!r} must be a JSON object")
    if name == "accept":
        return Accept(
            address=_require(obj, "address", str, name),
            id=_require(obj, "id", str, name),
            connect_headers=_headers(obj, "connectHeaders", name) or {},
            remote_endpoint=_endpoint(obj, name),
        )
    if name == "request":
        return Request(
            address=_require(obj, "address", str, name),
            id=_optional(obj, "id", str, name),
            request_target=_optional(obj, "requestTarget", str, name),
            method=_optional(obj, "method", str, name),
            remote_endpoint=_endpoint(obj, name),
            request_headers=_headers(obj, "requestHeaders", name),
            body=_optional(obj, "body", bool, name),
        )
    if name == "response":
        body = obj.get("body", False)
        if not isinstance(body, bool):
            raise RemoteProtocolError("response.body must be true or false")
        return Response(
            request_id=_require(obj, "requestId", str, name),
            status_code=_status_code(obj.get("statusCode")),
            status_description=_reason_phrase(obj),
            response_headers=_headers(obj, "responseHeaders", name),
            body=body,
        )
    if name == "renewToken":
        return RenewToken(token=_require(obj, "token", str, name))
    raise RemoteProtocolError(f"unknown control command {name[:32]!r}")


def has_control_characters(text: str) -> bool:
    """Whether ``text`` holds a character an HTTP status line or header cannot carry (a C0 control other
    than tab, DEL, or a lone surrogate); such text would split the line or be refused by the peer."""
    return _FORBIDDEN_IN_VALUE.search(text) is not None


def check_deliverable_headers(headers: Mapping[str, str]) -> None:
    """Refuse request headers that no command can carry to a listener: a value with a control character
    other than tab, or with bytes that were not UTF-8 (an HTTP parser hands them over as lone surrogates,
    which no JSON text can hold). The sender learns which header, instead of a 500 when the command is sent.

    Raises:
        RelayError: 400 Bad Request, naming the header.
    """
    for name, value in headers.items():
        if has_control_characters(value):
            raise RelayError(
                f"The value of the header '{name[:64]}' is not UTF-8 text; the relay cannot forward it.",
                http_status=400,
            )


def status_description(text: str) -> str:
    """``text`` made safe for a status description: each character :func:`has_control_characters` objects
    to becomes a space, and the result is cut to ``MAX_STATUS_DESCRIPTION`` characters."""
    return _FORBIDDEN_IN_VALUE.sub(" ", text)[:MAX_STATUS_DESCRIPTION]
