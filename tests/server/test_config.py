"""Relay configuration: docs/configuration.md's example parses as documented, and every mistake is refused."""

from __future__ import annotations

import base64
import copy
import re
import stat
import tomllib
from pathlib import Path
from typing import Any

import pytest

from hyco.exceptions import InvalidConfig
from hyco.protocol.sas import MAX_KEY_LENGTH, MAX_KEY_NAME_LENGTH, Right
from hyco.server.config import (
    AuthorizationRule,
    HybridConnectionConfig,
    Limits,
    RelayConfig,
    Secret,
    TlsConfig,
    check_public_url,
    load_config,
    load_or_create_default,
    parse_config,
    parse_host_port,
    validate_entity_path,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
DOC_KEYS = ("cHJpbWFyeS1rZXktZnJvbS10aGUtZG9j", "c2Vjb25kYXJ5LWtleS1mcm9tLWRvYw==", "c2VuZC1vbmx5LWtleQ==")


def doc_toml() -> str:
    """The TOML example of docs/configuration.md, with its "..." keys replaced by DOC_KEYS in order."""
    blocks = re.findall(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert len(blocks) == 1, "docs/configuration.md should have exactly one ```toml block"
    text = blocks[0]
    assert text.count('"..."') == len(DOC_KEYS)
    for key in DOC_KEYS:
        text = text.replace('"..."', f'"{key}"', 1)
    return text


def base_doc() -> dict[str, Any]:
    """A valid document with every table present, for the tests to break one thing at a time."""
    return {
        "server": {
            "listen": "127.0.0.1:0",
            "public_url": "ws://relay.example:9350",
            "create_on_listen": True,
            "tls": {"self_signed": ["localhost"]},
        },
        "limits": {"max_listeners": 3},
        "authorization_rules": [{"name": "root", "primary_key": "k1", "rights": ["Manage"]}],
        "hybrid_connections": [
            {
                "path": "echo",
                "authorization_rules": [{"name": "send", "primary_key": "k2", "rights": ["Send"]}],
            }
        ],
    }


def invalid(data: dict[str, Any], *expected: str) -> str:
    """Parse ``data``, expect InvalidConfig whose message contains every ``expected`` text; return it."""
    with pytest.raises(InvalidConfig) as info:
        parse_config(data)
    message = str(info.value)
    for text in expected:
        assert text in message, f"{text!r} not in {message!r}"
    return message


def test_base_doc_is_valid() -> None:
    config = parse_config(base_doc())
    assert config.server.port == 0
    assert config.hybrid_connections[0].authorization_rules[0].name == "send"


# --- the documented example ----------------------------------------------------------------------


def test_documented_example_parses_into_documented_values(tmp_path: Path) -> None:
    file = tmp_path / "relay.toml"
    file.write_text(doc_toml(), encoding="utf-8")
    config = load_config(file)

    server = config.server
    assert (server.host, server.port) == ("127.0.0.1", 9350)
    assert server.public_url == "ws://127.0.0.1:9350"
    assert server.create_on_listen is False
    assert server.data_dir == tmp_path
    assert server.tls == TlsConfig(certfile=tmp_path / "cert.pem", keyfile=tmp_path / "key.pem")

    # "defaults shown": the example's limits are the built-in defaults.
    assert config.limits == Limits()
    assert config.limits == Limits(
        max_listeners=25,
        max_hybrid_connections=10000,
        accept_timeout=30.0,
        token_grace=300.0,
        max_message_size=16 * 1024 * 1024,
        max_control_message_size=1024 * 1024,
        ping_interval=60.0,
        shutdown_timeout=5.0,
    )

    (rule,) = config.authorization_rules
    assert rule.name == "RootManageSharedAccessKey"
    assert rule.primary_key == Secret(DOC_KEYS[0])
    assert rule.secondary_key == Secret(DOC_KEYS[1])
    assert rule.keys == DOC_KEYS[:2]
    assert rule.rights == {Right.MANAGE, Right.LISTEN, Right.SEND}

    (hc,) = config.hybrid_connections
    assert hc.path == "echo"
    assert hc.requires_client_authorization is True
    assert hc.request_timeout == 60.0
    (entity_rule,) = hc.authorization_rules
    assert entity_rule == AuthorizationRule("send-only", Secret(DOC_KEYS[2]), frozenset({Right.SEND}))


def test_documented_example_lists_every_limit_and_tls_key() -> None:
    data = tomllib.loads(doc_toml())
    assert set(data["limits"]) == set(Limits.__dataclass_fields__)
    # self_signed is documented as a commented-out alternative to certfile/keyfile.
    assert set(data["server"]["tls"]) | {"self_signed"} == {"certfile", "keyfile", "self_signed"}
    assert "self_signed" in doc_toml()


def test_empty_document_gives_defaults() -> None:
    config = parse_config({})
    assert (config.server.host, config.server.port) == ("127.0.0.1", 9350)
    assert config.server.tls is None
    assert config.server.public_url is None
    assert config.server.create_on_listen is False
    assert config.authorization_rules == ()
    assert config.hybrid_connections == ()
    assert config.limits == Limits()


# --- unknown keys ------------------------------------------------------------------------------------


UNKNOWN_KEY_LEVELS = {
    "config": lambda d: d,
    "server": lambda d: d["server"],
    "server.tls": lambda d: d["server"]["tls"],
    "limits": lambda d: d["limits"],
    "authorization_rules[0]": lambda d: d["authorization_rules"][0],
    "hybrid_connections[0]": lambda d: d["hybrid_connections"][0],
    "hybrid_connections[0].authorization_rules[0]": lambda d: d["hybrid_connections"][0][
        "authorization_rules"
    ][0],
}


@pytest.mark.parametrize("level", list(UNKNOWN_KEY_LEVELS))
def test_unknown_key_at_every_level_is_named(level: str) -> None:
    data = base_doc()
    UNKNOWN_KEY_LEVELS[level](data)["bogus_key"] = 1
    invalid(data, "bogus_key", level)


def test_unknown_key_in_file_names_file_and_key(tmp_path: Path) -> None:
    file = tmp_path / "relay.toml"
    file.write_text('[server]\nlisten = "127.0.0.1:0"\nlisen = "x"\n', encoding="utf-8")
    with pytest.raises(InvalidConfig, match="lisen") as info:
        load_config(file)
    assert str(file) in str(info.value)


# --- wrong types -------------------------------------------------------------------------------------


def _set(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    data = base_doc()
    target: Any = data
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return data


WRONG_TYPES = [
    pytest.param(("server", "listen"), 9350, "listen", id="int-for-listen"),
    pytest.param(("server", "public_url"), 1, "public_url", id="int-for-public_url"),
    pytest.param(("server", "create_on_listen"), 1, "create_on_listen", id="int-for-bool"),
    pytest.param(("server", "create_on_listen"), "yes", "create_on_listen", id="str-for-bool"),
    pytest.param(("server", "data_dir"), 5, "data_dir", id="int-for-data_dir"),
    pytest.param(("server", "tls", "self_signed"), "localhost", "self_signed", id="str-for-list"),
    pytest.param(("limits", "max_listeners"), "25", "max_listeners", id="str-for-int"),
    pytest.param(("limits", "max_listeners"), True, "max_listeners", id="bool-for-int"),
    pytest.param(("limits", "max_listeners"), 2.5, "max_listeners", id="float-for-int"),
    pytest.param(("limits", "accept_timeout"), True, "accept_timeout", id="bool-for-float"),
    pytest.param(("limits", "accept_timeout"), "30", "accept_timeout", id="str-for-float"),
    pytest.param(("limits", "ping_interval"), False, "ping_interval", id="false-for-float"),
    pytest.param(("authorization_rules", 0, "primary_key"), 123, "primary_key", id="int-for-key"),
    pytest.param(("authorization_rules", 0, "name"), 1, "name", id="int-for-name"),
    pytest.param(("authorization_rules", 0, "rights"), "Manage", "rights", id="str-for-rights"),
    pytest.param(
        ("hybrid_connections", 0, "requires_client_authorization"),
        0,
        "requires_client_authorization",
        id="int-for-requires",
    ),
    pytest.param(
        ("hybrid_connections", 0, "request_timeout"), True, "request_timeout", id="bool-for-timeout"
    ),
    pytest.param(("hybrid_connections", 0, "request_timeout"), "60", "request_timeout", id="str-for-timeout"),
    pytest.param(("hybrid_connections", 0, "path"), 7, "path", id="int-for-path"),
    pytest.param(("server",), "x", "server", id="str-for-server-table"),
    pytest.param(("server", "tls"), "on", "server.tls", id="str-for-tls-table"),
    pytest.param(("limits",), 5, "limits", id="int-for-limits-table"),
    pytest.param(("authorization_rules",), {"name": "x"}, "authorization_rules", id="table-for-rules"),
    pytest.param(("authorization_rules",), ["x"], "authorization_rules[0]", id="str-for-rule"),
    pytest.param(("hybrid_connections",), {"path": "x"}, "hybrid_connections", id="table-for-hcs"),
    pytest.param(("hybrid_connections",), ["x"], "hybrid_connections[0]", id="str-for-hc"),
]


@pytest.mark.parametrize(("path", "value", "named"), WRONG_TYPES)
def test_wrong_type_is_refused_naming_the_key(path: tuple[Any, ...], value: Any, named: str) -> None:
    invalid(_set(path, value), named)


def test_int_is_accepted_for_float_keys() -> None:
    config = parse_config(
        {
            "limits": {"accept_timeout": 5, "ping_interval": 0},
            "hybrid_connections": [{"path": "a", "request_timeout": 2}],
        }
    )
    assert config.limits.accept_timeout == 5
    assert config.limits.ping_interval == 0
    assert config.hybrid_connections[0].request_timeout == 2.0


# --- limits ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(Limits.__dataclass_fields__))
def test_negative_limit_is_refused(key: str) -> None:
    invalid({"limits": {key: -1}}, f"limits.{key}")


@pytest.mark.parametrize("key", sorted(set(Limits.__dataclass_fields__) - {"ping_interval"}))
def test_zero_limit_is_refused(key: str) -> None:
    invalid({"limits": {key: 0}}, f"limits.{key}")


def test_zero_ping_interval_disables_pings() -> None:
    assert parse_config({"limits": {"ping_interval": 0}}).limits.ping_interval == 0


def test_limits_are_read() -> None:
    limits = parse_config(
        {"limits": {"max_listeners": 2, "accept_timeout": 1.5, "max_message_size": 100}}
    ).limits
    assert limits == Limits(max_listeners=2, accept_timeout=1.5, max_message_size=100)


# --- listen ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "nohost",
        "h:99999",
        "h:-1",
        "h:",
        "h:port",
        "127.0.0.1:65536",
        pytest.param("", id="empty"),
    ],
)
def test_bad_listen_is_refused(text: str) -> None:
    invalid({"server": {"listen": text}}, "server.listen", repr(text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":9350", ("0.0.0.0", 9350)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),
        ("localhost:0", ("localhost", 0)),
        ("127.0.0.1:65535", ("127.0.0.1", 65535)),
        ("[::1]:9350", ("::1", 9350)),
    ],
)
def test_listen_is_split(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected
    server = parse_config({"server": {"listen": text}}).server
    assert (server.host, server.port) == expected


def test_parse_host_port_names_where() -> None:
    with pytest.raises(InvalidConfig, match="--listen"):
        parse_host_port("nohost", "--listen")


# --- public_url --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://relay.example",
        "relay.example:9350",
        "ws://",
        "ws://relay.example/path",
        "ws://h/?x=1",
        "ws://h?x=1",
    ],
)
def test_bad_public_url_is_refused(url: str) -> None:
    invalid({"server": {"public_url": url}}, "public_url")
    with pytest.raises(InvalidConfig):
        check_public_url(url)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ws://relay.example:9350", "ws://relay.example:9350"),
        ("wss://relay.example/", "wss://relay.example"),
        ("http://10.0.0.1:80", "http://10.0.0.1:80"),
        ("https://relay.example", "https://relay.example"),
    ],
)
def test_public_url_is_accepted_without_trailing_slash(url: str, expected: str) -> None:
    assert parse_config({"server": {"public_url": url}}).server.public_url == expected


# --- tls ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tls",
    [{}, {"certfile": "c.pem"}, {"keyfile": "k.pem"}, {"self_signed": []}],
    ids=["empty", "certfile-only", "keyfile-only", "empty-self-signed"],
)
def test_tls_without_files_or_self_signed_is_refused(tls: dict[str, Any]) -> None:
    invalid({"server": {"tls": tls}}, "server.tls", "certfile")


def test_tls_with_both_files_and_self_signed_is_refused() -> None:
    tls = {"certfile": "c.pem", "keyfile": "k.pem", "self_signed": ["localhost"]}
    invalid({"server": {"tls": tls}}, "server.tls", "not both")


def test_tls_self_signed() -> None:
    tls = parse_config({"server": {"tls": {"self_signed": ["relay.lan", "10.0.0.1"]}}}).server.tls
    assert tls == TlsConfig(self_signed=("relay.lan", "10.0.0.1"))


def test_relative_tls_files_resolve_against_the_file_directory(tmp_path: Path) -> None:
    conf_dir = tmp_path / "etc" / "hyco"
    conf_dir.mkdir(parents=True)
    absolute_key = tmp_path / "elsewhere" / "key.pem"
    file = conf_dir / "relay.toml"
    file.write_text(
        '[server]\ndata_dir = "state"\n'
        f'[server.tls]\ncertfile = "certs/cert.pem"\nkeyfile = "{absolute_key}"\n',
        encoding="utf-8",
    )
    config = load_config(file)
    assert config.server.tls is not None
    assert config.server.tls.certfile == conf_dir / "certs" / "cert.pem"
    assert config.server.tls.keyfile == absolute_key
    assert config.server.data_dir == conf_dir / "state"


def test_data_dir_defaults_to_the_file_directory(tmp_path: Path) -> None:
    file = tmp_path / "relay.toml"
    file.write_text("", encoding="utf-8")
    assert load_config(file).server.data_dir == tmp_path


# --- authorization rules -----------------------------------------------------------------------------


def _rule(**fields: Any) -> dict[str, Any]:
    return {"name": "r", "primary_key": "k", "rights": ["Listen"], **fields}


def _without(table: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in table.items() if k != key}


@pytest.mark.parametrize("where", ["namespace", "entity"])
class TestRules:
    @staticmethod
    def doc(where: str, *rules: dict[str, Any]) -> dict[str, Any]:
        if where == "namespace":
            return {"authorization_rules": list(rules)}
        return {"hybrid_connections": [{"path": "echo", "authorization_rules": list(rules)}]}

    def test_missing_primary_key(self, where: str) -> None:
        invalid(self.doc(where, _without(_rule(), "primary_key")), "primary_key")

    def test_missing_rights(self, where: str) -> None:
        invalid(self.doc(where, _without(_rule(), "rights")), "rights")

    def test_no_rights(self, where: str) -> None:
        invalid(self.doc(where, _rule(rights=[])), "rights")

    def test_unknown_right(self, where: str) -> None:
        invalid(self.doc(where, _rule(rights=["Listen", "Write"])), "Write", "rights")

    def test_missing_name(self, where: str) -> None:
        invalid(self.doc(where, _without(_rule(), "name")), "name")

    def test_empty_name(self, where: str) -> None:
        invalid(self.doc(where, _rule(name="")), "name")

    def test_too_long_name(self, where: str) -> None:
        invalid(self.doc(where, _rule(name="n" * (MAX_KEY_NAME_LENGTH + 1))), "name")

    @pytest.mark.parametrize("key", ["primary_key", "secondary_key"])
    def test_bad_key_length(self, where: str, key: str) -> None:
        invalid(self.doc(where, _rule(**{key: ""})), key)
        invalid(self.doc(where, _rule(**{key: "k" * (MAX_KEY_LENGTH + 1)})), key)

    def test_duplicate_names_case_insensitive(self, where: str) -> None:
        invalid(self.doc(where, _rule(name="Sender"), _rule(name="sENDER")), "share a name")

    def test_valid_rules(self, where: str) -> None:
        config = parse_config(
            self.doc(
                where,
                _rule(name="a", rights=["listen", "SEND"]),
                _rule(name="b", primary_key="p", secondary_key="s", rights=["Manage"]),
            )
        )
        rules = (
            config.authorization_rules
            if where == "namespace"
            else config.hybrid_connections[0].authorization_rules
        )
        a, b = rules
        assert a.rights == {Right.LISTEN, Right.SEND}
        assert a.secondary_key is None
        assert a.keys == ("k",)
        assert b.keys == ("p", "s")
        assert b.grants(Right.LISTEN) and b.grants(Right.SEND) and b.grants(Right.MANAGE)
        assert not a.grants(Right.MANAGE)


# --- hybrid connections ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("echo", "echo"),
        ("a/b/c", "a/b/c"),
        ("Team.1/svc-2/v_3", "Team.1/svc-2/v_3"),
        ("/lead/trail/", "lead/trail"),
        ("x" * 260, "x" * 260),
    ],
)
def test_valid_hybrid_connection_paths(path: str, expected: str) -> None:
    assert validate_entity_path(path) == expected
    (hc,) = parse_config({"hybrid_connections": [{"path": path}]}).hybrid_connections
    assert hc == HybridConnectionConfig(expected)


@pytest.mark.parametrize(
    "path",
    ["", "/", "a//b", "$x", "a/$hc", "has space", "a/b c", "x" * 261, "caf\u00e9", "a?b", "a#b", "a\\b"],
    ids=lambda p: p if len(p) < 20 else f"{len(p)}-chars",
)
def test_invalid_hybrid_connection_paths(path: str) -> None:
    with pytest.raises(InvalidConfig):
        validate_entity_path(path)
    invalid({"hybrid_connections": [{"path": path}]}, "hybrid_connections[0].path")


def test_hybrid_connection_without_path() -> None:
    invalid({"hybrid_connections": [{"requires_client_authorization": False}]}, "needs a path")


@pytest.mark.parametrize("paths", [("echo", "echo"), ("Echo", "eCHO"), ("a/b", "/a/b/")])
def test_duplicate_hybrid_connection_paths(paths: tuple[str, str]) -> None:
    invalid({"hybrid_connections": [{"path": p} for p in paths]}, "share a path")


@pytest.mark.parametrize("timeout", [0, -1, -0.5])
def test_non_positive_request_timeout(timeout: float) -> None:
    invalid({"hybrid_connections": [{"path": "a", "request_timeout": timeout}]}, "request_timeout")


def test_open_hybrid_connection() -> None:
    (hc,) = parse_config(
        {
            "hybrid_connections": [
                {"path": "open", "requires_client_authorization": False, "request_timeout": 1.5}
            ]
        }
    ).hybrid_connections
    assert hc == HybridConnectionConfig("open", requires_client_authorization=False, request_timeout=1.5)


# --- load_config -------------------------------------------------------------------------------------


def test_load_config_missing_file(tmp_path: Path) -> None:
    file = tmp_path / "missing.toml"
    with pytest.raises(InvalidConfig) as info:
        load_config(file)
    assert str(file) in str(info.value)
    assert "does not exist" in str(info.value)


def test_load_config_invalid_toml(tmp_path: Path) -> None:
    file = tmp_path / "broken.toml"
    file.write_text("[server\nlisten = ", encoding="utf-8")
    with pytest.raises(InvalidConfig) as info:
        load_config(file)
    assert str(file) in str(info.value)
    assert "TOML" in str(info.value)


def test_load_config_not_utf8(tmp_path: Path) -> None:
    file = tmp_path / "latin1.toml"
    file.write_bytes(b'[server]\npublic_url = "ws://caf\xe9"\n')
    with pytest.raises(InvalidConfig) as info:
        load_config(file)
    assert str(file) in str(info.value)


def test_load_config_validation_error_names_file(tmp_path: Path) -> None:
    file = tmp_path / "relay.toml"
    file.write_text("[limits]\nmax_listeners = 0\n", encoding="utf-8")
    with pytest.raises(InvalidConfig) as info:
        load_config(file)
    assert str(file) in str(info.value)
    assert "limits.max_listeners" in str(info.value)


# --- embedded default --------------------------------------------------------------------------------


def test_load_or_create_default_creates_then_reuses(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / "hyco"
    config, path, created = load_or_create_default(data_dir)
    assert created is True
    assert path == data_dir / "relay.toml"
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    (rule,) = config.authorization_rules
    key = rule.primary_key.value
    assert len(key) == 44
    assert len(base64.b64decode(key, validate=True)) == 32
    assert rule.name == "RootManageSharedAccessKey"
    assert rule.rights == {Right.MANAGE, Right.LISTEN, Right.SEND}
    assert key in path.read_text(encoding="utf-8")
    assert config.server.create_on_listen is True
    assert (config.server.host, config.server.port) == ("127.0.0.1", 9350)
    assert config.server.data_dir == data_dir

    again, again_path, created_again = load_or_create_default(data_dir)
    assert created_again is False
    assert again_path == path
    assert again.authorization_rules[0].primary_key.value == key
    assert again == config


def test_load_or_create_default_keys_differ_between_data_dirs(tmp_path: Path) -> None:
    one, _, _ = load_or_create_default(tmp_path / "one")
    two, _, _ = load_or_create_default(tmp_path / "two")
    assert one.authorization_rules[0].primary_key != two.authorization_rules[0].primary_key


def test_load_or_create_default_keeps_an_edited_file(tmp_path: Path) -> None:
    (tmp_path / "relay.toml").write_text('[server]\nlisten = "127.0.0.1:1234"\n', encoding="utf-8")
    config, _, created = load_or_create_default(tmp_path)
    assert created is False
    assert config.server.port == 1234
    assert config.authorization_rules == ()


def test_load_or_create_default_with_invalid_existing_file(tmp_path: Path) -> None:
    file = tmp_path / "relay.toml"
    file.write_text("bogus = 1\n", encoding="utf-8")
    with pytest.raises(InvalidConfig, match="bogus"):
        load_or_create_default(tmp_path)
    assert file.read_text(encoding="utf-8") == "bogus = 1\n"


# --- secrets -----------------------------------------------------------------------------------------


def test_secret_is_masked() -> None:
    secret = Secret("s3cr3t-key-text")
    assert "s3cr3t" not in repr(secret)
    assert "s3cr3t" not in str(secret)
    assert "s3cr3t" not in f"{secret!r} {secret}"
    assert secret.value == "s3cr3t-key-text"


def test_config_repr_does_not_show_keys(tmp_path: Path) -> None:
    file = tmp_path / "relay.toml"
    file.write_text(doc_toml(), encoding="utf-8")
    config = load_config(file)
    created, _, _ = load_or_create_default(tmp_path / "default")
    generated = created.authorization_rules[0].primary_key.value
    for text in (repr(config), str(config), repr(created), str(created)):
        for key in (*DOC_KEYS, generated):
            assert key not in text
    assert "Secret('***')" in repr(config)


def test_config_objects_are_frozen() -> None:
    config = parse_config(copy.deepcopy(base_doc()))
    assert isinstance(config, RelayConfig)
    with pytest.raises(AttributeError):
        config.server.port = 1  # type: ignore[misc]
