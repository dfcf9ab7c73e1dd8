"""Hostile clients of every kind from issue 13, run against one relay until told to stop. Not a test.

``python -m bench.hostile --relay ws://127.0.0.1:PORT [--kinds a,b,...]`` (a child of ``bench.soak``): prints
``ready`` once its listeners are online, runs every kind until stdin closes or a ``stop`` line arrives, then
prints one JSON line: per kind, the outcomes it saw (``{"slowloris": {"cut": 120, ...}, ...}``) and the cut
times it measured. A ``snapshot`` line meanwhile prints the outcomes counted so far.

The kinds live by what they attack: ``front_door`` (HTTP and handshakes), ``frames`` (spliced WebSockets),
``checked`` (legitimate traffic with checksums); ``context`` has what they share, ``listeners`` the hostile
entities' listeners, ``__main__`` runs them.

Every kind connects from its own loopback address (127.0.0.20 and up), so the relay's per-source limits
apply to it and not to the bystander on 127.0.0.1. Each runs a bounded number of sockets at once. The relay
must have the hybrid connections of :func:`soak_config` (``bench.soak`` writes it).

Kinds (``KINDS``): ``slowloris`` (request heads never finished), ``idle`` (kept alive after a 404),
``garbage`` (random bytes instead of HTTP), ``bad_tokens`` (forged, expired, wrong-scope tokens on HTTP and
WebSocket), ``stalled_body`` (a small body that stops), ``upload_hang_up`` (1 MiB uploads waiting for a
listener that never dials, abandoned with a reset), ``stuck_listener`` (a listener that stops reading its
control channel, senders that give up), ``empty_flood`` and ``ping_flood`` (spliced senders sending empty
binary frames or pings nonstop), ``bad_frames`` (unmasked, reserved opcode, RSV bit, invalid UTF-8, close
code 5000, 2^62-byte length), ``frozen_peer`` (a spliced listener that answers no ping), ``big_json`` (a
listener sending 10 MB of JSON), ``rendezvous`` (unknown and malformed rendezvous ids), ``full_speed`` (one
sender streaming as fast as it can: defect 12's fairness), ``churn`` (connections opened, echoed with a
CRC32 check and closed or reset mid-stream) and ``http_churn`` (relayed POSTs whose answer is their CRC32).
``churn`` and ``http_churn`` count ``lost`` for any byte that did not come back intact.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bench.hostile.checked import churn, http_churn
from bench.hostile.context import BYSTANDER_PATH, Ctx, soak_config
from bench.hostile.frames import (
    bad_frames,
    big_json,
    empty_flood,
    frozen_peer,
    full_speed,
    ping_flood,
    rendezvous,
)
from bench.hostile.front_door import (
    bad_tokens,
    garbage,
    idle,
    slowloris,
    stalled_body,
    stuck_listener,
    upload_hang_up,
)

__all__ = ["BYSTANDER_PATH", "KINDS", "SUCCESSES", "soak_config"]

KINDS: dict[str, Callable[[Ctx], Awaitable[None]]] = {
    "slowloris": slowloris,
    "idle": idle,
    "garbage": garbage,
    "bad_tokens": bad_tokens,
    "stalled_body": stalled_body,
    "upload_hang_up": upload_hang_up,
    "stuck_listener": stuck_listener,
    "empty_flood": empty_flood,
    "ping_flood": ping_flood,
    "bad_frames": bad_frames,
    "frozen_peer": frozen_peer,
    "big_json": big_json,
    "rendezvous": rendezvous,
    "full_speed": full_speed,
    "churn": churn,
    "http_churn": http_churn,
}

#: The kinds with a legitimate part, and the outcome that counts its successes: a run of the soak flags the
#: kind as locked out when that count stops growing (``bench.soak.lockouts``). Everything else these kinds
#: see is expected too (churn's resets are its own; http_churn's 429s are the per-source rate limit at work),
#: as long as some of their traffic gets through. ``full_speed`` is not one: its one connection may rightly
#: be held back for seconds by backpressure while the relay serves everyone else.
SUCCESSES = {"churn": "echoed intact", "http_churn": "answered intact"}
