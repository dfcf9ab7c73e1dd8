"""Several relay processes behind one port (``hyco relay --workers N``; docs/architecture.md, "Workers").

* :mod:`.supervisor` binds the port, makes the mesh, starts the workers, restarts one that dies and passes
  signals on;
* :mod:`.mesh` carries messages (and sockets) between workers over unix socket pairs;
* :mod:`.router` routes a sender to a listener held by any worker, shares listener slots and store changes;
* :mod:`.door` accepts connections and hands a listener's rendezvous dial to the worker that waits for it.
"""

from hyco.server.workers.mesh import Mesh, WorkerSeat, worker_of

__all__ = ["Mesh", "WorkerSeat", "worker_of"]
