"""The public surface (style.md habit 13): each public module has ``__all__``; every name in it exists."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"


def public_modules() -> list[str]:
    """Every module under src/hyco whose dotted name has no component starting with ``_``."""
    names = []
    for path in sorted((SRC / "hyco").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not any(part.startswith("_") for part in parts):
            names.append(".".join(parts))
    return names


PUBLIC = public_modules()


def test_public_modules_found() -> None:
    assert {"hyco", "hyco.exceptions", "hyco.protocol", "hyco.protocol.uri", "hyco.protocol.sas"} <= set(
        PUBLIC
    )
    assert "hyco.client._net" not in PUBLIC


@pytest.mark.parametrize("name", PUBLIC)
def test_module_has_all_and_every_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list | tuple), f"{name} has no __all__"
    assert all(isinstance(item, str) for item in exported)
    assert len(set(exported)) == len(exported), f"{name}.__all__ lists a name twice"
    missing = [item for item in exported if not hasattr(module, item)]
    assert missing == [], f"{name}.__all__ lists names it does not define"


def test_protocol_package_re_exports_are_the_submodules_objects() -> None:
    protocol = importlib.import_module("hyco.protocol")
    names = ("backoff", "connection_string", "control", "messages", "sas", "uri")
    submodules = [importlib.import_module(f"hyco.protocol.{name}") for name in names]
    offered = {item: getattr(sub, item) for sub in submodules for item in sub.__all__}
    for item in protocol.__all__:
        assert item in offered, f"hyco.protocol exports {item}, which no submodule lists in __all__"
        assert getattr(protocol, item) is offered[item]
