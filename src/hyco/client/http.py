"""Relayed HTTP on the listening side: the request a handler gets and the response it returns (protocol.md 4).

A listener given ``request_handler=`` answers plain HTTP senders::

    async def handler(request: RelayedHttpRequest) -> RelayedHttpResponse:
        data = await request.read()
        return RelayedHttpResponse(200, b"got %d bytes" % len(data), headers={"Content-Type": "text/plain"})

    listener = HybridConnectionListener(address, tp, request_handler=handler)

The request body is an async byte stream (``async for chunk in request.body``) that arrives while it is read,
with bounded memory, whatever its size; ``await request.read()`` collects it. The response body is ``bytes``
(or ``str``) or an async iterable of ``bytes`` that is streamed to the sender. How the listener carries each
direction (inline on the control channel or over a request rendezvous) is its business, not the handler's;
see :mod:`hyco.client.listener` and ``docs/http.md``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from http import HTTPStatus
from urllib.parse import urlsplit

from multidict import CIMultiDict, CIMultiDictProxy

from hyco.exceptions import InvalidInput, StreamClosed
from hyco.protocol.messages import RemoteEndpoint, has_control_characters

__all__ = [
    "HttpBody",
    "RelayedHttpRequest",
    "RelayedHttpResponse",
    "RequestHandler",
]


class HttpBody:
    """An HTTP body that arrives while it is read: an async iterator of ``bytes`` chunks, read once.

    A listener's handler gets the relayed request's body as one; :func:`hyco.request` yields a response
    whose body is one.

    Iterate it (``async for chunk in body``) or call :meth:`read`. Chunks are whatever the sender's frames
    carried (the relay sends up to 64 KiB per frame); empty chunks are never yielded.
    """

    def __init__(self, source: AsyncIterator[bytes] | bytes | None) -> None:
        self._data: bytes | None = None
        self._source: AsyncIterator[bytes] | None = None
        if isinstance(source, bytes):
            self._data = source
        elif source is not None:
            self._source = source
        self._lock = asyncio.Lock()
        self._done = source is None
        self._discarded = False
        self.bytes_read = 0

    @property
    def inline_data(self) -> bytes | None:
        """The whole body when it arrived inline and is still unread (its length is then known), else None."""
        return self._data if not self._done else None

    @property
    def at_eof(self) -> bool:
        """Whether every byte of the body has been read (or discarded)."""
        return self._done

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self.read_chunk()
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def read_chunk(self) -> bytes:
        """The next chunk, or ``b""`` at the end of the body.

        Raises:
            StreamClosed: the body was discarded (the response was already sent).
            ConnectionLost: the sender or the relay went away mid-body.
        """
        async with self._lock:
            if self._discarded:
                raise StreamClosed("the body was discarded (the response was sent, or closed)")
            if self._done:
                return b""
            if self._data is not None:
                chunk, self._data = self._data, None
                self._done = True
            else:
                assert self._source is not None
                try:
                    chunk = await anext(self._source)
                except StopAsyncIteration:
                    self._done = True
                    return b""
            self.bytes_read += len(chunk)
            return chunk

    async def read(self, limit: int | None = None) -> bytes:
        """Read the rest of the body into memory.

        Args:
            limit: refuse bodies larger than this many bytes (None: no limit).

        Raises:
            InvalidInput: the body is larger than ``limit``.
            StreamClosed, ConnectionLost: see :meth:`read_chunk`.
        """
        parts: list[bytes] = []
        size = 0
        while chunk := await self.read_chunk():
            size += len(chunk)
            if limit is not None and size > limit:
                raise InvalidInput(f"the body is larger than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def discard(self) -> None:
        """Read and drop the rest of the body; later reads raise :class:`StreamClosed`. Never raises."""
        try:
            while await self.read_chunk():
                pass
        except Exception:  # a broken body is as good as a drained one here
            self._done = True
        self._discarded = True


class RelayedHttpRequest:
    """An HTTP request relayed from a plain HTTP sender (``RelayedHttpListenerRequest`` in .NET).

    Attributes:
        id: the relay's request id (also a tracking id in logs).
        method: the HTTP method, e.g. ``"GET"``.
        target: the request target as the relay sent it: the hybrid connection path, the sender's suffix
            and query (``sb-hc-*`` pairs removed), e.g. ``/myhc/a/b?x=1`` (protocol.md 2.4).
        path: the raw (still percent-encoded) path part of ``target``, e.g. ``/myhc/a/b``.
        query: the raw query part of ``target`` without ``?`` (may be empty).
        hybrid_connection_path: the listener's hybrid connection path, e.g. ``myhc``.
        relative_path: ``path`` without the hybrid connection prefix, e.g. ``/a/b`` (``/`` at the root).
        url: the URL the sender used, e.g. ``https://ns.example/myhc/a/b?x=1``.
        headers: the sender's headers (case-insensitive; token and hop-by-hop headers removed by the relay,
            ``Via`` added; repeated headers arrive comma-joined, protocol.md 2.2).
        remote_endpoint: the sender's IP and port, when the relay says.
        body: the body as an :class:`HttpBody` (empty when the request has none).
        has_body: whether the sender sent a body.
    """

    def __init__(
        self,
        *,
        id: str,
        method: str,
        target: str,
        headers: Mapping[str, str],
        remote_endpoint: RemoteEndpoint | None,
        body: HttpBody,
        has_body: bool,
        base_url: str,
        hybrid_connection_path: str,
    ) -> None:
        self.id = id
        self.method = method
        self.target = target
        path, _, query = target.partition("?")
        self.path = path or "/"
        self.query = query
        self.hybrid_connection_path = hybrid_connection_path
        prefix = "/" + hybrid_connection_path.strip("/")
        rest = self.path
        if rest == prefix or rest.startswith(prefix + "/"):
            rest = rest[len(prefix) :]
        self.relative_path = rest or "/"
        self.url = base_url + target
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict(headers))
        self.remote_endpoint = remote_endpoint
        self.body = body
        self.has_body = has_body

    @property
    def host(self) -> str:
        """The ``Host`` the sender addressed (from the headers, else from :attr:`url`)."""
        return self.headers.get("Host") or urlsplit(self.url).netloc

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body, read into memory (see :meth:`HttpBody.read`)."""
        return await self.body.read(limit)

    def __repr__(self) -> str:
        return f"<RelayedHttpRequest {self.method} {self.target} id={self.id}>"


ResponseBody = bytes | bytearray | memoryview | str | AsyncIterable[bytes] | None


class RelayedHttpResponse:
    """What a request handler answers (``RelayedHttpListenerResponse`` in .NET).

    Args:
        status: the status code, 100-999; it reaches the sender unchanged, 502 and 504 included.
        body: ``bytes``/``str`` (UTF-8), an async iterable of ``bytes`` (streamed as it is produced), or None.
        reason: the reason phrase (default: the standard phrase for ``status``); the sender sees it verbatim.
        headers: a mapping or ``(name, value)`` pairs; repeated names are comma-joined, because the
            protocol carries headers as a flat map (protocol.md 2.2). ``Content-Length`` and other
            connection-level headers are set by the relay.

    Raises:
        InvalidInput: a status outside 100-999, or a reason or header with control characters.
    """

    def __init__(
        self,
        status: int = 200,
        body: ResponseBody = b"",
        *,
        reason: str | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> None:
        if not isinstance(status, int) or not 100 <= status <= 999:
            raise InvalidInput("an HTTP status code must be an integer from 100 to 999")
        if reason is None:
            try:
                reason = HTTPStatus(status).phrase
            except ValueError:
                reason = ""
        _check_text(reason, "reason phrase")
        self.status = status
        self.reason = reason
        pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
        self.headers: dict[str, str] = {}
        for name, value in pairs:
            _check_text(name, "header name")
            _check_text(value, "header value")
            existing = next((k for k in self.headers if k.lower() == name.lower()), None)
            if existing is None:
                self.headers[name] = value
            else:
                self.headers[existing] = f"{self.headers[existing]}, {value}"
        self.body: bytes | AsyncIterable[bytes] | None
        if isinstance(body, str):
            self.body = body.encode()
        elif isinstance(body, bytearray | memoryview):
            self.body = bytes(body)
        else:
            self.body = body

    def __repr__(self) -> str:
        return f"<RelayedHttpResponse {self.status} {self.reason}>"


def _check_text(text: str, what: str) -> None:
    if not isinstance(text, str) or has_control_characters(text):
        raise InvalidInput(f"an HTTP {what} must be text without control characters")


#: ``async def handler(request) -> RelayedHttpResponse``.
RequestHandler = Callable[[RelayedHttpRequest], Awaitable[RelayedHttpResponse]]
