"""Public test helpers: in-memory peers for the relay's splice seam.

``memory_peer("sender")`` gives an object the splice drives as a WebSocket end while the test plays the
remote party: ``remote_send``, ``remote_close``, ``remote_vanish`` push what the remote would send;
``remote_receive`` pops what the relay sent it. A ``capacity`` makes sends wait like a full socket buffer,
so backpressure can be tested without sockets.

``FakeClock`` stands in for the clock the relay's control channel and the SDK listener take (token expiry,
renewal, reconnect delays): time moves only in ``advance(seconds)``. ``ControlChannelPair`` joins the
listener's and the relay's sans-I/O control-channel ends in memory.

``check_relay_stream(make_pair)`` is the one conformance check every stream implementation must pass: send and
receive, half-close, close while reading, use after close, peer reset.
"""

from hyco.testing.clock import FakeClock
from hyco.testing.control import ControlChannelPair
from hyco.testing.peers import MemoryPeer, memory_peer
from hyco.testing.streams import RelayStreamLike, check_relay_stream

__all__ = [
    "ControlChannelPair",
    "FakeClock",
    "MemoryPeer",
    "RelayStreamLike",
    "check_relay_stream",
    "memory_peer",
]
