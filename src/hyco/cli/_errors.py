"""What the CLI tells a user when something fails, and how it keeps secrets out of every line it prints.

Every command runs its work inside :func:`user_errors`: a hyco error becomes one message that names what
happened ("no such hybrid connection", "no listener is connected", "the relay refused your key", ...) and the
next step; anything unexpected becomes one line (the traceback only with ``-v``). Every message and log line
passes through :class:`Scrubber`, which replaces each key, signature and connection string the user gave.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import click

from hyco.exceptions import (
    AuthorizationFailed,
    EndpointNotFound,
    Forbidden,
    HycoError,
    InvalidConnectionString,
)

__all__ = ["Scrubber", "explain", "logging_options", "setup_logging", "user_errors"]

F = TypeVar("F", bound=Callable[..., Any])

#: What replaces a secret in output.
MASK = "***"
#: Shorter texts are not secrets worth masking (and masking them would garble messages).
_MIN_SECRET = 6


class Scrubber:
    """Replaces known secrets in text. Secrets are added as they become known (options are parsed lazily)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: list[str] = list(secrets)

    def __call__(self, text: str) -> str:
        """``text`` with every known secret replaced by ``***`` (longest first, so no fragment survives)."""
        for secret in sorted({s for s in self.secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True):
            text = text.replace(secret, MASK)
        return text


class _ScrubbingFormatter(logging.Formatter):
    def __init__(self, fmt: str, scrub: Scrubber) -> None:
        super().__init__(fmt)
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        return self._scrub(super().format(record))  # message, arguments and traceback alike


def explain(exc: HycoError, entity: str | None) -> str:
    """The CLI's message for ``exc``: what happened, in the user's terms, then what to do next.

    Args:
        exc: the error.
        entity: the hybrid connection the command was using, when known.
    """
    name = f"'{entity}'" if entity else "the hybrid connection"
    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, EndpointNotFound):
        if "no listeners connected" in lowered:
            return (
                f"no listener is connected to {name} right now ({text}).\n"
                "Start the listener (hyco listen, hyco expose, hyco forward -R or your service), then retry."
            )
        if "none of the connected listeners" in lowered:
            return (
                f"no listener of {name} took the connection ({text}).\nCheck the listener's log, then retry."
            )
        return (
            f"no such hybrid connection {name} on this relay ({text}).\n"
            "Check the name (EntityPath or --path). On a relay that creates hybrid connections when a "
            "listener first opens them, start the listener first."
        )
    if isinstance(exc, AuthorizationFailed):
        if "securitytokenrequired" in lowered or "no token" in lowered:
            return (
                f"the relay wants a key for {name} ({text}).\n"
                "Pass -k/--key KEY (and -K/--key-name NAME), or a connection string with SharedAccessKey "
                "(-x, HYCO_CONNECTION_STRING or --connection-string-file)."
            )
        return (
            f"the relay refused your key ({text}).\n"
            "Check the rule name (-K/--key-name or SharedAccessKeyName) and the key (-k/--key or "
            "SharedAccessKey) against the relay's configuration; a -s/--sas token may have expired."
        )
    if isinstance(exc, Forbidden):
        return (
            f"the relay refused your key for this ({text}).\n"
            "Use a rule with the Listen right to listen (listen, expose, forward -R), the Send right to send."
        )
    if isinstance(exc, InvalidConnectionString):
        return f"{text}.\nCheck -x/--connection-string (or HYCO_CONNECTION_STRING, --connection-string-file)."
    return text


@contextlib.contextmanager
def user_errors(scrub: Scrubber, entity: Callable[[], str | None] = lambda: None) -> Iterator[None]:
    """Turn what the block raises into a CLI error message with no secret in it.

    Args:
        scrub: the secrets to keep out of the message.
        entity: returns the hybrid connection in use (for messages), once known.

    Raises:
        click.ClickException: for a hyco error or an unexpected exception (logged with its traceback at
            debug level, i.e. with ``-v``).
        click.UsageError: unchanged apart from scrubbing.
    """
    try:
        yield
    except click.UsageError as exc:
        raise click.UsageError(scrub(exc.format_message()), ctx=exc.ctx) from None
    except click.ClickException as exc:
        raise click.ClickException(scrub(exc.format_message())) from None
    except HycoError as exc:
        raise click.ClickException(scrub(explain(exc, entity()))) from None
    except (click.exceptions.Exit, click.Abort):
        raise
    except Exception as exc:
        logging.getLogger("hyco.cli").debug("unexpected error", exc_info=True)
        raise click.ClickException(
            scrub(f"unexpected error: {type(exc).__name__}: {exc} (run with -v for the traceback)")
        ) from None


def logging_options(func: F) -> F:
    """Add ``-v/--verbose`` (repeatable: debug output) and ``--log-level`` (env ``HYCO_LOG_LEVEL``)."""
    func = click.option(
        "--log-level",
        type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
        envvar="HYCO_LOG_LEVEL",
        help="Log level for status and diagnostics on stderr [env HYCO_LOG_LEVEL].",
    )(func)
    func = click.option("-v", "--verbose", count=True, help="Debug output, with tracebacks.")(func)
    return func


#: azbridge's level names (its LogLevel setting) besides Python's.
_LEVEL_ALIASES = {"VERBOSE": logging.DEBUG, "FATAL": logging.CRITICAL, "QUIET": logging.ERROR}


def setup_logging(
    scrub: Scrubber, *, verbose: int = 0, level: str | None = None, default: int = logging.INFO
) -> None:
    """Send hyco's log records to stderr, scrubbed of secrets, at the level the user chose.

    Args:
        scrub: the secrets to keep out of log lines.
        verbose: the ``-v`` count; any means debug.
        level: a level name (``--log-level`` or a config file's; azbridge's VERBOSE/FATAL/QUIET too).
        default: the level without ``-v`` or ``level``.
    """
    if verbose:
        chosen = logging.DEBUG
    elif level:
        named = level.upper()
        chosen = _LEVEL_ALIASES.get(named) or logging.getLevelNamesMapping().get(named, default)
    else:
        chosen = default
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ScrubbingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", scrub))
    root = logging.getLogger("hyco")
    sdk = logging.getLogger("hyco.client")
    saved = (root.handlers[:], root.level, root.propagate, sdk.level)

    def restore() -> None:
        root.handlers[:], root.level, root.propagate, sdk.level = saved

    # The command's settings end with the command: a program (or a test) that runs a command in-process keeps
    # its own logging, and no handler outlives the stream it writes to.
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(restore)
    root.handlers[:] = [handler]
    root.setLevel(chosen)
    root.propagate = False
    # The SDK's own warnings (a listener that gives up, a reconnect) repeat what the command already reports
    # as an error or a status line: show them only when asked for.
    sdk.setLevel(logging.NOTSET if verbose or level else logging.ERROR)
