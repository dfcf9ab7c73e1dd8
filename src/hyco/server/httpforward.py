"""Relayed plain HTTP (protocol.md 4): a sender's request goes to a listener, its response comes back.

Theory of operation:

* Every request gets an :class:`Exchange` with an unguessable id, which is both the ``request.id`` the
  listener echoes as ``requestId`` and the ``sb-hc-id`` of the request rendezvous address.
* A request whose body length is known and <= 64 KiB and whose headers are <= 32 KB goes **inline** on the
  control channel: ``request`` JSON, then one binary message (4.2). Anything else (larger, chunked) sends a
  **stub** (``{"request":{"address":...,"id":...}}``, 2.4) and waits for the listener to dial the address;
  the full request and its body, streamed frame by frame, then go over that socket (4.3).
* The ``response`` comes back on the control channel (JSON + one binary message) or on the rendezvous socket,
  which the listener may dial on its own for a large response even when the request came inline (hyco-https
  does). A rendezvous response body streams to the sender frame by frame: memory stays bounded for any size.
* Deadlines: the sender's body may not stall longer than ``limits.body_timeout`` between two chunks (408), the
  response must start within the hybrid connection's ``request_timeout`` (504 otherwise), and a streamed
  response body may not stall longer than that. A sender that hangs up cancels the exchange (seen within
  ``HANG_UP_POLL`` even while its body waits unread): the rendezvous socket is closed, which tells the
  listener to stop.
* Every exchange holds one admission slot (``capacity``) from admission to its end, whichever way it ends,
  and reserves the body bytes it can make the relay hold (``buffers``): its length when inline, the upload
  window when streamed (the sender is not read further until the listener's rendezvous takes the bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TypeVar

from aiohttp import web

from hyco.exceptions import ConnectionLost, RelayError, RemoteProtocolError
from hyco.protocol import messages
from hyco.protocol.messages import MAX_INLINE_BODY, MAX_INLINE_HEADERS, UNFORWARDED_HEADERS
from hyco.protocol.uri import Action, build_rendezvous_address, query_params, strip_sb_hc_params
from hyco.server.buffers import UPLOAD_WINDOW, ByteBudget
from hyco.server.capacity import Capacity
from hyco.server.dashboard.inspector import CAPTURE_KEY, Capture
from hyco.server.engine import Handshake
from hyco.server.registry import HybridConnection
from hyco.server.router import Delivery, ListenerCriteria, NoListenerConnected, Router
from hyco.server.streamws import StreamingWebSocket

__all__ = [
    "Exchange",
    "HttpForwarder",
    "RelayedRequest",
    "Respond",
    "ResponseStart",
    "cut",
    "relay_body",
    "response_head",
]

log = logging.getLogger("hyco.relay")

#: Request headers never forwarded: the unforwarded ones, the proxy's own, ``Expect`` (the relay answers
#: 100-continue itself) and the token carrier.
HOP_BY_HOP = UNFORWARDED_HEADERS | {
    "proxy-authenticate",
    "proxy-authorization",
    "expect",
    "servicebusauthorization",
}
#: Response headers the relay sets itself.
RESPONSE_SKIP = HOP_BY_HOP | {"date", "server"}
READ_CHUNK = 64 * 1024
#: Seconds between two looks at a waiting sender's TCP state (see ``_released_on_hang_up``).
HANG_UP_POLL = 0.5
#: Linux TCP states (include/net/tcp_states.h) of a socket whose peer closed (CLOSE_WAIT) or reset (CLOSE).
_PEER_GONE_STATES = frozenset({7, 8})


@dataclass(frozen=True, slots=True)
class ResponseStart:
    """A listener's response: the command and its body (whole bytes, a stream, or nothing)."""

    command: messages.Response
    body: bytes | AsyncIterator[bytes] | None


@dataclass(slots=True, eq=False)
class RelayedRequest:
    """A sender's HTTP request as the forwarder needs it: aiohttp's request (:meth:`HttpForwarder.forward`)
    or a head the lean door parsed (``hyco.server.leanhttp``).

    Attributes:
        method, raw_path, raw_query: the request line (path and query as sent).
        headers: the request headers (case-insensitive; repeated names yield one pair per value).
        host: the Host header.
        transport: the sender's connection (its peer address, and its TCP state while its body waits).
        content_length: the body's declared length, None when unknown (chunked).
        has_body: whether a body follows the head.
        read_chunk: the next piece of the body as it arrives, ``b""`` at its end.
        capture: the inspector's record of this request, if its hybrid connection is inspected.
    """

    method: str
    raw_path: str
    raw_query: str
    headers: Mapping[str, str]
    host: str
    transport: asyncio.Transport | None
    content_length: int | None
    has_body: bool
    read_chunk: Callable[[], Awaitable[bytes]]
    capture: Capture | None = None

    @property
    def peer(self) -> tuple[str, int] | None:
        """The sender's ``(address, port)``, if known."""
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        return (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None


#: What a caller of :meth:`HttpForwarder.relay` does with the listener's response: given its start, the
#: hybrid connection's ``request_timeout`` and the Host the request named, write it to the sender.
R = TypeVar("R")
Respond = Callable[[ResponseStart, float, str], Awaitable[R]]


@dataclass(eq=False)
class Exchange:
    """One relayed HTTP request in flight."""

    id: str
    tracking_id: str
    path: str
    request: messages.Request | None = None
    request_delivered: bool = False
    response: asyncio.Future[ResponseStart] = field(default_factory=asyncio.Future)
    rendezvous: asyncio.Future[StreamingWebSocket] = field(default_factory=asyncio.Future)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    body_source: AsyncIterator[bytes] | None = None
    answered_on_rendezvous: bool = False

    def fail(self, exc: Exception) -> None:
        """Fail the exchange if it is still waiting for a response."""
        if not self.response.done():
            self.response.set_exception(exc)


def _join_headers(pairs: list[tuple[str, str]], skip: AbstractSet[str]) -> dict[str, str]:
    # Dictionaries on the wire are flat and repeated headers are comma-joined (protocol.md 2.2).
    headers: dict[str, str] = {}
    for name, value in pairs:
        if name.lower() in skip:
            continue
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers


def _head_length(headers: Mapping[str, str] | None) -> str | None:
    """The listener's Content-Length for a HEAD response, if it sent a valid one."""
    value = next((v for k, v in (headers or {}).items() if k.lower() == "content-length"), None)
    return value.strip() if value is not None and value.strip().isdigit() else None


def response_head(
    command: messages.Response, host: str, capture: Capture | None
) -> tuple[str, dict[str, str]]:
    """The reason phrase and headers the sender gets for a listener's ``response`` (the relay frames the body
    and writes Date and Server itself; its Via is added)."""
    reason = command.status_description
    if not reason:
        try:
            reason = HTTPStatus(command.status_code).phrase
        except ValueError:
            reason = "Status"
    headers = _join_headers(list((command.response_headers or {}).items()), RESPONSE_SKIP)
    headers["Via"] = f"{headers['Via']}, 1.1 {host}" if "Via" in headers else f"1.1 {host}"
    if capture is not None:
        capture.response_started(command.status_code, headers)
    return reason, headers


async def relay_body(
    body: AsyncIterator[bytes],
    write: Callable[[bytes], Awaitable[None]],
    timeout: float,
    capture: Capture | None,
) -> str | None:
    """Copy a streamed response body (from a request rendezvous) to the sender with ``write``.

    Returns:
        None once the body ended, or why it cannot be completed (the listener's body stalled or broke for
        ``timeout``, the sender stopped reading or went away): the caller then cuts the connection, the only
        way a sender learns of it once the status line is gone.
    """
    iterator = body.__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(iterator.__anext__(), timeout)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            return f"the listener's response body stalled for {timeout:g} s"
        except (ConnectionLost, RemoteProtocolError) as exc:
            return f"the listener's response body broke: {exc}"
        if capture is not None:
            capture.response_chunk(chunk)
        try:
            # A sender that stops reading must not hold the exchange (and a max_pending slot) forever.
            async with asyncio.timeout(timeout):
                await write(chunk)
        except TimeoutError:
            return f"the sender stopped reading for {timeout:g} s"
        except ConnectionError:
            return "the sender went away"


def cut(request: RelayedRequest, why: str) -> None:
    """End a response whose body cannot be completed by dropping the sender's connection."""
    log.warning("http %s %s: %s; connection cut", request.method, request.raw_path[:200], why)
    if request.transport is not None:
        request.transport.close()


@contextlib.contextmanager
def _released_on_hang_up(transport: asyncio.Transport | None) -> Iterator[None]:
    """Notice a sender that hangs up while the relay is not reading its body.

    aiohttp cancels the handler when a connection is lost, but a sender whose upload waits for the listener
    is not being read (its body window is full), so neither its FIN nor its reset is seen and the exchange
    would wait for ``request_timeout``. Every ``HANG_UP_POLL`` seconds the socket's TCP state is read; once
    the peer has closed (CLOSE_WAIT; aiohttp does not serve half-closed connections either) or reset it
    (CLOSE), the connection is aborted, which cancels the handler as any lost connection does.
    """
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or not hasattr(socket, "TCP_INFO"):  # not TCP, or not Linux: aiohttp's own detection
        yield
        return
    loop = asyncio.get_running_loop()
    handle: asyncio.TimerHandle

    def check() -> None:
        nonlocal handle
        assert transport is not None
        if transport.is_closing():
            return  # aiohttp knows already
        try:
            state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
        except (OSError, ValueError):  # closed meanwhile (uvloop's socket says so with a ValueError)
            return
        if state in _PEER_GONE_STATES:
            transport.abort()
            return
        handle = loop.call_later(HANG_UP_POLL, check)

    handle = loop.call_later(HANG_UP_POLL, check)
    try:
        yield
    finally:
        handle.cancel()


def _body_reservation(request: RelayedRequest) -> int:
    """The most body bytes ``request`` can make the relay hold at once (see ``hyco.server.buffers``)."""
    if not request.has_body:
        return 0
    length = request.content_length
    return UPLOAD_WINDOW if length is None else min(length, UPLOAD_WINDOW)


class HttpForwarder:
    """Forwards plain HTTP requests to listeners and relays their responses.

    Args:
        router: gets the ``request`` to a listener.
        capacity: the admission slots shared with stream forwarding.
        authorize_send: checks the sender's token for an entity plus the request's path suffix (raises
            RelayError).
        body_timeout: seconds the sender's request body may stall between two chunks.
        buffers: the relay's budget for body bytes held in memory (``limits.max_buffered_bytes``).
        id_tag: ends every request id (a worker's tag: hyco.server.workers).
    """

    def __init__(
        self,
        router: Router,
        capacity: Capacity,
        authorize_send: Callable[[RelayedRequest, str | None, HybridConnection, str], object],
        *,
        body_timeout: float,
        buffers: ByteBudget,
        id_tag: str = "",
    ) -> None:
        self._router = router
        self._id_tag = id_tag
        self._capacity = capacity
        self._authorize_send = authorize_send
        self._body_timeout = body_timeout
        self._buffers = buffers
        self._exchanges: dict[str, Exchange] = {}

    def __len__(self) -> int:
        return len(self._exchanges)

    # --- responses arriving on a control channel ---

    def on_control_response(self, response: messages.Response, body: bytes | None) -> bool:
        """Deliver a response that came on a control channel; False if no request has that id."""
        exchange = self._exchanges.get(response.request_id)
        if exchange is None or exchange.response.done():
            return False
        exchange.response.set_result(ResponseStart(response, body))
        return True

    def on_invalid_response(self, request_id: str, reason: str) -> bool:
        """A listener answered ``request_id`` with a malformed response: the sender gets 502."""
        exchange = self._exchanges.get(request_id)
        if exchange is None:
            return False
        exchange.fail(RelayError(f"The listener sent an invalid response: {reason}.", http_status=502))
        return True

    # --- the sender's request ---

    async def forward(
        self,
        request: web.Request,
        hc: HybridConnection,
        suffix: str,
        tracking_id: str,
    ) -> web.StreamResponse:
        """Relay aiohttp's ``request`` to a listener of ``hc`` and stream its response back (:meth:`relay`).

        Raises:
            RelayError: as :meth:`relay`.
        """
        relayed = RelayedRequest(
            method=request.method,
            raw_path=request.rel_url.raw_path,
            raw_query=request.rel_url.raw_query_string,
            headers=request.headers,
            host=request.host,
            transport=request.transport,
            content_length=request.content_length,
            has_body=request.body_exists,
            read_chunk=request.content.readany,
            capture=request.get(CAPTURE_KEY),
        )

        async def respond(start: ResponseStart, timeout: float, host: str) -> web.StreamResponse:
            return await self._respond(request, relayed, start, timeout, host)

        return await self.relay(relayed, hc, suffix, tracking_id, respond)

    async def relay(
        self,
        request: RelayedRequest,
        hc: HybridConnection,
        suffix: str,
        tracking_id: str,
        respond: Respond[R],
    ) -> R:
        """Relay ``request`` to a listener of ``hc``; ``respond`` writes the listener's response.

        Both ways in call this: aiohttp's path (:meth:`forward`) and the lean door's (``server/leanhttp.py``).

        Returns:
            What ``respond`` returned.

        Raises:
            RelayError: 401/403 (token), 404 (AllowedListeners), 405 (CONNECT), 408 (body stalled), 502 (no
                listener, invalid response), 503 (no admission slot), 504 (no response in time).
        """
        if request.method == "CONNECT":
            raise RelayError("CONNECT requests cannot be relayed.", http_status=405)
        token_used, token = self._token(request, hc)
        if hc.config.requires_client_authorization:
            self._authorize_send(request, token, hc, suffix)
        with self._capacity.hold(), self._buffers.hold(_body_reservation(request)):
            started = time.monotonic()
            exchange = Exchange(f"{tracking_id}_{secrets.token_hex(16)}{self._id_tag}", tracking_id, hc.path)
            self._exchanges[exchange.id] = exchange
            try:
                with _released_on_hang_up(request.transport):
                    return await self._exchange(request, hc, suffix, token_used, exchange, started, respond)
            finally:
                self._exchanges.pop(exchange.id, None)
                exchange.finished.set()
                if exchange.rendezvous.done() and not exchange.answered_on_rendezvous:
                    # The listener dialed but never answered there (504, or the sender left): close its
                    # socket so its handler and the listener both learn the request is over.
                    await exchange.rendezvous.result().close(1001, "The request ended.")
                exchange.fail(ConnectionLost("the exchange ended"))
                if exchange.response.done() and not exchange.response.cancelled():
                    exchange.response.exception()  # mark retrieved

    async def _read_body(self, request: RelayedRequest) -> bytes:
        """The whole (small, inline) request body, cut when it stalls for ``body_timeout``."""
        parts: list[bytes] = []
        async for chunk in self._body_chunks(request):
            parts.append(chunk)
        return b"".join(parts)

    async def _body_chunks(self, request: RelayedRequest) -> AsyncIterator[bytes]:
        """The request body as it arrives; a body that stalls for ``body_timeout`` ends the request (408)."""
        capture = request.capture  # the inspector's, for inspected hybrid connections
        while True:
            try:
                async with asyncio.timeout(self._body_timeout):
                    chunk = await request.read_chunk()
            except TimeoutError:
                # The connection closes after the answer: the rest of the body is never read.
                raise RelayError(
                    f"Request Timeout: the request body stalled for {self._body_timeout:g} s.",
                    http_status=408,
                ) from None
            if not chunk:
                return
            if capture is not None:
                capture.request_chunk(chunk)
            yield chunk

    def _token(self, request: RelayedRequest, hc: HybridConnection) -> tuple[set[str], str | None]:
        # protocol.md 4.1 step 2: sb-hc-token and ServiceBusAuthorization are always stripped; Authorization
        # only when it is the token that was used.
        used: set[str] = set()
        token = request.headers.get("ServiceBusAuthorization") or query_params(request.raw_query).get(
            "sb-hc-token"
        )
        if token is None and hc.config.requires_client_authorization:
            token = request.headers.get("Authorization")
            if token is not None:
                used.add("authorization")
        return used, token

    async def _exchange(
        self,
        request: RelayedRequest,
        hc: HybridConnection,
        suffix: str,
        token_used: set[str],
        exchange: Exchange,
        started: float,
        respond: Respond[R],
    ) -> R:
        timeout = hc.config.request_timeout
        app_query = strip_sb_hc_params(request.raw_query)
        headers = _join_headers(list(request.headers.items()), HOP_BY_HOP | token_used)
        messages.check_deliverable_headers(headers)
        host = request.host
        headers["Via"] = f"{headers['Via']}, 1.1 {host}" if "Via" in headers else f"1.1 {host}"
        peer = request.peer
        length = request.content_length
        has_body = request.has_body
        header_size = sum(len(k) + len(v) + 4 for k, v in headers.items())
        inline = (not has_body or (length is not None and length <= MAX_INLINE_BODY)) and (
            header_size <= MAX_INLINE_HEADERS
        )
        target = request.raw_path + (f"?{app_query}" if app_query else "")
        body = await self._read_body(request) if inline and has_body else None
        if not inline and has_body:
            exchange.body_source = self._body_chunks(request)
        criteria = ListenerCriteria.from_headers(
            request.headers.get("Microsoft-Relay-AllowedListeners"),
            request.headers.get("Microsoft-Relay-DisallowedListeners"),
        )

        def build(delivery: Delivery) -> tuple[messages.Command, bytes | None]:
            address = build_rendezvous_address(
                delivery.base_url, hc.path + suffix, app_query, Action.REQUEST, exchange.id
            )
            exchange.request = messages.Request(
                address=address,
                id=exchange.id,
                request_target=target,
                method=request.method,
                remote_endpoint=messages.RemoteEndpoint(peer[0], peer[1]) if peer else None,
                request_headers=headers,
                body=has_body,
            )
            # Inline goes whole, also to a listener on another cluster node (one message there, its response
            # one message back); otherwise a stub, and the request and its body travel over the rendezvous.
            exchange.request_delivered = inline
            if inline:
                return exchange.request, body
            return messages.Request(address=address, id=exchange.id), None

        try:
            await self._router.dispatch(hc, criteria, build)
        except NoListenerConnected as exc:
            # protocol.md 4.6 [INF]: 502 for "nobody to route to" (404 stays "no such entity").
            raise RelayError(exc.description, http_status=502) from None
        try:
            async with asyncio.timeout(timeout):
                start = await exchange.response
        except TimeoutError:
            raise RelayError(
                "The request was routed to the listener but the listener did not respond in the required "
                f"time ({timeout:g} s).",
                http_status=504,
            ) from None
        except ConnectionLost:
            raise RelayError("The listener went away before it answered.", http_status=502) from None
        response = await respond(start, timeout, host)
        log.info(
            "http %s %s -> %d in %.0f ms (tracking=%s, %s)",
            request.method,
            request.raw_path[:200],
            start.command.status_code,
            (time.monotonic() - started) * 1000,
            exchange.tracking_id,
            # How the exchange travelled: a listener may answer an inline request over a rendezvous too.
            "rendezvous" if exchange.rendezvous.done() else "control channel",
        )
        return response

    async def _respond(
        self, request: web.Request, relayed: RelayedRequest, start: ResponseStart, timeout: float, host: str
    ) -> web.StreamResponse:
        command = start.command
        capture = relayed.capture
        reason, headers = response_head(command, host, capture)
        body = start.body
        if request.method == "HEAD" and (length := _head_length(command.response_headers)) is not None:
            # A HEAD response carries no body but says how long the GET's would be (RFC 9110 9.3.2); the
            # relay frames responses itself, so only this one Content-Length passes through.
            headers["Content-Length"] = length
            response = web.StreamResponse(status=command.status_code, reason=reason, headers=headers)
            await response.prepare(request)
            await response.write_eof()
            return response
        if body is None or isinstance(body, bytes):
            data = body or b""
            if 100 <= command.status_code < 200 or command.status_code in (204, 304):
                data = b""
            if capture is not None:
                capture.response_chunk(data)
            return web.Response(status=command.status_code, reason=reason, headers=headers, body=data)
        response = web.StreamResponse(status=command.status_code, reason=reason, headers=headers)
        await response.prepare(request)
        why = await relay_body(body, response.write, timeout, capture)
        if why is not None:
            cut(relayed, why)
            return response
        await response.write_eof()
        return response

    # --- the listener's request rendezvous (protocol.md 4.3) ---

    async def rendezvous(self, handshake: Handshake, ident: str | None) -> None:
        """Serve a listener's dial of a request rendezvous address.

        Raises:
            RelayError: 403 when the address is unknown, used, or its request already ended.
        """
        exchange = self._exchanges.get(ident or "")
        if exchange is None or exchange.rendezvous.done() or exchange.finished.is_set():
            raise RelayError(
                "The request rendezvous address is unknown, was already used, or its request ended.",
                http_status=403,
            )
        ws = StreamingWebSocket()
        await ws.accept(handshake)
        exchange.rendezvous.set_result(ws)
        upload: asyncio.Task[None] | None = None
        try:
            if not exchange.request_delivered:
                assert exchange.request is not None
                await ws.send_text(messages.encode(exchange.request))
                exchange.request_delivered = True
                if exchange.body_source is not None:
                    # The body streams up while the response is read: a listener may answer (and stream
                    # its response) before it has read the whole request, as a streaming echo does.
                    upload = asyncio.ensure_future(self._upload(ws, exchange, exchange.body_source))
            command = messages.decode(await ws.receive_text())
            if not isinstance(command, messages.Response) or command.request_id != exchange.id:
                raise RemoteProtocolError("expected the response to this request on its rendezvous")
            body = ws.receive_binary_stream() if command.body else None
            exchange.answered_on_rendezvous = True
            if not exchange.response.done():
                exchange.response.set_result(ResponseStart(command, body))
            await exchange.finished.wait()
            await ws.close(1000, "Normal Closure")
        except (ConnectionLost, RemoteProtocolError, ConnectionError) as exc:
            # The sender hung up mid-upload, or the listener broke the exchange: cancel at both ends.
            exchange.fail(RelayError(f"The listener's rendezvous failed: {exc}.", http_status=502))
            if isinstance(exc, RemoteProtocolError):  # the listener broke the rules: it learns which
                await ws.close(exc.close_code, exc.reason)
            else:
                await ws.close(1001, "The request was cancelled.")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(exchange.finished.wait(), 1)
        finally:
            # Also when the handler is cancelled because the listener's connection was lost (or cut for
            # breaking the framing rules): the sender learns at once instead of after its request timeout.
            exchange.fail(RelayError("The listener's rendezvous ended before it answered.", http_status=502))
            if upload is not None and not upload.done():
                upload.cancel()

    async def _upload(self, ws: StreamingWebSocket, exchange: Exchange, body: AsyncIterator[bytes]) -> None:
        try:
            await ws.send_binary_stream(body)
        except RelayError as exc:  # the sender's body stalled
            exchange.fail(exc)
            await ws.close(1001, "The request was cancelled.")
        except Exception as exc:  # the sender hung up mid-body, or the listener's socket broke
            exchange.fail(RelayError(f"The request body could not be relayed: {exc}.", http_status=502))
            await ws.close(1001, "The request was cancelled.")
