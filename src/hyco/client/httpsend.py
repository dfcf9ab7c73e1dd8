"""Plain-HTTP senders (protocol.md 1.7, 4.7): any HTTP client calls a listener; these helpers add the token.

An HTTP sender needs no SDK: it calls ``https://{namespace}/{hybrid-connection}/{suffix}?{query}`` with a SAS
token in the ``ServiceBusAuthorization`` header (or the ``sb-hc-token`` query parameter), and the relay passes
the request to a listener. With curl::

    curl -H "ServiceBusAuthorization: $(hyco token sb://ns.example/myhc --key $KEY)" https://ns.example/myhc/hi

In Python, :func:`request` does the same with aiohttp::

    async with hyco.request("POST", "https://ns.example/myhc/items", token_provider=tp, data=b"...") as resp:
        print(resp.status, await resp.read())
"""

from __future__ import annotations

import contextlib
import ssl as ssl_module
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from hyco.client._net import make_ssl
from hyco.client.credentials import TokenProvider
from hyco.client.sender import resolve_address
from hyco.exceptions import ConnectionLost, InvalidURI, RelayTimeout

__all__ = ["AUTH_HEADER", "http_url", "request", "token_headers"]

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
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    token = await token_provider.get_token(f"http://{host}/{audience_path}/")
    return {AUTH_HEADER: token.token}


@contextlib.asynccontextmanager
async def request(
    method: str,
    url: str,
    *,
    token_provider: TokenProvider | None = None,
    path: str | None = None,
    headers: Mapping[str, str] | None = None,
    data: Any = None,
    session: aiohttp.ClientSession | None = None,
    ssl: ssl_module.SSLContext | bool | None = None,
    ca_file: str | None = None,
    timeout: float | None = None,
    **kwargs: Any,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """Send one HTTP request to a hybrid connection's listener, token added (an async context manager).

    Args:
        method: the HTTP method (anything but ``CONNECT``).
        url: ``https://host/hc[/suffix][?query]``; an ``sb://host/hc`` address or a connection string becomes
            that URL (with ``EntityPath`` and, unless ``token_provider`` is given, its key).
        token_provider: signs the ``ServiceBusAuthorization`` header; None for a hybrid connection without
            client authorization.
        path: the hybrid connection path for the token audience (see :func:`token_headers`).
        headers: more request headers.
        data: the body: bytes, str, a file, or an async iterable of bytes (sent chunked, streamed).
        session: an aiohttp session to reuse (default: a new one for this request).
        ssl, ca_file: TLS settings, as for the listener and client.
        timeout: total seconds for the request, body included (None: no limit).
        **kwargs: passed to ``aiohttp.ClientSession.request`` (e.g. ``params``, ``json``, ``proxy``).

    Yields:
        The ``aiohttp.ClientResponse``; its status and reason are the listener's (protocol.md 4.5) or the
        relay's own (401, 403, 404, 502 no listener, 504 listener too slow; protocol.md 4.6).

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
    own = session is None
    client = aiohttp.ClientSession() if session is None else session
    try:
        try:
            response = await client.request(
                method,
                url,
                headers=all_headers,
                data=data,
                ssl=make_ssl(ssl, ca_file),
                timeout=aiohttp.ClientTimeout(total=timeout),
                **kwargs,
            )
        except TimeoutError as exc:
            raise RelayTimeout(f"{method} {url} timed out after {timeout} s", http_status=408) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ConnectionLost(f"{method} {url} failed: could not reach the relay ({exc})") from exc
        async with response:
            yield response
    finally:
        if own:
            await client.close()
