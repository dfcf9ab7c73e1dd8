"""Scenario 6: ``hyco forward`` (TCP throughput and 1-byte round trip through -L/-R against direct TCP).

TODO(issue 6): when the harness was written ``hyco forward`` did not exist (src/hyco/tools was empty);
an uncommitted ``hyco.tools.forward`` (``Forwarder``, ``LocalForwarder``, ``RemoteForwarder``) appeared
while it was being finished. Measure here: a TCP echo/sink server in its own process, a
``RemoteForwarder`` (-R) exposing it through the relay and a ``LocalForwarder`` (-L) giving a local port,
each in its own process, then the scenario 1 and 2 patterns over plain TCP (1 GiB each way, checksummed;
1-byte round trip), against the same client talking straight to the server and through haproxy.
Target: >= 0.5 x direct TCP throughput.
"""

from __future__ import annotations

import importlib.util

from bench.env import Env, Metric

TITLE = "hyco forward (TODO)"


def available() -> bool:
    return importlib.util.find_spec("hyco.tools.forward") is not None


async def measure(env: Env) -> list[Metric]:
    metric = Metric("6-forward", "6 forward TCP throughput", "MB/s", "higher")
    metric.notes["skipped"] = (
        "hyco forward is not implemented yet (hyco.tools.forward missing)"
        if not available()
        else "hyco forward exists but this scenario is still a TODO hook in bench/s6_forward.py"
    )
    return [metric]
