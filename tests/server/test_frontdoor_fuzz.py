"""Fuzzing the relay's front door over real sockets (issue 13, "Fuzzing").

Hypothesis drives raw bytes and mutated HTTP requests (WebSocket upgrades for every ``sb-hc-action``,
plain HTTP senders, real and broken tokens, odd lengths and encodings) at one relay on ``127.0.0.1:0``. The
property: the relay answers with a status that is not 500, or closes the connection; it never logs an error
of its own (a traceback that is not a client's malformed request); and ``/$health`` keeps answering.

The relay runs in a thread with its own event loop so each example is a plain blocking socket exchange.
Budget: 300 examples in CI; ``HYCO_FUZZ_EXAMPLES=N`` for a long run (see tests/protocol/fuzzing.py).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote

import pytest
from aiohttp.http_exceptions import HttpProcessingError
from hypothesis import given
from hypothesis import strategies as st

from hyco.server import serve
from tests.conftest import TIMEOUT, test_config
from tests.protocol.fuzzing import fuzz_settings
from tests.server.wire import token_for


@dataclass
class RunningRelay:
    port: int
    token: str
    #: Log records that mean the relay itself failed (not a client's malformed request).
    failures: list[str] = field(default_factory=list)


class _RelayFailures(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            return  # aiohttp refusing a malformed request with a 400: the client's fault
        self.sink.append(f"{record.name}: {record.getMessage()} {error!r}")


@pytest.fixture(scope="module")
def front_door() -> Iterator[RunningRelay]:
    started = threading.Event()
    box: dict[str, object] = {}

    async def run() -> None:
        stop = asyncio.Event()
        box["stop"], box["loop"] = stop, asyncio.get_running_loop()
        async with serve(test_config()) as relay:
            box["port"], box["url"] = relay.port, relay.url
            started.set()
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(run(),), name="fuzzed-relay", daemon=True)
    thread.start()
    assert started.wait(TIMEOUT), "the relay did not start"
    failures: list[str] = []
    handler = _RelayFailures(failures)
    for name in ("hyco", "aiohttp"):
        logging.getLogger(name).addHandler(handler)
    try:
        yield RunningRelay(box["port"], token_for(str(box["url"]), "echo"), failures)  # type: ignore[arg-type]
    finally:
        for name in ("hyco", "aiohttp"):
            logging.getLogger(name).removeHandler(handler)
        loop, stop = box["loop"], box["stop"]
        loop.call_soon_threadsafe(stop.set)  # type: ignore[attr-defined]
        thread.join(TIMEOUT)


#: Appended to every input: a complete request that asks the relay to close once it has answered, so an
#: exchange ends as soon as the relay is done with the input (a half-close would cancel its handlers instead).
SENTINEL = b"GET /$health HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n"
#: How long an exchange reads when the relay neither answers nor closes (it may rightly wait, e.g. for a body
#: that a Content-Length promised). Not an assertion: a late answer is only not looked at, and a relay failure
#: still shows in its log.
READ_BOUND = 1.0


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` then :data:`SENTINEL`, and read what the relay says until it closes (or READ_BOUND)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        try:
            sock.sendall(data + SENTINEL)
        except OSError:
            return b""  # the relay closed first (it may reset a connection it refused): a close is fine
        sock.settimeout(READ_BOUND)
        received = bytearray()
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            received += chunk
        return bytes(received)


def statuses(response: bytes) -> list[int]:
    """Status codes of every HTTP response in ``response`` (pipelined requests get several)."""
    codes = []
    for line in response.split(b"\r\n"):
        parts = line.split(b" ", 2)
        if len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1].isdigit():
            codes.append(int(parts[1]))
    return codes


def health(port: int) -> int:
    codes = statuses(exchange(port, b""))
    return codes[0] if codes else 0


# --- requests: real shapes, mutated ----------------------------------------------------------------------

#: Placeholders replaced by a real token signed for 'echo' (raw in headers, URL-encoded in a query).
VALID_TOKEN = "<token>"
VALID_QUERY_TOKEN = "<query-token>"

_paths = st.sampled_from(
    [
        "/$hc/echo",
        "/$hc/echo/sub/dir",
        "/$hc/open",
        "/$hc/multi/segment/path",
        "/$hc/",
        "/$hc",
        "/$hc/nosuch",
        "/echo",
        "/echo/sub",
        "/open",
        "/$health",
        "/",
        "/%00",
        "/$hc/%2e%2e/echo",
        "/$hc//echo",
        "*",
        "",
        "/" + "a" * 300,
        "/$hc/echo%00",
        "/$hc/ech%6F",
    ]
)
_query_pairs = st.lists(
    st.sampled_from(
        [
            "sb-hc-action=listen",
            "sb-hc-action=connect",
            "sb-hc-action=accept",
            "sb-hc-action=request",
            "sb-hc-action=LISTEN",
            "sb-hc-action=",
            "sb-hc-id=0f0e",
            "sb-hc-id=" + "x" * 200,
            f"sb-hc-token={VALID_QUERY_TOKEN}",
            "sb-hc-token=SharedAccessSignature%20sr%3D%26sig%3D%26se%3D1%26skn%3D",
            "sb-hc-token=%ZZ",
            "sb-hc-statusCode=404",
            "sb-hc-statusCode=99999999999999999999",
            "statusCode=x",
            "sb-hc-statusDescription=%0d%0a",
            "x=1",
            "&",
            "=",
            "%",
            "a=%ff%fe",
        ]
    ),
    max_size=5,
).map("&".join)
_good_headers = st.lists(
    st.sampled_from(
        [
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Connection: close",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Protocol: a, b",
            f"ServiceBusAuthorization: {VALID_TOKEN}",
            f"Authorization: {VALID_TOKEN}",
            "Content-Length: 5",
            "Transfer-Encoding: chunked",
            "Expect: 100-continue",
            "Content-Type: text/plain",
            "Microsoft-Relay-AllowedListeners: x,,y",
            "Microsoft-Relay-DisallowedListeners: " + "z" * 100,
            "ServiceBusAuthorization: SharedAccessSignature sr=x&sig=y&se=99999999999999999999999&skn=z",
            "ServiceBusAuthorization: Bearer x",
            "X-Empty:",
            "Sec-WebSocket-Version: 8",
        ]
    ),
    max_size=6,
    unique=True,
)
_bad_headers = st.sampled_from(
    [
        "Sec-WebSocket-Key: short",
        "Content-Length: -1",
        "Content-Length: 99999999999999999999",
        "Content-Length: 1, 2",
        "Transfer-Encoding: gzip, chunked",
        ": no-name",
        "X-Bad: a\x00b",
        "X-Fold: a\r\n b",
        "Host: a, b",
    ]
)
#: A WebSocket handshake the relay would take, so that many examples get past aiohttp's handshake checks.
_UPGRADE = [
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
]


@st.composite
def http_requests(draw: st.DrawFn) -> bytes:
    """Mostly well-formed requests (a Host, HTTP/1.1, often a full WebSocket handshake), some with one bad
    header or a bad request line, so that most get past aiohttp's parser into the relay's own code."""
    method = draw(st.sampled_from(["GET"] * 4 + ["POST"] * 3 + ["PUT", "DELETE", "HEAD", "CONNECT", "G T"]))
    query = draw(_query_pairs)
    target = draw(_paths) + (f"?{query}" if query else "")
    version = draw(st.sampled_from(["HTTP/1.1"] * 6 + ["HTTP/1.0", "HTTP/2.0", "HTTP/1.1 x", ""]))
    headers = (["Host: 127.0.0.1"] if draw(st.integers(0, 9)) else []) + draw(_good_headers)
    if draw(st.booleans()):
        headers += _UPGRADE
    if draw(st.integers(0, 4)) == 0:
        headers.append(draw(_bad_headers))
    lines = [f"{method} {target} {version}".rstrip(), *draw(st.permutations(headers))]
    # A body that matches the framing the headers announce (a mismatch is what the mutations are for).
    if "Transfer-Encoding: chunked" in headers:
        body = b"5\r\nhello\r\n0\r\n\r\n"
    elif "Content-Length: 5" in headers:
        body = b"hello"
    else:
        body = b""
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        if not data:
            break
        at = draw(st.integers(min_value=0, max_value=len(data) - 1))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if kind == "flip":
            data[at] = draw(st.integers(min_value=0, max_value=255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[at]
        else:
            del data[at:]
    return bytes(data)


_entities = st.sampled_from(["echo", "open", "multi/segment/path", "nosuch", "ECHO", "echo2"])
_suffixes = st.sampled_from(["", "/sub", "/sub/dir", "/%2e%2e", "/a%20b", "//x", "/" + "s" * 200])


@st.composite
def authorized_requests(draw: st.DrawFn) -> bytes:
    """Requests that pass aiohttp's parser and carry a real token, so they reach the relay's own code:
    listen, connect, accept and request handshakes on ``/$hc/...`` and plain HTTP senders."""
    entity, suffix = draw(_entities), draw(_suffixes)
    extra = draw(_good_headers)
    by_query = draw(st.booleans())
    query = [draw(_query_pairs)] + ([f"sb-hc-token={VALID_QUERY_TOKEN}"] if by_query else [])
    headers = ["Host: 127.0.0.1", *([] if by_query else [f"ServiceBusAuthorization: {VALID_TOKEN}"]), *extra]
    if draw(st.booleans()):
        action = draw(st.sampled_from(["listen", "connect", "accept", "request"]))
        target = f"/$hc/{entity}{suffix}?" + "&".join([*query, f"sb-hc-action={action}"])
        headers = list(dict.fromkeys(headers + _UPGRADE))
        method = "GET"
    else:
        target = f"/{entity}{suffix}?" + "&".join(query)
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"]))
    if "Transfer-Encoding: chunked" in headers and "Content-Length: 5" in headers:
        headers.remove("Transfer-Encoding: chunked")
    body = b"hello" if "Content-Length: 5" in headers else b""
    if "Transfer-Encoding: chunked" in headers:
        body = b"5\r\nhello\r\n0\r\n\r\n"
    return ("\r\n".join([f"{method} {target} HTTP/1.1", *headers]) + "\r\n\r\n").encode("latin-1") + body


#: Weighted: most inputs reach the relay's own code; the rest test the parser's edges and pure noise.
_inputs = st.sampled_from(
    [
        authorized_requests(),
        authorized_requests(),
        authorized_requests(),
        mutated(authorized_requests()),
        http_requests(),
        mutated(http_requests()),
        st.lists(st.one_of(authorized_requests(), http_requests()), min_size=2, max_size=3).map(b"".join),
        st.binary(max_size=200),
    ]
).flatmap(lambda strategy: strategy)


@fuzz_settings(300)
@given(_inputs)
def test_front_door_answers_4xx_or_closes_never_500(front_door: RunningRelay, data: bytes) -> None:
    data = data.replace(VALID_TOKEN.encode(), front_door.token.encode()).replace(
        VALID_QUERY_TOKEN.encode(), quote(front_door.token, safe="").encode()
    )
    logged_before = len(front_door.failures)
    response = exchange(front_door.port, data)
    codes = statuses(response)
    assert 500 not in codes, response[:500]
    assert all(100 <= code <= 599 for code in codes), response[:500]
    assert front_door.failures[logged_before:] == []
    assert health(front_door.port) == 200
