"""One relayed connection, seen as a byte stream and as a sequence of WebSocket messages (protocol.md 3.5).

Theory of operation:

* Once the upgrade is done, the connection is a lean asyncio protocol (:mod:`hyco.client._wsconn`); the
  stream is its frame sink. Frames are reassembled into messages in the read callback and kept in a
  buffer; past ``HIGH_WATER`` bytes reading pauses until the consumer has taken them down to ``LOW_WATER``
  (so a slow consumer pushes back on the relay through TCP). Pings are answered by the connection. The end
  is one terminal item after the data: a clean end (peer sent Close 1000/1001) or a break (any other close
  code, a reset, a protocol error).
* Writes go straight to the socket, one masked frame per message, and wait only while the send buffer is
  full. The peer closing its side does **not** stop us from writing: the relay keeps forwarding our
  direction until we close too (half-close, protocol.md 3.5).
* ``shutdown()`` is .NET's ``Shutdown()``: send Close ``1000 "Shutdown"`` and keep reading. ``close()`` sends
  Close 1000 (if not already sent), waits briefly for the peer's Close, and releases the socket.
* :meth:`HybridConnectionStream.splice` links the connection to a local transport instead (what
  ``hyco forward`` does): payloads then move between the two sockets in their callbacks, with no task.
* Errors: using a direction you closed raises :class:`~hyco.exceptions.StreamClosed`; a connection the peer or
  the network broke raises :class:`~hyco.exceptions.StreamBroken`; a read or write that takes longer than its
  timeout raises :class:`~hyco.exceptions.RelayTimeout` (the stream stays usable after a read timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import TracebackType

import aiohttp

from hyco.client._engine import TakenOverWebSocket
from hyco.client._wsconn import WsConnection
from hyco.client.splice import Spliced, splice
from hyco.exceptions import ConnectionLost, RelayTimeout, StreamBroken, StreamClosed
from hyco.protocol.messages import RemoteEndpoint

__all__ = ["HybridConnectionStream"]

logger = logging.getLogger("hyco.client.stream")

#: Close codes that end a stream cleanly. protocol.md 3.5: a sender sees 1000 when the listener closed (1001
#: means the hybrid connection went away); a listener sees 1001 when the sender closed.
SENDER_CLEAN_CLOSE_CODES = frozenset({1000})
LISTENER_CLEAN_CLOSE_CODES = frozenset({1000, 1001})
#: Bytes of received messages buffered ahead of the reader before the socket is left unread (backpressure),
#: and the level they must fall to before reading resumes.
HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024
DEFAULT_CLOSE_TIMEOUT = 10.0
#: Largest message :meth:`HybridConnectionStream.splice` sends (hyco forward's default ``chunk_size``).
DEFAULT_SPLICE_MESSAGE = 64 * 1024
_INVALID_TEXT = 1007


@dataclass(frozen=True, slots=True)
class _End:
    """Terminal item: the peer closed cleanly (``error`` None) or the stream broke."""

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
        """The sender's and the listener's private factory: wrap an upgraded WebSocket whose connection was
        taken over by the lean data path (and close ``session``, an ``aiohttp.ClientSession``, with the
        stream). Runs in the event loop the stream will live in."""
        assert isinstance(ws, TakenOverWebSocket), "open_websocket(..., take_over=True) makes relayed streams"
        stream = cls.__new__(cls)
        stream._ws = ws
        stream._session = session
        stream._conn = ws.connection
        stream._clean_codes = clean_close_codes
        stream.tracking_id = tracking_id
        stream.subprotocol = ws.protocol
        stream.headers = dict(headers or {})
        stream.remote_endpoint = remote_endpoint
        stream.read_timeout = read_timeout
        stream.write_timeout = write_timeout
        stream._close_timeout = close_timeout
        stream._messages = deque()
        stream._buffered = 0  # bytes in _messages
        stream._reading_paused = False
        stream._partial = None  # the fragments of a message still arriving
        stream._buffer = bytearray()
        stream._terminal = None  # the end, once it happened (delivered after the buffered messages)
        stream._end = None  # the end, once a reader reached it
        stream._waiter = None
        stream._peer_closed = asyncio.Event()  # the peer's Close (or a break) arrived
        stream._broken = None
        stream._write_closed = False  # we sent Close (shutdown or close)
        stream._closed = False  # close() called: both directions unusable
        stream._spliced = False
        stream._pinger = None
        if keep_alive_interval:
            stream._pinger = asyncio.get_running_loop().create_task(stream._ping_loop(keep_alive_interval))
        stream._conn.attach(stream)
        return stream

    _ws: TakenOverWebSocket
    _session: aiohttp.ClientSession | None
    _conn: WsConnection
    _clean_codes: frozenset[int]
    tracking_id: str
    subprotocol: str | None
    headers: Mapping[str, str]
    remote_endpoint: RemoteEndpoint | None
    read_timeout: float | None
    write_timeout: float | None
    _close_timeout: float
    _messages: deque[str | bytes]
    _buffered: int
    _reading_paused: bool
    _partial: bytearray | None
    _buffer: bytearray
    _terminal: _End | None
    _end: _End | None
    _waiter: asyncio.Future[None] | None
    _peer_closed: asyncio.Event
    _broken: StreamBroken | None
    _write_closed: bool
    _closed: bool
    _spliced: bool
    _pinger: asyncio.Task[None] | None

    def __repr__(self) -> str:
        state = "closed" if self._closed else "shut down" if self._write_closed else "open"
        return f"<HybridConnectionStream {self.tracking_id} {state}>"

    # ------------------------------------------------------------------ the connection's callbacks

    def frame(self, payload: bytes | bytearray | memoryview, text: bool, fin: bool) -> None:
        """A data frame arrived (FrameSink): complete a message and buffer it for the reader."""
        if self._partial is not None or not fin:
            if self._partial is None:
                self._partial = bytearray()
            self._partial += payload
            if not fin:
                return
            data, self._partial = bytes(self._partial), None
        else:
            data = bytes(payload)
        message: str | bytes = data
        if text:
            try:
                message = data.decode()
            except UnicodeDecodeError:
                self._conn.send_close(_INVALID_TEXT, "Invalid UTF-8 text message")
                self._conn.close()
                self._finish(StreamBroken("the peer sent a text message that is not UTF-8", close_code=1007))
                return
        self._messages.append(message)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            self._conn.pause_reading()
        self._wake_reader()

    def closed_by_peer(self, code: int, reason: str) -> None:
        """The peer's Close arrived (FrameSink)."""
        if code in self._clean_codes:
            self._finish(None)
            return
        detail = f" ({reason})" if reason else ""
        self._finish(StreamBroken(f"the peer closed the stream with code {code}{detail}", close_code=code))

    def lost(self, error: BaseException | None) -> None:
        """The connection is gone (FrameSink)."""
        if self._terminal is not None:
            return
        if self._closed:
            self._finish(None)  # our own close() ended it
            return
        detail = f": {error}" if error else ""
        broken = StreamBroken(f"the connection was lost{detail}", close_code=1006)
        broken.__cause__ = error
        self._finish(broken)

    def flush(self) -> None:
        """Messages are buffered as they complete (FrameSink)."""

    def send_paused(self) -> None:
        """Writers wait in :meth:`WsConnection.wait_writable` (FrameSink)."""

    def send_resumed(self) -> None:
        """See :meth:`send_paused` (FrameSink)."""

    def _finish(self, error: StreamBroken | None) -> None:
        if self._terminal is not None:
            return
        self._terminal = _End(error)
        if error is not None:
            self._broken = error
        self._peer_closed.set()
        self._wake_reader()

    def _wake_reader(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------------ reading side

    async def _next_item(self, limit: float | None) -> str | bytes | _End:
        while not self._messages:
            if self._end is not None:
                return self._end
            if self._terminal is not None:
                self._end = self._terminal
                return self._end
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                if limit is None:  # the common case: no timeout context per read
                    await self._waiter
                else:
                    async with asyncio.timeout(limit):
                        await self._waiter
            except TimeoutError:
                raise RelayTimeout(f"no data arrived within {limit} s (read timeout)") from None
        item = self._messages.popleft()
        self._buffered -= len(item)
        if self._reading_paused and self._buffered <= LOW_WATER:
            self._reading_paused = False
            self._conn.resume_reading()
        return item

    def _check_readable(self) -> None:
        if self._closed:
            raise StreamClosed("the stream is closed; it cannot be read any more")
        if self._spliced:
            raise StreamClosed("the stream is spliced to a local socket; it cannot be read directly")

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

    async def _send(self, data: str | bytes | bytearray | memoryview) -> None:
        if self._closed or self._write_closed:
            raise StreamClosed("the stream's sending side is closed (shutdown() or close() was called)")
        if self._spliced:
            raise StreamClosed("the stream is spliced to a local socket; it cannot be written directly")
        if self._broken is not None:
            raise self._broken
        conn = self._conn
        try:
            if isinstance(data, str):
                conn.send(data.encode(), text=True)
            else:
                conn.send(data)
        except ConnectionLost as exc:
            raise self._broken or StreamBroken(f"the connection broke: {exc}", close_code=1006) from exc
        if not conn.write_paused:
            return
        try:
            if self.write_timeout is None:  # the common case: no timeout context per write
                await conn.wait_writable()
            else:
                async with asyncio.timeout(self.write_timeout):
                    await conn.wait_writable()
        except TimeoutError:
            # The frame is still queued: the stream cannot be trusted any more.
            self._broken = StreamBroken(
                f"a write did not finish within {self.write_timeout:g} s", close_code=1006
            )
            conn.abort()
            raise RelayTimeout(f"a write did not finish within {self.write_timeout:g} s") from None
        if conn.lost and self._terminal is not None and self._terminal.error is not None:
            raise self._terminal.error

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as one binary message.

        Raises:
            StreamClosed: you called :meth:`shutdown` or :meth:`close`.
            StreamBroken: the connection broke.
            RelayTimeout: the write did not finish within ``write_timeout`` (the stream is then broken).
        """
        await self._send(data)

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
        await self._send(data)

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
        if self._broken is None:
            self._conn.send_close(1000, "Shutdown")

    async def close(self) -> None:
        """Close both directions: send Close 1000 (unless already sent), wait briefly for the peer's Close,
        release the connection. Idempotent; never raises for a connection that is already broken."""
        if self._closed:
            return
        self._closed = True
        self._stop_pinger()
        try:
            if not self._write_closed:
                self._write_closed = True
                if self._broken is None:
                    self._conn.send_close(1000, "Normal Closure")
            if self._broken is None and not self._peer_closed.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._close_timeout):
                        await self._peer_closed.wait()
        finally:
            await self._release(drop=False)

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
        self._stop_pinger()
        if code is not None and self._broken is None and not self._peer_closed.is_set():
            self._conn.send_close(code, reason)
        await self._release(drop=code is None)

    async def _release(self, *, drop: bool) -> None:
        if drop:
            self._conn.abort()
        else:
            self._conn.close()
        self._finish(None)  # a read still waiting ends
        if self._pinger is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pinger
        await self._release_session()

    async def _release_session(self) -> None:
        self._ws.release()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _stop_pinger(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()

    async def _ping_loop(self, interval: float) -> None:
        # Keep idle relayed connections alive (Azure cuts ~4 min idle, protocol.md 2.7). Like .NET, we send
        # pings and do not require pongs: a slow reader must not be mistaken for a dead peer.
        while True:
            await asyncio.sleep(interval)
            if self._closed or self._broken is not None:
                return
            self._conn.ping()

    # ------------------------------------------------------------------ splicing

    async def splice(
        self,
        transport: asyncio.Transport,
        *,
        received: bytes = b"",
        eof: bool = False,
        max_message_size: int = DEFAULT_SPLICE_MESSAGE,
    ) -> Spliced:
        """Link the stream to a local socket's ``transport`` and move bytes both ways until both end.

        What ``hyco forward`` does with each connection: from now on payloads go from one socket to the
        other in the sockets' callbacks, with backpressure between them (each side stops reading while the
        other's send buffer is full) and half-close both ways (the local end of data becomes Close 1000
        "Shutdown", the peer's clean Close a ``write_eof()``). The stream can no longer be read or written;
        on return the local transport and the stream are both closed.

        Args:
            transport: the local connection; it becomes the transport of a protocol of the stream's own.
            received: bytes the local socket delivered before the call (they are sent first).
            eof: whether the local socket's end of data came before the call.
            max_message_size: largest binary message sent; a larger local read is sent as several.

        Returns:
            A :class:`~hyco.client.splice.Spliced`: bytes each way and how it ended. Failures are reported
            there, never raised.

        Raises:
            StreamClosed: the stream was read from, written to or closed already.
        """
        if self._closed or self._write_closed or self._spliced:
            raise StreamClosed("only an open stream can be spliced (not closed, shut down or spliced)")
        self._spliced = True
        self._stop_pinger()
        # What arrived before the call goes first, in order.
        sent_ahead = [bytes(self._buffer)] if self._buffer else []
        sent_ahead += [m.encode() if isinstance(m, str) else m for m in self._messages]
        if self._partial:
            sent_ahead.append(bytes(self._partial))
        self._buffer, self._messages, self._partial, self._buffered = bytearray(), deque(), None, 0
        terminal = self._terminal
        try:
            result = await splice(
                self._conn,
                transport,
                received=received,
                eof=eof,
                sent_ahead=sent_ahead,
                peer_end=False if terminal is None else terminal.error,
                clean_codes=self._clean_codes,
                max_message_size=max_message_size,
            )
        finally:
            self._closed = self._write_closed = True
            await self._release_session()
        return result

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
