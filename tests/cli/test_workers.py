"""``hyco relay --workers 2``: real processes behind one port; a sender on one worker meets a listener on the
other.

Which worker serves a connection is the kernel's choice. The tests find out, not force it: ``/$health``
says which worker answered (and its pid), a listener's ``accept`` names the worker where the sender waits
(the tag that ends the rendezvous id), and a test connects again until a connection lands where it needs it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hyco.protocol.sas import create_token
from hyco.server.workers import worker_of
from tests.cli.test_relay_cli import RunningRelay, relay_process, run_to_exit
from tests.conftest import KEY, KEY_NAME, TIMEOUT
from tests.server.wire import RawListener, connect_url, token_for

#: Connections a test opens at most to land one on a given worker (each lands there about half the time, less
#: when the other worker's loop is quicker to wake on a loaded machine: hence a short pause between tries).
TRIES = 120
#: Seconds between two tries, so one worker's quicker wake-up does not take every connection in a row.
RETRY_PAUSE = 0.02


def write_config(tmp_path: Path, *, max_listeners: int = 25) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(
        f"""
[server]
listen = "127.0.0.1:0"
create_on_listen = true

[limits]
max_listeners = {max_listeners}

[[authorization_rules]]
name = "{KEY_NAME}"
primary_key = "{KEY}"
rights = ["Manage", "Listen", "Send"]

[[hybrid_connections]]
path = "echo"
""",
        encoding="utf-8",
    )
    return path


@asynccontextmanager
async def workers_relay(tmp_path: Path, *args: str, max_listeners: int = 25) -> AsyncIterator[RunningRelay]:
    config = write_config(tmp_path, max_listeners=max_listeners)
    async with relay_process(tmp_path, "--config", str(config), "--workers", "2", *args) as relay:
        yield relay


def ws_session() -> aiohttp.ClientSession:
    """Every WebSocket on a new connection (as the official clients dial), never a pooled one."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


class Http:
    """One kept-alive HTTP/1.1 connection, spoken by hand so the test knows every request uses it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Http:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def request(
        self, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")[:-2]
        answer = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        if answer.get("transfer-encoding") == "chunked":
            data = b""
            while size := int((await self.reader.readuntil(b"\r\n")).strip(), 16):
                data += await self.reader.readexactly(size + 2)
                data = data[:-2]
            await self.reader.readuntil(b"\r\n")
        else:
            data = await self.reader.readexactly(int(answer.get("content-length", "0")))
        assert answer.get("connection", "").lower() != "close", "the relay closed the kept-alive connection"
        return int(status_line.split(" ")[1]), answer, data

    async def health(self) -> dict[str, Any]:
        status, _, data = await self.request("GET", "/$health")
        assert status == 200
        health: dict[str, Any] = json.loads(data)
        return health

    def close(self) -> None:
        self.writer.close()


async def connection_to(port: int, worker: int) -> Http:
    """A kept-alive connection that worker ``worker`` serves."""
    for _ in range(TRIES):
        http = await Http.open(port)
        if (await http.health())["worker"]["index"] == worker:
            return http
        http.close()
        await asyncio.sleep(RETRY_PAUSE)
    raise AssertionError(f"no connection landed on worker {worker} in {TRIES} tries")


async def workers_health(port: int) -> dict[int, dict[str, Any]]:
    """``/$health`` of each worker (new connections until both answered)."""
    seen: dict[int, dict[str, Any]] = {}
    for _ in range(TRIES):
        http = await Http.open(port)
        health = await http.health()
        http.close()
        seen[health["worker"]["index"]] = health
        if len(seen) == 2:
            return seen
        await asyncio.sleep(RETRY_PAUSE)
    raise AssertionError(f"only workers {sorted(seen)} answered in {TRIES} tries")


async def listeners_settled(port: int, total: int) -> dict[int, int]:
    """Each worker's own listeners, once every worker counts ``total`` in all."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            seen = await workers_health(port)
            if all(h["listeners"] == total for h in seen.values()):
                return {index: h["worker"]["listeners"] for index, h in seen.items()}


async def listener_on(
    session: aiohttp.ClientSession, url: str, worker: int, path: str = "echo"
) -> RawListener:
    """A raw listener whose control channel worker ``worker`` holds (the relay's first listener)."""
    port = int(url.rsplit(":", 1)[1])
    for _ in range(TRIES):
        listener = await RawListener.open(session, url, path)
        if (await listeners_settled(port, 1))[worker] == 1:
            return listener
        await listener.ws.close()
        await listeners_settled(port, 0)
    raise AssertionError(f"no listener landed on worker {worker}")


async def sender_on(
    session: aiohttp.ClientSession, url: str, listener: RawListener, worker: int, path: str = "echo"
) -> tuple[aiohttp.ClientWebSocketResponse, aiohttp.ClientWebSocketResponse]:
    """A sender held by worker ``worker``, spliced to ``listener``: (sender, listener's rendezvous socket)."""
    token = token_for(url, path)
    for _ in range(TRIES):
        connecting = asyncio.ensure_future(
            session.ws_connect(connect_url(url, path), headers={"ServiceBusAuthorization": token})
        )
        address = (await listener.next_command())["accept"]["address"]
        ident = address.split("sb-hc-id=", 1)[1].split("&", 1)[0]
        rendezvous = await session.ws_connect(address, autoclose=False)
        sender = await asyncio.wait_for(connecting, TIMEOUT)
        if worker_of(ident) == worker:
            return sender, rendezvous
        await asyncio.gather(sender.close(), rendezvous.close())
    raise AssertionError(f"no sender landed on worker {worker}")


# --- tests ---------------------------------------------------------------------------------------------


async def test_a_sender_on_one_worker_meets_a_listener_on_the_other(tmp_path: Path) -> None:
    async with workers_relay(tmp_path) as relay, ws_session() as session:
        url = f"ws://127.0.0.1:{relay.port}"
        # A hybrid connection created by its first listener (on worker 0) is known to worker 1 as well.
        listener = await listener_on(session, url, 0, "fresh")
        # The listener's dial lands on either worker: go on until one was handed to the sender's worker.
        for _ in range(TRIES):
            sender, rendezvous = await sender_on(session, url, listener, 1, "fresh")
            up = os.urandom(100_000)
            await sender.send_bytes(up)
            assert (await asyncio.wait_for(rendezvous.receive_bytes(), TIMEOUT)) == up
            down = os.urandom(70_000)
            await rendezvous.send_bytes(down)
            assert (await asyncio.wait_for(sender.receive_bytes(), TIMEOUT)) == down
            await sender.send_str("héllo")
            assert (await asyncio.wait_for(rendezvous.receive_str(), TIMEOUT)) == "héllo"
            await asyncio.gather(sender.close(), rendezvous.close())
            if (await workers_health(relay.port))[1]["worker"]["dials_handed_in"] >= 1:
                break
        else:
            raise AssertionError("no listener's dial was handed from worker 0 to worker 1")
        await listener.ws.close()


async def test_http_on_a_kept_alive_connection_reaches_a_listener_on_the_other_worker(tmp_path: Path) -> None:
    async with workers_relay(tmp_path) as relay, ws_session() as session:
        url = f"ws://127.0.0.1:{relay.port}"
        listener = await listener_on(session, url, 1)
        http = await connection_to(relay.port, 0)
        auth = {"ServiceBusAuthorization": token_for(url, "echo")}
        for body in (b"first", os.urandom(3000)):  # two requests on the one connection worker 0 serves
            sent = asyncio.ensure_future(http.request("POST", "/echo/orders?x=1", auth, body))
            request = (await listener.next_command())["request"]
            assert request["requestTarget"] == "/echo/orders?x=1"
            assert worker_of(request["id"]) == 0
            assert await asyncio.wait_for(listener.ws.receive_bytes(), TIMEOUT) == body
            response = {"requestId": request["id"], "statusCode": 201, "body": True}
            await listener.ws.send_str(json.dumps({"response": response}))
            await listener.ws.send_bytes(body[::-1])
            status, _, answer = await asyncio.wait_for(sent, TIMEOUT)
            assert (status, answer) == (201, body[::-1])
        assert (await http.health())["worker"]["index"] == 0  # still the same kept-alive connection
        http.close()
        await listener.ws.close()


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


async def test_metrics_are_the_whole_relays_whichever_worker_answers(tmp_path: Path) -> None:
    async with workers_relay(tmp_path) as relay, ws_session() as session:
        url = f"ws://127.0.0.1:{relay.port}"
        listener = await listener_on(session, url, 0)
        http = await connection_to(relay.port, 1)  # a request worker 1 takes, for worker 0's listener
        sent = asyncio.ensure_future(
            http.request("GET", "/echo", {"ServiceBusAuthorization": token_for(url, "echo")})
        )
        request = (await listener.next_command())["request"]
        await listener.ws.send_str(json.dumps({"response": {"requestId": request["id"], "statusCode": 201}}))
        assert (await asyncio.wait_for(sent, TIMEOUT))[0] == 201
        http.close()
        manage = {"Authorization": create_token("http://127.0.0.1/", KEY_NAME, KEY, int(time.time()) + 3600)}
        expected = {
            ("hyco_active_listeners", (("entity", "echo"),)): 1.0,  # held by worker 0
            ("hyco_http_requests_total", (("code", "201"), ("entity", "echo"))): 1.0,  # counted by worker 1
        }
        # listener_on may have opened (and closed) listeners on worker 1 before one landed on worker 0.
        opened = ("hyco_listener_connections_total", (("entity", "echo"), ("result", "success")))
        scrapes = []
        for worker in (0, 1):
            scrape = await connection_to(relay.port, worker)
            status, _, text = await scrape.request("GET", "/$metrics", manage)
            scrape.close()
            assert status == 200
            samples = _samples(text)
            assert {key: samples.get(key) for key in expected} == expected, f"scraped from worker {worker}"
            scrapes.append(samples[opened])
        assert scrapes[0] == scrapes[1] >= 1
        await listener.ws.close()


async def test_max_listeners_counts_every_workers_listeners(tmp_path: Path) -> None:
    async with workers_relay(tmp_path, max_listeners=2) as relay, ws_session() as session:
        url = f"ws://127.0.0.1:{relay.port}"
        first = await listener_on(session, url, 0)
        for _ in range(TRIES):  # a second listener on worker 1
            second = await RawListener.open(session, url)
            if (await listeners_settled(relay.port, 2)) == {0: 1, 1: 1}:
                break
            await second.ws.close()
            await listeners_settled(relay.port, 1)
        else:
            raise AssertionError("no second listener landed on worker 1")
        # Each worker holds one listener, under the cap of 2 on its own: only the count over both refuses.
        for _ in range(4):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await RawListener.open(session, url)
            assert refused.value.status == 403
        counts = await workers_health(relay.port)
        assert sorted(h["worker"]["listeners"] for h in counts.values()) == [1, 1]
        assert [h["listeners"] for h in counts.values()] == [2, 2]
        await first.ws.close()
        await second.ws.close()


async def test_a_key_rotated_through_one_worker_is_refused_by_both(tmp_path: Path) -> None:
    async with workers_relay(tmp_path) as relay:
        url = f"ws://127.0.0.1:{relay.port}"
        on = {worker: await connection_to(relay.port, worker) for worker in (0, 1)}
        manage = {"ServiceBusAuthorization": token_for(url, "")}
        rule = {"properties": {"rights": ["Listen", "Send"]}}
        status, _, _ = await on[0].request(
            "PUT", "/$management/authorizationRules/ops", manage, json.dumps(rule).encode()
        )
        assert status in (200, 201)
        old_key, new_key = (base64.b64encode(bytes([n]) * 32).decode() for n in (1, 2))

        async def regenerate(key: str) -> None:
            body = json.dumps({"keyType": "PrimaryKey", "key": key}).encode()
            status, _, _ = await on[0].request(
                "POST", "/$management/authorizationRules/ops/regenerateKeys", manage, body
            )
            assert status == 200

        def signed(key: str) -> dict[str, str]:
            return {"ServiceBusAuthorization": token_for(url, "echo", key_name="ops", key=key)}

        await regenerate(old_key)
        for worker in (0, 1):  # good on both (no listener: 502, not 401), and in both signature caches now
            assert (await on[worker].request("GET", "/echo", signed(old_key)))[0] == 502
        await regenerate(new_key)
        for worker in (0, 1):
            assert (await on[worker].request("GET", "/echo", signed(old_key)))[0] == 401, worker
            assert (await on[worker].request("GET", "/echo", signed(new_key)))[0] == 502, worker
        for http in on.values():
            http.close()


async def test_a_killed_worker_is_started_again_and_its_listener_comes_back(tmp_path: Path) -> None:
    from hyco import HybridConnectionClient, HybridConnectionListener, TokenProvider

    async with workers_relay(tmp_path) as relay:
        address = f"ws://127.0.0.1:{relay.port}/echo"
        tokens = TokenProvider.from_shared_access_key(KEY_NAME, KEY)
        async with HybridConnectionListener(address, tokens) as listener:

            async def echo() -> None:
                async for stream in listener:
                    await stream.write(await stream.read(100))
                    await stream.close()

            echoing = asyncio.ensure_future(echo())
            held = await listeners_settled(relay.port, 1)
            victim = next(index for index, count in held.items() if count == 1)
            before = await workers_health(relay.port)
            os.kill(before[victim]["worker"]["pid"], signal.SIGKILL)
            async with asyncio.timeout(TIMEOUT):
                while True:  # the supervisor starts it again (meanwhile only the other worker answers)
                    http = await Http.open(relay.port)
                    health = (await http.health())["worker"]
                    http.close()
                    if health["index"] == victim and health["pid"] != before[victim]["worker"]["pid"]:
                        break
            # The listener reconnects by itself; the new worker learnt what the other holds.
            assert sum((await listeners_settled(relay.port, 1)).values()) == 1
            for _ in range(4):
                stream = await HybridConnectionClient(address, tokens).connect()
                await stream.write(b"ping")
                assert await asyncio.wait_for(stream.read(100), TIMEOUT) == b"ping"
                await stream.close()
            echoing.cancel()
        code, _, err = await relay.stop()
        assert code == 0
        assert f"worker {victim} (pid {before[victim]['worker']['pid']}) ended (killed by SIGKILL)" in err


async def test_sigterm_stops_every_worker(tmp_path: Path) -> None:
    async with workers_relay(tmp_path) as relay:
        pids = [h["worker"]["pid"] for h in (await workers_health(relay.port)).values()]
        assert relay.proc.pid not in pids and len(set(pids)) == 2
        assert any("workers: 2 processes behind one port" in line for line in relay.banner)
        code, _, err = await relay.stop()
        assert code == 0
        assert err.count("relay stopped") == 2
        for pid in pids:  # reaped by the supervisor before it exited
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


async def test_more_than_one_worker_with_tls_is_refused_with_what_to_do(tmp_path: Path) -> None:
    code, _, err = await run_to_exit(tmp_path, "relay", "--self-signed", "localhost", "--workers", "2")
    assert code == 1
    assert "--workers 2 is not possible with TLS" in err
    assert "terminate TLS in front of the relay" in err


def test_worker_tags() -> None:
    from hyco.server.workers.door import dial_target
    from hyco.server.workers.mesh import tag

    ident = f"8d4b8a2e-1c1f-4b59-9e1a-5f1d2c3b4a59_{'ab' * 16}{tag(3)}"
    assert worker_of(ident) == 3
    assert worker_of("8d4b8a2e-1c1f-4b59-9e1a-5f1d2c3b4a59_" + "ab" * 16) is None  # a single relay's id
    assert worker_of(None) is None
    line = f"GET /$hc/echo?sb-hc-action=accept&sb-hc-id={ident} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    assert dial_target(line) == 3
    assert dial_target(line.replace(b"accept", b"request")) == 3
    assert dial_target(line.replace(b"accept", b"connect")) is None  # a sender is served where it lands
    assert dial_target(b"POST /echo HTTP/1.1\r\n\r\n") is None


def test_the_workers_key_of_the_configuration(tmp_path: Path) -> None:
    from hyco.exceptions import InvalidConfig
    from hyco.server import load_config

    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("[server]\n", "[server]\nworkers = 3\n"), encoding="utf-8")
    assert load_config(path).server.workers == 3
    path.write_text(path.read_text().replace("workers = 3", "workers = 0"), encoding="utf-8")
    with pytest.raises(InvalidConfig, match=r"server\.workers must be 1 or more"):
        load_config(path)
