"""Every ```python block of docs/protocol-layer.md runs, in order, in one namespace."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol-layer.md"
BLOCKS = re.findall(
    r"^```python\n(.*?)^```$", DOC.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE
)


def test_doc_has_examples() -> None:
    assert len(BLOCKS) >= 5


def test_doc_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, object] = {"__name__": "protocol_layer_doc"}
    for index, block in enumerate(BLOCKS):
        code = compile(block, f"{DOC.name}[block {index}]", "exec")
        exec(code, namespace)
    out = capsys.readouterr().out
    assert "InvalidURI" in out
    assert "InvalidToken" in out
    assert "InvalidConnectionString" in out
    assert "unknown control command" in out
    assert "1008 unexpected request with body:true while waiting for the body" in out


def test_doc_reconnect_driver_resets_after_success() -> None:
    namespace: dict[str, object] = {}
    for block in BLOCKS:
        exec(compile(block, DOC.name, "exec"), namespace)
    keep_listening = namespace["keep_listening"]
    outcomes = iter([OSError, OSError, None, OSError, OSError, OSError, KeyboardInterrupt])
    slept: list[float] = []

    async def connect() -> None:
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome

    async def sleep(delay: float) -> None:
        slept.append(delay)

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(keep_listening(connect, sleep))  # type: ignore[operator]
    assert slept == [0, 1, 0, 1, 2]
