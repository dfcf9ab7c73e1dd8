"""What the .NET SDK (Microsoft.Azure.Relay 3.0.1) puts on the wire, replayed by hand.

The SDK needs NuGet, which the machines that run these tests cannot reach, so it cannot be a live peer. This
module sends the bytes its sources say it sends and checks answers the way its bundled WebSocket client
checks them. Source lines cited are in Azure/azure-relay-dotnet at e7f6354, under
``src/Microsoft.Azure.Relay/``. Nothing here is copied from the SDK; it is written from reading it.

* :func:`dotnet_token`: ``SharedAccessSignatureTokenProvider.BuildSignature`` (Common/
  SharedAccessSignatureTokenProvider.cs:85-112) over the audience ``TokenProvider.NormalizeAudience`` makes
  (Common/TokenProvider.cs:230-233 with Common/UriHelper.cs:108-138: scheme ``http``, port dropped, query
  dropped, trailing ``/``), encoded with ``WebUtility.UrlEncode`` (upper-case hex, space as ``+``).
* :class:`DotnetSocket`: the handshake of the SDK's bundled client (WebSockets/NetStandard20/
  WebSocketHandle.Managed.cs:450-515: request line, ``Host`` with the port, ``Connection``, ``Upgrade``,
  version, key, then the SDK's headers, then ``Sec-WebSocket-Protocol``), the checks it makes on the answer
  (same file, 605-700: ``HTTP/1.1``; exactly one ``Connection: Upgrade``, ``Upgrade: websocket`` and right
  ``Sec-WebSocket-Accept``; a ``Sec-WebSocket-Protocol`` only if asked for and one of those asked; the same
  rules as its ``NetCore21`` handshake, WebSockets/NetCore21/WebSocketHandle.Managed.cs:205-235, used on .NET
  Core 2.1 and later), and its framing (masked frames; pongs answered to pings only while reading,
  ManagedWebSocket.cs:815-840).
* :func:`dotnet_exception`: which exception a refused handshake becomes and its message
  (WebSocketExceptionHelper.cs:72-96; Common/TrackingContext.cs:134-148).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import ssl
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from hyco.protocol.frames import Frame, FrameParser, Opcode, encode_close, encode_frame, parse_close
from tests.conftest import TIMEOUT

#: ``HybridConnectionConstants.ClientAgent`` (HybridConnectionConstants.cs:158), on a Linux .NET 8 host.
RELAY_USER_AGENT = "azure-relay-dotnet/3.0.1.0 (Unix 6.8.0.0; .NET 8.0.11)"

#: ``WebSocketCloseStatus`` values the bundled client accepts in a Close frame (ManagedWebSocket.cs:844-877):
#: 1000-2999 only these, plus 3000-4999. Anything else makes it fail the connection with 1002.
DOTNET_VALID_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011})

_WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def url_encode(text: str) -> str:
    """``System.Net.WebUtility.UrlEncode``: keeps ASCII letters, digits and ``-_.!*()``, space becomes ``+``,
    everything else ``%XX`` in upper case."""
    out = []
    for char in text:
        if char.isascii() and (char.isalnum() or char in "-_.!*()"):
            out.append(char)
        elif char == " ":
            out.append("+")
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode())
    return "".join(out)


def dotnet_token(host: str, path: str, key_name: str, key: str, *, expiry: int | None = None) -> str:
    """The SAS the SDK signs for ``sb://host[:port]/path`` (60 minutes unless ``expiry`` is given)."""
    audience = url_encode(f"http://{host}/{path.strip('/')}/")
    se = str(expiry if expiry is not None else int(time.time()) + 3600)
    digest = hmac.new(key.encode(), f"{audience}\n{se}".encode(), hashlib.sha256).digest()
    signature = url_encode(base64.b64encode(digest).decode())
    return f"SharedAccessSignature sr={audience}&sig={signature}&se={se}&skn={url_encode(key_name)}"


def tracking_id() -> str:
    """A ``TrackingContext`` id: ``Guid.NewGuid().ToString()`` (Common/TrackingContext.cs:36-55)."""
    return str(uuid.uuid4())


class HandshakeRefused(Exception):
    """A handshake answered with something other than 101: what the bundled client read."""

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]]) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers


@dataclass
class DotnetException:
    """The exception type and message the SDK raises for a refused handshake."""

    type: str
    message: str


def dotnet_exception(refusal: HandshakeRefused, client_tracking_id: str, address: str) -> DotnetException:
    """``WebSocketExceptionHelper.CreateExceptionForStatus`` for ``refusal``.

    The message is the reason phrase, to which ``TrackingContext.EnsureTrackableMessage`` appends the client's
    tracking id and address only when the phrase carries no ``TrackingId`` of its own.
    """
    message = refusal.reason
    if "TrackingId" not in message:
        message = f"{message}{'' if message.endswith('.') else '.'} TrackingId:{client_tracking_id}, "
        message += f"Address:{address}, Timestamp:..."
    kinds = {401: "AuthorizationFailedException", 404: "EndpointNotFoundException"}
    kinds |= {408: "TimeoutException", 504: "TimeoutException"}
    return DotnetException(kinds.get(refusal.status, "RelayException"), message)


@dataclass
class Message:
    """A received message: TEXT, BINARY (payload) or CLOSE (code, reason)."""

    opcode: Opcode
    payload: bytes = b""
    code: int = 0
    reason: str = ""
    frames: int = 1


@dataclass
class DotnetSocket:
    """One WebSocket as the SDK's bundled client opens and speaks it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    subprotocol: str | None
    response_headers: list[tuple[str, str]]
    parser: FrameParser = field(
        default_factory=lambda: FrameParser(max_frame_size=64 * 1024 * 1024, expect_masked=False)
    )
    pending: list[Frame] = field(default_factory=list)
    #: Payloads of the pongs received (the relay's answers to our pings).
    pongs: list[bytes] = field(default_factory=list)

    @classmethod
    async def connect(
        cls,
        url: str,
        headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
        *,
        subprotocols: tuple[str, ...] = (),
        ssl_context: ssl.SSLContext | None = None,
    ) -> DotnetSocket:
        """Open ``url`` (``ws://`` or ``wss://``) with the SDK's request; raises :class:`HandshakeRefused`
        for any answer but 101 and AssertionError for a 101 the bundled client would refuse."""
        parts = urlsplit(url)
        secure = parts.scheme == "wss"
        assert parts.hostname is not None and parts.port is not None, url
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                parts.hostname,
                parts.port,
                ssl=ssl_context if secure else None,
                server_hostname=parts.hostname if secure else None,
            ),
            TIMEOUT,
        )
        key = base64.b64encode(os.urandom(16)).decode()
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: {parts.hostname}:{parts.port}",
            "Connection: Upgrade",
            "Upgrade: websocket",
            "Sec-WebSocket-Version: 13",
            f"Sec-WebSocket-Key: {key}",
            *(f"{name}: {value}" for name, value in headers),
        ]
        if subprotocols:
            lines.append(f"Sec-WebSocket-Protocol: {', '.join(subprotocols)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)).decode("latin-1")
        status_line, *header_lines = head[:-4].split("\r\n")
        version, status, *rest = status_line.split(" ", 2)
        response_headers = [tuple(part.strip() for part in line.split(":", 1)) for line in header_lines]
        assert version == "HTTP/1.1", status_line
        if int(status) != 101:
            writer.close()
            raise HandshakeRefused(int(status), rest[0] if rest else "", response_headers)  # type: ignore[arg-type]
        accept = base64.b64encode(hashlib.sha1((key + _WEBSOCKET_GUID).encode()).digest()).decode()
        required = {"connection": "upgrade", "upgrade": "websocket", "sec-websocket-accept": accept.lower()}
        for name, expected in required.items():
            values = [value for header, value in response_headers if header.lower() == name]
            assert [value.lower() for value in values] == [expected], (name, values)
        chosen = [v for h, v in response_headers if h.lower() == "sec-websocket-protocol" and v.strip()]
        assert len(chosen) <= 1 and all(c.lower() in (p.lower() for p in subprotocols) for c in chosen), (
            chosen
        )
        # The bundled client offers no extension and reads frames as plain RFC 6455.
        assert not [h for h, _ in response_headers if h.lower() == "sec-websocket-extensions"], (
            response_headers
        )
        return cls(reader, writer, chosen[0] if chosen else None, response_headers)  # type: ignore[arg-type]

    # --- writing -----------------------------------------------------------------------------------------

    async def send_frame(self, opcode: Opcode, payload: bytes = b"", *, fin: bool = True) -> None:
        """Send one masked frame."""
        self.writer.write(encode_frame(opcode, payload, fin=fin, mask=os.urandom(4)))
        await self.writer.drain()

    async def send_text(self, text: str) -> None:
        """``SendAsync(..., Text, endOfMessage: true)``: one final frame."""
        await self.send_frame(Opcode.TEXT, text.encode())

    async def send_binary(self, data: bytes) -> None:
        """``SendAsync(..., Binary, endOfMessage: true)``: one final frame."""
        await self.send_frame(Opcode.BINARY, data)

    async def send_streamed(self, chunks: list[bytes]) -> None:
        """A body as ``ResponseStream`` writes it over a rendezvous (HybridHttpConnection.cs:423-465,
        526-527): each write a non-final frame (the first BINARY, then CONTINUATION), then an empty final
        frame."""
        opcode = Opcode.BINARY
        for chunk in chunks:
            await self.send_frame(opcode, chunk, fin=False)
            opcode = Opcode.CONTINUATION
        await self.send_frame(opcode, b"", fin=True)

    async def close_output(self, code: int, reason: str) -> None:
        """``CloseOutputAsync``: send our Close and keep reading."""
        await self.send_frame(Opcode.CLOSE, encode_close(code, reason))

    # --- reading -----------------------------------------------------------------------------------------

    async def frame(self) -> Frame:
        """The next frame (control frames included); raises ConnectionError at end of stream."""
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(256 * 1024), TIMEOUT)
            if not data:
                raise ConnectionError("the relay closed the connection")
            self.pending.extend(self.parser.feed(data))
        return self.pending.pop(0)

    async def receive(self) -> Message:
        """The next message as ``ReceiveAsync`` delivers it: pings are answered, pongs recorded, a Close is
        returned with its code (1000 when it carries none, ManagedWebSocket.cs:761-808)."""
        opcode, payload, frames = None, bytearray(), 0
        while True:
            frame = await self.frame()
            if frame.opcode is Opcode.PING:
                await self.send_frame(Opcode.PONG, frame.payload)
                continue
            if frame.opcode is Opcode.PONG:
                self.pongs.append(frame.payload)
                continue
            if frame.opcode is Opcode.CLOSE:
                code, reason = parse_close(frame.payload) if frame.payload else (1000, "")
                return Message(Opcode.CLOSE, code=code, reason=reason)
            opcode = opcode or frame.opcode
            payload += frame.payload
            frames += 1
            if frame.fin:
                return Message(opcode, bytes(payload), frames=frames)

    def abort(self) -> None:
        """``WebSocket.Abort``: drop the connection."""
        self.writer.close()
