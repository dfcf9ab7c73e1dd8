"""The SDK's only door to the network: open a client WebSocket with aiohttp and translate its errors.

Every aiohttp, ``OSError`` and timeout error raised while dialing is turned into a :mod:`hyco.exceptions`
error here, in one place (style.md habit 6). Handshake statuses map the way .NET's
``WebSocketExceptionHelper`` maps them (protocol.md 2.1, 3.4); anything the relay itself never answers is a
listener's rejection (protocol.md 3.3) and becomes :class:`~hyco.exceptions.ConnectionRejected`.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from hyco.client._engine import TakenOverWebSocket
from hyco.exceptions import (
    AuthorizationFailed,
    ConnectionLost,
    ConnectionRejected,
    EndpointNotFound,
    Forbidden,
    QuotaExceeded,
    RelayError,
    RelayTimeout,
    ServerBusy,
)

__all__ = ["NetOptions", "error_for_status", "open_websocket"]

#: Statuses the relay answers on its own (protocol.md 2.1, 3.4, 4.6); others come from a rejecting listener.
_RELAY_STATUSES = frozenset({401, 403, 404, 408, 500, 503, 504})


@dataclass(frozen=True, slots=True)
class NetOptions:
    """How to reach the relay.

    Attributes:
        ssl: an ``ssl.SSLContext``, True for default verification, False to skip verification (tests only).
        proxy: an ``http://host:port`` HTTP proxy; TLS connections go through it with ``CONNECT``.
        proxy_headers: extra headers for the proxy, e.g. ``Proxy-Authorization``.
    """

    ssl: ssl_module.SSLContext | bool = True
    proxy: str | None = None
    proxy_headers: Mapping[str, str] = field(default_factory=dict)


def make_ssl(
    ssl: ssl_module.SSLContext | bool | None = None, ca_file: str | None = None
) -> ssl_module.SSLContext | bool:
    """Build the TLS setting from the public ``ssl=`` / ``ca_file=`` arguments.

    Args:
        ssl: a ready context, or True/None (verify with system CAs), or False (do not verify: tests only).
        ca_file: a PEM file of extra trusted CAs, e.g. a self-signed relay's certificate.
    """
    if isinstance(ssl, ssl_module.SSLContext):
        return ssl
    if ca_file is not None:
        return ssl_module.create_default_context(cafile=ca_file)
    return True if ssl is None else ssl


def error_for_status(status: int, reason: str, what: str) -> RelayError:
    """The hyco error for a failed WebSocket handshake.

    Args:
        status: the HTTP status.
        reason: the reason phrase (the relay's or the listener's description).
        what: a short phrase naming the operation, for the message.
    """
    description = reason or f"HTTP {status}"
    text = f"{what} failed: {status} {description}"
    if status not in _RELAY_STATUSES:
        return ConnectionRejected(description, http_status=status)
    if status == 401:
        return AuthorizationFailed(f"{text} (check the key name, key and token expiry)")
    if status == 403:
        if "quota" in description.lower() or "maximum" in description.lower():
            return QuotaExceeded(text)
        return Forbidden(f"{text} (the rule lacks the Listen/Send right for this path)")
    if status == 404:
        return EndpointNotFound(text)
    if status in (408, 504):
        return RelayTimeout(text, http_status=status)
    if status == 503:
        return ServerBusy(text)
    return RelayError(text, http_status=status)


def _unreachable(exc: BaseException, url: str) -> str:
    """Why the relay could not be reached, with the next step for the two TLS mistakes newcomers make."""
    netloc = urlsplit(url).netloc
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return (
            f"the TLS certificate of {netloc} is not trusted ({exc.certificate_error}); trust the CA that "
            "signed it: ca_file= in the SDK, --ca-file on the command line (a relay started with "
            "--self-signed prints the path of its ca.pem)"
        )
    if any(
        isinstance(e, ssl_module.SSLError) and getattr(e, "reason", None) in _PLAIN_PEER_REASONS
        for e in _chain(exc)
    ):
        return (
            f"{netloc} does not speak TLS: the relay is plain ws://; use a ws:// address (not sb:// or "
            "wss://), or start the relay with TLS (hyco relay --self-signed HOST, or [server.tls])"
        )
    return f"could not reach the relay ({exc})"


#: OpenSSL's reasons when the peer answers a TLS hello with plain HTTP (OpenSSL 1.1/3.x).
_PLAIN_PEER_REASONS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"})


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = getattr(current, "os_error", None) or current.__cause__ or current.__context__
    return seen


def _reason_tracer() -> tuple[aiohttp.TraceConfig, dict[str, Any]]:
    # aiohttp drops the reason phrase when a WebSocket handshake fails; the relay puts the description (and
    # a listener its rejection reason) there, so capture it from the response as it arrives.
    seen: dict[str, Any] = {}
    tracer = aiohttp.TraceConfig()

    async def on_request_end(
        session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestEndParams
    ) -> None:
        seen["reason"] = params.response.reason or ""

    tracer.on_request_end.append(on_request_end)
    return tracer, seen


async def open_websocket(
    url: str,
    *,
    what: str,
    options: NetOptions,
    headers: Mapping[str, str] | None = None,
    protocols: Sequence[str] = (),
    handshake_timeout: float | None,
    heartbeat: float | None = None,
    autoclose: bool = False,
    take_over: bool = False,
) -> tuple[aiohttp.ClientWebSocketResponse, aiohttp.ClientSession]:
    """Dial a WebSocket; the caller owns (and must close) both the socket and its session.

    Args:
        url: the ``ws://``/``wss://`` URL.
        what: names the operation in error messages, e.g. ``"connecting to sb://host/echo"``.
        options: TLS and proxy settings.
        headers: request headers.
        protocols: offered sub-protocols.
        handshake_timeout: seconds for TCP + TLS + handshake (None: no limit).
        heartbeat: aiohttp heartbeat (ping, and drop the connection when no pong comes), or None.
        autoclose: echo the peer's Close at once (True for the control channel; False for relayed streams,
            which must half-close).
        take_over: hand the connection to the lean data path once upgraded (a relayed stream): the result
            is a :class:`~hyco.client._engine.TakenOverWebSocket` whose ``connection`` carries the frames.

    Raises:
        RelayError: a subclass matching the handshake status (see :func:`error_for_status`).
        RelayTimeout: the handshake did not complete within ``handshake_timeout``.
        ConnectionLost: the relay could not be reached (refused, reset, DNS, TLS failure).
    """
    tracer, seen = _reason_tracer()
    session = aiohttp.ClientSession(
        trace_configs=[tracer],
        ws_response_class=TakenOverWebSocket if take_over else aiohttp.ClientWebSocketResponse,
    )
    try:
        async with asyncio.timeout(handshake_timeout):
            ws = await session.ws_connect(
                url,
                headers=dict(headers or {}),
                protocols=tuple(protocols),
                ssl=options.ssl,
                proxy=options.proxy,
                proxy_headers=dict(options.proxy_headers) or None,
                heartbeat=heartbeat,
                autoclose=autoclose,
                autoping=True,
                max_msg_size=0,
                compress=0,
            )
    except aiohttp.WSServerHandshakeError as exc:
        await session.close()
        if exc.status == 101 or not exc.status:
            raise ConnectionLost(f"{what} failed: bad WebSocket handshake ({exc.message})") from exc
        raise error_for_status(exc.status, str(seen.get("reason", "")), what) from exc
    except TimeoutError as exc:
        await session.close()
        raise RelayTimeout(f"{what} timed out after {handshake_timeout} s", http_status=408) from exc
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        await session.close()
        raise ConnectionLost(f"{what} failed: {_unreachable(exc, url)}") from exc
    except BaseException:
        await session.close()
        raise
    return ws, session
