"""exbe never follows a redirect, on either endpoint (issue 25, item 5).

A WinRM listener or Exchange's /PowerShell that answers 3xx has been moved or intercepted: following it would send
the request -- and start NTLM, or send a Basic password -- to a host nobody put in the inventory, HTTPS to HTTP
included. The run reports a connection error that names the Location, and nothing reaches the new host.
"""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from exbe.config import Credentials
from exbe.errors import ConnectionFailed
from exbe.inventory import load_inventory
from exbe.redaction import Secret
from exbe.render import render_step
from exbe.transport import Session
from exbe.wsman_connection import LOCATION_SHOWN

from .conftest import PASSWORD, USERNAME

FACTS = {"backend_site": "Exchange Back End", "frontend_site": "Default Web Site",
         "friendly_name": "Microsoft Exchange"}


class Listener:
    """A loopback HTTP(S) server that records every request (path and Authorization header) and answers each with
    ``answer(path) -> (status, headers)``."""

    def __init__(self, answer: Any, tls: ssl.SSLContext | None = None) -> None:
        self.seen: list[tuple[str, str]] = []
        seen, respond = self.seen, answer

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen.append((self.path, self.headers.get("Authorization") or ""))
                status, headers = respond(self.path)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST  # noqa: N815 - a 302 turns requests' POST into a GET

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def elsewhere() -> Iterator[Listener]:
    """The host a redirect points at: it would challenge for NTLM, as a WinRM listener does."""
    listener = Listener(lambda path: (401, {"WWW-Authenticate": "Negotiate"}))
    yield listener
    listener.close()


@pytest.fixture
def listeners() -> Iterator[list[Listener]]:
    started: list[Listener] = []
    yield started
    for listener in started:
        listener.close()


def _redirector(listeners: list[Listener], location: str, tls: ssl.SSLContext | None = None,
                status: int = 302) -> Listener:
    listener = Listener(lambda path: (status, {"Location": location}), tls)
    listeners.append(listener)
    return listener


def _session(entry: dict[str, Any]) -> Session:
    server = load_inventory({"inventory": [{"name": "exch01", "host": "127.0.0.1", **entry}]})[0]
    return Session(server, Credentials(USERNAME, Secret(PASSWORD)))


def _tls(fleet: Any) -> ssl.SSLContext:
    """A TLS server context with the sandbox fleet's listener certificate (issued by its CA, for 127.0.0.1)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(fleet.state_dir / "winrm-https.pem", fleet.state_dir / "winrm-https.key")
    return context


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_winrm_redirect_is_an_error_naming_the_location_and_no_ntlm_reaches_the_new_host(listeners, elsewhere,
                                                                                           status):
    target = f"http://127.0.0.1:{elsewhere.port}/wsman"
    redirector = _redirector(listeners, target, status=status)
    with _session({"port": redirector.port, "ssl": False, "auth": "ntlm"}) as session, \
            pytest.raises(ConnectionFailed) as raised:
        session.run_scripts([render_step("facts", FACTS)], repeatable=True)
    assert raised.value.kind == "protocol"
    assert f"HTTP {status} redirect to '{target}' refused" in str(raised.value)
    assert "WinRM" in str(raised.value)
    assert len(redirector.seen) == 1, "no second request"
    assert elsewhere.seen == [], "nothing, and no NTLM message, was sent to the host the redirect named"


def test_an_https_redirect_to_http_is_refused_before_the_basic_password_travels(fleet, listeners, elsewhere):
    target = f"http://127.0.0.1:{elsewhere.port}/wsman"
    redirector = _redirector(listeners, target, _tls(fleet))
    entry = {"port": redirector.port, "ssl": True, "auth": "basic", "ca_file": str(fleet.ca_file),
             "exchange_ssl": True}
    with _session(entry) as session, pytest.raises(ConnectionFailed) as raised:
        session.run_scripts([render_step("facts", FACTS)], repeatable=True)
    assert f"redirect to '{target}' refused" in str(raised.value)
    assert len(redirector.seen) == 1 and redirector.seen[0][1].startswith("Basic ")
    assert elsewhere.seen == []


def test_an_exchange_endpoint_redirect_is_refused_too(listeners, elsewhere):
    target = f"http://127.0.0.1:{elsewhere.port}/PowerShell"
    redirector = _redirector(listeners, target)
    entry = {"port": 1, "ssl": False, "auth": "ntlm", "exchange_port": redirector.port, "exchange_ssl": False}
    with _session(entry) as session, pytest.raises(ConnectionFailed) as raised:
        session.run_cmdlets([[("Get-ExchangeServer", {"Identity": "exch01"})]])
    assert raised.value.kind == "protocol"
    assert "the Exchange endpoint (/PowerShell)" in str(raised.value)
    assert f"redirect to '{target}' refused" in str(raised.value)
    assert redirector.seen == [("/PowerShell", "")]
    assert elsewhere.seen == []


def test_a_hostile_location_is_shown_escaped_and_bounded(listeners, elsewhere):
    target = f"http://127.0.0.1:{elsewhere.port}/\x1b[2J\x07" + "A" * 5000
    redirector = _redirector(listeners, target)
    with _session({"port": redirector.port, "ssl": False, "auth": "ntlm"}) as session, \
            pytest.raises(ConnectionFailed) as raised:
        session.run_scripts([render_step("facts", FACTS)], repeatable=True)
    message = str(raised.value)
    assert "\x1b" not in message and "\x07" not in message
    assert "\\x1b[2J\\x07" in message
    assert "A" * LOCATION_SHOWN not in message and f"({len(target)} characters)" in message
    assert len(message) < LOCATION_SHOWN + 600
    assert elsewhere.seen == []
