"""The password never shows: not in a repr, an f-string, a log line, a traceback or an encoded header."""

from __future__ import annotations

import base64
import json
import logging
import sys
from urllib.parse import quote
from xml.etree import ElementTree

import pytest

from exbe.redaction import MASK, NOISY_LOGGERS, REDACTOR, RedactingFilter, Redactor, Secret, install_log_filter

PASSWORD = "Pa55;'\"$(x) &+/=é"


def test_a_secret_shows_only_asterisks_however_it_is_printed():
    secret = Secret(PASSWORD)
    assert str(secret) == repr(secret) == f"{secret}" == f"{secret:>20}" == "%s" % secret == MASK  # noqa: UP031 - the old operator too
    assert repr([secret]) == "[***]"
    assert secret.reveal() == PASSWORD


def test_a_secret_cannot_be_concatenated_into_a_string_by_accident():
    with pytest.raises(TypeError):
        "password=" + Secret(PASSWORD)  # noqa: B018


def test_secrets_compare_by_value():
    assert Secret("same-value") == Secret("same-value") != Secret("other-value")
    assert not Secret("") and Secret("x")


def test_the_redactor_masks_the_value_and_the_forms_it_takes_on_the_wire_and_in_files():
    redactor = Redactor()
    redactor.add(Secret(PASSWORD), username="CONTOSO\\exbe")
    basic = base64.b64encode(f"CONTOSO\\exbe:{PASSWORD}".encode()).decode()
    failure = ElementTree.Element("failure", message=PASSWORD)
    failure.text = PASSWORD
    text = "\n".join([
        f"plain {PASSWORD}",
        f"url https://h/?p={quote(PASSWORD, safe='')}",
        f"json {json.dumps({'p': PASSWORD})}",
        ElementTree.tostring(failure, encoding="unicode"),
        f"Authorization: Basic {basic}",
    ])
    redacted = redactor.redact(text)
    assert PASSWORD not in redacted and basic not in redacted and quote(PASSWORD, safe="") not in redacted
    assert "$(x)" not in redacted and "&amp;+" not in redacted
    assert redacted.count(MASK) == 6


def test_a_password_containing_another_secret_leaves_no_tail():
    redactor = Redactor()
    redactor.add("secret")
    redactor.add("secret-and-more")
    assert redactor.redact("a secret-and-more b secret") == "a *** b ***"


def test_an_empty_redactor_or_empty_secret_changes_nothing():
    redactor = Redactor()
    redactor.add("")
    assert not redactor
    assert redactor.redact("nothing to hide") == "nothing to hide"


def test_the_logging_filter_masks_arguments_and_tracebacks():
    redactor = Redactor()
    redactor.add("F1lter-Pa55")
    try:
        raise RuntimeError("auth failed for F1lter-Pa55")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "sent %s", ("F1lter-Pa55",), sys.exc_info())
    RedactingFilter(redactor).filter(record)
    assert record.getMessage() == "sent ***"
    assert "F1lter-Pa55" not in record.exc_text and "auth failed for ***" in record.exc_text


def test_no_log_line_from_any_logger_shows_the_password(caplog):
    install_log_filter()
    REDACTOR.add("L0gged-Pa55", username="admin")
    header = base64.b64encode(b"admin:L0gged-Pa55").decode()
    caplog.set_level(logging.DEBUG)
    logging.getLogger("exbe.transport").info("connecting with %s", "L0gged-Pa55")
    logging.getLogger("exbe.flow").warning("header Basic %s", header)
    try:
        raise ValueError("bad password L0gged-Pa55")
    except ValueError:
        logging.getLogger("exbe.cli").exception("failed")
    assert "L0gged-Pa55" not in caplog.text and header not in caplog.text
    assert "connecting with ***" in caplog.text and "bad password ***" in caplog.text


def test_transport_libraries_are_held_at_warning(caplog):
    install_log_filter()
    caplog.set_level(logging.DEBUG)
    logging.getLogger("pypsrp.wsman").debug("whole SOAP body")
    assert "whole SOAP body" not in caplog.text
    assert all(logging.getLogger(name).level == logging.WARNING for name in NOISY_LOGGERS)


def test_installing_the_filter_twice_is_harmless():
    assert install_log_filter() is install_log_filter()
