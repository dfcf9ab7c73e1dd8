"""Public test helpers: in-memory peers for the relay's splice seam.

``memory_peer("sender")`` gives an object the splice drives as a WebSocket end while the test plays the
remote party: ``remote_send``, ``remote_close``, ``remote_vanish`` push what the remote would send;
``remote_receive`` pops what the relay sent it. A ``capacity`` makes sends wait like a full socket buffer,
so backpressure can be tested without sockets.

``check_relay_stream(make_pair)`` is the one conformance check every stream implementation must pass: send and
receive, half-close, close while reading, use after close, peer reset.
"""

from hyco.testing.peers import MemoryPeer, memory_peer
from hyco.testing.streams import RelayStreamLike, check_relay_stream

__all__ = ["MemoryPeer", "RelayStreamLike", "check_relay_stream", "memory_peer"]
