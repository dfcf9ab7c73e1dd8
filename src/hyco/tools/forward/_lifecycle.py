"""``async with`` for the forwarders: :meth:`start` on entry, :meth:`close` on exit."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["StartsAndCloses"]


class StartsAndCloses:
    """Mixin: ``async with forwarder:`` runs ``await forwarder.start()`` and, however the block ends,
    ``await forwarder.close()``."""

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
