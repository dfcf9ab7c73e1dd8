"""Tools built on the public SDK only (design.md layering: never ``hyco.server``).

* :mod:`hyco.tools.pipe`: copy bytes both ways between a local socket and a relayed stream.
* :mod:`hyco.tools.forward`: ``hyco forward``, azbridge-compatible port forwarding (TCP, UDP, unix sockets).
"""

__all__: list[str] = []
