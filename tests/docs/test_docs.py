"""Every ```sh and ```python block of README.md and docs/*.md runs as written, against a relay it starts.

How a document runs (what a reader does in one terminal, top to bottom):

* All runnable blocks of one document run in order in **one bash session**; a ```python block is fed to
  the venv's Python from that session. So ``export``s and background processes (``hyco listen ... &``)
  carry over, as they would for a reader; when the document ends, everything it started is stopped.
* The session has a fresh ``HOME`` (so ``~/.local/share/hyco`` is the relay's data directory), the venv's
  ``bin`` first on ``PATH`` (as after ``pip install hyco``), a directory with ``.venv`` (the repository's)
  as working directory, and a relay started here with the default configuration, like ``hyco relay``.
* The one rewrite: the fixed ports a document names (9350, the relay's default, and the local ports of its
  examples) become free ports, so tests never collide. ``HYCO_LISTEN`` tells ``hyco relay`` options the
  relay's real address.
* docs/*.md (not README.md) may assume ``HYCO_CONNECTION_STRING`` is set as the README's try-it sets it
  (the relay's connection string plus ``;EntityPath=echo``); they say so.
* A line's ``# prints: TEXT`` comment is checked: TEXT must appear in the output.
* A block that cannot run here is preceded by ``<!-- doc-test: skip REASON -->``, REASON saying why
  (it needs Azure, runs until Ctrl-C, is this very test command, ...). A document whose ```python blocks
  build on each other (one namespace, like a notebook) says ``<!-- doc-test: python blocks share one
  namespace -->`` once, anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import TIMEOUT

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
DOCUMENTS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]
#: Ports documents use that a test must not: each becomes a free port (see the module docstring).
DOC_PORTS = (9350, 8000, 8080, 8081, 2222, 5353, 4222, 9351, 9352)

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.DOTALL | re.MULTILINE)
_SKIP = re.compile(r"<!-- doc-test: skip (?P<reason>[^>]*\S)\s*-->\s*$")
_SHARED = "<!-- doc-test: python blocks share one namespace -->"
_PRINTS = re.compile(r"#\s*prints:\s*(?P<text>.+?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Block:
    """A fenced block: its language, text, the line it starts on, and a skip reason if it has one."""

    language: str
    text: str
    line: int
    skip: str | None


def blocks(document: Path) -> list[Block]:
    """The ```sh/```bash/```python blocks of ``document``."""
    source = document.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(source):
        language = match.group(1)
        if language not in ("sh", "bash", "python"):
            continue
        before = source[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = _SKIP.search(before)
        found.append(
            Block(language, match.group(2), source.count("\n", 0, match.start()) + 1, skip and skip["reason"])
        )
    return found


def session_script(document: Path, ports: dict[int, int]) -> str:
    """The bash script that runs a document's blocks in order (module docstring)."""
    shared = _SHARED in document.read_text(encoding="utf-8")
    runnable = [b for b in blocks(document) if b.skip is None]
    steps = ["set -eo pipefail"]
    python_blocks = [b for b in runnable if b.language == "python"]
    for block in runnable:
        text = with_free_ports(block.text, ports)
        steps.append(f"echo '### {document.name} line {block.line}' >&2")
        if block.language != "python":
            steps.append(text)
        elif not shared:
            steps.append(f"python - <<'HYCO_DOC_PYTHON'\n{text}HYCO_DOC_PYTHON")
        elif block is python_blocks[0]:  # one process, one namespace, every block in order
            cells = "\n".join(
                f"exec(compile({with_free_ports(b.text, ports)!r}, {f'{document.name}:{b.line}'!r}, 'exec'))"
                for b in python_blocks
            )
            steps.append(f"python - <<'HYCO_DOC_PYTHON'\n{cells}\nHYCO_DOC_PYTHON")
    return "\n".join(steps) + "\n"


def with_free_ports(text: str, ports: dict[int, int]) -> str:
    """``text`` with each document port replaced by its free port."""
    for doc_port, free in ports.items():
        text = re.sub(rf"\b{doc_port}\b", str(free), text)
    return text


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports nothing listens on right now (port 0, held until all are chosen, then released
    for the processes under test)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


@contextlib.asynccontextmanager
async def relay(env: dict[str, str]) -> AsyncIterator[str]:
    """``hyco relay`` with the default configuration on a free port; yields the connection string."""
    process = await asyncio.create_subprocess_exec(
        str(VENV_BIN / "hyco"),
        "relay",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(3 * TIMEOUT):
            while not (line := (await process.stdout.readline()).decode()).strip().startswith("Endpoint="):
                assert line, "hyco relay ended before printing its connection string"
        yield line.strip()
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), TIMEOUT)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
async def test_document_runs_as_written(document: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (work / ".venv").symlink_to(VENV_BIN.parent)
    ports = dict(zip(DOC_PORTS, free_ports(len(DOC_PORTS)), strict=True))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYCO_", "AZURE_BRIDGE_"))}
    env.update(
        HOME=str(home),
        PATH=f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
        HYCO_LISTEN=f"127.0.0.1:{ports[9350]}",
        PYTHONUNBUFFERED="1",
    )
    script = session_script(document, ports)
    async with relay(env) as connection_string:
        if document.name != "README.md":
            env["HYCO_CONNECTION_STRING"] = f"{connection_string};EntityPath=echo"
        with open(tmp_path / "stdout", "w+b") as out, open(tmp_path / "stderr", "w+b") as err:
            process = await asyncio.create_subprocess_exec(
                "bash", "-c", script, cwd=work, env=env, stdout=out, stderr=err, start_new_session=True
            )
            try:
                code = await asyncio.wait_for(process.wait(), 9 * TIMEOUT)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)  # what the document left running in the background
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read().decode(), err.read().decode()
    assert code == 0, f"{document.name}: a block failed (the last ### line names it)\n{stderr[-3000:]}"
    for block in blocks(document):
        if block.skip is None:
            for expected in _PRINTS.finditer(with_free_ports(block.text, ports)):
                assert expected["text"] in stdout, (
                    f"{document.name} line {block.line}: no {expected['text']!r}"
                )


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_skipped_block_says_why(document: Path) -> None:
    for block in blocks(document):
        assert block.skip is None or len(block.skip.split()) >= 3, (
            f"{document.name}:{block.line}: {block.skip!r}"
        )


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_no_link_leaves_the_project(document: Path) -> None:
    text = document.read_text(encoding="utf-8")
    assert "../shared" not in text and "shared/docs" not in text, document.name
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (
                (document.parent / target).exists()
                or target == "architecture.md"
                or target.endswith("docs/architecture.md")
            ), f"{document.name}: broken link {target}"
