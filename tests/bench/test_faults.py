"""bench.faults, one round each: a listener or a sender killed with SIGKILL at each point of a connection's
life (the sender's handshake, the listener's dial, mid-stream, mid-close), or cut off without a FIN
(half-open, in a private network namespace) mid-stream: the survivor learns within a bound and the relay's
accounting (pending, active, in flight, open files) comes back; the relay killed with SIGKILL: the client
sees its connection end at once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TIMEOUT

ROOT = Path(__file__).resolve().parents[2]


def private_network_namespace() -> bool:
    """Whether ``unshare -rn`` makes a user and network namespace (bench.faults needs one for half-open)."""
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-rn", "true"], capture_output=True, check=False).returncode == 0


@pytest.mark.slow
def test_a_killed_or_vanished_peer_at_any_point_leaves_no_survivor_waiting_and_nothing_held(
    tmp_path: Path,
) -> None:
    out = tmp_path / "faults.json"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.faults",
            "--rounds",
            "1",
            "--ping",
            "1",
            "--accept-timeout",
            "1",
            "--relay-points",  # the relay's death at the other points: bench.faults, outside CI
            "stream",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=12 * TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    saw = {(r["case"], r["peer"], r["point"]): r["saw"] for r in json.loads(out.read_text())}
    rows = json.loads(out.read_text())
    expected = {
        # The listener died holding the accept: the sender waits out accept_timeout, then 404.
        ("kill", "listener", "handshake"): ["handshake 404"],
        ("kill", "listener", "dial"): ["handshake 404"],
        # The sender died in its handshake and the listener dials (or finishes its dial): refused (403), or,
        # when the dial comes before the relay saw the sender go, turned away (1001) or spliced and closed
        # (1011): below.
        ("kill", "listener", "stream"): ["close 1011"],
        ("kill", "sender", "stream"): ["close 1011"],
        # The victim's Close reached the survivor: a normal end, though the victim never saw the answer.
        ("kill", "listener", "close"): ["close 1000"],
        ("kill", "sender", "close"): ["close 1000"],
        ("kill-relay", "listener", "stream"): ["close 1006"],
        ("kill-relay", "sender", "stream"): ["close 1006"],
    }
    if private_network_namespace():
        expected[("half-open", "listener", "stream")] = ["close 1011"]
        expected[("half-open", "sender", "stream")] = ["close 1011"]
    assert {key: saw.get(key) for key in expected} == expected
    for point in ("handshake", "dial"):
        assert saw[("kill", "sender", point)] in (["handshake 403"], ["close 1001"], ["close 1011"]), saw
    for row in rows:
        if row["case"] != "kill-relay":
            assert row["released"], row
