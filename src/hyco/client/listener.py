"""The listening side: :class:`HybridConnectionListener` (protocol.md 2, 3.2, 3.3).

Theory of operation:

* One background task owns the *control channel* (``sb-hc-action=listen``). It connects, serves until the
  channel closes, and reconnects with the official delays 0, 1, 2, 5, 10, 30, 30, ... s (protocol.md 2.9); the
  delay table starts over after every successful connection. It stops only when the relay answers 404
  ("endpoint not found": the hybrid connection is gone) or when :meth:`close` is called.
* The first attempt is special: ``open()`` raises if the relay refuses outright (401, 403, 404); if the relay
  cannot be reached, ``open()`` returns with the listener *offline* and reconnecting in the background.
* Each ``accept`` command is handled in its own task, so a slow accept handler never blocks the control
  channel (protocol.md 8.1): the handler decides, then the listener dials the rendezvous address (accept) or
  the address plus ``sb-hc-statusCode``/``sb-hc-statusDescription`` (reject; the relay answers 410).
* The control channel's rules live in :class:`hyco.protocol.control.ListenerControlProtocol`; this module
  feeds it what arrives and writes what it queues, one writer at a time. Anything the relay may not send
  (bad JSON, an unknown command, a stray binary message, an oversize message, a ``body: true`` request
  without its body) closes the channel with 1008 (1009 when too big); ``last_error`` says what was wrong,
  and the listener reconnects.
* Before the token expires, a fresh one goes up the control channel as ``renewToken`` (protocol.md 2.6).
  Token renewal and reconnect delays wait on the listener's :class:`~hyco._clock.Clock`.
* aiohttp's heartbeat pings the relay every ``keep_alive_interval`` and drops the channel when no pong comes,
  which turns a silently dead network into a reconnect (protocol.md 2.7).
* Every control-channel close code (1000, 1001, 1008, 1011 including the 24 h ``NameRenewalFailed`` recycle,
  protocol.md 2.8) ends in the same place: offline, then reconnect.

Why this module is longer than ~600 lines: it is one object's lifecycle (open, reconnect, serve the control
channel, renew tokens, hand out streams, close) whose parts share the listener's state; the rules live in
``hyco.protocol.control`` and the accept dials in ``hyco.client.accepting``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import inspect
import logging
import ssl as ssl_module
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import aiohttp

from hyco._clock import SYSTEM_CLOCK, Clock
from hyco.client._httpserve import HttpServing, serve_request
from hyco.client._net import NetOptions, make_ssl, open_websocket
from hyco.client._rawws import RawWebSocket
from hyco.client.accepting import AcceptContext, AcceptHandler, dial_rejection, dial_rendezvous
from hyco.client.credentials import SecurityToken, TokenProvider
from hyco.client.http import RequestHandler
from hyco.client.runtime import HybridConnectionRuntimeInformation, get_runtime_information
from hyco.client.sender import DEFAULT_STREAM_KEEP_ALIVE, resolve_address
from hyco.client.stream import (
    DEFAULT_CLOSE_TIMEOUT,
    HybridConnectionStream,
)
from hyco.exceptions import (
    AuthorizationFailed,
    ConnectionLost,
    EndpointNotFound,
    Forbidden,
    HycoError,
    InvalidInput,
    RelayTimeout,
    RemoteProtocolError,
)
from hyco.protocol.backoff import RECONNECT_DELAYS, reconnect_delays
from hyco.protocol.control import (
    DEFAULT_MAX_CONTROL_MESSAGE,
    AcceptReceived,
    BinaryMessage,
    CloseMessage,
    ListenerControlProtocol,
    RequestReceived,
    TextMessage,
)
from hyco.protocol.messages import Accept, Request, Response
from hyco.protocol.uri import Action

__all__ = ["AcceptContext", "AcceptHandler", "HybridConnectionListener", "ListenerState"]

logger = logging.getLogger("hyco.client.listener")

#: .NET and Java give the rendezvous dial 20 s (protocol.md 3.2, 6).
DEFAULT_ACCEPT_TIMEOUT = 20.0
DEFAULT_OPEN_TIMEOUT = 60.0
DEFAULT_KEEP_ALIVE = 30.0
#: Accepted streams waiting for ``accept()`` (plus dials in flight) before new senders get 503.
DEFAULT_MAX_PENDING_ACCEPTS = 1000
#: .NET's description when the accept handler throws (protocol.md 3.3).
_HANDLER_FAILED = (
    "The Listener's custom AcceptHandler threw an exception. See Listener logs for details. TrackingId: {id}."
)
_CLOSE_MEANINGS = {
    1000: "the relay closed the control channel",
    1001: "the hybrid connection was deleted or disabled, or the relay is shutting down",
    1008: "the token expired or a policy was violated",
    1011: "the relay recycled the connection or had an internal error",
}


class ListenerState(enum.StrEnum):
    """Where the listener is in its life (``Connecting``/``Online``/``Offline`` in .NET)."""

    CLOSED = "closed"
    CONNECTING = "connecting"
    ONLINE = "online"
    OFFLINE = "offline"


StateCallback = Callable[["HybridConnectionListener"], object]


class HybridConnectionListener:
    """Listens on a hybrid connection and yields each accepted sender as a :class:`HybridConnectionStream`.

    Args:
        address: ``sb://host[:port]/path`` (TLS), ``wss://``/``https://``, ``ws://``/``http://`` (plain), or a
            connection string with a key or SAS.
        token_provider: where tokens come from (a listener always needs one, protocol.md 5.4).
        path: the hybrid connection path when ``address`` names only the namespace.
        accept_handler: ``handler(context) -> bool | None`` (sync or async) run for every sender before it is
            accepted; return False or call ``context.reject(status, description)`` to refuse it.
        request_handler: ``async def handler(request: RelayedHttpRequest) -> RelayedHttpResponse`` answering
            plain HTTP senders (protocol.md 4; see ``docs/http.md``); also settable as an attribute. Without
            one, HTTP senders get 501. Requests are served concurrently, each in its own task.
        ssl, ca_file: TLS settings for a relay with a private certificate.
        proxy, proxy_headers: HTTP proxy (``CONNECT`` for TLS).
        keep_alive_interval: seconds between control-channel pings; no pong within half of it drops and
            reconnects the channel.
        open_timeout: seconds for each control-channel handshake.
        accept_timeout: seconds for each rendezvous dial (20 s, as .NET).
        reconnect_delays: delay table; the last entry repeats forever.
        on_connecting, on_online, on_offline: ``callback(listener)`` on each state change (sync or async);
            ``listener.last_error`` says why it went offline.
        read_timeout, write_timeout, stream_keep_alive, close_timeout: defaults for accepted streams.
        max_pending_accepts: accepted streams not yet taken by ``accept()`` (plus dials in flight) before
            new senders are rejected with 503, so an application that falls behind cannot run out of sockets.
        max_control_message_size: the largest message the relay may send on the control channel, in bytes.
        clock: what token renewal and reconnect delays wait on (``hyco.testing.FakeClock`` in tests).

    Raises:
        InvalidInput: no token provider, or an address that cannot be used.

    Example::

        async with HybridConnectionListener("sb://relay.example/echo", tp) as listener:
            async for stream in listener:
                ...
    """

    def __init__(
        self,
        address: str,
        token_provider: TokenProvider | None = None,
        *,
        path: str | None = None,
        accept_handler: AcceptHandler | None = None,
        request_handler: RequestHandler | None = None,
        ssl: ssl_module.SSLContext | bool | None = None,
        ca_file: str | None = None,
        proxy: str | None = None,
        proxy_headers: Mapping[str, str] | None = None,
        keep_alive_interval: float | None = DEFAULT_KEEP_ALIVE,
        open_timeout: float = DEFAULT_OPEN_TIMEOUT,
        accept_timeout: float = DEFAULT_ACCEPT_TIMEOUT,
        reconnect_delays: Sequence[float] = RECONNECT_DELAYS,
        on_connecting: StateCallback | None = None,
        on_online: StateCallback | None = None,
        on_offline: StateCallback | None = None,
        read_timeout: float | None = None,
        write_timeout: float | None = None,
        stream_keep_alive: float | None = DEFAULT_STREAM_KEEP_ALIVE,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        max_pending_accepts: int = DEFAULT_MAX_PENDING_ACCEPTS,
        max_control_message_size: int = DEFAULT_MAX_CONTROL_MESSAGE,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        resolved = resolve_address(address, token_provider, path, role="listener")
        if resolved.token_provider is None:
            raise InvalidInput(
                "a listener needs a token provider (TokenProvider.from_shared_access_key(...)) or a "
                "connection string with a key: relays always authorize listeners"
            )
        if not reconnect_delays:
            raise InvalidInput("reconnect_delays must not be empty")
        self.address = resolved.address
        self.token_provider: TokenProvider = resolved.token_provider
        self.accept_handler = accept_handler
        self.request_handler = request_handler
        self._net = NetOptions(
            ssl=make_ssl(ssl, ca_file), proxy=proxy, proxy_headers=dict(proxy_headers or {})
        )
        self.keep_alive_interval = keep_alive_interval
        self.open_timeout = open_timeout
        self.accept_timeout = accept_timeout
        self.reconnect_delays = tuple(reconnect_delays)
        self.on_connecting = on_connecting
        self.on_online = on_online
        self.on_offline = on_offline
        self._stream_options: dict[str, Any] = {
            "read_timeout": read_timeout,
            "write_timeout": write_timeout,
            "keep_alive_interval": stream_keep_alive,
            "close_timeout": close_timeout,
        }
        #: The GUID part of every control-channel ``sb-hc-id`` (the listener id of protocol.md 2.8).
        self.listener_id = str(uuid.uuid4())
        self._state = ListenerState.CLOSED
        self._last_error: HycoError | None = None
        self._fatal: HycoError | None = None
        self._queue: asyncio.Queue[HybridConnectionStream | None] = asyncio.Queue()
        self.max_pending_accepts = max_pending_accepts
        self.max_control_message_size = max_control_message_size
        self._clock = clock
        self._accepting = 0  # accepts being dialed right now
        self._run_task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._online = asyncio.Event()
        self._stopped = asyncio.Event()
        self._control: aiohttp.ClientWebSocketResponse | None = None
        self._control_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._renewals = 0

    def __repr__(self) -> str:
        return f"<HybridConnectionListener {self.address} {self._state.value}>"

    # ------------------------------------------------------------------ public state

    @property
    def state(self) -> ListenerState:
        """The current :class:`ListenerState`."""
        return self._state

    @property
    def is_online(self) -> bool:
        """Whether the control channel is connected (senders can reach this listener)."""
        return self._state is ListenerState.ONLINE

    @property
    def last_error(self) -> HycoError | None:
        """The most recent connection error (why the listener is or was offline), or None."""
        return self._last_error

    @property
    def token_renewals(self) -> int:
        """How many ``renewToken`` messages were sent on the current and earlier control channels."""
        return self._renewals

    # ------------------------------------------------------------------ lifecycle

    async def get_runtime_information(self) -> HybridConnectionRuntimeInformation:
        """The hybrid connection's listener count and settings (``GetRuntimeInformationAsync``).

        Raises:
            AuthorizationFailed: the token lacks Manage rights; others as
                :func:`hyco.client.runtime.get_runtime_information`.
        """
        return await get_runtime_information(self.address, self.token_provider, self._net, self.open_timeout)

    async def open(self) -> None:
        """Open the control channel.

        Returns once the listener is online, or once the first attempt failed for a reason that may pass (the
        relay is unreachable or busy): it is then offline and keeps reconnecting in the background; see
        :attr:`state`, :attr:`last_error` and :meth:`wait_online`.

        Raises:
            EndpointNotFound: no such hybrid connection (404).
            AuthorizationFailed: wrong key or expired token (401).
            Forbidden: the rule lacks the Listen right (403).
            InvalidInput: called twice.
        """
        if self._run_task is not None:
            raise InvalidInput("the listener was already opened; create a new one to listen again")
        first: asyncio.Future[HycoError | None] = asyncio.get_running_loop().create_future()
        self._run_task = asyncio.get_running_loop().create_task(self._run(first))
        error = await first
        if error is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._run_task
            raise error

    async def close(self) -> None:
        """Close the control channel and stop reconnecting. Streams already accepted stay open.

        Idempotent. Streams accepted but not yet taken with :meth:`accept` are closed.
        """
        self._closing.set()
        timeout = self._stream_options["close_timeout"]
        control = self._control
        if control is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(timeout):
                    await control.close(code=1000, message=b"Normal Closure")
        if self._run_task is not None and not self._run_task.done() and control is None:
            # Connecting or waiting to reconnect: nothing to close gracefully.
            self._run_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._run_task
        if self._run_task is not None and not self._run_task.done():
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(self._run_task)
            except TimeoutError:
                self._run_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._run_task
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                await item.close()
        self._queue.put_nowait(None)
        self._set_state(ListenerState.CLOSED)

    async def accept(self) -> HybridConnectionStream | None:
        """Wait for the next accepted sender.

        Returns:
            The stream, or None once the listener was closed.

        Raises:
            EndpointNotFound: the listener stopped because its hybrid connection no longer exists.
            InvalidInput: the listener was never opened.
        """
        if self._run_task is None:
            raise InvalidInput("open the listener (await listener.open() or async with) before accept()")
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # wake every other waiter too
            if self._fatal is not None and not self._closing.is_set():
                raise self._fatal
            return None
        return item

    async def serve_requests(
        self,
        handler: RequestHandler,
        *,
        ready: Callable[[HybridConnectionListener], object] | None = None,
    ) -> None:
        """Answer relayed HTTP requests with ``handler`` until the listener closes (or this is cancelled).

        Opens the listener unless it is already open (and then closes it on the way out). WebSocket senders
        have no HTTP handler to go to: each one is closed as soon as it is accepted.

        Args:
            handler: becomes :attr:`request_handler`.
            ready: ``ready(listener)`` is called once the listener is open.

        Raises:
            EndpointNotFound, AuthorizationFailed, Forbidden: the listener could not open (see :meth:`open`).
        """
        self.request_handler = handler
        owned = self.state is ListenerState.CLOSED
        if owned:
            await self.open()
        try:
            if ready is not None:
                ready(self)
            async for stream in self:
                await stream.close()
        finally:
            if owned:
                await self.close()

    async def wait_online(self, timeout: float | None = None) -> None:
        """Wait until the listener is online.

        Raises:
            RelayTimeout: not online within ``timeout`` seconds (``last_error`` says why).
            EndpointNotFound: the listener stopped for good.
        """
        online = asyncio.ensure_future(self._online.wait())
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            done, _ = await asyncio.wait({online, stopped}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            online.cancel()
            stopped.cancel()
        if online in done and self._online.is_set():
            return
        if self._fatal is not None:
            raise self._fatal
        if stopped in done:
            raise InvalidInput("the listener is closed")
        raise RelayTimeout(f"the listener did not come online within {timeout} s: {self._last_error}")

    def __aiter__(self) -> AsyncIterator[HybridConnectionStream]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[HybridConnectionStream]:
        while (stream := await self.accept()) is not None:
            yield stream

    async def __aenter__(self) -> HybridConnectionListener:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ state changes

    def _set_state(self, state: ListenerState) -> None:
        if state is self._state:
            return
        self._state = state
        if state is ListenerState.ONLINE:
            self._online.set()
        else:
            self._online.clear()
        if state is ListenerState.CLOSED:
            self._stopped.set()
        callback = {
            ListenerState.CONNECTING: self.on_connecting,
            ListenerState.ONLINE: self.on_online,
            ListenerState.OFFLINE: self.on_offline,
        }.get(state)
        if callback is None:
            return
        try:
            result = callback(self)
            if inspect.isawaitable(result):
                self._spawn(_await_callback(result))
        except Exception:
            logger.exception("! a %s callback raised", state.value)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sleep(self, delay: float) -> None:
        """Wait ``delay`` on the listener's clock, or until :meth:`close`."""
        if delay <= 0:
            return
        sleeping = asyncio.ensure_future(self._clock.sleep(delay))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({sleeping, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            closing.cancel()

    # ------------------------------------------------------------------ the control channel

    async def _run(self, first: asyncio.Future[HycoError | None]) -> None:
        delays = reconnect_delays(self.reconnect_delays)
        try:
            while not self._closing.is_set():
                self._set_state(ListenerState.CONNECTING)
                try:
                    ws, session, token = await self._connect()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    error = _as_hyco_error(exc)
                    self._last_error = error
                    permanent = isinstance(error, EndpointNotFound) or (
                        not first.done() and isinstance(error, AuthorizationFailed | Forbidden | InvalidInput)
                    )
                    if permanent:
                        logger.warning("! listener for %s stops: %s", self.address, error)
                        self._fatal = error
                        if not first.done():
                            first.set_result(error)
                        break
                    logger.info("! listener for %s is offline: %s", self.address, error)
                    self._set_state(ListenerState.OFFLINE)
                    if not first.done():
                        first.set_result(None)
                    await self._sleep(next(delays))
                    continue
                if not first.done():
                    first.set_result(None)
                delays = reconnect_delays(self.reconnect_delays)  # .NET resets the table on success
                error = await self._serve(ws, session, token)
                if self._closing.is_set():
                    break
                self._last_error = error
                logger.info("! listener for %s is offline: %s", self.address, error)
                self._set_state(ListenerState.OFFLINE)
                await self._sleep(next(delays))
        finally:
            if not first.done():
                first.set_result(None)
            self._set_state(ListenerState.CLOSED)
            self._queue.put_nowait(None)

    async def _connect(
        self,
    ) -> tuple[aiohttp.ClientWebSocketResponse, aiohttp.ClientSession, SecurityToken]:
        token = await self.token_provider.get_token(self.address.audience)
        url = self.address.websocket_url(Action.LISTEN, self.listener_id)
        ws, session = await open_websocket(
            url,
            what=f"listening on {self.address}",
            options=self._net,
            headers={"ServiceBusAuthorization": token.token},
            handshake_timeout=self.open_timeout,
            heartbeat=self.keep_alive_interval,
            autoclose=True,
        )
        return ws, session, token

    async def _serve(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        session: aiohttp.ClientSession,
        token: SecurityToken,
    ) -> HycoError:
        """Drive one control channel until it ends; return why it ended."""
        renewable = self.token_provider.renewable
        protocol = ListenerControlProtocol(
            renew_at=token.renew_at if renewable else None, max_message_size=self.max_control_message_size
        )
        self._control = ws
        self._set_state(ListenerState.ONLINE)
        logger.info("= listener for %s is online", self.address)
        renewer = (
            asyncio.get_running_loop().create_task(self._renew(ws, protocol, token)) if renewable else None
        )
        violation: RemoteProtocolError | None = None
        reason = ""
        try:
            while True:
                msg = await ws.receive()
                try:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        protocol.receive_text(msg.data)
                    elif msg.type is aiohttp.WSMsgType.BINARY:
                        protocol.receive_binary(msg.data)
                    else:  # aiohttp answered a Close itself (autoclose); or the connection broke
                        if msg.type is aiohttp.WSMsgType.CLOSE:
                            reason = str(msg.extra or "")
                        break
                except RemoteProtocolError as exc:
                    logger.warning("! the relay broke the control-channel protocol: %s", exc.reason)
                    violation = exc
                    await self._write(ws, protocol)  # the Close the protocol queued
                    break
                for event in protocol.events_received():
                    if isinstance(event, AcceptReceived):
                        self._spawn(self._handle_accept(event.accept))
                    elif isinstance(event, RequestReceived):
                        self._spawn(self._handle_request(ws, protocol, event.request, event.body))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # anything aiohttp raises ends this channel, never the listener
            return _as_hyco_error(exc)
        finally:
            protocol.receive_eof()  # later writes (a renewal, a response) find the channel closed
            self._control = None
            if renewer is not None:
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await renewer
            with contextlib.suppress(Exception):
                await ws.close()
            await session.close()
        if violation is not None:
            error = RemoteProtocolError(
                f"the relay broke the control-channel protocol ({violation.reason}); the listener closed the "
                f"channel with {violation.close_code} and reconnects",
                close_code=violation.close_code,
            )
            error.__cause__ = violation
            return error
        code = ws.close_code
        failure = ws.exception()
        if code in _CLOSE_MEANINGS:
            lost = ConnectionLost(
                f"{_CLOSE_MEANINGS[code]} (close code {code}{': ' + reason if reason else ''})"
            )
            lost.close_code = code
            return lost
        return ConnectionLost(f"the control channel was lost ({failure or f'close code {code}'})")

    async def _write(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        protocol: ListenerControlProtocol,
        queue: Callable[[], None] = lambda: None,
    ) -> None:
        """Queue with ``queue()`` and write everything queued, one writer at a time (protocol.md 2.2).

        Raises:
            LocalProtocolError: the channel is closed (from ``queue``).
        """
        async with self._control_lock:
            queue()
            for message in protocol.messages_to_send():
                if isinstance(message, TextMessage):
                    await ws.send_str(message.text)
                elif isinstance(message, BinaryMessage):
                    await ws.send_bytes(message.data)
                else:
                    assert isinstance(message, CloseMessage)
                    await ws.close(code=message.code, message=message.reason.encode())

    async def _renew(
        self, ws: aiohttp.ClientWebSocketResponse, protocol: ListenerControlProtocol, token: SecurityToken
    ) -> None:
        # protocol.md 2.6: the relay closes the channel (1008) if the token runs out; renew well before.
        current = token
        while True:
            delay = protocol.renewal_delay(self._clock.time())
            assert delay is not None  # only started for renewable tokens
            await self._clock.sleep(delay)
            try:
                fresh = await self.token_provider.get_token(self.address.audience)
            except Exception as exc:
                self._last_error = _as_hyco_error(exc)
                logger.warning("! could not renew the listener token: %s", exc)
                protocol.postpone_renewal()
                continue
            if fresh.token == current.token:
                protocol.postpone_renewal(fresh.renew_at)
                current = fresh
                continue
            try:
                renewal = functools.partial(protocol.send_renew_token, fresh.token, fresh.renew_at)
                await self._write(ws, protocol, renewal)
            except Exception as exc:  # the channel is going down; the reconnect brings a fresh token
                logger.info("! renewToken not sent: %s", exc)
                return
            self._renewals += 1
            logger.debug("> renewToken sent")
            current = fresh

    # ------------------------------------------------------------------ accepting senders

    def _base_url(self) -> str:
        scheme = "https" if self.address.tls else "http"
        return f"{scheme}://{self.address.netloc}"

    async def _handle_accept(self, accept: Accept) -> None:
        context = AcceptContext(accept, self._base_url())
        accepted = True
        if self._queue.qsize() + self._accepting >= self.max_pending_accepts:
            # Nobody takes the streams fast enough: refuse instead of holding sockets without bound.
            context.reject(
                503, f"The listener has {self.max_pending_accepts} connections waiting; retry later."
            )
            accepted = False
        elif self.accept_handler is not None:
            try:
                result = self.accept_handler(context)
                if inspect.isawaitable(result):
                    result = await result
                accepted = result is not False and not context.rejected
            except Exception:
                logger.exception("! the accept handler raised for %s", accept.id)
                context.reject(502, _HANDLER_FAILED.format(id=accept.id))
                accepted = False
        try:
            if accepted:
                self._accepting += 1
                try:
                    await self._rendezvous(accept, context)
                finally:
                    self._accepting -= 1
            else:
                await self._reject(accept, context)
        except HycoError as exc:
            logger.warning(
                "! could not complete %s for %s: %s", "accept" if accepted else "reject", accept.id, exc
            )

    async def _rendezvous(self, accept: Accept, context: AcceptContext) -> None:
        stream = await dial_rendezvous(accept, context, self._net, self.accept_timeout, self._stream_options)
        if self._closing.is_set():
            await stream.close()
            return
        self._queue.put_nowait(stream)

    async def _reject(self, accept: Accept, context: AcceptContext) -> None:
        await dial_rejection(accept, context, self._net, self.accept_timeout)

    async def _handle_request(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        protocol: ListenerControlProtocol,
        request: Request,
        body: bytes | None,
    ) -> None:
        # protocol.md 4.2/4.3; the whole exchange (rendezvous, inline or not, 500/501) is in _httpserve.
        async def send_control(response: Response, data: bytes | None) -> None:
            await self._write(ws, protocol, lambda: protocol.send_response(response, data))

        async def dial(address: str) -> RawWebSocket:
            return await RawWebSocket.connect(
                address,
                options=self._net,
                what=f"answering HTTP request {request.id or ''}".rstrip(),
                timeout=self.accept_timeout,
            )

        serving = HttpServing(
            handler=self.request_handler,
            send_control=send_control,
            dial=dial,
            base_url=self._base_url(),
            hybrid_connection_path=self.address.path,
        )
        await serve_request(serving, request, body)


async def _await_callback(result: Awaitable[Any]) -> None:
    try:
        await result
    except Exception:
        logger.exception("! a listener callback raised")


def _as_hyco_error(exc: BaseException) -> HycoError:
    if isinstance(exc, HycoError):
        return exc
    error = ConnectionLost(f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error
