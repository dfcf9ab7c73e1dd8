"""hyco works as installed from a wheel: no file of the repository needed, and its banner says how to run it.

The wheel holds exactly ``src/hyco`` (``[tool.hatch.build.targets.wheel]``); here that tree is copied next to
nothing else and run from an empty directory, with ``python -m hyco`` (an install whose scripts are not on
``PATH``). The try-it lines the relay prints then run as printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import sys
from pathlib import Path

from tests.conftest import TIMEOUT

SOURCE = Path(__file__).resolve().parents[2] / "src" / "hyco"


async def test_relay_runs_from_the_package_alone_and_its_try_it_lines_work(tmp_path: Path) -> None:
    site = tmp_path / "site"
    shutil.copytree(SOURCE, site / "hyco", ignore=shutil.ignore_patterns("__pycache__"))
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYCO_", "AZURE_BRIDGE_"))}
    env.update(PYTHONPATH=str(site), HOME=str(tmp_path / "home"), PATH="/usr/bin:/bin", PYTHONUNBUFFERED="1")

    where = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import hyco; print(hyco.__file__)",
        cwd=empty,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(where.communicate(), TIMEOUT)
    assert out.decode().strip() == str(site / "hyco" / "__init__.py")

    relay = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hyco", "relay", "--listen", "127.0.0.1:0",
        cwd=empty, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert relay.stdout is not None
    try:
        async with asyncio.timeout(3 * TIMEOUT):
            while "try it" not in (await relay.stdout.readline()).decode():
                pass
            lines = [(await relay.stdout.readline()).decode().strip() for _ in range(3)]
        assert lines[1] == f"{shlex.quote(sys.executable)} -m hyco listen --echo &"
        with open(tmp_path / "out", "w+b") as output:
            shell = await asyncio.create_subprocess_exec(
                "bash", "-c", "\n".join(lines), cwd=empty, env=env, stdout=output, start_new_session=True
            )
            try:
                assert await asyncio.wait_for(shell.wait(), 3 * TIMEOUT) == 0
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(shell.pid, signal.SIGTERM)  # the listener it started in the background
            output.seek(0)
            assert output.read() == b"hello\n"
    finally:
        relay.send_signal(signal.SIGTERM)
        await asyncio.wait_for(relay.wait(), TIMEOUT)
