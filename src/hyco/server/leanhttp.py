"""Small relayed HTTP requests served by the lean door (docs/architecture.md, "The relay's data flow").

A relayed HTTP request served by aiohttp's server costs a parser, a request object, a handler task, routing,
a response object and its writer around what the forwarder does. Here the door's connection reads the head
with aiohttp's C parser (``Door.parser``), hands a :class:`~hyco.server.httpforward.RelayedRequest` to
:meth:`FrontDoor.relay_http <hyco.server.frontdoor.FrontDoor.relay_http>` (the same checks, limits, auth,
routing, forwarder, logs and metrics as aiohttp's path) and writes the answer as raw HTTP/1.1 bytes, exactly
as aiohttp writes them (status line, the listener's headers filtered as there, ``Content-Length`` or chunked,
then ``Date`` and ``Server``).

Served here: HTTP/1.1 requests with a ``Host``, a method in :data:`LEAN_METHODS`, an origin-form target that
is not under ``/$``, no body or a ``Content-Length`` body of at most ``MAX_INLINE_BODY`` (the bound for bodies
sent inline on the control channel), no ``Transfer-Encoding``, ``Expect``, ``Content-Encoding`` or upgrade,
and not the SDKs' runtime-information GET. Anything else, and a request to an inspected hybrid connection,
goes to aiohttp's ``RequestHandler`` with every byte read so far, at the start of a request: a connection
may serve lean requests and then be handed over for good.

A connection serves one request at a time (pipelined bytes wait, and reading pauses above
``MAX_PIPELINED``); after each answer it gets ``limits.idle_timeout`` seconds to send its next complete head,
as under aiohttp. A sender that hangs up (or half-closes) mid-request cancels its exchange, which releases
its admission slot and body reservation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from aiohttp import HttpVersion11
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import RawRequestMessage

from hyco.exceptions import RelayError
from hyco.protocol.messages import MAX_INLINE_BODY
from hyco.server.frontdoor import HttpOutcome, request_tracking_id
from hyco.server.httpforward import RelayedRequest, ResponseStart, cut, relay_body, response_head

if TYPE_CHECKING:
    from hyco.server.door import Door

__all__ = ["LEAN_METHODS", "LeanHttpConnection", "bare_line_feed", "may_be_lean"]

log = logging.getLogger("hyco.relay")

#: The methods served here (HEAD, whose answer has its own framing rules, and CONNECT go to aiohttp).
LEAN_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_STARTS = tuple(f"{method} /".encode() for method in sorted(LEAN_METHODS))
#: Head bytes read without finding the head's end before the connection goes to aiohttp.
MAX_LEAN_HEAD = 16 * 1024
#: Bytes of the next requests (pipelined) taken while one is served before reading pauses.
MAX_PIPELINED = 64 * 1024
#: Statuses whose response has no body and no Content-Length (aiohttp's ``EMPTY_BODY_STATUS_CODES``).
_EMPTY_BODY = frozenset({204, 304, *range(100, 200)})


def bare_line_feed(head: bytes | bytearray) -> bool:
    """Whether a line of ``head`` ends in LF without CR. The lean paths look for the CRLF CRLF that ends a
    head and would wait for it until the head timeout; aiohttp answers such a head with 400 at once."""
    return head.count(b"\n") != head.count(b"\r\n")


def may_be_lean(data: bytes | bytearray) -> bool:
    """Whether a connection's first bytes may start a request served here (one of :data:`LEAN_METHODS`, a
    target not under ``/$``); False sends the connection to aiohttp at once."""
    for start in _STARTS:
        known = min(len(data), len(start))
        if data[:known] == start[:known]:
            return len(data) <= len(start) or data[len(start)] != ord("$")
    return False


def lean_body_length(message: RawRequestMessage) -> int | None:
    """The body length of a request served here, or None when aiohttp must serve it (see the module)."""
    headers = message.headers
    if (
        message.version != HttpVersion11
        or message.method not in LEAN_METHODS
        or message.upgrade
        or message.chunked
        or message.compression is not None
        or "Host" not in headers
        or "Expect" in headers
        or "Transfer-Encoding" in headers
        or headers.get("X-PROCESS-AT", "").lower() == "servicebus"  # the SDKs' runtime information
    ):
        return None
    raw_path = message.url.raw_path
    if not raw_path.startswith("/") or raw_path.startswith("/$"):
        return None
    lengths = headers.getall("Content-Length", ())
    if not lengths:
        return 0
    if len(lengths) != 1 or not lengths[0].isdigit():
        return None
    length = int(lengths[0])
    return length if length <= MAX_INLINE_BODY else None


def response_bytes(
    status: int,
    reason: str,
    headers: Iterable[tuple[str, str]],
    framing: Iterable[tuple[str, str]],
    close: bool,
) -> bytes:
    """An HTTP/1.1 response head as aiohttp writes it: the status line, ``headers``, the relay's
    ``framing`` headers (length, type), ``Date``, ``Server`` and ``Connection: close`` when it closes."""
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines += [f"{name}: {value}" for name, value in framing]
    lines += [f"Date: {rfc822_formatted_time()}", f"Server: {SERVER_SOFTWARE}"]
    if close:
        lines.append("Connection: close")
    lines += ["", ""]
    return "\r\n".join(lines).encode()


def _framing(status: int, headers: dict[str, str], length: int | None) -> list[tuple[str, str]]:
    """aiohttp's framing headers for a response with a body of ``length`` bytes (None: streamed)."""
    if status in _EMPTY_BODY:
        return []
    framing = [("Content-Length", str(length)) if length is not None else ("Transfer-Encoding", "chunked")]
    if length != 0 and not any(name.lower() == "content-type" for name in headers):
        framing.append(("Content-Type", "application/octet-stream"))
    return framing


class LeanHttpConnection(asyncio.Protocol):
    """A connection serving relayed HTTP requests, one at a time, until it closes or goes to aiohttp.

    Args:
        door: the lean door (its front door, parser, idle timeout, open connections, gate and aiohttp).
        transport: the connection (its protocol becomes this one: :meth:`take`).
        deadline: when (loop time) the head being read must be complete.
    """

    __slots__ = (
        "_body",
        "_body_left",
        "_buf",
        "_door",
        "_drained",
        "_serving",
        "_timer",
        "_waiter",
        "transport",
    )

    def __init__(self, door: Door, transport: asyncio.Transport, deadline: float) -> None:
        self._door = door
        self.transport = transport
        self._buf = bytearray()  # the next head (and what follows it) as it arrives
        self._body = bytearray()  # body bytes of the request being served, not yet read by the forwarder
        self._body_left = 0  # body bytes still to arrive (read, or skipped after a refusal)
        self._serving: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None  # the forwarder waits for body bytes
        self._drained: asyncio.Future[None] | None = None  # set while the sender does not read
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_at(deadline, self.abort)

    @classmethod
    def take(cls, door: Door, transport: asyncio.Transport, deadline: float, data: bytes) -> None:
        """Make a new connection's protocol a :class:`LeanHttpConnection` and give it the bytes read so
        far (the gate counted the connection already; it is uncounted when it ends)."""
        connection = cls(door, transport, deadline)
        door.open.add(connection)
        transport.set_protocol(connection)
        connection.data_received(data)

    def data_received(self, data: bytes) -> None:
        """Take the body of the request being served, or the next head."""
        if self._body_left:
            taken = min(self._body_left, len(data))
            self._body_left -= taken
            if self._serving is not None:
                self._body += data[:taken]
                if self._waiter is not None and not self._waiter.done():
                    self._waiter.set_result(None)
            data = data[taken:]  # (after a refusal the unread body is skipped, as aiohttp skips it)
            if not data:
                return
        self._buf += data
        if self._serving is None:
            self._next()
        elif len(self._buf) > MAX_PIPELINED:
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        """The client stopped sending: the connection closes, ending a request in flight (as aiohttp)."""
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop serving (the exchange's slot and reservation are released) and stop counting it."""
        self._cancel_timer()
        self._door.open.discard(self)
        self._door.gate.uncount(self.transport)
        if self._serving is not None:
            self._serving.cancel()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)  # a writer waiting finds the transport closing

    def pause_writing(self) -> None:
        """The sender does not read as fast as it is answered: a streamed answer's writes, and the next
        request, wait."""
        if self._drained is None or self._drained.done():
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        """The sender reads again."""
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def abort(self) -> None:
        """Drop the connection (idle timeout, shutdown)."""
        self.transport.close()

    async def _drain(self) -> None:
        """Wait while the sender does not read what was written to it.

        Raises:
            ConnectionResetError: the sender went away.
        """
        if self._drained is not None and not self._drained.done():
            await self._drained
        if self.transport.is_closing():
            raise ConnectionResetError("the sender went away")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _next(self) -> None:
        """Serve the next head once it is complete, or hand the connection to aiohttp."""
        buf = self._buf
        if not buf:
            return
        if not may_be_lean(buf):
            self._hand_over(b"")
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_LEAN_HEAD or bare_line_feed(buf):
                self._hand_over(b"")
            return
        head = bytes(buf[: end + 4])
        message, length = self._parse(head)
        if message is None or length is None:
            self._hand_over(b"")
            return
        del buf[: end + 4]
        self._body = buf[:length]
        del buf[:length]
        self._body_left = length - len(self._body)
        self._cancel_timer()
        self._serving = asyncio.ensure_future(self._serve(message, head, length))

    def _parse(self, head: bytes) -> tuple[RawRequestMessage | None, int | None]:
        try:
            messages, _, _ = self._door.parser().feed_data(head)
        except HttpProcessingError:
            return None, None  # aiohttp answers it
        if len(messages) != 1:
            return None, None
        message: RawRequestMessage = messages[0][0]
        return message, lean_body_length(message)

    def _hand_over(self, head: bytes) -> None:
        """Give the connection to aiohttp with ``head`` (a request not served after all) and what follows."""
        self._cancel_timer()
        self._door.open.discard(self)
        self.transport.resume_reading()  # (paused if pipelined bytes piled up): aiohttp reads from here
        data = head + bytes(self._body) + bytes(self._buf)
        self._body, self._buf = bytearray(), bytearray()
        self._door.hand_over(self.transport, data)

    async def _read_chunk(self) -> bytes:
        """The body bytes that arrived since the last call (waiting for some), ``b""`` at the body's end."""
        while not self._body:
            if not self._body_left:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk, self._body = bytes(self._body), bytearray()
        return chunk

    async def _serve(self, message: RawRequestMessage, head: bytes, length: int) -> None:
        transport = self.transport
        headers = message.headers
        raw_path, raw_query = message.url.raw_path, message.url.raw_query_string
        tracking_id = request_tracking_id(raw_query)
        request = RelayedRequest(
            method=message.method,
            raw_path=raw_path,
            raw_query=raw_query,
            headers=headers,
            host=headers["Host"],
            transport=transport,
            content_length=length if "Content-Length" in headers else None,
            has_body=length > 0,
            read_chunk=self._read_chunk,
        )
        close = message.should_close

        async def respond(start: ResponseStart, timeout: float, host: str) -> HttpOutcome:
            return await self._respond(request, start, timeout, host, close)

        try:
            if not await self._door.front.relay_http(request, tracking_id, respond):
                self._serving = None
                self._hand_over(head)
                return
        except ConnectionError:  # the sender went away as its answer was to be written
            transport.close()
            return
        except RelayError as exc:
            if transport.is_closing():
                return
            peer = request.peer
            answer = self._door.front.refusal(
                exc, tracking_id, message.method, raw_path, request.host, peer[0] if peer else "?"
            )
            # 408: the rest of the body is not coming, so the connection closes (RFC 9110 15.5.9).
            close = close or exc.http_status == 408
            body = answer.text.encode()
            framing = [
                ("Content-Type", "application/json; charset=utf-8"),
                ("Content-Length", str(len(body))),
            ]
            transport.write(
                response_bytes(exc.http_status, answer.reason, answer.headers.items(), framing, close)
            )
            transport.write(body)
        except Exception:  # a bug: answered as aiohttp answers a handler's exception
            log.exception("serving %s failed", raw_path[:200])
            if transport.is_closing():
                return
            body = b"500 Internal Server Error\n\nServer got itself in trouble"
            framing = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
            transport.write(response_bytes(500, "Internal Server Error", (), framing, True) + body)
            close = True
        self._door.lean_requests += 1
        if close or transport.is_closing():
            transport.close()
            return
        try:
            await self._drain()  # the next request waits until the sender reads this answer
        except ConnectionError:
            return
        self._serving = None
        self._body = bytearray()  # what the forwarder did not read; the rest of it is skipped as it comes
        self._timer = asyncio.get_running_loop().call_later(self._door.idle_timeout, self.abort)
        transport.resume_reading()
        self._next()

    async def _respond(
        self, request: RelayedRequest, start: ResponseStart, timeout: float, host: str, close: bool
    ) -> HttpOutcome:
        """Write the listener's response as aiohttp's path does (``HttpForwarder._respond``)."""
        transport = self.transport
        if transport.is_closing():
            raise ConnectionResetError("the sender went away")
        command = start.command
        status = command.status_code
        reason, headers = response_head(command, host, None)
        body = start.body
        if body is None or isinstance(body, bytes):
            data = b"" if status in _EMPTY_BODY else (body or b"")
            framing = _framing(status, headers, len(data))
            transport.write(response_bytes(status, reason, headers.items(), framing, close) + data)
            return HttpOutcome(status, len(data))
        # Over the request rendezvous: streamed, chunked as aiohttp writes a response of unknown length.
        transport.write(
            response_bytes(status, reason, headers.items(), _framing(status, headers, None), close)
        )
        sent = 0

        async def write(chunk: bytes) -> None:
            nonlocal sent
            if transport.is_closing():
                raise ConnectionResetError("the sender went away")
            if status not in _EMPTY_BODY and chunk:
                transport.writelines((f"{len(chunk):x}\r\n".encode(), chunk, b"\r\n"))
                sent += len(chunk)
            await self._drain()

        why = await relay_body(body, write, timeout, None)
        if why is not None:
            cut(request, why)
        elif status not in _EMPTY_BODY:
            transport.write(b"0\r\n\r\n")
        return HttpOutcome(status, sent)
