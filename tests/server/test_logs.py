"""hyco.server.logs: no token in the log and no forged lines (issue 13, defects 7 and 8).

The end-to-end tests drive aiohttp's own error paths on a running relay with raw, malformed requests that
carry a canary token, and read what reaches a handler on the root logger, as an operator's log would.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from hyco.server import Relay
from hyco.server.logs import REDACTED, ScrubFilter, install, scrub
from tests.conftest import TIMEOUT
from tests.server.wire import RawListener

CANARY = "CaNaRy0Sig0dGhpcyBpcyBub3QgYSByZWFsIGtleQ"
TOKEN = f"SharedAccessSignature sr=http%3A%2F%2F127.0.0.1%2Fecho&sig={CANARY}&se=4102444800&skn=root"
QUERY_TOKEN = TOKEN.replace(" ", "%20").replace("&", "%26").replace("=", "%3D")


# --- scrub(): each secret form, any case, URL-encoded ------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"ServiceBusAuthorization: {TOKEN}",
        f"servicebusauthorization: {TOKEN.upper()}",
        f"b'ServiceBusAuthorization: {TOKEN}\\x01'",
        f"{{'Authorization': '{TOKEN}'}}",
        f"Authorization: Bearer {CANARY}",
        f"GET /echo?sb-hc-token={QUERY_TOKEN}&x=1",
        f"GET /echo?SB-HC-TOKEN={QUERY_TOKEN}",
        f"GET /echo?sb%2Dhc%2Dtoken={QUERY_TOKEN}",
        f"sb-hc-token={TOKEN}",  # a raw space splits it: the sig rule still catches the signature
        f"...&SIG={CANARY}&se=1",
        f"sig%3D{CANARY}%26se%3D1",
        f"sig%253D{CANARY}%2526se",
        f"SharedAccessSignature%20sr%3Dx%26sig%3D{CANARY}",
        f"SharedAccessSignature+sr%3Dx%26sig%3D{CANARY}",
        f"Endpoint=sb://h/;SharedAccessKeyName=root;SharedAccessKey={CANARY}",
        f"endpoint=sb://h/;sharedaccesskey%3D{CANARY};entitypath=e",
        f"SharedAccessSignature=SharedAccessSignature sr=x&sig={CANARY}&se=1&skn=k",
        f"sig={CANARY[:10]}\r\n{CANARY[10:]}",  # a CR/LF inside the value
    ],
)
def test_scrub_redacts_every_form(text: str) -> None:
    cleaned = scrub(text)
    assert CANARY not in cleaned
    assert CANARY[10:] not in cleaned
    assert REDACTED in cleaned


def test_scrub_keeps_what_is_not_secret() -> None:
    text = (
        "refused GET /echo from 127.0.0.1: 401 InvalidAudience: The authorization header is wrong (skn=root)"
    )
    assert scrub(text) == text
    assert scrub("SharedAccessKeyName=root;EntityPath=echo") == "SharedAccessKeyName=root;EntityPath=echo"


def test_scrub_escapes_control_characters_into_one_line() -> None:
    forged = "id-1\r\n2026-01-01 00:00:00 ERROR hyco.relay: forged\x1b[31m\x00\u2028\x85\tend"
    assert scrub(forged) == (
        "id-1\\r\\n2026-01-01 00:00:00 ERROR hyco.relay: forged\\x1b[31m\\x00\\u2028\\x85\\tend"
    )
    assert scrub("a\nb\r\x07", keep_newlines=True) == "a\nb\\r\\x07"


# --- the filter on records: message, args, exception, stack -----------------------------------------------


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A private logger with the filter, writing to a buffer through a plain formatter."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("hyco.tests.logs")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    scrubber = ScrubFilter()
    logger.addFilter(scrubber)
    yield logger, out
    logger.removeFilter(scrubber)
    logger.removeHandler(handler)
    logger.propagate = True


def test_filter_scrubs_args_and_exception_text(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = captured
    logger.warning("listener %s sent %r", "id\r\nERROR forged", {"token": TOKEN})
    try:
        raise ValueError(f"bad header\nServiceBusAuthorization: {TOKEN}\nFORGED LINE")
    except ValueError:
        logger.exception("failed for %s", f"sig={CANARY}")
    logger.info("stack", stack_info=True)
    text = out.getvalue()
    assert CANARY not in text
    lines = text.splitlines()
    assert lines[0] == "WARNING listener id\\r\\nERROR forged sent {'token': 'SharedAccessSignature ***'}"
    # Only the formatter's own lines start at column 0; the traceback and the stack are indented.
    assert [line for line in lines if not line.startswith(" ")] == [
        lines[0],
        f"ERROR failed for sig={REDACTED}",
        "INFO stack",
    ]
    assert "  ValueError: bad header" in lines
    assert "  FORGED LINE" in lines


def test_filter_keeps_a_record_whose_arguments_do_not_format(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = captured
    logger.error("%d items for " + f"sig={CANARY}", "not a number")
    assert out.getvalue() == f"ERROR %d items for sig={REDACTED} (unformattable arguments dropped)\n"


def test_install_covers_children_once_and_uninstalls() -> None:
    child = logging.getLogger("hyco.tests.install.child")
    uninstall = install(["hyco.tests.install"])
    try:
        assert sum(isinstance(f, ScrubFilter) for f in child.filters) == 1
        again = install(["hyco.tests.install"])
        assert sum(isinstance(f, ScrubFilter) for f in child.filters) == 1
        again()
    finally:
        uninstall()
    assert not any(isinstance(f, ScrubFilter) for f in child.filters)
    assert not any(isinstance(f, ScrubFilter) for f in logging.getLogger("hyco.tests.install").filters)


# --- end to end: aiohttp's own error paths on a running relay --------------------------------------------

MALFORMED = [
    # a token header with a stray control character: aiohttp quotes the whole header line
    f"GET /$hc/echo?sb-hc-action=listen HTTP/1.1\r\nHost: x\r\nServiceBusAuthorization: {TOKEN}\x01\r\n\r\n",
    # a bad character in a query that carries the token: aiohttp quotes the whole request line
    f"GET /echo?sb-hc-token={QUERY_TOKEN}&x=\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
    f"GET /echo?sb-hc-token={TOKEN}\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    f"POST /echo HTTP/1.1\r\nHost: x\r\nAuthorization: {TOKEN}\r\nX-Forged: a\x00\r\n\r\n",
    f"GET /echo HTTP/1.1\r\nHost: x\r\nServiceBusAuthorization:\x1b{TOKEN}\r\n\r\n",
]


class Collector(logging.Handler):
    """Formats records as a file handler would, and signals when aiohttp's error records arrive."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []
        self.errors = 0
        self.changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        if record.name == "aiohttp.server" or record.levelno >= logging.WARNING:
            self.errors += 1
            self.changed.set()

    async def wait_for_errors(self, count: int) -> None:
        """Wait until ``count`` records from aiohttp's server, or at WARNING and above, have arrived."""
        async with asyncio.timeout(TIMEOUT):
            while self.errors < count:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    handler = Collector()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)


async def send_malformed(relay: Relay) -> None:
    for raw in MALFORMED:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(raw.encode("latin-1"))
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), TIMEOUT)
        assert status.startswith(b"HTTP/1.") and b" 400 " in status, (raw, status)
        writer.close()
        await writer.wait_closed()


@pytest.fixture
def scrubber_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The relay installs the scrubber when it starts; the control experiments turn it into a no-op."""
    monkeypatch.setattr(ScrubFilter, "filter", lambda self, record: True)


async def test_canary_reaches_the_log_without_the_scrubber(
    scrubber_off: None, relay: Relay, collector: Collector
) -> None:
    # The control experiment: aiohttp alone writes the token into the log (issue 13, defect 7).
    await send_malformed(relay)
    await collector.wait_for_errors(len(MALFORMED))
    assert CANARY in "\n".join(collector.lines)


async def test_canary_never_reaches_the_log_with_the_scrubber(relay: Relay, collector: Collector) -> None:
    # The relay installed the scrubber when it started.
    await send_malformed(relay)
    await collector.wait_for_errors(len(MALFORMED))
    text = "\n".join(collector.lines)
    assert CANARY not in text
    # One line per malformed request (the client's fault), none with a traceback or a forged line; aiohttp's
    # quote of the offending line stays, redacted where it held the token (all but the X-Forged header).
    errors = [line for line in collector.lines if " aiohttp.server: " in line]
    assert [REDACTED in line for line in errors] == [True, True, True, False, True], errors
    assert all("\n" not in line and ": 400 " in line for line in errors), errors
    assert all(" INFO aiohttp.server: " in line for line in errors), errors  # the client's fault, not ERROR
    assert "b'X-Forged: a\\x00'" in errors[3]
    assert "Traceback" not in text


# --- a listener's values in the relay's own lines (issue 13, defect 8) -----------------------------

#: Short enough to survive the relay cutting the id to 64 characters.
FORGED = "2026-01-01 00:00:00 CRITICAL hyco.relay: forged"


async def send_forged_response(relay: Relay, collector: Collector) -> list[str]:
    async with aiohttp.ClientSession() as session:
        listener = await RawListener.open(session, relay.url)
        # An unknown request id is logged (and ignored): the id is the listener's text.
        await listener.ws.send_str(
            json.dumps({"response": {"requestId": f"r1\r\n{FORGED}", "statusCode": 200, "body": False}})
        )
        await collector.wait_for_errors(1)
        await listener.ws.close()
    return "\n".join(collector.lines).split("\n")


async def test_a_listener_forges_a_line_without_the_scrubber(
    scrubber_off: None, relay: Relay, collector: Collector
) -> None:
    lines = await send_forged_response(relay, collector)
    assert f"{FORGED} ignored" in lines


async def test_a_listener_cannot_forge_a_line_with_the_scrubber(relay: Relay, collector: Collector) -> None:
    lines = await send_forged_response(relay, collector)  # the relay installed the scrubber when it started
    assert not any(line.startswith(FORGED) for line in lines)
    assert any(line.endswith(f"request r1\\r\\n{FORGED} ignored") for line in lines), lines


def _scrub_every_pattern(text: str) -> str:
    """scrub() without its shortcuts: every pattern, every time (the reference for the test below)."""
    from hyco.server import logs

    def redact(value: str) -> str:
        for pattern in logs._SECRETS:
            value = pattern.sub(lambda m: m.group(1) + REDACTED, value)
        return value

    return redact(logs._CONTROL.sub(logs._escape_one, redact(text)))


_PIECES = [
    "sig=",
    "SIG%3D",
    "Sig%253d",
    "sb-hc-token=",
    "SB%2DHC%2DTOKEN%3d",
    "SharedAccessKey=",
    "si",
    "g=",
    "ServiceBusAuthorization: ",
    "'Authorization': '",
    "SharedAccessSignature ",
    "sr=a&se=1&skn=k",
    "abc",
    " ",
    "&",
    ";",
    "\r",
    "\n",
    "\x1b",
    "\x7f",
    "\u017f",
    "\u212a",
    "\u017fig=",
    "sharedaccess\u212aey=",
    "é",
    "path=echo",
    "'",
]


@pytest.mark.parametrize("seed", range(3))
def test_scrubs_shortcuts_give_what_every_pattern_gives(seed):
    import random

    rng = random.Random(seed)
    for _ in range(3000):
        text = "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 12)))
        assert scrub(text) == _scrub_every_pattern(text), repr(text)
