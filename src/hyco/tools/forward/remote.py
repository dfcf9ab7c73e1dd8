"""The remote side of ``hyco forward`` (``-R``): listen on a hybrid connection, pipe each stream to a target.

The listener (:class:`HybridConnectionListener`) reconnects forever with the official back-off (protocol.md
2.9). For TCP and unix targets its accept handler first connects to the target; if the target refuses or
cannot be reached, the sender is **rejected** with 502 and the reason (protocol.md 3.3), so the local side can
say why and close its client's connection. Otherwise the stream is accepted and spliced to the target. Streams
already accepted are independent of the control channel: they keep flowing while it reconnects. UDP streams
are accepted at once; each gets its own datagram endpoint towards the target.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from hyco.client.listener import AcceptContext, HybridConnectionListener, ListenerState
from hyco.client.stream import HybridConnectionStream
from hyco.exceptions import HycoError
from hyco.protocol.messages import status_description
from hyco.tools.forward._lifecycle import StartsAndCloses
from hyco.tools.forward._report import log_end, logger, peer_name
from hyco.tools.forward.credentials import RelayCredentials
from hyco.tools.forward.sockets import HeldConnection, connect_datagrams, connect_stream
from hyco.tools.forward.spec import RemoteForward, Transport
from hyco.tools.forward.udp import DEFAULT_UDP_IDLE_TIMEOUT, Activity, new_queue, offer, relay_datagrams
from hyco.tools.pipe import DEFAULT_CHUNK_SIZE, splice_socket

__all__ = ["DEFAULT_TARGET_CONNECT_TIMEOUT", "TARGET_UNREACHABLE_STATUS", "RemoteForwarder"]

#: azbridge's ``ConnectTimeout``: how long the remote side tries to reach its target before rejecting.
DEFAULT_TARGET_CONNECT_TIMEOUT = 10.0
#: Status a remote forwarder rejects senders with when its target cannot be reached (502 Bad Gateway).
TARGET_UNREACHABLE_STATUS = 502
#: How long a connected target waits for its stream beyond the listener's accept timeout.
_TARGET_GRACE = 5.0

_Target = tuple[HeldConnection, asyncio.TimerHandle]


class RemoteForwarder(StartsAndCloses):
    """Serves one :class:`RemoteForward`: listens on the hybrid connection, pipes each stream to the target.

    Args:
        spec: the mapping.
        credentials: relay endpoint and a token provider with the Listen right.
        target_connect_timeout: seconds to reach the target before the sender is rejected with 502.
        bind_address: local source address for connections to the target (azbridge ``-b``).
        udp_idle_timeout: seconds after which a silent UDP session is closed.
        chunk_size: largest target read (one WebSocket message).
        listener_options: extra keyword arguments for :class:`HybridConnectionListener`
            (``reconnect_delays=``, ``keep_alive_interval=``, ...).

    Raises:
        InvalidInput: the credentials' connection string names another hybrid connection, or they carry no
            token provider.

    Use ``async with`` or :meth:`start` / :meth:`close`.
    """

    def __init__(
        self,
        spec: RemoteForward,
        credentials: RelayCredentials,
        *,
        target_connect_timeout: float = DEFAULT_TARGET_CONNECT_TIMEOUT,
        bind_address: str | None = None,
        udp_idle_timeout: float = DEFAULT_UDP_IDLE_TIMEOUT,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        listener_options: dict[str, Any] | None = None,
    ) -> None:
        address, path = credentials.address_of(spec.relay_name)
        self.spec = spec
        self.prefix = f"-R {spec.relay_name} -> {spec.describe()}:"
        self.target_connect_timeout = target_connect_timeout
        self.bind_address = bind_address
        self.udp_idle_timeout = udp_idle_timeout
        self.chunk_size = chunk_size
        self.listener = HybridConnectionListener(
            address,
            credentials.token_provider,
            path=path,
            accept_handler=self._accept if spec.protocol is Transport.TCP else None,
            on_online=self._state_changed,
            on_offline=self._state_changed,
            **credentials.client_options,
            **(listener_options or {}),
        )
        self._targets: dict[str, _Target] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._serving: asyncio.Task[None] | None = None
        #: Streams served so far, and open now.
        self.total = 0
        self.active = 0
        self.error: HycoError | None = None
        self._last_state = ""  # the last state line logged

    def __repr__(self) -> str:
        return f"<RemoteForwarder {self.prefix.rstrip(':')} {self.listener.state.value}>"

    @property
    def is_online(self) -> bool:
        """Whether the control channel is connected (senders can reach this forwarder)."""
        return self.listener.is_online

    @property
    def state(self) -> ListenerState:
        """The listener's state (connecting, online, offline, closed)."""
        return self.listener.state

    def _state_changed(self, listener: HybridConnectionListener) -> None:
        if listener.is_online:
            self._last_state = "online"
            logger.info("%s online", self.prefix)
            return
        reason = f": {listener.last_error}" if listener.last_error else ""
        # Each failed reconnect attempt ends offline again, usually for the same reason: say it once.
        if self._last_state != f"offline{reason}":
            self._last_state = f"offline{reason}"
            logger.warning("%s offline, reconnecting%s", self.prefix, reason)

    async def start(self) -> None:
        """Open the control channel and start serving.

        If the relay cannot be reached the forwarder starts offline and keeps reconnecting.

        Raises:
            AuthorizationFailed, Forbidden, EndpointNotFound: the relay refused outright (wrong key, no
                Listen right, no such hybrid connection).
        """
        await self.listener.open()
        self._serving = asyncio.ensure_future(self._serve())

    async def wait_online(self, timeout: float | None = None) -> None:
        """Wait until the control channel is connected.

        Raises:
            RelayTimeout: not online within ``timeout`` seconds.
        """
        await self.listener.wait_online(timeout)

    async def wait_closed(self) -> None:
        """Wait until the forwarder stops for good (closed, or its hybrid connection is gone).

        Raises:
            EndpointNotFound: the hybrid connection no longer exists.
        """
        if self._serving is not None:
            await asyncio.shield(self._serving)
        if self.error is not None:
            raise self.error

    async def close(self) -> None:
        """Stop listening and close every open stream and target connection. Idempotent."""
        await self.listener.close()
        if self._serving is not None:
            self._serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._serving
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for ident in list(self._targets):
            self._drop_target(ident)

    async def _serve(self) -> None:
        try:
            async for stream in self.listener:
                task = asyncio.ensure_future(self._forward(stream))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except HycoError as exc:
            self.error = exc
            logger.error("%s stopped: %s", self.prefix, exc)

    # -- connecting to the target before accepting (so a refusal reaches the sender with its reason)

    async def _accept(self, context: AcceptContext) -> bool:
        try:
            held = await connect_stream(self.spec, self.bind_address, self.target_connect_timeout)
        except (OSError, TimeoutError) as exc:
            reason = (
                f"timed out after {self.target_connect_timeout:g} s"
                if isinstance(exc, TimeoutError)
                else exc.strerror or str(exc)
            )
            description = f"hyco forward: cannot connect to {self.spec.describe()}: {reason}"
            logger.warning("%s %s rejected: %s", self.prefix, context.id, description)
            context.reject(TARGET_UNREACHABLE_STATUS, status_description(description))
            return False
        # Keep the target until the stream arrives; drop it if the rendezvous never completes.
        expiry = asyncio.get_running_loop().call_later(
            self.listener.accept_timeout + _TARGET_GRACE, self._drop_target, context.id
        )
        self._targets[context.id] = (held, expiry)
        return True

    def _drop_target(self, ident: str) -> None:
        entry = self._targets.pop(ident, None)
        if entry is not None:
            held, expiry = entry
            expiry.cancel()
            if held.transport is not None:
                held.transport.abort()

    async def _forward(self, stream: HybridConnectionStream) -> None:
        self.total += 1
        self.active += 1
        who = stream.tracking_id
        if stream.remote_endpoint is not None:
            endpoint = stream.remote_endpoint
            who = f"{who} from {peer_name((endpoint.address, endpoint.port))}"
        started = time.monotonic()
        try:
            if self.spec.protocol is Transport.UDP:
                await self._forward_udp(stream, who, started)
                return
            entry = self._targets.pop(stream.tracking_id, None)
            if entry is None:  # the target connection expired before the stream arrived
                await stream.close()
                log_end(self.prefix, who, 0, 0, time.monotonic() - started, "target connection expired")
                return
            held, expiry = entry
            expiry.cancel()
            assert held.transport is not None
            logger.info("%s %s opened", self.prefix, who)
            result = await splice_socket(
                held.transport,
                stream,
                received=bytes(held.received),
                eof=held.eof,
                chunk_size=self.chunk_size,
            )
            # Seen from this side, "to relay" is what the target sent.
            log_end(
                self.prefix, who, result.to_relay, result.from_relay, time.monotonic() - started, result.how
            )
        except asyncio.CancelledError:
            with contextlib.suppress(HycoError, OSError):
                await stream.close()
            raise
        finally:
            self.active -= 1

    async def _forward_udp(self, stream: HybridConnectionStream, who: str, started: float) -> None:
        queue = new_queue()
        activity = Activity()

        def from_target(data: bytes, addr: Any) -> None:
            activity.touch()
            offer(queue, data)

        transport: asyncio.DatagramTransport | None = None
        how = "idle"
        try:
            try:
                transport = await connect_datagrams(self.spec, self.bind_address, from_target)
            except OSError as exc:
                how = f"cannot reach {self.spec.describe()}: {exc.strerror or exc}"
                return
            logger.info("%s %s opened (udp session)", self.prefix, who)
            target = transport
            how = await relay_datagrams(stream, queue, target.sendto, activity, self.udp_idle_timeout)
        finally:
            if transport is not None:
                transport.close()
            with contextlib.suppress(HycoError, OSError):
                await stream.close()
            log_end(self.prefix, who, activity.to_relay, activity.from_relay, time.monotonic() - started, how)
