"""Clean logs: no token or key in any record, no line a peer can forge (issue 13, defects 7 and 8).

Peers put text in places that end up in log records: aiohttp's parse errors quote the offending request line
or header whole (a token header with a stray control character, a bad character in a query carrying
``sb-hc-token``), and ids or descriptions a listener sends are logged by the relay. :class:`ScrubFilter`
cleans every record before any handler sees it:

* secrets are redacted: ``SharedAccessSignature ...``, ``sig=``, ``sb-hc-token=``, ``SharedAccessKey=`` and
  ``[ServiceBus]Authorization`` header values, in any letter case and URL-encoded (``%3D``, ``%253D``,
  ``%20``), in the message, its arguments, the exception text and the stack;
* control characters (CR, LF, NUL, ESC, C1, U+2028/2029) are escaped (``\\r``, ``\\x1b``), so a message is
  one line; a traceback keeps its own line breaks but every line of it is indented, so only the formatter's
  own lines start at column 0 and a forged line cannot pass for a record;
* aiohttp's errors for malformed requests (the client's fault, not the relay's) lose their traceback, keep
  one line of a few hundred characters and drop to INFO: a flood of bad requests no longer writes kilobytes
  of ERROR per request.

:func:`install` adds the filter to the ``hyco`` and ``aiohttp`` loggers and those below them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable

from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["MAX_CLIENT_ERROR_DETAIL", "REDACTED", "SCRUBBED_LOGGERS", "ScrubFilter", "install", "scrub"]

#: What a secret is replaced with.
REDACTED = "***"
#: Characters kept of aiohttp's description of a malformed request (it quotes the offending line whole).
MAX_CLIENT_ERROR_DETAIL = 240
#: Loggers :func:`install` covers, with every logger below them.
SCRUBBED_LOGGERS = ("hyco", "aiohttp")

_EQ = r"(?:=|%3d|%253d)"  # '=' as written, URL-encoded, or encoded twice (a token inside a query value)
_SECRETS = [
    # A whole SAS token: the prefix, a space (or its encodings), then the token's fields.
    re.compile(r"(sharedaccesssignature(?:\s|%20|\+)+)[^\s\"'<>]*", re.IGNORECASE),
    # Its signature wherever it appears alone (a token split by a stray character, a query, a field list).
    re.compile(rf"(sig{_EQ})[^&\s\"'<>;,]*", re.IGNORECASE),
    # The query parameter that carries a token, in any of its encodings (protocol.md 1.3).
    re.compile(rf"(sb(?:-|%2d)hc(?:-|%2d)token{_EQ})[^&\s\"'<>]*", re.IGNORECASE),
    # A connection string's key (protocol.md 5.5); SharedAccessKeyName is not a secret and is not matched.
    re.compile(rf"(sharedaccesskey{_EQ})[^;&\s\"'<>]*", re.IGNORECASE),
    # Token headers: 'ServiceBusAuthorization: ...', "'Authorization': '...'" in a repr.
    re.compile(r"((?:servicebus)?authorization[\"']?\s*[:=]\s*[\"']?)[^\"'\r\n]*", re.IGNORECASE),
]
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


#: Every secret pattern needs one of these words (as written in ``_SECRETS``, any letter case).
_SECRET_WORDS = ("sig", "token", "sharedaccesskey", "authorization")


def _redact(text: str) -> str:
    if text.isascii():
        # The common case, a relay's own line: skip the five patterns when none can match. Only for ASCII
        # text, where lower() is exactly the regular expressions' IGNORECASE (no Kelvin sign, no long s).
        lowered = text.lower()
        if not any(word in lowered for word in _SECRET_WORDS):
            return text
    for pattern in _SECRETS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def scrub(text: str, *, keep_newlines: bool = False) -> str:
    """Redact secrets in ``text`` and escape its control characters.

    Args:
        text: any text that may hold a peer's values.
        keep_newlines: keep ``\\n`` (for a traceback's own lines); every other control character is escaped.

    Returns:
        The text without tokens, signatures or keys, each replaced by :data:`REDACTED`.
    """
    # Redact before escaping (an escaped CR no longer ends a header value) and after (a control character
    # inside a token splits it; once escaped, the whole value is one run again).
    text = _redact(text)
    if text.isascii() and text.isprintable():  # no control character to escape: the text cannot change
        return text
    text = (_CONTROL_BUT_NEWLINE if keep_newlines else _CONTROL).sub(_escape_one, text)
    return _redact(text)


def _indented(block: str) -> str:
    return "\n".join("  " + line for line in scrub(block, keep_newlines=True).split("\n"))


class ScrubFilter(logging.Filter):
    """A logging filter that rewrites each record clean (see the module docstring); it never drops one.

    The message is formatted once with its arguments and stored scrubbed with no arguments left; the exception
    becomes scrubbed, indented text (``exc_info`` is cleared, so no handler formats the raw exception again).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Clean ``record`` in place.

        Args:
            record: the record being logged.

        Returns:
            Always True: records are cleaned, never dropped.
        """
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record (nor print its arguments raw)
            message = f"{record.msg!s} (unformattable arguments dropped)"
        exc_info = record.exc_info
        if exc_info is not None and isinstance(exc_info[1], HttpProcessingError):
            # A malformed request is the client's fault: one line, no stack, the quoted request cut short
            # after scrubbing (issue 13, defect 8: an 8 KB bad header used to log 16 KB).
            error = exc_info[1]
            detail = scrub(" ".join(str(error.message).split()))
            if len(detail) > MAX_CLIENT_ERROR_DETAIL:
                detail = detail[:MAX_CLIENT_ERROR_DETAIL] + "..."
            message = f"{message}: {error.code} {type(error).__name__}: {detail}"
            record.exc_text = None
            # Not the relay's failure: an operator alerting on ERROR must not be paged by a port scanner.
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        elif exc_info is not None and exc_info[0] is not None and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(exc_info)
        record.msg = scrub(message)
        record.args = None
        record.exc_info = None
        if record.exc_text:
            record.exc_text = _indented(record.exc_text)
        if record.stack_info:
            record.stack_info = _indented(record.stack_info)
        return True


_FORMATTER = logging.Formatter()


def install(names: Iterable[str] = SCRUBBED_LOGGERS) -> Callable[[], None]:
    """Add one :class:`ScrubFilter` to each named logger and every existing logger below it.

    A logger's filters only see records logged on that very logger (not those its children propagate), so the
    filter goes on each one; call this once the modules that log are imported (the relay does it when it
    starts). Calling it again adds the filter to loggers created since, and never twice to the same logger.

    Args:
        names: logger names; each covers itself and the loggers whose names start with ``name + "."``.

    Returns:
        A function that removes the filters this call added (for tests).
    """
    prefixes = tuple(names)
    existing = [
        n for n in logging.Logger.manager.loggerDict if n.startswith(tuple(p + "." for p in prefixes))
    ]
    added: list[tuple[logging.Logger, ScrubFilter]] = []
    for name in (*prefixes, *existing):
        logger = logging.getLogger(name)
        if not any(isinstance(f, ScrubFilter) for f in logger.filters):
            scrubber = ScrubFilter()
            logger.addFilter(scrubber)
            added.append((logger, scrubber))

    def uninstall() -> None:
        for logger, scrubber in added:
            logger.removeFilter(scrubber)

    return uninstall
