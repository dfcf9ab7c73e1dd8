"""End-to-end: ``-L`` and ``-R`` forwarders through an in-process relay, real sockets on 127.0.0.1 port 0."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import struct
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from hyco import ConnectionRejected, InvalidInput, TokenProvider
from hyco.client._net import NetOptions
from hyco.client._rawws import RawWebSocket
from hyco.protocol.uri import Action, parse_address
from hyco.server import Relay, ServerConfig, serve
from hyco.tools.forward import (
    Forwarder,
    ForwardError,
    LocalForward,
    LocalForwarder,
    RelayCredentials,
    RemoteForward,
    RemoteForwarder,
    Transport,
)
from tests.conftest import KEY, KEY_NAME, TIMEOUT, read_slowly, test_config
from tests.tools.conftest import credentials, digest_handler, echo_handler, local_port, tcp_server, tunnel

MiB = 1024 * 1024


# ------------------------------------------------------------------------------------------ spec parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5000:db", LocalForward("db", "127.0.0.1", 5000)),
        ("127.0.0.2:5000:db", LocalForward("db", "127.0.0.2", 5000)),
        ("[::1]:5000:db", LocalForward("db", "::1", 5000)),
        ("*:5000:db", LocalForward("db", "", 5000)),
        ("5353U:dns", LocalForward("dns", "127.0.0.1", 5353, protocol=Transport.UDP)),
        ("0.0.0.0:5353/udp:dns", LocalForward("dns", "0.0.0.0", 5353, protocol=Transport.UDP)),
        ("/run/pg.sock:db", LocalForward("db", local_socket="/run/pg.sock")),
        ("./pg.sock:multi/segment/path", LocalForward("multi/segment/path", local_socket="./pg.sock")),
    ],
)
def test_parse_local_forward(text: str, expected: LocalForward) -> None:
    assert LocalForward.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("db:5432", RemoteForward("db", "localhost", 5432)),
        ("db:pg.internal:5432", RemoteForward("db", "pg.internal", 5432)),
        ("db:[fd00::5]:5432", RemoteForward("db", "fd00::5", 5432)),
        ("dns:8.8.8.8:53/udp", RemoteForward("dns", "8.8.8.8", 53, protocol=Transport.UDP)),
        ("dns:53U", RemoteForward("dns", "localhost", 53, protocol=Transport.UDP)),
        (
            "db:/var/run/postgresql/.s.PGSQL.5432",
            RemoteForward("db", local_socket="/var/run/postgresql/.s.PGSQL.5432"),
        ),
    ],
)
def test_parse_remote_forward(text: str, expected: RemoteForward) -> None:
    assert RemoteForward.parse(text) == expected


@pytest.mark.parametrize(
    "text", ["db", ":db", "5000:", "host:port:db", "70000:db", "5000/rdp1:db", "a:b:c:db"]
)
def test_parse_local_forward_rejects(text: str) -> None:
    with pytest.raises(InvalidInput):
        LocalForward.parse(text)


@pytest.mark.parametrize("text", ["db", "db:", ":5432", "db:host:port", "db:host:0"])
def test_parse_remote_forward_rejects(text: str) -> None:
    with pytest.raises(InvalidInput):
        RemoteForward.parse(text)


def test_credentials_from_connection_string() -> None:
    cs = "Endpoint=sb://ns.example/;SharedAccessKeyName=rule;SharedAccessKey=a2V5;EntityPath=db"
    creds = RelayCredentials.from_connection_string(cs)
    assert creds.endpoint == "sb://ns.example/"
    assert creds.token_provider is not None
    assert creds.address_of("db") == ("sb://ns.example/", "db")
    with pytest.raises(InvalidInput, match="'db'"):
        creds.address_of("other")
    with pytest.raises(InvalidInput, match="no relay endpoint"):
        RelayCredentials.from_connection_string(None)
    override = RelayCredentials.from_connection_string(cs, endpoint="ws://127.0.0.1:1/")
    assert override.endpoint == "ws://127.0.0.1:1/"


# ------------------------------------------------------------------------------------------ TCP


async def roundtrip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    writer.write_eof()
    answer = await reader.read()
    writer.close()
    return answer


async def test_tcp_echo_through_the_tunnel(relay: Relay) -> None:
    async with tcp_server(echo_handler) as port, tunnel(relay, f"echo:127.0.0.1:{port}") as (lf, rf):
        async with asyncio.timeout(TIMEOUT):
            assert await roundtrip(local_port(lf), b"hello through the relay") == b"hello through the relay"
            assert await roundtrip(local_port(lf), b"") == b""
        assert lf.total == 2
        assert rf.total == 2


async def test_half_close_client_still_gets_the_full_answer(relay: Relay) -> None:
    payload = os.urandom(3 * MiB + 17)
    expected = f"{len(payload)} {hashlib.sha256(payload).hexdigest()}\n".encode()
    async with tcp_server(digest_handler) as port, tunnel(relay, f"echo:{port}") as (lf, _):
        async with asyncio.timeout(TIMEOUT):
            assert await roundtrip(local_port(lf), payload) == expected


async def test_the_server_half_closes_and_the_client_keeps_sending(relay: Relay) -> None:
    # The target says hello and half-closes at once; it then still reads what the client sends.
    received = asyncio.get_running_loop().create_future()

    async def greeter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")
        writer.write_eof()
        received.set_result(await reader.read())
        writer.close()

    async with tcp_server(greeter) as port, tunnel(relay, f"echo:{port}") as (lf, _):
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", local_port(lf))
            assert await reader.read() == b"hello\n"  # EOF arrives while our side is still open
            writer.write(b"late data")
            writer.write_eof()
            assert await received == b"late data"
            writer.close()


async def test_a_fragmented_message_is_forwarded_byte_exact(relay: Relay) -> None:
    # The official clients stream a message as many frames (protocol.md 4.3); the relay forwards them as
    # frames, so the remote side receives continuations and must pass each one's bytes on in order.
    payload = os.urandom(MiB + 333)
    address = parse_address(relay.url, "echo")
    token = await TokenProvider.from_shared_access_key(KEY_NAME, KEY).get_token(address.audience)

    async def fragments() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 100_000):
            yield payload[start : start + 100_000]

    async with tcp_server(echo_handler) as port, tunnel(relay, f"echo:{port}"):
        async with asyncio.timeout(TIMEOUT):
            sender = await RawWebSocket.connect(
                address.websocket_url(Action.CONNECT, "fragments"),
                options=NetOptions(),
                what="test sender",
                timeout=TIMEOUT,
                headers={"ServiceBusAuthorization": token.token},
            )
            assert await sender.send_binary_stream(fragments()) == len(payload)
            echoed = bytearray()
            while len(echoed) < len(payload):
                echoed += (await sender.receive_frame()).payload
            assert echoed == payload
            await sender.close()  # Close 1000: the target sees EOF, and the remote side closes in turn
            assert sender.close_received is not None and sender.close_received[0] == 1000


async def test_real_http_server_through_the_tunnel(relay: Relay) -> None:
    async def hello(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(text=f"{request.method} {request.path} {len(body)}")

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (5 * MiB))

    app = web.Application()
    app.router.add_route("*", "/hello", hello)
    app.router.add_get("/big", big)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        async with tunnel(relay, f"echo:127.0.0.1:{port}") as (lf, _), aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{local_port(lf)}"
            async with asyncio.timeout(TIMEOUT):
                for _ in range(3):  # keep-alive: several requests on one tunnelled connection
                    async with http.post(f"{base}/hello", data=b"a" * 1000) as response:
                        assert response.status == 200
                        assert await response.text() == "POST /hello 1000"
                async with http.get(f"{base}/big") as response:
                    assert len(await response.read()) == 5 * MiB
    finally:
        await runner.cleanup()


async def test_100_mib_both_ways_with_checksums(relay: Relay) -> None:
    total = 100 * MiB
    block = os.urandom(MiB)

    async with tcp_server(echo_handler) as port, tunnel(relay, f"echo:127.0.0.1:{port}") as (lf, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", local_port(lf))
        sent, got = hashlib.sha256(), hashlib.sha256()

        async def send() -> None:
            for i in range(total // MiB):
                chunk = bytes([i % 256]) + block[1:]
                sent.update(chunk)
                writer.write(chunk)
                await writer.drain()
            writer.write_eof()

        async def receive() -> int:
            count = 0
            while data := await reader.read(1 << 18):
                got.update(data)
                count += len(data)
            return count

        async with asyncio.timeout(TIMEOUT * 12):
            _, count = await asyncio.gather(send(), receive())
        writer.close()
        assert count == total
        assert got.hexdigest() == sent.hexdigest()


async def test_50_concurrent_connections(relay: Relay) -> None:
    async with tcp_server(echo_handler) as port, tunnel(relay, f"echo:{port}") as (lf, rf):
        payloads = [os.urandom(1000 + 997 * i) for i in range(50)]
        async with asyncio.timeout(TIMEOUT * 3):
            answers = await asyncio.gather(*(roundtrip(local_port(lf), p) for p in payloads))
        assert answers == payloads
        assert lf.total == 50
        assert rf.total == 50


async def test_many_mappings_in_one_forwarder(relay: Relay) -> None:
    async with tcp_server(echo_handler) as port1, tcp_server(digest_handler) as port2:
        forwarder = Forwarder(
            [LocalForward.parse("127.0.0.1:0:echo"), LocalForward.parse("127.0.0.1:0:open")],
            [RemoteForward.parse(f"echo:{port1}"), RemoteForward.parse(f"open:{port2}")],
            credentials(relay),
        )
        async with asyncio.timeout(TIMEOUT):
            await forwarder.start()
        try:
            async with asyncio.timeout(TIMEOUT):
                await forwarder.wait_online()
                first, second = (local_port(f) for f in forwarder.local)
                assert await roundtrip(first, b"ping") == b"ping"
                assert (
                    await roundtrip(second, b"ping") == f"4 {hashlib.sha256(b'ping').hexdigest()}\n".encode()
                )
        finally:
            await forwarder.close()


# ------------------------------------------------------------------------------------------ faults


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def short_tmpdir() -> Iterator[Path]:
    # unix socket paths are limited to ~107 bytes: stay in /tmp rather than pytest's deep tmp_path.
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="hyco-") as name:
        yield Path(name)


async def test_target_refused_closes_the_client_and_the_forwarder_keeps_serving(relay: Relay) -> None:
    with short_tmpdir() as tmp:
        target = tmp / "target.sock"
        async with tunnel(relay, f"echo:{target}") as (lf, _):
            async with asyncio.timeout(TIMEOUT):
                reader, writer = await asyncio.open_connection("127.0.0.1", local_port(lf))
                writer.write(b"anyone there?")
                assert await reader.read() == b""  # closed, with nothing relayed
                writer.close()
                # The sender learns why: the remote side rejected it with 502 and the reason.
                with pytest.raises(ConnectionRejected) as info:
                    await lf.client.connect()
                assert info.value.http_status == 502
                assert "cannot connect to" in info.value.description
                # Once the target is up, the same forwarders serve again.
                server = await asyncio.start_unix_server(echo_handler, str(target))
                async with server:
                    assert await roundtrip(local_port(lf), b"now?") == b"now?"


async def test_no_remote_side_closes_the_client(relay: Relay) -> None:
    async with LocalForwarder(
        LocalForward.parse("127.0.0.1:0:open"), credentials(relay), connect_timeout=TIMEOUT / 4
    ) as lf:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", local_port(lf))
            assert await reader.read() == b""  # closed (we sent nothing, so a plain FIN)
            writer.close()
            assert lf.total == 1


async def test_port_in_use_is_a_clear_error(relay: Relay) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        forwarder = LocalForwarder(LocalForward.parse(f"127.0.0.1:{port}:echo"), credentials(relay))
        with pytest.raises(ForwardError, match="already in use"):
            await forwarder.start()


@contextlib.contextmanager
def connection_ends() -> Iterator[asyncio.Queue[str]]:
    """The forwarders' one-line connection summaries ("... closed: ..."), as they are logged."""
    ends: asyncio.Queue[str] = asyncio.Queue()

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if " closed: " in record.getMessage():
                ends.put_nowait(record.getMessage())

    log = logging.getLogger("hyco.tools.forward")
    catch, level = Catch(), log.level
    log.addHandler(catch)
    log.setLevel(logging.INFO)
    try:
        yield ends
    finally:
        log.removeHandler(catch)
        log.setLevel(level)


async def test_target_vanishing_mid_stream_closes_the_client(relay: Relay) -> None:
    async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(5)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # with SO_LINGER 0: a reset, not a FIN

    with connection_ends() as ends:
        async with tcp_server(rude) as port, tunnel(relay, f"echo:{port}") as (lf, _):
            async with asyncio.timeout(TIMEOUT):
                reader, writer = await asyncio.open_connection("127.0.0.1", local_port(lf))
                writer.write(b"12345")
                assert await reader.read() == b""
                # Both sides ended on their own, before we closed anything: the remote side saw the reset,
                # the local side the broken stream, and it dropped our connection (not a half-close).
                summaries = sorted([await ends.get(), await ends.get()])
                assert summaries[0].startswith("-L ") and "relay error" in summaries[0]
                assert summaries[1].startswith("-R ") and "local error" in summaries[1]
                writer.close()


# ------------------------------------------------------------------------------------------ UDP


class UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data.upper(), addr)


class UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)


@contextlib.asynccontextmanager
async def udp_echo() -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", 0))
    try:
        yield transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


async def test_udp_request_response_with_sessions(relay: Relay) -> None:
    loop = asyncio.get_running_loop()
    async with (
        udp_echo() as port,
        tunnel(relay, f"open:127.0.0.1:{port}/udp", "127.0.0.1:0/udp:open") as (lf, rf),
    ):
        clients = []
        for _ in range(2):
            transport, proto = await loop.create_datagram_endpoint(
                UdpClient, remote_addr=("127.0.0.1", local_port(lf))
            )
            clients.append((transport, proto))
        try:
            async with asyncio.timeout(TIMEOUT):
                for i, (transport, proto) in enumerate(clients):
                    for n in range(3):
                        transport.sendto(f"query {i}.{n}".encode())
                        assert await proto.received.get() == f"QUERY {i}.{n}".encode()
                big = os.urandom(60000)  # datagram boundaries survive, whatever the size
                clients[0][0].sendto(big)
                assert await clients[0][1].received.get() == big.upper()
            assert lf.total == 2  # one session per client address
            assert rf.total == 2
        finally:
            for transport, _ in clients:
                transport.close()


async def test_udp_sessions_expire_when_idle(relay: Relay) -> None:
    loop = asyncio.get_running_loop()
    async with (
        udp_echo() as port,
        tunnel(relay, f"open:{port}U", "127.0.0.1:0/udp:open", udp_idle_timeout=0.2) as (lf, rf),
    ):
        transport, proto = await loop.create_datagram_endpoint(
            UdpClient, remote_addr=("127.0.0.1", local_port(lf))
        )
        try:
            async with asyncio.timeout(TIMEOUT):
                transport.sendto(b"a")
                assert await proto.received.get() == b"A"
                while lf.active or rf.active:  # the session ends by itself after 0.2 s of silence
                    await asyncio.sleep(0.05)
                transport.sendto(b"b")
                assert await proto.received.get() == b"B"
                assert lf.total == 2
        finally:
            transport.close()


# ------------------------------------------------------------------------------------------ unix sockets


async def test_unix_sockets_on_both_sides(relay: Relay) -> None:
    with short_tmpdir() as tmp:
        target, front = tmp / "target.sock", tmp / "front.sock"
        server = await asyncio.start_unix_server(echo_handler, str(target))
        async with server, tunnel(relay, f"echo:{target}", f"{front}:echo"):
            async with asyncio.timeout(TIMEOUT):
                reader, writer = await asyncio.open_unix_connection(str(front))
                writer.write(b"over unix sockets")
                writer.write_eof()
                assert await reader.read() == b"over unix sockets"
                writer.close()


async def test_a_stale_unix_socket_file_is_replaced(relay: Relay) -> None:
    with short_tmpdir() as tmp:
        path = tmp / "stale.sock"
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(str(path))
        stale.close()  # the file stays, nobody listens
        async with LocalForwarder(LocalForward.parse(f"{path}:echo"), credentials(relay)) as lf:
            assert lf.addresses == [str(path)]
        live = await asyncio.start_unix_server(echo_handler, str(path))
        async with live:
            with pytest.raises(ForwardError, match="another process"):
                await LocalForwarder(LocalForward.parse(f"{path}:echo"), credentials(relay)).start()


# ------------------------------------------------------------------------------------------ reconnects


async def test_the_remote_side_survives_a_relay_restart() -> None:
    first = serve(test_config())
    relay = await first.__aenter__()
    port = relay.port
    stopped = False
    try:
        async with (
            tcp_server(echo_handler) as target,
            tunnel(relay, f"echo:{target}", listener_options={"reconnect_delays": (0.0, 0.1)}) as (lf, rf),
        ):
            async with asyncio.timeout(TIMEOUT):
                assert await roundtrip(local_port(lf), b"before") == b"before"
            await first.__aexit__(None, None, None)
            stopped = True
            async with asyncio.timeout(TIMEOUT):
                while rf.is_online:
                    await asyncio.sleep(0.01)
            async with serve(test_config(server=ServerConfig(host="127.0.0.1", port=port))):
                async with asyncio.timeout(TIMEOUT):
                    await rf.wait_online()
                    assert await roundtrip(local_port(lf), b"after") == b"after"
    finally:
        if not stopped:
            await first.__aexit__(None, None, None)


# ------------------------------------------------------------------------------------------ backpressure


@pytest.mark.slow
async def test_memory_stays_bounded_when_the_client_reads_slowly(relay: Relay) -> None:
    total = 128 * MiB
    block = os.urandom(MiB)

    async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            for _ in range(total // MiB):
                writer.write(block)
                await writer.drain()
        writer.close()

    async with tcp_server(firehose) as port, tunnel(relay, f"echo:{port}") as (lf, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", local_port(lf), limit=64 * 1024)
        try:
            received, growth = await read_slowly(
                lambda: reader.read(1 << 16), {16 * MiB, 48 * MiB, 96 * MiB}, TIMEOUT * 12
            )
        finally:
            writer.close()
        assert received == total
        assert growth < 32 * MiB, (
            f"memory grew by {growth / MiB:.1f} MiB while a slow reader received 128 MiB"
        )


async def test_no_credentials_for_a_remote_side_is_refused(relay: Relay) -> None:
    creds = RelayCredentials(f"{relay.url}/", None)
    with pytest.raises(InvalidInput, match="token provider"):
        Forwarder([], [RemoteForward.parse("echo:1")], creds)


async def test_bad_key_on_the_remote_side_fails_at_start(relay: Relay) -> None:
    from hyco import AuthorizationFailed

    creds = RelayCredentials(f"{relay.url}/", TokenProvider.from_shared_access_key(KEY_NAME, "d3Jvbmc="))
    forwarder = Forwarder([LocalForward.parse("127.0.0.1:0:echo")], [RemoteForward.parse("echo:1")], creds)
    with pytest.raises(AuthorizationFailed):
        async with asyncio.timeout(TIMEOUT):
            await forwarder.start()
    assert all(not f.addresses for f in forwarder.local)  # nothing left listening
    assert KEY not in repr(creds)


async def test_open_streams_survive_a_control_channel_recycle(relay: Relay) -> None:
    # Azure recycles control channels (1011, ~24 h); relayed streams are separate sockets and live on.
    async with tcp_server(echo_handler) as port, tunnel(relay, f"echo:127.0.0.1:{port}") as (lf, rf):
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection("127.0.0.1", local_port(lf))
            writer.write(b"before")
            assert await reader.readexactly(6) == b"before"
            before = relay.connected_listeners()
            assert before
            for connected in before:
                await relay.disconnect_listener(connected.listener_id, 1011, "NameRenewalFailed: recycle")
            # The existing connection keeps working while the listener reconnects.
            writer.write(b"during")
            assert await reader.readexactly(6) == b"during"
            old = {c.channel_number for c in before}
            while not {c.channel_number for c in relay.connected_listeners()} - old:
                await asyncio.sleep(0.01)
            await rf.listener.wait_online(TIMEOUT)
            writer.write(b"after")
            assert await reader.readexactly(5) == b"after"
            writer.close()
            # And new connections are routed to the reconnected listener.
            assert await roundtrip(local_port(lf), b"new one") == b"new one"


async def test_remote_forwarder_says_offline_once_while_the_relay_stays_unreachable() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    class Lines(logging.Handler):
        """Collects log lines; ``attempts`` is set once the listener has failed to connect four times."""

        def __init__(self) -> None:
            super().__init__(logging.INFO)
            self.lines: list[str] = []
            self.attempts = asyncio.Event()

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())
            if sum("is offline" in line for line in self.lines) >= 4:
                self.attempts.set()

    lines = Lines()
    root = logging.getLogger("hyco")
    root.addHandler(lines)
    level = root.level
    root.setLevel(logging.INFO)
    creds = RelayCredentials(f"ws://127.0.0.1:{port}/", TokenProvider.from_shared_access_key(KEY_NAME, KEY))
    try:
        async with RemoteForwarder(
            RemoteForward.parse("web:127.0.0.1:9"), creds, listener_options={"reconnect_delays": [0.0, 0.01]}
        ):
            await asyncio.wait_for(lines.attempts.wait(), TIMEOUT)
    finally:
        root.removeHandler(lines)
        root.setLevel(level)
    said = [line for line in lines.lines if "offline, reconnecting" in line]
    assert len(said) == 1, lines.lines
