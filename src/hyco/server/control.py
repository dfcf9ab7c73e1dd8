"""A listener's control channel (protocol.md 2): commands down, renewals up, expiry enforced.

The relay sends only well-formed ``accept`` (and, for HTTP, ``request``) JSON; writes are serialized so a
command and the binary message that may follow it are never interleaved with another (2.2). From the
listener it accepts ``renewToken`` (validated like a new token; failure closes with 1008) and ``response``.
Anything else is a protocol violation: the channel is closed with 1008 and a description saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

from hyco.exceptions import ConnectionLost, RelayError, RemoteProtocolError
from hyco.protocol import messages
from hyco.protocol.sas import SasToken
from hyco.server.peer import Message, MessageKind, Peer, PeerGone

__all__ = ["ControlChannel"]

log = logging.getLogger("hyco.relay")

POLICY_VIOLATION = 1008
GOING_AWAY = 1001
#: Seconds the listener gets to answer the relay's Close before the connection is dropped.
CLOSE_TIMEOUT = 5.0
#: Messages handled before the loop lets other connections run (a flood cannot starve the relay).
MESSAGES_PER_TURN = 64


class ControlChannel:
    """One connected listener.

    Args:
        peer: the accepted control-channel WebSocket.
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
    """

    def __init__(
        self,
        peer: Peer,
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
    ) -> None:
        self._peer = peer
        self._closed = False
        self._send_timeout = send_timeout
        self.path = path
        self._listener_id = listener_id
        self.base_url = base_url
        self._expiry = token.expiry
        self._renew = renew
        self._grace = token_grace
        self._send_lock = asyncio.Lock()
        self._on_response = on_response
        self._on_invalid_response = on_invalid_response
        self._awaiting_body: messages.Response | None = None
        self._skip_body = False
        self.close_reason = ""
        self._abort_handle: asyncio.TimerHandle | None = None

    @property
    def listener_id(self) -> str:
        """The GUID the sender's AllowedListeners/DisallowedListeners headers refer to."""
        return self._listener_id

    @property
    def token_expiry(self) -> float:
        """When the channel's current token expires (seconds since the epoch); renewals move it."""
        return self._expiry

    @property
    def open(self) -> bool:
        """Whether commands can still be sent."""
        return not self._closed

    async def send(self, command: messages.Command) -> None:
        """Send one command.

        Raises:
            ConnectionLost: the channel is closed or the write failed.
        """
        await self.send_with_body(command, None)

    async def send_with_body(self, command: messages.Command, body: bytes | None) -> None:
        """Send a command and, when ``body`` is not None, its body as the very next (binary) message.

        The pair is written under the channel's lock so no other message can come between them (2.2).

        Raises:
            ConnectionLost: the channel is closed or the write failed.
        """
        try:
            async with asyncio.timeout(self._send_timeout), self._send_lock:
                if self._closed:
                    raise ConnectionLost("the listener's control channel is closed")
                await self._peer.send(Message(MessageKind.TEXT, messages.encode(command).encode()))
                if body is not None:
                    await self._peer.send(Message(MessageKind.BINARY, body))
        except TimeoutError:
            log.warning(
                "listener %s on %s: not reading its control channel for %g s; dropping it",
                self.listener_id,
                self.path,
                self._send_timeout,
            )
            self.close_reason = "stopped reading"
            self._closed = True
            self._peer.abort()
            raise ConnectionLost("the listener's control channel stopped taking commands") from None
        except PeerGone as exc:
            self._closed = True
            raise ConnectionLost("the listener's control channel broke") from exc

    async def close(self, code: int, reason: str) -> None:
        """Close the channel with ``code`` (1001 on shutdown, 1008 for policy).

        :meth:`run` then waits ``CLOSE_TIMEOUT`` seconds at most for the listener's answering Close before it
        drops the connection.
        """
        if self._closed:
            return
        self.close_reason = reason
        self._closed = True
        with contextlib.suppress(PeerGone):
            await self._peer.send_close(code, reason)
        loop = asyncio.get_running_loop()
        self._abort_handle = loop.call_later(CLOSE_TIMEOUT, self._peer.abort)

    async def _watch_expiry(self) -> None:
        # protocol.md 2.6: SDKs renew at expiry, so the token is enforced only after a grace window.
        while not self._closed:
            delay = self._expiry + self._grace - time.time()
            if delay <= 0:
                log.warning("listener %s on %s: token expired, closing", self.listener_id, self.path)
                await self.close(POLICY_VIOLATION, "ExpiredToken: renew the token with renewToken")
                return
            await asyncio.sleep(delay)

    def _handle(self, text: str | bytes) -> None:
        if self._awaiting_body is not None:
            raise RemoteProtocolError("a response with body:true must be followed by a binary message")
        try:
            command = messages.decode(text)
        except RemoteProtocolError as exc:
            if self._invalid_response(text, exc):
                return
            raise
        if isinstance(command, messages.RenewToken):
            self._expiry = self._renew(command.token).expiry
            log.debug("listener %s on %s: token renewed", self.listener_id, self.path)
        elif isinstance(command, messages.Response):
            if command.body:
                self._awaiting_body = command
            else:
                self._deliver(command, None)
        else:
            raise RemoteProtocolError(f"listeners may not send {type(command).__name__.lower()} commands")

    def _invalid_response(self, text: str | bytes, exc: RemoteProtocolError) -> bool:
        """A malformed ``response`` fails only its own request, not the channel (other requests go on)."""
        try:
            body = json.loads(text)["response"]
            request_id = body["requestId"]
        except (ValueError, KeyError, TypeError):
            return False
        if not isinstance(request_id, str) or not self._on_invalid_response(request_id, str(exc)):
            return False
        log.warning("listener %s on %s: invalid response: %s", self.listener_id, self.path, exc)
        self._skip_body = body.get("body") is True
        return True

    def _deliver(self, response: messages.Response, body: bytes | None) -> None:
        if not self._on_response(response, body):
            log.warning(
                "listener %s on %s: response for unknown or finished request %s ignored",
                self.listener_id,
                self.path,
                response.request_id[:64],
            )

    async def run(self) -> None:
        """Serve the channel until the listener or the relay closes it; then drop the connection."""
        watchdog = asyncio.ensure_future(self._watch_expiry())
        try:
            await self._read_loop()
        finally:
            self._closed = True
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            if self._abort_handle is not None:
                self._abort_handle.cancel()
            self._peer.abort()

    async def _read_loop(self) -> None:
        handled = 0
        while True:
            msg = await self._peer.receive()
            handled += 1
            if handled % MESSAGES_PER_TURN == 0:
                await asyncio.sleep(0)
            if self._closed and msg.kind in (MessageKind.TEXT, MessageKind.BINARY):
                continue  # the relay closed the channel: only the listener's Close matters now
            if msg.kind is MessageKind.TEXT:
                try:
                    self._handle(msg.data.decode("utf-8", errors="replace"))
                except RemoteProtocolError as exc:
                    log.warning("listener %s on %s: %s", self.listener_id, self.path, exc)
                    await self.close(POLICY_VIOLATION, f"protocol violation: {exc}")
                except RelayError as exc:
                    log.warning("listener %s on %s: renewal refused: %s", self.listener_id, self.path, exc)
                    await self.close(POLICY_VIOLATION, exc.description)
            elif msg.kind is MessageKind.BINARY:
                if self._awaiting_body is not None:
                    response, self._awaiting_body = self._awaiting_body, None
                    self._deliver(response, msg.data)
                elif self._skip_body:
                    self._skip_body = False
                else:
                    # hyco-https sends a stray empty binary frame after a body:false 204 (protocol.md 10).
                    log.debug(
                        "listener %s on %s: unexpected binary message ignored", self.listener_id, self.path
                    )
            elif msg.kind is MessageKind.CLOSE:
                if not self._closed:  # the listener closed first: answer its Close (RFC 6455 5.5.1)
                    self._closed = True
                    self.close_reason = self.close_reason or f"closed by the listener ({msg.code})"
                    with contextlib.suppress(PeerGone):
                        await self._peer.send_close(msg.code if msg.code not in (1005, 1006) else 1000, "")
                return
            else:  # GONE
                self.close_reason = self.close_reason or "connection lost"
                return
