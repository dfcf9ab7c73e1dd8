"""A listener's control channel (protocol.md 2): commands down, renewals up, expiry enforced.

The relay sends only well-formed ``accept`` (and, for HTTP, ``request``) JSON; writes are serialized so a
command and the binary message that may follow it are never interleaved with another (2.2). From the
listener it accepts ``renewToken`` (validated like a new token; failure closes with 1008) and ``response``.
Anything else is a protocol violation: the channel is closed with 1008 and a description saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from aiohttp import WSMsgType, web

from hyco.exceptions import ConnectionLost, RelayError, RemoteProtocolError
from hyco.protocol import messages
from hyco.protocol.sas import SasToken

__all__ = ["ControlChannel"]

log = logging.getLogger("hyco.relay")

POLICY_VIOLATION = 1008
GOING_AWAY = 1001


class ControlChannel:
    """One connected listener.

    Args:
        ws: the prepared control-channel WebSocket.
        path: the hybrid connection path (for logs).
        listener_id: GUID part of the listener's ``sb-hc-id``, lower-case.
        base_url: the WebSocket base (``ws(s)://host:port``) rendezvous addresses for this listener use.
        token: the token the channel was opened with.
        renew: validates a renewed token text; raises RelayError when it is not acceptable.
        token_grace: seconds past the token's expiry before the channel is closed.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        *,
        path: str,
        listener_id: str,
        base_url: str,
        token: SasToken,
        renew: Callable[[str], SasToken],
        token_grace: float,
    ) -> None:
        self.ws = ws
        self.path = path
        self._listener_id = listener_id
        self.base_url = base_url
        self._expiry = token.expiry
        self._renew = renew
        self._grace = token_grace
        self._send_lock = asyncio.Lock()
        self.close_reason = ""

    @property
    def listener_id(self) -> str:
        """The GUID the sender's AllowedListeners/DisallowedListeners headers refer to."""
        return self._listener_id

    @property
    def open(self) -> bool:
        """Whether commands can still be sent."""
        return not self.ws.closed

    async def send(self, command: messages.Command) -> None:
        """Send one command.

        Raises:
            ConnectionLost: the channel is closed or the write failed.
        """
        async with self._send_lock:
            if self.ws.closed:
                raise ConnectionLost("the listener's control channel is closed")
            try:
                await self.ws.send_str(messages.encode(command))
            except (ConnectionError, RuntimeError) as exc:
                raise ConnectionLost("the listener's control channel broke") from exc

    async def close(self, code: int, reason: str) -> None:
        """Close the channel with ``code`` (1001 on shutdown, 1008 for policy)."""
        self.close_reason = reason
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close(code=code, message=reason.encode()[:123])

    async def _watch_expiry(self) -> None:
        # protocol.md 2.6: SDKs renew at expiry, so the token is enforced only after a grace window.
        while not self.ws.closed:
            delay = self._expiry + self._grace - time.time()
            if delay <= 0:
                log.warning("listener %s on %s: token expired, closing", self.listener_id, self.path)
                await self.close(POLICY_VIOLATION, "ExpiredToken: renew the token with renewToken")
                return
            await asyncio.sleep(delay)

    def _handle(self, text: str | bytes) -> None:
        command = messages.decode(text)
        if isinstance(command, messages.RenewToken):
            self._expiry = self._renew(command.token).expiry
            log.debug("listener %s on %s: token renewed", self.listener_id, self.path)
        elif isinstance(command, messages.Response):
            # Relayed HTTP is not served by this relay yet; a response can only be for an unknown request.
            log.warning(
                "listener %s on %s: response for unknown request %s ignored",
                self.listener_id,
                self.path,
                command.request_id[:64],
            )
        else:
            raise RemoteProtocolError(f"listeners may not send {type(command).__name__.lower()} commands")

    async def run(self) -> None:
        """Serve the channel until the listener or the relay closes it."""
        watchdog = asyncio.ensure_future(self._watch_expiry())
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type is WSMsgType.TEXT:
                    try:
                        self._handle(msg.data)
                    except RemoteProtocolError as exc:
                        log.warning("listener %s on %s: %s", self.listener_id, self.path, exc)
                        await self.close(POLICY_VIOLATION, f"protocol violation: {exc}")
                        return
                    except RelayError as exc:
                        log.warning(
                            "listener %s on %s: renewal refused: %s",
                            self.listener_id,
                            self.path,
                            exc,
                        )
                        await self.close(POLICY_VIOLATION, exc.description)
                        return
                elif msg.type is WSMsgType.BINARY:
                    # Java/Node listeners may send a body after a response; nothing is owed one here.
                    log.debug(
                        "listener %s on %s: unexpected binary message ignored",
                        self.listener_id,
                        self.path,
                    )
                else:  # CLOSE (answered by aiohttp), CLOSING, CLOSED, ERROR
                    if msg.type is WSMsgType.ERROR:
                        self.close_reason = f"error: {msg.data}"
                    return
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
