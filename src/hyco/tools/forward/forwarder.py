"""Many ``-L`` and ``-R`` mappings in one process: what ``hyco forward`` runs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from hyco.exceptions import InvalidInput, RelayTimeout
from hyco.tools.forward._lifecycle import StartsAndCloses
from hyco.tools.forward.credentials import RelayCredentials
from hyco.tools.forward.local import LocalForwarder
from hyco.tools.forward.remote import DEFAULT_TARGET_CONNECT_TIMEOUT, RemoteForwarder
from hyco.tools.forward.spec import LocalForward, RemoteForward
from hyco.tools.forward.udp import DEFAULT_UDP_IDLE_TIMEOUT
from hyco.tools.pipe import DEFAULT_CHUNK_SIZE

__all__ = ["Forwarder"]


class Forwarder(StartsAndCloses):
    """Runs many ``-L`` and ``-R`` mappings in one process.

    Args:
        local: the ``-L`` mappings.
        remote: the ``-R`` mappings.
        credentials: relay endpoint and tokens, shared by all mappings.
        connect_timeout, udp_idle_timeout, target_connect_timeout, bind_address, chunk_size: as for
            :class:`LocalForwarder` and :class:`RemoteForwarder`.
        listener_options: extra keyword arguments for every remote side's listener.

    Raises:
        InvalidInput: no mapping, or a relay name the credentials cannot serve.

    Example::

        creds = RelayCredentials.from_connection_string(os.environ["AZURE_BRIDGE_CONNECTIONSTRING"])
        async with Forwarder([LocalForward.parse("127.0.0.1:5432:db")], [], creds) as forwarder:
            await forwarder.wait_closed()
    """

    def __init__(
        self,
        local: Sequence[LocalForward],
        remote: Sequence[RemoteForward],
        credentials: RelayCredentials,
        *,
        connect_timeout: float | None = None,
        udp_idle_timeout: float = DEFAULT_UDP_IDLE_TIMEOUT,
        target_connect_timeout: float = DEFAULT_TARGET_CONNECT_TIMEOUT,
        bind_address: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        listener_options: dict[str, Any] | None = None,
    ) -> None:
        if not local and not remote:
            raise InvalidInput("nothing to forward: give at least one -L or -R mapping")
        self.local = [
            LocalForwarder(
                spec,
                credentials,
                connect_timeout=connect_timeout,
                udp_idle_timeout=udp_idle_timeout,
                chunk_size=chunk_size,
            )
            for spec in local
        ]
        self.remote = [
            RemoteForwarder(
                spec,
                credentials,
                target_connect_timeout=target_connect_timeout,
                bind_address=bind_address,
                udp_idle_timeout=udp_idle_timeout,
                chunk_size=chunk_size,
                listener_options=listener_options,
            )
            for spec in remote
        ]
        if any(f.listener.token_provider is None for f in self.remote):  # pragma: no cover - SDK refuses
            raise InvalidInput("a remote forwarder needs a key or SAS to listen")

    def _all(self) -> list[LocalForwarder | RemoteForwarder]:
        return [*self.local, *self.remote]

    async def start(self) -> None:
        """Start every mapping; if one cannot start, stop those already started and raise its error.

        Raises:
            ForwardError: a local port or socket cannot be bound.
            AuthorizationFailed, Forbidden, EndpointNotFound: the relay refused a remote mapping.
        """
        started: list[LocalForwarder | RemoteForwarder] = []
        try:
            for forwarder in self._all():
                await forwarder.start()
                started.append(forwarder)
        except BaseException:
            for forwarder in reversed(started):
                await forwarder.close()
            raise

    async def wait_closed(self) -> None:
        """Serve until a remote mapping stops for good (its hybrid connection is gone) or forever.

        Raises:
            EndpointNotFound: a remote mapping's hybrid connection no longer exists.
        """
        if not self.remote:
            await asyncio.Event().wait()
        waits = [asyncio.ensure_future(f.wait_closed()) for f in self.remote]
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def close(self) -> None:
        """Stop every mapping and close all connections."""
        await asyncio.gather(*(f.close() for f in self._all()), return_exceptions=True)

    async def wait_online(self, timeout: float | None = None) -> None:
        """Wait until every remote mapping is online.

        Raises:
            RelayTimeout: not all online within ``timeout`` seconds.
        """
        try:
            async with asyncio.timeout(timeout):
                for forwarder in self.remote:
                    await forwarder.wait_online()
        except TimeoutError:
            raise RelayTimeout(f"the remote mappings were not online within {timeout} s") from None
