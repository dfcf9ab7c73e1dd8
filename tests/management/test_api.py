"""The management REST API over real sockets: Azure's resource shapes, Manage tokens, read-only config
entities, key rotation that takes effect at once, status honoured by the relay; bad input changes nothing."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
import xml.etree.ElementTree as ET

import aiohttp
import pytest

from hyco.protocol.connection_string import RelayConnectionString
from hyco.protocol.sas import create_token
from hyco.server import HybridConnectionConfig, Relay, ServerConfig, serve
from tests.conftest import KEY, LISTEN_KEY, LISTEN_KEY_NAME, SEND_KEY, SEND_KEY_NAME, TIMEOUT
from tests.conftest import test_config as make_config
from tests.management.conftest import Api, namespace_token
from tests.server.wire import RawListener, connect_url, handshake_error, token_for, wait_for_health

HC = "hybridConnections"


async def closed_with(listener: RawListener) -> int:
    msg = await asyncio.wait_for(listener.ws.receive(), TIMEOUT)
    assert msg.type is aiohttp.WSMsgType.CLOSE, msg
    return int(msg.data)


# --- hybrid connections ----------------------------------------------------------------------------


async def test_create_show_list_in_azure_shape(api: Api, session, relay: Relay):
    status, body = await api.call("PUT", f"{HC}/orders", {"properties": {"userMetadata": "team=a"}})
    assert status == 200
    assert body["name"] == "orders"
    assert body["type"] == "Microsoft.Relay/Namespaces/HybridConnections"
    props = body["properties"]
    assert props["requiresClientAuthorization"] is True
    assert props["userMetadata"] == "team=a"
    assert props["listenerCount"] == 0
    assert props["status"] == "Active"
    assert props["createdAt"].endswith("Z")

    listener = await RawListener.open(session, relay.url, "orders")
    _, shown = await api.call("GET", f"{HC}/orders")
    assert shown["properties"]["listenerCount"] == 1
    _, listed = await api.call("GET", HC)
    names = {item["name"] for item in listed["value"]}
    assert names == {"echo", "open", "multi/segment/path", "orders"}
    await listener.ws.close()


async def test_update_keeps_what_is_not_sent(api: Api):
    await api.call(
        "PUT", f"{HC}/orders", {"properties": {"userMetadata": "m", "requiresClientAuthorization": False}}
    )
    status, body = await api.call("PUT", f"{HC}/orders", {"properties": {"userMetadata": "n"}})
    assert status == 200
    assert body["properties"]["userMetadata"] == "n"
    assert body["properties"]["requiresClientAuthorization"] is False


async def test_get_unknown_is_404_in_arm_shape(api: Api):
    status, body = await api.call("GET", f"{HC}/nope")
    assert status == 404
    assert body["error"]["code"] == "NotFound"
    assert "nope" in body["error"]["message"]


async def test_config_entities_and_rules_are_read_only(api: Api):
    for method, path, body in [
        ("PUT", f"{HC}/echo", {"properties": {}}),
        ("DELETE", f"{HC}/echo", None),
        ("PUT", "authorizationRules/RootManageSharedAccessKey", {"properties": {"rights": ["Listen"]}}),
        ("POST", f"{HC}/echo/authorizationRules/{SEND_KEY_NAME}/regenerateKeys", {"keyType": "PrimaryKey"}),
    ]:
        status, answer = await api.call(method, path, body)
        assert status == 409, (method, path)
        assert "configuration file" in answer["error"]["message"]
    _, echo = await api.call("GET", f"{HC}/echo")
    assert echo["name"] == "echo"


async def test_delete_closes_listeners_with_1001(api: Api, session, relay: Relay):
    await api.call("PUT", f"{HC}/gone", {})
    listener = await RawListener.open(session, relay.url, "gone")
    status, _ = await api.call("DELETE", f"{HC}/gone")
    assert status == 200
    assert await closed_with(listener) == 1001
    assert (await api.call("GET", f"{HC}/gone"))[0] == 404
    assert (await api.call("DELETE", f"{HC}/gone"))[0] == 204


async def test_disabled_closes_listeners_and_refuses_senders(api: Api, session, relay: Relay):
    await api.call("PUT", f"{HC}/svc", {})
    listener = await RawListener.open(session, relay.url, "svc")
    status, body = await api.call("PUT", f"{HC}/svc", {"properties": {"status": "Disabled"}})
    assert (status, body["properties"]["status"]) == (200, "Disabled")
    assert await closed_with(listener) == 1001
    refusal = await handshake_error(
        session.ws_connect(
            connect_url(relay.url, "svc"), headers={"ServiceBusAuthorization": token_for(relay.url, "svc")}
        )
    )
    assert refusal.status == 403
    assert "EntityDisabled" in refusal.message
    listen_refusal = await handshake_error(RawListener.open(session, relay.url, "svc"))
    assert listen_refusal.status == 403


async def test_send_disabled_admits_listeners_only(api: Api, session, relay: Relay):
    await api.call("PUT", f"{HC}/svc", {"properties": {"status": "SendDisabled"}})
    listener = await RawListener.open(session, relay.url, "svc")
    async with session.get(
        f"{relay.http_url}/svc", headers={"ServiceBusAuthorization": token_for(relay.url, "svc")}
    ) as resp:
        assert resp.status == 403
    await listener.ws.close()


# --- authorization rules and keys ----------------------------------------------------------------


async def test_send_only_rule_listkeys_and_rotation(api: Api, session, relay: Relay):
    await api.call("PUT", f"{HC}/orders", {})
    status, rule = await api.call(
        "PUT", f"{HC}/orders/authorizationRules/sender", {"properties": {"rights": ["Send"]}}
    )
    assert status == 200
    assert rule["type"] == "Microsoft.Relay/Namespaces/HybridConnections/AuthorizationRules"
    assert rule["properties"]["rights"] == ["Send"]
    status, keys = await api.call("POST", f"{HC}/orders/authorizationRules/sender/listKeys")
    assert status == 200
    assert keys["keyName"] == "sender"
    assert len(base64.b64decode(keys["primaryKey"])) == 32
    assert keys["primaryKey"] != keys["secondaryKey"]
    conn = RelayConnectionString.parse(keys["primaryConnectionString"])
    assert conn.entity_path == "orders"
    assert conn.shared_access_key == keys["primaryKey"]
    assert conn.endpoint == f"ws://{relay.url.split('://')[1]}/"

    listener = await RawListener.open(session, relay.url, "orders")
    old = token_for(relay.url, "orders", "sender", keys["primaryKey"])
    sender = asyncio.ensure_future(
        session.ws_connect(connect_url(relay.url, "orders"), headers={"ServiceBusAuthorization": old})
    )
    assert "accept" in await listener.next_command()  # the new rule's token is good
    sender.cancel()

    status, renewed = await api.call(
        "POST", f"{HC}/orders/authorizationRules/sender/regenerateKeys", {"keyType": "PrimaryKey"}
    )
    assert status == 200
    assert renewed["primaryKey"] != keys["primaryKey"]
    assert renewed["secondaryKey"] == keys["secondaryKey"]
    refusal = await handshake_error(
        session.ws_connect(connect_url(relay.url, "orders"), headers={"ServiceBusAuthorization": old})
    )
    assert refusal.status == 401  # at once, although the same token text was verified (and cached) before
    await listener.ws.close()


async def test_regenerate_with_a_given_key(api: Api):
    await api.call("PUT", "authorizationRules/ops", {"properties": {"rights": ["Manage", "Listen", "Send"]}})
    key = base64.b64encode(bytes(range(32))).decode()
    status, keys = await api.call(
        "POST", "authorizationRules/ops/regenerateKeys", {"keyType": "SecondaryKey", "key": key}
    )
    assert status == 200
    assert keys["secondaryKey"] == key
    conn = RelayConnectionString.parse(keys["secondaryConnectionString"])
    assert conn.entity_path is None
    # The rotated key manages the namespace at once.
    ops = Api(api.session, api.relay, namespace_token(api.relay, "ops", key))
    assert (await ops.call("GET", HC))[0] == 200


async def test_listener_with_old_key_is_closed_with_1008_at_renewal(api: Api, session, relay: Relay):
    await api.call("PUT", f"{HC}/svc", {})
    await api.call("PUT", f"{HC}/svc/authorizationRules/listen", {"properties": {"rights": ["Listen"]}})
    _, keys = await api.call("POST", f"{HC}/svc/authorizationRules/listen/listKeys")
    old_key = keys["primaryKey"]
    listener = await RawListener.open(
        session, relay.url, "svc", token=token_for(relay.url, "svc", "listen", old_key)
    )
    await api.call("POST", f"{HC}/svc/authorizationRules/listen/regenerateKeys", {"keyType": "PrimaryKey"})
    renewal = token_for(relay.url, "svc", "listen", old_key, ttl=7200)
    await listener.ws.send_str(json.dumps({"renewToken": {"token": renewal}}))
    assert await closed_with(listener) == 1008


async def test_rules_list_at_both_scopes(api: Api):
    _, ns = await api.call("GET", "authorizationRules")
    assert {r["name"] for r in ns["value"]} == {"RootManageSharedAccessKey", LISTEN_KEY_NAME}
    _, entity = await api.call("GET", f"{HC}/echo/authorizationRules")
    assert [r["name"] for r in entity["value"]] == [SEND_KEY_NAME]
    status, _ = await api.call("DELETE", "authorizationRules/never-existed")
    assert status == 204


async def test_rule_on_entity_created_by_a_listener_needs_put_first(relay_factory, session):
    relay = await relay_factory(server=ServerConfig(host="127.0.0.1", port=0, create_on_listen=True))
    api = Api(session, relay)
    listener = await RawListener.open(session, relay.url, "adhoc")
    status, body = await api.call(
        "PUT", f"{HC}/adhoc/authorizationRules/r", {"properties": {"rights": ["Send"]}}
    )
    assert status == 409
    assert "PUT first" in body["error"]["message"]
    await listener.ws.close()


# --- who may manage ------------------------------------------------------------------------------------


async def test_manage_needs_a_manage_token(api: Api, relay: Relay):
    listen_only = namespace_token(relay, LISTEN_KEY_NAME, LISTEN_KEY)
    status, body = await api.call("PUT", f"{HC}/x", {}, token=listen_only)
    assert status == 403
    assert body["error"]["code"] == "Forbidden"
    send_only = token_for(relay.url, "echo", SEND_KEY_NAME, SEND_KEY)
    assert (await api.call("GET", f"{HC}/echo", token=send_only))[0] == 403
    status, body = await api.call("GET", HC, token="")
    assert status == 401
    assert body["error"]["code"] == "Unauthorized"
    assert (await api.call("GET", f"{HC}/x"))[0] == 404  # nothing was created


async def test_entity_scoped_manage_token_covers_only_that_entity(api: Api, relay: Relay):
    await api.call("PUT", f"{HC}/mine", {})
    await api.call(
        "PUT", f"{HC}/mine/authorizationRules/owner", {"properties": {"rights": ["Manage", "Listen", "Send"]}}
    )
    _, keys = await api.call("POST", f"{HC}/mine/authorizationRules/owner/listKeys")
    owner = namespace_token(relay, "owner", keys["primaryKey"], path="mine")
    assert (await api.call("GET", f"{HC}/mine", token=owner))[0] == 200
    assert (await api.call("GET", "authorizationRules", token=owner))[0] == 401


# --- bad input changes nothing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "raw", "text"),
    [
        ("PUT", f"{HC}/bad", None, b"{not json", "not valid JSON"),
        ("PUT", f"{HC}/bad", None, b"[1]", "JSON object"),
        ("PUT", f"{HC}/bad", {"properties": {"colour": "red"}}, None, "colour"),
        ("PUT", f"{HC}/bad", {"extra": 1}, None, "extra"),
        ("PUT", f"{HC}/bad", {"properties": {"status": "Sleeping"}}, None, "status"),
        ("PUT", f"{HC}/bad", {"properties": {"requiresClientAuthorization": "yes"}}, None, "true or false"),
        ("PUT", f"{HC}/bad$name", {}, None, "not a valid hybrid connection path"),
        ("PUT", "authorizationRules/r", {"properties": {"rights": ["Read"]}}, None, "'rights'"),
        ("PUT", "authorizationRules/r", {"properties": {"rights": []}}, None, "'rights'"),
        ("PUT", "authorizationRules/bad%20name", {"properties": {"rights": ["Send"]}}, None, "Rule names"),
    ],
)
async def test_bad_bodies_are_400_and_change_nothing(api: Api, method, path, body, raw, text):
    _, before_hcs = await api.call("GET", HC)
    _, before_rules = await api.call("GET", "authorizationRules")
    status, answer = await api.call(method, path, body, raw=raw)
    assert status == 400
    assert answer["error"]["code"] == "BadRequest"
    assert text in answer["error"]["message"]
    assert (await api.call("GET", HC))[1] == before_hcs
    assert (await api.call("GET", "authorizationRules"))[1] == before_rules


@pytest.mark.parametrize(
    "body",
    [
        {"keyType": "TertiaryKey"},
        {"keyType": "PrimaryKey", "key": "c2hvcnQ="},
        {"keyType": "PrimaryKey", "key": "!!"},
    ],
)
async def test_bad_regenerate_is_400_and_keeps_the_keys(api: Api, body):
    await api.call("PUT", "authorizationRules/r", {"properties": {"rights": ["Send"]}})
    _, before = await api.call("POST", "authorizationRules/r/listKeys")
    status, answer = await api.call("POST", "authorizationRules/r/regenerateKeys", body)
    assert status == 400
    assert answer["error"]["code"] == "BadRequest"
    assert (await api.call("POST", "authorizationRules/r/listKeys"))[1] == before


async def test_unknown_paths_and_methods(api: Api):
    assert (await api.call("GET", "queues"))[0] == 404
    assert (await api.call("POST", HC))[0] == 405
    assert (await api.call("GET", "authorizationRules/x/listKeys"))[0] == 405


# --- runtime information (the .NET SDK's GetRuntimeInformationAsync) --------------------------------------


async def test_runtime_information_atom_entry(api: Api, session, relay: Relay):
    await api.call("PUT", f"{HC}/orders", {"properties": {"userMetadata": "a<b"}})
    listener = await RawListener.open(session, relay.url, "orders")
    token = create_token("sb://127.0.0.1/orders", "RootManageSharedAccessKey", KEY, int(time.time()) + 600)
    headers = {"Authorization": token, "X-PROCESS-AT": "ServiceBus"}
    async with session.get(f"{relay.http_url}/orders?api-version=2016-07", headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/atom+xml;type=entry")
        root = ET.fromstring(await resp.text())
    ns = {
        "a": "http://www.w3.org/2005/Atom",
        "c": "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect",
    }
    description = root.find("a:content/c:HybridConnectionDescription", ns)
    assert description is not None
    # The .NET DataContractSerializer reads members in this order only.
    assert [child.tag.split("}")[1] for child in description] == [
        "CreatedAt",
        "UpdatedAt",
        "RequiresClientAuthorization",
        "UserMetadata",
        "ListenerCount",
    ]
    assert description.find("c:ListenerCount", ns).text == "1"
    assert description.find("c:UserMetadata", ns).text == "a<b"
    unknown_token = create_token(
        "sb://127.0.0.1/unknown", "RootManageSharedAccessKey", KEY, int(time.time()) + 600
    )
    unknown_headers = {"Authorization": unknown_token, "X-PROCESS-AT": "ServiceBus"}
    async with session.get(f"{relay.http_url}/unknown?api-version=2016-07", headers=unknown_headers) as resp:
        assert resp.status == 200
        assert "type=feed" in resp.headers["Content-Type"]
    async with session.get(
        f"{relay.http_url}/orders?api-version=2016-07", headers={"X-PROCESS-AT": "ServiceBus"}
    ) as resp:
        assert resp.status == 401
        assert "<Detail>" in await resp.text()
    await listener.ws.close()


# --- persistence and reload --------------------------------------------------------------------------


async def test_entities_and_rules_survive_a_restart(relay_factory, session, tmp_path):
    config = make_config(server=ServerConfig(host="127.0.0.1", port=0, data_dir=tmp_path))
    async with serve(config) as first:
        api = Api(session, first)
        await api.call("PUT", f"{HC}/kept", {"properties": {"userMetadata": "m"}})
        await api.call("PUT", f"{HC}/kept/authorizationRules/sender", {"properties": {"rights": ["Send"]}})
        _, keys = await api.call("POST", f"{HC}/kept/authorizationRules/sender/listKeys")
    assert (tmp_path / "hyco.db").is_file()
    async with serve(config) as second:
        api = Api(session, second)
        status, kept = await api.call("GET", f"{HC}/kept")
        assert (status, kept["properties"]["userMetadata"]) == (200, "m")
        _, again = await api.call("POST", f"{HC}/kept/authorizationRules/sender/listKeys")
        assert again["primaryKey"] == keys["primaryKey"]
        listener = await RawListener.open(session, second.url, "kept")
        await wait_for_health(session, second.http_url, "listeners", 1)
        await listener.ws.close()


async def test_reload_takes_the_file_and_keeps_connections(api: Api, session, relay: Relay):
    listener = await RawListener.open(session, relay.url, "echo")
    doomed = await RawListener.open(session, relay.url, "open")
    await api.call("PUT", f"{HC}/stored", {})
    config = dataclasses.replace(
        relay.config,
        hybrid_connections=(relay.config.hybrid_connections[0], HybridConnectionConfig("added")),
    )
    relay.reload(config)
    assert await closed_with(doomed) == 1001  # "open" left the file
    _, listed = await api.call("GET", HC)
    assert {item["name"] for item in listed["value"]} == {"echo", "added", "stored"}
    # The listener on a kept entity is still connected.
    await wait_for_health(session, relay.http_url, "listeners", 1)
    assert not listener.ws.closed
    await listener.ws.close()
