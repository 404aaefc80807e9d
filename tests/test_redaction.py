"""The password never shows: not in a repr, an f-string, a log line, a traceback or an encoded header."""

from __future__ import annotations

import base64
import json
import logging
import sys
from urllib.parse import quote
from xml.etree import ElementTree

import pytest

from exbe.redaction import (
    MASK,
    NOISY_LOGGERS,
    REDACTOR,
    RedactingFilter,
    Redactor,
    Secret,
    clean,
    install_log_filter,
    redact_values,
    visible_controls,
)

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
    redactor.add("secret-1")
    redactor.add("secret-1-and-more")
    assert redactor.redact("a secret-1-and-more b secret-1") == "a *** b ***"


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


# -- values, never structure (issue 13, item 1) ------------------------------------------------------------------------
@pytest.mark.parametrize("password", ["a", "e", "1", "t", '"', "<", "&", "true", "Pa55w0r"])
def test_a_short_password_is_masked_as_a_whole_value_and_never_inside_longer_text(password):
    redactor = Redactor()
    redactor.add(password)
    assert redactor.redact(password) == redactor.redact(f"  {password}\n") == MASK
    for text in ["failed", "a < b & \"c\" is true", "1 check(s) failed", "exch01 tls_444_serves_bound", "Pa55w0rd!"]:
        assert redactor.redact(text) == text


def test_a_long_password_and_its_forms_are_masked_inside_text_and_a_short_form_only_whole():
    redactor = Redactor()
    redactor.add("Pa55w0rd", username="u")
    assert redactor.redact("auth failed for u:Pa55w0rd at h") == "auth failed for u:*** at h"
    short = Redactor()
    short.add('"<&', username="CONTOSO\\exbe")
    basic = base64.b64encode(b'CONTOSO\\exbe:"<&').decode()
    assert short.redact(f"Authorization: Basic {basic}") == "Authorization: Basic ***"  # the Basic form is long
    assert short.redact('x "<& y') == 'x "<& y'  # the password itself is short: only a whole value
    assert short.redact("x &quot;&lt;&amp; y") == "x *** y"  # its HTML form has 15 characters: everywhere


def test_registering_a_short_password_warns_without_showing_it(caplog):
    caplog.set_level(logging.WARNING, logger="exbe.redaction")
    Redactor().add("Sh0rt")
    (record,) = [r for r in caplog.records if r.name == "exbe.redaction"]
    assert "fewer than 8 characters" in record.getMessage() and "Sh0rt" not in record.getMessage()


def test_exbes_status_words_are_never_masked_whatever_the_password():
    redactor = Redactor()
    for word in ("failed", "passed with warnings", "ok"):
        redactor.add(word)
    assert [redactor.redact(w) for w in ("failed", "passed with warnings", "ok")] == [
        "failed", "passed with warnings", "ok"]
    assert redactor.redact(" failed ") == MASK  # not the word itself: a value that is the password


def test_a_document_keeps_its_keys_and_types_and_only_string_values_are_masked():
    redactor = Redactor()
    redactor.add("a")
    document = {"a": "a", "failed": True, "n": 1.5, "list": ["a", "b", None, ("a",)], "nan": float("nan"),
                "nested": {"a": {"a": "a"}}}
    assert redact_values(document, redactor.redact) == {
        "a": MASK, "failed": True, "n": 1.5, "list": [MASK, "b", None, [MASK]], "nan": "nan",
        "nested": {"a": {"a": MASK}}}


def test_a_log_argument_that_is_a_short_password_is_masked_before_the_message_is_merged():
    redactor = Redactor()
    redactor.add("t")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "user %s, password %s, %d tries", ("admin", "t", 3),
                               None)
    RedactingFilter(redactor).filter(record)
    assert record.getMessage() == "user admin, password ***, 3 tries"


# -- control characters (issue 13, item 9) -----------------------------------------------------------------------------
def test_control_characters_are_shown_and_none_is_dropped():
    text = "a\x1b[31mb\x07c\x00d\x7fe\x9bf\u202eg\u2028h\ud800i\ufffej\tk\nl"
    shown = visible_controls(text)
    assert shown == "a\\x1b[31mb\\x07c\\x00d\\x7fe\\x9bf\\u202eg\\u2028h\\ud800i\\ufffej\tk\nl"
    assert visible_controls("tab\tline\n", keep="") == "tab\\x09line\\x0a"
    assert visible_controls("plain é ✓") == "plain é ✓"


def test_a_password_split_by_a_control_character_stays_split_and_a_shown_password_is_masked():
    redactor = Redactor()
    redactor.add("Correct-Horse-9")
    assert clean("Correct\x00-Horse-9", redactor.redact) == "Correct\\x00-Horse-9"
    tricky = Redactor()
    tricky.add("Horse\\x1bBattery")  # the password is literally what a shown ESC looks like
    assert clean("Horse\x1bBattery", tricky.redact) == MASK
