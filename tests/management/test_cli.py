"""The management commands as users run them (the real console script) against a relay on port 0: the issue's
"done means" walk, az's flag spellings, -o json, and errors that name no key."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from hyco import AuthorizationFailed, HybridConnectionClient, HybridConnectionListener, TokenProvider
from hyco.server import Relay
from tests.conftest import KEY, KEY_NAME, TIMEOUT

HYCO = Path(sys.executable).parent / "hyco"


def root_connection_string(relay: Relay) -> str:
    return f"Endpoint={relay.url}/;SharedAccessKeyName={KEY_NAME};SharedAccessKey={KEY}"


async def hyco(relay: Relay, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``hyco ARGS`` with the root Manage connection string in the environment."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HYCO_")}
    environment["HYCO_CONNECTION_STRING"] = root_connection_string(relay)
    environment["COLUMNS"] = "300"
    environment.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        str(HYCO), *args, env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def ok(relay: Relay, *args: str) -> str:
    code, out, err = await hyco(relay, *args)
    assert code == 0, err
    return out


async def test_create_rule_hand_out_rotate(relay: Relay):
    """The issue's walk: create, a send-only rule, its connection string works, rotate, the old one fails."""
    assert "orders" in await ok(relay, "hyco", "create", "-n", "orders", "--user-metadata", "team=a")
    created = json.loads(
        await ok(
            relay,
            "hyco", "authorization-rule", "create", "--hybrid-connection-name", "orders", "-n", "sender",
            "--rights", "Send", "-o", "json",
        )
    )  # fmt: skip
    assert created["properties"]["rights"] == ["Send"]
    handed_out = (await ok(relay, "connection-string", "orders", "--rule", "sender")).strip()
    assert "EntityPath=orders" in handed_out
    assert "SharedAccessKeyName=sender" in handed_out

    root = TokenProvider.from_shared_access_key(KEY_NAME, KEY)
    async with HybridConnectionListener(f"{relay.url}/orders", root) as listener:
        sender = HybridConnectionClient(handed_out)
        stream = await sender.connect()
        accepted = await asyncio.wait_for(listener.accept(), TIMEOUT)
        assert accepted is not None
        status = json.loads(await ok(relay, "status", "--once", "-o", "json"))
        (row,) = [r for r in status["hybridConnections"] if r["name"] == "orders"]
        assert (row["listeners"], row["activeConnections"]) == (1, 1)
        await asyncio.gather(stream.close(), accepted.close())

        rule = ("--hybrid-connection-name", "orders", "-n", "sender")
        renew = ("hyco", "authorization-rule", "keys", "renew", *rule, "--key", "PrimaryKey", "-o", "json")
        renewed = json.loads(await ok(relay, *renew))
        assert renewed["primaryKey"] not in handed_out
        with pytest.raises(AuthorizationFailed):
            await HybridConnectionClient(handed_out).connect()
        again = await HybridConnectionClient(renewed["primaryConnectionString"]).connect()
        accepted_again = await asyncio.wait_for(listener.accept(), TIMEOUT)
        assert accepted_again is not None
        await asyncio.gather(again.close(), accepted_again.close())


async def test_az_spelling_of_rights_and_table_output(relay: Relay):
    out = await ok(
        relay, "namespace", "authorization-rule", "create", "-n", "ops", "--rights", "Listen", "Send"
    )
    assert "Listen, Send" in out
    listed = await ok(relay, "namespace", "authorization-rule", "list")
    assert "RootManageSharedAccessKey" in listed
    assert "ops" in listed
    keys = await ok(relay, "namespace", "authorization-rule", "keys", "list", "-n", "ops")
    assert "SharedAccessKeyName=ops" in keys
    assert "EntityPath" not in keys


async def test_update_show_list_delete(relay: Relay):
    await ok(relay, "hyco", "create", "-n", "svc")
    updated = json.loads(
        await ok(relay, "hyco", "update", "-n", "svc", "--status", "SendDisabled", "-o", "json")
    )
    assert updated["properties"]["status"] == "SendDisabled"
    assert updated["properties"]["inspect"] is False
    inspected = json.loads(await ok(relay, "hyco", "update", "-n", "svc", "--inspect", "true", "-o", "json"))
    assert (inspected["properties"]["inspect"], inspected["properties"]["status"]) == (True, "SendDisabled")
    table = await ok(relay, "hyco", "show", "-n", "svc")
    assert table.splitlines()[0].split()[-1] == "Inspect"
    assert table.splitlines()[1].split()[-1] == "True"
    listed = json.loads(await ok(relay, "hyco", "list", "-o", "json"))
    assert "svc" in {h["name"] for h in listed["value"]}
    await ok(relay, "hyco", "delete", "-n", "svc")
    code, _, err = await hyco(relay, "hyco", "show", "-n", "svc")
    assert code == 1
    assert "NotFound" in err


async def test_errors_name_no_key(relay: Relay):
    code, _, err = await hyco(relay, "hyco", "update", "-n", "echo", "--user-metadata", "x")
    assert code == 1
    assert "configuration file" in err
    code, _, err = await hyco(
        relay,
        "hyco",
        "list",
        env={"HYCO_CONNECTION_STRING": root_connection_string(relay).replace(KEY, "d3Jvbmc=")},
    )
    assert code == 1
    assert "Unauthorized" in err
    assert KEY not in err
    code, _, err = await hyco(
        relay,
        "hyco",
        "authorization-rule",
        "create",
        "--hybrid-connection-name",
        "echo",
        "-n",
        "r",
        "--rights",
        "Read",
    )
    assert code == 2
    assert "'Read' is not one of" in err


async def test_no_relay_given(relay: Relay):
    code, _, err = await hyco(relay, "hyco", "list", env={"HYCO_CONNECTION_STRING": ""})
    assert code == 2
    assert "which relay?" in err
