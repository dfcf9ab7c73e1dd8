"""Listener lifecycle against a real relay: reconnects, close codes, token renewal, stop on 404."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator

import pytest

from hyco import (
    AuthorizationFailed,
    ConnectionLost,
    EndpointNotFound,
    HybridConnectionClient,
    HybridConnectionListener,
    ListenerState,
    RelayTimeout,
    TokenProvider,
)
from hyco.protocol.sas import create_token
from hyco.server import Relay, ServerConfig, serve
from hyco.testing import FakeClock
from tests.client.conftest import address
from tests.conftest import KEY, KEY_NAME, TIMEOUT, test_config

FAST = (0.0, 0.02 * TIMEOUT)  # reconnect delays for tests: the real table is covered by a unit test


class StateLog:
    """Records listener callbacks and lets a test wait for the n-th time a state was reached."""

    def __init__(self) -> None:
        self.states: list[ListenerState] = []
        self.errors: list[BaseException | None] = []
        self._changed = asyncio.Event()

    def __call__(self, listener: HybridConnectionListener) -> None:
        self.states.append(listener.state)
        self.errors.append(listener.last_error)
        self._changed.set()

    def count(self, state: ListenerState) -> int:
        return self.states.count(state)

    async def wait_for(self, state: ListenerState, times: int = 1) -> None:
        async with asyncio.timeout(TIMEOUT):
            while self.count(state) < times:
                self._changed.clear()
                await self._changed.wait()


def make_listener(addr: str, tp: TokenProvider, log: StateLog, **kwargs: object) -> HybridConnectionListener:
    return HybridConnectionListener(
        addr,
        tp,
        reconnect_delays=FAST,
        on_connecting=log,
        on_online=log,
        on_offline=log,
        **kwargs,  # type: ignore[arg-type]
    )


async def roundtrip(addr: str, tp: TokenProvider, listener: HybridConnectionListener) -> None:
    sender = await HybridConnectionClient(addr, tp).connect()
    receiver = await listener.accept()
    assert receiver is not None
    await sender.write(b"ok")
    assert await receiver.read() == b"ok"
    await asyncio.gather(sender.close(), receiver.close())


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (1011, "NameRenewalFailed: the listener connection is being recycled"),
        (1008, "ExpiredToken"),
        (1001, "Going away"),
        (1000, "bye"),
    ],
)
async def test_reconnects_after_every_close_code(
    relay: Relay, tp: TokenProvider, code: int, reason: str
) -> None:
    log = StateLog()
    async with make_listener(address(relay), tp, log) as listener:
        await log.wait_for(ListenerState.ONLINE)
        (connected,) = relay.connected_listeners()
        assert await relay.disconnect_listener(connected.listener_id, code, reason)
        await log.wait_for(ListenerState.OFFLINE)
        error = log.errors[log.states.index(ListenerState.OFFLINE)]
        assert isinstance(error, ConnectionLost)
        assert error.close_code == code
        await log.wait_for(ListenerState.ONLINE, times=2)
        assert listener.is_online
        async with asyncio.timeout(TIMEOUT):
            await roundtrip(address(relay), tp, listener)


async def test_relay_restart_mid_session(relay_factory: object, tp: TokenProvider) -> None:
    first_cm = serve(test_config())
    first = await first_cm.__aenter__()
    port = first.port
    log = StateLog()
    addr = f"ws://127.0.0.1:{port}/echo"
    async with make_listener(addr, tp, log) as listener:
        assert listener.is_online
        await first_cm.__aexit__(None, None, None)
        await log.wait_for(ListenerState.OFFLINE)
        assert not listener.is_online
        assert listener.last_error is not None
        config = test_config(server=ServerConfig(host="127.0.0.1", port=port))
        async with serve(config):
            await log.wait_for(ListenerState.ONLINE, times=2)
            async with asyncio.timeout(TIMEOUT):
                await roundtrip(addr, tp, listener)


async def test_relay_down_at_start(tp: TokenProvider) -> None:
    async with serve(test_config()) as probe:
        port = probe.port
    addr = f"ws://127.0.0.1:{port}/echo"
    log = StateLog()
    listener = make_listener(addr, tp, log)
    async with asyncio.timeout(TIMEOUT):
        await listener.open()  # returns: the relay may come up later
    try:
        assert listener.state in (ListenerState.OFFLINE, ListenerState.CONNECTING)
        assert isinstance(listener.last_error, ConnectionLost)
        with pytest.raises(RelayTimeout):
            await listener.wait_online(timeout=0.01 * TIMEOUT)
        await log.wait_for(ListenerState.OFFLINE, times=2)  # it keeps trying
        async with serve(test_config(server=ServerConfig(host="127.0.0.1", port=port))):
            await listener.wait_online(timeout=TIMEOUT)
            async with asyncio.timeout(TIMEOUT):
                await roundtrip(addr, tp, listener)
    finally:
        await listener.close()
    assert listener.state is ListenerState.CLOSED


async def test_listener_stops_when_entity_disappears(tp: TokenProvider) -> None:
    first_cm = serve(test_config())
    first = await first_cm.__aenter__()
    port = first.port
    log = StateLog()
    listener = make_listener(f"ws://127.0.0.1:{port}/echo", tp, log)
    await listener.open()
    try:
        await first_cm.__aexit__(None, None, None)
        await log.wait_for(ListenerState.OFFLINE)
        without_echo = test_config(server=ServerConfig(host="127.0.0.1", port=port))
        without_echo = dataclasses.replace(
            without_echo,
            hybrid_connections=tuple(hc for hc in without_echo.hybrid_connections if hc.path != "echo"),
        )
        async with serve(without_echo):
            async with asyncio.timeout(TIMEOUT):
                with pytest.raises(EndpointNotFound):
                    await listener.accept()
            assert listener.state is ListenerState.CLOSED
            assert isinstance(listener.last_error, EndpointNotFound)
    finally:
        await listener.close()


class RelayLog(logging.Handler):
    """Counts the relay's log lines that contain ``text`` and lets a test wait for the n-th."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.count = 0
        self._seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.count += 1
            self._seen.set()

    async def wait_for(self, times: int) -> None:
        while self.count < times:
            self._seen.clear()
            await self._seen.wait()


@pytest.fixture
def relay_log() -> Iterator[Callable[[str], RelayLog]]:
    logger = logging.getLogger("hyco.relay")
    handlers: list[RelayLog] = []
    level = logger.level

    def watch(text: str) -> RelayLog:
        handler = RelayLog(text)
        handlers.append(handler)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        return handler

    yield watch
    for handler in handlers:
        logger.removeHandler(handler)
    logger.setLevel(level)


async def test_token_is_renewed_over_the_control_channel(
    relay: Relay, relay_log: Callable[[str], RelayLog]
) -> None:
    # The listener and its tokens run on a fake clock that starts now, so every token is valid for the relay
    # (which reads the real clock) and an hour of renewals passes at once.
    clock = FakeClock(start=time.time())
    provider = TokenProvider.from_shared_access_key(KEY_NAME, KEY, clock=clock.time)
    renewed = relay_log("token renewed")
    log = StateLog()
    async with make_listener(address(relay), provider, log, clock=clock) as listener:
        async with asyncio.timeout(TIMEOUT):
            for renewal in (1, 2):
                await clock.wait_for_sleepers(1)
                clock.advance(3600)
                await renewed.wait_for(renewal)  # the relay checked the new token and kept the channel
        assert listener.token_renewals == 2
        assert listener.is_online
        assert log.count(ListenerState.OFFLINE) == 0
        async with asyncio.timeout(TIMEOUT):
            await roundtrip(address(relay), provider, listener)


async def test_a_renewal_the_relay_refuses_closes_1008_and_the_listener_reconnects(relay: Relay) -> None:
    clock = FakeClock(start=time.time())
    keys = iter([KEY, "d3Jvbmcta2V5", KEY])  # the renewal is signed with a wrong key

    def mint(audience: str, valid_for: float) -> str:
        return create_token(audience, KEY_NAME, next(keys), int(clock.time() + valid_for))

    log = StateLog()
    provider = TokenProvider.from_callable(mint, clock=clock.time)
    async with make_listener(address(relay), provider, log, clock=clock) as listener:
        async with asyncio.timeout(TIMEOUT):
            await clock.wait_for_sleepers(1)
            clock.advance(3600)  # renewal time: the relay refuses the token and closes the channel
            await log.wait_for(ListenerState.OFFLINE, times=2)  # the immediate retry reuses the cached token
            await clock.wait_for_sleepers(1)
            clock.advance(3600)  # the next delay ends after the cached token's renew-at: a good one is minted
            await log.wait_for(ListenerState.ONLINE, times=2)
        offline = [
            e for state, e in zip(log.states, log.errors, strict=True) if state is ListenerState.OFFLINE
        ]
        assert isinstance(offline[0], ConnectionLost) and offline[0].close_code == 1008
        assert isinstance(offline[1], AuthorizationFailed)
        assert listener.token_renewals == 1


async def test_close_ends_iteration_and_accept(relay: Relay, tp: TokenProvider) -> None:
    listener = HybridConnectionListener(address(relay), tp)
    await listener.open()
    got: list[object] = []

    async def consume() -> None:
        async for stream in listener:
            got.append(stream)

    consumer = asyncio.create_task(consume())
    await listener.close()
    async with asyncio.timeout(TIMEOUT):
        await consumer
    assert got == []
    assert await listener.accept() is None
    assert listener.state is ListenerState.CLOSED
    await listener.close()  # idempotent


async def test_two_listeners_share_the_load(relay: Relay, tp: TokenProvider) -> None:
    SENDERS = 30
    async with (
        HybridConnectionListener(address(relay), tp) as a,
        HybridConnectionListener(address(relay), tp) as b,
    ):
        assert a.listener_id != b.listener_id
        accepted: dict[str, list[object]] = {"a": [], "b": []}
        all_in = asyncio.Event()

        async def consume(name: str, listener: HybridConnectionListener) -> None:
            async for stream in listener:
                accepted[name].append(stream)
                if sum(map(len, accepted.values())) == SENDERS:
                    all_in.set()

        consumers = [asyncio.create_task(consume("a", a)), asyncio.create_task(consume("b", b))]
        client = HybridConnectionClient(address(relay), tp)
        async with asyncio.timeout(TIMEOUT):
            senders = await asyncio.gather(*(client.connect() for _ in range(SENDERS)))
            await all_in.wait()
            streams = [s for group in accepted.values() for s in group]
            await asyncio.gather(*(s.close() for s in [*senders, *streams]))  # type: ignore[attr-defined]
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
        # Routing is random (as Azure's): with 30 senders, all on one listener has odds of 2 in 10^9.
        assert accepted["a"] and accepted["b"], {name: len(got) for name, got in accepted.items()}
