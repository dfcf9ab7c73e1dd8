"""Smoke runs of the benchmark harness: ``scripts/bench --quick``, scenarios 2 and 6 (figures, not speed)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="the harness reads /proc")


@pytest.mark.slow
def test_quick_round_trip_scenario_writes_the_expected_json(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [str(ROOT / "scripts" / "bench"), "--quick", "--scenarios", "2", "--runs", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "2 round trip p50" in proc.stdout  # the printed table
    report = json.loads((out / "results.json").read_text())
    assert {"generated", "command", "machine", "options", "haproxy", "loops"} <= set(report)
    assert report["options"]["scenarios"] == [2]
    (loop,) = report["loops"].values()
    assert loop["errors"] == []
    metrics = {m["key"]: m for m in loop["metrics"]}
    assert set(metrics) == {"2-p50", "2-p99", "2-rate", "2-cpu"}
    cpu = metrics.pop("2-cpu")  # the middle process's CPU: the relay and haproxy, no direct
    assert cpu["median"]["hyco"] > 0
    for metric in metrics.values():
        assert {"label", "unit", "better", "median", "runs", "hyco_over_direct"} <= set(metric)
        assert metric["median"]["hyco"] > 0
        assert metric["median"]["direct"] > 0
        if not report["haproxy"].startswith("absent"):
            assert metric["median"]["haproxy"] > 0
    targets = loop["targets"]  # issue 6's (vs direct) and, with haproxy, issue 10's (vs haproxy)
    assert len(targets) == (1 if report["haproxy"].startswith("absent") else 2)
    for target in targets:
        assert target["scenario"] == "2 round trip"
        assert target["met"] in (True, False)
    assert (out / "chart.png").stat().st_size > 0


@pytest.mark.slow
def test_quick_forward_scenario_measures_hyco_direct_and_haproxy(tmp_path: Path) -> None:
    out = tmp_path / "results"
    command = [str(ROOT / "scripts" / "bench"), "--quick", "--scenarios", "6", "--runs", "1"]
    command += ["--out", str(out)]
    command += ["--tunnels", "none"]  # the tests never build or run rathole, frp, chisel or bore
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "6 forward TCP up" in proc.stdout
    report = json.loads((out / "results.json").read_text())
    (loop,) = report["loops"].values()
    assert loop["errors"] == []
    metrics = {m["key"]: m for m in loop["metrics"]}
    assert set(metrics) == {"6-up", "6-down", "6-p50", "6-p99", "6-rate", "6-cpu-up", "6-cpu-down"}
    for key in ("6-cpu-up", "6-cpu-down"):  # CPU per GB of the processes in the middle: none for direct
        cpu = metrics.pop(key)
        assert cpu["median"]["hyco"] > 0
        assert "direct" not in cpu["median"]
        if not report["haproxy"].startswith("absent"):
            assert cpu["median"]["haproxy"] > 0
    assert all(state.startswith("skipped") for state in report["tunnels"].values())
    assert "scenario 6 by peer" in proc.stdout
    for metric in metrics.values():
        assert metric["median"]["hyco"] > 0
        assert metric["median"]["direct"] > 0
        if not report["haproxy"].startswith("absent"):
            assert metric["median"]["haproxy"] > 0
    (target,) = loop["targets"]
    assert target["scenario"] == "6 forward"
    assert target["met"] in (True, False)
