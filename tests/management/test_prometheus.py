"""docs/operations.md's scrape example, run as written by a real Prometheus (Debian's ``prometheus``): the
token command signs the file, the YAML job is taken from the document, and Prometheus's own scrape of
``/$metrics`` is answered 200."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from aiohttp import web

from hyco.server import Relay
from tests.conftest import KEY, KEY_NAME, TIMEOUT

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="Debian's prometheus is not installed (scripts/test installs it as root)"
)
OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def documented() -> tuple[str, str]:
    """The document's token command line and its Prometheus job (the YAML block with ``job_name: hyco``)."""
    text = OPERATIONS.read_text(encoding="utf-8")
    (command,) = [line for line in text.splitlines() if line.startswith("hyco token --namespace")]
    (job,) = [
        b for b in re.findall(r"^```yaml\n(.*?)^```$", text, re.DOTALL | re.MULTILINE) if "job_name" in b
    ]
    return command, job


async def test_prometheus_scrapes_metrics_with_the_documented_token_and_job(relay: Relay, tmp_path: Path):
    command, job = documented()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYCO_")}
    env["PATH"] = (
        f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # as after pip install hyco
    )
    env["HYCO_CONNECTION_STRING"] = (
        f"Endpoint={relay.url}/;SharedAccessKeyName={KEY_NAME};SharedAccessKey={KEY}"
    )
    shell = await asyncio.create_subprocess_exec(
        "bash", "-eo", "pipefail", "-c", command, cwd=tmp_path, env=env
    )
    assert await asyncio.wait_for(shell.wait(), TIMEOUT) == 0
    token_file = tmp_path / "hyco.token"
    assert token_file.read_text().startswith("sr=")

    # The job as written, for this relay's port and this token file; scraped every second, not every minute.
    job = job.replace("/etc/prometheus/hyco.token", str(token_file)).replace(
        "127.0.0.1:9350", f"127.0.0.1:{relay.port}"
    )
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\n" + job)

    # Prometheus's scrapes are seen as the relay answers them (the relay's own handler, watched).
    answered: asyncio.Queue[int] = asyncio.Queue()
    serve_metrics = relay.management.metrics

    async def watched(request: web.Request) -> web.Response:
        response = await serve_metrics(request)
        if request.headers.get("User-Agent", "").startswith("Prometheus/"):
            answered.put_nowait(response.status)
        return response

    relay.management.metrics = watched  # type: ignore[method-assign]
    assert PROMETHEUS is not None
    prometheus = await asyncio.create_subprocess_exec(
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        "--web.listen-address=127.0.0.1:0",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert await asyncio.wait_for(answered.get(), TIMEOUT * 3) == 200
    finally:
        prometheus.terminate()
        await prometheus.wait()
