"""The HTTP inspector API (ngrok's shapes under /$management/requests/http): capture only for inspected
entities, credentials redacted, bounded, detail, replay through the relay, and a clear error when the
listener is gone."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from hyco import HybridConnectionListener, RelayedHttpRequest, RelayedHttpResponse, TokenProvider
from hyco.server import HybridConnectionConfig, Relay
from hyco.server.dashboard.inspector import Inspector
from tests.conftest import KEY, KEY_NAME, TIMEOUT
from tests.conftest import test_config as make_config
from tests.management.conftest import Api
from tests.server.wire import token_for


@pytest.fixture
async def inspected(relay_factory) -> Relay:
    base = make_config()
    return await relay_factory(
        hybrid_connections=(*base.hybrid_connections, HybridConnectionConfig("web", inspect=True))
    )


class Recorder:
    """A listener's request handler that answers with JSON and remembers each request body."""

    def __init__(self) -> None:
        self.bodies: asyncio.Queue[bytes] = asyncio.Queue()

    async def __call__(self, request: RelayedHttpRequest) -> RelayedHttpResponse:
        body = await request.read()
        await self.bodies.put(body)
        return RelayedHttpResponse(
            201, json.dumps({"got": len(body)}), headers={"Content-Type": "application/json"}
        )


async def post(session, relay: Relay, path: str, body: bytes) -> int:
    token = token_for(relay.url, path.split("/")[0])
    url = f"{relay.http_url}/{path}"
    headers = {"Authorization": "Bearer app-secret", "X-Trace": "t1"}
    params = {"a": "1", "sb-hc-token": token}
    async with session.post(url, data=body, headers=headers, params=params) as resp:
        await resp.read()
        return resp.status


async def test_capture_detail_replay_and_clear(inspected: Relay, session):
    api = Api(session, inspected)
    recorder = Recorder()
    tp = TokenProvider.from_shared_access_key(KEY_NAME, KEY)
    async with HybridConnectionListener(f"{inspected.url}/web", tp, request_handler=recorder):
        assert await post(session, inspected, "web/items", b'{"name": "x"}') == 201
        assert await asyncio.wait_for(recorder.bodies.get(), TIMEOUT) == b'{"name": "x"}'
        status, listed = await api.call("GET", "requests/http")
        assert status == 200
        (captured,) = listed["requests"]
        assert captured["request"]["method"] == "POST"
        assert captured["uri"] == "/web/items?a=1&sb-hc-token=[redacted]"
        headers = captured["request"]["headers"]
        assert headers["Authorization"] == ["[redacted]"]
        assert headers["X-Trace"] == ["t1"]
        assert base64.b64decode(captured["request"]["body"]["base64"]) == b'{"name": "x"}'
        assert captured["response"]["status_code"] == 201
        assert json.loads(base64.b64decode(captured["response"]["body"]["base64"])) == {"got": 13}
        text = json.dumps(listed)
        assert KEY not in text
        assert "app-secret" not in text
        assert "sig=" not in text

        _, detail = await api.call("GET", f"requests/http/{captured['id']}")
        assert detail == captured
        status, replayed = await api.call("POST", "requests/http", {"id": captured["id"]})
        assert (status, replayed["replayStatus"]) == (200, 201)
        assert await asyncio.wait_for(recorder.bodies.get(), TIMEOUT) == b'{"name": "x"}'
        _, listed = await api.call("GET", "requests/http")
        assert len(listed["requests"]) == 2  # the replay is recorded too, as ngrok does
        _, status_now = await api.call("GET", "status")
        (web,) = [row for row in status_now["hybridConnections"] if row["name"] == "web"]
        assert (web["httpRequests"], web["bytesIn"], web["bytesOut"]) == (2, 26, 22)

    status, answer = await api.call("POST", "requests/http", {"id": captured["id"]})
    assert status == 409
    assert answer["error"]["code"] == "NoListener"
    assert (await api.call("DELETE", "requests/http"))[0] == 204
    assert (await api.call("GET", "requests/http"))[1]["requests"] == []
    assert (await api.call("GET", f"requests/http/{captured['id']}"))[0] == 404


async def test_entities_without_inspect_are_not_recorded(inspected: Relay, session):
    api = Api(session, inspected)
    async with session.get(f"{inspected.http_url}/open/x") as resp:
        assert resp.status == 502
    assert (await api.call("GET", "requests/http"))[1]["requests"] == []


async def test_inspect_is_set_at_run_time_through_the_api(relay: Relay, session):
    """``inspect`` (hyco's own property) turns recording on and off for a hybrid connection created at run
    time, from the next request on; a bad value and a configured entity are refused and change nothing."""
    api = Api(session, relay)
    status, created = await api.call("PUT", "hybridConnections/shop", {"properties": {}})
    assert (status, created["properties"]["inspect"]) == (200, False)
    recorder = Recorder()
    tp = TokenProvider.from_shared_access_key(KEY_NAME, KEY)
    async with HybridConnectionListener(f"{relay.url}/shop", tp, request_handler=recorder):
        assert await post(session, relay, "shop/before", b"1") == 201
        status, changed = await api.call("PUT", "hybridConnections/shop", {"properties": {"inspect": True}})
        assert (status, changed["properties"]["inspect"]) == (200, True)
        assert await post(session, relay, "shop/during", b"2") == 201
        assert (await api.call("PUT", "hybridConnections/shop", {"properties": {"inspect": False}}))[0] == 200
        assert await post(session, relay, "shop/after", b"3") == 201
    _, listed = await api.call("GET", "requests/http")
    assert [r["uri"].split("?")[0] for r in listed["requests"]] == ["/shop/during"]

    status, answer = await api.call("PUT", "hybridConnections/shop", {"properties": {"inspect": "yes"}})
    assert (status, answer["error"]["message"]) == (400, "'inspect' must be true or false.")
    status, answer = await api.call("PUT", "hybridConnections/echo", {"properties": {"inspect": True}})
    assert (status, answer["error"]["code"]) == (409, "Conflict")
    assert "configuration file" in answer["error"]["message"]
    _, shown = await api.call("GET", "hybridConnections/echo")
    assert shown["properties"]["inspect"] is False
    _, shown = await api.call("GET", "hybridConnections/shop")
    assert shown["properties"]["inspect"] is False


async def test_needs_a_manage_token(inspected: Relay, session):
    assert (await Api(session, inspected, token="").call("GET", "requests/http"))[0] == 401


def test_memory_is_bounded():
    class FakeRequest(dict):
        method = "PUT"
        remote = "127.0.0.1"
        headers: dict[str, str] = {}

        class rel_url:
            raw_path = "/web"
            raw_query_string = ""

    from hyco.server.registry import HybridConnection

    inspector = Inspector(max_requests=3, max_body=4)
    hc = HybridConnection(HybridConnectionConfig("web", inspect=True))
    captures = [inspector.begin(FakeRequest(), hc) for _ in range(5)]  # type: ignore[arg-type]
    assert [c.id for c in inspector.recent()] == [c.id for c in reversed(captures[2:])]
    assert inspector.get(captures[0].id) is None
    captures[4].request_chunk(b"0123456789")
    inspector.finish(captures[4], 200)
    body = captures[4].summary()["request"]["body"]
    assert (body["size"], body["truncated"], base64.b64decode(body["base64"])) == (10, True, b"0123")
    assert not captures[4].replayable
