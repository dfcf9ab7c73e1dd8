"""The one grammar every client command shares: where the relay is, the credentials, TLS trust, verbosity.

* connection string: ``-x/--connection-string``, ``--connection-string-file FILE``, env
  ``HYCO_CONNECTION_STRING``;
* address, instead of or over the connection string's: ``-a/--address URI`` (env ``HYCO_ADDRESS``) and
  ``--path NAME``;
* credentials, overriding the connection string's: ``-K/--key-name``, ``-k/--key``, ``-s/--sas`` (env
  ``HYCO_KEY_NAME``, ``HYCO_KEY``, ``HYCO_SAS``);
* TLS trust: ``--ca-file PEM``, ``--insecure`` (with a warning); ``--proxy URL``;
* verbosity (``hyco.cli._errors.logging_options``): ``-v``, ``--log-level LEVEL`` (``HYCO_LOG_LEVEL``).

A key on the command line is visible to every user of the machine (``ps``); the environment variables and
``--connection-string-file`` keep it out of sight, and ``--help`` says so. Options are gathered into
:class:`ClientOptions` by callbacks, so commands keep short signatures.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click

from hyco.cli._errors import Scrubber
from hyco.client.credentials import TokenProvider
from hyco.protocol.connection_string import DEFAULT_OPERATION_TIMEOUT, RelayConnectionString
from hyco.protocol.uri import RelayAddress, parse_address

__all__ = ["ClientOptions", "client_options", "looks_like_connection_string"]

F = TypeVar("F", bound=Callable[..., Any])

_META = "hyco.client_options"
_DEFAULT_KEY_NAME = "RootManageSharedAccessKey"
#: Connection string parts that are not secret (every other value is treated as one).
_PUBLIC_PARTS = {"endpoint", "entitypath", "sharedaccesskeyname", "operationtimeout", "authentication"}
_KNOWN_PARTS = _PUBLIC_PARTS | {"sharedaccesskey", "sharedaccesssignature"}

PS_NOTE = (
    "A key given as a flag is visible to other users of this machine (ps); prefer HYCO_CONNECTION_STRING, "
    "--connection-string-file or HYCO_KEY."
)


def looks_like_connection_string(text: str) -> bool:
    """Whether ``text`` is a connection string (``Key=value;...``) rather than an address."""
    return "=" in text and "://" not in text.split("=", 1)[0]


@dataclass
class ClientOptions:
    """The shared options as given (see the module docstring); :meth:`resolve` turns them into a target.

    Attributes:
        scrub: knows every key, signature and connection string given, to keep them out of output.
        entity: the hybrid connection, once :meth:`resolve` found it (for messages).
    """

    connection_string: str | None = None
    connection_string_file: Path | None = None
    address: str | None = None
    path: str | None = None
    key_name: str | None = None
    key: str | None = None
    sas: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    proxy: str | None = None
    scrub: Scrubber = field(default_factory=Scrubber)
    entity: str | None = None

    @classmethod
    def of(cls, ctx: click.Context) -> ClientOptions:
        """The options gathered for the command running in ``ctx``."""
        options: ClientOptions = ctx.meta.setdefault(_META, ClientOptions())
        return options

    def connection_string_text(self, fallback_env: tuple[str, ...] = ()) -> str | None:
        """The connection string from ``-x``/``HYCO_CONNECTION_STRING``, else the file, else ``fallback_env``.

        Raises:
            click.UsageError: both ``-x`` and ``--connection-string-file``, or the file cannot be read.
        """
        import os

        text = self.connection_string
        if self.connection_string_file is not None:
            if text:
                raise click.UsageError("give either --connection-string or --connection-string-file")
            try:
                text = self.connection_string_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise click.UsageError(
                    f"cannot read --connection-string-file {str(self.connection_string_file)!r}: "
                    f"{exc.strerror or exc}"
                ) from None
        text = text or next((os.environ[n] for n in fallback_env if os.environ.get(n)), None)
        if text:
            # The text and each value that may be secret: a malformed string may not parse as far as its key.
            self.scrub.secrets.append(text)
            for part in text.split(";"):
                name, _, value = part.partition("=")
                if name.strip().lower() not in _PUBLIC_PARTS:
                    self.scrub.secrets.extend((part.strip(), value.strip()))
                if name.strip().lower() not in _KNOWN_PARTS:
                    self.scrub.secrets.append(
                        name.strip()
                    )  # a mistyped part ("SharedAccessKey:...") may be all key
        return text or None

    def resolve(self, *, fallback_env: tuple[str, ...] = ()) -> ResolvedTarget:
        """Combine the connection string, address and credential flags into one target.

        Flags override the connection string's parts: ``-a`` its endpoint, ``--path`` its ``EntityPath``,
        ``-K``/``-k``/``-s`` its credentials.

        Raises:
            click.UsageError: nothing names a relay, or the flags contradict each other.
            InvalidConnectionString, InvalidURI, InvalidToken: a value cannot be used (messages name no
                secret).
        """
        text = self.connection_string_text(fallback_env)
        cs = RelayConnectionString.parse(text) if text else None
        if cs is not None:
            self.scrub.secrets.extend(s for s in (cs.shared_access_key, cs.shared_access_signature) if s)
        if self.address:
            if looks_like_connection_string(self.address):
                self.scrub.secrets.append(self.address)
                raise click.UsageError(
                    "-a/--address got a connection string; pass it with -x/--connection-string"
                )
            address = parse_address(self.address, self.path)
        elif cs is not None:
            path = self.path or cs.entity_path
            if not path:
                raise click.UsageError(
                    "the connection string has no EntityPath: add ;EntityPath=NAME or --path NAME"
                )
            address = parse_address(cs.endpoint, path)
        else:
            raise click.UsageError(
                "which relay? give -x CONNECTION_STRING (or set HYCO_CONNECTION_STRING, or "
                "--connection-string-file FILE), or -a sb://HOST/PATH"
            )
        self.entity = address.path
        return ResolvedTarget(
            address=address,
            token_provider=self._token_provider(cs),
            ssl=self.ssl_setting(),
            proxy=self.proxy,
            # .NET: a connection string's OperationTimeout replaces the default only when it is not 60 s.
            operation_timeout=(
                cs.operation_timeout if cs and cs.operation_timeout != DEFAULT_OPERATION_TIMEOUT else None
            ),
        )

    def _token_provider(self, cs: RelayConnectionString | None) -> TokenProvider | None:
        if self.key and self.sas:
            raise click.UsageError("give either -k/--key or -s/--sas, not both")
        if self.sas:
            return TokenProvider.from_sas(self.sas)
        key = self.key or (cs.shared_access_key if cs else None)
        if key and (self.key or self.key_name):
            name = self.key_name or (cs.shared_access_key_name if cs else None) or _DEFAULT_KEY_NAME
            return TokenProvider.from_shared_access_key(name, key)
        if cs is not None:
            return TokenProvider.from_connection_string(cs)
        if self.key_name:
            raise click.UsageError(f"-K/--key-name {self.key_name!r} needs a key: add -k/--key (or HYCO_KEY)")
        return None

    def namespace_target(self, *, whole_namespace: bool = False) -> tuple[str, str, TokenProvider]:
        """For management calls: the relay's HTTP base URL, the token audience (the namespace, or the
        connection string's entity when ``-a`` does not override it) and the token provider.

        Args:
            whole_namespace: the audience is the namespace even when the connection string names an entity.

        Raises:
            click.UsageError: no relay or no credential given, or an address that is not a relay's.
        """
        text = self.connection_string_text()
        cs = RelayConnectionString.parse(text) if text else None
        where = self.address or (cs.endpoint if cs else None)
        if not where:
            raise click.UsageError(
                "which relay? give -x CONNECTION_STRING (or set HYCO_CONNECTION_STRING) or -a sb://HOST"
            )
        parts = urlsplit(where.strip())
        scheme = parts.scheme.lower()
        if scheme not in ("sb", "wss", "https", "ws", "http") or not parts.hostname:
            raise click.UsageError(
                f"{where!r} is not a relay address: use sb://HOST[:PORT] or ws://HOST:PORT"
            )
        base = f"{'https' if scheme in ('sb', 'wss', 'https') else 'http'}://{parts.netloc}"
        scope = (
            cs.entity_path
            if cs is not None and cs.entity_path and not (self.address or whole_namespace)
            else ""
        )
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        provider = self._token_provider(cs)
        if provider is None:
            raise click.UsageError("give a Manage credential: -k KEY (or HYCO_KEY), -s SAS, or -x with a key")
        return base, f"http://{host}/{scope}", provider

    def ssl_setting(self) -> ssl.SSLContext | bool | None:
        """The SDK's ``ssl=``: a context trusting ``--ca-file``, False for ``--insecure``, else None."""
        if self.insecure:
            click.echo(
                "warning: --insecure: the relay's TLS certificate is not checked; anyone on the network path "
                "can read and change this connection (use --ca-file instead)",
                err=True,
            )
            return False
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None


@dataclass(frozen=True)
class ResolvedTarget:
    """A hybrid connection to use and how.

    Attributes:
        address: where (``str(address)`` is the ``sb://``/``ws://`` form the SDK takes).
        token_provider: tokens, or None when no credentials were given.
        ssl: the SDK's ``ssl=`` argument.
        proxy: an HTTP proxy URL, or None.
        operation_timeout: the connection string's ``OperationTimeout``, if it set one other than 60 s.
    """

    address: RelayAddress
    token_provider: TokenProvider | None
    ssl: ssl.SSLContext | bool | None
    proxy: str | None
    operation_timeout: float | None

    @property
    def entity(self) -> str:
        """The hybrid connection's path, for messages."""
        return self.address.path


def _option(*names: str, field: str, **settings: Any) -> Callable[[F], F]:
    """A click option whose value goes to :class:`ClientOptions` attribute ``field`` (keys and SAS tokens are
    also noted as secrets)."""

    def store(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        options = ClientOptions.of(ctx)
        setattr(options, field, value)
        if field in ("key", "sas") and value:
            options.scrub.secrets.append(str(value))

    return click.option(*names, field, expose_value=False, callback=store, **settings)


def client_options(*, azbridge: bool = False, path: bool = True, key_flag: bool = True) -> Callable[[F], F]:
    """Add the shared relay, credential, TLS and proxy options (module docstring) to a command.

    Args:
        azbridge: also accept azbridge's spellings (``-E/--endpoint`` for ``-a``, ``-S`` for ``-s``) and read
            ``AZURE_BRIDGE_CONNECTIONSTRING`` after ``HYCO_CONNECTION_STRING``.
        path: offer ``--path`` (commands whose hybrid connection names come from elsewhere do not).
        key_flag: spell the access key ``-k/--key``; False gives ``-k/--access-key`` (``keys renew`` uses
            ``--key`` for the key type, as ``az`` does).
    """
    cs_env = "HYCO_CONNECTION_STRING" + (" (or AZURE_BRIDGE_CONNECTIONSTRING)" if azbridge else "")
    options = [
        _option(
            "-x",
            "--connection-string",
            field="connection_string",
            metavar="CONNSTR",
            envvar="HYCO_CONNECTION_STRING",
            help=f"Relay connection string: Endpoint=...;EntityPath=...;SharedAccessKeyName=...;"
            f"SharedAccessKey=... [env {cs_env}]",
        ),
        _option(
            "--connection-string-file",
            field="connection_string_file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Read the connection string from FILE (keeps the key out of ps).",
        ),
        _option(
            "-a",
            "--address",
            *(("-E", "--endpoint") if azbridge else ()),
            field="address",
            metavar="URI",
            envvar="HYCO_ADDRESS",
            help="Relay address sb://HOST[:PORT]/PATH (TLS) or ws://HOST:PORT/PATH (plain); overrides the "
            "connection string's Endpoint [env HYCO_ADDRESS].",
        ),
        *(
            [
                _option(
                    "--path",
                    field="path",
                    metavar="NAME",
                    help="Hybrid connection name; overrides the connection string's EntityPath.",
                )
            ]
            if path
            else []
        ),
        _option(
            "-K",
            "--key-name",
            field="key_name",
            metavar="NAME",
            envvar="HYCO_KEY_NAME",
            help=f"Shared access rule name [{_DEFAULT_KEY_NAME}; env HYCO_KEY_NAME].",
        ),
        _option(
            "-k",
            "--key" if key_flag else "--access-key",
            field="key",
            metavar="KEY",
            envvar="HYCO_KEY",
            help="Shared access key [env HYCO_KEY].",
        ),
        _option(
            "-s",
            *(("-S",) if azbridge else ()),
            "--sas",
            field="sas",
            metavar="TOKEN",
            envvar="HYCO_SAS",
            help="A ready SAS token instead of a key (never renewed) [env HYCO_SAS].",
        ),
        _option(
            "--ca-file",
            field="ca_file",
            type=click.Path(exists=True, dir_okay=False),
            help="PEM file of CAs to trust, e.g. the ca.pem `hyco relay --self-signed` prints.",
        ),
        _option(
            "--insecure",
            field="insecure",
            is_flag=True,
            help="Do not verify the relay's TLS certificate (warns; testing only).",
        ),
        _option(
            "--proxy",
            field="proxy",
            metavar="URL",
            help="HTTP proxy, e.g. http://proxy:3128 (CONNECT for TLS).",
        ),
    ]

    def decorate(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate
