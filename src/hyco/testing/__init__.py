"""Public test helpers: in-memory peers for the relay's splice seam.

``memory_peer("sender")`` gives an object the splice drives as a WebSocket end while the test plays the
remote party: ``remote_send``, ``remote_close``, ``remote_vanish`` push what the remote would send;
``remote_receive`` pops what the relay sent it. A ``capacity`` makes sends wait like a full socket buffer,
so backpressure can be tested without sockets.
"""

from hyco.testing.peers import MemoryPeer, memory_peer

__all__ = ["MemoryPeer", "memory_peer"]
