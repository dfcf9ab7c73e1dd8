"""``hyco forward``: port forwarding over a relay, compatible with Azure Relay Bridge (``azbridge``).

Theory of operation, one module per part:

* :mod:`~hyco.tools.forward.spec`: the mappings, parsed from azbridge's syntax into frozen values.
  ``-L [bind_address:]port:relay_name`` or ``-L socket_path:relay_name`` is a :class:`LocalForward`;
  ``-R relay_name:[host:]port`` or ``-R relay_name:socket_path`` is a :class:`RemoteForward`.
* :mod:`~hyco.tools.forward.credentials`: where the relay is and the token provider
  (:class:`RelayCredentials`, from a connection string plus azbridge's overrides).
* :mod:`~hyco.tools.forward.local`: the **local forwarder** listens on a local TCP port, UDP port or unix
  socket and opens one relayed stream per connection (:class:`LocalForwarder`).
* :mod:`~hyco.tools.forward.remote`: the **remote forwarder** listens on the hybrid connection and connects
  each stream to its target, or rejects the sender with 502 and the reason when the target cannot be reached
  (:class:`RemoteForwarder`).
* :mod:`~hyco.tools.forward.sockets`: the local sockets both sides open (TCP, unix, UDP), with errors a user
  can act on; :mod:`~hyco.tools.forward.udp`: datagrams over a relayed stream, one message each, sessions that
  end when idle. Byte streams are piped with :func:`hyco.tools.pipe.pipe`.
* :mod:`~hyco.tools.forward.forwarder`: :class:`Forwarder` runs any number of mappings in one process. Each
  finished connection is logged in one line: where from, bytes each way, duration, and how it ended.

Only the public SDK (``hyco.client``) is used; never the relay internals (design.md, layering).
"""

from hyco.tools.forward._report import ForwardError
from hyco.tools.forward.credentials import RelayCredentials
from hyco.tools.forward.forwarder import Forwarder
from hyco.tools.forward.local import LocalForwarder
from hyco.tools.forward.remote import (
    DEFAULT_TARGET_CONNECT_TIMEOUT,
    TARGET_UNREACHABLE_STATUS,
    RemoteForwarder,
)
from hyco.tools.forward.spec import LocalForward, RemoteForward, Transport, parse_port
from hyco.tools.forward.udp import DEFAULT_UDP_IDLE_TIMEOUT

__all__ = [
    "DEFAULT_TARGET_CONNECT_TIMEOUT",
    "DEFAULT_UDP_IDLE_TIMEOUT",
    "TARGET_UNREACHABLE_STATUS",
    "ForwardError",
    "Forwarder",
    "LocalForward",
    "LocalForwarder",
    "RelayCredentials",
    "RemoteForward",
    "RemoteForwarder",
    "Transport",
    "parse_port",
]
