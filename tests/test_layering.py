"""Layering rules (style.md habit 13), checked by parsing every module's imports with ast.

* ``hyco.protocol`` imports only the standard library, ``hyco.exceptions`` and ``hyco.protocol`` itself;
* ``hyco.server`` and ``hyco.client`` never import each other;
* ``hyco.tools`` never imports ``hyco.server``.

Imports anywhere in a module count, including inside functions and ``if TYPE_CHECKING:`` blocks.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / "hyco").rglob("*.py"))}


MODULES = all_modules()


def imported_modules(source: str, module: str, *, is_package: bool, known: set[str]) -> Iterator[str]:
    """Yield the absolute name of all that ``module`` imports (``from pkg import sub`` gives ``pkg.sub``)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield sub if sub in known else target


def violation(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported``, or None when it may."""

    def within(name: str, package: str) -> bool:
        return name == package or name.startswith(package + ".")

    if within(importer, "hyco.protocol"):
        top = imported.partition(".")[0]
        if top != "hyco":
            return (
                None if top in sys.stdlib_module_names else "hyco.protocol imports only the standard library"
            )
        if imported == "hyco.exceptions" or within(imported, "hyco.protocol"):
            return None
        return "hyco.protocol imports only hyco.exceptions and hyco.protocol"
    if within(importer, "hyco.server") and within(imported, "hyco.client"):
        return "hyco.server must not import hyco.client"
    if within(importer, "hyco.client") and within(imported, "hyco.server"):
        return "hyco.client must not import hyco.server"
    if within(importer, "hyco.tools") and within(imported, "hyco.server"):
        return "hyco.tools must not import hyco.server"
    return None


def violations_of(module: str, path: Path) -> list[str]:
    imports = imported_modules(
        path.read_text(encoding="utf-8"), module, is_package=path.name == "__init__.py", known=set(MODULES)
    )
    return [f"{module} imports {name}: {why}" for name in imports if (why := violation(module, name))]


def test_the_packages_exist() -> None:
    assert {"hyco.protocol", "hyco.protocol.sas", "hyco.exceptions", "hyco.server", "hyco.client"} <= set(
        MODULES
    )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_respects_layers(module: str) -> None:
    assert violations_of(module, MODULES[module]) == []


# --- the checker itself catches what it should -----------------------------------------------------------

KNOWN = {"hyco", "hyco.server", "hyco.server.app", "hyco.client", "hyco.client.sender", "hyco.protocol",
         "hyco.protocol.sas", "hyco.exceptions"}  # fmt: skip


@pytest.mark.parametrize(
    ("module", "is_package", "source", "expected"),
    [
        ("hyco.protocol.sas", False, "import hmac, json", ["hmac", "json"]),
        ("hyco.protocol.sas", False, "from . import uri", ["hyco.protocol"]),
        ("hyco.protocol", True, "from .sas import x", ["hyco.protocol.sas"]),
        ("hyco.protocol.sas", False, "from .. import exceptions", ["hyco.exceptions"]),
        ("hyco.protocol.sas", False, "from ..server import app", ["hyco.server.app"]),
        ("hyco.client.sender", False, "def f():\n    from hyco import server\n", ["hyco.server"]),
        ("hyco.client", True, "if TYPE_CHECKING:\n    import hyco.server.app\n", ["hyco.server.app"]),
    ],
)
def test_import_extraction(module: str, is_package: bool, source: str, expected: list[str]) -> None:
    assert list(imported_modules(source, module, is_package=is_package, known=KNOWN)) == expected


@pytest.mark.parametrize(
    ("importer", "imported", "bad"),
    [
        ("hyco.protocol.sas", "hmac", False),
        ("hyco.protocol.sas", "__future__", False),
        ("hyco.protocol.sas", "hyco.exceptions", False),
        ("hyco.protocol", "hyco.protocol.uri", False),
        ("hyco.protocol.sas", "aiohttp", True),
        ("hyco.protocol.sas", "cryptography.hazmat", True),
        ("hyco.protocol.sas", "hyco", True),
        ("hyco.protocol.sas", "hyco.server", True),
        ("hyco.protocol.sas", "hyco.client.sender", True),
        ("hyco.protocol.sas", "hyco.protocolx", True),
        ("hyco.server.app", "hyco.client", True),
        ("hyco.server", "hyco.client.sender", True),
        ("hyco.server.app", "hyco.protocol", False),
        ("hyco.client.sender", "hyco.server.app", True),
        ("hyco.client.sender", "hyco.serverless", False),
        ("hyco.client.sender", "aiohttp", False),
        ("hyco.tools.pipe", "hyco.server", True),
        ("hyco.tools.pipe", "hyco.client", False),
        ("hyco.cli", "hyco.server", False),
    ],
)
def test_rules(importer: str, imported: str, bad: bool) -> None:
    assert (violation(importer, imported) is not None) is bad
