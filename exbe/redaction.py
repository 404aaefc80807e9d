"""The one choke point for secrets, after Ansible's ``no_log``.

A password enters exbe once, from the environment (``exbe.config.Credentials.from_env``), and is at once wrapped
in a :class:`Secret` and registered with the process-wide :data:`REDACTOR`. Everything exbe writes -- log records,
error messages, JUnit, JSON run records, rendered scripts -- passes through ``REDACTOR.redact`` last, which
replaces the password and the forms it takes on the wire and in files (URL-encoded, JSON- and XML-escaped, and
the Base64 ``user:password`` of an HTTP Basic header) with ``***``.
"""

from __future__ import annotations

import base64
import hmac
import html
import json
import logging
import re
import threading
from urllib.parse import quote, quote_plus
from xml.sax.saxutils import escape as xml_escape

MASK = "***"

#: Libraries that log requests, tokens or whole scripts at INFO/DEBUG; exbe keeps them at WARNING.
NOISY_LOGGERS = ("pypsrp", "spnego", "requests", "urllib3")


class Secret:
    """A string that never shows itself: ``str``, ``repr`` and f-strings give ``***``; ``reveal()`` gives the value.

    Deliberately not a ``str`` subclass, so ``"..." + secret`` fails instead of leaking.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        self._value = value

    def reveal(self) -> str:
        """The value, for the one place that must send it (the transport)."""
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)


class Redactor:
    """Known secret values, and :meth:`redact` replacing each of them (and its encodings) with ``***``.

    Only whole values are replaced, longest first, so a password that contains another never leaves a tail.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._needles: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, secret: str | Secret, *, username: str | None = None) -> None:
        """Register a secret; with ``username``, also the Base64 ``username:secret`` of a Basic auth header."""
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if not value:
            return
        needles = {
            value,
            quote(value, safe=""),
            quote_plus(value),
            json.dumps(value)[1:-1],
            json.dumps(value, ensure_ascii=False)[1:-1],
            html.escape(value, quote=True),
            xml_escape(value),  # XML text, as ElementTree (junit-xml) writes it
            xml_escape(value, {'"': "&quot;", "\n": "&#10;"}),  # an ElementTree attribute
        }
        if username:
            needles.add(base64.b64encode(f"{username}:{value}".encode()).decode("ascii"))
        with self._lock:
            self._needles |= {needle for needle in needles if needle}
            ordered = sorted(self._needles, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(needle) for needle in ordered))

    def redact(self, text: str) -> str:
        """``text`` with every registered secret replaced by ``***``."""
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)

    def __bool__(self) -> bool:
        return self._pattern is not None


#: The process-wide redactor every writer uses.
REDACTOR = Redactor()


class RedactingFilter(logging.Filter):
    """Rewrites a log record's message (arguments merged in) and traceback text through a :class:`Redactor`."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.redactor:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed call; logging reports it itself when formatting
            return True
        redacted = self.redactor.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redactor.redact(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = self.redactor.redact(record.stack_info)
        return True


_install_lock = threading.Lock()
_installed: RedactingFilter | None = None


def install_log_filter() -> RedactingFilter:
    """Redact every log record of the process through :data:`REDACTOR`; hold the chatty transport loggers at WARNING.

    A filter attached to the root *logger* only sees records logged on the root logger itself, not those that
    propagate from ``pypsrp.wsman`` and friends, and a filter on its *handlers* misses handlers added later
    (pytest's, a CI runner's). So the filter runs in the log record factory, once per record, wherever it is
    logged and wherever it goes. Calling this again is harmless.
    """
    global _installed
    with _install_lock:
        if _installed is None:
            redacting = RedactingFilter(REDACTOR)
            make_record = logging.getLogRecordFactory()

            def factory(*args: object, **kwargs: object) -> logging.LogRecord:
                record = make_record(*args, **kwargs)
                redacting.filter(record)
                return record

            logging.setLogRecordFactory(factory)
            _installed = redacting
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return _installed
