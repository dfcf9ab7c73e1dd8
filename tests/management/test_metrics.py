"""``/$metrics``: Prometheus text (prometheus-client), Azure's metric names, bounded labels, Manage token."""

from __future__ import annotations

import asyncio

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from hyco.server import Relay, ServerConfig
from hyco.server.metrics import RelayMetrics, merged_text
from tests.conftest import LISTEN_KEY, LISTEN_KEY_NAME
from tests.management.conftest import namespace_token
from tests.server.wire import RawListener, connect_url, token_for, wait_for_health


async def scrape(
    session: aiohttp.ClientSession, relay: Relay, token: str | None = None
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    headers = {"Authorization": token if token is not None else namespace_token(relay)}
    async with session.get(f"{relay.http_url}/$metrics", headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_a_sender_a_listener_and_an_http_request_are_counted(relay: Relay, session):
    listener = await RawListener.open(session, relay.url, "echo")
    sender_task = asyncio.ensure_future(
        session.ws_connect(
            connect_url(relay.url, "echo"), headers={"ServiceBusAuthorization": token_for(relay.url, "echo")}
        )
    )
    rendezvous = await listener.accept()
    sender = await sender_task
    await sender.send_bytes(b"12345")
    assert (await rendezvous.receive()).data == b"12345"
    during = await scrape(session, relay)
    assert during[("hyco_active_connections", (("entity", "echo"),))] == 1
    assert during[("hyco_active_listeners", (("entity", "echo"),))] == 1
    assert during[("hyco_sender_connections_total", (("entity", "echo"), ("result", "success")))] == 1
    assert during[("hyco_listener_connections_total", (("entity", "echo"), ("result", "success")))] == 1
    await asyncio.gather(sender.close(), rendezvous.close())
    await wait_for_health(session, relay.http_url, "active_connections", 0)
    async with session.get(f"{relay.http_url}/nowhere/at/all") as resp:
        assert resp.status == 404

    after = await scrape(session, relay)
    assert after[("hyco_sender_connections_total", (("entity", "echo"), ("result", "success")))] == 1
    assert after[("hyco_sender_disconnects_total", (("entity", "echo"),))] == 1
    assert after[("hyco_active_connections", (("entity", "echo"),))] == 0
    assert after[("hyco_bytes_transferred_total", (("direction", "in"), ("entity", "echo")))] >= 5
    assert after[("hyco_rendezvous_duration_seconds_count", (("entity", "echo"),))] == 1
    (build,) = [value for (name, _), value in after.items() if name == "hyco_build_info"]
    assert build == 1
    # A path that names no hybrid connection is not a label value.
    assert not any("nowhere" in value for _, labels in after for _, value in labels)
    await listener.ws.close()


async def test_http_requests_by_code(relay: Relay, session):
    async with session.get(f"{relay.http_url}/open/x") as resp:
        assert resp.status == 502  # no listener
    samples = await scrape(session, relay)
    assert samples[("hyco_http_requests_total", (("code", "502"), ("entity", "open")))] == 1
    assert samples[("hyco_http_request_duration_seconds_count", (("entity", "open"),))] == 1


async def test_refused_listener_on_an_unknown_path_is_labelled_empty(relay: Relay, session):
    try:
        await RawListener.open(session, relay.url, "made-up-by-a-scanner", token="nonsense")
    except aiohttp.WSServerHandshakeError as exc:
        assert exc.status == 404
    samples = await scrape(session, relay)
    assert samples[("hyco_listener_connections_total", (("entity", ""), ("result", "not_found")))] == 1


async def test_scraping_needs_a_manage_token(relay: Relay, session):
    async with session.get(f"{relay.http_url}/$metrics") as resp:
        assert resp.status == 401
    listen_only = namespace_token(relay, LISTEN_KEY_NAME, LISTEN_KEY)
    async with session.get(f"{relay.http_url}/$metrics", headers={"Authorization": listen_only}) as resp:
        assert resp.status == 403


async def test_metrics_public(relay_factory, session):
    relay = await relay_factory(server=ServerConfig(host="127.0.0.1", port=0, metrics_public=True))
    async with session.get(f"{relay.http_url}/$metrics") as resp:
        assert resp.status == 200
        assert "hyco_build_info" in await resp.text()


def test_workers_texts_merge_into_one_relays() -> None:
    first, second = RelayMetrics(lambda: []), RelayMetrics(lambda: [])
    first.http_done("echo", 200, 0.02, 10, 20)
    second.http_done("echo", 200, 0.3, 1, 2)
    second.http_done("echo", 404, 0.001, 0, 0)

    def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode())
            for s in family.samples
        }

    a, b = samples(first.text()), samples(second.text())
    merged = samples(merged_text([first.families(), second.families()]))
    assert set(merged) == set(a) | set(b)
    for key, value in merged.items():
        if key[0].endswith("_created"):
            assert value == min(v for v in (a.get(key), b.get(key)) if v is not None)
        elif key[0] == "hyco_build_info":
            assert value == a[key] == 1.0
        else:
            assert value == a.get(key, 0.0) + b.get(key, 0.0), key
    assert merged[("hyco_http_request_duration_seconds_count", (("entity", "echo"),))] == 3.0
