"""ASGI apps (Starlette, FastAPI) served through a listener with hyco.asgi, called by plain HTTP senders."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

import hyco
import hyco.asgi
from hyco import HybridConnectionListener, TokenProvider
from hyco.server import Relay
from tests.client.conftest import address
from tests.conftest import TIMEOUT


def make_starlette(events: list[str]) -> Starlette:
    async def info(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "path": request.url.path,
                "route_path": request.scope["path"],
                "root_path": request.scope["root_path"],
                "query": dict(request.query_params),
                "url_for": str(request.url_for("info", rest="z")),
                "client": request.client.host if request.client else None,
                "started": request.state.started,
            }
        )

    async def digest(request: Request) -> PlainTextResponse:
        h = hashlib.sha256()
        size = 0
        async for chunk in request.stream():
            h.update(chunk)
            size += len(chunk)
        return PlainTextResponse(f"{size} {h.hexdigest()}")

    async def download(request: Request) -> StreamingResponse:
        size = int(request.query_params["size"])

        async def produce() -> AsyncIterator[bytes]:
            sent = 0
            while sent < size:
                piece = min(100_000, size - sent)
                yield b"d" * piece
                sent += piece

        return StreamingResponse(produce(), media_type="application/octet-stream")

    async def echo(request: Request) -> Response:
        return Response(await request.body(), status_code=202, headers={"X-Echo": "1"})

    async def fail(request: Request) -> Response:
        raise RuntimeError("app failure")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        events.append("startup")
        yield {"started": True}
        events.append("shutdown")

    return Starlette(
        routes=[
            Route("/info/{rest:path}", info, name="info", methods=["GET"]),
            Route("/digest", digest, methods=["POST", "PUT"]),
            Route("/download", download),
            Route("/echo", echo, methods=["POST"]),
            Route("/fail", fail),
        ],
        lifespan=lifespan,
    )


@contextlib.asynccontextmanager
async def served(app: Any, relay: Relay, tp: TokenProvider, **kwargs: Any) -> AsyncIterator[None]:
    listener = HybridConnectionListener(address(relay), tp)
    online = asyncio.Event()
    task = asyncio.create_task(hyco.asgi.serve(app, listener, ready=lambda _: online.set(), **kwargs))
    try:
        await asyncio.wait_for(online.wait(), TIMEOUT)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, TIMEOUT)


async def call(relay: Relay, tp: TokenProvider, method: str, suffix: str, **kwargs: Any):
    if isinstance(kwargs.get("data"), bytes):
        kwargs["data"] = io.BytesIO(kwargs["data"])
    async with asyncio.timeout(3 * TIMEOUT):
        async with hyco.request(method, f"{relay.http_url}/echo{suffix}", token_provider=tp, **kwargs) as r:
            return r.status, r.headers, await r.read()


async def test_starlette_app_routes_streams_and_runs_its_lifespan(relay: Relay, tp: TokenProvider):
    events: list[str] = []
    app = make_starlette(events)
    async with served(app, relay, tp):
        assert events == ["startup"]
        status, _, body = await call(relay, tp, "GET", "/info/a/b?q=1")
        assert status == 200
        import json

        info = json.loads(body)
        assert info["path"] == "/echo/info/a/b"  # the sender's URL, hybrid connection included
        assert info["root_path"] == "/echo"
        assert info["route_path"] == "/echo/info/a/b"  # ASGI: path includes root_path
        assert info["query"] == {"q": "1"}
        assert info["url_for"] == f"{relay.http_url}/echo/info/z"
        assert info["client"] == "127.0.0.1"
        assert info["started"] is True

        big = bytes(range(256)) * 16384  # 4 MiB
        status, _, body = await call(relay, tp, "PUT", "/digest", data=big)
        assert (status, body.decode()) == (200, f"{len(big)} {hashlib.sha256(big).hexdigest()}")

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(30):
                yield b"c" * 10_000

        status, _, body = await call(relay, tp, "POST", "/digest", data=chunks())
        assert body.decode().startswith("300000 ")

        status, _, body = await call(relay, tp, "GET", "/download?size=5000000")
        assert (status, len(body), set(body)) == (200, 5_000_000, {ord("d")})

        status, headers, body = await call(relay, tp, "POST", "/echo", data=b"small")
        assert (status, headers["X-Echo"], body) == (202, "1", b"small")

        status, _, _ = await call(relay, tp, "GET", "/fail")
        assert status == 500
        status, _, _ = await call(relay, tp, "GET", "/nope")
        assert status == 404
    assert events == ["startup", "shutdown"]


async def test_fastapi_app(relay: Relay, tp: TokenProvider):
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int, q: str | None = None) -> dict[str, Any]:
        return {"item_id": item_id, "q": q}

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    async with served(app, relay, tp):
        status, _, body = await call(relay, tp, "GET", "/items/42?q=x")
        assert (status, body) == (200, b'{"item_id":42,"q":"x"}')
        status, _, body = await call(relay, tp, "POST", "/upload", data=b"u" * 300_000)
        assert (status, body) == (200, b'{"size":300000}')
        status, _, _ = await call(relay, tp, "GET", "/items/notanint")
        assert status == 422


async def test_raw_asgi_app_without_lifespan_and_path_without_root(relay: Relay, tp: TokenProvider):
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise RuntimeError("http only")  # no lifespan support: serve() carries on
        seen.append(dict(scope))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"b")]})
        await send({"type": "http.response.body", "body": b"one ", "more_body": True})
        await send({"type": "http.response.body", "body": b"two"})

    async with served(app, relay, tp, root_path_in_path=False):
        status, headers, body = await call(relay, tp, "GET", "/x/y?z")
        assert (status, headers["x-a"], body) == (200, "b", b"one two")
    (scope,) = seen
    assert (scope["path"], scope["root_path"], scope["query_string"]) == ("/x/y", "/echo", b"z")
    assert scope["scheme"] == "http"


async def test_failed_startup_is_reported(relay: Relay, tp: TokenProvider):
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield

    listener = HybridConnectionListener(address(relay), tp)
    with pytest.raises(hyco.asgi.LifespanError, match="no database"):
        await asyncio.wait_for(hyco.asgi.serve(Starlette(lifespan=lifespan), listener), TIMEOUT)
