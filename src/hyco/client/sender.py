"""The sending side: :class:`HybridConnectionClient` opens relayed connections (protocol.md 3.1).

The client dials ``/$hc/{path}?sb-hc-action=connect&sb-hc-id={guid}`` with its token in the
``ServiceBusAuthorization`` header (as .NET and Java do). The relay holds the handshake until a listener
accepts (``101``), rejects (the listener's status and description), or a timeout expires
(protocol.md 3.1-3.4).
"""

from __future__ import annotations

import ssl as ssl_module
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hyco.client._engine import handshake_headers
from hyco.client._net import NetOptions, make_ssl, open_websocket
from hyco.client.credentials import TokenProvider
from hyco.client.runtime import HybridConnectionRuntimeInformation, get_runtime_information
from hyco.client.stream import DEFAULT_CLOSE_TIMEOUT, HybridConnectionStream
from hyco.exceptions import InvalidConnectionString, InvalidInput
from hyco.protocol.connection_string import RelayConnectionString
from hyco.protocol.uri import Action, RelayAddress, parse_address

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "HybridConnectionClient", "resolve_address"]

#: .NET and Java ``HybridConnectionClient`` wait 70 s for a listener (protocol.md 3.1, 6).
DEFAULT_CONNECT_TIMEOUT = 70.0
#: Keep-alive pings on idle relayed connections (.NET uses 3.5 min; Azure cuts ~4 min idle, protocol.md 2.7).
DEFAULT_STREAM_KEEP_ALIVE = 60.0
_AUTH_HEADER = "ServiceBusAuthorization"


@dataclass(frozen=True, slots=True)
class _Resolved:
    address: RelayAddress
    token_provider: TokenProvider | None
    operation_timeout: float | None


def resolve_address(
    address: str,
    token_provider: TokenProvider | None,
    path: str | None,
    *,
    role: str,
) -> _Resolved:
    """Turn an address or a connection string into an address and a token provider (protocol.md 5.5).

    A text starting with ``Endpoint=`` is a connection string: its ``EntityPath`` (or ``path``; not both)
    names the hybrid connection, and its key or SAS becomes the token provider unless one is given.

    Raises:
        InvalidConnectionString: the connection string is malformed, names no entity or two, or asks for
            Managed Identity (hyco cannot obtain AAD tokens).
        InvalidURI: the address cannot be used.
    """
    if not address.strip().lower().startswith("endpoint="):
        return _Resolved(parse_address(address, path), token_provider, None)
    cs = RelayConnectionString.parse(address)
    if cs.entity_path and path:
        raise InvalidConnectionString(
            f"the connection string has EntityPath={cs.entity_path!r}; do not pass a path as well"
        )
    entity = cs.entity_path or path
    if not entity:
        raise InvalidConnectionString(
            f"the connection string has no EntityPath; pass the hybrid connection path to the {role}"
        )
    if token_provider is None:
        token_provider = TokenProvider.from_connection_string(cs)
    return _Resolved(parse_address(cs.endpoint, entity), token_provider, cs.operation_timeout)


class HybridConnectionClient:
    """Opens connections to the listeners of one hybrid connection.

    Args:
        address: ``sb://host[:port]/path`` (TLS), ``wss://``/``https://`` (TLS), ``ws://``/``http://``
            (plain), or a connection string (``Endpoint=sb://...;EntityPath=...;SharedAccessKeyName=...``).
        token_provider: where tokens come from; None for a hybrid connection that does not require client
            authorization (or when the connection string carries a key).
        path: the hybrid connection path when ``address`` names only the namespace.
        connect_timeout: seconds to wait for a listener to accept (default 70 s, as .NET).
        ssl: an ``ssl.SSLContext``, or False to skip certificate checks (never in production).
        ca_file: PEM file of extra trusted CAs (a self-signed relay).
        proxy: ``http://proxy:port``; ``wss`` connections tunnel through it with HTTP ``CONNECT``.
        proxy_headers: extra proxy headers (e.g. ``Proxy-Authorization``).
        read_timeout, write_timeout: defaults for the streams this client opens (None: no limit).
        keep_alive_interval: seconds between pings on idle streams (None: no pings).

    Raises:
        InvalidURI, InvalidConnectionString: the address cannot be used.

    Example::

        client = HybridConnectionClient("sb://relay.example/echo", tp)
        async with await client.connect() as stream:
            await stream.write(b"hello")
            print(await stream.read())
    """

    def __init__(
        self,
        address: str,
        token_provider: TokenProvider | None = None,
        *,
        path: str | None = None,
        connect_timeout: float | None = None,
        ssl: ssl_module.SSLContext | bool | None = None,
        ca_file: str | None = None,
        proxy: str | None = None,
        proxy_headers: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
        write_timeout: float | None = None,
        keep_alive_interval: float | None = DEFAULT_STREAM_KEEP_ALIVE,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        resolved = resolve_address(address, token_provider, path, role="client")
        self.address = resolved.address
        self.token_provider = resolved.token_provider
        if connect_timeout is None:
            # .NET: a connection string's OperationTimeout replaces 70 s only when it differs from 60 s.
            op = resolved.operation_timeout
            connect_timeout = op if op is not None and op != 60.0 else DEFAULT_CONNECT_TIMEOUT
        if connect_timeout <= 0:
            raise InvalidInput("connect_timeout must be positive")
        self.connect_timeout = connect_timeout
        self._net = NetOptions(
            ssl=make_ssl(ssl, ca_file), proxy=proxy, proxy_headers=dict(proxy_headers or {})
        )
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.keep_alive_interval = keep_alive_interval
        self.close_timeout = close_timeout

    def __repr__(self) -> str:
        return f"<HybridConnectionClient {self.address}>"

    async def get_runtime_information(self) -> HybridConnectionRuntimeInformation:
        """The hybrid connection's listener count and settings (``GetRuntimeInformationAsync``).

        Raises:
            AuthorizationFailed: the token lacks Manage rights; others as
                :func:`hyco.client.runtime.get_runtime_information`.
        """
        return await get_runtime_information(
            self.address, self.token_provider, self._net, self.connect_timeout
        )

    async def connect(
        self,
        headers: Mapping[str, str] | None = None,
        subprotocols: Sequence[str] = (),
        *,
        connect_timeout: float | None = None,
    ) -> HybridConnectionStream:
        """Open a relayed connection to one of the hybrid connection's listeners.

        Args:
            headers: extra upgrade headers; the listener sees them in ``connectHeaders``.
            subprotocols: ``Sec-WebSocket-Protocol`` offers; the listener picks one.
            connect_timeout: overrides the client's ``connect_timeout`` for this call.

        Returns:
            An open :class:`HybridConnectionStream` (close it when done).

        Raises:
            EndpointNotFound: no such hybrid connection, or no listener is connected or accepted in time.
            AuthorizationFailed: the token is missing, wrong or expired (401).
            Forbidden: the rule lacks the Send right (403).
            ConnectionRejected: the listener rejected the connection; ``http_status`` and ``description``
                are the listener's.
            RelayTimeout: nothing answered within the timeout.
            ConnectionLost: the relay could not be reached.
        """
        ident = str(uuid.uuid4())
        request_headers = dict(headers or {})
        if self.token_provider is not None:
            token = await self.token_provider.get_token(self.address.audience)
            request_headers[_AUTH_HEADER] = token.token
        ws, session = await open_websocket(
            self.address.websocket_url(Action.CONNECT, ident),
            what=f"connecting to {self.address}",
            options=self._net,
            headers=request_headers,
            protocols=subprotocols,
            handshake_timeout=self.connect_timeout if connect_timeout is None else connect_timeout,
            take_over=True,
        )
        return HybridConnectionStream._from_websocket(
            ws,
            session,
            tracking_id=ident,
            headers=handshake_headers(ws),
            read_timeout=self.read_timeout,
            write_timeout=self.write_timeout,
            keep_alive_interval=self.keep_alive_interval,
            close_timeout=self.close_timeout,
        )
