"""The one choke point for secrets, after Ansible's ``no_log``.

A password enters exbe once, from the environment (``exbe.config.Credentials.from_env``), and is at once wrapped
in a :class:`Secret` and registered with the process-wide :data:`REDACTOR`. Everything exbe writes -- log records,
error messages, JUnit, the JSON run record, the console table, CI annotations, the step summary, output
variables -- passes through ``REDACTOR.redact`` last, which replaces the password and the forms it takes on the
wire and in files (URL-encoded, JSON- and XML-escaped, with its control characters shown, and the Base64
``user:password`` of an HTTP Basic header) with ``***``.

**Values, never structure.** The redactor is given one *value* at a time -- a JSON string, an XML attribute or text,
a table cell, an annotation's message -- never a serialized document. Keys, element and attribute names, JSON
punctuation and exbe's own vocabulary (step names, check ids, statuses) are not passed to it, so whatever the
password is (``a``, ``"``, ``<``, ``true``), a JSON record and a JUnit file stay valid and mean the same as without
it: ``"failed": true`` stays ``"failed": true``. :func:`redact_values` walks a document's values for a writer, and
:func:`clean` is the full treatment of one value bound for a console or CI log (masked, then control characters
made visible by :func:`visible_controls`, then masked again).

**Short passwords.** A form of a secret shorter than :data:`MIN_SUBSTRING_LENGTH` (8) characters is masked only where a
whole value, or a whole line of a multi-line value, is exactly that form (surrounding whitespace ignored), never inside
longer text. Masking ``a`` inside text would turn every ``a`` into ``***``: the text would be destroyed, and the pattern
of the masks would show the password to anyone reading the report. A password that is one of exbe's :data:`VOCABULARY`
words (``failed``) is not masked where a value is that word: the word is there whatever the password. A short password
is not refused, because refusing would stop a pipeline over a property of an account exbe does not own, and exbe itself
never writes a password into text (it lives in a :class:`Secret`); the risk that remains -- a library quoting a short
password inside a longer message -- is logged as a warning when the secret is registered (``exbe.redaction``), so the
operator sees it on every run. Forms of 8 characters or more are masked wherever they occur; that includes the Basic
header form of nearly every account, since it carries the user name as well.
"""

from __future__ import annotations

import base64
import hmac
import html
import json
import logging
import math
import re
import threading
import unicodedata
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, quote_plus
from xml.sax.saxutils import escape as xml_escape

MASK = "***"

#: A secret's form shorter than this is masked only as a whole value, never inside longer text (see the module doc).
MIN_SUBSTRING_LENGTH = 8

#: exbe's own words for outcomes. They are the same whatever the password is, so they can reveal nothing, and a
#: value that is one of them is never masked: a gate reading ``"status": "failed"`` reads it whatever the password.
#: The rule behind the list: masking applies to *text* that came from outside (a server, a library, a file). What
#: exbe writes itself from its own closed sets -- these words, and the text of a typed value, ``true``, ``60``,
#: ``null`` (:func:`typed_text`) -- is never the password and is never masked.
VOCABULARY = frozenset({"ok", "changed", "failed", "skipped", "pass", "warn", "fail", "skip", "passed",
                        "passed with warnings", "FAILED"})

#: Libraries that log requests, tokens or whole scripts at INFO/DEBUG; exbe keeps them at WARNING.
NOISY_LOGGERS = ("pypsrp", "spnego", "requests", "urllib3")

Redact = Callable[[str], str]

_log = logging.getLogger(__name__)


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


def secret_forms(value: str, username: str | None = None) -> set[str]:
    """The forms ``value`` takes on the wire and in files, ``value`` itself included (empty forms left out)."""
    forms = {
        value,
        quote(value, safe=""),
        quote_plus(value),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        html.escape(value, quote=True),
        xml_escape(value),  # XML text, as ElementTree (junit-xml) writes it
        xml_escape(value, {'"': "&quot;", "\n": "&#10;"}),  # an ElementTree attribute
        visible_controls(value, keep=""),  # as a console or CI line shows it
    }
    if username:
        forms.add(base64.b64encode(f"{username}:{value}".encode()).decode("ascii"))
    return {form for form in forms if form}


class Redactor:
    """Known secret values, and :meth:`redact` replacing each of them (and its encodings) with ``***`` in one value.

    A form of :data:`MIN_SUBSTRING_LENGTH` characters or more is replaced wherever it occurs, longest first, so a
    password that contains another never leaves a tail; a shorter form only when it is the whole value or a whole
    line of it.
    """

    def __init__(self, min_substring_length: int = MIN_SUBSTRING_LENGTH) -> None:
        if min_substring_length <= len(MASK):
            raise ValueError(f"min_substring_length must exceed len({MASK!r}), so masking twice changes nothing")
        self.min_substring_length = min_substring_length
        self._lock = threading.Lock()
        self._forms: set[str] = set()
        # (pattern for the forms masked inside text, the forms masked as whole values, a pattern for whole lines
        # of a multi-line value that are one of those), swapped as one
        self._state: tuple[re.Pattern[str] | None, frozenset[str], re.Pattern[str] | None] = (None, frozenset(), None)

    def add(self, secret: str | Secret, *, username: str | None = None) -> None:
        """Register a secret; with ``username``, also the Base64 ``username:secret`` of a Basic auth header."""
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if not value:
            return
        forms = secret_forms(value, username)
        with self._lock:
            self._forms |= forms
            long_forms = sorted((f for f in self._forms if len(f) >= self.min_substring_length), key=len, reverse=True)
            pattern = re.compile("|".join(re.escape(f) for f in long_forms)) if long_forms else None
            whole = frozenset(self._forms | {f.strip() for f in self._forms if f.strip()})
            single = sorted((f.strip() for f in whole if f.strip() and "\n" not in f and "\r" not in f), key=len,
                            reverse=True)
            lines = re.compile(r"^([ \t]*)(?:" + "|".join(re.escape(f) for f in single) + r")([ \t\r]*)$",
                               re.MULTILINE) if single else None
            self._state = (pattern, whole, lines)
        if len(value) < self.min_substring_length or value in VOCABULARY:
            _log.warning("the password has fewer than %d characters or is one of exbe's status words: exbe masks it "
                         "only where a whole value is the password, not inside longer text; use a longer password",
                         self.min_substring_length)

    def redact(self, text: str) -> str:
        """``text``, one value, with every registered secret replaced by ``***`` (a short one only as the whole
        value or a whole line of it); one of exbe's :data:`VOCABULARY` words is returned as it is."""
        pattern, whole, lines = self._state
        if not text or not whole or text in VOCABULARY:
            return text
        if text in whole or text.strip() in whole:
            return MASK
        if pattern is not None:
            text = pattern.sub(MASK, text)
        if lines is not None and "\n" in text:
            text = lines.sub(self._line, text)
        return text

    @staticmethod
    def _line(match: re.Match[str]) -> str:
        """A line of a multi-line value that is a secret's form: masked, unless it is one of exbe's words."""
        word = match.group(0).strip()
        return match.group(0) if word in VOCABULARY else match.group(1) + MASK + match.group(2)

    def __bool__(self) -> bool:
        return bool(self._state[1])


def redact_values(value: Any, redact: Redact) -> Any:
    """A JSON-like document with ``redact`` applied to each string *value*: keys are kept as they are, dicts stay
    dicts, tuples become lists, numbers, booleans and None are kept (a non-finite float becomes its name, as JSON has
    none), and anything else becomes its redacted ``str``."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_values(item, redact) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_values(item, redact) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact(str(value))


def typed_text(value: Any, redact: Redact, *, sort_keys: bool = False) -> str:
    """A JSON-like value as one line of report text: each string in it masked (:func:`redact_values`), everything
    else as JSON writes it. Only the strings can hold a secret: ``true``, ``60`` or ``null`` is exbe's text for a
    typed value, never the password, so it is not masked (``EXBE_PASSWORD=true`` once turned JUnit's ``value: true``
    into ``value: ***``). JSON escapes control characters itself."""
    return json.dumps(redact_values(value, redact), sort_keys=sort_keys)


# -- control characters ----------------------------------------------------------------------------------------------
#: Characters a terminal, a CI log viewer or an XML file must not receive raw, beyond the C0/C1 controls, surrogates
#: and noncharacters: line and paragraph separators (``str.splitlines`` and some viewers break lines there) and the
#: bidirectional embedding, override and isolate controls (text that reads differently from what it is).
_INVISIBLE_EXTRA = frozenset("\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _needs_showing(char: str) -> bool:
    code = ord(char)
    if char in _INVISIBLE_EXTRA:
        return True
    if 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE:  # noncharacters
        return True
    return unicodedata.category(char) in ("Cc", "Cs")


def visible_controls(text: str, *, keep: str = "\t\n\r") -> str:
    """``text`` with control characters (ESC, BEL, NUL, DEL, C1 such as CSI ``\\x9b``...), surrogates,
    noncharacters, line/paragraph separators and bidi controls written as ``\\xNN``/``\\uNNNN``; the characters
    in ``keep`` pass (a channel's own escaping handles them). Nothing is dropped, so no two characters of a value that
    were apart can meet (a password split by a NUL stays split)."""
    if text.isprintable() and _INVISIBLE_EXTRA.isdisjoint(text):
        return text
    out = []
    for char in text:
        if char in keep or not _needs_showing(char):
            out.append(char)
        elif ord(char) <= 0xFF:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)


_NEWLINES = re.compile(r"\r\n|\r|\n")


def clean(text: str, redact: Redact | None = None, *, one_line: bool = False, keep: str = "\t\n\r") -> str:
    """One value bound for a console, a CI log or a summary: secrets masked, control characters made visible, and
    masked again (a value that becomes a secret's form only once its controls are shown is masked too). With
    ``one_line``, line breaks and tabs become spaces first."""
    redact = REDACTOR.redact if redact is None else redact
    text = redact(str(text))
    if one_line:
        text = " ".join(_NEWLINES.split(text)).replace("\t", " ")
        keep = ""
    return redact(visible_controls(text, keep=keep))


#: The process-wide redactor every writer uses.
REDACTOR = Redactor()


class RedactingFilter(logging.Filter):
    """Rewrites a log record's message and traceback text through a :class:`Redactor`: each argument on its own
    first (a value, so a short password given as an argument is masked too), then the merged message."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.redactor:
            return True
        try:
            message = record.getMessage()
            redacted = self.redactor.redact(self._merged(record))
        except Exception:  # a malformed call: logging reports it when formatting, with the message and arguments
            record.msg = self.redactor.redact(str(record.msg))
            if isinstance(record.args, tuple):
                record.args = tuple(self.redactor.redact(str(arg)) for arg in record.args)
            return True
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redactor.redact(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = self.redactor.redact(record.stack_info)
        return True


    def _merged(self, record: logging.LogRecord) -> str:
        """The record's message with each string argument redacted before it is merged in."""
        args = record.args
        if not args:
            return record.getMessage()
        if isinstance(args, dict):
            args = {key: self._argument(value) for key, value in args.items()}
        else:
            args = tuple(self._argument(value) for value in args)
        return str(record.msg) % args

    def _argument(self, value: object) -> object:
        return self.redactor.redact(value) if isinstance(value, str) else value


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
