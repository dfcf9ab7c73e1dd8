"""Routing senders across relay nodes (docs/cluster.md). Needs the ``cluster`` extra (nats-py).

:class:`~hyco.server.routing.cluster.ClusterRouter` implements :class:`hyco.server.router.Router` over NATS;
:mod:`~hyco.server.routing.directory` is its pure bookkeeping of the shared leases.
"""

__all__: list[str] = []
