"""Raw protocol peers for relay tests: plain aiohttp WebSockets speaking the wire format by hand.

These deliberately avoid the hyco SDK so the relay is tested against the protocol itself.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from hyco.protocol.sas import create_token
from tests.conftest import KEY, KEY_NAME, TIMEOUT


def token_for(relay_url: str, path: str, key_name: str = KEY_NAME, key: str = KEY, ttl: int = 3600) -> str:
    host = relay_url.split("://", 1)[1].split(":")[0]
    return create_token(f"http://{host}/{path}/", key_name, key, int(time.time()) + ttl)


def listen_url(relay_url: str, path: str, listener_id: str | None = None, query: str = "") -> str:
    q = f"{query}&" if query else ""
    lid = f"&sb-hc-id={listener_id}" if listener_id else ""
    return f"{relay_url}/$hc/{path}?{q}sb-hc-action=listen{lid}"


def connect_url(relay_url: str, path: str, query: str = "") -> str:
    q = f"{query}&" if query else ""
    return f"{relay_url}/$hc/{path}?{q}sb-hc-action=connect"


class RawListener:
    """A control channel opened by hand; ``accepts`` collects the commands the relay sends."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws

    @classmethod
    async def open(
        cls,
        session: aiohttp.ClientSession,
        relay_url: str,
        path: str = "echo",
        *,
        token: str | None = None,
        listener_id: str | None = None,
        **kwargs: Any,
    ) -> RawListener:
        token = token if token is not None else token_for(relay_url, path)
        ws = await session.ws_connect(
            listen_url(relay_url, path, listener_id),
            headers={"ServiceBusAuthorization": token},
            timeout=aiohttp.ClientWSTimeout(ws_close=TIMEOUT),
            **kwargs,
        )
        return cls(session, ws)

    async def next_command(self) -> dict[str, Any]:
        msg = await asyncio.wait_for(self.ws.receive(), TIMEOUT)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        data: dict[str, Any] = json.loads(msg.data)
        return data

    async def accept(self, *, protocols: tuple[str, ...] = ()) -> aiohttp.ClientWebSocketResponse:
        command = (await self.next_command())["accept"]
        return await self.session.ws_connect(command["address"], protocols=protocols, autoclose=False)


async def send_connect(
    session: aiohttp.ClientSession,
    relay_url: str,
    path: str = "echo",
    *,
    token: str | None = None,
    query: str = "",
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> aiohttp.ClientWebSocketResponse:
    token = token if token is not None else token_for(relay_url, path)
    all_headers = {"ServiceBusAuthorization": token, **(headers or {})}
    return await session.ws_connect(connect_url(relay_url, path, query), headers=all_headers, **kwargs)


#: Reason phrases of the last response per URL, recorded by sessions from :func:`recording_session`
#: (aiohttp's handshake error keeps the status but not the reason phrase the relay sent).
REASONS: dict[str, str] = {}
#: Response headers of the last response per URL, recorded the same way.
HEADERS: dict[str, dict[str, str]] = {}


def recording_session() -> aiohttp.ClientSession:
    async def on_end(session: Any, context: Any, params: aiohttp.TraceRequestEndParams) -> None:
        REASONS[str(params.url)] = params.response.reason or ""
        HEADERS[str(params.url)] = dict(params.response.headers)

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    return aiohttp.ClientSession(trace_configs=[trace])


class Refusal:
    def __init__(self, exc: aiohttp.WSServerHandshakeError) -> None:
        self.status = exc.status
        self.message = REASONS.get(str(exc.request_info.url), "")


async def handshake_error(coro: Any) -> Refusal:
    """Await a WebSocket connect that must fail; returns its status and the relay's reason phrase."""
    try:
        ws = await asyncio.wait_for(coro, TIMEOUT)
    except aiohttp.WSServerHandshakeError as exc:
        return Refusal(exc)
    await ws.close()
    raise AssertionError("the handshake succeeded but was expected to fail")


async def wait_for_health(session: aiohttp.ClientSession, http_url: str, field: str, value: int) -> None:
    """Wait until the relay's ``/$health`` reports ``field == value``.

    The relay signals nothing else to an outside client when it has forgotten a sender or a listener, so this
    polls its health endpoint (bounded by TIMEOUT).
    """
    async with asyncio.timeout(TIMEOUT):
        while True:
            async with session.get(f"{http_url}/$health") as resp:
                if (await resp.json())[field] == value:
                    return
            await asyncio.sleep(0.02)
