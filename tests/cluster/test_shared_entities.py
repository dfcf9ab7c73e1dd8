"""Entities and keys made at run time on one node work on every node (the shared store in NATS KV)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.cluster.harness import RelayNode, wait_until
from tests.management.conftest import Api
from tests.server.wire import RawListener, connect_url, handshake_error, token_for

HC = "hybridConnections"


def api(session: aiohttp.ClientSession, node: RelayNode) -> Api:
    return Api(session, node)  # only its URLs are used


async def sender_status(
    session: aiohttp.ClientSession, node: RelayNode, path: str, key_name: str, key: str
) -> int:
    """The status a sender with a token from ``key`` gets on ``node`` (101: the handshake went through)."""
    token = token_for(node.url, path, key_name, key)
    try:
        ws = await session.ws_connect(connect_url(node.url, path), headers={"ServiceBusAuthorization": token})
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    await ws.close()
    return 101


async def test_entity_and_key_made_on_one_node_work_on_another(nodes: list[RelayNode]) -> None:
    n1, n2, n3 = nodes
    async with aiohttp.ClientSession() as session:
        status, _ = await api(session, n1).call("PUT", f"{HC}/orders", {})
        assert status == 200
        status, _ = await api(session, n1).call(
            "PUT", f"{HC}/orders/authorizationRules/app", {"properties": {"rights": ["Listen", "Send"]}}
        )
        assert status == 200
        _, keys = await api(session, n1).call("POST", f"{HC}/orders/authorizationRules/app/listKeys")
        old = keys["primaryKey"]

        # Node 3 knows the entity and its rule: the management API shows them, and the key works there.
        async def known_on_n3() -> bool:
            return (await api(session, n3).call("GET", f"{HC}/orders/authorizationRules/app"))[0] == 200

        await wait_until(known_on_n3, "node 3 never saw the rule made on node 1")
        listener = await RawListener.open(
            session, n3.url, "orders", token=token_for(n3.url, "orders", "app", old)
        )
        sender = asyncio.ensure_future(
            session.ws_connect(
                connect_url(n2.url, "orders"),
                headers={"ServiceBusAuthorization": token_for(n2.url, "orders", "app", old)},
            )
        )
        assert "accept" in await listener.next_command()  # a sender on node 2, the listener on node 3
        sender.cancel()

        # Rotated on node 2: the old key is refused on node 1 and node 3, the new one works.
        status, renewed = await api(session, n2).call(
            "POST", f"{HC}/orders/authorizationRules/app/regenerateKeys", {"keyType": "PrimaryKey"}
        )
        assert status == 200
        new = renewed["primaryKey"]
        assert new != old
        for node in (n1, n3):

            async def old_refused(node: RelayNode = node) -> bool:
                return await sender_status(session, node, "orders", "app", old) == 401

            await wait_until(old_refused, f"{node.node_id} still took the rotated key")
        refusal = await handshake_error(
            session.ws_connect(
                connect_url(n3.url, "orders"),
                headers={"ServiceBusAuthorization": token_for(n3.url, "orders", "app", old)},
            )
        )
        assert refusal.status == 401
        sender = asyncio.ensure_future(
            session.ws_connect(
                connect_url(n1.url, "orders"),
                headers={"ServiceBusAuthorization": token_for(n1.url, "orders", "app", new)},
            )
        )
        assert "accept" in await listener.next_command()
        sender.cancel()
        await listener.ws.close()

        # Deleted on node 3: gone on node 1.
        assert (await api(session, n3).call("DELETE", f"{HC}/orders"))[0] == 200

        async def gone_on_n1() -> bool:
            return (await api(session, n1).call("GET", f"{HC}/orders"))[0] == 404

        await wait_until(gone_on_n1, "node 1 still had the entity deleted on node 3")


async def test_a_node_that_joins_later_loads_what_exists(
    nodes: list[RelayNode], tmp_path: Any, nats_server: Any
) -> None:
    from tests.cluster.harness import relay_node

    n1 = nodes[0]
    async with aiohttp.ClientSession() as session:
        assert (await api(session, n1).call("PUT", f"{HC}/late", {"properties": {"userMetadata": "m"}}))[
            0
        ] == 200
        async with relay_node(tmp_path, "n4", nats_server.url) as n4:
            status, entity = await api(session, n4).call("GET", f"{HC}/late")
            assert status == 200  # loaded before the node said it was ready
            assert entity["properties"]["userMetadata"] == "m"


def test_every_record_field_survives_the_bucket() -> None:
    import dataclasses

    from hyco.protocol.sas import Right
    from hyco.server.config import AuthorizationRule, EntityStatus, Secret
    from hyco.server.routing.shared_store import decode, encode, entity_key, rule_kv_key
    from hyco.server.store import EntityRecord, RuleRecord

    entity = EntityRecord("a/B.c", False, "meta", EntityStatus.SEND_DISABLED, 1.5, 2.5, inspect=True)
    assert {f.name for f in dataclasses.fields(EntityRecord)} == {
        "path",
        "requires_client_authorization",
        "user_metadata",
        "status",
        "created_at",
        "updated_at",
        "inspect",
    }, "a new EntityRecord field: keep it in the shared store's encode/decode"
    assert decode(entity_key(entity.path), encode(entity)) == entity
    rule = RuleRecord(
        "a/B.c",
        AuthorizationRule("r", Secret("k1"), frozenset({Right.SEND, Right.LISTEN}), Secret("k2")),
        3.0,
        4.0,
    )
    assert decode(rule_kv_key(*rule.key), encode(rule)) == rule


async def test_every_node_shows_the_clusters_listeners(nodes: list[RelayNode]) -> None:
    import json
    import time

    from tests.cluster.harness import tagged_listener
    from tests.conftest import KEY, KEY_NAME, TIMEOUT

    n1, n2, _ = nodes
    started = time.time()
    jar = aiohttp.CookieJar(unsafe=True)  # the dashboard's session cookie, from an IP address
    async with tagged_listener(f"{n1.url}/echo", "L"), aiohttp.ClientSession(cookie_jar=jar) as session:

        async def counted_on_n2() -> bool:
            status, entity = await api(session, n2).call("GET", f"{HC}/echo")
            return status == 200 and entity["properties"]["listenerCount"] == 1

        await wait_until(counted_on_n2, "node 2 never counted the listener on node 1")
        _, status = await api(session, n2).call("GET", "status")
        assert next(row for row in status["hybridConnections"] if row["name"] == "echo")["listeners"] == 1

        # The dashboard of node 2 lists it, with the node that holds it, its address and since when.
        async with session.post(
            f"{n2.http_url}/$dashboard/login", json={"keyName": KEY_NAME, "key": KEY}
        ) as r:
            assert r.status == 200
        async with session.get(f"{n2.http_url}/$dashboard/events") as events:
            assert events.status == 200, await events.text()
            async with asyncio.timeout(TIMEOUT):
                while not (line := (await events.content.readline()).decode()).startswith("data: "):
                    assert line, "the event stream ended before its first snapshot"
        listeners = json.loads(line[len("data: ") :])["listeners"]
        assert [(item["entity"], item["node"], item["remote"]) for item in listeners] == [
            ("echo", "n1", "127.0.0.1")
        ]
        assert started - 1 <= listeners[0]["onlineSince"] <= time.time()
