"""hyco.protocol.connection_string: the forms of protocol.md 5.5 (.NET RelayConnectionStringBuilder)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyco.exceptions import InvalidConnectionString
from hyco.protocol.connection_string import RelayConnectionString

KEY = "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="  # base64 keys end in '='
SAS = "SharedAccessSignature sr=http%3A%2F%2Frelay.example%2Fecho%2F&sig=c2ln%3D&se=1700000000&skn=rule"


def test_key_form() -> None:
    cs = RelayConnectionString.parse(
        f"Endpoint=sb://relay.example/;EntityPath=echo;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={KEY}"
    )
    assert cs == RelayConnectionString(
        endpoint="sb://relay.example/",
        entity_path="echo",
        shared_access_key_name="RootManageSharedAccessKey",
        shared_access_key=KEY,
    )
    assert cs.shared_access_signature is None
    assert cs.operation_timeout == 60.0
    assert cs.authentication is None


def test_sas_form_value_keeps_every_equals_sign() -> None:
    cs = RelayConnectionString.parse(
        f"Endpoint=sb://relay.example/;EntityPath=echo;SharedAccessSignature={SAS}"
    )
    assert cs.shared_access_signature == SAS
    assert cs.shared_access_key_name is None
    assert cs.shared_access_key is None


@pytest.mark.parametrize("value", ["Managed Identity", "ManagedIdentity"])
def test_managed_identity_form(value: str) -> None:
    cs = RelayConnectionString.parse(f"Endpoint=sb://relay.example/;EntityPath=echo;Authentication={value}")
    assert cs.authentication == value
    assert cs.shared_access_key is None


def test_keys_are_case_insensitive_and_whitespace_trimmed() -> None:
    cs = RelayConnectionString.parse(
        f" ENDPOINT = sb://relay.example/ ; entitypath=echo;sharedAccessKEYName=r; SHAREDACCESSKEY={KEY} "
    )
    assert (cs.endpoint, cs.entity_path, cs.shared_access_key_name, cs.shared_access_key) == (
        "sb://relay.example/",
        "echo",
        "r",
        KEY,
    )


def test_empty_parts_ignored_and_entity_path_optional() -> None:
    cs = RelayConnectionString.parse(";;Endpoint=sb://relay.example/; ;;")
    assert cs == RelayConnectionString(endpoint="sb://relay.example/")
    assert cs.entity_path is None


def test_empty_values_mean_absent() -> None:
    cs = RelayConnectionString.parse(
        "Endpoint=sb://relay.example/;EntityPath=;Authentication=;OperationTimeout="
    )
    assert cs == RelayConnectionString(endpoint="sb://relay.example/")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("Endpoint=sb://h/;Bogus=1", "unknown connection string key 'Bogus'"),
        ("Endpoint=sb://h/;EntityPath=a;entitypath=b", "appears twice"),
        ("Endpoint=sb://h/;Endpoint=sb://g/", "appears twice"),
        (
            f"Endpoint=sb://h/;SharedAccessSignature={SAS};SharedAccessKeyName=r;SharedAccessKey={KEY}",
            "cannot be combined",
        ),
        (f"Endpoint=sb://h/;SharedAccessSignature={SAS};SharedAccessKey={KEY}", "cannot be combined"),
        (f"Endpoint=sb://h/;SharedAccessSignature={SAS};SharedAccessKeyName=r", "cannot be combined"),
        ("Endpoint=sb://h/;SharedAccessKeyName=r", "together"),
        (f"Endpoint=sb://h/;SharedAccessKey={KEY}", "together"),
        ("Endpoint=sb://h/;EntityPath", "has no '='"),
        ("EntityPath=echo", "no Endpoint"),
        ("", "no Endpoint"),
        ("Endpoint=relay.example", "not a URI"),
        ("Endpoint=sb://h/;OperationTimeout=60", "TimeSpan"),
        ("Endpoint=sb://h/;OperationTimeout=1:2", "TimeSpan"),
        ("Endpoint=sb://h/;OperationTimeout=00:01:00.12345678", "TimeSpan"),
        ("Endpoint=sb://h/;OperationTimeout=-00:01:00", "TimeSpan"),
        ("Endpoint=sb://h/;OperationTimeout=00:00:00", "positive"),
    ],
)
def test_errors(text: str, match: str) -> None:
    with pytest.raises(InvalidConnectionString, match=match):
        RelayConnectionString.parse(text)


def test_errors_never_show_the_key_or_signature() -> None:
    for text in (
        f"Endpoint=sb://h/;SharedAccessKey={KEY};SharedAccessKey={KEY}",
        f"Endpoint=sb://h/;SharedAccessKey={KEY}",
        f"Endpoint=sb://h/;SharedAccessSignature={SAS};SharedAccessKey={KEY}",
        f"Endpoint=sb://h/;SharedAccessKey:{KEY}",
        f"Endpoint=sb://h/;SharedAccessKey:{KEY}=",
    ):
        with pytest.raises(InvalidConnectionString) as info:
            RelayConnectionString.parse(text)
        assert KEY not in str(info.value)
        assert "c2ln" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:01:00", 60.0),
        ("00:00:30", 30.0),
        ("01:00:00", 3600.0),
        ("1.02:03:04.5", 93784.5),
        ("0:0:1.25", 1.25),
        ("00:00:00.0000001", 1e-7),
        ("3.00:00:00", 259200.0),
    ],
)
def test_operation_timeout_timespan(text: str, seconds: float) -> None:
    assert (
        RelayConnectionString.parse(f"Endpoint=sb://h/;OperationTimeout={text}").operation_timeout == seconds
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (90.0, "00:01:30"),
        (93784.5, "1.02:03:04.5000000"),
        (0.1234567, "00:00:00.1234567"),
        (1.99999999, "00:00:02"),  # rounding to ticks carries into the seconds
        (86399.99999999, "1.00:00:00"),
    ],
)
def test_str_formats_operation_timeout(seconds: float, text: str) -> None:
    cs = RelayConnectionString(endpoint="sb://h/", operation_timeout=seconds)
    assert str(cs) == f"Endpoint=sb://h/;OperationTimeout={text}"
    assert RelayConnectionString.parse(str(cs)).operation_timeout == pytest.approx(seconds, abs=1e-7)


def test_str_of_each_form() -> None:
    assert str(RelayConnectionString("sb://h/")) == "Endpoint=sb://h/"
    assert (
        str(RelayConnectionString("sb://h/", "echo", "rule", KEY))
        == f"Endpoint=sb://h/;EntityPath=echo;SharedAccessKeyName=rule;SharedAccessKey={KEY}"
    )
    assert (
        str(RelayConnectionString("sb://h/", shared_access_signature=SAS, authentication="Managed Identity"))
        == f"Endpoint=sb://h/;SharedAccessSignature={SAS};Authentication=Managed Identity"
    )


def test_repr_hides_key_and_signature() -> None:
    text = repr(RelayConnectionString("sb://h/", "echo", "rule", KEY)) + repr(
        RelayConnectionString("sb://h/", shared_access_signature=SAS)
    )
    assert KEY not in text
    assert "c2ln" not in text
    assert "SharedAccessSignature sr" not in text
    assert "rule" in text  # the rule name is not secret and helps debugging


def test_with_entity_path() -> None:
    cs = RelayConnectionString.parse(f"Endpoint=sb://h/;SharedAccessKeyName=r;SharedAccessKey={KEY}")
    other = cs.with_entity_path("echo")
    assert other.entity_path == "echo"
    assert other.shared_access_key == KEY
    assert cs.entity_path is None
    assert other.with_entity_path(None) == cs


# --- round trip ------------------------------------------------------------------------------------------

_value = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_characters=";", exclude_categories=("Cs", "Zs", "Zl", "Zp", "Cc")
    ),
    min_size=1,
    max_size=30,
)
_with_equals = st.builds(lambda a, b: a + "=" + b, _value, st.text(alphabet="=&%+/", max_size=5))
_auth = st.one_of(
    st.just({}),
    st.fixed_dictionaries({"shared_access_key_name": _value, "shared_access_key": _with_equals}),
    st.fixed_dictionaries({"shared_access_signature": _with_equals}),
    st.fixed_dictionaries({"authentication": st.sampled_from(["Managed Identity", "ManagedIdentity"])}),
)


@given(
    endpoint=st.builds(lambda h: f"sb://{h}/", st.from_regex(r"[a-z0-9.-]{1,20}", fullmatch=True)),
    entity_path=st.none() | _value,
    auth=_auth,
    ticks=st.integers(min_value=1, max_value=10**15),
)
def test_parse_str_round_trip(
    endpoint: str, entity_path: str | None, auth: dict[str, str], ticks: int
) -> None:
    cs = RelayConnectionString(
        endpoint=endpoint, entity_path=entity_path, operation_timeout=ticks / 10_000_000, **auth
    )
    assert RelayConnectionString.parse(str(cs)) == cs
