"""Loop fairness: one busy client must not keep others from the relay (issue 13, "CPU fairness").

* Connections waiting in the kernel's accept queue are all taken within a few loop turns, on asyncio's loop
  and on uvloop (whose libuv accepts one per loop iteration; ``hyco.server.backlog``). The relay runs in this
  process on the loop under test; the test blocks the loop while clients connect (the kernel completes their
  TCP handshakes and queues them), lets the loop run a few turns and reads the listening socket's accept
  queue from /proc/net/tcp.
* A sender at full speed stops reading for the rest of a loop turn once it took a megabyte.

Loop turns are counted, not time.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
import uvloop

from hyco.server import serve
from hyco.server.framepeer import BYTES_PER_TURN, FramePeer
from hyco.server.peer import Message, MessageKind
from hyco.server.tls import mint_development_certificate
from tests.conftest import TIMEOUT, test_config

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


def _queued(port: int, wanted: int) -> int:
    """The accept queue once ``wanted`` connections are in it (the kernel may queue one a moment after its
    ``connect`` returned), or as it is after a second; blocks the loop, which must not accept meanwhile."""
    deadline = time.monotonic() + 1.0
    while (queued := accept_queue(port)) < wanted and time.monotonic() < deadline:
        time.sleep(0.005)
    return queued


def _health_answers(clients: list[socket.socket], tls: ssl.SSLContext | None) -> list[bytes]:
    """Each client's first answer line to ``GET /$health`` (over TLS with ``tls``); run in a thread."""
    lines = []
    for client in clients:
        conn = tls.wrap_socket(client, server_hostname="localhost") if tls is not None else client
        conn.sendall(b"GET /$health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        lines.append(conn.makefile("rb").readline().rstrip())
        conn.close()
    return lines


async def _queued_after_a_few_turns(tmp_path: Path, tls: bool) -> tuple[int, int, list[bytes]]:
    server_tls = client_tls = None
    if tls:
        cert = mint_development_certificate(tmp_path, ("localhost",))
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_tls.load_cert_chain(cert.cert, cert.key)
        client_tls = ssl.create_default_context(cafile=str(cert.ca))
    async with serve(test_config(), ssl_context=server_tls) as relay:
        port = relay.port
        # The loop is blocked while these connect: nothing is accepted until this coroutine yields.
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(CLIENTS)]
        try:
            before = _queued(port, CLIENTS)
            for _ in range(TURNS):
                await asyncio.sleep(0)
            after = accept_queue(port)
            # Every connection, however it was accepted, is served like any other.
            answers = await asyncio.to_thread(_health_answers, clients, client_tls)
            return before, after, answers
        finally:
            for client in clients:
                client.close()


@pytest.mark.parametrize(
    ("new_loop", "tls"),
    [(asyncio.new_event_loop, False), (uvloop.new_event_loop, False), (uvloop.new_event_loop, True)],
    ids=["asyncio", "uvloop", "uvloop-tls"],
)
def test_every_waiting_connection_is_accepted_within_a_few_loop_turns(
    new_loop: Callable[[], asyncio.AbstractEventLoop], tls: bool, tmp_path: Path
) -> None:
    with asyncio.Runner(loop_factory=new_loop) as runner:
        before, after, answers = runner.run(_queued_after_a_few_turns(tmp_path, tls))
    assert before == CLIENTS  # they all waited in the kernel
    assert after == 0, f"{after} of {CLIENTS} connections still wait after {TURNS} loop turns"
    assert answers == [b"HTTP/1.1 200 OK"] * CLIENTS


# --- a full-speed sender lets the loop run every megabyte (issue 13, defect 12) -------------------------


async def _spliced_pair() -> tuple[FramePeer, asyncio.Transport, list[socket.socket]]:
    """A sender's FramePeer linked to a listener's, each on a real socket pair; the listener's send buffer
    is unbounded so backpressure never pauses the sender (only the turn budget may)."""
    loop = asyncio.get_running_loop()
    peers, transports, keep = [], [], []
    for name in ("sender", "listener"):
        near, far = socket.socketpair()
        keep.append(far)
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, near)
        peer = FramePeer(name, max_message_size=1 << 30)
        peer.attach(cast(asyncio.Transport, transport), None)
        peers.append(peer)
        transports.append(cast(asyncio.Transport, transport))
    transports[1].set_write_buffer_limits(high=1 << 30)
    peers[0].link(peers[1])
    peers[1].link(peers[0])
    return peers[0], transports[0], keep


def _masked_binary(size: int) -> bytes:
    """One final binary frame of ``size`` zero bytes (masked: the key repeated), ``size`` a multiple of 4."""
    key = os.urandom(4)
    return bytes([0x82, 0x80 | 127]) + struct.pack("!Q", size) + key + key * (size // 4)


async def test_a_sender_at_full_speed_stops_reading_for_the_rest_of_a_turn_after_a_megabyte():
    sender, transport, keep = await _spliced_pair()
    frame = _masked_binary(64 * 1024)
    taken = 0
    # As uvloop delivers a fast sender's data: read after read within one readable event (one loop turn).
    while transport.is_reading() and taken < 32 * len(frame):
        sender.data_received(frame)
        taken += len(frame)
    assert not transport.is_reading(), "the sender was never paused within the turn"
    assert taken <= BYTES_PER_TURN + len(frame)
    await asyncio.sleep(0)  # the next turn: the peer reads again
    await asyncio.sleep(0)
    assert transport.is_reading()
    assert sender.forwarded == (taken - 14 * (taken // len(frame)), taken // len(frame))
    sender.abort()
    for sock in keep:
        sock.close()


# --- a peer that stopped reading does not keep its socket (issue 13: slow or vanishing peers) -------------


async def _stalled_peer(grace: float) -> tuple[FramePeer, socket.socket, asyncio.Event, int]:
    """A peer with ``unsent_grace`` = ``grace`` whose far end has not read: its send buffer is above the
    high-water mark. Returns the peer, the far end's socket, an event set when the connection is lost, and the
    bytes written to it."""
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as server:
        far = socket.create_connection(server.getsockname()[:2])
        near, _ = server.accept()
    near.setblocking(False)
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, near)
    lost = asyncio.Event()
    peer = type("Peer", (FramePeer,), {"unsent_grace": grace})("listener", max_message_size=1 << 20)
    peer.attach(cast(asyncio.Transport, transport), lambda _: lost.set())
    high = transport.get_write_buffer_limits()[1]
    await peer.send(Message(MessageKind.BINARY, b"hello"))
    written = 7
    while transport.get_write_buffer_size() <= high:  # the kernel's buffers fill, then the transport's
        transport.write(bytes(64 * 1024))  # as a partner's frames are written (the peer is paused above high)
        written += 64 * 1024
    return peer, far, lost, written


async def test_a_peer_that_never_reads_is_cut_after_the_grace():
    # A graceful close waits until the peer has read what is buffered: one that never reads kept the socket.
    peer, far, lost, _ = await _stalled_peer(grace=0.05)
    peer.abort()
    await asyncio.wait_for(lost.wait(), TIMEOUT)
    far.close()


async def test_a_slow_reader_gets_everything_sent_before_the_close():
    # Cutting at once would drop the tail that was still buffered (the last data and the Close often arrive
    # in the read that filled the buffer): a reader that reads within the grace gets every byte, then EOF.
    peer, far, lost, written = await _stalled_peer(grace=TIMEOUT)
    peer.abort()
    for _ in range(4):
        await asyncio.sleep(0)
    assert not lost.is_set()
    far.setblocking(False)
    loop = asyncio.get_running_loop()
    received = 0
    while chunk := await asyncio.wait_for(loop.sock_recv(far, 1 << 20), TIMEOUT):
        received += len(chunk)
    assert received == written
    await asyncio.wait_for(lost.wait(), TIMEOUT)
    far.close()
