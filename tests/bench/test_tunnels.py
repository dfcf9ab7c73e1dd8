"""The bench's choice of which tunnels to build or skip (nothing is built or run here)."""

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
    assert [p.tool.name for p in prepared] == ["rathole", "frp", "chisel", "bore"]
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
