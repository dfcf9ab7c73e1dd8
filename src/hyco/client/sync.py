"""Blocking twins of the SDK classes: same names, same arguments, the same asyncio core underneath.

Every call is handed to one event loop that runs in a background daemon thread (a *portal*, as anyio's
``from_thread`` and trio's blocking portals do), so the blocking API cannot drift from the asyncio one:
there is only one implementation of reconnects, renewals, half-close and timeouts (style.md habit 7).

Callbacks (``accept_handler``, ``on_online``, ...) given to the blocking listener run in worker threads, so
they may block. Do not call the blocking API from inside hyco's own loop thread; it raises instead of
deadlocking.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from hyco.client import credentials as _acredentials
from hyco.client import listener as _alistener
from hyco.client import sender as _asender
from hyco.client import stream as _astream
from hyco.client.credentials import SecurityToken, TokenSource
from hyco.client.listener import AcceptContext, ListenerState
from hyco.client.runtime import HybridConnectionRuntimeInformation
from hyco.exceptions import HycoError, LocalProtocolError, RelayTimeout
from hyco.protocol.connection_string import RelayConnectionString
from hyco.protocol.messages import RemoteEndpoint

__all__ = [
    "AcceptContext",
    "HybridConnectionClient",
    "HybridConnectionListener",
    "HybridConnectionStream",
    "ListenerState",
    "TokenProvider",
]

T = TypeVar("T")


class _Portal:
    """An event loop in a daemon thread, and a way to run coroutines on it and wait for them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="hyco-sync-loop", daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise LocalProtocolError(
                "a blocking hyco call was made from hyco's own event loop thread; use the asyncio API there"
            )
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            # KeyboardInterrupt or similar in the calling thread: do not leave the operation running.
            future.cancel()
            raise


_portal: _Portal | None = None
_portal_lock = threading.Lock()


def _get_portal() -> _Portal:
    global _portal
    with _portal_lock:
        if _portal is None:
            _portal = _Portal()
        return _portal


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return _get_portal().call(coro)


async def _within(coro: Coroutine[Any, Any, T], limit: float | None, what: str) -> T:
    try:
        async with asyncio.timeout(limit):
            return await coro
    except TimeoutError:
        raise RelayTimeout(f"{what} did not finish within {limit} s") from None


class HybridConnectionStream:
    """Blocking twin of :class:`hyco.client.stream.HybridConnectionStream`; same methods, same errors."""

    def __init__(self, stream: _astream.HybridConnectionStream) -> None:
        self._stream = stream

    def __repr__(self) -> str:
        return repr(self._stream).replace("<", "<sync ", 1)

    @property
    def tracking_id(self) -> str:
        """The connection's tracking id."""
        return self._stream.tracking_id

    @property
    def subprotocol(self) -> str | None:
        """The negotiated sub-protocol, or None."""
        return self._stream.subprotocol

    @property
    def headers(self) -> Mapping[str, str]:
        """The sender's upgrade headers (listener side) or the handshake response headers (sender side)."""
        return self._stream.headers

    @property
    def remote_endpoint(self) -> RemoteEndpoint | None:
        """The sender's address (listener side), when known."""
        return self._stream.remote_endpoint

    @property
    def read_timeout(self) -> float | None:
        """Seconds a read may wait (None: forever)."""
        return self._stream.read_timeout

    @read_timeout.setter
    def read_timeout(self, value: float | None) -> None:
        self._stream.read_timeout = value

    @property
    def write_timeout(self) -> float | None:
        """Seconds a write may take (None: forever)."""
        return self._stream.write_timeout

    @write_timeout.setter
    def write_timeout(self, value: float | None) -> None:
        self._stream.write_timeout = value

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._stream.closed

    @property
    def at_eof(self) -> bool:
        """Whether the peer closed its side and everything was read."""
        return self._stream.at_eof

    def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes; ``b""`` at the end. Raises as the asyncio ``read``."""
        return _run(self._stream.read(n))

    def readexactly(self, n: int) -> bytes:
        """Read exactly ``n`` bytes. Raises as the asyncio ``readexactly``."""
        return _run(self._stream.readexactly(n))

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as one binary message. Raises as the asyncio ``write``."""
        _run(self._stream.write(data))

    def drain(self) -> None:
        """Kept for symmetry with the asyncio API (writes already wait)."""
        _run(self._stream.drain())

    def send_bytes(self, data: bytes | bytearray | memoryview) -> None:
        """Send one binary message."""
        _run(self._stream.send_bytes(data))

    def send_text(self, text: str) -> None:
        """Send one text message."""
        _run(self._stream.send_text(text))

    def receive(self) -> str | bytes | None:
        """The next message, or None once the peer closed."""
        return _run(self._stream.receive())

    def shutdown(self) -> None:
        """Half-close: send Close and keep reading."""
        _run(self._stream.shutdown())

    def close(self) -> None:
        """Close both directions (waits briefly for the peer's Close)."""
        _run(self._stream.close())

    def abort(self, code: int | None = 1011, reason: str = "aborted") -> None:
        """Close at once with an error ``code``, without waiting for the peer (like a TCP reset).

        With ``code=None`` no Close is sent: the TCP connection is dropped as if this process had died, and
        the relay tells the peer with 1011. Idempotent; never raises. See the asyncio
        :meth:`hyco.HybridConnectionStream.abort`.
        """
        _run(self._stream.abort(code, reason))

    def __iter__(self) -> Iterator[str | bytes]:
        while (message := self.receive()) is not None:
            yield message

    def __enter__(self) -> HybridConnectionStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class TokenProvider:
    """Blocking twin of :class:`hyco.client.credentials.TokenProvider`: the same ``from_*`` constructors,
    and ``get_token`` / ``token_for`` block and return the token.

    The blocking clients take either this or the asyncio provider.

    Example::

        tokens = TokenProvider.from_shared_access_key("RootManageSharedAccessKey", key)
        header = tokens.token_for("sb://ns.example/echo")   # "SharedAccessSignature sr=..."
    """

    def __init__(self, provider: _acredentials.TokenProvider) -> None:
        self.provider = provider

    def __repr__(self) -> str:
        return repr(self.provider).replace("<", "<sync ", 1)

    @classmethod
    def from_shared_access_key(
        cls,
        key_name: str,
        key: str,
        *,
        token_ttl: float = _acredentials.DEFAULT_TOKEN_TTL,
        clock: Callable[[], float] = time.time,
    ) -> TokenProvider:
        """Sign tokens locally with a shared access rule; raises as the asyncio one."""
        return cls(
            _acredentials.TokenProvider.from_shared_access_key(
                key_name, key, token_ttl=token_ttl, clock=clock
            )
        )

    @classmethod
    def from_sas(cls, token: str, *, clock: Callable[[], float] = time.time) -> TokenProvider:
        """Hand out one fixed SAS token; raises as the asyncio one."""
        return cls(_acredentials.TokenProvider.from_sas(token, clock=clock))

    @classmethod
    def from_connection_string(
        cls, connection_string: str | RelayConnectionString, *, clock: Callable[[], float] = time.time
    ) -> TokenProvider | None:
        """The provider a connection string's credentials give, or None; raises as the asyncio one."""
        provider = _acredentials.TokenProvider.from_connection_string(connection_string, clock=clock)
        return None if provider is None else cls(provider)

    @classmethod
    def from_callable(cls, source: TokenSource, *, clock: Callable[[], float] = time.time) -> TokenProvider:
        """Ask ``source(audience, valid_for)`` for each token (sync callables run in a worker thread)."""
        return cls(_acredentials.TokenProvider.from_callable(source, clock=clock))

    @property
    def renewable(self) -> bool:
        """Whether asking again can yield a fresher token (false for a fixed SAS string)."""
        return self.provider.renewable

    def get_token(self, audience: str, valid_for: float | None = None) -> SecurityToken:
        """A token for ``audience`` (blocks); see the asyncio ``get_token``."""
        return _run(self.provider.get_token(audience, valid_for))

    def token_for(self, address: str, valid_for: float | None = None) -> str:
        """The SAS token text for a hybrid connection address (blocks); see the asyncio ``token_for``."""
        return _run(self.provider.token_for(address, valid_for))


AnyTokenProvider = TokenProvider | _acredentials.TokenProvider


def _core_provider(token_provider: AnyTokenProvider | None) -> _acredentials.TokenProvider | None:
    return token_provider.provider if isinstance(token_provider, TokenProvider) else token_provider


class HybridConnectionClient:
    """Blocking twin of :class:`hyco.client.sender.HybridConnectionClient`; same arguments."""

    def __init__(self, address: str, token_provider: AnyTokenProvider | None = None, **kwargs: Any) -> None:
        self._client = _asender.HybridConnectionClient(address, _core_provider(token_provider), **kwargs)

    def __repr__(self) -> str:
        return repr(self._client).replace("<", "<sync ", 1)

    @property
    def address(self) -> Any:
        """The parsed address."""
        return self._client.address

    def connect(
        self,
        headers: Mapping[str, str] | None = None,
        subprotocols: Sequence[str] = (),
        *,
        connect_timeout: float | None = None,
    ) -> HybridConnectionStream:
        """Open a relayed connection; raises as the asyncio ``connect``."""
        stream = _run(self._client.connect(headers, subprotocols, connect_timeout=connect_timeout))
        return HybridConnectionStream(stream)

    def get_runtime_information(self) -> HybridConnectionRuntimeInformation:
        """The hybrid connection's listener count and settings; raises as the asyncio twin."""
        return _run(self._client.get_runtime_information())


Callback = Callable[["HybridConnectionListener"], object]


class HybridConnectionListener:
    """Blocking twin of :class:`hyco.client.listener.HybridConnectionListener`; same arguments.

    ``accept_handler(context)`` and the ``on_*`` callbacks run in worker threads and may block.
    """

    def __init__(
        self,
        address: str,
        token_provider: AnyTokenProvider | None = None,
        *,
        accept_handler: Callable[[AcceptContext], bool | None] | None = None,
        on_connecting: Callback | None = None,
        on_online: Callback | None = None,
        on_offline: Callback | None = None,
        **kwargs: Any,
    ) -> None:
        handler: _alistener.AcceptHandler | None = None
        if accept_handler is not None:
            user_handler = accept_handler

            async def handler(context: AcceptContext) -> bool | None:
                return await asyncio.to_thread(user_handler, context)

        def wrap(callback: Callback | None) -> _alistener.StateCallback | None:
            if callback is None:
                return None
            user_callback = callback
            return lambda _: asyncio.to_thread(user_callback, self)

        async def build() -> _alistener.HybridConnectionListener:
            return _alistener.HybridConnectionListener(
                address,
                _core_provider(token_provider),
                accept_handler=handler,
                on_connecting=wrap(on_connecting),
                on_online=wrap(on_online),
                on_offline=wrap(on_offline),
                **kwargs,
            )

        self._listener = _run(build())

    def __repr__(self) -> str:
        return repr(self._listener).replace("<", "<sync ", 1)

    @property
    def address(self) -> Any:
        """The parsed address."""
        return self._listener.address

    @property
    def state(self) -> ListenerState:
        """The current state."""
        return self._listener.state

    @property
    def is_online(self) -> bool:
        """Whether the control channel is connected."""
        return self._listener.is_online

    @property
    def last_error(self) -> HycoError | None:
        """The most recent connection error, or None."""
        return self._listener.last_error

    @property
    def listener_id(self) -> str:
        """The listener's GUID."""
        return self._listener.listener_id

    @property
    def token_renewals(self) -> int:
        """How many ``renewToken`` messages were sent."""
        return self._listener.token_renewals

    def get_runtime_information(self) -> HybridConnectionRuntimeInformation:
        """The hybrid connection's listener count and settings; raises as the asyncio twin."""
        return _run(self._listener.get_runtime_information())

    def open(self) -> None:
        """Open the control channel; raises as the asyncio ``open``."""
        _run(self._listener.open())

    def close(self) -> None:
        """Close the control channel and stop reconnecting."""
        _run(self._listener.close())

    def accept(self, timeout: float | None = None) -> HybridConnectionStream | None:
        """The next accepted stream, or None once closed.

        Raises:
            RelayTimeout: nothing was accepted within ``timeout`` seconds.
            EndpointNotFound: the listener stopped because its hybrid connection is gone.
        """
        stream = _run(_within(self._listener.accept(), timeout, "accept()"))
        return None if stream is None else HybridConnectionStream(stream)

    def wait_online(self, timeout: float | None = None) -> None:
        """Block until online; raises as the asyncio ``wait_online``."""
        _run(self._listener.wait_online(timeout))

    def __iter__(self) -> Iterator[HybridConnectionStream]:
        while (stream := self.accept()) is not None:
            yield stream

    def __enter__(self) -> HybridConnectionListener:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
