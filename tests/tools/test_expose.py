"""``hyco expose`` in front of a real local aiohttp server, through the in-process relay."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import socket
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import hyco
from hyco import HybridConnectionListener, TokenProvider
from hyco.server import Relay
from hyco.tools.expose import RequestRecord, expose, load_asgi_app, normalize_target
from tests.conftest import KEY, KEY_NAME, TIMEOUT

HYCO = [sys.executable, "-c", "from hyco.cli import main; main()"]


@pytest.fixture
def tp() -> TokenProvider:
    return TokenProvider.from_shared_access_key(KEY_NAME, KEY)


def local_app() -> web.Application:
    async def info(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "path": request.path_qs,
                "method": request.method,
                "host": request.host,
                "forwarded": {k: v for k, v in request.headers.items() if k.startswith("X-Forwarded")},
                "x_app": request.headers.get("X-App"),
                "length": request.headers.get("Content-Length"),
            },
            headers={"X-Local": "yes"},
        )

    async def digest(request: web.Request) -> web.Response:
        h = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_chunked(65536):
            h.update(chunk)
            size += len(chunk)
        return web.Response(text=f"{size} {h.hexdigest()}")

    async def download(request: web.Request) -> web.StreamResponse:
        size = int(request.query["size"])
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        sent = 0
        while sent < size:
            piece = min(100_000, size - sent)
            await response.write(b"e" * piece)
            sent += piece
        await response.write_eof()
        return response

    async def teapot(request: web.Request) -> web.Response:
        return web.Response(status=418, reason="Short And Stout", text="tea")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    async def redirect_absolute(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently(f"http://{request.host}/sub/?x=1")

    async def sized(request: web.Request) -> web.Response:
        return web.Response(body=b"s" * 1234)  # aiohttp answers HEAD with the GET's Content-Length

    app = web.Application()
    app.router.add_route("*", "/info/{tail:.*}", info)
    app.router.add_post("/digest", digest)
    app.router.add_get("/download", download)
    app.router.add_get("/teapot", teapot)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/redirect-absolute", redirect_absolute)
    app.router.add_get("/sized", sized)  # add_get also answers HEAD
    return app


@contextlib.asynccontextmanager
async def local_server() -> AsyncIterator[str]:
    runner = web.AppRunner(local_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def exposing(relay: Relay, tp: TokenProvider, **kwargs: Any) -> AsyncIterator[list[RequestRecord]]:
    records: list[RequestRecord] = []
    listener = HybridConnectionListener(f"{relay.url}/echo", tp)
    online = asyncio.Event()
    task = asyncio.create_task(
        expose(listener, report=records.append, ready=lambda _: online.set(), **kwargs)
    )
    try:
        await asyncio.wait_for(online.wait(), TIMEOUT)
        yield records
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, TIMEOUT)


async def call(relay: Relay, tp: TokenProvider | None, method: str, suffix: str, **kwargs: Any):
    if isinstance(kwargs.get("data"), bytes):
        kwargs["data"] = io.BytesIO(kwargs["data"])
    async with asyncio.timeout(3 * TIMEOUT):
        async with hyco.request(method, f"{relay.http_url}/echo{suffix}", token_provider=tp, **kwargs) as r:
            return r.status, r.reason, r.headers, await r.read()


async def test_expose_forwards_paths_headers_and_bodies_both_ways(relay: Relay, tp: TokenProvider):
    async with local_server() as url, exposing(relay, tp, target=url) as records:
        status, _, headers, body = await call(relay, tp, "GET", "/info/a/b%20c?q=1&r", headers={"X-App": "v"})
        assert (status, headers["X-Local"]) == (200, "yes")
        import json

        info = json.loads(body)
        assert info["path"] == "/info/a/b%20c?q=1&r"  # the hybrid connection prefix is gone
        assert info["host"] == url.split("://")[1]
        assert info["x_app"] == "v"
        assert info["forwarded"]["X-Forwarded-Prefix"] == "/echo"
        assert info["forwarded"]["X-Forwarded-For"] == "127.0.0.1"
        assert info["forwarded"]["X-Forwarded-Proto"] == "http"

        status, _, _, body = await call(relay, tp, "POST", "/info/small", data=b"12345")
        assert json.loads(body)["length"] == "5"  # inline bodies keep their length

        big = bytes(range(256)) * 24_000  # ~6 MiB, streamed through the rendezvous
        status, _, _, body = await call(relay, tp, "POST", "/digest", data=big)
        assert body.decode() == f"{len(big)} {hashlib.sha256(big).hexdigest()}"

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(40):
                yield b"k" * 25_000

        status, _, _, body = await call(relay, tp, "POST", "/digest", data=chunks())
        assert body.decode().startswith("1000000 ")

        status, _, _, body = await call(relay, tp, "GET", "/download?size=7000000")
        assert (status, len(body), set(body)) == (200, 7_000_000, {ord("e")})

        status, reason, _, body = await call(relay, tp, "GET", "/teapot")
        assert (status, reason, body) == (418, "Short And Stout", b"tea")

        # Redirects keep the public prefix: the local app's "/elsewhere" is the sender's "/echo/elsewhere".
        status, _, headers, _ = await call(relay, tp, "GET", "/redirect", allow_redirects=False)
        assert (status, headers["Location"]) == (302, "/echo/elsewhere")
        status, _, headers, _ = await call(relay, tp, "GET", "/redirect-absolute", allow_redirects=False)
        assert (status, headers["Location"]) == (301, f"{relay.http_url}/echo/sub/?x=1")

        status, _, headers, body = await call(relay, tp, "HEAD", "/info/h")
        assert (status, body) == (200, b"")

        results = await asyncio.gather(
            *(call(relay, tp, "GET", f"/info/{i}") for i in range(15))  # concurrent requests
        )
        assert [json.loads(r[3])["path"] for r in results] == [f"/info/{i}" for i in range(15)]
    assert records[0].method == "GET" and records[0].path == "/info/a/b%20c?q=1&r"
    assert records[0].status == 200 and records[0].milliseconds >= 0
    assert "418" in str(next(r for r in records if r.status == 418))


async def test_local_server_down_gives_502_with_a_clear_reason(relay: Relay, tp: TokenProvider):
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with exposing(relay, tp, target=f"http://127.0.0.1:{port}") as records:
        status, reason, _, body = await call(relay, tp, "GET", "/anything")
    assert status == 502
    assert f"could not reach the local server http://127.0.0.1:{port}" in reason
    assert b"could not reach" in body
    assert records[0].status == 502 and records[0].error


async def test_local_server_too_slow_gives_504(relay: Relay, tp: TokenProvider):
    async def slow(request: web.Request) -> web.Response:
        await asyncio.Event().wait()  # a local app that never answers
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        async with exposing(relay, tp, target=url, local_timeout=0.3):
            status, _, _, body = await call(relay, tp, "GET", "/slow")
        assert status == 504
        assert b"did not answer" in body
    finally:
        await runner.cleanup()


async def test_expose_an_asgi_app_by_module_name(relay: Relay, tp: TokenProvider, tmp_path: Path):
    (tmp_path / "exposed_app_mod.py").write_text(
        textwrap.dedent(
            """
            from starlette.applications import Starlette
            from starlette.responses import PlainTextResponse
            from starlette.routing import Route

            async def hello(request):
                n = request.query_params.get("n", "")
                return PlainTextResponse("hello " + request.url.path + " " + n)

            app = Starlette(routes=[Route("/hello", hello)])
            """
        )
    )
    app = load_asgi_app("exposed_app_mod:app", str(tmp_path))
    async with exposing(relay, tp, app=app) as records:
        status, _, _, body = await call(relay, tp, "GET", "/hello?n=3")
    assert (status, body) == (200, b"hello /echo/hello 3")
    assert (records[0].path, records[0].status) == ("/hello?n=3", 200)
    with pytest.raises(hyco.InvalidInput):
        load_asgi_app("no_such_module_here:app")


async def test_head_keeps_the_content_length_a_get_would_have(relay: Relay, tp: TokenProvider):
    async with local_server() as url, exposing(relay, tp, target=url):
        status, _, headers, body = await call(relay, tp, "HEAD", "/sized")
    assert (status, headers.get("Content-Length"), body) == (200, "1234", b"")


@pytest.mark.parametrize(
    ("location", "base", "public"),
    [
        ("/sub/", "http://localhost:8000", "/web/sub/"),
        ("/", "http://localhost:8000", "/web/"),
        ("http://localhost:8000/a?b=1#c", "http://localhost:8000", "https://ns.example/web/a?b=1#c"),
        ("/app/x", "http://localhost:8000/app", "/web/x"),
        ("/app", "http://localhost:8000/app", "/web/"),
        ("/other", "http://localhost:8000/app", "/other"),  # outside the exposed base: unchanged
        ("https://elsewhere.example/", "http://localhost:8000", "https://elsewhere.example/"),
        ("next/page", "http://localhost:8000", "next/page"),  # relative: resolves by itself
    ],
)
def test_redirect_locations_keep_the_public_prefix(location: str, base: str, public: str) -> None:
    from hyco.tools.expose import _public_location

    assert _public_location(location, base, "/web", "https://ns.example") == public


def test_normalize_target() -> None:
    assert normalize_target("8000") == "http://localhost:8000"
    assert normalize_target("example.test:81") == "http://example.test:81"
    assert normalize_target("https://h/base/") == "https://h/base"
    for bad in ("ftp://x", "http://h:99999", "http://h/?q=1"):
        with pytest.raises(hyco.InvalidInput):
            normalize_target(bad)


async def test_cli_expose_as_a_subprocess(relay: Relay, tp: TokenProvider):
    async with local_server() as url:
        cs = f"Endpoint={relay.url}/;EntityPath=echo;SharedAccessKeyName={KEY_NAME};SharedAccessKey={KEY}"
        process = await asyncio.create_subprocess_exec(
            *HYCO,
            "expose",
            url,
            env={"AZURE_BRIDGE_CONNECTIONSTRING": cs, "PATH": "", "PYTHONPATH": ":".join(sys.path)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None and process.stderr is not None
        try:
            async with asyncio.timeout(3 * TIMEOUT):
                banner = b""
                while b"Forwarding" not in banner:
                    line = await process.stderr.readline()
                    assert line, banner
                    banner += line
                assert f"{relay.http_url}/echo  ->  {url}".encode() in banner
                status, _, _, body = await call(relay, tp, "GET", "/info/from-cli?z=9")
                assert status == 200 and b'"/info/from-cli?z=9"' in body
                line = await process.stdout.readline()
                assert b"GET" in line and b"/info/from-cli?z=9" in line and b"200" in line
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), TIMEOUT)


async def test_cli_expose_usage_errors():
    from click.testing import CliRunner

    from hyco.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["expose", "8000"], env={"HYCO_CONNECTION_STRING": "", "HYCO_ADDRESS": ""})
    assert result.exit_code == 2 and "--connection-string" in result.output
    result = runner.invoke(main, ["expose", "8000", "--asgi", "m:app", "-a", "ws://h/p"])
    assert result.exit_code == 2
    result = runner.invoke(main, ["expose", "8000", "-x", "Endpoint=nonsense"], env={"HYCO_KEY": ""})
    assert result.exit_code == 1 and "Error" in result.output


async def test_plain_aiohttp_sender_without_sdk(relay: Relay, tp: TokenProvider):
    # What curl does: a plain HTTP client with the token header, no hyco on the sending side.
    token = (await hyco.client.token_headers(f"{relay.http_url}/echo", tp))["ServiceBusAuthorization"]
    async with local_server() as url, exposing(relay, tp, target=url), aiohttp.ClientSession() as session:
        r = await session.put(
            f"{relay.http_url}/echo/info/x",
            data=b"body",
            headers={"ServiceBusAuthorization": token},
            timeout=aiohttp.ClientTimeout(total=TIMEOUT),
        )
        async with r:
            assert r.status == 200
            assert (await r.json())["method"] == "PUT"


async def test_cli_expose_shows_the_traceback_of_a_failing_asgi_route(
    relay: Relay, tp: TokenProvider, tmp_path: Path
):
    (tmp_path / "failing_app_mod.py").write_text(
        textwrap.dedent(
            """
            async def app(scope, receive, send):
                if scope["type"] == "http":
                    raise ValueError("the route broke here")
            """
        )
    )
    cs = f"Endpoint={relay.url}/;EntityPath=echo;SharedAccessKeyName={KEY_NAME};SharedAccessKey={KEY}"
    process = await asyncio.create_subprocess_exec(
        *HYCO,
        "expose",
        "--asgi",
        "failing_app_mod:app",
        "--app-dir",
        str(tmp_path),
        "-x",
        cs,
        env={"PATH": "", "PYTHONPATH": ":".join(sys.path)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        async with asyncio.timeout(3 * TIMEOUT):
            while b"online" not in await process.stderr.readline():
                pass
            status, _, _, _ = await call(relay, tp, "GET", "/boom")
            assert status == 500
            lines = []
            while not lines or b"ValueError: the route broke here" not in lines[-1]:
                line = await process.stderr.readline()
                assert line, b"".join(lines)
                lines.append(line)
        assert any(b"Traceback (most recent call last)" in line for line in lines)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), TIMEOUT)
