"""exbe's errors: one line each, what is wrong and what to do, with the exit code a pipeline acts on."""

from __future__ import annotations

import pytest

from exbe.errors import (
    CONNECTION_KINDS,
    ConfigError,
    ConnectionFailed,
    ExbeError,
    PreflightError,
    StepFailed,
    UnknownServerError,
)
from exbe.redaction import REDACTOR


def test_configuration_errors_exit_with_2_and_run_failures_with_1():
    assert ConfigError("x").exit_code == 2
    assert UnknownServerError("exch09", ["exch01"]).exit_code == 2
    assert ConnectionFailed("exch01", "exch01", 5985, "auth").exit_code == 1
    assert PreflightError("exch01", "candidates", "2", "1").exit_code == 1
    assert StepFailed("exch01", "bind", "x").exit_code == 1
    assert ExbeError("x", exit_code=2).exit_code == 2


def test_an_unknown_server_with_an_empty_inventory_says_where_to_add_servers():
    assert str(UnknownServerError("exch01", [])) == (
        "unknown server 'exch01'; the inventory is empty (add servers under exbe.inventory in exbe.yaml)"
    )


def test_wrong_credentials_say_which_variables_to_check():
    err = ConnectionFailed("exch01", "exch01.contoso.local", 5985, "auth")
    assert str(err) == (
        "exch01 (exch01.contoso.local:5985): authentication failed; check EXBE_USERNAME/EXBE_PASSWORD or the "
        "agent's logon; the account needs WinRM rights on the server"
    )
    assert (err.server, err.host, err.port, err.kind) == ("exch01", "exch01.contoso.local", 5985, "auth")


@pytest.mark.parametrize("kind", sorted(CONNECTION_KINDS))
def test_every_connection_failure_kind_has_a_default_hint_and_one_line(kind):
    err = ConnectionFailed("exch01", "10.0.0.5", 5986, kind, detail="HTTP 404\nmore")
    what, hint = CONNECTION_KINDS[kind]
    assert err.hint == hint and hint
    assert str(err) == f"exch01 (10.0.0.5:5986): {what} (HTTP 404 more); {hint}"


def test_the_transport_may_give_a_more_precise_hint():
    err = ConnectionFailed("exch01", "exch01", 443, "winrm_not_enabled", hint="check exchange_path")
    assert str(err).endswith("; check exchange_path")


def test_an_unknown_failure_kind_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown connection failure kind 'boom'"):
        ConnectionFailed("exch01", "exch01", 5985, "boom")


def test_preflight_errors_say_what_was_found_and_what_was_expected():
    err = PreflightError("exch01", "back-end certificate", "3 self-signed candidates, none bound to *:444:",
                         "exactly one, or one bound")
    assert str(err) == (
        "exch01: preflight back-end certificate: found 3 self-signed candidates, none bound to *:444:; "
        "expected exactly one, or one bound"
    )


def test_a_failed_step_names_server_and_step_and_keeps_the_message_as_a_field():
    err = StepFailed("exch02", "bind", "the 444 binding was restored to 1A2B")
    assert str(err) == "exch02: bind failed: the 444 binding was restored to 1A2B"
    assert (err.server, err.step, err.detail) == ("exch02", "bind", "the 444 binding was restored to 1A2B")


def test_a_password_inside_an_error_message_is_masked():
    REDACTOR.add("Err0r-Pa55word")
    err = StepFailed("exch01", "trust", "New-Object failed for user admin / Err0r-Pa55word")
    assert str(err) == "exch01: trust failed: New-Object failed for user admin / ***"
