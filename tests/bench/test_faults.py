"""bench.faults, one round each: a peer killed with SIGKILL or cut off without a FIN (half-open, in a private
network namespace) mid-stream: the survivor gets 1011 and the relay forgets the connection; the relay killed
with SIGKILL: the client sees its connection end (1006) at once."""

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
def test_a_killed_or_vanished_peer_leaves_its_partner_a_1011(tmp_path: Path) -> None:
    out = tmp_path / "faults.json"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.faults", "--rounds", "1", "--ping", "1", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=12 * TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    cases = {(r["case"], r["peer"]) for r in rows}
    assert {
        ("kill", "listener"),
        ("kill", "sender"),
        ("kill-relay", "listener"),
        ("kill-relay", "sender"),
    } <= cases
    if private_network_namespace():
        assert {("half-open", "listener"), ("half-open", "sender")} <= cases
    for row in rows:
        if row["case"] == "kill-relay":  # no relay left to send a Close or to ask
            assert row["codes"] == [1006], row
        else:
            assert row["codes"] == [1011], row
            assert row["released"], row
