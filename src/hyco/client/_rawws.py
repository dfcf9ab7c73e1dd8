"""A client WebSocket that streams frames instead of whole messages (design.md, "Fragments").

aiohttp's client reassembles every incoming message and marks every frame it writes final, so it cannot carry
a relayed HTTP body of any size as **one** binary message of many frames with bounded memory (protocol.md 2.2,
4.3). The SDK's request rendezvous sockets use this small client instead:

* the connection is a plain asyncio stream (TLS through ``ssl``; an HTTP proxy through ``CONNECT``), the
  upgrade is written and checked by hand (RFC 6455 4.1), and frames go through the sans-I/O
  :mod:`hyco.protocol.frames` codec, masked with aiohttp's C routine;
* reads are *pulled*: bytes are read from the socket only when the caller asks for the next frame, so a slow
  consumer pauses the sender through TCP and at most one frame (``max_frame_size``) is buffered here;
* writes wait for the transport to drain after every frame, so a slow peer pauses the producer.

The seam is deliberately narrow (:meth:`RawWebSocket.connect`, ``receive_text``/``receive_binary_stream``,
``send_text``/``send_binary``/``send_binary_stream``, ``close``/``abort``) so a faster engine can replace it.
Every ``OSError``, TLS and handshake failure is translated into a :mod:`hyco.exceptions` error here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import ssl as ssl_module
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from urllib.parse import urlsplit

from hyco._wsmask import apply_mask
from hyco.client._net import NetOptions, error_for_status
from hyco.exceptions import ConnectionLost, RelayTimeout, RemoteProtocolError
from hyco.protocol.frames import (
    Frame,
    FrameParser,
    Opcode,
    binary_payloads,
    encode_close,
    encode_frame,
    parse_close,
    read_text,
)

__all__ = ["RawWebSocket"]

#: Payload bytes per frame when streaming a body (the relay and hyco-https use 64 KiB too).
WRITE_CHUNK = 64 * 1024
#: Bytes asked of the socket per read.
READ_CHUNK = 256 * 1024
#: Largest frame accepted from the relay (it sends 64 KiB frames).
DEFAULT_MAX_FRAME = 4 * 1024 * 1024
#: RFC 6455 1.3: the GUID the server appends to the key before hashing.
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEAD = 64 * 1024


def _ssl_context(setting: ssl_module.SSLContext | bool) -> ssl_module.SSLContext:
    if isinstance(setting, ssl_module.SSLContext):
        return setting
    context = ssl_module.create_default_context()
    if setting is False:  # tests only: no verification, as aiohttp's ssl=False
        context.check_hostname = False
        context.verify_mode = ssl_module.CERT_NONE
    return context


def _parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise RemoteProtocolError(f"not an HTTP response: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers


class RawWebSocket:
    """One client WebSocket with frame-level reads and streamed, masked writes.

    Create it with :meth:`connect`. Reading methods must not be called concurrently with each other; writing
    methods may be called from several tasks (each message is written whole, under a lock).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = FrameParser(max_frame_size=max_frame_size, expect_masked=False)
        self._frames: list[Frame] = []
        self._write_lock = asyncio.Lock()
        self.close_sent = False
        #: ``(code, reason)`` of the peer's Close, once received.
        self.close_received: tuple[int, str] | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        options: NetOptions,
        what: str,
        timeout: float | None,
        headers: Mapping[str, str] | None = None,
    ) -> RawWebSocket:
        """Dial ``url`` (``ws://`` or ``wss://``) and complete the WebSocket upgrade.

        Args:
            url: the address to dial, query included.
            options: TLS and proxy settings (the SDK's ``ssl=``/``ca_file=``/``proxy=``).
            what: names the operation in error messages.
            timeout: seconds for TCP + proxy + TLS + upgrade (None: no limit).
            headers: extra request headers.

        Raises:
            RelayError: the server answered with a status other than 101 (subclass by status).
            RelayTimeout: no upgrade within ``timeout``.
            ConnectionLost: the server could not be reached or broke the handshake.
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("ws", "wss") or not parts.hostname:
            raise ConnectionLost(f"{what} failed: not a ws:// or wss:// URL")
        tls = scheme == "wss"
        host = parts.hostname
        port = parts.port or (443 if tls else 80)
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await cls._open(host, port, tls, options)
                key = base64.b64encode(os.urandom(16)).decode()
                target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                lines = [
                    f"GET {target} HTTP/1.1",
                    f"Host: {parts.netloc.rpartition('@')[2]}",
                    "Upgrade: websocket",
                    "Connection: Upgrade",
                    f"Sec-WebSocket-Key: {key}",
                    "Sec-WebSocket-Version: 13",
                    *(f"{name}: {value}" for name, value in (headers or {}).items()),
                ]
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError as exc:
            if writer is not None:
                writer.transport.abort()
            raise RelayTimeout(f"{what} timed out after {timeout} s", http_status=408) from exc
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, RemoteProtocolError) as exc:
            if writer is not None:
                writer.transport.abort()
            raise ConnectionLost(f"{what} failed: could not reach the relay ({exc})") from exc
        except BaseException:  # cancelled (the listener is closing): never leave the socket behind
            if writer is not None:
                writer.transport.abort()
            raise
        try:
            status, reason, response_headers = _parse_head(head)
        except RemoteProtocolError as exc:
            writer.transport.abort()
            raise ConnectionLost(f"{what} failed: {exc}") from exc
        if status != 101:
            writer.transport.abort()
            raise error_for_status(status, reason, what)
        expected = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()  # noqa: S324
        if response_headers.get("sec-websocket-accept") != expected:
            writer.transport.abort()
            raise ConnectionLost(f"{what} failed: bad WebSocket handshake (Sec-WebSocket-Accept mismatch)")
        return cls(reader, writer)

    @staticmethod
    async def _open(
        host: str, port: int, tls: bool, options: NetOptions
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        context = _ssl_context(options.ssl) if tls else None
        if options.proxy is None:
            return await asyncio.open_connection(
                host, port, ssl=context, server_hostname=host if tls else None, limit=_MAX_HEAD
            )
        # An HTTP proxy: tunnel with CONNECT for ws and wss alike, then TLS inside the tunnel.
        proxy = urlsplit(options.proxy)
        if not proxy.hostname:
            raise OSError(f"bad proxy URL {options.proxy!r}")
        reader, writer = await asyncio.open_connection(proxy.hostname, proxy.port or 80, limit=_MAX_HEAD)
        try:
            authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
            lines += [f"{name}: {value}" for name, value in options.proxy_headers.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            await writer.drain()
            status, reason, _ = _parse_head(await reader.readuntil(b"\r\n\r\n"))
            if status != 200:
                raise OSError(f"the proxy refused the tunnel: {status} {reason}")
            if context is not None:
                await writer.start_tls(context, server_hostname=host)
        except BaseException:
            writer.transport.abort()  # the proxy connection must not outlive a failed tunnel
            raise
        return reader, writer

    # --- reading -------------------------------------------------------------------------------------

    async def receive_frame(self) -> Frame:
        """The next data frame; pings are answered and pongs skipped.

        Raises:
            ConnectionLost: the peer sent a Close (``close_received`` is set) or the connection is gone.
            RemoteProtocolError: the peer broke the framing rules.
        """
        while True:
            while not self._frames:
                try:
                    data = await self._reader.read(READ_CHUNK)
                except OSError as exc:
                    raise ConnectionLost(f"the rendezvous connection broke ({exc})") from exc
                if not data:
                    raise ConnectionLost("the rendezvous connection was closed without a Close frame")
                self._frames.extend(self._parser.feed(data))
            frame = self._frames.pop(0)
            if frame.opcode is Opcode.PING:
                # A control frame may sit between the fragments of a message (RFC 6455 5.4).
                with contextlib.suppress(ConnectionLost):
                    await self._write_frame(Opcode.PONG, frame.payload)
                continue
            if frame.opcode is Opcode.PONG:
                continue
            if frame.opcode is Opcode.CLOSE:
                self.close_received = parse_close(frame.payload)
                raise ConnectionLost(f"the relay closed the rendezvous ({self.close_received[0]})")
            return frame

    async def receive_text(self) -> str:
        """Read one whole text message (a small JSON command); raises as :func:`read_text`."""
        return await read_text(self.receive_frame)

    def receive_binary_stream(self) -> AsyncIterator[bytes]:
        """The payloads of the next binary message's frames as they arrive; see :func:`binary_payloads`."""
        return binary_payloads(self.receive_frame)

    # --- writing -------------------------------------------------------------------------------------

    async def _write_frame(self, opcode: Opcode, payload: bytes, fin: bool = True) -> None:
        if self._writer.transport.is_closing():
            raise ConnectionLost("the rendezvous connection is closed")
        self._writer.write(encode_frame(opcode, payload, fin=fin, mask=os.urandom(4), masker=apply_mask))
        try:
            await self._writer.drain()
        except OSError as exc:
            raise ConnectionLost(f"the rendezvous connection broke ({exc})") from exc

    async def send_text(self, text: str) -> None:
        """Send one text message.

        Raises:
            ConnectionLost: the connection is closed or broke.
        """
        async with self._write_lock:
            await self._write_frame(Opcode.TEXT, text.encode())

    async def send_binary(self, data: bytes) -> None:
        """Send one binary message in frames of at most 64 KiB.

        Raises:
            ConnectionLost: the connection is closed or broke.
        """

        async def once() -> AsyncIterator[bytes]:
            yield data

        await self.send_binary_stream(once())

    async def send_binary_stream(self, chunks: AsyncIterable[bytes]) -> int:
        """Send one binary message made of ``chunks`` as they come, as .NET does (protocol.md 4.3).

        The first frame is BINARY without FIN, continuations follow, and an empty final frame with FIN ends
        the message. Chunks over 64 KiB are split.

        Returns:
            The number of payload bytes sent.

        Raises:
            ConnectionLost: the connection is closed or broke.
        """
        total = 0
        async with self._write_lock:
            opcode = Opcode.BINARY
            async for chunk in chunks:
                view = memoryview(chunk)
                for start in range(0, len(view), WRITE_CHUNK):
                    piece = bytes(view[start : start + WRITE_CHUNK])
                    await self._write_frame(opcode, piece, fin=False)
                    opcode = Opcode.CONTINUATION
                    total += len(piece)
            await self._write_frame(opcode, b"", fin=True)
        return total

    # --- closing -------------------------------------------------------------------------------------

    async def close(self, code: int = 1000, reason: str = "", *, timeout: float = 10.0) -> None:
        """Send a Close (once), wait up to ``timeout`` s for the peer's Close or EOF, then drop the socket.

        Frames still arriving are read and discarded meanwhile, so closing never resets the connection while
        the peer is still writing. Never raises.
        """
        if not self.close_sent:
            self.close_sent = True
            with contextlib.suppress(ConnectionLost):
                await self._write_frame(Opcode.CLOSE, encode_close(code, reason))
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                await self.wait_closed_by_peer()
        self.abort()

    async def wait_closed_by_peer(self) -> None:
        """Read and discard frames until the peer closes (Close frame or EOF). Never raises ConnectionLost."""
        with contextlib.suppress(ConnectionLost, RemoteProtocolError):
            while self.close_received is None:
                await self.receive_frame()

    def abort(self) -> None:
        """Drop the connection now."""
        transport = self._writer.transport
        if not transport.is_closing():
            transport.close()

    @property
    def closed(self) -> bool:
        """Whether the connection is closed (or closing) on this side."""
        return self._writer.transport.is_closing()
