"""Accept fairness: connections waiting in the kernel's accept queue are all taken on the next loop turn,
on asyncio's loop and on uvloop (whose libuv accepts one per loop iteration; hyco.server.backlog).

The relay runs in this process on the loop under test. The test blocks the loop while clients connect (the
kernel completes their TCP handshakes and queues them), then lets the loop run a few turns and reads the
listening socket's accept queue from /proc/net/tcp. Loop turns are counted, not time.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import uvloop

from hyco.server import serve
from tests.conftest import test_config

#: Clients that connect while the loop is blocked (below the per-source connection limit of the tests).
CLIENTS = 40
#: Loop turns the relay gets before the queue is read: the loop's own accept, the drain, and slack.
TURNS = 4

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")


def accept_queue(port: int) -> int:
    """Connections waiting to be accepted on the IPv4 listening socket bound to ``port``."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if state == "0A" and int(local.split(":")[1], 16) == port:  # 0A: LISTEN
            return int(queues.split(":")[1], 16)  # rx_queue of a listening socket: its accept queue
    raise AssertionError(f"no listening socket on port {port}")


async def _queued_after_a_few_turns() -> tuple[int, int]:
    async with serve(test_config()) as relay:
        port = relay.port
        # The loop is blocked while these connect: nothing is accepted until this coroutine yields.
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(CLIENTS)]
        try:
            before = accept_queue(port)
            for _ in range(TURNS):
                await asyncio.sleep(0)
            return before, accept_queue(port)
        finally:
            for client in clients:
                client.close()


@pytest.mark.parametrize(
    "new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)
def test_every_waiting_connection_is_accepted_within_a_few_loop_turns(
    new_loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    with asyncio.Runner(loop_factory=new_loop) as runner:
        before, after = runner.run(_queued_after_a_few_turns())
    assert before == CLIENTS  # they all waited in the kernel
    assert after == 0, f"{after} of {CLIENTS} connections still wait after {TURNS} loop turns"
