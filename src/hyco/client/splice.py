"""A relayed stream linked to a local socket: bytes move between the two in the sockets' callbacks.

:meth:`HybridConnectionStream.splice` uses it (``hyco forward`` splices every connection). One
:class:`_Link` is both the local transport's protocol and the WebSocket connection's frame sink:

* local data becomes one masked binary frame per read (:meth:`WsConnection.send`); relayed data frames go to
  the local transport as they are parsed. No task, no queue, no await per chunk.
* Backpressure: when the WebSocket's send buffer is full the local socket stops being read, and when the
  local send buffer is full the WebSocket stops being read; each resumes when the other drains.
* Half-close both ways (protocol.md 3.5): the local end of data becomes Close ``1000 "Shutdown"`` (reading
  goes on); the peer's clean Close becomes ``write_eof()`` on the local socket. It ends cleanly when both
  directions ended.
* A failure on one side tears the other down at once: a local reset drops the relayed connection without a
  Close (the relay tells the peer with 1011), a broken relayed stream aborts the local socket.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hyco.client._wsconn import WsConnection
from hyco.exceptions import ConnectionLost, StreamBroken

__all__ = ["Spliced", "splice"]


@dataclass(frozen=True, slots=True)
class Spliced:
    """What a finished splice did.

    Attributes:
        to_relay: bytes read from the local socket and sent on the relayed stream.
        from_relay: bytes received on the relayed stream and written to the local socket.
        local_error: why the local socket failed (a reset), if it did.
        relay_error: why the relayed stream broke (:class:`StreamBroken`), if it did.
    """

    to_relay: int
    from_relay: int
    local_error: BaseException | None = None
    relay_error: BaseException | None = None


class _Link(asyncio.Protocol):
    __slots__ = (
        "chunk",
        "clean_codes",
        "conn",
        "done",
        "down_done",
        "from_relay",
        "local",
        "pending",
        "result",
        "to_relay",
        "up_done",
    )

    def __init__(
        self, conn: WsConnection, local: asyncio.Transport, clean_codes: frozenset[int], chunk: int
    ) -> None:
        self.conn = conn
        self.chunk = chunk
        self.local = local
        self.clean_codes = clean_codes
        self.up_done = False  # the local end of data was sent as a Close
        self.down_done = False  # the peer's clean Close was passed on as write_eof
        self.to_relay = 0
        self.from_relay = 0
        self.pending: list[bytes | bytearray | memoryview] = []  # payloads of the read being parsed
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.result: Spliced | None = None

    # --- the local socket (asyncio protocol) ------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.result is not None or self.up_done:
            return
        try:
            self.conn.send(data, max_message=self.chunk)
        except ConnectionLost as exc:
            self.fail(relay_error=StreamBroken(f"the connection broke: {exc}", close_code=1006))
            return
        self.to_relay += len(data)

    def eof_received(self) -> bool:
        self.local_ended()
        return True  # keep the socket open for the other direction (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.result is None:
            self.fail(local_error=exc or ConnectionResetError("the local connection closed"))

    def pause_writing(self) -> None:
        self.conn.pause_reading()

    def resume_writing(self) -> None:
        self.conn.resume_reading()

    # --- the relayed connection (FrameSink) -------------------------------------------------------

    def frame(self, payload: bytes | bytearray | memoryview, text: bool, fin: bool) -> None:
        self.pending.append(payload)  # written by flush(), once per read
        self.from_relay += len(payload)

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        if pending and self.result is None and not self.local.is_closing():
            self.local.writelines(pending)

    def closed_by_peer(self, code: int, reason: str) -> None:
        if code not in self.clean_codes:
            detail = f" ({reason})" if reason else ""
            self.fail(
                relay_error=StreamBroken(
                    f"the peer closed the stream with code {code}{detail}", close_code=code
                )
            )
            return
        self.relay_ended()

    def lost(self, error: BaseException | None) -> None:
        if self.result is None:
            detail = f": {error}" if error else ""
            broken = StreamBroken(f"the connection was lost{detail}", close_code=1006)
            broken.__cause__ = error
            self.fail(relay_error=broken)

    def send_paused(self) -> None:
        if not self.local.is_closing():
            self.local.pause_reading()

    def send_resumed(self) -> None:
        if not self.local.is_closing():
            self.local.resume_reading()

    # --- the ends ---------------------------------------------------------------------------------

    def local_ended(self) -> None:
        if not self.up_done and self.result is None:
            self.up_done = True
            self.conn.send_close(1000, "Shutdown")
            self.finish_if_both_ended()

    def relay_ended(self) -> None:
        if not self.down_done and self.result is None:
            self.flush()  # the payloads that came before the Close go first
            self.down_done = True
            if self.local.can_write_eof() and not self.local.is_closing():
                self.local.write_eof()
            self.finish_if_both_ended()

    def finish_if_both_ended(self) -> None:
        if self.up_done and self.down_done:
            self.end(Spliced(self.to_relay, self.from_relay))
            self.conn.close()
            self.local.close()

    def fail(
        self, *, local_error: BaseException | None = None, relay_error: BaseException | None = None
    ) -> None:
        if self.result is not None:
            return
        self.end(Spliced(self.to_relay, self.from_relay, local_error, relay_error))
        if local_error is not None:
            self.conn.abort()  # no Close: the relay tells the peer with 1011
        else:
            self.conn.close()
        self.local.abort()

    def end(self, result: Spliced) -> None:
        self.result = result
        if not self.done.done():
            self.done.set_result(None)


async def splice(
    conn: WsConnection,
    local: asyncio.Transport,
    *,
    received: bytes,
    eof: bool,
    sent_ahead: list[bytes],
    peer_end: StreamBroken | bool | None,
    clean_codes: frozenset[int],
    max_message_size: int,
) -> Spliced:
    """Link ``conn`` and ``local`` until both directions ended or one side failed (see the module docstring).

    Args:
        conn: the relayed connection.
        local: the local socket's transport.
        received: bytes the local socket delivered before (sent first).
        eof: whether the local socket's end of data came before.
        sent_ahead: payloads the relayed stream delivered before (written to ``local`` first).
        peer_end: the relayed stream's end if it came before: None for a clean Close, the error for a break;
            False when it has not ended.
        clean_codes: the close codes that end the relayed direction cleanly.
        max_message_size: largest message sent; a larger local read is sent as several messages.

    Returns:
        Bytes each way and the failure, if any. Cancelling closes both sides at once (and re-raises).
    """
    link = _Link(conn, local, clean_codes, max_message_size)
    local.set_protocol(link)
    if local.is_closing():
        link.fail(local_error=ConnectionResetError("the local connection closed before the splice"))
    else:
        local.resume_reading()  # its previous protocol may have paused it
    for payload in sent_ahead:
        link.frame(payload, False, True)
    link.flush()
    if isinstance(peer_end, StreamBroken):
        link.fail(relay_error=peer_end)
    elif peer_end is None:
        link.relay_ended()
    if link.result is None:
        conn.attach(link)
    if received:
        link.data_received(received)
    if eof:
        link.local_ended()
    try:
        await link.done
    except asyncio.CancelledError:
        link.fail(local_error=asyncio.CancelledError())
        raise
    assert link.result is not None
    return link.result
