"""The bench's tunnel peers: which to build or skip, the "ahead of every tunnel" target, the by-peer
table. Nothing is built or run here."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import tunnels


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HYCO_BENCH_TOOLS", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no cargo, no go
    return tmp_path / "cache"


def fake_binaries(cache: Path, *names: str) -> None:
    (cache / "bin").mkdir(parents=True, exist_ok=True)
    for name in names:
        binary = cache / "bin" / name
        binary.write_text("#!/bin/sh\n")
        binary.chmod(0o755)


def test_without_toolchains_every_tunnel_is_skipped_with_the_missing_toolchain_named(cache: Path) -> None:
    prepared = tunnels.prepare("install", announce=lambda line: pytest.fail(f"tried to build: {line}"))
    assert [p.tool.name for p in prepared] == ["rathole", "frp", "chisel", "bore", "frp-notls"]
    for p in prepared:
        assert p.bin is None
        assert f"`{p.tool.toolchain}` not found" in p.reason
    assert not (cache / "logs").exists()


def test_binaries_in_the_cache_are_used_without_a_toolchain(cache: Path) -> None:
    fake_binaries(cache, "frps", "frpc", "bore")
    prepared = {p.tool.name: p for p in tunnels.prepare("installed")}
    assert prepared["frp"].bin == cache / "bin"
    assert prepared["bore"].bin == cache / "bin"
    assert prepared["rathole"].bin is None
    assert "--tunnels installed" in prepared["rathole"].reason


def test_a_tool_with_one_of_its_binaries_missing_is_not_ready(cache: Path) -> None:
    fake_binaries(cache, "frps")  # frpc missing
    (frp,) = (p for p in tunnels.prepare("installed") if p.tool.name == "frp")
    assert frp.bin is None


def test_none_skips_every_tunnel_even_when_built(cache: Path) -> None:
    fake_binaries(cache, "rathole", "frps", "frpc", "chisel", "bore")
    assert all(p.bin is None and "--tunnels none" in p.reason for p in tunnels.prepare("none"))


def forward_metrics(up: dict[str, float], down: dict[str, float]) -> list[dict[str, object]]:
    from bench.env import Metric
    from bench.runner import combine

    metrics = []
    for key, values in (("6-up", up), ("6-down", down)):
        metric = Metric(key, key, "MB/s", "higher")
        metric.values.update(values)
        metrics.append(combine([metric]))
    return metrics


def tunnel_target(metrics: list[dict[str, object]]) -> list[dict[str, object]]:
    from bench.runner import evaluate

    return [t for t in evaluate(metrics, quick=True) if t["target"] == "throughput >= every tunnel's"]


def test_hyco_forward_misses_the_tunnel_target_when_one_tunnel_is_faster_one_way() -> None:
    metrics = forward_metrics(
        {"hyco": 300, "direct": 900, "bore": 200}, {"hyco": 300, "direct": 900, "bore": 301}
    )
    (target,) = tunnel_target(metrics)
    assert target["met"] is False
    assert "bore up 1.50x down 1.00x" in str(target["figure"])


def test_frp_with_tls_is_compared_with_hyco_over_wss_and_frp_without_with_hyco_over_ws() -> None:
    metrics = forward_metrics(
        {"hyco": 300, "hyco-wss": 200, "direct": 900, "frp": 100, "frp-notls": 400},
        {"hyco": 300, "hyco-wss": 200, "direct": 900, "frp": 100, "frp-notls": 150},
    )
    (target,) = tunnel_target(metrics)
    assert target["met"] is False
    assert "frp (hyco-wss) up 2.00x down 2.00x" in str(target["figure"])
    assert "frp-notls up 0.75x down 2.00x" in str(target["figure"])


def test_hyco_forward_meets_the_tunnel_target_at_or_above_every_measured_tunnel() -> None:
    up = {"hyco": 300, "direct": 900, "rathole": 300, "chisel": 100}
    (target,) = tunnel_target(forward_metrics(up, up))
    assert target["met"] is True


def test_no_tunnel_measured_means_no_tunnel_target() -> None:
    assert tunnel_target(forward_metrics({"hyco": 1, "direct": 2}, {"hyco": 1, "direct": 2})) == []


def test_the_by_peer_table_has_a_row_per_measured_peer_with_its_ratio_to_direct() -> None:
    from bench.runner import forward_peers

    lines = forward_peers(
        "uvloop", forward_metrics({"hyco": 300, "direct": 900, "frp": 450}, {"direct": 900})
    )
    rows = {line.split()[0]: line.split() for line in lines[4:]}
    assert set(rows) == {"hyco", "direct", "frp"}  # "hyco forward" is two words
    assert rows["frp"][1:3] == ["450", "0.50x"]
    assert rows["hyco"][2:4] == ["300", "0.33x"]
