"""Run one of the Node interop scripts (tests/interop/node/*.js) as an asyncio subprocess.

The scripts print one JSON object per stdout line (tests/interop/node/README.md). ``NodeProcess`` reads
those lines with a timeout, keeps everything it has seen (for failure messages), and is always killed when
the ``node_process`` context exits, whatever happened in the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TIMEOUT

NODE_DIR = Path(__file__).parent / "node"

# One stdout line may carry a base64-encoded 1 MiB message (~1.4 MB); asyncio's default limit is 64 KiB.
_LINE_LIMIT = 64 * 1024 * 1024

Event = dict[str, Any]


def require_node() -> str:
    """The ``node`` executable; fails the test (never skips) when Node or the npm packages are missing."""
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "Node.js is not on PATH: the interop tests drive the official Azure Relay Node clients. "
            "Install Node.js 18+ and run scripts/test (it runs `npm ci --prefix tests/interop/node`).",
            pytrace=False,
        )
    missing = [p for p in ("hyco-ws", "hyco-https") if not (NODE_DIR / "node_modules" / p).is_dir()]
    if missing:
        pytest.fail(
            f"npm packages {', '.join(missing)} are not installed in {NODE_DIR / 'node_modules'}: "
            "run scripts/test (or `npm ci --prefix tests/interop/node`) first.",
            pytrace=False,
        )
    return node


class NodeProcess:
    """A running Node script: JSON events from stdout, JSON lines to stdin, stderr kept for diagnostics."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.events: list[Event] = []  # every event read so far, in order
        self._stderr = bytearray()
        self._stderr_task = asyncio.ensure_future(self._drain_stderr())

    async def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(65536):
            self._stderr += chunk

    @property
    def stderr(self) -> str:
        """What the script wrote to stderr so far (truncated to its last 4000 characters)."""
        return self._stderr.decode("utf-8", "replace")[-4000:]

    def describe(self) -> str:
        """A summary for assertion messages: exit code, the events seen, stderr."""
        shown = [_shorten(e) for e in self.events[-30:]]
        return f"{self.name}: returncode={self.proc.returncode} events={shown} stderr={self.stderr!r}"

    async def next_event(self, timeout: float = TIMEOUT) -> Event:
        """The next stdout event; fails on timeout or EOF (the process exited)."""
        return await self._read(timeout)

    async def _read(self, timeout: float) -> Event:
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            pytest.fail(f"no event within {timeout} s from {self.describe()}")
        if not line:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), timeout)
            await self._settle_stderr()
            pytest.fail(f"stdout closed (process exited) from {self.describe()}")
        try:
            event: Event = json.loads(line)
        except ValueError:
            pytest.fail(f"non-JSON stdout line {line[:200]!r} from {self.describe()}")
        self.events.append(event)
        return event

    async def wait_for(self, match: str | Callable[[Event], bool], timeout: float = TIMEOUT) -> Event:
        """Skip events until one matches (an ``event`` name or a predicate); all stay in ``events``.

        Fails if the process crashes first or nothing matches within ``timeout`` seconds in total.
        """
        pred = (lambda e: e.get("event") == match) if isinstance(match, str) else match
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = await self._read(max(deadline - loop.time(), 0.0))
            if pred(event):
                return event
            if event.get("event") == "crash":
                pytest.fail(f"Node script crashed: {self.describe()}")

    def send_json(self, obj: Any) -> None:
        """Write one JSON line to stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj).encode() + b"\n")

    async def close_stdin(self) -> None:
        """Flush and close stdin (EOF tells ws_sender.js no more messages are coming)."""
        assert self.proc.stdin is not None
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(self.proc.stdin.drain(), TIMEOUT)
        self.proc.stdin.close()
        with contextlib.suppress(ConnectionError):
            await self.proc.stdin.wait_closed()

    async def wait_exit(self, timeout: float = TIMEOUT) -> int:
        """Wait for the process to exit by itself; returns the exit code, fails on timeout."""
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            pytest.fail(f"process did not exit within {timeout} s: {self.describe()}")
        await self._settle_stderr()
        return code

    async def rest_of_events(self) -> list[Event]:
        """After exit: read the remaining stdout lines."""
        out = []
        assert self.proc.stdout is not None
        while line := await asyncio.wait_for(self.proc.stdout.readline(), TIMEOUT):
            event = json.loads(line)
            self.events.append(event)
            out.append(event)
        return out

    async def _settle_stderr(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._stderr_task), 1.0)

    async def kill(self) -> None:
        """SIGKILL and reap; safe to call repeatedly."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()

    async def _cleanup(self) -> None:
        await self.kill()
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        self._stderr_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._stderr_task


@contextlib.asynccontextmanager
async def node_process(
    script: str, *args: str, env: Mapping[str, str] | None = None
) -> AsyncIterator[NodeProcess]:
    """Start ``node tests/interop/node/<script> args...``; SIGKILLed and reaped on exit, always.

    ``env`` is added to this process's environment (e.g. ``NODE_EXTRA_CA_CERTS``).
    """
    node = require_node()
    full_env = {**os.environ, **(env or {})}
    proc = await asyncio.create_subprocess_exec(
        node,
        str(NODE_DIR / script),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=full_env,
        cwd=NODE_DIR,
        limit=_LINE_LIMIT,
    )
    # Name it by script and URI only: the other arguments are a key name and a key.
    p = NodeProcess(" ".join((script, *args[:1])), proc)
    try:
        yield p
    finally:
        await p._cleanup()


def _shorten(event: Event) -> Event:
    return {k: (v[:80] + "..." if isinstance(v, str) and len(v) > 80 else v) for k, v in event.items()}
