"""A failure is called what it is (issue 27, item 5): a timeout names the setting that bounded the wait, a WSMan
fault answered with HTTP 500 is the server's error, not an endpoint that "did not speak WinRM"."""

from __future__ import annotations

import pytest
import requests
from pypsrp.exceptions import WinRMTransportError, WSManFaultError

from exbe.errors import ConnectionFailed
from exbe.transport import classify


@pytest.mark.parametrize(("exc", "setting"), [
    (requests.exceptions.ConnectTimeout("connect timed out"), "connect_timeout"),
    (requests.exceptions.ReadTimeout("read timed out"), "read_timeout"),
    (WSManFaultError(2150858793, "exch01", "The WS-Management service cannot complete the operation within the time "
                     "specified in OperationTimeout.", None, None, None), "operation_timeout"),
])
def test_a_timeout_names_the_setting_that_fired(exc, setting):
    kind, detail = classify(exc) or ("", "")
    assert kind == "timeout" and f"exbe.defaults.{setting}" in detail
    message = str(ConnectionFailed("exch01", "h", 5985, kind, detail=detail))
    assert setting in message and "raise the setting named above" in message


def test_a_wsman_internal_error_answered_with_http_500_is_named_as_such():
    try:
        try:
            raise WinRMTransportError("http", 500, "<s:Envelope/>")
        except WinRMTransportError:
            raise WSManFaultError(2147943418, "exch01", "The WS-Management service encountered an internal error.",
                                  None, None, None) from None
    except WSManFaultError as exc:
        kind, detail = classify(exc) or ("", "")
    assert kind == "server_error" and "WSMan fault 2147943418" in detail
    message = str(ConnectionFailed("exch01", "h", 5985, kind, detail=detail))
    assert "answered HTTP 500 with a WSMan fault" in message and "did not speak WinRM" not in message
