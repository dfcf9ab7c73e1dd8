"""The soak's 60-second variant: every hostile kind against one relay process while a bystander uses it.

Nothing timed is asserted: the bystander never failed and never lost a byte, no hostile got in or lost a byte,
no kind with a legitimate part was locked out (the verdict's problems), every kind really ran, and the relay's
open files and memory came back within generous bounds.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from bench.hostile import KINDS

from tests.conftest import TIMEOUT

ROOT = Path(__file__).resolve().parents[2]
SECONDS = 60

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="the soak reads /proc")


@pytest.mark.slow
def test_a_minute_of_every_hostile_kind_loses_nothing_and_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [str(ROOT / "scripts" / "soak"), "--seconds", str(SECONDS), "--quiet", "5", "--json", str(out)],
        capture_output=True,
        text=True,
        # the phases (quiet, hostile, up to 30 s to settle, start and stop) plus slack for a loaded machine
        timeout=SECONDS + 5 + 30 + 12 * TIMEOUT,
        check=False,
    )
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["problems"] == [], report["problems"]
    assert proc.returncode == 0, proc.stdout[-3000:]
    bystander = report["bystander"]
    assert bystander["failures"] == 0
    assert bystander["lost"] == 0
    assert bystander["echoes"] > 0
    assert bystander["posts"] > 0
    outcomes = report["hostiles"]["outcomes"]
    assert set(outcomes) == set(KINDS)  # every kind ran and saw something
    assert all(not o.startswith("lost") and o != "ACCEPTED" for seen in outcomes.values() for o in seen)
    assert outcomes["churn"]["echoed intact"] > 0
    assert outcomes["http_churn"]["answered intact"] > 0
    assert outcomes["slowloris"]["cut"] > 0  # the relay cut them; nobody else would have
    assert outcomes["stalled_body"].get("408", 0) > 0
    assert outcomes["frozen_peer"].get("close 1011", 0) > 0
    relay = report["relay"]
    assert relay["fds"]["end"] <= relay["fds"]["after_quiet"] + 16
    assert relay["rss_mib"]["end"] - relay["rss_mib"]["after_quiet"] <= 128
    health = relay["health_at_end"]
    assert health["http_requests_in_flight"] == 0
    assert health["pending_connections"] == 0
