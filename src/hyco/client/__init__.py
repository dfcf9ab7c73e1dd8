"""The hyco SDK: asyncio listener and sender for Azure Relay Hybrid Connections.

The blocking twins with the same names live in :mod:`hyco.sync`.
"""

from hyco.client.credentials import SecurityToken, TokenProvider, normalize_audience
from hyco.client.http import HttpBody, RelayedHttpRequest, RelayedHttpResponse, RequestHandler
from hyco.client.httpsend import HttpResponse, http_url, request, token_headers
from hyco.client.listener import (
    AcceptContext,
    AcceptHandler,
    HybridConnectionListener,
    ListenerState,
)
from hyco.client.runtime import HybridConnectionRuntimeInformation
from hyco.client.sender import HybridConnectionClient
from hyco.client.stream import HybridConnectionStream

__all__ = [
    "AcceptContext",
    "AcceptHandler",
    "HttpBody",
    "HttpResponse",
    "HybridConnectionClient",
    "HybridConnectionListener",
    "HybridConnectionRuntimeInformation",
    "HybridConnectionStream",
    "ListenerState",
    "RelayedHttpRequest",
    "RelayedHttpResponse",
    "RequestHandler",
    "SecurityToken",
    "TokenProvider",
    "http_url",
    "normalize_audience",
    "request",
    "token_headers",
]
