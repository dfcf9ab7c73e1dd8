"""Pipe a local byte stream and a relayed stream both ways.

The local side is a socket (:func:`pipe`: an asyncio ``StreamReader``/``StreamWriter`` pair, TCP or unix) or a
pair of blocking files (:func:`pipe_files`: ``hyco send``/``hyco listen`` on stdin and stdout). Both run the
same copy loops through a small local-end seam, so they behave alike.

Theory of operation:

* Two copy loops run concurrently, one per direction. Each awaits the receiving side before it reads more
  (``writer.drain()`` locally; :meth:`HybridConnectionStream.write` waits for the socket), so memory stays
  bounded however fast one side is and however slow the other (backpressure end to end).
* Half-close is propagated both ways (protocol.md 3.5, design.md "Half-close"): the local side's end of data
  becomes :meth:`HybridConnectionStream.shutdown` (Close 1000, keep reading) and the relayed peer's Close
  becomes ``write_eof()`` on the local socket. The pipe finishes when both directions have finished.
* When either side fails, the other is torn down too: the failing copy loop cancels its sibling, the local
  transport is aborted and the relayed stream closed without waiting for the peer's Close (the relay then
  reports 1011 to the peer, protocol.md 3.5). The result says how it ended and on which side.
* Bytes are copied unchanged; no framing is added. Each local read becomes one binary WebSocket message.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
import time
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from hyco.client.stream import HybridConnectionStream
from hyco.exceptions import HycoError

__all__ = ["DEFAULT_CHUNK_SIZE", "PipeEnd", "PipeResult", "pipe", "pipe_files", "splice_socket"]

#: Largest local read, hence largest WebSocket message sent (the relay allows 16 MiB by default).
DEFAULT_CHUNK_SIZE = 64 * 1024


class PipeEnd(enum.StrEnum):
    """How a pipe ended."""

    #: Both directions reached their end of data (each side closed or half-closed cleanly).
    CLEAN = "clean"
    #: The local socket failed (reset, broken pipe); the relayed stream was closed in turn.
    LOCAL_ERROR = "local error"
    #: The relayed stream broke (peer vanished, relay gone, bad close code); the local socket was closed.
    RELAY_ERROR = "relay error"
    #: The pipe was cancelled (forwarder shutting down); both sides were closed.
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class PipeResult:
    """What a finished pipe did.

    Attributes:
        to_relay: bytes copied from the local socket into the relayed stream.
        from_relay: bytes copied from the relayed stream to the local socket.
        duration: seconds from start to finish.
        end: how it ended.
        error: the failure, for ``LOCAL_ERROR`` and ``RELAY_ERROR``.
    """

    to_relay: int
    from_relay: int
    duration: float
    end: PipeEnd
    error: BaseException | None = None

    @property
    def clean(self) -> bool:
        """Whether both directions ended normally."""
        return self.end is PipeEnd.CLEAN

    @property
    def how(self) -> str:
        """How it ended, with the error when it failed: ``clean``, ``relay error: ...``."""
        return self.end.value if self.error is None else f"{self.end.value}: {self.error}"

    def describe(self) -> str:
        """One human-readable summary, for log lines."""
        return (
            f"{self.to_relay} B to relay, {self.from_relay} B from relay, {self.duration:.3f} s, {self.how}"
        )


class _LocalFailure(Exception):
    """Wraps an ``OSError`` of the local side so the two sides' failures stay apart."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _LocalEnd(Protocol):
    """The local side of a pipe. ``read``/``write``/``write_eof`` raise ``OSError`` when the side fails."""

    async def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; ``b""`` at the end of data."""

    async def write(self, data: bytes) -> None:
        """Write and wait until the data is handed on (backpressure)."""

    async def write_eof(self) -> None:
        """Signal the end of data (half-close), where the side can."""

    def begin_close(self, clean: bool) -> None:
        """Start closing without awaiting (runs during cancellation); ``clean`` False drops at once."""

    async def finish_close(self, clean: bool) -> None:
        """Wait until the side is closed. Never raises."""


class _SocketEnd:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def read(self, size: int) -> bytes:
        return await self.reader.read(size)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def write_eof(self) -> None:
        if self.writer.can_write_eof():
            self.writer.write_eof()
        await self.writer.drain()

    def begin_close(self, clean: bool) -> None:
        if clean:
            self.writer.close()
        else:
            # Do not linger on a failed connection: drop it so the local peer learns at once.
            self.writer.transport.abort()

    async def finish_close(self, clean: bool) -> None:
        if clean:
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


class _FileEnd:
    """Blocking files: ``source`` is read in a daemon thread (an unfinished read never keeps the process
    alive, and regular files work as well as pipes and terminals); ``sink`` is written in place."""

    #: Reads the thread may run ahead of the relayed stream (backpressure: it then waits).
    READ_AHEAD = 4

    def __init__(self, source: BinaryIO, sink: BinaryIO) -> None:
        self.source = source
        self.sink = sink
        self._chunks: asyncio.Queue[bytes | OSError] | None = None
        self._room = threading.Semaphore(self.READ_AHEAD)

    def _start_reader(self, size: int) -> asyncio.Queue[bytes | OSError]:
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[bytes | OSError] = asyncio.Queue()  # bounded by the semaphore
        read = getattr(self.source, "read1", self.source.read)

        def pump() -> None:
            # No coroutine crosses threads: a loop that closes first leaves nothing half-scheduled behind.
            while True:
                self._room.acquire()
                item: bytes | OSError
                try:
                    item = read(size)
                except ValueError:  # the file was closed under us: its data ended
                    item = b""
                except OSError as exc:
                    item = exc
                try:
                    loop.call_soon_threadsafe(chunks.put_nowait, item)
                except RuntimeError:  # the loop is closed: nobody reads any more
                    return
                if not isinstance(item, bytes) or not item:
                    return

        threading.Thread(target=pump, name="hyco-pipe-source", daemon=True).start()
        return chunks

    async def read(self, size: int) -> bytes:
        if self._chunks is None:
            self._chunks = self._start_reader(size)
        item = await self._chunks.get()
        self._room.release()
        if isinstance(item, OSError):
            raise item
        return item

    async def write(self, data: bytes) -> None:
        self.sink.write(data)
        self.sink.flush()

    async def write_eof(self) -> None:
        self.sink.flush()

    def begin_close(self, clean: bool) -> None:
        pass  # the files belong to the caller (stdin, stdout): they stay open

    async def finish_close(self, clean: bool) -> None:
        pass


async def pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    stream: HybridConnectionStream,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> PipeResult:
    """Copy ``reader`` → ``stream`` and ``stream`` → ``writer`` until both directions end or one side fails.

    On return both the local socket and the relayed stream are closed, whatever happened. Cancelling the
    call closes both as well (and re-raises :class:`asyncio.CancelledError`).

    Args:
        reader, writer: the local connection (from ``asyncio.open_connection``, ``start_server``, ...).
        stream: an open relayed stream; the pipe takes ownership of it.
        chunk_size: largest local read (one WebSocket message each).

    Returns:
        A :class:`PipeResult`: bytes each way, duration and how it ended. Failures are reported there, never
        raised.
    """
    return await _pipe(_SocketEnd(reader, writer), stream, chunk_size)


async def pipe_files(
    source: BinaryIO,
    sink: BinaryIO,
    stream: HybridConnectionStream,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> PipeResult:
    """Copy ``source`` → ``stream`` and ``stream`` → ``sink`` (blocking files such as stdin and stdout).

    The same loops as :func:`pipe`: the end of ``source`` half-closes the stream (``shutdown()``), the peer's
    end of data ends the copy to ``sink``, and it returns when both directions ended (like ``nc``, so
    nothing read from ``source`` is lost) or one side failed. The relayed stream is closed on return; the
    files are left open (they are the caller's).

    Args:
        source: read in a background thread, ``chunk_size`` bytes at most per read.
        sink: written and flushed for every message.
        stream: an open relayed stream; the pipe takes ownership of it.
        chunk_size: largest read from ``source`` (one WebSocket message each).

    Returns:
        A :class:`PipeResult`, as for :func:`pipe`.
    """
    return await _pipe(_FileEnd(source, sink), stream, chunk_size)


async def splice_socket(
    transport: asyncio.Transport,
    stream: HybridConnectionStream,
    *,
    received: bytes = b"",
    eof: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> PipeResult:
    """What :func:`pipe` does, for a socket given as its transport: the stream is spliced to it
    (:meth:`HybridConnectionStream.splice`), so bytes move in the sockets' callbacks, with no copy loops.

    Args:
        transport: the local connection; the splice becomes its protocol.
        stream: an open relayed stream; the splice takes ownership of it.
        received: bytes the local socket delivered before the call.
        eof: whether the local socket's end of data came before the call.
        chunk_size: largest WebSocket message sent (a larger read is split).

    Returns:
        A :class:`PipeResult`, as for :func:`pipe`; cancelling the call closes both sides and re-raises.
    """
    started = time.monotonic()
    spliced = await stream.splice(transport, received=received, eof=eof, max_message_size=chunk_size)
    end, error = PipeEnd.CLEAN, None
    if spliced.local_error is not None:
        end, error = PipeEnd.LOCAL_ERROR, spliced.local_error
    elif spliced.relay_error is not None:
        end, error = PipeEnd.RELAY_ERROR, spliced.relay_error
    return PipeResult(spliced.to_relay, spliced.from_relay, time.monotonic() - started, end, error)


async def _pipe(local: _LocalEnd, stream: HybridConnectionStream, chunk_size: int) -> PipeResult:
    started = time.monotonic()
    counts = [0, 0]  # to relay, from relay

    async def upstream() -> None:
        # Local → relay. The local end of data half-closes the relayed stream (.NET Shutdown()).
        while True:
            try:
                data = await local.read(chunk_size)
            except OSError as exc:
                raise _LocalFailure(exc) from exc
            if not data:
                break
            await stream.write(data)
            counts[0] += len(data)
        await stream.shutdown()

    async def downstream() -> None:
        # Relay → local. The peer's Close 1000 half-closes the local side (write_eof), if it can be.
        try:
            while data := await stream.read():
                await local.write(data)
                counts[1] += len(data)
            await local.write_eof()
        except OSError as exc:
            raise _LocalFailure(exc) from exc

    tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
    end = PipeEnd.CLEAN
    error: BaseException | None = None
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            failed = [t for t in done if not t.cancelled() and t.exception() is not None]
            if failed:
                exc = failed[0].exception()
                assert exc is not None
                if isinstance(exc, _LocalFailure):
                    end, error = PipeEnd.LOCAL_ERROR, exc.cause
                else:  # HycoError or OSError from the relayed stream; anything else is a bug: report it
                    end, error = PipeEnd.RELAY_ERROR, exc
                break
    except asyncio.CancelledError:
        end = PipeEnd.CANCELLED
        raise
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await _close_both(local, stream, clean=end is PipeEnd.CLEAN)
    return PipeResult(counts[0], counts[1], time.monotonic() - started, end, error)


async def _close_both(local: _LocalEnd, stream: HybridConnectionStream, *, clean: bool) -> None:
    # Runs during cancellation too: start both closes before the first await, so nothing is left open.
    local.begin_close(clean)
    try:
        if clean:
            # Both sides already sent their Close (half-closes), so this returns at once.
            with contextlib.suppress(HycoError, OSError):
                await stream.close()
        else:
            # close() would wait (up to its close_timeout) for a Close from a peer that does not know yet.
            # Drop the connection without a Close instead: the relay tells the peer with 1011, and its
            # own pipe tears its side down in turn.
            with contextlib.suppress(HycoError, OSError):
                await stream.abort(code=None)
    finally:
        await local.finish_close(clean)
