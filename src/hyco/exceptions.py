"""The one exception tree of hyco.

Every error hyco raises derives from :class:`HycoError`. The tree::

    HycoError
    ├── InvalidInput                  bad input handed to hyco (your fault; fix the value)
    │   ├── InvalidURI                    an address or request target that cannot be used
    │   ├── InvalidToken                  a SAS token that cannot be parsed
    │   ├── InvalidConnectionString       a connection string that breaks protocol.md 5.5
    │   └── InvalidConfig                 a relay configuration file or value that is wrong
    ├── ProtocolError                 a peer or hyco broke the Hybrid Connections protocol
    │   ├── LocalProtocolError            hyco was asked to do something the protocol forbids
    │   └── RemoteProtocolError           the peer sent something the protocol forbids (carries a close code)
    ├── StreamClosed                  you closed (or shut down) this stream, then used it
    └── RelayError                    the relay refused or failed an operation (carries a status)
        ├── AuthorizationFailed           401: token missing, malformed, wrong audience, expired, bad sig
        ├── Forbidden                     403: token valid but lacks the right for this action
        ├── EndpointNotFound              404: no such hybrid connection, or no listener took the connection
        ├── QuotaExceeded                 403: a limit such as 25 listeners per hybrid connection was hit
        ├── RelayTimeout                  504/408: an operation did not finish in time
        ├── ConnectionRejected            the listener rejected the sender with its own status and reason
        ├── ServerBusy                    503: the relay is shutting down or overloaded
        └── ConnectionLost                the connection broke after it was established
            └── StreamBroken                  the peer or the network broke an open stream

Relay-facing errors carry ``http_status`` (the status a relay answers with) and ``close_code`` (the WebSocket
close code to use once a socket is open), so the relay maps errors to responses in exactly one place.
"""

from __future__ import annotations

import re

__all__ = [
    "AuthorizationFailed",
    "ConnectionLost",
    "ConnectionRejected",
    "EndpointNotFound",
    "Forbidden",
    "HycoError",
    "InvalidConfig",
    "InvalidConnectionString",
    "InvalidInput",
    "InvalidToken",
    "InvalidURI",
    "LocalProtocolError",
    "ProtocolError",
    "QuotaExceeded",
    "RelayError",
    "RelayTimeout",
    "RemoteProtocolError",
    "ServerBusy",
    "StreamBroken",
    "StreamClosed",
]


class HycoError(Exception):
    """Root of every exception raised by hyco."""


class InvalidInput(HycoError, ValueError):
    """A value handed to hyco cannot be used; the message says which and why."""


class InvalidURI(InvalidInput):
    """An address or request target cannot be used.

    Attributes:
        uri: the offending text.
        reason: what is wrong with it.
    """

    def __init__(self, uri: str, reason: str) -> None:
        self.uri = uri
        self.reason = reason
        # A connection string passed where an address belongs must not show its key in the message.
        shown = _SECRET_VALUE.sub(r"\1***", uri)
        super().__init__(f"{shown!r} is not a valid address: {reason}")


#: ``name=value`` pairs whose name says key or signature (also mistyped ones such as ``SharedAccesKey``).
_SECRET_VALUE = re.compile(r"(?i)(\b\w*(?:key|sig|signature|token)\s*=)[^;&\s]*")


class InvalidToken(InvalidInput):
    """A shared access signature cannot be parsed. The token itself is never put in the message."""


class InvalidConnectionString(InvalidInput):
    """A connection string is malformed or combines keys that cannot go together (protocol.md 5.5)."""


class InvalidConfig(InvalidInput):
    """A relay configuration file or value is wrong; the message names the key."""


class ProtocolError(HycoError):
    """The Hybrid Connections protocol was broken."""


class LocalProtocolError(ProtocolError):
    """hyco was asked to send something the protocol does not allow (a bug in the caller)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow (malformed JSON, unknown command, ...).

    Attributes:
        reason: what the peer did wrong; safe to show and to put in a Close frame (never contains a token).
        close_code: the WebSocket close code that answers it on an open socket (1008 policy violation,
            1009 message too big).
    """

    def __init__(self, reason: str, *, close_code: int = 1008) -> None:
        super().__init__(reason)
        self.reason = reason
        self.close_code = close_code


class RelayError(HycoError):
    """The relay refused or failed an operation.

    Attributes:
        http_status: the HTTP status the relay answers (or answered) with.
        close_code: the WebSocket close code for the same condition on an open socket.
        description: human-readable reason, safe to show (never contains a token or key).
        tracking_id: the relay's tracking id for this operation, when known.
    """

    http_status = 500
    close_code = 1011

    def __init__(
        self,
        description: str,
        *,
        http_status: int | None = None,
        tracking_id: str | None = None,
    ) -> None:
        if http_status is not None:
            self.http_status = http_status
        self.description = description
        self.tracking_id = tracking_id
        super().__init__(description)


class AuthorizationFailed(RelayError):
    """401: the token is missing, malformed, expired, for another audience, or badly signed."""

    http_status = 401
    close_code = 1008


class Forbidden(RelayError):
    """403: the token is valid but its rule lacks the right needed (Listen or Send)."""

    http_status = 403
    close_code = 1008


class EndpointNotFound(RelayError):
    """404: the hybrid connection does not exist, or no listener is there to take the connection."""

    http_status = 404
    close_code = 1001


class QuotaExceeded(RelayError):
    """403: a limit was reached, such as 25 listeners per hybrid connection."""

    http_status = 403
    close_code = 1008


class RelayTimeout(RelayError):
    """504 (or 408): an operation did not complete within its deadline."""

    http_status = 504
    close_code = 1011


class ConnectionRejected(RelayError):
    """The listener rejected the connection; ``http_status`` and ``description`` are the listener's own."""


class ServerBusy(RelayError):
    """503: the relay is shutting down or cannot take more work right now."""

    http_status = 503
    close_code = 1001


class ConnectionLost(RelayError):
    """An established connection broke (peer vanished, network failed, or the relay closed it)."""

    close_code = 1011


class StreamClosed(HycoError):
    """You closed this stream (or shut down its sending side) and then used it in that direction.

    This is a bug in the calling code, not a network failure: check the order of ``close()``/``shutdown()``.
    """


class StreamBroken(ConnectionLost):
    """The peer or the network broke an open stream (abnormal close, reset, relay error).

    Attributes:
        close_code: the WebSocket close code received, or 1006 when the connection dropped without one.
    """

    def __init__(self, description: str, *, close_code: int = 1006) -> None:
        super().__init__(description)
        self.close_code = close_code
