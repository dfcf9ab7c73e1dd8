"""A listener's control channel on the relay: the driver between its socket and the channel's rules.

The rules (what a listener may send, the body that follows ``body: true``, ``renewToken``, expiry) live in
:class:`hyco.protocol.control.RelayControlProtocol`. This driver moves messages between the listener's
:class:`~hyco.server.peer.Peer` and that object, checks renewed tokens with the relay's keys, enforces expiry
on the relay's :class:`~hyco._clock.Clock`, and writes from one writer at a time, so a command and its body
are never split (protocol.md 2.2). After either side's Close it waits briefly for the other's, then hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from hyco._clock import SYSTEM_CLOCK, Clock
from hyco.exceptions import ConnectionLost, RelayError, RemoteProtocolError
from hyco.protocol import messages
from hyco.protocol.control import (
    DEFAULT_MAX_CONTROL_MESSAGE,
    BinaryMessage,
    CloseMessage,
    ControlEvent,
    InvalidResponse,
    OutgoingMessage,
    RelayControlProtocol,
    RenewalRequested,
    ResponseReceived,
)
from hyco.protocol.sas import SasToken
from hyco.server.peer import ChannelPeer, Message, MessageKind, PeerGone

__all__ = ["ControlChannel"]

log = logging.getLogger("hyco.relay")

GOING_AWAY = 1001
#: Seconds to wait for the listener's answering Close before hanging up.
CLOSE_TIMEOUT = 10.0
#: Messages handled before the loop lets other connections run.
MESSAGES_PER_TURN = 64


def _peer_message(message: OutgoingMessage) -> Message:
    """A queued control-channel message as the Peer seam takes it."""
    if isinstance(message, CloseMessage):
        return Message(MessageKind.CLOSE, code=message.code, reason=message.reason)
    if isinstance(message, BinaryMessage):
        return Message(MessageKind.BINARY, message.data)
    return Message(MessageKind.TEXT, message.text.encode())


class ControlChannel:
    """One connected listener.

    Args:
        peer: the listener's control-channel socket (pings are answered below this seam).
        path: the hybrid connection path (for logs).
        listener_id: GUID part of the listener's ``sb-hc-id``, lower-case.
        base_url: the WebSocket base (``ws(s)://host:port``) rendezvous addresses for this listener use.
        token: the token the channel was opened with.
        renew: validates a renewed token text; raises RelayError when it is not acceptable.
        token_grace: seconds past the token's expiry before the channel is closed.
        on_response: takes a listener's ``response`` and its body; returns False for an unknown request.
        on_invalid_response: takes a request id and what is wrong with its response; False if unknown.
        send_timeout: seconds a command may wait for the listener's socket to take it; a listener that stops
            reading is dropped then (its senders must not hang, and it reconnects).
        max_message_size: the largest message the listener may send, in bytes.
        clock: where expiry is read and waited for.
    """

    def __init__(
        self,
        peer: ChannelPeer,
        *,
        path: str,
        listener_id: str,
        base_url: str,
        token: SasToken,
        renew: Callable[[str], SasToken],
        token_grace: float,
        on_response: Callable[[messages.Response, bytes | None], bool] = lambda r, b: False,
        on_invalid_response: Callable[[str, str], bool] = lambda i, r: False,
        send_timeout: float = 30.0,
        max_message_size: int = DEFAULT_MAX_CONTROL_MESSAGE,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._peer = peer
        self._protocol = RelayControlProtocol(
            token_expiry=token.expiry, token_grace=token_grace, max_message_size=max_message_size
        )
        self.path = path
        self._listener_id = listener_id
        self.base_url = base_url
        self._renew = renew
        self._on_response = on_response
        self._on_invalid_response = on_invalid_response
        self._send_timeout = send_timeout
        self._clock = clock
        self._send_lock = asyncio.Lock()
        self._hang_up: asyncio.Timeout | None = None  # run()'s deadline, set once a Close went out
        self.close_reason = ""
        #: When the listener came online (seconds since the epoch): the channel is made once it is upgraded.
        self.online_since = clock.time()
        #: Done once :meth:`run` returned.
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def listener_id(self) -> str:
        """The GUID the sender's AllowedListeners/DisallowedListeners headers refer to."""
        return self._listener_id

    @property
    def open(self) -> bool:
        """Whether commands can still be sent."""
        return not self._protocol.closed

    @property
    def token_expiry(self) -> float:
        """When the channel's current token expires (seconds since the epoch); renewals move it."""
        return self._protocol.token_expiry

    async def send(self, command: messages.Command) -> None:
        """Send one command.

        Raises:
            ConnectionLost: the channel is closed or the write failed.
        """
        await self.send_with_body(command, None)

    async def send_with_body(self, command: messages.Command, body: bytes | None) -> None:
        """Send a command and, when ``body`` is not None, its body as the very next (binary) message.

        Raises:
            ConnectionLost: the channel is closed or the write failed.
            LocalProtocolError: ``body`` does not match the command's ``body`` flag (a relay bug).
        """
        try:
            if not self._send_lock.locked():
                # The lean path: nothing waits to write, so the command (and its body) go out now, in one
                # write, unless the listener's buffer is full (then in turn, with the send timeout).
                self._queue(command, body)
                await self._send_queued()
                return
            async with self._send_lock:
                self._queue(command, body)
                await self._write(self._protocol.messages_to_send())
        except PeerGone as exc:
            raise ConnectionLost("the listener's control channel broke or stopped taking commands") from exc

    def _queue(self, command: messages.Command, body: bytes | None) -> None:
        if self._protocol.closed:
            raise ConnectionLost("the listener's control channel is closed")
        self._protocol.send_command(command, body)

    async def close(self, code: int, reason: str) -> None:
        """Close the channel with ``code`` (1001 on shutdown, 1008 for policy); :meth:`run` then ends."""
        if not self._protocol.closed:
            self.close_reason = reason
        self._protocol.close(code, reason)
        await self._flush()

    async def run(self) -> None:
        """Serve the channel until the listener or the relay closes it, then hang up."""
        watchdog = asyncio.ensure_future(self._watch_expiry())
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None) as self._hang_up:
                    if self._protocol.close_sent:
                        self._arm_hang_up()
                    handled = 0
                    while await self._serve_one(await self._peer.receive()):
                        handled += 1
                        if handled % MESSAGES_PER_TURN == 0:
                            # Buffered messages come back without a suspension point: a listener's flood
                            # must not hold the event loop (everyone else waits).
                            await asyncio.sleep(0)
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            self._peer.abort()
            if not self.ended.done():
                self.ended.set_result(None)

    def abort(self) -> None:
        """Drop the listener's connection without a Close (a relay that stops waiting); :meth:`run` ends."""
        self.close_reason = self.close_reason or "dropped"
        self._peer.abort()

    # --- internals -----------------------------------------------------------------------------------------

    async def _serve_one(self, message: Message) -> bool:
        """Feed one message and act on it; False once the channel is over."""
        protocol = self._protocol
        if message.kind is MessageKind.GONE:
            protocol.receive_eof()
            self.close_reason = self.close_reason or "the connection broke"
            return False
        if protocol.closed and message.kind is not MessageKind.CLOSE:
            return True  # our Close is out; the listener's answer is on its way
        try:
            if message.kind is MessageKind.TEXT:
                protocol.receive_text(message.data)
            elif message.kind is MessageKind.BINARY:
                protocol.receive_binary(message.data)
            else:
                protocol.receive_close(message.code, message.reason)
        except RemoteProtocolError as exc:
            log.warning("listener %s on %s: %s", self.listener_id, self.path, exc)
            self.close_reason = f"protocol violation: {exc.reason}"
        for event in protocol.events_received():
            self._handle(event)
        await self._flush()
        return message.kind is not MessageKind.CLOSE

    def _handle(self, event: ControlEvent) -> None:
        if isinstance(event, RenewalRequested):
            try:
                self._protocol.renew(self._renew(event.token).expiry)
            except RelayError as exc:
                log.warning("listener %s on %s: renewal refused: %s", self.listener_id, self.path, exc)
                self.close_reason = exc.description
                self._protocol.refuse_renewal(exc.description)
            else:
                log.debug("listener %s on %s: token renewed", self.listener_id, self.path)
        elif isinstance(event, ResponseReceived):
            if not self._on_response(event.response, event.body):
                log.warning(
                    "listener %s on %s: response for unknown or finished request %s ignored",
                    self.listener_id,
                    self.path,
                    event.response.request_id[:64],
                )
        elif isinstance(event, InvalidResponse):
            # A malformed response fails only its own request (other requests go on), if there is one.
            if self._on_invalid_response(event.request_id, event.reason):
                log.warning(
                    "listener %s on %s: invalid response: %s", self.listener_id, self.path, event.reason
                )
            else:
                self.close_reason = f"protocol violation: {event.reason}"
                self._protocol.close(1008, self.close_reason)

    async def _watch_expiry(self) -> None:
        # protocol.md 2.6: the SDKs renew at expiry, so the token is enforced only after a grace window.
        while not self._protocol.closed:
            await self._clock.sleep(self._protocol.expiry_deadline - self._clock.time())
            if self._protocol.check_expiry(self._clock.time()):
                log.warning("listener %s on %s: token expired, closing", self.listener_id, self.path)
                self.close_reason = "token expired"
                await self._flush()

    async def _flush(self) -> None:
        """Write what the protocol queued; a listener that stops reading or vanishes is dropped."""
        with contextlib.suppress(PeerGone):
            await self._send_queued()

    async def _send_queued(self) -> None:
        """Write what the protocol queued: at once when no writer waits and the listener's buffer has room
        (no lock, no timer, no task switch), else in turn under the send lock. Raises PeerGone."""
        if self._send_lock.locked():
            async with self._send_lock:
                await self._write(self._protocol.messages_to_send())
            return
        queued = self._protocol.messages_to_send()
        if not queued:
            return  # most flushes (after each message the listener sends) have nothing to write
        if not self._peer.send_now([_peer_message(message) for message in queued]):
            async with self._send_lock:  # in turn, and whole: a command and its body stay together
                await self._write(queued)
        elif any(isinstance(message, CloseMessage) for message in queued):
            self._arm_hang_up()

    async def _write(self, queued: list[OutgoingMessage]) -> None:
        """Write in order, waiting while the listener's buffer is full; called with the send lock held.
        Raises PeerGone."""
        if not queued:
            return
        try:
            async with asyncio.timeout(self._send_timeout):
                for message in queued:
                    if isinstance(message, CloseMessage):
                        await self._peer.send_close(message.code, message.reason)
                        self._arm_hang_up()
                    else:
                        await self._peer.send(_peer_message(message))
        except TimeoutError:
            log.warning(
                "listener %s on %s: not reading its control channel for %g s; dropping it",
                self.listener_id,
                self.path,
                self._send_timeout,
            )
            self.close_reason = "stopped reading"
            self._protocol.receive_eof()
            self._peer.abort()
            raise PeerGone(self._peer.name) from None

    def _arm_hang_up(self) -> None:
        # After our Close, the listener has CLOSE_TIMEOUT to answer before run() hangs up.
        if self._hang_up is not None and self._hang_up.when() is None:
            self._hang_up.reschedule(asyncio.get_running_loop().time() + CLOSE_TIMEOUT)
