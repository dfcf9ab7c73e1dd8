"""``[cluster]`` parsing, the persisted node id, and the lease directory's bookkeeping (no NATS needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyco.exceptions import InvalidConfig
from hyco.server.config import ClusterConfig, parse_config
from hyco.server.routing.cluster import node_identity
from hyco.server.routing.directory import Directory, lease_key, lease_value, node_key, node_value


def test_cluster_table_parses_with_defaults_and_lists() -> None:
    one = parse_config({"cluster": {"nats": "nats://10.0.0.5:4222"}}).cluster
    assert one == ClusterConfig(nats=("nats://10.0.0.5:4222",))
    many = parse_config(
        {"cluster": {"nats": ["nats://a:4222", "tls://b:4222"], "node_id": "n-1", "lease_seconds": 6}}
    ).cluster
    assert many is not None and many.nats == ("nats://a:4222", "tls://b:4222") and many.lease_seconds == 6.0
    assert parse_config({}).cluster is None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"nats": "http://a:4222"}, "is not a NATS URL"),
        ({"nats": []}, "needs at least one NATS server URL"),
        ({"nats": "nats://a:4222", "node_id": "bad id"}, "cluster.node_id must be 1 to 64"),
        ({"nats": "nats://a:4222", "lease_seconds": 0}, "cluster.lease_seconds must be positive"),
        ({"nats": "nats://a:4222", "leases": 3}, "unknown key(s) leases"),
    ],
)
def test_cluster_table_errors_name_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidConfig) as error:
        parse_config({"cluster": table})
    assert message in str(error.value)


def test_node_id_is_generated_once_and_kept(tmp_path: Path) -> None:
    config = ClusterConfig(nats=("nats://a:4222",))
    first = node_identity(config, tmp_path)
    assert node_identity(config, tmp_path) == first
    assert (tmp_path / "node-id").read_text().strip() == first
    assert node_identity(ClusterConfig(nats=("nats://a:4222",), node_id="fixed"), tmp_path) == "fixed"


def test_directory_ages_out_leases_and_frees_slots() -> None:
    now = [1000.0]
    directory = Directory(lease_seconds=10, now=lambda: now[0])
    directory.apply(lease_key("a/B", 0), lease_value("n1", "L1"), written_at=1000.0)
    directory.apply(lease_key("a/b", 2), lease_value("n2", "L2"), written_at=1005.0)
    directory.apply(node_key("n1"), node_value("ws://n1:9350"), written_at=1000.0)
    assert {lease.listener_id for lease in directory.listeners("A/b")} == {"l1", "l2"}
    assert directory.free_slots("a/b", 4) == [1, 3]
    assert directory.nodes() == {"n1": "ws://n1:9350"}
    now[0] = 1010.5  # n1's lease and presence were not refreshed within lease_seconds
    assert [lease.listener_id for lease in directory.listeners("a/b")] == ["l2"]
    assert directory.free_slots("a/b", 4) == [0, 1, 3]
    assert directory.nodes() == {}
    directory.apply(lease_key("a/b", 2), None, written_at=1010.5)  # deleted
    assert directory.listeners("a/b") == []


def test_directory_forgets_a_gone_node() -> None:
    directory = Directory(lease_seconds=10, now=lambda: 0.0)
    directory.apply(lease_key("p", 0), lease_value("n1", "a"), written_at=0.0)
    directory.apply(lease_key("p", 1), lease_value("n2", "b"), written_at=0.0)
    assert directory.forget_node("n1") == [lease_key("p", 0)]
    assert [lease.node for lease in directory.listeners("p")] == ["n2"]
