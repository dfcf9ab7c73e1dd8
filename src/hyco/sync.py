"""Blocking SDK: ``from hyco.sync import HybridConnectionListener, HybridConnectionClient``.

Same names and arguments as the asyncio classes in :mod:`hyco`; see :mod:`hyco.client.sync`.
"""

from hyco.client.sync import (
    AcceptContext,
    HybridConnectionClient,
    HybridConnectionListener,
    HybridConnectionStream,
    ListenerState,
    TokenProvider,
)

__all__ = [
    "AcceptContext",
    "HybridConnectionClient",
    "HybridConnectionListener",
    "HybridConnectionStream",
    "ListenerState",
    "TokenProvider",
]
