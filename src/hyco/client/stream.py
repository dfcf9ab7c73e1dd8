"""One relayed connection, seen as a byte stream and as a sequence of WebSocket messages (protocol.md 3.5).

Theory of operation:

* A background *reader* task is the only caller of ``ws.receive()``. It puts data messages into a small
  bounded queue (so a slow consumer pushes back on the relay through TCP), answers pings (aiohttp's autoping),
  and ends with one terminal item: a clean end (peer sent Close 1000/1001) or a break (any other close code,
  a reset, a protocol error).
* Writes go straight to the socket. The peer closing its side does **not** stop us from writing: the relay
  keeps forwarding our direction until we close too (half-close, protocol.md 3.5).
* ``shutdown()`` is .NET's ``Shutdown()``: send Close ``1000 "Shutdown"`` and keep reading. ``close()`` sends
  Close 1000 (if not already sent), waits briefly for the peer's Close, and releases the socket.
* Errors: using a direction you closed raises :class:`~hyco.exceptions.StreamClosed`; a connection the peer or
  the network broke raises :class:`~hyco.exceptions.StreamBroken`; a read or write that takes longer than its
  timeout raises :class:`~hyco.exceptions.RelayTimeout` (the stream stays usable after a read timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import TracebackType

import aiohttp

from hyco.client._engine import drop, send_close_frame
from hyco.exceptions import RelayTimeout, StreamBroken, StreamClosed
from hyco.protocol.messages import RemoteEndpoint

__all__ = ["HybridConnectionStream"]

logger = logging.getLogger("hyco.client.stream")

#: Close codes that end a stream cleanly. protocol.md 3.5: a sender sees 1000 when the listener closed (1001
#: means the hybrid connection went away); a listener sees 1001 when the sender closed.
SENDER_CLEAN_CLOSE_CODES = frozenset({1000})
LISTENER_CLEAN_CLOSE_CODES = frozenset({1000, 1001})
#: Messages buffered ahead of the reader before the socket is left unread (backpressure).
_QUEUE_SIZE = 16
DEFAULT_CLOSE_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class _End:
    """Terminal queue item: the peer closed cleanly (``error`` None) or the stream broke."""

    error: StreamBroken | None


class HybridConnectionStream:
    """A relayed connection between a sender and a listener.

    Byte-stream access: :meth:`read`, :meth:`readexactly`, :meth:`write`, :meth:`drain`, :meth:`shutdown`,
    :meth:`close`. Message access: :meth:`send_text`, :meth:`send_bytes`, :meth:`receive` and ``async for``.
    Each ``write`` sends one binary message (as .NET ``WriteMode.Binary`` does); ``read`` returns payload
    bytes regardless of message boundaries (text messages as UTF-8).

    Attributes:
        tracking_id: the connection's tracking id (``sb-hc-id``), for logs and support requests.
        subprotocol: the negotiated ``Sec-WebSocket-Protocol``, or None.
        headers: on a listener, the sender's upgrade headers (``connectHeaders``); on a sender, the relay's
            handshake response headers.
        remote_endpoint: on a listener, the sender's address and port when the relay told us.
        read_timeout: seconds a read may wait for data (None: forever).
        write_timeout: seconds a write may take (None: forever).
    """

    def __init__(self) -> None:
        raise TypeError(
            "HybridConnectionStream objects come from HybridConnectionClient.connect() and from listeners"
        )

    @classmethod
    def _from_websocket(
        cls,
        ws: aiohttp.ClientWebSocketResponse,
        session: aiohttp.ClientSession | None,
        *,
        tracking_id: str,
        headers: Mapping[str, str] | None = None,
        remote_endpoint: RemoteEndpoint | None = None,
        read_timeout: float | None = None,
        write_timeout: float | None = None,
        keep_alive_interval: float | None = None,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        clean_close_codes: frozenset[int] = SENDER_CLEAN_CLOSE_CODES,
    ) -> HybridConnectionStream:
        """The sender's and the listener's private factory: wrap an open WebSocket (and close ``session``
        with the stream). Runs in the event loop the stream will live in."""
        stream = cls.__new__(cls)
        stream._setup(
            ws,
            session,
            tracking_id=tracking_id,
            headers=headers,
            remote_endpoint=remote_endpoint,
            read_timeout=read_timeout,
            write_timeout=write_timeout,
            keep_alive_interval=keep_alive_interval,
            close_timeout=close_timeout,
            clean_close_codes=clean_close_codes,
        )
        return stream

    def _setup(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        session: aiohttp.ClientSession | None,
        *,
        tracking_id: str,
        headers: Mapping[str, str] | None,
        remote_endpoint: RemoteEndpoint | None,
        read_timeout: float | None,
        write_timeout: float | None,
        keep_alive_interval: float | None,
        close_timeout: float,
        clean_close_codes: frozenset[int],
    ) -> None:
        self._ws = ws
        self._clean_codes = clean_close_codes
        self._session = session
        self.tracking_id = tracking_id
        self.subprotocol: str | None = ws.protocol
        self.headers: Mapping[str, str] = dict(headers or {})
        self.remote_endpoint = remote_endpoint
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self._close_timeout = close_timeout
        self._queue: asyncio.Queue[str | bytes | _End] = asyncio.Queue(_QUEUE_SIZE)
        self._buffer = bytearray()
        self._end: _End | None = None  # terminal item, once the reader delivered it to us
        self._peer_closed = asyncio.Event()  # set by the reader when the peer's Close (or a break) arrived
        self._broken: StreamBroken | None = None
        self._write_closed = False  # we sent Close (shutdown or close)
        self._closed = False  # close() called: both directions unusable
        self._write_lock = asyncio.Lock()
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())
        self._pinger: asyncio.Task[None] | None = None
        if keep_alive_interval:
            self._pinger = asyncio.get_running_loop().create_task(self._ping_loop(keep_alive_interval))

    def __repr__(self) -> str:
        state = "closed" if self._closed else "shut down" if self._write_closed else "open"
        return f"<HybridConnectionStream {self.tracking_id} {state}>"

    # ------------------------------------------------------------------ reading side

    async def _read_loop(self) -> None:
        end: _End
        try:
            while True:
                msg = await self._ws.receive()
                if msg.type is aiohttp.WSMsgType.BINARY or msg.type is aiohttp.WSMsgType.TEXT:
                    await self._queue.put(msg.data)
                    continue
                end = self._end_from(msg)
                break
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # translate anything aiohttp throws into one terminal item
            broken = StreamBroken(f"the connection broke: {exc}", close_code=1006)
            broken.__cause__ = exc
            end = _End(broken)
        if end.error is not None:
            self._broken = end.error
        self._peer_closed.set()
        await self._queue.put(end)

    def _end_from(self, msg: aiohttp.WSMessage) -> _End:
        if msg.type is aiohttp.WSMsgType.CLOSE:
            code = int(msg.data) if msg.data is not None else 1005
            if code in self._clean_codes:
                return _End(None)
            reason = f" ({msg.extra})" if msg.extra else ""
            return _End(StreamBroken(f"the peer closed the stream with code {code}{reason}", close_code=code))
        if msg.type is aiohttp.WSMsgType.CLOSING and self._closed:
            return _End(None)  # our own close() interrupted the reader
        exc = self._ws.exception() if msg.type is not aiohttp.WSMsgType.ERROR else msg.data
        detail = f": {exc}" if exc else ""
        broken = StreamBroken(f"the connection was lost{detail}", close_code=1006)
        if isinstance(exc, BaseException):
            broken.__cause__ = exc
        return _End(broken)

    async def _next_item(self, limit: float | None) -> str | bytes | _End:
        if self._end is not None:
            return self._end
        try:
            if limit is None:  # the common case: no timeout context per read
                item = await self._queue.get()
            else:
                async with asyncio.timeout(limit):
                    item = await self._queue.get()
        except TimeoutError:
            raise RelayTimeout(f"no data arrived within {limit} s (read timeout)") from None
        if isinstance(item, _End):
            self._end = item
        return item

    def _check_readable(self) -> None:
        if self._closed:
            raise StreamClosed("the stream is closed; it cannot be read any more")

    async def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes (``-1``: whatever is available, at least one message's worth).

        Returns:
            The bytes, or ``b""`` once the peer has closed its side and everything was read.

        Raises:
            StreamClosed: you called :meth:`close`.
            StreamBroken: the peer or the network broke the stream (after all data before it was read).
            RelayTimeout: nothing arrived within ``read_timeout``.
        """
        self._check_readable()
        if not self._buffer:
            item = await self._next_item(self.read_timeout)
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return b""
            data = item.encode() if isinstance(item, str) else item
            if n < 0 or n >= len(data):
                return data  # a whole message: hand it over without copying
            self._buffer += data
        if n < 0 or n >= len(self._buffer):
            data = bytes(self._buffer)
            self._buffer.clear()
        else:
            data = bytes(self._buffer[:n])
            del self._buffer[:n]
        return data

    async def readexactly(self, n: int) -> bytes:
        """Read exactly ``n`` bytes.

        Raises:
            asyncio.IncompleteReadError: the peer closed before ``n`` bytes arrived (``.partial`` holds them).
            StreamClosed, StreamBroken, RelayTimeout: as for :meth:`read`.
        """
        chunks = bytearray()
        while len(chunks) < n:
            data = await self.read(n - len(chunks))
            if not data:
                raise asyncio.IncompleteReadError(bytes(chunks), n)
            chunks += data
        return bytes(chunks)

    async def receive(self) -> str | bytes | None:
        """The next whole message: ``str`` for text, ``bytes`` for binary; None once the peer closed.

        Bytes left over from a partial :meth:`read` are returned first, as one ``bytes`` value.

        Raises:
            StreamClosed, StreamBroken, RelayTimeout: as for :meth:`read`.
        """
        self._check_readable()
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            return data
        item = await self._next_item(self.read_timeout)
        if isinstance(item, _End):
            if item.error is not None:
                raise item.error
            return None
        return item

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._iter_messages()

    async def _iter_messages(self) -> AsyncIterator[str | bytes]:
        while (message := await self.receive()) is not None:
            yield message

    @property
    def at_eof(self) -> bool:
        """Whether the peer closed its side and every byte it sent was read."""
        return self._end is not None and not self._buffer

    # ------------------------------------------------------------------ writing side

    async def _send(self, data: str | bytes) -> None:
        if self._closed or self._write_closed:
            raise StreamClosed("the stream's sending side is closed (shutdown() or close() was called)")
        if self._broken is not None:
            raise self._broken
        async with self._write_lock:
            try:
                if self.write_timeout is None:  # the common case: no timeout context per write
                    await self._send_now(data)
                else:
                    async with asyncio.timeout(self.write_timeout):
                        await self._send_now(data)
            except TimeoutError:
                # A frame may be half written: the stream cannot be trusted any more.
                self._broken = StreamBroken(
                    f"a write did not finish within {self.write_timeout:g} s", close_code=1006
                )
                await self._abort()
                raise RelayTimeout(f"a write did not finish within {self.write_timeout:g} s") from None
            except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
                broken = self._broken or StreamBroken(f"the connection broke: {exc}", close_code=1006)
                raise broken from exc

    async def _send_now(self, data: str | bytes) -> None:
        if isinstance(data, str):
            await self._ws.send_str(data)
        else:
            await self._ws.send_bytes(data)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as one binary message.

        Raises:
            StreamClosed: you called :meth:`shutdown` or :meth:`close`.
            StreamBroken: the connection broke.
            RelayTimeout: the write did not finish within ``write_timeout`` (the stream is then broken).
        """
        await self._send(data if isinstance(data, bytes) else bytes(data))

    async def drain(self) -> None:
        """Wait until written data has been handed to the network (writes already wait; kept for
        ``asyncio.StreamWriter``-shaped code).

        Raises:
            StreamBroken: the connection broke.
        """
        if self._broken is not None and not self._closed:
            raise self._broken

    async def send_bytes(self, data: bytes | bytearray | memoryview) -> None:
        """Send one binary message. Raises as :meth:`write`."""
        await self._send(bytes(data))

    async def send_text(self, text: str) -> None:
        """Send one text message. Raises as :meth:`write`."""
        await self._send(text)

    async def shutdown(self) -> None:
        """Half-close: send Close ``1000 "Shutdown"`` and keep reading until the peer closes too.

        Idempotent. After it, writes raise :class:`StreamClosed`; reads go on.
        """
        if self._write_closed or self._closed:
            return
        self._write_closed = True
        if self._broken is not None:
            return
        async with self._write_lock:
            # aiohttp has no half-close: write the Close frame without entering its closing state, so the
            # reader keeps receiving (design.md, "Known gaps of aiohttp").
            with contextlib.suppress(Exception):
                await send_close_frame(self._ws, 1000, "Shutdown")

    async def close(self) -> None:
        """Close both directions: send Close 1000 (unless already sent), wait briefly for the peer's Close,
        release the connection. Idempotent; never raises for a connection that is already broken."""
        if self._closed:
            return
        self._closed = True
        if self._pinger is not None:
            self._pinger.cancel()
        try:
            if self._write_closed and self._broken is None:
                # Close already sent by shutdown(): wait for the peer's Close, then drop the socket.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._close_timeout):
                        await self._peer_closed.wait()
                await self._abort()
            elif self._peer_closed.is_set() or self._broken is not None:
                self._write_closed = True
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self._close_timeout):
                        await self._ws.close(code=1000, message=b"Normal Closure")
                await self._abort()
            else:
                self._write_closed = True
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self._close_timeout):
                        await self._ws.close(code=1000, message=b"Normal Closure")
        finally:
            await self._release()

    async def abort(self, code: int | None = 1011, reason: str = "aborted") -> None:
        """Close at once with an error ``code``, without waiting for the peer (like a TCP reset).

        The peer sees a Close with ``code`` (when the socket can still carry one). Use it when the other end
        of a pipe failed; :meth:`close` is the orderly way. With ``code=None`` no Close is sent at all: the
        TCP connection is dropped as if this process had died, and the relay tells the peer with 1011 (how
        tests make a peer vanish). Idempotent; never raises.
        """
        if self._closed:
            return
        self._closed = True
        self._write_closed = True
        if self._pinger is not None:
            self._pinger.cancel()
        if code is not None and self._broken is None and not self._peer_closed.is_set():
            with contextlib.suppress(Exception):
                await send_close_frame(self._ws, code, reason)
        await self._release()

    async def _abort(self) -> None:
        """Drop the TCP connection without further WebSocket frames."""
        self._reader.cancel()
        # A read waiting on the queue must wake up (end of stream) rather than wait forever.
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(_End(None))
        with contextlib.suppress(Exception):
            drop(self._ws)

    async def _release(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        if self._pinger is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pinger
        if not self._ws.closed:
            await self._abort()
        if self._session is not None:
            await self._session.close()

    async def _ping_loop(self, interval: float) -> None:
        # Keep idle relayed connections alive (Azure cuts ~4 min idle, protocol.md 2.7). Like .NET, we send
        # pings and do not require pongs: a slow reader must not be mistaken for a dead peer.
        while True:
            await asyncio.sleep(interval)
            if self._closed or self._broken is not None:
                return
            async with self._write_lock:
                with contextlib.suppress(Exception):
                    await self._ws.ping()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    async def __aenter__(self) -> HybridConnectionStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
