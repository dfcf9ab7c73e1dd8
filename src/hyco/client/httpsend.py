"""Plain-HTTP senders (protocol.md 1.7, 4.7): any HTTP client calls a listener; these helpers add the token.

An HTTP sender needs no SDK: it calls ``https://{namespace}/{hybrid-connection}/{suffix}?{query}`` with a SAS
token in the ``ServiceBusAuthorization`` header (or the ``sb-hc-token`` query parameter), and the relay passes
the request to a listener. With curl::

    curl -H "ServiceBusAuthorization: $(hyco token sb://ns.example/myhc --key $KEY)" https://ns.example/myhc/hi

In Python, :func:`request` does the same and yields an :class:`HttpResponse` (hyco's own type: no HTTP
library's object leaks into the SDK's API)::

    async with hyco.request("POST", "https://ns.example/myhc/items", token_provider=tp, data=b"...") as resp:
        print(resp.status, resp.headers.get("Content-Type"), await resp.read())
"""

from __future__ import annotations

import contextlib
import json as json_module
import ssl as ssl_module
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from hyco.client._net import make_ssl
from hyco.client.credentials import TokenProvider
from hyco.client.http import HttpBody
from hyco.client.sender import resolve_address
from hyco.exceptions import ConnectionLost, InvalidURI, RelayTimeout, StreamClosed
from hyco.protocol.uri import normalize_audience

__all__ = ["AUTH_HEADER", "HttpResponse", "http_url", "request", "token_headers"]

#: The header .NET and Java senders put the token in (protocol.md 4.7); the relay removes it.
AUTH_HEADER = "ServiceBusAuthorization"


def http_url(address: str, suffix: str = "", *, path: str | None = None) -> str:
    """The plain HTTP(S) URL of a hybrid connection (protocol.md 1.7).

    Args:
        address: ``sb://host/hc`` (gives ``https://host/hc``), ``ws://``/``wss://``/``http(s)://`` address,
            or a connection string with ``EntityPath``.
        suffix: a path suffix and/or query to append, e.g. ``"/items?x=1"``.
        path: the hybrid connection path when ``address`` names only the namespace.

    Raises:
        InvalidURI, InvalidConnectionString: the address cannot be used.
    """
    resolved = resolve_address(address, None, path, role="HTTP sender")
    base = resolved.address.http_url()
    if suffix and not suffix.startswith(("/", "?")):
        suffix = "/" + suffix
    if "?" in base and suffix.startswith("?"):
        suffix = "&" + suffix[1:]
    return base + suffix


async def token_headers(
    url: str, token_provider: TokenProvider | None, *, path: str | None = None
) -> dict[str, str]:
    """``{"ServiceBusAuthorization": token}`` for a request to ``url`` (empty without a token provider).

    Args:
        url: the request URL (``http(s)://host/hc/...``) or an ``sb://`` address.
        token_provider: where the token comes from.
        path: the hybrid connection path, for the token's audience (default: the URL's whole path, as the
            Node helpers sign it; a hyco relay and Azure accept a token for the path or for a prefix of it).

    Raises:
        InvalidURI: ``url`` has no host.
    """
    if token_provider is None:
        return {}
    parts = urlsplit(url)
    if not parts.hostname:
        raise InvalidURI(url, "no host name")
    audience_path = (path if path is not None else parts.path).strip("/")
    token = await token_provider.get_token(normalize_audience(f"http://{parts.netloc}/{audience_path}"))
    return {AUTH_HEADER: token.token}


class HttpResponse:
    """What :func:`request` yields: the status, headers and body a listener (or the relay) answered.

    Args:
        status: the status code.
        reason: the reason phrase.
        headers: a mapping or ``(name, value)`` pairs.
        body: the body, whole or as an async iterator of chunks that arrive while it is read.
        url: the URL that was requested.
        on_close: called once by :meth:`close`, to release the connection.

    Attributes:
        status: the status code: the listener's (protocol.md 4.5) or the relay's own (401, 403, 404, 502 no
            listener, 504 listener too slow; protocol.md 4.6).
        reason: the reason phrase, e.g. the listener's description.
        headers: the response headers, read-only and case-insensitive (``headers["content-type"]``);
            ``headers.getall(name)`` lists a repeated header's values.
        url: the URL that was requested.
        body: the body as an :class:`~hyco.client.http.HttpBody`, read as it arrives (``async for chunk in
            response.body``); ``async for chunk in response`` does the same.

    The body can be read once. :func:`request` releases it when its ``async with`` block ends (or at
    :meth:`close`); reading it after that raises :class:`~hyco.exceptions.StreamClosed`.
    """

    def __init__(
        self,
        status: int,
        reason: str = "",
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: AsyncIterator[bytes] | bytes = b"",
        *,
        url: str = "",
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict(pairs))
        self.url = url
        self.body = HttpBody(body)
        self._on_close = on_close
        self._closed = False

    def __repr__(self) -> str:
        return f"<HttpResponse {self.status} {self.reason}>"

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.body

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (or the ``async with`` block of :func:`request` ended)."""
        return self._closed

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body (the rest of it, if some was already read), in memory.

        Args:
            limit: refuse bodies larger than this many bytes (None: no limit).

        Raises:
            InvalidInput: the body is larger than ``limit``.
            ConnectionLost: the connection broke mid-body.
            RelayTimeout: the request's ``timeout`` ran out.
            StreamClosed: the response was closed.
        """
        return await self.body.read(limit)

    async def text(self, encoding: str | None = None) -> str:
        """The whole body decoded: with ``encoding``, else the ``Content-Type`` charset, else UTF-8.

        Bytes that do not decode become U+FFFD rather than an error. Raises as :meth:`read`.
        """
        data = await self.read()
        return data.decode(encoding or _charset(self.headers.get("Content-Type", "")), errors="replace")

    async def json(self) -> Any:
        """The whole body parsed as JSON.

        Raises:
            ValueError: the body is not JSON (``json.JSONDecodeError``).
            ConnectionLost, RelayTimeout, StreamClosed: as :meth:`read`.
        """
        return json_module.loads(await self.read())

    def close(self) -> None:
        """Release the connection without reading the rest of the body. Idempotent."""
        if not self._closed:
            self._closed = True
            if self._on_close is not None:
                self._on_close()


def _charset(content_type: str) -> str:
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return "utf-8"


@contextlib.contextmanager
def _translate_errors(what: str, timeout: float | None) -> Iterator[None]:
    # The one place where the HTTP client's errors become hyco's (style.md habit 6).
    try:
        yield
    except TimeoutError as exc:
        raise RelayTimeout(f"{what} timed out after {timeout} s", http_status=408) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise ConnectionLost(f"{what} failed: could not reach the relay ({exc})") from exc


@contextlib.asynccontextmanager
async def request(
    method: str,
    url: str,
    *,
    token_provider: TokenProvider | None = None,
    path: str | None = None,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    data: Any = None,
    json: Any = None,
    ssl: ssl_module.SSLContext | bool | None = None,
    ca_file: str | None = None,
    proxy: str | None = None,
    timeout: float | None = None,
    allow_redirects: bool = False,
) -> AsyncIterator[HttpResponse]:
    """Send one HTTP request to a hybrid connection's listener, token added (an async context manager).

    Args:
        method: the HTTP method (anything but ``CONNECT``).
        url: ``https://host/hc[/suffix][?query]``; an ``sb://host/hc`` address or a connection string becomes
            that URL (with ``EntityPath`` and, unless ``token_provider`` is given, its key).
        token_provider: signs the ``ServiceBusAuthorization`` header; None for a hybrid connection without
            client authorization.
        path: the hybrid connection path for the token audience (see :func:`token_headers`).
        headers: more request headers.
        params: query parameters to add to ``url``.
        data: the body: bytes, str, a file, or an async iterable of bytes (sent chunked, streamed).
        json: a value to send as a JSON body instead of ``data``.
        ssl, ca_file: TLS settings, as for the listener and client.
        proxy: an ``http://host:port`` HTTP proxy.
        timeout: total seconds for the request, body included (None: no limit).
        allow_redirects: follow redirects. Off by default: a redirect is the caller's business, and following
            one would send the token header to wherever the listener points.

    Yields:
        The :class:`HttpResponse`; its body is released when the block ends.

    Raises:
        ConnectionLost: the relay could not be reached.
        RelayTimeout: the request took longer than ``timeout``.
        InvalidURI, InvalidConnectionString: ``url`` cannot be used.
    """
    if url.strip().lower().startswith(("endpoint=", "sb://", "ws://", "wss://")):
        resolved = resolve_address(url, token_provider, path, role="HTTP sender")
        token_provider = resolved.token_provider
        path = path or resolved.address.path
        url = resolved.address.http_url()
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidURI(url, "use an http:// or https:// URL, or an sb:// address")
    url = urlunsplit(parts)
    all_headers = dict(headers or {})
    all_headers.update(await token_headers(url, token_provider, path=path))
    async with aiohttp.ClientSession() as session:
        with _translate_errors(f"{method} {url}", timeout):
            raw = await session.request(
                method,
                url,
                headers=all_headers,
                params=params,
                data=data,
                json=json,
                ssl=make_ssl(ssl, ca_file),
                proxy=proxy,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=allow_redirects,
            )

        async def chunks() -> AsyncIterator[bytes]:
            while True:
                if response.closed:
                    raise StreamClosed("the response was closed; its body can no longer be read")
                with _translate_errors(f"reading the body of {method} {url}", timeout):
                    chunk = await raw.content.readany()
                if not chunk:
                    return
                yield chunk

        response = HttpResponse(
            raw.status, raw.reason or "", raw.headers.items(), chunks(), url=url, on_close=raw.close
        )
        try:
            yield response
        finally:
            response.close()
